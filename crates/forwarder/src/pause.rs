//! Pausing consumption while the forwarder's own dependencies are away.
//!
//! **Why pause instead of handing messages back.** The forward queue is a quorum queue with a
//! delivery limit ([`interaction_bus::DELIVERY_LIMIT`]): every time a message goes back to it
//! (`basic.nack`/`basic.reject` with requeue, or a channel or consumer that closes with the
//! message unacknowledged) its delivery count rises, and past the limit the broker
//! dead-letters it to the parked queue — with no reason and no failure record. On RabbitMQ
//! 3.10 up to 4.2 *every* return counts, requeue or channel close alike (4.3 stops counting
//! `basic.nack` with requeue, not channel closes). A forwarder that requeued on every database
//! error, every 2 s, parked whole chunks after a 40 s outage.
//!
//! So when a delivery finds the database (or the publisher it needs for retries and parking)
//! away, the forwarder:
//! 1. **pauses** ([`Pause::report`]): the consumer is cancelled (`basic.cancel`), so the
//!    broker sends nothing more to this replica (another replica that is fine takes it);
//! 2. **holds** the deliveries it has, unacknowledged and not requeued: each waits where it
//!    stopped (reading state, publishing a retry, recording an outcome) and carries on from
//!    there once resumed — no Ncanto call is repeated, and no return is counted;
//! 3. **probes** ([`supervise`]) the database and the publisher with backoff
//!    ([`interaction_runtime::reconnect_delay`]) and **resumes** when both answer: held
//!    deliveries continue, the consumer is registered again.
//!
//! A held message is returned to the queue only if the consuming channel itself closes (the
//! broker restarts, the process stops, or the broker's `consumer_timeout` — 30 min by
//! default — expires for an outage longer than that): one count per such event, not one per
//! 2 s. `/health` and `/readyz` say that consumption is paused and why; each pause and resume
//! is logged once.

use std::fmt;
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// What the forwarder needs besides the broker connection it consumes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dependency {
    /// PostgreSQL: delivery state and failure records.
    Database,
    /// The confirmed publisher: retry queues and the parked queue.
    Publisher,
}

impl Dependency {
    /// Its name in logs, metrics and `/health`.
    pub fn as_str(self) -> &'static str {
        match self {
            Dependency::Database => "database",
            Dependency::Publisher => "publisher",
        }
    }
}

impl fmt::Display for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why and since when consumption is paused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paused {
    /// What is away.
    pub dependency: Dependency,
    /// The latest error seen from it.
    pub reason: String,
    /// When the pause began.
    pub since: Instant,
}

/// Whether consumption is paused, shared by the consumer loop, every delivery, the probe and
/// the admin port.
#[derive(Debug)]
pub struct Pause {
    state: watch::Sender<Option<Paused>>,
}

impl Default for Pause {
    fn default() -> Self {
        Self::new()
    }
}

impl Pause {
    /// Running (not paused).
    pub fn new() -> Self {
        Self {
            state: watch::Sender::new(None),
        }
    }

    /// `dependency` failed with `reason`: pauses, unless already paused (then only the reason
    /// shown is brought up to date). Returns true when this call paused; the state change is
    /// logged once, here.
    pub fn report(&self, dependency: Dependency, reason: impl fmt::Display) -> bool {
        let reason = reason.to_string();
        let mut paused_now = false;
        self.state.send_if_modified(|state| match state {
            Some(paused) => {
                let changed = paused.dependency != dependency || paused.reason != reason;
                paused.dependency = dependency;
                paused.reason = reason.clone();
                changed
            }
            None => {
                *state = Some(Paused {
                    dependency,
                    reason: reason.clone(),
                    since: Instant::now(),
                });
                paused_now = true;
                true
            }
        });
        if paused_now {
            log::warn!(
                "consumption paused: the {dependency} is unavailable ({reason}); deliveries in \
                 hand are held unacknowledged until it is back"
            );
            metrics::counter!("forwarder_pauses_total", "dependency" => dependency.as_str())
                .increment(1);
            metrics::gauge!("forwarder_consumption_paused").set(1.0);
        }
        paused_now
    }

    /// Resumes; returns how long the pause lasted, or `None` when not paused. Logged once.
    pub fn resume(&self) -> Option<Duration> {
        let paused = self.state.send_replace(None)?;
        let lasted = paused.since.elapsed();
        log::info!(
            "consumption resumed after {lasted:.1?}: the database and the publisher answer again \
             (paused because the {} was unavailable)",
            paused.dependency
        );
        metrics::gauge!("forwarder_consumption_paused").set(0.0);
        Some(lasted)
    }

    /// The pause in force, if any.
    pub fn current(&self) -> Option<Paused> {
        self.state.borrow().clone()
    }

    /// Whether consumption is paused.
    pub fn is_paused(&self) -> bool {
        self.state.borrow().is_some()
    }

    /// Notified of every change.
    pub fn subscribe(&self) -> watch::Receiver<Option<Paused>> {
        self.state.subscribe()
    }

    /// Waits until not paused: at once when running, whatever `halt` says; false if `halt`
    /// turns true while paused (then the caller gives up and holds nothing any more).
    pub async fn wait_running(&self, halt: &mut watch::Receiver<bool>) -> bool {
        let mut state = self.state.subscribe();
        let halted = async {
            // A halt whose sender is gone can never be raised: wait for the resume alone.
            if halt.wait_for(|halted| *halted).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        // Running wins over halted: a delivery that can go on (a graceful stop) finishes.
        tokio::select! {
            biased;
            running = state.wait_for(Option::is_none) => running.is_ok(),
            _ = halted => false,
        }
    }
}

/// How [`supervise`] paces its probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeBackoff {
    /// Delay before the first probe of a pause.
    pub min: Duration,
    /// Longest delay between probes.
    pub max: Duration,
    /// A pause that begins this soon after a resume continues the previous backoff instead of
    /// starting over: a dependency that answers probes but fails real work (a queue that was
    /// deleted, say) is then retried ever more slowly, not four times a second.
    pub flap_window: Duration,
}

impl Default for ProbeBackoff {
    fn default() -> Self {
        Self {
            min: Duration::from_millis(250),
            max: Duration::from_secs(5),
            flap_window: Duration::from_secs(30),
        }
    }
}

/// While paused, calls `probe` with backoff and resumes once it succeeds; returns when `stop`
/// turns true. `probe` checks every [`Dependency`] and names the first one still away.
pub async fn supervise<F>(
    pause: &Pause,
    backoff: ProbeBackoff,
    probe: impl Fn() -> F,
    mut stop: watch::Receiver<bool>,
) where
    F: Future<Output = Result<(), (Dependency, String)>>,
{
    let mut state = pause.subscribe();
    // Probes of the previous pause, and when it ended.
    let mut previous = (0u32, None::<Instant>);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            changed = state.wait_for(Option::is_some) => if changed.is_err() { return },
        }
        let mut probes = match previous {
            (count, Some(resumed)) if resumed.elapsed() < backoff.flap_window => count,
            _ => 0,
        };
        loop {
            probes = probes.saturating_add(1);
            let delay = interaction_runtime::reconnect_delay(probes, backoff.min, backoff.max);
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(delay) => {}
            }
            match probe().await {
                Ok(()) => {
                    pause.resume();
                    previous = (probes, Some(Instant::now()));
                    break;
                }
                Err((dependency, reason)) => {
                    pause.report(dependency, reason);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn a_pause_begins_once_keeps_the_latest_reason_and_ends_once() {
        let pause = Pause::new();
        assert!(!pause.is_paused());
        assert_eq!(pause.resume(), None, "nothing to resume");
        // (report, paused by this call, dependency and reason shown after)
        let table = [
            (
                (Dependency::Database, "closed"),
                true,
                (Dependency::Database, "closed"),
            ),
            (
                (Dependency::Database, "refused"),
                false,
                (Dependency::Database, "refused"),
            ),
            (
                (Dependency::Publisher, "not connected"),
                false,
                (Dependency::Publisher, "not connected"),
            ),
        ];
        for ((dependency, reason), paused_now, shown) in table {
            assert_eq!(pause.report(dependency, reason), paused_now, "{reason}");
            let current = pause.current().unwrap();
            assert_eq!((current.dependency, current.reason.as_str()), shown);
        }
        assert!(pause.resume().is_some());
        assert!(!pause.is_paused());
        assert!(pause.report(Dependency::Publisher, "again"), "a new pause");
    }

    #[tokio::test]
    async fn waiting_ends_on_resume_or_on_halt() {
        let pause = Arc::new(Pause::new());
        let (halt, mut halted) = watch::channel(false);
        assert!(pause.wait_running(&mut halted).await, "not paused: at once");
        pause.report(Dependency::Database, "down");
        let waiter = {
            let pause = pause.clone();
            let mut halted = halted.clone();
            tokio::spawn(async move { pause.wait_running(&mut halted).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        pause.resume();
        assert!(waiter.await.unwrap());
        pause.report(Dependency::Database, "down again");
        halt.send_replace(true);
        assert!(
            !pause.wait_running(&mut halted).await,
            "halted while paused"
        );
        pause.resume();
        assert!(
            pause.wait_running(&mut halted).await,
            "running: a halt does not stop a delivery that can go on"
        );
    }

    #[tokio::test]
    async fn the_supervisor_probes_until_the_dependencies_answer_then_resumes() {
        let pause = Arc::new(Pause::new());
        let probes = Arc::new(AtomicU32::new(0));
        let (stop, stopped) = watch::channel(false);
        let backoff = ProbeBackoff {
            min: Duration::from_millis(1),
            max: Duration::from_millis(5),
            flap_window: Duration::from_secs(30),
        };
        let supervisor = {
            let (pause, probes) = (pause.clone(), probes.clone());
            tokio::spawn(async move {
                let probe = || {
                    // Away for three probes, then back.
                    let result = match probes.fetch_add(1, Ordering::SeqCst) {
                        0..=2 => Err((Dependency::Database, "still down".to_owned())),
                        _ => Ok(()),
                    };
                    std::future::ready(result)
                };
                supervise(&pause, backoff, probe, stopped).await;
            })
        };
        pause.report(Dependency::Publisher, "closed");
        let mut running = watch::channel(false).1;
        tokio::time::timeout(Duration::from_secs(5), pause.wait_running(&mut running))
            .await
            .expect("resumed");
        assert_eq!(probes.load(Ordering::SeqCst), 4);
        stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), supervisor)
            .await
            .expect("the supervisor stops")
            .unwrap();
    }
}
