//! `eventfleet-loadtest`: drives signed traffic at an eventfleet ingress and at a plain axum baseline, and reports
//! throughput and latency percentiles.
//!
//! # Layout
//!
//! - `traffic`: signed requests (Slack events for now).
//! - `drive`: the closed-loop driver and its HDR histogram.
//! - `baseline`: the plain axum server returning 200 that every figure is compared with.

mod baseline;
mod drive;
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
    /// Serve the baseline: a plain axum handler answering 200 to any POST.
    Baseline {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
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
        Command::Baseline { listen } => baseline::serve(listen).await,
        Command::Slack { target, secret, duration, concurrency } => {
            let url = format!("{}/slack/events", target.trim_end_matches('/'));
            let report = drive::closed_loop(&url, concurrency, Duration::from_secs(duration), move |n| {
                traffic::slack_event(&secret, n)
            })
            .await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
    }
}
