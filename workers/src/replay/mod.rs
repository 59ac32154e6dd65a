//! Operator replays: of dead letters ([`dead_letters`]) and of any retained event ([`events`], the event log's
//! re-drive, e.g. to backfill a route added later), and the [`Replay`] instruction a replayed message carries
//! to the worker that runs it.
//!
//! What a replay does to a chat (docs/architecture.md, "Replaying any event"): by default a replayed event runs
//! like a later attempt of itself, so every post, reply, update and Teams card looks first and is made only where
//! it is missing: replaying twice by accident posts nothing twice. `post_again` asks for new messages: the
//! replay's own marks (its id) make them, once each however often that replay's attempts run.

use std::collections::BTreeMap;
use std::time::Duration;

pub mod dead_letters;
pub mod events;

pub use dead_letters::{ReplayOptions, ReplayOutcome, replay};

/// The message attribute that names the replay a message belongs to (the store writes it on the copy's finishing
/// line).
const ATTR_ID: &str = eventfleet_storage::event_log::REPLAY_ATTRIBUTE;
/// The route the replay is for (absent: every handler, as a first delivery).
const ATTR_ROUTE: &str = "eventfleet-replay-route";
/// Present when the operator asked for new messages in the chats.
const ATTR_POST_AGAIN: &str = "eventfleet-replay-post-again";
/// When the event was last done before the replay (Unix ms): where a look for its earlier posts ends.
const ATTR_DONE_AT: &str = "eventfleet-replay-done-at";

/// What a replayed message carries to its worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// The replay run's id (`r-` and a UUIDv7), on every event's `replayed` line.
    pub id: String,
    /// Only this route's destination (or chats) runs; `None`: every handler, as the first delivery did.
    pub route: Option<String>,
    /// Post new messages rather than look for the ones made before.
    pub post_again: bool,
    /// When the event was last done before the replay (each copy's own).
    pub done_at: Option<eventfleet_schema::Timestamp>,
}

impl Replay {
    /// A new replay run.
    pub fn new(route: Option<String>, post_again: bool) -> Self {
        Self { id: format!("r-{}", eventfleet_schema::DedupId::fresh().as_str()), route, post_again, done_at: None }
    }

    /// What a replayed dead letter runs as (`dlq replay` sends no attributes): every handler, looking before it
    /// posts.
    pub fn dead_letter() -> Self {
        Self { id: "dlq".to_owned(), route: None, post_again: false, done_at: None }
    }

    /// The message attributes that carry it.
    pub fn attributes(&self) -> BTreeMap<String, String> {
        let mut attributes = BTreeMap::from([(ATTR_ID.to_owned(), self.id.clone())]);
        if let Some(route) = &self.route {
            attributes.insert(ATTR_ROUTE.to_owned(), route.clone());
        }
        if self.post_again {
            attributes.insert(ATTR_POST_AGAIN.to_owned(), "true".to_owned());
        }
        if let Some(done_at) = self.done_at {
            attributes.insert(ATTR_DONE_AT.to_owned(), done_at.as_millis().to_string());
        }
        attributes
    }

    /// The replay a received message belongs to, if any.
    pub fn of(attributes: &BTreeMap<String, String>) -> Option<Self> {
        Some(Self {
            id: attributes.get(ATTR_ID)?.clone(),
            route: attributes.get(ATTR_ROUTE).cloned(),
            post_again: attributes.get(ATTR_POST_AGAIN).is_some_and(|v| v == "true"),
            done_at: attributes
                .get(ATTR_DONE_AT)
                .and_then(|v| v.parse().ok())
                .map(eventfleet_schema::Timestamp::from_millis),
        })
    }

    /// The suffix of a post's mark under `post_again` (a new message per replay run), else none.
    pub fn mark_suffix(&self) -> Option<&str> {
        self.post_again.then_some(self.id.as_str())
    }
}

/// Items per chunk and the pause between chunks for `rate` items a second: a chunk holds one second's worth (at
/// most `most`), so `n` items take about `n / rate` seconds. No rate (or one too small to express): full chunks,
/// no pause.
pub(crate) fn pacing(rate: Option<f64>, most: usize) -> (usize, Option<Duration>) {
    let rate = rate.filter(|r| *r > 0.0 && r.is_finite());
    let chunk = rate.map_or(most, |r| (r.floor() as usize).clamp(1, most));
    let pause = rate.and_then(|r| Duration::try_from_secs_f64(chunk as f64 / r).ok());
    (chunk, pause)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_round_trips_through_message_attributes() {
        let r = Replay {
            done_at: Some(eventfleet_schema::Timestamp::from_millis(1_700_000_000_123)),
            ..Replay::new(Some("backfill".into()), true)
        };
        assert_eq!(Replay::of(&r.attributes()), Some(r.clone()));
        assert_eq!(r.mark_suffix(), Some(r.id.as_str()));
        let plain = Replay::new(None, false);
        assert_eq!(Replay::of(&plain.attributes()).unwrap().mark_suffix(), None);
        assert_eq!(Replay::of(&BTreeMap::from([("traceparent".into(), "x".into())])), None);
    }

    #[test]
    fn a_rate_spaces_chunks_of_a_seconds_worth() {
        assert_eq!(pacing(Some(5.0), 50), (5, Some(Duration::from_secs(1))));
        assert_eq!(pacing(Some(0.5), 50), (1, Some(Duration::from_secs(2))));
        assert_eq!(pacing(Some(500.0), 50), (50, Some(Duration::from_millis(100))));
        assert_eq!(pacing(None, 50), (50, None));
        assert_eq!(pacing(Some(f64::NAN), 50), (50, None));
    }
}
