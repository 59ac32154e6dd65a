//! `eventfleet-loadtest`: drives signed traffic at an eventfleet ingress and at a plain axum baseline, and reports
//! throughput and latency percentiles.
//!
//! # Layout
//!
//! - `traffic`: the signed traffic mix (Slack events and retries, GitHub deliveries and redeliveries, hook
//!   payloads, SNS CloudWatch alarms).
//! - `drive`: the closed-loop driver and latency percentiles.
//! - `fleet`: starts, kills and restarts `eventfleet` processes and samples their memory.
//! - `prepare`: the traffic built and signed before the timed phase, and the generator's own CPU time.
//! - `run`: the `run` command: starts the fleet, the load, chaos, and writes the report.
//! - `send`: the timed phase, open or closed loop, with senders' retries and resends.
//! - `receiver`: the local HTTP destination of `--route`.
//! - `checks`: after the run, nothing lost, nothing handled twice, nothing left in flight.
//! - `baseline`: the plain axum server returning 200 that every figure is compared with.
//! - `socket`: Slack Socket Mode envelopes through a local stub, against the same events over HTTP.

mod baseline;
mod checks;
mod drive;
mod fleet;
mod prepare;
mod receiver;
mod report;
mod run;
mod send;
mod socket;
mod traffic;

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Load generator for eventfleet.
#[derive(Debug, Parser)]
#[command(name = "eventfleet-loadtest", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Realistic signed traffic against a fleet (started here unless `--target`), optional chaos, then checks
    /// that nothing was lost or duplicated; writes a JSON report and exits 1 on any loss or duplicate.
    Run {
        /// How long to send: `90s`, `5m`, or seconds.
        #[arg(long, default_value = "30s")]
        duration: String,
        /// Events per second (open loop), or `max` (closed loop).
        #[arg(long, default_value = "max")]
        rate: String,
        /// Kill a random fleet process every few seconds and restart it.
        #[arg(long)]
        chaos: bool,
        /// Seconds between chaos kills.
        #[arg(long, default_value_t = 3)]
        chaos_every: u64,
        /// An already running ingress (its store given with `--data-dir`).
        #[arg(long)]
        target: Option<String>,
        /// The target fleet's data directory.
        #[arg(long)]
        data_dir: Option<std::path::PathBuf>,
        /// Worker processes of the fleet started here.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Requests in flight at most.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// The JSON report.
        #[arg(long, default_value = "loadtest-report.json")]
        report: std::path::PathBuf,
        /// Events prepared (built and signed before the timed phase) for `--rate max`; default 12,000 a second
        /// of the duration.
        #[arg(long)]
        max_events: Option<u64>,
        /// The fleet started here: `processes` (an ingress and `--workers` worker processes on one store) or
        /// `one-process` (`eventfleet serve`).
        #[arg(long, value_enum, default_value = "processes")]
        shape: report::Shape,
        /// Also deliver the GitHub traffic to a local HTTP destination (a route with `also_builtin`) and check
        /// each delivery arrived, none beyond its recorded attempts.
        #[arg(long)]
        route: bool,
        /// The fleet started here runs with its default settings (the channel pace, burst digests (alarm storms
        /// among them) and flapping, the worker's concurrency and timeouts), and the Slack stand-in enforces Slack's limit
        /// (one post a second per channel, bursts of 3, 429 with `Retry-After` past it). Without it, the fleet
        /// runs without a pace against a stand-in without limits, every event a post of its own: a measure of
        /// the fleet, not of Slack's rate.
        #[arg(long)]
        defaults: bool,
    },
    /// Serve the baseline: a plain axum handler answering 200 to any POST.
    Baseline {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// Slack Socket Mode: envelopes from a local Socket Mode stub to `eventfleet serve` (embedded store),
    /// then the same events over HTTP to the same process; prints one JSON report.
    Socket {
        /// Seconds per phase.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Socket Mode connections of the ingress.
        #[arg(long, default_value_t = 2)]
        connections: usize,
        /// Envelopes (and HTTP requests) in flight at most.
        #[arg(long, default_value_t = 64)]
        window: usize,
    },
    /// Closed loop of signed Slack events against a target; prints one JSON report.
    Slack {
        /// Base URL of the target (`http://127.0.0.1:8080`); the path `/slack/events` is appended.
        #[arg(long)]
        target: String,
        /// The target's Slack signing secret.
        #[arg(long, env = "EVENTFLEET_SLACK_SIGNING_SECRET")]
        secret: String,
        /// How long to run, in seconds.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Requests in flight.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run {
            duration,
            rate,
            chaos,
            chaos_every,
            target,
            data_dir,
            workers,
            connections,
            report,
            max_events,
            shape,
            route,
            defaults,
        } => {
            let duration = parse_duration(&duration)?;
            let args = report::RunArgs {
                duration,
                rate: match rate.as_str() {
                    "max" => None,
                    n => Some(n.parse().map_err(|_| anyhow::anyhow!("--rate takes a number or `max`"))?),
                },
                chaos,
                chaos_every: Duration::from_secs(chaos_every.max(1)),
                target,
                data_dir,
                workers: workers.max(1),
                connections: connections.max(1),
                report,
                max_events: max_events.unwrap_or(12_000 * duration.as_secs().max(1)),
                shape,
                route,
                defaults,
            };
            let (report, ok) = run::run(args.clone()).await?;
            print_summary(&report, &args);
            if !ok {
                anyhow::bail!("the fleet lost, duplicated or left events in flight: see {}", args.report.display());
            }
            Ok(())
        }
        Command::Baseline { listen } => baseline::serve(listen).await,
        Command::Socket { duration, connections, window } => {
            let report =
                socket::run(Duration::from_secs(duration.max(1)), connections.clamp(1, 10), window.max(1)).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            anyhow::ensure!(report.lost == 0, "{} acked envelopes have no event on record", report.lost);
            Ok(())
        }
        Command::Slack { target, secret, duration, concurrency } => {
            let url = target.trim_end_matches('/').to_owned();
            // Built and signed before the timed phase (40,000 a second of the run, above what this machine
            // serves), each stamped with the time it is expected to go out; sent in turn after that.
            let count = 40_000 * duration.max(1);
            let now = eventfleet_schema::Timestamp::now_system().as_secs();
            let requests: Vec<_> = (0..count)
                .map(|n| traffic::slack_event(&secret, n, now + (n * duration.max(1) / count) as i64))
                .collect();
            let report = drive::closed_loop(&url, concurrency, Duration::from_secs(duration), move |n| {
                requests[(n % count) as usize].clone()
            })
            .await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
    }
}

fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let (num, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = num.parse().map_err(|_| anyhow::anyhow!("bad duration {text:?}"))?;
    Ok(match unit {
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "ms" => Duration::from_millis(n),
        _ => anyhow::bail!("bad duration unit in {text:?}"),
    })
}

fn print_summary(r: &report::Report, args: &report::RunArgs) {
    let l = &r.ingress_latency_ms;
    let e = &r.e2e_latency_ms;
    println!(
        "eventfleet load test: {} s, rate {}, chaos {}, {}",
        args.duration.as_secs(),
        args.rate.map_or("max".into(), |n| n.to_string()),
        args.chaos,
        if args.defaults { "default settings, Slack's limit enforced" } else { "no pace, Slack without limits" }
    );
    println!(
        "  accepted {}  completed {}  lost {}  left in flight {}  dead-lettered {}  unaccepted {}  resend mismatches {}",
        r.accepted, r.completed, r.lost, r.left_in_flight, r.dead_lettered, r.unaccepted, r.resend_mismatches
    );
    println!(
        "  duplicate effects {} (beyond recorded attempts: {})  duplicate completions {}  done without audit line {}",
        r.duplicate_effects, r.effects_beyond_attempts, r.duplicate_completions, r.completed_without_audit
    );
    println!(
        "  missing effects {}  Slack messages {}  answered 429 {}  alarms counted as flapping {}",
        r.missing_effects, r.slack_posts, r.slack_429, r.collapsed
    );
    if args.route {
        println!(
            "  routed {}  deliveries {} (missing {}, beyond recorded attempts {})",
            r.routed, r.deliveries, r.deliveries_missing, r.deliveries_beyond_attempts
        );
    }
    println!(
        "  throughput {:.0} events/s end to end; ingress {:.0} req/s; baseline {:.0} req/s; ratio {:.2}",
        r.throughput_eps, r.ingress_rps, r.baseline_rps, r.ratio_to_baseline
    );
    println!(
        "  ingress latency ms  p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        l.p50, l.p90, l.p99, l.p999, l.max
    );
    println!(
        "  end-to-end ms       p50 {:.0}  p90 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}",
        e.p50, e.p90, e.p99, e.p999, e.max
    );
    println!("  statuses {:?}  kills {}  peak RSS MiB {:?}", r.status_counts, r.kills, r.peak_rss_mib);
    println!(
        "  generator: {} events prepared in {:.1} s; {:.1} CPU s while sending ({:.2} cores)",
        r.prepared_events, r.prepare_secs, r.generator_cpu_secs, r.generator_cores
    );
}
