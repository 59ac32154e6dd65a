//! One module per command family; [`run`] dispatches.

mod dlq;
mod events;
mod hooks;
mod serve;
mod status;
mod verify;

use std::process::ExitCode;

use crate::cli::{Cli, Command, TablesCommand};
use crate::config::{Config, LogFormat};

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = Config::from_env()?;
    let is_dev = matches!(cli.command, Command::Dev { .. });
    init_logging(config.log_format.unwrap_or(if is_dev { LogFormat::Pretty } else { LogFormat::Json }));
    let data_dir = cli.data_dir;
    match cli.command {
        Command::Dev { listen, workers } => serve::dev(config, &data_dir, listen, workers).await,
        Command::Ingress { listen } => serve::ingress(config, &data_dir, listen).await,
        Command::Worker => serve::worker(config, &data_dir).await,
        Command::Hooks { command } => hooks::run(&config, &data_dir, command).await,
        Command::Events { command } => events::run(&config, &data_dir, command).await,
        Command::Dlq { command } => dlq::run(&config, &data_dir, command).await,
        Command::Outbox(flag) => status::outbox(&data_dir, flag.json),
        Command::Status(flag) => status::status(&config, &data_dir, flag.json).await,
        Command::Verify { command } => verify::run(command).await,
        Command::Tables { command: TablesCommand::Create } => {
            let _store = crate::backend::open(&config, &data_dir)?;
            println!("{}", serde_json::json!({ "backend": "embedded", "path": data_dir.join("fleet.db") }));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Logs go to stderr; stdout is kept for command output (JSON documents, the `dev` banner).
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EVENTFLEET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // A second initialisation (never in the binary) would only be ignored.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}

/// Prints a value as one JSON document on stdout.
fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
