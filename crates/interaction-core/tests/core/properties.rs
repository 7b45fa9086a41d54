//! Properties: no input makes the normalizer panic, reading bytes and reading a parsed value
//! agree, and every accepted event survives a trip through its own JSON unchanged.

use chrono::{FixedOffset, TimeDelta};
use interaction_core::{Event, Limits, Normalizer, RatingMap};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use crate::common::now;

const FIELDS: [&str; 13] = [
    "timestamp",
    "subscriber",
    "assetId",
    "interaction",
    "action",
    "ratingEquivalent",
    "progress",
    "stars",
    "comment",
    "contextId",
    "eventId",
    "setting",
    "device",
];

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter_map("JSON has no NaN", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        (-2.0f64..2.0).prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::String),
        prop::sample::select(vec![
            "web",
            "ios_app",
            "play",
            "rate",
            "like",
            "watch",
            "review",
            "2025-07-09T10:00:00Z",
            "",
            " ",
            "\u{0}",
            "\n",
        ])
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        prop::sample::select(FIELDS.to_vec()).prop_map(str::to_owned),
                        "[a-zA-Z]{0,8}",
                    ],
                    inner
                ),
                0..8
            )
            .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_.:-]{1,40}",
        any::<String>().prop_map(move |s| s.chars().take(max + 2).collect()),
        Just(" padded value\t".to_owned()),
        Just("é".repeat(max)),
    ]
}

fn timestamp(oldest_days: i64, newest_secs: i64) -> impl Strategy<Value = String> {
    (
        -oldest_days * 86_400..newest_secs,
        0u32..1_000_000_000,
        -14i32..=14,
        any::<bool>(),
    )
        .prop_map(|(secs, nanos, hours, zulu)| {
            let at = now() + TimeDelta::seconds(secs) + TimeDelta::nanoseconds(nanos.into());
            if zulu {
                at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            } else {
                let offset = FixedOffset::east_opt(hours * 3600).unwrap();
                at.with_timezone(&offset).to_rfc3339()
            }
        })
}

/// Objects shaped like events, with each field drawn from good and bad values.
fn event_like() -> impl Strategy<Value = Value> {
    let interaction = prop::sample::select(vec![
        "recommendationImpression",
        "select",
        "play",
        "play_complete",
        "rate",
        "deselect",
        "share",
        "add_to_cart",
        "purchase",
        "PLAY",
        "click",
        "",
    ]);
    let action = prop::sample::select(vec![
        "like",
        "dislike",
        "watch",
        "review",
        "click",
        "share",
        "add_to_cart",
        "purchase",
        "view_product",
        "add_to_wishlist",
        "unknown",
    ]);
    (
        prop::option::of(timestamp(40, 600)),
        prop::option::of(text(256)),
        prop::option::of(text(256)),
        prop::option::of(interaction),
        prop::option::of(action),
        prop::option::of(prop_oneof![-1.2f64..1.2, Just(1.0), Just(-1.0), Just(-0.0)]),
        prop::option::of(prop_oneof![-0.5f64..1.5, Just(0.8)]),
        prop::option::of(0u8..7),
        prop::option::of(text(1024)),
        prop::option::of(text(256)),
        prop::option::of(text(128)),
        prop::option::of(prop::sample::select(vec![
            "web",
            "android_app",
            "IOS_APP",
            "tv",
        ])),
    )
        .prop_map(
            |(
                ts,
                subscriber,
                asset,
                interaction,
                action,
                rating,
                progress,
                stars,
                comment,
                context,
                event_id,
                device,
            )| {
                let mut object = Map::new();
                let mut put = |key: &str, value: Option<Value>| {
                    if let Some(value) = value {
                        object.insert(key.to_owned(), value);
                    }
                };
                put("timestamp", ts.map(Value::from));
                put("subscriber", subscriber.map(Value::from));
                put("assetId", asset.map(Value::from));
                put("interaction", interaction.map(Value::from));
                put("action", action.map(Value::from));
                put("ratingEquivalent", rating.map(Value::from));
                put("progress", progress.map(Value::from));
                put("stars", stars.map(Value::from));
                put("comment", comment.map(Value::from));
                put("contextId", context.map(Value::from));
                put("eventId", event_id.map(Value::from));
                put("setting", device.map(|d| json!({"device": d})));
                Value::Object(object)
            },
        )
}

/// Events that satisfy every rule.
fn valid_event() -> impl Strategy<Value = Value> {
    (
        timestamp(29, 299),
        "[a-zA-Z0-9_]{1,64}",
        "[a-zA-Z0-9_ ]{0,20}[a-z]",
        prop::sample::select(vec![
            "recommendationImpression",
            "select",
            "play",
            "play_complete",
            "rate",
            "deselect",
            "share",
            "add_to_cart",
            "purchase",
        ]),
        -1.0f64..=1.0,
        prop::option::of("[^\u{0}-\u{1f}\u{7f}-\u{9f}]{1,100}"),
        prop::sample::select(vec!["web", "android_app", "ios_app"]),
    )
        .prop_map(
            |(ts, subscriber, asset, interaction, rating, comment, device)| {
                json!({
                    "timestamp": ts, "subscriber": subscriber, "assetId": asset,
                    "interaction": interaction, "ratingEquivalent": rating,
                    "comment": comment, "setting": {"device": device},
                })
            },
        )
}

fn with_normalizer<T>(f: impl FnOnce(&Normalizer<'_>) -> T) -> T {
    let map = RatingMap::builtin();
    let limits = Limits::default();
    f(&Normalizer::new(
        map.profile("ecommerce").unwrap(),
        &limits,
        now(),
    ))
}

fn round_trip(normalizer: &Normalizer<'_>, event: &Event) -> Result<(), TestCaseError> {
    let json = serde_json::to_vec(event).unwrap();
    let again = normalizer.parse_body(&json).unwrap();
    prop_assert!(
        again.errors.is_empty(),
        "{:?} from {}",
        again.errors,
        String::from_utf8_lossy(&json)
    );
    prop_assert_eq!(&again.events[0].event, event);
    Ok(())
}

proptest! {
    #[test]
    fn no_json_value_makes_the_normalizer_panic(value in arbitrary_json()) {
        with_normalizer(|n| {
            let _ = n.normalize_value(&value);
            let from_value = n.parse_value_body(&value);
            let from_bytes = n.parse_body(&serde_json::to_vec(&value).unwrap());
            // Both entry points see the same thing (objects cannot repeat keys in a Value).
            prop_assert_eq!(from_value, from_bytes);
            Ok(())
        })?;
    }

    #[test]
    fn no_byte_string_makes_the_body_reader_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        with_normalizer(|n| { let _ = n.parse_body(&bytes); });
    }

    #[test]
    fn accepted_events_survive_a_round_trip_through_their_json(value in event_like()) {
        with_normalizer(|n| {
            if let Ok(event) = n.normalize_value(&value) {
                round_trip(n, &event)?;
                // Ncanto's view parses back too.
                let canonical = serde_json::to_value(&event.interaction).unwrap();
                prop_assert_eq!(n.normalize_value(&canonical).unwrap().interaction, event.interaction);
            }
            Ok(())
        })?;
    }

    #[test]
    fn valid_events_are_accepted_and_round_trip(value in valid_event()) {
        with_normalizer(|n| {
            let event = n.normalize_value(&value);
            prop_assert!(event.is_ok(), "{:?} for {}", event, value);
            let event = event.unwrap();
            prop_assert_eq!(event.interaction.rating_equivalent, value["ratingEquivalent"].as_f64().unwrap() + 0.0);
            prop_assert!(event.interaction.timestamp.to_rfc3339().ends_with("+00:00"));
            round_trip(n, &event)
        })?;
    }
}
