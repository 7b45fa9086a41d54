//! The request and response shapes the OpenAPI document describes, and nothing else: a leaf
//! module (it uses only `interaction_core`), so the handlers, the errors and the document
//! can all refer to it without depending on each other.
//!
//! The input types here exist for documentation only: requests are read by
//! `interaction_core`'s normalizer, which accepts exactly what these describe.
#![allow(dead_code)] // fields are read by the schema derive, never by code

use interaction_core::{Device, InteractionType};
use serde::Serialize;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

/// One interaction event as a client sends it. Unknown fields are refused.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "timestamp": "2025-07-09T10:15:00Z",
    "subscriber": "viusasa_user_12345",
    "assetId": "viusasa_episode_67890",
    "interaction": "play_complete",
    "ratingEquivalent": 0.5,
    "comment": "User watched 90% of the episode.",
    "contextId": "viusasa_player_context",
    "setting": {"device": "android_app"}
}))]
pub struct InteractionInput {
    /// RFC 3339 with an offset; stored as UTC. Not before 2000-01-01, at most 5 minutes ahead
    /// (`MAX_FUTURE_SKEW`), any age unless `MAX_EVENT_AGE` is set. Corrected for a wrong
    /// device clock when a `sentAt` says it is off by more than `CLOCK_SKEW_THRESHOLD`.
    #[schema(example = "2025-07-09T10:15:00Z", format = DateTime)]
    timestamp: String,
    /// The user; 1–256 characters.
    #[schema(min_length = 1)]
    subscriber: String,
    /// The content or product; 1–256 characters.
    #[schema(min_length = 1)]
    asset_id: String,
    /// The interaction type (any ASCII case). Required unless `action` is sent.
    #[schema(value_type = Option<InteractionTypeDoc>, example = "play_complete")]
    interaction: Option<String>,
    /// -1.0 to 1.0. Omit it to use the tenant profile's default for `interaction`.
    #[schema(minimum = -1.0, maximum = 1.0)]
    rating_equivalent: Option<f64>,
    /// Instead of `interaction` + `ratingEquivalent`: an action of the tenant's rating
    /// profile (`like`, `watch`, `review`, `add_to_cart`, …), mapped to both.
    action: Option<String>,
    /// With a progress action (`watch`): the fraction watched.
    #[schema(minimum = 0.0, maximum = 1.0)]
    progress: Option<f64>,
    /// With a stars action (`review`): 1–5.
    #[schema(minimum = 1, maximum = 5)]
    stars: Option<u8>,
    /// Optional debug message; ≤ 1024 characters.
    comment: Option<String>,
    /// Optional Ncanto context; ≤ 256 characters.
    context_id: Option<String>,
    /// Optional idempotency key, unique per tenant; ≤ 128 characters. A repeat is not
    /// stored again and is reported in `duplicates`.
    event_id: Option<String>,
    /// The device clock when this event was sent, if it differs from the request's `sentAt`
    /// (events queued offline and sent later); corrects this event's `timestamp`.
    #[schema(format = DateTime)]
    sent_at: Option<String>,
    /// Where it happened.
    setting: SettingInput,
}

/// A batch with the device clock at sending: `sentAt` lets the server correct the events'
/// timestamps when that clock is wrong (the original is kept as `originalTimestamp`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[serde(deny_unknown_fields)]
pub struct BatchEnvelope {
    /// The device clock when the request was sent, RFC 3339 (2000–2100). Not with the
    /// `X-Sent-At` header too.
    #[schema(example = "2025-07-09T10:16:00Z", format = DateTime)]
    sent_at: Option<String>,
    /// Up to 1000 events (configurable).
    batch: Vec<InteractionInput>,
}

/// The browser's beacon form of a batch (`Content-Type: text/plain`, what `sendBeacon` and a
/// `fetch` with `keepalive` send without a CORS preflight): the API key travels in the body,
/// since such a request carries no custom header. Only on `/api/v1/logs`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[serde(deny_unknown_fields)]
pub struct BeaconBody {
    /// The API key (or send it as the `apiKey` query parameter; a header works too).
    #[schema(example = "dev-key-change-me")]
    api_key: String,
    /// As in `{"sentAt": …, "batch": [...]}`.
    #[schema(example = "2025-07-09T10:16:00Z", format = DateTime)]
    sent_at: Option<String>,
    /// Up to 1000 events (configurable).
    batch: Vec<InteractionInput>,
}

/// The device.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingInput {
    /// `web`, `android_app` or `ios_app`.
    #[schema(value_type = DeviceDoc)]
    device: String,
}

/// Builds a string schema whose allowed values come from the code's own list, so the
/// documentation cannot drift from what the normalizer accepts.
fn names_schema(description: &str, names: Vec<&'static str>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .enum_values(Some(names))
        .into()
}

/// Interaction types (any ASCII case on input).
pub struct InteractionTypeDoc;

impl PartialSchema for InteractionTypeDoc {
    fn schema() -> RefOr<Schema> {
        names_schema(
            "An interaction type of the spec (matched ignoring ASCII case).",
            InteractionType::ALL.iter().map(|t| t.as_str()).collect(),
        )
    }
}

impl ToSchema for InteractionTypeDoc {}

/// Devices (any ASCII case on input).
pub struct DeviceDoc;

impl PartialSchema for DeviceDoc {
    fn schema() -> RefOr<Schema> {
        names_schema(
            "The device (matched ignoring ASCII case).",
            Device::ALL.iter().map(|d| d.as_str()).collect(),
        )
    }
}

impl ToSchema for DeviceDoc {}

/// A batch: an array of events, `{"sentAt": …, "batch": [...]}`, or one event.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum BatchBody {
    /// Up to 1000 events (configurable).
    Many(Vec<InteractionInput>),
    /// The events with the device clock at sending.
    WithSentAt(BatchEnvelope),
    /// A single event.
    One(Box<InteractionInput>),
}

/// One problem of one item.
#[derive(Serialize, ToSchema)]
pub struct ItemErrorDoc {
    /// Index of the item in the request.
    index: usize,
    /// JSON path of the field (`setting.device`); `$` for the item itself.
    #[schema(example = "ratingEquivalent")]
    field: String,
    /// What is wrong and what is allowed.
    message: String,
}
