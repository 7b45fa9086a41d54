//! The load generator: closed loop (N clients, each sending as soon as its last answer came)
//! for throughput, and open loop (requests on a fixed schedule, latency measured from the
//! scheduled instant) for latency, so slow answers cannot hide behind a slower client.
//!
//! The closed loop gives each client one bare HTTP/1.1 keep-alive connection (hyper's
//! connection API, no pool, no per-request allocation of headers): on two cores the generator
//! shares the machine with the server, and a heavy generator would lower the HTTP ceiling and
//! every figure measured against it alike, flattering the ratio.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode};
use serde::Serialize;

/// A request to send again and again.
#[derive(Clone)]
pub(crate) struct Target {
    /// HTTP client (pooled connections), for the open loop.
    pub(crate) client: reqwest::Client,
    /// The server.
    pub(crate) addr: SocketAddr,
    /// `GET` (nothing sent) or `POST` (the body, as JSON).
    pub(crate) method: Method,
    /// Path of the endpoint.
    pub(crate) path: String,
    /// API key.
    pub(crate) key: HeaderValue,
    /// The body, serialized once.
    pub(crate) body: Bytes,
    /// Events in the body (0 for a GET).
    pub(crate) events: u64,
    /// The status of success.
    pub(crate) expect: StatusCode,
}

impl Target {
    fn url(&self) -> String {
        format!("http://{}{}", self.addr, self.path)
    }

    fn request(&self) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.path.parse().unwrap_or_default();
        let headers = request.headers_mut();
        headers.insert(
            HOST,
            HeaderValue::from_str(&self.addr.to_string()).unwrap_or(HeaderValue::from_static("x")),
        );
        headers.insert("x-api-key", self.key.clone());
        if self.method == Method::POST {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            headers.insert(CONTENT_LENGTH, HeaderValue::from(self.body.len()));
        }
        request
    }
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
        .request(target.method.clone(), target.url())
        .header(CONTENT_TYPE, "application/json")
        .header("x-api-key", target.key.clone())
        .body(target.body.clone());
    match request.send().await {
        Ok(response) => {
            let ok = response.status() == target.expect;
            // Read the body so the connection goes back to the pool.
            let _ = response.bytes().await;
            ok
        }
        Err(_) => false,
    }
}

/// One client of the closed loop: its own connection, reopened after an error.
struct Connection {
    sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

impl Connection {
    /// Sends the request once; true when answered with the expected status.
    async fn send(&mut self, target: &Target) -> bool {
        if self.sender.is_none() {
            self.sender = open(target.addr).await;
        }
        let Some(sender) = self.sender.as_mut() else {
            return false;
        };
        let answered = async {
            sender.ready().await.ok()?;
            let response = sender.send_request(target.request()).await.ok()?;
            let status = response.status();
            // Read the whole body: the connection is reused for the next request.
            response.into_body().collect().await.ok()?;
            Some(status == target.expect)
        }
        .await;
        match answered {
            Some(ok) => ok,
            None => {
                self.sender = None;
                false
            }
        }
    }
}

async fn open(addr: SocketAddr) -> Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .ok()?;
    tokio::spawn(connection);
    Some(sender)
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
            let mut connection = Connection { sender: None };
            while Instant::now() < deadline {
                let t0 = Instant::now();
                if connection.send(&target).await {
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
