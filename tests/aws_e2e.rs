//! End to end on the aws backend against moto server: `eventfleet ingress` and `eventfleet worker` as separate
//! processes, a signed Slack event, a hook payload and an SNS CloudWatch alarm each processed once, duplicates
//! not enqueued again, a failing event dead-lettered (with an ops-topic notice) and replayed, an SNS
//! subscription confirmed through the API; and the AWS requests per event, counted by the SDK interceptor.
//!
//! Needs `EVENTFLEET_TEST_AWS_ENDPOINT` (scripts/test starts moto and sets it).

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use eventfleet_stubs::slack::{Reply, SlackStub};
use eventfleet_verify::sign::slack as sign;
use serde_json::{Value, json};
use support::{eventfleet, terminate};

const SIGNING_SECRET: &str = "e2e-slack-signing-secret";

fn endpoint() -> String {
    std::env::var("EVENTFLEET_TEST_AWS_ENDPOINT")
        .expect("EVENTFLEET_TEST_AWS_ENDPOINT is not set: run the tests through scripts/test, which starts moto server")
}

fn testdata(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata").join(path)
}

/// Two processes on one fresh set of queues and tables, with a Slack stub.
struct Fleet {
    env: Vec<(String, String)>,
    data: tempfile::TempDir,
    ingress: Child,
    worker: Child,
    base: String,
    worker_metrics: String,
    stub: SlackStub,
    ops_topic: String,
    prefix: String,
    http: reqwest::Client,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.ingress.kill();
        let _ = self.worker.kill();
    }
}

/// Settings that change how the fleet batches its AWS requests: the requests test passes them through to its
/// processes when set.
const TUNING: [&str; 3] =
    ["EVENTFLEET_RECEIVE_WINDOW_MS", "EVENTFLEET_ENQUEUE_BATCHES_IN_FLIGHT", "EVENTFLEET_ENQUEUE_LINGER_MS"];

/// Starts a process and returns the first `http://` URL on a stdout line containing `marker`.
fn spawn(env: &[(String, String)], data: &Path, args: &[&str], marker: &'static str) -> (Child, String) {
    support::spawn_marked(env, data, args, marker)
}

fn run_json(env: &[(String, String)], data: &Path, args: &[&str]) -> Value {
    let out = eventfleet()
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run eventfleet");
    assert!(out.status.success(), "eventfleet {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?} printed no JSON: {e}"))
}

impl Fleet {
    async fn start(max_attempts: u32, cloudwatch_interval_s: u32, channel_pace_ms: u32) -> Fleet {
        Self::start_with(max_attempts, cloudwatch_interval_s, channel_pace_ms, &[], false).await
    }

    /// The same, leaving out the quick settings named in `defaults` (the worker then runs with the default), and
    /// with `tuning`, the [`TUNING`] settings of the test's environment.
    async fn start_with(
        max_attempts: u32,
        cloudwatch_interval_s: u32,
        channel_pace_ms: u32,
        defaults: &[&str],
        tuning: bool,
    ) -> Fleet {
        let stub = SlackStub::start().await.unwrap();
        let data = tempfile::tempdir().unwrap();
        let prefix = format!("e2e-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let mut env = support::aws_env(&endpoint(), &prefix);
        env.extend(
            [
                ("EVENTFLEET_MAX_ATTEMPTS", max_attempts.to_string().as_str()),
                ("EVENTFLEET_MAX_RECEIVE_COUNT", (2 * max_attempts).to_string().as_str()),
                ("EVENTFLEET_SLACK_SIGNING_SECRET", SIGNING_SECRET),
                ("EVENTFLEET_SLACK_BOT_TOKEN", "xoxb-e2e"),
                ("EVENTFLEET_SLACK_API_URL", stub.url.as_str()),
                ("EVENTFLEET_SNS_CERT_DIR", testdata("sns").to_str().unwrap()),
                ("EVENTFLEET_VISIBILITY_TIMEOUT_S", "5"),
                ("EVENTFLEET_HANDLER_TIMEOUT_S", "3"),
                ("EVENTFLEET_RECEIVE_WAIT_S", "1"),
                ("EVENTFLEET_DRAIN_TIMEOUT_S", "5"),
                ("EVENTFLEET_RETRY_BASE_DELAY_MS", "200"),
                ("EVENTFLEET_RETRY_MAX_DELAY_MS", "1000"),
                ("EVENTFLEET_RATE_LIMIT_GLOBAL_RPS", "0"),
                ("EVENTFLEET_RATE_LIMIT_PER_IP", "0"),
                ("EVENTFLEET_RATE_LIMIT_PER_HOOK_RPS", "0"),
                ("EVENTFLEET_CLOUDWATCH_INTERVAL_S", cloudwatch_interval_s.to_string().as_str()),
                ("EVENTFLEET_SLACK_CHANNEL_INTERVAL_MS", channel_pace_ms.to_string().as_str()),
                // moto answers one request at a time and slows as a queue grows: a generous budget keeps its pauses
                // from turning into 503s (which a sender would retry, blurring the count).
                ("EVENTFLEET_BACKEND_BUDGET_MS", "20000"),
            ]
            .into_iter()
            .filter(|(k, _)| !defaults.contains(k))
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        let created = run_json(&env, data.path(), &["tables", "create"]);
        let ops_topic = created["created"]["ops_topic_arn"].as_str().expect("ops topic ARN").to_owned();
        env.extend([
            ("EVENTFLEET_OPS_TOPIC_ARN".to_owned(), ops_topic.clone()),
            // The ops topic stands in for the alarm topic: it exists in the emulator, so it can be confirmed.
            ("EVENTFLEET_SNS_ALLOWED_TOPICS".to_owned(), ops_topic.clone()),
            ("EVENTFLEET_SNS_TOPIC_CHANNELS".to_owned(), format!("{ops_topic}=#alarms")),
        ]);
        // The batching settings a measurement may be taken with pass through from the test's environment (a child
        // inherits no `EVENTFLEET_` setting otherwise); the requests test's report names them.
        if tuning {
            env.extend(
                TUNING.iter().filter_map(|name| std::env::var(name).ok().map(|value| ((*name).to_owned(), value))),
            );
        }
        let (ingress, base) = spawn(&env, data.path(), &["ingress", "--listen", "127.0.0.1:0"], "listening on");
        let (worker, worker_metrics) = spawn(&env, data.path(), &["worker"], "worker started");
        Fleet {
            env,
            data,
            ingress,
            worker,
            base,
            worker_metrics,
            stub,
            ops_topic,
            prefix,
            http: reqwest::Client::new(),
        }
    }

    fn cli(&self, args: &[&str]) -> Value {
        run_json(&self.env, self.data.path(), args)
    }

    fn hook(&self, channel: &str) -> String {
        self.cli(&["hooks", "create", "--name", channel, "--channel", channel])["id"].as_str().unwrap().to_owned()
    }

    async fn post_hook(&self, hook: &str, body: &str, key: &str) -> (String, bool) {
        let resp = self
            .http
            .post(format!("{}/hooks/{hook}", self.base))
            .header("idempotency-key", key)
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        let body: Value = resp.json().await.unwrap();
        (body["event_id"].as_str().unwrap().to_owned(), body["duplicate"].as_bool().unwrap())
    }

    async fn post_slack_event(&self, event_id: &str) -> reqwest::Response {
        slack_event_request(&self.http, &self.base, event_id, "C1").send().await.unwrap()
    }

    async fn post_sns(&self, message: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/sns", self.base))
            .header("content-type", "text/plain; charset=UTF-8")
            .header("x-amz-sns-message-type", message["Type"].as_str().unwrap())
            .body(message.to_string())
            .send()
            .await
            .unwrap()
    }

    /// The event's audit steps, by name.
    fn steps(&self, id: &str) -> Vec<String> {
        let shown = self.cli(&["events", "show", id, "--json"]);
        shown["steps"].as_array().unwrap().iter().map(|e| e["step"].as_str().unwrap().to_owned()).collect()
    }

    fn status(&self, id: &str) -> String {
        self.cli(&["events", "show", id, "--json"])["idempotency"]["status"].as_str().unwrap_or_default().to_owned()
    }

    async fn wait(&self, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `eventfleet_aws_requests_total` of one process, by operation (summed over the resources named).
    async fn aws_requests(&self, metrics_url: &str) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for ((operation, _), n) in self.aws_requests_by_resource(metrics_url).await {
            *out.entry(operation).or_default() += n;
        }
        out
    }

    /// The same by operation and the resources each request named (`+`-joined names, empty for none).
    async fn aws_requests_by_resource(&self, metrics_url: &str) -> BTreeMap<(String, String), u64> {
        let text = self.http.get(metrics_url).send().await.unwrap().text().await.unwrap();
        let mut out = BTreeMap::new();
        for line in text.lines().filter(|l| l.starts_with("eventfleet_aws_requests_total{")) {
            let labels = &line[line.find('{').unwrap() + 1..line.find('}').unwrap()];
            let label = |name: &str| {
                labels.split(',').find_map(|kv| kv.strip_prefix(&format!("{name}=\""))).unwrap().trim_end_matches('"')
            };
            let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            let operation = format!("{}:{}", label("service"), label("operation"));
            *out.entry((operation, label("resource").to_owned())).or_default() += value as u64;
        }
        out
    }
}

/// The statements of a task role's policy: its own document (`data "aws_iam_policy_document" "<role>"` in the
/// iam module) and the `common` one every role's document starts from; each as its actions and its text (where
/// its resources are named).
fn iam_statements(role: &str) -> Vec<(std::collections::BTreeSet<String>, String)> {
    let hcl =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("infra/terraform/modules/iam/main.tf"))
            .expect("the iam module");
    let document = |name: &str| {
        let start = hcl.find(&format!("data \"aws_iam_policy_document\" \"{name}\" {{")).expect("the policy");
        let block = &hcl[start..];
        block[..block.find("\n}\n").expect("the end of the policy")].to_owned()
    };
    let own = document(role);
    assert!(own.contains("data.aws_iam_policy_document.common.json"), "the {role} policy starts from the common one");
    [own, document("common")]
        .iter()
        .flat_map(|block| block.split("statement {").skip(1).map(str::to_owned).collect::<Vec<_>>())
        .map(|statement| {
            let actions = statement
                .split('"')
                .skip(1)
                .step_by(2)
                .filter(|s| ["sqs:", "dynamodb:", "sns:", "cloudwatch:"].iter().any(|p| s.starts_with(p)))
                .map(str::to_owned)
                .collect();
            (actions, statement)
        })
        .collect()
}

/// How the iam module names a resource of the fleet (`<prefix>-idempotency` is `var.table_arns.idempotency`).
fn policy_resource(prefix: &str, action: &str, name: &str) -> &'static str {
    if name.is_empty() {
        return "\"*\"";
    }
    match name.strip_prefix(&format!("{prefix}-")).unwrap_or_else(|| panic!("{name} is not the fleet's")) {
        "idempotency" => "var.table_arns.idempotency",
        "audit" => "var.table_arns.audit",
        "retries" => "var.table_arns.retries",
        "webhooks" => "var.table_arns.webhooks",
        "alarm-threads" => "var.table_arns.alarm_threads",
        "event-log" => "var.table_arns.event_log",
        "events.fifo" => "var.queue_arn",
        "events-dlq.fifo" => "var.dead_letter_arn",
        // The ops topic stands in for the alarm topic here: confirmed as one of the topics the fleet takes in.
        "ops" if action == "sns:ConfirmSubscription" => "var.confirm_subscription_topic_arns",
        "ops" => "var.ops_topic_arn",
        other => panic!("no policy resource known for {other}"),
    }
}

/// The IAM action of an SDK request (`SQS:SendMessageBatch` needs `sqs:SendMessage`).
fn iam_action(operation: &str) -> String {
    // A transaction is authorised by the actions of its items: the fleet's only ones are hook count updates.
    if operation == "DynamoDB:TransactWriteItems" {
        return "dynamodb:UpdateItem".into();
    }
    let (service, name) = operation.split_once(':').expect("service:operation");
    let name = name.strip_suffix("Batch").filter(|_| service == "SQS").unwrap_or(name);
    format!("{}:{name}", service.to_lowercase())
}

/// A signed Slack `event_callback`.
fn slack_event_request(http: &reqwest::Client, base: &str, event_id: &str, channel: &str) -> reqwest::RequestBuilder {
    let body = json!({
        "type": "event_callback", "team_id": "T1", "api_app_id": "A1", "event_id": event_id,
        "event_time": 1_700_000_000, "event": {"type": "app_mention", "channel": channel, "text": "hi", "user": "U1"}
    })
    .to_string();
    let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    http.post(format!("{base}/slack/events"))
        .header("content-type", "application/json")
        .header("x-slack-request-timestamp", ts.to_string())
        .header("x-slack-signature", sign(SIGNING_SECRET.as_bytes(), ts, body.as_bytes()))
        .body(body)
}

fn signed_sns(mut message: Value) -> Value {
    message["SignatureVersion"] = "2".into();
    message["Signature"] = "".into();
    message["SigningCertURL"] =
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-eventfleet-test.pem".into();
    message["Timestamp"] = eventfleet_schema::Timestamp::now_system().to_string().into();
    let key = std::fs::read_to_string(testdata("sns/test-signing-key.pem")).unwrap();
    eventfleet_verify::sign::sns(&mut message, &key).unwrap();
    message
}

fn alarm(topic: &str, message_id: &str) -> Value {
    let alarm = std::fs::read_to_string(testdata("fixtures/cloudwatch/alarm-single-metric.json")).unwrap();
    signed_sns(json!({
        "Type": "Notification",
        "MessageId": message_id,
        "TopicArn": topic,
        "Subject": "ALARM: \"EXAMPLE\" in US East (N. Virginia)",
        "Message": alarm,
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_source_processed_once_duplicates_dropped_failures_dead_lettered_and_replayed() {
    // A quick channel pace, so that its compare-and-set on DynamoDB is in every post.
    let fleet = Fleet::start(3, 2, 100).await;

    // An SQS queue subscribed to the ops topic shows the dead-letter notices.
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .empty_test_environment()
        .test_credentials()
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint())
        .load()
        .await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let sns = aws_sdk_sns::Client::new(&sdk);
    let inbox = sqs.create_queue().queue_name(format!("ops-inbox-{}", uuid::Uuid::new_v4().simple())).send().await;
    let inbox_url = inbox.unwrap().queue_url.unwrap();
    let inbox_arn = sqs
        .get_queue_attributes()
        .queue_url(&inbox_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    sns.subscribe().topic_arn(&fleet.ops_topic).protocol("sqs").endpoint(&inbox_arn).send().await.unwrap();

    // A signed Slack event: 200, processed once; its retry by Slack is a duplicate.
    let resp = fleet.post_slack_event("Ev-e2e-1").await;
    assert_eq!(resp.status(), 200);
    let resp = fleet.post_slack_event("Ev-e2e-1").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers().get("x-eventfleet-duplicate").map(|v| v.to_str().unwrap()), Some("true"));

    // A hook payload and its resend.
    let hook = fleet.hook("#hooks");
    let (hook_event, dup) = fleet.post_hook(&hook, "disk almost full", "k-1").await;
    assert!(!dup);
    let (again, dup) = fleet.post_hook(&hook, "disk almost full", "k-1").await;
    assert!(dup);
    assert_eq!(again, hook_event);

    // A body under the ingress's limit whose envelope is over SQS's 256 KiB: 413, not a 503 the sender would
    // retry for ever.
    let big = "\"".repeat(200_000);
    let resp = fleet.http.post(format!("{}/hooks/{hook}", fleet.base)).body(big).send().await.unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "payload_too_large");

    // A CloudWatch alarm through SNS, and SNS's redelivery of it.
    let message = alarm(&fleet.ops_topic, "e2e-alarm-1");
    let resp = fleet.post_sns(&message).await;
    assert_eq!(resp.status(), 202);
    let alarm_event = resp.json::<Value>().await.unwrap()["event_id"].as_str().unwrap().to_owned();
    let resp = fleet.post_sns(&message).await;
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.json::<Value>().await.unwrap()["duplicate"], true);

    fleet.wait("the hook post", || fleet.stub.requests("#hooks") >= 1).await;
    fleet.wait("the alarm post", || fleet.stub.requests("#alarms") >= 1).await;
    let slack_event = fleet.cli(&["events", "show", "slack:T1:Ev-e2e-1", "--json"]);
    let slack_event = slack_event["event_id"].as_str().expect("the Slack event is recorded").to_owned();
    for id in [&hook_event, &alarm_event, &slack_event] {
        // The `succeeded` line is written after DONE: wait for the line itself.
        fleet.wait("the succeeded line", || fleet.steps(id).contains(&"succeeded".to_owned())).await;
        assert_eq!(fleet.status(id), "DONE");
        let steps = fleet.steps(id);
        assert_eq!(steps.iter().filter(|s| *s == "succeeded").count(), 1, "{id}: {steps:?}");
        assert_eq!(steps.iter().filter(|s| *s == "enqueued").count(), 1, "{id}: enqueued once: {steps:?}");
        assert!(steps.contains(&"duplicate".to_owned()), "{id}: the resend is audited: {steps:?}");
    }
    assert_eq!(fleet.stub.requests("#hooks"), 1, "one post for the hook payload");
    assert_eq!(fleet.stub.requests("#alarms"), 1, "one post for the alarm");
    let posted = fleet.stub.posted();
    let alarm_post = posted.iter().find(|p| p["channel"] == "#alarms").unwrap();
    assert!(alarm_post["blocks"].to_string().contains("EXAMPLE"), "{alarm_post}");

    // A SubscriptionConfirmation is confirmed through the ConfirmSubscription API.
    let confirmation = signed_sns(json!({
        "Type": "SubscriptionConfirmation",
        "MessageId": "e2e-confirm-1",
        "TopicArn": fleet.ops_topic,
        "Token": "e2e-token",
        "Message": "You have chosen to subscribe to the topic.",
        "SubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=e2e-token",
    }));
    let resp = fleet.post_sns(&confirmation).await;
    assert_eq!(resp.status(), 202);
    let confirm_event = resp.json::<Value>().await.unwrap()["event_id"].as_str().unwrap().to_owned();
    fleet.wait("the subscription confirmed", || fleet.status(&confirm_event) == "DONE").await;
    assert!(fleet.steps(&confirm_event).contains(&"subscription_confirmed".to_owned()));

    // A failing event: channel_not_found is permanent, so it is dead-lettered at once, with an ops notice.
    fleet.stub.always("#broken", Reply::SlackError("channel_not_found"));
    let broken = fleet.hook("#broken");
    let (failing, _) = fleet.post_hook(&broken, "this one fails", "k-fail").await;
    // DEAD is recorded before the move to the DLQ: wait for the dead letter itself.
    let mut entry = None;
    fleet
        .wait("the failing event on the DLQ", || {
            let dead = fleet.cli(&["dlq", "list", "--json"]);
            entry = dead.as_array().unwrap().iter().find(|d| d["event_id"] == failing.as_str()).cloned();
            entry.is_some()
        })
        .await;
    let entry = entry.unwrap();
    assert_eq!(fleet.status(&failing), "DEAD");
    assert!(entry["reason"].as_str().unwrap().contains("channel_not_found"), "{entry}");
    let mut notices = Vec::new();
    for _ in 0..20 {
        let got = sqs.receive_message().queue_url(&inbox_url).wait_time_seconds(1).send().await.unwrap();
        notices.extend(got.messages.unwrap_or_default().into_iter().filter_map(|m| m.body));
        if notices.iter().any(|b| b.contains(&failing)) {
            break;
        }
    }
    assert!(notices.iter().any(|b| b.contains(&failing) && b.contains("channel_not_found")), "{notices:?}");

    // Fixed, then replayed by an operator: processed once.
    fleet.stub.recover("#broken");
    let dead_id = entry["id"].as_str().unwrap();
    let replayed = fleet.cli(&["dlq", "replay", dead_id, "--by", "alice", "--json"]);
    assert!(replayed.to_string().contains(dead_id), "{replayed}");
    fleet.wait("the replayed event DONE", || fleet.status(&failing) == "DONE").await;
    let steps = fleet.steps(&failing);
    assert!(steps.contains(&"dead_lettered".to_owned()) && steps.contains(&"replayed".to_owned()), "{steps:?}");
    assert_eq!(fleet.stub.posted().iter().filter(|p| p["channel"] == "#broken").count(), 1);
    let still_dead = fleet.cli(&["dlq", "list", "--json"]);
    assert!(!still_dead.to_string().contains(&failing), "{still_dead}");

    // The worker publishes its metrics to CloudWatch (every 2 s here): what it did shows under the fleet's
    // dimension.
    let cloudwatch = aws_sdk_cloudwatch::Client::new(&sdk);
    let sum = |name: &'static str| {
        let (cloudwatch, prefix) = (cloudwatch.clone(), fleet.prefix.clone());
        async move {
            let now = std::time::SystemTime::now();
            let out = cloudwatch
                .get_metric_statistics()
                .namespace("Eventfleet")
                .metric_name(name)
                .dimensions(aws_sdk_cloudwatch::types::Dimension::builder().name("Fleet").value(prefix).build())
                .start_time((now - Duration::from_secs(900)).into())
                .end_time((now + Duration::from_secs(60)).into())
                .period(60)
                .statistics(aws_sdk_cloudwatch::types::Statistic::Sum)
                .statistics(aws_sdk_cloudwatch::types::Statistic::SampleCount)
                .send()
                .await
                .unwrap();
            let points = out.datapoints.unwrap_or_default();
            let sum: f64 = points.iter().filter_map(|d| d.sum).sum();
            let samples: f64 = points.iter().filter_map(|d| d.sample_count).sum();
            (sum, samples)
        }
    };
    let mut processed = (0.0, 0.0);
    for _ in 0..30 {
        processed = sum("EventsProcessed").await;
        if processed.0 >= 5.0 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // The hook payload, the alarm, the Slack event, the confirmation and the replayed event.
    assert!(processed.0 >= 5.0, "EventsProcessed in CloudWatch: {processed:?}");
    assert!(sum("EventsDeadLettered").await.0 >= 1.0, "the dead letter is counted");
    assert!(sum("HandlerDuration").await.1 >= 5.0, "handler durations are published as statistic sets");
    assert!(sum("QueueDepth").await.1 >= 1.0, "queue depth is published");

    // Every AWS request each process made, on every table, queue and topic it named, is one a statement of its
    // task role allows (moto does not enforce IAM).
    for (role, metrics) in [("ingress", format!("{}/metrics", fleet.base)), ("worker", fleet.worker_metrics.clone())] {
        let statements = iam_statements(role);
        let made = fleet.aws_requests_by_resource(&metrics).await;
        assert!(!made.is_empty(), "the {role} made AWS requests");
        for (operation, resources) in made.keys() {
            let action = iam_action(operation);
            for name in resources.split('+') {
                let resource = policy_resource(&fleet.prefix, &action, name);
                assert!(
                    statements.iter().any(|(actions, text)| actions.contains(&action) && text.contains(resource)),
                    "the {role} made {operation} on {name:?}, which no statement of its role allows ({action} on {resource})"
                );
            }
        }
    }

    let mut fleet = fleet;
    assert_eq!(terminate(&mut fleet.worker), Some(0));
    assert_eq!(terminate(&mut fleet.ingress), Some(0));
}

/// AWS API requests per event on the happy path, by process and operation, over a few hundred events of each
/// kind. Writes `target/aws-requests.json`; the figures are in docs/benchmarks.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_requests_per_event_on_the_happy_path() {
    const N: usize = 200;
    // CloudWatch publishing (once a minute, not per event) stays out of the count.
    // The default pace (one post a second, bursts of 3) and burst digests, against a stand-in enforcing Slack's
    // limit: a round's 200 hook payloads to one channel are a few posts and digests, as users get them.
    let channel_interval_ms = 1000;
    // The worker's defaults for everything that changes how often it asks AWS: the quick timeouts the other
    // tests use would add heartbeats (a 5 s visibility renews every 1.7 s) and empty polls.
    let defaults = [
        "EVENTFLEET_VISIBILITY_TIMEOUT_S",
        "EVENTFLEET_HANDLER_TIMEOUT_S",
        "EVENTFLEET_RECEIVE_WAIT_S",
        "EVENTFLEET_DRAIN_TIMEOUT_S",
        "EVENTFLEET_MAX_RECEIVE_COUNT",
        "EVENTFLEET_RETRY_BASE_DELAY_MS",
        "EVENTFLEET_RETRY_MAX_DELAY_MS",
    ];
    let fleet = Fleet::start_with(5, 3600, channel_interval_ms, &defaults, true).await;
    fleet.stub.enforce_limit(Duration::from_secs(1), 3);
    // Ten hooks and ten Slack channels: ten message groups, so the worker runs events side by side.
    let hooks: Vec<String> = (0..10).map(|_| fleet.hook("#load")).collect();
    let ingress_metrics = format!("{}/metrics", fleet.base);
    let mut report = serde_json::Map::new();
    report.insert(
        "settings".into(),
        json!({
            "EVENTFLEET_SLACK_CHANNEL_INTERVAL_MS": channel_interval_ms,
            "defaults": channel_interval_ms == 1000,
            "EVENTFLEET_SLACK_CHANNEL_BURST": 3,
            "EVENTFLEET_SLACK_DIGESTS": true,
            "worker settings at their defaults": defaults,
            // Passed through from the test's environment (`TUNING`): a figure taken with one set says so.
            "EVENTFLEET_RECEIVE_WINDOW_MS": std::env::var("EVENTFLEET_RECEIVE_WINDOW_MS").unwrap_or("default (100)".into()),
            "EVENTFLEET_ENQUEUE_BATCHES_IN_FLIGHT":
                std::env::var("EVENTFLEET_ENQUEUE_BATCHES_IN_FLIGHT").unwrap_or("default (4)".into()),
            "EVENTFLEET_ENQUEUE_LINGER_MS":
                std::env::var("EVENTFLEET_ENQUEUE_LINGER_MS").unwrap_or("default (50)".into()),
            "slack_stand_in": "enforces one post a second per channel, bursts of 3, 429 with Retry-After past it",
            "events_per_round": N,
            "hooks": 10,
            "channel": "#load",
        }),
    );
    // Batches form when requests overlap: the same traffic at two concurrencies shows how the count falls with load.
    for (round, (source, concurrency)) in
        [("slack", 8), ("hook", 8), ("slack", 32), ("hook", 32)].into_iter().enumerate()
    {
        let before_ingress = fleet.aws_requests(&ingress_metrics).await;
        let before_worker = fleet.aws_requests(&fleet.worker_metrics).await;
        let before_ingress_tables = fleet.aws_requests_by_resource(&ingress_metrics).await;
        let before_worker_tables = fleet.aws_requests_by_resource(&fleet.worker_metrics).await;
        let mut sends = tokio::task::JoinSet::new();
        let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency));
        for i in 0..N {
            let (fleet_base, http, gate) = (fleet.base.clone(), fleet.http.clone(), gate.clone());
            let hook = hooks[i % hooks.len()].clone();
            sends.spawn(async move {
                let _permit = gate.acquire().await.unwrap();
                match source {
                    "slack" => {
                        let resp = slack_event_request(
                            &http,
                            &fleet_base,
                            &format!("Ev-load-{round}-{i}"),
                            &format!("C{}", i % 10),
                        )
                        .send()
                        .await;
                        assert_eq!(resp.unwrap().status(), 200);
                    }
                    _ => {
                        let resp = http
                            .post(format!("{fleet_base}/hooks/{hook}"))
                            .header("idempotency-key", format!("load-{round}-{i}"))
                            .body(format!("payload r{round}n{i}z"))
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(resp.status(), 202);
                    }
                }
            });
        }
        while let Some(r) = sends.join_next().await {
            r.unwrap();
        }
        if source == "hook" {
            // Each payload once in the channel: as its own post or a line of a digest.
            let once = || {
                let posted: Vec<String> = fleet.stub.history("#load").iter().map(Value::to_string).collect();
                (0..N).all(|i| {
                    let marker = format!("r{round}n{i}z");
                    posted.iter().filter(|message| message.contains(&marker)).count() == 1
                })
            };
            fleet.wait("every hook payload posted once, alone or in a digest", once).await;
        }
        // Slack events have no side effect to count; wait for the queue to drain instead.
        let (mut idle, deadline) = (0, tokio::time::Instant::now() + Duration::from_secs(180));
        while idle < 3 {
            assert!(tokio::time::Instant::now() < deadline, "the queue never drained");
            let status = fleet.cli(&["status", "--json"]);
            let queue = &status["queue"];
            let waiting = queue["waiting"].as_u64().unwrap() + queue["in_flight"].as_u64().unwrap();
            idle = if waiting == 0 { idle + 1 } else { 0 };
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let diff = |after: BTreeMap<String, u64>, before: &BTreeMap<String, u64>| -> BTreeMap<String, f64> {
            after
                .into_iter()
                .map(|(k, v)| {
                    let d = v - before.get(&k).copied().unwrap_or(0);
                    (k, d as f64 / N as f64)
                })
                .filter(|(_, v)| *v > 0.0)
                .collect()
        };
        let ingress = diff(fleet.aws_requests(&ingress_metrics).await, &before_ingress);
        let worker = diff(fleet.aws_requests(&fleet.worker_metrics).await, &before_worker);
        // The same by table or queue: which of the fleet's items the requests go to.
        let by_table = |after: BTreeMap<(String, String), u64>, before: &BTreeMap<(String, String), u64>| {
            let short = |resource: &str| resource.replace(&format!("{}-", fleet.prefix), "");
            after
                .into_iter()
                .map(|((op, resource), v)| {
                    let d = v - before.get(&(op.clone(), resource.clone())).copied().unwrap_or(0);
                    (format!("{op} {}", short(&resource)).trim_end().to_owned(), d as f64 / N as f64)
                })
                .filter(|(_, v)| *v > 0.0)
                .collect::<BTreeMap<String, f64>>()
        };
        let ingress_tables = by_table(fleet.aws_requests_by_resource(&ingress_metrics).await, &before_ingress_tables);
        let worker_tables =
            by_table(fleet.aws_requests_by_resource(&fleet.worker_metrics).await, &before_worker_tables);
        let total: f64 = ingress.values().chain(worker.values()).sum();
        eprintln!(
            "{source} x{concurrency}: {total:.2} AWS requests per event\n  ingress {ingress:?}\n  worker  {worker:?}\n  \
             by table: ingress {ingress_tables:?}\n    worker {worker_tables:?}"
        );
        assert!(ingress.contains_key("SQS:SendMessageBatch"), "{ingress:?}");
        assert!(worker.contains_key("SQS:ReceiveMessage"), "{worker:?}");
        assert!(total > 1.0, "at least the claim and the receive: {total}");
        report.insert(
            format!("{source}, {concurrency} concurrent senders"),
            json!({
                "events": N,
                "per_event": total,
                "ingress": ingress,
                "worker": worker,
                "by_table": { "ingress": ingress_tables, "worker": worker_tables },
            }),
        );
    }
    // Peak resident memory of each process over the four rounds (reported, not asserted: see docs/benchmarks.md).
    for (name, child) in [("ingress", &fleet.ingress), ("worker", &fleet.worker)] {
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
        eprintln!("{name} peak RSS: {kib:?} KiB");
        report.insert(format!("{name} peak RSS (KiB)"), json!(kib));
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/aws-requests.json");
    std::fs::write(&out, serde_json::to_string_pretty(&report).unwrap()).unwrap();
}

/// A team's service for the replay test: records each request's path and `webhook-id`, answers 200.
async fn start_recorder() -> (String, std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>) {
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = got.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri, headers: axum::http::HeaderMap| {
        let seen = seen.clone();
        async move {
            let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            seen.lock().unwrap().push((uri.path().to_owned(), id));
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

/// The event log on the aws backend, through the binary: 50 hook payloads in 5 groups are found by kind and
/// time; a dry run reports them and changes nothing; one is replayed to a route added since (the worker
/// restarted with it), which receives it once with its `webhook-id`; replaying another twice posts nothing twice;
/// all 50 replayed at `--rate 5` take about 10 s and arrive in each group's order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_events_are_searched_and_replayed_on_the_aws_backend() {
    let mut fleet = Fleet::start(5, 3600, 0).await;
    let hooks: Vec<String> = (0..5).map(|i| fleet.hook(&format!("#ops{i}"))).collect();
    let mut sent: Vec<(usize, String)> = Vec::new();
    for i in 0..10 {
        for (h, hook) in hooks.iter().enumerate() {
            let key = format!("replay-{h}-{i}-{}", fleet.prefix);
            let (id, _) = fleet.post_hook(hook, &json!({ "text": format!("payload {i}") }).to_string(), &key).await;
            sent.push((h, id));
        }
    }
    let list = |fleet: &Fleet, extra: &[&str]| {
        let mut args = vec!["events", "list", "--kind", "hook.*", "--since", "10m", "--limit", "100", "--json"];
        args.extend_from_slice(extra);
        fleet.cli(&args)
    };
    fleet
        .wait("every payload done", || {
            list(&fleet, &["--outcome", "succeeded"])["events"].as_array().is_some_and(|e| e.len() == 50)
        })
        .await;
    let posted = |fleet: &Fleet| (0..5).map(|i| fleet.stub.history(&format!("#ops{i}")).len()).sum::<usize>();
    assert_eq!(posted(&fleet), 50);
    let listed: Vec<String> = (list(&fleet, &[])["events"].as_array().unwrap().iter())
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect();
    let mut expected: Vec<String> = sent.iter().map(|(_, id)| id.clone()).collect();
    expected.sort();
    assert_eq!(listed, expected, "every payload, oldest first");
    assert!(fleet.cli(&["events", "list", "--kind", "github.*", "--json"])["events"].as_array().unwrap().is_empty());

    // Twice to every handler without post-again: the message is found, not posted again.
    let second = &sent[1].1;
    for round in 1..=2 {
        let out = fleet.cli(&["events", "replay", second, "--reason", "oops", "--json"]);
        assert_eq!(out["replayed"], 1, "{out}");
        fleet
            .wait("the replay done", || fleet.steps(second).iter().filter(|s| *s == "succeeded").count() == 1 + round)
            .await;
    }
    assert_eq!(posted(&fleet), 50, "a double replay posts nothing twice");

    // The team adds a route for its service; the worker restarts with it.
    let (url, got) = start_recorder().await;
    let routes = fleet.data.path().join("routes.toml");
    std::fs::write(
        &routes,
        format!("[[route]]\nname = \"backfill\"\nmatch = {{ source = \"hook\" }}\nurl = \"{url}/backfill\"\n"),
    )
    .unwrap();
    fleet.env.push(("EVENTFLEET_ROUTES_FILE".to_owned(), routes.to_str().unwrap().to_owned()));
    assert_eq!(terminate(&mut fleet.worker), Some(0));
    let (worker, worker_metrics) = spawn(&fleet.env, fleet.data.path(), &["worker"], "worker started");
    fleet.worker = worker;
    fleet.worker_metrics = worker_metrics;

    // Every payload to the new route, with `extra`.
    let backfill = |fleet: &Fleet, extra: &[&str]| {
        let mut args =
            vec!["events", "replay", "--kind", "hook.*", "--since", "10m", "--to-route", "backfill", "--json"];
        args.extend_from_slice(extra);
        fleet.cli(&args)
    };
    let dry = backfill(&fleet, &["--dry-run"]);
    assert_eq!(dry["preview"]["count"], 50, "{dry}");
    assert_eq!(dry["preview"]["groups"].as_object().unwrap().len(), 5);
    let first = &sent[0].1;
    let steps_before = fleet.steps(first);

    // One event to the new route: received once, with the event's id as its webhook-id.
    let one = fleet.cli(&["events", "replay", first, "--to-route", "backfill", "--reason", "backfill", "--json"]);
    assert_eq!(one["replayed"], 1, "{one}");
    fleet.wait("the backfill delivery", || got.lock().unwrap().len() == 1).await;
    fleet.wait("the replay done", || fleet.steps(first).iter().filter(|s| *s == "succeeded").count() == 2).await;
    assert_eq!(got.lock().unwrap()[0], ("/backfill".to_owned(), first.clone()));
    assert_eq!(fleet.steps(first)[..steps_before.len()], steps_before[..], "a dry run wrote nothing");
    assert_eq!(posted(&fleet), 50, "a replay to one route posts nothing to Slack");

    // All fifty to the route at five a second.
    let started = std::time::Instant::now();
    let all = backfill(&fleet, &["--rate", "5"]);
    let took = started.elapsed();
    assert_eq!(all["replayed"], 50, "{all}");
    assert!(took >= Duration::from_secs(9), "ten chunks a second apart: {took:?}");
    fleet.wait("fifty more deliveries", || got.lock().unwrap().len() == 51).await;
    let arrived: Vec<String> = got.lock().unwrap()[1..].iter().map(|(_, id)| id.clone()).collect();
    for h in 0..5 {
        let order: Vec<&String> = sent.iter().filter(|(g, _)| *g == h).map(|(_, id)| id).collect();
        let replayed: Vec<&String> = arrived.iter().filter(|id| order.contains(id)).collect();
        assert_eq!(replayed, order, "hook {h}'s payloads arrive in their first order");
    }
    assert_eq!(terminate(&mut fleet.worker), Some(0));
    assert_eq!(terminate(&mut fleet.ingress), Some(0));
}
