//! The operator console end to end, in a real browser: a fleet dead-letters two Slack events (the team's service
//! refuses them), `eventfleet console` serves them, and tests/console/e2e.mjs drives Debian's Chromium through
//! playwright-core: log in (a wrong token refused), find an event by its Slack `event_id`, preview and confirm its
//! replay until it has succeeded, search the event log and replay the event to one route, refuse a POST without its
//! CSRF token, purge through a confirmation, manage hooks.
//! The same on the aws backend against moto. scripts/test installs Chromium and playwright-core.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use eventfleet_verify::sign::slack as sign;
use serde_json::{Value, json};
use support::{eventfleet, poll, spawn_marked, terminate};

const SIGNING_SECRET: &str = "console-e2e-signing-secret";
const TOKEN: &str = "console-e2e-token-0123456789";
const OPERATOR: &str = "alice";

/// The team's service: refuses Slack events (HTTP 400, permanent: dead-lettered at once) until it is fixed.
#[derive(Clone, Default)]
struct Service {
    fixed: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
}

async fn start_service() -> (Service, String) {
    let service = Service::default();
    let state = service.clone();
    let app = axum::Router::new().route(
        "/events",
        axum::routing::post(move || {
            let s = state.clone();
            async move {
                if s.fixed.load(Ordering::SeqCst) {
                    s.accepted.fetch_add(1, Ordering::SeqCst);
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::BAD_REQUEST, "no such team channel")
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (service, url)
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A signed Slack `event_callback` as Slack sends it (its verification `token` included, which the console hides).
async fn send_slack_event(http: &reqwest::Client, base: &str, event_id: &str) {
    let body = json!({
        "token": "verification-token-not-shown", "type": "event_callback", "team_id": "T0CONSOLE",
        "api_app_id": "A0CONSOLE", "event_id": event_id, "event_time": 1_700_000_000,
        "event": {"type": "app_mention", "channel": "C0CONSOLE", "text": "<@U0BOT> deploy", "user": "U0ALICE"}
    })
    .to_string();
    let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let resp = http
        .post(format!("{base}/slack/events"))
        .header("content-type", "application/json")
        .header("x-slack-request-timestamp", ts.to_string())
        .header("x-slack-signature", sign(SIGNING_SECRET.as_bytes(), ts, body.as_bytes()))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap_or_default());
}

fn cli_json(env: &[(String, String)], data: &Path, args: &[&str]) -> Option<Value> {
    let out = eventfleet().args(args).arg("--json").arg("--data-dir").arg(data).envs(env.to_vec()).output().unwrap();
    out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// Peak resident memory of a process, in KiB.
fn peak_rss_kib(child: &Child) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
    }
}

/// Dead-letters two events through `fleet_args`, runs the browser test against a console, checks the trail.
async fn console_end_to_end(env: Vec<(String, String)>, fleet_args: &[&str], screenshots: Option<PathBuf>) {
    let node_modules = repo().join("tests/console/node_modules/playwright-core");
    assert!(
        node_modules.is_dir(),
        "playwright-core is not installed: run the tests through scripts/test (npm ci --prefix tests/console)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(Path::new(&chromium).exists(), "{chromium} is missing: scripts/test installs Debian's chromium");

    let (service, service_url) = start_service().await;
    let data = tempfile::tempdir().unwrap();
    let routes = data.path().join("routes.toml");
    std::fs::write(
        &routes,
        format!("[[route]]\nname = \"team-bot\"\nmatch = {{ source = \"slack\" }}\nurl = \"{service_url}/events\"\n"),
    )
    .unwrap();
    let mut env = env;
    env.extend(
        [
            ("EVENTFLEET_SLACK_SIGNING_SECRET", SIGNING_SECRET),
            ("EVENTFLEET_ROUTES_FILE", routes.to_str().unwrap()),
            ("EVENTFLEET_RECEIVE_WAIT_S", "1"),
            ("EVENTFLEET_DRAIN_TIMEOUT_S", "5"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let mut children = Children(Vec::new());
    let (fleet, base) = spawn_marked(&env, data.path(), fleet_args, "listening on");
    children.0.push(fleet);

    let scope = uuid::Uuid::new_v4().simple().to_string()[..10].to_uppercase();
    let (replay_id, purge_id) = (format!("Ev{scope}R"), format!("Ev{scope}P"));
    let http = reqwest::Client::new();
    send_slack_event(&http, &base, &replay_id).await;
    send_slack_event(&http, &base, &purge_id).await;
    poll(Duration::from_secs(60), || {
        let listed = cli_json(&env, data.path(), &["dlq", "list"])?;
        (listed.as_array()?.len() == 2).then_some(())
    })
    .expect("both Slack events dead-lettered");
    // `dlq show` names a dead letter by the sender's own id, as the console does.
    let shown = cli_json(&env, data.path(), &["dlq", "show", &replay_id]).expect("dlq show <Slack event_id>");
    assert!(shown["dead_letter"]["reason"].as_str().unwrap().contains("team-bot answered 400"), "{shown}");
    service.fixed.store(true, Ordering::SeqCst);

    let mut console_env = env.clone();
    console_env.push(("EVENTFLEET_CONSOLE_TOKEN".into(), TOKEN.into()));
    let (console, console_url) =
        spawn_marked(&console_env, data.path(), &["console", "--listen", "127.0.0.1:0"], "console listening on");
    children.0.push(console);

    let mut node = Command::new("node");
    node.arg(repo().join("tests/console/e2e.mjs"))
        .env("CONSOLE_URL", &console_url)
        .env("CONSOLE_TOKEN", TOKEN)
        .env("OPERATOR", OPERATOR)
        .env("REPLAY_EVENT_ID", &replay_id)
        .env("PURGE_EVENT_ID", &purge_id)
        .env("DEAD_REASON", "team-bot answered 400")
        .env("CHROMIUM", &chromium);
    if let Some(dir) = &screenshots {
        std::fs::create_dir_all(dir).unwrap();
        node.env("SCREENSHOTS", dir);
    }
    let out = tokio::task::spawn_blocking(move || node.output()).await.unwrap().expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the browser test failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    println!("{stdout}");

    // The trail, read through the CLI: replayed by the operator, then succeeded; the service got it again.
    let event = cli_json(&env, data.path(), &["events", "show", &replay_id]).expect("events show <Slack event_id>");
    let steps: Vec<(String, String)> = (event["steps"].as_array().unwrap().iter())
        .map(|s| (s["step"].as_str().unwrap().to_owned(), s["actor"].as_str().unwrap().to_owned()))
        .collect();
    let replayed = steps.iter().position(|(s, a)| s == "replayed" && a == "alice (console)");
    let succeeded = steps.iter().rposition(|(s, _)| s == "succeeded");
    assert!(replayed.is_some() && succeeded > replayed, "{steps:?}");
    assert_eq!(event["idempotency"]["status"], "DONE");
    // Once from the dead-letter replay, once from the event log's replay to its route.
    assert_eq!(service.accepted.load(Ordering::SeqCst), 2, "each replay reached the service once");
    let to_route = (event["steps"].as_array().unwrap().iter())
        .find(|s| s["step"] == "replayed" && s["detail"]["route"] == "team-bot")
        .expect("the event log's replay is on the trail");
    assert_eq!(to_route["detail"]["reason"], "backfill the team bot");
    assert_eq!(to_route["actor"], "alice (console)");
    let purged = cli_json(&env, data.path(), &["events", "show", &purge_id]).unwrap();
    assert!(
        purged["steps"].as_array().unwrap().iter().any(|s| s["step"] == "purged" && s["actor"] == "alice (console)")
    );
    assert!(cli_json(&env, data.path(), &["dlq", "list"]).unwrap().as_array().unwrap().is_empty());

    let console = &mut children.0[1];
    let peak = peak_rss_kib(console);
    println!("console peak RSS: {:.1} MiB", peak as f64 / 1024.0);
    assert!(peak < 50 * 1024, "the console's peak RSS was {peak} KiB, over 50 MiB");
    for child in &mut children.0 {
        assert_eq!(terminate(child), Some(0));
    }
    children.0.clear();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_browser_on_the_embedded_backend() {
    // This run renders the screenshots of docs/operations.md.
    let shots = repo().join("docs/console");
    console_end_to_end(Vec::new(), &["dev", "--listen", "127.0.0.1:0"], Some(shots)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_browser_on_the_aws_backend() {
    let endpoint = std::env::var("EVENTFLEET_TEST_AWS_ENDPOINT").expect(
        "EVENTFLEET_TEST_AWS_ENDPOINT is not set: run the tests through scripts/test, which starts moto server",
    );
    let prefix = format!("console-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let mut env = support::aws_env(&endpoint, &prefix);
    // moto answers one request at a time and other suites share it: a generous budget keeps its pauses from
    // turning the first delivery into a 503 (which Slack would retry; this test sends once).
    env.push(("EVENTFLEET_BACKEND_BUDGET_MS".to_owned(), "20000".to_owned()));
    let data = tempfile::tempdir().unwrap();
    let created =
        eventfleet().args(["tables", "create", "--data-dir"]).arg(data.path()).envs(env.clone()).output().unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    console_end_to_end(env, &["serve", "--listen", "127.0.0.1:0"], None).await;
}
