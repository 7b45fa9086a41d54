//! Clock-skew correction: the rule and its threshold as tables, the three places a `sentAt`
//! comes from (header, body, event), and every bad `sentAt` or body shape.

use chrono::{DateTime, TimeDelta, Utc};
use interaction_core::{
    BodyError, BodyShape, Limits, Normalizer, RatingMap, parse_sent_at, skew_correction,
};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::common::now;

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

#[test]
fn the_rule_corrects_only_beyond_the_threshold() {
    let threshold = TimeDelta::seconds(60);
    // (sentAt by the device clock, correction added to its timestamps); received at 12:00:00.
    let cases = [
        ("2025-07-09T12:00:00Z", None),
        ("2025-07-09T11:59:00Z", None), // a minute of network delay is not skew
        ("2025-07-09T12:01:00Z", None), // nor a minute of drift ahead
        ("2025-07-09T11:58:59Z", Some(TimeDelta::seconds(61))),
        ("2025-07-09T12:01:01Z", Some(TimeDelta::seconds(-61))),
        ("2025-07-09T13:00:00Z", Some(TimeDelta::hours(-1))), // an hour ahead (time zone bug)
        ("2025-07-08T12:00:00Z", Some(TimeDelta::days(1))),   // a day behind
        (
            "2025-07-09T11:58:59.5Z",
            Some(TimeDelta::milliseconds(60_500)),
        ),
    ];
    for (sent_at, want) in cases {
        assert_eq!(
            skew_correction(at(sent_at), now(), threshold),
            want,
            "sentAt {sent_at}"
        );
    }
}

#[test]
fn the_threshold_is_a_setting() {
    let sent_at = at("2025-07-09T11:55:00Z"); // 5 minutes behind
    // (threshold, corrected)
    for (threshold, corrected) in [
        (TimeDelta::zero(), true),
        (TimeDelta::seconds(60), true),
        (TimeDelta::minutes(5), false),
        (TimeDelta::hours(1), false),
    ] {
        assert_eq!(
            skew_correction(sent_at, now(), threshold).is_some(),
            corrected,
            "threshold {threshold}"
        );
    }
}

#[test]
fn sent_at_must_be_a_plausible_rfc3339_time() {
    // (text, Ok(parsed) or the error's text)
    let cases: [(&str, Result<&str, &str>); 7] = [
        ("2025-07-09T12:00:00Z", Ok("2025-07-09T12:00:00Z")),
        (" 2025-07-09T15:00:00+03:00 ", Ok("2025-07-09T12:00:00Z")),
        ("2099-12-31T23:59:59Z", Ok("2099-12-31T23:59:59Z")),
        ("yesterday", Err("must be an RFC 3339 date-time")),
        ("2025-07-09T12:00:00", Err("must be an RFC 3339 date-time")),
        (
            "1970-01-01T00:00:00Z",
            Err("is not a plausible device time"),
        ),
        (
            "2100-01-01T00:00:00Z",
            Err("between 2000-01-01 and 2100-01-01"),
        ),
    ];
    for (text, want) in cases {
        match (parse_sent_at(text), want) {
            (Ok(parsed), Ok(want)) => assert_eq!(parsed, at(want), "{text}"),
            (Err(message), Err(want)) => assert!(message.contains(want), "{text}: {message}"),
            (got, want) => panic!("{text}: got {got:?}, wanted {want:?}"),
        }
    }
}

/// Reads `body` as received at `now()`, with `header` as the request's X-Sent-At.
fn read(body: &Value, header: Option<&str>) -> Result<interaction_core::Batch, BodyError> {
    let map = RatingMap::builtin();
    let limits = Limits::default();
    Normalizer::new(map.profile("video").unwrap(), &limits, now())
        .with_sent_at(header.map(at))
        .parse_body(body.to_string().as_bytes())
}

fn event(timestamp: &str) -> Value {
    json!({"timestamp": timestamp, "subscriber": "u", "assetId": "a", "interaction": "play",
           "setting": {"device": "web"}})
}

/// (stored timestamp, original timestamp) of an accepted event.
type Stored = (String, Option<String>);

/// A body, its X-Sent-At, the events it must store, and the request-level correction.
type Case = (Value, Option<&'static str>, Vec<Stored>, Option<TimeDelta>);

/// [`Stored`] of each accepted event.
fn times(batch: &interaction_core::Batch) -> Vec<Stored> {
    batch
        .events
        .iter()
        .map(|e| {
            (
                interaction_core::format_timestamp(&e.event.interaction.timestamp),
                e.event
                    .original_timestamp
                    .as_ref()
                    .map(interaction_core::format_timestamp),
            )
        })
        .collect()
}

#[test]
fn a_sent_at_from_the_header_the_body_or_the_event_corrects_timestamps() {
    // The device clock is 2 hours behind: it wrote 09:59 for what happened at 11:59.
    let behind = "2025-07-09T10:00:00Z";
    let corrected = |t: &str| (t.to_owned(), Some("2025-07-09T09:59:00Z".to_owned()));
    // (body, X-Sent-At, stored times, request-level correction)
    let cases: Vec<Case> = vec![
        (
            event("2025-07-09T09:59:00Z"),
            None,
            vec![("2025-07-09T09:59:00Z".into(), None)],
            None,
        ),
        (
            event("2025-07-09T09:59:00Z"),
            Some(behind),
            vec![corrected("2025-07-09T11:59:00Z")],
            Some(TimeDelta::hours(2)),
        ),
        (
            json!({"sentAt": behind, "batch": [event("2025-07-09T09:59:00Z")]}),
            None,
            vec![corrected("2025-07-09T11:59:00Z")],
            Some(TimeDelta::hours(2)),
        ),
        (
            // batch before sentAt: members may come in any order.
            json!({"batch": [event("2025-07-09T09:59:00Z")], "sentAt": behind}),
            None,
            vec![corrected("2025-07-09T11:59:00Z")],
            Some(TimeDelta::hours(2)),
        ),
        (
            // An event's own sentAt wins over the request's (queued offline, sent later).
            json!({"sentAt": "2025-07-09T12:00:00Z", "batch": [
                event("2025-07-09T09:59:00Z"),
                {"sentAt": behind, "timestamp": "2025-07-09T09:59:00Z", "subscriber": "u",
                 "assetId": "a", "interaction": "play", "setting": {"device": "web"}}
            ]}),
            None,
            vec![
                ("2025-07-09T09:59:00Z".into(), None),
                corrected("2025-07-09T11:59:00Z"),
            ],
            None,
        ),
        (
            // Within the threshold: untouched.
            json!([event("2025-07-09T09:59:00Z")]),
            Some("2025-07-09T11:59:30Z"),
            vec![("2025-07-09T09:59:00Z".into(), None)],
            None,
        ),
        (
            // An hour ahead: a timestamp "in the future" is brought back and accepted.
            json!([event("2025-07-09T12:59:00Z")]),
            Some("2025-07-09T13:00:00Z"),
            vec![(
                "2025-07-09T11:59:00Z".into(),
                Some("2025-07-09T12:59:00Z".into()),
            )],
            Some(TimeDelta::hours(-1)),
        ),
    ];
    for (body, header, want, skew) in cases {
        let batch = read(&body, header).unwrap_or_else(|e| panic!("{body}: {e}"));
        assert!(batch.errors.is_empty(), "{body}: {:?}", batch.errors);
        assert_eq!(times(&batch), want, "{body} with X-Sent-At {header:?}");
        assert_eq!(batch.clock_skew, skew, "{body}");
        assert_eq!(
            batch.corrected(),
            want.iter().filter(|(_, o)| o.is_some()).count()
        );
    }
}

#[test]
fn bounds_apply_after_correction() {
    // 10 minutes ahead of the server by the device's corrected clock: still the future.
    let batch = read(
        &json!([event("2025-07-09T13:10:00Z")]),
        Some("2025-07-09T13:00:00Z"),
    )
    .unwrap();
    let message = &batch.errors[0].message;
    assert!(
        message.contains("is in the future (2025-07-09T12:10:00Z, 2025-07-09T13:10:00Z as sent, corrected by -1 hour for the device clock)"),
        "{message}"
    );
    // A device clock in 2001 for a request of 2025: 2001 timestamps move to 2025.
    let batch = read(
        &json!([event("2001-01-01T00:00:00Z")]),
        Some("2001-01-01T00:00:10Z"),
    )
    .unwrap();
    assert_eq!(batch.errors, vec![]);
    assert_eq!(
        times(&batch)[0].0,
        "2025-07-09T11:59:50Z",
        "moved by the skew"
    );
}

#[test]
fn bad_sent_at_and_envelopes_are_refused_with_a_reason() {
    let ok = event("2025-07-09T11:00:00Z");
    // (body, X-Sent-At, error text)
    let cases: Vec<(Value, Option<&str>, &str)> = vec![
        (
            json!({"sentAt": "soon", "batch": [ok]}),
            None,
            "sentAt must be an RFC 3339 date-time",
        ),
        (
            json!({"sentAt": 1752062400, "batch": [ok]}),
            None,
            "sentAt must be an RFC 3339 string, got a number",
        ),
        (
            json!({"sentAt": "1970-01-01T00:00:00Z", "batch": [ok]}),
            None,
            "sentAt is not a plausible device time",
        ),
        (
            json!({"sentAt": "2025-07-09T12:00:00Z", "batch": [ok]}),
            Some("2025-07-09T12:00:00Z"),
            "sentAt was sent both in the X-Sent-At header and in the body",
        ),
        (
            json!({"sentAt": "2025-07-09T12:00:00Z", "batch": {"timestamp": "x"}}),
            None,
            "\"batch\" must be an array of interaction objects, got an object",
        ),
        (
            json!({"batch": "[]"}),
            None,
            "\"batch\" must be an array of interaction objects, got a string",
        ),
        (
            json!({"batch": [ok], "subscriber": "u", "extra": 1}),
            None,
            "a body with \"batch\" may have only \"sentAt\" beside it; got \"subscriber\", \"extra\"",
        ),
        (
            json!({"sentAt": "2025-07-09T12:00:00Z", "batch": []}),
            None,
            "the batch is empty",
        ),
    ];
    for (body, header, want) in cases {
        match read(&body, header) {
            Ok(batch) => panic!("{body}: accepted {batch:?}"),
            Err(error) => assert!(error.to_string().contains(want), "{body}: {error}"),
        }
    }
    // An event's own bad sentAt is that item's error; the others are stored.
    let batch = read(
        &json!([ok, {"sentAt": "never", "timestamp": "2025-07-09T11:00:00Z", "subscriber": "u",
                     "assetId": "a", "interaction": "play", "setting": {"device": "web"}}]),
        None,
    )
    .unwrap();
    assert_eq!(batch.events.len(), 1);
    assert_eq!(
        (batch.errors[0].index, batch.errors[0].field.as_str()),
        (1, "sentAt")
    );
}

#[test]
fn an_envelope_is_an_array_body_and_keeps_the_batch_limit() {
    let map = RatingMap::builtin();
    let limits = Limits {
        max_batch_events: 2,
        ..Limits::default()
    };
    let normalizer = Normalizer::new(map.profile("video").unwrap(), &limits, now());
    let e = event("2025-07-09T11:00:00Z");
    let two = json!({"batch": [e, e]}).to_string();
    let batch = normalizer.parse_body(two.as_bytes()).unwrap();
    assert_eq!((batch.shape, batch.events.len()), (BodyShape::Array, 2));
    let three = json!({"batch": [e, e, e]}).to_string();
    assert_eq!(
        normalizer.parse_body(three.as_bytes()).unwrap_err(),
        BodyError::TooManyEvents { max: 2 }
    );
}

proptest! {
    /// For any device clock error and event time: beyond the threshold every timestamp moves
    /// by exactly the skew and keeps its original; within it nothing moves.
    #[test]
    fn corrected_time_is_timestamp_plus_skew(
        skew_s in -86_400i64 * 400..86_400 * 400,
        age_s in 0i64..86_400 * 30,
    ) {
        let skew = TimeDelta::seconds(skew_s);
        let sent_at = now() - skew; // the device clock is `skew` behind
        let happened = now() - TimeDelta::seconds(age_s);
        let written = happened - skew; // what the device wrote
        let body = json!({"sentAt": interaction_core::format_timestamp(&sent_at),
                          "batch": [event(&interaction_core::format_timestamp(&written))]});
        let Ok(batch) = read(&body, None) else {
            // sentAt outside 2000..2100 is refused, never corrected by.
            prop_assert!(sent_at.timestamp() < interaction_core::EARLIEST_TIMESTAMP
                || sent_at.timestamp() >= interaction_core::LATEST_SENT_AT);
            return Ok(());
        };
        if skew_s.abs() > 60 {
            prop_assert_eq!(batch.errors.len(), 0, "{:?}", batch.errors);
            let stored = &batch.events[0].event;
            prop_assert_eq!(stored.interaction.timestamp, happened);
            prop_assert_eq!(stored.original_timestamp, Some(written));
        } else if batch.errors.is_empty() {
            let stored = &batch.events[0].event;
            prop_assert_eq!(stored.interaction.timestamp, written);
            prop_assert_eq!(stored.original_timestamp, None);
        }
    }
}

#[test]
fn the_api_key_may_sit_beside_the_batch_only_when_the_caller_allows_it() {
    let ok = event("2025-07-09T11:00:00Z");
    let map = RatingMap::builtin();
    let limits = Limits::default();
    let read = |body: &Value, body_key: bool| {
        Normalizer::new(map.profile("video").unwrap(), &limits, now())
            .with_body_key(body_key)
            .parse_body(body.to_string().as_bytes())
    };
    // (body, the beacon form allowed, the error wanted or None)
    let cases = [
        (json!({"apiKey": "k", "batch": [ok]}), true, None),
        (
            json!({"apiKey": "k", "sentAt": "2025-07-09T11:00:00Z", "batch": [ok]}),
            true,
            None,
        ),
        (
            json!({"apiKey": "k", "batch": [ok]}),
            false,
            Some("may have only \"sentAt\" beside it; got \"apiKey\""),
        ),
        (
            json!({"apiKey": "k", "extra": 1, "batch": [ok]}),
            true,
            Some("may have only \"sentAt\" beside it; got \"extra\""),
        ),
    ];
    for (body, body_key, want) in cases {
        match (read(&body, body_key), want) {
            (Ok(batch), None) => assert_eq!(batch.events.len(), 1, "{body}"),
            (Err(error), Some(want)) => {
                assert!(error.to_string().contains(want), "{body}: {error}")
            }
            (result, _) => panic!("{body} (body key {body_key}): {result:?}"),
        }
    }
    // In an event the key is an unknown field, beacon or not: the item is refused.
    let mut keyed = ok.clone();
    keyed["apiKey"] = json!("k");
    let batch = read(&json!({"batch": [ok, keyed]}), true).unwrap();
    assert_eq!(batch.events.len(), 1);
    assert_eq!(
        (batch.errors[0].index, batch.errors[0].field.as_str()),
        (1, "apiKey")
    );
    assert_eq!(interaction_core::BODY_KEY, "apiKey");
}
