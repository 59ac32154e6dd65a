//! Where Slack messages go: the [`SlackSink`] port; [`SlackWebApi`], the `chat.postMessage` client; and
//! [`DevOutbox`], a local JSON-lines file used when no bot token is configured (`eventfleet outbox` reads it).

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use eventfleet_schema::{EventId, Timestamp};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

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
}

/// Why a post failed, classified for the retry decision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlackError {
    /// Timeouts, 5xx, rate limits: another attempt may succeed.
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
    /// It is: this message `ts` (or outbox line) carries the event's id.
    Posted(String),
    /// It is not among the channel's messages since the event arrived.
    NotPosted,
    /// The sink cannot tell (a scope not granted, the channel not found): the caller posts, at least once.
    Unknown(String),
}

/// The `event_type` of the message metadata every post carries, with the event id in its payload.
pub const METADATA_EVENT_TYPE: &str = "eventfleet_post";

/// Where Slack messages are posted.
#[async_trait]
pub trait SlackSink: Send + Sync {
    /// Posts one message for an event, marked with its id; returns where it went (a message `ts` or an outbox
    /// line).
    async fn post_message(&self, event_id: EventId, message: &SlackMessage) -> Result<String, SlackError>;

    /// Whether a message for `event_id` was posted to `channel` at or after `since` (an earlier attempt's post
    /// that landed before its worker died or its answer was lost).
    async fn find_post(&self, event_id: EventId, channel: &str, since: Timestamp) -> Result<PostCheck, SlackError> {
        let _ = (event_id, channel, since);
        Ok(PostCheck::Unknown("this sink keeps no history".into()))
    }
}

/// One line of the dev outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// When it was written.
    pub at: Timestamp,
    /// The event that produced it.
    pub event_id: EventId,
    /// The message that would have been posted.
    pub message: SlackMessage,
}

/// The dev outbox: Slack messages appended as JSON lines to a file, one `write` each, so several processes can
/// share it.
#[derive(Debug)]
pub struct DevOutbox {
    path: PathBuf,
    lock: Mutex<()>,
}

/// The outbox file name inside a data directory.
pub const OUTBOX_FILE: &str = "outbox.jsonl";

impl DevOutbox {
    /// An outbox at `path` (created on first post).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), lock: Mutex::new(()) }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads every entry; a missing file is an empty outbox. Unreadable lines are skipped (a torn last line after
    /// a crash).
    pub fn read(path: &Path) -> std::io::Result<Vec<OutboxEntry>> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl SlackSink for DevOutbox {
    async fn post_message(&self, event_id: EventId, message: &SlackMessage) -> Result<String, SlackError> {
        let entry = OutboxEntry { at: Timestamp::now_system(), event_id, message: message.clone() };
        let mut line = serde_json::to_vec(&entry).map_err(|e| SlackError::Permanent(e.to_string()))?;
        line.push(b'\n');
        let _guard = self.lock.lock().await;
        let io = |e: std::io::Error| SlackError::Retryable {
            message: format!("dev outbox {}: {e}", self.path.display()),
            retry_after: None,
        };
        if let Some(dir) = self.path.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(io)?;
        }
        let mut file = tokio::fs::OpenOptions::new().create(true).append(true).open(&self.path).await.map_err(io)?;
        file.write_all(&line).await.map_err(io)?;
        file.flush().await.map_err(io)?;
        Ok(format!("outbox:{}", self.path.display()))
    }

    async fn find_post(&self, event_id: EventId, channel: &str, _since: Timestamp) -> Result<PostCheck, SlackError> {
        let entries = Self::read(&self.path).map_err(|e| SlackError::Retryable {
            message: format!("dev outbox {}: {e}", self.path.display()),
            retry_after: None,
        })?;
        Ok(match entries.iter().any(|e| e.event_id == event_id && e.message.channel == channel) {
            true => PostCheck::Posted(format!("outbox:{}", self.path.display())),
            false => PostCheck::NotPosted,
        })
    }
}

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

/// Slack error codes where another attempt can succeed; every other `ok: false` answer is permanent
/// (`channel_not_found`, `not_in_channel`, `invalid_blocks`, `invalid_auth`, `account_inactive`, ...).
const RETRYABLE_ERRORS: &[&str] =
    &["ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"];

/// The Slack Web API client for `chat.postMessage`.
#[derive(Clone)]
pub struct SlackWebApi {
    http: reqwest::Client,
    base: String,
    token: String,
    /// Channel names (`#alerts`) to ids (`C0123`), learnt from posts' answers and `conversations.list`:
    /// `conversations.history` takes ids only.
    channel_ids: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>,
}

impl std::fmt::Debug for SlackWebApi {
    /// Never prints the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackWebApi").field("base", &self.base).field("token", &"<redacted>").finish()
    }
}

impl SlackWebApi {
    /// A client for `base` (`https://slack.com/api`, or a local stub in tests) with a bot token and a per-call
    /// timeout.
    pub fn new(base: &str, token: &str, timeout: std::time::Duration) -> Result<Self, SlackError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| SlackError::Permanent(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            channel_ids: Default::default(),
        })
    }

    /// One Web API call by GET (`conversations.*`), its JSON answer when `ok`; Slack's error code otherwise.
    async fn call(&self, method: &str, query: &[(&str, String)]) -> Result<serde_json::Value, SlackError> {
        let response = (self.http.get(format!("{}/{method}", self.base)))
            .bearer_auth(&self.token)
            .query(query)
            .send()
            .await
            .map_err(|e| SlackError::Retryable {
                message: format!("{method}: {}", if e.is_timeout() { "timed out" } else { "request failed" }),
                retry_after: None,
            })?;
        let status = response.status();
        let retry_after = retry_after(&response);
        if status.as_u16() == 429 || status.is_server_error() {
            return Err(SlackError::Retryable { message: format!("{method}: HTTP {}", status.as_u16()), retry_after });
        }
        let body: serde_json::Value = response.json().await.map_err(|e| SlackError::Retryable {
            message: format!("{method}: unreadable answer (HTTP {}): {e}", status.as_u16()),
            retry_after: None,
        })?;
        if body.get("ok").and_then(serde_json::Value::as_bool) == Some(true) {
            return Ok(body);
        }
        let error = body.get("error").and_then(serde_json::Value::as_str).unwrap_or("unknown_error");
        if RETRYABLE_ERRORS.contains(&error) {
            Err(SlackError::Retryable { message: format!("{method}: {error}"), retry_after })
        } else {
            Err(SlackError::Permanent(format!("{method}: {error}")))
        }
    }

    /// The id of a channel given by name or id; `None` when no channel the bot can see has that name.
    async fn channel_id(&self, channel: &str) -> Result<Option<String>, SlackError> {
        if is_channel_id(channel) {
            return Ok(Some(channel.to_owned()));
        }
        if let Some(id) = self.channel_ids.lock().unwrap_or_else(|e| e.into_inner()).get(channel) {
            return Ok(Some(id.clone()));
        }
        let name = channel.trim_start_matches('#');
        let mut cursor = String::new();
        for _ in 0..LIST_PAGES {
            let mut query = vec![
                ("types", "public_channel,private_channel".to_owned()),
                ("exclude_archived", "true".to_owned()),
                ("limit", "1000".to_owned()),
            ];
            if !cursor.is_empty() {
                query.push(("cursor", cursor.clone()));
            }
            let page = self.call("conversations.list", &query).await?;
            let found = (page["channels"].as_array().into_iter().flatten())
                .find(|c| c["name"].as_str() == Some(name))
                .and_then(|c| c["id"].as_str());
            if let Some(id) = found {
                self.remember(channel, id);
                return Ok(Some(id.to_owned()));
            }
            cursor = page["response_metadata"]["next_cursor"].as_str().unwrap_or("").to_owned();
            if cursor.is_empty() {
                break;
            }
        }
        Ok(None)
    }

    fn remember(&self, channel: &str, id: &str) {
        if channel != id && is_channel_id(id) {
            self.channel_ids.lock().unwrap_or_else(|e| e.into_inner()).insert(channel.to_owned(), id.to_owned());
        }
    }
}

/// Pages of `conversations.list` read to find a channel by name (1000 channels each).
const LIST_PAGES: usize = 10;

/// Pages of `conversations.history` read for an earlier attempt's post (200 messages each): a channel that got
/// more than this many messages since the event arrived is not searched further, and the post is made again.
const HISTORY_PAGES: usize = 10;

/// How much earlier than the event's arrival its post is looked for (the clocks of Slack and the ingress differ).
const CLOCK_SLACK: std::time::Duration = std::time::Duration::from_secs(60);

/// `C0123ABCD`, `G...` (private, legacy), `D...` (a DM): Slack's conversation ids, which need no look-up.
fn is_channel_id(channel: &str) -> bool {
    channel.len() >= 9
        && matches!(channel.as_bytes()[0], b'C' | b'G' | b'D')
        && channel.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

fn retry_after(response: &reqwest::Response) -> Option<std::time::Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(std::time::Duration::from_secs)
}

/// The metadata that marks a post as the event's.
fn metadata(event_id: EventId) -> serde_json::Value {
    serde_json::json!({ "event_type": METADATA_EVENT_TYPE, "event_payload": { "event_id": event_id.to_string() } })
}

#[async_trait]
impl SlackSink for SlackWebApi {
    async fn post_message(&self, event_id: EventId, message: &SlackMessage) -> Result<String, SlackError> {
        let mut body = serde_json::to_value(message).map_err(|e| SlackError::Permanent(e.to_string()))?;
        body["metadata"] = metadata(event_id);
        let response = self
            .http
            .post(format!("{}/chat.postMessage", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .map_err(|e| SlackError::Retryable {
                message: format!("chat.postMessage: {}", if e.is_timeout() { "timed out" } else { "request failed" }),
                retry_after: None,
            })?;
        let status = response.status();
        let retry_after = retry_after(&response);
        if status.as_u16() == 429 {
            return Err(SlackError::Retryable {
                message: "chat.postMessage: rate limited (HTTP 429)".into(),
                retry_after,
            });
        }
        if status.is_server_error() {
            return Err(SlackError::Retryable {
                message: format!("chat.postMessage: HTTP {}", status.as_u16()),
                retry_after,
            });
        }
        let body: serde_json::Value = response.json().await.map_err(|e| SlackError::Retryable {
            message: format!("chat.postMessage: unreadable answer (HTTP {}): {e}", status.as_u16()),
            retry_after: None,
        })?;
        if body.get("ok").and_then(serde_json::Value::as_bool) == Some(true) {
            if let Some(id) = body.get("channel").and_then(serde_json::Value::as_str) {
                self.remember(&message.channel, id);
            }
            let ts = body.get("ts").and_then(serde_json::Value::as_str).unwrap_or("");
            return Ok(format!("ts {ts}"));
        }
        let error = body.get("error").and_then(serde_json::Value::as_str).unwrap_or("unknown_error");
        if RETRYABLE_ERRORS.contains(&error) {
            Err(SlackError::Retryable { message: format!("chat.postMessage: {error}"), retry_after })
        } else {
            Err(SlackError::Permanent(format!("chat.postMessage: {error}")))
        }
    }

    /// Reads the channel's messages since the event arrived (`conversations.history` with
    /// `include_all_metadata`, scopes `channels:history` and `groups:history`; a channel given by name is found
    /// with `conversations.list`, scopes `channels:read` and `groups:read`). Without those scopes, or for a
    /// channel the bot cannot read, the answer is [`PostCheck::Unknown`].
    async fn find_post(&self, event_id: EventId, channel: &str, since: Timestamp) -> Result<PostCheck, SlackError> {
        let unknown = |e: SlackError| match e {
            SlackError::Permanent(why) => Ok(PostCheck::Unknown(why)),
            retryable => Err(retryable),
        };
        let id = match self.channel_id(channel).await {
            Ok(Some(id)) => id,
            Ok(None) => return Ok(PostCheck::Unknown(format!("no channel {channel} in conversations.list"))),
            Err(e) => return unknown(e),
        };
        let oldest = since.minus(CLOCK_SLACK).as_millis().max(0);
        let oldest = format!("{}.{:03}000", oldest / 1000, oldest % 1000);
        let wanted = event_id.to_string();
        let mut cursor = String::new();
        for _ in 0..HISTORY_PAGES {
            let mut query = vec![
                ("channel", id.clone()),
                ("oldest", oldest.clone()),
                ("limit", "200".to_owned()),
                ("include_all_metadata", "true".to_owned()),
            ];
            if !cursor.is_empty() {
                query.push(("cursor", cursor.clone()));
            }
            let page = match self.call("conversations.history", &query).await {
                Ok(page) => page,
                Err(e) => return unknown(e),
            };
            let found = (page["messages"].as_array().into_iter().flatten()).find(|m| {
                m["metadata"]["event_type"].as_str() == Some(METADATA_EVENT_TYPE)
                    && m["metadata"]["event_payload"]["event_id"].as_str() == Some(wanted.as_str())
            });
            if let Some(m) = found {
                return Ok(PostCheck::Posted(format!("ts {}", m["ts"].as_str().unwrap_or(""))));
            }
            cursor = page["response_metadata"]["next_cursor"].as_str().unwrap_or("").to_owned();
            if cursor.is_empty() || page["has_more"].as_bool() == Some(false) {
                return Ok(PostCheck::NotPosted);
            }
        }
        Ok(PostCheck::Unknown(format!("more than {} messages in {channel} since the event", HISTORY_PAGES * 200)))
    }
}
