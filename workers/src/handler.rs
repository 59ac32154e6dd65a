//! Handlers: the work done for an event, chosen by its kind ([`crate::registry::Registry`]), what they are
//! given, and how they fail.

use std::time::Duration;

use async_trait::async_trait;
use eventfleet_schema::{Envelope, ErrorClass};
use eventfleet_storage::Store;

use crate::slack::{Poster, SlackError, SlackMessage};
use crate::wait::Ready;

/// What a handler gets besides the event.
#[derive(Clone)]
pub struct HandlerContext {
    /// The storage ports (to look up a hook's channel, ...).
    pub store: Store,
    /// The attempt, from 1: one more than the attempts recorded before (failures, and attempts whose worker died
    /// or lost its lease), reset by a replay. Above 1, an earlier attempt may have had its side effect.
    pub attempt: u32,
    /// How many times the queue has handed this message out, this time included (deferrals count too).
    pub receive: u32,
    /// The only way to Slack: posts, replies and updates, once each, in the channel's pace.
    pub poster: Poster,
    /// This process's folds into burst digests, which share their writes.
    pub folds: std::sync::Arc<crate::digest::Folds>,
    /// A route's channel list: the handler's messages go there instead of the channel its event's hook, topic or
    /// schedule names.
    pub channel: Option<String>,
    /// The operator's replay this delivery runs for, if any ([`crate::replay::Replay`]).
    pub replay: Option<crate::replay::Replay>,
}

impl HandlerContext {
    /// Whether an earlier run may have made this event's messages, so each is looked for before it is made: a
    /// later attempt, or a replay (unless it asked for new messages).
    pub fn looks(&self) -> bool {
        self.attempt > 1 || self.replay.as_ref().is_some_and(|r| !r.post_again)
    }

    /// The channel list the event's messages go to: the route's, else `own` (its hook's, topic's, schedule's).
    pub fn channel_or(&self, own: &str) -> String {
        self.channel.clone().unwrap_or_else(|| own.to_owned())
    }

    /// Posts the event's message once to each target of its channel ([`crate::targets`]): to Slack in the
    /// channel's pace, or folded into the channel's burst digest when the channel has no slot ([`crate::digest`];
    /// `line` is what the digest says of it), to Teams as a card. The outcome for the trail, or a wait.
    pub async fn post_or_fold(
        &self,
        envelope: &Envelope,
        line: crate::digest::Line,
        message: &SlackMessage,
    ) -> Result<Ready<String>, HandlerError> {
        crate::targets::post(self, envelope, line, message).await
    }
}

/// Why a handler failed, which decides between a retry and the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// Another attempt may succeed (timeouts, 5xx, rate limits).
    #[error("{message}")]
    Retryable {
        /// What happened.
        message: String,
        /// At least this long before the next attempt, when the far end said so (Slack `Retry-After`).
        retry_after: Option<Duration>,
    },
    /// Another attempt gets the same answer (`channel_not_found`, an invalid payload).
    #[error("{0}")]
    Permanent(String),
}

impl HandlerError {
    /// The stored class.
    pub fn class(&self) -> ErrorClass {
        match self {
            HandlerError::Retryable { .. } => ErrorClass::Retryable,
            HandlerError::Permanent(_) => ErrorClass::Permanent,
        }
    }

    /// A retryable error without a hint.
    pub fn retryable(message: impl Into<String>) -> Self {
        HandlerError::Retryable { message: message.into(), retry_after: None }
    }
}

impl From<SlackError> for HandlerError {
    fn from(e: SlackError) -> Self {
        match e {
            SlackError::Retryable { message, retry_after } => HandlerError::Retryable { message, retry_after },
            // The poster turns a rate limit into a wait; a sink called some other way retries after it.
            SlackError::RateLimited { message, retry_after } => {
                HandlerError::Retryable { message, retry_after: Some(retry_after) }
            }
            SlackError::Permanent(message) => HandlerError::Permanent(message),
        }
    }
}

impl From<crate::teams::TeamsError> for HandlerError {
    fn from(e: crate::teams::TeamsError) -> Self {
        use crate::teams::TeamsError;
        match &e {
            // The poster turns a rate limit into a wait; here it retries after it.
            TeamsError::RateLimited { retry_after, .. } => {
                HandlerError::Retryable { message: e.to_string(), retry_after: Some(*retry_after) }
            }
            TeamsError::Retryable { .. } => HandlerError::retryable(e.to_string()),
            TeamsError::Permanent { .. } => HandlerError::Permanent(e.to_string()),
        }
    }
}

/// The work for one kind of event. It may run more than once only when an attempt failed, waited or its worker
/// died; a success is never repeated.
#[async_trait]
pub trait Handler: Send + Sync {
    /// Handles the event: a short outcome for the audit trail, or a wait (the channel's pace, Slack's
    /// `Retry-After`) after which it runs again without an attempt counted.
    async fn handle(&self, ctx: &HandlerContext, envelope: &Envelope) -> Result<Ready<String>, HandlerError>;
}
