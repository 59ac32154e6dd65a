//! The [`Registry`]: picks the work for an event (its route's HTTP destination, then or else the handler of its
//! kind) and what operators are told of dead letters.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use eventfleet_schema::Envelope;

use crate::destinations::Destinations;
use crate::handler::{Handler, HandlerContext, HandlerError};
use crate::wait::Ready;

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
    pub async fn handle(&self, ctx: &HandlerContext, envelope: &Envelope) -> Result<Ready<String>, HandlerError> {
        let kind = envelope.kind().as_str();
        if let Some(route) = ctx.replay.as_ref().and_then(|r| r.route.as_deref()) {
            return self.replay_to(route, ctx, envelope).await;
        }
        // A digest flush is the fleet's own post, not an event of the team's: no route takes it.
        let routed = !matches!(envelope.source(), eventfleet_schema::Source::Digest { .. });
        let Some((destinations, destination)) = self
            .destinations
            .as_ref()
            .filter(|_| routed)
            .and_then(|d| d.route_for(envelope).map(|destination| (d, destination)))
        else {
            return self.for_kind(kind).handle(ctx, envelope).await;
        };
        if let crate::destinations::routes::Target::Channel(channel) = &destination.route.target {
            // Chats: the handler of the kind, its messages to the route's channel list.
            let ctx = HandlerContext { channel: Some(channel.clone()), ..ctx.clone() };
            return self.for_kind(kind).handle(&ctx, envelope).await;
        }
        let delivered = destinations.deliver(destination, ctx, envelope).await?;
        if !destination.route.also_builtin {
            return Ok(Ready::Now(delivered));
        }
        // A failure or a wait here delivers again too: receivers deduplicate by `webhook-id` (the event id).
        let builtin = self.for_kind(kind).handle(ctx, envelope).await?;
        Ok(builtin.map(|builtin| format!("{delivered}; {builtin}")))
    }

    /// An operator's replay for one route (the backfill of a route added later): that route's destination or
    /// chats only, whether or not the route matches the event, and no built-in handler beside it.
    async fn replay_to(
        &self,
        route: &str,
        ctx: &HandlerContext,
        envelope: &Envelope,
    ) -> Result<Ready<String>, HandlerError> {
        let found = self.destinations.as_ref().and_then(|d| d.by_name(route).map(|destination| (d, destination)));
        let Some((destinations, destination)) = found else {
            return Err(HandlerError::Permanent(format!(
                "replayed for route {route:?}, which is not in this worker's routes file (EVENTFLEET_ROUTES_FILE): \
                 add it, restart the workers, then replay this dead letter"
            )));
        };
        if let crate::destinations::routes::Target::Channel(channel) = &destination.route.target {
            let ctx = HandlerContext { channel: Some(channel.clone()), ..ctx.clone() };
            return self.for_kind(envelope.kind().as_str()).handle(&ctx, envelope).await;
        }
        Ok(Ready::Now(destinations.deliver(destination, ctx, envelope).await?))
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
