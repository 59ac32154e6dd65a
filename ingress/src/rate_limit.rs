//! Rate limits (global, per client IP, per hook) with `Retry-After`, on `governor`'s GCRA limiters.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};

use crate::ApiError;
use crate::config::RateLimits;

/// The limiters of one ingress process.
pub struct RateLimiters {
    global: Option<DefaultDirectRateLimiter>,
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    per_hook: Option<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
    /// Whether `X-Forwarded-For` names the client.
    pub trust_forwarded_for: bool,
}

impl std::fmt::Debug for RateLimiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiters").finish_non_exhaustive()
    }
}

/// Keys idle this long are forgotten (the maps would otherwise grow with every client ever seen).
pub const FORGET_AFTER: Duration = Duration::from_secs(600);

impl RateLimiters {
    /// Limiters for the settings.
    pub fn new(limits: &RateLimits) -> Self {
        let per_ip_quota = NonZeroU32::new(limits.per_ip).and_then(|n| {
            // n requests per window, as a burst of n refilled evenly over the window.
            let period = limits.per_ip_window.checked_div(n.get()).filter(|p| !p.is_zero())?;
            Quota::with_period(period).map(|q| q.allow_burst(n))
        });
        Self {
            global: NonZeroU32::new(limits.global_per_second)
                .map(|n| governor::RateLimiter::direct(Quota::per_second(n))),
            per_ip: per_ip_quota.map(governor::RateLimiter::keyed),
            per_hook: NonZeroU32::new(limits.per_hook_per_second)
                .map(|n| governor::RateLimiter::keyed(Quota::per_second(n))),
            clock: DefaultClock::default(),
            trust_forwarded_for: limits.trust_forwarded_for,
        }
    }

    /// Counts a request against the global and per-IP limits.
    pub fn check_client(&self, ip: IpAddr) -> Result<(), ApiError> {
        if let Some(global) = &self.global {
            global.check().map_err(|not_until| self.limited("global", not_until.wait_time_from(self.clock.now())))?;
        }
        if let Some(per_ip) = &self.per_ip {
            per_ip
                .check_key(&ip)
                .map_err(|not_until| self.limited("per client", not_until.wait_time_from(self.clock.now())))?;
        }
        Ok(())
    }

    /// Counts a request against its hook's limit.
    pub fn check_hook(&self, hook: &str) -> Result<(), ApiError> {
        if let Some(per_hook) = &self.per_hook {
            per_hook
                .check_key(&hook.to_owned())
                .map_err(|not_until| self.limited("per hook", not_until.wait_time_from(self.clock.now())))?;
        }
        Ok(())
    }

    /// Drops idle keys; called periodically.
    pub fn forget_idle(&self) {
        if let Some(l) = &self.per_ip {
            l.retain_recent();
        }
        if let Some(l) = &self.per_hook {
            l.retain_recent();
        }
    }

    fn limited(&self, which: &str, wait: Duration) -> ApiError {
        ApiError::RateLimited(format!("{which} limit; retry after the Retry-After delay"), wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_burst_then_limited_with_a_wait() {
        let limits = RateLimits {
            global_per_second: 0,
            per_ip: 3,
            per_ip_window: Duration::from_secs(300),
            per_hook_per_second: 0,
            trust_forwarded_for: false,
        };
        let l = RateLimiters::new(&limits);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            l.check_client(a).unwrap();
        }
        match l.check_client(a) {
            Err(ApiError::RateLimited(_, wait)) => assert!(wait > Duration::from_secs(50), "{wait:?}"),
            other => panic!("expected limited, got {other:?}"),
        }
        l.check_client(b).expect("another client has its own budget");
        l.check_hook("h").expect("hook limit off");
    }
}
