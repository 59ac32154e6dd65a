//! Opens the configured storage backend.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use eventfleet_ingress::metrics::SharedRegistry;
use eventfleet_storage::aws::{AwsOptions, AwsStore, RequestObserver};
use eventfleet_storage::hook_cache::{COUNTS_EVERY, CachedHooks};
use eventfleet_storage::{EmbeddedOptions, EmbeddedStore, Store};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::config::{Backend, Config};

/// An opened backend: the ports, plus the aws store itself when on AWS (for SNS and CloudWatch beside them).
pub struct Opened {
    /// The ports.
    pub store: Store,
    /// The aws backend, when that is the one.
    pub aws: Option<Arc<AwsStore>>,
    /// The hook cache in front of the registry (unless disabled): flushed at shutdown.
    pub hooks: Option<Arc<CachedHooks>>,
}

impl Opened {
    /// Writes what the hook cache holds back (at shutdown).
    pub async fn flush(&self) {
        if let Some(hooks) = &self.hooks {
            hooks.flush().await;
        }
    }
}

/// The store named by the configuration, created when it does not exist yet (the services, `tables create`).
pub async fn open(config: &Config, data_dir: &Path) -> anyhow::Result<Store> {
    Ok(open_with_metrics(config, data_dir, None).await?.store)
}

/// The store an operator command reads: on the embedded backend it must exist already, so that a mistyped
/// `--data-dir` is an error instead of an empty fleet that looks healthy.
pub async fn open_existing(config: &Config, data_dir: &Path) -> anyhow::Result<Store> {
    require_store(config, data_dir)?;
    open(config, data_dir).await
}

/// Fails unless `data_dir` holds an embedded store (on the aws backend there is nothing to check here).
pub fn require_store(config: &Config, data_dir: &Path) -> anyhow::Result<()> {
    if config.backend == Backend::Embedded && !data_dir.join(eventfleet_storage::embedded::DB_FILE).is_file() {
        bail!(
            "no eventfleet store in {dir} (no {file} there). Point at the directory `eventfleet dev` or `serve` \
             uses with --data-dir DIR or EVENTFLEET_DATA_DIR (default ./.eventfleet), or create one with \
             `eventfleet tables create --data-dir {dir}`",
            dir = data_dir.display(),
            file = eventfleet_storage::embedded::DB_FILE,
        );
    }
    Ok(())
}

/// Labels of `eventfleet_aws_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    service: String,
    operation: String,
    /// The tables, queues or topics the request named (`+`-joined), empty for none.
    resource: String,
}

/// The store named by the configuration; on AWS, every SDK request is counted into `registry` as
/// `eventfleet_aws_requests_total{service, operation, resource}` when one is given.
pub async fn open_with_metrics(
    config: &Config,
    data_dir: &Path,
    registry: Option<&SharedRegistry>,
) -> anyhow::Result<Opened> {
    match config.backend {
        Backend::Embedded => {
            let options = EmbeddedOptions {
                max_receive_count: config.worker.max_receive_count,
                durability: config.durability,
                retention: config.retention,
                ..EmbeddedOptions::default()
            };
            let store = EmbeddedStore::open_dir(data_dir, options)
                .with_context(|| format!("open the embedded store in {}", data_dir.display()))?;
            Ok(with_hook_cache(config, store.into_store(), None))
        }
        Backend::Aws => {
            let sdk = sdk_config(config).await?;
            let mut options = AwsOptions::new(config.aws.names.clone());
            options.max_receive_count = config.worker.max_receive_count;
            options.send_batches_in_flight = config.aws.send_batches_in_flight;
            options.send_linger = config.aws.send_linger;
            options.retention = config.retention;
            if let Some(registry) = registry {
                let requests = Family::<RequestLabels, Counter>::default();
                registry.lock().unwrap_or_else(|p| p.into_inner()).register(
                    "eventfleet_aws_requests",
                    "AWS API requests sent, by service, operation and the table, queue or topic named (retries included)",
                    requests.clone(),
                );
                let observer: RequestObserver = Arc::new(move |service: &str, operation: &str, resource: &str| {
                    let labels = RequestLabels {
                        service: service.to_owned(),
                        operation: operation.to_owned(),
                        resource: resource.to_owned(),
                    };
                    requests.get_or_create(&labels).inc();
                });
                options.request_observer = Some(observer);
            }
            let aws = AwsStore::connect(&sdk, options).await.context("connect to the aws backend")?;
            Ok(with_hook_cache(config, aws.clone().into_store(), Some(aws)))
        }
    }
}

/// The ports with the hook cache in front of the registry (unless `EVENTFLEET_HOOK_CACHE_S=0`). Every hook
/// delivery reads its hook twice (ingress, worker) and counts it once: on DynamoDB three requests, on the embedded
/// store two reads and a writer job the request waits for (its own commit and sync after the accept's), which a
/// few seconds of caching save. docs/architecture.md, "Hooks cached in each process".
fn with_hook_cache(config: &Config, mut store: Store, aws: Option<Arc<AwsStore>>) -> Opened {
    let hooks = config.hook_cache.map(|ttl| CachedHooks::new(store.webhooks.clone(), ttl, COUNTS_EVERY));
    if let Some(hooks) = &hooks {
        store.webhooks = hooks.clone();
    }
    Opened { store, aws, hooks }
}

/// The AWS SDK configuration: the standard chain (environment, profile, ECS task role), with
/// `EVENTFLEET_AWS_ENDPOINT_URL` as every client's endpoint when set. A region is required.
pub async fn sdk_config(config: &Config) -> anyhow::Result<aws_config::SdkConfig> {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(url) = &config.aws.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let sdk = loader.load().await;
    if sdk.region().is_none() {
        bail!("EVENTFLEET_BACKEND=aws needs a region: set AWS_REGION (or a profile with one)");
    }
    Ok(sdk)
}
