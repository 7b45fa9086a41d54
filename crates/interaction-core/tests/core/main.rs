//! Tests of interaction-core's public API: validation rules, the spec's rating tables and
//! examples, batch reading, rating-map files and properties of the normalizer.

mod batch;
mod common;
mod examples;
mod profiles;
mod properties;
mod rating_map;
mod rules;
