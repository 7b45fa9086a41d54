//! What the mock received: counters, duplicate detection and (optionally) the events.
//!
//! Built for benchmark rates: request counters are atomics, and an accepted request takes one
//! short lock to count its events, look their 64-bit hashes up in a set (whole events are not
//! kept for de-duplication) and, when recording, append them. Hashing happens before the lock.

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasherDefault, DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use interaction_core::Interaction;
use serde::{Deserialize, Serialize};

/// Counts since start (or the last reset), as `GET /stats` returns them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Requests to `POST /interactions`, whatever their outcome.
    pub requests: u64,
    /// Events accepted (in 200 responses).
    pub received: u64,
    /// Accepted events not identical to any accepted before.
    pub unique: u64,
    /// Accepted events identical to one accepted before.
    pub duplicates: u64,
    /// Requests answered 4xx (invalid, unauthorized, wrong content type, rejected assets).
    pub rejected_requests: u64,
    /// Requests answered with an injected failure (500, 503, 429).
    pub failed_requests: u64,
    /// Accepted events by the `X-Tenant` request header (`""` when absent).
    pub by_tenant: BTreeMap<String, u64>,
    /// Accepted events by `Authorization` header, the secret masked (`"Bearer abc…"`; `""`
    /// when absent).
    pub by_auth: BTreeMap<String, u64>,
}

/// The `Authorization` value as shown in [`Stats::by_auth`]: the scheme and the first three
/// characters of the secret, then `…`.
pub fn mask_authorization(value: &str) -> String {
    let value = value.trim();
    if value.is_empty() {
        return String::new();
    }
    let (scheme, secret) = match value.split_once(' ') {
        Some((scheme, secret)) => (Some(scheme), secret.trim_start()),
        None => (None, value),
    };
    let shown: String = secret.chars().take(3).collect();
    match scheme {
        Some(scheme) => format!("{scheme} {shown}…"),
        None => format!("{shown}…"),
    }
}

/// The identity of an event for duplicate detection: a 64-bit hash of every field.
pub(crate) fn event_hash(event: &Interaction) -> u64 {
    // DefaultHasher::new() has fixed keys: the same event always hashes the same.
    let mut hasher = DefaultHasher::new();
    event.timestamp.hash(&mut hasher);
    event.subscriber.hash(&mut hasher);
    event.asset_id.hash(&mut hasher);
    event.interaction.hash(&mut hasher);
    event.rating_equivalent.to_bits().hash(&mut hasher);
    event.comment.hash(&mut hasher);
    event.context_id.hash(&mut hasher);
    event.setting.device.hash(&mut hasher);
    hasher.finish()
}

/// A hasher for keys that are hashes already.
#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type HashSet64 = HashSet<u64, BuildHasherDefault<PreHashed>>;

#[derive(Default)]
struct Accepted {
    received: u64,
    unique: u64,
    duplicates: u64,
    by_tenant: BTreeMap<String, u64>,
    by_auth: BTreeMap<String, u64>,
    seen: HashSet64,
    events: Vec<Interaction>,
}

/// The mock's record of what it received.
pub(crate) struct Recorder {
    record_events: bool,
    requests: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
    accepted: Mutex<Accepted>,
}

impl Recorder {
    /// An empty record; `record_events` keeps every accepted event for [`Self::events`].
    pub(crate) fn new(record_events: bool) -> Self {
        Self {
            record_events,
            requests: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            accepted: Mutex::new(Accepted::default()),
        }
    }

    fn accepted(&self) -> MutexGuard<'_, Accepted> {
        // Counters stay meaningful even if a panic interrupted an update.
        self.accepted.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a request to `POST /interactions`.
    pub(crate) fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request answered 4xx.
    pub(crate) fn rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request answered with an injected failure.
    pub(crate) fn failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    /// Records the events of a request answered 200.
    pub(crate) fn accept(&self, events: Vec<Interaction>, tenant: &str, auth: &str) {
        let hashes: Vec<u64> = events.iter().map(event_hash).collect();
        let count = events.len() as u64;
        let mut accepted = self.accepted();
        let fresh = hashes
            .into_iter()
            .filter(|hash| accepted.seen.insert(*hash))
            .count() as u64;
        accepted.received += count;
        accepted.unique += fresh;
        accepted.duplicates += count - fresh;
        add(&mut accepted.by_tenant, tenant, count);
        add(&mut accepted.by_auth, auth, count);
        if self.record_events {
            accepted.events.extend(events);
        }
    }

    /// The counts so far.
    pub(crate) fn stats(&self) -> Stats {
        let accepted = self.accepted();
        Stats {
            requests: self.requests.load(Ordering::Relaxed),
            received: accepted.received,
            unique: accepted.unique,
            duplicates: accepted.duplicates,
            rejected_requests: self.rejected.load(Ordering::Relaxed),
            failed_requests: self.failed.load(Ordering::Relaxed),
            by_tenant: accepted.by_tenant.clone(),
            by_auth: accepted.by_auth.clone(),
        }
    }

    /// The accepted events, in arrival order (empty unless recording).
    pub(crate) fn events(&self) -> Vec<Interaction> {
        self.accepted().events.clone()
    }

    /// Forgets everything: counts, seen hashes and recorded events.
    pub(crate) fn reset(&self) {
        let mut accepted = self.accepted();
        *accepted = Accepted::default();
        self.requests.store(0, Ordering::Relaxed);
        self.rejected.store(0, Ordering::Relaxed);
        self.failed.store(0, Ordering::Relaxed);
    }
}

fn add(counts: &mut BTreeMap<String, u64>, key: &str, n: u64) {
    match counts.get_mut(key) {
        Some(count) => *count += n,
        None => {
            counts.insert(key.to_owned(), n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(asset: &str) -> Interaction {
        serde_json::from_value(serde_json::json!({
            "timestamp": "2025-07-09T09:30:00Z", "subscriber": "u", "assetId": asset,
            "interaction": "select", "ratingEquivalent": 0.25, "setting": {"device": "web"}
        }))
        .unwrap()
    }

    #[test]
    fn secrets_are_masked_to_three_characters() {
        let table = [
            ("Bearer abcdef123", "Bearer abc…"),
            ("Bearer ab", "Bearer ab…"),
            ("Basic  dXNlcjpw", "Basic dXN…"),
            ("rawtoken", "raw…"),
            ("Bearer ünïcödé", "Bearer ünï…"),
            ("", ""),
        ];
        for (header, shown) in table {
            assert_eq!(mask_authorization(header), shown, "{header}");
        }
    }

    #[test]
    fn identical_events_hash_alike_and_any_field_changes_the_hash() {
        let a = event("a1");
        assert_eq!(event_hash(&a), event_hash(&a.clone()));
        let mut rated = a.clone();
        rated.rating_equivalent = 0.5;
        let mut commented = a.clone();
        commented.comment = Some("c".into());
        for other in [event("a2"), rated, commented] {
            assert_ne!(event_hash(&a), event_hash(&other));
        }
    }

    #[test]
    fn duplicates_are_counted_per_event_and_reset_forgets_them() {
        let recorder = Recorder::new(true);
        recorder.request();
        recorder.accept(
            vec![event("a"), event("b"), event("a")],
            "acme",
            "Bearer k…",
        );
        recorder.request();
        recorder.accept(vec![event("b")], "", "");
        let stats = recorder.stats();
        assert_eq!(
            (
                stats.requests,
                stats.received,
                stats.unique,
                stats.duplicates
            ),
            (2, 4, 2, 2)
        );
        assert_eq!(
            stats.by_tenant,
            BTreeMap::from([("".into(), 1), ("acme".into(), 3)])
        );
        assert_eq!(recorder.events().len(), 4);
        recorder.reset();
        assert_eq!(recorder.stats(), Stats::default());
        assert!(recorder.events().is_empty());
        recorder.accept(vec![event("a")], "", "");
        assert_eq!(recorder.stats().unique, 1);
    }

    #[test]
    fn events_are_kept_only_when_recording() {
        let recorder = Recorder::new(false);
        recorder.accept(vec![event("a")], "", "");
        assert!(recorder.events().is_empty());
        assert_eq!(recorder.stats().received, 1);
    }
}
