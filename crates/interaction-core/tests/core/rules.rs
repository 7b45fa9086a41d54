//! Every validation rule, as a table: input, then the field and message it must produce, or
//! what the accepted event must look like.

use interaction_core::{Limits, MAX_COMMENT_CHARS, MAX_EVENT_ID_CHARS, MAX_ID_CHARS};
use serde_json::{Value, json};

use crate::common::{normalize, normalize_with, with};

enum Expect {
    /// Accepted; the canonical JSON (with eventId) has these key/values.
    Accept(Value),
    /// Rejected with an error on this field whose message contains this text.
    Reject(&'static str, &'static str),
}
use Expect::{Accept, Reject};

fn long(n: usize) -> String {
    "x".repeat(n)
}

fn check(cases: Vec<(&str, Value, Expect)>) {
    for (name, input, expect) in cases {
        let result = normalize("video", &input);
        match (expect, result) {
            (Accept(fields), Ok(event)) => {
                let json = serde_json::to_value(&event).unwrap();
                for (key, want) in fields.as_object().unwrap() {
                    let got = json.pointer(&format!("/{}", key.replace('.', "/")));
                    assert_eq!(got, Some(want), "{name}: field {key} of {json}");
                }
            }
            (Accept(_), Err(errors)) => panic!("{name}: rejected: {errors:?}"),
            (Reject(field, text), Ok(event)) => {
                panic!("{name}: accepted {event:?}, wanted an error on {field} ({text})")
            }
            (Reject(field, text), Err(errors)) => assert!(
                errors
                    .iter()
                    .any(|e| e.field == field && e.message.contains(text)),
                "{name}: wanted an error on {field} containing {text:?}, got {errors:?}"
            ),
        }
    }
}

#[test]
fn required_fields_are_reported_by_name() {
    check(vec![
        (
            "no timestamp",
            with(json!({}), &["timestamp"]),
            Reject("timestamp", "is required"),
        ),
        (
            "no subscriber",
            with(json!({}), &["subscriber"]),
            Reject("subscriber", "is required"),
        ),
        (
            "no assetId",
            with(json!({}), &["assetId"]),
            Reject("assetId", "is required"),
        ),
        (
            "no interaction nor action",
            with(json!({}), &["interaction"]),
            Reject("interaction", "is required (or send an action)"),
        ),
        (
            "no setting",
            with(json!({}), &["setting"]),
            Reject("setting", "is required"),
        ),
        (
            "empty setting",
            with(json!({"setting": {}}), &[]),
            Reject(
                "setting.device",
                "is required; expected one of web, android_app, ios_app",
            ),
        ),
        (
            "null subscriber",
            with(json!({"subscriber": null}), &[]),
            Reject("subscriber", "is required (got null)"),
        ),
        (
            "null timestamp",
            with(json!({"timestamp": null}), &[]),
            Reject("timestamp", "is required (got null)"),
        ),
    ]);
}

#[test]
fn every_missing_field_is_reported_at_once() {
    let errors = normalize("video", &json!({})).unwrap_err();
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "timestamp",
            "subscriber",
            "assetId",
            "setting",
            "interaction"
        ]
    );
}

#[test]
fn strings_are_trimmed_non_empty_capped_and_free_of_control_characters() {
    check(vec![
        (
            "trimmed",
            with(json!({"subscriber": "  u 1\t", "assetId": "\na1 "}), &[]),
            Accept(json!({"subscriber": "u 1", "assetId": "a1"})),
        ),
        (
            "empty",
            with(json!({"subscriber": ""}), &[]),
            Reject("subscriber", "must not be empty"),
        ),
        (
            "blank",
            with(json!({"assetId": "   "}), &[]),
            Reject("assetId", "must not be empty"),
        ),
        (
            "at the cap",
            with(json!({"subscriber": long(MAX_ID_CHARS)}), &[]),
            Accept(json!({"subscriber": long(MAX_ID_CHARS)})),
        ),
        (
            "over the cap",
            with(json!({"subscriber": long(MAX_ID_CHARS + 1)}), &[]),
            Reject("subscriber", "must be at most 256 characters, got 257"),
        ),
        (
            "cap counts characters, not bytes",
            with(json!({"assetId": "é".repeat(MAX_ID_CHARS)}), &[]),
            Accept(json!({"assetId": "é".repeat(MAX_ID_CHARS)})),
        ),
        (
            "contextId over the cap",
            with(json!({"contextId": long(MAX_ID_CHARS + 1)}), &[]),
            Reject("contextId", "at most 256 characters"),
        ),
        (
            "comment at the cap",
            with(json!({"comment": long(MAX_COMMENT_CHARS)}), &[]),
            Accept(json!({"comment": long(MAX_COMMENT_CHARS)})),
        ),
        (
            "comment over the cap",
            with(json!({"comment": long(MAX_COMMENT_CHARS + 1)}), &[]),
            Reject("comment", "at most 1024 characters"),
        ),
        (
            "eventId over the cap",
            with(json!({"eventId": long(MAX_EVENT_ID_CHARS + 1)}), &[]),
            Reject("eventId", "at most 128 characters"),
        ),
        (
            "NUL in subscriber",
            with(json!({"subscriber": "u\u{0}1"}), &[]),
            Reject("subscriber", "found U+0000 at character 2"),
        ),
        (
            "newline inside assetId",
            with(json!({"assetId": "a\n1"}), &[]),
            Reject("assetId", "control characters"),
        ),
        (
            "C1 control in contextId",
            with(json!({"contextId": "c\u{85}d"}), &[]),
            Reject("contextId", "U+0085"),
        ),
        (
            "DEL in eventId",
            with(json!({"eventId": "e\u{7f}"}), &[]),
            Reject("eventId", "U+007F"),
        ),
        (
            "a comment may span lines",
            with(json!({"comment": "line 1\nline 2\ttabbed"}), &[]),
            Accept(json!({"comment": "line 1\nline 2\ttabbed"})),
        ),
        (
            "but holds no other control character",
            with(json!({"comment": "bell\u{7}"}), &[]),
            Reject("comment", "U+0007"),
        ),
        (
            "subscriber must be a string",
            with(json!({"subscriber": 12345}), &[]),
            Reject("subscriber", "must be a string, got a number"),
        ),
        (
            "assetId must be a string",
            with(json!({"assetId": ["a"]}), &[]),
            Reject("assetId", "must be a string, got an array"),
        ),
    ]);
}

#[test]
fn optional_fields_that_are_null_or_blank_are_absent() {
    check(vec![
        (
            "null optional fields",
            with(
                json!({"comment": null, "contextId": null, "eventId": null}),
                &[],
            ),
            Accept(json!({"subscriber": "user_1"})),
        ),
        (
            "blank optional fields",
            with(
                json!({"comment": " ", "contextId": "", "eventId": "\t"}),
                &[],
            ),
            Accept(json!({"subscriber": "user_1"})),
        ),
        (
            "optional fields of the wrong type",
            with(json!({"comment": true}), &[]),
            Reject("comment", "must be a string, got a boolean"),
        ),
    ]);
    let event = normalize(
        "video",
        &with(json!({"comment": "", "contextId": null}), &[]),
    )
    .unwrap();
    assert_eq!(event.interaction.comment, None);
    assert_eq!(event.interaction.context_id, None);
    assert_eq!(event.event_id, None);
    let json = serde_json::to_value(&event).unwrap();
    assert!(
        json.get("comment").is_none() && json.get("contextId").is_none(),
        "{json}"
    );
}

#[test]
fn event_id_is_carried_through() {
    let event = normalize("video", &with(json!({"eventId": " evt-42 "}), &[])).unwrap();
    assert_eq!(event.event_id.as_deref(), Some("evt-42"));
    let canonical = serde_json::to_value(&event.interaction).unwrap();
    assert!(
        canonical.get("eventId").is_none(),
        "Ncanto never sees eventId"
    );
}

#[test]
fn interaction_is_one_of_the_spec_types_in_any_case() {
    check(vec![
        (
            "canonical",
            with(json!({"interaction": "play_complete"}), &[]),
            Accept(json!({"interaction": "play_complete"})),
        ),
        (
            "camelCase type",
            with(
                json!({"interaction": "recommendationImpression", "ratingEquivalent": 0.0}),
                &[],
            ),
            Accept(json!({"interaction": "recommendationImpression"})),
        ),
        (
            "upper case",
            with(json!({"interaction": "ADD_TO_CART"}), &[]),
            Accept(json!({"interaction": "add_to_cart"})),
        ),
        (
            "padded",
            with(json!({"interaction": " Purchase "}), &[]),
            Accept(json!({"interaction": "purchase"})),
        ),
        (
            "unknown",
            with(json!({"interaction": "click"}), &[]),
            Reject(
                "interaction",
                "must be one of recommendationImpression, select, play, play_complete, rate, deselect, share, add_to_cart, purchase; got \"click\"",
            ),
        ),
        (
            "not a string",
            with(json!({"interaction": 3}), &[]),
            Reject("interaction", "must be a string, got a number"),
        ),
    ]);
}

#[test]
fn rating_is_a_finite_number_from_minus_one_to_one() {
    check(vec![
        (
            "lowest",
            with(json!({"ratingEquivalent": -1.0}), &[]),
            Accept(json!({"ratingEquivalent": -1.0})),
        ),
        (
            "highest",
            with(json!({"ratingEquivalent": 1}), &[]),
            Accept(json!({"ratingEquivalent": 1.0})),
        ),
        (
            "negative zero is zero",
            with(json!({"ratingEquivalent": -0.0}), &[]),
            Accept(json!({"ratingEquivalent": 0.0})),
        ),
        (
            "above",
            with(json!({"ratingEquivalent": 1.0001}), &[]),
            Reject("ratingEquivalent", "from -1.0 to 1.0, got 1.0001"),
        ),
        (
            "below",
            with(json!({"ratingEquivalent": -2}), &[]),
            Reject("ratingEquivalent", "got -2"),
        ),
        (
            "huge",
            with(json!({"ratingEquivalent": 1e308}), &[]),
            Reject("ratingEquivalent", "from -1.0 to 1.0"),
        ),
        (
            "a string",
            with(json!({"ratingEquivalent": "0.5"}), &[]),
            Reject(
                "ratingEquivalent",
                "must be a number from -1.0 to 1.0, got a string",
            ),
        ),
        (
            "a boolean",
            with(json!({"ratingEquivalent": true}), &[]),
            Reject("ratingEquivalent", "got a boolean"),
        ),
    ]);
    let negative_zero = normalize("video", &with(json!({"ratingEquivalent": -0.0}), &[])).unwrap();
    assert!(
        negative_zero
            .interaction
            .rating_equivalent
            .is_sign_positive()
    );
}

#[test]
fn timestamps_are_rfc3339_with_an_offset_and_normalized_to_utc() {
    check(vec![
        (
            "Z",
            with(json!({"timestamp": "2025-07-09T10:15:00Z"}), &[]),
            Accept(json!({"timestamp": "2025-07-09T10:15:00Z"})),
        ),
        (
            "positive offset",
            with(json!({"timestamp": "2025-07-09T13:15:00+03:00"}), &[]),
            Accept(json!({"timestamp": "2025-07-09T10:15:00Z"})),
        ),
        (
            "negative offset",
            with(json!({"timestamp": "2025-07-09T05:15:00-05:00"}), &[]),
            Accept(json!({"timestamp": "2025-07-09T10:15:00Z"})),
        ),
        (
            "+00:00",
            with(json!({"timestamp": "2025-07-09T10:15:00+00:00"}), &[]),
            Accept(json!({"timestamp": "2025-07-09T10:15:00Z"})),
        ),
        (
            "fractions kept",
            with(json!({"timestamp": "2025-07-09T10:15:00.123Z"}), &[]),
            Accept(json!({"timestamp": "2025-07-09T10:15:00.123Z"})),
        ),
        (
            "kept to the microsecond, like PostgreSQL",
            with(json!({"timestamp": "2025-07-09T10:15:00.123456789Z"}), &[]),
            Accept(json!({"timestamp": "2025-07-09T10:15:00.123456Z"})),
        ),
        (
            "offset crossing midnight",
            with(json!({"timestamp": "2025-07-09T01:00:00+05:00"}), &[]),
            Accept(json!({"timestamp": "2025-07-08T20:00:00Z"})),
        ),
        (
            "no offset",
            with(json!({"timestamp": "2025-07-09T10:15:00"}), &[]),
            Reject(
                "timestamp",
                "must be an RFC 3339 date-time with a UTC offset",
            ),
        ),
        (
            "date only",
            with(json!({"timestamp": "2025-07-09"}), &[]),
            Reject("timestamp", "RFC 3339"),
        ),
        (
            "garbage",
            with(json!({"timestamp": "yesterday"}), &[]),
            Reject("timestamp", "got \"yesterday\""),
        ),
        (
            "impossible date",
            with(json!({"timestamp": "2025-02-30T10:00:00Z"}), &[]),
            Reject("timestamp", "RFC 3339"),
        ),
        (
            "epoch number",
            with(json!({"timestamp": 1752056100}), &[]),
            Reject("timestamp", "must be an RFC 3339 string, got a number"),
        ),
        (
            "4 minutes ahead is clock skew",
            with(json!({"timestamp": "2025-07-09T12:04:00Z"}), &[]),
            Accept(json!({"timestamp": "2025-07-09T12:04:00Z"})),
        ),
        (
            "6 minutes ahead",
            with(json!({"timestamp": "2025-07-09T12:06:00Z"}), &[]),
            Reject(
                "timestamp",
                "is in the future (2025-07-09T12:06:00Z); at most 5 minutes ahead",
            ),
        ),
        (
            "year 9999",
            with(json!({"timestamp": "9999-12-31T23:59:59Z"}), &[]),
            Reject("timestamp", "in the future"),
        ),
        (
            "29 days old",
            with(json!({"timestamp": "2025-06-10T12:00:00Z"}), &[]),
            Accept(json!({"timestamp": "2025-06-10T12:00:00Z"})),
        ),
        (
            "a year old: no age limit by default (backfills, long-offline apps)",
            with(json!({"timestamp": "2024-07-09T12:00:00Z"}), &[]),
            Accept(json!({"timestamp": "2024-07-09T12:00:00Z"})),
        ),
        (
            "2000-01-01 exactly",
            with(json!({"timestamp": "2000-01-01T00:00:00Z"}), &[]),
            Accept(json!({"timestamp": "2000-01-01T00:00:00Z"})),
        ),
        (
            "just before 2000",
            with(json!({"timestamp": "1999-12-31T23:59:59Z"}), &[]),
            Reject(
                "timestamp",
                "is before 2000-01-01 (1999-12-31T23:59:59Z); the device clock is probably unset",
            ),
        ),
        (
            "the epoch",
            with(json!({"timestamp": "1970-01-01T00:00:00Z"}), &[]),
            Reject("timestamp", "before 2000-01-01"),
        ),
    ]);
}

#[test]
fn an_age_limit_applies_when_an_operator_sets_one() {
    let thirty_days = Limits {
        max_age: Some(chrono::TimeDelta::days(30)),
        ..Limits::default()
    };
    // (timestamp, accepted)
    for (timestamp, accepted) in [
        ("2025-06-10T12:00:00Z", true),
        ("2025-06-08T12:00:00Z", false),
    ] {
        let result = normalize_with(
            "video",
            &thirty_days,
            &with(json!({"timestamp": timestamp}), &[]),
        );
        match result {
            Ok(_) => assert!(accepted, "{timestamp} accepted"),
            Err(errors) => {
                assert!(!accepted, "{timestamp}: {errors:?}");
                assert!(
                    errors[0]
                        .message
                        .contains("is too old (2025-06-08T12:00:00Z); events older than 30 days"),
                    "{errors:?}"
                );
            }
        }
    }
}

#[test]
fn time_limits_are_configurable() {
    let old = with(json!({"timestamp": "2020-01-01T00:00:00Z"}), &[]);
    let ahead = with(json!({"timestamp": "2025-07-09T12:30:00Z"}), &[]);
    let lenient = Limits {
        max_future_skew: chrono::TimeDelta::hours(1),
        max_age: None,
        ..Limits::default()
    };
    assert!(normalize_with("video", &lenient, &old).is_ok());
    assert!(normalize_with("video", &lenient, &ahead).is_ok());
    let strict = Limits {
        max_future_skew: chrono::TimeDelta::zero(),
        max_age: Some(chrono::TimeDelta::hours(1)),
        ..Limits::default()
    };
    let errors = normalize_with("video", &strict, &with(json!({}), &[])).unwrap_err();
    assert!(
        errors[0].message.contains("older than 1 hour"),
        "{errors:?}"
    );
    let errors = normalize_with(
        "video",
        &strict,
        &with(json!({"timestamp": "2025-07-09T12:00:01Z"}), &[]),
    )
    .unwrap_err();
    assert!(
        errors[0].message.contains("at most 0 seconds ahead"),
        "{errors:?}"
    );
}

#[test]
fn device_is_web_android_or_ios_in_any_case() {
    check(vec![
        (
            "web",
            with(json!({"setting": {"device": "web"}}), &[]),
            Accept(json!({"setting.device": "web"})),
        ),
        (
            "android",
            with(json!({"setting": {"device": "android_app"}}), &[]),
            Accept(json!({"setting.device": "android_app"})),
        ),
        (
            "ios mixed case",
            with(json!({"setting": {"device": "iOS_App"}}), &[]),
            Accept(json!({"setting.device": "ios_app"})),
        ),
        (
            "unknown",
            with(json!({"setting": {"device": "tv"}}), &[]),
            Reject(
                "setting.device",
                "must be one of web, android_app, ios_app; got \"tv\"",
            ),
        ),
        (
            "not a string",
            with(json!({"setting": {"device": 1}}), &[]),
            Reject("setting.device", "must be a string, got a number"),
        ),
        (
            "setting not an object",
            with(json!({"setting": "web"}), &[]),
            Reject(
                "setting",
                "must be an object like {\"device\": \"web\"}, got a string",
            ),
        ),
        (
            "setting null",
            with(json!({"setting": null}), &[]),
            Reject("setting", "is required (got null)"),
        ),
        (
            "unknown setting key",
            with(json!({"setting": {"device": "web", "os": "14"}}), &[]),
            Reject(
                "setting.os",
                "is not a known field; the accepted fields are device",
            ),
        ),
    ]);
}

#[test]
fn unknown_fields_are_rejected_so_typos_do_not_go_unnoticed() {
    check(vec![
        (
            "misspelt rating",
            with(json!({"ratingEquivelant": 0.5}), &["ratingEquivalent"]),
            Reject(
                "ratingEquivelant",
                "is not a known field; the accepted fields are timestamp, subscriber, assetId",
            ),
        ),
        (
            "snake case",
            with(json!({"asset_id": "a"}), &[]),
            Reject("asset_id", "is not a known field"),
        ),
    ]);
}

#[test]
fn problems_per_item_are_capped() {
    let mut value = with(json!({}), &[]);
    for i in 0..500 {
        value[format!("junk{i}")] = json!(i);
    }
    let errors = normalize("video", &value).unwrap_err();
    assert_eq!(errors.len(), 10);
}

#[test]
fn interaction_and_action_exclude_each_other_and_their_extras() {
    check(vec![
        (
            "both",
            with(json!({"action": "play"}), &[]),
            Reject(
                "action",
                "send either interaction (with ratingEquivalent) or action, not both",
            ),
        ),
        (
            "action with a rating",
            with(
                json!({"action": "like", "ratingEquivalent": 0.5}),
                &["interaction"],
            ),
            Reject("ratingEquivalent", "must not be sent with an action"),
        ),
        (
            "stars with an interaction",
            with(json!({"stars": 5}), &[]),
            Reject("stars", "is only used with review-like actions"),
        ),
        (
            "progress with a fixed action",
            with(
                json!({"action": "like", "progress": 0.5}),
                &["interaction", "ratingEquivalent"],
            ),
            Reject("progress", "is only used with watch-like actions"),
        ),
        (
            "null action is absent",
            with(json!({"action": null}), &[]),
            Accept(json!({"interaction": "play"})),
        ),
    ]);
}

#[test]
fn duplicate_keys_are_rejected_when_reading_raw_json() {
    use interaction_core::{Normalizer, RatingMap};
    let map = RatingMap::builtin();
    let limits = Limits::default();
    let normalizer = Normalizer::new(map.profile_for_tenant("t"), &limits, crate::common::now());
    let body = br#"{"timestamp":"2025-07-09T10:15:00Z","subscriber":"a","subscriber":"b",
        "assetId":"x","interaction":"play","setting":{"device":"web","device":"ios_app"}}"#;
    let batch = normalizer.parse_body(body).unwrap();
    let fields: Vec<&str> = batch.errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        ["subscriber", "setting.device"],
        "{:?}",
        batch.errors
    );
    assert!(batch.errors[0].message.contains("more than once"));
}
