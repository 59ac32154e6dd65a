//! Failure and abuse: a failing or locked store answers 503 on every sender route and marks nothing ENQUEUED;
//! failed requests use up a budget, then 429 with Retry-After (verified ones never count); metrics move; arbitrary input never panics or 5xxs (but 503).

use std::time::Duration;

use eventfleet_ingress::{IngressConfig, RateLimits};
use eventfleet_schema::{IdempotencyKey, Status, Timestamp};
use eventfleet_storage::{EmbeddedOptions, embedded::Durability};
use eventfleet_verify::sign::{hmac_sha256_hex, slack as sign};
use proptest::prelude::*;
use reqwest::StatusCode;

use crate::sns::signed_alarm;
use crate::{SLACK_SECRET, Server, error_code, test_config};

/// `(path, content type, body, extra headers)`.
type Probe = (String, &'static str, String, Vec<(&'static str, String)>);

/// One request per sender route, each valid.
fn one_of_each(hook: &str, tag: &str) -> Vec<Probe> {
    let ts = Timestamp::now_system().as_secs();
    let slack = |body: String| {
        let sig = sign(SLACK_SECRET.as_bytes(), ts, body.as_bytes());
        (body, vec![("x-slack-request-timestamp", ts.to_string()), ("x-slack-signature", sig)])
    };
    let event = serde_json::json!({"type":"event_callback","team_id":"T1","event_id":format!("Ev{tag}"),"event":{"channel":"C1"}});
    let (event_body, event_headers) = slack(event.to_string());
    let (command_body, command_headers) = slack(format!("team_id=T1&channel_id=C1&command=%2Fx&trigger_id=tr{tag}"));
    let (interaction_body, interaction_headers) =
        slack(format!("payload=%7B%22team%22%3A%7B%22id%22%3A%22T1%22%7D%2C%22trigger_id%22%3A%22it{tag}%22%7D"));
    vec![
        ("/slack/events".into(), "application/json", event_body, event_headers),
        ("/slack/commands".into(), "application/x-www-form-urlencoded", command_body, command_headers),
        ("/slack/interactions".into(), "application/x-www-form-urlencoded", interaction_body, interaction_headers),
        (format!("/hooks/{hook}"), "application/json", format!(r#"{{"text":"{tag}"}}"#), vec![]),
        ("/sns".into(), "text/plain", signed_alarm(&format!("m{tag}"), "ALARM").to_string(), vec![]),
    ]
}

async fn send(s: &Server, path: &str, ct: &str, body: &str, headers: &[(&'static str, String)]) -> reqwest::Response {
    let mut req = s.http.post(s.url(path)).header("content-type", ct).body(body.to_owned());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn a_failing_enqueue_is_503_leaves_nothing_behind_and_the_retry_succeeds() {
    let s = Server::start().await;
    let hook = s.hook(None).await;
    // A real failure inside SQLite: every insert into the queue aborts.
    let side = rusqlite::Connection::open(s.embedded.path()).unwrap();
    side.execute_batch(
        "CREATE TRIGGER fail_enqueue BEFORE INSERT ON messages BEGIN SELECT RAISE(ABORT, 'disk on fire'); END;",
    )
    .unwrap();
    for (path, ct, body, headers) in one_of_each(hook.id.as_str(), "fail") {
        let resp = send(&s, &path, ct, &body, &headers).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert!(resp.headers().contains_key("retry-after"), "{path}");
        assert_eq!(error_code(resp).await, "unavailable");
    }
    let key = IdempotencyKey::slack("T1", "Evfail");
    // The accept is one unit of work: its failure leaves no claim, no line, no message.
    assert!(s.store.idempotency.get(&key).await.unwrap().is_none(), "nothing of the failed accept stands");
    side.execute_batch("DROP TRIGGER fail_enqueue").unwrap();
    for (path, ct, body, headers) in one_of_each(hook.id.as_str(), "fail") {
        let resp = send(&s, &path, ct, &body, &headers).await;
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        assert!(!resp.headers().contains_key("x-eventfleet-duplicate"), "the retry enqueues: {path}");
    }
    assert_eq!(s.drain().await.len(), 5, "each event once");
    assert_eq!(s.store.idempotency.get(&key).await.unwrap().unwrap().status, Status::Enqueued);
}

#[tokio::test]
async fn a_locked_store_is_503_on_every_route_within_the_budget() {
    let config = IngressConfig { backend_budget: Duration::from_millis(300), ..test_config() };
    // The store waits about 5 s for the lock; the 300 ms budget answers first.
    let s = Server::start_with_store(config, EmbeddedOptions::default()).await;
    let hook = s.hook(None).await;
    let side = rusqlite::Connection::open(s.embedded.path()).unwrap();
    side.execute_batch("BEGIN EXCLUSIVE").unwrap();
    for (path, ct, body, headers) in one_of_each(hook.id.as_str(), "locked") {
        let resp = send(&s, &path, ct, &body, &headers).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(error_code(resp).await, "unavailable");
    }
    side.execute_batch("ROLLBACK").unwrap();
    let key = IdempotencyKey::slack("T1", "Evlocked");
    let record = s.store.idempotency.get(&key).await.unwrap();
    assert!(record.is_none_or(|r| r.status == Status::Enqueued), "an accept commits whole or not at all");
}

#[tokio::test]
async fn failures_use_up_a_budget_then_429_with_retry_after_and_verified_requests_never_count() {
    let s = Server::start_with(IngressConfig {
        rate_limits: RateLimits {
            global_per_second: 0,
            per_ip: 3,
            per_ip_window: Duration::from_secs(300),
            per_hook_per_second: 0,
            trust_forwarded_for: false,
        },
        ..test_config()
    })
    .await;
    let hook = s.hook(Some("hook-secret")).await;
    let url = s.url(&format!("/hooks/{}", hook.id));
    let signed = |body: &str| format!("sha256={}", hmac_sha256_hex(b"hook-secret", &[body.as_bytes()]));
    let post = |body: String, signature: String| {
        s.http.post(&url).header("content-type", "application/json").header("x-hub-signature-256", signature).body(body)
    };
    // Far more verified deliveries than the budget: none counts.
    for i in 0..20 {
        let body = format!(r#"{{"n":{i}}}"#);
        let resp = post(body.clone(), signed(&body)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "verified delivery {i}");
    }
    // Three failures (a bad signature, an unknown hook) fit the budget; the fourth spends it.
    for _ in 0..2 {
        assert_eq!(post("{}".into(), "sha256=00".into()).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(s.http.post(s.url("/hooks/hk_nope")).body("{}").send().await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(post("{}".into(), "sha256=00".into()).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    // From now on the client is refused before any work, a valid delivery too, until its budget refills.
    let body = r#"{"n":"late"}"#.to_owned();
    let resp = post(body.clone(), signed(&body)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    assert_eq!(error_code(resp).await, "rate_limited");
    assert_eq!(s.http.get(s.url("/health")).send().await.unwrap().status(), StatusCode::OK, "probes are not limited");
    assert_eq!(s.depth().await, 20, "only the verified deliveries were enqueued");

    // A hook's budget: failures to one hook beyond it refuse the failing client; its verified deliveries still go.
    let s = Server::start_with(IngressConfig {
        rate_limits: RateLimits { per_hook_per_second: 1, ..RateLimits::off() },
        ..test_config()
    })
    .await;
    let hook = s.hook(None).await;
    let url = s.url(&format!("/hooks/{}", hook.id));
    for i in 0..5 {
        let resp = s.http.post(&url).body(format!("burst {i}")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
    }
    let statuses: Vec<u16> = futures_lite(&s, &s.url("/hooks/hk_gone")).await;
    assert_eq!(statuses[0], 404);
    assert!(statuses.contains(&429), "{statuses:?}");
}

/// GitHub does not retry a failed delivery: a burst of 300 valid deliveries to one hook, 16 at a time, with the
/// default limits, is accepted whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_github_deliveries_to_one_hook_is_accepted_whole_with_default_limits() {
    let s = Server::start_with(IngressConfig { rate_limits: RateLimits::default(), ..test_config() }).await;
    let hook = s.hook(Some("gh-secret")).await;
    let url = s.url(&format!("/hooks/{}", hook.id));
    let sends = (0..300).map(|i| {
        let body = format!(r#"{{"action":"completed","workflow_run":{{"id":{i}}}}}"#);
        let signature = format!("sha256={}", hmac_sha256_hex(b"gh-secret", &[body.as_bytes()]));
        s.http
            .post(&url)
            .header("content-type", "application/json")
            .header("x-github-event", "workflow_run")
            .header("x-github-delivery", format!("burst-{i}"))
            .header("x-hub-signature-256", signature)
            .body(body)
            .send()
    });
    use futures_util::StreamExt;
    let statuses: Vec<u16> = futures_util::stream::iter(sends)
        .buffer_unordered(16)
        .map(|r| r.map(|r| r.status().as_u16()).unwrap_or(0))
        .collect()
        .await;
    let accepted = statuses.iter().filter(|s| **s == 202).count();
    assert_eq!(accepted, 300, "{:?}", statuses.iter().filter(|s| **s != 202).collect::<Vec<_>>());
    assert_eq!(s.depth().await, 300);
}

async fn futures_lite(s: &Server, url: &str) -> Vec<u16> {
    let mut out = Vec::new();
    for i in 0..5 {
        out.push(s.http.post(url).body(format!("burst {i}")).send().await.unwrap().status().as_u16());
    }
    out
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_events_by_source() {
    let s = Server::start().await;
    let hook = s.hook(None).await;
    for body in ["a", "a", "b"] {
        s.http.post(s.url(&format!("/hooks/{}", hook.id))).body(body).send().await.unwrap();
    }
    s.http.post(s.url("/hooks/hk_missing")).body("x").send().await.unwrap();
    let text = s.http.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains(r#"eventfleet_ingress_requests_total{route="/hooks/{hook_id}",status="202"} 3"#), "{text}");
    assert!(text.contains(r#"eventfleet_ingress_requests_total{route="/hooks/{hook_id}",status="404"} 1"#), "{text}");
    assert!(text.contains(r#"eventfleet_ingress_accepted_events_total{source="hook"} 2"#), "{text}");
    assert!(text.contains(r#"eventfleet_ingress_duplicates_total{source="hook"} 1"#), "{text}");
    assert!(text.contains("eventfleet_ingress_enqueue_latency_seconds_count 2"), "{text}");
}

const ROUTES: &[&str] = &["/slack/events", "/slack/commands", "/slack/interactions", "/sns", "/hooks/HOOK", "/hooks/x"];
const TYPES: &[&str] = &[
    "application/json",
    "application/x-www-form-urlencoded",
    "text/plain",
    "",
    "application/json; charset=utf-8",
    "multipart/form-data",
];
const HEADERS: &[&str] = &[
    "x-slack-request-timestamp",
    "x-slack-signature",
    "x-hub-signature-256",
    "x-github-event",
    "x-github-delivery",
    "idempotency-key",
    "x-amz-sns-message-type",
    "traceparent",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// Arbitrary bytes and headers on every route: no panic, and no 5xx but 503.
    #[test]
    fn arbitrary_requests_never_panic_or_fail_with_a_5xx(
        route in 0..ROUTES.len(),
        content_type in 0..TYPES.len(),
        headers in proptest::collection::vec((0..HEADERS.len(), "[ -~]{0,80}"), 0..5),
        body in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..2048),
            "[ -~]{0,512}".prop_map(String::into_bytes),
            Just(br#"{"type":"event_callback","team_id":"T","event_id":"E"}"#.to_vec()),
            Just(br#"{"Type":"Notification","SigningCertURL":"https://sns.us-east-1.amazonaws.com/x.pem"}"#.to_vec()),
        ],
    ) {
        FUZZ.with(|fuzz| {
            let (rt, app, hook) = fuzz;
            rt.block_on(async {
                use tower::ServiceExt;
                let path = ROUTES[route].replace("HOOK", hook);
                let mut req = axum::http::Request::post(path);
                if !TYPES[content_type].is_empty() {
                    req = req.header("content-type", TYPES[content_type]);
                }
                for (h, v) in &headers {
                    req = req.header(HEADERS[*h], v.as_str());
                }
                let req = req.body(axum::body::Body::from(body.clone())).unwrap();
                let resp = app.clone().oneshot(req).await.unwrap();
                let status = resp.status();
                prop_assert!(!status.is_server_error() || status == StatusCode::SERVICE_UNAVAILABLE, "{status}");
                Ok(())
            })
        })?;
    }
}

thread_local! {
    /// One router over one store for all cases (a store per case would spend the run opening files).
    static FUZZ: (tokio::runtime::Runtime, axum::Router, String) = {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (app, hook) = rt.block_on(async {
            let dir = tempfile::tempdir().unwrap().keep();
            let options = EmbeddedOptions { durability: Durability::Normal, ..EmbeddedOptions::default() };
            let store = eventfleet_storage::EmbeddedStore::open_dir(&dir, options).unwrap().into_store();
            let hook = eventfleet_schema::Webhook {
                id: eventfleet_schema::HookId::new(),
                name: "fuzz".into(),
                channel: "#fuzz".into(),
                kind: eventfleet_schema::HookKind::Info,
                active: true,
                secret: None,
                invocation_count: 0,
                filter: None,
                group_key: None,
                per_delivery: false,
                created_by: "fuzz".into(),
                created_at: Timestamp::now_system(),
            };
            store.webhooks.create(&hook).await.unwrap();
            (eventfleet_ingress::router(store, test_config()), hook.id.to_string())
        });
        (rt, app, hook)
    };
}
