//! The long-running commands: `dev`, `ingress`, `worker`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use eventfleet_ingress::metrics::SharedRegistry;
use eventfleet_schema::{HookId, HookKind, Webhook};
use eventfleet_storage::Store;
use eventfleet_workers::destinations::routes::Target;
use eventfleet_workers::destinations::{DestinationMetrics, Destinations};
use eventfleet_workers::handlers::sns::SnsRouting;
use eventfleet_workers::slack::{DevOutbox, OUTBOX_FILE, SlackWebApi};
use eventfleet_workers::{SlackSink, WorkerMetrics, handlers};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::shutdown;

/// Prints a banner line; a closed stdout (a supervisor that stopped reading) must not stop the service.
macro_rules! banner {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `eventfleet dev`: ingress and workers in one process on the embedded store.
pub async fn dev(
    mut config: Config,
    data_dir: &Path,
    listen: Option<SocketAddr>,
    workers: Option<u16>,
) -> anyhow::Result<ExitCode> {
    // Before the banner: a supervisor may stop the process as soon as it reads it.
    let shutdown = shutdown::on_signal();
    let (listen, concurrency) = dev_settings(&config, listen, workers);
    config.worker.concurrency = concurrency;
    let opened = crate::backend::open_with_metrics(&config, data_dir, None).await?;
    let store = opened.store.clone();
    let listener = bind(listen).await?;
    let addr = listener.local_addr()?;
    let base = config.public_url.clone().unwrap_or_else(|| format!("http://{addr}"));
    record_listen(&config, data_dir, addr);
    let hook = demo_hook(&store, &config.default_channel).await?;
    let from_env = config.ingress.slack_signing_secret.is_some();
    let secret = dev_signing_secret(&config, data_dir)?;
    config.ingress.slack_signing_secret = Some(secret.as_str().into());
    let outbox = data_dir.join(OUTBOX_FILE);

    banner!("eventfleet dev: ingress and {} workers on the embedded store", config.worker.concurrency);
    banner!("  listening on      {base}");
    banner!("  store             {}", data_dir.join("fleet.db").display());
    banner!("  demo hook         {base}/hooks/{}", hook.id);
    if from_env {
        banner!("  slack signing secret in use: the one in EVENTFLEET_SLACK_SIGNING_SECRET");
    } else {
        banner!("  slack signing secret in use: {secret} (generated for this data directory)");
    }
    if let Some(socket) = &config.ingress.socket_mode {
        banner!("  slack socket mode {} connections, opened through {}", socket.connections, socket.api_url);
    }
    match &config.slack_bot_token {
        Some(_) => banner!("  slack messages go to {}", config.slack_api_url),
        None => banner!("  slack messages go to the dev outbox: {}", outbox.display()),
    }
    banner!();
    banner!("send a first event:");
    banner!(
        "  curl -sS -X POST {base}/hooks/{} -H 'content-type: application/json' -d '{{\"text\":\"hello from eventfleet\"}}'",
        hook.id
    );
    banner!("then see it handled:");
    for step in next_steps(data_dir) {
        banner!("  {step}");
    }

    let slack = slack_sink(&config, data_dir)?;
    // One registry: the ingress's /metrics shows the workers' metrics too.
    let registry = SharedRegistry::default();
    let metrics = worker_metrics(&registry);
    let workers = Workers { handlers: with_destinations(handlers(&config), &config, &registry)?, slack, metrics };
    let stopped = together(&config, store, workers, registry, listener, shutdown).await;
    // The hook cache's invocation counts not written yet, however the services stopped.
    opened.flush().await;
    stopped?;
    Ok(ExitCode::SUCCESS)
}

/// Where `dev` listens and how many handlers it runs: a flag wins over its variable, which wins over `dev`'s
/// own defaults (127.0.0.1:8080, 8 handlers: a laptop, not a service).
fn dev_settings(config: &Config, listen: Option<SocketAddr>, workers: Option<u16>) -> (SocketAddr, usize) {
    let listen = listen.or(config.listen).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    let workers = workers.map(usize::from).or(config.worker_concurrency).unwrap_or(8);
    (listen, workers)
}

/// The commands `dev` prints to see a first event handled. They must read this store: it is named unless it is
/// the one they read by default.
fn next_steps(data_dir: &Path) -> [String; 2] {
    let dir_flag = if data_dir == Path::new(crate::cli::DEFAULT_DATA_DIR) {
        String::new()
    } else {
        format!(" --data-dir {}", shell_word(&data_dir.display().to_string()))
    };
    [
        format!("cargo run --release -- events show <event_id from the answer>{dir_flag}"),
        format!("cargo run --release -- outbox{dir_flag}"),
    ]
}

/// `word` quoted for a POSIX shell when it needs it, so a printed command can be pasted as it is.
fn shell_word(word: &str) -> String {
    if !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+:=@,".contains(&b)) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// Writes where this process serves into the data directory (embedded backend), so that `hooks create` and the
/// console print hook URLs with the port in use when `EVENTFLEET_PUBLIC_URL` is not set. Best effort.
fn record_listen(config: &Config, data_dir: &Path, addr: SocketAddr) {
    if config.backend != crate::config::Backend::Embedded {
        return;
    }
    let host = if addr.ip().is_unspecified() { SocketAddr::from(([127, 0, 0, 1], addr.port())) } else { addr };
    if let Err(e) = std::fs::write(data_dir.join(crate::commands::hooks::LISTEN_FILE), format!("http://{host}\n")) {
        tracing::warn!(error = %e, "could not record the listen address in the data directory");
    }
}

/// What a worker pool runs with.
struct Workers {
    handlers: eventfleet_workers::Registry,
    slack: Arc<dyn SlackSink>,
    metrics: WorkerMetrics,
}

/// The ingress and a worker pool in this process until shutdown; the pool drains after the ingress stops.
async fn together(
    config: &Config,
    store: Store,
    workers: Workers,
    registry: SharedRegistry,
    listener: TcpListener,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<Arc<eventfleet_workers::PoolSummary>> {
    let pool = tokio::spawn(eventfleet_workers::run_with_metrics(
        store.clone(),
        config.worker.clone(),
        workers.handlers,
        workers.slack,
        workers.metrics,
        shutdown.clone(),
    ));
    eventfleet_ingress::run_with_registry(store, config.ingress.clone(), registry, listener, shutdown.clone())
        .await
        .context("ingress server")?;
    shutdown.cancel();
    pool.await.context("worker pool")
}

/// `eventfleet ingress`.
pub async fn ingress(config: Config, data_dir: &Path, listen: Option<SocketAddr>) -> anyhow::Result<ExitCode> {
    let registry = SharedRegistry::default();
    let opened = crate::backend::open_with_metrics(&config, data_dir, Some(&registry)).await?;
    // Before the address is printed: a supervisor may stop the process as soon as it reads it.
    let shutdown = shutdown::on_signal();
    let listener = bind_service(&config, data_dir, listen).await?;
    let stopped = eventfleet_ingress::run_with_registry(
        opened.store.clone(),
        config.ingress.clone(),
        registry,
        listener,
        shutdown,
    )
    .await;
    opened.flush().await;
    stopped.context("ingress server")?;
    Ok(ExitCode::SUCCESS)
}

/// Warns when the queue's redrive policy is not the one the workers were configured for: a backstop below the
/// attempts moves messages the workers would still try, a missing one leaves crash-looping messages on the queue.
async fn check_redrive(aws: &eventfleet_storage::aws::AwsStore, config: &Config) {
    let want = config.worker.max_receive_count;
    match aws.redrive_max_receive_count().await {
        Ok(Some(got)) if got == want => {}
        Ok(Some(got)) => tracing::warn!(
            queue_max_receive_count = got,
            configured = want,
            max_attempts = config.worker.max_attempts,
            "the queue's redrive maxReceiveCount differs from EVENTFLEET_MAX_RECEIVE_COUNT; set both from one value"
        ),
        Ok(None) => {
            tracing::warn!("the queue has no redrive policy: a message whose worker keeps dying is never dead-lettered")
        }
        Err(e) => tracing::warn!(error = %e, "could not read the queue's redrive policy"),
    }
}

/// `eventfleet worker`.
pub async fn worker(config: Config, data_dir: &Path) -> anyhow::Result<ExitCode> {
    let registry = SharedRegistry::default();
    let opened = crate::backend::open_with_metrics(&config, data_dir, Some(&registry)).await?;
    let shutdown = shutdown::on_signal();
    let metrics = worker_metrics(&registry);
    let (handlers, publisher) = worker_parts(&config, &opened, &metrics, &shutdown).await;
    let handlers = with_destinations(handlers, &config, &registry)?;
    let slack = slack_sink(&config, data_dir)?;
    // Several workers on one host cannot all have the fixed port: a worker without metrics beats no worker.
    let metrics_at = match TcpListener::bind(config.metrics_listen).await {
        Ok(listener) => {
            let addr = listener.local_addr()?;
            tokio::spawn(eventfleet_workers::metrics::serve(listener, registry, shutdown.clone()));
            format!("http://{addr}/metrics")
        }
        Err(e) => {
            tracing::warn!(error = %e, addr = %config.metrics_listen, "metrics port unavailable; running without /metrics");
            "(unavailable)".to_owned()
        }
    };
    banner!("worker started: concurrency {}, metrics on {metrics_at}", config.worker.concurrency);
    let summary =
        eventfleet_workers::run_with_metrics(opened.store, config.worker.clone(), handlers, slack, metrics, shutdown)
            .await;
    finish_publisher(publisher).await;
    tracing::info!(?summary, "worker stopped");
    Ok(ExitCode::SUCCESS)
}

/// `eventfleet serve`: the ingress and the workers in one process, configured by environment as the two
/// services are. On one machine this is the better production shape (see docs/benchmarks.md): one writer owns
/// the store, and a commit wakes the workers at once instead of at their poll interval.
pub async fn serve(config: Config, data_dir: &Path, listen: Option<SocketAddr>) -> anyhow::Result<ExitCode> {
    let registry = SharedRegistry::default();
    let opened = crate::backend::open_with_metrics(&config, data_dir, Some(&registry)).await?;
    // Before the address is printed: a supervisor may stop the process as soon as it reads it.
    let shutdown = shutdown::on_signal();
    let listener = bind_service(&config, data_dir, listen).await?;
    // One registry: the ingress's /metrics shows the workers' metrics too.
    let metrics = worker_metrics(&registry);
    let (handlers, publisher) = worker_parts(&config, &opened, &metrics, &shutdown).await;
    let handlers = with_destinations(handlers, &config, &registry)?;
    let slack = slack_sink(&config, data_dir)?;
    let workers = Workers { handlers, slack, metrics };
    let stopped = together(&config, opened.store.clone(), workers, registry, listener, shutdown).await;
    opened.flush().await;
    let summary = stopped?;
    finish_publisher(publisher).await;
    tracing::info!(?summary, "stopped");
    Ok(ExitCode::SUCCESS)
}

/// The workers' handlers and, on AWS, what goes with them: subscriptions confirmed through the API, dead letters
/// announced on the ops topic, metrics published to CloudWatch (the task returned).
async fn worker_parts(
    config: &Config,
    opened: &crate::backend::Opened,
    metrics: &WorkerMetrics,
    shutdown: &tokio_util::sync::CancellationToken,
) -> (eventfleet_workers::Registry, Option<tokio::task::JoinHandle<()>>) {
    let Some(aws) = &opened.aws else {
        return (handlers(config), None);
    };
    check_redrive(aws, config).await;
    let sns = crate::aws_ops::sns_ops(aws, config.aws.ops_topic_arn.clone());
    let mut handlers = handlers::builtin_with(sns_routing(config), Arc::new(crate::aws_ops::ApiConfirmer(sns.clone())));
    if config.aws.ops_topic_arn.is_some() {
        handlers = handlers.on_dead_letter(Arc::new(crate::aws_ops::OpsTopic(sns)));
    }
    let publisher = config.aws.cloudwatch_interval.map(|interval| {
        let cw = crate::aws_ops::cloudwatch::Publisher::new(
            aws.clients().cloudwatch.clone(),
            &config.aws.names.metrics_namespace,
            &config.aws.names.prefix,
        );
        tokio::spawn(crate::aws_ops::publish_metrics(
            cw,
            metrics.clone(),
            opened.store.clone(),
            interval,
            shutdown.clone(),
        ))
    });
    (handlers, publisher)
}

/// The last period's metrics go out before exit.
async fn finish_publisher(publisher: Option<tokio::task::JoinHandle<()>>) {
    if let Some(publisher) = publisher {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), publisher).await;
    }
}

fn worker_metrics(registry: &SharedRegistry) -> WorkerMetrics {
    let mut registry = registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    WorkerMetrics::register(&mut registry)
}

/// The listener of a production service: `--listen`, else `EVENTFLEET_LISTEN`, else 0.0.0.0:8080. The first
/// stdout line names the bound address (port 0 picks one): scripts and tests read it.
async fn bind_service(config: &Config, data_dir: &Path, listen: Option<SocketAddr>) -> anyhow::Result<TcpListener> {
    let addr = listen.or(config.listen).unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8080)));
    let listener = bind(addr).await?;
    banner!("listening on http://{}", listener.local_addr()?);
    record_listen(config, data_dir, listener.local_addr()?);
    Ok(listener)
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("listen on {addr}"))
}

/// The Slack Web API when a bot token is configured, else the dev outbox.
fn slack_sink(config: &Config, data_dir: &Path) -> anyhow::Result<Arc<dyn SlackSink>> {
    Ok(match &config.slack_bot_token {
        Some(token) => {
            Arc::new(SlackWebApi::new(&config.slack_api_url, token.expose(), config.worker.handler_timeout)?)
        }
        None => Arc::new(DevOutbox::new(data_dir.join(OUTBOX_FILE))),
    })
}

/// The built-in handlers with the configured SNS routing.
fn handlers(config: &Config) -> eventfleet_workers::Registry {
    handlers::builtin(sns_routing(config))
}

/// The handlers with the routes of `EVENTFLEET_ROUTES_FILE` in front, their metrics in `registry`.
fn with_destinations(
    handlers: eventfleet_workers::Registry,
    config: &Config,
    registry: &SharedRegistry,
) -> anyhow::Result<eventfleet_workers::Registry> {
    if config.routes.is_empty() {
        return Ok(handlers);
    }
    let metrics = {
        let mut registry = registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        DestinationMetrics::register(&mut registry)
    };
    for route in &config.routes {
        match &route.target {
            // The host only: a URL's query may carry a token.
            Target::Url(url) => tracing::info!(route = %route.name, host = url.host_str().unwrap_or_default(),
                also_builtin = route.also_builtin, "HTTP destination"),
            Target::Channel(channel) => tracing::info!(route = %route.name, %channel, "route to chats"),
        }
    }
    let destinations = Destinations::new(config.routes.clone(), metrics).context("HTTP client of the destinations")?;
    Ok(handlers.with_destinations(Arc::new(destinations)))
}

fn sns_routing(config: &Config) -> SnsRouting {
    SnsRouting {
        topic_channels: config.sns_topic_channels.iter().cloned().collect(),
        default_channel: config.default_channel.clone(),
        alarms: config.alarms.clone(),
    }
}

/// The hook `dev` prints: the first hook named `demo`, created on first run.
async fn demo_hook(store: &Store, channel: &str) -> anyhow::Result<Webhook> {
    if let Some(hook) = store.webhooks.list().await?.into_iter().find(|h| h.name == "demo") {
        return Ok(hook);
    }
    let hook = Webhook {
        id: HookId::new(),
        name: "demo".into(),
        channel: channel.to_owned(),
        kind: HookKind::Info,
        active: true,
        secret: None,
        invocation_count: 0,
        filter: None,
        group_key: None,
        per_delivery: false,
        created_by: "eventfleet dev".into(),
        created_at: store.clock.now(),
    };
    store.webhooks.create(&hook).await?;
    Ok(hook)
}

/// The Slack signing secret of a dev run: the configured one, else one generated once and kept in the data
/// directory so that restarts keep it.
fn dev_signing_secret(config: &Config, data_dir: &Path) -> anyhow::Result<String> {
    if let Some(secret) = &config.ingress.slack_signing_secret {
        return Ok(secret.expose().to_owned());
    }
    let path = data_dir.join("dev-slack-signing-secret");
    if let Ok(secret) = std::fs::read_to_string(&path)
        && !secret.trim().is_empty()
    {
        return Ok(secret.trim().to_owned());
    }
    let secret = hex::encode(rand::random::<[u8; 16]>());
    std::fs::write(&path, &secret).with_context(|| format!("write {}", path.display()))?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn the_printed_next_steps_name_a_data_directory_other_than_the_default() {
        let default = next_steps(Path::new(crate::cli::DEFAULT_DATA_DIR));
        assert!(default.iter().all(|s| !s.contains("--data-dir")), "{default:?}");
        let other = next_steps(Path::new("/tmp/ef demo"));
        assert!(other.iter().all(|s| s.ends_with(" --data-dir '/tmp/ef demo'")), "{other:?}");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
    }

    fn config(vars: &[(&str, &str)]) -> Config {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        Config::from_lookup(|k| map.get(k).cloned()).unwrap()
    }

    #[test]
    fn dev_flags_win_over_variables_which_win_over_dev_defaults() {
        let none = config(&[]);
        assert_eq!(dev_settings(&none, None, None), (SocketAddr::from(([127, 0, 0, 1], 8080)), 8));
        let set = config(&[("EVENTFLEET_LISTEN", "127.0.0.1:9000"), ("EVENTFLEET_WORKER_CONCURRENCY", "3")]);
        assert_eq!(dev_settings(&set, None, None), (SocketAddr::from(([127, 0, 0, 1], 9000)), 3));
        let flag: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        assert_eq!(dev_settings(&set, Some(flag), Some(5)), (flag, 5));
    }
}
