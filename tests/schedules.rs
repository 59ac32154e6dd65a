//! Scheduled events across processes: two `eventfleet dev` on one embedded store, and two `eventfleet ingress`
//! on the aws backend (moto server) with a worker, evaluate a schedule firing every second: each tick is one
//! event, handled once, and both processes fired every tick (the loser's accept is a duplicate). After 10 s of
//! downtime `skip` makes no catch-up and `once` makes one event counting the missed ticks. A bad schedules file
//! stops start-up naming its entry.
//!
//! The aws test needs `EVENTFLEET_TEST_AWS_ENDPOINT` (scripts/test starts moto and sets it).

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use eventfleet_stubs::slack::SlackStub;
use serde_json::Value;
use support::{eventfleet, poll, spawn_listening, spawn_marked, terminate};

const EVERY_SECOND: &str = r##"
[[schedule]]
name = "beat"
cron = "* * * * * *"
channel = "#beat"
text = "still alive"
"##;

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn label(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn write_schedules(dir: &Path, text: &str) -> String {
    let path = dir.join("schedules.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// `events show <key> --json` with `env`, or `None` when there is no such event.
fn show(env: &[(String, String)], data: &Path, key: &str) -> Option<Value> {
    let out = eventfleet()
        .args(["events", "show", key, "--json", "--data-dir"])
        .arg(data)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn steps(shown: &Value, step: &str) -> usize {
    shown["steps"].as_array().unwrap().iter().filter(|s| s["step"] == step).count()
}

/// `eventfleet_ingress_schedule_ticks_total` of one schedule and outcome, from a `/metrics` page.
async fn ticks_metric(base: &str, schedule: &str, outcome: &str) -> u64 {
    let text = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    let want = format!("eventfleet_ingress_schedule_ticks_total{{schedule=\"{schedule}\",outcome=\"{outcome}\"}}");
    text.lines().find_map(|l| l.strip_prefix(want.as_str())).map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
}

/// Both processes fired every tick of the window: one made its event, the other's accept was a duplicate. The
/// counters are read until they show it (a loaded store finishes the losing accepts later), for at most 90 s.
async fn assert_both_fired(base_a: &str, base_b: &str, events: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let duplicates =
            ticks_metric(base_a, "beat", "duplicate").await + ticks_metric(base_b, "beat", "duplicate").await;
        let accepted = ticks_metric(base_a, "beat", "accepted").await + ticks_metric(base_b, "beat", "accepted").await;
        if duplicates + 2 >= events && accepted >= events {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "both processes fired each tick: {duplicates} duplicates and {accepted} accepted for {events} ticks"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every tick from `first` to `last` (Unix seconds) is one event, handled once; returns how many.
fn assert_one_event_per_tick(env: &[(String, String)], data: &Path, first: i64, last: i64) -> u64 {
    assert!(last - first >= 15, "the processes ran together for at least 15 ticks ({first}..={last})");
    let mut ids = BTreeSet::new();
    for tick in first..=last {
        let key = format!("schedule:beat:{}", label(tick));
        let shown =
            poll(Duration::from_secs(60), || show(env, data, &key).filter(|s| s["idempotency"]["status"] == "DONE"))
                .unwrap_or_else(|| panic!("tick {key} has a handled event"));
        assert_eq!(steps(&shown, "received"), 1, "{key}: {shown}");
        assert_eq!(steps(&shown, "started"), 1, "{key} ran once: {shown}");
        assert_eq!(steps(&shown, "succeeded"), 1, "{key}: {shown}");
        assert!(ids.insert(shown["event_id"].as_str().unwrap().to_owned()), "{key} has an event of its own");
        let received = shown["steps"].as_array().unwrap().iter().find(|s| s["step"] == "received").unwrap();
        assert_eq!(received["detail"]["schedule"], "beat", "the trail names the schedule: {received}");
    }
    ids.len() as u64
}

#[tokio::test(flavor = "multi_thread")]
async fn two_dev_processes_on_one_store_make_one_event_per_tick() {
    let data = tempfile::tempdir().unwrap();
    let file = write_schedules(data.path(), EVERY_SECOND);
    // A tick a second to one channel is the channel pace's own rate: any jitter would defer a tick and its group
    // fall behind. The pace has its own tests (tests/fleet); here each tick is what is counted.
    let env = [("EVENTFLEET_SCHEDULES_FILE", file.as_str()), ("EVENTFLEET_SLACK_CHANNEL_INTERVAL_MS", "0")];
    let args = ["dev", "--listen", "127.0.0.1:0", "--workers", "2"];
    let (mut a, base_a) = spawn_listening(data.path(), &args, &env);
    let (mut b, base_b) = spawn_listening(data.path(), &args, &env);
    let first = unix_now() + 2;
    // The run itself: twenty ticks of both processes evaluating the schedule.
    poll(Duration::from_secs(40), || (unix_now() >= first + 20).then_some(())).unwrap();
    let last = unix_now() - 1;
    let no_env: Vec<(String, String)> = Vec::new();
    let events = assert_one_event_per_tick(&no_env, data.path(), first, last);
    assert_both_fired(&base_a, &base_b, events).await;
    assert_eq!(terminate(&mut a), Some(0));
    assert_eq!(terminate(&mut b), Some(0));
    // Each event posted once: no event id twice in the outbox.
    let outbox = std::fs::read_to_string(data.path().join("outbox.jsonl")).unwrap();
    let posted: Vec<String> = outbox
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["message"]["channel"] == "#beat")
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect();
    let unique: BTreeSet<_> = posted.iter().collect();
    assert_eq!(unique.len(), posted.len(), "no tick was posted twice");
    assert!(posted.len() as u64 >= events);
}

#[tokio::test(flavor = "multi_thread")]
async fn after_downtime_skip_makes_no_catch_up_and_once_makes_one() {
    let data = tempfile::tempdir().unwrap();
    let file = write_schedules(
        data.path(),
        r##"
        [[schedule]]
        name = "skipper"
        cron = "* * * * * *"
        channel = "#skip"
        text = "skip tick"

        [[schedule]]
        name = "catcher"
        cron = "* * * * * *"
        channel = "#once"
        text = "once tick"
        catch_up = "once"
        "##,
    );
    // A tick a second to one channel is the channel pace's own rate: any jitter would defer a tick and its group
    // fall behind. The pace has its own tests (tests/fleet); here each tick is what is counted.
    let env = [("EVENTFLEET_SCHEDULES_FILE", file.as_str()), ("EVENTFLEET_SLACK_CHANNEL_INTERVAL_MS", "0")];
    let args = ["dev", "--listen", "127.0.0.1:0", "--workers", "2"];
    let (mut first_run, _) = spawn_listening(data.path(), &args, &env);
    let up = unix_now();
    poll(Duration::from_secs(20), || (unix_now() >= up + 3).then_some(())).unwrap();
    // The schedules stop at the signal; the downtime runs from it to the restarted process's banner.
    let stopped = unix_now();
    assert_eq!(terminate(&mut first_run), Some(0));
    // The downtime the scenario is about: ten seconds with no process evaluating the schedules.
    std::thread::sleep(Duration::from_secs(10));
    let (mut second_run, _) = spawn_listening(data.path(), &args, &env);
    let restarted_at = unix_now();
    let no_env: Vec<(String, String)> = Vec::new();
    // The first tick after the restart is handled once the restarted process runs.
    let after = restarted_at + 3;
    poll(Duration::from_secs(30), || {
        show(&no_env, data.path(), &format!("schedule:skipper:{}", label(after)))
            .filter(|s| s["idempotency"]["status"] == "DONE")
    })
    .expect("ticks run again after the restart");
    let outbox_lines = || -> Vec<Value> {
        std::fs::read_to_string(data.path().join("outbox.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let catch_ups = poll(Duration::from_secs(30), || {
        let found: Vec<Value> = outbox_lines()
            .into_iter()
            .filter(|e| e["message"]["text"].as_str().unwrap().contains("catch-up"))
            .collect();
        (!found.is_empty()).then_some(found)
    })
    .expect("the once schedule posted a catch-up");
    assert_eq!(terminate(&mut second_run), Some(0));

    // skip: no event for any tick of the downtime.
    for tick in (stopped + 1)..restarted_at {
        let key = format!("schedule:skipper:{}", label(tick));
        assert!(show(&no_env, data.path(), &key).is_none(), "skip made no event for {key}");
    }
    // once: exactly one catch-up, on the once schedule, counting the downtime's ticks.
    assert_eq!(catch_ups.len(), 1, "one catch-up: {catch_ups:?}");
    assert_eq!(catch_ups[0]["message"]["channel"], "#once");
    let text = catch_ups[0]["message"]["text"].as_str().unwrap();
    let missed: i64 = text.split("catch-up: ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    let downtime = restarted_at - stopped;
    assert!(
        (downtime - 2..=downtime + 2).contains(&missed),
        "{missed} missed ticks counted for {downtime} s down: {text}"
    );
    let all = outbox_lines();
    assert!(
        !all.iter()
            .any(|e| e["message"]["channel"] == "#skip" && e["message"]["text"].as_str().unwrap().contains("catch-up"))
    );
}

#[test]
fn a_bad_schedules_file_stops_start_up_naming_the_entry() {
    let data = tempfile::tempdir().unwrap();
    let cases = [
        ("[[schedule]]\nname = \"nightly\"\ncron = \"0 61 * * *\"\n", "\"nightly\"", "cron"),
        (
            "[[schedule]]\nname = \"sweep\"\ncron = \"0 3 * * *\"\ntimezone = \"Mars/Olympus\"\n",
            "\"sweep\"",
            "Mars/Olympus",
        ),
        (
            "[[schedule]]\nname = \"a\"\ncron = \"* * * * *\"\n[[schedule]]\nname = \"a\"\ncron = \"0 * * * *\"\n",
            "\"a\"",
            "unique",
        ),
        ("[[schedule]]\nname = \"b\"\ncron = \"* * * * *\"\nextra = 1\n", "extra", "unknown field"),
    ];
    for (text, entry, reason) in cases {
        let file = write_schedules(data.path(), text);
        let out = eventfleet()
            .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data.path())
            .env("EVENTFLEET_SCHEDULES_FILE", &file)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "start-up stopped for {text:?}");
        assert!(stderr.contains("EVENTFLEET_SCHEDULES_FILE"), "{stderr}");
        assert!(stderr.contains(entry) && stderr.contains(reason), "the error names {entry} and {reason}: {stderr}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("listening on"), "nothing was served");
    }
    let missing = eventfleet()
        .args(["ingress", "--data-dir"])
        .arg(data.path())
        .env("EVENTFLEET_SCHEDULES_FILE", data.path().join("nope.toml"))
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope.toml"));
}

/// The aws fleet: two ingress processes evaluating the schedule and one worker, on fresh queues and tables.
struct AwsFleet {
    env: Vec<(String, String)>,
    data: tempfile::TempDir,
    children: Vec<Child>,
}

impl Drop for AwsFleet {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_aws_ingress_processes_make_one_event_per_tick() {
    let endpoint = std::env::var("EVENTFLEET_TEST_AWS_ENDPOINT").expect(
        "EVENTFLEET_TEST_AWS_ENDPOINT is not set: run the tests through scripts/test, which starts moto server",
    );
    let stub = SlackStub::start().await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let file = write_schedules(data.path(), EVERY_SECOND);
    let prefix = format!("sched-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let mut env = support::aws_env(&endpoint, &prefix);
    env.extend(
        [
            ("EVENTFLEET_SLACK_BOT_TOKEN", "xoxb-schedules"),
            ("EVENTFLEET_SLACK_API_URL", stub.url.as_str()),
            ("EVENTFLEET_SCHEDULES_FILE", file.as_str()),
            ("EVENTFLEET_RECEIVE_WAIT_S", "1"),
            ("EVENTFLEET_DRAIN_TIMEOUT_S", "5"),
            // A tick a second is the channel pace's own rate (see the dev test above).
            ("EVENTFLEET_SLACK_CHANNEL_INTERVAL_MS", "0"),
            // moto answers one request at a time: a generous budget keeps its pauses from failing accepts.
            ("EVENTFLEET_BACKEND_BUDGET_MS", "20000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let created =
        eventfleet().args(["tables", "create", "--data-dir"]).arg(data.path()).envs(env.clone()).output().unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let mut fleet = AwsFleet { env, data, children: Vec::new() };
    let spawned = unix_now();
    let ingress_args = ["ingress", "--listen", "127.0.0.1:0"];
    let (a, base_a) = spawn_marked(&fleet.env, fleet.data.path(), &ingress_args, "listening on");
    let (b, base_b) = spawn_marked(&fleet.env, fleet.data.path(), &ingress_args, "listening on");
    let (worker, _) = spawn_marked(&fleet.env, fleet.data.path(), &["worker"], "worker started");
    fleet.children.extend([a, b, worker]);
    let first = unix_now() + 2;
    poll(Duration::from_secs(40), || (unix_now() >= first + 20).then_some(())).unwrap();
    let last = unix_now() - 1;
    let events = assert_one_event_per_tick(&fleet.env, fleet.data.path(), first, last);
    assert_both_fired(&base_a, &base_b, events).await;
    for child in &mut fleet.children {
        assert_eq!(terminate(child), Some(0));
    }
    // Posted once each: as many posts as ticks whose event was handled, over the whole run.
    let handled = (spawned - 1..=unix_now())
        .filter(|t| {
            show(&fleet.env, fleet.data.path(), &format!("schedule:beat:{}", label(*t)))
                .is_some_and(|s| s["idempotency"]["status"] == "DONE")
        })
        .count();
    assert!(handled as u64 >= events);
    assert_eq!(stub.requests("#beat"), handled, "one post per handled tick");
}
