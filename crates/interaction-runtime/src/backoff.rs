//! Exponential backoff with jitter, written once for every retry loop: the publisher's and the
//! consumer's reconnect loops, and the forwarder's in-process retries of Ncanto calls.
//!
//! Small pure functions rather than a retry driver, because each caller owns its loop (a
//! supervisor that also watches for shutdown, a delivery that may hand the events to a retry
//! queue instead of sleeping) and only needs "how long now". Randomness comes in as a
//! `fraction` argument so that the schedule is tested as exact tables; [`random_fraction`]
//! supplies it in production.
//!
//! Not built on `backon` (the maintained successor of the `backoff` crate DESIGN.md names),
//! because its `ExponentialBuilder` does not give these schedules: it multiplies in `f32`
//! (200 ms doubles to 400.000006 ms, so exact tables fail), its first delay is `min_delay` even
//! when that is above `max_delay`, its jitter adds up to one more delay on top (so a 1 s cap
//! yields up to 2 s) where ours stays within `[½, 1]` of the capped delay, and it draws its own
//! randomness, which a caller cannot inject to test a schedule.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

/// The delay before retry number `retry` (1-based; 0 counts as 1): `min`, doubling per
/// further retry, never above `max` (not even when `min` is above it).
pub fn exponential_delay(retry: u32, min: Duration, max: Duration) -> Duration {
    // Past 2^31 the factor saturates; the cap has long taken over by then.
    let factor = 1u32
        .checked_shl(retry.saturating_sub(1))
        .unwrap_or(u32::MAX);
    min.saturating_mul(factor).min(max)
}

/// "Equal jitter": `delay` scaled by `fraction` (clamped to `[0, 1]`) into `[½, 1]` of itself.
/// Half the delay is kept so a retry never comes almost at once; the random half spreads out
/// the many clients that failed together, so they do not all come back in the same
/// millisecond.
pub fn equal_jitter(delay: Duration, fraction: f64) -> Duration {
    delay.mul_f64(0.5 + fraction.clamp(0.0, 1.0) / 2.0)
}

/// `delay`, but never shorter than the server's `Retry-After`. Not clamped here: what to do
/// with a wait longer than a caller's ceiling is the caller's decision (the forwarder sends the
/// events through a retry queue that waits it, rather than holding a consumer).
pub fn honor_retry_after(delay: Duration, retry_after: Option<Duration>) -> Duration {
    match retry_after {
        Some(wait) => delay.max(wait),
        None => delay,
    }
}

/// The jittered delay before reconnect attempt `failures + 1`:
/// [`exponential_delay`]`(failures, min, max)` under [`equal_jitter`], so in `[½, 1)` of it.
/// `failures` 0 (a connection that was up, then lost) waits like a first failure.
pub fn reconnect_delay(failures: u32, min: Duration, max: Duration) -> Duration {
    equal_jitter(exponential_delay(failures, min, max), random_fraction())
}

/// A random number in `[0, 1)`, the noise for [`equal_jitter`].
pub fn random_fraction() -> f64 {
    // std's hasher keys are random per instance: good enough noise, no extra dependency.
    let noise = RandomState::new().hash_one(Instant::now());
    // 53 random bits: exactly representable as an f64 in [0, 1).
    (noise >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: fn(u64) -> Duration = Duration::from_secs;
    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn exponential_delays_double_from_min_and_stop_at_max() {
        let cases = [
            (0, 250),
            (1, 250),
            (2, 500),
            (3, 1_000),
            (4, 2_000),
            (8, 30_000),
            (40, 30_000),
            (u32::MAX, 30_000),
        ];
        for (retry, want_ms) in cases {
            assert_eq!(
                exponential_delay(retry, MS(250), S(30)),
                MS(want_ms),
                "{retry}"
            );
        }
    }

    #[test]
    fn exponential_delays_never_exceed_a_max_below_min() {
        assert_eq!(exponential_delay(1, S(10), S(1)), S(1));
    }

    #[test]
    fn equal_jitter_maps_the_fraction_onto_half_to_all_of_the_delay() {
        let cases = [
            (0.0, 1_000),
            (0.5, 1_500),
            (1.0, 2_000),
            // Out-of-range fractions are clamped, never stretching the band.
            (-3.0, 1_000),
            (7.0, 2_000),
        ];
        for (fraction, want_ms) in cases {
            assert_eq!(equal_jitter(S(2), fraction), MS(want_ms), "{fraction}");
        }
    }

    #[test]
    fn retry_after_lengthens_a_delay_but_never_shortens_it() {
        let cases = [
            (MS(200), None, MS(200)),
            (MS(200), Some(S(1)), S(1)),
            (S(2), Some(MS(10)), S(2)),
            (S(2), Some(S(30)), S(30)),
            (MS(200), Some(Duration::ZERO), MS(200)),
        ];
        for (delay, retry_after, want) in cases {
            assert_eq!(
                honor_retry_after(delay, retry_after),
                want,
                "{delay:?} {retry_after:?}"
            );
        }
    }

    #[test]
    fn reconnect_delays_stay_between_half_and_all_of_the_backoff() {
        for failures in [0, 1, 3, 40] {
            let backoff = exponential_delay(failures, MS(250), S(8));
            for _ in 0..200 {
                let d = reconnect_delay(failures, MS(250), S(8));
                assert!(d >= backoff / 2 && d < backoff, "{failures}: {d:?}");
            }
        }
    }

    #[test]
    fn random_fractions_are_in_zero_to_one() {
        for _ in 0..1_000 {
            let f = random_fraction();
            assert!((0.0..1.0).contains(&f), "{f}");
        }
    }

    proptest! {
        #[test]
        fn exponential_delays_stay_within_min_and_max(
            retry in any::<u32>(),
            min_ms in 0u64..100_000,
            max_ms in 0u64..1_000_000,
        ) {
            let d = exponential_delay(retry, MS(min_ms), MS(max_ms));
            prop_assert!(d <= MS(max_ms));
            prop_assert!(d >= MS(min_ms.min(max_ms)));
        }

        #[test]
        fn jittered_delays_stay_within_the_band_and_honor_retry_after(
            retry in 1u32..100,
            fraction in 0.0f64..=1.0,
            retry_after in proptest::option::of(0u64..100_000),
        ) {
            let backoff = exponential_delay(retry, MS(200), S(2));
            let jittered = equal_jitter(backoff, fraction);
            prop_assert!(jittered >= backoff / 2 && jittered <= backoff);
            let retry_after = retry_after.map(MS);
            let d = honor_retry_after(jittered, retry_after);
            prop_assert!(d >= jittered);
            prop_assert!(d == jittered || Some(d) == retry_after);
        }
    }
}
