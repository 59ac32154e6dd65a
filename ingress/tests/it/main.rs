//! Ingress integration tests: the real router on 127.0.0.1:0 over the real embedded store.

mod connections;
mod hooks;
mod openapi;
mod robustness;
mod slack;
mod sns;

use std::sync::Arc;

use eventfleet_ingress::IngressConfig;
use eventfleet_schema::{HookId, HookKind, Webhook};
use eventfleet_storage::{EmbeddedOptions, EmbeddedStore, Store};
use tokio_util::sync::CancellationToken;

/// A running ingress over a fresh store.
pub struct Server {
    /// `http://127.0.0.1:port`.
    pub base: String,
    /// The store behind it.
    pub store: Store,
    /// The same store, for backend-specific checks.
    pub embedded: Arc<EmbeddedStore>,
    /// A client.
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Server {
    /// An ingress with test settings: a Slack secret, no rate limits, the fixtures' certificate directory.
    pub async fn start() -> Self {
        Self::start_with(test_config()).await
    }

    /// An ingress with these settings.
    pub async fn start_with(config: IngressConfig) -> Self {
        Self::start_with_store(config, EmbeddedOptions::default()).await
    }

    /// An ingress with these settings over a store opened with these options.
    pub async fn start_with_store(config: IngressConfig, options: EmbeddedOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let embedded = EmbeddedStore::open_dir(dir.path(), options).unwrap();
        let store = embedded.clone().into_store();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        tokio::spawn(eventfleet_ingress::run(store.clone(), config, listener, shutdown.clone()));
        Server { base, store, embedded, http: reqwest::Client::new(), shutdown, _dir: dir }
    }

    /// Registers a hook.
    pub async fn hook(&self, secret: Option<&str>) -> Webhook {
        let hook = Webhook {
            id: HookId::new(),
            name: "test".into(),
            channel: "#test".into(),
            kind: HookKind::Alert,
            active: true,
            secret: secret.map(str::to_owned),
            invocation_count: 0,
            filter: None,
            group_key: None,
            per_delivery: false,
            created_by: "test".into(),
            created_at: self.store.clock.now(),
        };
        self.store.webhooks.create(&hook).await.unwrap();
        hook
    }

    /// A URL on the server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Takes every message off the queue (receive and delete), in queue order.
    pub async fn drain(&self) -> Vec<eventfleet_storage::ReceivedMessage> {
        let mut all = Vec::new();
        loop {
            let got = self
                .store
                .queue
                .receive(10, std::time::Duration::from_secs(60), std::time::Duration::ZERO)
                .await
                .unwrap();
            if got.is_empty() {
                break;
            }
            for m in &got {
                self.store.queue.delete(&m.receipt).await.unwrap();
            }
            all.extend(got);
        }
        all
    }

    /// Messages on the queue, without taking them.
    pub async fn depth(&self) -> u64 {
        let stats = self.store.queue.stats().await.unwrap();
        stats.waiting + stats.in_flight
    }
}

/// The Slack signing secret of test servers.
pub const SLACK_SECRET: &str = "test-signing-secret";

/// Test settings: a Slack secret, no rate limits, certificates from `testdata/`.
pub fn test_config() -> IngressConfig {
    IngressConfig {
        slack_signing_secret: Some(SLACK_SECRET.into()),
        rate_limits: eventfleet_ingress::RateLimits::off(),
        sns_cert_dir: Some(testdata("sns")),
        ..IngressConfig::default()
    }
}

/// A path under the repository's `testdata/`.
pub fn testdata(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata").join(rel)
}

/// Asserts the JSON error body and returns its code.
pub async fn error_code(resp: reqwest::Response) -> String {
    let body: serde_json::Value = resp.json().await.expect("error body is JSON");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    body["error"].as_str().expect("error code").to_owned()
}
