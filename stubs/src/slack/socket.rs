//! A local stand-in for Slack Socket Mode: `apps.connections.open` (served by [`super::SlackStub`]) hands out
//! `ws://127.0.0.1:…` URLs of a WebSocket server that behaves as Slack's does: `hello` on connect, envelopes with
//! an `envelope_id`, redelivery of what is not acked within the ack deadline (`retry_attempt` counting up), and
//! `disconnect` messages. It records every delivery and every ack, with the connection and the time.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// One delivery of an envelope.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The connection it went out on.
    pub connection: u64,
    /// When.
    pub at: Instant,
    /// Its `retry_attempt`.
    pub retry_attempt: u64,
}

/// One ack.
#[derive(Debug, Clone)]
pub struct Ack {
    /// The connection it came in on.
    pub connection: u64,
    /// When.
    pub at: Instant,
    /// When, by the wall clock (to compare with the store's timestamps).
    pub wall: std::time::SystemTime,
}

#[derive(Debug)]
struct Sent {
    kind: String,
    payload: Value,
    deliveries: Vec<Delivery>,
    acks: Vec<Ack>,
}

#[derive(Debug)]
struct Connection {
    tx: mpsc::UnboundedSender<Message>,
    /// False once a `disconnect` went out on it: new envelopes go elsewhere.
    routable: bool,
    /// Stops reading and writing (a half-open connection).
    freeze: CancellationToken,
    /// Closes it from the stub's side.
    close: CancellationToken,
    /// Acks read on it are dropped (lost in flight: Slack never saw them).
    lose_acks: bool,
}

#[derive(Debug)]
struct Inner {
    connections: BTreeMap<u64, Connection>,
    opened: u64,
    next_envelope: u64,
    envelopes: BTreeMap<String, Sent>,
    /// Envelope ids in the order they were first sent.
    order: Vec<String>,
    open_calls: Vec<String>,
    /// (connection, opened, closed) of every connection.
    history: Vec<(u64, Instant, Option<Instant>)>,
    open_error: Option<String>,
    ack_deadline: Duration,
    max_retries: u64,
    /// Envelopes with at least one ack.
    acked: u64,
}

/// A running Socket Mode stub.
#[derive(Clone)]
pub struct SocketStub {
    ws_url: String,
    inner: Arc<Mutex<Inner>>,
    changed: Arc<Notify>,
}

impl SocketStub {
    /// Starts the WebSocket server on 127.0.0.1 and the redelivery loop, until the runtime stops.
    pub async fn start() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let ws_url = format!("ws://{}/link/", listener.local_addr()?);
        let inner = Arc::new(Mutex::new(Inner {
            connections: BTreeMap::new(),
            opened: 0,
            next_envelope: 0,
            envelopes: BTreeMap::new(),
            order: Vec::new(),
            open_calls: Vec::new(),
            history: Vec::new(),
            open_error: None,
            ack_deadline: Duration::from_secs(3),
            max_retries: 3,
            acked: 0,
        }));
        let stub = Self { ws_url, inner, changed: Arc::new(Notify::new()) };
        let accepting = stub.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(accepting.clone().serve(stream));
            }
        });
        let redelivering = stub.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                redelivering.redeliver();
            }
        });
        Ok(stub)
    }

    /// How long an envelope waits for its ack before it is sent again, and how many times it is (Slack: 3 s,
    /// 3 retries).
    pub fn set_redelivery(&self, ack_deadline: Duration, max_retries: u64) {
        let mut inner = self.lock();
        inner.ack_deadline = ack_deadline;
        inner.max_retries = max_retries;
    }

    /// Answer `apps.connections.open` with this Slack error (`None`: hand out URLs again).
    pub fn set_open_error(&self, error: Option<&str>) {
        self.lock().open_error = error.map(str::to_owned);
    }

    /// `Authorization` headers of the `apps.connections.open` calls, in order.
    pub fn open_calls(&self) -> Vec<String> {
        self.lock().open_calls.clone()
    }

    /// Connections opened so far (closed ones included).
    pub fn connections_opened(&self) -> u64 {
        self.lock().opened
    }

    /// Every connection so far: its id, when it opened and, once it has, when it closed.
    pub fn history(&self) -> Vec<(u64, Instant, Option<Instant>)> {
        self.lock().history.clone()
    }

    /// The ids of the open connections, oldest first.
    pub fn open_connections(&self) -> Vec<u64> {
        self.lock().connections.keys().copied().collect()
    }

    /// Waits until `check` holds of the stub (re-checked on every connection change and ack), for at most
    /// `timeout`; whether it held.
    pub async fn wait_for(&self, timeout: Duration, check: impl Fn(&SocketStub) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            if check(self) {
                return true;
            }
            // The poll interval also catches changes that raced the notification.
            let wake = (tokio::time::Instant::now() + Duration::from_millis(100)).min(deadline);
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep_until(wake) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return check(self);
            }
        }
    }

    /// Sends an envelope of `kind` (`events_api`, `slash_commands`, `interactive`) to the newest routable
    /// connection (or to the first one to open, when none is); its envelope id.
    pub fn send(&self, kind: &str, payload: Value) -> String {
        let mut inner = self.lock();
        inner.next_envelope += 1;
        let id = format!("env-{:06}", inner.next_envelope);
        inner
            .envelopes
            .insert(id.clone(), Sent { kind: kind.to_owned(), payload, deliveries: Vec::new(), acks: Vec::new() });
        inner.order.push(id.clone());
        if let Some(connection) = newest_routable(&inner) {
            deliver(&mut inner, &id, connection, 0);
        }
        id
    }

    /// Sends an envelope already sent once more, on `connection`, as Slack does when it retries on another
    /// connection.
    pub fn resend_on(&self, envelope_id: &str, connection: u64) {
        let mut inner = self.lock();
        let attempt = inner.envelopes.get(envelope_id).map_or(0, |s| s.deliveries.len() as u64);
        deliver(&mut inner, envelope_id, connection, attempt);
    }

    /// Sends `{"type": "disconnect", "reason": ...}` on `connection`; no new envelope goes to it. With
    /// `warning` or `refresh_requested` the stub closes it itself after `close_after` if the client has not.
    pub fn disconnect(&self, connection: u64, reason: &str, close_after: Duration) {
        let mut inner = self.lock();
        let Some(conn) = inner.connections.get_mut(&connection) else { return };
        conn.routable = false;
        let frame = json!({"type": "disconnect", "reason": reason, "debug_info": {"host": "stub"}});
        let _ = conn.tx.send(Message::text(frame.to_string()));
        let close = conn.close.clone();
        tokio::spawn(async move {
            tokio::time::sleep(close_after).await;
            close.cancel();
        });
    }

    /// Stops reading and writing on `connection` without closing it: it is half-open from the client's side.
    pub fn freeze(&self, connection: u64) {
        if let Some(conn) = self.lock().connections.get_mut(&connection) {
            conn.routable = false;
            conn.freeze.cancel();
        }
    }

    /// Drops the acks that arrive on `connection` from now on, as if they were lost on the way (the process
    /// died after writing them): Slack redelivers those envelopes.
    pub fn lose_acks(&self, connection: u64) {
        if let Some(conn) = self.lock().connections.get_mut(&connection) {
            conn.lose_acks = true;
        }
    }

    /// Envelope ids in the order they were sent.
    pub fn envelope_ids(&self) -> Vec<String> {
        self.lock().order.clone()
    }

    /// The deliveries of an envelope.
    pub fn deliveries(&self, envelope_id: &str) -> Vec<Delivery> {
        self.lock().envelopes.get(envelope_id).map(|s| s.deliveries.clone()).unwrap_or_default()
    }

    /// The acks of an envelope.
    pub fn acks(&self, envelope_id: &str) -> Vec<Ack> {
        self.lock().envelopes.get(envelope_id).map(|s| s.acks.clone()).unwrap_or_default()
    }

    /// Envelopes sent and envelopes acked at least once, counted as they happen (for load tests).
    pub fn counts(&self) -> (u64, u64) {
        let inner = self.lock();
        (inner.order.len() as u64, inner.acked)
    }

    /// Wakes when a connection opens or closes, or an ack arrives.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Envelopes without an ack.
    pub fn unacked(&self) -> Vec<String> {
        let inner = self.lock();
        inner.order.iter().filter(|id| inner.envelopes[*id].acks.is_empty()).cloned().collect()
    }

    /// The answer to `apps.connections.open`.
    fn open_answer(&self, authorization: String) -> Value {
        let mut inner = self.lock();
        inner.open_calls.push(authorization);
        match &inner.open_error {
            Some(error) => json!({"ok": false, "error": error}),
            None => json!({"ok": true, "url": format!("{}?ticket={}", self.ws_url, inner.open_calls.len())}),
        }
    }

    /// Sends again what has waited past the ack deadline, and what no connection was open for.
    fn redeliver(&self) {
        let mut inner = self.lock();
        let Some(connection) = newest_routable(&inner) else { return };
        let (deadline, max) = (inner.ack_deadline, inner.max_retries);
        let due: Vec<(String, u64)> = inner
            .envelopes
            .iter()
            .filter(|(_, s)| s.acks.is_empty())
            .filter_map(|(id, s)| match s.deliveries.last() {
                None => Some((id.clone(), 0)),
                Some(last) if last.at.elapsed() >= deadline && (s.deliveries.len() as u64) <= max => {
                    Some((id.clone(), s.deliveries.len() as u64))
                }
                Some(_) => None,
            })
            .collect();
        for (id, attempt) in due {
            deliver(&mut inner, &id, connection, attempt);
        }
    }

    async fn serve(self, stream: tokio::net::TcpStream) {
        let Ok(socket) = tokio_tungstenite::accept_async(stream).await else { return };
        let (mut sink, mut frames) = socket.split();
        let hello = json!({"type": "hello", "num_connections": 1, "debug_info": {"host": "stub"},
            "connection_info": {"app_id": "A0STUB"}});
        if sink.send(Message::text(hello.to_string())).await.is_err() {
            return;
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (freeze, close) = (CancellationToken::new(), CancellationToken::new());
        let id = {
            let mut inner = self.lock();
            inner.opened += 1;
            let id = inner.opened;
            let connection =
                Connection { tx, routable: true, freeze: freeze.clone(), close: close.clone(), lose_acks: false };
            inner.connections.insert(id, connection);
            inner.history.push((id, Instant::now(), None));
            id
        };
        self.changed.notify_waiters();
        loop {
            tokio::select! {
                () = freeze.cancelled() => {
                    // Half-open: hold the socket, answer nothing, until the client gives up on it.
                    close.cancelled().await;
                    break;
                }
                () = close.cancelled() => {
                    let _ = sink.send(Message::Close(None)).await;
                    break;
                }
                Some(message) = rx.recv() => {
                    if sink.send(message).await.is_err() {
                        break;
                    }
                }
                frame = frames.next() => match frame {
                    Some(Ok(Message::Text(text))) => self.record_ack(id, text.as_str()),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                },
            }
        }
        {
            let mut inner = self.lock();
            inner.connections.remove(&id);
            if let Some(entry) = inner.history.iter_mut().find(|(c, _, _)| *c == id) {
                entry.2 = Some(Instant::now());
            }
        }
        self.changed.notify_waiters();
    }

    fn record_ack(&self, connection: u64, text: &str) {
        let Some(envelope_id) =
            serde_json::from_str::<Value>(text).ok().and_then(|v| v["envelope_id"].as_str().map(str::to_owned))
        else {
            return;
        };
        let mut inner = self.lock();
        if inner.connections.get(&connection).is_some_and(|c| c.lose_acks) {
            return;
        }
        let mut first = false;
        if let Some(sent) = inner.envelopes.get_mut(&envelope_id) {
            first = sent.acks.is_empty();
            sent.acks.push(Ack { connection, at: Instant::now(), wall: std::time::SystemTime::now() });
        }
        if first {
            inner.acked += 1;
        }
        drop(inner);
        self.changed.notify_waiters();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn newest_routable(inner: &Inner) -> Option<u64> {
    inner.connections.iter().rev().find(|(_, c)| c.routable).map(|(id, _)| *id)
}

fn deliver(inner: &mut Inner, envelope_id: &str, connection: u64, retry_attempt: u64) {
    let Some(conn) = inner.connections.get(&connection) else { return };
    let Some(sent) = inner.envelopes.get_mut(envelope_id) else { return };
    let frame = json!({
        "envelope_id": envelope_id,
        "type": sent.kind,
        "payload": sent.payload,
        "accepts_response_payload": sent.kind != "events_api",
        "retry_attempt": retry_attempt,
        "retry_reason": if retry_attempt > 0 { "timeout" } else { "" },
    });
    if conn.tx.send(Message::text(frame.to_string())).is_ok() {
        sent.deliveries.push(Delivery { connection, at: Instant::now(), retry_attempt });
    }
}

/// `POST /apps.connections.open`.
pub(super) async fn connections_open(State(stub): State<SocketStub>, headers: HeaderMap) -> Json<Value> {
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    Json(stub.open_answer(authorization))
}
