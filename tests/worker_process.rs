//! The worker as a process: killed mid-handler, its message is redelivered after the visibility timeout and
//! completed exactly once, and a post Slack accepted before the kill is not made again; on SIGTERM it lets
//! in-flight handlers finish and exits 0 with nothing lost; three of them keep one channel's pace against
//! Slack's limit.

mod support;

use std::time::Duration;

use eventfleet_ingress::{IngressConfig, RateLimits};
use eventfleet_schema::{EventId, HookId, HookKind, Status, Step, Webhook};
use eventfleet_storage::{EmbeddedOptions, EmbeddedStore, Store};
use eventfleet_stubs::slack::{Reply, SlackStub};
use support::{spawn_worker, terminate};
use tokio_util::sync::CancellationToken;

struct Setup {
    store: Store,
    base: String,
    stub: SlackStub,
    http: reqwest::Client,
    _stop: tokio_util::sync::DropGuard,
}

/// The store, an in-process ingress on it, and the Slack stub; workers are child processes on the same file.
async fn setup(data: &std::path::Path) -> Setup {
    let store = EmbeddedStore::open_dir(data, EmbeddedOptions::default()).unwrap().into_store();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let config = IngressConfig { rate_limits: RateLimits::off(), ..IngressConfig::default() };
    tokio::spawn(eventfleet_ingress::run(store.clone(), config, listener, stop.clone()));
    Setup {
        store,
        base,
        stub: SlackStub::start().await.unwrap(),
        http: reqwest::Client::new(),
        _stop: stop.drop_guard(),
    }
}

impl Setup {
    /// Registers an info hook named `name` posting to `channel`.
    async fn hook(&self, name: &str, channel: &str) -> Webhook {
        let hook = Webhook {
            id: HookId::new(),
            name: name.into(),
            channel: channel.into(),
            kind: HookKind::Info,
            active: true,
            secret: None,
            invocation_count: 0,
            filter: None,
            group_key: None,
            per_delivery: false,
            created_by: "test".into(),
            created_at: self.store.clock.now(),
        };
        self.store.webhooks.create(&hook).await.unwrap();
        hook
    }

    async fn event(&self, channel: &str, text: &str) -> EventId {
        let hook = self.hook(text, channel).await;
        let resp =
            self.http.post(format!("{}/hooks/{}", self.base, hook.id)).body(text.to_owned()).send().await.unwrap();
        assert_eq!(resp.status(), 202);
        let body: serde_json::Value = resp.json().await.unwrap();
        EventId::parse(body["event_id"].as_str().unwrap()).unwrap()
    }

    fn worker_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("EVENTFLEET_SLACK_BOT_TOKEN", "xoxb-test".into()),
            ("EVENTFLEET_SLACK_API_URL", self.stub.url.clone()),
            ("EVENTFLEET_VISIBILITY_TIMEOUT_S", "3".into()),
            ("EVENTFLEET_HANDLER_TIMEOUT_S", "2".into()),
            ("EVENTFLEET_RECEIVE_WAIT_S", "1".into()),
            ("EVENTFLEET_RETRY_BASE_DELAY_MS", "50".into()),
            ("EVENTFLEET_RETRY_MAX_DELAY_MS", "200".into()),
        ]
    }

    async fn steps(&self, id: EventId) -> Vec<Step> {
        self.store.audit.history(id).await.unwrap().iter().map(|e| e.step).collect()
    }

    async fn wait(&self, what: &str, mut check: impl AsyncFnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !check().await {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_handler_leads_to_one_completion_after_the_visibility_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path()).await;
    // The first post hangs (the worker is mid-handler when killed); later ones succeed.
    s.stub.script("#slow", [Reply::Slow(Duration::from_secs(60))]);
    let id = s.event("#slow", "killed mid-handler").await;
    let env = s.worker_env();
    let mut first = spawn_worker(dir.path(), &env_refs(&env));
    s.wait("the first attempt to reach Slack", async || s.stub.requests("#slow") == 1).await;
    first.kill().unwrap();
    first.wait().unwrap();

    let mut second = spawn_worker(dir.path(), &env_refs(&env));
    s.wait("the redelivery to succeed", async || s.steps(id).await.contains(&Step::Succeeded)).await;
    let steps = s.steps(id).await;
    assert_eq!(steps.iter().filter(|x| **x == Step::Started).count(), 2, "{steps:?}");
    assert_eq!(steps.iter().filter(|x| **x == Step::Succeeded).count(), 1, "{steps:?}");
    assert_eq!(s.store.idempotency.find_by_event(id).await.unwrap().unwrap().status, Status::Done);
    assert_eq!(s.stub.posted().len(), 1, "one completed post");
    assert_eq!(terminate(&mut second), Some(0));
    let stats = s.store.queue.stats().await.unwrap();
    assert_eq!((stats.waiting, stats.in_flight, stats.dead_letters), (0, 0, 0));
}

/// SIGKILL between Slack accepting a post and the worker recording it: the post is in the channel, the event is
/// not done. The next attempt finds the post by its metadata (the event id) and does not post again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_after_slack_accepted_its_post_does_not_post_twice() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path()).await;
    s.stub.script("#landed", [Reply::Accepted(Duration::from_secs(60))]);
    let id = s.event("#landed", "posted, then killed").await;
    let env = s.worker_env();
    let mut first = spawn_worker(dir.path(), &env_refs(&env));
    s.wait("the post to land in the channel", async || s.stub.history("#landed").len() == 1).await;
    first.kill().unwrap();
    first.wait().unwrap();
    let landed = s.stub.history("#landed");
    assert_eq!(landed[0]["metadata"]["event_type"], "eventfleet_post");
    assert_eq!(landed[0]["metadata"]["event_payload"]["event_id"], id.to_string(), "the post names its event");

    let mut second = spawn_worker(dir.path(), &env_refs(&env));
    s.wait("the next attempt to succeed", async || s.steps(id).await.contains(&Step::Succeeded)).await;
    assert_eq!(s.stub.requests("#landed"), 1, "chat.postMessage was called once");
    assert_eq!(s.stub.history("#landed").len(), 1, "one message in the channel");
    assert!(s.stub.history_requests() >= 1, "the resumed attempt read the channel first");
    let record = s.store.idempotency.find_by_event(id).await.unwrap().unwrap();
    assert_eq!(record.status, Status::Done);
    assert!(record.outcome.as_deref().unwrap_or("").contains("not posted again"), "{record:?}");
    assert_eq!(terminate(&mut second), Some(0));
}

/// Without the history scopes the next attempt cannot tell whether the post landed: it posts again (at least
/// once), and says why in its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_history_scope_a_resumed_attempt_posts_again() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path()).await;
    s.stub.refuse_history("missing_scope");
    s.stub.script("#noscope", [Reply::Accepted(Duration::from_secs(60))]);
    let id = s.event("#noscope", "posted, killed, no scope").await;
    let env = s.worker_env();
    let mut first = spawn_worker(dir.path(), &env_refs(&env));
    s.wait("the post to land in the channel", async || s.stub.history("#noscope").len() == 1).await;
    first.kill().unwrap();
    first.wait().unwrap();
    let mut second = spawn_worker(dir.path(), &env_refs(&env));
    s.wait("the next attempt to succeed", async || s.steps(id).await.contains(&Step::Succeeded)).await;
    assert_eq!(s.stub.requests("#noscope"), 2, "posted again: at least once");
    assert_eq!(terminate(&mut second), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_handlers_finish_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path()).await;
    s.stub.always("#drain", Reply::Slow(Duration::from_millis(1500)));
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(s.event("#drain", &format!("in flight {i}")).await);
    }
    // The shutdown is under test, not the pace: the three posts go at once.
    let mut env = s.worker_env();
    env.push(("EVENTFLEET_SLACK_CHANNEL_INTERVAL_MS", "0".into()));
    let mut worker = spawn_worker(dir.path(), &env_refs(&env));
    s.wait("three handlers in flight", async || s.stub.requests("#drain") == 3).await;
    assert_eq!(terminate(&mut worker), Some(0), "exit 0 after the drain");
    for id in &ids {
        let record = s.store.idempotency.find_by_event(*id).await.unwrap().unwrap();
        assert_eq!(record.status, Status::Done, "finished before exit");
    }
    assert_eq!(s.stub.posted().len(), 3);
    let stats = s.store.queue.stats().await.unwrap();
    assert_eq!((stats.waiting, stats.in_flight), (0, 0), "nothing lost or left invisible");
}

/// Hooks in the three-workers tests, and the payloads each sends.
const HOOKS: usize = 4;
const EACH: usize = 12;

/// Polls `fetch` (what a stand-in holds, each message as text) until every one of the [`HOOKS`] hooks' [`EACH`]
/// payloads (`hook<h>-<i>`) is in one of them; fails after 120 s naming `where_`.
async fn every_payload_in(where_: &str, fetch: impl Fn() -> Vec<String>) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let messages = fetch();
        if (0..HOOKS).all(|h| (0..EACH).all(|i| messages.iter().any(|m| m.contains(&format!("hook{h}-{i:02}"))))) {
            return messages;
        }
        assert!(tokio::time::Instant::now() < deadline, "not every payload reached {where_}: {messages:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// [`HOOKS`] hooks posting to `#shared`, against a stand-in that enforces one post a second there with `burst`.
async fn hooks_on_one_limited_channel(dir: &std::path::Path, burst: u32) -> (Setup, Vec<Webhook>) {
    let s = setup(dir).await;
    s.stub.enforce_limit(Duration::from_secs(1), burst);
    let mut hooks = Vec::new();
    for h in 0..HOOKS {
        hooks.push(s.hook(&format!("hook{h}"), "#shared").await);
    }
    (s, hooks)
}

/// Three worker processes post to one channel against a stand-in that enforces Slack's limit (one post a second
/// per channel, a short burst, 429 with Retry-After past it), with the default pace: every post lands once, in
/// its group's order, and fewer than 5 % of the posts are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_keep_one_channels_pace_against_slacks_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (s, hooks) = hooks_on_one_limited_channel(dir.path(), 5).await;
    let env: Vec<(&'static str, String)> = s
        .worker_env()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("EVENTFLEET_RETRY"))
        // The pace itself is under test: every post its own message (digests would fold the waiting ones).
        .chain([("EVENTFLEET_WORKER_CONCURRENCY", "4".to_owned()), ("EVENTFLEET_SLACK_DIGESTS", "false".to_owned())])
        .collect();
    let mut workers: Vec<_> = (0..3).map(|_| spawn_worker(dir.path(), &env_refs(&env))).collect();
    let mut ids = Vec::new();
    for i in 0..EACH {
        for hook in &hooks {
            let text = format!("{}-{i:02}", hook.name);
            let resp = s.http.post(format!("{}/hooks/{}", s.base, hook.id)).body(text).send().await.unwrap();
            assert_eq!(resp.status(), 202);
            let body: serde_json::Value = resp.json().await.unwrap();
            ids.push(EventId::parse(body["event_id"].as_str().unwrap()).unwrap());
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    for id in &ids {
        while !s.steps(*id).await.contains(&Step::Succeeded) {
            assert!(tokio::time::Instant::now() < deadline, "event {id} not done: {:?}", s.steps(*id).await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for w in &mut workers {
        assert_eq!(terminate(w), Some(0));
    }
    // A hook's message is its name, then the payload: the payload's line names the post.
    let texts: Vec<String> = (s.stub.history("#shared").iter())
        .map(|m| m["text"].as_str().unwrap_or("").lines().last().unwrap_or("").to_owned())
        .collect();
    assert_eq!(texts.len(), HOOKS * EACH, "every post landed once: {texts:?}");
    for hook in &hooks {
        let mine: Vec<&String> = texts.iter().filter(|t| t.starts_with(&format!("{}-", hook.name))).collect();
        let expected: Vec<String> = (0..EACH).map(|i| format!("{}-{i:02}", hook.name)).collect();
        assert_eq!(mine, expected.iter().collect::<Vec<_>>(), "{} in its order", hook.name);
    }
    let (limited, requests) = (s.stub.limited(), s.stub.requests("#shared") as u64);
    eprintln!("three workers, one channel: {requests} post requests, {limited} answered 429");
    assert!(limited * 20 < requests, "{limited} of {requests} posts answered 429");
}

/// The same three worker processes and limit-enforcing stand-in with every default, digests on: the waiting
/// posts fold into digests, every payload lands once (in its own message or a digest), a hook's payloads posted
/// alone are in its order and so are its lines within each digest, and fewer than 5 % of the posts are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_with_digests_post_every_payload_once_in_order_against_slacks_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (s, hooks) = hooks_on_one_limited_channel(dir.path(), 3).await;
    let env: Vec<(&'static str, String)> = s
        .worker_env()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("EVENTFLEET_RETRY") && !k.starts_with("EVENTFLEET_SLACK_DIGESTS"))
        .chain([("EVENTFLEET_WORKER_CONCURRENCY", "4".to_owned())])
        .collect();
    let mut workers: Vec<_> = (0..3).map(|_| spawn_worker(dir.path(), &env_refs(&env))).collect();
    let payload = |hook: usize, i: usize| format!("hook{hook}-{i:02}");
    for i in 0..EACH {
        for (h, hook) in hooks.iter().enumerate() {
            let resp = s.http.post(format!("{}/hooks/{}", s.base, hook.id)).body(payload(h, i)).send().await.unwrap();
            assert_eq!(resp.status(), 202);
        }
    }
    let messages =
        every_payload_in("#shared", || s.stub.history("#shared").iter().map(|m| m.to_string()).collect()).await;
    for w in &mut workers {
        assert_eq!(terminate(w), Some(0));
    }
    let digests = messages.iter().filter(|m| m.contains(" in one digest: ")).count();
    assert!(digests > 0 && messages.len() < HOOKS * EACH, "the waiting posts folded: {messages:?}");
    for h in 0..HOOKS {
        // Where each payload is: the message, and its place in it.
        let mut alone = Vec::new();
        let mut in_digest: Vec<Vec<usize>> = vec![Vec::new(); messages.len()];
        for i in 0..EACH {
            let found: Vec<(usize, usize)> =
                (messages.iter().enumerate()).filter_map(|(n, m)| m.find(&payload(h, i)).map(|at| (n, at))).collect();
            assert_eq!(found.len(), 1, "{} landed once: {messages:?}", payload(h, i));
            let (n, at) = found[0];
            if messages[n].contains(" in one digest: ") {
                in_digest[n].push(at);
            } else {
                alone.push(n);
            }
        }
        assert!(alone.is_sorted(), "hook{h}'s payloads posted alone are in its order: {messages:?}");
        assert!(in_digest.iter().all(|places| places.is_sorted()), "and within each digest: {messages:?}");
    }
    let (limited, requests) = (s.stub.limited(), s.stub.requests("#shared") as u64);
    eprintln!(
        "three workers, one channel, digests: {} messages, {requests} post requests, {limited} answered 429",
        messages.len()
    );
    assert!(limited * 20 < requests, "{limited} of {requests} posts answered 429");
}

/// Three worker processes post cards to one Teams webhook against the stand-in that enforces Teams' 4 requests
/// a second (429 past it), with the defaults: every payload reaches the channel once (alone or in a digest card)
/// and fewer than 5 % of the requests are refused: the processes share the webhook's pace as they share a Slack
/// channel's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_keep_a_teams_webhooks_limit() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path()).await;
    let teams = eventfleet_stubs::teams::TeamsStub::start().await.unwrap();
    let mut hooks = Vec::new();
    for h in 0..HOOKS {
        hooks.push(s.hook(&format!("hook{h}"), "teams:ops").await);
    }
    let env: Vec<(&'static str, String)> = s
        .worker_env()
        .into_iter()
        .chain([
            ("EVENTFLEET_WORKER_CONCURRENCY", "4".to_owned()),
            ("EVENTFLEET_TEAMS_CHANNELS", "ops".to_owned()),
            ("EVENTFLEET_TEAMS_WEBHOOK_OPS", teams.webhook("ops")),
        ])
        .collect();
    let mut workers: Vec<_> = (0..3).map(|_| spawn_worker(dir.path(), &env_refs(&env))).collect();
    let payload = |hook: usize, i: usize| format!("hook{hook}-{i:02}");
    // A steady stream (two a second per hook) rather than one burst: the processes meet on the webhook for a while.
    for i in 0..EACH {
        for (h, hook) in hooks.iter().enumerate() {
            let resp = s.http.post(format!("{}/hooks/{}", s.base, hook.id)).body(payload(h, i)).send().await.unwrap();
            assert_eq!(resp.status(), 202);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let cards =
        every_payload_in("the Teams channel", || teams.cards("ops").iter().map(|c| c.to_string()).collect()).await;
    for w in &mut workers {
        assert_eq!(terminate(w), Some(0));
    }
    for h in 0..HOOKS {
        for i in 0..EACH {
            let found = cards.iter().map(|c| c.matches(&payload(h, i)).count()).sum::<usize>();
            assert_eq!(found, 1, "{} landed once: {cards:?}", payload(h, i));
        }
    }
    support::validate_cards(&teams.cards("ops"));
    let (limited, requests) = (teams.limited(), teams.requests("ops") as u64);
    eprintln!("three workers, one Teams webhook: {} cards, {requests} requests, {limited} answered 429", cards.len());
    assert!(limited * 20 < requests, "{limited} of {requests} requests answered 429");
}

/// A GitHub `workflow_run` delivery of run 4242 (from testdata/github's example), with this status.
fn workflow_run(action: &str, status: &str, conclusion: Option<&str>) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/github/examples.json");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let mut run = doc["examples"]["workflow_run"][0].clone();
    run["action"] = action.into();
    run["workflow_run"]["id"] = 4242.into();
    run["workflow_run"]["status"] = status.into();
    run["workflow_run"]["conclusion"] = conclusion.map_or(serde_json::Value::Null, serde_json::Value::from);
    run.to_string()
}

/// SIGKILL between Slack accepting the update of a living message and the worker recording it: the message
/// shows the update, the event is not done. The next attempt finds the update's mark on the message and does
/// not update again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_after_slack_accepted_its_update_does_not_update_twice() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path()).await;
    let hook = s.hook("ci", "#runs").await;
    let send = async |delivery: &str, body: String| {
        let resp = (s.http.post(format!("{}/hooks/{}", s.base, hook.id)))
            .header("content-type", "application/json")
            .header("x-github-event", "workflow_run")
            .header("x-github-delivery", delivery)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        EventId::parse(resp.json::<serde_json::Value>().await.unwrap()["event_id"].as_str().unwrap()).unwrap()
    };
    let env = s.worker_env();
    let mut first = spawn_worker(dir.path(), &env_refs(&env));
    let requested = send("run-requested", workflow_run("requested", "queued", None)).await;
    s.wait("the run's message", async || s.steps(requested).await.contains(&Step::Succeeded)).await;
    assert_eq!(s.stub.history("#runs").len(), 1);
    s.stub.script(&s.stub.channel_id("#runs"), [Reply::Accepted(Duration::from_secs(60))]);
    let completed = send("run-completed", workflow_run("completed", "completed", Some("success"))).await;
    s.wait("the update to land", async || s.stub.updates().len() == 1).await;
    first.kill().unwrap();
    first.wait().unwrap();
    let shown = &s.stub.history("#runs")[0];
    assert!(shown["text"].as_str().unwrap().contains("succeeded"), "the message shows the update: {shown}");
    assert_eq!(shown["metadata"]["event_payload"]["event_id"], completed.to_string(), "the update names its event");

    let mut second = spawn_worker(dir.path(), &env_refs(&env));
    s.wait("the next attempt to succeed", async || s.steps(completed).await.contains(&Step::Succeeded)).await;
    assert_eq!(s.stub.updates().len(), 1, "chat.update was called once");
    assert_eq!(s.stub.history("#runs").len(), 1, "still one message");
    assert_eq!(terminate(&mut second), Some(0));
}

/// SIGKILL between Slack accepting a burst digest and the worker recording it: the digest is in the channel, its
/// flush event is not done. The next attempt finds the digest by its mark and does not post it again; every post
/// folded into it has its `digested` line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_after_slack_accepted_a_digest_does_not_post_it_twice() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path()).await;
    let hook = s.hook("deploys", "#digest").await;
    // The default pace: the first post goes at once (a process that has not learnt its share of the channel
    // takes no burst), the four after it are folded; the digest's post lands, and its answer never comes before
    // the kill.
    s.stub.script("#digest", [Reply::Ok, Reply::Accepted(Duration::from_secs(60))]);
    let mut ids = Vec::new();
    for i in 0..5 {
        let resp =
            (s.http.post(format!("{}/hooks/{}", s.base, hook.id))).body(format!("payload {i}")).send().await.unwrap();
        assert_eq!(resp.status(), 202);
        ids.push(
            EventId::parse(resp.json::<serde_json::Value>().await.unwrap()["event_id"].as_str().unwrap()).unwrap(),
        );
    }
    let env = s.worker_env();
    let mut first = spawn_worker(dir.path(), &env_refs(&env));
    let is_digest = |m: &serde_json::Value| m["text"].as_str().unwrap_or("").contains("in one digest");
    s.wait("the digest to land", async || s.stub.history("#digest").iter().any(is_digest)).await;
    first.kill().unwrap();
    first.wait().unwrap();
    let flush_key = eventfleet_schema::IdempotencyKey::digest("#digest", &ids[1]);
    let flush = s.store.idempotency.get(&flush_key).await.unwrap().expect("the flush event of the digest");
    assert_ne!(flush.status, Status::Done, "killed before its success was recorded");

    let mut second = spawn_worker(dir.path(), &env_refs(&env));
    s.wait("the flush to succeed", async || {
        s.store.idempotency.get(&flush_key).await.unwrap().is_some_and(|r| r.status == Status::Done)
    })
    .await;
    let history = s.stub.history("#digest");
    assert_eq!(history.iter().filter(|m| is_digest(m)).count(), 1, "one digest in the channel: {history:?}");
    assert_eq!(history.len(), 2, "the first post and the digest: {history:?}");
    assert_eq!(s.stub.requests("#digest"), 2, "chat.postMessage was called once for the digest");
    let outcome = s.store.idempotency.get(&flush_key).await.unwrap().unwrap().outcome.unwrap_or_default();
    assert!(outcome.contains("not posted again"), "{outcome}");
    for id in &ids[1..] {
        assert!(s.steps(*id).await.contains(&Step::Digested), "{id} has its digested line");
    }
    assert_eq!(terminate(&mut second), Some(0));
}
