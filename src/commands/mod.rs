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
    let service = match cli.command {
        Command::Dev { .. } => "eventfleet-dev",
        Command::Ingress { .. } => "eventfleet-ingress",
        Command::Worker => "eventfleet-worker",
        _ => "eventfleet-cli",
    };
    let _telemetry = crate::telemetry::init(
        config.log_format.unwrap_or(if is_dev { LogFormat::Pretty } else { LogFormat::Json }),
        service,
    );
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

/// Prints a value as one JSON document on stdout.
fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
