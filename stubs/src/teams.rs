//! A local stand-in for Microsoft Teams' incoming webhooks (`POST /webhook/<name>`, a Workflows webhook's answer:
//! `202 Accepted`). Like Teams, it refuses a message over 28 KB (`413`), a body that is not a message with an
//! Adaptive Card attachment (`400` with the reason), and more than 4 requests a second to one webhook (`429` with
//! `Retry-After: 1`). It records every card it accepted, and can be told to answer the next requests to a webhook
//! with a given status (`429` with `Retry-After`, `500`, `400` with a text), or always.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;

/// Teams' limit on a webhook message.
pub const MAX_BYTES: usize = 28 * 1024;

/// Teams' limit on requests a second to one webhook.
pub const PER_SECOND: usize = 4;

/// An answer the stand-in gives instead of accepting.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// `429` with `Retry-After` (seconds).
    TooMany(u64),
    /// `500`.
    ServerError,
    /// `400` with this text.
    BadRequest(String),
}

/// A running stand-in.
#[derive(Clone)]
pub struct TeamsStub {
    /// `http://127.0.0.1:port`; a webhook's URL is [`TeamsStub::webhook`].
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    accepted: HashMap<String, Vec<Value>>,
    requests: HashMap<String, usize>,
    refused: HashMap<String, Vec<(u16, String)>>,
    scripted: HashMap<String, VecDeque<Answer>>,
    always: HashMap<String, Answer>,
    windows: HashMap<String, VecDeque<Instant>>,
    limited: u64,
}

impl TeamsStub {
    /// Starts one on 127.0.0.1 on a free port, serving until the runtime stops.
    pub async fn start() -> std::io::Result<Self> {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = axum::Router::new().route("/webhook/{name}", post(receive)).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, inner })
    }

    /// The webhook URL of the channel `name`.
    pub fn webhook(&self, name: &str) -> String {
        format!("{}/webhook/{name}", self.url)
    }

    /// The cards (the `content` of each accepted message's attachment) `name` accepted, in order.
    pub fn cards(&self, name: &str) -> Vec<Value> {
        self.lock().accepted.get(name).cloned().unwrap_or_default()
    }

    /// Requests to `name`, answered any way.
    pub fn requests(&self, name: &str) -> usize {
        self.lock().requests.get(name).copied().unwrap_or(0)
    }

    /// The requests `name` refused: status and reason.
    pub fn refused(&self, name: &str) -> Vec<(u16, String)> {
        self.lock().refused.get(name).cloned().unwrap_or_default()
    }

    /// Requests answered `429` for going past the limit.
    pub fn limited(&self) -> u64 {
        self.lock().limited
    }

    /// Answers the next requests to `name` with `answers`, in order.
    pub fn script(&self, name: &str, answers: impl IntoIterator<Item = Answer>) {
        self.lock().scripted.entry(name.to_owned()).or_default().extend(answers);
    }

    /// Answers every request to `name` with `answer` (`None`: accept again).
    pub fn always(&self, name: &str, answer: Option<Answer>) {
        let mut inner = self.lock();
        match answer {
            Some(answer) => inner.always.insert(name.to_owned(), answer),
            None => inner.always.remove(name),
        };
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn receive(State(inner): State<Arc<Mutex<Inner>>>, Path(name): Path<String>, body: Bytes) -> Response {
    let mut inner = inner.lock().unwrap_or_else(|p| p.into_inner());
    *inner.requests.entry(name.clone()).or_default() += 1;
    let answer = match inner.scripted.get_mut(&name).and_then(VecDeque::pop_front) {
        Some(answer) => Some(answer),
        None => inner.always.get(&name).cloned(),
    };
    let refuse = |inner: &mut Inner, status: StatusCode, text: String| {
        inner.refused.entry(name.clone()).or_default().push((status.as_u16(), text.clone()));
        (status, text).into_response()
    };
    match answer {
        Some(Answer::TooMany(seconds)) => {
            let mut response = refuse(&mut inner, StatusCode::TOO_MANY_REQUESTS, "Too many requests".into());
            response.headers_mut().insert("retry-after", HeaderValue::from(seconds));
            return response;
        }
        Some(Answer::ServerError) => {
            return refuse(&mut inner, StatusCode::INTERNAL_SERVER_ERROR, "Internal error".into());
        }
        Some(Answer::BadRequest(text)) => return refuse(&mut inner, StatusCode::BAD_REQUEST, text),
        None => {}
    }
    let now = Instant::now();
    let window = inner.windows.entry(name.clone()).or_default();
    while window.front().is_some_and(|at| now.duration_since(*at) >= Duration::from_secs(1)) {
        window.pop_front();
    }
    if window.len() >= PER_SECOND {
        inner.limited += 1;
        let mut response = refuse(&mut inner, StatusCode::TOO_MANY_REQUESTS, "Too many requests".into());
        response.headers_mut().insert("retry-after", HeaderValue::from(1));
        return response;
    }
    window.push_back(now);
    if body.len() > MAX_BYTES {
        let text = format!("Payload too large: {} bytes; the limit is {MAX_BYTES}", body.len());
        return refuse(&mut inner, StatusCode::PAYLOAD_TOO_LARGE, text);
    }
    let card = match card_of(&body) {
        Ok(card) => card,
        Err(why) => return refuse(&mut inner, StatusCode::BAD_REQUEST, format!("Bad payload: {why}")),
    };
    inner.accepted.entry(name).or_default().push(card);
    StatusCode::ACCEPTED.into_response()
}

/// The Adaptive Card a webhook message carries, or why Teams would refuse it.
fn card_of(body: &[u8]) -> Result<Value, String> {
    let message: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    if message["type"] != "message" {
        return Err("type must be \"message\"".into());
    }
    let attachments = message["attachments"].as_array().ok_or("no attachments")?;
    let [attachment] = attachments.as_slice() else {
        return Err(format!("{} attachments; a card message has one", attachments.len()));
    };
    if attachment["contentType"] != "application/vnd.microsoft.card.adaptive" {
        return Err("the attachment is not an Adaptive Card".into());
    }
    let card = &attachment["content"];
    if card["type"] != "AdaptiveCard" || !card["body"].is_array() {
        return Err("the content is not an AdaptiveCard with a body".into());
    }
    Ok(card.clone())
}
