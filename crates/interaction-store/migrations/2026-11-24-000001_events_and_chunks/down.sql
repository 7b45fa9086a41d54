DROP TABLE events;
DROP TABLE chunks;
