//! The confirmed publisher ingest-api hands committed chunks to.
//!
//! One room per concern: `config` (how to reach the broker, how patient to be), `supervisor`
//! (the connection's life: connect, declare, watch, reconnect), `confirm` (publishing on the
//! shared channel), `returns` (judging each confirm, returns included) and `closing`
//! (counting publishes in flight so that `close` can wait for them). This file holds the
//! handle they hang off.
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
//! confirm it resolves, which under a multiple ack (or acks out of order) may belong to
//! another in-flight publish. So no publish judges its own confirm: one task per channel
//! (`returns::Judge`) owns them all, notes every return by its `message_id` (the chunk id),
//! and judges a confirm only once every confirm that could hold its return has been looked
//! at. A return of its own chunk, wherever lapin put it, means
//! [`crate::PublishError::Returned`]; holding another chunk's return also counts as returned
//! (routing was changing while it was in flight; erring that way only causes a duplicate,
//! never a lost chunk). An unroutable publish also makes the supervisor re-declare the
//! topology (at most once a second), so a deleted forward queue comes back by itself.

mod closing;
mod config;
mod confirm;
mod returns;
mod supervisor;

pub use config::BusConfig;

use crate::{
    connect::redact_url,
    topology::{Route, Topology},
};
use confirm::Live;
use secrecy::ExposeSecret;
use std::{
    fmt,
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};
use tokio::{sync::watch, task::JoinHandle};

/// The `app_id` property of every message we publish (shows in the management UI and lets
/// consumers tell our messages from re-driven or hand-made ones).
pub const APP_ID: &str = "interaction-logger";

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
                let task = runtime.spawn(supervisor::supervise(Arc::clone(&shared)));
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
}
