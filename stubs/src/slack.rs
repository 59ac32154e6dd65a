//! A local stand-in for the Slack Web API (`POST /chat.postMessage` and `/chat.update`, `GET
//! /conversations.history`, `/conversations.replies` and `/conversations.list`), the one external service the
//! tests replace. It records every request it answers and
//! can be told, per channel, to fail: an HTTP status, a Slack error (`channel_not_found`, `ratelimited` with
//! `Retry-After`), a slow answer, or an answer lost after the message landed. Like Slack, it gives each message a
//! unique `ts`, answers with the channel's id, keeps each channel's messages with their metadata, puts a message
//! with a `thread_ts` in that thread (not in the channel's history), updates a message in place given the
//! channel's id and its `ts`, and refuses history without its scope when told to.
//!
//! [`SlackStub::with_socket_mode`] also serves `apps.connections.open` and a Socket Mode server ([`socket`]).

pub mod socket;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::Query;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// How the stub answers one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `{"ok": true}`.
    Ok,
    /// This HTTP status with an empty body.
    Http(u16),
    /// `{"ok": false, "error": <code>}` (HTTP 200, as Slack does).
    SlackError(&'static str),
    /// HTTP 429 with `Retry-After: <secs>`.
    RateLimited(u64),
    /// Wait, then answer `{"ok": true}`.
    Slow(Duration),
    /// The message lands in the channel at once, but the answer comes only after this long: what a worker that
    /// dies (or times out) between Slack's acceptance and its own record of it sees.
    Accepted(Duration),
}

#[derive(Default)]
struct Inner {
    /// Every request: (channel, body, authorization header).
    requests: Vec<(String, Value, String)>,
    /// Successful posts.
    posted: Vec<Value>,
    /// Scripted answers per channel, used in order; then `always`, then `Ok`.
    script: HashMap<String, VecDeque<Reply>>,
    always: HashMap<String, Reply>,
    /// Each channel's messages, by channel id, oldest first.
    history: HashMap<String, Vec<Value>>,
    /// Channel names seen in posts, to their ids.
    names: HashMap<String, String>,
    /// The last message's `ts`, in microseconds.
    sequence: u64,
    /// Every `conversations.history` request: (channel id, query).
    history_requests: Vec<(String, HashMap<String, String>)>,
    /// The error `conversations.*` answer with, when set (`missing_scope`).
    history_error: Option<&'static str>,
    /// Thread replies by (channel id, thread ts), oldest first.
    replies: HashMap<(String, String), Vec<Value>>,
    /// Every `chat.update` accepted, in order.
    updates: Vec<Value>,
    /// When each post request arrived, by channel as given: (when, answered ok).
    arrivals: Vec<(String, std::time::Instant, bool)>,
    /// Slack's limit of `chat.postMessage` per channel, when enforced.
    limit: Option<Limit>,
    /// Each channel's place in the limit (GCRA's theoretical arrival time), by channel id.
    limit_tat: HashMap<String, std::time::Instant>,
    /// Posts answered 429 by the limit.
    limited: u64,
}

/// Slack's documented limit for `chat.postMessage`: about one message per second per channel, short bursts
/// allowed; past it, `429` with `Retry-After`.
#[derive(Debug, Clone, Copy)]
struct Limit {
    interval: Duration,
    burst: u32,
}

impl Inner {
    /// Whether a post to channel `id` now is within the limit; else the whole seconds to wait (at least 1).
    fn within_limit(&mut self, id: &str) -> Result<(), u64> {
        let Some(Limit { interval, burst }) = self.limit else { return Ok(()) };
        let now = std::time::Instant::now();
        let tat = self.limit_tat.get(id).copied().unwrap_or(now).max(now);
        let allowed_at = tat.checked_sub(interval * burst.saturating_sub(1)).unwrap_or(now);
        if allowed_at > now {
            self.limited += 1;
            return Err((allowed_at - now).as_secs_f64().ceil().max(1.0) as u64);
        }
        self.limit_tat.insert(id.to_owned(), tat + interval);
        Ok(())
    }
}

impl Inner {
    /// Lands a message in its channel: a unique `ts`, kept with its metadata. Returns (channel id, ts).
    fn land(&mut self, channel: &str, body: &Value) -> (String, String) {
        self.posted.push(body.clone());
        // Slack's ts is the time the message landed, in microseconds, unique in its channel: so here, always rising.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        self.sequence = (now.as_micros() as u64).max(self.sequence + 1);
        let ts = format!("{}.{:06}", self.sequence / 1_000_000, self.sequence % 1_000_000);
        let id = channel_id(channel);
        if id != channel {
            self.names.insert(channel.trim_start_matches('#').to_owned(), id.clone());
        }
        let mut message = json!({"type": "message", "ts": ts, "text": body.get("text").cloned().unwrap_or_default()});
        if let Some(blocks) = body.get("blocks") {
            message["blocks"] = blocks.clone();
        }
        if let Some(metadata) = body.get("metadata") {
            message["metadata"] = metadata.clone();
        }
        match body.get("thread_ts").and_then(Value::as_str) {
            Some(thread) => {
                message["thread_ts"] = json!(thread);
                self.replies.entry((id.clone(), thread.to_owned())).or_default().push(message);
            }
            None => self.history.entry(id.clone()).or_default().push(message),
        }
        (id, ts)
    }

    /// The stored message `ts` of channel `id`: a parent or a reply.
    fn message_mut(&mut self, id: &str, ts: &str) -> Option<&mut Value> {
        let in_history = self.history.get(id).is_some_and(|h| h.iter().any(|m| m["ts"] == ts));
        if in_history {
            return self.history.get_mut(id)?.iter_mut().find(|m| m["ts"] == ts);
        }
        (self.replies.iter_mut())
            .filter(|((channel, _), _)| channel == id)
            .flat_map(|(_, replies)| replies.iter_mut())
            .find(|m| m["ts"] == ts)
    }
}

/// The id Slack would give a channel named so (an id stays as it is).
fn channel_id(channel: &str) -> String {
    let is_id = channel.len() >= 9 && channel.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    if is_id {
        return channel.to_owned();
    }
    // FNV-1a: stable across runs, so a test can predict it.
    let hash = channel
        .trim_start_matches('#')
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3));
    format!("C{:010X}", hash % 0xFF_FFFF_FFFF)
}

/// A running stub.
#[derive(Clone)]
pub struct SlackStub {
    /// `http://127.0.0.1:port` (use as `EVENTFLEET_SLACK_API_URL`).
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

impl SlackStub {
    /// Starts a stub on 127.0.0.1 on a free port, serving until the runtime stops.
    pub async fn start() -> std::io::Result<Self> {
        Self::serve(axum::Router::new()).await
    }

    /// A stub that also plays Slack's Socket Mode: `apps.connections.open` on the same URL hands out connections
    /// to the returned [`socket::SocketStub`].
    pub async fn with_socket_mode() -> std::io::Result<(Self, socket::SocketStub)> {
        let socket = socket::SocketStub::start().await?;
        let extra = axum::Router::new()
            .route("/apps.connections.open", post(socket::connections_open))
            .with_state(socket.clone());
        Ok((Self::serve(extra).await?, socket))
    }

    async fn serve(extra: axum::Router) -> std::io::Result<Self> {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = axum::Router::new()
            .route("/chat.postMessage", post(post_message))
            .route("/chat.update", post(update))
            .route("/conversations.history", get(history))
            .route("/conversations.replies", get(replies))
            .route("/conversations.list", get(list))
            .with_state(inner.clone())
            .merge(extra);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, inner })
    }

    /// Answers the next requests for `channel` with `replies`, in order.
    pub fn script(&self, channel: &str, replies: impl IntoIterator<Item = Reply>) {
        self.lock().script.entry(channel.to_owned()).or_default().extend(replies);
    }

    /// Answers every request for `channel` with `reply` (after any script).
    pub fn always(&self, channel: &str, reply: Reply) {
        self.lock().always.insert(channel.to_owned(), reply);
    }

    /// Back to answering `ok` for `channel`.
    pub fn recover(&self, channel: &str) {
        let mut inner = self.lock();
        inner.always.remove(channel);
        inner.script.remove(channel);
    }

    /// Requests received for `channel` (answered or not).
    pub fn requests(&self, channel: &str) -> usize {
        self.lock().requests.iter().filter(|(c, _, _)| c == channel).count()
    }

    /// Every request received, any channel.
    pub fn total_requests(&self) -> usize {
        self.lock().requests.len()
    }

    /// Messages accepted (`ok: true`), in order.
    pub fn posted(&self) -> Vec<Value> {
        self.lock().posted.clone()
    }

    /// The messages of a channel (by name or id), oldest first, as `conversations.history` has them.
    pub fn history(&self, channel: &str) -> Vec<Value> {
        self.lock().history.get(&channel_id(channel)).cloned().unwrap_or_default()
    }

    /// The replies in the thread `thread_ts` of a channel (by name or id), oldest first.
    pub fn replies(&self, channel: &str, thread_ts: &str) -> Vec<Value> {
        self.lock().replies.get(&(channel_id(channel), thread_ts.to_owned())).cloned().unwrap_or_default()
    }

    /// Every `chat.update` accepted, in order (each with its `channel` id and `ts`).
    pub fn updates(&self) -> Vec<Value> {
        self.lock().updates.clone()
    }

    /// The `chat.postMessage` requests for `channel`: when each arrived, and whether it was answered `ok`.
    pub fn arrivals(&self, channel: &str) -> Vec<(std::time::Instant, bool)> {
        self.lock().arrivals.iter().filter(|(c, _, _)| c == channel).map(|(_, at, ok)| (*at, *ok)).collect()
    }

    /// `conversations.history` requests received.
    pub fn history_requests(&self) -> usize {
        self.lock().history_requests.len()
    }

    /// Lets `d` pass at Slack: the messages that land from now on get a `ts` at least that much later than the last
    /// one (days of a channel's chatter in a test that takes seconds).
    pub fn pass_time(&self, d: Duration) {
        let mut inner = self.lock();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        inner.sequence = inner.sequence.max(now.as_micros() as u64) + d.as_micros() as u64;
    }

    /// Answers `conversations.history` and `conversations.list` with this Slack error from now on
    /// (`missing_scope`: the app was not granted `channels:history`).
    pub fn refuse_history(&self, error: &'static str) {
        self.lock().history_error = Some(error);
    }

    /// The `Authorization` headers seen.
    pub fn authorizations(&self) -> Vec<String> {
        self.lock().requests.iter().map(|(_, _, a)| a.clone()).collect()
    }

    /// Enforces Slack's limit on `chat.postMessage` from now on: per channel, one post per `interval` with
    /// `burst` at once; past it the post is refused with `429` and `Retry-After` (whole seconds, at least 1), as
    /// Slack does. Slack documents about one message per second per channel with short bursts.
    pub fn enforce_limit(&self, interval: Duration, burst: u32) {
        self.lock().limit = Some(Limit { interval, burst: burst.max(1) });
    }

    /// The id this stub gives the channel named `channel` (scripts for `chat.update` name channels by id).
    pub fn channel_id(&self, channel: &str) -> String {
        channel_id(channel)
    }

    /// Posts the enforced limit answered `429`.
    pub fn limited(&self) -> u64 {
        self.lock().limited
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn post_message(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let channel = body.get("channel").and_then(Value::as_str).unwrap_or("").to_owned();
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let reply = {
        let mut inner = inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.requests.push((channel.clone(), body.clone(), auth));
        let scripted = inner.script.get_mut(&channel).and_then(VecDeque::pop_front);
        let mut reply = scripted.or_else(|| inner.always.get(&channel).cloned()).unwrap_or(Reply::Ok);
        if matches!(reply, Reply::Ok | Reply::Slow(_) | Reply::Accepted(_))
            && let Err(secs) = inner.within_limit(&channel_id(&channel))
        {
            reply = Reply::RateLimited(secs);
        }
        let ok = matches!(reply, Reply::Ok | Reply::Slow(_) | Reply::Accepted(_));
        inner.arrivals.push((channel.clone(), std::time::Instant::now(), ok));
        reply
    };
    let ok = || {
        let (id, ts) = inner.lock().unwrap_or_else(|p| p.into_inner()).land(&channel, &body);
        Json(json!({"ok": true, "channel": id, "ts": ts})).into_response()
    };
    match reply {
        Reply::Ok => ok(),
        Reply::Slow(d) => {
            tokio::time::sleep(d).await;
            ok()
        }
        Reply::Accepted(d) => {
            let (id, ts) = inner.lock().unwrap_or_else(|p| p.into_inner()).land(&channel, &body);
            tokio::time::sleep(d).await;
            Json(json!({"ok": true, "channel": id, "ts": ts})).into_response()
        }
        Reply::Http(code) => StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR).into_response(),
        Reply::SlackError(code) => Json(json!({"ok": false, "error": code})).into_response(),
        Reply::RateLimited(secs) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", secs.to_string())],
            Json(json!({"ok": false, "error": "ratelimited"})),
        )
            .into_response(),
    }
}

/// `POST /chat.update`: replaces the text and blocks of the message `ts` in the channel `channel`, which must be
/// an id as in Slack (a name is `channel_not_found`).
async fn update(State(inner): State<Arc<Mutex<Inner>>>, Json(body): Json<Value>) -> Response {
    let channel = body["channel"].as_str().unwrap_or("").to_owned();
    // Scripted answers for updates are by channel id, as updates name it.
    let scripted =
        inner.lock().unwrap_or_else(|p| p.into_inner()).script.get_mut(&channel).and_then(VecDeque::pop_front);
    match scripted {
        Some(Reply::Accepted(delay)) => {
            let answer = apply_update(&inner, &channel, &body);
            tokio::time::sleep(delay).await;
            answer
        }
        Some(Reply::RateLimited(secs)) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", secs.to_string())],
            Json(json!({"ok": false, "error": "ratelimited"})),
        )
            .into_response(),
        Some(Reply::SlackError(code)) => Json(json!({"ok": false, "error": code})).into_response(),
        Some(Reply::Http(code)) => {
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR).into_response()
        }
        Some(Reply::Slow(delay)) => {
            tokio::time::sleep(delay).await;
            apply_update(&inner, &channel, &body)
        }
        Some(Reply::Ok) | None => apply_update(&inner, &channel, &body),
    }
}

/// Replaces the message in place, as `chat.update` does.
fn apply_update(inner: &Arc<Mutex<Inner>>, channel: &str, body: &Value) -> Response {
    let mut inner = inner.lock().unwrap_or_else(|p| p.into_inner());
    let channel = channel.to_owned();
    let ts = body["ts"].as_str().unwrap_or("").to_owned();
    if channel_id(&channel) != channel {
        return Json(json!({"ok": false, "error": "channel_not_found"})).into_response();
    }
    let Some(message) = inner.message_mut(&channel, &ts) else {
        return Json(json!({"ok": false, "error": "message_not_found"})).into_response();
    };
    message["text"] = body.get("text").cloned().unwrap_or_default();
    match body.get("blocks") {
        Some(blocks) => message["blocks"] = blocks.clone(),
        None => {
            if let Some(o) = message.as_object_mut() {
                o.remove("blocks");
            }
        }
    }
    // The update's metadata replaces the message's, as in Slack.
    if let Some(metadata) = body.get("metadata") {
        message["metadata"] = metadata.clone();
    }
    inner.updates.push(body.clone());
    Json(json!({"ok": true, "channel": channel, "ts": ts})).into_response()
}

/// `GET /conversations.replies`: the thread's parent, then its replies between `oldest` and `latest`, paged as
/// history.
async fn replies(State(inner): State<Arc<Mutex<Inner>>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut inner = inner.lock().unwrap_or_else(|p| p.into_inner());
    let channel = q.get("channel").cloned().unwrap_or_default();
    let thread = q.get("ts").cloned().unwrap_or_default();
    inner.history_requests.push((channel.clone(), q.clone()));
    if let Some(error) = inner.history_error {
        return Json(json!({"ok": false, "error": error})).into_response();
    }
    let parent = inner.message_mut(&channel, &thread).cloned();
    let Some(parent) = parent else {
        return Json(json!({"ok": false, "error": "thread_not_found"})).into_response();
    };
    let oldest: f64 = q.get("oldest").and_then(|o| o.parse().ok()).unwrap_or(0.0);
    let latest: f64 = q.get("latest").and_then(|o| o.parse().ok()).unwrap_or(f64::MAX);
    let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(100).clamp(1, 999);
    let skip: usize = q.get("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
    let with_metadata = q.get("include_all_metadata").is_some_and(|v| v == "true");
    let all: Vec<Value> = std::iter::once(parent)
        .chain(inner.replies.get(&(channel, thread)).cloned().unwrap_or_default())
        .filter(|m| m["ts"].as_str().and_then(|t| t.parse::<f64>().ok()).is_some_and(|t| t > oldest && t < latest))
        .collect();
    let page: Vec<Value> = (all.iter().skip(skip).take(limit))
        .map(|m| {
            let mut m = m.clone();
            if !with_metadata && let Some(o) = m.as_object_mut() {
                o.remove("metadata");
            }
            m
        })
        .collect();
    let more = skip + page.len() < all.len();
    let next = if more { (skip + page.len()).to_string() } else { String::new() };
    Json(json!({"ok": true, "messages": page, "has_more": more, "response_metadata": {"next_cursor": next}}))
        .into_response()
}

/// `GET /conversations.history`: the channel's messages between `oldest` and `latest` (excluding both, unless
/// `inclusive=true`), newest first, `limit` a page, paged by `cursor`; metadata only with
/// `include_all_metadata=true`.
async fn history(State(inner): State<Arc<Mutex<Inner>>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut inner = inner.lock().unwrap_or_else(|p| p.into_inner());
    let channel = q.get("channel").cloned().unwrap_or_default();
    inner.history_requests.push((channel.clone(), q.clone()));
    if let Some(error) = inner.history_error {
        return Json(json!({"ok": false, "error": error})).into_response();
    }
    let Some(messages) = inner.history.get(&channel) else {
        return Json(json!({"ok": false, "error": "channel_not_found"})).into_response();
    };
    let oldest: f64 = q.get("oldest").and_then(|o| o.parse().ok()).unwrap_or(0.0);
    let latest: f64 = q.get("latest").and_then(|o| o.parse().ok()).unwrap_or(f64::MAX);
    let inclusive = q.get("inclusive").is_some_and(|v| v == "true" || v == "1");
    let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(100).clamp(1, 999);
    let skip: usize = q.get("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
    let with_metadata = q.get("include_all_metadata").is_some_and(|v| v == "true");
    let within = |t: f64| if inclusive { t >= oldest && t <= latest } else { t > oldest && t < latest };
    let newer: Vec<&Value> = (messages.iter().rev())
        .filter(|m| m["ts"].as_str().and_then(|t| t.parse::<f64>().ok()).is_some_and(within))
        .collect();
    let page: Vec<Value> = (newer.iter().skip(skip).take(limit))
        .map(|m| {
            let mut m = (*m).clone();
            if !with_metadata && let Some(o) = m.as_object_mut() {
                o.remove("metadata");
            }
            m
        })
        .collect();
    let more = skip + page.len() < newer.len();
    let next = if more { (skip + page.len()).to_string() } else { String::new() };
    Json(json!({"ok": true, "messages": page, "has_more": more, "response_metadata": {"next_cursor": next}}))
        .into_response()
}

/// `GET /conversations.list`: the channels posted to so far, by name and id.
async fn list(State(inner): State<Arc<Mutex<Inner>>>) -> Response {
    let inner = inner.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(error) = inner.history_error {
        return Json(json!({"ok": false, "error": error})).into_response();
    }
    let channels: Vec<Value> = inner.names.iter().map(|(name, id)| json!({"id": id, "name": name})).collect();
    Json(json!({"ok": true, "channels": channels, "response_metadata": {"next_cursor": ""}})).into_response()
}
