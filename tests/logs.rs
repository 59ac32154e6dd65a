//! Logs are JSON lines an operator can search (event id, key hash, source, kind, group, attempt) and never carry
//! a secret, a signature, a token or a full body, even at debug level.

mod support;

use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use eventfleet_schema::Timestamp;
use eventfleet_stubs::slack::SlackStub;
use eventfleet_verify::sign::hmac_sha256_hex;
use eventfleet_verify::sign::slack as sign;

const SLACK_SECRET: &str = "slack-signing-SECRET-6f1c";
const BOT_TOKEN: &str = "xoxb-BOT-TOKEN-SECRET-9a2e";
const BODY_MARKER: &str = "BODY-MARKER-do-not-log-41d7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_json_with_event_fields_and_free_of_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let stub = SlackStub::start().await.unwrap();
    let created: serde_json::Value = serde_json::from_str(&support::run_ok(
        data,
        &["hooks", "create", "--name", "logs", "--channel", "#logs", "--secret"],
    ))
    .unwrap();
    let hook_id = created["id"].as_str().unwrap().to_owned();
    let hook_secret = created["secret"].as_str().unwrap().to_owned();

    let mut dev = support::eventfleet()
        .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env("EVENTFLEET_LOG", "debug")
        .env("EVENTFLEET_LOG_FORMAT", "json")
        .env("EVENTFLEET_SLACK_SIGNING_SECRET", SLACK_SECRET)
        .env("EVENTFLEET_SLACK_BOT_TOKEN", BOT_TOKEN)
        .env("EVENTFLEET_SLACK_API_URL", &stub.url)
        .env("EVENTFLEET_RECEIVE_WAIT_S", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = dev.stdout.take().unwrap();
    let base = tokio::task::spawn_blocking(move || {
        let mut seen = String::new();
        let mut buf = [0u8; 256];
        loop {
            let n = stdout.read(&mut buf).unwrap();
            assert!(n > 0, "dev exited early");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            if let Some(line) = seen.lines().find(|l| l.contains("listening on")) {
                let base = line.split_whitespace().last().unwrap().to_owned();
                // Keep draining: the banner goes on after this line.
                std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
                return base;
            }
        }
    })
    .await
    .unwrap();
    let mut stderr = dev.stderr.take().unwrap();
    let log_reader = std::thread::spawn(move || {
        let mut all = String::new();
        let _ = stderr.read_to_string(&mut all);
        all
    });

    let http = reqwest::Client::new();
    let body = format!(r#"{{"text":"{BODY_MARKER}"}}"#);
    let hub = format!("sha256={}", hmac_sha256_hex(hook_secret.as_bytes(), &[body.as_bytes()]));
    let resp = http
        .post(format!("{base}/hooks/{hook_id}"))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", &hub)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let event_id = resp.json::<serde_json::Value>().await.unwrap()["event_id"].as_str().unwrap().to_owned();
    let slack_body = format!(
        r#"{{"type":"event_callback","team_id":"T1","event_id":"Ev1","event":{{"channel":"C1","text":"{BODY_MARKER}"}}}}"#
    );
    let ts = Timestamp::now_system().as_secs();
    let slack_sig = sign(SLACK_SECRET.as_bytes(), ts, slack_body.as_bytes());
    let resp = http
        .post(format!("{base}/slack/events"))
        .header("content-type", "application/json")
        .header("x-slack-request-timestamp", ts.to_string())
        .header("x-slack-signature", &slack_sig)
        .body(slack_body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // A rejected request too.
    let resp = http
        .post(format!("{base}/hooks/{hook_id}"))
        .header("x-hub-signature-256", "sha256=00")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    let done = support::poll(Duration::from_secs(20), || {
        let shown = support::run_ok(data, &["events", "show", &event_id, "--json"]);
        shown.contains("\"succeeded\"").then_some(())
    });
    assert!(done.is_some(), "the hook event was handled");
    assert_eq!(support::terminate(&mut dev), Some(0));
    let logs = log_reader.join().unwrap();

    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}")))
        .collect();
    assert!(lines.len() > 3, "{logs}");
    for secret in [SLACK_SECRET, BOT_TOKEN, hook_secret.as_str(), hub.as_str(), slack_sig.as_str(), BODY_MARKER] {
        assert!(!logs.contains(secret), "the logs contain {secret:?}");
    }
    let succeeded = lines
        .iter()
        .find(|l| l["message"] == "succeeded" && l["span"]["event_id"] == event_id.as_str())
        .unwrap_or_else(|| panic!("no `succeeded` line for {event_id}:\n{logs}"));
    for field in ["event_id", "key_hash", "source", "kind", "group", "attempt"] {
        assert!(!succeeded["span"][field].is_null(), "no {field} in {succeeded}");
    }
    assert_eq!(succeeded["span"]["source"], "hook");
    assert_eq!(succeeded["span"]["kind"], "hook.payload");
}
