//! The interaction event schema and everything pure about it: parsing client JSON, validating
//! and normalizing it into the canonical form Ncanto receives, and the rating profiles that
//! fill in ratings for `interaction`-only and `action` events.
//!
//! No I/O, no async, no clock: callers pass the current time and the rating map, which keeps
//! every rule here testable as a table. The HTTP layer maps [`BodyError`] and [`ItemError`]s
//! to responses; nothing downstream re-checks an [`Event`] built here.
//!
//! ```
//! use interaction_core::{Limits, Normalizer, RatingMap};
//!
//! let map = RatingMap::builtin();
//! let limits = Limits::default();
//! let now = chrono::DateTime::parse_from_rfc3339("2025-07-09T12:00:00Z").unwrap().to_utc();
//! let normalizer = Normalizer::new(map.profile_for_tenant("viusasa"), &limits, now);
//!
//! let body = br#"{"timestamp": "2025-07-09T13:15:00+03:00", "subscriber": "u1",
//!                 "assetId": "ep9", "action": "watch", "progress": 0.9,
//!                 "setting": {"device": "android_app"}}"#;
//! let batch = normalizer.parse_body(body).unwrap();
//! let json = serde_json::to_string(&batch.events[0].event.interaction).unwrap();
//! assert_eq!(json, r#"{"timestamp":"2025-07-09T10:15:00Z","subscriber":"u1","assetId":"ep9","interaction":"play_complete","ratingEquivalent":0.5,"setting":{"device":"android_app"}}"#);
//! ```

mod error;
mod interaction;
mod normalize;
mod profile;
mod raw;

pub use error::{BodyError, FieldError, ITEM, ItemError};
pub use interaction::{
    Device, Event, Interaction, InteractionType, Setting, UnknownName, format_timestamp,
};
pub use normalize::{
    BODY_KEY, Batch, BatchEvent, BodyShape, EARLIEST_TIMESTAMP, LATEST_SENT_AT, Limits,
    MAX_COMMENT_CHARS, MAX_EVENT_ID_CHARS, MAX_ID_CHARS, Normalizer, parse_sent_at,
    rating_in_range, skew_correction,
};
pub use profile::{
    Action, ActionRule, DEFAULT_PROFILE, Outcome, Problem, RatingMap, RatingMapError,
    RatingProfile, ecommerce_profile, video_profile,
};
