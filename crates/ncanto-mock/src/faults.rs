//! Fault injection: what the mock should do wrong, and the pure decisions about what one
//! request gets. The forwarder's retry, parking and backoff paths are only testable if the
//! fake Ncanto can fail on demand, in the ways the real one (or the network) fails.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// The faults to inject into `POST /interactions`. All off by default.
///
/// Applied in this order, after authentication and validation: [`Outage::Error`] → 503;
/// `latency_ms`; `error_rate` → 500; `rate_limit_rate` → 429; `fail_asset_pattern` → 500;
/// `reject_asset_pattern` → 400.
/// [`Outage::Hang`] and [`Outage::Refuse`] act before anything else.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Fraction (0..=1) of requests answered 500, at random.
    pub error_rate: f64,
    /// Milliseconds added before answering (after validation).
    pub latency_ms: u64,
    /// Fraction (0..=1) of requests answered 429, at random. One roll decides both random
    /// faults: `error_rate` and `rate_limit_rate` are each a fraction of all requests (while
    /// their sum stays within 1).
    pub rate_limit_rate: f64,
    /// `Retry-After` seconds on the injected 429s (0 means 1).
    pub retry_after_secs: u64,
    /// Events whose `assetId` contains this substring are refused: the whole request is
    /// answered 400, listing the offending indexes. An empty pattern refuses nothing.
    pub reject_asset_pattern: Option<String>,
    /// Requests holding an event whose `assetId` contains this substring fail with a 500, a
    /// transient failure that lasts until the pattern is cleared: what lets a test send some
    /// events of one chunk through the retry queues while others are refused or delivered.
    /// An empty pattern fails nothing.
    pub fail_asset_pattern: Option<String>,
    /// A full outage.
    pub outage: Option<Outage>,
}

/// The kinds of full outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outage {
    /// Connections are refused: the main listener is closed (open connections are dropped),
    /// and re-opened on the same port when the outage is cleared.
    Refuse,
    /// Requests to `/interactions` are accepted and never answered — until the outage is
    /// cleared or the mock stops, when they get 503 (they are never recorded as accepted).
    Hang,
    /// Every request to `/interactions` is answered 503.
    Error,
}

/// A failure injected instead of accepting a valid request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injected {
    /// 500 Internal Server Error.
    ServerError,
    /// 429 Too Many Requests with `Retry-After: retry_after` seconds.
    RateLimited {
        /// Seconds the client is told to wait.
        retry_after: u64,
    },
}

impl Faults {
    /// Checks the fractions: each finite and within 0..=1.
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate) in [
            ("error_rate", self.error_rate),
            ("rate_limit_rate", self.rate_limit_rate),
        ] {
            if !fraction_ok(rate) {
                return Err(format!("{name} must be within 0..=1, got {rate}"));
            }
        }
        Ok(())
    }

    /// These faults with each fraction forced into 0..=1 (NaN becomes 0).
    pub fn clamped(mut self) -> Self {
        for rate in [&mut self.error_rate, &mut self.rate_limit_rate] {
            *rate = if rate.is_nan() {
                0.0
            } else {
                rate.clamp(0.0, 1.0)
            };
        }
        self
    }

    /// The `Retry-After` seconds of an injected 429.
    pub fn retry_after(&self) -> u64 {
        self.retry_after_secs.max(1)
    }

    /// The rejected-asset pattern, when there is one that can match.
    pub fn reject_pattern(&self) -> Option<&str> {
        self.reject_asset_pattern
            .as_deref()
            .filter(|pattern| !pattern.is_empty())
    }

    /// The failing-asset pattern, when there is one that can match.
    pub fn fail_pattern(&self) -> Option<&str> {
        self.fail_asset_pattern
            .as_deref()
            .filter(|pattern| !pattern.is_empty())
    }

    /// Whether a random fault may fire, i.e. whether a roll is needed at all.
    pub fn is_random(&self) -> bool {
        self.error_rate > 0.0 || self.rate_limit_rate > 0.0
    }

    /// The random fault, if any, for a request that rolled `roll` (uniform in 0..1): below
    /// `error_rate` a 500, then up to `error_rate + rate_limit_rate` a 429.
    pub fn injected(&self, roll: f64) -> Option<Injected> {
        if roll < self.error_rate {
            Some(Injected::ServerError)
        } else if roll < self.error_rate + self.rate_limit_rate {
            Some(Injected::RateLimited {
                retry_after: self.retry_after(),
            })
        } else {
            None
        }
    }
}

fn fraction_ok(rate: f64) -> bool {
    rate.is_finite() && (0.0..=1.0).contains(&rate)
}

/// A lock-free source of uniform rolls in 0..1 (splitmix64 over an atomic counter): one
/// atomic add per request, shared by every worker. Not for anything but fault injection.
#[derive(Debug)]
pub(crate) struct Dice(AtomicU64);

impl Dice {
    /// Dice starting from `seed`; the same seed gives the same rolls.
    pub(crate) fn new(seed: u64) -> Self {
        Self(AtomicU64::new(seed))
    }

    /// Dice seeded from the clock.
    pub(crate) fn from_clock() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self::new(nanos)
    }

    /// The next roll, uniform in 0..1.
    pub(crate) fn roll(&self) -> f64 {
        const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut z = self
            .0
            .fetch_add(GOLDEN_GAMMA, Ordering::Relaxed)
            .wrapping_add(GOLDEN_GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // The top 53 bits fill an f64 mantissa exactly: uniform in [0, 1).
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_deserialize_with_defaults_and_refuse_unknown_fields() {
        let faults: Faults = serde_json::from_str(r#"{"outage": "hang"}"#).unwrap();
        assert_eq!(
            faults,
            Faults {
                outage: Some(Outage::Hang),
                ..Faults::default()
            }
        );
        assert!(serde_json::from_str::<Faults>(r#"{"eror_rate": 1}"#).is_err());
        assert!(serde_json::from_str::<Faults>(r#"{"outage": "Hang"}"#).is_err());
        let all = [
            (Outage::Refuse, "refuse"),
            (Outage::Hang, "hang"),
            (Outage::Error, "error"),
        ];
        for (outage, name) in all {
            assert_eq!(serde_json::to_value(outage).unwrap(), name);
        }
    }

    #[test]
    fn validation_accepts_fractions_only() {
        let ok = [0.0, 0.5, 1.0];
        for rate in ok {
            let faults = Faults {
                error_rate: rate,
                rate_limit_rate: rate,
                ..Faults::default()
            };
            assert_eq!(faults.validate(), Ok(()), "{rate}");
        }
        for rate in [-0.1, 1.01, f64::NAN, f64::INFINITY] {
            let error = Faults {
                error_rate: rate,
                ..Faults::default()
            };
            let limit = Faults {
                rate_limit_rate: rate,
                ..Faults::default()
            };
            assert!(error.validate().is_err(), "{rate}");
            assert!(limit.validate().is_err(), "{rate}");
            assert_eq!(error.clone().clamped().validate(), Ok(()), "{rate}");
        }
    }

    #[test]
    fn one_roll_splits_between_500_and_429() {
        let faults = Faults {
            error_rate: 0.2,
            rate_limit_rate: 0.3,
            retry_after_secs: 7,
            ..Faults::default()
        };
        let table = [
            (0.0, Some(Injected::ServerError)),
            (0.19, Some(Injected::ServerError)),
            (0.2, Some(Injected::RateLimited { retry_after: 7 })),
            (0.49, Some(Injected::RateLimited { retry_after: 7 })),
            (0.5, None),
            (0.99, None),
        ];
        for (roll, expected) in table {
            assert_eq!(faults.injected(roll), expected, "{roll}");
        }
        assert_eq!(Faults::default().injected(0.0), None);
        let always = Faults {
            error_rate: 1.0,
            ..Faults::default()
        };
        assert_eq!(always.injected(0.999_999), Some(Injected::ServerError));
    }

    #[test]
    fn retry_after_defaults_to_one_second() {
        let faults = Faults {
            rate_limit_rate: 1.0,
            ..Faults::default()
        };
        assert_eq!(
            faults.injected(0.5),
            Some(Injected::RateLimited { retry_after: 1 })
        );
    }

    #[test]
    fn an_empty_reject_pattern_matches_nothing() {
        let mut faults = Faults {
            reject_asset_pattern: Some(String::new()),
            ..Faults::default()
        };
        assert_eq!(faults.reject_pattern(), None);
        faults.reject_asset_pattern = Some("bad".into());
        assert_eq!(faults.reject_pattern(), Some("bad"));
    }

    #[test]
    fn rolls_are_uniform_enough_and_in_range() {
        let dice = Dice::new(42);
        let rolls: Vec<f64> = (0..20_000).map(|_| dice.roll()).collect();
        assert!(rolls.iter().all(|r| (0.0..1.0).contains(r)));
        for threshold in [0.1, 0.5, 0.9] {
            let below = rolls.iter().filter(|r| **r < threshold).count() as f64;
            let fraction = below / rolls.len() as f64;
            assert!(
                (fraction - threshold).abs() < 0.02,
                "{threshold}: {fraction}"
            );
        }
    }
}
