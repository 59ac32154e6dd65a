//! Ingress settings.

use std::time::Duration;

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
}

impl Default for IngressConfig {
    fn default() -> Self {
        Self {
            idempotency_horizon: Duration::from_secs(72 * 3600),
            body_limit: 256 * 1024,
            backend_budget: Duration::from_secs(2),
            actor: "ingress".into(),
        }
    }
}
