//! Liveness, readiness and version.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::{ApiError, AppState};

/// `GET /health`: the process answers. Touches no dependency, so a slow backend never gets a task killed.
pub async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /ready`: the backend answers and, with Socket Mode, at least one connection is open (503 with its state
/// otherwise: the HTTP routes still serve).
pub async fn ready(State(state): State<AppState>) -> Result<Response, ApiError> {
    let stats = tokio::time::timeout(state.config.backend_budget, state.store.queue.stats())
        .await
        .map_err(|_| ApiError::Unavailable("the event store did not answer in time".into()))??;
    let mut body = json!({ "status": "ready", "backend": state.store.backend, "queue": stats });
    let mut status = StatusCode::OK;
    if let Some(socket) = &state.socket {
        body["socket_mode"] = socket.report();
        if !socket.ready() {
            body["status"] = json!("socket_mode_down");
            status = StatusCode::SERVICE_UNAVAILABLE;
        }
    }
    Ok((status, Json(body)).into_response())
}

/// `GET /version`: `{version, git_sha, backend}` (the ALB health check).
pub async fn version(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "git_sha": env!("EVENTFLEET_GIT_SHA"),
        "backend": state.store.backend,
    }))
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        crate::metrics::render(&state.registry),
    )
}
