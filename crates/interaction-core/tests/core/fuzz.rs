//! Fuzzing the body reader at scale, in the ordinary test run: tens of thousands of byte
//! strings, most of them valid batch bodies with a few bytes flipped, inserted or deleted (so
//! they get past the first bytes and into the normalizer), the rest arbitrary bytes.
//!
//! Whatever the bytes: `parse_body` never panics; it accepts only what is valid JSON (and
//! refuses as invalid JSON only what is); every accepted event serializes to JSON that parses
//! back to the same event; and the batch accounts for every item exactly once.

use std::collections::BTreeSet;

use interaction_core::{Batch, BodyError, Limits, Normalizer, RatingMap};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Value, json};

use crate::common::{base, now, with};

/// Cases per run: enough to find the odd byte, small enough for a debug test run (about 2 s).
/// `FUZZ_CASES=1000000 cargo nextest run -p interaction-core fuzz` runs longer.
fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000)
}

/// Events the mutations start from: valid ones of several shapes, and a few invalid ones.
fn seeds() -> Vec<Value> {
    vec![
        base(),
        with(
            json!({"action": "watch", "progress": 0.9, "eventId": "e-1"}),
            &["interaction", "ratingEquivalent"],
        ),
        with(
            json!({"action": "like", "comment": "ok\tfine\n"}),
            &["interaction", "ratingEquivalent"],
        ),
        with(
            json!({"interaction": "SHARE", "contextId": "ctx", "timestamp": "2025-07-09T13:15:00+03:00"}),
            &["ratingEquivalent"],
        ),
        with(
            json!({"ratingEquivalent": -1.0, "comment": "é ü 日本 \u{1F600}"}),
            &[],
        ),
        with(json!({"ratingEquivalent": 1e-7, "eventId": null}), &[]),
        with(json!({"ratingEquivalent": 2}), &[]),
        with(json!({"setting": {"device": "tv"}}), &["subscriber"]),
    ]
}

/// A batch body: an array of seeds, or a single one.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let seeds = seeds();
    (
        prop::collection::vec(prop::sample::select(seeds.clone()), 1..5),
        any::<bool>(),
    )
        .prop_map(|(items, single)| {
            if single {
                serde_json::to_vec(&items[0]).unwrap()
            } else {
                serde_json::to_vec(&items).unwrap()
            }
        })
}

/// Bytes a mutation inserts: JSON's structure, number and literal characters, escapes,
/// control bytes and bytes that break UTF-8.
const ALPHABET: &[u8] =
    b"{}[]\",:\\/ \t\n\r0123456789.eE+-truefalsn\x00\x01\x7f\x80\xbf\xc3\xed\xf0\xff";

#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Insert(Index, u8),
    Delete(Index),
    Duplicate(Index, Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip(at, bit)),
        (any::<Index>(), prop::sample::select(ALPHABET.to_vec()))
            .prop_map(|(at, byte)| Mutation::Insert(at, byte)),
        any::<Index>().prop_map(Mutation::Delete),
        (any::<Index>(), any::<Index>()).prop_map(|(from, to)| Mutation::Duplicate(from, to)),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for mutation in mutations {
        if bytes.is_empty() {
            break;
        }
        match mutation {
            Mutation::Flip(at, bit) => {
                let at = at.index(bytes.len());
                bytes[at] ^= 1 << bit;
            }
            Mutation::Insert(at, byte) => {
                let at = at.index(bytes.len() + 1);
                bytes.insert(at, *byte);
            }
            Mutation::Delete(at) => {
                bytes.remove(at.index(bytes.len()));
            }
            Mutation::Duplicate(from, to) => {
                // Copies a short run elsewhere: repeated keys, values, brackets.
                let from = from.index(bytes.len());
                let run = bytes[from..(from + 12).min(bytes.len())].to_vec();
                let to = to.index(bytes.len() + 1);
                bytes.splice(to..to, run);
            }
        }
    }
    bytes
}

fn fuzz_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => (body(), prop::collection::vec(mutation(), 1..6))
            .prop_map(|(body, mutations)| mutate(body, &mutations)),
        1 => prop::collection::vec(prop::sample::select(ALPHABET.to_vec()), 0..64),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

/// Whether the bytes are JSON by RFC 8259's grammar: UTF-8, and well-formed (serde_json's
/// skipping reader checks the grammar, with no recursion limit and no judgement on escapes or
/// number ranges, which the grammar allows).
fn grammatical_json(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes)
        .is_ok_and(|text| serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok())
}

/// Whether serde_json reads the bytes as a value: JSON with nothing any reader could object
/// to (no lone surrogates, numbers within f64, nesting within its recursion limit).
fn plain_json(bytes: &[u8]) -> bool {
    serde_json::from_slice::<Value>(bytes).is_ok()
}

fn check(normalizer: &Normalizer<'_>, bytes: &[u8]) -> Result<(), TestCaseError> {
    let result = normalizer.parse_body(bytes);
    let shown = String::from_utf8_lossy(bytes);
    // Never accepts what is not JSON: anything but "invalid JSON" means it was JSON.
    if !matches!(result, Err(BodyError::InvalidJson(_))) {
        prop_assert!(
            grammatical_json(bytes),
            "took invalid JSON as JSON {shown}: {result:?}"
        );
    }
    // Never refuses plain JSON as "not JSON".
    if plain_json(bytes) {
        prop_assert!(
            !matches!(result, Err(BodyError::InvalidJson(_))),
            "refused valid JSON as invalid {shown}: {result:?}"
        );
    }
    if let Ok(batch) = &result {
        accounts_for_every_item(batch)?;
        for accepted in &batch.events {
            let json = serde_json::to_vec(&accepted.event).unwrap();
            let again = normalizer.parse_body(&json);
            prop_assert!(
                again.as_ref().is_ok_and(|b| b.errors.is_empty()),
                "{again:?} from {} (accepted from {shown})",
                String::from_utf8_lossy(&json)
            );
            prop_assert_eq!(&again.unwrap().events[0].event, &accepted.event);
        }
    }
    Ok(())
}

/// Each item is either an event or has errors, never both, and indexes are in range.
fn accounts_for_every_item(batch: &Batch) -> Result<(), TestCaseError> {
    let accepted: BTreeSet<usize> = batch.events.iter().map(|e| e.index).collect();
    let refused: BTreeSet<usize> = batch.errors.iter().map(|e| e.index).collect();
    prop_assert_eq!(
        accepted.len(),
        batch.events.len(),
        "an index accepted twice"
    );
    prop_assert!(accepted.is_disjoint(&refused));
    prop_assert_eq!(accepted.len() + refused.len(), batch.received);
    prop_assert!(accepted.iter().chain(&refused).all(|&i| i < batch.received));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn mutated_and_arbitrary_bodies_never_panic_and_accept_only_valid_json(bytes in fuzz_input()) {
        let map = RatingMap::builtin();
        let limits = Limits::default();
        let normalizer = Normalizer::new(map.profile("video").unwrap(), &limits, now());
        check(&normalizer, &bytes)?;
    }
}

/// The seeds are what they claim: most are accepted, so mutations start from real events.
#[test]
fn the_fuzz_seeds_are_mostly_valid_events() {
    let map = RatingMap::builtin();
    let limits = Limits::default();
    let normalizer = Normalizer::new(map.profile("video").unwrap(), &limits, now());
    let body = serde_json::to_vec(&seeds()).unwrap();
    let batch = normalizer.parse_body(&body).unwrap();
    assert_eq!(batch.events.len(), 6, "{:?}", batch.errors);
}
