//! Handlers: the work done for an event, chosen by its kind.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eventfleet_schema::{Envelope, ErrorClass};
use eventfleet_storage::Store;

use crate::destinations::Destinations;
use crate::pace::ChannelPace;
use crate::slack::{PostCheck, PostMark, Posted, SlackError, SlackMessage, SlackSink};

/// What a handler gets besides the event.
#[derive(Clone)]
pub struct HandlerContext {
    /// The storage ports (to look up a hook's channel, ...).
    pub store: Store,
    /// Where Slack messages go.
    pub slack: Arc<dyn SlackSink>,
    /// The attempt, from 1: one more than the attempts recorded before (failures, and attempts whose worker died
    /// or lost its lease), reset by a replay. Above 1, an earlier attempt may have had its side effect.
    pub attempt: u32,
    /// The pace of posts to one channel, shared by the fleet.
    pub pace: ChannelPace,
}

impl HandlerContext {
    /// Posts the event's message, once, in the channel's pace. A first attempt posts; a later one (an earlier
    /// attempt may have posted before it failed, timed out or its worker died) first looks for the event's post
    /// in the channel, and posts only when it is not there. When the sink cannot tell (scopes not granted), it
    /// posts: at least once. No slot in the pace, or Slack's `Retry-After`, defers the event.
    pub async fn post_once(&self, envelope: &Envelope, message: &SlackMessage) -> Result<String, HandlerError> {
        let mark = PostMark::post(envelope.event_id());
        if let Some(ts) = self.earlier_post(envelope, &mark, message).await? {
            return Ok(format!(
                "{}, by an earlier attempt: not posted again",
                Posted { ts, channel: message.channel.clone() }
            ));
        }
        self.pace.room(&self.store, &message.channel, envelope.event_id()).await?;
        match self.slack.post_message(&mark, message).await {
            Ok(posted) => Ok(posted.to_string()),
            Err(e) => Err(self.slack_failed(&message.channel, e).await),
        }
    }

    /// A Slack error as the handler's, a rate limit also pausing `channel` for every worker (best effort).
    pub async fn slack_failed(&self, channel: &str, e: SlackError) -> HandlerError {
        if let SlackError::RateLimited { retry_after, .. } = &e {
            self.pace.pause(&self.store, channel, *retry_after).await;
        }
        e.into()
    }

    /// On a later attempt, where an earlier attempt posted `mark`, if it did.
    async fn earlier_post(
        &self,
        envelope: &Envelope,
        mark: &PostMark,
        message: &SlackMessage,
    ) -> Result<Option<String>, SlackError> {
        if self.attempt <= 1 {
            return Ok(None);
        }
        let thread = message.thread_ts.as_deref();
        match self.slack.find_post(mark, &message.channel, thread, envelope.received_at()).await? {
            PostCheck::Posted(ts) => {
                tracing::info!(channel = %message.channel, %ts, part = %mark.part,
                    "an earlier attempt posted this: not posted again");
                Ok(Some(ts))
            }
            PostCheck::NotPosted => Ok(None),
            PostCheck::Unknown(why) => {
                tracing::warn!(channel = %message.channel, %why,
                    "cannot tell whether an earlier attempt posted this event: posting (at least once)");
                Ok(None)
            }
        }
    }

    /// [`HandlerContext::post_once`] for one of an event's posts (`mark`), in a thread when the message has a
    /// `thread_ts`, without the pace (the caller took its turn). Returns where it is, and whether an earlier
    /// attempt had posted it.
    pub async fn post_part_once(
        &self,
        envelope: &Envelope,
        mark: &PostMark,
        message: &SlackMessage,
    ) -> Result<(Posted, bool), SlackError> {
        if let Some(ts) = self.earlier_post(envelope, mark, message).await? {
            return Ok((Posted { ts, channel: message.channel.clone() }, true));
        }
        Ok((self.slack.post_message(mark, message).await?, false))
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
    /// Not a failure: run again after `wait` without counting an attempt (Slack's `Retry-After`, or no room yet
    /// in the channel's pace). Nothing was done that a rerun would repeat, or what was done is recorded.
    #[error("deferred {} s: {reason}", wait.as_secs_f64())]
    Deferred {
        /// Why.
        reason: String,
        /// How long.
        wait: Duration,
    },
}

impl HandlerError {
    /// The stored class.
    pub fn class(&self) -> ErrorClass {
        match self {
            HandlerError::Retryable { .. } | HandlerError::Deferred { .. } => ErrorClass::Retryable,
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
            SlackError::RateLimited { message, retry_after } => {
                HandlerError::Deferred { reason: message, wait: retry_after }
            }
            SlackError::Permanent(message) => HandlerError::Permanent(message),
        }
    }
}

/// The work for one kind of event. It may run more than once only when an attempt failed or its worker died;
/// a success is never repeated.
#[async_trait]
pub trait Handler: Send + Sync {
    /// Handles the event; returns a short outcome for the audit trail.
    async fn handle(&self, ctx: &HandlerContext, envelope: &Envelope) -> Result<String, HandlerError>;
}

/// Picks a handler by kind: an exact kind first (`slack.command`), then the longest registered prefix ending in
/// `.` (`github.`), then the fallback.
#[derive(Clone)]
pub struct Registry {
    exact: HashMap<String, Arc<dyn Handler>>,
    prefixes: Vec<(String, Arc<dyn Handler>)>,
    fallback: Arc<dyn Handler>,
    on_dead_letter: Option<Arc<dyn DeadLetterNotifier>>,
    destinations: Option<Arc<Destinations>>,
}

/// What operators are told when an event is dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetterNotice {
    /// The event.
    pub event_id: String,
    /// Its kind.
    pub kind: String,
    /// Its source.
    pub source: String,
    /// Why.
    pub reason: String,
    /// Attempts made.
    pub attempts: u32,
}

/// Tells operators about dead letters (the aws backend's ops topic). Best effort: a failed notice is logged and
/// never fails the delivery.
#[async_trait]
pub trait DeadLetterNotifier: Send + Sync {
    /// Sends one notice.
    async fn dead_lettered(&self, notice: &DeadLetterNotice) -> Result<(), String>;
}

impl Registry {
    /// A registry that sends everything to `fallback`.
    pub fn new(fallback: Arc<dyn Handler>) -> Self {
        Self { exact: HashMap::new(), prefixes: Vec::new(), fallback, on_dead_letter: None, destinations: None }
    }

    /// Tells `notifier` about every dead letter.
    pub fn on_dead_letter(mut self, notifier: Arc<dyn DeadLetterNotifier>) -> Self {
        self.on_dead_letter = Some(notifier);
        self
    }

    /// Sends the events a route matches to its HTTP destination, instead of (or, with `also_builtin`, before)
    /// the handler of their kind.
    pub fn with_destinations(mut self, destinations: Arc<Destinations>) -> Self {
        self.destinations = Some(destinations).filter(|d| !d.is_empty());
        self
    }

    /// Runs the work for an event: its route's destination when one matches (then, with `also_builtin`, the
    /// handler of its kind too), else the handler of its kind.
    pub async fn handle(&self, ctx: &HandlerContext, envelope: &Envelope) -> Result<String, HandlerError> {
        let kind = envelope.kind().as_str();
        let Some((destinations, destination)) =
            self.destinations.as_ref().and_then(|d| d.route_for(envelope).map(|destination| (d, destination)))
        else {
            return self.for_kind(kind).handle(ctx, envelope).await;
        };
        let delivered = destinations.deliver(destination, ctx, envelope).await?;
        if !destination.route.also_builtin {
            return Ok(delivered);
        }
        // A failure here retries the delivery too: receivers deduplicate by `webhook-id` (the event id).
        let builtin = self.for_kind(kind).handle(ctx, envelope).await?;
        Ok(format!("{delivered}; {builtin}"))
    }

    /// The dead-letter notifier, if any.
    pub fn dead_letter_notifier(&self) -> Option<&Arc<dyn DeadLetterNotifier>> {
        self.on_dead_letter.as_ref()
    }

    /// Registers a handler for one kind, or for every kind starting with `kind` when it ends in `.`.
    pub fn register(mut self, kind: &str, handler: Arc<dyn Handler>) -> Self {
        if kind.ends_with('.') {
            self.prefixes.push((kind.to_owned(), handler));
            self.prefixes.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        } else {
            self.exact.insert(kind.to_owned(), handler);
        }
        self
    }

    /// The handler for a kind.
    pub fn for_kind(&self, kind: &str) -> &Arc<dyn Handler> {
        self.exact
            .get(kind)
            .or_else(|| self.prefixes.iter().find(|(p, _)| kind.starts_with(p.as_str())).map(|(_, h)| h))
            .unwrap_or(&self.fallback)
    }
}
