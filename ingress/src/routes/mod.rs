//! The routes, one module per family, with the cross-cutting layers: rate limits on the sender routes, request
//! metrics on every matched route.

pub mod health;
pub mod hooks;
pub mod slack;
pub mod sns;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::HeaderMap;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Router, middleware::from_fn_with_state};

use crate::metrics::RequestLabels;
use crate::{ApiError, AppState};

/// Every route as `(method, path)`: `docs/openapi.json` must describe exactly these (a test checks).
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/slack/events"),
    ("post", "/slack/commands"),
    ("post", "/slack/interactions"),
    ("post", "/hooks/{hook_id}"),
    ("post", "/sns"),
    ("get", "/health"),
    ("get", "/ready"),
    ("get", "/version"),
    ("get", "/metrics"),
];

/// Every route of the ingress.
pub fn router(state: AppState) -> Router {
    let senders = Router::new()
        .route("/slack/events", post(slack::events))
        .route("/slack/commands", post(slack::commands))
        .route("/slack/interactions", post(slack::interactions))
        .route("/hooks/{hook_id}", post(hooks::post_hook))
        .route("/sns", post(sns::post_sns))
        .route_layer(from_fn_with_state(state.clone(), limit_clients));
    let probes = Router::new()
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/version", get(health::version))
        .route("/metrics", get(health::metrics));
    senders
        .merge(probes)
        .route_layer(middleware::from_fn_with_state(state.clone(), record_request))
        .fallback(not_found)
        .with_state(state)
}

async fn not_found(State(state): State<AppState>) -> ApiError {
    let labels = RequestLabels { route: "unmatched".into(), status: 404 };
    state.metrics.requests.get_or_create(&labels).inc();
    ApiError::NotFound("no such route".into())
}

/// Refuses a client that has used up a failure budget before any work is done for its request, and counts the
/// request against the budgets when it fails ([`crate::rate_limit::is_failure`]).
async fn limit_clients(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let ip = client_ip(&state, &req);
    if let Err(limited) = state.limits.check_client(ip) {
        return limited.into_response();
    }
    let hook = req.uri().path().strip_prefix("/hooks/").map(|h| h.trim_end_matches('/').to_owned());
    let response = next.run(req).await;
    if crate::rate_limit::is_failure(response.status()) {
        state.limits.record_failure(ip, hook.as_deref());
    }
    response
}

/// Runs every request in a span (joined to the caller's trace when it sent a `traceparent`) and counts every
/// answer by route template and status.
async fn record_request(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let span = tracing::info_span!("ingress.request", route = %route, status = tracing::field::Empty);
    let remote = opentelemetry::propagation::TextMapPropagator::extract(
        &opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        &HeaderExtractor(req.headers()),
    );
    if opentelemetry::trace::TraceContextExt::span(&remote).span_context().is_valid() {
        let _ = tracing_opentelemetry::OpenTelemetrySpanExt::set_parent(&span, remote);
    }
    let response = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    span.record("status", response.status().as_u16());
    let labels = RequestLabels { route, status: response.status().as_u16() };
    state.metrics.requests.get_or_create(&labels).inc();
    response
}

/// The client's address: the last `X-Forwarded-For` entry when the load balancer is trusted to append it, else
/// the TCP peer.
fn client_ip(state: &AppState, req: &Request) -> IpAddr {
    if state.limits.trust_forwarded_for
        && let Some(ip) = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse().ok())
    {
        return ip;
    }
    req.extensions().get::<ConnectInfo<SocketAddr>>().map_or(IpAddr::from([0, 0, 0, 0]), |ConnectInfo(addr)| addr.ip())
}

/// A header's value, when present and visible ASCII.
pub fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The named headers, lower-cased, for the envelope. Callers never name signatures or credentials.
pub fn kept_headers(headers: &HeaderMap, names: &[&str]) -> BTreeMap<String, String> {
    names.iter().filter_map(|name| header(headers, name).map(|v| ((*name).to_owned(), v.to_owned()))).collect()
}

/// The media type without parameters, lower-cased; empty when absent.
pub fn media_type(headers: &HeaderMap) -> String {
    header(headers, "content-type").unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// The W3C trace context to carry to the worker: the current span's when tracing exports spans (so the worker's
/// span is a child of this request's), else the caller's `traceparent` as received.
pub fn trace_context(headers: &HeaderMap) -> Option<eventfleet_schema::TraceContext> {
    let cx = tracing_opentelemetry::OpenTelemetrySpanExt::context(&tracing::Span::current());
    if opentelemetry::trace::TraceContextExt::span(&cx).span_context().is_valid() {
        let mut carrier = std::collections::HashMap::new();
        opentelemetry::propagation::TextMapPropagator::inject_context(
            &opentelemetry_sdk::propagation::TraceContextPropagator::new(),
            &cx,
            &mut carrier,
        );
        if let Some(traceparent) = carrier.remove("traceparent") {
            return Some(eventfleet_schema::TraceContext {
                traceparent,
                tracestate: carrier.remove("tracestate").filter(|t| !t.is_empty()),
            });
        }
    }
    let traceparent = header(headers, "traceparent").filter(|t| t.len() <= 128)?;
    Some(eventfleet_schema::TraceContext {
        traceparent: traceparent.to_owned(),
        tracestate: header(headers, "tracestate").filter(|t| t.len() <= 512).map(str::to_owned),
    })
}

/// Reads propagation headers from an HTTP request.
struct HeaderExtractor<'h>(&'h HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}
