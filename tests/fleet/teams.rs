//! Microsoft Teams as a second chat, against the Teams stand-in (28 KB, 4 a second, scripted answers): every kind
//! of event arrives as one Adaptive Card that Microsoft's SDK validates, a `429` waits its `Retry-After`, a `400` is
//! dead-lettered with Teams' answer and delivered after a replay, and a hook posting to Slack and Teams posts to
//! each once whichever of them fails.

use std::collections::BTreeMap;
use std::time::Duration;

use eventfleet_schema::{
    Body, Envelope, EnvelopeV1, EventId, IdempotencyKey, Kind, Source, Step, Verification, VerificationMethod,
    message_group,
};
use eventfleet_storage::{DeadLetterFilter, OutgoingMessage};
use eventfleet_stubs::slack::Reply;
use eventfleet_stubs::teams::{Answer, TeamsStub};
use eventfleet_workers::WorkerConfig;
use eventfleet_workers::replay::{ReplayOptions, replay};
use eventfleet_workers::teams::TeamsWebhooks;
use serde_json::{Value, json};

use crate::support::validate_cards as validate;
use crate::{Fleet, eventually, testdata, worker_config};

const TEAMS_TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:teams";

/// The test settings with the Teams channel `ops` at the stand-in's webhook, and no Slack pace.
fn config(teams: &TeamsStub) -> WorkerConfig {
    let url = teams.webhook("ops");
    let webhooks =
        TeamsWebhooks::load(&["ops".into()], &|var| (var == "EVENTFLEET_TEAMS_WEBHOOK_OPS").then(|| url.clone()))
            .unwrap();
    WorkerConfig { teams: webhooks, channel_pace: crate::no_pace(), ..worker_config() }
}

/// The same with the shipped burst digests on (the tests' default pace has them off).
fn with_digests(teams: &TeamsStub) -> WorkerConfig {
    let pace = eventfleet_workers::slack::ChannelPace { digests: true, ..worker_config().channel_pace };
    WorkerConfig { channel_pace: pace, ..config(teams) }
}

/// A fleet whose Teams channel `ops` is the stand-in's webhook.
async fn fleet(teams: &TeamsStub) -> Fleet {
    Fleet::start_with(config(teams)).await
}

/// Every text of a card, joined: what a person reads.
fn words(card: &Value) -> String {
    fn walk(value: &Value, out: &mut String) {
        match value {
            Value::String(s) => {
                out.push_str(s);
                out.push('\n');
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            Value::Object(map) => map.iter().filter(|(k, _)| *k != "type").for_each(|(_, v)| walk(v, out)),
            _ => {}
        }
    }
    let mut out = String::new();
    walk(card, &mut out);
    out
}

/// An SNS notification to the Teams topic, signed: `message` is its `Message`.
fn sns(subject: &str, message: &str) -> Value {
    let mut sns = json!({
        "Type": "Notification", "MessageId": EventId::new().to_string(), "TopicArn": TEAMS_TOPIC,
        "Subject": subject, "Message": message,
        "Timestamp": eventfleet_schema::Timestamp::now_system().to_string(), "SignatureVersion": "1", "Signature": "",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-eventfleet-test.pem",
    });
    let key = std::fs::read_to_string(testdata("sns/test-signing-key.pem")).unwrap();
    eventfleet_verify::sign::sns(&mut sns, &key).unwrap();
    sns
}

fn alarm_message(name: &str, state: &str) -> String {
    json!({
        "AlarmName": name, "AlarmDescription": "p99 latency of the checkout API", "AWSAccountId": "123456789012",
        "NewStateValue": state, "OldStateValue": "OK", "NewStateReason": "Threshold Crossed: 3 datapoints > 800",
        "StateChangeTime": "2026-12-01T10:00:00.000+0000", "Region": "US East (N. Virginia)",
        "AlarmArn": format!("arn:aws:cloudwatch:us-east-1:123456789012:alarm:{name}"),
        "Trigger": {"MetricName": "Latency", "Namespace": "AWS/ApiGateway", "ExtendedStatistic": "p99", "Period": 60,
                    "ComparisonOperator": "GreaterThanThreshold", "Threshold": 800.0,
                    "Dimensions": [{"name": "ApiName", "value": "checkout"}]}
    })
    .to_string()
}

fn github_example(event: &str, pick: impl Fn(&Value) -> bool) -> Value {
    let doc: Value = serde_json::from_slice(&std::fs::read(testdata("github/examples.json")).unwrap()).unwrap();
    doc["examples"][event].as_array().unwrap().iter().find(|e| pick(e)).unwrap().clone()
}

/// A schedule's tick, accepted as the ingress's scheduler accepts it.
async fn tick(f: &Fleet, channel: &str, text: &str) -> EventId {
    let now = f.store.clock.now();
    let event_id = EventId::new();
    let body = json!({ "schedule": "standup", "tick": "2026-12-06T09:00Z", "channel": channel, "text": text });
    let envelope = EnvelopeV1 {
        event_id,
        idempotency_key: IdempotencyKey::schedule("standup", "2026-12-06T09:00Z"),
        source: Source::Schedule { name: "standup".into() },
        kind: Kind::new("schedule.standup"),
        message_group: message_group("schedule:standup"),
        received_at: now,
        verification: Verification { method: VerificationMethod::Fleet, verified_at: now },
        trace: None,
        headers: BTreeMap::from([("content-type".to_owned(), "application/json".to_owned())]),
        body: Body::Utf8(body.to_string()),
    };
    let message = OutgoingMessage::first_delivery(Envelope::V1(envelope));
    f.store.protocol.accept(message, Duration::from_secs(3600), "scheduler@test").await.unwrap();
    event_id
}

async fn cards(teams: &TeamsStub, n: usize) -> Vec<Value> {
    eventually(Duration::from_secs(20), || async {
        let cards = teams.cards("ops");
        (cards.len() >= n).then_some(cards)
    })
    .await
    .unwrap_or_else(|| panic!("{n} cards; got {:?}", teams.cards("ops")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_event_arrives_as_one_valid_card_with_its_facts() {
    let teams = TeamsStub::start().await.unwrap();
    let f = fleet(&teams).await;
    let hook = f.hook("teams:ops").await;

    // An alarm, then an SNS notification, on a topic whose channel is Teams.
    let alarm = f.publish(&sns("ALARM: checkout-p99", &alarm_message("checkout-p99", "ALARM"))).await;
    f.wait_for(alarm, Step::Succeeded).await;
    let note = f.publish(&sns("Budget alert", "Your budget ops-monthly has exceeded 80% of $1,000")).await;
    f.wait_for(note, Step::Succeeded).await;
    // A generic JSON payload.
    let payload = json!({"title": "Deploy finished", "service": "checkout", "status": "ok", "version": "1.4.2"});
    let resp = (f.http.post(format!("{}/hooks/{}", f.base, hook.id)))
        .header("content-type", "application/json")
        .body(payload.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let generic = EventId::parse(resp.json::<Value>().await.unwrap()["event_id"].as_str().unwrap()).unwrap();
    f.wait_for(generic, Step::Succeeded).await;
    // A GitHub push.
    let mut push = github_example("push", |_| true);
    push["commits"] = json!([{"id": "a1b2c3d4e5f6", "message": "Fix the checkout timeout", "author": {"name": "ada"},
                              "url": "https://github.com/Codertocat/Hello-World/commit/a1b2c3d4e5f6"}]);
    push["ref"] = "refs/heads/main".into();
    let pushed = f.send_github(&hook, "push", "d-push", &push).await;
    f.wait_for(pushed, Step::Succeeded).await;
    // A workflow run as GitHub sends it: requested, its job queued, in progress and done, then the run completed.
    let completed = github_example("workflow_run", |e| e["action"] == "completed");
    let run_id = completed["workflow_run"]["id"].clone();
    let mut requested = completed.clone();
    requested["action"] = "requested".into();
    requested["workflow_run"]["status"] = "queued".into();
    requested["workflow_run"]["conclusion"] = Value::Null;
    let mut deliveries = vec![("workflow_run", requested)];
    for action in ["queued", "in_progress", "completed"] {
        let mut job = github_example("workflow_job", |e| e["action"] == action);
        job["workflow_job"]["run_id"] = run_id.clone();
        job["repository"] = completed["repository"].clone();
        deliveries.push(("workflow_job", job));
    }
    let mut done = completed.clone();
    done["workflow_run"]["conclusion"] = "failure".into();
    deliveries.push(("workflow_run", done));
    let mut last = None;
    for (i, (event, body)) in deliveries.iter().enumerate() {
        last = Some(f.send_github(&hook, event, &format!("d-run-{i}"), body).await);
    }
    f.wait_for(last.unwrap(), Step::Succeeded).await;
    // A schedule's tick.
    let ticked = tick(&f, "teams:ops", "Stand-up in 5 minutes: *agenda* in the doc").await;
    f.wait_for(ticked, Step::Succeeded).await;
    f.settled().await;

    let cards = cards(&teams, 6).await;
    assert_eq!(cards.len(), 6, "one card each (the run's five deliveries one card): {cards:#?}");
    let texts: Vec<String> = cards.iter().map(words).collect();
    let alarm_card = &texts[0];
    for fact in ["checkout-p99", "ALARM", "Latency", "800", "Threshold Crossed", "console.aws.amazon.com"] {
        assert!(alarm_card.contains(fact), "the alarm's card says {fact}: {alarm_card}");
    }
    assert!(texts[1].contains("Budget alert") && texts[1].contains("exceeded 80%"), "{}", texts[1]);
    assert!(texts[2].contains("Deploy finished") && texts[2].contains("checkout"), "{}", texts[2]);
    assert!(texts[3].contains("Hello-World") && texts[3].contains("Fix the checkout timeout"), "{}", texts[3]);
    assert!(texts[4].to_lowercase().contains("fail"), "the run's card shows its conclusion: {}", texts[4]);
    assert!(texts[5].contains("Stand-up in 5 minutes") && texts[5].contains("**agenda**"), "{}", texts[5]);
    for (card, id) in cards.iter().zip([alarm, note, generic, pushed, last.unwrap(), ticked]) {
        assert!(words(card).contains(&id.to_string()), "each card names its event: {card}");
        assert_eq!(card["version"], "1.4");
    }
    validate(&cards);
    // Kept for a look (and docs/operations.md's picture: tests/teams/render.mjs).
    let kept = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/teams-cards.json");
    std::fs::write(kept, serde_json::to_string_pretty(&cards).unwrap()).unwrap();
    // The trail says where each went.
    let trail = f.store.audit.history(alarm).await.unwrap();
    let sent = trail.iter().find(|e| e.step == Step::Sent).expect("a sent line");
    assert_eq!(sent.detail["target"], "teams:ops");
    assert!(f.slack.posted().is_empty(), "nothing went to Slack: {:?}", f.slack.posted());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_waits_its_retry_after_and_a_500_is_retried() {
    let teams = TeamsStub::start().await.unwrap();
    let f = fleet(&teams).await;
    let hook = f.hook("teams:ops").await;
    teams.script("ops", [Answer::TooMany(1), Answer::ServerError]);
    let started = std::time::Instant::now();
    let id = f.send(&hook, "after a wait and a retry").await;
    f.wait_for(id, Step::Succeeded).await;
    assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After: 1 was waited");
    assert_eq!(teams.cards("ops").len(), 1);
    assert_eq!(teams.requests("ops"), 3);
    let trail = f.store.audit.history(id).await.unwrap();
    let deferred = trail.iter().filter(|e| e.step == Step::Deferred).count();
    let retried = trail.iter().filter(|e| e.step == Step::RetryScheduled).count();
    assert_eq!((deferred, retried), (1, 1), "a 429 is a wait, a 500 a failed attempt: {trail:#?}");
    validate(&teams.cards("ops"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_is_dead_lettered_with_the_answer_and_a_replay_after_the_fix_is_delivered() {
    let teams = TeamsStub::start().await.unwrap();
    let f = fleet(&teams).await;
    let hook = f.hook("teams:ops").await;
    teams.always("ops", Some(Answer::BadRequest("Bad payload: Summary or Text is required".into())));
    let id = f.send(&hook, "refused").await;
    let steps = f.wait_for(id, Step::DeadLettered).await;
    assert!(!steps.contains(&Step::RetryScheduled), "a 400 is not retried: {steps:?}");
    let dead = f.store.dead_letters.list(&DeadLetterFilter::default()).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].reason.contains("400") && dead[0].reason.contains("Summary or Text is required"),
        "{}",
        dead[0].reason
    );

    teams.always("ops", None);
    f.replay_until_done(&dead, id).await;
    assert_eq!(teams.cards("ops").len(), 1);
    assert!(words(&teams.cards("ops")[0]).contains("refused"));
    validate(&teams.cards("ops"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_to_slack_and_teams_posts_to_each_once_whichever_fails() {
    let teams = TeamsStub::start().await.unwrap();
    let f = fleet(&teams).await;
    let hook = f.hook("#both+teams:ops").await;

    // Teams refuses: the event is dead-lettered after its Slack post; the replay after the fix posts to Teams only.
    teams.always("ops", Some(Answer::BadRequest("Bad payload".into())));
    let first = f.send(&hook, "first").await;
    f.wait_for(first, Step::DeadLettered).await;
    assert_eq!(f.slack.history("#both").len(), 1);
    teams.always("ops", None);
    let dead = f.store.dead_letters.list(&DeadLetterFilter::default()).await.unwrap();
    let options = ReplayOptions { by: "alice".into(), dry_run: false, rate: None };
    assert!(replay(&f.store, &dead, &options, |_, _| {}).await[0].error.is_none());
    cards(&teams, 1).await;
    f.settled().await;
    assert_eq!(f.slack.history("#both").len(), 1, "the replay did not post to Slack again");
    assert_eq!(teams.cards("ops").len(), 1);

    // An alarm to `#both+teams:ops` posts its card first; Slack then fails once, and the retry opens the alarm's
    // thread without a second card.
    f.slack.script("#both", [Reply::Http(500)]);
    let alarm = alarm_message("disk-full", "ALARM");
    let mut sns = sns("ALARM: disk-full", &alarm);
    sns["TopicArn"] = "arn:aws:sns:us-east-1:123456789012:both".into();
    let key = std::fs::read_to_string(testdata("sns/test-signing-key.pem")).unwrap();
    eventfleet_verify::sign::sns(&mut sns, &key).unwrap();
    let second = f.publish(&sns).await;
    let steps = f.wait_for(second, Step::Succeeded).await;
    f.settled().await;
    assert!(steps.contains(&Step::RetryScheduled), "Slack failed once: {steps:?}");
    assert_eq!(f.slack.history("#both").len(), 2, "{steps:?}");
    let cards = teams.cards("ops");
    assert_eq!(cards.len(), 2, "one card for the alarm, not one per attempt: {cards:#?}");
    assert!(words(&cards[1]).contains("disk-full"));
    let trail = f.store.audit.history(second).await.unwrap();
    let sent: Vec<&str> =
        trail.iter().filter(|e| e.step == Step::Sent).filter_map(|e| e.detail["target"].as_str()).collect();
    assert_eq!(sent, ["teams:ops"], "the card's sent line, once");
    validate(&cards);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_to_slack_and_teams_reaches_each_once_while_teams_fails_for_a_while() {
    let teams = TeamsStub::start().await.unwrap();
    let config = WorkerConfig { max_attempts: 30, max_receive_count: 100, ..with_digests(&teams) };
    let f = Fleet::start_with(config).await;
    let hook = f.hook("#both+teams:ops").await;
    // Slack's pace folds most posts into its digest; Teams fails until that digest is posted, and its failed
    // requests fill the webhook's window, so the cards of later posts fold into the Teams channel's digest too.
    teams.always("ops", Some(Answer::ServerError));
    let sends = (0..8).map(|i| {
        let (f, hook) = (&f, &hook);
        async move { f.send(hook, &format!("alert {i}")).await }
    });
    let ids = futures_util::future::join_all(sends).await;
    eventually(Duration::from_secs(20), || async {
        for id in &ids {
            if f.steps(*id).await.contains(&Step::Digested) {
                return Some(());
            }
        }
        None
    })
    .await
    .expect("Slack's digest was posted");
    teams.always("ops", None);
    for id in &ids {
        f.wait_for(*id, Step::Succeeded).await;
    }
    f.settled().await;
    let cards: String = teams.cards("ops").iter().map(words).collect();
    let slack: String = f.slack.posted().iter().map(|m| m.to_string()).collect();
    for id in &ids {
        assert_eq!(cards.matches(&id.to_string()).count(), 1, "{id}: one card or digest line in Teams");
        assert_eq!(slack.matches(&id.to_string()).count(), 1, "{id}: one post or digest line in Slack");
    }
    validate(&teams.cards("ops"));
}

#[test]
fn cards_of_a_300_kb_payload_and_of_every_alarm_variant_stay_under_28_kb_and_validate() {
    use eventfleet_workers::handlers::alarm::messages::notification;
    use eventfleet_workers::teams::card;
    let mut cards = Vec::new();
    let big = json!({"title": "Huge", "blob": "x".repeat(300 * 1024)}).to_string();
    cards.push(card::message(
        &eventfleet_workers::handlers::hook::render("teams:ops", "hook", big.as_bytes()),
        "event `e`",
    ));
    let text = "y\n".repeat(150 * 1024);
    cards.push(card::message(
        &eventfleet_workers::handlers::hook::render("teams:ops", "hook", text.as_bytes()),
        "event `e`",
    ));
    let alarm = |trigger: Value, extra: Value| {
        let mut alarm = json!({
            "AlarmName": "n".repeat(300), "AlarmDescription": "d".repeat(2_000), "AWSAccountId": "123456789012",
            "NewStateValue": "ALARM", "OldStateValue": "OK", "NewStateReason": "r".repeat(5_000),
            "StateChangeTime": "2026-12-01T10:00:00.000+0000", "Region": "EU (Ireland)",
            "AlarmArn": "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:n", "Trigger": trigger,
        });
        alarm.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        alarm
    };
    let metric = json!({"MetricName": "CPUUtilization", "Namespace": "AWS/EC2", "Statistic": "AVERAGE", "Period": 300,
        "ComparisonOperator": "GreaterThanThreshold", "Threshold": 80.0,
        "Dimensions": (0..30).map(|i| json!({"name": format!("d{i}"), "value": "v".repeat(200)})).collect::<Vec<_>>()});
    let math = json!({"ComparisonOperator": "GreaterThanThreshold", "Threshold": 1.0,
        "Metrics": (0..20).map(|i| json!({"Id": format!("m{i}"), "Expression": format!("SUM(METRICS()) * {}", "9".repeat(300))})).collect::<Vec<_>>()});
    let anomaly = json!({"ThresholdMetricId": "ad1", "ComparisonOperator": "GreaterThanUpperThreshold", "Metrics": [
        {"Id": "m1", "MetricStat": {"Metric": {"Namespace": "AWS/ELB", "MetricName": "Latency", "Dimensions": []}, "Period": 60, "Stat": "p99"}},
        {"Id": "ad1", "Expression": "ANOMALY_DETECTION_BAND(m1, 2)"}]});
    let children = (0..200)
        .map(|i| json!({"Arn": format!("arn:aws:cloudwatch:us-east-1:1:alarm:child-{i}-{}", "x".repeat(300)), "State": {"Value": "ALARM"}}))
        .collect::<Vec<_>>();
    let composite = json!({"AlarmRule": format!("ALARM({})", "c".repeat(8_000)), "TriggeringChildren": children});
    // The real alarm of the shared fixtures.
    let fixture: Value =
        serde_json::from_slice(&std::fs::read(testdata("fixtures/cloudwatch/alarm-single-metric.json")).unwrap())
            .unwrap();
    for alarm in [
        alarm(metric, json!({})),
        alarm(math, json!({})),
        alarm(anomaly, json!({})),
        alarm(json!({}), composite),
        fixture,
    ] {
        cards.push(card::message(&notification("teams:ops", &alarm), "event `e`"));
    }
    for message in &cards {
        assert!(card::size(message) <= 28 * 1024, "{} bytes", card::size(message));
    }
    let contents: Vec<Value> = cards.iter().map(|m| m["attachments"][0]["content"].clone()).collect();
    validate(&contents);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_to_a_teams_channel_becomes_a_few_cards_with_every_post_once() {
    let teams = TeamsStub::start().await.unwrap();
    let f = Fleet::start_with(with_digests(&teams)).await;
    let hook = f.hook("teams:ops").await;
    let sends = (0..40).map(|i| {
        let (f, hook) = (&f, &hook);
        async move { f.send(hook, &format!("alert {i}")).await }
    });
    let ids = futures_util::future::join_all(sends).await;
    for id in &ids {
        f.wait_for(*id, Step::Succeeded).await;
    }
    // Every post is in a card, alone or in a digest, once.
    let cards = eventually(Duration::from_secs(20), || async {
        let cards = teams.cards("ops");
        let text: String = cards.iter().map(words).collect();
        ids.iter().all(|id| text.contains(&id.to_string())).then_some(cards)
    })
    .await
    .unwrap_or_else(|| panic!("every post in a card: {:#?}", teams.cards("ops")));
    f.settled().await;
    assert_eq!(teams.cards("ops").len(), cards.len(), "nothing posted after every post was in");
    let text: String = cards.iter().map(words).collect();
    for id in &ids {
        assert_eq!(text.matches(&id.to_string()).count(), 1, "{id} is in one card, once");
    }
    assert!(cards.len() <= 8, "40 posts in at most 8 cards, not 40: {}", cards.len());
    assert!(cards.iter().any(|c| words(c).contains("came faster than this channel takes them")), "a digest card");
    assert_eq!(teams.limited(), 0, "never past Teams' limit");
    for id in &ids {
        let trail = f.store.audit.history(*id).await.unwrap();
        assert!(trail.iter().any(|e| e.step == Step::Sent), "{id}: the trail says where its post went");
    }
    validate(&cards);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_can_send_a_kinds_messages_to_teams_instead_of_the_hooks_channel() {
    let teams = TeamsStub::start().await.unwrap();
    let text = "[[route]]\nname = \"to-teams\"\nmatch = { kind = \"hook.*\" }\nchannel = \"teams:ops\"\n";
    let routes = eventfleet_workers::destinations::routes::parse(
        std::path::Path::new("routes.toml"),
        text,
        &|_| None,
        worker_config().handler_timeout,
    )
    .unwrap();
    let f = Fleet::start_routed(config(&teams), routes).await;
    let hook = f.hook("#hook-channel").await;
    let id = f.send(&hook, "routed to Teams").await;
    f.wait_for(id, Step::Succeeded).await;
    let cards = cards(&teams, 1).await;
    assert!(words(&cards[0]).contains("routed to Teams"), "{cards:?}");
    assert!(f.slack.history("#hook-channel").is_empty(), "the route's channel replaced the hook's");
    validate(&cards);
}
