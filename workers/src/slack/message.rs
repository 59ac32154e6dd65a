//! What a Slack post is: the message, the mark every post carries in its metadata (which event, which of its
//! posts), where it landed, and why it failed.

use eventfleet_schema::EventId;
use serde::{Deserialize, Serialize};

/// A `chat.postMessage` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlackMessage {
    /// Channel name or id.
    pub channel: String,
    /// Text (the notification fallback when blocks are given).
    pub text: String,
    /// Block Kit blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<serde_json::Value>,
    /// Legacy attachments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachments: Option<serde_json::Value>,
    /// The thread to reply in (its parent's `ts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_ts: Option<String>,
}

/// Which post of an event a message is: every post carries it in its metadata, so a later attempt can find the
/// posts an earlier one made. An event makes one `post`; an alarm may also make a `flap` counter, and a
/// digest's flush its `burst`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostMark {
    /// The event.
    pub event_id: EventId,
    /// Which of its posts.
    pub part: String,
}

impl PostMark {
    /// The event's one post.
    pub fn post(event_id: EventId) -> Self {
        Self { event_id, part: "post".into() }
    }

    /// Another of its posts.
    pub fn part(event_id: EventId, part: impl Into<String>) -> Self {
        Self { event_id, part: part.into() }
    }
}

/// Where a post landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    /// The message's `ts` (in the dev outbox, a unique one made up alike).
    pub ts: String,
    /// The channel's id when Slack said it, else the channel as given.
    pub channel: String,
}

impl std::fmt::Display for Posted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ts {} in {}", self.ts, self.channel)
    }
}

/// Why a post failed, classified for the retry decision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlackError {
    /// HTTP 429 or `ratelimited`: not a failure of the event; it waits `retry_after` (Slack's `Retry-After`, 1 s
    /// when it gave none) and runs again.
    #[error("slack: {message} (retry after {} s)", retry_after.as_secs_f64())]
    RateLimited {
        /// What happened.
        message: String,
        /// How long Slack asked to wait.
        retry_after: std::time::Duration,
    },
    /// Timeouts, 5xx: another attempt may succeed.
    #[error("slack: {message}")]
    Retryable {
        /// What happened.
        message: String,
        /// Slack's `Retry-After`, when it said.
        retry_after: Option<std::time::Duration>,
    },
    /// `channel_not_found`, `invalid_auth`, ...: another attempt gets the same answer.
    #[error("slack: {0}")]
    Permanent(String),
}

/// Whether an event's message is already in its channel (what a later attempt asks before posting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostCheck {
    /// It is: the message with this `ts` carries the event's mark.
    Posted(String),
    /// It is not among the channel's messages since the event arrived.
    NotPosted,
    /// The sink cannot tell (a scope not granted, the channel not found): the caller posts, at least once.
    Unknown(String),
}

/// The `event_type` of the message metadata every post carries, with the event id in its payload.
pub const METADATA_EVENT_TYPE: &str = "eventfleet_post";

/// `text` cut to at most `max` bytes on a character boundary, with `suffix` appended when cut (Slack refuses
/// oversized fields; a message that is too long must still be posted).
pub fn truncate(text: &str, max: usize, suffix: &str) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{suffix}", &text[..end])
}
