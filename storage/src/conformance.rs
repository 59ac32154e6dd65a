//! The conformance suite: the promises every backend keeps, as generic async test functions over a
//! [`Harness`], and [`crate::conformance_suite!`] which instantiates each as a `#[tokio::test]` for one backend.
//!
//! A behaviour this suite does not pin is not a guarantee. Where an emulator cannot show a behaviour, the
//! backend's harness says so in [`Gaps`] and the test checks what it can and prints what it skipped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use eventfleet_schema::{
    AuditEntry, Body, DedupId, Envelope, EnvelopeV1, ErrorClass, EventId, HookFilter, HookId, HookKind, IdempotencyKey,
    Kind, RetryRecord, RetryStatus, Source, Status, Step, Timestamp, Verification, VerificationMethod, Webhook,
};

use crate::{
    Actor, AuditQuery, DeadLetterFilter, Delivery, Failure, OutgoingMessage, ReceivedMessage, Start, StorageError,
    Store,
};

/// How a harness moves time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeControl {
    /// The backend reads tokio's clock, which is paused: advancing is instant.
    Paused,
    /// The backend reads the real clock (an emulator): advancing sleeps.
    Real,
}

/// Known behaviours a backend's test environment cannot show (an emulator's gaps). The real backend must still
/// be right; the suite skips only the assertion the gap makes impossible, and says so.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gaps {
    /// Expired items are never deleted by the emulator (DynamoDB TTL). Reads must still filter them.
    pub ttl_not_enforced: bool,
    /// A dedup id is accepted again once the first message is deleted (AWS keeps it the whole window).
    pub dedup_forgotten_after_delete: bool,
    /// Two concurrent receivers can hold one message group at once.
    pub group_lock_racy: bool,
    /// A receipt whose visibility ran out (or that a later receive superseded) is still accepted.
    pub stale_receipt_accepted: bool,
    /// The queue's oldest-message age is not available (SQS has it only as a CloudWatch metric, which an
    /// emulator does not produce).
    pub oldest_age_unavailable: bool,
}

/// One backend under test.
pub struct Harness {
    /// Its ports.
    pub store: Store,
    /// How time moves.
    pub time: TimeControl,
    /// The backend's max receive count (redrive to the DLQ after it).
    pub max_receive_count: u32,
    /// What its environment cannot show.
    pub gaps: Gaps,
    /// Prefix for this test's groups and keys, so tests sharing a backend do not collide.
    pub scope: String,
}

impl Harness {
    /// Lets `d` pass for the backend.
    pub async fn advance(&self, d: Duration) {
        match self.time {
            TimeControl::Paused => tokio::time::advance(d).await,
            TimeControl::Real => tokio::time::sleep(d).await,
        }
    }

    fn group(&self, name: &str) -> String {
        format!("{}-{name}", self.scope)
    }

    fn key(&self, name: &str) -> IdempotencyKey {
        IdempotencyKey::from_raw(format!("test:{}:{name}", self.scope))
    }

    /// A message for `group` whose body is `text`, with a dedup id derived from `text`.
    pub fn message(&self, group: &str, text: &str) -> OutgoingMessage {
        let key = self.key(text);
        let env = envelope(key, &self.group(group), text);
        OutgoingMessage::first_delivery(env)
    }

    async fn send(&self, group: &str, text: &str) {
        let sent = self.store.queue.send_batch(vec![self.message(group, text)]).await.expect("send");
        sent.into_iter().next().expect("one result").expect("message accepted");
    }

    async fn receive(&self, max: usize, visibility: Duration) -> Vec<ReceivedMessage> {
        self.store.queue.receive(max, visibility, Duration::ZERO).await.expect("receive")
    }

    /// Receives until `want` messages arrived or a deadline (backends with real time may need a few polls). Asks
    /// for no more than `want` at a time: SQS hands out several messages of one group in one receive, and a
    /// message received but not wanted would count a receive it never had.
    async fn receive_n(&self, want: usize, visibility: Duration) -> Vec<ReceivedMessage> {
        let mut got = Vec::new();
        for _ in 0..20 {
            let max = (want - got.len()).clamp(1, 10);
            let batch = self.store.queue.receive(max, visibility, Duration::from_secs(1)).await.expect("receive");
            got.extend(batch);
            if got.len() >= want {
                break;
            }
        }
        got
    }
}

/// A test envelope; `text` is its body.
pub fn envelope(key: IdempotencyKey, group: &str, text: &str) -> Envelope {
    let now = Timestamp::now_system();
    Envelope::V1(EnvelopeV1 {
        event_id: EventId::new(),
        idempotency_key: key,
        source: Source::Hook { hook_id: HookId::from_raw("hk_conformance") },
        kind: Kind::new(Kind::HOOK_PAYLOAD),
        message_group: group.to_owned(),
        received_at: now,
        verification: Verification { method: VerificationMethod::HookUrl, verified_at: now },
        trace: None,
        headers: BTreeMap::new(),
        body: Body::Utf8(text.to_owned()),
    })
}

fn text(m: &ReceivedMessage) -> &str {
    m.envelope.as_v1().body.as_text().unwrap_or("")
}

const VIS: Duration = Duration::from_secs(30);

/// Within a group, messages come out in the order they were sent, one at a time.
pub async fn fifo_order_within_a_group(h: &Harness) {
    for i in 0..5 {
        h.send("a", &format!("m{i}")).await;
    }
    for i in 0..5 {
        let got = h.receive_n(1, VIS).await;
        assert_eq!(got.len(), 1, "one message per group at a time");
        assert_eq!(text(&got[0]), format!("m{i}"));
        h.store.queue.delete(&got[0].receipt).await.expect("delete");
    }
    assert!(h.receive(10, VIS).await.is_empty());
}

/// While a group's head is in flight the group yields nothing, and other groups keep flowing.
pub async fn group_blocked_while_head_in_flight_other_groups_flow(h: &Harness) {
    h.send("blocked", "b1").await;
    h.send("blocked", "b2").await;
    let first = h.receive_n(1, VIS).await;
    assert_eq!(first.iter().map(text).collect::<Vec<_>>(), ["b1"]);
    h.send("other", "o1").await;
    h.send("other2", "p1").await;
    let next = h.receive_n(2, VIS).await;
    let mut texts: Vec<_> = next.iter().map(text).collect();
    texts.sort();
    assert_eq!(texts, ["o1", "p1"], "other groups flow while 'blocked' waits");
    if !h.gaps.group_lock_racy {
        assert!(h.receive(10, VIS).await.is_empty(), "b2 stays behind b1");
    }
    h.store.queue.delete(&first[0].receipt).await.expect("delete b1");
    let after = h.receive_n(1, VIS).await;
    assert_eq!(after.iter().map(text).collect::<Vec<_>>(), ["b2"], "deleting the head unblocks the group");
}

/// A receive of many may hand out several messages of one group (SQS does; the embedded backend hands out one):
/// they come in group order, and no message of a group is handed out while an earlier one is in flight.
pub async fn a_receive_of_many_keeps_group_order(h: &Harness) {
    for name in ["g1-a", "g1-b", "g1-c"] {
        h.send("many1", name).await;
    }
    h.send("many2", "g2-a").await;
    let mut got = Vec::new();
    for _ in 0..5 {
        got.extend(h.store.queue.receive(10, VIS, Duration::from_secs(1)).await.expect("receive"));
        if got.iter().any(|m| text(m) == "g2-a") && got.iter().any(|m| text(m).starts_with("g1")) {
            break;
        }
    }
    let g1: Vec<_> = got.iter().filter(|m| m.group == h.group("many1")).map(text).collect();
    assert!(!g1.is_empty() && ["g1-a", "g1-b", "g1-c"].starts_with(&g1), "group order: {g1:?}");
    assert!(got.iter().any(|m| text(m) == "g2-a"), "other groups come too");
    if !h.gaps.group_lock_racy {
        assert!(h.receive(10, VIS).await.is_empty(), "the rest of a group waits while its messages are in flight");
    }
    for m in got.iter().filter(|m| m.group == h.group("many1")) {
        h.store.queue.delete(&m.receipt).await.expect("delete");
    }
    let mut all: Vec<String> = g1.iter().map(|t| t.to_string()).collect();
    while all.len() < 3 {
        let next = h.receive_n(1, VIS).await;
        assert_eq!(next.len(), 1, "the rest of the group flows after {all:?}");
        all.push(text(&next[0]).to_owned());
        h.store.queue.delete(&next[0].receipt).await.expect("delete");
    }
    assert_eq!(all, ["g1-a", "g1-b", "g1-c"]);
}

/// A resend with the same dedup id inside the window is dropped; after the window it is a new message.
pub async fn dedup_collapses_resend_inside_window_not_after(h: &Harness) {
    let msg = h.message("dedup", "d1");
    let first = h.store.queue.send_batch(vec![msg.clone()]).await.unwrap().remove(0).unwrap();
    let again = h.store.queue.send_batch(vec![msg.clone()]).await.unwrap().remove(0).unwrap();
    if h.time == TimeControl::Paused {
        assert_eq!(first, again, "a deduplicated send answers the first message's id");
    }
    let got = h.receive_n(1, VIS).await;
    assert_eq!(got.len(), 1);
    h.store.queue.delete(&got[0].receipt).await.unwrap();
    h.store.queue.send_batch(vec![msg.clone()]).await.unwrap().remove(0).unwrap();
    if h.gaps.dedup_forgotten_after_delete {
        eprintln!("gap: emulator forgets a dedup id once its message is deleted; not asserting the resend is dropped");
        let _ = h.receive_n(1, VIS).await.into_iter().next().map(|m| m.receipt);
    } else {
        assert!(h.receive(10, VIS).await.is_empty(), "resend inside the window is dropped even after delete");
    }
    if h.time == TimeControl::Paused {
        h.advance(Duration::from_secs(301)).await;
        h.store.queue.send_batch(vec![msg]).await.unwrap().remove(0).unwrap();
        let later = h.receive_n(1, VIS).await;
        assert_eq!(later.len(), 1, "after the 5-minute window the same dedup id is a new message");
    } else {
        eprintln!("real time: not waiting 5 minutes for the dedup window to pass");
    }
}

/// When the visibility timeout runs out the message is delivered again with receive count + 1, and the old
/// receipt is stale.
pub async fn visibility_expiry_redelivers_with_receive_count_plus_one(h: &Harness) {
    h.send("vis", "v1").await;
    let vis = Duration::from_secs(2);
    let first = h.receive_n(1, vis).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].receive_count, 1);
    if !h.gaps.group_lock_racy {
        assert!(h.receive(10, vis).await.is_empty(), "invisible while in flight");
    }
    h.advance(Duration::from_secs(3)).await;
    if h.gaps.stale_receipt_accepted {
        eprintln!("gap: emulator accepts expired receipts; not trying the expired one");
    } else {
        assert!(
            h.store.queue.change_visibility(&first[0].receipt, VIS).await.is_err(),
            "a message whose visibility ran out cannot be hidden again by its old receipt"
        );
    }
    let second = h.receive_n(1, VIS).await;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].message_id, first[0].message_id);
    assert_eq!(second[0].receive_count, 2);
    if !h.gaps.stale_receipt_accepted {
        assert!(
            h.store.queue.delete(&first[0].receipt).await.is_err(),
            "the first receipt is stale once the message was received again"
        );
    }
    h.store.queue.delete(&second[0].receipt).await.expect("current receipt deletes");
}

/// Visibility can be extended (heartbeat) and released at once (zero).
pub async fn extending_and_releasing_visibility(h: &Harness) {
    h.send("ext", "e1").await;
    let got = h.receive_n(1, Duration::from_secs(2)).await;
    assert_eq!(got.len(), 1);
    h.store.queue.change_visibility(&got[0].receipt, Duration::from_secs(60)).await.expect("extend");
    h.advance(Duration::from_secs(3)).await;
    if !h.gaps.group_lock_racy {
        assert!(h.receive(10, VIS).await.is_empty(), "extended past the first timeout");
    }
    h.store.queue.change_visibility(&got[0].receipt, Duration::ZERO).await.expect("release");
    let again = h.receive_n(1, VIS).await;
    assert_eq!(again.len(), 1, "released message is visible at once");
    assert_eq!(again[0].receive_count, 2);
}

/// Delete removes the message for good; deleting twice fails.
pub async fn delete_removes_the_message(h: &Harness) {
    h.send("del", "x1").await;
    let got = h.receive_n(1, Duration::from_secs(1)).await;
    h.store.queue.delete(&got[0].receipt).await.expect("delete");
    h.advance(Duration::from_secs(2)).await;
    assert!(h.receive(10, VIS).await.is_empty());
    let stale = h.store.queue.delete(&got[0].receipt).await;
    if h.time == TimeControl::Paused {
        assert!(matches!(stale, Err(StorageError::StaleReceipt)), "{stale:?}");
    }
}

/// A message received `max_receive_count` times moves to the DLQ on the next receive, unblocking its group.
pub async fn redrive_to_dlq_after_max_receive_count(h: &Harness) {
    h.send("poison", "p1").await;
    h.send("poison", "p2").await;
    let vis = Duration::from_secs(1);
    for attempt in 1..=h.max_receive_count {
        let got = h.receive_n(1, vis).await;
        assert_eq!(got.len(), 1, "attempt {attempt}");
        assert_eq!(text(&got[0]), "p1");
        assert_eq!(got[0].receive_count, attempt);
        h.advance(Duration::from_secs(2)).await;
    }
    let next = h.receive_n(1, VIS).await;
    assert_eq!(next.iter().map(text).collect::<Vec<_>>(), ["p2"], "p1 moved to the DLQ, p2 flows");
    let dead = h.store.dead_letters.list(&DeadLetterFilter::default()).await.unwrap();
    let p1: Vec<_> = dead.iter().filter(|d| d.envelope.as_v1().body.as_text() == Some("p1")).collect();
    assert_eq!(p1.len(), 1, "p1 is on the DLQ once");
    assert!(p1[0].reason.contains("max receive count"), "{}", p1[0].reason);
}

/// Dead letters: moved with a reason, listed with filters, redriven to the tail of their group, purged.
pub async fn dead_letters_list_redrive_and_purge(h: &Harness) {
    for name in ["k1", "k2", "k3"] {
        h.send("dl", name).await;
        let got = h.receive_n(1, VIS).await;
        assert_eq!(text(&got[0]), name);
        let reason = if name == "k2" { "channel_not_found" } else { "timeout after 30s" };
        h.store.queue.move_to_dlq(&got[0].receipt, reason).await.expect("move to dlq");
    }
    let all = h.store.dead_letters.list(&DeadLetterFilter::default()).await.unwrap();
    let mine: Vec<_> = all.iter().filter(|d| d.envelope.message_group() == h.group("dl")).collect();
    assert_eq!(mine.iter().map(|d| d.envelope.as_v1().body.as_text().unwrap()).collect::<Vec<_>>(), ["k1", "k2", "k3"]);
    let by_error = DeadLetterFilter { error: Some("CHANNEL_NOT".into()), ..Default::default() };
    let found = h.store.dead_letters.list(&by_error).await.unwrap();
    assert!(found.iter().any(|d| d.reason == "channel_not_found"));
    assert!(found.iter().all(|d| d.reason.contains("channel_not_found")));
    let none = DeadLetterFilter { kind: Some("slack.event".into()), ..Default::default() };
    assert!(
        h.store.dead_letters.list(&none).await.unwrap().iter().all(|d| d.envelope.kind().as_str() == "slack.event")
    );
    let got = h.store.dead_letters.get(&mine[0].message_id).await.unwrap().expect("get by id");
    assert_eq!(got.reason, "timeout after 30s");

    // Redrive k1 and k3 (in that order) while k0 sits in the group: they go behind it.
    h.send("dl", "k0").await;
    let redriven =
        h.store.dead_letters.redrive(&[mine[0].message_id.clone(), mine[2].message_id.clone()]).await.unwrap();
    assert!(redriven.iter().all(Result::is_ok), "{redriven:?}");
    let unknown = h.store.dead_letters.redrive(&[crate::MessageId("nope".into())]).await.unwrap();
    assert!(unknown[0].is_err(), "an unknown id fails alone");
    let mut order = Vec::new();
    for _ in 0..3 {
        let got = h.receive_n(1, VIS).await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].receive_count, 1, "redriven messages start over");
        order.push(text(&got[0]).to_owned());
        h.store.queue.delete(&got[0].receipt).await.unwrap();
    }
    assert_eq!(order, ["k0", "k1", "k3"]);
    let purged = h.store.dead_letters.purge(&by_error).await.unwrap();
    assert!(purged >= 1);
    assert!(h.store.dead_letters.get(&mine[1].message_id).await.unwrap().is_none());

    // Delete by id: only the named dead letter goes.
    h.send("dl2", "x1").await;
    h.send("dl3", "x2").await;
    for got in h.receive_n(2, VIS).await {
        h.store.queue.move_to_dlq(&got.receipt, "to delete").await.unwrap();
    }
    let doomed = h
        .store
        .dead_letters
        .list(&DeadLetterFilter { error: Some("to delete".into()), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(doomed.len(), 2);
    assert_eq!(
        h.store.dead_letters.delete(&[doomed[0].message_id.clone(), crate::MessageId("nope".into())]).await.unwrap(),
        1
    );
    assert!(h.store.dead_letters.get(&doomed[0].message_id).await.unwrap().is_none());
    assert!(h.store.dead_letters.get(&doomed[1].message_id).await.unwrap().is_some());
}

/// A long poll returns as soon as a message arrives, and returns empty when none does by the deadline.
pub async fn long_poll_returns_on_arrival_and_times_out_empty(h: &Harness) {
    let queue = Arc::clone(&h.store.queue);
    let start = tokio::time::Instant::now();
    let empty = queue.receive(10, VIS, Duration::from_secs(2)).await.unwrap();
    assert!(empty.is_empty());
    assert!(start.elapsed() >= Duration::from_secs(2), "waited the whole poll");

    let sender = Arc::clone(&h.store.queue);
    let msg = h.message("lp", "late");
    let send = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        sender.send_batch(vec![msg]).await.unwrap();
    });
    let start = tokio::time::Instant::now();
    let got = queue.receive(10, VIS, Duration::from_secs(20)).await.unwrap();
    send.await.unwrap();
    assert_eq!(got.iter().map(text).collect::<Vec<_>>(), ["late"]);
    assert!(start.elapsed() < Duration::from_secs(20), "returned before the deadline");
}

/// The worker settings the protocol tests use: a short visibility so that expiry is quick on real clocks.
fn actor(max_attempts: u32) -> Actor {
    Actor {
        name: "worker:conformance".into(),
        visibility: Duration::from_secs(2),
        max_attempts,
        horizon: Duration::from_secs(3600),
    }
}

impl Harness {
    /// Accepts a fresh event of `name` (its own group and key).
    async fn accept(&self, name: &str) -> (crate::Accepted, OutgoingMessage) {
        let msg = self.message(name, name);
        let accepted = self.store.protocol.accept(msg.clone(), Duration::from_secs(3600), "ingress:conformance").await;
        (accepted.expect("accept"), msg)
    }

    /// Receives deliveries through the protocol until one arrives or a deadline.
    async fn deliver(&self, actor: &Actor) -> Vec<Delivery> {
        for _ in 0..20 {
            let got = self.store.protocol.receive(10, Duration::from_secs(1), actor).await.expect("receive");
            if !got.is_empty() {
                return got;
            }
        }
        Vec::new()
    }

    async fn steps(&self, id: EventId) -> Vec<Step> {
        self.store.audit.history(id).await.expect("history").iter().map(|e| e.step).collect()
    }
}

/// Racing identical deliveries make one event: one winner, the rest duplicates of its event id, one message on
/// the queue, and one `received` and one `enqueued` line however many raced.
pub async fn racing_accepts_make_one_event_with_one_received_and_one_enqueued_line(h: &Harness) {
    let msg = h.message("race", "race");
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let protocol = Arc::clone(&h.store.protocol);
        let mut msg = msg.clone();
        // Each delivery gets its own event id at the ingress.
        msg.envelope.set_event_id(EventId::new());
        tasks.push(tokio::spawn(async move {
            protocol.accept(msg, Duration::from_secs(3600), "ingress:conformance").await.unwrap()
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let new: Vec<_> = answers.iter().filter(|a| !a.is_duplicate()).collect();
    assert_eq!(new.len(), 1, "{answers:?}");
    let id = new[0].event_id();
    assert!(answers.iter().all(|a| a.event_id() == id), "duplicates answer the first delivery's event id");
    let rec = h.store.idempotency.get(msg.envelope.idempotency_key()).await.unwrap().expect("record");
    assert_eq!((rec.event_id, rec.duplicate_count), (id, 19));
    let steps = h.steps(id).await;
    assert_eq!(steps.iter().filter(|s| **s == Step::Received).count(), 1, "{steps:?}");
    assert_eq!(steps.iter().filter(|s| **s == Step::Enqueued).count(), 1, "{steps:?}");
    assert_eq!(steps.iter().filter(|s| **s == Step::Duplicate).count(), 19, "{steps:?}");
    let got = h.receive_n(1, VIS).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].envelope.event_id(), id, "the queued message carries the record's event id");
    h.store.queue.delete(&got[0].receipt).await.unwrap();
    assert!(h.receive(10, VIS).await.is_empty(), "one message for twenty deliveries");
}

/// An event is found by the sender's own id, the key's text after its last `:`, whatever its prefix; an id that
/// only begins or ends the same finds nothing.
pub async fn an_event_is_found_by_the_senders_own_id(h: &Harness) {
    let sender_id = format!("Ev{}", h.scope.replace(['_', '-'], ""));
    let (accepted, _) = h.accept(&sender_id).await;
    let other = IdempotencyKey::from_raw(format!("other:arn:aws:sns:eu-west-1:1:t:{sender_id}"));
    let mut msg = OutgoingMessage::first_delivery(envelope(other.clone(), &h.group("other"), "other"));
    msg.envelope.set_event_id(EventId::new());
    let second = h.store.protocol.accept(msg, Duration::from_secs(3600), "ingress:conformance").await.unwrap();
    // Indexes of a real DynamoDB table are eventually consistent: poll briefly.
    let mut found = Vec::new();
    for _ in 0..50 {
        found = h.store.idempotency.find_by_sender_id(&sender_id).await.unwrap();
        if found.len() == 2 {
            break;
        }
        h.advance(Duration::from_millis(100)).await;
    }
    let mut ids: Vec<EventId> = found.iter().map(|r| r.event_id).collect();
    ids.sort();
    let mut want = vec![accepted.event_id(), second.event_id()];
    want.sort();
    assert_eq!(ids, want, "{found:?}");
    assert!(found.iter().any(|r| r.key == other));
    let prefix = &sender_id[..sender_id.len() - 1];
    assert!(h.store.idempotency.find_by_sender_id(prefix).await.unwrap().is_empty());
    assert!(h.store.idempotency.find_by_sender_id(&sender_id[1..]).await.unwrap().is_empty());
}

/// Many keys are read at once, in the order asked, absent ones as `None`, a key asked twice answered twice; more
/// keys than one batched read holds are split.
pub async fn many_records_are_read_at_once_in_the_order_asked(h: &Harness) {
    let (a, _) = h.accept("many-a").await;
    let (b, _) = h.accept("many-b").await;
    let mut keys = vec![h.key("many-b"), h.key("many-absent"), h.key("many-a"), h.key("many-b")];
    keys.extend((0..150).map(|i| h.key(&format!("many-none-{i}"))));
    let got = h.store.idempotency.get_many(&keys).await.unwrap();
    assert_eq!(got.len(), keys.len());
    let ids: Vec<Option<EventId>> = got.iter().take(4).map(|r| r.as_ref().map(|r| r.event_id)).collect();
    assert_eq!(ids, vec![Some(b.event_id()), None, Some(a.event_id()), Some(b.event_id())]);
    assert!(got[4..].iter().all(Option::is_none));
    assert!(h.store.idempotency.get_many(&[]).await.unwrap().is_empty());
}

/// The happy path: accepted, started as attempt 1, succeeded (DONE, deleted, its line); a later delivery of the
/// same key is a duplicate, and a stray copy of the message on the queue is skipped without running.
pub async fn a_delivery_starts_succeeds_and_a_copy_is_skipped(h: &Harness) {
    let a = actor(5);
    let (accepted, msg) = h.accept("happy").await;
    let id = accepted.event_id();
    assert!(!accepted.is_duplicate());
    let got = h.deliver(&a).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].start, Start::Run { attempt: 1, replay: false });
    h.store.protocol.succeed(&got[0].message, 1, "posted", &a).await.unwrap();
    let rec = h.store.idempotency.get(msg.envelope.idempotency_key()).await.unwrap().unwrap();
    assert_eq!((rec.status, rec.outcome.as_deref()), (Status::Done, Some("posted")));
    assert_eq!(h.steps(id).await, [Step::Received, Step::Enqueued, Step::Started, Step::Succeeded]);
    let again = h.store.protocol.accept(msg.clone(), Duration::from_secs(3600), "ingress:conformance").await.unwrap();
    assert_eq!(again, crate::Accepted::Duplicate { event_id: id, status: Status::Done });

    // A copy on the queue (a resend past the dedup window): skipped, deleted, audited, never run.
    let copy = OutgoingMessage { dedup_id: DedupId::fresh(), ..msg };
    h.store.queue.send_batch(vec![copy]).await.unwrap().remove(0).unwrap();
    let got = h.deliver(&a).await;
    assert_eq!(got.iter().map(|d| d.start.clone()).collect::<Vec<_>>(), [Start::Skipped]);
    assert!(h.receive(10, VIS).await.is_empty(), "the skipped copy is deleted");
    assert!(h.steps(id).await.contains(&Step::DuplicateDeliverySkipped));
}

/// A retryable failure: the retry record, the message hidden for the delay, the next start is attempt 2; the
/// success after it resolves the retry record.
pub async fn a_retry_hides_the_message_and_counts_the_attempt(h: &Harness) {
    let a = actor(5);
    let (accepted, _) = h.accept("retry").await;
    let id = accepted.event_id();
    let got = h.deliver(&a).await;
    let failure = Failure { attempt: 1, error: "slack 500".into(), class: ErrorClass::Retryable };
    h.store.protocol.retry(&got[0].message, &failure, Duration::from_secs(2), &a).await.unwrap();
    let record = h.store.retries.get(id).await.unwrap().expect("retry record");
    assert_eq!((record.attempts, record.status), (1, RetryStatus::Active));
    assert!(record.next_attempt_at.is_some());
    assert!(h.store.protocol.receive(10, Duration::ZERO, &a).await.unwrap().is_empty(), "hidden for the delay");
    h.advance(Duration::from_secs(3)).await;
    let got = h.deliver(&a).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].start, Start::Run { attempt: 2, replay: false });
    h.store.protocol.succeed(&got[0].message, 2, "posted", &a).await.unwrap();
    assert_eq!(h.store.retries.get(id).await.unwrap().unwrap().status, RetryStatus::Resolved);
    let steps = h.steps(id).await;
    assert_eq!(steps.iter().filter(|s| **s == Step::Started).count(), 2, "{steps:?}");
    assert!(steps.contains(&Step::RetryScheduled));
}

/// An attempt that stops without an outcome (its worker died) counts: the next start is the attempt after it,
/// and once the attempts are used up the start says so instead of running, and the dead letter follows.
pub async fn a_stopped_attempt_counts_until_the_attempts_are_used_up(h: &Harness) {
    let a = actor(2);
    let (accepted, msg) = h.accept("stopped").await;
    let id = accepted.event_id();
    let got = h.deliver(&a).await;
    assert_eq!(got[0].start, Start::Run { attempt: 1, replay: false });
    // The worker dies: no outcome, the visibility runs out.
    h.advance(Duration::from_secs(3)).await;
    let got = h.deliver(&a).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].start, Start::Run { attempt: 2, replay: false }, "the stopped attempt 1 counts");
    assert_eq!(h.store.retries.get(id).await.unwrap().map(|r| r.attempts), Some(1));
    h.advance(Duration::from_secs(3)).await;
    let got = h.deliver(&a).await;
    assert_eq!(got.len(), 1);
    let Start::Exhausted { attempts, reason } = got[0].start.clone() else {
        panic!("two attempts stopped and two are allowed: expected exhausted, got {:?}", got[0].start);
    };
    assert_eq!(attempts, 2);
    assert!(reason.contains("stopped without an outcome"), "{reason}");
    let failure = Failure { attempt: attempts, error: reason.clone(), class: ErrorClass::Retryable };
    h.store.protocol.dead_letter(&got[0].message, &failure, &reason, &a).await.unwrap();
    let rec = h.store.idempotency.get(msg.envelope.idempotency_key()).await.unwrap().unwrap();
    assert_eq!(rec.status, Status::Dead);
    let steps = h.steps(id).await;
    assert_eq!(steps.iter().filter(|s| **s == Step::Started).count(), 2, "{steps:?}");
    assert_eq!(steps.last(), Some(&Step::DeadLettered), "{steps:?}");
}

/// A permanent failure dead-letters the event with its records; a replay (reopen, redrive) runs it again as a
/// first attempt marked as a replay.
pub async fn a_dead_letter_is_recorded_and_its_replay_runs_as_a_first_attempt(h: &Harness) {
    let a = actor(5);
    let (accepted, msg) = h.accept("dead").await;
    let id = accepted.event_id();
    let got = h.deliver(&a).await;
    let failure = Failure { attempt: 1, error: "channel_not_found".into(), class: ErrorClass::Permanent };
    h.store.protocol.dead_letter(&got[0].message, &failure, "channel_not_found", &a).await.unwrap();
    let key = msg.envelope.idempotency_key();
    let rec = h.store.idempotency.get(key).await.unwrap().unwrap();
    assert_eq!((rec.status, rec.outcome.as_deref()), (Status::Dead, Some("channel_not_found")));
    let retry = h.store.retries.get(id).await.unwrap().unwrap();
    assert_eq!((retry.status, retry.dead_reason.as_deref()), (RetryStatus::Dead, Some("channel_not_found")));
    let dead = h.store.dead_letters.list(&DeadLetterFilter::default()).await.unwrap();
    let mine: Vec<_> = dead.iter().filter(|d| d.envelope.event_id() == id).collect();
    assert_eq!(mine.len(), 1, "on the DLQ once");
    assert_eq!(mine[0].reason, "channel_not_found");

    let reopened = h.store.idempotency.reopen(key, "replayed by alice").await.unwrap().unwrap();
    assert_eq!(reopened.status, Status::Enqueued);
    let mut retry = retry;
    retry.attempts = 0;
    retry.status = RetryStatus::Active;
    h.store.retries.upsert(&retry).await.unwrap();
    h.store.dead_letters.redrive(&[mine[0].message_id.clone()]).await.unwrap().remove(0).unwrap();
    let got = h.deliver(&a).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].start, Start::Run { attempt: 1, replay: true });
    h.store.protocol.succeed(&got[0].message, 1, "posted", &a).await.unwrap();
    assert_eq!(h.store.idempotency.get(key).await.unwrap().unwrap().status, Status::Done);
}

/// A busy group: a receive hands out the messages behind its head as waiting (the group stays blocked), and a
/// success starts the next one in the same step; every message runs once, in group order.
pub async fn a_busy_group_runs_in_order_with_each_success_starting_the_next(h: &Harness) {
    let a = actor(5);
    let mut ids = Vec::new();
    for name in ["busy-1", "busy-2", "busy-3"] {
        let msg = h.message("busy", name);
        ids.push(
            h.store.protocol.accept(msg, Duration::from_secs(3600), "ingress:conformance").await.unwrap().event_id(),
        );
    }
    let mut order = Vec::new();
    let mut pending: Vec<Delivery> = Vec::new();
    for _ in 0..10 {
        if pending.is_empty() {
            pending = h.deliver(&a).await;
            assert!(!pending.is_empty(), "the group's next message comes after {order:?}");
        }
        let delivery = pending.remove(0);
        let start = match delivery.start {
            Start::Waiting => h.store.protocol.start(&delivery.message, &a).await.unwrap(),
            other => other,
        };
        assert_eq!(start, Start::Run { attempt: 1, replay: false });
        order.push(delivery.message.envelope.event_id());
        match pending.first() {
            Some(next) => {
                assert_eq!(next.start, Start::Waiting, "only the first of a group starts at receive");
                let started = h
                    .store
                    .protocol
                    .succeed_and_start(&delivery.message, 1, "posted", &next.message, &a)
                    .await
                    .unwrap();
                assert_eq!(started, Start::Run { attempt: 1, replay: false }, "the success started the next");
                pending[0].start = started;
            }
            None => h.store.protocol.succeed(&delivery.message, 1, "posted", &a).await.unwrap(),
        }
        if order.len() == ids.len() {
            break;
        }
    }
    assert_eq!(order, ids, "group order, each once");
    for id in &ids {
        let steps = h.steps(*id).await;
        assert_eq!(steps, [Step::Received, Step::Enqueued, Step::Started, Step::Succeeded], "{steps:?}");
    }
    assert!(h.receive(10, VIS).await.is_empty());
    let stats = h.store.queue.stats().await.unwrap();
    assert_eq!((stats.waiting, stats.in_flight), (0, 0), "every message of the group deleted: {stats:?}");
}

/// A group's chain deletes the messages it finished while it runs on: at a heartbeat of the one running (a long
/// handler), and when it ends other than in a success (here a retry). None is left in flight to come back after
/// its visibility.
pub async fn a_chain_that_ends_in_a_retry_deletes_the_messages_it_finished(h: &Harness) {
    // A visibility long enough that the aws backend leaves the first one's delete to the second (it leaves one only
    // while half its visibility is still to run), however slow the emulator.
    let a = Actor { visibility: Duration::from_secs(60), ..actor(5) };
    for name in ["chain-1", "chain-2", "chain-3", "chain-4"] {
        h.store
            .protocol
            .accept(h.message("chain", name), Duration::from_secs(3600), "ingress:conformance")
            .await
            .unwrap();
    }
    let got = h.deliver(&a).await;
    assert_eq!(got.len(), 4, "the head and the three behind it");
    let count = || async {
        let stats = h.store.queue.stats().await.unwrap();
        stats.waiting + stats.in_flight
    };
    let started = h.store.protocol.succeed_and_start(&got[0].message, 1, "posted", &got[1].message, &a).await.unwrap();
    assert_eq!(started, Start::Run { attempt: 1, replay: false });
    // The second one's handler runs long: its heartbeat.
    h.store.queue.change_visibility(&got[1].message.receipt, VIS).await.unwrap();
    assert_eq!(count().await, 3, "the first deleted by the heartbeat of the second");
    let started = h.store.protocol.succeed_and_start(&got[1].message, 1, "posted", &got[2].message, &a).await.unwrap();
    assert_eq!(started, Start::Run { attempt: 1, replay: false });
    let failure = Failure { attempt: 1, error: "slack 500".into(), class: ErrorClass::Retryable };
    h.store.protocol.retry(&got[2].message, &failure, Duration::from_secs(60), &a).await.unwrap();
    assert_eq!(count().await, 2, "the second deleted by the retry of the third; the third and the last kept");
}

/// A started delivery given back (shutdown) is not a stopped attempt: it runs again as the same attempt.
pub async fn a_release_gives_the_message_back_without_counting_an_attempt(h: &Harness) {
    let a = actor(5);
    let (accepted, _) = h.accept("release").await;
    let got = h.deliver(&a).await;
    assert_eq!(got[0].start, Start::Run { attempt: 1, replay: false });
    h.store.protocol.release(&got[0].message, true, &a).await.unwrap();
    let got = h.deliver(&a).await;
    assert_eq!(got.len(), 1, "visible again at once");
    assert_eq!(got[0].start, Start::Run { attempt: 1, replay: false });
    assert!(h.steps(accepted.event_id()).await.contains(&Step::Released));
}

/// A deferred delivery comes back after its delay as the same attempt, with a `deferred` line saying why.
pub async fn a_deferral_hides_the_message_without_counting_an_attempt(h: &Harness) {
    let a = actor(5);
    let (accepted, _) = h.accept("defer").await;
    let got = h.deliver(&a).await;
    assert_eq!(got[0].start, Start::Run { attempt: 1, replay: false });
    h.store.protocol.defer(&got[0].message, Duration::from_secs(2), "slack asked to wait", &a).await.unwrap();
    assert!(h.receive(10, VIS).await.is_empty(), "hidden for the delay");
    h.advance(Duration::from_secs(3)).await;
    let got = h.deliver(&a).await;
    assert_eq!(got.len(), 1, "visible after the delay");
    assert_eq!(got[0].start, Start::Run { attempt: 1, replay: false }, "a deferral is not an attempt");
    let trail = h.store.audit.history(accepted.event_id()).await.unwrap();
    let deferred = trail.iter().find(|e| e.step == Step::Deferred).expect("a deferred line");
    assert_eq!(deferred.detail["reason"], "slack asked to wait");
    assert_eq!(deferred.detail["delay_ms"], 2000);
}

/// Alarm threads are written by compare-and-set: a stale version is a conflict, a missing row is version 0.
pub async fn alarm_threads_are_compare_and_set(h: &Harness) {
    let arn = format!("arn:aws:cloudwatch:us-east-1:123456789012:alarm:{}", EventId::new());
    let threads = &h.store.alarm_threads;
    assert_eq!(threads.thread(&arn).await.unwrap(), None);
    let mut thread = crate::AlarmThread {
        alarm_arn: arn.clone(),
        name: "cpu-high".into(),
        channel: "#alarms".into(),
        channel_id: "C0ALARMS01".into(),
        message_ts: "1700000000.000100".into(),
        thread_ts: "1700000000.000100".into(),
        state: "ALARM".into(),
        since: h.store.clock.now(),
        transitions: 1,
        flap_run: 1,
        flap_ts: None,
        last_event: EventId::new(),
        updated_at: h.store.clock.now(),
        version: 0,
    };
    let v1 = threads.put_thread(&thread).await.unwrap();
    assert!(matches!(threads.put_thread(&thread).await, Err(StorageError::Conflict(_))), "version 0 exists now");
    let stored = threads.thread(&arn).await.unwrap().expect("stored");
    assert_eq!(stored.version, v1);
    assert_eq!(stored, crate::AlarmThread { version: v1, ..thread.clone() });
    thread.version = v1;
    thread.state = "OK".into();
    thread.transitions = 2;
    let v2 = threads.put_thread(&thread).await.unwrap();
    assert!(v2 > v1);
    assert!(matches!(threads.put_thread(&thread).await, Err(StorageError::Conflict(_))), "a stale version");
    assert_eq!(threads.thread(&arn).await.unwrap().unwrap().state, "OK");
}

/// A channel's shared state is written by compare-and-set: of two writers that read one version, the first
/// wins and the second must read again; a channel never written reads as none.
pub async fn channel_states_are_compare_and_set(h: &Harness) {
    let channels = &h.store.channels;
    let channel = format!("#c-{}", EventId::new());
    assert_eq!(channels.channel(&channel).await.unwrap(), None);
    let lane = crate::Lane { worker: "worker@a:1".into(), until: h.store.clock.now() };
    let state =
        crate::ChannelState { channel: channel.clone(), window_alarms: 3, lanes: vec![lane], ..Default::default() };
    let c1 = channels.put_channel(&state).await.unwrap();
    let first = crate::ChannelState { version: c1, window_alarms: 4, ..state.clone() };
    let second = crate::ChannelState { version: c1, window_alarms: 5, ..state.clone() };
    channels.put_channel(&first).await.unwrap();
    assert!(matches!(channels.put_channel(&second).await, Err(StorageError::Conflict(_))));
    let stored = channels.channel(&channel).await.unwrap().unwrap();
    assert_eq!((stored.window_alarms, stored.lanes.len()), (4, 1));
}

/// A living message is written by compare-and-set: a stale version is a conflict, a missing one is version 0,
/// and what it shows round-trips.
pub async fn living_messages_are_compare_and_set(h: &Harness) {
    let key = format!("#ci#run:octo/repo:{}", EventId::new());
    assert_eq!(h.store.living.living(&key).await.unwrap(), None);
    let mut message = crate::LivingMessage {
        key: key.clone(),
        channel: "#ci".into(),
        channel_id: "C0CI000001".into(),
        ts: "1700000000.000100".into(),
        state: serde_json::json!({"head": {"headline": "Workflow *CI* #1 is running"}, "parts": []}),
        last_event: EventId::new(),
        pending_reply: Some("failed".into()),
        updated_at: h.store.clock.now(),
        version: 0,
    };
    let v1 = h.store.living.put_living(&message).await.unwrap();
    assert!(matches!(h.store.living.put_living(&message).await, Err(StorageError::Conflict(_))), "exists now");
    let stored = h.store.living.living(&key).await.unwrap().expect("stored");
    assert_eq!(stored, crate::LivingMessage { version: v1, ..message.clone() });
    message.version = v1;
    message.pending_reply = None;
    let v2 = h.store.living.put_living(&message).await.unwrap();
    assert!(v2 > v1);
    assert!(matches!(h.store.living.put_living(&message).await, Err(StorageError::Conflict(_))), "a stale version");
    assert_eq!(h.store.living.living(&key).await.unwrap().unwrap().pending_reply, None);
}

/// A channel's digests are written by compare-and-set, and say which digest holds an event.
pub async fn digests_are_compare_and_set(h: &Harness) {
    let channel = format!("#{}", h.group("burst"));
    assert_eq!(h.store.digests.digest(&channel).await.unwrap(), None);
    let item = |title: &str| crate::DigestItem {
        event_id: EventId::new(),
        from: "hook deploys".into(),
        title: title.into(),
        at: h.store.clock.now(),
    };
    let (first, second, third) = (item("one"), item("two"), item("three"));
    let mut digest = crate::ChannelDigest {
        channel: channel.clone(),
        seq: 1,
        opened_at: h.store.clock.now(),
        items: vec![first.clone(), second.clone()],
        closed: Vec::new(),
        version: 0,
    };
    let v1 = h.store.digests.put_digest(&digest).await.unwrap();
    assert!(matches!(h.store.digests.put_digest(&digest).await, Err(StorageError::Conflict(_))), "exists now");
    let stored = h.store.digests.digest(&channel).await.unwrap().expect("stored");
    assert_eq!(stored, crate::ChannelDigest { version: v1, ..digest.clone() });
    assert_eq!(stored.first_of(first.event_id), Some((1, first.event_id)));
    assert_eq!(stored.first_of(second.event_id), Some((1, first.event_id)));
    // A flush closes digest 1; the next fold opens digest 2.
    digest.version = v1;
    digest.closed.push(crate::ClosedDigest { seq: 1, items: std::mem::take(&mut digest.items) });
    digest.seq = 2;
    digest.items.push(third.clone());
    let v2 = h.store.digests.put_digest(&digest).await.unwrap();
    assert!(v2 > v1);
    assert!(matches!(h.store.digests.put_digest(&digest).await, Err(StorageError::Conflict(_))), "a stale version");
    let stored = h.store.digests.digest(&channel).await.unwrap().unwrap();
    assert_eq!(stored.first_of(second.event_id), Some((1, first.event_id)), "in the closed digest");
    assert_eq!(stored.first_of(third.event_id), Some((2, third.event_id)));
    assert_eq!(stored.first_of(EventId::new()), None);
}

/// A success whose claim expired while it ran writes its `DONE` record for the worker's horizon
/// (`EVENTFLEET_IDEMPOTENCY_HORIZON_H`), not a fixed one: redeliveries inside it are skipped, and the record goes
/// when the operator said.
pub async fn a_success_after_its_claim_expired_keeps_the_record_for_the_workers_horizon(h: &Harness) {
    let a = Actor { visibility: Duration::from_secs(30), ..actor(5) };
    let msg = h.message("horizon", "horizon");
    let key = msg.envelope.idempotency_key().clone();
    h.store.protocol.accept(msg, Duration::from_secs(2), "ingress:conformance").await.unwrap();
    let got = h.deliver(&a).await;
    assert_eq!(got[0].start, Start::Run { attempt: 1, replay: false });
    h.advance(Duration::from_secs(3)).await;
    assert!(h.store.idempotency.get(&key).await.unwrap().is_none(), "the claim expired while the handler ran");
    let before = h.store.clock.now();
    h.store.protocol.succeed(&got[0].message, 1, "posted", &a).await.unwrap();
    let rec = h.store.idempotency.get(&key).await.unwrap().expect("the DONE record");
    assert_eq!(rec.status, eventfleet_schema::Status::Done);
    let kept = rec.expires_at.as_millis() - before.as_millis();
    let horizon = a.horizon.as_millis() as i64;
    assert!((horizon - 60_000..=horizon + 60_000).contains(&kept), "kept {kept} ms, the horizon is {horizon} ms");

    // The same for a dead letter.
    let msg = h.message("horizon-dead", "horizon-dead");
    let key = msg.envelope.idempotency_key().clone();
    h.store.protocol.accept(msg, Duration::from_secs(2), "ingress:conformance").await.unwrap();
    let got = h.deliver(&a).await;
    h.advance(Duration::from_secs(3)).await;
    let before = h.store.clock.now();
    let failure = Failure { attempt: 1, error: "channel_not_found".into(), class: ErrorClass::Permanent };
    h.store.protocol.dead_letter(&got[0].message, &failure, "channel_not_found", &a).await.unwrap();
    let rec = h.store.idempotency.get(&key).await.unwrap().expect("the DEAD record");
    assert_eq!(rec.status, eventfleet_schema::Status::Dead);
    let kept = rec.expires_at.as_millis() - before.as_millis();
    assert!((horizon - 60_000..=horizon + 60_000).contains(&kept), "kept {kept} ms, the horizon is {horizon} ms");
}

/// An event's audit history comes back in the order it was written, across appends.
pub async fn audit_history_in_order(h: &Harness) {
    let id = EventId::new();
    let at = h.store.clock.now();
    let steps = [Step::Received, Step::Enqueued, Step::Started, Step::RetryScheduled, Step::Started, Step::Succeeded];
    h.store.audit.append(steps[..2].iter().map(|s| AuditEntry::new(id, at, *s, "ingress")).collect()).await.unwrap();
    for s in &steps[2..] {
        let entry = AuditEntry::new(id, h.store.clock.now(), *s, "worker").with_detail(serde_json::json!({"n": 1}));
        h.store.audit.append(vec![entry]).await.unwrap();
    }
    let history = h.store.audit.history(id).await.unwrap();
    assert_eq!(history.iter().map(|e| e.step).collect::<Vec<_>>(), steps);
    assert_eq!(history[2].detail, serde_json::json!({"n": 1}));
    assert!(h.store.audit.history(EventId::new()).await.unwrap().is_empty());
    let q = AuditQuery { step: Some(Step::Succeeded), since: Some(at), ..Default::default() };
    assert!(h.store.audit.query(&q).await.unwrap().iter().any(|e| e.event_id == id));
}

/// A retry record is replaced on upsert and listed by status.
pub async fn retry_record_upsert(h: &Harness) {
    let now = h.store.clock.now();
    let mut rec = RetryRecord {
        event_id: EventId::new(),
        idempotency_key: h.key("retry"),
        attempts: 1,
        last_error: "HTTP 500".into(),
        error_class: ErrorClass::Retryable,
        next_attempt_at: Some(now.plus(Duration::from_secs(2))),
        status: RetryStatus::Active,
        dead_reason: None,
        updated_at: now,
        expires_at: now.plus(Duration::from_secs(3600)),
    };
    h.store.retries.upsert(&rec).await.unwrap();
    rec.attempts = 2;
    rec.status = RetryStatus::Dead;
    rec.dead_reason = Some("max attempts".into());
    rec.next_attempt_at = None;
    h.store.retries.upsert(&rec).await.unwrap();
    assert_eq!(h.store.retries.get(rec.event_id).await.unwrap(), Some(rec.clone()));
    let dead = h.store.retries.list(Some(RetryStatus::Dead), 1000).await.unwrap();
    assert!(dead.iter().any(|r| r.event_id == rec.event_id));
    let active = h.store.retries.list(Some(RetryStatus::Active), 1000).await.unwrap();
    assert!(active.iter().all(|r| r.event_id != rec.event_id));
}

/// Records past their TTL read as absent: idempotency keys (a new claim wins again), audit, retry records.
pub async fn records_past_ttl_read_as_absent(h: &Harness) {
    let msg = h.message("ttl", "ttl");
    let key = msg.envelope.idempotency_key().clone();
    let first = h.store.protocol.accept(msg.clone(), Duration::from_secs(2), "t").await.unwrap().event_id();
    let now = h.store.clock.now();
    let rec = RetryRecord {
        event_id: first,
        idempotency_key: key.clone(),
        attempts: 1,
        last_error: "x".into(),
        error_class: ErrorClass::Permanent,
        next_attempt_at: None,
        status: RetryStatus::Dead,
        dead_reason: None,
        updated_at: now,
        expires_at: now.plus(Duration::from_secs(2)),
    };
    h.store.retries.upsert(&rec).await.unwrap();
    assert!(h.store.idempotency.get(&key).await.unwrap().is_some());
    h.advance(Duration::from_secs(3)).await;
    assert!(h.store.idempotency.get(&key).await.unwrap().is_none(), "expired key reads as absent");
    assert!(h.store.retries.get(first).await.unwrap().is_none(), "expired retry record reads as absent");
    let mut again = msg;
    again.envelope.set_event_id(EventId::new());
    assert!(
        !h.store.protocol.accept(again, Duration::from_secs(60), "t").await.unwrap().is_duplicate(),
        "a key past its horizon is accepted anew"
    );
    if h.time == TimeControl::Paused {
        let id = EventId::new();
        h.store.audit.append(vec![AuditEntry::new(id, h.store.clock.now(), Step::Received, "t")]).await.unwrap();
        h.advance(Duration::from_secs(91 * 24 * 3600)).await;
        assert!(h.store.audit.history(id).await.unwrap().is_empty(), "audit entries expire after 90 days");
    }
}

/// The webhook registry: create, get, list, enable/disable, filters, invocation count; duplicates and unknown ids
/// fail.
pub async fn webhook_registry(h: &Harness) {
    let hook = Webhook {
        filter: None,
        group_key: None,
        per_delivery: false,
        id: HookId::new(),
        name: "alerts".into(),
        channel: "#ops".into(),
        kind: HookKind::Alert,
        active: true,
        secret: Some("s3cret".into()),
        invocation_count: 0,
        created_by: "tester".into(),
        created_at: h.store.clock.now(),
    };
    h.store.webhooks.create(&hook).await.unwrap();
    assert!(matches!(h.store.webhooks.create(&hook).await, Err(StorageError::Conflict(_))));
    assert_eq!(h.store.webhooks.get(&hook.id).await.unwrap(), Some(hook.clone()));
    assert!(h.store.webhooks.list().await.unwrap().iter().any(|w| w.id == hook.id));
    assert!(!h.store.webhooks.set_active(&hook.id, false).await.unwrap().active);
    assert!(h.store.webhooks.set_active(&hook.id, true).await.unwrap().active);
    h.store.webhooks.record_invocations(&hook.id, 1).await.unwrap();
    h.store.webhooks.record_invocations(&hook.id, 2).await.unwrap();
    assert_eq!(h.store.webhooks.get(&hook.id).await.unwrap().unwrap().invocation_count, 3);
    // Several hooks' counts at once; an unknown hook fails alone, the others are counted once.
    let other = Webhook { id: HookId::new(), ..hook.clone() };
    h.store.webhooks.create(&other).await.unwrap();
    let written = h.store.webhooks.record_many_invocations(&[(hook.id.clone(), 4), (other.id.clone(), 5)]).await;
    assert!(written.iter().all(Result::is_ok), "{written:?}");
    let missing = HookId::from_raw("hk_missing");
    let written =
        h.store.webhooks.record_many_invocations(&[(hook.id.clone(), 1), (missing, 1), (other.id.clone(), 1)]).await;
    assert!(written[0].is_ok() && written[2].is_ok(), "{written:?}");
    assert!(matches!(written[1], Err(StorageError::NotFound(_))), "{written:?}");
    assert_eq!(h.store.webhooks.get(&hook.id).await.unwrap().unwrap().invocation_count, 8);
    assert_eq!(h.store.webhooks.get(&other.id).await.unwrap().unwrap().invocation_count, 6);
    assert!(matches!(
        h.store.webhooks.set_active(&HookId::from_raw("hk_missing"), false).await,
        Err(StorageError::NotFound(_))
    ));
    assert_eq!(h.store.webhooks.get(&HookId::from_raw("hk_missing")).await.unwrap(), None);

    // Filters: created with one, changed, removed; an empty filter is no filter.
    let failures = HookFilter { only: vec!["workflow_run=failure|cancelled".into()], skip: vec!["push".into()] };
    let filtered = Webhook { id: HookId::new(), filter: Some(failures.clone()), ..hook.clone() };
    h.store.webhooks.create(&filtered).await.unwrap();
    assert_eq!(h.store.webhooks.get(&filtered.id).await.unwrap().unwrap().filter, Some(failures));
    let only_prs = HookFilter { only: vec!["pull_request.opened".into()], skip: Vec::new() };
    let changed = h.store.webhooks.set_filter(&filtered.id, Some(&only_prs)).await.unwrap();
    assert_eq!(changed.filter.as_ref(), Some(&only_prs));
    assert_eq!(h.store.webhooks.get(&filtered.id).await.unwrap().unwrap().filter, Some(only_prs));
    assert_eq!(h.store.webhooks.set_filter(&filtered.id, None).await.unwrap().filter, None);
    assert_eq!(h.store.webhooks.get(&filtered.id).await.unwrap().unwrap().filter, None);
    assert_eq!(h.store.webhooks.set_filter(&filtered.id, Some(&HookFilter::default())).await.unwrap().filter, None);
    assert!(matches!(
        h.store.webhooks.set_filter(&HookId::from_raw("hk_missing"), None).await,
        Err(StorageError::NotFound(_))
    ));

    // Group keys: created with one, changed, removed.
    let keyed = Webhook { id: HookId::new(), group_key: Some("/service".into()), ..hook.clone() };
    h.store.webhooks.create(&keyed).await.unwrap();
    assert_eq!(h.store.webhooks.get(&keyed.id).await.unwrap().unwrap().group_key.as_deref(), Some("/service"));
    let changed = h.store.webhooks.set_group_key(&keyed.id, Some("/labels/team")).await.unwrap();
    assert_eq!(changed.group_key.as_deref(), Some("/labels/team"));
    assert_eq!(h.store.webhooks.set_group_key(&keyed.id, None).await.unwrap().group_key, None);
    assert_eq!(h.store.webhooks.get(&keyed.id).await.unwrap().unwrap().group_key, None);
    assert!(matches!(
        h.store.webhooks.set_group_key(&HookId::from_raw("hk_missing"), None).await,
        Err(StorageError::NotFound(_))
    ));

    // A message per GitHub delivery: created with it, turned off, on again.
    let each = Webhook { id: HookId::new(), per_delivery: true, ..hook.clone() };
    h.store.webhooks.create(&each).await.unwrap();
    assert!(h.store.webhooks.get(&each.id).await.unwrap().unwrap().per_delivery);
    assert!(!h.store.webhooks.set_per_delivery(&each.id, false).await.unwrap().per_delivery);
    assert!(!h.store.webhooks.get(&each.id).await.unwrap().unwrap().per_delivery);
    assert!(h.store.webhooks.set_per_delivery(&each.id, true).await.unwrap().per_delivery);
    assert!(!h.store.webhooks.get(&keyed.id).await.unwrap().unwrap().per_delivery, "living messages by default");
    assert!(matches!(
        h.store.webhooks.set_per_delivery(&HookId::from_raw("hk_missing"), true).await,
        Err(StorageError::NotFound(_))
    ));
}

/// Stats count waiting, in-flight and dead messages and the oldest age.
pub async fn stats_count_depths(h: &Harness) {
    h.send("st", "s1").await;
    h.send("st2", "s2").await;
    h.advance(Duration::from_secs(1)).await;
    let got = h.receive_n(1, VIS).await;
    assert!(!got.is_empty());
    let stats = h.store.queue.stats().await.unwrap();
    assert!(stats.in_flight >= 1, "{stats:?}");
    assert!(stats.waiting + stats.in_flight >= 2, "{stats:?}");
    if h.gaps.oldest_age_unavailable {
        eprintln!("gap: no oldest-message age in this environment; not asserting it");
    } else {
        assert!(stats.oldest_age_ms.is_some_and(|a| a >= 1000), "{stats:?}");
    }
}

/// The queue's receive rejects batch sizes SQS rejects, so code written against one backend works on the other;
/// the protocol's receive takes up to what the backend says (`max_receive`, at least SQS's 10) and no more.
pub async fn a_receive_takes_one_to_ten_and_the_protocols_up_to_its_max(h: &Harness) {
    assert!(matches!(h.store.queue.receive(0, VIS, Duration::ZERO).await, Err(StorageError::Invalid(_))));
    assert!(matches!(h.store.queue.receive(11, VIS, Duration::ZERO).await, Err(StorageError::Invalid(_))));
    let _ = DedupId::fresh();
    let (protocol, a) = (&h.store.protocol, actor(5));
    let max = protocol.max_receive();
    assert!(max >= crate::queue::MAX_RECEIVE, "{max}");
    assert!(matches!(protocol.receive(0, Duration::ZERO, &a).await, Err(StorageError::Invalid(_))));
    assert!(matches!(protocol.receive(max + 1, Duration::ZERO, &a).await, Err(StorageError::Invalid(_))));
    // Twelve events in twelve groups: a backend that takes more than ten gives them all in one receive.
    for i in 0..12 {
        h.accept(&format!("batch-{i}")).await;
    }
    let mut got = 0;
    for _ in 0..20 {
        let batch = protocol.receive(max.min(12), Duration::from_secs(1), &a).await.expect("receive");
        assert!(batch.len() <= max.min(12), "{} > {max}", batch.len());
        if max >= 12 && !batch.is_empty() {
            assert_eq!(batch.len(), 12, "one receive took every waiting event");
        }
        got += batch.len();
        for d in &batch {
            protocol.succeed(&d.message, 1, "ok", &a).await.expect("succeed");
        }
        if got >= 12 {
            break;
        }
    }
    assert_eq!(got, 12);
}

/// The event log keeps every accepted event with its envelope and finds it by time, source, kind, hook and
/// outcome, page after page; an event's outcome follows its trail; an unknown id is absent. On a backend on the
/// paused clock, an event past the retention window is gone (reads hide it, the sweep deletes it).
pub async fn the_event_log_keeps_and_finds_every_accepted_event(h: &Harness) {
    use crate::event_log::{EventQuery, Outcome};
    let a = actor(5);
    let since = Timestamp::now_system().plus(Duration::ZERO);
    let since = Timestamp::from_millis(since.as_millis() - 1000);
    let (done, done_msg) = h.accept("log-done").await;
    let got = h.deliver(&a).await;
    assert_eq!(got.len(), 1);
    h.store.protocol.succeed(&got[0].message, 1, "posted", &a).await.unwrap();
    let (waiting, _) = h.accept("log-waiting").await;
    let (third, _) = h.accept("log-third").await;
    let ours = [done.event_id(), waiting.event_id(), third.event_id()];

    let everything = |outcome: Option<Outcome>| EventQuery {
        since: Some(since),
        source: Some("hook".into()),
        kind: Some("hook.*".into()),
        hook: Some("hk_conformance".into()),
        outcome,
        limit: 1000,
        ..Default::default()
    };
    // Other tests share an emulator's tables: only this test's events are compared.
    let mine =
        |page: crate::EventPage| page.events.into_iter().filter(|e| ours.contains(&e.event_id)).collect::<Vec<_>>();
    let listed = mine(h.store.events.events(&everything(None)).await.unwrap());
    assert_eq!(listed.iter().map(|e| e.event_id).collect::<Vec<_>>(), ours, "oldest first: {listed:?}");
    assert_eq!(listed[0].outcome, Outcome::Succeeded);
    assert_eq!(listed[0].outcome_detail.as_deref(), Some("posted"));
    assert_eq!(listed[1].outcome, Outcome::Pending);
    assert_eq!(listed[0].group, h.group("log-done"));
    let succeeded = mine(h.store.events.events(&everything(Some(Outcome::Succeeded))).await.unwrap());
    assert_eq!(succeeded.iter().map(|e| e.event_id).collect::<Vec<_>>(), [done.event_id()]);
    let other_kind = EventQuery { kind: Some("github.*".into()), ..everything(None) };
    assert!(mine(h.store.events.events(&other_kind).await.unwrap()).is_empty());
    let before = EventQuery { since: None, until: Some(since), ..everything(None) };
    assert!(mine(h.store.events.events(&before).await.unwrap()).is_empty());

    // Pages of one: every event once, in order.
    let mut seen = Vec::new();
    let mut query = EventQuery { limit: 1, ..everything(None) };
    for _ in 0..10_000 {
        let page = h.store.events.events(&query).await.unwrap();
        assert!(page.events.len() <= 1);
        seen.extend(page.events.iter().map(|e| e.event_id).filter(|id| ours.contains(id)));
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ours, "paging neither skips nor repeats");

    // A body as large as a queue message can carry (SQS: 256 KiB with its envelope) is kept whole.
    let big = OutgoingMessage::first_delivery(envelope(h.key("log-big"), &h.group("log-big"), &"x".repeat(200 * 1024)));
    let big_id = h.store.protocol.accept(big.clone(), Duration::from_secs(3600), "ingress").await.unwrap().event_id();
    let kept = h.store.events.get_many(&[big_id]).await.unwrap().remove(0).expect("the large event is kept");
    assert_eq!(kept.envelope, big.envelope);

    let got = h.store.events.get_many(&[done.event_id(), EventId::new(), waiting.event_id()]).await.unwrap();
    let kept = got[0].as_ref().expect("the done event is kept");
    assert_eq!(kept.envelope, done_msg.envelope);
    assert_eq!(kept.group, done_msg.group);
    assert!(got[1].is_none());
    assert_eq!(got[2].as_ref().map(|e| e.outcome), Some(Outcome::Pending));

    if h.time == TimeControl::Paused {
        let retention = h.store.events.retention().expect("retention on by default");
        h.advance(retention + Duration::from_secs(1)).await;
        let got = h.store.events.get_many(&[done.event_id(), waiting.event_id()]).await.unwrap();
        assert!(got[0].is_none(), "past its window the done event is gone");
        assert!(got[1].is_some(), "a pending event stays until it is done");
        assert!(h.store.events.sweep(100).await.unwrap() >= 1);
        let listed = mine(h.store.events.events(&everything(None)).await.unwrap());
        assert_eq!(
            listed.iter().map(|e| e.event_id).collect::<Vec<_>>(),
            [waiting.event_id(), third.event_id()],
            "pending events stay"
        );
    } else {
        println!("skipped on this backend: the retention window passing (real clock; tests/aws_e2e.rs checks it)");
    }
}

/// Instantiates every conformance test for a backend.
///
/// `$setup` is an async fn `(scope: &str) -> Harness`; `start_paused` is `true` for backends on tokio's clock.
#[macro_export]
macro_rules! conformance_suite {
    ($setup:path, start_paused = $paused:tt) => {
        $crate::conformance_suite!(@each $setup, $paused,
            fifo_order_within_a_group,
            a_receive_of_many_keeps_group_order,
            group_blocked_while_head_in_flight_other_groups_flow,
            dedup_collapses_resend_inside_window_not_after,
            visibility_expiry_redelivers_with_receive_count_plus_one,
            extending_and_releasing_visibility,
            delete_removes_the_message,
            redrive_to_dlq_after_max_receive_count,
            dead_letters_list_redrive_and_purge,
            racing_accepts_make_one_event_with_one_received_and_one_enqueued_line,
            a_delivery_starts_succeeds_and_a_copy_is_skipped,
            an_event_is_found_by_the_senders_own_id,
            many_records_are_read_at_once_in_the_order_asked,
            a_retry_hides_the_message_and_counts_the_attempt,
            a_stopped_attempt_counts_until_the_attempts_are_used_up,
            a_dead_letter_is_recorded_and_its_replay_runs_as_a_first_attempt,
            a_release_gives_the_message_back_without_counting_an_attempt,
            a_deferral_hides_the_message_without_counting_an_attempt,
            alarm_threads_are_compare_and_set,
            channel_states_are_compare_and_set,
            living_messages_are_compare_and_set,
            digests_are_compare_and_set,
            a_success_after_its_claim_expired_keeps_the_record_for_the_workers_horizon,
            a_busy_group_runs_in_order_with_each_success_starting_the_next,
            a_chain_that_ends_in_a_retry_deletes_the_messages_it_finished,
            audit_history_in_order,
            retry_record_upsert,
            records_past_ttl_read_as_absent,
            webhook_registry,
            stats_count_depths,
            a_receive_takes_one_to_ten_and_the_protocols_up_to_its_max,
            the_event_log_keeps_and_finds_every_accepted_event
        );
        // Timed against a thread that commits on the real clock: a paused clock would jump to the deadline
        // while the send commits, so this one always runs on the real clock (3 s).
        $crate::conformance_suite!(@each $setup, false, long_poll_returns_on_arrival_and_times_out_empty);
    };
    (@each $setup:path, $paused:tt, $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(start_paused = $paused)]
            async fn $name() {
                let harness = $setup(stringify!($name)).await;
                $crate::conformance::$name(&harness).await;
            }
        )*
    };
}
