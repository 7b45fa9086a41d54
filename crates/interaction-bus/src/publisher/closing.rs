//! Closing: counting publishes in flight, so that [`Publisher::close`] can refuse new ones and
//! wait for the ones under way before it closes the connection.

use super::Publisher;
use crate::connect::CONNECT_TIMEOUT;
use std::{
    sync::{PoisonError, atomic::Ordering},
    time::Duration,
};
use tokio::sync::watch;

/// Counts a publish as in flight until dropped.
pub(super) struct InFlight<'a>(&'a watch::Sender<usize>);

impl<'a> InFlight<'a> {
    pub(super) fn enter(counter: &'a watch::Sender<usize>) -> Self {
        counter.send_modify(|n| *n += 1);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Publisher {
    /// Graceful shutdown: refuses new publishes, waits (at most `confirm_timeout` + 1 s) for
    /// the ones in flight to get their confirms, then closes the connection and stops the
    /// supervisor. Afterwards every publish fails with [`crate::PublishError::NotConnected`]. Affects
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
