//! A local stand-in for the Slack Web API (`POST /chat.postMessage`), the one external service the tests replace.
//! It records every request it answers and can be told, per channel, to fail: an HTTP status, a Slack error
//! (`channel_not_found`, `ratelimited` with `Retry-After`), or a slow answer. Feature `stub`.
//!
//! [`SlackStub::with_socket_mode`] also serves `apps.connections.open` and a Socket Mode server ([`socket`]).

pub mod socket;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
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
        let app =
            axum::Router::new().route("/chat.postMessage", post(post_message)).with_state(inner.clone()).merge(extra);
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

    /// The `Authorization` headers seen.
    pub fn authorizations(&self) -> Vec<String> {
        self.lock().requests.iter().map(|(_, _, a)| a.clone()).collect()
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
        scripted.or_else(|| inner.always.get(&channel).cloned()).unwrap_or(Reply::Ok)
    };
    let ok = || {
        inner.lock().unwrap_or_else(|p| p.into_inner()).posted.push(body.clone());
        Json(json!({"ok": true, "channel": channel, "ts": "1700000000.000100"})).into_response()
    };
    match reply {
        Reply::Ok => ok(),
        Reply::Slow(d) => {
            tokio::time::sleep(d).await;
            ok()
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
