//! Rate limits against abuse, on `governor`'s GCRA limiters. They count only what fails: a signature that does
//! not verify (401) or a hook that does not exist (404). A client that uses up a failure budget (its own per
//! window, or, while the global or its hook's budget is spent, at its next failure) is refused with 429 and
//! `Retry-After` before any work, until its budget refills. Verified deliveries never count: GitHub does not
//! retry, and SNS gives up after its delivery policy, so a burst from them is slowed only by the backend itself
//! (503 with `Retry-After` when it cannot keep up).

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};

use crate::ApiError;
use crate::config::RateLimits;

/// The limiters of one ingress process.
pub struct RateLimiters {
    global: Option<DefaultDirectRateLimiter>,
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    per_hook: Option<DefaultKeyedRateLimiter<String>>,
    /// Clients refused until a time: they used up a failure budget.
    refused: Mutex<HashMap<IpAddr, Instant>>,
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

/// A client refused for a spent global or per-hook budget waits at least this long.
const MIN_REFUSAL: Duration = Duration::from_secs(1);

/// At most this many clients are refused at once; past it, the longest-refused make room (a flood from more
/// addresses than this is the WAF's to stop).
const MAX_REFUSED: usize = 100_000;

/// Whether an answer counts against the failure budgets: a signature that did not verify, or no such hook.
/// Refusals of verified requests (a topic not allowed: 403; a malformed body: 400) do not.
pub fn is_failure(status: StatusCode) -> bool {
    status == StatusCode::UNAUTHORIZED || status == StatusCode::NOT_FOUND
}

impl RateLimiters {
    /// Limiters for the settings.
    pub fn new(limits: &RateLimits) -> Self {
        let per_ip_quota = NonZeroU32::new(limits.per_ip).and_then(|n| {
            // n failures per window, as a burst of n refilled evenly over the window.
            let period = limits.per_ip_window.checked_div(n.get()).filter(|p| !p.is_zero())?;
            Quota::with_period(period).map(|q| q.allow_burst(n))
        });
        Self {
            global: NonZeroU32::new(limits.global_per_second)
                .map(|n| governor::RateLimiter::direct(Quota::per_second(n))),
            per_ip: per_ip_quota.map(governor::RateLimiter::keyed),
            per_hook: NonZeroU32::new(limits.per_hook_per_second)
                .map(|n| governor::RateLimiter::keyed(Quota::per_second(n))),
            refused: Mutex::new(HashMap::new()),
            clock: DefaultClock::default(),
            trust_forwarded_for: limits.trust_forwarded_for,
        }
    }

    /// Refuses a client that used up a failure budget, until it refills. Counts nothing.
    pub fn check_client(&self, ip: IpAddr) -> Result<(), ApiError> {
        let now = Instant::now();
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        match refused.get(&ip) {
            Some(until) if *until > now => Err(ApiError::RateLimited(
                "too many failed requests from this client; retry after the Retry-After delay".into(),
                *until - now,
            )),
            Some(_) => {
                refused.remove(&ip);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Counts a failed request (see [`is_failure`]) of a client, to a hook when it named one. A spent budget
    /// refuses the client from now on, for as long as the budget takes to refill.
    pub fn record_failure(&self, ip: IpAddr, hook: Option<&str>) {
        let now = self.clock.now();
        let mut wait: Option<Duration> = None;
        let mut spent = |w: Duration| wait = Some(wait.map_or(w, |x| x.max(w)));
        if let Some(per_ip) = &self.per_ip
            && let Err(not_until) = per_ip.check_key(&ip)
        {
            spent(not_until.wait_time_from(now));
        }
        if let Some(global) = &self.global
            && let Err(not_until) = global.check()
        {
            spent(not_until.wait_time_from(now).max(MIN_REFUSAL));
        }
        if let (Some(per_hook), Some(hook)) = (&self.per_hook, hook)
            && let Err(not_until) = per_hook.check_key(&hook.to_owned())
        {
            spent(not_until.wait_time_from(now).max(MIN_REFUSAL));
        }
        if let Some(wait) = wait.filter(|w| !w.is_zero()) {
            let until = Instant::now() + wait;
            let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
            if refused.len() >= MAX_REFUSED {
                let now = Instant::now();
                refused.retain(|_, t| *t > now);
                if refused.len() >= MAX_REFUSED
                    && let Some(first) = refused.iter().min_by_key(|(_, t)| **t).map(|(ip, _)| *ip)
                {
                    refused.remove(&first);
                }
            }
            refused.insert(ip, until);
        }
    }

    /// Drops idle keys and ended refusals; called periodically.
    pub fn forget_idle(&self) {
        if let Some(l) = &self.per_ip {
            l.retain_recent();
        }
        if let Some(l) = &self.per_hook {
            l.retain_recent();
        }
        let now = Instant::now();
        self.refused.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, until| *until > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(global: u32, per_ip: u32, per_hook: u32) -> RateLimiters {
        RateLimiters::new(&RateLimits {
            global_per_second: global,
            per_ip,
            per_ip_window: Duration::from_secs(300),
            per_hook_per_second: per_hook,
            trust_forwarded_for: false,
        })
    }

    #[test]
    fn only_failures_count_and_a_spent_budget_refuses_the_client_with_a_wait() {
        let l = limits(0, 3, 0);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        // Checking counts nothing: any number of verified requests.
        for _ in 0..1000 {
            l.check_client(a).unwrap();
        }
        for _ in 0..3 {
            l.record_failure(a, None);
            l.check_client(a).expect("within the failure budget");
        }
        l.record_failure(a, None);
        match l.check_client(a) {
            Err(ApiError::RateLimited(_, wait)) => assert!(wait > Duration::from_secs(50), "{wait:?}"),
            other => panic!("expected limited, got {other:?}"),
        }
        l.check_client(b).expect("another client has its own budget");
    }

    #[test]
    fn spent_global_or_hook_budgets_refuse_the_next_failing_client() {
        let l = limits(2, 0, 0);
        let ips: Vec<IpAddr> = (1..=3).map(|i| format!("10.0.1.{i}").parse().unwrap()).collect();
        for ip in &ips {
            l.record_failure(*ip, None);
        }
        assert!(l.check_client(ips[0]).is_ok() && l.check_client(ips[1]).is_ok());
        assert!(matches!(l.check_client(ips[2]), Err(ApiError::RateLimited(_, w)) if w > MIN_REFUSAL / 2));

        let l = limits(0, 0, 1);
        let (c, d): (IpAddr, IpAddr) = ("10.0.2.1".parse().unwrap(), "10.0.2.2".parse().unwrap());
        l.record_failure(c, Some("hk_1"));
        l.record_failure(d, Some("hk_2"));
        assert!(l.check_client(c).is_ok() && l.check_client(d).is_ok(), "one failure each per hook");
        l.record_failure(d, Some("hk_1"));
        assert!(l.check_client(d).is_err(), "hk_1's budget is spent");
        l.forget_idle();
        assert!(l.check_client(d).is_err(), "a refusal lasts until its time");
    }

    #[test]
    fn failures_are_signatures_and_unknown_hooks() {
        assert!(is_failure(StatusCode::UNAUTHORIZED) && is_failure(StatusCode::NOT_FOUND));
        for s in [StatusCode::OK, StatusCode::ACCEPTED, StatusCode::FORBIDDEN, StatusCode::BAD_REQUEST] {
            assert!(!is_failure(s), "{s}");
        }
    }
}
