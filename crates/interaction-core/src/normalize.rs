//! Client JSON → normalized [`Event`]s, with every problem reported per field.
//!
//! One pass: the body is read loosely ([`crate::raw`]) and each item is normalized right away,
//! so a 1000-event batch never exists as a `serde_json::Value` tree. The same code serves
//! already-parsed values (`&Value` is a serde deserializer too).

use std::fmt;

use chrono::{DateTime, SubsecRound as _, TimeDelta, Utc};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::error::{BodyError, FieldError, ITEM, ItemError};
use crate::interaction::{Device, Event, Interaction, InteractionType, Setting};
use crate::profile::{ActionRule, Outcome, RatingProfile};
use crate::raw::{Kind, Loose, RawBatch, RawEvent, RawItem, RawSetting, shorten};

/// Longest `subscriber`, `assetId` and `contextId`, in characters.
pub const MAX_ID_CHARS: usize = 256;
/// Longest `comment`, in characters.
pub const MAX_COMMENT_CHARS: usize = 1024;
/// Longest `eventId`, in characters.
pub const MAX_EVENT_ID_CHARS: usize = 128;

/// Limits that depend on deployment rather than on the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How far ahead of the server clock a timestamp may be, after clock-skew correction.
    pub max_future_skew: TimeDelta,
    /// How old an event may be; `None` (the default) accepts any age: history imports
    /// (backfills) and apps offline for weeks send old events on purpose. Timestamps before
    /// [`EARLIEST_TIMESTAMP`] are refused whatever this is.
    pub max_age: Option<TimeDelta>,
    /// Most events in one request.
    pub max_batch_events: usize,
    /// How far a device clock (`sentAt`) may be from the server's before its timestamps are
    /// corrected: above network delay, so a slow request is never taken for a wrong clock.
    pub clock_skew_threshold: TimeDelta,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_future_skew: TimeDelta::minutes(5),
            max_age: None,
            max_batch_events: 1000,
            clock_skew_threshold: TimeDelta::seconds(60),
        }
    }
}

/// The earliest timestamp (and `sentAt`) accepted, 2000-01-01T00:00:00Z, as Unix seconds:
/// before it a device clock is unset (1970) or a unit is mixed up, not an old event.
pub const EARLIEST_TIMESTAMP: i64 = 946_684_800;

/// The latest `sentAt` accepted, 2100-01-01T00:00:00Z, as Unix seconds. A clock far ahead is
/// what skew correction is for; one beyond this is garbage, and correcting by it would move
/// events by centuries.
pub const LATEST_SENT_AT: i64 = 4_102_444_800;

fn unix(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(seconds, 0).unwrap_or(DateTime::UNIX_EPOCH)
}

/// The clock-skew rule: how much to add to a device's timestamps, given when the device says
/// it sent the request (`sent_at`, by its own clock) and when the server received it. Within
/// `threshold` nothing is corrected (`None`): the difference is network delay or ordinary
/// drift, and moving timestamps by it would only reorder events. Beyond it the device clock is
/// wrong by about `received_at − sent_at`, and so is every timestamp it wrote.
pub fn skew_correction(
    sent_at: DateTime<Utc>,
    received_at: DateTime<Utc>,
    threshold: TimeDelta,
) -> Option<TimeDelta> {
    let skew = received_at - sent_at;
    (skew.abs() > threshold).then_some(skew)
}

/// Reads a `sentAt` (the `X-Sent-At` header, a body's or an event's): an RFC 3339 date-time
/// between 2000 and 2100. The error says what is wrong, for the client developer.
pub fn parse_sent_at(text: &str) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    let parsed = DateTime::parse_from_rfc3339(text)
        .map_err(|_| {
            format!(
                "must be an RFC 3339 date-time with a UTC offset, the device clock when the \
                 request was sent, like 2025-07-09T09:45:00Z; got {:?}",
                shorten(text)
            )
        })?
        .with_timezone(&Utc)
        .trunc_subsecs(6);
    if parsed < unix(EARLIEST_TIMESTAMP) || parsed >= unix(LATEST_SENT_AT) {
        return Err(format!(
            "is not a plausible device time ({}); it must be between 2000-01-01 and 2100-01-01",
            crate::format_timestamp(&parsed)
        ));
    }
    Ok(parsed)
}

/// Whether a rating is one Ncanto accepts: finite and within -1.0..=1.0.
pub fn rating_in_range(rating: f64) -> bool {
    rating.is_finite() && (-1.0..=1.0).contains(&rating)
}

/// Whether the body was one object or an array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyShape {
    /// A single event object (reported as index 0).
    Object,
    /// An array of items.
    Array,
}

/// An accepted event and its position in the request.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchEvent {
    /// Index in the request's array (0 for a single object).
    pub index: usize,
    /// The normalized event.
    pub event: Event,
}

/// The result of reading one request body.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Object or array.
    pub shape: BodyShape,
    /// Items in the body.
    pub received: usize,
    /// The valid items, normalized, in request order.
    pub events: Vec<BatchEvent>,
    /// Every problem of the invalid items, in request order.
    pub errors: Vec<ItemError>,
    /// What was added to the timestamps of events that rely on the request's `sentAt` (the
    /// `X-Sent-At` header or the body's), when the device clock was off by more than the
    /// threshold.
    pub clock_skew: Option<TimeDelta>,
}

impl Batch {
    /// Items rejected because of errors.
    pub fn skipped(&self) -> usize {
        self.received - self.events.len()
    }

    /// Events whose timestamp was corrected for clock skew (by the request's `sentAt` or
    /// their own).
    pub fn corrected(&self) -> usize {
        self.events
            .iter()
            .filter(|e| e.event.original_timestamp.is_some())
            .count()
    }
}

/// Normalizes events for one tenant's profile at one instant.
///
/// `now` is passed in rather than read so that this crate stays pure and tests are exact.
#[derive(Debug, Clone, Copy)]
pub struct Normalizer<'a> {
    profile: &'a RatingProfile,
    limits: &'a Limits,
    now: DateTime<Utc>,
    /// The request's `sentAt` from outside the body (the `X-Sent-At` header).
    sent_at: Option<DateTime<Utc>>,
    /// What [`skew_correction`] makes of `sent_at`.
    correction: Option<TimeDelta>,
    /// Whether a `{"sentAt", "batch"}` body may also hold the API key (`apiKey`): the
    /// browser's beacon form, which cannot send headers (see [`Self::with_body_key`]).
    body_key: bool,
}

impl<'a> Normalizer<'a> {
    /// A normalizer rating with `profile`, checking `limits`, judging timestamps against `now`
    /// (the time the request was received).
    pub fn new(profile: &'a RatingProfile, limits: &'a Limits, now: DateTime<Utc>) -> Self {
        Self {
            profile,
            limits,
            now,
            sent_at: None,
            correction: None,
            body_key: false,
        }
    }

    /// The same normalizer for a request sent at `sent_at` by the device's clock (see
    /// [`parse_sent_at`]): events without a `sentAt` of their own are corrected by it. A body
    /// that gives `sentAt` too is refused ([`BodyError::SentAtTwice`]).
    pub fn with_sent_at(self, sent_at: Option<DateTime<Utc>>) -> Self {
        Self {
            sent_at,
            correction: sent_at.and_then(|sent_at| {
                skew_correction(sent_at, self.now, self.limits.clock_skew_threshold)
            }),
            ..self
        }
    }

    /// The same normalizer for a body whose `{"sentAt", "batch"}` envelope may hold an
    /// `apiKey` member beside them (a browser's `sendBeacon` or `keepalive` request, which
    /// sends no custom header; the caller has read and checked the key). Anywhere else an
    /// `apiKey` member is an unknown field, as before.
    pub fn with_body_key(self, allowed: bool) -> Self {
        Self {
            body_key: allowed,
            ..self
        }
    }

    /// Normalizes one JSON value into an event, or says everything wrong with it.
    pub fn normalize_value(&self, value: &Value) -> Result<Event, Vec<FieldError>> {
        match RawItem::deserialize_from(value) {
            RawItem::Event(raw) => self.normalize(raw),
            RawItem::NotObject(kind) => Err(vec![not_an_object(kind)]),
        }
    }

    /// Reads a request body: one event object or an array of them.
    pub fn parse_body(&self, body: &[u8]) -> Result<Batch, BodyError> {
        // The whole body is checked up front: serde_json checks UTF-8 only in the strings it
        // reads, not in those it skips (unknown fields, items that are not objects), so
        // invalid bytes there would pass as JSON.
        let text = std::str::from_utf8(body).map_err(|e| invalid_utf8(body, e.valid_up_to()))?;
        let mut de = serde_json::Deserializer::from_str(text);
        let mut failure = None;
        let read = BodySeed {
            normalizer: self,
            failure: &mut failure,
        }
        .deserialize(&mut de)
        .and_then(|batch| de.end().map(|()| batch));
        // A scalar body stops the reader right after the scalar; if what follows is not JSON,
        // the body is not JSON either, and saying "got a number" of `0+` would mislead.
        if matches!(failure, Some(BodyError::NotEventOrArray(_)))
            && let Err(e) = de.end()
        {
            return Err(BodyError::InvalidJson(e.to_string()));
        }
        finish(read, failure)
    }

    /// Like [`Self::parse_body`], for a body already parsed into a `Value`.
    pub fn parse_value_body(&self, body: &Value) -> Result<Batch, BodyError> {
        let mut failure = None;
        let read = BodySeed {
            normalizer: self,
            failure: &mut failure,
        }
        .deserialize(body);
        finish(read, failure)
    }

    pub(crate) fn normalize(&self, raw: RawEvent<'_>) -> Result<Event, Vec<FieldError>> {
        let mut errors = raw.problems;
        let mut error = |field: &str, message: String| errors.push(field, message);

        let correction = match present(raw.sent_at) {
            None => self.correction,
            Some(Loose::Str(text)) => match parse_sent_at(&text) {
                Ok(sent_at) => skew_correction(sent_at, self.now, self.limits.clock_skew_threshold),
                Err(message) => {
                    error("sentAt", message);
                    None
                }
            },
            Some(other) => wrong_kind("sentAt", other.kind(), "an RFC 3339 string", &mut error),
        };
        let timestamp = self.timestamp(raw.timestamp.as_ref(), correction, &mut error);
        let subscriber = required_text("subscriber", raw.subscriber, MAX_ID_CHARS, &mut error);
        let asset_id = required_text("assetId", raw.asset_id, MAX_ID_CHARS, &mut error);
        let context_id = optional_text("contextId", raw.context_id, MAX_ID_CHARS, &mut error);
        let event_id = optional_text("eventId", raw.event_id, MAX_EVENT_ID_CHARS, &mut error);
        let comment = optional_comment(raw.comment, &mut error);
        let device = device(raw.setting, &mut error);
        let outcome = self.outcome(
            raw.interaction,
            raw.action,
            raw.rating,
            raw.progress,
            raw.stars,
            &mut error,
        );

        match (timestamp, subscriber, asset_id, device, outcome) {
            (
                Some((timestamp, original_timestamp)),
                Some(subscriber),
                Some(asset_id),
                Some(device),
                Some(outcome),
            ) if errors.0.is_empty() => {
                Ok(Event {
                    interaction: Interaction {
                        timestamp,
                        subscriber,
                        asset_id,
                        interaction: outcome.interaction,
                        // -0.0 and 0.0 mean the same; write one of them.
                        rating_equivalent: outcome.rating + 0.0,
                        comment,
                        context_id,
                        setting: Setting { device },
                    },
                    event_id,
                    original_timestamp,
                })
            }
            _ => Err(errors.0),
        }
    }

    /// Reads `timestamp` and applies the clock-skew `correction`: the time to store, and the
    /// device's own when it was corrected. The bounds apply to the corrected time.
    fn timestamp(
        &self,
        value: Option<&Loose<'_>>,
        correction: Option<TimeDelta>,
        error: &mut impl FnMut(&str, String),
    ) -> Option<(DateTime<Utc>, Option<DateTime<Utc>>)> {
        const FIELD: &str = "timestamp";
        let text = match value {
            None => return missing(FIELD, error),
            Some(Loose::Str(text)) => text.trim(),
            Some(other) => return wrong_kind(FIELD, other.kind(), "an RFC 3339 string", error),
        };
        let parsed = match DateTime::parse_from_rfc3339(text) {
            // Microseconds: the precision PostgreSQL stores, so an event reads back from the
            // database exactly as it was accepted.
            Ok(ts) => ts.with_timezone(&Utc).trunc_subsecs(6),
            Err(_) => {
                error(
                    FIELD,
                    format!(
                        "must be an RFC 3339 date-time with a UTC offset, like \
                         2025-07-09T09:45:00Z or 2025-07-09T12:45:00+03:00; got {:?}",
                        shorten(text)
                    ),
                );
                return None;
            }
        };
        let (stored, original, note) = match correction {
            None => (parsed, None, String::new()),
            Some(by) => match parsed.checked_add_signed(by) {
                Some(corrected) => (
                    corrected.trunc_subsecs(6),
                    Some(parsed),
                    format!(
                        ", {} as sent, corrected by {} for the device clock",
                        crate::format_timestamp(&parsed),
                        signed_duration(by)
                    ),
                ),
                None => {
                    error(
                        FIELD,
                        "is out of range once corrected for clock skew".into(),
                    );
                    return None;
                }
            },
        };
        if stored < unix(EARLIEST_TIMESTAMP) {
            error(
                FIELD,
                format!(
                    "is before 2000-01-01 ({}{note}); the device clock is probably unset",
                    crate::format_timestamp(&stored),
                ),
            );
            return None;
        }
        if stored > self.now + self.limits.max_future_skew {
            error(
                FIELD,
                format!(
                    "is in the future ({}{note}); at most {} ahead of the server clock is \
                     accepted (send sentAt so a wrong device clock is corrected)",
                    crate::format_timestamp(&stored),
                    human_duration(self.limits.max_future_skew)
                ),
            );
            return None;
        }
        if let Some(max_age) = self.limits.max_age
            && stored < self.now - max_age
        {
            error(
                FIELD,
                format!(
                    "is too old ({}{note}); events older than {} are not accepted",
                    crate::format_timestamp(&stored),
                    human_duration(max_age)
                ),
            );
            return None;
        }
        Some((stored, original))
    }

    fn outcome(
        &self,
        interaction: Option<Loose<'_>>,
        action: Option<Loose<'_>>,
        rating: Option<Loose<'_>>,
        progress: Option<Loose<'_>>,
        stars: Option<Loose<'_>>,
        error: &mut impl FnMut(&str, String),
    ) -> Option<Outcome> {
        // `null` is treated as absent for these optional inputs, like for every optional field.
        let [interaction, action, rating, progress, stars] =
            [interaction, action, rating, progress, stars].map(present);
        match (interaction, action) {
            (Some(_), Some(_)) => {
                error(
                    "action",
                    "send either interaction (with ratingEquivalent) or action, not both".into(),
                );
                None
            }
            (None, None) => {
                error(
                    "interaction",
                    format!(
                        "is required (or send an action); expected one of {}",
                        InteractionType::allowed()
                    ),
                );
                None
            }
            (Some(interaction), None) => {
                unused_for("progress", progress.is_some(), "watch-like actions", error);
                unused_for("stars", stars.is_some(), "review-like actions", error);
                let interaction = interaction_type(interaction, error);
                let rating = match rating {
                    Some(rating) => Some(rating_value(rating, error)?),
                    None => None,
                };
                let interaction = interaction?;
                let rating = match rating {
                    Some(rating) => rating,
                    None => match self.profile.default_rating(interaction) {
                        Some(default) => default,
                        None => {
                            error(
                                "ratingEquivalent",
                                format!(
                                    "is required for interaction {interaction}: profile {} has \
                                     no default rating for it (send a number from -1.0 to 1.0, \
                                     or an action such as like or dislike)",
                                    self.profile.name()
                                ),
                            );
                            return None;
                        }
                    },
                };
                Some(Outcome {
                    interaction,
                    rating,
                })
            }
            (None, Some(action)) => {
                if rating.is_some() {
                    error(
                        "ratingEquivalent",
                        "must not be sent with an action: the action sets the rating".into(),
                    );
                }
                self.action_outcome(action, progress, stars, error)
            }
        }
    }

    fn action_outcome(
        &self,
        action: Loose<'_>,
        progress: Option<Loose<'_>>,
        stars: Option<Loose<'_>>,
        error: &mut impl FnMut(&str, String),
    ) -> Option<Outcome> {
        let name = match &action {
            Loose::Str(name) => name.trim(),
            other => return wrong_kind("action", other.kind(), "a string", error),
        };
        let Some(found) = self.profile.action(name) else {
            error(
                "action",
                format!(
                    "{:?} is not an action of profile {}; expected one of {}",
                    shorten(name),
                    self.profile.name(),
                    self.profile.action_names()
                ),
            );
            return None;
        };
        let rule_name = &found.name;
        match &found.rule {
            ActionRule::Fixed(outcome) => {
                unused_for("progress", progress.is_some(), "watch-like actions", error);
                unused_for("stars", stars.is_some(), "review-like actions", error);
                Some(*outcome)
            }
            ActionRule::Stars {
                interaction,
                ratings,
            } => {
                unused_for("progress", progress.is_some(), "watch-like actions", error);
                let stars = match stars {
                    None => {
                        error(
                            "stars",
                            format!("is required for action {rule_name}: a whole number 1 to 5"),
                        );
                        return None;
                    }
                    Some(Loose::Number(n)) if n.fract() == 0.0 && (1.0..=5.0).contains(&n) => n,
                    Some(Loose::Number(n)) => {
                        error("stars", format!("must be a whole number 1 to 5, got {n}"));
                        return None;
                    }
                    Some(other) => {
                        return wrong_kind("stars", other.kind(), "a whole number 1 to 5", error);
                    }
                };
                Some(Outcome {
                    interaction: *interaction,
                    rating: ratings[stars as usize - 1],
                })
            }
            ActionRule::Progress {
                threshold,
                above,
                otherwise,
            } => {
                unused_for("stars", stars.is_some(), "review-like actions", error);
                let progress = match progress {
                    None => {
                        error(
                            "progress",
                            format!(
                                "is required for action {rule_name}: the fraction watched, \
                                 0.0 to 1.0"
                            ),
                        );
                        return None;
                    }
                    Some(Loose::Number(p)) if (0.0..=1.0).contains(&p) => p,
                    Some(Loose::Number(p)) => {
                        error(
                            "progress",
                            format!("must be the fraction watched, 0.0 to 1.0, got {p}"),
                        );
                        return None;
                    }
                    Some(other) => {
                        return wrong_kind("progress", other.kind(), "a number 0.0 to 1.0", error);
                    }
                };
                Some(if progress > *threshold {
                    *above
                } else {
                    *otherwise
                })
            }
        }
    }
}

fn present(value: Option<Loose<'_>>) -> Option<Loose<'_>> {
    value.filter(|v| v.kind() != Kind::Null)
}

fn missing<T>(field: &str, error: &mut impl FnMut(&str, String)) -> Option<T> {
    error(field, "is required".into());
    None
}

fn wrong_kind<T>(
    field: &str,
    kind: Kind,
    expected: &str,
    error: &mut impl FnMut(&str, String),
) -> Option<T> {
    if kind == Kind::Null {
        error(
            field,
            format!("is required (got null); expected {expected}"),
        );
    } else {
        error(
            field,
            format!("must be {expected}, got {}", kind.describe()),
        );
    }
    None
}

fn unused_for(field: &str, sent: bool, used_by: &str, error: &mut impl FnMut(&str, String)) {
    if sent {
        error(
            field,
            format!("is only used with {used_by}; remove it or send the matching action"),
        );
    }
}

fn not_an_object(kind: Kind) -> FieldError {
    FieldError::new(
        ITEM,
        format!("must be an interaction object, got {}", kind.describe()),
    )
}

fn interaction_type(
    value: Loose<'_>,
    error: &mut impl FnMut(&str, String),
) -> Option<InteractionType> {
    const FIELD: &str = "interaction";
    match &value {
        Loose::Str(name) => {
            let name = name.trim();
            let parsed = InteractionType::parse(name);
            if parsed.is_none() {
                error(
                    FIELD,
                    format!(
                        "must be one of {}; got {:?}",
                        InteractionType::allowed(),
                        shorten(name)
                    ),
                );
            }
            parsed
        }
        other => wrong_kind(FIELD, other.kind(), "a string", error),
    }
}

fn rating_value(value: Loose<'_>, error: &mut impl FnMut(&str, String)) -> Option<f64> {
    const FIELD: &str = "ratingEquivalent";
    match value {
        Loose::Number(rating) if rating_in_range(rating) => Some(rating),
        Loose::Number(rating) => {
            error(
                FIELD,
                format!("must be a number from -1.0 to 1.0, got {rating}"),
            );
            None
        }
        other => wrong_kind(FIELD, other.kind(), "a number from -1.0 to 1.0", error),
    }
}

fn device(setting: Option<RawSetting<'_>>, error: &mut impl FnMut(&str, String)) -> Option<Device> {
    let setting = match setting {
        None => return missing("setting", error),
        Some(RawSetting {
            not_object: Some(kind),
            ..
        }) => {
            return wrong_kind(
                "setting",
                kind,
                "an object like {\"device\": \"web\"}",
                error,
            );
        }
        Some(setting) => setting,
    };
    const FIELD: &str = "setting.device";
    match setting.device {
        None => {
            error(
                FIELD,
                format!("is required; expected one of {}", Device::allowed()),
            );
            None
        }
        Some(Loose::Str(name)) => {
            let name = name.trim();
            let parsed = Device::parse(name);
            if parsed.is_none() {
                error(
                    FIELD,
                    format!(
                        "must be one of {}; got {:?}",
                        Device::allowed(),
                        shorten(name)
                    ),
                );
            }
            parsed
        }
        Some(other) => wrong_kind(FIELD, other.kind(), "a string", error),
    }
}

/// Checks trimmed text: non-empty, at most `max` characters, no control characters except,
/// where `allow_breaks`, tab and line breaks.
fn check_text(
    field: &str,
    text: &str,
    max: usize,
    allow_breaks: bool,
    error: &mut impl FnMut(&str, String),
) -> bool {
    // Byte length bounds character count from above, so most strings skip the count.
    if text.len() > max {
        let chars = text.chars().count();
        if chars > max {
            error(
                field,
                format!("must be at most {max} characters, got {chars}"),
            );
            return false;
        }
    }
    let bad = text
        .chars()
        .position(|c| c.is_control() && !(allow_breaks && matches!(c, '\t' | '\n' | '\r')));
    if let Some(position) = bad {
        let c = text.chars().nth(position).unwrap_or('\0');
        error(
            field,
            format!(
                "must not contain control characters; found U+{:04X} at character {}",
                c as u32,
                position + 1
            ),
        );
        return false;
    }
    true
}

fn required_text(
    field: &str,
    value: Option<Loose<'_>>,
    max: usize,
    error: &mut impl FnMut(&str, String),
) -> Option<String> {
    match value {
        None => missing(field, error),
        Some(Loose::Str(text)) => {
            let trimmed = text.trim();
            if trimmed.is_empty() {
                error(field, "must not be empty or only whitespace".into());
                return None;
            }
            check_text(field, trimmed, max, false, error).then(|| trimmed.to_owned())
        }
        Some(other) => wrong_kind(field, other.kind(), "a string", error),
    }
}

/// Optional text: `null`, absent and blank all mean "not given" (clients often send `""`).
fn optional_text(
    field: &str,
    value: Option<Loose<'_>>,
    max: usize,
    error: &mut impl FnMut(&str, String),
) -> Option<String> {
    optional(field, value, max, false, error)
}

fn optional_comment(
    value: Option<Loose<'_>>,
    error: &mut impl FnMut(&str, String),
) -> Option<String> {
    // A debug message may span lines.
    optional("comment", value, MAX_COMMENT_CHARS, true, error)
}

fn optional(
    field: &str,
    value: Option<Loose<'_>>,
    max: usize,
    allow_breaks: bool,
    error: &mut impl FnMut(&str, String),
) -> Option<String> {
    match present(value)? {
        Loose::Str(text) => {
            let trimmed = text.trim();
            if trimmed.is_empty() {
                return None;
            }
            check_text(field, trimmed, max, allow_breaks, error).then(|| trimmed.to_owned())
        }
        other => {
            error(
                field,
                format!("must be a string, got {}", other.kind().describe()),
            );
            None
        }
    }
}

fn human_duration(d: TimeDelta) -> String {
    let secs = d.num_seconds();
    match secs {
        s if s % 86_400 == 0 && s != 0 => plural(s / 86_400, "day"),
        s if s % 3600 == 0 && s != 0 => plural(s / 3600, "hour"),
        s if s % 60 == 0 && s != 0 => plural(s / 60, "minute"),
        s => plural(s, "second"),
    }
}

/// A correction for a message: `+1 hour`, `-90 seconds`, `+2.5 seconds`.
fn signed_duration(d: TimeDelta) -> String {
    let sign = if d < TimeDelta::zero() { "-" } else { "+" };
    let d = d.abs();
    if d.subsec_nanos() == 0 {
        format!("{sign}{}", human_duration(d))
    } else {
        format!("{sign}{:.3} seconds", d.as_seconds_f64())
    }
}

fn plural(n: i64, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// Turns the reader's outcome into the body's: a failure the visitor recorded explains the
/// serde error it raised to stop reading; any other error is the JSON's own.
/// The error for a body whose bytes stop being UTF-8 at `at`, placed like serde_json's.
fn invalid_utf8(body: &[u8], at: usize) -> BodyError {
    let before = &body[..at];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = at
        - before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |n| n + 1)
        + 1;
    BodyError::InvalidJson(format!("invalid UTF-8 at line {line} column {column}"))
}

fn finish<E: fmt::Display>(
    read: Result<Batch, E>,
    failure: Option<BodyError>,
) -> Result<Batch, BodyError> {
    match (read, failure) {
        (_, Some(failure)) => Err(failure),
        (Ok(batch), None) if batch.received == 0 => Err(BodyError::Empty),
        (Ok(batch), None) => Ok(batch),
        (Err(e), None) => Err(BodyError::InvalidJson(e.to_string())),
    }
}

impl RawItem<'_> {
    fn deserialize_from(value: &Value) -> RawItem<'_> {
        // A `&Value` deserializer cannot fail on well-formed input; the fallback is never used.
        serde::Deserialize::deserialize(value).unwrap_or(RawItem::NotObject(Kind::Null))
    }
}

/// Reads the top level of a body and normalizes each item as soon as it is read.
struct BodySeed<'n, 'a> {
    normalizer: &'n Normalizer<'a>,
    /// Set when the visitor stops reading for a reason of ours rather than bad JSON.
    failure: &'n mut Option<BodyError>,
}

impl<'de> DeserializeSeed<'de> for BodySeed<'_, '_> {
    type Value = Batch;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

/// The member of a `{"sentAt", "batch"}` envelope that may carry the API key
/// ([`Normalizer::with_body_key`]).
pub const BODY_KEY: &str = "apiKey";

/// Normalizes one item of a body into `batch`.
fn push(normalizer: &Normalizer<'_>, batch: &mut Batch, index: usize, item: RawItem<'_>) {
    batch.received += 1;
    let result = match item {
        RawItem::Event(raw) => normalizer.normalize(raw),
        RawItem::NotObject(kind) => Err(vec![not_an_object(kind)]),
    };
    match result {
        Ok(event) => batch.events.push(BatchEvent { index, event }),
        Err(errors) => batch.errors.extend(errors.into_iter().map(|e| ItemError {
            index,
            field: e.field,
            message: e.message,
        })),
    }
}

impl BodySeed<'_, '_> {
    /// A `{"sentAt": …, "batch": [...]}` body: `head` holds the members beside `batch`.
    fn envelope<E: de::Error>(
        self,
        mut head: RawEvent<'_>,
        items: RawBatch<'_>,
    ) -> Result<Batch, E> {
        let mut beside: Vec<String> = head
            .present_fields()
            .into_iter()
            .filter(|f| *f != "sentAt")
            .map(|f| format!("{f:?}"))
            .collect();
        let body_key = self.normalizer.body_key;
        beside.extend(
            head.problems
                .0
                .iter()
                .filter(|p| !(body_key && p.field == BODY_KEY))
                .map(|p| format!("{:?}", p.field)),
        );
        if !beside.is_empty() {
            return Err(self.fail(BodyError::Envelope(beside.join(", "))));
        }
        let items = match items {
            RawBatch::Items(items) => items,
            RawBatch::TooMany => {
                let max = self.normalizer.limits.max_batch_events;
                return Err(self.fail(BodyError::TooManyEvents { max }));
            }
            RawBatch::NotArray(kind) => {
                return Err(self.fail(BodyError::BatchNotArray(kind.describe())));
            }
        };
        let normalizer = match present(head.sent_at) {
            None => *self.normalizer,
            Some(_) if self.normalizer.sent_at.is_some() => {
                return Err(self.fail(BodyError::SentAtTwice));
            }
            Some(Loose::Str(text)) => match parse_sent_at(&text) {
                Ok(sent_at) => self.normalizer.with_sent_at(Some(sent_at)),
                Err(message) => return Err(self.fail(BodyError::SentAt(message))),
            },
            Some(other) => {
                let message = format!(
                    "must be an RFC 3339 string, got {}",
                    other.kind().describe()
                );
                return Err(self.fail(BodyError::SentAt(message)));
            }
        };
        let mut batch = Batch {
            shape: BodyShape::Array,
            received: 0,
            events: Vec::with_capacity(items.len()),
            errors: Vec::new(),
            clock_skew: normalizer.correction,
        };
        for (index, item) in items.into_iter().enumerate() {
            push(&normalizer, &mut batch, index, item);
        }
        Ok(batch)
    }
}

impl BodySeed<'_, '_> {
    fn fail<E: de::Error>(self, failure: BodyError) -> E {
        let message = failure.to_string();
        *self.failure = Some(failure);
        E::custom(message)
    }

    fn not_event_or_array<E: de::Error>(self, kind: Kind) -> Result<Batch, E> {
        Err(self.fail(BodyError::NotEventOrArray(kind.describe())))
    }
}

impl<'de> Visitor<'de> for BodySeed<'_, '_> {
    type Value = Batch;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an interaction object or an array of them")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Batch, E> {
        self.not_event_or_array(Kind::Bool)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Batch, E> {
        self.not_event_or_array(Kind::Number)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Batch, E> {
        self.not_event_or_array(Kind::Number)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Batch, E> {
        self.not_event_or_array(Kind::Number)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Batch, E> {
        self.not_event_or_array(Kind::String)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Batch, E> {
        self.not_event_or_array(Kind::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Batch, E> {
        self.not_event_or_array(Kind::Null)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Batch, A::Error> {
        let (raw, items) = RawEvent::from_top_map(map, self.normalizer.limits.max_batch_events)?;
        if let Some(items) = items {
            return self.envelope(raw, items);
        }
        let mut batch = Batch {
            shape: BodyShape::Object,
            received: 0,
            events: Vec::with_capacity(1),
            errors: Vec::new(),
            clock_skew: self.normalizer.correction,
        };
        push(self.normalizer, &mut batch, 0, RawItem::Event(raw));
        Ok(batch)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Batch, A::Error> {
        let max = self.normalizer.limits.max_batch_events;
        let mut batch = Batch {
            shape: BodyShape::Array,
            received: 0,
            events: Vec::with_capacity(seq.size_hint().unwrap_or(16).min(max)),
            errors: Vec::new(),
            clock_skew: self.normalizer.correction,
        };
        let mut index = 0;
        while let Some(item) = seq.next_element::<RawItem<'de>>()? {
            if index == max {
                // Stop reading at once: the rest of an oversized body is not worth parsing.
                return Err(self.fail(BodyError::TooManyEvents { max }));
            }
            push(self.normalizer, &mut batch, index, item);
            index += 1;
        }
        Ok(batch)
    }
}
