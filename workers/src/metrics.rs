//! Prometheus metrics of the worker pool, registered into a registry the process owns (the `dev` process shares
//! one registry between ingress and workers; `eventfleet worker` serves it on its metrics port).

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `kind` and `outcome` of a delivery.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// Event kind.
    pub kind: String,
    /// `succeeded`, `skipped_duplicate`, `retry_scheduled`, `dead_lettered`, `released`, `storage_error`.
    pub outcome: String,
}

/// `kind` of an event.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// Event kind.
    pub kind: String,
}

/// The worker metrics.
#[derive(Debug, Clone)]
pub struct WorkerMetrics {
    /// Deliveries by kind and outcome.
    pub processed: Family<OutcomeLabels, Counter>,
    /// Handler run time by kind, seconds.
    pub handler_seconds: Family<KindLabels, Histogram>,
    /// Time from ingress receipt to the end of a successful handler, seconds.
    pub event_age_seconds: Histogram,
    /// Retries scheduled, by kind.
    pub retries: Family<KindLabels, Counter>,
    /// Events dead-lettered, by kind.
    pub dead_letters: Family<KindLabels, Counter>,
    /// Handlers running now.
    pub in_flight: Gauge<i64, AtomicI64>,
    /// Messages waiting on the queue (refreshed every few seconds).
    pub queue_depth: Gauge<i64, AtomicI64>,
    /// Messages in flight on the queue, across all workers.
    pub queue_in_flight: Gauge<i64, AtomicI64>,
    /// Age of the oldest message on the queue, seconds.
    pub oldest_message_age_seconds: Gauge<i64, AtomicI64>,
    /// Messages on the dead-letter queue.
    pub dlq_depth: Gauge<i64, AtomicI64>,
}

impl WorkerMetrics {
    /// Metrics registered into `registry` under `eventfleet_worker_`.
    pub fn register(registry: &mut Registry) -> Self {
        // 1 ms to ~65 s.
        let handler_seconds = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 17))
        });
        let m = Self {
            processed: Family::default(),
            handler_seconds,
            // 5 ms to ~5.8 h.
            event_age_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 22)),
            retries: Family::default(),
            dead_letters: Family::default(),
            in_flight: Gauge::default(),
            queue_depth: Gauge::default(),
            queue_in_flight: Gauge::default(),
            oldest_message_age_seconds: Gauge::default(),
            dlq_depth: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("eventfleet_worker");
        r.register("processed", "Deliveries by kind and outcome", m.processed.clone());
        r.register("handler_duration_seconds", "Handler run time", m.handler_seconds.clone());
        r.register("event_age_seconds", "Time from ingress receipt to handler success", m.event_age_seconds.clone());
        r.register("retries", "Retries scheduled", m.retries.clone());
        r.register("dead_letters", "Events dead-lettered", m.dead_letters.clone());
        r.register("in_flight", "Handlers running in this process", m.in_flight.clone());
        r.register("queue_depth", "Messages waiting on the queue", m.queue_depth.clone());
        r.register("queue_in_flight", "Messages in flight on the queue", m.queue_in_flight.clone());
        r.register(
            "oldest_message_age_seconds",
            "Age of the oldest message on the queue",
            m.oldest_message_age_seconds.clone(),
        );
        r.register("dlq_depth", "Messages on the dead-letter queue", m.dlq_depth.clone());
        m
    }

    /// Metrics on a private registry (tests, and callers that do not export them).
    pub fn unregistered() -> Self {
        Self::register(&mut Registry::default())
    }

    pub(crate) fn count(&self, kind: &str, outcome: &str) {
        self.processed.get_or_create(&OutcomeLabels { kind: kind.to_owned(), outcome: outcome.to_owned() }).inc();
    }

    pub(crate) fn kind(kind: &str) -> KindLabels {
        KindLabels { kind: kind.to_owned() }
    }
}

/// Serves `GET /metrics` (and `GET /health`) for a worker process until `shutdown` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: std::sync::Arc<std::sync::Mutex<Registry>>,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    use axum::routing::get;
    let render = move || {
        let registry = registry.clone();
        async move {
            let mut out = String::new();
            if let Ok(r) = registry.lock() {
                let _ = prometheus_client::encoding::text::encode(&mut out, &r);
            }
            ([(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], out)
        }
    };
    let app = axum::Router::new()
        .route("/metrics", get(render))
        .route("/health", get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }));
    axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}
