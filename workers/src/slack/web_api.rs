//! [`SlackWebApi`]: the Slack Web API client (`chat.postMessage`, `chat.update`, and the reads of the
//! exactly-once check: `conversations.history`, `conversations.replies`, `conversations.list`).

use async_trait::async_trait;
use eventfleet_schema::Timestamp;

use super::{METADATA_EVENT_TYPE, PostCheck, PostMark, Posted, SlackError, SlackMessage, SlackSink};

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
        self.send(method, self.http.get(format!("{}/{method}", self.base)).query(query)).await
    }

    /// One Web API call by POST with a JSON body; its answer when `ok`.
    async fn post_json(&self, method: &str, body: &serde_json::Value) -> Result<serde_json::Value, SlackError> {
        self.send(method, self.http.post(format!("{}/{method}", self.base)).json(body)).await
    }

    /// Sends a call with the bot token; its answer classified ([`classify`]).
    async fn send(&self, method: &str, request: reqwest::RequestBuilder) -> Result<serde_json::Value, SlackError> {
        let response = (request.bearer_auth(&self.token).send().await).map_err(|e| SlackError::Retryable {
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

    /// The id of `channel` for a read of its history; the answer to give instead when it cannot be read.
    async fn readable(&self, channel: &str) -> Result<String, Result<PostCheck, SlackError>> {
        match self.channel_id(channel).await {
            Ok(Some(id)) => Ok(id),
            Ok(None) => Err(Ok(PostCheck::Unknown(format!("no channel {channel} in conversations.list")))),
            Err(e) => Err(unknown(e)),
        }
    }

    fn remember(&self, channel: &str, id: &str) {
        if channel != id && is_channel_id(id) {
            self.channel_ids.lock().unwrap_or_else(|e| e.into_inner()).insert(channel.to_owned(), id.to_owned());
        }
    }
}

/// A read of the history that failed: a permanent error (a scope not granted, a channel the bot cannot read) means
/// the sink cannot tell; a rate limit or a transient error is the caller's to wait out.
fn unknown(e: SlackError) -> Result<PostCheck, SlackError> {
    match e {
        SlackError::Permanent(why) => Ok(PostCheck::Unknown(why)),
        waiting => Err(waiting),
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
    let value = response.headers().get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    eventfleet_schema::time::retry_after(value, Timestamp::now_system())
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

    /// `chat.update` (scope `chat:write`, as posting): the channel must be an id; a name is looked up. The
    /// message's metadata becomes the update's mark.
    async fn update_message(
        &self,
        mark: &PostMark,
        channel: &str,
        ts: &str,
        message: &SlackMessage,
    ) -> Result<(), SlackError> {
        let id = self.channel_id(channel).await?.unwrap_or_else(|| channel.to_owned());
        let mut body = serde_json::json!({ "channel": id, "ts": ts, "text": message.text, "metadata": metadata(mark) });
        if let Some(blocks) = &message.blocks {
            body["blocks"] = blocks.clone();
        }
        self.post_json("chat.update", &body).await.map(|_| ())
    }

    /// Reads the message itself (`conversations.history` from and to its `ts`, with `include_all_metadata`;
    /// the scopes of [`SlackSink::find_post`]). A reply in a thread is not in the history: unknown.
    async fn find_update(&self, mark: &PostMark, channel: &str, ts: &str) -> Result<PostCheck, SlackError> {
        let id = match self.readable(channel).await {
            Ok(id) => id,
            Err(answer) => return answer,
        };
        let query = [
            ("channel", id),
            ("latest", ts.to_owned()),
            ("oldest", ts.to_owned()),
            ("inclusive", "true".to_owned()),
            ("limit", "1".to_owned()),
            ("include_all_metadata", "true".to_owned()),
        ];
        let page = match self.call("conversations.history", &query).await {
            Ok(page) => page,
            Err(e) => return unknown(e),
        };
        let found = (page["messages"].as_array().into_iter().flatten()).find(|m| m["ts"].as_str() == Some(ts));
        Ok(match found {
            Some(m) if carries(m, mark, &mark.event_id.to_string()) => PostCheck::Posted(ts.to_owned()),
            Some(_) => PostCheck::NotPosted,
            None => PostCheck::Unknown(format!("message {ts} is not in the history of {channel}")),
        })
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
        until: Option<Timestamp>,
    ) -> Result<PostCheck, SlackError> {
        let id = match self.readable(channel).await {
            Ok(id) => id,
            Err(answer) => return answer,
        };
        let oldest = since.minus(CLOCK_SLACK).as_millis().max(0);
        let oldest = format!("{}.{:03}000", oldest / 1000, oldest % 1000);
        let latest = until.map(|t| {
            let latest = t.plus(CLOCK_SLACK).as_millis().max(0);
            format!("{}.{:03}000", latest / 1000, latest % 1000)
        });
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
            if let Some(latest) = &latest {
                query.push(("latest", latest.clone()));
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
        Ok(PostCheck::Unknown(format!("more than {} messages in {channel} in the event's window", HISTORY_PAGES * 200)))
    }
}
