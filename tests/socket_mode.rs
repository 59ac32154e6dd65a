//! Slack Socket Mode as a source, against a local Socket Mode stub (a WebSocket server on 127.0.0.1 and a stub
//! `apps.connections.open`) and the real embedded store, with the real binary:
//!
//! - each envelope type is enqueued once, as its HTTP twin would be, and acked after its enqueue committed;
//! - with the store failing (its write lock held by the test) nothing is acked, and the stub's redelivery after
//!   recovery is enqueued once;
//! - an envelope redelivered (`retry_attempt` 1) or sent on two connections is one event, acked every time;
//! - a `refresh_requested` disconnect in the middle of a stream loses nothing, and no envelope needed a retry;
//! - SIGKILL of the ingress in the middle of a burst: the stub redelivers to the restarted process, and every
//!   event is handled once;
//! - a half-open connection is replaced; `link_disabled` and a refused token stop Socket Mode, `/ready` says so,
//!   and the HTTP routes keep serving.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use eventfleet_schema::{EnvelopeV1, IdempotencyKey, Status, Step, VerificationMethod};
use eventfleet_storage::Store;
use eventfleet_storage::embedded::{EmbeddedOptions, EmbeddedStore};
use eventfleet_stubs::slack::SlackStub;
use eventfleet_stubs::slack::socket::SocketStub;
use serde_json::{Value, json};
use support::spawn_listening;

const TEAM: &str = "T0SOCKET";
const SECRET: &str = "socket-mode-test-signing-secret";
const WAIT: Duration = Duration::from_secs(30);

/// A process (`dev`, or `ingress` alone) with Socket Mode on, against the stub.
struct Fleet {
    child: Child,
    base: String,
    socket: SocketStub,
    slack: SlackStub,
    dir: tempfile::TempDir,
    command: &'static str,
    connections: usize,
    extra: Vec<(&'static str, &'static str)>,
}

impl Fleet {
    async fn start(command: &'static str, connections: usize, extra: &[(&'static str, &'static str)]) -> Self {
        let fleet = Self::spawn_only(command, connections, extra, |_| {}).await;
        fleet.wait_connections(connections).await;
        fleet
    }

    async fn spawn_only(
        command: &'static str,
        connections: usize,
        extra: &[(&'static str, &'static str)],
        prepare: impl FnOnce(&SocketStub),
    ) -> Self {
        let (slack, socket) = SlackStub::with_socket_mode().await.unwrap();
        prepare(&socket);
        let dir = tempfile::tempdir().unwrap();
        let (child, base) = spawn(command, dir.path(), &slack, connections, extra);
        Self { child, base, socket, slack, dir, command, connections, extra: extra.to_vec() }
    }

    /// SIGKILL, then the same command on the same data directory and stub.
    fn kill_and_restart(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.restart();
    }

    /// The same command again on the same data directory and stub (the old process has exited).
    fn restart(&mut self) {
        let (child, base) = spawn(self.command, self.dir.path(), &self.slack, self.connections, &self.extra);
        (self.child, self.base) = (child, base);
    }

    async fn wait_connections(&self, n: usize) {
        let opened = self.socket.wait_for(WAIT, |s| s.open_connections().len() >= n).await;
        assert!(opened, "{n} Socket Mode connections opened (have {:?})", self.socket.open_connections());
    }

    /// Waits until `envelope` has at least `n` acks.
    async fn wait_acks(&self, envelope: &str, n: usize) {
        let acked = self.socket.wait_for(WAIT, |s| s.acks(envelope).len() >= n).await;
        assert!(acked, "{envelope} acked {n} times (acks {:?})", self.socket.acks(envelope));
    }

    fn store(&self) -> Store {
        EmbeddedStore::open_dir(self.dir.path(), EmbeddedOptions::default()).unwrap().into_store()
    }

    async fn metric(&self, name: &str, labels: &str) -> u64 {
        let text = reqwest::get(format!("{}/metrics", self.base)).await.unwrap().text().await.unwrap();
        let want = format!("{name}{{{labels}}}");
        text.lines().find_map(|l| l.strip_prefix(want.as_str())).map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
    }

    async fn envelopes(&self, outcome: &str) -> u64 {
        let mut total = 0;
        for kind in ["events_api", "slash_commands", "interactive", "other"] {
            let labels = format!("type=\"{kind}\",outcome=\"{outcome}\"");
            total += self.metric("eventfleet_ingress_socket_envelopes_total", &labels).await;
        }
        total
    }

    async fn ready(&self) -> (u16, Value) {
        let answer = reqwest::get(format!("{}/ready", self.base)).await.unwrap();
        (answer.status().as_u16(), answer.json().await.unwrap())
    }

    /// A Slack Events API delivery over HTTP, signed as Slack signs it.
    async fn post_http(&self, body: &Value) -> reqwest::Response {
        let body = body.to_string();
        let ts = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        reqwest::Client::new()
            .post(format!("{}/slack/events", self.base))
            .header("content-type", "application/json")
            .header("x-slack-request-timestamp", ts.to_string())
            .header("x-slack-signature", eventfleet_verify::sign::slack(SECRET.as_bytes(), ts, body.as_bytes()))
            .body(body)
            .send()
            .await
            .unwrap()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(command: &str, data: &Path, slack: &SlackStub, connections: usize, extra: &[(&str, &str)]) -> (Child, String) {
    let connections = connections.to_string();
    let mut env = vec![
        ("EVENTFLEET_SLACK_APP_TOKEN", APP_TOKEN),
        ("EVENTFLEET_SLACK_API_URL", slack.url.as_str()),
        ("EVENTFLEET_SLACK_BOT_TOKEN", "xoxb-test"),
        ("EVENTFLEET_SLACK_SOCKET_CONNECTIONS", connections.as_str()),
        ("EVENTFLEET_SLACK_SIGNING_SECRET", SECRET),
        ("EVENTFLEET_LISTEN", "127.0.0.1:0"),
    ];
    env.extend_from_slice(extra);
    spawn_listening(data, &[command], &env)
}

/// Leases short enough that what a killed worker had started is handled again within the test's deadlines.
const SHORT_LEASES: &[(&str, &str)] = &[
    ("EVENTFLEET_VISIBILITY_TIMEOUT_S", "4"),
    ("EVENTFLEET_HANDLER_TIMEOUT_S", "3"),
    ("EVENTFLEET_RECEIVE_WAIT_S", "1"),
    ("EVENTFLEET_DRAIN_TIMEOUT_S", "3"),
];

const APP_TOKEN: &str = "xapp-1-A0STUB-1-socketmodetest";

fn event(event_id: &str) -> Value {
    json!({
        "token": "unused", "team_id": TEAM, "api_app_id": "A0STUB", "type": "event_callback",
        "event_id": event_id, "event_time": 1_764_000_000,
        "event": {"type": "app_mention", "user": "U1", "text": "<@U0BOT> deploy status", "channel": "C0OPS",
            "ts": "1764000000.000100"},
    })
}

fn command(trigger: &str) -> Value {
    json!({
        "token": "unused", "team_id": TEAM, "team_domain": "sre", "channel_id": "C0OPS", "channel_name": "ops",
        "user_id": "U1", "user_name": "oncall", "command": "/page", "text": "db is slow",
        "api_app_id": "A0STUB", "is_enterprise_install": "false",
        "response_url": "https://hooks.slack.com/commands/T0SOCKET/1/abc", "trigger_id": trigger,
    })
}

fn interaction(trigger: &str) -> Value {
    json!({
        "type": "block_actions", "team": {"id": TEAM, "domain": "sre"}, "user": {"id": "U1", "team_id": TEAM},
        "api_app_id": "A0STUB", "trigger_id": trigger, "channel": {"id": "C0OPS", "name": "ops"},
        "actions": [{"action_id": "ack", "type": "button", "value": "ack"}],
        "response_url": "https://hooks.slack.com/actions/T0SOCKET/1/abc",
    })
}

fn key(native_id: &str) -> IdempotencyKey {
    IdempotencyKey::slack(TEAM, native_id)
}

/// Every message on the queue (deleted as read: each group gives its next one only then).
async fn drain(store: &Store) -> Vec<EnvelopeV1> {
    let mut all = Vec::new();
    loop {
        let got = store.queue.receive(10, Duration::from_secs(60), Duration::ZERO).await.unwrap();
        if got.is_empty() {
            return all;
        }
        for m in got {
            all.push(m.envelope.as_v1().clone());
            store.queue.delete(&m.receipt).await.unwrap();
        }
    }
}

/// The steps of the event with `native_id`.
async fn steps_of(store: &Store, native_id: &str) -> Vec<Step> {
    let record = store.idempotency.get(&key(native_id)).await.unwrap().expect("an idempotency record");
    store.audit.history(record.event_id).await.unwrap().into_iter().map(|s| s.step).collect()
}

fn count(steps: &[Step], step: Step) -> usize {
    steps.iter().filter(|s| **s == step).count()
}

/// Waits until the event with `native_id` has been handled (`DONE`), then returns its steps.
async fn handled(store: &Store, native_id: &str) -> Vec<Step> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(record) = store.idempotency.get(&key(native_id)).await.unwrap()
            && record.status == Status::Done
        {
            return steps_of(store, native_id).await;
        }
        assert!(tokio::time::Instant::now() < deadline, "{native_id} handled within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `/ready` until `check` holds of its answer.
async fn wait_ready(fleet: &Fleet, check: impl Fn(u16, &Value) -> bool) -> (u16, Value) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = fleet.ready().await;
        if check(status, &body) {
            return (status, body);
        }
        assert!(tokio::time::Instant::now() < deadline, "/ready never became as expected: {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_envelope_type_is_enqueued_once_as_its_http_twin_and_acked_after_its_enqueue() {
    let fleet = Fleet::start("ingress", 2, &[]).await;
    let sent = [
        ("events_api", event("Ev0SOCKET1"), "Ev0SOCKET1", "slack.event"),
        ("slash_commands", command("1001.2002.cmd"), "1001.2002.cmd", "slack.command"),
        ("interactive", interaction("1001.2002.act"), "1001.2002.act", "slack.interaction"),
    ];
    let ids: Vec<String> = sent.iter().map(|(kind, payload, _, _)| fleet.socket.send(kind, payload.clone())).collect();
    let store = fleet.store();
    for (envelope, (kind, _, native, _)) in ids.iter().zip(&sent) {
        fleet.wait_acks(envelope, 1).await;
        let record = store.idempotency.get(&key(native)).await.unwrap().expect("enqueued");
        let history = store.audit.history(record.event_id).await.unwrap();
        let enqueued = history.iter().find(|s| s.step == Step::Enqueued).expect("an enqueued line");
        let acked = fleet.socket.acks(envelope)[0].wall.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
        assert!(enqueued.at.as_millis() <= acked, "{kind}: acked at {acked} ms, before its enqueue at {}", enqueued.at);
        assert_eq!(history.iter().filter(|s| s.step == Step::Received).count(), 1, "{kind}");
    }
    let queued = drain(&store).await;
    assert_eq!(queued.len(), 3, "one message per envelope");
    for (_, payload, native, kind) in &sent {
        let v1 = queued.iter().find(|e| e.idempotency_key == key(native)).expect("queued under the HTTP twin's key");
        assert_eq!(v1.kind.as_str(), *kind);
        assert_eq!(v1.verification.method, VerificationMethod::SlackSocketMode);
        assert_eq!(v1.message_group, format!("slack:{TEAM}:C0OPS"));
        let body = v1.body.as_text().expect("text body");
        match *kind {
            "slack.event" => assert_eq!(serde_json::from_str::<Value>(body).unwrap(), *payload),
            "slack.command" => {
                assert_eq!(v1.headers["content-type"], "application/x-www-form-urlencoded");
                let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
                assert_eq!((form["command"].as_str(), form["text"].as_str()), ("/page", "db is slow"));
                assert_eq!(form["response_url"], payload["response_url"].as_str().unwrap());
            }
            _ => {
                let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
                assert_eq!(serde_json::from_str::<Value>(&form["payload"]).unwrap(), *payload);
            }
        }
    }
    assert_eq!(fleet.envelopes("accepted").await, 3);
    let (status, ready) = fleet.ready().await;
    assert_eq!((status, ready["socket_mode"]["connections_open"].as_u64()), (200, Some(2)), "{ready}");
    assert_eq!(fleet.socket.open_calls(), vec![format!("Bearer {APP_TOKEN}"); 2]);

    // The same event over HTTP (signed as Slack signs) is the same event: a duplicate, not a second message.
    let answer = fleet.post_http(&event("Ev0SOCKET1")).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers().get("x-eventfleet-duplicate").map(|v| v.to_str().unwrap()), Some("true"));
    assert!(drain(&store).await.is_empty(), "no second message for the HTTP delivery");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_store_failing_nothing_is_acked_and_the_redelivery_is_enqueued_once() {
    let fleet = Fleet::start("ingress", 1, &[("EVENTFLEET_BACKEND_BUDGET_MS", "500")]).await;
    fleet.socket.set_redelivery(Duration::from_secs(2), 20);
    // Another writer holds the store's write lock: every accept waits for it and gives up at the budget.
    let lock = rusqlite::Connection::open(fleet.dir.path().join("fleet.db")).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let envelope = fleet.socket.send("events_api", event("Ev0STOREDOWN"));
    let deadline = tokio::time::Instant::now() + WAIT;
    while fleet.envelopes("failed").await < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the first delivery and a redelivery failed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(fleet.socket.acks(&envelope).is_empty(), "nothing acked while the store fails");
    let failed_deliveries = fleet.socket.deliveries(&envelope).len();
    assert!(failed_deliveries >= 2, "Slack redelivered the unacked envelope");
    lock.execute_batch("ROLLBACK").unwrap();

    fleet.wait_acks(&envelope, 1).await;
    let ack = fleet.socket.acks(&envelope)[0].clone();
    let deliveries = fleet.socket.deliveries(&envelope);
    assert!(deliveries.len() > failed_deliveries, "acked on a redelivery after recovery");
    let acked_delivery = deliveries.iter().rev().find(|d| d.at <= ack.at).expect("a delivery before the ack");
    assert!(acked_delivery.retry_attempt >= failed_deliveries as u64, "the ack answers a redelivery after recovery");
    let store = fleet.store();
    let queued = drain(&store).await;
    assert_eq!(queued.len(), 1, "enqueued once");
    assert_eq!(count(&steps_of(&store, "Ev0STOREDOWN").await, Step::Received), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_redelivered_or_sent_on_two_connections_is_one_event_acked_each_time() {
    let fleet = Fleet::start("ingress", 2, &[]).await;
    let [first, second] = fleet.socket.open_connections()[..] else { panic!("two connections") };
    let envelope = fleet.socket.send("events_api", event("Ev0TWICE"));
    fleet.wait_acks(&envelope, 1).await;
    let on = fleet.socket.deliveries(&envelope)[0].connection;
    fleet.socket.resend_on(&envelope, on);
    fleet.wait_acks(&envelope, 2).await;
    let other = if on == first { second } else { first };
    fleet.socket.resend_on(&envelope, other);
    fleet.wait_acks(&envelope, 3).await;
    let deliveries = fleet.socket.deliveries(&envelope);
    assert_eq!(deliveries.iter().map(|d| d.retry_attempt).collect::<Vec<_>>(), vec![0, 1, 2]);
    let acked_on: Vec<u64> = fleet.socket.acks(&envelope).iter().map(|a| a.connection).collect();
    assert_eq!(acked_on, vec![on, on, other], "each delivery acked on its own connection");
    assert_eq!(fleet.envelopes("duplicate").await, 2);
    let store = fleet.store();
    assert_eq!(drain(&store).await.len(), 1, "one event");
    let record = store.idempotency.get(&key("Ev0TWICE")).await.unwrap().unwrap();
    assert_eq!(record.duplicate_count, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_requested_disconnect_mid_stream_loses_nothing() {
    const N: usize = 150;
    let fleet = Fleet::start("ingress", 1, &[]).await;
    let old = fleet.socket.open_connections()[0];
    let mut envelopes = Vec::new();
    for i in 0..N {
        envelopes.push(fleet.socket.send("events_api", event(&format!("Ev0STREAM{i:04}"))));
        if i == N / 3 {
            // As Slack does: the old connection gets no new envelope and is closed a while later.
            fleet.socket.disconnect(old, "refresh_requested", Duration::from_secs(10));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let all_acked = fleet.socket.wait_for(WAIT, |s| s.unacked().is_empty()).await;
    assert!(all_acked, "every envelope acked: {} left", fleet.socket.unacked().len());
    for envelope in &envelopes {
        let deliveries = fleet.socket.deliveries(envelope);
        assert_eq!(deliveries.len(), 1, "{envelope} acked on its first delivery, no redelivery needed");
    }
    let history = fleet.socket.history();
    let (_, _, old_closed) = history.iter().find(|(c, _, _)| *c == old).unwrap();
    let (_, new_opened, _) = history.iter().find(|(c, _, _)| *c != old).expect("a replacement");
    let old_closed = old_closed.expect("the old connection closed");
    assert!(*new_opened < old_closed, "the replacement opened before the old connection closed");
    assert!(old_closed.duration_since(*new_opened) < Duration::from_secs(9), "the client closed the old one");
    assert_eq!(fleet.metric("eventfleet_ingress_socket_reconnects_total", "reason=\"refresh_requested\"").await, 1);
    let store = fleet.store();
    let queued = drain(&store).await;
    let keys: HashSet<_> = queued.iter().map(|e| e.idempotency_key.clone()).collect();
    assert_eq!((queued.len(), keys.len()), (N, N), "each envelope enqueued once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_before_the_acks_redelivers_to_the_restarted_ingress_and_each_event_is_handled_once() {
    const N: usize = 200;
    // A message the killed worker had started comes back after its visibility timeout: keep it short.
    let mut fleet = Fleet::start("dev", 1, SHORT_LEASES).await;
    fleet.socket.set_redelivery(Duration::from_secs(1), 30);
    // The first few are acked; then the store's write lock is held from before the rest are sent until after
    // the kill, so those are in flight when it lands however fast this machine is (released with the connection).
    const FIRST: usize = 20;
    let send = |i: usize| fleet.socket.send("events_api", event(&format!("Ev0KILL{i:04}")));
    let mut envelopes: Vec<String> = (0..FIRST).map(send).collect();
    let first_acked = fleet.socket.wait_for(WAIT, |s| s.unacked().is_empty()).await;
    assert!(first_acked, "the first acks arrived");
    let lock = rusqlite::Connection::open(fleet.dir.path().join("fleet.db")).unwrap();
    lock.busy_timeout(Duration::from_secs(10)).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    envelopes.extend((FIRST..N).map(send));
    let some_waiting = fleet.socket.wait_for(WAIT, |s| s.deliveries(envelopes.last().unwrap()).len() == 1).await;
    assert!(some_waiting, "the rest were delivered to the ingress");
    let child = &mut fleet.child;
    child.kill().unwrap();
    child.wait().unwrap();
    drop(lock);
    fleet.restart();
    let unacked_at_kill = fleet.socket.unacked().len();
    fleet.wait_connections(1).await;
    let all_acked = fleet.socket.wait_for(Duration::from_secs(60), |s| s.unacked().is_empty()).await;
    assert!(all_acked, "every envelope acked after the restart: {} left", fleet.socket.unacked().len());
    let redelivered = envelopes.iter().filter(|e| fleet.socket.deliveries(e).len() > 1).count();
    assert!(redelivered > 0, "the kill left envelopes unacked ({unacked_at_kill} at the kill)");
    let store = fleet.store();
    for i in 0..N {
        let native = format!("Ev0KILL{i:04}");
        let steps = handled(&store, &native).await;
        assert_eq!(count(&steps, Step::Received), 1, "{native} enqueued once: {steps:?}");
        assert_eq!(count(&steps, Step::Succeeded), 1, "{native} handled once: {steps:?}");
    }
    let duplicates = fleet.envelopes("duplicate").await;
    eprintln!(
        "{unacked_at_kill} envelopes unacked at the kill, {redelivered} redelivered, {duplicates} of them already durable"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_the_enqueue_and_before_slack_saw_the_ack_the_redelivery_is_a_duplicate_handled_once() {
    const N: usize = 10;
    let mut fleet = Fleet::start("dev", 1, SHORT_LEASES).await;
    fleet.socket.set_redelivery(Duration::from_secs(1), 30);
    // The acks of this connection never reach "Slack": as if the process died between its enqueue and its ack.
    fleet.socket.lose_acks(fleet.socket.open_connections()[0]);
    let envelopes: Vec<String> =
        (0..N).map(|i| fleet.socket.send("events_api", event(&format!("Ev0LOST{i:04}")))).collect();
    let store = fleet.store();
    let deadline = tokio::time::Instant::now() + WAIT;
    for i in 0..N {
        while store.idempotency.get(&key(&format!("Ev0LOST{i:04}"))).await.unwrap().is_none() {
            assert!(tokio::time::Instant::now() < deadline, "every envelope enqueued");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    fleet.kill_and_restart();
    let all_acked = fleet.socket.wait_for(Duration::from_secs(60), |s| s.unacked().is_empty()).await;
    assert!(all_acked, "every envelope acked after the restart: {} left", fleet.socket.unacked().len());
    assert!(envelopes.iter().all(|e| fleet.socket.deliveries(e).len() >= 2), "each was redelivered");
    // At least one per envelope: on a loaded machine a redelivery may also race the first ack.
    assert!(fleet.envelopes("duplicate").await >= N as u64, "each redelivery found its event durable");
    for i in 0..N {
        let native = format!("Ev0LOST{i:04}");
        let steps = handled(&store, &native).await;
        assert_eq!(count(&steps, Step::Received), 1, "{native} enqueued once: {steps:?}");
        assert_eq!(count(&steps, Step::Succeeded), 1, "{native} handled once: {steps:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_connection_is_replaced() {
    let fleet = Fleet::start("ingress", 1, &[("EVENTFLEET_SLACK_SOCKET_PING_TIMEOUT_S", "3")]).await;
    let frozen = fleet.socket.open_connections()[0];
    fleet.socket.freeze(frozen);
    let replaced = fleet.socket.wait_for(WAIT, |s| s.open_connections().iter().any(|c| *c != frozen)).await;
    assert!(replaced, "a replacement connection opened");
    let envelope = fleet.socket.send("events_api", event("Ev0AFTERSTALE"));
    fleet.wait_acks(&envelope, 1).await;
    assert_ne!(fleet.socket.acks(&envelope)[0].connection, frozen);
    assert_eq!(fleet.metric("eventfleet_ingress_socket_reconnects_total", "reason=\"stale\"").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_disabled_stops_socket_mode_and_the_http_routes_keep_serving() {
    let fleet = Fleet::start("ingress", 1, &[]).await;
    let (status, _) = fleet.ready().await;
    assert_eq!(status, 200);
    fleet.socket.disconnect(fleet.socket.open_connections()[0], "link_disabled", Duration::from_secs(10));
    let (status, body) = wait_ready(&fleet, |_, b| b["socket_mode"]["stopped"].is_string()).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["socket_mode"]["stopped"].as_str().unwrap().contains("link_disabled"), "{body}");
    assert!(fleet.socket.wait_for(WAIT, |s| s.open_connections().is_empty()).await, "the connection closed");
    // Longer than the first reconnect delay (0.5 s): a reconnect would show within it.
    let reconnected = fleet.socket.wait_for(Duration::from_secs(3), |s| s.connections_opened() > 1).await;
    assert!(!reconnected, "no reconnect after link_disabled");
    let answer = fleet.post_http(&event("Ev0OVERHTTP")).await;
    assert_eq!(answer.status(), 200, "the HTTP route still accepts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_stops_socket_mode_without_retrying() {
    let fleet = Fleet::spawn_only("ingress", 2, &[], |s| s.set_open_error(Some("invalid_auth"))).await;
    let (status, body) = wait_ready(&fleet, |_, b| b["socket_mode"]["stopped"].is_string()).await;
    assert_eq!(status, 503, "{body}");
    let stopped = body["socket_mode"]["stopped"].as_str().unwrap();
    assert!(stopped.contains("invalid_auth") && stopped.contains("EVENTFLEET_SLACK_APP_TOKEN"), "{stopped}");
    assert!(!stopped.contains(APP_TOKEN), "the token is never shown");
    // Both slots asked once at most; neither retried a refused token.
    assert!((1..=2).contains(&fleet.socket.open_calls().len()), "{:?}", fleet.socket.open_calls());
    let health = reqwest::get(format!("{}/health", fleet.base)).await.unwrap();
    assert_eq!(health.status(), 200);
}

#[test]
fn a_bot_token_in_place_of_the_app_token_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let out = support::eventfleet()
        .args(["ingress", "--data-dir"])
        .arg(dir.path())
        .env("EVENTFLEET_SLACK_APP_TOKEN", "xoxb-123-secretvalue")
        .env("EVENTFLEET_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("EVENTFLEET_SLACK_APP_TOKEN") && stderr.contains("xapp-"), "{stderr}");
    assert!(!stderr.contains("secretvalue"), "the token is never echoed: {stderr}");
}
