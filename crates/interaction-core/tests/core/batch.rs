//! Reading whole request bodies: shapes, per-index errors, limits.

use interaction_core::{BodyError, BodyShape, ITEM, Limits, Normalizer, RatingMap};
use serde_json::json;

use crate::common::{base, now, with};

fn parse(body: &[u8], max: usize) -> Result<interaction_core::Batch, BodyError> {
    let map = RatingMap::builtin();
    let limits = Limits {
        max_batch_events: max,
        ..Limits::default()
    };
    Normalizer::new(map.profile_for_tenant("t"), &limits, now()).parse_body(body)
}

fn body(value: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&value).unwrap()
}

#[test]
fn a_mixed_batch_keeps_the_valid_items_and_reports_the_others_by_index() {
    let items = json!([
        base(),
        with(json!({"ratingEquivalent": 7}), &[]),
        42,
        with(json!({"subscriber": ""}), &["assetId"]),
        base(),
    ]);
    let batch = parse(&body(items), 1000).unwrap();
    assert_eq!(batch.shape, BodyShape::Array);
    assert_eq!(batch.received, 5);
    assert_eq!(batch.skipped(), 3);
    let indexes: Vec<usize> = batch.events.iter().map(|e| e.index).collect();
    assert_eq!(indexes, [0, 4]);
    let errors: Vec<(usize, &str)> = batch
        .errors
        .iter()
        .map(|e| (e.index, e.field.as_str()))
        .collect();
    assert_eq!(
        errors,
        [
            (1, "ratingEquivalent"),
            (2, ITEM),
            (3, "subscriber"),
            (3, "assetId")
        ]
    );
    assert_eq!(
        batch.errors[1].message,
        "must be an interaction object, got a number"
    );
}

#[test]
fn a_single_object_is_a_batch_of_one() {
    let batch = parse(&body(base()), 1000).unwrap();
    assert_eq!(
        (batch.shape, batch.received, batch.events.len()),
        (BodyShape::Object, 1, 1)
    );
    assert_eq!(batch.events[0].index, 0);
}

#[test]
fn an_invalid_single_object_is_reported_at_index_zero() {
    let batch = parse(&body(with(json!({"interaction": "nope"}), &[])), 1000).unwrap();
    assert_eq!((batch.received, batch.skipped()), (1, 1));
    assert_eq!(
        (batch.errors[0].index, batch.errors[0].field.as_str()),
        (0, "interaction")
    );
}

#[test]
fn bodies_that_are_not_events_are_refused_as_a_whole() {
    let cases: Vec<(&[u8], BodyError)> = vec![
        (b"[]", BodyError::Empty),
        (b"  [ ]  ", BodyError::Empty),
        (b"42", BodyError::NotEventOrArray("a number")),
        (b"\"event\"", BodyError::NotEventOrArray("a string")),
        (b"null", BodyError::NotEventOrArray("null")),
        (b"true", BodyError::NotEventOrArray("a boolean")),
    ];
    for (input, expected) in cases {
        assert_eq!(
            parse(input, 1000).unwrap_err(),
            expected,
            "{}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn malformed_json_is_refused_with_its_position() {
    let cases: [&[u8]; 8] = [
        b"",
        b"{",
        b"[{\"subscriber\": }]",
        b"{\"a\": 1} trailing",
        b"[1, 2,]",
        b"{\"rating\": NaN}",
        b"\xff\xfe",
        b"{\"subscriber\": \"\\ud800\"}",
    ];
    for input in cases {
        match parse(input, 1000) {
            Err(BodyError::InvalidJson(message)) => {
                assert!(message.contains("line"), "{message}")
            }
            other => panic!("{}: {other:?}", String::from_utf8_lossy(input)),
        }
    }
}

#[test]
fn deep_nesting_is_a_bad_item_not_a_stack_overflow() {
    let deep = format!("[{}{}]", "[".repeat(100_000), "]".repeat(100_000));
    // serde_json skips nested values iteratively, so this is one bad item, not a crash.
    let batch = parse(deep.as_bytes(), 1000).unwrap();
    assert_eq!(
        batch.errors[0].message,
        "must be an interaction object, got an array"
    );
    let deep_field = format!(
        r#"{{"timestamp": {}1{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let batch = parse(deep_field.as_bytes(), 1000).unwrap();
    assert!(
        batch
            .errors
            .iter()
            .any(|e| e.field == "timestamp" && e.message.ends_with("got an array"))
    );
}

#[test]
fn nested_values_in_fields_are_field_errors_not_body_errors() {
    let batch = parse(br#"[{"subscriber": {"a": [1, {"b": null}]}}]"#, 1000).unwrap();
    assert!(
        batch
            .errors
            .iter()
            .any(|e| e.field == "subscriber" && e.message == "must be a string, got an object")
    );
}

#[test]
fn the_batch_size_is_capped() {
    let items = |n| body(serde_json::Value::Array(vec![base(); n]));
    assert_eq!(parse(&items(3), 3).unwrap().events.len(), 3);
    assert_eq!(
        parse(&items(4), 3).unwrap_err(),
        BodyError::TooManyEvents { max: 3 }
    );
    assert_eq!(
        BodyError::TooManyEvents { max: 1000 }.to_string(),
        "the batch holds more than 1000 events; send at most 1000 per request"
    );
    // The default limit is 1000.
    let map = RatingMap::builtin();
    let limits = Limits::default();
    let normalizer = Normalizer::new(map.profile_for_tenant("t"), &limits, now());
    assert!(normalizer.parse_body(&items(1000)).is_ok());
    assert_eq!(
        normalizer.parse_body(&items(1001)).unwrap_err(),
        BodyError::TooManyEvents { max: 1000 }
    );
}

#[test]
fn escaped_strings_are_read_like_plain_ones() {
    let batch = parse(
        br#"{"timestamp":"2025-07-09T10:15:00Z","subscriber":"caf\u00e9 \"q\"","assetId":"a\/b",
            "interaction":"play","setting":{"dev\u0069ce":"web"}}"#,
        1000,
    )
    .unwrap();
    assert!(batch.errors.is_empty(), "{:?}", batch.errors);
    let event = &batch.events[0].event.interaction;
    assert_eq!(
        (event.subscriber.as_str(), event.asset_id.as_str()),
        ("café \"q\"", "a/b")
    );
}

#[test]
fn parsed_values_give_the_same_result_as_bytes() {
    let value = json!([base(), with(json!({"stars": 2}), &[]), "x"]);
    let map = RatingMap::builtin();
    let limits = Limits::default();
    let normalizer = Normalizer::new(map.profile_for_tenant("t"), &limits, now());
    assert_eq!(
        normalizer.parse_value_body(&value).unwrap(),
        normalizer.parse_body(&body(value.clone())).unwrap()
    );
    assert_eq!(
        normalizer.parse_value_body(&json!([])).unwrap_err(),
        BodyError::Empty
    );
    assert_eq!(
        normalizer.parse_value_body(&json!(1)).unwrap_err(),
        BodyError::NotEventOrArray("a number")
    );
}

/// Found by the fuzz test: a scalar followed by garbage (`0+`) was refused as "got a number",
/// as if it were JSON. It is not JSON, and says so; a scalar alone is still "not events".
#[test]
fn a_scalar_followed_by_garbage_is_invalid_json_not_a_scalar() {
    for input in [&b"0+"[..], b"42 x", b"\"event\"\"", b"true,", b"null ]"] {
        match parse(input, 1000) {
            Err(BodyError::InvalidJson(message)) => {
                assert!(message.contains("trailing"), "{message}")
            }
            other => panic!("{}: {other:?}", String::from_utf8_lossy(input)),
        }
    }
    assert_eq!(
        parse(b" 42 \n", 1000),
        Err(BodyError::NotEventOrArray("a number"))
    );
}

/// Found by the fuzz test: invalid UTF-8 inside a skipped value (an unknown field, an item that
/// is not an object) passed as JSON, so its valid siblings were stored from a body that is not
/// JSON. The whole body is checked now, and the error says where.
#[test]
fn invalid_utf8_anywhere_is_invalid_json_even_where_values_are_skipped() {
    let valid = body(base());
    let in_unknown_field = b"{\"unknown\": \"\xff\"}".to_vec();
    let in_skipped_item = b"[\"\xc3\"]".to_vec();
    for skipped in [in_unknown_field, in_skipped_item] {
        let input = [b"[".as_slice(), &valid, b",\n", &skipped, b"]"].concat();
        match parse(&input, 1000) {
            Err(BodyError::InvalidJson(message)) => {
                assert!(message.contains("invalid UTF-8 at line 2"), "{message}")
            }
            other => panic!("{}: {other:?}", String::from_utf8_lossy(&input)),
        }
    }
}
