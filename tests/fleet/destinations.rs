//! HTTP destinations against a local receiver that records what it got and answers as scripted: forwarded once,
//! signed the Standard Webhooks way (checked with the `standardwebhooks` package from PyPI, an implementation
//! that is not ours), retried on 5xx and timeouts, dead-lettered on a 4xx and replayed after the fix; a Slack
//! command's JSON answer posted to its `response_url`.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use eventfleet_schema::{EventId, Step};
use eventfleet_storage::DeadLetterFilter;
use eventfleet_verify::sign::slack as sign;
use eventfleet_workers::destinations::routes;
use serde_json::Value;

use crate::{Fleet, SLACK_SECRET, eventually, worker_config};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// How the receiver answers one request.
#[derive(Clone)]
enum Answer {
    Status(u16, &'static str),
    Json(&'static str),
    /// Answers 200 only after this long (past the route's timeout).
    Hang(Duration),
}

/// One request the receiver got.
#[derive(Clone, Debug)]
pub(crate) struct Got {
    pub(crate) path: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Got {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Answer>,
    always: Option<Answer>,
    got: Vec<Got>,
}

/// A team's service: records every request and answers as scripted (then `always`, then 200).
#[derive(Clone)]
pub(crate) struct Receiver {
    pub(crate) url: String,
    inner: Arc<Mutex<Inner>>,
}

impl Receiver {
    pub(crate) async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = axum::Router::new().fallback(receive).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, inner }
    }

    fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.inner.lock().unwrap().script.extend(answers);
    }

    fn always(&self, answer: Option<Answer>) {
        self.inner.lock().unwrap().always = answer;
    }

    pub(crate) fn got(&self, path: &str) -> Vec<Got> {
        self.inner.lock().unwrap().got.iter().filter(|g| g.path == path).cloned().collect()
    }
}

async fn receive(
    State(inner): State<Arc<Mutex<Inner>>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let answer = {
        let mut inner = inner.lock().unwrap();
        inner.got.push(Got {
            path: uri.path().to_owned(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                .collect(),
            body,
        });
        inner.script.pop_front().or_else(|| inner.always.clone())
    };
    match answer {
        None => StatusCode::OK.into_response(),
        Some(Answer::Status(code, body)) => (StatusCode::from_u16(code).unwrap(), body).into_response(),
        Some(Answer::Json(body)) => (StatusCode::OK, [("content-type", "application/json")], body).into_response(),
        Some(Answer::Hang(d)) => {
            tokio::time::sleep(d).await;
            StatusCode::OK.into_response()
        }
    }
}

/// Routes from TOML text, with `SECRET` in `BOT_SECRET`.
pub(crate) fn routes(text: &str) -> Vec<eventfleet_workers::destinations::Route> {
    let env = |name: &str| (name == "BOT_SECRET").then(|| SECRET.to_owned());
    routes::parse(Path::new("routes.toml"), text, &env, worker_config().handler_timeout).unwrap()
}

/// Checks every request with the `standardwebhooks` package (Python, from PyPI): the exit status says whether
/// all verified. scripts/test installs it into the test venv and names its interpreter in
/// `EVENTFLEET_TEST_PYTHON`.
fn verified_by_standardwebhooks(requests: &[Got]) -> Result<(), String> {
    let python = std::env::var("EVENTFLEET_TEST_PYTHON").unwrap_or_else(|_| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/moto/bin/python").to_string_lossy().into_owned()
    });
    assert!(Path::new(&python).exists(), "no Python at {python}: run the tests through scripts/test");
    let input: Vec<Value> = requests
        .iter()
        .map(|g| serde_json::json!({ "headers": g.headers.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(), "body": g.body }))
        .collect();
    let script = "import json, sys\n\
        from standardwebhooks.webhooks import Webhook\n\
        wh = Webhook(sys.argv[1])\n\
        for r in json.load(sys.stdin):\n    wh.verify(r['body'], r['headers'])\n\
        print('verified', flush=True)\n";
    let mut child = std::process::Command::new(python)
        .args(["-c", script, SECRET])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(serde_json::to_string(&input).unwrap().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("verified") {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

async fn github_delivery(f: &Fleet, hook: &eventfleet_schema::Webhook, delivery: &str) -> EventId {
    f.send_github(hook, "push", delivery, &serde_json::json!({"ref": "refs/heads/main", "after": "c0ffee"})).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_delivery_and_a_slack_command_are_forwarded_once_signed_and_the_answer_reaches_response_url() {
    let rx = Receiver::start().await;
    let f = Fleet::start_routed(
        worker_config(),
        routes(&format!(
            "[[route]]\nname = \"gh\"\nmatch = {{ kind = \"github.*\" }}\nurl = \"{0}/github\"\nsecret_env = \"BOT_SECRET\"\n\
             headers = {{ x-team = \"sre\" }}\n\
             [[route]]\nname = \"commands\"\nmatch = {{ kind = \"slack.command\", source = \"slack\" }}\nurl = \"{0}/commands\"\nsecret_env = \"BOT_SECRET\"\n",
            rx.url
        )),
    )
    .await;
    let hook = f.hook("#gh").await;
    let gh = github_delivery(&f, &hook, "d-forward-1").await;
    // A redelivery of the same delivery is a duplicate at the ingress: forwarded once all the same.
    assert_eq!(github_delivery(&f, &hook, "d-forward-1").await, gh);

    rx.script([Answer::Json(r#"{"response_type":"ephemeral","text":"pong"}"#)]);
    let ts = jiff::Timestamp::now().as_second();
    let form = format!(
        "team_id=T1&channel_id=C1&user_id=U1&command=%2Fping&text=now&trigger_id=tr-1&response_url={}",
        url_encode(&format!("{}/response", rx.url))
    );
    let resp = f
        .http
        .post(format!("{}/slack/commands", f.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", ts.to_string())
        .header("x-slack-signature", sign(SLACK_SECRET.as_bytes(), ts, form.as_bytes()))
        .body(form.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Slack wants an empty 200; the event is found by its key.
    let key = eventfleet_schema::IdempotencyKey::from_raw("slack:T1:tr-1");
    let command = eventually(Duration::from_secs(5), || async { f.store.idempotency.get(&key).await.unwrap() })
        .await
        .expect("the command was accepted")
        .event_id;

    f.wait_for(gh, Step::Succeeded).await;
    f.wait_for(command, Step::Succeeded).await;
    f.settled().await;
    let github = rx.got("/github");
    let commands = rx.got("/commands");
    assert_eq!(github.len(), 1, "forwarded once: {github:?}");
    assert_eq!(commands.len(), 1, "forwarded once: {commands:?}");
    verified_by_standardwebhooks(&[github[0].clone(), commands[0].clone()]).expect("standardwebhooks verifies both");
    // Tampering is caught by the same verifier: the check can fail.
    let mut forged = github[0].clone();
    forged.body = forged.body.replace("c0ffee", "decaf");
    assert!(verified_by_standardwebhooks(&[forged]).is_err(), "a changed body does not verify");

    assert_eq!(github[0].header("webhook-id"), Some(gh.to_string().as_str()));
    assert_eq!(github[0].header("x-team"), Some("sre"));
    assert_eq!(github[0].header("content-type"), Some("application/json"));
    let payload: Value = serde_json::from_str(&github[0].body).unwrap();
    assert_eq!(payload["kind"], "github.push");
    assert_eq!(payload["source"]["type"], "github");
    assert_eq!(payload["source"]["delivery"], "d-forward-1");
    assert_eq!(payload["body"]["data"], r#"{"ref":"refs/heads/main","after":"c0ffee"}"#);
    assert!(payload["received_at"].is_string());
    let command_payload: Value = serde_json::from_str(&commands[0].body).unwrap();
    assert_eq!(command_payload["kind"], "slack.command");
    assert_eq!(command_payload["source"]["team_id"], "T1");
    assert_eq!(command_payload["body"]["data"], form);

    // The receiver's answer went to the command's response_url; nothing went to Slack's chat.postMessage.
    let answered = rx.got("/response");
    assert_eq!(answered.len(), 1);
    assert_eq!(serde_json::from_str::<Value>(&answered[0].body).unwrap()["text"], "pong");
    assert!(f.slack.posted().is_empty(), "routed events skip the built-in handler");
    let record = f.store.idempotency.find_by_event(command).await.unwrap().unwrap();
    assert!(record.outcome.unwrap().contains("answer posted to response_url"));
    let metrics = f.metrics();
    assert!(
        metrics.contains("eventfleet_worker_destination_deliveries_total{destination=\"gh\",outcome=\"delivered\"} 1"),
        "{metrics}"
    );
}

fn url_encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_then_200_is_one_retry_and_one_success() {
    let rx = Receiver::start().await;
    let f = Fleet::start_routed(
        worker_config(),
        routes(&format!("[[route]]\nname = \"bot\"\nmatch = {{ source = \"hook\" }}\nurl = \"{}/events\"\n", rx.url)),
    )
    .await;
    rx.script([Answer::Status(500, "busy")]);
    let hook = f.hook("#x").await;
    let id = f.send(&hook, "retry me").await;
    let steps = f.wait_for(id, Step::Succeeded).await;
    assert_eq!(steps.iter().filter(|s| **s == Step::RetryScheduled).count(), 1, "{steps:?}");
    assert_eq!(steps.iter().filter(|s| **s == Step::Succeeded).count(), 1);
    let got = rx.got("/events");
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"), "one id for every attempt");
    let attempts: Vec<u64> =
        got.iter().map(|g| serde_json::from_str::<Value>(&g.body).unwrap()["attempt"].as_u64().unwrap()).collect();
    assert_eq!(attempts, [1, 2]);
    assert!(got[0].header("webhook-signature").is_none(), "a route without a secret does not sign");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_is_a_dead_letter_with_its_reason_and_replays_after_the_receiver_is_fixed() {
    let rx = Receiver::start().await;
    let f = Fleet::start_routed(
        worker_config(),
        routes(&format!("[[route]]\nname = \"bot\"\nmatch = {{ kind = \"hook.*\" }}\nurl = \"{}/events\"\n", rx.url)),
    )
    .await;
    rx.always(Some(Answer::Status(400, "unknown field: colour")));
    let hook = f.hook("#x").await;
    let id = f.send(&hook, "refused").await;
    let steps = f.wait_for(id, Step::DeadLettered).await;
    assert!(!steps.contains(&Step::RetryScheduled), "a 4xx is not retried: {steps:?}");
    assert_eq!(rx.got("/events").len(), 1);
    let dead = f.store.dead_letters.list(&DeadLetterFilter::default()).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].reason.contains("400") && dead[0].reason.contains("unknown field: colour"), "{}", dead[0].reason);

    rx.always(None);
    f.replay_until_done(&dead, id).await;
    assert_eq!(rx.got("/events").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_hangs_past_the_timeout_is_retried() {
    let rx = Receiver::start().await;
    let f = Fleet::start_routed(
        worker_config(),
        routes(&format!(
            "[[route]]\nname = \"slow\"\nmatch = {{ kind = \"*\" }}\nurl = \"{}/events\"\ntimeout_ms = 300\n",
            rx.url
        )),
    )
    .await;
    rx.script([Answer::Hang(Duration::from_secs(3))]);
    let hook = f.hook("#x").await;
    let id = f.send(&hook, "slow").await;
    f.wait_for(id, Step::Succeeded).await;
    let retry = f.store.retries.get(id).await.unwrap().expect("a retry record");
    assert!(retry.last_error.contains("did not answer within 300 ms"), "{}", retry.last_error);
    assert_eq!(rx.got("/events").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn also_builtin_runs_both_and_unmatched_events_keep_the_builtin_handler() {
    let rx = Receiver::start().await;
    let f = Fleet::start_routed(
        worker_config(),
        routes(&format!(
            "[[route]]\nname = \"copy\"\nmatch = {{ kind = \"hook.payload\" }}\nurl = \"{}/events\"\nalso_builtin = true\n",
            rx.url
        )),
    )
    .await;
    let hook = f.hook("#both").await;
    let id = f.send(&hook, "to both").await;
    f.wait_for(id, Step::Succeeded).await;
    assert_eq!(rx.got("/events").len(), 1);
    assert_eq!(f.slack.posted().iter().filter(|p| p["channel"] == "#both").count(), 1);

    // A GitHub delivery matches no route: the built-in handler posts it, nothing is forwarded.
    let gh = github_delivery(&f, &hook, "d-unrouted").await;
    f.wait_for(gh, Step::Succeeded).await;
    assert_eq!(rx.got("/events").len(), 1);
    assert_eq!(f.slack.posted().iter().filter(|p| p["channel"] == "#both").count(), 2);
}
