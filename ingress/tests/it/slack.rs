//! Slack routes: signatures, the challenge, keys, duplicates under concurrency, and every rejection.

use eventfleet_ingress::IngressConfig;
use eventfleet_schema::{IdempotencyKey, Timestamp};
use eventfleet_verify::sign::slack as sign;
use reqwest::StatusCode;

use crate::{SLACK_SECRET, Server, error_code, test_config};

fn now_secs() -> i64 {
    Timestamp::now_system().as_secs()
}

/// A signed Slack request.
fn signed(s: &Server, path: &str, content_type: &str, body: &str) -> reqwest::RequestBuilder {
    let ts = now_secs();
    s.http
        .post(s.url(path))
        .header("content-type", content_type)
        .header("x-slack-request-timestamp", ts.to_string())
        .header("x-slack-signature", sign(SLACK_SECRET.as_bytes(), ts, body.as_bytes()))
        .body(body.to_owned())
}

fn event_callback(event_id: &str) -> String {
    serde_json::json!({
        "type": "event_callback", "team_id": "T123", "api_app_id": "A1", "event_id": event_id, "event_time": 1,
        "event": {"type": "app_mention", "channel": "C42", "user": "U1", "text": "<@U0> deploy", "ts": "1.2"}
    })
    .to_string()
}

#[tokio::test]
async fn url_verification_answers_the_challenge() {
    let s = Server::start().await;
    let body =
        r#"{"token":"x","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let resp = signed(&s, "/slack/events", "application/json", body).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let answer: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(answer["challenge"], "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P");
    assert_eq!(s.depth().await, 0);
}

#[tokio::test]
async fn event_callback_is_enqueued_keyed_and_grouped_by_channel() {
    let s = Server::start().await;
    let resp = signed(&s, "/slack/events", "application/json", &event_callback("Ev01")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let queued = s.drain().await;
    assert_eq!(queued.len(), 1);
    let env = &queued[0].envelope;
    assert_eq!(env.idempotency_key(), &IdempotencyKey::slack("T123", "Ev01"));
    assert_eq!(env.kind().as_str(), "slack.event");
    assert_eq!(env.message_group(), "slack:T123:C42");
    assert!(!env.as_v1().headers.contains_key("x-slack-signature"), "signatures are never stored");
}

#[tokio::test]
async fn fifty_concurrent_identical_deliveries_are_all_acknowledged_and_enqueued_once() {
    let s = Server::start().await;
    let body = event_callback("EvSTORM");
    let ts = now_secs();
    let signature = sign(SLACK_SECRET.as_bytes(), ts, body.as_bytes());
    let mut tasks = Vec::new();
    for retry in 0..50 {
        let req = s
            .http
            .post(s.url("/slack/events"))
            .header("content-type", "application/json")
            .header("x-slack-request-timestamp", ts.to_string())
            .header("x-slack-signature", &signature)
            .header("x-slack-retry-num", (retry % 3).to_string())
            .body(body.clone());
        tasks.push(tokio::spawn(async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let dup = resp.headers().contains_key("x-eventfleet-duplicate");
            let body: serde_json::Value = resp.json().await.unwrap();
            (body["event_id"].as_str().unwrap().to_owned(), dup)
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    assert!(answers.iter().all(|(id, _)| id == &answers[0].0), "one event id for all");
    // Requests that found the claim still PENDING enqueued it themselves (same dedup id): not duplicates, but
    // harmless. Whatever the interleaving, the queue holds the event once.
    assert_eq!(s.drain().await.len(), 1, "exactly one enqueue");
    let rec = s.store.idempotency.get(&IdempotencyKey::slack("T123", "EvSTORM")).await.unwrap().unwrap();
    assert_eq!(rec.duplicate_count, 49);
}

#[tokio::test]
async fn stale_timestamp_and_bad_signature_are_401_and_nothing_is_enqueued() {
    let s = Server::start().await;
    let body = event_callback("EvBAD");
    let stale = now_secs() - 301;
    let cases = [
        (stale.to_string(), sign(SLACK_SECRET.as_bytes(), stale, body.as_bytes())),
        (now_secs().to_string(), sign(b"wrong-secret", now_secs(), body.as_bytes())),
        (now_secs().to_string(), "v0=deadbeef".to_owned()),
        ("not-a-number".to_owned(), "v0=00".to_owned()),
    ];
    for (ts, sig) in cases {
        let resp = s
            .http
            .post(s.url("/slack/events"))
            .header("content-type", "application/json")
            .header("x-slack-request-timestamp", ts)
            .header("x-slack-signature", sig)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(error_code(resp).await, "unauthorized");
    }
    let unsigned = s.http.post(s.url("/slack/events")).body(body).send().await.unwrap();
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(s.depth().await, 0);
}

#[tokio::test]
async fn commands_and_interactions_are_keyed_by_trigger_id() {
    let s = Server::start().await;
    let command = "token=x&team_id=T9&channel_id=C7&user_id=U1&command=%2Fdeploy&text=api&trigger_id=13345224609.738474920.8088930838d88f008e0";
    let resp = signed(&s, "/slack/commands", "application/x-www-form-urlencoded", command).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let payload = serde_json::json!({
        "type": "block_actions", "team": {"id": "T9"}, "user": {"id": "U1"}, "trigger_id": "tr-2",
        "channel": {"id": "C7"}, "actions": [{"action_id": "ack"}]
    });
    let form = format!("payload={}", urlencode(&payload.to_string()));
    let resp = signed(&s, "/slack/interactions", "application/x-www-form-urlencoded", &form).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let queued = s.drain().await;
    let got: Vec<_> = queued
        .iter()
        .map(|m| (m.envelope.kind().as_str().to_owned(), m.envelope.idempotency_key().as_str().to_owned()))
        .collect();
    assert!(got.contains(&("slack.command".into(), "slack:T9:13345224609.738474920.8088930838d88f008e0".into())));
    assert!(got.contains(&("slack.interaction".into(), "slack:T9:tr-2".into())));
}

#[tokio::test]
async fn malformed_and_wrongly_typed_slack_bodies_are_rejected() {
    let s = Server::start().await;
    let cases = [
        ("/slack/events", "application/json", "{not json", StatusCode::BAD_REQUEST),
        ("/slack/events", "application/json", r#"{"type":"event_callback"}"#, StatusCode::BAD_REQUEST),
        ("/slack/events", "application/json", r#"{"no":"type"}"#, StatusCode::BAD_REQUEST),
        ("/slack/events", "text/plain", "{}", StatusCode::UNSUPPORTED_MEDIA_TYPE),
        ("/slack/commands", "application/json", "{}", StatusCode::UNSUPPORTED_MEDIA_TYPE),
        ("/slack/commands", "application/x-www-form-urlencoded", "team_id=T1", StatusCode::BAD_REQUEST),
        ("/slack/interactions", "application/x-www-form-urlencoded", "nopayload=1", StatusCode::BAD_REQUEST),
        ("/slack/interactions", "application/x-www-form-urlencoded", "payload=%7Bbroken", StatusCode::BAD_REQUEST),
        ("/slack/interactions", "application/x-www-form-urlencoded", "payload=%7B%7D", StatusCode::BAD_REQUEST),
    ];
    for (path, ct, body, status) in cases {
        let resp = signed(&s, path, ct, body).send().await.unwrap();
        assert_eq!(resp.status(), status, "{path} {ct} {body}");
        let code = error_code(resp).await;
        assert!(["bad_request", "unsupported_media_type"].contains(&code.as_str()));
    }
    assert_eq!(s.depth().await, 0);
}

#[tokio::test]
async fn slack_routes_are_404_without_a_signing_secret() {
    let s = Server::start_with(IngressConfig { slack_signing_secret: None, ..test_config() }).await;
    let resp = signed(&s, "/slack/events", "application/json", &event_callback("E")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
