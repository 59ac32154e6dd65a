//! The eventfleet worker pool: consume the queue, run the handler for each event once, retry with backoff,
//! dead-letter what cannot succeed, and audit every step.
//!
//! # Layout
//!
//! - [`config`]: [`WorkerConfig`], the typed settings.
//! - [`handler`]: the [`Handler`] trait, its errors ([`HandlerError`], retryable or permanent) and the
//!   [`Registry`] that picks a handler by event kind.
//! - [`destinations`]: routes that forward events to HTTP destinations, signed the Standard Webhooks way.
//! - [`handlers`]: the built-in handlers: hook payloads and GitHub deliveries ([`handlers::hook`]); SNS
//!   notifications and subscription confirmations ([`handlers::sns`]); CloudWatch alarms as Slack threads with
//!   storm digests and flapping ([`handlers::alarm`]); posting schedules' ticks ([`handlers::schedule`]);
//!   unhandled kinds ([`handlers::unhandled`]).
//! - [`github`]: GitHub deliveries laid out by event type (CI runs, deployments, pushes, PRs, security alerts),
//!   and hooks' filters of them.
//! - [`block_kit`]: Block Kit limits and escaping, shared by every layout.
//! - [`slack`]: [`SlackSink`], where Slack messages go, and [`slack::DevOutbox`], the local outbox used when no
//!   bot token is configured.
//! - [`pace`]: [`pace::ChannelPace`], the pace of posts to one Slack channel, shared by the fleet through the
//!   store, and Slack's `Retry-After` as a pause of the channel.
//! - [`backoff`]: retry delays, exponential with full jitter, capped.
//! - [`process`]: one delivery: the start the receive made → handler → `succeed` / `retry` / `dead_letter`, each
//!   one store step, with a heartbeat.
//! - [`metrics`]: [`WorkerMetrics`], the Prometheus metrics of the pool.
//! - [`pool`]: [`run`], the receive loop with bounded concurrency and graceful shutdown.
//! - [`replay`]: operator replay of dead letters.

pub mod backoff;
pub mod block_kit;
pub mod config;
pub mod destinations;
pub mod github;
pub mod handler;
pub mod handlers;
pub mod metrics;
pub mod pace;
pub mod pool;
pub mod process;
pub mod replay;
pub mod slack;

pub use config::WorkerConfig;
pub use handler::{DeadLetterNotice, DeadLetterNotifier, Handler, HandlerContext, HandlerError, Registry};
pub use metrics::WorkerMetrics;
pub use pool::{PoolSummary, run, run_with_metrics};
pub use slack::{SlackError, SlackMessage, SlackSink};
