//! The routes, one module per family.

pub mod health;
pub mod hooks;

use axum::Router;
use axum::routing::{get, post};

use crate::{ApiError, AppState};

/// Every route of the ingress.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/hooks/{hook_id}", post(hooks::post_hook))
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/version", get(health::version))
        .fallback(not_found)
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}
