//! The eventfleet ingress: verify, idempotency-stamp and durably enqueue every incoming event, then answer fast.
//!
//! # Layout
//!
//! - [`config`]: [`IngressConfig`], the typed settings (built from the environment by the binary).
//! - [`error`]: [`ApiError`], every rejection as `{"error": "<code>", "message": "..."}` with its status.
//! - [`body`]: [`body::RawBody`], the raw request bytes (signatures are checked on bytes, before parsing), with
//!   the body limit and its 413.
//! - Sender verification is [`eventfleet_verify`]'s, on the raw bytes.
//! - [`accept`]: the ingress half of the protocol (docs/architecture.md): one `accept` step of the store, then
//!   the answer.
//! - [`rate_limit`]: global, per-client and per-hook limits.
//! - [`metrics`]: Prometheus counters and histograms for `/metrics`.
//! - [`routes`]: one module per route family: [`routes::slack`], [`routes::hooks`], [`routes::sns`],
//!   [`routes::health`].
//! - [`schedule`]: the schedules file, and each tick accepted as an event through the same step.
//! - [`socket_mode`]: Slack Socket Mode connections, each envelope accepted through the same step and acked only
//!   after it.
//! - [`serve`]: connection deadlines (idle, reading a request) and the drain deadline at shutdown.
//! - [`run`]: serves the router on a listener until a shutdown token fires.
//!
//! Everything talks to storage through [`eventfleet_storage::Store`], so the ingress runs unchanged on either
//! backend.

pub mod accept;
pub mod body;
pub mod config;
pub mod error;
pub mod metrics;
pub mod rate_limit;
pub mod routes;
pub mod schedule;
pub mod serve;
pub mod socket_mode;

use std::sync::Arc;

use axum::Router;
use eventfleet_storage::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{IngressConfig, RateLimits};
pub use error::ApiError;

/// What every handler shares, behind one pointer: axum clones the state for every extractor of every request, and
/// a clone of the fields themselves was some twenty reference counts bumped and dropped a request, about 1.5 % of
/// the fleet's CPU under load (docs/benchmarks.md, "Allocator").
#[derive(Clone)]
pub struct AppState(Arc<SharedState>);

impl std::ops::Deref for AppState {
    type Target = SharedState;

    fn deref(&self) -> &SharedState {
        &self.0
    }
}

/// The state itself; see [`AppState`].
pub struct SharedState {
    /// The storage ports.
    pub store: Store,
    /// Settings.
    pub config: Arc<IngressConfig>,
    /// SNS signing certificates.
    pub certs: Arc<eventfleet_verify::sns::CertStore>,
    /// Rate limiters.
    pub limits: Arc<rate_limit::RateLimiters>,
    /// Metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// The registry `/metrics` renders (the ingress's metrics and whatever else the process registered).
    pub registry: metrics::SharedRegistry,
    /// Socket Mode's state for `/ready`, when it is configured.
    pub socket: Option<Arc<socket_mode::SocketStatus>>,
}

impl AppState {
    /// State for a store and settings with a registry of its own.
    pub fn new(store: Store, config: IngressConfig) -> Self {
        Self::with_registry(store, config, metrics::SharedRegistry::default())
    }

    /// The same, registering the ingress metrics into a shared registry.
    pub fn with_registry(store: Store, config: IngressConfig, registry: metrics::SharedRegistry) -> Self {
        let metrics = match registry.lock() {
            Ok(mut r) => metrics::Metrics::register(&mut r),
            Err(poisoned) => metrics::Metrics::register(&mut poisoned.into_inner()),
        };
        let certs = eventfleet_verify::sns::CertStore::new(config.sns_cert_dir.clone(), config.sns_cert_timeout);
        let limits = rate_limit::RateLimiters::new(&config.rate_limits);
        let socket = config.socket_mode.as_ref().map(|s| Arc::new(socket_mode::SocketStatus::new(s.connections)));
        Self(Arc::new(SharedState {
            socket,
            store,
            config: Arc::new(config),
            certs: Arc::new(certs),
            limits: Arc::new(limits),
            metrics: Arc::new(metrics),
            registry,
        }))
    }
}

/// The ingress router with its state. Must be called inside a tokio runtime (see [`AppState::new`]).
pub fn router(store: Store, config: IngressConfig) -> Router {
    routes::router(AppState::new(store, config))
}

/// Serves the ingress on `listener` until `shutdown` is cancelled, then finishes in-flight requests (for at most
/// the drain deadline).
pub async fn run(
    store: Store,
    config: IngressConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    run_with_registry(store, config, metrics::SharedRegistry::default(), listener, shutdown).await
}

/// After the HTTP drain, how long the schedules and Socket Mode may still take to finish.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// [`run`], with the metrics registered into (and `/metrics` rendering) a shared registry.
pub async fn run_with_registry(
    store: Store,
    config: IngressConfig,
    registry: metrics::SharedRegistry,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let state = AppState::with_registry(store, config, registry);
    // Forget idle rate-limit keys now and then, so the maps stay the size of the active clients.
    let limits = state.limits.clone();
    let sweep_stop = shutdown.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(rate_limit::FORGET_AFTER);
        loop {
            tokio::select! {
                _ = every.tick() => limits.forget_idle(),
                _ = sweep_stop.cancelled() => break,
            }
        }
    });
    // Every process with the schedules evaluates them; the protocol keeps one event per tick.
    let schedules = match state.config.schedules.as_slice() {
        [] => None,
        entries => Some(tokio::spawn(schedule::run(state.clone(), entries.to_vec(), shutdown.clone()))),
    };
    let socket = state.socket.is_some().then(|| tokio::spawn(socket_mode::run(state.clone(), shutdown.clone())));
    let timeouts = state.config.timeouts;
    let served = serve::serve(listener, routes::router(state), timeouts, shutdown.clone()).await;
    // A tick being accepted finishes; Socket Mode acks what it accepted and closes. They saw the shutdown when
    // the HTTP drain began, so they get a short grace after it, no more: a backend slow enough to hold them past
    // it would hold the process past its stop timeout (ECS kills 30 s after SIGTERM). Cutting them is a crash
    // the protocol is built for: an unacknowledged Socket Mode envelope is redelivered, a tick is caught up.
    shutdown.cancel();
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    for task in [schedules, socket].into_iter().flatten() {
        let abort = task.abort_handle();
        if tokio::time::timeout_at(deadline, task).await.is_err() {
            abort.abort();
            tracing::warn!(
                grace_s = SHUTDOWN_GRACE.as_secs(),
                "schedules or Socket Mode still busy after the drain: cut"
            );
        }
    }
    served
}
