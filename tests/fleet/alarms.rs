//! CloudWatch alarms as Slack threads, against the Slack stub: one thread per alarm, storms folded into digests,
//! flapping collapsed, a channel's 429 honoured without holding up another channel, no second post after a lost
//! answer.

use std::time::Duration;

use eventfleet_schema::{EventId, Step, Timestamp};
use eventfleet_stubs::slack::Reply;
use eventfleet_workers::handlers::alarm::AlarmSettings;
use serde_json::{Value, json};

use crate::{Fleet, alarm_settings, eventually, testdata};

const ALARMS_TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:alarms";
/// A topic without a channel of its own: its alarms go to `#default`.
const OTHER_TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:other";

/// An alarm notification of `name` going to `state`, as CloudWatch publishes it through SNS, signed.
pub(crate) fn alarm(topic: &str, name: &str, old: &str, state: &str) -> Value {
    let alarm = json!({
        "AlarmName": name, "AlarmDescription": format!("{name} watches the API"), "AWSAccountId": "123456789012",
        "NewStateValue": state, "OldStateValue": old,
        "NewStateReason": format!("Threshold Crossed: {state}"),
        "StateChangeTime": "2026-12-01T10:00:00.000+0000", "Region": "US East (N. Virginia)",
        "AlarmArn": format!("arn:aws:cloudwatch:us-east-1:123456789012:alarm:{name}"),
        "Trigger": {"MetricName": "5XXError", "Namespace": "AWS/ApiGateway", "Statistic": "SUM", "Period": 60,
                    "ComparisonOperator": "GreaterThanThreshold", "Threshold": 5.0, "Dimensions": []}
    });
    let mut message = json!({
        "Type": "Notification", "MessageId": EventId::new().to_string(), "TopicArn": topic,
        "Subject": format!("{state}: {name}"), "Message": alarm.to_string(),
        "Timestamp": Timestamp::now_system().to_string(), "SignatureVersion": "1", "Signature": "",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-eventfleet-test.pem",
    });
    let key = std::fs::read_to_string(testdata("sns/test-signing-key.pem")).unwrap();
    eventfleet_verify::sign::sns(&mut message, &key).unwrap();
    message
}

async fn done(f: &Fleet, id: EventId) {
    f.wait_for(id, Step::Succeeded).await;
}

fn ts(message: &Value) -> String {
    message["ts"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarm_then_ok_is_one_parent_updated_with_one_reply() {
    let f = Fleet::start().await;
    let fired = f.publish(&alarm(ALARMS_TOPIC, "api-5xx", "OK", "ALARM")).await;
    done(&f, fired).await;
    let recovered = f.publish(&alarm(ALARMS_TOPIC, "api-5xx", "ALARM", "OK")).await;
    done(&f, recovered).await;
    f.settled().await;

    let parents = f.slack.history("#alarms");
    assert_eq!(parents.len(), 1, "one message in the channel: {parents:?}");
    let parent = &parents[0];
    let replies = f.slack.replies("#alarms", &ts(parent));
    assert_eq!(replies.len(), 1, "one reply: {replies:?}");
    assert!(replies[0]["text"].as_str().unwrap().contains("OK"), "{}", replies[0]);
    assert!(replies[0]["blocks"].to_string().contains(&recovered.to_string()), "the reply names its event");
    // The parent now shows OK: updated in place, through the channel's id.
    let updates = f.slack.updates();
    assert_eq!(updates.len(), 1, "{updates:?}");
    assert_eq!(updates[0]["ts"], parent["ts"]);
    assert!(parent["text"].as_str().unwrap().starts_with(":large_green_circle: OK"), "{}", parent["text"]);
    assert!(parent["blocks"].to_string().contains("2 state changes"), "{}", parent["blocks"]);
    let thread = f.store.alarm_threads.thread("arn:aws:cloudwatch:us-east-1:123456789012:alarm:api-5xx").await;
    let thread = thread.unwrap().expect("the thread is recorded");
    assert_eq!((thread.state.as_str(), thread.transitions, thread.message_ts), ("OK", 2, ts(parent)));

    // Fired again while recently OK: still the same thread.
    let again = f.publish(&alarm(ALARMS_TOPIC, "api-5xx", "OK", "ALARM")).await;
    done(&f, again).await;
    assert_eq!(f.slack.history("#alarms").len(), 1);
    assert_eq!(f.slack.replies("#alarms", &ts(parent)).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_ok_for_longer_than_the_reopen_window_starts_a_new_thread() {
    let f = Fleet::start_alarms(AlarmSettings { reopen_after: Duration::ZERO, ..alarm_settings() }).await;
    for (old, state) in [("OK", "ALARM"), ("ALARM", "OK"), ("OK", "ALARM")] {
        let id = f.publish(&alarm(ALARMS_TOPIC, "disk-full", old, state)).await;
        done(&f, id).await;
    }
    let parents = f.slack.history("#alarms");
    assert_eq!(parents.len(), 2, "the ALARM after OK opened a second thread: {parents:?}");
    assert_eq!(f.slack.replies("#alarms", &ts(&parents[0])).len(), 1, "the first thread has the OK");
}

/// A storm is a burst like any other: with the default pace (a post a second, bursts of 3) and digests, 50 new
/// alarms at once are a few messages of their own and the channel's digest, which lists every other alarm once
/// with its event id; a folded alarm's recovery replies in the digest's thread, one posted alone in its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_storm_folds_into_the_channels_digest_and_its_changes_reply_there() {
    let config = eventfleet_workers::WorkerConfig {
        channel_pace: eventfleet_workers::slack::ChannelPace::default(),
        ..crate::worker_config()
    };
    let f = Fleet::start_with(config).await;
    let mut ids = Vec::new();
    for i in 0..50 {
        ids.push(f.publish(&alarm(ALARMS_TOPIC, &format!("storm-{i:02}"), "OK", "ALARM")).await);
    }
    for id in &ids {
        f.wait_for(*id, Step::Succeeded).await;
    }
    f.settled().await;
    let top = f.slack.history("#alarms");
    let is_digest = |m: &Value| m["text"].as_str().unwrap().contains("in one digest");
    let digests: Vec<&Value> = top.iter().filter(|m| is_digest(m)).collect();
    let alone: Vec<&Value> = top.iter().filter(|m| !is_digest(m)).collect();
    let texts: Vec<&Value> = top.iter().map(|m| &m["text"]).collect();
    assert!(!digests.is_empty() && top.len() <= 8, "a few messages, not 50: {texts:?}");
    // Every alarm once: its own message (by name) or a line of a digest (by event id), never both.
    for (i, id) in ids.iter().enumerate() {
        let name = format!("storm-{i:02}");
        let own = alone.iter().filter(|m| m["text"].as_str().unwrap().contains(&name)).count();
        let listed = digests.iter().filter(|m| m["blocks"].to_string().contains(&id.to_string())).count();
        assert_eq!(own + listed, 1, "{name}: {own} own messages, in {listed} digests: {texts:?}");
        let steps = f.steps(*id).await;
        assert!(!steps.contains(&Step::RetryScheduled), "{steps:?}");
        assert_eq!(steps.contains(&Step::Digested), listed == 1, "{name}'s trail says where it went: {steps:?}");
    }
    let digest = digests[0];
    let blocks = digest["blocks"].to_string();
    assert!(blocks.contains("from CloudWatch AWS/ApiGateway"), "counted by namespace: {blocks}");
    assert!(blocks.contains("alarmsV2:alarm/storm-"), "each line links its alarm: {blocks}");
    assert!(blocks.contains("their later state changes reply in this thread"), "{blocks}");

    // A folded alarm recovers: the digest's thread has its reply, in full; the digest itself is left as posted.
    let (folded, folded_id) = (0..50)
        .map(|i| (format!("storm-{i:02}"), ids[i]))
        .find(|(_, id)| blocks.contains(&id.to_string()))
        .expect("an alarm in the first digest");
    let recovered = f.publish(&alarm(ALARMS_TOPIC, &folded, "ALARM", "OK")).await;
    f.wait_for(recovered, Step::Succeeded).await;
    let replies = f.slack.replies("#alarms", &ts(digest));
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert!(replies[0]["blocks"].to_string().contains(&folded), "{}", replies[0]);
    assert!(replies[0]["blocks"].to_string().contains(&recovered.to_string()), "the reply names its event");
    assert!(f.slack.updates().is_empty(), "no message of its own to update, and the digest stays as posted");
    let arn = format!("arn:aws:cloudwatch:us-east-1:123456789012:alarm:{folded}");
    let thread = f.store.alarm_threads.thread(&arn).await.unwrap().expect("its thread is recorded");
    assert_eq!((thread.thread_ts, thread.state.as_str(), thread.transitions), (ts(digest), "OK", 2));
    assert!(f.steps(folded_id).await.contains(&Step::Digested));

    // One posted alone recovers in its own thread, its message updated.
    let own = alone.iter().find_map(|m| {
        let text = m["text"].as_str().unwrap();
        (0..50).map(|i| format!("storm-{i:02}")).find(|name| text.contains(&format!("{name}:")))
    });
    let own = own.expect("the first alarms of the storm went alone");
    let parent = alone.iter().find(|m| m["text"].as_str().unwrap().contains(&format!("{own}:"))).unwrap();
    let ok = f.publish(&alarm(ALARMS_TOPIC, &own, "ALARM", "OK")).await;
    f.wait_for(ok, Step::Succeeded).await;
    f.settled().await;
    assert_eq!(f.slack.replies("#alarms", &ts(parent)).len(), 1);
    assert_eq!(f.slack.updates().len(), 1, "its message shows OK");
    assert_eq!(f.slack.history("#alarms").len(), top.len(), "no new message in the channel");
}

/// A folded alarm's change that comes before its digest is posted waits for it (deferred, no attempt counted),
/// then replies in the digest's thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folded_alarms_change_before_its_digest_is_posted_waits_for_it() {
    // A slow pace, so that the digest gathers for 3 s while the change comes.
    let pace = eventfleet_workers::slack::ChannelPace { interval: Duration::from_secs(3), burst: 3, digests: true };
    let f = Fleet::start_with(eventfleet_workers::WorkerConfig { channel_pace: pace, ..crate::worker_config() }).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let id = f.publish(&alarm(ALARMS_TOPIC, &format!("early-{i}"), "OK", "ALARM")).await;
        f.wait_for(id, Step::Succeeded).await;
        ids.push(id);
    }
    // The burst's three went alone; the last one folded.
    let last = f.store.audit.history(ids[4]).await.unwrap();
    let outcome = last.iter().find(|e| e.step == Step::Succeeded).unwrap().detail.to_string();
    assert!(outcome.contains("folded into digest"), "{outcome}");
    let recovered = f.publish(&alarm(ALARMS_TOPIC, "early-4", "ALARM", "OK")).await;
    f.wait_for(recovered, Step::Succeeded).await;
    let trail = f.store.audit.history(recovered).await.unwrap();
    let waited = trail.iter().find(|e| e.step == Step::Deferred).expect("it waited for the digest");
    assert!(waited.detail.to_string().contains("not posted yet"), "{waited:?}");
    assert!(!trail.iter().any(|e| e.step == Step::RetryScheduled), "a wait is not a failure");
    let digest = f.slack.history("#alarms").into_iter().find(|m| m["text"].as_str().unwrap().contains("in one digest"));
    let digest = digest.expect("the digest was posted");
    let replies = f.slack.replies("#alarms", &ts(&digest));
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert!(replies[0]["blocks"].to_string().contains("early-4"), "{}", replies[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_collapses_into_one_counted_reply() {
    let f = Fleet::start().await;
    let mut state = "OK";
    for _ in 0..9 {
        let next = if state == "OK" { "ALARM" } else { "OK" };
        let id = f.publish(&alarm(ALARMS_TOPIC, "flappy", state, next)).await;
        done(&f, id).await;
        state = next;
    }
    let parents = f.slack.history("#alarms");
    assert_eq!(parents.len(), 1);
    let replies = f.slack.replies("#alarms", &ts(&parents[0]));
    // The first notification opened the thread; three replies; then one reply counting the other five.
    assert_eq!(replies.len(), 4, "{:?}", replies.iter().map(|r| &r["text"]).collect::<Vec<_>>());
    assert!(replies[3]["text"].as_str().unwrap().contains("flapping: 5 more"), "{}", replies[3]["text"]);
    assert!(parents[0]["text"].as_str().unwrap().contains("ALARM"), "the parent shows the last state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_delays_only_its_channel() {
    let f = Fleet::start().await;
    f.slack.script("#alarms", [Reply::RateLimited(2)]);
    let slow = f.publish(&alarm(ALARMS_TOPIC, "slow-channel", "OK", "ALARM")).await;
    eventually(Duration::from_secs(20), || async { (!f.slack.arrivals("#alarms").is_empty()).then_some(()) })
        .await
        .expect("the first post was refused");
    let fast = f.publish(&alarm(OTHER_TOPIC, "other-channel", "OK", "ALARM")).await;
    done(&f, fast).await;
    done(&f, slow).await;
    let slow_posts = f.slack.arrivals("#alarms");
    let fast_posts = f.slack.arrivals("#default");
    assert_eq!(slow_posts.iter().map(|(_, ok)| *ok).collect::<Vec<_>>(), [false, true], "refused once, then posted");
    assert!(slow_posts[1].0.duration_since(slow_posts[0].0) >= Duration::from_secs(2), "waited Retry-After");
    assert!(fast_posts[0].0 < slow_posts[1].0, "the other channel did not wait");
    let trail = f.store.audit.history(slow).await.unwrap();
    let deferred = trail.iter().find(|e| e.step == Step::Deferred).expect("a deferred line");
    assert_eq!(deferred.detail["delay_ms"], 2000, "{deferred:?}");
    assert_eq!(trail.iter().filter(|e| e.step == Step::RetryScheduled).count(), 0, "a wait is not a failure");
    let record = f.store.retries.get(slow).await.unwrap();
    assert!(record.is_none(), "no retry record: {record:?}");
    assert_eq!(f.slack.history("#alarms").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_whose_answer_was_lost_is_not_posted_twice() {
    let f = Fleet::start().await;
    let fired = f.publish(&alarm(ALARMS_TOPIC, "lossy", "OK", "ALARM")).await;
    done(&f, fired).await;
    // The reply lands, but its answer comes after the handler's timeout: the attempt fails after Slack took it.
    f.slack.script("#alarms", [Reply::Accepted(Duration::from_secs(4))]);
    let recovered = f.publish(&alarm(ALARMS_TOPIC, "lossy", "ALARM", "OK")).await;
    done(&f, recovered).await;
    let parents = f.slack.history("#alarms");
    let replies = f.slack.replies("#alarms", &ts(&parents[0]));
    assert_eq!(replies.len(), 1, "one reply, not two: {replies:?}");
    let steps = f.steps(recovered).await;
    assert!(steps.contains(&Step::RetryScheduled), "the first attempt timed out: {steps:?}");
}

/// A state change whose state-line update Slack answers 429: the reply is recorded before the update, so the
/// event's return (a deferral counts no attempt) updates the state line and does not reply again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_state_line_update_does_not_repeat_the_reply() {
    let f = Fleet::start().await;
    done(&f, f.publish(&alarm(ALARMS_TOPIC, "api-5xx-429", "OK", "ALARM")).await).await;
    let parent = f.slack.history("#alarms").into_iter().find(|m| m["text"].as_str().unwrap().contains("api-5xx-429"));
    let parent = parent.expect("the alarm's message");
    f.slack.script(&f.slack.channel_id("#alarms"), [Reply::RateLimited(1)]);
    let ok = f.publish(&alarm(ALARMS_TOPIC, "api-5xx-429", "ALARM", "OK")).await;
    let steps = f.wait_for(ok, Step::Succeeded).await;
    assert!(steps.contains(&Step::Deferred), "the 429 deferred the event: {steps:?}");
    let replies = f.slack.replies("#alarms", &ts(&parent));
    assert_eq!(replies.len(), 1, "one reply for the change: {replies:?}");
    let shown = f.slack.history("#alarms").into_iter().find(|m| m["ts"] == parent["ts"]).unwrap();
    assert!(shown["blocks"].to_string().contains("OK"), "the state line shows OK: {shown}");
}
