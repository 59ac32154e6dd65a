//! Who gets into the console, over plain HTTP (the browser test, tests/console.rs, covers the token login): it
//! refuses to start beyond loopback without a way to know the operator; behind the ALB it takes the operator from
//! the ALB's headers and refuses a request without them; every POST needs its CSRF token; bad form values are
//! refused with 400, not acted on.

mod support;

use std::process::Stdio;

use base64::Engine;
use support::{eventfleet, spawn_marked, terminate};

#[test]
fn the_console_will_not_listen_beyond_loopback_without_access_control() {
    let data = tempfile::tempdir().unwrap();
    let out = eventfleet()
        .args(["console", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(data.path())
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("EVENTFLEET_CONSOLE_TOKEN") && stderr.contains("beyond loopback"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"), "it served nothing");

    let short = eventfleet()
        .args(["console", "--data-dir"])
        .arg(data.path())
        .env("EVENTFLEET_CONSOLE_TOKEN", "short")
        .output()
        .unwrap();
    assert!(!short.status.success());
    let stderr = String::from_utf8_lossy(&short.stderr);
    assert!(stderr.contains("EVENTFLEET_CONSOLE_TOKEN") && stderr.contains("16 characters"), "{stderr}");
    assert!(!stderr.contains("short"), "the token is not echoed: {stderr}");
}

fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap()[name.len() + 1..].to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_the_alb_the_operator_is_the_oidc_identity_and_posts_need_their_csrf_token() {
    let data = tempfile::tempdir().unwrap();
    assert!(eventfleet().args(["tables", "create", "--data-dir"]).arg(data.path()).output().unwrap().status.success());
    let env = vec![("EVENTFLEET_CONSOLE_TRUST_ALB_OIDC".to_owned(), "true".to_owned())];
    let (mut console, base) =
        spawn_marked(&env, data.path(), &["console", "--listen", "0.0.0.0:0"], "console listening");
    let base = base.replace("0.0.0.0", "127.0.0.1");
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();

    assert_eq!(http.get(format!("{base}/health")).send().await.unwrap().status(), 200);
    let anonymous = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401, "no ALB identity headers: refused");
    assert!(anonymous.text().await.unwrap().contains("ALB"));

    // What the ALB adds after authenticate-oidc: the claims (a JWT; its payload read) and the subject.
    let claims =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"sub":"00u1","email":"dana@example.com"}"#);
    let jwt = format!("eyJhbGciOiJFUzI1NiJ9.{claims}.c2ln");
    let page = http
        .get(format!("{base}/hooks"))
        .header("x-amzn-oidc-data", &jwt)
        .header("x-amzn-oidc-identity", "00u1")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert!(page.headers()["content-security-policy"].to_str().unwrap().contains("script-src 'self'"));
    let csrf = set_cookie(&page, "ef_csrf").expect("a CSRF cookie");
    let html = page.text().await.unwrap();
    assert!(html.contains("dana@example.com"), "the operator is the e-mail claim");
    assert!(html.contains(&format!("name=\"csrf\" value=\"{csrf}\"")), "forms carry the token");
    assert!(!html.contains("action=\"/logout\""), "no log-out where the console keeps no session: {html}");
    assert!(html.contains("X-Hub-Signature-256"), "the hook form says how hooks verify: {html}");

    let post = |path: &str, cookie: Option<&str>, form: Vec<(&str, &str)>| {
        let mut req = http
            .post(format!("{base}{path}"))
            .header("x-amzn-oidc-data", &jwt)
            .header("x-amzn-oidc-identity", "00u1")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(url_encoded(&form));
        if let Some(c) = cookie {
            req = req.header("cookie", format!("ef_csrf={c}"));
        }
        req.send()
    };
    let create = vec![("name", "deploys"), ("channel", "#deploys"), ("kind", "info")];
    assert_eq!(post("/hooks", None, create.clone()).await.unwrap().status(), 403, "no cookie, no field");
    assert_eq!(post("/hooks", Some(&csrf), create.clone()).await.unwrap().status(), 403, "no field");
    let mut wrong = create.clone();
    wrong.push(("csrf", "0000000000000000000000000000000000000000000000000000000000000000"));
    assert_eq!(post("/hooks", Some(&csrf), wrong).await.unwrap().status(), 403, "another token");
    let listed = eventfleet().args(["hooks", "list", "--json", "--data-dir"]).arg(data.path()).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "[]", "nothing refused was acted on");

    let mut good = create.clone();
    good.push(("csrf", &csrf));
    let created = post("/hooks", Some(&csrf), good).await.unwrap();
    assert_eq!(created.status(), 200);
    assert!(created.text().await.unwrap().contains("hook-url"));
    let listed = eventfleet().args(["hooks", "list", "--json", "--data-dir"]).arg(data.path()).output().unwrap();
    let hooks: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(hooks[0]["created_by"], "dana@example.com (console)", "{hooks}");
    assert_eq!(hooks[0]["messages"], "living", "a hook posts GitHub runs as living messages unless asked: {hooks}");
    let hook_id = hooks[0]["id"].as_str().unwrap().to_owned();
    let messages_path = format!("/hooks/{hook_id}/messages");
    let changed = post(&messages_path, Some(&csrf), vec![("messages", "per-delivery"), ("csrf", &csrf)]).await.unwrap();
    assert_eq!(changed.status(), 303, "{}", changed.text().await.unwrap());
    let listed = eventfleet().args(["hooks", "list", "--json", "--data-dir"]).arg(data.path()).output().unwrap();
    let hooks: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(hooks[0]["messages"], "per-delivery", "{hooks}");

    // Bad values are refused with 400 and change nothing.
    let bad = [
        ("/hooks", vec![("name", " "), ("channel", "#x")]),
        ("/dlq/replay", vec![("scope", "filter")]),
        ("/dlq/replay", vec![("scope", "filter"), ("confirm", "yes"), ("rate", "-1")]),
        ("/dlq/preview", vec![("scope", "selected")]),
        ("/dlq/preview", vec![("scope", "filter"), ("since", "last tuesday")]),
        (messages_path.as_str(), vec![("messages", "sometimes")]),
        (messages_path.as_str(), vec![]),
        // The event log's replay: every refusal before anything is sent.
        ("/events/preview", vec![("scope", "selected")]),
        ("/events/preview", vec![("scope", "selected"), ("ids", "not-an-event-id")]),
        ("/events/preview", vec![("scope", "selected"), ("ids", NO_SUCH_EVENT)]),
        ("/events/preview", vec![("scope", "filter")]),
        ("/events/preview", vec![("scope", "filter"), ("since", "last tuesday")]),
        ("/events/preview", vec![("scope", "filter"), ("outcome", "done")]),
        ("/events/replay", vec![("scope", "selected"), ("ids", NO_SUCH_EVENT), ("reason", "x")]),
        ("/events/replay", vec![("scope", "selected"), ("ids", NO_SUCH_EVENT), ("confirm", "yes")]),
        ("/events/replay", vec![("ids", NO_SUCH_EVENT), ("confirm", "yes"), ("reason", "x"), ("rate", "0")]),
        ("/events/replay", vec![("ids", NO_SUCH_EVENT), ("confirm", "yes"), ("reason", "x"), ("to_route", "nope")]),
        ("/events/replay", vec![("scope", "selected"), ("ids", NO_SUCH_EVENT), ("confirm", "yes"), ("reason", "x")]),
    ];
    for (path, mut form) in bad {
        form.push(("csrf", &csrf));
        let resp = post(path, Some(&csrf), form.clone()).await.unwrap();
        assert_eq!(resp.status(), 400, "{path} {form:?}: {}", resp.text().await.unwrap());
    }
    let listed = eventfleet().args(["hooks", "list", "--json", "--data-dir"]).arg(data.path()).output().unwrap();
    let hooks: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(hooks[0]["messages"], "per-delivery", "a refused change changed nothing: {hooks}");
    let unknown = post("/hooks/hk_nosuchhook/messages", Some(&csrf), vec![("messages", "living"), ("csrf", &csrf)]);
    assert_eq!(unknown.await.unwrap().status(), 404, "no such hook");
    assert_eq!(
        http.get(format!("{base}/dlq/replays/999")).header("x-amzn-oidc-identity", "x").send().await.unwrap().status(),
        404
    );
    let get = |path: &str| {
        http.get(format!("{base}{path}")).header("x-amzn-oidc-data", &jwt).header("x-amzn-oidc-identity", "00u1").send()
    };
    assert_eq!(get("/events/replays/999").await.unwrap().status(), 404);
    assert_eq!(get("/events?since=last+tuesday").await.unwrap().status(), 400);
    assert_eq!(get("/events?since=1h&after=garbage").await.unwrap().status(), 400);
    let searched = get("/events?since=1h").await.unwrap();
    assert_eq!(searched.status(), 200);
    assert!(searched.text().await.unwrap().contains("No events match"), "an empty log says how long it keeps events");
    let cancel = post("/events/replays/999/cancel", Some(&csrf), vec![("csrf", &csrf)]).await.unwrap();
    assert_eq!(cancel.status(), 404, "no such replay");
    let unguarded = post("/events/replay", None, vec![("ids", NO_SUCH_EVENT), ("confirm", "yes"), ("reason", "x")]);
    assert_eq!(unguarded.await.unwrap().status(), 403, "an event replay needs its CSRF token");
    assert_eq!(terminate(&mut console), Some(0));
}

/// An event id no store has.
const NO_SUCH_EVENT: &str = "01900000-0000-7000-8000-000000000000";

fn url_encoded(form: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish()
}
