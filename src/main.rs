//! `eventfleet`: the one binary of the fleet. Ingress, workers, `dev` (both in one process) and the operator
//! commands. Thin by design: parse arguments, set up logging, hand over to a command module.
//!
//! # Layout
//!
//! - `cli`: the command-line contract (clap).
//! - `config`: settings from `EVENTFLEET_*` variables, validated at start-up.
//! - `backend`: opens the configured storage backend.
//! - `aws_ops`: on AWS, subscription confirmation, ops notices and CloudWatch metrics for the workers.
//! - `shutdown`: SIGTERM / Ctrl-C → one cancellation token.
//! - `telemetry`: logs to stderr, OpenTelemetry export when configured.
//! - `commands`: one module per command family.
//! - `console`: the operator console (`eventfleet console`), a web page on the same ports.
//! - `lookup`: events and dead letters by the names operators know them by (CLI and console alike).
//! - `when`: times as operators type them.

mod aws_ops;
mod backend;
mod cli;
mod commands;
mod config;
mod console;
mod lookup;
mod shutdown;
mod telemetry;
mod when;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
