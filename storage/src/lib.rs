//! Storage ports of eventfleet and the embedded SQLite backend.
//!
//! # Layout
//!
//! - [`error`]: [`StorageError`], the one error type every port returns, with [`StorageError::is_retryable`].
//! - [`clock`]: [`Clock`], injectable wall time ([`SystemClock`] in production, [`TokioClock`] in tests so that
//!   `tokio::time::pause`/`advance` move the store's time too).
//! - [`protocol`]: [`Protocol`], the steps of the flow (accept, receive and start, succeed, retry, dead-letter,
//!   release), each one unit of work in the backend. The ingress and the workers call only these.
//! - The table ports beneath, for operators and tests, small traits over `eventfleet-schema` types, one module
//!   each: [`queue`] (FIFO queue with
//!   message groups, dedup, visibility, receive counts), [`dead_letters`] (inspect, redrive, purge the DLQ),
//!   [`idempotency`] (read records, reopen one for a replay), [`audit`] (append-only timeline),
//!   [`retries`] (retry and dead-letter records), [`webhooks`] (the hook registry), [`alarm_threads`] (alarms'
//!   Slack threads) and [`channels`] (a Slack channel's state shared by the fleet: Slack's pause, the workers
//!   posting there, the alarm storm), [`living`] (messages that follow a GitHub run, deployment or pull
//!   request) and [`digests`] (a channel's burst digest: the posts folded while it had no slot), [`event_log`] (accepted
//!   envelopes kept for a retention window, searched and re-driven by operators), [`expiry`] (expired rows given back), typed views of [`documents`] (versioned documents by key).
//! - [`hook_cache`]: [`hook_cache::CachedHooks`], a short-lived cache of hooks and their invocation counts in
//!   front of a registry (the aws backend's hook deliveries would read the table twice and write it once).
//! - [`store`]: [`Store`], the bundle of ports a service is given; a backend builds one.
//! - [`embedded`]: the zero-set-up backend on one SQLite file in WAL mode, with group commit.
//! - [`aws`]: SQS FIFO and DynamoDB behind the same ports (SNS and CloudWatch publishing are not storage: the
//!   binary's `aws_ops` does them with this backend's clients).
//! - `conformance` (feature `conformance`): the generic suite every backend must pass, and the
//!   [`conformance_suite!`] macro that instantiates it.
//!
//! No SQL or AWS type crosses a port: a backend's types stay inside its module.

pub mod alarm_threads;
pub mod audit;
pub mod aws;
pub mod channels;
pub mod clock;
pub mod dead_letters;
pub mod digests;
pub mod documents;
pub mod embedded;
pub mod error;
pub mod event_log;
pub mod expiry;
pub mod hook_cache;
pub mod idempotency;
pub mod living;
pub mod protocol;
pub mod queue;
pub mod retries;
pub mod store;
pub mod webhooks;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use alarm_threads::{AlarmThread, AlarmThreads};
pub use audit::{AuditLog, AuditQuery};
pub use aws::{AwsOptions, AwsStore};
pub use channels::{ChannelState, Channels, Digest, EarlyAlarm, Lane};
pub use clock::{Clock, FixedClock, SystemClock, TokioClock};
pub use dead_letters::{DeadLetter, DeadLetterFilter, DeadLetters, Redriven};
pub use digests::{ChannelDigest, ClosedDigest, DigestItem, Digests};
pub use documents::Documents;
pub use embedded::{EmbeddedOptions, EmbeddedStore};
pub use error::StorageError;
pub use event_log::{Cursor, EventLog, EventPage, EventQuery, EventSummary, LoggedEvent, Outcome};
pub use expiry::Expiry;
pub use idempotency::{Idempotency, SENDER_ID_MATCHES};
pub use living::{LivingMessage, LivingMessages};
pub use protocol::{Accepted, Actor, Delivery, Failure, Protocol, Start};
pub use queue::{MessageId, OutgoingMessage, Queue, QueueStats, ReceiptHandle, ReceivedMessage};
pub use retries::RetryRecords;
pub use store::Store;
pub use webhooks::WebhookRegistry;

/// Result of a storage operation.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
