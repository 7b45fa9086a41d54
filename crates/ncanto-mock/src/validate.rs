//! Strict validation of `POST /interactions` bodies.
//!
//! The mock is where normalization bugs in the forwarder get caught, so it is stricter than
//! Ncanto needs to be: every event must be *exactly* the canonical form
//! `interaction_core` writes — it must deserialize as [`Interaction`] and serialize back to
//! the same JSON value (same fields, same spellings, UTC `Z` timestamps, absent rather than
//! `null` optional fields), and uphold [`Interaction`]'s invariants (trimmed, non-empty,
//! capped, control-free strings; a finite rating in -1..=1 that is not -0.0). Numbers compare
//! by value: `1` and `1.0` are the same JSON number.
//!
//! Bodies written exactly as `serde_json` writes `Interaction`s (what the forwarder sends)
//! are checked by parsing straight into structs and comparing bytes, about three times
//! cheaper than walking a `Value` tree; anything else takes the slow path, which names the
//! first difference of each refused event.

use interaction_core::{Interaction, MAX_COMMENT_CHARS, MAX_ID_CHARS, rating_in_range};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One refused event of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invalid {
    /// Index in the request's array (0 for a single object).
    pub index: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// Why a whole request was refused: the body of a 400.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// What went wrong, in one sentence.
    pub error: String,
    /// The refused events (empty when the body itself was the problem).
    pub invalid: Vec<Invalid>,
}

impl Rejection {
    fn body(error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            invalid: Vec::new(),
        }
    }
}

/// Reads a request body: one canonical event object or a non-empty array of them. Any
/// invalid event refuses the whole body.
pub fn parse_body(body: &[u8]) -> Result<Vec<Interaction>, Rejection> {
    if let Some(events) = exactly_canonical(body) {
        return Ok(events);
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Rejection::body(format!("the body is not JSON: {e}")))?;
    let items = match value {
        Value::Array(items) if items.is_empty() => {
            return Err(Rejection::body("the array holds no events"));
        }
        Value::Array(items) => items,
        object @ Value::Object(_) => vec![object],
        _ => {
            return Err(Rejection::body(
                "the body must be an event object or an array of them",
            ));
        }
    };
    let mut events = Vec::with_capacity(items.len());
    let mut invalid = Vec::new();
    for (index, item) in items.iter().enumerate() {
        match check_event(item) {
            Ok(event) => events.push(event),
            Err(reason) => invalid.push(Invalid { index, reason }),
        }
    }
    if invalid.is_empty() {
        Ok(events)
    } else {
        Err(Rejection {
            error: format!(
                "{} of {} events are not canonical",
                invalid.len(),
                items.len()
            ),
            invalid,
        })
    }
}

/// The fast path, for bodies written the way `serde_json` writes `Interaction`s (the
/// forwarder's): parse straight into structs and compare the bytes they serialize to with the
/// body. `None` sends the body down the slow path, which tells exactly what differs.
fn exactly_canonical(body: &[u8]) -> Option<Vec<Interaction>> {
    let body = body.trim_ascii();
    let (events, canonical) = match body.first()? {
        b'[' => {
            let events: Vec<Interaction> = serde_json::from_slice(body).ok()?;
            let canonical = serde_json::to_vec(&events).ok()?;
            (events, canonical)
        }
        b'{' => {
            let event: Interaction = serde_json::from_slice(body).ok()?;
            let canonical = serde_json::to_vec(&event).ok()?;
            (vec![event], canonical)
        }
        _ => return None,
    };
    let valid = !events.is_empty()
        && canonical == body
        && events.iter().all(|event| check_invariants(event).is_ok());
    valid.then_some(events)
}

/// Checks one event: the [`Interaction`] it is, or why it is not exactly canonical.
pub fn check_event(value: &Value) -> Result<Interaction, String> {
    if !value.is_object() {
        return Err(format!("must be an object, got {}", kind(value)));
    }
    let event = Interaction::deserialize(value).map_err(|e| describe(value, &e))?;
    check_invariants(&event)?;
    let canonical = serde_json::to_value(&event).map_err(|e| e.to_string())?;
    match first_difference(value, &canonical, "") {
        None => Ok(event),
        Some(difference) => Err(difference),
    }
}

/// A deserialization error, naming the timestamp field when it is the culprit (chrono's
/// messages do not).
fn describe(value: &Value, error: &serde_json::Error) -> String {
    if let Some(Value::String(timestamp)) = value.get("timestamp")
        && let Err(e) = chrono::DateTime::parse_from_rfc3339(timestamp)
    {
        return format!("timestamp {timestamp:?} is not RFC 3339: {e}");
    }
    error.to_string()
}

fn check_invariants(event: &Interaction) -> Result<(), String> {
    let rating = event.rating_equivalent;
    if !rating_in_range(rating) {
        return Err(format!(
            "ratingEquivalent must be finite and within -1.0..=1.0, got {rating}"
        ));
    }
    if rating == 0.0 && rating.is_sign_negative() {
        return Err("ratingEquivalent is -0.0; the canonical form writes 0.0".into());
    }
    check_text("subscriber", &event.subscriber, MAX_ID_CHARS, false)?;
    check_text("assetId", &event.asset_id, MAX_ID_CHARS, false)?;
    if let Some(context_id) = &event.context_id {
        check_text("contextId", context_id, MAX_ID_CHARS, false)?;
    }
    if let Some(comment) = &event.comment {
        check_text("comment", comment, MAX_COMMENT_CHARS, true)?;
    }
    Ok(())
}

/// Text as the normalizer leaves it: non-empty, trimmed, at most `max` characters, no control
/// characters (but tab and line breaks where `allow_breaks`).
fn check_text(field: &str, text: &str, max: usize, allow_breaks: bool) -> Result<(), String> {
    if text.is_empty() {
        return Err(format!("{field} must not be empty"));
    }
    if text.trim() != text {
        return Err(format!("{field} has surrounding whitespace: {text:?}"));
    }
    let chars = text.chars().count();
    if chars > max {
        return Err(format!(
            "{field} must be at most {max} characters, got {chars}"
        ));
    }
    if let Some(c) = text
        .chars()
        .find(|c| c.is_control() && !(allow_breaks && matches!(c, '\t' | '\n' | '\r')))
    {
        return Err(format!(
            "{field} contains the control character U+{:04X}",
            c as u32
        ));
    }
    Ok(())
}

/// The first way `sent` differs from `canonical`, described for a person; `None` when they
/// are the same JSON value (numbers compared by value).
fn first_difference(sent: &Value, canonical: &Value, path: &str) -> Option<String> {
    match (sent, canonical) {
        (Value::Object(sent), Value::Object(canonical)) => {
            for (key, value) in sent {
                let field = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match canonical.get(key) {
                    None if value.is_null() => {
                        return Some(format!("{field} is null; the canonical form omits it"));
                    }
                    None => return Some(format!("unexpected field {field}")),
                    Some(expected) => {
                        if let Some(difference) = first_difference(value, expected, &field) {
                            return Some(difference);
                        }
                    }
                }
            }
            canonical
                .keys()
                .find(|key| !sent.contains_key(*key))
                .map(|key| {
                    format!(
                        "missing field {path}{}{key}",
                        if path.is_empty() { "" } else { "." }
                    )
                })
        }
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => None,
        (Value::Array(a), Value::Array(b))
            if a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|(a, b)| first_difference(a, b, path).is_none()) =>
        {
            None
        }
        _ if sent == canonical => None,
        _ => Some(format!(
            "{path} is {sent} but the canonical form is {canonical}"
        )),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canonical() -> Value {
        json!({
            "timestamp": "2025-07-09T10:15:00Z",
            "subscriber": "viusasa_user_12345",
            "assetId": "viusasa_episode_67890",
            "interaction": "play_complete",
            "ratingEquivalent": 0.5,
            "comment": "User watched 90% of the episode.",
            "contextId": "viusasa_player_context",
            "setting": {"device": "android_app"}
        })
    }

    fn with(field: &str, value: Value) -> Value {
        let mut event = canonical();
        let (outer, inner) = match field.split_once('.') {
            Some((outer, inner)) => (outer, Some(inner)),
            None => (field, None),
        };
        let object = event.as_object_mut().unwrap();
        match inner {
            Some(inner) => {
                object[outer][inner] = value;
            }
            None => {
                object.insert(outer.into(), value);
            }
        }
        event
    }

    fn without(field: &str) -> Value {
        let mut event = canonical();
        event.as_object_mut().unwrap().remove(field);
        event
    }

    #[test]
    fn canonical_events_pass() {
        let minimal = json!({
            "timestamp": "2025-07-09T09:30:00.250Z", "subscriber": "u", "assetId": "a",
            "interaction": "recommendationImpression", "ratingEquivalent": 0.0,
            "setting": {"device": "ios_app"}
        });
        for event in [
            canonical(),
            minimal,
            with("ratingEquivalent", json!(1)),
            with("ratingEquivalent", json!(-1.0)),
            with("comment", json!("two\nlines\tand a tab")),
        ] {
            assert!(check_event(&event).is_ok(), "{event}");
        }
    }

    #[test]
    fn every_deviation_from_the_canonical_form_is_refused() {
        let long = "x".repeat(MAX_ID_CHARS + 1);
        let table: Vec<(&str, Value, &str)> = vec![
            (
                "interaction case",
                with("interaction", json!("Play_Complete")),
                "interaction",
            ),
            (
                "device case",
                with("setting.device", json!("Android_App")),
                "setting.device",
            ),
            (
                "unknown interaction",
                with("interaction", json!("watch")),
                "unknown",
            ),
            (
                "extra field",
                with("eventId", json!("e1")),
                "unexpected field eventId",
            ),
            (
                "extra setting field",
                with("setting.os", json!("14")),
                "unknown field",
            ),
            (
                "null comment",
                with("comment", Value::Null),
                "comment is null",
            ),
            (
                "offset timestamp",
                with("timestamp", json!("2025-07-09T13:15:00+03:00")),
                "timestamp",
            ),
            (
                "+00:00 timestamp",
                with("timestamp", json!("2025-07-09T10:15:00+00:00")),
                "timestamp",
            ),
            (
                "short fraction",
                with("timestamp", json!("2025-07-09T10:15:00.5Z")),
                "timestamp",
            ),
            (
                "date only",
                with("timestamp", json!("2025-07-09")),
                "timestamp",
            ),
            (
                "rating above 1",
                with("ratingEquivalent", json!(1.5)),
                "ratingEquivalent",
            ),
            (
                "rating below -1",
                with("ratingEquivalent", json!(-1.01)),
                "ratingEquivalent",
            ),
            (
                "negative zero",
                with("ratingEquivalent", json!(-0.0)),
                "-0.0",
            ),
            (
                "rating as string",
                with("ratingEquivalent", json!("0.5")),
                "invalid type",
            ),
            (
                "missing rating",
                without("ratingEquivalent"),
                "ratingEquivalent",
            ),
            ("missing setting", without("setting"), "setting"),
            (
                "empty subscriber",
                with("subscriber", json!("")),
                "subscriber must not be empty",
            ),
            (
                "padded asset",
                with("assetId", json!(" a1 ")),
                "assetId has surrounding",
            ),
            (
                "empty comment",
                with("comment", json!("")),
                "comment must not be empty",
            ),
            (
                "empty context",
                with("contextId", json!("")),
                "contextId must not be empty",
            ),
            (
                "control char",
                with("subscriber", json!("u\u{7}")),
                "control character",
            ),
            (
                "line break in id",
                with("assetId", json!("a\nb")),
                "control character",
            ),
            ("long id", with("assetId", json!(long)), "at most 256"),
            ("not an object", json!(["x"]), "must be an object"),
        ];
        for (case, event, needle) in table {
            let bytes = serde_json::to_vec(&event).unwrap();
            assert!(exactly_canonical(&bytes).is_none(), "{case}");
            let reason = check_event(&event).expect_err(case);
            assert!(
                reason.contains(needle),
                "{case}: {reason:?} lacks {needle:?}"
            );
        }
    }

    #[test]
    fn bodies_written_by_serde_take_the_fast_path_and_others_the_slow_one() {
        let event: Interaction = serde_json::from_value(canonical()).unwrap();
        let compact = serde_json::to_vec(&vec![event.clone(), event.clone()]).unwrap();
        assert_eq!(exactly_canonical(&compact).unwrap().len(), 2);
        let one = serde_json::to_vec(&event).unwrap();
        assert_eq!(
            exactly_canonical(&one).unwrap(),
            std::slice::from_ref(&event)
        );
        // Whitespace, another key order or `1` for `1.0`: canonical all the same, slowly.
        let pretty = serde_json::to_vec_pretty(&vec![event.clone()]).unwrap();
        let sorted = serde_json::to_vec(&canonical()).unwrap();
        let mut integer = event.clone();
        integer.rating_equivalent = 1.0;
        let integer = String::from_utf8(serde_json::to_vec(&integer).unwrap())
            .unwrap()
            .replace("1.0", "1");
        for body in [pretty, sorted, integer.into_bytes()] {
            assert!(exactly_canonical(&body).is_none());
            assert_eq!(parse_body(&body).unwrap().len(), 1);
        }
        assert!(exactly_canonical(b"[]").is_none());
    }

    #[test]
    fn bodies_are_one_object_or_a_non_empty_array() {
        let one = serde_json::to_vec(&canonical()).unwrap();
        assert_eq!(parse_body(&one).unwrap().len(), 1);
        let two = serde_json::to_vec(&json!([canonical(), canonical()])).unwrap();
        assert_eq!(parse_body(&two).unwrap().len(), 2);
        for bad in [&b"[]"[..], b"{", b"42", b"\"event\"", b""] {
            let rejection = parse_body(bad).unwrap_err();
            assert!(rejection.invalid.is_empty(), "{rejection:?}");
        }
    }

    #[test]
    fn one_invalid_event_refuses_the_whole_body_with_its_index() {
        let body = json!([
            canonical(),
            with("interaction", json!("Play")),
            canonical(),
            with("extra", json!(1))
        ]);
        let rejection = parse_body(&serde_json::to_vec(&body).unwrap()).unwrap_err();
        let indexes: Vec<usize> = rejection.invalid.iter().map(|i| i.index).collect();
        assert_eq!(indexes, [1, 3]);
        assert_eq!(rejection.error, "2 of 4 events are not canonical");
    }
}
