//! Embedded-backend rules beyond the shared suite: an undecodable message cannot block the queue, and a
//! dead-lettering done by the queue itself (too many receives) updates the ledger in the same transaction.

use std::sync::Arc;
use std::time::Duration;

use eventfleet_schema::{EventId, IdempotencyKey, Status, Step};
use eventfleet_storage::conformance::envelope;
use eventfleet_storage::{Actor, EmbeddedOptions, EmbeddedStore, OutgoingMessage, Start, TokioClock};

/// A message queued before migration 9, its envelope in its own row, is received, dead-lettered and listed like any
/// other.
#[tokio::test]
async fn a_message_with_its_envelope_in_its_row_is_still_received_and_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let embedded = EmbeddedStore::open_dir(dir.path(), EmbeddedOptions::default()).unwrap();
    let store = embedded.clone().into_store();
    let env = envelope(IdempotencyKey::from_raw("k:old-row"), "g", "written by the build before");
    let raw = rusqlite::Connection::open(embedded.path()).unwrap();
    raw.execute(
        "INSERT INTO messages (queue, message_id, group_id, dedup_id, head, legacy_body, attributes, event_id, source, kind,
                               sent_at, visible_at)
         VALUES ('main', 'old-1', 'g', 'd-old', 1, ?1, '{}', ?2, 'hook', 'hook.payload', 0, 0)",
        rusqlite::params![serde_json::to_string(&env).unwrap(), env.event_id().to_string()],
    )
    .unwrap();
    let got = store.queue.receive(10, Duration::from_secs(30), Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].envelope.as_v1().body.as_text(), Some("written by the build before"));
    let actor = Actor {
        name: "worker".into(),
        visibility: Duration::from_secs(30),
        max_attempts: 5,
        horizon: Duration::from_secs(3600),
    };
    let failure = eventfleet_storage::Failure {
        attempt: 1,
        error: "bad".into(),
        class: eventfleet_schema::ErrorClass::Permanent,
    };
    store.protocol.dead_letter(&got[0], &failure, "bad", &actor).await.unwrap();
    let listed = store.dead_letters.list(&Default::default()).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].envelope.as_v1().body.as_text(), Some("written by the build before"));
}

#[tokio::test]
async fn an_undecodable_head_goes_to_the_dlq_and_its_group_flows() {
    let dir = tempfile::tempdir().unwrap();
    let embedded = EmbeddedStore::open_dir(dir.path(), EmbeddedOptions::default()).unwrap();
    let store = embedded.clone().into_store();
    // A row written by a newer release (an envelope version this build does not know), at the head of group g.
    let raw = rusqlite::Connection::open(embedded.path()).unwrap();
    raw.execute(
        "INSERT INTO messages (queue, message_id, group_id, dedup_id, head, legacy_body, attributes, event_id, source, kind,
                               sent_at, visible_at)
         VALUES ('main', 'future-1', 'g', 'd-future', 1, '', '{}', ?1, 'hook', 'hook.payload', 0, 0)",
        [EventId::new().to_string()],
    )
    .unwrap();
    raw.execute(
        "INSERT INTO message_bodies (seq, body) VALUES (last_insert_rowid(), '{\"version\":\"2\",\"x\":1}')",
        [],
    )
    .unwrap();
    let behind = envelope(IdempotencyKey::from_raw("k:behind"), "g", "behind the bad one");
    store.queue.send_batch(vec![OutgoingMessage::first_delivery(behind)]).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..5 {
        got.extend(store.queue.receive(10, Duration::from_secs(30), Duration::ZERO).await.unwrap());
        if !got.is_empty() {
            break;
        }
    }
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].envelope.as_v1().body.as_text(), Some("behind the bad one"));
    let reason: String = raw
        .query_row("SELECT dead_reason FROM messages WHERE queue = 'dlq' AND message_id = 'future-1.dlq'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(reason.starts_with("undecodable message"), "{reason}");
    assert_eq!(store.queue.stats().await.unwrap().dead_letters, 1);
    assert!(store.dead_letters.list(&Default::default()).await.unwrap().is_empty(), "listing skips it");
}

#[tokio::test(start_paused = true)]
async fn a_queue_redrive_marks_the_event_dead_and_audits_it() {
    let dir = tempfile::tempdir().unwrap().keep();
    let options =
        EmbeddedOptions { clock: Arc::new(TokioClock::new()), max_receive_count: 2, ..EmbeddedOptions::default() };
    let store = EmbeddedStore::open_dir(&dir, options).unwrap().into_store();
    let key = IdempotencyKey::from_raw("k:crashy");
    let env = envelope(key.clone(), "g", "a worker dies on this one every time");
    let id = env.event_id();
    store.protocol.accept(OutgoingMessage::first_delivery(env), Duration::from_secs(3600), "ingress").await.unwrap();
    // Attempts allowed beyond the queue's limit: the queue's own redrive is what this test exercises.
    let actor = Actor {
        name: "worker".into(),
        visibility: Duration::from_secs(5),
        max_attempts: 10,
        horizon: Duration::from_secs(3600),
    };
    for attempt in 1..=2 {
        let got = store.protocol.receive(1, Duration::ZERO, &actor).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].start, Start::Run { attempt, replay: false });
        // The worker dies: nothing more happens until the visibility runs out.
        tokio::time::advance(Duration::from_secs(6)).await;
    }
    assert!(store.protocol.receive(1, Duration::ZERO, &actor).await.unwrap().is_empty());
    let record = store.idempotency.get(&key).await.unwrap().unwrap();
    assert_eq!(record.status, Status::Dead);
    assert!(record.outcome.unwrap().contains("max receive count"));
    let history = store.audit.history(id).await.unwrap();
    let last = history.last().unwrap();
    assert_eq!((last.step, last.actor.as_str()), (Step::DeadLettered, "queue"));
}

#[tokio::test(start_paused = true)]
async fn the_receives_of_a_failing_head_are_not_counted_on_the_messages_behind_it() {
    let dir = tempfile::tempdir().unwrap().keep();
    let options = EmbeddedOptions { clock: Arc::new(TokioClock::new()), ..EmbeddedOptions::default() };
    let store = EmbeddedStore::open_dir(&dir, options).unwrap().into_store();
    let actor = Actor {
        name: "worker".into(),
        visibility: Duration::from_secs(30),
        max_attempts: 10,
        horizon: Duration::from_secs(3600),
    };
    for name in ["head", "behind"] {
        let env = envelope(IdempotencyKey::from_raw(format!("k:{name}")), "g", name);
        store
            .protocol
            .accept(OutgoingMessage::first_delivery(env), Duration::from_secs(3600), "ingress")
            .await
            .unwrap();
    }
    for attempt in 1..=3 {
        let got = store.protocol.receive(10, Duration::ZERO, &actor).await.unwrap();
        assert_eq!(got.len(), 2, "the head and the message behind it");
        assert_eq!(got[0].start, Start::Run { attempt, replay: false });
        assert_eq!(got[1].start, Start::Waiting);
        let failure = eventfleet_storage::Failure {
            attempt,
            error: "down".into(),
            class: eventfleet_schema::ErrorClass::Retryable,
        };
        store.protocol.retry(&got[0].message, &failure, Duration::from_secs(1), &actor).await.unwrap();
        store.protocol.release(&got[1].message, false, &actor).await.unwrap();
        tokio::time::advance(Duration::from_secs(2)).await;
    }
    let got = store.protocol.receive(10, Duration::ZERO, &actor).await.unwrap();
    assert_eq!(got[0].message.receive_count, 4);
    store.protocol.succeed(&got[0].message, 4, "ok", &actor).await.unwrap();
    let next = store.protocol.start(&got[1].message, &actor).await.unwrap();
    assert_eq!(next, Start::Run { attempt: 1, replay: false });
    let trail = store.audit.history(got[1].message.envelope.event_id()).await.unwrap();
    let started = trail.iter().find(|e| e.step == Step::Started).unwrap();
    assert_eq!(started.detail["receive"], 1, "counted once, when it started: {trail:?}");
}

/// A receive larger than SQS's 10 takes more groups' heads, but fills behind them only up to 10 in all: the
/// messages behind a head wait in its chain, each holding a handler slot with its visibility running.
#[tokio::test]
async fn a_large_receive_takes_more_heads_and_fills_behind_them_only_up_to_ten() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_dir(dir.path(), EmbeddedOptions::default()).unwrap().into_store();
    let actor = Actor {
        name: "worker".into(),
        visibility: Duration::from_secs(30),
        max_attempts: 5,
        horizon: Duration::from_secs(3600),
    };
    let accept = |key: String, group: String| {
        let store = store.clone();
        async move {
            let env = envelope(IdempotencyKey::from_raw(key), &group, "x");
            store.protocol.accept(OutgoingMessage::first_delivery(env), Duration::from_secs(3600), "ingress").await
        }
    };
    // A busy group of 30, then three quiet groups of one.
    for i in 0..30 {
        accept(format!("k:busy-{i}"), "busy".into()).await.unwrap();
    }
    for g in 0..3 {
        accept(format!("k:quiet-{g}"), format!("quiet-{g}")).await.unwrap();
    }
    assert!(store.protocol.max_receive() > 10);
    let got = store.protocol.receive(store.protocol.max_receive(), Duration::ZERO, &actor).await.unwrap();
    let heads = got.iter().filter(|d| d.start != Start::Waiting).count();
    assert_eq!(heads, 4, "every group's head");
    assert_eq!(got.len(), 10, "and the busy group's next six behind its head, not twenty-six more");
    // With fewer heads than the receive asks for, a receive of 10 still fills behind them as SQS does.
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_dir(dir.path(), EmbeddedOptions::default()).unwrap().into_store();
    for i in 0..30 {
        let env = envelope(IdempotencyKey::from_raw(format!("k:b-{i}")), "busy", "x");
        store
            .protocol
            .accept(OutgoingMessage::first_delivery(env), Duration::from_secs(3600), "ingress")
            .await
            .unwrap();
    }
    assert_eq!(store.protocol.receive(10, Duration::ZERO, &actor).await.unwrap().len(), 10);
    // More than ten heads: all of them, and none behind them.
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_dir(dir.path(), EmbeddedOptions::default()).unwrap().into_store();
    for g in 0..12 {
        for i in 0..2 {
            let env = envelope(IdempotencyKey::from_raw(format!("k:{g}-{i}")), &format!("g{g}"), "x");
            store
                .protocol
                .accept(OutgoingMessage::first_delivery(env), Duration::from_secs(3600), "ingress")
                .await
                .unwrap();
        }
    }
    let got = store.protocol.receive(store.protocol.max_receive(), Duration::ZERO, &actor).await.unwrap();
    assert_eq!(got.len(), 12);
    assert!(got.iter().all(|d| d.start != Start::Waiting), "heads only");
}

/// Power loss: the machine keeps what was synced and nothing after. The store's sync hook copies the database and
/// its WAL at the start of every sync, while no batch is being written, and keeps the copy once the sync is done:
/// exactly what a machine that lost power from then until the next sync is done would find. Accepts and completions
/// run from 36 tasks; at a moment under load the power is "cut" (no copy is kept after it), and every accept and
/// every completion answered before that moment must be in the last copy, opened as a store. Fails if a request is
/// answered before the sync that covers its commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answered_accept_and_completion_survives_power_loss() {
    survives_power_loss(EmbeddedOptions::default().max_batch, false).await;
}

/// The same with batches of at most 8 requests: with 36 requests in flight, batches commit while the one before is
/// being synced (by default they gather until 64 are waiting or the sync is done), so syncs cover commits that
/// overlapped them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answered_accept_and_completion_survives_power_loss_with_commits_during_syncs() {
    survives_power_loss(8, true).await;
}

/// `overlap`: at least one commit must land while a sync runs (the test's premise with small batches).
async fn survives_power_loss(max_batch: usize, overlap: bool) {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use eventfleet_storage::embedded::SyncPoint;

    let dir = tempfile::tempdir().unwrap();
    let image = tempfile::tempdir().unwrap();
    // The copy of the files at a sync's start becomes what survives once that sync is done, unless the power was
    // cut before: `cut` and the answers read at the cut are taken under the same lock as that promotion.
    let power = Arc::new(Mutex::new(false));
    let syncing = Arc::new(AtomicBool::new(false));
    let images = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // Syncs during which another commit landed (`PRAGMA data_version` of a connection of the hook's own moves).
    let overlapped = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let hook = {
        let (db, image, power, images, syncing, overlapped) = (
            dir.path().join("fleet.db"),
            image.path().to_owned(),
            power.clone(),
            images.clone(),
            syncing.clone(),
            overlapped.clone(),
        );
        let (pending, durable) = (image.join("pending"), image.join("durable"));
        // The hook's own connection and the data version it read at the sync's start.
        let watch: Mutex<Option<(rusqlite::Connection, i64)>> = Mutex::new(None);
        let db_file = db.clone();
        let data_version = move |point: SyncPoint| {
            let mut watch = watch.lock().unwrap();
            let (conn, at_start) = match watch.take() {
                Some(held) => held,
                None => (rusqlite::Connection::open(&db_file).unwrap(), 0),
            };
            let version: i64 = conn.query_row("PRAGMA data_version", [], |r| r.get(0)).unwrap();
            if point == SyncPoint::Done && version != at_start {
                overlapped.fetch_add(1, Ordering::SeqCst);
            }
            *watch = Some((conn, version));
        };
        eventfleet_storage::embedded::SyncHook(Arc::new(move |point| match point {
            SyncPoint::Start => {
                data_version(SyncPoint::Start);
                syncing.store(true, Ordering::SeqCst);
                std::fs::create_dir_all(&pending).unwrap();
                for suffix in ["", "-wal"] {
                    let from = format!("{}{suffix}", db.display());
                    if std::path::Path::new(&from).exists() {
                        std::fs::copy(&from, pending.join(format!("fleet.db{suffix}"))).unwrap();
                    }
                }
            }
            SyncPoint::Done => {
                data_version(SyncPoint::Done);
                let cut = power.lock().unwrap();
                syncing.store(false, Ordering::SeqCst);
                if !*cut {
                    let _ = std::fs::remove_dir_all(&durable);
                    std::fs::rename(&pending, &durable).unwrap();
                    images.fetch_add(1, Ordering::SeqCst);
                }
            }
        }))
    };
    let options = EmbeddedOptions { sync_hook: Some(hook), max_batch, ..EmbeddedOptions::default() };
    let store = EmbeddedStore::open_dir(dir.path(), options).unwrap().into_store();
    let actor = Actor {
        name: "worker".into(),
        visibility: Duration::from_secs(30),
        max_attempts: 5,
        horizon: Duration::from_secs(3600),
    };
    let accepted: Arc<Mutex<Vec<IdempotencyKey>>> = Arc::default();
    let completed: Arc<Mutex<Vec<IdempotencyKey>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for sender in 0..32 {
        let (store, accepted, stop) = (store.clone(), accepted.clone(), stop.clone());
        tasks.spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let key = IdempotencyKey::from_raw(format!("k:{sender}:{i}"));
                let env = envelope(key.clone(), &format!("g{}", i % 8), "power");
                let horizon = Duration::from_secs(3600);
                if store.protocol.accept(OutgoingMessage::first_delivery(env), horizon, "ingress").await.is_ok() {
                    accepted.lock().unwrap().push(key);
                }
                i += 1;
            }
        });
    }
    for _ in 0..4 {
        let (store, completed, stop, actor) = (store.clone(), completed.clone(), stop.clone(), actor.clone());
        tasks.spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                // One at a time: each is its group's head, so it starts at once.
                for delivery in store.protocol.receive(1, Duration::from_millis(50), &actor).await.unwrap() {
                    let Start::Run { attempt, .. } = delivery.start else { continue };
                    let msg = &delivery.message;
                    if store.protocol.succeed(msg, attempt, "done", &actor).await.is_ok() {
                        completed.lock().unwrap().push(msg.envelope.idempotency_key().clone());
                    }
                }
            }
        });
    }
    // Under load, past a few hundred answers and many syncs: what was answered so far, then the power goes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while accepted.lock().unwrap().len() < 3_000 || completed.lock().unwrap().len() < 300 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the load made too little progress: {} accepts, {} completions, {} syncs",
            accepted.lock().unwrap().len(),
            completed.lock().unwrap().len(),
            images.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The power goes while a sync is under way (the moment an early answer would be caught out).
    let (answered_accepts, answered_completions) = loop {
        {
            let mut cut = power.lock().unwrap();
            if syncing.load(Ordering::SeqCst) {
                *cut = true;
                break (accepted.lock().unwrap().clone(), completed.lock().unwrap().clone());
            }
        }
        tokio::task::yield_now().await;
    };
    stop.store(true, Ordering::SeqCst);
    while tasks.join_next().await.is_some() {}
    drop(store);
    assert!(images.load(Ordering::SeqCst) > 10, "the load ran through many syncs");
    if overlap {
        assert!(overlapped.load(Ordering::SeqCst) > 0, "no commit landed while a sync ran");
    }

    // The machine comes back with the files of the last sync.
    let survived =
        EmbeddedStore::open_dir(image.path().join("durable"), EmbeddedOptions::default()).unwrap().into_store();
    let mut lost_accepts = Vec::new();
    for key in &answered_accepts {
        if survived.idempotency.get(key).await.unwrap().is_none() {
            lost_accepts.push(key.as_str().to_owned());
        }
    }
    let mut lost_completions = Vec::new();
    for key in &answered_completions {
        let record = survived.idempotency.get(key).await.unwrap();
        if record.map(|r| r.status) != Some(Status::Done) {
            lost_completions.push(key.as_str().to_owned());
        }
    }
    assert!(
        lost_accepts.is_empty() && lost_completions.is_empty(),
        "answered but lost with the power: {} of {} accepts ({:?}…), {} of {} completions ({:?}…)",
        lost_accepts.len(),
        answered_accepts.len(),
        lost_accepts.iter().take(3).collect::<Vec<_>>(),
        lost_completions.len(),
        answered_completions.len(),
        lost_completions.iter().take(3).collect::<Vec<_>>(),
    );
}

/// A fresh accept's claim is its dedup: it writes no dedup entry (one random b-tree insert less an event), and
/// the sender's resend is a duplicate all the same. A claim whose horizon is shorter than the queue's dedup window
/// still goes through the window, which keeps the key's resend off the queue once the claim has expired.
#[tokio::test(start_paused = true)]
async fn a_fresh_accept_is_deduplicated_by_its_claim_and_a_short_horizon_also_by_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions { clock: Arc::new(TokioClock::new()), ..EmbeddedOptions::default() };
    let embedded = EmbeddedStore::open_dir(dir.path(), options).unwrap();
    let store = embedded.clone().into_store();
    let raw = rusqlite::Connection::open(embedded.path()).unwrap();
    let count = |sql: &str| -> i64 { raw.query_row(sql, [], |r| r.get(0)).unwrap() };
    let accept = |key: &str, horizon: u64| {
        let env = envelope(IdempotencyKey::from_raw(key), "g", key);
        let store = store.clone();
        async move {
            store
                .protocol
                .accept(OutgoingMessage::first_delivery(env), Duration::from_secs(horizon), "ingress")
                .await
                .unwrap()
        }
    };

    let first = accept("hook:hk_a:long", 3600).await;
    assert!(matches!(first, eventfleet_storage::Accepted::New { .. }), "{first:?}");
    assert_eq!(count("SELECT COUNT(*) FROM dedup"), 0, "the claim is the dedup");
    let again = accept("hook:hk_a:long", 3600).await;
    assert!(matches!(again, eventfleet_storage::Accepted::Duplicate { .. }), "{again:?}");

    // A 60 s horizon against the 300 s window: the entry is written, and once the claim has expired the resend
    // is accepted as new but not queued a second time.
    accept("hook:hk_a:short", 60).await;
    let resent = accept("hook:hk_a:short", 60).await;
    assert!(matches!(resent, eventfleet_storage::Accepted::Duplicate { .. }), "{resent:?}");
    assert_eq!(count("SELECT COUNT(*) FROM dedup"), 1);
    tokio::time::advance(Duration::from_secs(61)).await;
    let late = accept("hook:hk_a:short", 60).await;
    let eventfleet_storage::Accepted::New { event_id: late_id, .. } = late else { panic!("{late:?}") };
    assert_eq!(count("SELECT COUNT(*) FROM message_bodies WHERE body LIKE '%hook:hk_a:short%'"), 1, "queued once");
    assert_eq!(count("SELECT COUNT(*) FROM messages"), 2);
    // The expired record was claimed anew, under the new event id, as a first sight.
    let record = store.idempotency.get(&IdempotencyKey::from_raw("hook:hk_a:short")).await.unwrap().unwrap();
    assert_eq!((record.event_id, record.status, record.duplicate_count), (late_id, Status::Enqueued, 0));
    assert_eq!(record.first_seen, record.last_seen);
}

/// A claim left `PENDING` by a build that accepted in several steps (and died between them) is finished by the
/// sender's retry under the claim's own event id, its message going through the dedup window.
#[tokio::test]
async fn a_claim_left_pending_is_finished_under_its_event_id() {
    let dir = tempfile::tempdir().unwrap();
    let embedded = EmbeddedStore::open_dir(dir.path(), EmbeddedOptions::default()).unwrap();
    let store = embedded.clone().into_store();
    let raw = rusqlite::Connection::open(embedded.path()).unwrap();
    let pending = EventId::new();
    let far = i64::MAX / 2;
    raw.execute(
        "INSERT INTO idempotency (sender, key, status, event_id, first_seen, last_seen, duplicate_count, expires_at)
         VALUES ('d1', 'github:hk_a:d1', 'PENDING', ?1, 0, 0, 0, ?2)",
        rusqlite::params![pending.to_string(), far],
    )
    .unwrap();
    let env = envelope(IdempotencyKey::from_raw("github:hk_a:d1"), "g", "retried");
    let got = store.protocol.accept(OutgoingMessage::first_delivery(env), Duration::from_secs(3600), "ingress");
    let got = got.await.unwrap();
    let eventfleet_storage::Accepted::New { event_id, .. } = got else { panic!("{got:?}") };
    assert_eq!(event_id, pending);
    let record = store.idempotency.get(&IdempotencyKey::from_raw("github:hk_a:d1")).await.unwrap().unwrap();
    assert_eq!((record.event_id, record.status), (pending, Status::Enqueued));
    let count = |sql: &str| -> i64 { raw.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(count("SELECT COUNT(*) FROM dedup"), 1, "through the window: its message may have gone already");
    let queued = store.queue.receive(10, Duration::from_secs(30), Duration::ZERO).await.unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].envelope.event_id(), pending);
}

/// A process opening the store while another holds its write lock for longer than the busy handler's few seconds
/// (a migration that rewrites tables takes minutes on a large store) waits for it and opens, instead of failing
/// with "database is locked".
#[test]
fn opening_waits_for_a_migration_in_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleet.db");
    let holder = rusqlite::Connection::open(&path).unwrap();
    holder.execute_batch("PRAGMA journal_mode = WAL; BEGIN IMMEDIATE; CREATE TABLE held (x)").unwrap();
    let (opened_tx, opened) = std::sync::mpsc::channel();
    let opener = std::thread::spawn({
        let path = path.clone();
        move || {
            let result = EmbeddedStore::open(&path, EmbeddedOptions::default()).map(|_| ());
            opened_tx.send(()).unwrap();
            result
        }
    });
    // Held past the busy handler's budget (about 5 s): the opener must still be waiting, not failed.
    assert!(opened.recv_timeout(Duration::from_secs(7)).is_err(), "the opener finished while the lock was held");
    holder.execute_batch("COMMIT").unwrap();
    opener.join().unwrap().expect("the store opens once the lock is released");
}

/// The bundled SQLite is built without its memory statistics (`.cargo/config.toml`): with them every allocation
/// takes a global mutex. A build run where that file is not read (outside the checkout) would silently lose it.
#[test]
fn sqlite_is_built_without_memory_statistics() {
    let conn = rusqlite::Connection::open_in_memory().unwrap();
    let mut stmt = conn.prepare("PRAGMA compile_options").unwrap();
    let options: Vec<String> = stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
    assert!(options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"), "{options:?}");
}

/// The WAL reaches the database by the checkpointer thread, long before the writer's own checkpoint (at 4,000
/// pages): 200 commits of one accept each, far fewer pages than that, and the database file holds records.
#[tokio::test]
async fn the_checkpointer_copies_the_wal_into_the_database_before_the_writers_backstop() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_dir(dir.path(), EmbeddedOptions::default()).unwrap().into_store();
    let db = dir.path().join("fleet.db");
    let wal = dir.path().join("fleet.db-wal");
    let size = |path: &std::path::Path| std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let before = size(&db);
    // One at a time: each accept its own commit.
    for i in 0..200 {
        let env = envelope(IdempotencyKey::from_raw(format!("k:ckpt-{i}")), &format!("g{}", i % 4), "x");
        store
            .protocol
            .accept(OutgoingMessage::first_delivery(env), Duration::from_secs(3600), "ingress")
            .await
            .unwrap();
    }
    let frames = (size(&wal).saturating_sub(32)) / (4096 + 24);
    assert!(frames < 4000, "below the writer's own checkpoint: {frames} frames");
    // The checkpointer runs on its own thread: poll with a deadline. What it copied is in the database file
    // itself: a copy of the file without its WAL holds accepted records (a copy taken mid-checkpoint may not
    // open: look again).
    let count_alone = || -> Result<i64, String> {
        let alone = tempfile::tempdir().map_err(|e| e.to_string())?;
        std::fs::copy(&db, alone.path().join("fleet.db")).map_err(|e| e.to_string())?;
        let conn = rusqlite::Connection::open(alone.path().join("fleet.db")).map_err(|e| e.to_string())?;
        conn.query_row("SELECT count(*) FROM idempotency", [], |r| r.get(0)).map_err(|e| e.to_string())
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found = count_alone();
        if matches!(found, Ok(n) if n > 0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the database file alone holds none of the 200 records ({found:?}; {before} bytes before, {} now)",
            size(&db)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two stores on one file, as an ingress and a worker process are: commits of one land behind the other's
/// checkpoints, so the WAL need never start over by itself. At the cap the checkpointer starts it over with a
/// `RESTART`: the WAL file (which keeps its largest size) stays near the cap instead of growing with the load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_processes_writing_the_wal_is_started_over_at_its_cap() {
    const CAP: u32 = 1000;
    let dir = tempfile::tempdir().unwrap();
    let options = || EmbeddedOptions { wal_cap_pages: CAP, ..EmbeddedOptions::default() };
    let stores = [
        EmbeddedStore::open_dir(dir.path(), options()).unwrap().into_store(),
        EmbeddedStore::open_dir(dir.path(), options()).unwrap().into_store(),
    ];
    let mut tasks = tokio::task::JoinSet::new();
    for (s, store) in stores.iter().enumerate() {
        for t in 0..16 {
            let store = store.clone();
            tasks.spawn(async move {
                for i in 0..200 {
                    let key = IdempotencyKey::from_raw(format!("k:cap-{s}-{t}-{i}"));
                    let env = envelope(key, &format!("g{t}"), &"x".repeat(500));
                    store
                        .protocol
                        .accept(OutgoingMessage::first_delivery(env), Duration::from_secs(3600), "ingress")
                        .await
                        .unwrap();
                }
            });
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    // 6,400 accepts of about four pages each: some 25,000 pages went through the WAL.
    let wal = std::fs::metadata(dir.path().join("fleet.db-wal")).map(|m| m.len()).unwrap_or(0);
    let frames = wal.saturating_sub(32) / (4096 + 24);
    // Measured: 2,100 to 4,400 frames with the cap (a request every 128 jobs; a RESTART that finds the lock busy
    // for its tenth of a second waits for the next), 19,800 to 35,300 without it.
    assert!(frames < u64::from(CAP) * 10, "the WAL grew to {frames} frames (cap {CAP})");
}

/// Expired rows are deleted a bounded batch at a time, oldest first (audit lines a day past their expiry), and
/// nothing live goes with them: reads hid them already, the sweep gives their space back.
#[tokio::test(start_paused = true)]
async fn a_sweep_deletes_expired_records_and_lines_a_batch_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        clock: Arc::new(TokioClock::new()),
        audit_ttl: Duration::from_secs(100),
        ..EmbeddedOptions::default()
    };
    let embedded = EmbeddedStore::open_dir(dir.path(), options).unwrap();
    let store = embedded.clone().into_store();
    let raw = rusqlite::Connection::open(embedded.path()).unwrap();
    let count =
        |table: &str| -> i64 { raw.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0)).unwrap() };
    let accept = |key: &str, horizon: u64| {
        let env = envelope(IdempotencyKey::from_raw(key), "g", key);
        let store = store.clone();
        async move {
            store.protocol.accept(OutgoingMessage::first_delivery(env), Duration::from_secs(horizon), "ingress").await
        }
    };
    for key in ["s:a:1", "s:a:2", "s:a:3"] {
        accept(key, 50).await.unwrap();
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    accept("s:a:4", 3600).await.unwrap();
    assert_eq!((count("idempotency"), count("audit")), (4, 8));

    assert_eq!(store.expiry.sweep_expired(2).await.unwrap(), 0, "nothing has expired yet");
    tokio::time::advance(Duration::from_secs(51)).await;
    assert_eq!(store.expiry.sweep_expired(2).await.unwrap(), 2, "the two oldest records");
    assert_eq!(store.expiry.sweep_expired(2).await.unwrap(), 1);
    assert_eq!(store.expiry.sweep_expired(2).await.unwrap(), 0);
    assert_eq!((count("idempotency"), count("audit")), (1, 8), "the lines live longer");
    assert!(store.idempotency.get(&IdempotencyKey::from_raw("s:a:4")).await.unwrap().is_some());

    tokio::time::advance(Duration::from_secs(50)).await;
    assert_eq!(store.expiry.sweep_expired(100).await.unwrap(), 0, "the lines expired at 110 s are kept a day");
    // The short horizons' claims also wrote dedup entries (a horizon under the five-minute window).
    assert_eq!(count("dedup"), 3);
    tokio::time::advance(Duration::from_secs(190)).await;
    assert_eq!(store.expiry.sweep_expired(100).await.unwrap(), 3, "the dedup entries, at 301 s");
    tokio::time::advance(Duration::from_secs(24 * 3600)).await;
    assert_eq!(store.expiry.sweep_expired(100).await.unwrap(), 9, "every line, and the hour-long claim");
    assert_eq!((count("idempotency"), count("audit"), count("dedup")), (0, 0, 0));
    assert_eq!(count("messages"), 4, "the queue is not the sweep's");
}

/// A record that outlives the ones claimed after it does not hold up the sweep of theirs.
#[tokio::test(start_paused = true)]
async fn a_sweep_deletes_past_a_record_that_lives_longer() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions { clock: Arc::new(TokioClock::new()), ..EmbeddedOptions::default() };
    let store = EmbeddedStore::open_dir(dir.path(), options).unwrap().into_store();
    for (key, horizon) in [("s:b:long", 3600), ("s:b:short-1", 10), ("s:b:short-2", 10)] {
        let env = envelope(IdempotencyKey::from_raw(key), "g", key);
        store
            .protocol
            .accept(OutgoingMessage::first_delivery(env), Duration::from_secs(horizon), "ingress")
            .await
            .unwrap();
    }
    tokio::time::advance(Duration::from_secs(11)).await;
    // Batches of one: the oldest record is live, the next is not.
    assert_eq!(store.expiry.sweep_expired(1).await.unwrap(), 1);
    assert_eq!(store.expiry.sweep_expired(1).await.unwrap(), 1);
    assert_eq!(store.expiry.sweep_expired(1).await.unwrap(), 0);
    assert!(store.idempotency.get(&IdempotencyKey::from_raw("s:b:long")).await.unwrap().is_some());
}
