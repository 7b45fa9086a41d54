//! The spec's example payloads, and the canonical JSON they must become.

use interaction_core::{BodyShape, Limits, Normalizer, RatingMap};

use crate::common::now;

const PLAY_COMPLETE: &str = include_str!("../fixtures/spec/play_complete.json");

const ADD_TO_CART: &str = include_str!("../fixtures/spec/add_to_cart.json");

const BATCH: &str = include_str!("../fixtures/spec/batch.json");

fn canonical(body: &str) -> (BodyShape, Vec<String>) {
    let map = RatingMap::builtin();
    let limits = Limits::default();
    let normalizer = Normalizer::new(map.profile_for_tenant("spec"), &limits, now());
    let batch = normalizer.parse_body(body.as_bytes()).unwrap();
    assert!(batch.errors.is_empty(), "{:?}", batch.errors);
    let events = batch
        .events
        .iter()
        .map(|e| serde_json::to_string(&e.event.interaction).unwrap())
        .collect();
    (batch.shape, events)
}

/// The canonical JSON of the examples' events, in order.
const CANONICAL: &str = include_str!("../fixtures/spec/canonical.jsonl");

#[test]
fn the_examples_become_canonical_json_without_optional_fields_added() {
    let want: Vec<&str> = CANONICAL.lines().collect();
    // (body, shape, its events' lines in canonical.jsonl)
    let cases = [
        (PLAY_COMPLETE, BodyShape::Object, 0..1),
        (ADD_TO_CART, BodyShape::Object, 1..2),
        (BATCH, BodyShape::Array, 2..4),
    ];
    for (body, shape, lines) in cases {
        let (got_shape, got) = canonical(body);
        assert_eq!(got_shape, shape, "{body}");
        assert_eq!(got, want[lines], "{body}");
    }
}

#[test]
fn canonical_json_reads_back_as_the_same_interaction() {
    for body in [PLAY_COMPLETE, ADD_TO_CART] {
        let json = &canonical(body).1[0];
        let back: interaction_core::Interaction = serde_json::from_str(json).unwrap();
        assert_eq!(&serde_json::to_string(&back).unwrap(), json);
    }
}
