//! Worker settings.

use std::time::Duration;

/// Typed worker settings. The binary builds them from `EVENTFLEET_*` variables (see `docs/configuration.md`).
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Handlers running at once in this process.
    pub concurrency: usize,
    /// How long a received message stays invisible; the heartbeat renews it every third of this.
    pub visibility_timeout: Duration,
    /// Longest a handler may run before the attempt counts as a retryable failure.
    pub handler_timeout: Duration,
    /// On shutdown, how long in-flight handlers may take to finish.
    pub drain_timeout: Duration,
    /// Attempts after which an event is dead-lettered. Counted by the store's start step (failures in the retry
    /// record, plus an attempt that stopped without an outcome), not from the queue's receive count: SQS also
    /// counts a receive of a message that waited, untried, behind a failing message of its group.
    pub max_attempts: u32,
    /// Receives after which the queue itself moves a message to the DLQ (SQS `maxReceiveCount`): the backstop for
    /// attempts that never record anything (a worker killed mid-handler). Above `max_attempts`, so that waiting
    /// group members keep room; a delivery at this count that fails is dead-lettered by the worker, with its
    /// records, rather than left for the queue to move.
    pub max_receive_count: u32,
    /// First retry delay (before jitter).
    pub retry_base_delay: Duration,
    /// Cap of the retry delay.
    pub retry_max_delay: Duration,
    /// Long-poll wait of one receive. Short enough that shutdown does not wait long for a poll in progress.
    pub receive_wait: Duration,
    /// After a receive that found fewer messages than it asked for, how long the next one waits for the queue to
    /// gather more (zero: at once). Under a steady trickle each receive, and the reads, writes and deletes that go
    /// with it, then carries several events instead of one or two; an idle queue's first message is not delayed
    /// (the long poll returns it at once).
    pub receive_window: Duration,
    /// Who the worker says it is in the audit trail.
    pub actor: String,
    /// The idempotency horizon of a record a worker creates (the event's claim expired before it ran).
    pub idempotency_horizon: Duration,
    /// The pace of Slack posts to one channel, shared by the fleet.
    pub channel_pace: crate::slack::ChannelPace,
    /// The Teams channels' webhooks (`EVENTFLEET_TEAMS_CHANNELS`).
    pub teams: crate::teams::TeamsWebhooks,
}

impl WorkerConfig {
    /// What the protocol steps need to know of this worker.
    pub fn protocol_actor(&self) -> eventfleet_storage::Actor {
        eventfleet_storage::Actor {
            name: self.actor.clone(),
            visibility: self.visibility_timeout,
            max_attempts: self.max_attempts,
            horizon: self.idempotency_horizon,
        }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: 16,
            visibility_timeout: Duration::from_secs(30),
            handler_timeout: Duration::from_secs(20),
            drain_timeout: Duration::from_secs(25),
            max_attempts: 5,
            max_receive_count: eventfleet_storage::queue::DEFAULT_MAX_RECEIVE_COUNT,
            retry_base_delay: Duration::from_secs(1),
            retry_max_delay: Duration::from_secs(60),
            receive_wait: Duration::from_secs(5),
            receive_window: Duration::ZERO,
            actor: "worker".into(),
            idempotency_horizon: Duration::from_secs(72 * 3600),
            channel_pace: crate::slack::ChannelPace::default(),
            teams: crate::teams::TeamsWebhooks::default(),
        }
    }
}
