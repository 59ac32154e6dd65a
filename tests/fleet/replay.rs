//! Replaying any retained event (the event log): found by kind and time range an hour after it was done and
//! replayed to a route added since, which receives it once with the same `webhook-id`; a dry run changes
//! nothing; a double replay posts once unless the operator asks to post again; a rate keeps each group's order;
//! past its retention window an event is gone.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use eventfleet_schema::{EventId, Step, Timestamp};
use eventfleet_storage::{Clock, EventQuery, LoggedEvent, Outcome};
use eventfleet_workers::replay::events::{EventReplayOptions, EventReplayed, preview, replay_events};
use tokio_util::sync::CancellationToken;

use crate::destinations::{Receiver, routes};
use crate::{Fleet, alarm_settings, eventually, worker_config};

/// The system clock moved forward by what the test says: an hour passes at once.
#[derive(Debug, Default)]
struct Shifted(AtomicI64);

impl Shifted {
    fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_millis() as i64, Ordering::SeqCst);
    }
}

impl Clock for Shifted {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(Timestamp::now_system().as_millis() + self.0.load(Ordering::SeqCst))
    }
}

fn backfill_route(rx: &Receiver) -> Vec<eventfleet_workers::destinations::Route> {
    routes(&format!(
        "[[route]]\nname = \"backfill\"\nmatch = {{ source = \"hook\" }}\nurl = \"{}/backfill\"\nsecret_env = \"BOT_SECRET\"\n",
        rx.url
    ))
}

fn by(operator: &str) -> EventReplayOptions {
    EventReplayOptions { by: operator.into(), reason: Some("test".into()), ..Default::default() }
}

async fn logged(f: &Fleet, ids: &[EventId]) -> Vec<LoggedEvent> {
    f.store.events.get_many(ids).await.unwrap().into_iter().map(|e| e.expect("retained")).collect()
}

/// Replays and waits until every replayed event has succeeded once more.
async fn replay_and_wait(f: &Fleet, events: &[LoggedEvent], options: &EventReplayOptions) -> Vec<EventReplayed> {
    let before: Vec<usize> = succeeded_counts(f, events).await;
    let (_, out) = replay_events(&f.store, events, options, &CancellationToken::new(), |_, _| {}).await;
    assert!(out.iter().all(|o| o.error.is_none() && o.skipped.is_none()), "{out:?}");
    eventually(Duration::from_secs(30), || async {
        let now = succeeded_counts(f, events).await;
        now.iter().zip(&before).all(|(n, b)| n > b).then_some(())
    })
    .await
    .expect("every replayed event succeeded again");
    out
}

async fn succeeded_counts(f: &Fleet, events: &[LoggedEvent]) -> Vec<usize> {
    let mut counts = Vec::new();
    for e in events {
        counts.push(f.steps(e.envelope.event_id()).await.iter().filter(|s| **s == Step::Succeeded).count());
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_done_an_hour_ago_is_found_and_replayed_once_to_a_route_added_since() {
    let clock = Arc::new(Shifted::default());
    let f = Fleet::start_clocked(worker_config(), Vec::new(), alarm_settings(), clock.clone()).await;
    let hook = f.hook("#ops").await;
    let id = f.send(&hook, "disk full on db-1").await;
    f.wait_for(id, Step::Succeeded).await;
    f.settled().await;
    assert_eq!(f.slack.history("#ops").len(), 1);

    // An hour later the team adds a route for its incident bot and restarts the fleet.
    clock.advance(Duration::from_secs(3600));
    let rx = Receiver::start().await;
    let f = f.relaunch(backfill_route(&rx)).await;
    let now = f.store.clock.now();
    let query = EventQuery {
        kind: Some("hook.*".into()),
        since: Some(now.minus(Duration::from_secs(2 * 3600))),
        until: Some(now.minus(Duration::from_secs(30 * 60))),
        limit: 100,
        ..Default::default()
    };
    let found = f.store.events.events(&query).await.unwrap();
    assert_eq!(found.events.iter().map(|e| (e.event_id, e.outcome)).collect::<Vec<_>>(), [(id, Outcome::Succeeded)]);
    let too_old = EventQuery { until: Some(now.minus(Duration::from_secs(2 * 3600))), since: None, ..query.clone() };
    assert!(f.store.events.events(&too_old).await.unwrap().events.is_empty());
    let events = logged(&f, &[id]).await;

    // A dry run reports the count and changes nothing.
    let steps = f.steps(id).await;
    let dry = EventReplayOptions { dry_run: true, route: Some("backfill".into()), ..by("alice") };
    let (_, out) = replay_events(&f.store, &events, &dry, &CancellationToken::new(), |_, _| {}).await;
    assert_eq!(preview(&events).count, 1);
    assert!(out.iter().all(|o| o.requeued_as.is_none() && o.error.is_none() && o.skipped.is_none()), "{out:?}");
    assert_eq!(f.steps(id).await, steps, "a dry run writes nothing");
    assert_eq!(f.store.queue.stats().await.unwrap().waiting, 0, "a dry run sends nothing");

    // The backfill: the route alone, once, with the event's own id.
    let options = EventReplayOptions { route: Some("backfill".into()), ..by("alice") };
    replay_and_wait(&f, &events, &options).await;
    f.settled().await;
    let got = rx.got("/backfill");
    assert_eq!(got.len(), 1, "the route receives the event once");
    assert_eq!(got[0].header("webhook-id"), Some(id.to_string().as_str()));
    assert_eq!(f.slack.history("#ops").len(), 1, "a replay to one route posts nothing to Slack");
    let trail = f.store.audit.history(id).await.unwrap();
    let replayed = trail.iter().find(|e| e.step == Step::Replayed).expect("a replayed line");
    assert_eq!(replayed.actor, "alice");
    assert_eq!(replayed.detail["route"], "backfill");
    assert_eq!(replayed.detail["reason"], "test");
    let found = f.store.events.events(&query).await.unwrap();
    assert_eq!(found.events[0].outcome, Outcome::Succeeded, "done again after the replay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_replay_posts_once_and_post_again_posts_anew() {
    let f = Fleet::start().await;
    let hook = f.hook("#ops").await;
    let id = f.send(&hook, "deploy finished").await;
    f.wait_for(id, Step::Succeeded).await;
    let events = logged(&f, &[id]).await;

    // Two replays of every handler: each looks for the message before posting it.
    replay_and_wait(&f, &events, &by("alice")).await;
    let events = logged(&f, &[id]).await;
    replay_and_wait(&f, &events, &by("bob")).await;
    f.settled().await;
    assert_eq!(f.slack.history("#ops").len(), 1, "replaying twice without post-again posts nothing twice");

    // Asked to post again: a new message, once.
    let events = logged(&f, &[id]).await;
    replay_and_wait(&f, &events, &EventReplayOptions { post_again: true, ..by("alice") }).await;
    f.settled().await;
    assert_eq!(f.slack.history("#ops").len(), 2, "post-again makes a new message");
    // And an accidental replay after it still posts nothing.
    let events = logged(&f, &[id]).await;
    replay_and_wait(&f, &events, &by("carol")).await;
    f.settled().await;
    assert_eq!(f.slack.history("#ops").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_at_five_a_second_of_fifty_events_takes_ten_seconds_and_keeps_each_groups_order() {
    let rx = Receiver::start().await;
    let f = Fleet::start_routed(worker_config(), backfill_route(&rx)).await;
    let mut hooks = Vec::new();
    for _ in 0..5 {
        hooks.push(f.hook("#ops").await);
    }
    let mut ids = Vec::new();
    for i in 0..10 {
        for hook in &hooks {
            ids.push(f.send(hook, &format!("payload {i}")).await);
        }
    }
    eventually(Duration::from_secs(30), || async { (rx.got("/backfill").len() == 50).then_some(()) })
        .await
        .expect("the first deliveries");
    f.settled().await;
    let first: Vec<String> =
        rx.got("/backfill").iter().filter_map(|g| g.header("webhook-id").map(str::to_owned)).collect();

    let query = EventQuery { source: Some("hook".into()), limit: 100, ..Default::default() };
    let listed: Vec<EventId> = f.store.events.events(&query).await.unwrap().events.iter().map(|e| e.event_id).collect();
    assert_eq!(listed.len(), 50);
    let events = logged(&f, &listed).await;
    let started = std::time::Instant::now();
    let options = EventReplayOptions { rate: Some(5.0), ..by("alice") };
    let (_, out) = replay_events(&f.store, &events, &options, &CancellationToken::new(), |_, _| {}).await;
    let took = started.elapsed();
    assert!(out.iter().all(|o| o.requeued_as.is_some()), "{out:?}");
    // Ten chunks of five, a second apart: nine pauses (a lower bound the rate guarantees; no upper bound is
    // asserted on a shared machine beyond a generous one).
    assert!(took >= Duration::from_secs(9), "{took:?}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    eventually(Duration::from_secs(30), || async { (rx.got("/backfill").len() == 100).then_some(()) })
        .await
        .expect("every replay delivered");
    let again: Vec<String> =
        rx.got("/backfill")[50..].iter().filter_map(|g| g.header("webhook-id").map(str::to_owned)).collect();
    // Within each hook (a message group) the replays arrive in the order the events first did.
    for hook in &hooks {
        let of_hook = |ids: &[String]| -> Vec<String> {
            let mine: Vec<String> = events
                .iter()
                .filter(|e| e.envelope.source().hook_id() == Some(&hook.id))
                .map(|e| e.envelope.event_id().to_string())
                .collect();
            ids.iter().filter(|id| mine.contains(id)).cloned().collect()
        };
        assert_eq!(of_hook(&again), of_hook(&first));
        assert_eq!(of_hook(&again).len(), 10);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_retention_window_an_event_is_gone() {
    let clock = Arc::new(Shifted::default());
    let f = Fleet::start_clocked(worker_config(), Vec::new(), alarm_settings(), clock.clone()).await;
    let hook = f.hook("#ops").await;
    let id = f.send(&hook, "old news").await;
    f.wait_for(id, Step::Succeeded).await;
    f.settled().await;
    let retention = f.store.events.retention().expect("on by default");
    clock.advance(retention + Duration::from_secs(60));
    assert!(f.store.events.get_many(&[id]).await.unwrap()[0].is_none());
    let all = EventQuery { limit: 100, ..Default::default() };
    assert!(f.store.events.events(&all).await.unwrap().events.is_empty());
    assert_eq!(f.store.events.sweep(100).await.unwrap(), 1, "the sweep deletes it");
    // Its trail outlives it (audit lines are kept 90 days): `events show` says it is no longer retained.
    assert!(f.steps(id).await.contains(&Step::Succeeded));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_stops_between_chunks_when_cancelled() {
    let f = Fleet::start().await;
    let hook = f.hook("#ops").await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(f.send(&hook, &format!("payload {i}")).await);
    }
    for id in &ids {
        f.wait_for(*id, Step::Succeeded).await;
    }
    let events = logged(&f, &ids).await;
    let cancel = CancellationToken::new();
    let options = EventReplayOptions { rate: Some(1.0), ..by("alice") };
    // One event a second: the first goes at once, then the run is stopped during its first pause.
    let stop = cancel.clone();
    let (_, out) = replay_events(&f.store, &events, &options, &cancel, move |done, _| {
        if done == 1 {
            stop.cancel();
        }
    })
    .await;
    assert_eq!(out.iter().filter(|o| o.requeued_as.is_some()).count(), 1, "{out:?}");
    assert!(out[1..].iter().all(|o| o.skipped.as_deref() == Some("cancelled before its turn")), "{out:?}");
    f.settled().await;
    assert!(f.steps(ids[0]).await.contains(&Step::Replayed));
    for id in &ids[1..] {
        assert!(!f.steps(*id).await.contains(&Step::Replayed), "a cancelled replay leaves the rest alone");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_finds_its_post_in_a_busy_channel() {
    let f = Fleet::start().await;
    let hook = f.hook("#ops").await;
    let id = f.send(&hook, "deploy finished").await;
    f.wait_for(id, Step::Succeeded).await;
    f.settled().await;
    // Days of chatter after it: more messages than a look reads from the event's receipt to now.
    f.slack.pass_time(Duration::from_secs(2 * 24 * 3600));
    let http = reqwest::Client::new();
    for i in 0..2_100 {
        let resp = http
            .post(format!("{}/chat.postMessage", f.slack.url))
            .bearer_auth("xoxb-someone-else")
            .json(&serde_json::json!({ "channel": "#ops", "text": format!("chatter {i}") }))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
    }
    let events = logged(&f, &[id]).await;
    replay_and_wait(&f, &events, &by("alice")).await;
    f.settled().await;
    let ours = (f.slack.history("#ops").iter())
        .filter(|m| m["metadata"]["event_payload"]["event_id"] == id.to_string().as_str())
        .count();
    assert_eq!(ours, 1, "the replay looked between the event's receipt and its success, and found its post");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_dead_letter_whose_post_landed_does_not_post_it_again() {
    // One attempt, and Slack's answer comes after the handler's timeout: the post landed, the event is dead.
    let f = Fleet::start_with(eventfleet_workers::WorkerConfig { max_attempts: 1, ..worker_config() }).await;
    f.slack.script("#ops", [eventfleet_stubs::slack::Reply::Accepted(Duration::from_secs(4))]);
    let hook = f.hook("#ops").await;
    let id = f.send(&hook, "disk full").await;
    f.wait_for(id, Step::DeadLettered).await;
    let dead = f.store.dead_letters.list(&Default::default()).await.unwrap();
    assert_eq!(f.slack.history("#ops").len(), 1, "the post landed before the attempt gave up");
    f.replay_until_done(&dead, id).await;
    f.settled().await;
    assert_eq!(f.slack.history("#ops").len(), 1, "the replay found the post and did not make it again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_replayed_says_nothing_its_thread_already_shows_even_with_post_again() {
    let f = Fleet::start().await;
    let topic = "arn:aws:sns:us-east-1:123456789012:alarms";
    let id = f.publish(&crate::alarms::alarm(topic, "api-5xx", "OK", "ALARM")).await;
    f.wait_for(id, Step::Succeeded).await;
    f.settled().await;
    let before = said_in_alarms(&f);
    let events = logged(&f, &[id]).await;
    replay_and_wait(&f, &events, &by("alice")).await;
    f.settled().await;
    assert_eq!(said_in_alarms(&f), before, "a replay of an alarm posts, replies and updates nothing again");
    let events = logged(&f, &[id]).await;
    replay_and_wait(&f, &events, &EventReplayOptions { post_again: true, ..by("alice") }).await;
    f.settled().await;
    let after = said_in_alarms(&f);
    // An alarm's thread is its state: a change the thread already records is not said again, even when asked.
    assert_eq!(after, before, "the thread already shows this change");
    let trail = f.store.audit.history(id).await.unwrap();
    let last = trail.iter().rev().find(|e| e.step == Step::Succeeded).unwrap();
    assert!(last.detail["outcome"].as_str().unwrap().contains("already in its thread"), "{}", last.detail);
}

/// What `#alarms` shows: its messages, their threads' replies, the updates made.
fn said_in_alarms(f: &Fleet) -> (usize, usize, usize) {
    let parents = f.slack.history("#alarms");
    let replies: usize = (parents.iter()).map(|p| f.slack.replies("#alarms", p["ts"].as_str().unwrap()).len()).sum();
    (parents.len(), replies, f.slack.updates().len())
}

/// An alarm a storm folded into the channel's digest, whose recovery has since replied in the digest's thread:
/// replaying the event that folded it says nothing again (it is in the digest), and the alarm's row keeps its
/// current state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_alarm_that_a_storm_folded_says_nothing_again() {
    let pace = eventfleet_workers::slack::ChannelPace { interval: Duration::from_secs(1), burst: 3, digests: true };
    let f = Fleet::start_with(eventfleet_workers::WorkerConfig { channel_pace: pace, ..worker_config() }).await;
    let topic = "arn:aws:sns:us-east-1:123456789012:alarms";
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(f.publish(&crate::alarms::alarm(topic, &format!("fold-{i}"), "OK", "ALARM")).await);
    }
    for id in &ids {
        f.wait_for(*id, Step::Succeeded).await;
    }
    let folded = |id: &EventId| {
        let f = &f;
        let id = *id;
        async move {
            let trail = f.store.audit.history(id).await.unwrap();
            trail.iter().any(|e| e.step == Step::Succeeded && e.detail.to_string().contains("folded into digest"))
        }
    };
    let mut folded_one = None;
    for (i, id) in ids.iter().enumerate() {
        if folded(id).await {
            folded_one = Some((i, *id));
            break;
        }
    }
    let (i, id) = folded_one.expect("a storm of six folds some");
    eventually(Duration::from_secs(20), || async { f.steps(id).await.contains(&Step::Digested).then_some(()) })
        .await
        .expect("its digest was posted");
    let ok = f.publish(&crate::alarms::alarm(topic, &format!("fold-{i}"), "ALARM", "OK")).await;
    f.wait_for(ok, Step::Succeeded).await;
    f.settled().await;
    let before = said_in_alarms(&f);
    let events = logged(&f, &[id]).await;
    replay_and_wait(&f, &events, &by("alice")).await;
    f.settled().await;
    assert_eq!(said_in_alarms(&f), before, "the replay posts, replies and updates nothing again");
    let trail = f.store.audit.history(id).await.unwrap();
    let last = trail.iter().rev().find(|e| e.step == Step::Succeeded).unwrap();
    assert!(
        last.detail["outcome"].as_str().unwrap().contains("in a digest of #alarms posted before"),
        "{}",
        last.detail
    );
    let arn = format!("arn:aws:cloudwatch:us-east-1:123456789012:alarm:fold-{i}");
    let thread = f.store.alarm_threads.thread(&arn).await.unwrap().unwrap();
    assert_eq!((thread.state.as_str(), thread.last_event), ("OK", ok), "the row keeps its current state");
}
