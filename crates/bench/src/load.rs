//! The load generator: closed loop (N clients, each sending as soon as its last answer came)
//! for throughput, and open loop (requests on a fixed schedule, latency measured from the
//! scheduled instant) for latency, so slow answers cannot hide behind a slower client.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use serde::Serialize;

/// A request to send again and again.
#[derive(Clone)]
pub(crate) struct Target {
    /// HTTP client (pooled connections).
    pub(crate) client: reqwest::Client,
    /// Endpoint URL.
    pub(crate) url: String,
    /// API key.
    pub(crate) key: HeaderValue,
    /// The body, serialized once.
    pub(crate) body: bytes_body::Body,
    /// Events in the body.
    pub(crate) events: u64,
}

/// Cheap-to-clone request bodies.
pub(crate) mod bytes_body {
    /// A shared body.
    pub(crate) type Body = std::sync::Arc<Vec<u8>>;
}

/// What a load phase measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LoadResult {
    /// Requests answered 202.
    pub(crate) ok: u64,
    /// Requests answered otherwise, or failed.
    pub(crate) errors: u64,
    /// Events in the 202 requests.
    pub(crate) events: u64,
    /// Wall time of the phase, seconds.
    pub(crate) seconds: f64,
    /// Requests per second (202s).
    pub(crate) requests_per_s: f64,
    /// Events per second (in 202s).
    pub(crate) events_per_s: f64,
    /// Latency percentiles, milliseconds.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub(crate) max_ms: f64,
}

fn histogram() -> Histogram<u64> {
    // Microseconds, 1 µs .. 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

async fn send(target: &Target) -> bool {
    let request = target
        .client
        .post(&target.url)
        .header(CONTENT_TYPE, "application/json")
        .header("x-api-key", target.key.clone())
        .body(target.body.as_ref().clone());
    match request.send().await {
        Ok(response) => {
            let ok = response.status().as_u16() == 202;
            // Read the body so the connection goes back to the pool.
            let _ = response.bytes().await;
            ok
        }
        Err(_) => false,
    }
}

fn result(h: &Histogram<u64>, ok: u64, errors: u64, events: u64, seconds: f64) -> LoadResult {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    LoadResult {
        ok,
        errors,
        events,
        seconds,
        requests_per_s: ok as f64 / seconds,
        events_per_s: events as f64 / seconds,
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        max_ms: h.max() as f64 / 1000.0,
    }
}

/// `concurrency` clients send back to back for `duration`.
pub(crate) async fn closed_loop(
    target: &Target,
    concurrency: usize,
    duration: Duration,
) -> LoadResult {
    let started = Instant::now();
    let deadline = started + duration;
    let tasks = (0..concurrency).map(|_| {
        let target = target.clone();
        tokio::spawn(async move {
            let mut h = histogram();
            let (mut ok, mut errors) = (0u64, 0u64);
            while Instant::now() < deadline {
                let t0 = Instant::now();
                if send(&target).await {
                    ok += 1;
                } else {
                    errors += 1;
                }
                let _ = h.record(t0.elapsed().as_micros().max(1) as u64);
            }
            (h, ok, errors)
        })
    });
    let mut h = histogram();
    let (mut ok, mut errors) = (0, 0);
    for task in futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .flatten()
    {
        let _ = h.add(&task.0);
        ok += task.1;
        errors += task.2;
    }
    result(
        &h,
        ok,
        errors,
        ok * target.events,
        started.elapsed().as_secs_f64(),
    )
}

/// Live counters of an open-loop run, for sampling while it goes.
#[derive(Default)]
pub(crate) struct Progress {
    /// Events acknowledged (202) so far.
    pub(crate) acked_events: AtomicU64,
}

/// Sends `rate` requests per second on a fixed schedule for `duration`; each latency counts
/// from the instant the request was due.
pub(crate) async fn open_loop(
    target: &Target,
    rate: f64,
    duration: Duration,
    progress: Arc<Progress>,
) -> LoadResult {
    let started = Instant::now();
    let total = (rate * duration.as_secs_f64()) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(bool, u64)>();
    // Bounded in flight: past this the server is hopelessly behind and the run says so.
    let in_flight = Arc::new(tokio::sync::Semaphore::new(20_000));
    for i in 0..total {
        let due = started + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let target = target.clone();
        let tx = tx.clone();
        let progress = progress.clone();
        tokio::spawn(async move {
            let ok = send(&target).await;
            if ok {
                progress
                    .acked_events
                    .fetch_add(target.events, Ordering::Relaxed);
            }
            let _ = tx.send((ok, due.elapsed().as_micros().max(1) as u64));
            drop(permit);
        });
    }
    drop(tx);
    let mut h = histogram();
    let (mut ok, mut errors) = (0, 0);
    while let Some((success, micros)) = rx.recv().await {
        let _ = h.record(micros);
        if success {
            ok += 1;
        } else {
            errors += 1;
        }
    }
    result(
        &h,
        ok,
        errors,
        ok * target.events,
        started.elapsed().as_secs_f64(),
    )
}
