//! What the black-box and end-to-end tests share: a TCP proxy they can cut to simulate an
//! outage of the machine's shared PostgreSQL or RabbitMQ (never stopping the real servers), the
//! broker URL, clean-up of a test's queues from `Drop`, bounded polling, a private CA
//! ([`tls::TestCa`]) and a TLS RabbitMQ node of a test's own ([`rabbit::TlsRabbit`]).
#![allow(clippy::expect_used)] // test support: a failure to set up is a failed test

pub mod postgres;
pub mod rabbit;
pub mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use interaction_bus::Topology;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The broker tests use: `TEST_AMQP_URL`, or the local RabbitMQ.
pub fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Deletes a test's exchanges and queues, blocking: for `Drop`, which cannot await. Runs on a
/// thread of its own with its own runtime, so it works inside or outside a runtime.
pub fn delete_topology_blocking(topology: &Topology) {
    let topology = topology.clone();
    let _ = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        runtime.block_on(async {
            let connection = interaction_bus::connect(&amqp_url().into(), None)
                .await
                .ok()?;
            let channel = connection.create_channel().await.ok()?;
            interaction_bus::delete_topology(&channel, &topology)
                .await
                .ok()?;
            connection.close(200, "test clean-up".into()).await.ok()
        })
    })
    .join();
}

/// Polls `check` until it returns `Some`, for at most `limit`; panics naming `what` otherwise.
pub async fn wait_until<T>(what: &str, limit: Duration, check: impl AsyncFn() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the hold flag is `value` (or the proxy is gone).
async fn until(held: &mut watch::Receiver<bool>, value: bool) {
    // The guard `wait_for` returns is not Send: drop it inside this future.
    let _ = held.wait_for(|h| *h == value).await.map(|_| ());
}

/// Copies `from` to `to` until either ends, adding what it copied to `count`; while
/// `paused` is true, what was read is kept and written only once it turns false.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut paused: watch::Receiver<bool>,
    count: Option<&AtomicU64>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        until(&mut paused, false).await;
        if to.write_all(&buffer[..n]).await.is_err() {
            break;
        }
        if let Some(count) = count {
            count.fetch_add(n as u64, Ordering::SeqCst);
        }
    }
    let _ = to.shutdown().await;
}

/// A TCP proxy on loopback in front of one service, that the test can cut and restore, make
/// hold: accept connections and bytes but never answer (a server that hangs, a network that
/// black-holes), which no refused connection can imitate — or pause: keep every byte and
/// deliver it late (a slow service, a statement in flight for as long as the test needs).
pub struct Proxy {
    /// The port to connect to instead of the service's.
    pub port: u16,
    up: Arc<AtomicBool>,
    cuts: watch::Sender<u64>,
    holding: watch::Sender<bool>,
    paused: watch::Sender<bool>,
    /// Bytes forwarded to the service so far.
    sent: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts forwarding to `target` (`host:port`).
    pub async fn start(target: &str) -> Self {
        Self::start_as(target, true).await
    }

    /// Starts refusing, as if `target` were down; [`Proxy::restore`] brings it up.
    pub async fn start_down(target: &str) -> Self {
        Self::start_as(target, false).await
    }

    async fn start_as(target: &str, up: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let port = listener.local_addr().expect("a bound address").port();
        let up = Arc::new(AtomicBool::new(up));
        let (cuts, _) = watch::channel(0u64);
        let (holding, _) = watch::channel(false);
        let (paused, _) = watch::channel(false);
        let sent = Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        let (flag, watcher, hold, pause, target) = (
            up.clone(),
            cuts.clone(),
            holding.clone(),
            paused.clone(),
            target.to_owned(),
        );
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once, like a service that is down
                }
                let mut cut = watcher.subscribe();
                let mut held = hold.subscribe();
                let pause = pause.clone();
                let target = target.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let holding_now = *held.borrow_and_update();
                    if holding_now {
                        // Accepted, then silence; closed when the hold ends or on a cut.
                        tokio::select! {
                            _ = until(&mut held, false) => {}
                            _ = cut.changed() => {}
                        }
                        return;
                    }
                    let Ok(server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let both_ways = async {
                        tokio::join!(
                            pump(client_read, server_write, pause.subscribe(), Some(&counter)),
                            pump(server_read, client_write, pause.subscribe(), None),
                        )
                    };
                    // Pinned here, not moved into the select: on a hold both sockets must
                    // stay open (and silent) until the hold ends.
                    tokio::pin!(both_ways);
                    tokio::select! {
                        _ = &mut both_ways => {}
                        _ = cut.changed() => {}
                        _ = until(&mut held, true) => {
                            // Both sockets stay open and nothing moves, until the hold ends
                            // (then they are closed, as after a partition) or a cut.
                            tokio::select! {
                                _ = until(&mut held, false) => {}
                                _ = cut.changed() => {}
                            }
                        }
                    }
                });
            }
        });
        Self {
            port,
            up,
            cuts,
            holding,
            paused,
            sent,
            task,
        }
    }

    /// Bytes forwarded to the service so far, on every connection: how much a client asked
    /// of it (a test can tell "no query was sent" from "a quick query was sent").
    pub fn bytes_to_service(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// The service stops answering: open and new connections are kept open, and every byte
    /// sent is swallowed. [`Proxy::release`] ends it.
    pub fn hold(&self) {
        self.holding.send_replace(true);
    }

    /// Ends a [`Proxy::hold`]: the held connections are closed, new ones go through.
    pub fn release(&self) {
        self.holding.send_replace(false);
    }

    /// The service turns slow: connections stay open and every byte either way is kept, not
    /// delivered, until [`Proxy::resume`] delivers it. A statement sent meanwhile stays in
    /// flight, then completes.
    pub fn pause(&self) {
        self.paused.send_replace(true);
    }

    /// Ends a [`Proxy::pause`]: what was kept is delivered, in order.
    pub fn resume(&self) {
        self.paused.send_replace(false);
    }

    /// The service goes away: open connections are cut, new ones refused.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    /// The service comes back.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}
