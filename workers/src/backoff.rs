//! Retry delays: exponential, capped, with full jitter.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// The delay before attempt `failed_attempts + 1`: a uniformly random duration in `[0, d]` where
/// `d = min(max, base × 2^(failed_attempts − 1))` ("full jitter", which spreads a burst of failures best).
///
/// `backon` computes the capped exponential schedule; it only offers additive jitter, so the full jitter is
/// drawn here.
pub fn retry_delay(base: Duration, max: Duration, failed_attempts: u32) -> Duration {
    let ceiling = ceiling(base, max, failed_attempts);
    let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::random_range(0..=millis))
}

/// The un-jittered, capped delay after `failed_attempts` failures.
pub fn ceiling(base: Duration, max: Duration, failed_attempts: u32) -> Duration {
    let n = failed_attempts.max(1) as usize;
    ExponentialBuilder::default()
        .with_min_delay(base)
        .with_max_delay(max)
        .with_factor(2.0)
        .with_max_times(n)
        .build()
        .nth(n - 1)
        .unwrap_or(max)
        .min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_and_is_capped() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        let ceilings: Vec<_> = (1..=6).map(|n| ceiling(base, max, n).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jittered_delay_stays_within_ceiling() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        let delays: Vec<_> = (0..200).map(|_| retry_delay(base, max, 3)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(400)));
        // Full jitter spreads delays: 200 draws are not all equal.
        assert!(delays.iter().any(|d| *d != delays[0]));
    }
}
