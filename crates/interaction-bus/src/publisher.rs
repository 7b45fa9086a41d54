//! The confirmed publisher ingest-api hands committed chunks to.
//!
//! # Reconnecting: our own loop, not lapin's auto-recovery
//! lapin 4 can recover a connection by itself (`ConnectionProperties::enable_auto_recover`),
//! replaying channels, confirm mode and the declared topology. We do not use it, because:
//! - it gives up after a bounded number of attempts (16 by default) and then leaves a dead
//!   connection behind, while a service must retry for as long as it runs;
//! - while it recovers, publishes wait for it (`wait_for_recovery`), but our callers must
//!   never wait for the broker: they need an immediate "not connected" so the chunk stays in
//!   the outbox for the relay;
//! - a fresh connection + channel per attempt is simple to reason about: no confirm, returned
//!   message or delivery-tag state survives from the dead channel.
//!
//! So [`Publisher::start`] spawns one supervisor task that connects, opens a channel, enables
//! confirms, declares the topology, then watches the connection (lapin's event stream, a
//! status poll every 250 ms, and hints from failed publishes) and starts over with exponential
//! backoff and jitter as soon as anything breaks.
//!
//! # Publishing concurrently on one channel
//! Many tasks publish at once, and waiting for each confirm before the next publish caps a
//! channel at ~1,500 msgs/s. So publishes are pipelined: a task holds a short lock only while
//! lapin numbers its message and hands the frames to the socket, then waits for the confirm
//! with no lock held. The lock matters: lapin assigns the delivery tag and queues the frames
//! in two separate steps, and two tasks interleaving between them would make the broker's
//! numbering differ from lapin's, pairing confirms with the wrong messages.
//!
//! # Returned (unroutable) messages
//! `basic.return` carries no delivery tag; lapin attaches each returned message to the next
//! confirm it resolves, which under a multiple-ack may belong to another in-flight publish.
//! Each publish therefore checks the returned message's `message_id` (the chunk id): a return
//! of its own chunk, or one recorded by another publish, means [`PublishError::Returned`];
//! holding another chunk's return also counts as returned (routing was changing while it was
//! in flight; erring that way only causes a duplicate, never a lost chunk). An unroutable
//! publish also makes the supervisor re-declare the topology (at most once a second), so a
//! deleted forward queue comes back by itself.

use crate::{
    connect::{CONNECT_TIMEOUT, check_connection_settings, connect_named, redact_url},
    envelope::Envelope,
    error::{BusError, PublishError},
    topology::{Route, Topology, declare_topology},
};
use futures_util::{Stream, StreamExt};
use interaction_runtime::reconnect_delay;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    types::{FieldTable, ShortString},
};
use secrecy::{ExposeSecret, SecretString};
use std::{
    collections::HashMap,
    fmt,
    path::PathBuf,
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};
use tokio::{sync::watch, task::JoinHandle};

/// The `app_id` property of every message we publish (shows in the management UI and lets
/// consumers tell our messages from re-driven or hand-made ones).
pub const APP_ID: &str = "interaction-logger";

/// Connection name in the management UI.
const CONNECTION_NAME: &str = "interaction-bus publisher";
/// How often the supervisor checks the connection and channel state, in addition to lapin's
/// events (a channel the broker closes does not always produce an event).
const HEALTH_POLL: Duration = Duration::from_millis(250);
/// Least time between two topology re-declarations triggered by returned messages.
const REDECLARE_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Floor of the reconnect delay, whatever the configuration says: a zero delay against a
/// refusing port would spin a core.
const MIN_RECONNECT_DELAY: Duration = Duration::from_millis(10);
/// Returned-message ids a channel remembers at most (see the module docs); past that the
/// oldest knowledge is dropped at once — only ever reached if routing stays broken.
const RETURN_BOOK_CAP: usize = 10_000;

/// How to reach the broker and how patient to be.
#[derive(Clone)]
pub struct BusConfig {
    /// `AMQP_URL`, e.g. `amqp://guest:guest@127.0.0.1:5672/%2f` or `amqps://…` for TLS. A
    /// secret (it holds the password): exposed only to open the connection, logged redacted.
    pub url: SecretString,
    /// `AMQP_CA_FILE`: a PEM bundle of CAs trusted for `amqps://` in addition to the system
    /// roots (a private PKI). `None`: the system roots only.
    pub ca_file: Option<PathBuf>,
    /// `AMQP_PREFIX`: names every exchange and queue (see [`Topology`]).
    pub prefix: String,
    /// How long one publish may wait for its confirm (and for its turn to send) before it
    /// fails with [`PublishError::ConfirmTimeout`]. Default 5 s.
    pub confirm_timeout: Duration,
    /// First delay before reconnecting; doubles per failed attempt. Default 250 ms.
    pub reconnect_min: Duration,
    /// Longest delay between attempts. Default 30 s.
    pub reconnect_max: Duration,
}

impl BusConfig {
    /// `url` and `prefix` with the default timings and no CA file.
    pub fn new(url: impl Into<SecretString>, prefix: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ca_file: None,
            prefix: prefix.into(),
            confirm_timeout: Duration::from_secs(5),
            reconnect_min: Duration::from_millis(250),
            reconnect_max: Duration::from_secs(30),
        }
    }
}

impl BusConfig {
    /// Checks what can be checked before connecting: the URL is an AMQP URL and the CA file,
    /// if any, can be read and holds a certificate. Binaries call it at start-up so that a
    /// configuration mistake stops them instead of looping in reconnect attempts.
    pub fn check(&self) -> Result<(), BusError> {
        check_connection_settings(&self.url, self.ca_file.as_deref())
    }
}

impl Default for BusConfig {
    /// The local development broker (as in `.env.example`) and prefix `interactions`.
    fn default() -> Self {
        Self::new("amqp://guest:guest@127.0.0.1:5672/%2f", "interactions")
    }
}

impl fmt::Debug for BusConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BusConfig")
            .field("url", &redact_url(self.url.expose_secret()))
            .field("ca_file", &self.ca_file)
            .field("prefix", &self.prefix)
            .field("confirm_timeout", &self.confirm_timeout)
            .field("reconnect_min", &self.reconnect_min)
            .field("reconnect_max", &self.reconnect_max)
            .finish()
    }
}

/// A confirmed publisher with its own reconnect loop. Cheap to clone (all clones share one
/// connection); safe to use from many tasks at once. When the last clone is dropped the
/// connection is closed; call [`Publisher::close`] to also wait for in-flight publishes.
#[derive(Clone)]
pub struct Publisher {
    shared: Arc<Shared>,
    _handle: Arc<HandleGuard>,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("address", &self.shared.address)
            .field("prefix", &self.shared.topology.prefix())
            .field("connected", &self.is_connected())
            .finish()
    }
}

/// Stops the supervisor when the last [`Publisher`] clone goes away.
struct HandleGuard(Arc<Shared>);

impl Drop for HandleGuard {
    fn drop(&mut self) {
        self.0.shutdown.send_replace(true);
    }
}

/// State shared by the clones and the supervisor.
struct Shared {
    config: BusConfig,
    /// The broker address without password, for logs.
    address: String,
    topology: Topology,
    /// Where [`Publisher::publish`] sends chunks.
    forward: Route,
    /// The usable connection, if any. Read on every publish; written on (re)connect.
    live: RwLock<Option<Arc<Live>>>,
    /// Mirrors `live.is_some()`; lets `wait_connected` sleep until it changes.
    connected: watch::Sender<bool>,
    /// A publish failed: the supervisor should check the channel now, not at its next poll.
    trouble: tokio::sync::Notify,
    /// A publish came back unroutable: the supervisor should re-declare the topology.
    redeclare: tokio::sync::Notify,
    /// Tells the supervisor to close the connection and stop.
    shutdown: watch::Sender<bool>,
    /// Set by `close`: new publishes fail at once.
    closing: AtomicBool,
    /// Publishes between their start and their verdict, for `close` to wait on.
    in_flight: watch::Sender<usize>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

impl Shared {
    fn current(&self) -> Option<Arc<Live>> {
        let live = self.live.read().unwrap_or_else(PoisonError::into_inner);
        live.as_ref().filter(|live| live.usable()).cloned()
    }

    fn set_live(&self, live: Option<Arc<Live>>) {
        let connected = live.is_some();
        *self.live.write().unwrap_or_else(PoisonError::into_inner) = live;
        self.connected.send_replace(connected);
    }
}

/// Counts a publish as in flight until dropped.
struct InFlight<'a>(&'a watch::Sender<usize>);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a watch::Sender<usize>) -> Self {
        counter.send_modify(|n| *n += 1);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// One established connection with its confirmed channel.
struct Live {
    connection: Connection,
    channel: Channel,
    /// Held while lapin numbers a message and queues its frames (see the module docs).
    send_order: tokio::sync::Mutex<()>,
    returns: Mutex<ReturnBook>,
    /// A task is draining confirms abandoned by timed-out publishes.
    draining: AtomicBool,
}

impl Live {
    fn usable(&self) -> bool {
        let connection = self.connection.status();
        let channel = self.channel.status();
        connection.connected() && !connection.blocked() && channel.connected() && channel.confirm()
    }

    fn describe_state(&self) -> String {
        let connection = self.connection.status();
        let channel = self.channel.status();
        format!(
            "connection connected={} blocked={}, channel connected={} confirm={}",
            connection.connected(),
            connection.blocked(),
            channel.connected(),
            channel.confirm()
        )
    }

    async fn publish(
        &self,
        route: &Route,
        payload: &[u8],
        properties: BasicProperties,
        message_id: &str,
    ) -> Result<(), PublishError> {
        let confirm = {
            let _order = self.send_order.lock().await;
            self.channel
                .basic_publish(
                    route.exchange.as_str().into(),
                    ShortString::try_new(route.routing_key.clone()).map_err(|_| {
                        PublishError::Broker(format!(
                            "routing key {:?} is longer than 255 bytes",
                            route.routing_key
                        ))
                    })?,
                    BasicPublishOptions {
                        // Unroutable must come back to us (basic.return), not vanish.
                        mandatory: true,
                        // Not supported by RabbitMQ (it closes the connection).
                        immediate: false,
                    },
                    payload,
                    properties,
                )
                .await
        }
        .map_err(broker_error)?;
        // The lock is released: other tasks publish while this one waits for its confirm.
        let (acked, returned) = match confirm.await.map_err(broker_error)? {
            Confirmation::Ack(returned) => (true, returned),
            Confirmation::Nack(returned) => (false, returned),
            Confirmation::NotRequested => {
                return Err(PublishError::Broker(
                    "publisher confirms are not enabled on the channel".to_owned(),
                ));
            }
        };
        let returned_id = returned.map(|message| {
            message
                .delivery
                .properties
                .message_id()
                .as_ref()
                .map(|id| id.as_str().to_owned())
        });
        let mut book = self.returns.lock().unwrap_or_else(PoisonError::into_inner);
        verdict(acked, returned_id, message_id, &mut book)
    }

    /// A timed-out publish dropped its confirm; lapin keeps such confirms until someone
    /// waits for all confirms. Do that in the background (once at a time) so they do not
    /// pile up while the channel lives on.
    fn drain_abandoned_confirms(self: &Arc<Self>, patience: Duration) {
        if self.draining.swap(true, Ordering::AcqRel) {
            return;
        }
        let live = Arc::clone(self);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(patience, live.channel.wait_for_confirms()).await;
            live.draining.store(false, Ordering::Release);
        });
    }
}

fn broker_error(error: lapin::Error) -> PublishError {
    PublishError::Broker(error.to_string())
}

/// Returned-message ids seen on one channel whose owner has not claimed them yet.
#[derive(Debug, Default)]
struct ReturnBook {
    ids: HashMap<String, u32>,
}

impl ReturnBook {
    fn record(&mut self, id: String) {
        if self.ids.len() >= RETURN_BOOK_CAP {
            self.ids.clear();
        }
        *self.ids.entry(id).or_default() += 1;
    }

    fn claim(&mut self, id: &str) -> bool {
        match self.ids.get_mut(id) {
            Some(count) if *count > 1 => {
                *count -= 1;
                true
            }
            Some(_) => {
                self.ids.remove(id);
                true
            }
            None => false,
        }
    }
}

/// Whether a confirmed publish of `own_id` counts as published. `returned` is the message id
/// of the returned message lapin attached to this confirm, if it attached one (`Some(None)`:
/// a returned message without id).
fn verdict(
    acked: bool,
    returned: Option<Option<String>>,
    own_id: &str,
    book: &mut ReturnBook,
) -> Result<(), PublishError> {
    let returned = match returned {
        None => book.claim(own_id),
        Some(Some(id)) if id == own_id => true,
        Some(other) => {
            // Someone else's return: record it for its owner, and distrust our own routing.
            if let Some(id) = other {
                book.record(id);
            }
            book.claim(own_id);
            true
        }
    };
    if !acked {
        Err(PublishError::Nacked)
    } else if returned {
        Err(PublishError::Returned)
    } else {
        Ok(())
    }
}

impl Publisher {
    /// Starts the background supervisor and returns at once, connected or not. The supervisor
    /// connects (exponential backoff with jitter between `reconnect_min` and `reconnect_max`,
    /// each failure logged at `warn` with the password-free address), opens a channel,
    /// enables publisher confirms, declares the topology, and starts over by itself whenever
    /// the connection or channel dies. A refused connection is retried after
    /// `reconnect_min`, then 2×, 4×… that.
    ///
    /// Must be called within a tokio runtime (the supervisor is spawned on it); outside one it
    /// logs an error and the publisher never connects.
    pub fn start(config: BusConfig) -> Self {
        let topology = Topology::new(config.prefix.clone());
        let shared = Arc::new(Shared {
            address: redact_url(config.url.expose_secret()),
            forward: topology.forward_route(),
            topology,
            config,
            live: RwLock::new(None),
            connected: watch::Sender::new(false),
            trouble: tokio::sync::Notify::new(),
            redeclare: tokio::sync::Notify::new(),
            shutdown: watch::Sender::new(false),
            closing: AtomicBool::new(false),
            in_flight: watch::Sender::new(0),
            supervisor: Mutex::new(None),
        });
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let task = runtime.spawn(supervise(Arc::clone(&shared)));
                *shared
                    .supervisor
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(task);
            }
            Err(_) => log::error!(
                "Publisher::start for {} was called outside a tokio runtime; it will never connect",
                shared.address
            ),
        }
        Self {
            _handle: Arc::new(HandleGuard(Arc::clone(&shared))),
            shared,
        }
    }

    /// Whether a confirmed channel is usable right now (connected, confirm mode on, not
    /// blocked by a broker resource alarm, not closing). Cheap: reads local state only.
    pub fn is_connected(&self) -> bool {
        !self.shared.closing.load(Ordering::SeqCst) && self.shared.current().is_some()
    }

    /// Waits until [`Publisher::is_connected`] or until `timeout` has passed; returns which.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changes = self.shared.connected.subscribe();
        loop {
            if self.is_connected() {
                return true;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return false;
            }
            // Woken by the supervisor's changes; the short cap also catches state that only
            // lapin knows about (e.g. blocked → unblocked).
            let nap = (deadline - now).min(Duration::from_millis(50));
            let _ = tokio::time::timeout(nap, changes.changed()).await;
        }
    }

    /// Publishes one chunk to the events exchange with routing key `forward`: persistent,
    /// mandatory, `content_type` `application/json`, `message_id` = the chunk id, `app_id`
    /// [`APP_ID`], `timestamp` now. `Ok` only when the broker acked it and did not return it
    /// as unroutable; then the chunk may be marked `published`.
    ///
    /// Fails at once with [`PublishError::NotConnected`] when there is no usable channel;
    /// otherwise waits at most `confirm_timeout` in total. Any `Err` means "leave the chunk to
    /// the relay".
    pub async fn publish(&self, envelope: &Envelope) -> Result<(), PublishError> {
        let route = self.shared.forward.clone();
        self.publish_with(&route, envelope, FieldTable::default())
            .await
    }

    /// Like [`Self::publish`], to any route and with extra headers (the forwarder uses it for
    /// the retry queues, with an attempt counter, and for parking, with the reason).
    pub async fn publish_with(
        &self,
        route: &Route,
        envelope: &Envelope,
        headers: FieldTable,
    ) -> Result<(), PublishError> {
        let payload = envelope
            .try_encode()
            .map_err(|e| PublishError::Broker(format!("cannot encode the envelope: {e}")))?;
        self.publish_bytes(route, &payload, &envelope.chunk_id.to_string(), headers)
            .await
    }

    /// Publishes any payload (the forwarder parks undecodable messages as they came), with
    /// the same persistence, confirm and return handling as [`Self::publish`]. `message_id`
    /// identifies it in returns.
    pub async fn publish_bytes(
        &self,
        route: &Route,
        payload: &[u8],
        message_id: &str,
        headers: FieldTable,
    ) -> Result<(), PublishError> {
        let shared = &self.shared;
        // Count first, then check `closing`: `close` waits for every publish counted before
        // it set the flag, and every later one sees the flag.
        let _in_flight = InFlight::enter(&shared.in_flight);
        if shared.closing.load(Ordering::SeqCst) {
            return Err(PublishError::NotConnected);
        }
        let live = shared.current().ok_or(PublishError::NotConnected)?;
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            // Persistent: written to disk by the queue before the confirm.
            .with_delivery_mode(2)
            .with_message_id(message_id.into())
            .with_app_id(APP_ID.into())
            .with_timestamp(unix_seconds())
            .with_headers(headers);

        let timeout = shared.config.confirm_timeout;
        let outcome = tokio::time::timeout(
            timeout,
            live.publish(route, payload, properties, message_id),
        )
        .await;
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(PublishError::Returned)) => {
                shared.redeclare.notify_one();
                Err(PublishError::Returned)
            }
            Ok(Err(error)) => {
                shared.trouble.notify_one();
                Err(error)
            }
            Err(_elapsed) => {
                live.drain_abandoned_confirms(timeout.saturating_mul(12));
                shared.trouble.notify_one();
                Err(PublishError::ConfirmTimeout)
            }
        }
    }

    /// Graceful shutdown: refuses new publishes, waits (at most `confirm_timeout` + 1 s) for
    /// the ones in flight to get their confirms, then closes the connection and stops the
    /// supervisor. Afterwards every publish fails with [`PublishError::NotConnected`]. Affects
    /// all clones; calling it again does nothing.
    pub async fn close(&self) {
        let shared = &self.shared;
        shared.closing.store(true, Ordering::SeqCst);
        let mut in_flight = shared.in_flight.subscribe();
        let patience = shared.config.confirm_timeout + Duration::from_secs(1);
        let _ = tokio::time::timeout(patience, in_flight.wait_for(|n| *n == 0)).await;
        shared.shutdown.send_replace(true);
        let task = shared
            .supervisor
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(CONNECT_TIMEOUT, task).await;
        }
        shared.set_live(None);
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

type Events = Pin<Box<dyn Stream<Item = lapin::Event> + Send>>;

/// Why a connection stopped being used.
enum Lost {
    Shutdown,
    Failed(String),
}

/// The reconnect loop: runs until shutdown.
async fn supervise(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut failures: u32 = 0;
    loop {
        if *shutdown.borrow() {
            break;
        }
        let attempt = tokio::select! {
            attempt = establish(&shared) => attempt,
            () = stopped(&mut shutdown) => break,
        };
        match attempt {
            Ok((live, events)) => {
                failures = 0;
                log::info!(
                    "RabbitMQ publisher connected to {} (topology {:?} declared, confirms on)",
                    shared.address,
                    shared.topology.prefix()
                );
                shared.set_live(Some(Arc::clone(&live)));
                let lost = watch_until_lost(&shared, &live, events, &mut shutdown).await;
                shared.set_live(None);
                match lost {
                    Lost::Shutdown => {
                        close_connection(&shared, &live).await;
                        break;
                    }
                    Lost::Failed(why) => log::warn!(
                        "RabbitMQ publisher lost its connection to {}: {why}; reconnecting",
                        shared.address
                    ),
                }
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                log::warn!(
                    "RabbitMQ publisher cannot connect to {} (attempt {failures}): {}",
                    shared.address,
                    describe_without_address(&error)
                );
            }
        }
        let config = &shared.config;
        let delay = reconnect_delay(
            failures,
            config.reconnect_min.max(MIN_RECONNECT_DELAY),
            config.reconnect_max.max(MIN_RECONNECT_DELAY),
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stopped(&mut shutdown) => break,
        }
    }
    shared.set_live(None);
}

/// Resolves once shutdown was requested (the guard `wait_for` returns is not `Send`: drop it
/// here).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// The error text without the address (the log line already names it).
fn describe_without_address(error: &BusError) -> String {
    match error {
        BusError::Connect { source, .. } => source.to_string(),
        BusError::ConnectTimeout { after, .. } => format!("no answer within {after:?}"),
        BusError::Certificate {
            reason, trusted, ..
        } => format!("TLS certificate rejected: {reason}; trusted: {trusted}"),
        other => other.to_string(),
    }
}

/// Connect, open a confirmed channel, declare the topology.
async fn establish(shared: &Shared) -> Result<(Arc<Live>, Events), BusError> {
    let config = &shared.config;
    let connection = connect_named(&config.url, config.ca_file.as_deref(), CONNECTION_NAME).await?;
    // Listen before anything can fail: lapin only emits events while someone listens.
    let events: Events = Box::pin(connection.events_listener());
    let setup = async {
        let channel = connection
            .create_channel()
            .await
            .map_err(BusError::amqp("open a channel"))?;
        channel
            .confirm_select(ConfirmSelectOptions {
                // Wait for select-ok: a publish before it would not be confirmed.
                nowait: false,
            })
            .await
            .map_err(BusError::amqp("enable publisher confirms"))?;
        declare_topology(&channel, &shared.topology).await?;
        Ok::<_, BusError>(channel)
    };
    let channel = tokio::time::timeout(CONNECT_TIMEOUT, setup)
        .await
        .map_err(|_| BusError::ConnectTimeout {
            address: shared.address.clone(),
            after: CONNECT_TIMEOUT,
        })??;
    let live = Live {
        connection,
        channel,
        send_order: tokio::sync::Mutex::new(()),
        returns: Mutex::new(ReturnBook::default()),
        draining: AtomicBool::new(false),
    };
    Ok((Arc::new(live), events))
}

/// Returns when the connection or channel is no longer usable, or on shutdown.
async fn watch_until_lost(
    shared: &Shared,
    live: &Live,
    mut events: Events,
    shutdown: &mut watch::Receiver<bool>,
) -> Lost {
    let mut poll = tokio::time::interval(HEALTH_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_redeclare: Option<Instant> = None;
    loop {
        tokio::select! {
            biased;
            () = stopped(shutdown) => return Lost::Shutdown,
            event = events.next() => match event {
                Some(lapin::Event::Error(error)) => return Lost::Failed(error.to_string()),
                Some(lapin::Event::ConnectionBlocked(reason)) => log::warn!(
                    "RabbitMQ at {} blocked publishing ({reason}); publishes fail until it unblocks",
                    shared.address
                ),
                Some(lapin::Event::ConnectionUnblocked) => {
                    log::info!("RabbitMQ at {} unblocked publishing", shared.address);
                }
                Some(_) => {}
                None => return Lost::Failed("the connection's event stream ended".to_owned()),
            },
            () = shared.redeclare.notified() => {
                if last_redeclare.is_none_or(|at| at.elapsed() >= REDECLARE_MIN_INTERVAL) {
                    last_redeclare = Some(Instant::now());
                    log::warn!(
                        "RabbitMQ at {} returned a chunk as unroutable; re-declaring topology {:?}",
                        shared.address,
                        shared.topology.prefix()
                    );
                    let declared = tokio::time::timeout(
                        CONNECT_TIMEOUT,
                        declare_topology(&live.channel, &shared.topology),
                    )
                    .await;
                    match declared {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => {
                            return Lost::Failed(format!("re-declaring the topology failed: {error}"));
                        }
                        Err(_) => {
                            return Lost::Failed("re-declaring the topology timed out".to_owned());
                        }
                    }
                }
            }
            () = shared.trouble.notified() => {}
            _ = poll.tick() => {}
        }
        let connection = live.connection.status();
        if !connection.connected() || !live.channel.status().connected() {
            return Lost::Failed(live.describe_state());
        }
        // Wake `wait_connected` callers when blocked/unblocked flips.
        shared.connected.send_replace(live.usable());
    }
}

async fn close_connection(shared: &Shared, live: &Live) {
    let closed = tokio::time::timeout(
        CONNECT_TIMEOUT,
        live.connection.close(200, "publisher closed".into()),
    )
    .await;
    match closed {
        Ok(Ok(())) => log::info!(
            "RabbitMQ publisher closed its connection to {}",
            shared.address
        ),
        Ok(Err(error)) => log::debug!("closing the RabbitMQ connection: {error}"),
        Err(_) => log::debug!("closing the RabbitMQ connection timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_the_config_hides_the_password() {
        let config = BusConfig {
            ca_file: Some("/etc/rabbit/ca.pem".into()),
            ..BusConfig::new("amqps://user:hunter2@rabbit:5671/%2f", "p")
        };
        let text = format!("{config:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("user:***@rabbit:5671"), "{text}");
        assert!(text.contains("/etc/rabbit/ca.pem"), "{text}");
    }

    #[test]
    fn verdicts_follow_ack_and_returns() {
        // (acked, returned id attached to this confirm, ids already in the book, verdict)
        type Case = (
            bool,
            Option<Option<&'static str>>,
            &'static [&'static str],
            Result<(), PublishError>,
        );
        let cases: [Case; 9] = [
            (true, None, &[], Ok(())),
            (false, None, &[], Err(PublishError::Nacked)),
            (true, Some(Some("7")), &[], Err(PublishError::Returned)),
            (false, Some(Some("7")), &[], Err(PublishError::Nacked)),
            // Our return was attached to another publish's confirm, which recorded it.
            (true, None, &["7"], Err(PublishError::Returned)),
            (true, None, &["8"], Ok(())),
            // We hold another chunk's return: routing was in flux, err on the safe side.
            (true, Some(Some("8")), &[], Err(PublishError::Returned)),
            (true, Some(None), &[], Err(PublishError::Returned)),
            (false, None, &["7"], Err(PublishError::Nacked)),
        ];
        for (acked, returned, book_ids, want) in cases {
            let mut book = ReturnBook::default();
            for id in book_ids {
                book.record((*id).to_owned());
            }
            let got = verdict(
                acked,
                returned.map(|r| r.map(str::to_owned)),
                "7",
                &mut book,
            );
            assert_eq!(got, want, "{acked} {returned:?} {book_ids:?}");
            assert!(!book.ids.contains_key("7"), "own id must be claimed");
        }
    }

    #[test]
    fn foreign_returns_are_kept_for_their_owner() {
        let mut book = ReturnBook::default();
        let _ = verdict(true, Some(Some("8".to_owned())), "7", &mut book);
        assert_eq!(
            verdict(true, None, "8", &mut book),
            Err(PublishError::Returned)
        );
        assert_eq!(verdict(true, None, "8", &mut book), Ok(()));
    }

    #[test]
    fn the_return_book_is_bounded() {
        let mut book = ReturnBook::default();
        for i in 0..(RETURN_BOOK_CAP * 2 + 5) {
            book.record(i.to_string());
        }
        assert!(book.ids.len() <= RETURN_BOOK_CAP);
    }
}
