//! Worker integration tests: the real pool, the real embedded store, the real ingress in front, and the local
//! Slack stub as the only stand-in.

mod alarms;
mod attempts;
mod delivery;
mod destinations;
mod observability;
mod replay;
#[path = "../support.rs"]
mod support;
mod teams;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use eventfleet_ingress::{IngressConfig, RateLimits};
use eventfleet_schema::{EventId, HookId, HookKind, Step, Webhook};
use eventfleet_storage::{EmbeddedOptions, EmbeddedStore, Store};
use eventfleet_stubs::slack::SlackStub;
use eventfleet_workers::handlers::sns::SnsRouting;
use eventfleet_workers::slack::ChannelPace;
use eventfleet_workers::slack::SlackWebApi;
use eventfleet_workers::{WorkerConfig, handlers};
use tokio_util::sync::CancellationToken;

/// Ingress + worker pool + Slack stub over one store.
pub struct Fleet {
    /// Ingress base URL.
    pub base: String,
    /// The store.
    pub store: Store,
    /// The Slack stub.
    pub slack: SlackStub,
    /// A client.
    pub http: reqwest::Client,
    /// Stops ingress and workers.
    pub shutdown: CancellationToken,
    /// The worker pool's task.
    pub pool: Option<tokio::task::JoinHandle<Arc<eventfleet_workers::PoolSummary>>>,
    /// The registry both ingress and workers record into (as in `eventfleet dev`).
    pub registry: eventfleet_ingress::metrics::SharedRegistry,
    _dir: tempfile::TempDir,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The ingress's Slack signing secret.
pub const SLACK_SECRET: &str = "worker-test-secret";

/// Alarm threads as shipped.
pub fn alarm_settings() -> eventfleet_workers::handlers::alarm::AlarmSettings {
    eventfleet_workers::handlers::alarm::AlarmSettings::default()
}

/// Fast settings: millisecond backoffs, short polls.
pub fn worker_config() -> WorkerConfig {
    WorkerConfig {
        concurrency: 4,
        visibility_timeout: Duration::from_secs(5),
        handler_timeout: Duration::from_secs(2),
        drain_timeout: Duration::from_secs(5),
        max_attempts: 5,
        max_receive_count: 10,
        retry_base_delay: Duration::from_millis(20),
        retry_max_delay: Duration::from_millis(100),
        receive_wait: Duration::from_millis(500),
        receive_window: Duration::ZERO,
        actor: "worker@test".into(),
        idempotency_horizon: Duration::from_secs(3600),
        // A channel's pace of one post per 100 ms, bursts of 3, every post its own message (the tests of the pace
        // and of digests set their own).
        channel_pace: ChannelPace { interval: Duration::from_millis(100), burst: 3, digests: false },
        teams: Default::default(),
    }
}

/// No channel pace, for tests of something else that a post waiting for its slot would blur.
pub fn no_pace() -> ChannelPace {
    ChannelPace { interval: Duration::ZERO, burst: 1, digests: false }
}

impl Fleet {
    /// Starts ingress, workers and the Slack stub on a fresh store.
    pub async fn start() -> Self {
        Self::start_with(worker_config()).await
    }

    /// The same with these worker settings.
    pub async fn start_with(config: WorkerConfig) -> Self {
        Self::start_routed(config, Vec::new()).await
    }

    /// The same with these routes to HTTP destinations in front of the built-in handlers.
    pub async fn start_routed(config: WorkerConfig, routes: Vec<eventfleet_workers::destinations::Route>) -> Self {
        Self::start_full(config, routes, alarm_settings()).await
    }

    /// The same with these alarm settings.
    pub async fn start_alarms(alarms: eventfleet_workers::handlers::alarm::AlarmSettings) -> Self {
        Self::start_full(worker_config(), Vec::new(), alarms).await
    }

    async fn start_full(
        config: WorkerConfig,
        routes: Vec<eventfleet_workers::destinations::Route>,
        alarms: eventfleet_workers::handlers::alarm::AlarmSettings,
    ) -> Self {
        Self::start_clocked(config, routes, alarms, Arc::new(eventfleet_storage::SystemClock)).await
    }

    /// The same on a store whose time is `clock`'s.
    pub async fn start_clocked(
        config: WorkerConfig,
        routes: Vec<eventfleet_workers::destinations::Route>,
        alarms: eventfleet_workers::handlers::alarm::AlarmSettings,
        clock: Arc<dyn eventfleet_storage::Clock>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // The queue's redrive follows the worker settings, as the binary sets it.
        let options =
            EmbeddedOptions { max_receive_count: config.max_receive_count, clock, ..EmbeddedOptions::default() };
        let store = EmbeddedStore::open_dir(dir.path(), options).unwrap().into_store();
        let slack = SlackStub::start().await.unwrap();
        Self::launch(dir, store, slack, config, routes, alarms).await
    }

    /// Stops this fleet's ingress and workers and starts new ones on the same store and Slack stub with `routes`
    /// (a routes file changed and the fleet restarted).
    pub async fn relaunch(mut self, routes: Vec<eventfleet_workers::destinations::Route>) -> Self {
        self.shutdown.cancel();
        if let Some(pool) = self.pool.take() {
            pool.await.unwrap();
        }
        let dir = std::mem::replace(&mut self._dir, tempfile::tempdir().unwrap());
        Self::launch(dir, self.store.clone(), self.slack.clone(), worker_config(), routes, alarm_settings()).await
    }

    async fn launch(
        dir: tempfile::TempDir,
        store: Store,
        slack: SlackStub,
        config: WorkerConfig,
        routes: Vec<eventfleet_workers::destinations::Route>,
        alarms: eventfleet_workers::handlers::alarm::AlarmSettings,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let ingress = IngressConfig {
            rate_limits: RateLimits::off(),
            sns_cert_dir: Some(testdata("sns")),
            slack_signing_secret: Some(SLACK_SECRET.into()),
            ..IngressConfig::default()
        };
        let registry = eventfleet_ingress::metrics::SharedRegistry::default();
        let metrics = eventfleet_workers::WorkerMetrics::register(&mut registry.lock().unwrap());
        tokio::spawn(eventfleet_ingress::run_with_registry(
            store.clone(),
            ingress,
            registry.clone(),
            listener,
            shutdown.clone(),
        ));
        let api = SlackWebApi::new(&slack.url, "xoxb-test-token", config.handler_timeout).unwrap();
        let destination_metrics =
            eventfleet_workers::destinations::DestinationMetrics::register(&mut registry.lock().unwrap());
        let destinations = eventfleet_workers::destinations::Destinations::new(routes, destination_metrics).unwrap();
        let handler_registry = handlers::builtin(SnsRouting {
            topic_channels: [
                ("arn:aws:sns:us-east-1:123456789012:alarms".to_owned(), "#alarms".to_owned()),
                ("arn:aws:sns:us-east-1:123456789012:teams".to_owned(), "teams:ops".to_owned()),
                ("arn:aws:sns:us-east-1:123456789012:both".to_owned(), "#both+teams:ops".to_owned()),
            ]
            .into(),
            default_channel: "#default".into(),
            alarms,
        })
        .with_destinations(Arc::new(destinations));
        let pool = tokio::spawn(eventfleet_workers::run_with_metrics(
            store.clone(),
            config,
            handler_registry,
            Arc::new(api),
            metrics,
            shutdown.clone(),
        ));
        Fleet { base, store, slack, http: reqwest::Client::new(), shutdown, pool: Some(pool), registry, _dir: dir }
    }

    /// A hook posting to `channel`.
    pub async fn hook(&self, channel: &str) -> Webhook {
        let hook = Webhook {
            id: HookId::new(),
            name: "test".into(),
            channel: channel.into(),
            kind: HookKind::Alert,
            active: true,
            secret: None,
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

    /// Posts a payload to a hook; returns the event id.
    pub async fn send(&self, hook: &Webhook, text: &str) -> EventId {
        let resp = self
            .http
            .post(format!("{}/hooks/{}", self.base, hook.id))
            .header("content-type", "application/json")
            .body(serde_json::json!({ "text": text }).to_string())
            .send()
            .await
            .unwrap();
        event_id_of(resp).await
    }

    /// Publishes a signed SNS message to `/sns`; returns its event id.
    pub async fn publish(&self, message: &serde_json::Value) -> EventId {
        let resp = (self.http.post(format!("{}/sns", self.base)))
            .header("content-type", "text/plain; charset=UTF-8")
            .body(message.to_string())
            .send()
            .await
            .unwrap();
        event_id_of(resp).await
    }

    /// Sends a GitHub delivery (`X-GitHub-Event: event`, `X-GitHub-Delivery: delivery`) to a hook; returns its
    /// event id.
    pub async fn send_github(&self, hook: &Webhook, event: &str, delivery: &str, body: &serde_json::Value) -> EventId {
        let resp = (self.http.post(format!("{}/hooks/{}", self.base, hook.id)))
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        event_id_of(resp).await
    }

    /// Replays `dead` as operator `alice` and waits until `id` is done again.
    pub async fn replay_until_done(&self, dead: &[eventfleet_storage::DeadLetter], id: EventId) {
        let options = eventfleet_workers::replay::ReplayOptions { by: "alice".into(), dry_run: false, rate: None };
        let outcomes = eventfleet_workers::replay::replay(&self.store, dead, &options, |_, _| {}).await;
        assert!(outcomes.iter().all(|o| o.error.is_none()), "{outcomes:?}");
        eventually(Duration::from_secs(20), || async {
            let record = self.store.idempotency.find_by_event(id).await.unwrap()?;
            (record.status == eventfleet_schema::Status::Done).then_some(())
        })
        .await
        .expect("the replay is delivered");
    }

    /// The Prometheus text of the shared registry.
    pub fn metrics(&self) -> String {
        eventfleet_ingress::metrics::render(&self.registry)
    }

    /// The event's audit steps.
    pub async fn steps(&self, id: EventId) -> Vec<Step> {
        self.store.audit.history(id).await.unwrap().iter().map(|e| e.step).collect()
    }

    /// Waits until nothing is left to do: no message waiting (delayed retries included) and none in flight. After
    /// this no handler can run again, so what was posted is all that will be.
    pub async fn settled(&self) {
        eventually(Duration::from_secs(20), || async {
            let stats = self.store.queue.stats().await.unwrap();
            (stats.waiting == 0 && stats.in_flight == 0).then_some(())
        })
        .await
        .expect("the queue emptied");
    }

    /// Waits until the event's trail has `step`.
    pub async fn wait_for(&self, id: EventId, step: Step) -> Vec<Step> {
        eventually(Duration::from_secs(20), || async {
            let steps = self.steps(id).await;
            steps.contains(&step).then_some(steps)
        })
        .await
        .unwrap_or_else(|| panic!("event {id} never reached {step}"))
    }
}

/// The event id of an accepted request (`202 {"event_id": …}`).
pub async fn event_id_of(resp: reqwest::Response) -> EventId {
    assert_eq!(resp.status(), 202);
    let body: serde_json::Value = resp.json().await.unwrap();
    EventId::parse(body["event_id"].as_str().unwrap()).unwrap()
}

/// Polls `check` every 20 ms until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A path under the repository's `testdata/`.
pub fn testdata(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata").join(rel)
}
