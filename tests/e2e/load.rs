//! Continuous load from concurrent clients, remembering exactly which events were
//! acknowledged (202), so a scenario can check each of them arrived.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::pipeline::API_KEY;

/// What a load run did.
#[derive(Debug, Default)]
pub(crate) struct Sent {
    /// Events sent.
    pub(crate) sent: u64,
    /// Subscribers (one per event, unique) of the events answered 202.
    pub(crate) acked: Vec<String>,
    /// Requests answered otherwise, or failed, by status (0: no answer).
    pub(crate) refused: std::collections::BTreeMap<u16, u64>,
    /// The longest any request took to be answered (or to fail).
    pub(crate) slowest: Duration,
    /// Requests answered otherwise, kept for [`resend_refused`] when the load sends event
    /// ids: (target, path, body, subscribers).
    pub(crate) refused_requests: Vec<(String, &'static str, Value, Vec<String>)>,
}

/// A running load.
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    clients: Vec<tokio::task::JoinHandle<Sent>>,
}

fn event(subscriber: &str, asset: &str) -> Value {
    let ts = (chrono::Utc::now() - chrono::TimeDelta::seconds(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    json!({"timestamp": ts, "subscriber": subscriber, "assetId": asset,
           "interaction": "play", "ratingEquivalent": 0.25, "setting": {"device": "web"}})
}

impl Load {
    /// `clients` clients, spread over `targets` (ingest-api base URLs), each sending every
    /// `pause` either a batch of 10 (even clients) or one event (odd clients). Events whose
    /// number is a multiple of `poison_every` (if set) get an asset named `poison`.
    pub(crate) fn start(
        targets: Vec<String>,
        clients: usize,
        pause: Duration,
        tag: &str,
        poison_every: Option<u64>,
    ) -> Self {
        Self::start_with(targets, clients, pause, tag, poison_every, false)
    }

    /// Like [`Load::start`]; with `event_ids`, every event carries its subscriber name as its
    /// `eventId` and refused requests are kept, as an idempotent client would, to be sent
    /// again ([`resend_refused`]).
    pub(crate) fn start_with(
        targets: Vec<String>,
        clients: usize,
        pause: Duration,
        tag: &str,
        poison_every: Option<u64>,
        event_ids: bool,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acked_count = Arc::new(AtomicU64::new(0));
        let refused_count = Arc::new(AtomicU64::new(0));
        interaction_runtime::install_tls_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let clients = (0..clients)
            .map(|c| {
                let (stop, acked_count, http) = (stop.clone(), acked_count.clone(), http.clone());
                let refused_count = refused_count.clone();
                let target = targets[c % targets.len()].clone();
                let tag = format!("{tag}-{c}");
                tokio::spawn(async move {
                    let mut out = Sent::default();
                    let mut n = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        let size = if c % 2 == 0 { 10 } else { 1 };
                        let names: Vec<String> =
                            (n..n + size).map(|i| format!("{tag}-{i}")).collect();
                        let events: Vec<Value> = (n..n + size)
                            .zip(&names)
                            .map(|(i, name)| {
                                let poisoned = poison_every.is_some_and(|every| i % every == 0);
                                let mut event =
                                    event(name, if poisoned { "poison" } else { "asset" });
                                if event_ids {
                                    event["eventId"] = Value::from(name.as_str());
                                }
                                event
                            })
                            .collect();
                        n += size;
                        let (path, body) = if size == 1 {
                            ("/api/v1/log", events[0].clone())
                        } else {
                            ("/api/v1/logs", json!(events))
                        };
                        out.sent += size;
                        let started = std::time::Instant::now();
                        let status = http
                            .post(format!("{target}{path}"))
                            .header("content-type", "application/json")
                            .header("x-api-key", API_KEY)
                            .json(&body)
                            .send()
                            .await
                            .map(|r| r.status().as_u16())
                            .unwrap_or(0);
                        out.slowest = out.slowest.max(started.elapsed());
                        if status == 202 {
                            acked_count.fetch_add(size, Ordering::Relaxed);
                            out.acked.extend(names);
                        } else {
                            if event_ids {
                                out.refused_requests.push((
                                    target.clone(),
                                    path,
                                    body.clone(),
                                    names.clone(),
                                ));
                            }
                            *out.refused.entry(status).or_default() += 1;
                            refused_count.fetch_add(1, Ordering::Relaxed);
                            // A refused client backs off a little, as a real one would.
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        tokio::time::sleep(pause).await;
                    }
                    out
                })
            })
            .collect();
        Self {
            stop,
            acked: acked_count,
            refused: refused_count,
            clients,
        }
    }

    /// Events acknowledged so far.
    pub(crate) fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Requests refused (or failed) so far.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Stops the clients and sums up.
    pub(crate) async fn stop(self) -> Sent {
        self.stop.store(true, Ordering::SeqCst);
        let mut total = Sent::default();
        for client in self.clients {
            let sent = client.await.unwrap();
            total.sent += sent.sent;
            total.acked.extend(sent.acked);
            total.slowest = total.slowest.max(sent.slowest);
            total.refused_requests.extend(sent.refused_requests);
            for (status, n) in sent.refused {
                *total.refused.entry(status).or_default() += n;
            }
        }
        total
    }
}

/// Sends every refused request of `sent` again, as the client that got the 503 would, until
/// each is acknowledged (bounded); their events join `sent.acked`.
pub(crate) async fn resend_refused(sent: &mut Sent) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for (target, path, body, names) in std::mem::take(&mut sent.refused_requests) {
        let mut tries = 0;
        loop {
            let status = http
                .post(format!("{target}{path}"))
                .header("content-type", "application/json")
                .header("x-api-key", API_KEY)
                .json(&body)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            if status == 202 {
                sent.acked.extend(names);
                break;
            }
            tries += 1;
            assert!(tries < 100, "a refused request is still refused ({status})");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
