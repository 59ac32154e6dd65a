//! The eventfleet ingress: verify, idempotency-stamp and durably enqueue every incoming event, then answer fast.
//!
//! # Layout
//!
//! - [`config`]: [`IngressConfig`], the typed settings (built from the environment by the binary).
//! - [`error`]: [`ApiError`], every rejection as `{"error": "<code>", "message": "..."}` with its status.
//! - [`body`]: [`body::RawBody`], the raw request bytes (signatures are checked on bytes, before parsing), with
//!   the body limit and its 413.
//! - [`accept`]: the idempotency protocol of DESIGN.md: claim (`PENDING`) → enqueue → mark `ENQUEUED` → 2xx.
//! - [`signature`]: HMAC checks (`X-Hub-Signature-256`).
//! - [`routes`]: one module per route family: [`routes::hooks`], [`routes::health`].
//! - [`run`]: serves the router on a listener until a shutdown token fires.
//!
//! Everything talks to storage through [`eventfleet_storage::Store`], so the ingress runs unchanged on either
//! backend.

pub mod accept;
pub mod body;
pub mod config;
pub mod error;
pub mod routes;
pub mod signature;

use std::sync::Arc;

use axum::Router;
use eventfleet_storage::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::IngressConfig;
pub use error::ApiError;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The storage ports.
    pub store: Store,
    /// Settings.
    pub config: Arc<IngressConfig>,
}

/// The ingress router with its state.
pub fn router(store: Store, config: IngressConfig) -> Router {
    let state = AppState { store, config: Arc::new(config) };
    routes::router(state)
}

/// Serves the ingress on `listener` until `shutdown` is cancelled, then finishes in-flight requests.
pub async fn run(
    store: Store,
    config: IngressConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = router(store, config);
    axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
