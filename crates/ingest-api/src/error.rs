//! Every error an API request can end in, and its HTTP status, in one place.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use interaction_core::{BodyError, ItemError};
use serde::Serialize;

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No API key, or an unknown one.
    #[error("missing or invalid API key; send it in X-API-Key or Authorization: Bearer")]
    Unauthorized,
    /// A rate limit is exceeded (the key's events, or the address's requests).
    #[error("{message}; retry after {retry_after} s")]
    RateLimited {
        /// Which limit, and what to do.
        message: String,
        /// Seconds until a request will be accepted.
        retry_after: u64,
    },
    /// Not JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The body, as sent or decompressed, is over the limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The body is not events at all (not JSON, not an object or array, too many, empty).
    #[error("{0}")]
    BadBody(String),
    /// Every item of the body is invalid.
    #[error("{message}")]
    Invalid {
        /// Summary.
        message: String,
        /// Each item's problems.
        errors: Vec<ItemError>,
    },
    /// The events could not be stored now; nothing was stored.
    #[error("{message}")]
    Unavailable {
        /// What is away.
        message: String,
        /// Seconds the client should wait.
        retry_after: u64,
    },
    /// A bug or unexpected failure; nothing was stored.
    #[error("internal error; nothing was stored")]
    Internal,
}

impl From<BodyError> for ApiError {
    fn from(error: BodyError) -> Self {
        match error {
            BodyError::TooManyEvents { .. } => ApiError::PayloadTooLarge(error.to_string()),
            other => ApiError::BadBody(other.to_string()),
        }
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Always `error`.
    #[schema(example = "error")]
    pub status: &'static str,
    /// What went wrong and what to do.
    pub message: String,
    /// Per-item problems, when the items were the problem.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<crate::schema::ItemErrorDoc>)]
    pub errors: Vec<ItemError>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadBody(_) | ApiError::Invalid { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::RateLimited { retry_after, .. }
            | ApiError::Unavailable { retry_after, .. } => {
                response.insert_header((header::RETRY_AFTER, HeaderValue::from(*retry_after)));
            }
            ApiError::Unauthorized => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            _ => {}
        }
        let errors = match self {
            ApiError::Invalid { errors, .. } => errors.clone(),
            _ => Vec::new(),
        };
        response.json(ErrorBody {
            status: "error",
            message: self.to_string(),
            errors,
        })
    }
}
