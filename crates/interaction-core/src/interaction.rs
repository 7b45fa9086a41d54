//! The canonical interaction event: exactly the fields Ncanto's `POST /interactions` receives.
//!
//! These types are the *output* of normalization. Their `Deserialize` impls exist for data we
//! wrote ourselves (message envelopes, stored rows) and do not validate; untrusted input goes
//! through [`crate::Normalizer`], which is the only way to build an event from client JSON.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The kinds of interaction Ncanto understands, as named by the spec's rating tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InteractionType {
    /// `recommendationImpression`: an asset appeared on screen.
    RecommendationImpression,
    /// `select`: a click, or an explicit "save" (watchlist, wishlist).
    Select,
    /// `play`: playback started.
    Play,
    /// `play_complete`: most of the asset was consumed.
    PlayComplete,
    /// `rate`: an explicit like/dislike or review.
    Rate,
    /// `deselect`: removed from a watchlist or wishlist.
    Deselect,
    /// `share`: shared with someone.
    Share,
    /// `add_to_cart`: put in the shopping cart.
    AddToCart,
    /// `purchase`: bought.
    Purchase,
}

impl InteractionType {
    /// Every interaction type, in the order of the spec's tables.
    pub const ALL: [InteractionType; 9] = [
        Self::RecommendationImpression,
        Self::Select,
        Self::Play,
        Self::PlayComplete,
        Self::Rate,
        Self::Deselect,
        Self::Share,
        Self::AddToCart,
        Self::Purchase,
    ];

    /// The spelling Ncanto expects.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::RecommendationImpression => "recommendationImpression",
            Self::Select => "select",
            Self::Play => "play",
            Self::PlayComplete => "play_complete",
            Self::Rate => "rate",
            Self::Deselect => "deselect",
            Self::Share => "share",
            Self::AddToCart => "add_to_cart",
            Self::Purchase => "purchase",
        }
    }

    /// Position in [`Self::ALL`], for table lookups.
    pub(crate) const fn index(self) -> usize {
        self as usize
    }

    /// Parses a name, ignoring ASCII case: apps spell enum values inconsistently
    /// (`Play`, `ADD_TO_CART`) and the canonical spelling is unambiguous anyway.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(name))
    }

    /// The accepted names, comma-separated, for error messages.
    pub fn allowed() -> String {
        join_names(Self::ALL.iter().map(|t| t.as_str()))
    }
}

/// Error returned when a string names no known enum value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}; expected one of {allowed}")]
pub struct UnknownName {
    what: &'static str,
    value: String,
    allowed: String,
}

impl FromStr for InteractionType {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or_else(|| UnknownName {
            what: "interaction type",
            value: s.to_owned(),
            allowed: Self::allowed(),
        })
    }
}

impl fmt::Display for InteractionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The device the interaction happened on (`setting.device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Device {
    /// `web`: a browser.
    Web,
    /// `android_app`: the Android app.
    AndroidApp,
    /// `ios_app`: the iOS app.
    IosApp,
}

impl Device {
    /// Every device, in the spec's order.
    pub const ALL: [Device; 3] = [Self::Web, Self::AndroidApp, Self::IosApp];

    /// The spelling Ncanto expects.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Web => "web",
            Self::AndroidApp => "android_app",
            Self::IosApp => "ios_app",
        }
    }

    /// Parses a name, ignoring ASCII case (`iOS_app` is accepted and written as `ios_app`).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|d| d.as_str().eq_ignore_ascii_case(name))
    }

    /// The accepted names, comma-separated, for error messages.
    pub fn allowed() -> String {
        join_names(Self::ALL.iter().map(|d| d.as_str()))
    }
}

impl FromStr for Device {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or_else(|| UnknownName {
            what: "device",
            value: s.to_owned(),
            allowed: Self::allowed(),
        })
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn join_names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.collect::<Vec<_>>().join(", ")
}

/// Serializes the enums as their canonical string and reads them back case-insensitively.
macro_rules! string_serde {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                name.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
string_serde!(InteractionType);
string_serde!(Device);

/// Where the interaction happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Setting {
    /// The device type.
    pub device: Device,
}

/// One normalized interaction, exactly as Ncanto receives it.
///
/// Invariants (upheld by [`crate::Normalizer`]): strings are trimmed, non-empty, within their
/// length caps and free of control characters; `rating_equivalent` is finite, in `-1.0..=1.0`
/// and never `-0.0`; `timestamp` is UTC and serializes as RFC 3339 with `Z`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interaction {
    /// When it happened (UTC).
    #[serde(with = "rfc3339_utc")]
    pub timestamp: DateTime<Utc>,
    /// The user.
    pub subscriber: String,
    /// The content or product.
    pub asset_id: String,
    /// What the user did.
    pub interaction: InteractionType,
    /// How strongly that signals preference, from -1.0 to 1.0.
    pub rating_equivalent: f64,
    /// Optional debug message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Optional Ncanto context identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_id: Option<String>,
    /// Device information.
    pub setting: Setting,
}

/// A normalized interaction plus what we keep beside it but do not send to Ncanto.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The canonical interaction.
    #[serde(flatten)]
    pub interaction: Interaction,
    /// The client's idempotency key, unique per tenant when present.
    #[serde(rename = "eventId", default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// The timestamp as the device sent it, when its clock was off and the interaction's
    /// timestamp was corrected (see [`crate::skew_correction`]). Kept in the store for audits;
    /// never sent to Ncanto nor carried in messages, which need only the corrected time.
    #[serde(skip)]
    pub original_timestamp: Option<DateTime<Utc>>,
}

/// Formats a timestamp the one way we ever write it: RFC 3339, UTC, `Z`, with only as many
/// fractional digits as it has.
pub fn format_timestamp(ts: &DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// serde helpers for [`Interaction::timestamp`].
mod rfc3339_utc {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(ts: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_timestamp(ts))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|ts| ts.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}
