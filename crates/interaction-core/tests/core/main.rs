//! Tests of interaction-core's public API: validation rules, the spec's rating tables and
//! examples, batch reading, rating-map files and properties of the normalizer.

// A panic is how a test fails; helpers outside #[test] fns unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod batch;
mod common;
mod examples;
mod fuzz;
mod profiles;
mod properties;
mod rating_map;
mod rules;
mod skew;
