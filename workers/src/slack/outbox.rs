//! [`DevOutbox`]: Slack messages as JSON lines in a local file, used when no bot token is configured
//! (`eventfleet outbox` reads it).

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use eventfleet_schema::{EventId, Timestamp};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use super::{PostCheck, PostMark, Posted, SlackError, SlackMessage, SlackSink};

/// One line of the dev outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// When it was written.
    pub at: Timestamp,
    /// The event that produced it.
    pub event_id: EventId,
    /// Which of the event's posts ([`PostMark::part`]).
    #[serde(default = "post_part")]
    pub part: String,
    /// The message's made-up `ts` (replies name it as `thread_ts`).
    #[serde(default)]
    pub ts: String,
    /// For a `chat.update`: the `ts` of the message it replaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updates: Option<String>,
    /// The message that would have been posted.
    pub message: SlackMessage,
}

fn post_part() -> String {
    "post".into()
}

/// The dev outbox: Slack messages appended as JSON lines to a file, one `write` each, so several processes can
/// share it.
#[derive(Debug)]
pub struct DevOutbox {
    path: PathBuf,
    lock: Mutex<()>,
    /// The last `ts` made, in microseconds: unique and rising, as Slack's are.
    last_ts: std::sync::atomic::AtomicU64,
}

/// The outbox file name inside a data directory.
pub const OUTBOX_FILE: &str = "outbox.jsonl";

impl DevOutbox {
    /// An outbox at `path` (created on first post).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), lock: Mutex::new(()), last_ts: Default::default() }
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

impl DevOutbox {
    /// Every entry, a read failure as a retryable error.
    fn entries(&self) -> Result<Vec<OutboxEntry>, SlackError> {
        Self::read(&self.path).map_err(|e| SlackError::Retryable {
            message: format!("dev outbox {}: {e}", self.path.display()),
            retry_after: None,
        })
    }

    fn next_ts(&self) -> String {
        use std::sync::atomic::Ordering;
        let now = Timestamp::now_system().as_millis().max(0) as u64 * 1000;
        let mut last = self.last_ts.load(Ordering::Relaxed);
        loop {
            let next = now.max(last + 1);
            match self.last_ts.compare_exchange(last, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return format!("{}.{:06}", next / 1_000_000, next % 1_000_000),
                Err(seen) => last = seen,
            }
        }
    }

    async fn append(&self, entry: &OutboxEntry) -> Result<(), SlackError> {
        let mut line = serde_json::to_vec(entry).map_err(|e| SlackError::Permanent(e.to_string()))?;
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
        Ok(())
    }
}

#[async_trait]
impl SlackSink for DevOutbox {
    async fn post_message(&self, mark: &PostMark, message: &SlackMessage) -> Result<Posted, SlackError> {
        let ts = self.next_ts();
        let entry = OutboxEntry {
            at: Timestamp::now_system(),
            event_id: mark.event_id,
            part: mark.part.clone(),
            ts: ts.clone(),
            updates: None,
            message: message.clone(),
        };
        self.append(&entry).await?;
        Ok(Posted { ts, channel: message.channel.clone() })
    }

    async fn update_message(
        &self,
        mark: &PostMark,
        channel: &str,
        ts: &str,
        message: &SlackMessage,
    ) -> Result<(), SlackError> {
        let entries = self.entries()?;
        if !entries.iter().any(|e| e.ts == ts && e.updates.is_none()) {
            return Err(SlackError::Permanent("chat.update: message_not_found".into()));
        }
        // The update's line names the event that made it, as its metadata does in Slack.
        let entry = OutboxEntry {
            at: Timestamp::now_system(),
            event_id: mark.event_id,
            part: mark.part.clone(),
            ts: self.next_ts(),
            updates: Some(ts.to_owned()),
            message: SlackMessage { channel: channel.to_owned(), ..message.clone() },
        };
        self.append(&entry).await
    }

    async fn find_update(&self, mark: &PostMark, _channel: &str, ts: &str) -> Result<PostCheck, SlackError> {
        let entries = self.entries()?;
        // The message as it stands is its last update.
        let last = entries.iter().rev().find(|e| e.updates.as_deref() == Some(ts));
        Ok(match last {
            Some(e) if e.event_id == mark.event_id && e.part == mark.part => PostCheck::Posted(ts.to_owned()),
            _ => PostCheck::NotPosted,
        })
    }

    async fn find_post(
        &self,
        mark: &PostMark,
        channel: &str,
        thread_ts: Option<&str>,
        _since: Timestamp,
        _until: Option<Timestamp>,
    ) -> Result<PostCheck, SlackError> {
        let entries = self.entries()?;
        let found = entries.iter().find(|e| {
            e.event_id == mark.event_id
                && e.part == mark.part
                && e.updates.is_none()
                && e.message.channel == channel
                && e.message.thread_ts.as_deref() == thread_ts
        });
        Ok(match found {
            Some(e) => PostCheck::Posted(e.ts.clone()),
            None => PostCheck::NotPosted,
        })
    }
}
