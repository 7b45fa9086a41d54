//! The connection's life: connect, open a confirmed channel, declare the topology, watch, and
//! start over with backoff whenever anything breaks (see the parent module's docs for why
//! this is our own loop and not lapin's auto-recovery).

use super::{Shared, config::MIN_RECONNECT_DELAY, confirm::Live};
use crate::{
    connect::{CONNECT_TIMEOUT, connect_named},
    error::BusError,
    topology::declare_topology,
};
use futures_util::{Stream, StreamExt};
use interaction_runtime::reconnect_delay;
use lapin::options::ConfirmSelectOptions;
use std::{
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::sync::watch;

/// Connection name in the management UI.
const CONNECTION_NAME: &str = "interaction-bus publisher";
/// How often the supervisor checks the connection and channel state, in addition to lapin's
/// events (a channel the broker closes does not always produce an event).
const HEALTH_POLL: Duration = Duration::from_millis(250);
/// Least time between two topology re-declarations triggered by returned messages.
const REDECLARE_MIN_INTERVAL: Duration = Duration::from_secs(1);

type Events = Pin<Box<dyn Stream<Item = lapin::Event> + Send>>;

/// Why a connection stopped being used.
enum Lost {
    Shutdown,
    Failed(String),
}

/// The reconnect loop: runs until shutdown.
pub(super) async fn supervise(shared: Arc<Shared>) {
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
    Ok((Arc::new(Live::new(connection, channel)), events))
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
