DROP INDEX chunks_published_since;
