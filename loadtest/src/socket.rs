//! The `socket` command: Slack Socket Mode envelopes through a local Socket Mode stub into `eventfleet serve`
//! (ingress and workers in one process) on the embedded store, compared with the same events over HTTP (`/slack/events`) to the same process in the
//! same run. Reports envelopes acked per second, the ack latency (from the stub's send to the ack it read),
//! events on record (none lost), the ingress's peak RSS and its CPU while idle before and after.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use eventfleet_storage::{EmbeddedOptions, EmbeddedStore};
use eventfleet_stubs::slack::SlackStub;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::drive::{self, Latency};
use crate::fleet::Fleet;

/// What the run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Envelopes sent over Socket Mode.
    pub envelopes: u64,
    /// Envelopes acked.
    pub acked: u64,
    /// Acked envelopes whose event is not on record (must be 0).
    pub lost: u64,
    /// Envelopes acked per second.
    pub socket_eps: f64,
    /// From the stub's send to the ack it read.
    pub ack_latency_ms: Latency,
    /// The same events over HTTP, same process, same run.
    pub http_rps: f64,
    /// HTTP request latency.
    pub http_latency_ms: Latency,
    /// `socket_eps / http_rps`.
    pub ratio_to_http: f64,
    /// Connections the ingress kept open.
    pub connections: usize,
    /// Envelopes in flight at most.
    pub window: usize,
    /// The ingress's peak resident memory, MiB.
    pub peak_rss_mib: f64,
    /// The ingress's CPU over 5 s idle with its connections open, before the load, % of one core.
    pub idle_cpu_before_percent: f64,
    /// The same after the load, once the workers have handled every event.
    pub idle_cpu_percent: f64,
}

/// Runs both phases for `duration` each.
pub async fn run(duration: Duration, connections: usize, window: usize) -> anyhow::Result<Report> {
    let (slack, socket) = SlackStub::with_socket_mode().await?;
    let dir = tempfile::tempdir()?;
    let secret = "loadtest-socket-secret";
    let env: HashMap<String, String> = [
        ("EVENTFLEET_SLACK_APP_TOKEN", "xapp-1-ALOAD-1-loadtest"),
        ("EVENTFLEET_SLACK_API_URL", slack.url.as_str()),
        ("EVENTFLEET_SLACK_SOCKET_CONNECTIONS", &connections.to_string()),
        ("EVENTFLEET_SLACK_SIGNING_SECRET", secret),
        ("EVENTFLEET_RATE_LIMIT_GLOBAL_RPS", "0"),
        ("EVENTFLEET_RATE_LIMIT_PER_IP", "0"),
        ("EVENTFLEET_LOG", "warn"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let mut fleet = Fleet::start(dir.path(), env, 0)?;
    let opened = socket.wait_for(Duration::from_secs(30), |s| s.open_connections().len() >= connections).await;
    anyhow::ensure!(opened, "the ingress opened {connections} Socket Mode connections");
    let idle_cpu_before_percent = idle_cpu(fleet.procs[0].pid(), Duration::from_secs(5)).await;

    // HTTP first: the same events (other ids), signed as Slack signs them.
    let now = eventfleet_schema::Timestamp::now_system().as_secs();
    let count = 40_000 * duration.as_secs().max(1);
    let requests: Vec<_> = (0..count).map(|n| crate::traffic::slack_event(secret, 1_000_000_000 + n, now)).collect();
    let http =
        drive::closed_loop(&fleet.base, window, duration, move |n| requests[(n % count) as usize].clone()).await?;
    fleet.sample();
    // The workers finish the HTTP phase's events first, so the two phases meet the same idle store.
    drained(&fleet.base, Duration::from_secs(180)).await?;

    // Socket Mode: keep `window` envelopes unacked at most.
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < duration {
        let (sent, acked) = socket.counts();
        if sent - acked < window as u64 {
            socket.send("events_api", event(n));
            n += 1;
            continue;
        }
        tokio::select! {
            () = socket.changed() => {}
            () = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
    }
    let all = socket.wait_for(Duration::from_secs(60), |s| s.counts().1 == s.counts().0).await;
    let elapsed = started.elapsed();
    fleet.sample();
    let (envelopes, acked) = socket.counts();
    anyhow::ensure!(all, "every envelope acked ({acked} of {envelopes})");

    let mut latency = Histogram::<u64>::new(3)?;
    for id in socket.envelope_ids() {
        if let (Some(d), Some(a)) = (socket.deliveries(&id).first(), socket.acks(&id).first()) {
            latency.record(a.at.duration_since(d.at).as_micros() as u64)?;
        }
    }
    // Closed before the idle measurement: a second process holding the file open is not idle's concern.
    let lost = {
        let store = EmbeddedStore::open_dir(dir.path(), EmbeddedOptions::default())?.into_store();
        let mut lost = 0;
        for i in 0..n {
            let key = eventfleet_schema::IdempotencyKey::slack("TLOAD", &format!("EvSOCK{i:010}"));
            if store.idempotency.get(&key).await.context("read the store")?.is_none() {
                lost += 1;
            }
        }
        lost
    };
    // `serve` runs the workers too: idle is once they have handled every event the run made.
    drained(&fleet.base, Duration::from_secs(180)).await?;
    let idle_cpu_percent = idle_cpu(fleet.procs[0].pid(), Duration::from_secs(5)).await;
    fleet.sample();
    let peak_rss_mib = fleet.procs[0].peak_rss_kib as f64 / 1024.0;
    fleet.stop();
    let socket_eps = acked as f64 / elapsed.as_secs_f64();
    Ok(Report {
        envelopes,
        acked,
        lost,
        socket_eps,
        ack_latency_ms: Latency::from_micros(&latency),
        http_rps: http.rps,
        http_latency_ms: http.latency_ms,
        ratio_to_http: if http.rps > 0.0 { socket_eps / http.rps } else { 0.0 },
        connections,
        window,
        peak_rss_mib,
        idle_cpu_before_percent,
        idle_cpu_percent,
    })
}

fn event(n: u64) -> serde_json::Value {
    serde_json::json!({
        "token": "loadtest", "team_id": "TLOAD", "api_app_id": "ALOAD", "type": "event_callback",
        "event_id": format!("EvSOCK{n:010}"), "event_time": 1_700_000_000 + n,
        "event": {"type": "message", "channel": format!("C{:04}", n % 50), "user": "U0LOAD",
                  "text": format!("socket mode load {n}"), "ts": format!("{}.000100", 1_700_000_000 + n)}
    })
}

/// Waits until the process's workers have handled as many events as its ingress accepted.
async fn drained(base: &str, timeout: Duration) -> anyhow::Result<()> {
    let sum = |text: &str, prefix: &str| -> f64 {
        text.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
    };
    let deadline = Instant::now() + timeout;
    loop {
        let text = reqwest::get(format!("{base}/metrics")).await?.text().await?;
        let accepted = sum(&text, "eventfleet_ingress_accepted_events_total");
        let processed = sum(&text, "eventfleet_worker_processed_total");
        if processed >= accepted {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "the queue did not drain: {processed} of {accepted} handled");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// CPU time (user + system) of `pid` over `window`, as % of one core.
async fn idle_cpu(pid: u32, window: Duration) -> f64 {
    let ticks = || -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may hold spaces) start after the last ')'.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
    };
    let (Some(before), at) = (ticks(), Instant::now()) else { return f64::NAN };
    tokio::time::sleep(window).await;
    let Some(after) = ticks() else { return f64::NAN };
    // USER_HZ is 100 on Linux.
    (after - before) as f64 / 100.0 / at.elapsed().as_secs_f64() * 100.0
}
