//! The bundle of ports a service runs on.

use std::sync::Arc;

use crate::{
    AlarmThreads, AuditLog, Channels, Clock, DeadLetters, Digests, Documents, EventLog, Expiry, Idempotency,
    LivingMessages, Protocol, Queue, RetryRecords, WebhookRegistry,
};

/// Every port, as shared trait objects, plus the clock they agree on. Cheap to clone. The ingress and the workers
/// drive events through [`Store::protocol`]; the table ports beneath it are for operators and tests.
#[derive(Clone)]
pub struct Store {
    /// The protocol's steps: what the ingress and the workers call.
    pub protocol: Arc<dyn Protocol>,
    /// The FIFO queue.
    pub queue: Arc<dyn Queue>,
    /// Its dead-letter queue.
    pub dead_letters: Arc<dyn DeadLetters>,
    /// Idempotency records.
    pub idempotency: Arc<dyn Idempotency>,
    /// The audit trail.
    pub audit: Arc<dyn AuditLog>,
    /// Retry and dead-letter records.
    pub retries: Arc<dyn RetryRecords>,
    /// The webhook registry.
    pub webhooks: Arc<dyn WebhookRegistry>,
    /// Alarms' Slack threads.
    pub alarm_threads: Arc<dyn AlarmThreads>,
    /// Slack channels' shared posting states.
    pub channels: Arc<dyn Channels>,
    /// Messages that follow a GitHub run, deployment or pull request.
    pub living: Arc<dyn LivingMessages>,
    /// Channels' burst digests.
    pub digests: Arc<dyn Digests>,
    /// Accepted envelopes kept for a retention window.
    pub events: Arc<dyn EventLog>,
    /// Expired rows given back.
    pub expiry: Arc<dyn Expiry>,
    /// The time every component compares against.
    pub clock: Arc<dyn Clock>,
    /// `embedded` or `aws`, for `/version` and logs.
    pub backend: &'static str,
}

impl Store {
    /// Every port served by one backend `B`.
    pub fn of<B>(backend: Arc<B>, clock: Arc<dyn Clock>, name: &'static str) -> Self
    where
        B: Protocol
            + Queue
            + DeadLetters
            + Idempotency
            + AuditLog
            + RetryRecords
            + WebhookRegistry
            + Documents
            + EventLog
            + Expiry
            + 'static,
    {
        Store {
            protocol: backend.clone(),
            queue: backend.clone(),
            dead_letters: backend.clone(),
            idempotency: backend.clone(),
            audit: backend.clone(),
            retries: backend.clone(),
            webhooks: backend.clone(),
            alarm_threads: backend.clone(),
            channels: backend.clone(),
            living: backend.clone(),
            digests: backend.clone(),
            expiry: backend.clone(),
            events: backend,
            clock,
            backend: name,
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("backend", &self.backend).finish_non_exhaustive()
    }
}
