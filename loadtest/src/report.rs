//! What a load-test run is given ([`RunArgs`], [`Shape`]) and what it reports ([`Report`], [`machine`]): shared by
//! the run, its sending and its checks.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::drive::Latency;

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
    /// Route the GitHub traffic to a local HTTP destination too, and check its deliveries.
    pub route: bool,
    /// The fleet started here keeps its default settings, against a stand-in that enforces Slack's limit.
    pub defaults: bool,
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
    /// Some of them, with their outcomes.
    pub missing_examples: Vec<serde_json::Value>,
    /// Alarms counted as flapping in their thread rather than posted (with `--defaults`).
    pub collapsed: u64,
    /// Messages the Slack stand-in accepted (posts, replies, digests).
    pub slack_posts: u64,
    /// Posts the stand-in answered 429 (with `--defaults`, it enforces Slack's limit).
    pub slack_429: u64,
    /// Slack posts beyond one per event.
    pub duplicate_effects: u64,
    /// Posts beyond the number of attempts the audit trail records for their event: a breach of the guarantee
    /// (a duplicate within the attempts is the at-least-once window of a worker killed mid-post).
    pub effects_beyond_attempts: u64,
    /// Up to 10 events posted more than once, with their audit trail.
    pub duplicate_examples: Vec<serde_json::Value>,
    /// Events whose audit trail shows more than one success.
    pub duplicate_completions: u64,
    /// `--route`: events the route matched (GitHub deliveries).
    pub routed: u64,
    /// `--route`: requests the destination received.
    pub deliveries: u64,
    /// `--route`: completed routed events the destination never received.
    pub deliveries_missing: u64,
    /// `--route`: deliveries beyond the attempts recorded for their event (a breach of the guarantee).
    pub deliveries_beyond_attempts: u64,
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

/// The machine and versions the report was measured on.
pub fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| {
        c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
    });
    serde_json::json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_owned()),
        "eventfleet_version": env!("CARGO_PKG_VERSION"),
        "store": "embedded (SQLite, EVENTFLEET_SYNC=full: each answer after its commit is synced)",
    })
}
