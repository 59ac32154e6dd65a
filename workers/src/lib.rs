//! The eventfleet worker pool: consume the queue, run the handler for each event once, retry with backoff,
//! dead-letter what cannot succeed, and audit every step.
//!
//! # Layout
//!
//! - [`config`]: [`WorkerConfig`], the typed settings.
//! - [`wait`]: [`Ready`] and [`Wait`]: a step that has to wait (a channel's pace, Slack's `Retry-After`) says
//!   so in its type; the event is deferred, not failed.
//! - [`handler`]: the [`Handler`] trait, what it is given ([`HandlerContext`]) and its errors ([`HandlerError`],
//!   retryable or permanent).
//! - [`registry`]: the [`Registry`] that picks a handler by event kind (behind a route's HTTP destination), and
//!   the dead-letter notifier.
//! - [`destinations`]: routes that forward events to HTTP destinations, signed the Standard Webhooks way.
//! - [`handlers`]: the built-in handlers: hook payloads and GitHub deliveries ([`handlers::hook`]); SNS
//!   notifications and subscription confirmations ([`handlers::sns`]); CloudWatch alarms as Slack threads with
//!   flapping, their storms folded into burst digests ([`handlers::alarm`]); posting schedules' ticks ([`handlers::schedule`]);
//!   posting channels' burst digests ([`handlers::digest`]); unhandled kinds ([`handlers::unhandled`]).
//! - [`github`]: GitHub deliveries laid out by event type (CI runs, deployments, pushes, PRs, security alerts),
//!   and hooks' filters of them.
//! - [`block_kit`]: Block Kit limits and escaping, shared by every layout.
//! - [`slack`]: Slack egress, one owner: the [`slack::Poster`] handlers post, reply and update through (once
//!   each, in the channel's pace), the [`SlackSink`] port with the Web API client and the dev outbox.
//! - [`sent`]: the `sent` lines of a trail, which of an event's chats its message reached.
//! - [`targets`]: an event's chats (`#ops+teams:oncall`), each posted to once.
//! - [`teams`]: Microsoft Teams egress: the Teams layout of every message as an Adaptive Card, and the webhook
//!   client within Teams' limits, reached through the [`slack::Poster`] like Slack.
//! - [`digest`]: burst digests: a post that finds no slot in its channel's pace is folded into the channel's
//!   digest, which its own flush event posts at the next slot.
//! - [`backoff`]: retry delays, exponential with full jitter, capped.
//! - [`process`]: one delivery: the start the receive made → handler → `succeed` / `retry` / `dead_letter`, each
//!   one store step, with a heartbeat.
//! - [`metrics`]: [`WorkerMetrics`], the Prometheus metrics of the pool.
//! - [`pool`]: [`run`], the receive loop with bounded concurrency and graceful shutdown.
//! - [`replay`]: operator replay of dead letters.

/// The value of a [`wait::Ready`], or an early `Ok` with its wait (a handler's, or a step's that may wait).
macro_rules! ready {
    ($e:expr) => {
        match $e {
            $crate::wait::Ready::Now(value) => value,
            $crate::wait::Ready::Wait(wait) => return Ok(wait.into()),
        }
    };
}

pub mod backoff;
pub mod block_kit;
pub mod config;
pub mod destinations;
pub mod digest;
pub mod github;
pub mod handler;
pub mod handlers;
pub mod metrics;
pub mod pool;
pub mod process;
pub mod registry;
pub mod replay;
pub mod sent;
pub mod slack;
pub mod slot;
pub mod targets;
pub mod teams;
pub mod wait;

pub use config::WorkerConfig;
pub use handler::{Handler, HandlerContext, HandlerError};
pub use metrics::WorkerMetrics;
pub use pool::{PoolSummary, run, run_with_metrics};
pub use registry::{DeadLetterNotice, DeadLetterNotifier, Registry};
pub use slack::{SlackError, SlackMessage, SlackSink};
pub use wait::{Ready, Wait};
