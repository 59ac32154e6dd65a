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
    /// The thread to reply in (its parent's `ts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_ts: Option<String>,
}

/// Which post of an event a message is: every post carries it in its metadata, so a later attempt can find the
/// posts an earlier one made. An event makes one `post`; an alarm may also make a storm `digest`, a `flap`
/// counter and `backlink:<alarm>` replies.
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

/// Where Slack messages are posted.
#[async_trait]
pub trait SlackSink: Send + Sync {
    /// Posts one message (a reply when it has a `thread_ts`), marked; returns where it landed.
    async fn post_message(&self, mark: &PostMark, message: &SlackMessage) -> Result<Posted, SlackError>;

    /// Replaces the message `ts` of `channel` (an id, as [`Posted::channel`] has it) with `message`
    /// (`chat.update`).
    async fn update_message(&self, channel: &str, ts: &str, message: &SlackMessage) -> Result<(), SlackError>;

    /// Whether a message with `mark` was posted to `channel` (in the thread `thread_ts`, when given) at or after
    /// `since` (an earlier attempt's post that landed before its worker died or its answer was lost).
    async fn find_post(
        &self,
        mark: &PostMark,
        channel: &str,
        thread_ts: Option<&str>,
        since: Timestamp,
    ) -> Result<PostCheck, SlackError> {
        let _ = (mark, channel, thread_ts, since);
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

    async fn update_message(&self, channel: &str, ts: &str, message: &SlackMessage) -> Result<(), SlackError> {
        let entries = Self::read(&self.path).map_err(|e| SlackError::Retryable {
            message: format!("dev outbox {}: {e}", self.path.display()),
            retry_after: None,
        })?;
        let Some(original) = entries.iter().find(|e| e.ts == ts && e.updates.is_none()) else {
            return Err(SlackError::Permanent("chat.update: message_not_found".into()));
        };
        let entry = OutboxEntry {
            at: Timestamp::now_system(),
            event_id: original.event_id,
            part: original.part.clone(),
            ts: self.next_ts(),
            updates: Some(ts.to_owned()),
            message: SlackMessage { channel: channel.to_owned(), ..message.clone() },
        };
        self.append(&entry).await
    }

    async fn find_post(
        &self,
        mark: &PostMark,
        channel: &str,
        thread_ts: Option<&str>,
        _since: Timestamp,
    ) -> Result<PostCheck, SlackError> {
        let entries = Self::read(&self.path).map_err(|e| SlackError::Retryable {
            message: format!("dev outbox {}: {e}", self.path.display()),
            retry_after: None,
        })?;
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
const RETRYABLE_ERRORS: &[&str] = &["internal_error", "fatal_error", "service_unavailable", "request_timeout"];

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
        classify(method, status, retry_after, None)?;
        let body: serde_json::Value = response.json().await.map_err(|e| SlackError::Retryable {
            message: format!("{method}: unreadable answer (HTTP {}): {e}", status.as_u16()),
            retry_after: None,
        })?;
        classify(method, status, retry_after, Some(&body))?;
        Ok(body)
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
fn metadata(mark: &PostMark) -> serde_json::Value {
    serde_json::json!({
        "event_type": METADATA_EVENT_TYPE,
        "event_payload": { "event_id": mark.event_id.to_string(), "part": mark.part },
    })
}

/// Whether a message read back from Slack carries `mark` (posts made before parts existed are `post`s).
fn carries(message: &serde_json::Value, mark: &PostMark, event_id: &str) -> bool {
    let meta = &message["metadata"];
    meta["event_type"].as_str() == Some(METADATA_EVENT_TYPE)
        && meta["event_payload"]["event_id"].as_str() == Some(event_id)
        && meta["event_payload"]["part"].as_str().unwrap_or("post") == mark.part
}

/// Slack's answer classified: HTTP 429 and `ratelimited` wait; 5xx, timeouts and the retryable codes retry;
/// every other `ok: false` is permanent.
fn classify(
    method: &str,
    status: reqwest::StatusCode,
    retry_after: Option<std::time::Duration>,
    body: Option<&serde_json::Value>,
) -> Result<(), SlackError> {
    let wait = retry_after.unwrap_or(std::time::Duration::from_secs(1));
    if status.as_u16() == 429 {
        return Err(SlackError::RateLimited {
            message: format!("{method}: rate limited (HTTP 429)"),
            retry_after: wait,
        });
    }
    if status.is_server_error() {
        return Err(SlackError::Retryable { message: format!("{method}: HTTP {}", status.as_u16()), retry_after });
    }
    let Some(body) = body else { return Ok(()) };
    if body.get("ok").and_then(serde_json::Value::as_bool) == Some(true) {
        return Ok(());
    }
    let error = body.get("error").and_then(serde_json::Value::as_str).unwrap_or("unknown_error");
    if matches!(error, "ratelimited" | "rate_limited") {
        Err(SlackError::RateLimited { message: format!("{method}: {error}"), retry_after: wait })
    } else if RETRYABLE_ERRORS.contains(&error) {
        Err(SlackError::Retryable { message: format!("{method}: {error}"), retry_after })
    } else {
        Err(SlackError::Permanent(format!("{method}: {error}")))
    }
}

impl SlackWebApi {
    /// One Web API call by POST with a JSON body; its answer when `ok`.
    async fn post_json(&self, method: &str, body: &serde_json::Value) -> Result<serde_json::Value, SlackError> {
        let response = (self.http.post(format!("{}/{method}", self.base)))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .map_err(|e| SlackError::Retryable {
                message: format!("{method}: {}", if e.is_timeout() { "timed out" } else { "request failed" }),
                retry_after: None,
            })?;
        let status = response.status();
        let retry_after = retry_after(&response);
        classify(method, status, retry_after, None)?;
        let answer: serde_json::Value = response.json().await.map_err(|e| SlackError::Retryable {
            message: format!("{method}: unreadable answer (HTTP {}): {e}", status.as_u16()),
            retry_after: None,
        })?;
        classify(method, status, retry_after, Some(&answer))?;
        Ok(answer)
    }
}

#[async_trait]
impl SlackSink for SlackWebApi {
    async fn post_message(&self, mark: &PostMark, message: &SlackMessage) -> Result<Posted, SlackError> {
        let mut body = serde_json::to_value(message).map_err(|e| SlackError::Permanent(e.to_string()))?;
        body["metadata"] = metadata(mark);
        let answer = self.post_json("chat.postMessage", &body).await?;
        let channel = answer.get("channel").and_then(serde_json::Value::as_str).unwrap_or(&message.channel);
        self.remember(&message.channel, channel);
        let ts = answer.get("ts").and_then(serde_json::Value::as_str).unwrap_or("").to_owned();
        Ok(Posted { ts, channel: channel.to_owned() })
    }

    /// `chat.update` (scope `chat:write`, as posting): the channel must be an id; a name is looked up.
    async fn update_message(&self, channel: &str, ts: &str, message: &SlackMessage) -> Result<(), SlackError> {
        let id = self.channel_id(channel).await?.unwrap_or_else(|| channel.to_owned());
        let mut body = serde_json::json!({ "channel": id, "ts": ts, "text": message.text });
        if let Some(blocks) = &message.blocks {
            body["blocks"] = blocks.clone();
        }
        self.post_json("chat.update", &body).await.map(|_| ())
    }

    /// Reads the channel's messages since the event arrived (`conversations.history`, or `conversations.replies`
    /// for a thread, with `include_all_metadata`; scopes `channels:history` and `groups:history`; a channel given
    /// by name is found with `conversations.list`, scopes `channels:read` and `groups:read`). Without those
    /// scopes, or for a channel the bot cannot read, the answer is [`PostCheck::Unknown`].
    async fn find_post(
        &self,
        mark: &PostMark,
        channel: &str,
        thread_ts: Option<&str>,
        since: Timestamp,
    ) -> Result<PostCheck, SlackError> {
        let unknown = |e: SlackError| match e {
            SlackError::Permanent(why) => Ok(PostCheck::Unknown(why)),
            waiting => Err(waiting),
        };
        let id = match self.channel_id(channel).await {
            Ok(Some(id)) => id,
            Ok(None) => return Ok(PostCheck::Unknown(format!("no channel {channel} in conversations.list"))),
            Err(e) => return unknown(e),
        };
        let oldest = since.minus(CLOCK_SLACK).as_millis().max(0);
        let oldest = format!("{}.{:03}000", oldest / 1000, oldest % 1000);
        let wanted = mark.event_id.to_string();
        let method = if thread_ts.is_some() { "conversations.replies" } else { "conversations.history" };
        let mut cursor = String::new();
        for _ in 0..HISTORY_PAGES {
            let mut query = vec![
                ("channel", id.clone()),
                ("oldest", oldest.clone()),
                ("limit", "200".to_owned()),
                ("include_all_metadata", "true".to_owned()),
            ];
            if let Some(thread) = thread_ts {
                query.push(("ts", thread.to_owned()));
            }
            if !cursor.is_empty() {
                query.push(("cursor", cursor.clone()));
            }
            let page = match self.call(method, &query).await {
                Ok(page) => page,
                Err(e) => return unknown(e),
            };
            let found = (page["messages"].as_array().into_iter().flatten())
                .filter(|m| thread_ts.is_none() || m["ts"].as_str() != thread_ts)
                .find(|m| carries(m, mark, &wanted));
            if let Some(m) = found {
                return Ok(PostCheck::Posted(m["ts"].as_str().unwrap_or("").to_owned()));
            }
            cursor = page["response_metadata"]["next_cursor"].as_str().unwrap_or("").to_owned();
            if cursor.is_empty() || page["has_more"].as_bool() == Some(false) {
                return Ok(PostCheck::NotPosted);
            }
        }
        Ok(PostCheck::Unknown(format!("more than {} messages in {channel} since the event", HISTORY_PAGES * 200)))
    }
}
