//! Shared fixtures: a throw-away topology, a plain AMQP channel to look inside queues, sample
//! envelopes and a TCP proxy whose connections can be cut.

use interaction_bus::{
    BusConfig, Envelope, Topology, connect, delete_topology,
    lapin::{
        Channel, Connection,
        message::BasicGetMessage,
        options::{BasicGetOptions, QueueDeclareOptions},
        types::FieldTable,
    },
};
use interaction_core::Event;
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpListener, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::watch,
    task::JoinHandle,
};

/// The broker under test.
pub(crate) fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// `host:port` of [`amqp_url`].
pub(crate) fn broker_addr() -> String {
    let url = amqp_url();
    let rest = url.split_once("://").unwrap().1;
    let authority = rest.split(['/', '?']).next().unwrap();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5672")
    }
}

/// [`amqp_url`] with its `host:port` replaced (to go through a proxy or nowhere).
pub(crate) fn url_via(host_port: &str) -> String {
    amqp_url().replacen(&broker_addr(), host_port, 1)
}

/// A unique prefix whose exchanges and queues are deleted when this is dropped, whether the
/// test passed or panicked.
pub(crate) struct TestTopology {
    pub(crate) topology: Topology,
}

impl TestTopology {
    pub(crate) fn new() -> Self {
        Self {
            topology: Topology::new(format!("test-{}", uuid::Uuid::new_v4())),
        }
    }

    pub(crate) fn prefix(&self) -> String {
        self.topology.prefix().to_owned()
    }

    /// A publisher config for this prefix with fast reconnects.
    pub(crate) fn config(&self) -> BusConfig {
        BusConfig {
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(1),
            ..BusConfig::new(amqp_url(), self.prefix())
        }
    }
}

impl Drop for TestTopology {
    // Drop cannot await, and may run inside the test's runtime: clean up from a thread with a
    // runtime of its own. A failure is reported but must not panic (we may be unwinding).
    #[allow(clippy::print_stderr)]
    fn drop(&mut self) {
        let topology = self.topology.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let connection = connect(&amqp_url().into(), None)
                    .await
                    .map_err(|e| e.to_string())?;
                let channel = connection
                    .create_channel()
                    .await
                    .map_err(|e| e.to_string())?;
                delete_topology(&channel, &topology)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = connection.close(200, "cleanup done".into()).await;
                Ok::<(), String>(())
            })
        });
        match cleanup.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("cleanup of {:?} failed: {e}", self.topology.prefix()),
            Err(_) => eprintln!("cleanup of {:?} panicked", self.topology.prefix()),
        }
    }
}

/// A connection and channel of our own, to inspect and manipulate the broker.
pub(crate) async fn open_channel() -> (Connection, Channel) {
    let connection = connect(&amqp_url().into(), None).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    (connection, channel)
}

/// Takes one message off `queue` (auto-ack), polling until `timeout`.
pub(crate) async fn get_message(
    channel: &Channel,
    queue: &str,
    timeout: Duration,
) -> Option<BasicGetMessage> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let got = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap();
        if got.is_some() || tokio::time::Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many messages `queue` holds (a passive declare).
pub(crate) async fn message_count(channel: &Channel, queue: &str) -> u32 {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
        .message_count()
}

/// Polls [`message_count`] until it reaches `want` or `timeout` passes; returns the last count.
pub(crate) async fn wait_for_count(
    channel: &Channel,
    queue: &str,
    want: u32,
    timeout: Duration,
) -> u32 {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let count = message_count(channel, queue).await;
        if count >= want || tokio::time::Instant::now() >= deadline {
            return count;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A normalized event for subscriber `n`.
pub(crate) fn event(n: usize) -> Event {
    serde_json::from_value(serde_json::json!({
        "timestamp": "2025-07-09T10:15:00Z",
        "subscriber": format!("user_{n}"),
        "assetId": "asset_1",
        "interaction": "play",
        "ratingEquivalent": 0.25,
        "setting": {"device": "web"},
        "eventId": format!("event-{n}")
    }))
    .unwrap()
}

/// An envelope of `events` events for chunk `chunk_id`.
pub(crate) fn envelope(chunk_id: i64, events: usize) -> Envelope {
    Envelope::new("tenant-a", chunk_id, (0..events).map(event).collect())
}

/// A TCP proxy to the broker on a random local port; tests cut or freeze its connections to
/// simulate a broker or network failure without touching the shared broker.
pub(crate) struct Proxy {
    port: u16,
    state: Arc<ProxyState>,
    acceptor: JoinHandle<()>,
}

#[derive(Default)]
struct ProxyState {
    accepted: AtomicUsize,
    refusing: AtomicBool,
    /// While true, bytes are read but held back (a broker that stops answering).
    frozen: watch::Sender<bool>,
    connections: Mutex<Vec<JoinHandle<()>>>,
}

/// Copies `from` → `to` until either side closes, holding bytes back while frozen.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut frozen: watch::Receiver<bool>) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if frozen.wait_for(|frozen| !*frozen).await.is_err() {
            break;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

impl Proxy {
    pub(crate) async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(ProxyState::default());
        let upstream = broker_addr();
        let acceptor = tokio::spawn({
            let state = Arc::clone(&state);
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    if state.refusing.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    state.accepted.fetch_add(1, Ordering::SeqCst);
                    let upstream = upstream.clone();
                    let frozen = state.frozen.subscribe();
                    let connection = tokio::spawn(async move {
                        if let Ok(server) = TcpStream::connect(upstream).await {
                            let (client_read, client_write) = client.into_split();
                            let (server_read, server_write) = server.into_split();
                            tokio::join!(
                                pump(client_read, server_write, frozen.clone()),
                                pump(server_read, client_write, frozen),
                            );
                        }
                    });
                    state.connections.lock().unwrap().push(connection);
                }
            }
        });
        Self {
            port,
            state,
            acceptor,
        }
    }

    /// The broker URL through this proxy.
    pub(crate) fn url(&self) -> String {
        url_via(&format!("127.0.0.1:{}", self.port))
    }

    /// Connections accepted so far (refused ones not counted).
    pub(crate) fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Closes every proxied connection at once, both ways.
    pub(crate) fn cut_all(&self) {
        for connection in self.state.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    /// While frozen, connections stay open but no byte gets through either way.
    pub(crate) fn set_frozen(&self, frozen: bool) {
        self.state.frozen.send_replace(frozen);
    }

    /// While refusing, new connections are accepted and closed at once.
    pub(crate) fn set_refusing(&self, refusing: bool) {
        self.state.refusing.store(refusing, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.cut_all();
    }
}
