//! The HTTP handlers and the state they share. `/interactions` is the fake Ncanto; `/stats`,
//! `/faults` and `/health` are the admin API that tests and benchmarks drive the mock with,
//! served on every port and never affected by faults.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpMessage as _, HttpRequest, HttpResponse, web};
use serde_json::json;
use tokio::sync::watch;

use crate::faults::{Dice, Faults, Injected, Outage};
use crate::stats::{Recorder, mask_authorization};
use crate::validate::{Invalid, Rejection, parse_body};

/// Largest request body read, in bytes: far above any sane Ncanto batch.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// The faults and a generation number that grows with every change, so a caller can wait
/// until the main listener has caught up with its change.
#[derive(Debug, Clone, Default)]
pub(crate) struct Versioned {
    pub(crate) generation: u64,
    pub(crate) faults: Faults,
}

/// Everything the handlers share, on every port.
pub(crate) struct Shared {
    /// The current faults; changes wake the supervisor of the main listener.
    pub(crate) faults: watch::Sender<Versioned>,
    /// The generation of faults the main listener's state reflects.
    pub(crate) applied: watch::Sender<u64>,
    /// Set when the mock stops: releases hanging requests.
    pub(crate) stopping: watch::Sender<bool>,
    pub(crate) recorder: Recorder,
    pub(crate) dice: Dice,
    /// The exact `Authorization` value required, when an API key is configured.
    pub(crate) expected_authorization: Option<String>,
}

impl Shared {
    /// The faults now in force.
    pub(crate) fn faults(&self) -> Faults {
        self.faults.borrow().faults.clone()
    }

    /// Replaces the faults; returns the new generation.
    pub(crate) fn replace_faults(&self, faults: Faults) -> u64 {
        let mut generation = 0;
        self.faults.send_modify(|current| {
            current.generation += 1;
            current.faults = faults;
            generation = current.generation;
        });
        generation
    }
}

/// The admin routes, served on the main port and on the admin port.
pub(crate) fn admin(config: &mut web::ServiceConfig) {
    config
        .route("/health", web::get().to(health))
        .route("/stats", web::get().to(get_stats))
        .route("/stats", web::delete().to(delete_stats))
        .route("/events", web::get().to(get_events))
        .route("/faults", web::get().to(get_faults))
        .route("/faults", web::post().to(post_faults))
        .route("/faults", web::delete().to(delete_faults));
}

/// The fake Ncanto route, served on the main port only.
pub(crate) fn ncanto(config: &mut web::ServiceConfig) {
    config.route("/interactions", web::post().to(interactions));
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn get_stats(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(shared.recorder.stats())
}

/// Every accepted event in arrival order (empty when recording is off): what end-to-end
/// tests compare with what they sent.
async fn get_events(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(shared.recorder.events())
}

async fn delete_stats(shared: web::Data<Shared>) -> HttpResponse {
    shared.recorder.reset();
    HttpResponse::NoContent().finish()
}

async fn get_faults(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(shared.faults())
}

async fn post_faults(shared: web::Data<Shared>, body: web::Bytes) -> HttpResponse {
    // Only an object: serde would also read a struct from an array of its fields.
    let faults = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(value) if value.is_object() => serde_json::from_value::<Faults>(value),
        Ok(_) => return error(StatusCode::BAD_REQUEST, "faults must be a JSON object"),
        Err(e) => Err(e),
    };
    let faults = match faults {
        Ok(faults) => faults,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("not a Faults object: {e}")),
    };
    if let Err(e) = faults.validate() {
        return error(StatusCode::BAD_REQUEST, e);
    }
    apply_faults(&shared, faults.clone()).await;
    HttpResponse::Ok().json(faults)
}

async fn delete_faults(shared: web::Data<Shared>) -> HttpResponse {
    apply_faults(&shared, Faults::default()).await;
    HttpResponse::NoContent().finish()
}

/// How long an admin request that clears a `Refuse` outage waits for the listener to reopen.
const REOPEN_WAIT: Duration = Duration::from_secs(5);

/// Replaces the faults. When that clears a `Refuse` outage, waits until the main listener is
/// open again, so the caller's next request finds it.
async fn apply_faults(shared: &Shared, faults: Faults) {
    let was_refusing = shared.faults.borrow().faults.outage == Some(Outage::Refuse);
    let reopens = was_refusing && faults.outage != Some(Outage::Refuse);
    let generation = shared.replace_faults(faults);
    if reopens {
        let mut applied = shared.applied.subscribe();
        let caught_up = tokio::time::timeout(REOPEN_WAIT, async {
            let _ = applied.wait_for(|applied| *applied >= generation).await;
        })
        .await;
        if caught_up.is_err() {
            log::warn!("the main listener has not reopened after {REOPEN_WAIT:?}");
        }
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(json!({"error": message.into()}))
}

fn rejected(shared: &Shared, status: StatusCode, message: impl Into<String>) -> HttpResponse {
    shared.recorder.rejected();
    error(status, message)
}

fn failed(shared: &Shared, status: StatusCode, message: &str) -> HttpResponse {
    shared.recorder.failed();
    error(status, message)
}

/// `POST /interactions`: the fake Ncanto. See the crate documentation for the order of checks.
async fn interactions(
    req: HttpRequest,
    payload: web::Payload,
    shared: web::Data<Shared>,
) -> HttpResponse {
    shared.recorder.request();
    if shared.faults.borrow().faults.outage == Some(Outage::Hang) {
        hang(&shared).await;
        return failed(
            &shared,
            StatusCode::SERVICE_UNAVAILABLE,
            "released from an injected hang",
        );
    }
    let auth = header_text(&req, header::AUTHORIZATION);
    if let Some(expected) = &shared.expected_authorization
        && auth != *expected
    {
        shared.recorder.rejected();
        return HttpResponse::Unauthorized()
            .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
            .json(json!({"error": "missing or wrong API key (Authorization: Bearer <key>)"}));
    }
    if !req.content_type().eq_ignore_ascii_case("application/json") {
        return rejected(
            &shared,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        );
    }
    let body = match payload.to_bytes_limited(MAX_BODY_BYTES).await {
        Ok(Ok(body)) => body,
        Ok(Err(e)) => {
            return rejected(
                &shared,
                StatusCode::BAD_REQUEST,
                format!("reading the body: {e}"),
            );
        }
        Err(_) => {
            return rejected(
                &shared,
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is over {MAX_BODY_BYTES} bytes"),
            );
        }
    };
    let events = match parse_body(&body) {
        Ok(events) => events,
        Err(rejection) => {
            log::debug!("refused a request: {}", rejection.error);
            shared.recorder.rejected();
            return HttpResponse::BadRequest().json(rejection);
        }
    };

    let faults = shared.faults();
    if faults.outage == Some(Outage::Error) {
        return failed(&shared, StatusCode::SERVICE_UNAVAILABLE, "injected outage");
    }
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    if faults.is_random() {
        match faults.injected(shared.dice.roll()) {
            Some(Injected::ServerError) => {
                return failed(&shared, StatusCode::INTERNAL_SERVER_ERROR, "injected error");
            }
            Some(Injected::RateLimited { retry_after }) => {
                shared.recorder.failed();
                return HttpResponse::TooManyRequests()
                    .insert_header((header::RETRY_AFTER, retry_after.to_string()))
                    .json(json!({"error": "injected rate limit"}));
            }
            None => {}
        }
    }
    if let Some(pattern) = faults.fail_pattern()
        && events.iter().any(|event| event.asset_id.contains(pattern))
    {
        return failed(
            &shared,
            StatusCode::INTERNAL_SERVER_ERROR,
            "injected error (fail_asset_pattern)",
        );
    }
    if let Some(pattern) = faults.reject_pattern() {
        let invalid: Vec<Invalid> = events
            .iter()
            .enumerate()
            .filter(|(_, event)| event.asset_id.contains(pattern))
            .map(|(index, _)| Invalid {
                index,
                reason: format!("assetId contains the rejected pattern {pattern:?}"),
            })
            .collect();
        if !invalid.is_empty() {
            shared.recorder.rejected();
            return HttpResponse::BadRequest().json(Rejection {
                error: format!("{} events refused by reject_asset_pattern", invalid.len()),
                invalid,
            });
        }
    }

    let accepted = events.len();
    let tenant = header_text(&req, "x-tenant");
    shared
        .recorder
        .accept(events, &tenant, &mask_authorization(&auth));
    HttpResponse::Ok().json(json!({"accepted": accepted}))
}

/// Waits while the outage is `Hang` and the mock runs. The request is never accepted: its
/// client has most likely given up, and recording it would count events nobody was told of.
async fn hang(shared: &Shared) {
    let mut faults = shared.faults.subscribe();
    let mut stopping = shared.stopping.subscribe();
    tokio::select! {
        _ = faults.wait_for(|v| v.faults.outage != Some(Outage::Hang)) => {}
        _ = stopping.wait_for(|stopping| *stopping) => {}
    }
}

fn header_text(req: &HttpRequest, name: impl header::AsHeaderName) -> String {
    req.headers()
        .get(name)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .unwrap_or_default()
}
