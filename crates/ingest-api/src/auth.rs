//! Who may call, and how much: API keys (which tenant a request belongs to) and the rate
//! limits that make abuse cost the abuser.
//!
//! Keys are compared in constant time on their SHA-256 digests, so neither the content nor
//! the length of a stored key leaks through response timing; every stored key is compared on
//! every lookup for the same reason.
//!
//! Two limits, both per instance: **events** per second per API key (a request of 500 events
//! costs 500, so batching does not dodge it and one huge request cannot pass as one), checked
//! once the body is read and before anything is stored — a request over the limit is refused
//! whole; and **requests** per second per client address, checked before the key and the
//! body are even looked at, so one address cannot take a whole key's share (an app's key is
//! shared by every install of the app).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// A tenant's name, shared cheaply between requests.
pub type Tenant = Arc<str>;

/// The configured keys.
#[derive(Clone)]
pub struct ApiKeys {
    keys: Vec<([u8; 32], Tenant)>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tenants only: keys are secrets.
        let tenants: Vec<&str> = self.keys.iter().map(|(_, t)| t.as_ref()).collect();
        f.debug_struct("ApiKeys")
            .field("tenants", &tenants)
            .finish()
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl ApiKeys {
    /// Parses `tenant:key,tenant:key`. A tenant may have several keys (for rotation); a key
    /// may belong to one tenant only.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut keys: Vec<([u8; 32], Tenant)> = Vec::new();
        for (n, pair) in text.split(',').map(str::trim).enumerate() {
            if pair.is_empty() {
                continue;
            }
            let Some((tenant, key)) = pair.split_once(':') else {
                return Err(format!(
                    "API_KEYS entry {} is not tenant:key (the key is not shown)",
                    n + 1
                ));
            };
            let (tenant, key) = (tenant.trim(), key.trim());
            if tenant.is_empty() || key.is_empty() {
                return Err(format!(
                    "API_KEYS entry {} has an empty tenant or key",
                    n + 1
                ));
            }
            if !tenant
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
            {
                return Err(format!(
                    "API_KEYS tenant {tenant:?} may contain only ASCII letters, digits, '_', '-' and '.'"
                ));
            }
            let hash = digest(key);
            if keys.iter().any(|(h, _)| *h == hash) {
                return Err(format!(
                    "API_KEYS entry {} repeats a key already given; each key must be unique",
                    n + 1
                ));
            }
            keys.push((hash, Arc::from(tenant)));
        }
        if keys.is_empty() {
            return Err("API_KEYS is empty: configure at least one tenant:key pair".to_owned());
        }
        Ok(Self { keys })
    }

    /// The position and tenant of `key`, if it is one of ours. The position identifies the
    /// key (for its rate limit) without keeping the key itself around.
    pub fn lookup(&self, key: &str) -> Option<(usize, Tenant)> {
        let presented = digest(key);
        let mut found = None;
        for (index, (hash, tenant)) in self.keys.iter().enumerate() {
            if bool::from(hash.ct_eq(&presented)) {
                found = Some((index, tenant.clone()));
            }
        }
        found
    }

    /// Every configured tenant, once each.
    pub fn tenants(&self) -> Vec<Tenant> {
        let mut tenants: Vec<Tenant> = self.keys.iter().map(|(_, t)| t.clone()).collect();
        tenants.sort();
        tenants.dedup();
        tenants
    }
}

/// The key a request presents: `X-API-Key`, or `Authorization: Bearer <key>`.
pub fn presented_key(req: &actix_web::HttpRequest) -> Option<&str> {
    let headers = req.headers();
    if let Some(key) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(key.trim());
    }
    let auth = headers
        .get(actix_web::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = auth.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Settings of [`RateLimits`]; a rate of 0 turns that limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Events per second per API key.
    pub events_per_second: u32,
    /// Events a key may send at once above the steady rate.
    pub events_burst: u32,
    /// Requests per second per client address.
    pub address_requests_per_second: u32,
    /// Requests an address may send at once above the steady rate.
    pub address_burst: u32,
    /// Proxies in front of the service that append to `X-Forwarded-For` (0: none; the peer
    /// address is the client's). Only the entry the nearest trusted proxy wrote is believed:
    /// anything further left is whatever the client chose to send.
    pub trusted_proxy_hops: usize,
}

/// The limiters of [`RateLimitConfig`].
pub struct RateLimits {
    events: Option<DefaultKeyedRateLimiter<usize>>,
    events_burst: u32,
    addresses: Option<DefaultKeyedRateLimiter<IpAddr>>,
    trusted_proxy_hops: usize,
}

fn limiter<K: std::hash::Hash + Eq + Clone>(
    rate: u32,
    burst: u32,
) -> Option<DefaultKeyedRateLimiter<K>> {
    let rate = NonZeroU32::new(rate)?;
    let burst = NonZeroU32::new(burst).unwrap_or(rate);
    Some(RateLimiter::keyed(
        Quota::per_second(rate).allow_burst(burst),
    ))
}

/// Whole seconds until `not_until`, rounded up so that a retry then is not refused again.
fn retry_after(not_until: &governor::NotUntil<<DefaultClock as Clock>::Instant>) -> u64 {
    let wait = not_until.wait_time_from(DefaultClock::default().now());
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

impl RateLimits {
    /// Builds the limiters.
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            events: limiter(config.events_per_second, config.events_burst),
            events_burst: config.events_burst.max(config.events_per_second),
            addresses: limiter(config.address_requests_per_second, config.address_burst),
            trusted_proxy_hops: config.trusted_proxy_hops,
        }
    }

    /// Counts a request from its client's address (see [`Self::client_of`]); refuses it
    /// (429, Retry-After) when the address is over its rate. With the limit off (the default)
    /// the address is not even read.
    pub fn check_request(&self, req: &actix_web::HttpRequest) -> Result<(), ApiError> {
        if self.addresses.is_none() {
            return Ok(());
        }
        self.check_address(self.client_of(req))
    }

    /// Counts a request from `address`; refuses it (429, Retry-After) when the address is
    /// over its rate.
    pub fn check_address(&self, address: Option<IpAddr>) -> Result<(), ApiError> {
        let (Some(limiter), Some(address)) = (&self.addresses, address) else {
            return Ok(());
        };
        limiter.check_key(&address).map_err(|not_until| {
            metrics::counter!("ingest_rate_limited_total", "limit" => "address").increment(1);
            ApiError::RateLimited {
                message: "too many requests from this address; slow down and batch events"
                    .to_owned(),
                retry_after: retry_after(&not_until),
            }
        })
    }

    /// Counts `events` against the key at `key_index`: all of them or none, so a request over
    /// the limit is refused whole (429) and nothing of it is stored.
    pub fn check_events(&self, key_index: usize, events: usize) -> Result<(), ApiError> {
        let Some(limiter) = &self.events else {
            return Ok(());
        };
        let Some(n) = u32::try_from(events).ok().and_then(NonZeroU32::new) else {
            return Ok(());
        };
        match limiter.check_key_n(&key_index, n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => {
                metrics::counter!("ingest_rate_limited_total", "limit" => "events").increment(1);
                Err(ApiError::RateLimited {
                    message: format!(
                        "this API key is over its rate of events; nothing of these {events} \
                         events was stored, send them again after Retry-After"
                    ),
                    retry_after: retry_after(&not_until),
                })
            }
            // More events than the burst: no wait would ever let this request through.
            Err(_) => Err(ApiError::PayloadTooLarge(format!(
                "the request carries {events} events, more than this API key may send at once \
                 ({}); send smaller batches",
                self.events_burst
            ))),
        }
    }

    /// Forgets addresses and keys whose limit is back to full: run periodically, so the
    /// memory of the limiters follows the clients active now, not every client ever seen.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.addresses {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Some(limiter) = &self.events {
            limiter.retain_recent();
        }
    }

    /// Addresses the address limiter remembers now.
    pub fn tracked_addresses(&self) -> usize {
        self.addresses.as_ref().map_or(0, |l| l.len())
    }

    /// The client address of `req` (see [`client_address`]).
    pub fn client_of(&self, req: &actix_web::HttpRequest) -> Option<IpAddr> {
        client_address(
            req.peer_addr().map(|a| a.ip()),
            req.headers()
                .get_all("x-forwarded-for")
                .filter_map(|v| v.to_str().ok()),
            self.trusted_proxy_hops,
        )
    }
}

/// The client's address: the peer's, or with `hops` trusted proxies in front, the entry of
/// `X-Forwarded-For` (all its headers, in order) that the nearest proxy wrote — the
/// `hops`-th from the right. An IPv6 address counts as its /64, the block one subscriber
/// gets, so an abuser cannot dodge the limit by rotating through it.
pub fn client_address<'a>(
    peer: Option<IpAddr>,
    forwarded_for: impl Iterator<Item = &'a str>,
    hops: usize,
) -> Option<IpAddr> {
    let address = if hops == 0 {
        peer
    } else {
        let entries: Vec<&str> = forwarded_for
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect();
        match entries.len().checked_sub(hops) {
            Some(at) => entries[at].parse().ok().or(peer),
            None => entries.first().and_then(|e| e.parse().ok()).or(peer),
        }
    };
    address.map(|address| match address {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
        v4 => v4,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_address_is_the_one_the_nearest_trusted_proxy_saw() {
        let peer: Option<IpAddr> = Some("10.0.0.9".parse().unwrap());
        // (X-Forwarded-For headers, hops, client)
        let cases: [(&[&str], usize, &str); 9] = [
            (&[], 0, "10.0.0.9"),
            (&["1.1.1.1"], 0, "10.0.0.9"), // no proxy trusted: the header is the client's
            (&["1.1.1.1"], 1, "1.1.1.1"),
            (&["6.6.6.6, 1.1.1.1"], 1, "1.1.1.1"), // the client's own entry is ignored
            (&["6.6.6.6", "1.1.1.1"], 1, "1.1.1.1"), // several headers read in order
            (&["6.6.6.6, 1.1.1.1, 10.0.0.2"], 2, "1.1.1.1"),
            (&[], 1, "10.0.0.9"),       // no header: the peer
            (&["junk"], 1, "10.0.0.9"), // unreadable: the peer
            (&["2001:db8:1:2:3:4:5:6"], 1, "2001:db8:1:2::"), // IPv6 by its /64
        ];
        for (headers, hops, want) in cases {
            let got = client_address(peer, headers.iter().copied(), hops);
            assert_eq!(got, Some(want.parse().unwrap()), "{headers:?} hops {hops}");
        }
        let mapped: IpAddr = "::ffff:1.2.3.4".parse().unwrap();
        assert_eq!(
            client_address(Some(mapped), std::iter::empty(), 0),
            Some("1.2.3.4".parse().unwrap())
        );
    }

    #[test]
    fn events_are_counted_all_or_none_and_a_request_above_the_burst_is_413() {
        let limits = RateLimits::new(RateLimitConfig {
            events_per_second: 1,
            events_burst: 100,
            address_requests_per_second: 0,
            address_burst: 0,
            trusted_proxy_hops: 0,
        });
        // (events, allowed): 60 + 40 fill the burst; 1 more is refused whole.
        for (events, allowed) in [(60, true), (41, false), (40, true), (1, false)] {
            let result = limits.check_events(0, events);
            assert_eq!(result.is_ok(), allowed, "{events}: {result:?}");
        }
        assert!(
            limits.check_events(1, 100).is_ok(),
            "another key has its own"
        );
        let error = limits.check_events(2, 101).unwrap_err();
        assert!(
            matches!(error, ApiError::PayloadTooLarge(ref m) if m.contains("more than this API key may send at once (100)")),
            "{error:?}"
        );
    }

    #[test]
    fn each_address_has_its_own_request_budget_and_idle_ones_are_forgotten() {
        let limits = RateLimits::new(RateLimitConfig {
            events_per_second: 0,
            events_burst: 0,
            address_requests_per_second: 1000,
            address_burst: 2,
            trusted_proxy_hops: 0,
        });
        let a = Some("1.1.1.1".parse().unwrap());
        let b = Some("2.2.2.2".parse().unwrap());
        assert!(limits.check_address(a).is_ok());
        assert!(limits.check_address(a).is_ok());
        let error = limits.check_address(a).unwrap_err();
        assert!(
            matches!(error, ApiError::RateLimited { retry_after: 1, .. }),
            "{error:?}"
        );
        assert!(limits.check_address(b).is_ok());
        assert_eq!(limits.tracked_addresses(), 2);
        // At 1000/s, two requests are earned back within a few milliseconds.
        let forgotten = interaction_testing_wait(|| {
            limits.forget_idle();
            limits.tracked_addresses() == 0
        });
        assert!(forgotten, "idle addresses forgotten");
        assert!(
            limits.check_address(None).is_ok(),
            "no address: not limited"
        );
    }

    /// Polls `done` every millisecond for up to 5 s.
    fn interaction_testing_wait(mut done: impl FnMut() -> bool) -> bool {
        for _ in 0..5000 {
            if done() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        false
    }

    #[test]
    fn keys_map_to_their_tenants() {
        let keys = ApiKeys::parse(" acme:k1 , globex:k2,acme:k3,").unwrap();
        let tenant = |key| keys.lookup(key).map(|(_, t)| t.to_string());
        assert_eq!(tenant("k1").as_deref(), Some("acme"));
        assert_eq!(tenant("k3").as_deref(), Some("acme"));
        assert_eq!(tenant("k2").as_deref(), Some("globex"));
        assert_eq!(tenant("k4"), None);
        assert_eq!(tenant(""), None);
        assert_eq!(tenant("k1 "), None);
        assert_eq!(
            keys.lookup("k3").map(|(i, _)| i),
            Some(2),
            "keys are told apart"
        );
        assert_eq!(keys.tenants().len(), 2);
        assert!(!format!("{keys:?}").contains("k1"));
    }

    #[test]
    fn bad_key_lists_are_refused_without_echoing_keys() {
        for (text, message) in [
            ("", "API_KEYS is empty"),
            (" , ", "API_KEYS is empty"),
            ("acme", "entry 1 is not tenant:key"),
            ("acme:", "empty tenant or key"),
            (":secret", "empty tenant or key"),
            ("a b:secret", "may contain only"),
            ("a:secret,b:secret", "entry 2 repeats a key"),
        ] {
            let error = ApiKeys::parse(text).unwrap_err();
            assert!(error.contains(message), "{text:?}: {error}");
            assert!(!error.contains("secret"), "{error}");
        }
    }

    #[test]
    fn keys_come_from_either_header() {
        use actix_web::test::TestRequest;
        let cases = [
            (vec![("X-API-Key", "k1")], Some("k1")),
            (vec![("Authorization", "Bearer k2")], Some("k2")),
            (vec![("Authorization", "bearer  k3 ")], Some("k3")),
            (vec![("Authorization", "Basic abc")], None),
            (
                vec![("X-API-Key", "k1"), ("Authorization", "Bearer k2")],
                Some("k1"),
            ),
            (vec![], None),
        ];
        for (headers, expected) in cases {
            let mut req = TestRequest::default();
            for header in &headers {
                req = req.insert_header(*header);
            }
            let req = req.to_http_request();
            assert_eq!(presented_key(&req), expected, "{headers:?}");
        }
    }
}
