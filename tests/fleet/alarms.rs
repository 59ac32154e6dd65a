//! CloudWatch alarms as Slack threads, against the Slack stub: one thread per alarm, storms as digests,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_alarms_in_a_window_make_one_digest_with_fifty_replies() {
    let f = Fleet::start().await;
    let mut ids = Vec::new();
    for i in 0..50 {
        ids.push(f.publish(&alarm(ALARMS_TOPIC, &format!("storm-{i:02}"), "OK", "ALARM")).await);
    }
    for id in &ids {
        f.wait_for(*id, Step::Succeeded).await;
    }
    f.settled().await;
    let parents = f.slack.history("#alarms");
    let digests: Vec<&Value> =
        parents.iter().filter(|m| m["text"].as_str().unwrap().starts_with("Alarm storm")).collect();
    assert_eq!(digests.len(), 1, "one digest: {:?}", parents.iter().map(|m| &m["text"]).collect::<Vec<_>>());
    // Posted alone: those that went before the storm was known (at most the threshold); the others, held by
    // the channel's pace until then, went into the digest.
    let alone = parents.len() - 1;
    assert!((1..=10).contains(&alone), "{alone} posted alone");
    let replies = f.slack.replies("#alarms", &ts(digests[0]));
    assert_eq!(replies.len(), 50, "every alarm is in the digest's thread");
    let thread_text = serde_json::to_string(&replies).unwrap();
    for i in 0..50 {
        assert!(thread_text.contains(&format!("storm-{i:02}")), "storm-{i:02} is in the thread");
    }
    // The alarms inside the storm name their events; none was dropped.
    let in_digest = replies.iter().filter(|r| r["blocks"].to_string().contains("part of the storm digest")).count();
    assert_eq!(in_digest, 50 - alone, "and each alarm posted alone has a back-link");
    let backlinks = replies.iter().filter(|r| r["text"].as_str().unwrap().ends_with("posted before the storm")).count();
    assert_eq!(backlinks, alone);
    for id in &ids {
        let steps = f.steps(*id).await;
        assert!(!steps.contains(&Step::RetryScheduled), "{steps:?}");
    }
    let named = ids.iter().filter(|id| thread_text.contains(&id.to_string())).count();
    assert_eq!(named, 50 - alone, "each reply in the digest names its event");
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
