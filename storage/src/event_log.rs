//! The event log port: every accepted envelope stays readable for a retention window after it is done, so
//! operators can search events and re-drive any of them (docs/architecture.md, "The event log").
//!
//! The accept step writes the envelope (both backends, in the accept's own unit of work or batch); nothing on the
//! worker's path writes here. An event's outcome is read from its trail (the last `succeeded`, `dead_lettered` or
//! `replayed` line), so finishing an event costs no extra write.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use eventfleet_schema::{AuditEntry, Envelope, EventId, Step, Timestamp};
use serde::{Deserialize, Serialize};

use crate::Result;

/// How long done events are kept unless configured (`EVENTFLEET_RETENTION_H`).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(168 * 3600);

/// Most events one [`EventLog::events`] call returns.
pub const MAX_PAGE: usize = 1000;

/// Where an event stands, from its trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Not done yet: queued, running, waiting, or replayed and not yet run again.
    Pending,
    /// Its handler succeeded.
    Succeeded,
    /// Succeeded without posting: a hook's filter left it out.
    Filtered,
    /// Dead-lettered.
    DeadLettered,
}

impl Outcome {
    /// The name operators filter by.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pending => "pending",
            Outcome::Succeeded => "succeeded",
            Outcome::Filtered => "filtered",
            Outcome::DeadLettered => "dead_lettered",
        }
    }

    /// Whether the event is done (its retention window runs).
    pub fn is_done(self) -> bool {
        self != Outcome::Pending
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Outcome {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.replace('-', "_").as_str() {
            "pending" => Ok(Outcome::Pending),
            "succeeded" => Ok(Outcome::Succeeded),
            "filtered" => Ok(Outcome::Filtered),
            "dead_lettered" | "dead" => Ok(Outcome::DeadLettered),
            other => Err(format!("unknown outcome {other:?}: pending, succeeded, filtered or dead_lettered")),
        }
    }
}

/// Whether the log keeps `envelope`: every event from outside, not the fleet's own digest flushes (they post what
/// other events already say, and a replay of the posts they gather replays those events).
pub fn kept(envelope: &Envelope) -> bool {
    !matches!(envelope.source(), eventfleet_schema::Source::Digest { .. })
}

/// The prefix of a handler's outcome when a hook's filter left the event out (`handlers/hook.rs` writes it).
pub const FILTERED_OUTCOME_PREFIX: &str = "filtered";

/// The message attribute naming the operator's replay a message is a copy for (`workers::replay`): the store
/// writes it on the copy's `succeeded` or `dead_lettered` line, so a replay is known to have run whatever the
/// clocks of the operator and the workers say.
pub const REPLAY_ATTRIBUTE: &str = "eventfleet-replay";

/// The trail steps [`outcome_of`] reads.
pub const DECIDING_STEPS: [Step; 3] = [Step::Succeeded, Step::DeadLettered, Step::Replayed];

/// An event's outcome from its trail (in trail order; only the [`DECIDING_STEPS`] lines matter): pending while a
/// `replayed` line is unanswered (no finishing line names its replay, and none comes after it), else the last
/// `succeeded` (a `filtered …` one is [`Outcome::Filtered`]) or `dead_lettered` line, with what it said and when.
pub fn outcome_of(trail: &[AuditEntry]) -> (Outcome, Option<String>, Option<Timestamp>) {
    let finishing = |e: &&AuditEntry| matches!(e.step, Step::Succeeded | Step::DeadLettered);
    let unanswered = trail.iter().enumerate().any(|(i, e)| {
        e.step == Step::Replayed && {
            let id = e.detail["replay"].as_str();
            let named =
                id.is_some_and(|id| trail.iter().filter(finishing).any(|f| f.detail["replay"].as_str() == Some(id)));
            !named && !trail[i + 1..].iter().any(|f| finishing(&f))
        }
    });
    if unanswered {
        return (Outcome::Pending, None, None);
    }
    let Some(line) = trail.iter().rev().find(finishing) else { return (Outcome::Pending, None, None) };
    if line.step == Step::DeadLettered {
        return (Outcome::DeadLettered, line.detail["reason"].as_str().map(str::to_owned), Some(line.at));
    }
    let said = line.detail["outcome"].as_str().map(str::to_owned);
    let outcome = if said.as_deref().is_some_and(|s| s.starts_with(FILTERED_OUTCOME_PREFIX)) {
        Outcome::Filtered
    } else {
        Outcome::Succeeded
    };
    (outcome, said, Some(line.at))
}

/// An event as the log keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedEvent {
    /// The envelope as accepted (body, the headers kept for replay, the verification verdict).
    pub envelope: Envelope,
    /// Its message group.
    pub group: String,
    /// Where it stands.
    pub outcome: Outcome,
    /// What its handler said, or why it was dead-lettered.
    pub outcome_detail: Option<String>,
    /// When it was done.
    pub finished_at: Option<Timestamp>,
}

/// One event in a listing: what the filters see, without the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventSummary {
    /// The event.
    pub event_id: EventId,
    /// When the ingress read it.
    pub received_at: Timestamp,
    /// `slack`, `github`, `hook`, `sns`, `schedule`, `digest`.
    pub source: String,
    /// Its kind.
    pub kind: String,
    /// The hook it arrived on, if any.
    pub hook: Option<String>,
    /// Its message group.
    pub group: String,
    /// Where it stands.
    pub outcome: Outcome,
    /// What its handler said, or why it was dead-lettered.
    pub outcome_detail: Option<String>,
    /// When it was done.
    pub finished_at: Option<Timestamp>,
}

/// Which events to list. Empty fields match everything; a listing is ordered by receipt time, then event id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    /// Received at or after.
    pub since: Option<Timestamp>,
    /// Received before.
    pub until: Option<Timestamp>,
    /// Source name.
    pub source: Option<String>,
    /// Kind, exactly or as a `*` glob (`github.*`).
    pub kind: Option<String>,
    /// Hook id.
    pub hook: Option<String>,
    /// Outcome.
    pub outcome: Option<Outcome>,
    /// Go on after this event (the previous page's [`EventPage::next`]).
    pub after: Option<Cursor>,
    /// At most this many (1 to [`MAX_PAGE`]).
    pub limit: usize,
}

impl EventQuery {
    /// Whether a summary passes the filters that are not the time range.
    pub fn matches(&self, e: &EventSummary) -> bool {
        self.source.as_deref().is_none_or(|s| e.source == s)
            && self.kind.as_deref().is_none_or(|k| glob_match(k, &e.kind))
            && self.hook.as_deref().is_none_or(|h| e.hook.as_deref() == Some(h))
            && self.outcome.is_none_or(|o| e.outcome == o)
            && self.since.is_none_or(|t| e.received_at >= t)
            && self.until.is_none_or(|t| e.received_at < t)
            && self.after.as_ref().is_none_or(|c| (e.received_at, e.event_id) > (c.received_at, c.event_id))
    }
}

/// Where a listing goes on: the last event of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Its receipt time.
    pub received_at: Timestamp,
    /// Its id.
    pub event_id: EventId,
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.received_at.as_millis(), self.event_id)
    }
}

impl FromStr for Cursor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("not a page cursor: {s:?} (use the `next` of the previous page)");
        let (at, id) = s.split_once('.').ok_or_else(bad)?;
        Ok(Cursor {
            received_at: Timestamp::from_millis(at.parse().map_err(|_| bad())?),
            event_id: EventId::parse(id).ok_or_else(bad)?,
        })
    }
}

impl From<&EventSummary> for Cursor {
    fn from(e: &EventSummary) -> Self {
        Cursor { received_at: e.received_at, event_id: e.event_id }
    }
}

/// A page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventPage {
    /// The events, oldest first.
    pub events: Vec<EventSummary>,
    /// Where the next page starts; `None` when this was the last.
    pub next: Option<Cursor>,
}

/// `*`-only glob matching (a kind has no path separators, so no other syntax is needed): `*` matches any run of
/// characters, everything else itself.
pub fn glob_match(glob: &str, text: &str) -> bool {
    let parts: Vec<&str> = glob.split('*').collect();
    let (first, rest) = parts.split_first().unwrap_or((&"", &[]));
    let Some(mut remaining) = text.strip_prefix(first) else { return false };
    let Some((last, middle)) = rest.split_last() else { return remaining.is_empty() };
    for part in middle {
        match remaining.find(part) {
            Some(at) => remaining = &remaining[at + part.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last)
}

/// The retained events.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// How long a done event is kept; `None` when retention is off (nothing is written or found).
    fn retention(&self) -> Option<Duration>;

    /// One page of the events matching `query`, oldest first.
    async fn events(&self, query: &EventQuery) -> Result<EventPage>;

    /// The retained events with these ids, in the order asked (`None` where not retained or past the window).
    async fn get_many(&self, ids: &[EventId]) -> Result<Vec<Option<LoggedEvent>>>;

    /// Deletes up to `max` events whose window has run out; returns how many. The embedded store's bounded
    /// background sweep; DynamoDB's TTL does it by itself there (0).
    async fn sweep(&self, max: usize) -> Result<u64>;
}

/// Whether an event done at `finished` (with `outcome`) is past its window at `now`.
pub fn expired(outcome: Outcome, finished: Option<Timestamp>, retention: Duration, now: Timestamp) -> bool {
    outcome.is_done() && finished.is_some_and(|f| now.since(f) >= retention)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_match_exactly_or_by_glob() {
        assert!(glob_match("github.*", "github.push"));
        assert!(glob_match("github.push", "github.push"));
        assert!(!glob_match("github.push", "github.pushed"));
        assert!(glob_match("*alarm", "sns.cloudwatch_alarm"));
        assert!(!glob_match("sns.*", "github.push"));
    }

    #[test]
    fn cursors_and_outcomes_round_trip() {
        let c = Cursor { received_at: Timestamp::from_millis(1_700_000_000_000), event_id: EventId::new() };
        assert_eq!(c.to_string().parse::<Cursor>().unwrap(), c);
        assert!("nope".parse::<Cursor>().is_err());
        assert_eq!("dead-lettered".parse::<Outcome>().unwrap(), Outcome::DeadLettered);
        assert!("done".parse::<Outcome>().unwrap_err().contains("succeeded"));
    }

    #[test]
    fn the_last_deciding_line_gives_the_outcome() {
        let id = EventId::new();
        let at = Timestamp::from_millis(1_000);
        let ok = AuditEntry::new(id, at, Step::Succeeded, "w").with_detail(serde_json::json!({"outcome": "posted"}));
        let filtered = AuditEntry::new(id, at, Step::Succeeded, "w")
            .with_detail(serde_json::json!({"outcome": "filtered by hook h (x); not posted"}));
        let replayed = AuditEntry::new(id, at, Step::Replayed, "alice");
        assert_eq!(outcome_of(std::slice::from_ref(&ok)).0, Outcome::Succeeded);
        assert_eq!(outcome_of(&[filtered]).0, Outcome::Filtered);
        assert_eq!(outcome_of(&[ok.clone(), replayed.clone()]).0, Outcome::Pending);
        assert_eq!(outcome_of(&[]).0, Outcome::Pending);
        // An operator's clock ahead of the workers': the replay's line sorts after the copy's success, which
        // names the replay: answered.
        let named = |step| {
            AuditEntry::new(id, at, step, "w").with_detail(serde_json::json!({"replay": "r-1", "outcome": "posted"}))
        };
        let ahead = AuditEntry::new(id, Timestamp::from_millis(5_000), Step::Replayed, "alice")
            .with_detail(serde_json::json!({"replay": "r-1"}));
        assert_eq!(outcome_of(&[ok.clone(), named(Step::Succeeded), ahead.clone()]).0, Outcome::Succeeded);
        assert_eq!(outcome_of(&[ok.clone(), ahead.clone()]).0, Outcome::Pending, "not run yet");
        assert_eq!(outcome_of(&[ok, ahead, named(Step::DeadLettered)]).0, Outcome::DeadLettered);
    }
}
