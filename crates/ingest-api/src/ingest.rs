//! The ingestion endpoints: `POST /api/v1/logs` (batch), `POST /api/v1/log` (one event) and
//! the original design's aliases `/interact/batch` and `/interact`.
//!
//! Order of checks, cheapest first: the client address's request rate, API key, content type
//! and encoding, body size (as sent, then decompressed), JSON and every item, then the key's
//! rate of events (the request's item count, all or nothing). A request is answered 202 only
//! after its valid events are committed to PostgreSQL.

use std::io::Read;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use interaction_core::{BodyShape, ItemError, Normalizer};
use serde::Serialize;

use crate::batcher::WriteError;
use crate::error::ApiError;
use crate::state::AppState;

/// The body of a 202.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// Always `success`.
    #[schema(example = "success")]
    pub status: &'static str,
    /// Human summary.
    #[schema(example = "Batch received and saved for processing")]
    pub message: &'static str,
    /// Events stored by this request.
    pub count: usize,
    /// Items refused as invalid (see `errors`).
    pub skipped: usize,
    /// Events not stored again because their `eventId` was already stored.
    pub duplicates: usize,
    /// Indexes of those duplicates in the request.
    #[serde(skip_serializing_if = "Vec::is_empty", rename = "duplicateIndexes")]
    pub duplicate_indexes: Vec<usize>,
    /// Problems of the invalid items, by index.
    #[schema(value_type = Vec<crate::schema::ItemErrorDoc>)]
    pub errors: Vec<ItemError>,
    /// Stored events whose timestamp was corrected for a wrong device clock (their `sentAt`
    /// was more than `CLOCK_SKEW_THRESHOLD` from the server clock). Absent when none.
    #[serde(skip_serializing_if = "is_zero", rename = "clockSkewCorrected")]
    pub clock_skew_corrected: usize,
    /// Milliseconds added to the timestamps of the events that rely on the request's `sentAt`
    /// (body or `X-Sent-At`): positive when the device clock is behind. Absent when the
    /// request's `sentAt` was within the threshold or not sent.
    #[serde(skip_serializing_if = "Option::is_none", rename = "clockSkewMs")]
    pub clock_skew_ms: Option<i64>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Which endpoint was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// An array (or a single object).
    Batch,
    /// Exactly one object.
    Single,
}

/// `POST /api/v1/logs`, `POST /interact/batch`.
#[utoipa::path(
    post,
    path = "/api/v1/logs",
    tag = "ingest",
    summary = "Send a batch of events",
    description = "Stores a batch of interaction events (a JSON array, or `{\"sentAt\": …, \"batch\": [...]}`; \
        one object is accepted too). Valid items are stored even when others are invalid; each invalid \
        item is reported by index. Also served at `/interact/batch`. The body may be gzip-compressed \
        (`Content-Encoding: gzip`). A `sentAt` (in the body or the `X-Sent-At` header: the device clock \
        when the request was sent) corrects the timestamps of a device whose clock is wrong. \
        Browsers unloading a page may send the beacon form instead: `Content-Type: text/plain`, the \
        `{\"sentAt\", \"batch\"}` body with the key as `apiKey` beside them (or in the `apiKey` query \
        parameter) — a simple request, sent without a CORS preflight.",
    params(
        ("X-Sent-At" = Option<String>, Header, format = DateTime, description = "The device clock when the request was sent (RFC 3339); not together with a body `sentAt`"),
        ("apiKey" = Option<String>, Query, description = "The API key, for the text/plain beacon form only (prefer the body: URLs end up in access logs)"),
    ),
    request_body(content(
        (crate::schema::BatchBody = "application/json"),
        (crate::schema::BeaconBody = "text/plain"),
    )),
    responses(
        (status = 202, description = "Stored; invalid items listed in `errors`", body = Accepted),
        (status = 400, description = "Not JSON, not events, or every item invalid", body = crate::error::ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = crate::error::ErrorBody),
        (status = 413, description = "Body or batch too large", body = crate::error::ErrorBody),
        (status = 415, description = "Not application/json (or text/plain), or an unsupported Content-Encoding", body = crate::error::ErrorBody),
        (status = 429, description = "Rate limited; see Retry-After", body = crate::error::ErrorBody),
        (status = 503, description = "Database unavailable, nothing stored; see Retry-After", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn logs(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    ingest(req, payload, state, Endpoint::Batch).await
}

/// `POST /api/v1/log`, `POST /interact`.
#[utoipa::path(
    post,
    path = "/api/v1/log",
    tag = "ingest",
    summary = "Send one event",
    description = "Stores one interaction event. Also served at `/interact`. An `X-Sent-At` header \
        (or the event's own `sentAt`) corrects its timestamp if the device clock is wrong.",
    params(("X-Sent-At" = Option<String>, Header, format = DateTime, description = "The device clock when the request was sent (RFC 3339)")),
    request_body(content = crate::schema::InteractionInput, content_type = "application/json"),
    responses(
        (status = 202, description = "Stored", body = Accepted),
        (status = 400, description = "Invalid event (see `errors`) or not one JSON object", body = crate::error::ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = crate::error::ErrorBody),
        (status = 413, description = "Body too large", body = crate::error::ErrorBody),
        (status = 415, description = "Not application/json", body = crate::error::ErrorBody),
        (status = 429, description = "Rate limited; see Retry-After", body = crate::error::ErrorBody),
        (status = 503, description = "Database unavailable, nothing stored; see Retry-After", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn log_one(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    ingest(req, payload, state, Endpoint::Single).await
}

async fn ingest(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    endpoint: Endpoint,
) -> Result<HttpResponse, ApiError> {
    state.rate_limits.check_request(&req)?;
    let form = body_form(&req, endpoint)?;
    // A JSON request's key is in a header: checked before its body is read. The beacon
    // form's may be in the body, so it is looked up once the body is in.
    let header_key = match (form, crate::auth::presented_key(&req)) {
        (_, Some(key)) => Some(state.keys.lookup(key).ok_or(ApiError::Unauthorized)?),
        (BodyForm::Json, None) => return Err(ApiError::Unauthorized),
        (BodyForm::Beacon, None) => None,
    };
    let gzip = content_encoding_is_gzip(&req)?;
    let body = read_body(&req, payload, state.body_limit).await?;
    let body = if gzip {
        gunzip(&body, state.decompressed_limit)?
    } else {
        body
    };
    let (key_index, tenant) = match header_key {
        Some(found) => found,
        None => beacon_key(&req, &body)
            .and_then(|key| state.keys.lookup(&key))
            .ok_or(ApiError::Unauthorized)?,
    };
    if form == BodyForm::Beacon {
        metrics::counter!("ingest_beacon_requests_total").increment(1);
    }

    let normalizer = Normalizer::new(
        state.rating.profile_for_tenant(&tenant),
        &state.limits,
        chrono::Utc::now(),
    )
    .with_sent_at(sent_at_header(&req)?)
    .with_body_key(form == BodyForm::Beacon);
    let batch = normalizer.parse_body(&body)?;
    if endpoint == Endpoint::Single && batch.shape == BodyShape::Array {
        return Err(ApiError::BadBody(
            "this endpoint takes one event object; send arrays and {\"sentAt\", \"batch\"} \
             bodies to /api/v1/logs"
                .to_owned(),
        ));
    }
    // Every item read costs, valid or not: all of them or none, before anything is stored.
    state.rate_limits.check_events(key_index, batch.received)?;
    let skipped = batch.skipped();
    if skipped > 0 {
        metrics::counter!("ingest_events_invalid_total").increment(skipped as u64);
    }
    if batch.events.is_empty() {
        let message = if batch.received == 1 {
            "the event is invalid; see errors".to_owned()
        } else {
            format!("all {} events are invalid; see errors", batch.received)
        };
        return Err(ApiError::Invalid {
            message,
            errors: batch.errors,
        });
    }

    let clock_skew_corrected = batch.corrected();
    let clock_skew_ms = batch.clock_skew.map(|skew| skew.num_milliseconds());
    let (indexes, events): (Vec<usize>, Vec<_>) =
        batch.events.into_iter().map(|e| (e.index, e.event)).unzip();
    let outcome = state
        .batcher
        .write(tenant.clone(), events)
        .await
        .map_err(|error| write_error(error, state.retry_after))?;
    log::debug!(
        "tenant {tenant}: stored {}, duplicates {}, invalid {skipped}",
        outcome.stored,
        outcome.duplicates.len()
    );
    let duplicate_indexes: Vec<usize> = outcome.duplicates.iter().map(|&p| indexes[p]).collect();
    Ok(HttpResponse::Accepted().json(Accepted {
        status: "success",
        message: match endpoint {
            Endpoint::Batch => "Batch received and saved for processing",
            Endpoint::Single => "Event received and saved for processing",
        },
        count: outcome.stored,
        skipped,
        duplicates: duplicate_indexes.len(),
        duplicate_indexes,
        errors: batch.errors,
        clock_skew_corrected,
        clock_skew_ms,
    }))
}

/// The request's `X-Sent-At` header (the device clock when it sent the request), if any.
fn sent_at_header(req: &HttpRequest) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
    let Some(value) = req.headers().get("x-sent-at") else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| {
        ApiError::BadBody("the X-Sent-At header is not ASCII; send an RFC 3339 date-time".into())
    })?;
    interaction_core::parse_sent_at(text)
        .map(Some)
        .map_err(|message| ApiError::BadBody(format!("the X-Sent-At header {message}")))
}

fn write_error(error: WriteError, retry_after: u64) -> ApiError {
    match error {
        WriteError::QueueFull => ApiError::Unavailable {
            message: "the service is overloaded; nothing was stored, retry later".to_owned(),
            retry_after,
        },
        WriteError::Unavailable(_) => ApiError::Unavailable {
            message: "the database is unavailable; nothing was stored, retry later".to_owned(),
            retry_after,
        },
        WriteError::OutcomeUnknown(_) => ApiError::Unavailable {
            message: "the database did not confirm the write, so the events may or may not be \
                      stored; retry later with the same eventIds (events with an eventId are \
                      never stored twice)"
                .to_owned(),
            retry_after,
        },
        WriteError::ShuttingDown => ApiError::Unavailable {
            message: "the service is restarting; nothing was stored, retry later".to_owned(),
            retry_after: 1,
        },
        WriteError::Failed(_) => ApiError::Internal,
    }
}

/// How a request's body is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyForm {
    /// `application/json` (or `…+json`), the key in a header.
    Json,
    /// `text/plain` on the batch endpoint: a browser's `sendBeacon` or `keepalive` fetch,
    /// which cannot send a custom header without a CORS preflight; the key is in the body or
    /// the query.
    Beacon,
}

/// The request's [`BodyForm`] from its `Content-Type`, or 415.
fn body_form(req: &HttpRequest, endpoint: Endpoint) -> Result<BodyForm, ApiError> {
    if endpoint == Endpoint::Batch && content_type_essence(req) == "text/plain" {
        return Ok(BodyForm::Beacon);
    }
    check_content_type(req).map(|()| BodyForm::Json)
}

/// The API key of a beacon-form request: the `apiKey` query parameter, else the body's
/// `apiKey` member. Never logged, never echoed.
fn beacon_key(req: &HttpRequest, body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Query {
        #[serde(rename = "apiKey")]
        api_key: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(rename = "apiKey")]
        api_key: Option<String>,
    }
    web::Query::<Query>::from_query(req.query_string())
        .ok()
        .and_then(|query| query.into_inner().api_key)
        // Read past everything else without keeping it; the body is parsed for real later.
        .or_else(|| serde_json::from_slice::<Body>(body).ok()?.api_key)
}

fn content_type_essence(req: &HttpRequest) -> String {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn check_content_type(req: &HttpRequest) -> Result<(), ApiError> {
    let essence = content_type_essence(req);
    if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        Ok(())
    } else if essence.is_empty() {
        Err(ApiError::UnsupportedMediaType(
            "missing Content-Type; send Content-Type: application/json".to_owned(),
        ))
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type {:?} is not supported; send application/json",
            truncate(&essence)
        )))
    }
}

fn content_encoding_is_gzip(req: &HttpRequest) -> Result<bool, ApiError> {
    let Some(value) = req.headers().get(header::CONTENT_ENCODING) else {
        return Ok(false);
    };
    let value = value.to_str().unwrap_or("").trim().to_ascii_lowercase();
    match value.as_str() {
        "" | "identity" => Ok(false),
        "gzip" | "x-gzip" => Ok(true),
        other => Err(ApiError::UnsupportedMediaType(format!(
            "Content-Encoding {:?} is not supported; send gzip or no encoding",
            truncate(other)
        ))),
    }
}

fn truncate(text: &str) -> &str {
    match text.char_indices().nth(64) {
        Some((cut, _)) => &text[..cut],
        None => text,
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::PayloadTooLarge(format!(
        "the body is larger than {limit} bytes; send fewer events per request"
    ))
}

/// Reads the body up to `limit` bytes, refusing early when Content-Length already says more.
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(8 * 1024).min(limit));
    // A client that stops sending mid-body must not hold a connection forever.
    let read = async {
        while let Some(chunk) = payload.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::BadBody(format!("could not read the body: {e}")))?;
            if body.len() + chunk.len() > limit {
                return Err(too_large(limit));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .map_err(|_| ApiError::BadBody("timed out reading the body".to_owned()))??;
    Ok(body)
}

/// Decompresses a gzip body, refusing it as soon as it grows past `limit` (a gzip bomb is
/// never inflated in full).
fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::with_capacity((body.len() * 4).min(limit));
    flate2::read::MultiGzDecoder::new(body)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| ApiError::BadBody(format!("the body is not valid gzip: {e}")))?;
    if out.len() > limit {
        return Err(ApiError::PayloadTooLarge(format!(
            "the body is larger than {limit} bytes once decompressed"
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::ResponseError;

    #[test]
    fn write_failures_answer_503_and_say_honestly_what_was_stored() {
        // (error, status, says nothing was stored)
        let cases = [
            (WriteError::QueueFull, 503, true),
            (WriteError::Unavailable("pool timed out".into()), 503, true),
            (WriteError::ShuttingDown, 503, true),
            (
                WriteError::OutcomeUnknown("connection closed".into()),
                503,
                false,
            ),
            (WriteError::Failed("a bug".into()), 500, true),
        ];
        for (error, status, nothing_stored) in cases {
            let what = error.to_string();
            let api = write_error(error, 2);
            assert_eq!(api.status_code().as_u16(), status, "{what}");
            let message = api.to_string();
            assert_eq!(
                message.contains("nothing was stored"),
                nothing_stored,
                "{message}"
            );
        }
        let unknown = write_error(WriteError::OutcomeUnknown(String::new()), 2).to_string();
        assert!(unknown.contains("same eventIds"), "{unknown}");
    }
}
