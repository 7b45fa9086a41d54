//! Errors of parsing and normalizing client input.

use serde::Serialize;
use thiserror::Error;

/// Field path used when a problem concerns a whole item rather than one of its fields.
pub const ITEM: &str = "$";

/// One problem with one field of one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// JSON path of the field, e.g. `setting.device`; [`ITEM`] for the item itself.
    pub field: String,
    /// What is wrong and what is allowed, for a human.
    pub message: String,
}

impl FieldError {
    /// Builds an error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A [`FieldError`] of the item at `index` of a batch (0 for a single-object body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemError {
    /// Position of the item in the request's array.
    pub index: usize,
    /// JSON path of the field within the item.
    pub field: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

/// Why a request body as a whole could not be read as events. Per-item problems are not
/// body errors: they come back as [`ItemError`]s beside the accepted events.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BodyError {
    /// The bytes are not JSON (or have trailing data, or nest too deep).
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(String),
    /// Valid JSON, but neither an object nor an array.
    #[error("the body must be an interaction object or an array of them, got {0}")]
    NotEventOrArray(&'static str),
    /// The array holds more events than one request may carry.
    #[error("the batch holds more than {max} events; send at most {max} per request")]
    TooManyEvents {
        /// The configured limit.
        max: usize,
    },
    /// An empty array.
    #[error("the batch is empty; send at least one event")]
    Empty,
    /// A `{"sentAt": …, "batch": …}` body whose `batch` is not an array.
    #[error("\"batch\" must be an array of interaction objects, got {0}")]
    BatchNotArray(&'static str),
    /// A `{"sentAt": …, "batch": [...]}` body with other members beside them.
    #[error(
        "a body with \"batch\" may have only \"sentAt\" beside it; got {0} (put event fields inside the batch's items)"
    )]
    Envelope(String),
    /// The request's `sentAt` (body or `X-Sent-At` header) is not a plausible device time.
    #[error("sentAt {0}")]
    SentAt(String),
    /// `sentAt` came both in the `X-Sent-At` header and in the body.
    #[error("sentAt was sent both in the X-Sent-At header and in the body; send it once")]
    SentAtTwice,
}
