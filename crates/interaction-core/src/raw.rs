//! A loose first reading of client JSON: every known field kept as whatever JSON it was, so the
//! normalizer can say precisely what is wrong with each field instead of failing the whole item
//! at the first type mismatch (which is what a derived `Deserialize` would do).
//!
//! Strings borrow from the request body where JSON escapes allow, so a well-formed event costs
//! only the allocations of its normalized output.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::error::FieldError;

/// How many problems one item may report; a hostile object with thousands of unknown keys
/// must not turn into a response thousands of lines long.
pub(crate) const MAX_PROBLEMS_PER_ITEM: usize = 10;

/// The JSON kind of a value, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

impl Kind {
    pub(crate) const fn describe(self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool => "a boolean",
            Kind::Number => "a number",
            Kind::String => "a string",
            Kind::Array => "an array",
            Kind::Object => "an object",
        }
    }
}

/// Generates the `visit_*` methods of a visitor for the JSON scalars (null, booleans, numbers,
/// strings), each answering `$ctor(Kind::X)`.
macro_rules! scalar_visits {
    ($ctor:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($ctor(Kind::Bool))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($ctor(Kind::Number))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($ctor(Kind::Number))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($ctor(Kind::Number))
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($ctor(Kind::String))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($ctor(Kind::Null))
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($ctor(Kind::Null))
        }
    };
}

/// Generates the `visit_*` methods of a visitor for every JSON kind except objects, each
/// answering `$ctor(Kind::X)`; arrays are consumed so the parser can go on after them.
macro_rules! non_object_visits {
    ($ctor:expr) => {
        scalar_visits!($ctor);
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok($ctor(Kind::Array))
        }
    };
}

/// A leaf value: its content where it can be a valid field, only its kind otherwise.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Loose<'a> {
    Number(f64),
    Str(Cow<'a, str>),
    Other(Kind),
}

impl Loose<'_> {
    pub(crate) fn kind(&self) -> Kind {
        match self {
            Loose::Number(_) => Kind::Number,
            Loose::Str(_) => Kind::String,
            Loose::Other(kind) => *kind,
        }
    }
}

impl<'de> Deserialize<'de> for Loose<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LooseVisitor)
    }
}

struct LooseVisitor;

impl<'de> Visitor<'de> for LooseVisitor {
    type Value = Loose<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Loose::Other(Kind::Bool))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Loose::Number(v as f64))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Loose::Number(v as f64))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Loose::Number(v))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Loose::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Loose::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Loose::Str(Cow::Owned(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Loose::Other(Kind::Null))
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Loose::Other(Kind::Null))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Loose::deserialize(d)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Loose::Other(Kind::Array))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Loose::Other(Kind::Object))
    }
}

/// An object key, borrowed from the input when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// Collects problems found while reading, capped at [`MAX_PROBLEMS_PER_ITEM`].
#[derive(Debug, Default)]
pub(crate) struct Problems(pub(crate) Vec<FieldError>);

impl Problems {
    pub(crate) fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        if self.0.len() < MAX_PROBLEMS_PER_ITEM {
            self.0.push(FieldError::new(field, message));
        }
    }

    fn unknown(&mut self, path: &str, key: &str, allowed: &str) {
        self.push(
            format!("{path}{}", shorten(key)),
            format!("is not a known field; the accepted fields are {allowed}"),
        );
    }

    fn duplicate(&mut self, path: &str, key: &str) {
        self.push(
            format!("{path}{key}"),
            "appears more than once in the object; send each field once",
        );
    }
}

/// Cuts echoed client text to a readable length.
pub(crate) fn shorten(text: &str) -> Cow<'_, str> {
    const MAX: usize = 64;
    match text.char_indices().nth(MAX) {
        None => Cow::Borrowed(text),
        Some((cut, _)) => Cow::Owned(format!("{}…", &text[..cut])),
    }
}

/// The `setting` field as read.
#[derive(Debug, Default)]
pub(crate) struct RawSetting<'a> {
    pub(crate) device: Option<Loose<'a>>,
    /// `Some(kind)` when `setting` was not an object.
    pub(crate) not_object: Option<Kind>,
}

/// Reads `setting`, adding unknown or repeated keys to the event's problems.
struct SettingSeed<'p>(&'p mut Problems);

impl<'de> DeserializeSeed<'de> for SettingSeed<'_> {
    type Value = RawSetting<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for SettingSeed<'_> {
    type Value = RawSetting<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    non_object_visits!(|kind| RawSetting {
        device: None,
        not_object: Some(kind),
    });

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut setting = RawSetting::default();
        while let Some(Key(key)) = map.next_key()? {
            if key == "device" {
                let value = map.next_value()?;
                if setting.device.is_some() {
                    self.0.duplicate("setting.", &key);
                } else {
                    setting.device = Some(value);
                }
            } else {
                map.next_value::<IgnoredAny>()?;
                self.0.unknown("setting.", &key, "device");
            }
        }
        Ok(setting)
    }
}

/// The fields a client may send, for the unknown-field message.
pub(crate) const EVENT_FIELDS: &str = "timestamp, subscriber, assetId, interaction, action, \
     ratingEquivalent, progress, stars, comment, contextId, eventId, sentAt, setting";

/// One event as read, before any rule is applied.
#[derive(Debug, Default)]
pub(crate) struct RawEvent<'a> {
    pub(crate) timestamp: Option<Loose<'a>>,
    pub(crate) subscriber: Option<Loose<'a>>,
    pub(crate) asset_id: Option<Loose<'a>>,
    pub(crate) interaction: Option<Loose<'a>>,
    pub(crate) action: Option<Loose<'a>>,
    pub(crate) rating: Option<Loose<'a>>,
    pub(crate) progress: Option<Loose<'a>>,
    pub(crate) stars: Option<Loose<'a>>,
    pub(crate) comment: Option<Loose<'a>>,
    pub(crate) context_id: Option<Loose<'a>>,
    pub(crate) event_id: Option<Loose<'a>>,
    pub(crate) sent_at: Option<Loose<'a>>,
    pub(crate) setting: Option<RawSetting<'a>>,
    pub(crate) problems: Problems,
}

/// The `batch` member of a top-level `{"sentAt": …, "batch": [...]}` body, as read.
#[derive(Debug)]
pub(crate) enum RawBatch<'a> {
    /// The items, not yet normalized (they wait for the body's `sentAt`, which may follow).
    Items(Vec<RawItem<'a>>),
    /// More than the limit: the rest was skipped without being kept.
    TooMany,
    /// Not an array.
    NotArray(Kind),
}

/// Reads a `batch` member, keeping at most `max` items.
struct BatchSeed {
    max: usize,
}

impl<'de> DeserializeSeed<'de> for BatchSeed {
    type Value = RawBatch<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BatchSeed {
    type Value = RawBatch<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of interaction objects")
    }

    scalar_visits!(RawBatch::NotArray);
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(RawBatch::NotArray(Kind::Object))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(16).min(self.max));
        while let Some(item) = seq.next_element::<RawItem<'de>>()? {
            if items.len() == self.max {
                // Kept items are bounded by the limit; the rest is only skipped over.
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                return Ok(RawBatch::TooMany);
            }
            items.push(item);
        }
        Ok(RawBatch::Items(items))
    }
}

impl<'a> RawEvent<'a> {
    fn slot(&mut self, key: &str) -> Option<&mut Option<Loose<'a>>> {
        Some(match key {
            "timestamp" => &mut self.timestamp,
            "subscriber" => &mut self.subscriber,
            "assetId" => &mut self.asset_id,
            "interaction" => &mut self.interaction,
            "action" => &mut self.action,
            "ratingEquivalent" => &mut self.rating,
            "progress" => &mut self.progress,
            "stars" => &mut self.stars,
            "comment" => &mut self.comment,
            "contextId" => &mut self.context_id,
            "eventId" => &mut self.event_id,
            "sentAt" => &mut self.sent_at,
            _ => return None,
        })
    }

    /// Reads the entries of an event object.
    pub(crate) fn from_map<A: MapAccess<'a>>(map: A) -> Result<Self, A::Error> {
        Self::read_map(map, None).map(|(raw, _)| raw)
    }

    /// Reads a top-level object: an event, or a `{"sentAt": …, "batch": [...]}` body (the
    /// caller tells them apart by the `batch` member, which is read with at most
    /// `max_batch` items). The other members are read as an event's, so the caller can say
    /// which of them do not belong beside `batch`.
    pub(crate) fn from_top_map<A: MapAccess<'a>>(
        map: A,
        max_batch: usize,
    ) -> Result<(Self, Option<RawBatch<'a>>), A::Error> {
        Self::read_map(map, Some(max_batch))
    }

    fn read_map<A: MapAccess<'a>>(
        mut map: A,
        max_batch: Option<usize>,
    ) -> Result<(Self, Option<RawBatch<'a>>), A::Error> {
        let mut raw = RawEvent::default();
        let mut batch = None;
        while let Some(Key(key)) = map.next_key()? {
            if let Some(max) = max_batch
                && key == "batch"
            {
                let value = map.next_value_seed(BatchSeed { max })?;
                if batch.is_some() {
                    raw.problems.duplicate("", &key);
                } else {
                    batch = Some(value);
                }
                continue;
            }
            if key == "setting" {
                let setting = map.next_value_seed(SettingSeed(&mut raw.problems))?;
                if raw.setting.is_some() {
                    raw.problems.duplicate("", &key);
                } else {
                    raw.setting = Some(setting);
                }
                continue;
            }
            let duplicate = match raw.slot(&key) {
                Some(slot) => {
                    let value = map.next_value()?;
                    let seen = slot.is_some();
                    if !seen {
                        *slot = Some(value);
                    }
                    seen
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                    raw.problems.unknown("", &key, EVENT_FIELDS);
                    false
                }
            };
            if duplicate {
                raw.problems.duplicate("", &key);
            }
        }
        Ok((raw, batch))
    }

    /// The names of the event fields this object has (for "does not belong beside batch"),
    /// in the order of [`EVENT_FIELDS`].
    pub(crate) fn present_fields(&mut self) -> Vec<&'static str> {
        EVENT_FIELDS
            .split(", ")
            .filter(|&field| match field {
                "setting" => self.setting.is_some(),
                other => self.slot(other).is_some_and(|value| value.is_some()),
            })
            .collect()
    }
}

/// One element of a batch: an event object, or the kind of whatever else it was.
#[derive(Debug)]
// Lives on the stack for one item only; boxing the large variant would cost an allocation per
// event on the hot path.
#[allow(clippy::large_enum_variant)]
pub(crate) enum RawItem<'a> {
    Event(RawEvent<'a>),
    NotObject(Kind),
}

impl<'de> Deserialize<'de> for RawItem<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ItemVisitor;
        impl<'de> Visitor<'de> for ItemVisitor {
            type Value = RawItem<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an interaction object")
            }
            non_object_visits!(RawItem::NotObject);
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                RawEvent::from_map(map).map(RawItem::Event)
            }
        }
        d.deserialize_any(ItemVisitor)
    }
}
