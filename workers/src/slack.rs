//! Where Slack messages go: the [`SlackSink`] port, and [`DevOutbox`], a local JSON-lines file used when no bot
//! token is configured (the operator reads it with `eventfleet outbox`).

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
