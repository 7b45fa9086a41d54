//! "Where is event X?": an event's path through the pipeline — received, chunk and position,
//! published, then delivered, parked (with Ncanto's reason, status and the attempts) or still
//! on its way — by `eventId`, or for a subscriber over a time window. Served on the admin port
//! (`GET /trace`) and as `forwarder trace`; both parse into a [`TraceQuery`], run [`trace`] and
//! render the [`TraceReport`] as JSON or as a table ([`render`]).
//!
//! The store answers from what the pipeline records anyway (see `interaction_store`'s trace
//! module for the indexes and plans). A subscriber lookup reads every event received in its
//! window, whoever sent it, so the window is required to be at most [`MAX_WINDOW`].

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use interaction_store::{EventTrace, Store, StoreError};
use serde::{Deserialize, Serialize};

/// The longest window a subscriber lookup may cover: one day's events are read in tens of
/// milliseconds; a month's would be read whole, for every lookup.
pub const MAX_WINDOW: TimeDelta = TimeDelta::days(1);
/// Events listed when no limit is given.
pub const DEFAULT_LIMIT: i64 = 100;
/// The most events one lookup lists.
pub const MAX_LIMIT: i64 = 1000;

/// Longest failure reason shown in the table (JSON has it whole).
const REASON_CHARS: usize = 160;

/// Which events to trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// The tenant's event with this `eventId`.
    EventId(String),
    /// A subscriber's events received in `[since, until)`, oldest first, at most `limit`.
    Subscriber {
        /// `subscriber`.
        subscriber: String,
        /// Received at or after.
        since: DateTime<Utc>,
        /// Received before.
        until: DateTime<Utc>,
        /// Most events listed.
        limit: i64,
    },
}

/// A valid trace request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceQuery {
    /// Whose events.
    pub tenant: String,
    /// Which.
    pub selector: Selector,
}

/// The parameters of `GET /trace`, as sent.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TraceParams {
    /// `tenant`.
    pub tenant: Option<String>,
    /// `eventId`.
    #[serde(rename = "eventId")]
    pub event_id: Option<String>,
    /// `subscriber`.
    pub subscriber: Option<String>,
    /// `since` (RFC 3339).
    pub since: Option<String>,
    /// `until` (RFC 3339).
    pub until: Option<String>,
    /// `limit`.
    pub limit: Option<String>,
}

/// Why a trace has no answer.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// Required parameters are missing (named).
    #[error("missing parameters: {}", .0.join(", "))]
    MissingParameters(Vec<&'static str>),
    /// A parameter is malformed or out of range.
    #[error("{0}")]
    InvalidParameter(String),
    /// Nothing of the tenant is stored.
    #[error("unknown tenant {0:?}: no events of it are stored")]
    UnknownTenant(String),
    /// The tenant has no event with this `eventId`.
    #[error("tenant {tenant:?} has no stored event with eventId {event_id:?}")]
    UnknownEvent {
        /// Tenant.
        tenant: String,
        /// The `eventId` looked for.
        event_id: String,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl TraceError {
    /// The HTTP status of the error on the admin port.
    pub fn http_status(&self) -> u16 {
        match self {
            TraceError::MissingParameters(_) | TraceError::InvalidParameter(_) => 400,
            TraceError::UnknownTenant(_) | TraceError::UnknownEvent { .. } => 404,
            TraceError::Store(error) if error.is_unavailable() => 503,
            TraceError::Store(_) => 500,
        }
    }
}

/// A parameter's text, `None` when absent or blank.
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

fn parse_time(name: &str, text: &str) -> Result<DateTime<Utc>, TraceError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.to_utc())
        .map_err(|e| {
            TraceError::InvalidParameter(format!(
                "{name} must be an RFC 3339 time such as 2026-11-30T10:00:00Z: {e}"
            ))
        })
}

impl TraceQuery {
    /// The request `GET /trace` describes; `now` is where a window without `until` ends.
    pub fn parse(params: &TraceParams, now: DateTime<Utc>) -> Result<Self, TraceError> {
        let tenant = given(&params.tenant);
        let event_id = given(&params.event_id);
        let subscriber = given(&params.subscriber);
        let mut missing = Vec::new();
        if tenant.is_none() {
            missing.push("tenant");
        }
        if event_id.is_none() && subscriber.is_none() {
            missing.push("eventId or subscriber");
        }
        let (Some(tenant), true) = (tenant, missing.is_empty()) else {
            return Err(TraceError::MissingParameters(missing));
        };
        match (event_id, subscriber) {
            (Some(_), Some(_)) => Err(TraceError::InvalidParameter(
                "give eventId or subscriber, not both".into(),
            )),
            (Some(event_id), None) => {
                if let Some(extra) = [
                    ("since", &params.since),
                    ("until", &params.until),
                    ("limit", &params.limit),
                ]
                .into_iter()
                .find_map(|(name, value)| given(value).map(|_| name))
                {
                    return Err(TraceError::InvalidParameter(format!(
                        "{extra} applies to a subscriber lookup, not to an eventId"
                    )));
                }
                Ok(Self::event(tenant, event_id))
            }
            (None, Some(subscriber)) => {
                let since = given(&params.since)
                    .map(|t| parse_time("since", t))
                    .transpose()?;
                let until = given(&params.until)
                    .map(|t| parse_time("until", t))
                    .transpose()?;
                let limit = given(&params.limit)
                    .map(|l| {
                        l.parse::<i64>().map_err(|_| {
                            TraceError::InvalidParameter(format!(
                                "limit must be a whole number from 1 to {MAX_LIMIT}, not {l:?}"
                            ))
                        })
                    })
                    .transpose()?;
                Self::subscriber(tenant, subscriber, since, until, limit, now)
            }
            (None, None) => Err(TraceError::MissingParameters(vec!["eventId or subscriber"])),
        }
    }

    /// A lookup by `eventId`.
    pub fn event(tenant: &str, event_id: &str) -> Self {
        Self {
            tenant: tenant.to_owned(),
            selector: Selector::EventId(event_id.to_owned()),
        }
    }

    /// A lookup of a subscriber's events: received before `until` (default `now`) and at or
    /// after `since` (default [`MAX_WINDOW`] before `until`), at most `limit` (default
    /// [`DEFAULT_LIMIT`]). The window must be non-empty and at most [`MAX_WINDOW`], the limit
    /// within `1..=`[`MAX_LIMIT`].
    pub fn subscriber(
        tenant: &str,
        subscriber: &str,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
        limit: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<Self, TraceError> {
        let until = until.unwrap_or(now);
        let since = since.unwrap_or(until - MAX_WINDOW);
        if since >= until {
            return Err(TraceError::InvalidParameter(format!(
                "since ({}) must be before until ({})",
                time(since),
                time(until)
            )));
        }
        if until - since > MAX_WINDOW {
            return Err(TraceError::InvalidParameter(format!(
                "the window from {} to {} is longer than {} hours, the most one lookup reads \
                 (every event received in it is read): narrow it",
                time(since),
                time(until),
                MAX_WINDOW.num_hours()
            )));
        }
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(TraceError::InvalidParameter(format!(
                "limit must be from 1 to {MAX_LIMIT}, not {limit}"
            )));
        }
        Ok(Self {
            tenant: tenant.to_owned(),
            selector: Selector::Subscriber {
                subscriber: subscriber.to_owned(),
                since,
                until,
                limit,
            },
        })
    }
}

/// What a trace found.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceReport {
    /// Whose events.
    pub tenant: String,
    /// The `eventId` looked up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// The subscriber looked up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscriber: Option<String>,
    /// The window of a subscriber lookup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// The window of a subscriber lookup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    /// The events, oldest first.
    pub events: Vec<TracedEvent>,
    /// Whether the window holds more events than listed (the limit was reached).
    pub truncated: bool,
}

/// One event's path.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TracedEvent {
    /// The client's `eventId`, if it sent one.
    pub event_id: Option<String>,
    /// The event's row id (names it when it has no `eventId`).
    pub row_id: i64,
    /// `subscriber`.
    pub subscriber: String,
    /// `assetId`.
    pub asset_id: String,
    /// `interaction`.
    pub interaction: String,
    /// `timestamp`.
    pub timestamp: DateTime<Utc>,
    /// When ingest-api stored it.
    pub received_at: DateTime<Utc>,
    /// The chunk it was stored and published with.
    pub chunk_id: i64,
    /// Its position in the chunk (0-based).
    pub position: u32,
    /// The chunk's state (`null`: the chunk row is missing).
    pub chunk_state: Option<&'static str>,
    /// When the broker confirmed the chunk (the last time, after a re-publish).
    pub published_at: Option<DateTime<Utc>>,
    /// `pending` (not published yet), `in_flight` (published, no outcome yet: queued, being
    /// delivered or in a retry queue), `delivered`, `parked` (refused for good or out of
    /// retries), `unknown` (no chunk row).
    pub status: &'static str,
    /// When it was delivered: the chunk's latest delivery (exact when the chunk was
    /// delivered in one go, otherwise an upper bound), or when the chunk was forwarded.
    pub delivered_at: Option<DateTime<Utc>>,
    /// The refusal recorded for it: why it is parked — or, if delivered since (a re-drive),
    /// why it was.
    pub failure: Option<TracedFailure>,
}

/// A recorded refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TracedFailure {
    /// Why (Ncanto's answer, or why the forwarder gave up).
    pub reason: String,
    /// Ncanto's HTTP status, when it answered.
    pub ncanto_status: Option<u16>,
    /// When it was recorded.
    pub failed_at: DateTime<Utc>,
    /// Delivery rounds it went through (1: refused at its first delivery).
    pub attempts: Option<u32>,
}

impl From<EventTrace> for TracedEvent {
    fn from(t: EventTrace) -> Self {
        Self {
            event_id: t.event_id,
            row_id: t.row_id,
            subscriber: t.subscriber,
            asset_id: t.asset_id,
            interaction: t.interaction,
            timestamp: t.occurred_at,
            received_at: t.received_at,
            chunk_id: t.chunk_id,
            position: t.position,
            chunk_state: t.chunk_state.map(|s| s.as_str()),
            published_at: t.published_at,
            status: t.status.as_str(),
            delivered_at: t.delivered_at,
            failure: t.failure.map(|f| TracedFailure {
                reason: f.reason,
                ncanto_status: f.status,
                failed_at: f.failed_at,
                attempts: f.attempts,
            }),
        }
    }
}

/// Runs a trace. An eventId that is not stored is [`TraceError::UnknownEvent`] (or
/// [`TraceError::UnknownTenant`] when nothing of the tenant is); a subscriber without events
/// in the window is an empty list, unless the tenant is unknown.
pub async fn trace(store: &Store, query: &TraceQuery) -> Result<TraceReport, TraceError> {
    let tenant = query.tenant.as_str();
    let mut report = TraceReport {
        tenant: tenant.to_owned(),
        event_id: None,
        subscriber: None,
        since: None,
        until: None,
        events: Vec::new(),
        truncated: false,
    };
    match &query.selector {
        Selector::EventId(event_id) => {
            report.event_id = Some(event_id.clone());
            match store.trace_event(tenant, event_id).await? {
                Some(found) => report.events.push(found.into()),
                None if store.tenant_known(tenant).await? => {
                    return Err(TraceError::UnknownEvent {
                        tenant: tenant.to_owned(),
                        event_id: event_id.clone(),
                    });
                }
                None => return Err(TraceError::UnknownTenant(tenant.to_owned())),
            }
        }
        Selector::Subscriber {
            subscriber,
            since,
            until,
            limit,
        } => {
            report.subscriber = Some(subscriber.clone());
            report.since = Some(*since);
            report.until = Some(*until);
            // One more than asked: whether the window holds more.
            let mut found = store
                .trace_subscriber(tenant, subscriber, *since, *until, limit + 1)
                .await?;
            if found.is_empty() && !store.tenant_known(tenant).await? {
                return Err(TraceError::UnknownTenant(tenant.to_owned()));
            }
            report.truncated = found.len() as i64 > *limit;
            found.truncate(usize::try_from(*limit).unwrap_or(0));
            report.events = found.into_iter().map(TracedEvent::from).collect();
        }
    }
    Ok(report)
}

/// How to print a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A table for people.
    Table,
    /// The JSON of `GET /trace`.
    Json,
}

/// The report as `forwarder trace` prints it.
pub fn render(report: &TraceReport, format: Format) -> Result<String, serde_json::Error> {
    match format {
        Format::Json => serde_json::to_string_pretty(report),
        Format::Table => Ok(table(report)),
    }
}

/// A time as shown: RFC 3339, UTC, milliseconds.
fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A cell's text on one line, cut to `max` characters.
fn cell(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    if text.chars().count() > max {
        out.pop();
        out.push('…');
    }
    out
}

/// `1 attempt`, `3 attempts`.
fn attempts(n: u32) -> String {
    format!("{n} attempt{}", if n == 1 { "" } else { "s" })
}

/// What a failure says, in a few words: `Ncanto 400 after 1 attempt: <reason>`.
fn failure_text(failure: &TracedFailure) -> String {
    let mut text = match failure.ncanto_status {
        Some(status) => format!("Ncanto {status}"),
        None => "gave up".to_owned(),
    };
    if let Some(n) = failure.attempts {
        let _ = write!(text, " after {}", attempts(n));
    }
    let _ = write!(text, ": {}", cell(&failure.reason, REASON_CHARS));
    text
}

/// The table row of an event: its WHEN and DETAIL columns.
fn outcome(event: &TracedEvent) -> (String, String) {
    let status = event.status;
    let when = |t: Option<DateTime<Utc>>| t.map_or_else(|| "-".to_owned(), time);
    match (status, &event.failure) {
        ("delivered", None) => (when(event.delivered_at), String::new()),
        ("delivered", Some(failure)) => (
            when(event.delivered_at),
            format!("re-driven; refused before ({})", failure_text(failure)),
        ),
        ("parked", Some(failure)) => (time(failure.failed_at), failure_text(failure)),
        ("parked", None) => ("-".to_owned(), "no failure row recorded".to_owned()),
        ("in_flight", _) => (
            "-".to_owned(),
            "published, no outcome yet: in the forward queue, being delivered, or in a retry queue"
                .to_owned(),
        ),
        ("pending", _) => (
            "-".to_owned(),
            "not confirmed by the broker yet: the relay publishes it".to_owned(),
        ),
        _ => ("-".to_owned(), "its chunk row is missing".to_owned()),
    }
}

/// The report as a table: a line saying what was looked up and found, then one row per
/// event (the last column is not padded: it holds the reasons).
fn table(report: &TraceReport) -> String {
    let mut out = String::new();
    let _ = write!(out, "tenant {}", report.tenant);
    if let Some(event_id) = &report.event_id {
        let _ = write!(out, ", eventId {event_id}");
    }
    if let (Some(subscriber), Some(since), Some(until)) =
        (&report.subscriber, report.since, report.until)
    {
        let _ = write!(
            out,
            ", subscriber {subscriber}, received from {} to {}",
            time(since),
            time(until)
        );
    }
    let n = report.events.len();
    let _ = write!(out, ": {n} event{}", if n == 1 { "" } else { "s" });
    if report.truncated {
        out.push_str(" (the window holds more: narrow it or raise --limit)");
    }
    out.push('\n');
    if report.events.is_empty() {
        return out;
    }
    let header = [
        "EVENT",
        "SUBSCRIBER",
        "RECEIVED",
        "CHUNK",
        "POS",
        "CHUNK STATE",
        "PUBLISHED",
        "STATUS",
        "AT",
        "DETAIL",
    ];
    let rows: Vec<[String; 10]> = report
        .events
        .iter()
        .map(|e| {
            let (at, detail) = outcome(e);
            [
                e.event_id
                    .as_deref()
                    .map_or_else(|| format!("(row {})", e.row_id), |id| cell(id, 40)),
                cell(&e.subscriber, 40),
                time(e.received_at),
                e.chunk_id.to_string(),
                e.position.to_string(),
                e.chunk_state.unwrap_or("-").to_owned(),
                e.published_at.map_or_else(|| "-".to_owned(), time),
                e.status.to_owned(),
                at,
                detail,
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (width, value) in widths.iter_mut().zip(row) {
            *width = (*width).max(value.chars().count());
        }
    }
    let mut line = |cells: &[&str]| {
        let last = cells.len() - 1;
        let mut text = String::new();
        for (i, (value, width)) in cells.iter().zip(widths).enumerate() {
            if i == last {
                text.push_str(value);
            } else {
                let _ = write!(text, "{value:<width$}  ");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    /// `TraceParams` from a query string, as the admin port gets them.
    fn params(pairs: &[(&str, &str)]) -> TraceParams {
        let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        actix_web::web::Query::<TraceParams>::from_query(&query.join("&").replace('+', "%2B"))
            .unwrap()
            .into_inner()
    }

    #[test]
    fn trace_parameters_parse_into_a_lookup_or_say_what_is_wrong() {
        let now = at("2026-11-30T12:00:00Z");
        let sub = |since: &str, until: &str, limit| Selector::Subscriber {
            subscriber: "u1".into(),
            since: at(since),
            until: at(until),
            limit,
        };
        /// The selector, or (HTTP status, text the message holds).
        type Expected = Result<Selector, (u16, &'static str)>;
        // parameters → expected
        let table: Vec<(Vec<(&str, &str)>, Expected)> = vec![
            (
                vec![("tenant", "acme"), ("eventId", "e-1")],
                Ok(Selector::EventId("e-1".into())),
            ),
            (
                vec![("tenant", "acme"), ("subscriber", "u1")],
                Ok(sub("2026-11-29T12:00:00Z", "2026-11-30T12:00:00Z", 100)),
            ),
            (
                vec![
                    ("tenant", "acme"),
                    ("subscriber", "u1"),
                    ("since", "2026-11-30T08:00:00Z"),
                    ("until", "2026-11-30T09:00:00+01:00"),
                    ("limit", "5"),
                ],
                Err((400, "must be before until")),
            ),
            (
                vec![
                    ("tenant", "acme"),
                    ("subscriber", "u1"),
                    ("since", "2026-11-30T08:00:00Z"),
                    ("until", "2026-11-30T10:00:00+01:00"),
                    ("limit", "5"),
                ],
                Ok(sub("2026-11-30T08:00:00Z", "2026-11-30T09:00:00Z", 5)),
            ),
            (
                vec![
                    ("tenant", "acme"),
                    ("subscriber", "u1"),
                    ("until", "2026-11-01T00:00:00Z"),
                ],
                Ok(sub("2026-10-31T00:00:00Z", "2026-11-01T00:00:00Z", 100)),
            ),
            (
                vec![],
                Err((400, "missing parameters: tenant, eventId or subscriber")),
            ),
            (
                vec![("eventId", "e-1")],
                Err((400, "missing parameters: tenant")),
            ),
            (
                vec![("tenant", " "), ("subscriber", "")],
                Err((400, "missing parameters: tenant, eventId or subscriber")),
            ),
            (
                vec![("tenant", "acme")],
                Err((400, "missing parameters: eventId or subscriber")),
            ),
            (
                vec![("tenant", "acme"), ("eventId", "e"), ("subscriber", "u1")],
                Err((400, "not both")),
            ),
            (
                vec![
                    ("tenant", "acme"),
                    ("eventId", "e"),
                    ("since", "2026-11-30T08:00:00Z"),
                ],
                Err((400, "since applies to a subscriber lookup")),
            ),
            (
                vec![
                    ("tenant", "acme"),
                    ("subscriber", "u1"),
                    ("since", "yesterday"),
                ],
                Err((400, "since must be an RFC 3339 time")),
            ),
            (
                vec![
                    ("tenant", "acme"),
                    ("subscriber", "u1"),
                    ("since", "2026-11-28T00:00:00Z"),
                ],
                Err((400, "longer than 24 hours")),
            ),
            (
                vec![("tenant", "acme"), ("subscriber", "u1"), ("limit", "0")],
                Err((400, "limit must be from 1 to 1000, not 0")),
            ),
            (
                vec![("tenant", "acme"), ("subscriber", "u1"), ("limit", "1001")],
                Err((400, "not 1001")),
            ),
            (
                vec![("tenant", "acme"), ("subscriber", "u1"), ("limit", "ten")],
                Err((400, "limit must be a whole number")),
            ),
        ];
        for (pairs, expected) in table {
            let parsed = TraceQuery::parse(&params(&pairs), now);
            match (parsed, expected) {
                (Ok(query), Ok(selector)) => {
                    assert_eq!(query.tenant, "acme", "{pairs:?}");
                    assert_eq!(query.selector, selector, "{pairs:?}");
                }
                (Err(error), Err((status, text))) => {
                    assert_eq!(error.http_status(), status, "{pairs:?}: {error}");
                    assert!(error.to_string().contains(text), "{pairs:?}: {error}");
                }
                (got, want) => panic!("{pairs:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn errors_map_to_http_statuses() {
        let table = [
            (TraceError::UnknownTenant("x".into()), 404),
            (
                TraceError::UnknownEvent {
                    tenant: "x".into(),
                    event_id: "e".into(),
                },
                404,
            ),
            (
                TraceError::Store(StoreError::Unavailable("down".into())),
                503,
            ),
            (TraceError::Store(StoreError::Corrupt("bad".into())), 500),
            (TraceError::MissingParameters(vec!["tenant"]), 400),
        ];
        for (error, status) in table {
            assert_eq!(error.http_status(), status, "{error}");
        }
    }

    fn traced(status: &'static str, failure: Option<TracedFailure>) -> TracedEvent {
        TracedEvent {
            event_id: Some("e-1".into()),
            row_id: 7,
            subscriber: "u1".into(),
            asset_id: "a1".into(),
            interaction: "play".into(),
            timestamp: at("2026-11-30T09:59:00Z"),
            received_at: at("2026-11-30T10:00:00.123Z"),
            chunk_id: 42,
            position: 3,
            chunk_state: Some("published"),
            published_at: Some(at("2026-11-30T10:00:00.200Z")),
            status,
            delivered_at: (status == "delivered").then(|| at("2026-11-30T10:00:01Z")),
            failure,
        }
    }

    fn refusal() -> TracedFailure {
        TracedFailure {
            reason: "400 Bad Request:\n{\"error\":\"unknown asset\"}".into(),
            ncanto_status: Some(400),
            failed_at: at("2026-11-30T10:00:00.500Z"),
            attempts: Some(1),
        }
    }

    #[test]
    fn each_status_reads_as_when_and_what() {
        // (status, failure) → (AT, DETAIL)
        let table = [
            ("delivered", None, "2026-11-30T10:00:01.000Z", ""),
            (
                "delivered",
                Some(refusal()),
                "2026-11-30T10:00:01.000Z",
                "re-driven; refused before (Ncanto 400 after 1 attempt: 400 Bad Request: {\"error\":\"unknown asset\"})",
            ),
            (
                "parked",
                Some(refusal()),
                "2026-11-30T10:00:00.500Z",
                "Ncanto 400 after 1 attempt: 400 Bad Request: {\"error\":\"unknown asset\"}",
            ),
            (
                "parked",
                Some(TracedFailure {
                    reason: "gave up after 13 retry rounds; last failure: 503".into(),
                    ncanto_status: None,
                    attempts: Some(13),
                    ..refusal()
                }),
                "2026-11-30T10:00:00.500Z",
                "gave up after 13 attempts: gave up after 13 retry rounds; last failure: 503",
            ),
            (
                "in_flight",
                None,
                "-",
                "published, no outcome yet: in the forward queue, being delivered, or in a retry queue",
            ),
            (
                "pending",
                None,
                "-",
                "not confirmed by the broker yet: the relay publishes it",
            ),
            ("unknown", None, "-", "its chunk row is missing"),
        ];
        for (status, failure, when, detail) in table {
            let (got_when, got_detail) = outcome(&traced(status, failure));
            assert_eq!(
                (got_when.as_str(), got_detail.as_str()),
                (when, detail),
                "{status}"
            );
        }
    }

    #[test]
    fn long_or_multi_line_cells_stay_on_one_short_line() {
        assert_eq!(cell("a\nb\tc", 10), "a b c");
        assert_eq!(cell("abcdef", 4), "abc…");
        assert_eq!(cell("abcd", 4), "abcd");
        assert_eq!(attempts(1), "1 attempt");
        assert_eq!(attempts(2), "2 attempts");
    }

    #[test]
    fn a_report_renders_as_an_aligned_table_and_as_json() {
        let mut pending = traced("pending", None);
        pending.event_id = None;
        pending.chunk_state = Some("pending");
        pending.published_at = None;
        let report = TraceReport {
            tenant: "acme".into(),
            event_id: None,
            subscriber: Some("u1".into()),
            since: Some(at("2026-11-30T00:00:00Z")),
            until: Some(at("2026-11-30T12:00:00Z")),
            events: vec![traced("delivered", None), pending],
            truncated: true,
        };
        let text = render(&report, Format::Table).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "tenant acme, subscriber u1, received from 2026-11-30T00:00:00.000Z to \
             2026-11-30T12:00:00.000Z: 2 events (the window holds more: narrow it or raise \
             --limit)"
        );
        assert_eq!(
            lines[1..],
            [
                "EVENT    SUBSCRIBER  RECEIVED                  CHUNK  POS  CHUNK STATE  \
                 PUBLISHED                 STATUS     AT                        DETAIL",
                "e-1      u1          2026-11-30T10:00:00.123Z  42     3    published    \
                 2026-11-30T10:00:00.200Z  delivered  2026-11-30T10:00:01.000Z",
                "(row 7)  u1          2026-11-30T10:00:00.123Z  42     3    pending      \
                 -                         pending    -                         \
                 not confirmed by the broker yet: the relay publishes it",
            ],
            "{text}"
        );

        let json: serde_json::Value =
            serde_json::from_str(&render(&report, Format::Json).unwrap()).unwrap();
        assert_eq!(json["truncated"], true);
        assert_eq!(json["events"][0]["status"], "delivered");
        assert_eq!(json["events"][0]["chunkId"], 42);
        assert_eq!(json["events"][0]["deliveredAt"], "2026-11-30T10:00:01Z");
        assert_eq!(json["events"][1]["eventId"], serde_json::Value::Null);
        assert!(json.get("eventId").is_none());
    }
}
