//! `eventfleet-loadtest run`: realistic signed traffic against a fleet (started here unless `--target`), optional
//! chaos (SIGKILL a random process every few seconds and restart it), then verification against the store and the
//! Slack stub: every event answered 2xx completed exactly once, duplicates not handled again, nothing lost or left
//! in flight. A plain axum baseline is driven by the same generator in the same run.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use eventfleet_schema::{EventId, Status, Step};
use eventfleet_storage::{AuditQuery, EmbeddedOptions, EmbeddedStore};
use eventfleet_workers::slack_stub::SlackStub;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::drive::Latency;
use crate::fleet::Fleet;
use crate::prepare::Prepared;
use crate::traffic::{ALARM_TOPIC, Planned, Request, Traffic, marker};

/// The test certificate and key the fleet is told to trust for the run (`EVENTFLEET_SNS_CERT_DIR`).
const TEST_CERT: &str = include_str!("../../testdata/sns/SimpleNotificationService-eventfleet-test.pem");
const TEST_KEY: &str = include_str!("../../testdata/sns/test-signing-key.pem");
const SLACK_SECRET: &str = "loadtest-signing-secret";

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct RunArgs {
    /// How long to send.
    pub duration: Duration,
    /// Events per second (open loop), or `None` for as fast as `connections` allow (closed loop).
    pub rate: Option<u64>,
    /// Kill and restart a random process every `chaos_every`.
    pub chaos: bool,
    /// How often chaos strikes.
    pub chaos_every: Duration,
    /// An external fleet instead of one started here.
    pub target: Option<String>,
    /// The external fleet's data directory (hooks are created and results verified there).
    pub data_dir: Option<PathBuf>,
    /// Worker processes of a fleet started here.
    pub workers: usize,
    /// Requests in flight at most.
    pub connections: usize,
    /// Where the JSON report goes.
    pub report: PathBuf,
    /// Events prepared for a closed-loop run (`--rate max`); the run ends early when they are all sent.
    pub max_events: u64,
    /// How the fleet started here runs: an ingress and `workers` worker processes, or one `eventfleet serve`.
    pub shape: Shape,
}

/// The two single-machine shapes of a fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Shape {
    /// `eventfleet ingress` plus `--workers` `eventfleet worker` processes on one store file.
    Processes,
    /// One `eventfleet serve` process: ingress and workers together.
    OneProcess,
}

/// The report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Events answered 2xx.
    pub accepted: u64,
    /// Events (or resends) refused with a 4xx, or never answered 2xx after the sender's retries.
    pub unaccepted: u64,
    /// Resends answered with a different event id than their first delivery (a deduplication failure).
    pub resend_mismatches: u64,
    /// Accepted events handled to success.
    pub completed: u64,
    /// Accepted events never completed.
    pub lost: u64,
    /// Events DONE in the ledger whose `succeeded` audit line is missing (a crash between the two writes).
    pub completed_without_audit: u64,
    /// Up to 10 lost events with their ledger state, for diagnosis.
    pub lost_examples: Vec<serde_json::Value>,
    /// Completed events that should have posted to Slack but did not.
    pub missing_effects: u64,
    /// Slack posts beyond one per event.
    pub duplicate_effects: u64,
    /// Posts beyond the number of attempts the audit trail records for their event: a breach of the guarantee
    /// (a duplicate within the attempts is the at-least-once window of a worker killed mid-post).
    pub effects_beyond_attempts: u64,
    /// Up to 10 events posted more than once, with their audit trail.
    pub duplicate_examples: Vec<serde_json::Value>,
    /// Events whose audit trail shows more than one success.
    pub duplicate_completions: u64,
    /// Events dead-lettered.
    pub dead_lettered: u64,
    /// Messages waiting or in flight after the drain.
    pub left_in_flight: u64,
    /// Second deliveries (Slack retries, GitHub redeliveries) sent.
    pub resends: u64,
    /// Completed events per second, first receipt to last completion.
    pub throughput_eps: f64,
    /// Request latency (from the scheduled send time in open loop).
    pub ingress_latency_ms: Latency,
    /// Ingress receipt to handler completion.
    pub e2e_latency_ms: Latency,
    /// The plain axum baseline's requests per second with the same generator.
    pub baseline_rps: f64,
    /// Ingress requests per second divided by the baseline's.
    pub ratio_to_baseline: f64,
    /// Ingress requests per second during the load phase.
    pub ingress_rps: f64,
    /// Events prepared (built and signed) before the timed phase.
    pub prepared_events: u64,
    /// Seconds spent preparing them (not part of any figure).
    pub prepare_secs: f64,
    /// CPU seconds the load generator itself used during the timed phase.
    pub generator_cpu_secs: f64,
    /// The same, as cores busy on average (of the machine's `machine.cpus`).
    pub generator_cores: f64,
    /// Answers by status (`error`: no answer).
    pub status_counts: BTreeMap<String, u64>,
    /// Accepted events by source.
    pub accepted_by_source: BTreeMap<String, u64>,
    /// Processes killed by chaos.
    pub kills: u64,
    /// Peak resident memory per process role, MiB.
    pub peak_rss_mib: BTreeMap<String, f64>,
    /// The settings.
    pub settings: serde_json::Value,
    /// The machine and versions.
    pub machine: serde_json::Value,
}

struct Outcome {
    event_ids: Mutex<HashMap<u64, (EventId, &'static str, bool)>>,
    statuses: Mutex<BTreeMap<String, u64>>,
    latency: Mutex<Histogram<u64>>,
    requests: AtomicU64,
    resends: AtomicU64,
    /// Events refused (4xx) or never answered 2xx after all retries.
    unaccepted: AtomicU64,
    /// Resends answered with another event id than the first delivery.
    resend_mismatches: AtomicU64,
}

/// Runs the load test.
pub async fn run(args: RunArgs) -> anyhow::Result<(Report, bool)> {
    let work = tempfile::tempdir()?;
    let stub = SlackStub::start().await?;
    let (mut fleet, base, data_dir) = match &args.target {
        Some(target) => {
            let dir = args.data_dir.clone().context("--target needs --data-dir (its store, for hooks and checks)")?;
            (None, target.trim_end_matches('/').to_owned(), dir)
        }
        None => {
            let certs = work.path().join("certs");
            std::fs::create_dir_all(&certs)?;
            std::fs::write(certs.join("SimpleNotificationService-eventfleet-test.pem"), TEST_CERT)?;
            let data = work.path().join("data");
            let env = fleet_env(&stub.url, &certs);
            let workers = if args.shape == Shape::OneProcess { 0 } else { args.workers };
            let fleet = Fleet::start(&data, env, workers)?;
            let base = fleet.base.clone();
            (Some(fleet), base, data)
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
    let drained = wait_for_drain(&store, Duration::from_secs(180)).await?;

    let report = verify(
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
    )
    .await?;
    if let Some(mut fleet) = fleet_shared.lock().ok().and_then(|mut f| f.take()) {
        fleet.stop();
    }
    // Without chaos nothing may be posted twice; under chaos a post may repeat only for a recorded attempt.
    let duplicates_ok = if args.chaos { report.effects_beyond_attempts == 0 } else { report.duplicate_effects == 0 };
    let ok = report.accepted > 0
        && report.unaccepted == 0
        && report.resend_mismatches == 0
        && report.lost == 0
        && report.missing_effects == 0
        && duplicates_ok
        && report.duplicate_completions == 0
        && report.left_in_flight == 0;
    std::fs::write(&args.report, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("write {}", args.report.display()))?;
    Ok((report, ok))
}

fn fleet_env(slack_url: &str, certs: &std::path::Path) -> HashMap<String, String> {
    [
        ("EVENTFLEET_SLACK_SIGNING_SECRET", SLACK_SECRET.to_owned()),
        ("EVENTFLEET_SLACK_BOT_TOKEN", "xoxb-loadtest".to_owned()),
        ("EVENTFLEET_SLACK_API_URL", slack_url.to_owned()),
        ("EVENTFLEET_SNS_CERT_DIR", certs.display().to_string()),
        ("EVENTFLEET_SNS_TOPIC_CHANNELS", format!("{ALARM_TOPIC}=#lt-alarms")),
        ("EVENTFLEET_RATE_LIMIT_GLOBAL_RPS", "0".to_owned()),
        ("EVENTFLEET_RATE_LIMIT_PER_IP", "0".to_owned()),
        ("EVENTFLEET_RATE_LIMIT_PER_HOOK_RPS", "0".to_owned()),
        ("EVENTFLEET_WORKER_CONCURRENCY", "32".to_owned()),
        ("EVENTFLEET_RECEIVE_WAIT_S", "1".to_owned()),
        ("EVENTFLEET_VISIBILITY_TIMEOUT_S", "10".to_owned()),
        ("EVENTFLEET_HANDLER_TIMEOUT_S", "5".to_owned()),
        ("EVENTFLEET_DRAIN_TIMEOUT_S", "5".to_owned()),
        ("EVENTFLEET_METRICS_LISTEN", "127.0.0.1:0".to_owned()),
        ("EVENTFLEET_LOG", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
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
    let hook = run(&["hooks", "create", "--name", "loadtest", "--channel", "#lt-hooks"])?;
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

/// What the sending phase measured of itself.
struct Generated {
    /// Seconds of the timed phase.
    load_secs: f64,
    /// Events prepared before it.
    prepared: usize,
    /// Seconds the preparation took.
    prepare_secs: f64,
    /// CPU seconds the generator used during the timed phase.
    cpu_secs: f64,
}

/// Prepares the traffic, then sends it: open loop at `rate`, or closed loop with `connections` senders.
async fn generate(args: &RunArgs, base: &str, traffic: &Traffic, outcome: Arc<Outcome>) -> anyhow::Result<Generated> {
    let (count, spacing) = match args.rate {
        Some(rate) => {
            let rate = rate.max(1);
            (rate * args.duration.as_secs().max(1) + rate, Duration::from_secs_f64(1.0 / rate as f64))
        }
        None => {
            let count = args.max_events.max(1);
            (count, args.duration / u32::try_from(count).unwrap_or(u32::MAX))
        }
    };
    let prepared = {
        let traffic = traffic.clone();
        Arc::new(tokio::task::spawn_blocking(move || Prepared::new(&traffic, count, spacing)).await?)
    };
    eprintln!("prepared {} events in {:.1} s", prepared.count, prepared.took.as_secs_f64());
    let http =
        reqwest::Client::builder().pool_max_idle_per_host(args.connections).timeout(Duration::from_secs(10)).build()?;
    let cpu_before = crate::prepare::cpu_time();
    let started = Instant::now();
    let deadline = started + args.duration;
    let slots = Arc::new(tokio::sync::Semaphore::new(args.connections));
    let progress = tokio::spawn({
        let outcome = outcome.clone();
        async move {
            let start = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let accepted = outcome.event_ids.lock().map(|m| m.len()).unwrap_or(0);
                let sent = outcome.requests.load(Ordering::Relaxed);
                eprintln!("t={:>4.0}s requests={sent} accepted={accepted}", start.elapsed().as_secs_f64());
            }
        }
    });
    let mut tasks = tokio::task::JoinSet::new();
    match args.rate {
        Some(rate) => {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            while Instant::now() < deadline {
                let scheduled = tick.tick().await.into_std();
                let permit = slots.clone().acquire_owned().await?;
                let Some((n, planned)) = prepared.next() else { break };
                let (http, base, outcome) = (http.clone(), base.to_owned(), outcome.clone());
                tasks.spawn(async move {
                    deliver(&http, &base, n, planned, scheduled, &outcome).await;
                    drop(permit);
                });
                while tasks.try_join_next().is_some() {}
            }
        }
        None => {
            for _ in 0..args.connections {
                let (http, base, outcome, prepared) =
                    (http.clone(), base.to_owned(), outcome.clone(), prepared.clone());
                tasks.spawn(async move {
                    while Instant::now() < deadline {
                        let Some((n, planned)) = prepared.next() else { break };
                        deliver(&http, &base, n, planned, Instant::now(), &outcome).await;
                    }
                });
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    progress.abort();
    let load_secs = started.elapsed().as_secs_f64();
    if prepared.next().is_none() && load_secs + 0.5 < args.duration.as_secs_f64() {
        eprintln!("all {} prepared events sent before the duration ran out: raise --max-events", prepared.count);
    }
    Ok(Generated {
        load_secs,
        prepared: prepared.count,
        prepare_secs: prepared.took.as_secs_f64(),
        cpu_secs: (crate::prepare::cpu_time().saturating_sub(cpu_before)).as_secs_f64(),
    })
}

/// Sends one event (retrying as senders do on 5xx and connection errors), then its resend if any.
async fn deliver(http: &reqwest::Client, base: &str, n: u64, planned: Planned, scheduled: Instant, outcome: &Outcome) {
    let Planned { source, first, resend, posts } = planned;
    if let Some(id) = send_with_retries(http, base, &first, scheduled, outcome).await {
        if let Ok(mut ids) = outcome.event_ids.lock() {
            ids.insert(n, (id, source, posts));
        }
        if let Some(again) = resend {
            outcome.resends.fetch_add(1, Ordering::Relaxed);
            match send_with_retries(http, base, &again, Instant::now(), outcome).await {
                Some(dup) if dup == id => {}
                Some(dup) => {
                    outcome.resend_mismatches.fetch_add(1, Ordering::Relaxed);
                    eprintln!("resend of event {n} answered a different event id: {dup} vs {id}");
                }
                None => {
                    outcome.unaccepted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    } else {
        outcome.unaccepted.fetch_add(1, Ordering::Relaxed);
    }
}

async fn send_with_retries(
    http: &reqwest::Client,
    base: &str,
    req: &Request,
    scheduled: Instant,
    outcome: &Outcome,
) -> Option<EventId> {
    for attempt in 0..20u32 {
        let mut builder =
            http.post(format!("{base}{}", req.path)).header("content-type", req.content_type).body(req.body.clone());
        for (k, v) in &req.headers {
            builder = builder.header(*k, v);
        }
        let sent = if attempt == 0 { scheduled } else { Instant::now() };
        outcome.requests.fetch_add(1, Ordering::Relaxed);
        let answer = builder.send().await;
        let micros = sent.elapsed().as_micros() as u64;
        if let Ok(mut h) = outcome.latency.lock() {
            h.saturating_record(micros.max(1));
        }
        let (status, id) = match answer {
            Ok(resp) => {
                let status = resp.status();
                let body: Option<serde_json::Value> = resp.json().await.ok();
                let id = body.as_ref().and_then(|b| b["event_id"].as_str()).and_then(EventId::parse);
                (status.as_u16().to_string(), status.is_success().then_some(id).flatten())
            }
            Err(_) => ("error".to_owned(), None),
        };
        if let Ok(mut s) = outcome.statuses.lock() {
            *s.entry(status.clone()).or_default() += 1;
        }
        if id.is_some() {
            return id;
        }
        if !(status == "error" || status.starts_with('5') || status == "429") {
            eprintln!("request to {} refused with {status}", req.path);
            return None;
        }
        // The sender's retry, like Slack's and SNS's: after a pause, the same request.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

async fn wait_for_drain(store: &eventfleet_storage::Store, limit: Duration) -> anyhow::Result<bool> {
    let deadline = Instant::now() + limit;
    let mut quiet = 0;
    while Instant::now() < deadline {
        let stats = store.queue.stats().await?;
        if stats.waiting + stats.in_flight == 0 {
            quiet += 1;
            if quiet >= 3 {
                return Ok(true);
            }
        } else {
            quiet = 0;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(false)
}

#[allow(clippy::too_many_arguments)]
async fn verify(
    args: &RunArgs,
    store: &eventfleet_storage::Store,
    stub: &SlackStub,
    outcome: &Outcome,
    baseline_rps: f64,
    load_secs: f64,
    drained: bool,
    kills: u64,
    fleet: &Arc<Mutex<Option<Fleet>>>,
    generated: &Generated,
) -> anyhow::Result<Report> {
    let accepted: HashMap<u64, (EventId, &'static str, bool)> =
        outcome.event_ids.lock().map(|m| m.clone()).unwrap_or_default();
    let received = store.audit.query(&AuditQuery { step: Some(Step::Received), ..Default::default() }).await?;
    let succeeded = store.audit.query(&AuditQuery { step: Some(Step::Succeeded), ..Default::default() }).await?;
    let dead = store.audit.query(&AuditQuery { step: Some(Step::DeadLettered), ..Default::default() }).await?;
    let mut first_received: HashMap<EventId, i64> = HashMap::new();
    for e in &received {
        first_received.entry(e.event_id).or_insert(e.at.as_millis());
    }
    let mut successes: HashMap<EventId, (u32, i64)> = HashMap::new();
    for e in &succeeded {
        let entry = successes.entry(e.event_id).or_insert((0, e.at.as_millis()));
        entry.0 += 1;
    }
    let mut e2e = Histogram::<u64>::new_with_bounds(1, 3_600_000, 3)?;
    let (mut completed, mut lost, mut duplicate_completions) = (0u64, 0u64, 0u64);
    let mut lost_examples = Vec::new();
    let mut completed_without_audit = 0u64;
    let mut by_source: BTreeMap<String, u64> = BTreeMap::new();
    let (mut first_at, mut last_at) = (i64::MAX, i64::MIN);
    for (id, source, _) in accepted.values() {
        *by_source.entry((*source).to_owned()).or_default() += 1;
        match successes.get(id) {
            Some((count, at)) => {
                completed += 1;
                if *count > 1 {
                    duplicate_completions += 1;
                }
                if let Some(r) = first_received.get(id) {
                    e2e.saturating_record((at - r).max(1) as u64);
                    first_at = first_at.min(*r);
                }
                last_at = last_at.max(*at);
            }
            // No `succeeded` line: the idempotency record is the source of truth.
            None if store.idempotency.find_by_event(*id).await?.is_some_and(|r| r.status == Status::Done) => {
                completed += 1;
                completed_without_audit += 1;
            }
            None => {
                lost += 1;
                if lost_examples.len() < 10 {
                    let record = store.idempotency.find_by_event(*id).await?;
                    let steps: Vec<String> =
                        store.audit.history(*id).await?.iter().map(|e| format!("{}@{}", e.step, e.actor)).collect();
                    lost_examples.push(serde_json::json!({
                        "event_id": id, "source": source,
                        "status": record.as_ref().map(|r| r.status.as_str()),
                        "outcome": record.and_then(|r| r.outcome), "steps": steps,
                    }));
                }
            }
        }
    }
    // Effects: posts per marker, for events that post.
    let mut posts: HashMap<u64, u64> = HashMap::new();
    for p in stub.posted() {
        let text = p["text"].as_str().unwrap_or("").to_owned() + &p["blocks"].to_string();
        if let Some(m) = marker(&text) {
            *posts.entry(m).or_default() += 1;
        }
    }
    let duplicate_effects: u64 = posts.values().map(|c| c.saturating_sub(1)).sum();
    let mut duplicate_examples = Vec::new();
    let mut effects_beyond_attempts = 0u64;
    for (n, (id, _, _)) in accepted.iter().filter(|(n, _)| posts.get(n).is_some_and(|c| *c > 1)) {
        let attempts = store.audit.history(*id).await?.iter().filter(|e| e.step == Step::Started).count() as u64;
        effects_beyond_attempts += posts[n].saturating_sub(attempts.max(1));
    }
    for (n, (id, _, _)) in accepted.iter().filter(|(n, _)| posts.get(n).is_some_and(|c| *c > 1)).take(10) {
        let steps: Vec<String> =
            store.audit.history(*id).await?.iter().map(|e| format!("{}@{}", e.step, e.actor)).collect();
        duplicate_examples.push(serde_json::json!({ "marker": n, "event_id": id, "posts": posts[n], "steps": steps }));
    }
    let missing_effects = accepted.iter().filter(|(n, (_, _, p))| *p && !posts.contains_key(n)).count() as u64;
    let stats = store.queue.stats().await?;
    let left_in_flight = stats.waiting + stats.in_flight;
    let span_secs = if last_at > first_at { (last_at - first_at) as f64 / 1000.0 } else { load_secs };
    let requests = outcome.requests.load(Ordering::Relaxed) as f64;
    let ingress_rps = requests / load_secs.max(0.001);
    let latency = outcome.latency.lock().map(|h| Latency::from_micros(&h)).unwrap_or(Latency::zero());
    let mut peak: BTreeMap<String, f64> = BTreeMap::new();
    if let Ok(guard) = fleet.lock()
        && let Some(f) = guard.as_ref()
    {
        for p in &f.procs {
            let role = if p.name.starts_with("worker") { "worker" } else { p.name.as_str() };
            let mib = p.peak_rss_kib as f64 / 1024.0;
            let e = peak.entry(role.to_owned()).or_insert(0.0);
            *e = e.max(mib);
        }
    }
    Ok(Report {
        accepted: accepted.len() as u64,
        unaccepted: outcome.unaccepted.load(Ordering::Relaxed),
        resend_mismatches: outcome.resend_mismatches.load(Ordering::Relaxed),
        completed,
        lost,
        lost_examples,
        completed_without_audit,
        missing_effects,
        duplicate_effects,
        effects_beyond_attempts,
        duplicate_examples,
        duplicate_completions,
        dead_lettered: dead.len() as u64,
        left_in_flight: if drained { left_in_flight } else { left_in_flight.max(1) },
        resends: outcome.resends.load(Ordering::Relaxed),
        throughput_eps: completed as f64 / span_secs.max(0.001),
        ingress_latency_ms: latency,
        e2e_latency_ms: Latency::from_millis(&e2e),
        baseline_rps,
        ratio_to_baseline: if baseline_rps > 0.0 { ingress_rps / baseline_rps } else { 0.0 },
        ingress_rps,
        prepared_events: generated.prepared as u64,
        prepare_secs: generated.prepare_secs,
        generator_cpu_secs: generated.cpu_secs,
        generator_cores: generated.cpu_secs / load_secs.max(0.001),
        status_counts: outcome.statuses.lock().map(|s| s.clone()).unwrap_or_default(),
        accepted_by_source: by_source,
        kills,
        peak_rss_mib: peak,
        settings: serde_json::json!({
            "duration_s": args.duration.as_secs(), "rate": args.rate, "chaos": args.chaos,
            "workers": args.workers, "connections": args.connections, "target": args.target, "shape": args.shape,
        }),
        machine: machine(),
    })
}

fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| {
        c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
    });
    serde_json::json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_owned()),
        "eventfleet_version": env!("CARGO_PKG_VERSION"),
        "store": "embedded (SQLite, synchronous=FULL)",
    })
}
