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

/// Where Slack messages are posted.
#[async_trait]
pub trait SlackSink: Send + Sync {
    /// Posts one message for an event; returns where it went (a message `ts` or an outbox line).
    async fn post_message(&self, event_id: EventId, message: &SlackMessage) -> Result<String, SlackError>;
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
        Ok(Self { http, base: base.trim_end_matches('/').to_owned(), token: token.to_owned() })
    }
}

#[async_trait]
impl SlackSink for SlackWebApi {
    async fn post_message(&self, _event_id: EventId, message: &SlackMessage) -> Result<String, SlackError> {
        let response = self
            .http
            .post(format!("{}/chat.postMessage", self.base))
            .bearer_auth(&self.token)
            .json(message)
            .send()
            .await
            .map_err(|e| SlackError::Retryable {
                message: format!("chat.postMessage: {}", if e.is_timeout() { "timed out" } else { "request failed" }),
                retry_after: None,
            })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(std::time::Duration::from_secs);
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
}
