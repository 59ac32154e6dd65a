//! `eventfleet-loadtest run`: realistic signed traffic against a fleet (started here unless `--target`), optional
//! chaos (SIGKILL a random process every few seconds and restart it), then verification against the store and the
//! Slack stub: every event answered 2xx completed exactly once, duplicates not handled again, nothing lost or left
//! in flight. A plain axum baseline is driven by the same generator in the same run.
//! The sending is [`crate::send`]'s, the checks after it [`crate::checks`]'s.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use eventfleet_storage::{EmbeddedOptions, EmbeddedStore};
use eventfleet_stubs::slack::SlackStub;
use hdrhistogram::Histogram;

use crate::fleet::Fleet;
use crate::prepare::Prepared;
use crate::traffic::{ALARM_TOPIC, Traffic};

use crate::checks::{verify, wait_for_drain};
use crate::report::{Report, RunArgs, Shape};
use crate::send::{Outcome, generate};

/// The test certificate and key the fleet is told to trust for the run (`EVENTFLEET_SNS_CERT_DIR`).
const TEST_CERT: &str = include_str!("../../testdata/sns/SimpleNotificationService-eventfleet-test.pem");
const TEST_KEY: &str = include_str!("../../testdata/sns/test-signing-key.pem");
const SLACK_SECRET: &str = "loadtest-signing-secret";

/// Runs the load test.
pub async fn run(args: RunArgs) -> anyhow::Result<(Report, bool)> {
    let work = tempfile::tempdir()?;
    let stub = SlackStub::start().await?;
    if args.defaults {
        stub.enforce_limit(Duration::from_secs(1), 3);
    }
    let receiver = match (args.route, &args.target) {
        (true, None) => Some(crate::receiver::Receiver::start().await?),
        (true, Some(_)) => bail!("--route configures the fleet started here; it cannot be used with --target"),
        (false, _) => None,
    };
    let (mut fleet, base, data_dir, inherited) = match &args.target {
        Some(target) => {
            let dir = args.data_dir.clone().context("--target needs --data-dir (its store, for hooks and checks)")?;
            (None, target.trim_end_matches('/').to_owned(), dir, BTreeMap::new())
        }
        None => {
            let certs = work.path().join("certs");
            std::fs::create_dir_all(&certs)?;
            std::fs::write(certs.join("SimpleNotificationService-eventfleet-test.pem"), TEST_CERT)?;
            let data = work.path().join("data");
            let mut env = fleet_env(&stub.url, &certs, args.defaults);
            if let Some(receiver) = &receiver {
                let routes = work.path().join("routes.toml");
                std::fs::write(&routes, receiver.routes_file())?;
                env.insert("EVENTFLEET_ROUTES_FILE".into(), routes.display().to_string());
                env.insert("EVENTFLEET_LOADTEST_ROUTE_SECRET".into(), crate::receiver::SECRET.into());
            }
            let workers = if args.shape == Shape::OneProcess { 0 } else { args.workers };
            let inherited = inherited_settings(&env);
            let fleet = Fleet::start(&data, env, workers)?;
            let base = fleet.base.clone();
            (Some(fleet), base, data, inherited)
        }
    };
    let hooks = create_hooks(fleet.as_ref(), &data_dir)?;
    let traffic = Traffic {
        slack_secret: std::env::var("EVENTFLEET_SLACK_SIGNING_SECRET").unwrap_or_else(|_| SLACK_SECRET.into()),
        hook_id: hooks.0,
        github_hook_id: hooks.1,
        github_secret: hooks.2,
        sns_key_pem: TEST_KEY.into(),
        resend_percent: 10,
        // Keys unique to this run, so a second run against the same store is not all duplicates.
        run_id: format!(
            "{:08x}",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos())
                ^ std::process::id()
        ),
    };

    let baseline_rps = baseline(&args, &traffic).await?;
    eprintln!("baseline: {baseline_rps:.0} req/s");

    let fleet_shared = Arc::new(Mutex::new(fleet.take()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let kills = Arc::new(AtomicU64::new(0));
    let background = spawn_chaos_and_sampling(&args, fleet_shared.clone(), stop.clone(), kills.clone());

    let outcome = Arc::new(Outcome {
        event_ids: Mutex::new(HashMap::new()),
        statuses: Mutex::new(BTreeMap::new()),
        latency: Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3)?),
        requests: AtomicU64::new(0),
        resends: AtomicU64::new(0),
        unaccepted: AtomicU64::new(0),
        resend_mismatches: AtomicU64::new(0),
    });
    let generated = generate(&args, &base, &traffic, outcome.clone()).await;
    // Stop chaos and sampling whatever happened, or the blocking thread would keep the runtime alive.
    stop.store(true, Ordering::Relaxed);
    let _ = background.await;
    let generated = generated?;
    let load_secs = generated.load_secs;

    eprintln!("load done; waiting for the queue to drain");
    let store = EmbeddedStore::open_dir(&data_dir, EmbeddedOptions::default())?.into_store();
    // With the defaults a backlog drains at Slack's pace (a channel takes a digest of at most 100 posts a second),
    // not at the fleet's: it gets longer to drain.
    let drain_limit = Duration::from_secs(if args.defaults { 900 } else { 180 });
    let drained = wait_for_drain(&store, drain_limit).await?;

    let mut report = verify(
        &args,
        &store,
        &stub,
        &outcome,
        baseline_rps,
        load_secs,
        drained,
        kills.load(Ordering::Relaxed),
        &fleet_shared,
        &generated,
        receiver.as_ref(),
    )
    .await?;
    report.settings["environment"] = serde_json::to_value(&inherited)?;
    if let Some(mut fleet) = fleet_shared.lock().ok().and_then(|mut f| f.take()) {
        fleet.stop();
    }
    // Nothing may be posted twice, chaos or not: a resumed attempt finds its earlier post by its metadata.
    let duplicates_ok = report.duplicate_effects == 0 && report.effects_beyond_attempts == 0;
    let ok = report.accepted > 0
        && report.unaccepted == 0
        && report.resend_mismatches == 0
        && report.lost == 0
        && report.missing_effects == 0
        && duplicates_ok
        && report.duplicate_completions == 0
        && report.deliveries_missing == 0
        && report.deliveries_beyond_attempts == 0
        && report.left_in_flight == 0;
    std::fs::write(&args.report, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("write {}", args.report.display()))?;
    Ok((report, ok))
}

/// The `EVENTFLEET_*` settings the fleet started here inherits from the generator's environment (those `env`
/// does not set itself), for the report: a figure says what it ran with. Secrets are named, not copied.
fn inherited_settings(env: &HashMap<String, String>) -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.to_string_lossy().into_owned())))
        .filter(|(k, _)| k.starts_with("EVENTFLEET_") && !k.starts_with("EVENTFLEET_TEST_") && !env.contains_key(k))
        .map(|(k, v)| {
            let v = shown(&k, v);
            (k, v)
        })
        .collect()
}

/// A setting's value as a report shows it: `(set)` for what looks like a secret, by its name or its value (a
/// route's `secret_env` may name any variable).
fn shown(name: &str, value: String) -> String {
    let secret_name = ["SECRET", "TOKEN", "WEBHOOK", "KEY", "PASSWORD"].iter().any(|s| name.contains(s));
    let secret_value = ["whsec_", "xox", "xapp-", "https://"].iter().any(|p| value.starts_with(p));
    if secret_name || secret_value { "(set)".to_owned() } else { value }
}

fn fleet_env(slack_url: &str, certs: &std::path::Path, defaults: bool) -> HashMap<String, String> {
    let wiring = [
        ("EVENTFLEET_SLACK_SIGNING_SECRET", SLACK_SECRET.to_owned()),
        ("EVENTFLEET_SLACK_BOT_TOKEN", "xoxb-loadtest".to_owned()),
        ("EVENTFLEET_SLACK_API_URL", slack_url.to_owned()),
        ("EVENTFLEET_SNS_CERT_DIR", certs.display().to_string()),
        ("EVENTFLEET_SNS_TOPIC_CHANNELS", format!("{ALARM_TOPIC}=#lt-alarms")),
        ("EVENTFLEET_METRICS_LISTEN", "127.0.0.1:0".to_owned()),
        ("EVENTFLEET_LOG", "warn".to_owned()),
    ];
    // Alarms thread (each of the 32 alarm ARNs replies in its thread), but the stub has no rate limit to
    // respect, and every event must make a post of its own to be counted: no pace (so no digest, alarm storms
    // included) or flap collapse.
    let tuned = [
        ("EVENTFLEET_SLACK_CHANNEL_INTERVAL_MS", "0".to_owned()),
        ("EVENTFLEET_ALARM_FLAP_REPLIES", "0".to_owned()),
        ("EVENTFLEET_RATE_LIMIT_GLOBAL_RPS", "0".to_owned()),
        ("EVENTFLEET_RATE_LIMIT_PER_IP", "0".to_owned()),
        ("EVENTFLEET_RATE_LIMIT_PER_HOOK_RPS", "0".to_owned()),
        ("EVENTFLEET_WORKER_CONCURRENCY", "32".to_owned()),
        ("EVENTFLEET_RECEIVE_WAIT_S", "1".to_owned()),
        ("EVENTFLEET_VISIBILITY_TIMEOUT_S", "10".to_owned()),
        ("EVENTFLEET_HANDLER_TIMEOUT_S", "5".to_owned()),
        ("EVENTFLEET_DRAIN_TIMEOUT_S", "5".to_owned()),
    ];
    let tuned = if defaults { &[][..] } else { &tuned[..] };
    // The fleet inherits the generator's environment: a setting given there wins over the tuning
    // (`EVENTFLEET_WORKER_CONCURRENCY=128 eventfleet-loadtest run …`).
    let tuned = tuned.iter().filter(|(k, _)| std::env::var_os(k).is_none());
    wiring.iter().chain(tuned).map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
}

/// A generic hook, and a GitHub hook with its secret.
fn create_hooks(fleet: Option<&Fleet>, data_dir: &std::path::Path) -> anyhow::Result<(String, String, String)> {
    let run = |args: &[&str]| -> anyhow::Result<serde_json::Value> {
        let out = match fleet {
            Some(f) => f.command(args)?,
            None => {
                let out = std::process::Command::new(crate::fleet::eventfleet_binary()?)
                    .args(args)
                    .arg("--data-dir")
                    .arg(data_dir)
                    .output()?;
                if !out.status.success() {
                    bail!("hooks create: {}", String::from_utf8_lossy(&out.stderr));
                }
                String::from_utf8(out.stdout)?
            }
        };
        Ok(serde_json::from_str(&out)?)
    };
    let hook = run(&["hooks", "create", "--name", "loadtest", "--channel", "#lt-hooks", "--group-key", "/service"])?;
    let github = run(&["hooks", "create", "--name", "loadtest-github", "--channel", "#lt-github", "--secret"])?;
    let s = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or("").to_owned();
    Ok((s(&hook, "id"), s(&github, "id"), s(&github, "secret")))
}

/// The baseline: the same generator, closed loop, against a plain axum server in a child process.
async fn baseline(args: &RunArgs, traffic: &Traffic) -> anyhow::Result<f64> {
    let me = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(me)
        .args(["baseline", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("baseline stdout")?;
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let line = lines.next_line().await?.context("baseline did not start")?;
    let url = line.trim_start_matches("listening on ").trim().to_owned();
    let secs = (args.duration / 3).clamp(Duration::from_secs(2), Duration::from_secs(10));
    // Prepared like the run's traffic; the baseline keeps nothing, so a few thousand requests are sent in turn.
    let traffic = traffic.clone();
    let pool = tokio::task::spawn_blocking(move || Prepared::sample(&traffic, 4_000)).await?;
    let report =
        crate::drive::closed_loop(&url, args.connections, secs, move |n| pool[n as usize % pool.len()].clone()).await?;
    child.kill().await?;
    Ok(report.rps)
}

fn spawn_chaos_and_sampling(
    args: &RunArgs,
    fleet: Arc<Mutex<Option<Fleet>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    kills: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    let chaos = args.chaos;
    let every = args.chaos_every;
    tokio::task::spawn_blocking(move || {
        let mut last_kill = Instant::now();
        let mut n: u64 = 0;
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(250));
            let Ok(mut guard) = fleet.lock() else { return };
            let Some(f) = guard.as_mut() else { return };
            f.sample();
            if chaos && last_kill.elapsed() >= every {
                last_kill = Instant::now();
                n += 1;
                // A cheap deterministic spread over the processes (no RNG needed): ingress every third kill.
                let index = if n.is_multiple_of(3) { 0 } else { 1 + (n as usize) % (f.procs.len() - 1).max(1) };
                let index = index.min(f.procs.len() - 1);
                match f.kill_and_restart(index) {
                    Ok(()) => {
                        kills.fetch_add(1, Ordering::Relaxed);
                        eprintln!("chaos: killed and restarted {}", f.procs[index].name);
                    }
                    Err(e) => eprintln!("chaos: restart of {} failed: {e:#}", f.procs[index].name),
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn a_report_names_secrets_without_copying_them() {
        assert_eq!(shown("EVENTFLEET_WORKER_CONCURRENCY", "128".into()), "128");
        assert_eq!(shown("EVENTFLEET_SLACK_BOT_TOKEN", "anything".into()), "(set)");
        assert_eq!(shown("EVENTFLEET_SLACK_SIGNING_SECRET", "8f7e".into()), "(set)");
        assert_eq!(shown("EVENTFLEET_TEAMS_WEBHOOK_ONCALL", "x".into()), "(set)");
        // A route's `secret_env` may name any variable: the value gives it away.
        assert_eq!(shown("EVENTFLEET_BOT_WHSEC", "whsec_c2VjcmV0".into()), "(set)");
        assert_eq!(shown("EVENTFLEET_OTHER", "xoxb-1-2".into()), "(set)");
    }
}
