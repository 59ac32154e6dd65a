//! `POST /hooks/{id}`: acceptance, duplicates, keys, and every rejection.

use eventfleet_ingress::IngressConfig;
use eventfleet_schema::{EventId, IdempotencyKey, Status, Step};
use eventfleet_verify::sign::hmac_sha256_hex;
use reqwest::StatusCode;

use crate::{Server, error_code};

#[tokio::test]
async fn accepted_hook_payload_is_enqueued_marked_and_audited() {
    let s = Server::start().await;
    let hook = s.hook(None).await;
    let resp = s
        .http
        .post(s.url(&format!("/hooks/{}", hook.id)))
        .header("content-type", "application/json")
        .body(r#"{"text":"disk full"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert!(resp.headers().get("x-eventfleet-duplicate").is_none());
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["duplicate"], false);
    let event_id = EventId::parse(body["event_id"].as_str().unwrap()).unwrap();

    let queued = s.drain().await;
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].envelope.event_id(), event_id);
    assert_eq!(queued[0].envelope.kind().as_str(), "hook.payload");
    assert_eq!(queued[0].envelope.as_v1().body.as_text(), Some(r#"{"text":"disk full"}"#));
    let record = s.store.idempotency.find_by_event(event_id).await.unwrap().unwrap();
    assert_eq!(record.status, Status::Enqueued);
    let steps: Vec<_> = s.store.audit.history(event_id).await.unwrap().iter().map(|e| e.step).collect();
    assert_eq!(steps, [Step::Received, Step::Enqueued]);
    assert_eq!(s.store.webhooks.get(&hook.id).await.unwrap().unwrap().invocation_count, 1);
}

#[tokio::test]
async fn resent_payload_is_acknowledged_as_duplicate_and_enqueued_once() {
    let s = Server::start().await;
    let hook = s.hook(None).await;
    let url = s.url(&format!("/hooks/{}", hook.id));
    let mut ids = Vec::new();
    for _ in 0..3 {
        let resp = s.http.post(&url).body("same body").header("content-type", "text/plain").send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        let dup = resp.headers().get("x-eventfleet-duplicate").map(|v| v.to_str().unwrap().to_owned());
        let body: serde_json::Value = resp.json().await.unwrap();
        ids.push((body["event_id"].as_str().unwrap().to_owned(), body["duplicate"].as_bool().unwrap(), dup));
    }
    assert!(!ids[0].1, "the first delivery is not a duplicate");
    assert!(ids[1..].iter().all(|(id, dup, header)| id == &ids[0].0 && *dup && header.as_deref() == Some("true")));
    assert_eq!(s.drain().await.len(), 1);
    let event_id = EventId::parse(&ids[0].0).unwrap();
    let steps: Vec<_> = s.store.audit.history(event_id).await.unwrap().iter().map(|e| e.step).collect();
    assert_eq!(steps, [Step::Received, Step::Enqueued, Step::Duplicate, Step::Duplicate]);
}

#[tokio::test]
async fn idempotency_key_header_and_github_delivery_key_the_event() {
    let s = Server::start().await;
    let hook = s.hook(None).await;
    let url = s.url(&format!("/hooks/{}", hook.id));
    // Different bodies, same Idempotency-Key: one event.
    for body in ["a", "b"] {
        let resp = s.http.post(&url).header("idempotency-key", "k-1").body(body).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
    }
    // A GitHub delivery and its manual redelivery (same X-GitHub-Delivery): one event of kind github.push.
    for _ in 0..2 {
        let resp = s
            .http
            .post(&url)
            .header("content-type", "application/json")
            .header("x-github-event", "push")
            .header("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
            .body(r#"{"ref":"refs/heads/main"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
    }
    let queued = s.drain().await;
    let keys: Vec<_> = queued.iter().map(|m| m.envelope.idempotency_key().as_str().to_owned()).collect();
    assert_eq!(
        keys,
        [
            IdempotencyKey::hook(&hook.id, "k-1").as_str().to_owned(),
            IdempotencyKey::github(&hook.id, "72d3162e-cc78-11e3-81ab-4c9367dc0958").as_str().to_owned()
        ]
    );
    assert_eq!(queued[1].envelope.kind().as_str(), "github.push");
}

/// A hook's GitHub deliveries are ordered per repository (a message group each, JSON or form-encoded alike), so
/// one busy repository does not hold up another; deliveries without a repository, and other payloads, keep the
/// hook's own group.
#[tokio::test]
async fn github_deliveries_are_grouped_by_repository() {
    let s = Server::start().await;
    let hook = s.hook(None).await;
    let url = s.url(&format!("/hooks/{}", hook.id));
    let long = format!("octo-org/{}", "r".repeat(120));
    let bodies = [
        ("d-1", "application/json", r#"{"repository":{"full_name":"octo-org/api"}}"#.to_owned()),
        ("d-2", "application/json", r#"{"repository":{"full_name":"octo-org/web"}}"#.to_owned()),
        (
            "d-3",
            "application/x-www-form-urlencoded",
            format!(
                "payload={}",
                form_urlencoded::byte_serialize(br#"{"repository":{"full_name":"octo-org/api"}}"#).collect::<String>()
            ),
        ),
        ("d-4", "application/json", r#"{"organization":{"login":"octo-org"}}"#.to_owned()),
        ("d-5", "application/json", format!(r#"{{"repository":{{"full_name":"{long}"}}}}"#)),
    ];
    for (delivery, content_type, body) in bodies {
        let resp = (s.http.post(&url))
            .header("content-type", content_type)
            .header("x-github-event", "push")
            .header("x-github-delivery", delivery)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
    }
    let generic = s.http.post(&url).body("plain").send().await.unwrap();
    assert_eq!(generic.status(), StatusCode::ACCEPTED);
    let mut groups: Vec<String> = s.drain().await.iter().map(|m| m.envelope.message_group().to_owned()).collect();
    groups.sort();
    let api = format!("github:{}:octo-org/api", hook.id);
    let web = format!("github:{}:octo-org/web", hook.id);
    let own = format!("hook:{}", hook.id);
    assert_eq!(groups.iter().filter(|g| **g == api).count(), 2, "{groups:?}");
    assert_eq!(groups.iter().filter(|g| **g == web).count(), 1, "{groups:?}");
    assert_eq!(groups.iter().filter(|g| **g == own).count(), 2, "no repository, and a plain payload: {groups:?}");
    let hashed = groups.iter().find(|g| g.starts_with("github:") && *g != &api && *g != &web).expect("the long one");
    assert!(hashed.len() <= 128 && !hashed.contains("rrrr"), "{hashed}");
}

#[tokio::test]
async fn unknown_or_disabled_hook_is_404_json() {
    let s = Server::start().await;
    let resp = s.http.post(s.url("/hooks/hk_nope")).body("{}").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(resp).await, "not_found");
    let hook = s.hook(None).await;
    s.store.webhooks.set_active(&hook.id, false).await.unwrap();
    let resp = s.http.post(s.url(&format!("/hooks/{}", hook.id))).body("{}").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = s.http.get(s.url("/no/such/route")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(resp).await, "not_found");
    assert_eq!(s.depth().await, 0);
}

#[tokio::test]
async fn hook_secret_requires_a_valid_hub_signature() {
    let s = Server::start().await;
    let hook = s.hook(Some("hook-secret")).await;
    let url = s.url(&format!("/hooks/{}", hook.id));
    let body = r#"{"action":"opened"}"#;
    let good = format!("sha256={}", hmac_sha256_hex(b"hook-secret", &[body.as_bytes()]));
    let bad = format!("sha256={}", hmac_sha256_hex(b"other", &[body.as_bytes()]));
    for signature in [None, Some(bad.as_str()), Some("sha256=nothex"), Some("md5=abc")] {
        let mut req = s.http.post(&url).header("content-type", "application/json").body(body);
        if let Some(sig) = signature {
            req = req.header("x-hub-signature-256", sig);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{signature:?}");
        assert_eq!(error_code(resp).await, "unauthorized");
    }
    assert_eq!(s.depth().await, 0, "nothing unverified is enqueued");
    // The signature is checked before the body is parsed: a malformed unsigned body is 401, not 400.
    let resp = s.http.post(&url).header("content-type", "application/json").body("{broken").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = s
        .http
        .post(&url)
        .header("content-type", "application/json")
        .header("x-hub-signature-256", good)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn oversize_is_413_malformed_json_is_400_wrong_type_is_415() {
    let s = Server::start_with(IngressConfig { body_limit: 1024, ..IngressConfig::default() }).await;
    let hook = s.hook(None).await;
    let url = s.url(&format!("/hooks/{}", hook.id));
    let resp = s.http.post(&url).body("x".repeat(2048)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(resp).await, "payload_too_large");
    // A chunked body with no Content-Length is cut off at the limit too.
    let path = format!("/hooks/{}", hook.id);
    let chunk = "x".repeat(700);
    let raw = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n\
         2bc\r\n{chunk}\r\n2bc\r\n{chunk}\r\n0\r\n\r\n"
    );
    assert!(raw_request(&s.base, raw.as_bytes()).await.starts_with("HTTP/1.1 413"));

    let resp = s.http.post(&url).header("content-type", "application/json").body("{not json").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(resp).await, "bad_request");
    let resp = s.http.post(&url).header("content-type", "image/png").body("x").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(error_code(resp).await, "unsupported_media_type");
    let resp = s.http.post(&url).header("idempotency-key", "a\u{7f}b").body("x").send().await;
    // A header with a control character cannot even be sent by reqwest; an empty one can.
    if let Ok(resp) = resp {
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    }
    let resp = s.http.post(&url).header("idempotency-key", " ").body("x").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = s
        .http
        .post(&url)
        .header("x-github-event", "push; rm -rf")
        .header("x-github-delivery", "d")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(s.depth().await, 0);
}

#[tokio::test]
async fn pending_claim_left_by_a_crash_of_an_earlier_build_is_enqueued_by_the_retry() {
    let s = Server::start().await;
    let hook = s.hook(None).await;
    let body = "crashed between claim and enqueue";
    // An earlier build accepted in three commits and died after the first: the claim is durable, nothing was
    // enqueued or acknowledged. (This build accepts in one commit, so only an old file holds such a row.)
    let key = IdempotencyKey::hook_body(&hook.id, body.as_bytes());
    let original = EventId::new();
    let now = s.store.clock.now().as_millis();
    let conn = rusqlite::Connection::open(s.embedded.path()).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    conn.execute(
        "INSERT INTO idempotency (sender, key, status, event_id, first_seen, last_seen, duplicate_count, expires_at)
         VALUES (?5, ?1, 'PENDING', ?2, ?3, ?3, 0, ?4)",
        rusqlite::params![key.as_str(), original.to_string(), now, now + 3_600_000, key.sender_id()],
    )
    .unwrap();
    drop(conn);
    let resp = s.http.post(s.url(&format!("/hooks/{}", hook.id))).body(body).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let answer: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(answer["event_id"], original.to_string(), "the retry finishes the original event");
    assert_eq!(answer["duplicate"], false);
    let queued = s.drain().await;
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].envelope.event_id(), original);
    assert_eq!(s.store.idempotency.get(&key).await.unwrap().unwrap().status, Status::Enqueued);
    // The next retry is a plain duplicate.
    let resp = s.http.post(s.url(&format!("/hooks/{}", hook.id))).body(body).send().await.unwrap();
    assert_eq!(resp.headers()["x-eventfleet-duplicate"], "true");
    assert_eq!(s.depth().await, 0, "the duplicate was not enqueued again");
}

#[tokio::test]
async fn health_ready_and_version_answer() {
    let s = Server::start().await;
    let health: serde_json::Value = s.http.get(s.url("/health")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    let ready = s.http.get(s.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let version: serde_json::Value = s.http.get(s.url("/version")).send().await.unwrap().json().await.unwrap();
    assert_eq!(version["backend"], "embedded");
    assert_eq!(version["version"], env!("CARGO_PKG_VERSION"));
    assert!(version["git_sha"].as_str().is_some_and(|s| !s.is_empty()));
}

/// Sends raw HTTP/1.1 bytes and returns the whole answer as text.
async fn raw_request(base: &str, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// A hook with a group key orders its JSON payloads by the value at that pointer: one group per value, and the
/// hook's own group for payloads without it (or not JSON).
#[tokio::test]
async fn a_group_key_orders_payloads_by_their_value() {
    let s = Server::start().await;
    let hook = s.hook(None).await;
    s.store.webhooks.set_group_key(&hook.id, Some("/service")).await.unwrap();
    let url = s.url(&format!("/hooks/{}", hook.id));
    for body in [
        r#"{"service":"api","n":1}"#,
        r#"{"service":"web","n":2}"#,
        r#"{"service":"api","n":3}"#,
        r#"{"service":7}"#,
        r#"{"other":true}"#,
        "not json",
    ] {
        let resp = s.http.post(&url).header("content-type", "text/plain").body(body).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
    }
    let groups: Vec<String> = s.drain().await.iter().map(|m| m.envelope.message_group().to_owned()).collect();
    let count = |g: String| groups.iter().filter(|x| **x == g).count();
    assert_eq!(count(format!("hook:{}:api", hook.id)), 2, "{groups:?}");
    assert_eq!(count(format!("hook:{}:web", hook.id)), 1, "{groups:?}");
    assert_eq!(count(format!("hook:{}:7", hook.id)), 1, "{groups:?}");
    assert_eq!(count(format!("hook:{}", hook.id)), 2, "without the field, or not JSON: {groups:?}");
}
