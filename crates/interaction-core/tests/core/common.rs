//! Shared fixtures.

use chrono::{DateTime, Utc};
use interaction_core::{Event, FieldError, Limits, Normalizer, RatingMap};
use serde_json::{Value, json};

/// The fixed "now" of every test: shortly after the spec's example events.
pub(crate) fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2025-07-09T12:00:00Z")
        .unwrap()
        .to_utc()
}

/// A valid event in the canonical form, to derive cases from.
pub(crate) fn base() -> Value {
    json!({
        "timestamp": "2025-07-09T10:15:00Z",
        "subscriber": "user_1",
        "assetId": "asset_1",
        "interaction": "play",
        "ratingEquivalent": 0.25,
        "setting": {"device": "web"}
    })
}

/// `base()` with `patch`'s keys set and `remove`'s keys taken out.
pub(crate) fn with(patch: Value, remove: &[&str]) -> Value {
    let mut value = base();
    let object = value.as_object_mut().unwrap();
    for key in remove {
        object.remove(*key);
    }
    for (key, v) in patch.as_object().unwrap() {
        object.insert(key.clone(), v.clone());
    }
    value
}

/// Normalizes with a built-in profile and default limits.
pub(crate) fn normalize(profile: &str, value: &Value) -> Result<Event, Vec<FieldError>> {
    normalize_with(profile, &Limits::default(), value)
}

/// Normalizes with a built-in profile and the given limits.
pub(crate) fn normalize_with(
    profile: &str,
    limits: &Limits,
    value: &Value,
) -> Result<Event, Vec<FieldError>> {
    let map = RatingMap::builtin();
    let profile = map.profile(profile).unwrap();
    Normalizer::new(profile, limits, now()).normalize_value(value)
}
