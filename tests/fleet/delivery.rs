//! Handlers, retries, dead letters and replay against the Slack stub.

use std::time::Duration;

use eventfleet_schema::{RetryStatus, Status, Step, Timestamp};
use eventfleet_storage::DeadLetterFilter;
use eventfleet_stubs::slack::Reply;
use eventfleet_workers::WorkerConfig;
use eventfleet_workers::replay::{ReplayOptions, replay};
use serde_json::{Value, json};

use eventfleet_schema::EventId;
use eventfleet_verify::sign::slack as sign;

use crate::{Fleet, SLACK_SECRET, eventually, testdata};

/// The CloudWatch alarm fixture published through SNS, signed with the test certificate.
fn alarm_delivery() -> Value {
    let alarm = std::fs::read_to_string(testdata("fixtures/cloudwatch/alarm-single-metric.json")).unwrap();
    let mut message = json!({
        "Type": "Notification",
        "MessageId": "5a0e5c3f-0000-4000-8000-000000000001",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:alarms",
        "Subject": "ALARM: \"EXAMPLE\" in EXAMPLE",
        "Message": alarm,
        "Timestamp": Timestamp::now_system().to_string(),
        "SignatureVersion": "1",
        "Signature": "",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-eventfleet-test.pem",
    });
    let key = std::fs::read_to_string(testdata("sns/test-signing-key.pem")).unwrap();
    eventfleet_verify::sign::sns(&mut message, &key).unwrap();
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudwatch_alarm_fixture_is_posted_once_with_the_expected_blocks() {
    let f = Fleet::start().await;
    let delivery = alarm_delivery();
    for _ in 0..2 {
        // SNS retried the delivery: still one post.
        let resp = f
            .http
            .post(format!("{}/sns", f.base))
            .header("content-type", "text/plain; charset=UTF-8")
            .body(delivery.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
    }
    let posted = eventually(Duration::from_secs(20), || async {
        let p = f.slack.posted();
        (!p.is_empty()).then_some(p)
    })
    .await
    .expect("the alarm was posted");
    f.settled().await;
    assert_eq!(f.slack.posted().len(), 1, "posted once");
    let msg = &posted[0];
    assert_eq!(msg["channel"], "#alarms", "the topic's channel");
    let blocks = msg["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[0]["text"]["text"], "ALARM EXAMPLE");
    assert!(blocks[1]["text"]["text"].as_str().unwrap().starts_with(":red_circle: ALARM"));
    let fields: Vec<&str> =
        blocks[3]["fields"].as_array().unwrap().iter().map(|f| f["text"].as_str().unwrap()).collect();
    assert!(fields[0].starts_with("*Reason*\nThreshold Crossed: 1 out of the last 1 datapoints"), "{fields:?}");
    assert_eq!(fields[1], "*State change*\nINSUFFICIENT_DATA → ALARM at 2015-06-03T17:43:27.123+0000");
    assert_eq!(
        fields[2],
        "*Metric*\nAWS/EC2 NetworkOut (InstanceId=TestInstance), average over 60 s, GreaterThanThreshold 0.0"
    );
    assert!(fields[3].contains("account 123456789012"));
    let link = blocks[4]["elements"][0]["url"].as_str().unwrap();
    assert_eq!(link, "https://console.aws.amazon.com/cloudwatch/home?region=REGION#alarmsV2:alarm/EXAMPLE");
    assert!(msg["text"].as_str().unwrap().starts_with(":red_circle: ALARM: EXAMPLE: Threshold Crossed"));
    assert_eq!(f.slack.authorizations()[0], "Bearer xoxb-test-token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_then_ok_records_one_retry_and_posts_once() {
    // No pace: the retry comes back within the pace interval of the failed post's turn, and whether it waits for
    // the next (a `deferred` line) depends on whether the channel's lane has settled its share by then.
    let f = Fleet::start_with(WorkerConfig { channel_pace: crate::no_pace(), ..crate::worker_config() }).await;
    let hook = f.hook("#flaky").await;
    f.slack.script("#flaky", [Reply::Http(500)]);
    let id = f.send(&hook, "deploy done").await;
    let steps = f.wait_for(id, Step::Succeeded).await;
    assert_eq!(
        steps,
        [Step::Received, Step::Enqueued, Step::Started, Step::RetryScheduled, Step::Started, Step::Succeeded]
    );
    assert_eq!(f.slack.requests("#flaky"), 2);
    assert_eq!(f.slack.posted().len(), 1);
    let retry = eventually(Duration::from_secs(5), || async {
        f.store.retries.get(id).await.unwrap().filter(|r| r.status == RetryStatus::Resolved)
    })
    .await
    .expect("a resolved retry record");
    assert_eq!(retry.attempts, 1);
    assert_eq!(retry.last_error, "chat.postMessage: HTTP 500");
    assert_eq!(f.store.idempotency.find_by_event(id).await.unwrap().unwrap().status, Status::Done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_not_found_dead_letters_at_once() {
    let f = Fleet::start().await;
    let hook = f.hook("#gone").await;
    f.slack.always("#gone", Reply::SlackError("channel_not_found"));
    let id = f.send(&hook, "nobody listens").await;
    f.wait_for(id, Step::DeadLettered).await;
    f.settled().await;
    assert_eq!(f.slack.requests("#gone"), 1, "no second attempt");
    let dead = f.store.dead_letters.list(&DeadLetterFilter::default()).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, "chat.postMessage: channel_not_found");
    let retry = f.store.retries.get(id).await.unwrap().unwrap();
    assert_eq!(
        (retry.status, retry.dead_reason.as_deref()),
        (RetryStatus::Dead, Some("chat.postMessage: channel_not_found"))
    );
    assert_eq!(f.store.idempotency.find_by_event(id).await.unwrap().unwrap().status, Status::Dead);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_retryable_failure_is_tried_max_receive_count_times_then_dead_lettered_and_replay_recovers_it() {
    // Retries, not the pace, are under test: a retry 20 ms after a post may not wait for the channel's next slot.
    let f = Fleet::start_with(WorkerConfig { channel_pace: crate::no_pace(), ..crate::worker_config() }).await;
    let hook = f.hook("#down").await;
    let other = f.hook("#fine").await;
    f.slack.always("#down", Reply::Http(503));
    let id = f.send(&hook, "will fail").await;
    // Another group keeps flowing meanwhile.
    let ok = f.send(&other, "unaffected").await;
    f.wait_for(ok, Step::Succeeded).await;
    let steps = f.wait_for(id, Step::DeadLettered).await;
    assert_eq!(f.slack.requests("#down"), 5, "exactly max_receive_count attempts");
    assert_eq!(steps.iter().filter(|s| **s == Step::Started).count(), 5);
    assert_eq!(steps.iter().filter(|s| **s == Step::RetryScheduled).count(), 4);
    let dead = f.store.dead_letters.list(&DeadLetterFilter::default()).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].reason.starts_with("gave up after 5 attempts: chat.postMessage: HTTP 503"), "{}", dead[0].reason);

    // The operator replays after Slack recovers.
    f.slack.recover("#down");
    let options = ReplayOptions { by: "alice".into(), dry_run: false, rate: None };
    let outcomes = replay(&f.store, &dead, &options, |_, _| {}).await;
    assert!(outcomes[0].error.is_none(), "{outcomes:?}");
    let history = eventually(Duration::from_secs(20), || async {
        let h = f.store.audit.history(id).await.unwrap();
        (h.last().map(|e| e.step) == Some(Step::Succeeded)).then_some(h)
    })
    .await
    .expect("the replayed event succeeds");
    let replayed = history.iter().find(|e| e.step == Step::Replayed).expect("replay audited");
    assert_eq!(replayed.actor, "alice");
    assert_eq!(f.slack.posted().iter().filter(|p| p["channel"] == "#down").count(), 1);
    assert!(f.store.dead_letters.list(&DeadLetterFilter::default()).await.unwrap().is_empty());
    // The retry record is resolved right after the success is recorded.
    let resolved = eventually(Duration::from_secs(5), || async {
        (f.store.retries.get(id).await.unwrap().unwrap().status == RetryStatus::Resolved).then_some(())
    })
    .await;
    assert!(resolved.is_some(), "the retry record was resolved");
    assert_eq!(f.store.idempotency.find_by_event(id).await.unwrap().unwrap().status, Status::Done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_to_one_channel_keep_its_pace_across_hooks_without_holding_up_another_channel() {
    let interval = Duration::from_secs(1);
    let f = Fleet::start_with(WorkerConfig {
        channel_pace: eventfleet_workers::slack::ChannelPace { interval, burst: 2, digests: false },
        ..crate::worker_config()
    })
    .await;
    // Two hooks to one channel are two message groups, handled at once: the pace is the channel's, not a hook's.
    let (a, b, elsewhere) = (f.hook("#paced").await, f.hook("#paced").await, f.hook("#other").await);
    let mut paced = Vec::new();
    for i in 0..3 {
        paced.push(f.send(&a, &format!("a{i}")).await);
        paced.push(f.send(&b, &format!("b{i}")).await);
    }
    let other = f.send(&elsewhere, "other").await;
    for id in paced.iter().chain([&other]) {
        f.wait_for(*id, Step::Succeeded).await;
    }
    let posts = f.slack.arrivals("#paced");
    assert_eq!(posts.len(), 6, "each posted once: {posts:?}");
    assert!(posts.iter().all(|(_, ok)| *ok), "no 429 needed: {posts:?}");
    // GCRA with a burst of 2: any three posts in a row span at least one interval (less a deferral's jitter).
    for w in posts.windows(3) {
        assert!(w[2].0.duration_since(w[0].0) >= interval * 8 / 10, "{:?}", w[2].0.duration_since(w[0].0));
    }
    assert!(f.slack.arrivals("#other")[0].0 < posts[5].0, "the other channel did not wait for this one");
    let mut deferred = 0;
    for id in &paced {
        let trail = f.store.audit.history(*id).await.unwrap();
        assert!(!trail.iter().any(|e| e.step == Step::RetryScheduled), "waiting for the pace is not a failure");
        deferred += trail.iter().filter(|e| e.step == Step::Deferred).count();
    }
    assert!(deferred >= 1, "the posts past the burst waited as deferrals");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_ratelimited_defers_at_least_retry_after_without_counting_an_attempt() {
    let f = Fleet::start().await;
    let hook = f.hook("#busy").await;
    f.slack.script("#busy", [Reply::RateLimited(1)]);
    let id = f.send(&hook, "hello").await;
    f.wait_for(id, Step::Succeeded).await;
    let history = f.store.audit.history(id).await.unwrap();
    let deferred = history.iter().find(|e| e.step == Step::Deferred).expect("a deferred line");
    assert!(deferred.detail["delay_ms"].as_u64().unwrap() >= 1000, "{}", deferred.detail);
    assert!(!history.iter().any(|e| e.step == Step::RetryScheduled), "a wait is not a failed attempt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_deliveries_are_posted_with_their_event_name() {
    let f = Fleet::start().await;
    let hook = f.hook("#gh").await;
    let resp = f
        .http
        .post(format!("{}/hooks/{}", f.base, hook.id))
        .header("content-type", "application/json")
        .header("x-github-event", "ping")
        .header("x-github-delivery", "d-1")
        .body(r#"{"zen":"Keep it logically awesome."}"#)
        .send()
        .await
        .unwrap();
    let id = EventId::parse(resp.json::<Value>().await.unwrap()["event_id"].as_str().unwrap()).unwrap();
    f.wait_for(id, Step::Succeeded).await;
    let posted = f.slack.posted();
    assert_eq!(posted[0]["channel"], "#gh");
    assert!(posted[0]["text"].as_str().unwrap().starts_with(":ping_pong: GitHub hook is connected"), "{}", posted[0]);
    assert!(posted[0]["blocks"].to_string().contains("`ping` via test"), "{}", posted[0]);
}

/// A GitHub `workflow_run` example from testdata/github with this conclusion.
fn workflow_run(conclusion: &str) -> String {
    let doc: Value = serde_json::from_slice(&std::fs::read(crate::testdata("github/examples.json")).unwrap()).unwrap();
    let mut run = doc["examples"]["workflow_run"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "completed")
        .unwrap()
        .clone();
    run["workflow_run"]["status"] = "completed".into();
    run["workflow_run"]["conclusion"] = conclusion.into();
    run.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failures_only_hook_posts_the_failed_run_and_audits_the_successful_one_as_filtered() {
    let f = Fleet::start().await;
    let mut hook = f.hook("#ci").await;
    let filter =
        eventfleet_schema::HookFilter { only: vec!["workflow_run=failure|cancelled|timed_out".into()], skip: vec![] };
    hook = f.store.webhooks.set_filter(&hook.id, Some(&filter)).await.unwrap();
    let mut ids = Vec::new();
    for (delivery, conclusion) in [("d-ok", "success"), ("d-bad", "failure")] {
        let resp = f
            .http
            .post(format!("{}/hooks/{}", f.base, hook.id))
            .header("content-type", "application/json")
            .header("x-github-event", "workflow_run")
            .header("x-github-delivery", delivery)
            .body(workflow_run(conclusion))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202, "a filtered delivery is still accepted");
        ids.push(EventId::parse(resp.json::<Value>().await.unwrap()["event_id"].as_str().unwrap()).unwrap());
    }
    // GitHub's form content type carries the same JSON in `payload`: the filter applies to it too.
    let form = format!(
        "payload={}",
        url::form_urlencoded::byte_serialize(workflow_run("success").as_bytes()).collect::<String>()
    );
    let resp = f
        .http
        .post(format!("{}/hooks/{}", f.base, hook.id))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-github-event", "workflow_run")
        .header("x-github-delivery", "d-form")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let form_id = EventId::parse(resp.json::<Value>().await.unwrap()["event_id"].as_str().unwrap()).unwrap();
    assert!(f.wait_for(form_id, Step::Succeeded).await.contains(&Step::Filtered), "a form delivery is filtered too");
    let ok_steps = f.wait_for(ids[0], Step::Succeeded).await;
    f.wait_for(ids[1], Step::Succeeded).await;
    let posted = f.slack.posted();
    assert_eq!(posted.len(), 1, "only the failed run is posted: {posted:?}");
    assert!(posted[0]["text"].as_str().unwrap().starts_with(":x: Workflow"), "{}", posted[0]);
    assert!(ok_steps.contains(&Step::Filtered), "{ok_steps:?}");
    let history = f.store.audit.history(ids[0]).await.unwrap();
    let filtered = history.iter().find(|e| e.step == Step::Filtered).unwrap();
    assert_eq!(filtered.detail["rule"], "only workflow_run=failure|cancelled|timed_out", "{}", filtered.detail);
    assert_eq!(filtered.detail["outcome"], "success");
    let record = f.store.idempotency.find_by_event(ids[0]).await.unwrap().unwrap();
    assert!(record.outcome.unwrap().starts_with("filtered by hook test"));
    assert!(!f.store.audit.history(ids[1]).await.unwrap().iter().any(|e| e.step == Step::Filtered));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhandled_slack_events_are_recorded_and_completed_not_failed() {
    let f = Fleet::start().await;
    let body =
        json!({"type": "event_callback", "team_id": "T1", "event_id": "EvU", "event": {"type": "reaction_added"}})
            .to_string();
    let ts = Timestamp::now_system().as_secs();
    let resp = f
        .http
        .post(format!("{}/slack/events", f.base))
        .header("content-type", "application/json")
        .header("x-slack-request-timestamp", ts.to_string())
        .header("x-slack-signature", sign(SLACK_SECRET.as_bytes(), ts, body.as_bytes()))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let id = EventId::parse(resp.json::<Value>().await.unwrap()["event_id"].as_str().unwrap()).unwrap();
    f.wait_for(id, Step::Succeeded).await;
    let record = f.store.idempotency.find_by_event(id).await.unwrap().unwrap();
    assert_eq!((record.status, record.outcome.as_deref()), (Status::Done, Some("unhandled kind slack.event")));
    assert_eq!(f.slack.total_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_keeps_a_slow_handler_s_message_invisible() {
    // Visibility 2 s, the post takes 3.5 s: without the heartbeat (every 0.67 s) the message would be delivered
    // again mid-way. The margins leave room for a loaded machine.
    let f = Fleet::start_with(WorkerConfig {
        visibility_timeout: Duration::from_secs(2),
        handler_timeout: Duration::from_secs(6),
        ..crate::worker_config()
    })
    .await;
    let hook = f.hook("#slowpoke").await;
    f.slack.script("#slowpoke", [Reply::Slow(Duration::from_millis(3500))]);
    let id = f.send(&hook, "takes a while").await;
    let steps = f.wait_for(id, Step::Succeeded).await;
    assert_eq!(steps.iter().filter(|s| **s == Step::Started).count(), 1, "{steps:?}");
    assert_eq!(f.slack.requests("#slowpoke"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_an_earlier_replay_already_sent_back_is_only_deleted() {
    let f = Fleet::start().await;
    let hook = f.hook("#gone-again").await;
    f.slack.always("#gone-again", Reply::SlackError("channel_not_found"));
    let id = f.send(&hook, "nobody listens").await;
    f.wait_for(id, Step::DeadLettered).await;
    let dead = f.store.dead_letters.list(&DeadLetterFilter::default()).await.unwrap();
    assert_eq!(dead.len(), 1);
    // An earlier replay sent it back (as `m-earlier`) and stopped before deleting it from the DLQ.
    let line = eventfleet_schema::AuditEntry::new(id, f.store.clock.now(), Step::Replayed, "bob").with_detail(
        json!({ "dead_letter": dead[0].message_id, "requeued_as": "m-earlier", "reason": dead[0].reason }),
    );
    f.store.audit.append(vec![line]).await.unwrap();

    let options = ReplayOptions { by: "alice".into(), dry_run: false, rate: None };
    let outcomes = replay(&f.store, &dead, &options, |_, _| {}).await;
    assert!(outcomes[0].error.is_none(), "{outcomes:?}");
    assert_eq!(outcomes[0].requeued_as.as_ref().map(|m| m.0.as_str()), Some("m-earlier"));
    assert!(
        f.store.dead_letters.list(&DeadLetterFilter::default()).await.unwrap().is_empty(),
        "the stale copy is gone"
    );
    f.settled().await;
    assert_eq!(f.slack.requests("#gone-again"), 1, "not sent again");
    assert_eq!(f.store.idempotency.find_by_event(id).await.unwrap().unwrap().status, Status::Dead, "records untouched");
    assert_eq!(f.steps(id).await.iter().filter(|s| **s == Step::Replayed).count(), 1, "no second replay line");
}

/// A GitHub example delivery of `event` from testdata/github (the first with `action`, if given), made the
/// delivery of run `run` (and job `job`) of the repository.
fn github_example(event: &str, action: Option<&str>) -> Value {
    let doc: Value = serde_json::from_slice(&std::fs::read(crate::testdata("github/examples.json")).unwrap()).unwrap();
    doc["examples"][event]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| action.is_none_or(|a| e["action"] == a))
        .unwrap_or_else(|| panic!("no {event} example with action {action:?}"))
        .clone()
}

/// What GitHub sends for one workflow run with two jobs: the run requested, each job queued, in progress and
/// completed, the run in progress, then completed with `conclusion`.
fn run_deliveries(run: i64, conclusion: &str) -> Vec<(&'static str, Value)> {
    let mut out = Vec::new();
    let run_delivery = |action: &str, status: &str, conclusion: Option<&str>| {
        let mut d = github_example("workflow_run", None);
        d["action"] = action.into();
        d["workflow_run"]["id"] = run.into();
        d["workflow_run"]["run_number"] = run.into();
        d["workflow_run"]["status"] = status.into();
        d["workflow_run"]["conclusion"] = conclusion.map_or(Value::Null, Value::from);
        ("workflow_run", d)
    };
    out.push(run_delivery("requested", "queued", None));
    // GitHub's examples come from several repositories: every delivery of this run names the run's.
    let repository = github_example("workflow_run", None)["repository"].clone();
    for (job, name) in [(run * 10 + 1, "build"), (run * 10 + 2, "test")] {
        for (action, status, job_conclusion) in [
            ("queued", "queued", None),
            ("in_progress", "in_progress", None),
            ("completed", "completed", Some("success")),
        ] {
            let mut d = github_example("workflow_job", None);
            d["action"] = action.into();
            d["workflow_job"]["id"] = job.into();
            d["workflow_job"]["run_id"] = run.into();
            d["workflow_job"]["name"] = name.into();
            d["workflow_job"]["status"] = status.into();
            let failed = name == "test" && conclusion == "failure";
            let c = job_conclusion.map(|c| if failed { "failure" } else { c });
            d["workflow_job"]["conclusion"] = c.map_or(Value::Null, Value::from);
            d["repository"] = repository.clone();
            out.push(("workflow_job", d));
        }
    }
    out.push(run_delivery("in_progress", "in_progress", None));
    out.push(run_delivery("completed", "completed", Some(conclusion)));
    out
}

/// Five workflow runs, sent as the `workflow_run` and `workflow_job` deliveries GitHub sends for them, are five
/// messages in the channel, each updated in place to its run's final conclusion and listing its jobs; the
/// failed runs have a thread reply for the failed job and for the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_that_asked_for_a_message_per_delivery_posts_each_delivery_of_a_run() {
    let f = Fleet::start().await;
    let hook = f.hook("#ci-each").await;
    f.store.webhooks.set_per_delivery(&hook.id, true).await.unwrap();
    let deliveries = run_deliveries(9100, "failure");
    let mut ids = Vec::new();
    for (i, (event, body)) in deliveries.iter().enumerate() {
        ids.push(f.send_github(&hook, event, &format!("each-{i}"), body).await);
    }
    for id in &ids {
        f.wait_for(*id, Step::Succeeded).await;
    }
    assert_eq!(f.slack.history("#ci-each").len(), deliveries.len(), "a message per delivery");
    assert!(f.slack.updates().is_empty(), "nothing updated in place");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_workflow_runs_are_five_living_messages_showing_their_conclusions() {
    let f = Fleet::start().await;
    let hook = f.hook("#ci").await;
    let runs: Vec<(i64, &str)> =
        vec![(9001, "success"), (9002, "failure"), (9003, "success"), (9004, "cancelled"), (9005, "failure")];
    let mut ids = Vec::new();
    for (n, (run, conclusion)) in runs.iter().enumerate() {
        for (i, (event, body)) in run_deliveries(*run, conclusion).into_iter().enumerate() {
            ids.push(f.send_github(&hook, event, &format!("run-{n}-{i}"), &body).await);
        }
    }
    for id in &ids {
        f.wait_for(*id, Step::Succeeded).await;
    }
    let messages = f.slack.history("#ci");
    assert_eq!(
        messages.len(),
        runs.len(),
        "one message per run: {:?}",
        messages.iter().map(|m| &m["text"]).collect::<Vec<_>>()
    );
    for (run, conclusion) in &runs {
        let shown = messages
            .iter()
            .find(|m| m["text"].as_str().unwrap().contains(&format!("#{run}")))
            .unwrap_or_else(|| panic!("run {run} has a message: {messages:?}"));
        let words = match *conclusion {
            "success" => "succeeded",
            "failure" => "failed",
            _ => "was cancelled",
        };
        let text = shown["text"].as_str().unwrap();
        assert!(text.contains(words), "run {run} shows its conclusion {conclusion}: {text}");
        let blocks = shown["blocks"].to_string();
        assert!(blocks.contains("build") && blocks.contains("test"), "its jobs are listed: {blocks}");
        let replies = f.slack.replies("#ci", shown["ts"].as_str().unwrap());
        let expected = if *conclusion == "failure" { 2 } else { 0 };
        assert_eq!(replies.len(), expected, "run {run}: a reply for the failed job and the failed run: {replies:?}");
    }
    assert!(f.slack.updates().len() >= runs.len() * 8, "later deliveries update the message in place");
}

/// The defaults: Slack's pace (one post a second, bursts of three) with digests on, against a stand-in that
/// enforces Slack's limit.
async fn fleet_with_defaults() -> Fleet {
    let f = Fleet::start_with(WorkerConfig {
        channel_pace: eventfleet_workers::slack::ChannelPace::default(),
        ..crate::worker_config()
    })
    .await;
    f.slack.enforce_limit(Duration::from_secs(1), 3);
    f
}

/// How many of the channel's top-level messages (and their blocks) say `text`.
fn mentions(messages: &[Value], text: &str) -> usize {
    messages.iter().filter(|m| m.to_string().contains(text)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_to_one_hook_becomes_a_few_messages_with_every_payload_in_them_and_a_quiet_channel_waits_for_nothing() {
    let f = fleet_with_defaults().await;
    let (hook, quiet) = (f.hook("#burst").await, f.hook("#quiet").await);
    let lone = f.send(&quiet, "all quiet").await;
    let alerts: Vec<String> = (0..40).map(|i| format!("alert {i:02} on db-{i}")).collect();
    let ids = futures_util::future::join_all(alerts.iter().map(|text| f.send(&hook, text))).await;
    // Within 15 s every payload is in the channel, in at most four top-level messages.
    let channel = eventually(Duration::from_secs(15), || async {
        let history = f.slack.history("#burst");
        alerts.iter().all(|a| mentions(&history, a) > 0).then_some(history)
    })
    .await
    .unwrap_or_else(|| panic!("not every payload reached #burst in 15 s: {:?}", f.slack.history("#burst")));
    assert!(channel.len() <= 4, "{} top-level messages: {channel:?}", channel.len());
    eprintln!("a burst of 40 to one hook: {} top-level messages", channel.len());
    f.settled().await;
    let posted: Vec<Value> = f.slack.posted().into_iter().filter(|p| p["channel"] == "#burst").collect();
    for alert in &alerts {
        assert_eq!(mentions(&posted, alert), 1, "{alert} posted once, in its own message or a digest");
    }
    assert_eq!(f.slack.limited(), 0, "the pace kept Slack's limit: no 429");
    // Each trail says where its payload went: posted, or folded and then in the digest at its ts.
    let mut folded = 0;
    for id in &ids {
        let record = f.store.idempotency.find_by_event(*id).await.unwrap().expect("its record");
        let outcome = record.outcome.unwrap_or_default();
        let trail = f.store.audit.history(*id).await.unwrap();
        if outcome.contains("folded into digest") {
            folded += 1;
            let line = trail.iter().find(|e| e.step == Step::Digested).expect("a digested line");
            let ts = line.detail["ts"].as_str().unwrap();
            assert!(channel.iter().any(|m| m["ts"] == ts), "the digest is in the channel: {}", line.detail);
        } else {
            assert!(outcome.contains("ts "), "posted on its own: {outcome}");
        }
        assert!(!trail.iter().any(|e| e.step == Step::RetryScheduled), "a burst is not a failure");
    }
    assert!(folded >= 36, "the posts past the burst were folded ({folded})");
    // The lone payload on a quiet channel was posted as itself, not folded.
    let quiet_outcome = f.store.idempotency.find_by_event(lone).await.unwrap().unwrap().outcome.unwrap();
    assert!(quiet_outcome.contains("ts "), "{quiet_outcome}");
    assert_eq!(mentions(&f.slack.history("#quiet"), "all quiet"), 1);
}
