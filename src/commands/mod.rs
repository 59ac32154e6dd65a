//! One module per command family; [`run`] dispatches.

mod dlq;
mod events;
pub(crate) mod hooks;
mod schedules;
mod serve;
mod slack;
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
        Command::Serve { .. } => "eventfleet",
        Command::Console { .. } => "eventfleet-console",
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
        Command::Serve { listen } => serve::serve(config, &data_dir, listen).await,
        Command::Console { listen } => crate::console::run(config, &data_dir, listen).await,
        Command::Hooks { command } => hooks::run(&config, &data_dir, command).await,
        Command::Schedules { command } => schedules::run(&config, &data_dir, command).await,
        Command::Events { command } => events::run(&config, &data_dir, command).await,
        Command::Dlq { command } => dlq::run(&config, &data_dir, command).await,
        Command::Outbox(flag) => status::outbox(&config, &data_dir, flag.json),
        Command::Status(flag) => status::status(&config, &data_dir, flag.json).await,
        Command::Verify { command } => verify::run(command).await,
        Command::Slack { command } => slack::run(&config, command),
        Command::Tables { command: TablesCommand::Create } => tables_create(&config, &data_dir).await,
        Command::Tables { command: TablesCommand::Describe(flag) } => {
            let description = config.aws.names.describe(config.worker.max_receive_count);
            if flag.json {
                print_json(&description)?;
            } else {
                for q in &description.queues {
                    say!("queue  {:<12} {}", q.role, q.name);
                }
                for t in &description.tables {
                    let range = t.range_key.as_ref().map_or(String::new(), |r| format!(", range {}", r.name));
                    let ttl = t.ttl_attribute.map_or(String::new(), |a| format!(", ttl {a}"));
                    say!("table  {:<12} {} (hash {}{range}{ttl})", t.role, t.name, t.hash_key.name);
                }
                for t in &description.topics {
                    say!("topic  {:<12} {}", t.role, t.name);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `eventfleet tables create`.
async fn tables_create(config: &Config, data_dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    match config.backend {
        crate::config::Backend::Embedded => {
            let _store = crate::backend::open(config, data_dir).await?;
            print_json(&serde_json::json!({ "backend": "embedded", "path": data_dir.join("fleet.db") }))?;
        }
        crate::config::Backend::Aws => {
            let sdk = crate::backend::sdk_config(config).await?;
            let clients = eventfleet_storage::aws::Clients::new(&sdk, None);
            let done = eventfleet_storage::aws::provision::create(
                &clients,
                &config.aws.names,
                config.worker.max_receive_count,
                config.worker.visibility_timeout.as_secs(),
            )
            .await?;
            print_json(&serde_json::json!({ "backend": "aws", "created": done }))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a value as one JSON document on stdout.
/// A replay's progress on stderr, `replayed N/M`: on a terminal one line rewritten per chunk, elsewhere a line
/// whenever another hundred (or the end) is reached; nothing when `show` is false.
fn replay_progress(show: bool) -> impl FnMut(usize, usize) {
    use std::io::{IsTerminal, Write};
    let tty = std::io::stderr().is_terminal();
    let mut printed = 0;
    move |done, total| {
        if show && (tty || done == total || done / 100 > printed / 100) {
            printed = done;
            let end = if tty && done < total { "\r" } else { "\n" };
            eprint!("replayed {done}/{total}{end}");
            let _ = std::io::stderr().flush();
        }
    }
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    say!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
