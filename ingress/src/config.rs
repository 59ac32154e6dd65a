//! Ingress settings.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use eventfleet_schema::Secret;
use eventfleet_storage::{Clock, SystemClock};

/// Typed ingress settings. The binary builds them from `EVENTFLEET_*` variables (see `docs/configuration.md`).
#[derive(Debug, Clone)]
pub struct IngressConfig {
    /// How long an idempotency key suppresses redeliveries (72 h covers GitHub's 3-day redelivery window).
    pub idempotency_horizon: Duration,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// How long the backend may take to make an event durable before the answer is 503 (Slack waits 3 s).
    pub backend_budget: Duration,
    /// Who ingress says it is in the audit trail.
    pub actor: String,
    /// Slack signing secret; without it the Slack routes answer 404.
    pub slack_signing_secret: Option<Secret>,
    /// SNS topics accepted; `None` accepts every topic whose messages verify.
    pub sns_allowed_topics: Option<Vec<String>>,
    /// Read SNS signing certificates from this directory instead of fetching them.
    pub sns_cert_dir: Option<PathBuf>,
    /// Timeout of one certificate fetch.
    pub sns_cert_timeout: Duration,
    /// The time signatures and certificates are checked against (tests pin it to a fixture's time).
    pub verify_clock: Arc<dyn Clock>,
    /// Rate limits.
    pub rate_limits: RateLimits,
    /// Connection deadlines and the drain deadline.
    pub timeouts: crate::serve::Timeouts,
    /// The schedules this process evaluates (`EVENTFLEET_SCHEDULES_FILE`); empty runs none.
    pub schedules: Vec<crate::schedule::Schedule>,
    /// Slack Socket Mode (`EVENTFLEET_SLACK_APP_TOKEN`); `None` opens no connection.
    pub socket_mode: Option<crate::socket_mode::SocketModeConfig>,
}

/// Budgets of failed requests (signatures that do not verify, unknown hooks: [`crate::rate_limit`]); zero turns
/// one off. Verified requests never count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Failed requests per second across all clients.
    pub global_per_second: u32,
    /// Failed requests per client IP per window.
    pub per_ip: u32,
    /// The per-IP window.
    pub per_ip_window: Duration,
    /// Failed requests per second per hook.
    pub per_hook_per_second: u32,
    /// Take the client IP from the last `X-Forwarded-For` entry (behind a load balancer that appends it).
    pub trust_forwarded_for: bool,
}

impl Default for RateLimits {
    /// 500 failures/s in all, 1000 per IP per 5 minutes, 100/s per hook.
    fn default() -> Self {
        Self {
            global_per_second: 500,
            per_ip: 1000,
            per_ip_window: Duration::from_secs(300),
            per_hook_per_second: 100,
            trust_forwarded_for: false,
        }
    }
}

impl RateLimits {
    /// No limits (load tests, benchmarks).
    pub fn off() -> Self {
        Self { global_per_second: 0, per_ip: 0, per_hook_per_second: 0, ..Self::default() }
    }
}

impl Default for IngressConfig {
    fn default() -> Self {
        Self {
            idempotency_horizon: Duration::from_secs(72 * 3600),
            body_limit: 256 * 1024,
            backend_budget: Duration::from_secs(2),
            actor: "ingress".into(),
            slack_signing_secret: None,
            sns_allowed_topics: None,
            sns_cert_dir: None,
            sns_cert_timeout: Duration::from_secs(5),
            verify_clock: Arc::new(SystemClock),
            rate_limits: RateLimits::default(),
            timeouts: crate::serve::Timeouts::default(),
            schedules: Vec::new(),
            socket_mode: None,
        }
    }
}
