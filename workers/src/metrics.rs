//! Prometheus metrics of the worker pool, registered into a registry the process owns (the `dev` process shares
//! one registry between ingress and workers; `eventfleet worker` serves it on its metrics port).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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
    /// Running totals since the last [`Totals::take`], for publishers that send deltas (CloudWatch).
    pub totals: Arc<Totals>,
}

/// Samples summarised: what CloudWatch takes as a statistic set.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    /// Samples.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
}

impl Summary {
    fn add(&mut self, v: f64) {
        if self.count == 0 {
            self.min = v;
            self.max = v;
        } else {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        self.count += 1;
        self.sum += v;
    }
}

/// Counts and summaries since they were last taken.
#[derive(Debug, Default)]
pub struct Totals {
    processed: AtomicU64,
    failed: AtomicU64,
    dead_lettered: AtomicU64,
    handler_ms: Mutex<Summary>,
    event_age_ms: Mutex<Summary>,
}

/// What [`Totals::take`] returns.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TotalsSnapshot {
    /// Events handled successfully.
    pub processed: u64,
    /// Attempts that failed and were scheduled for a retry.
    pub failed: u64,
    /// Events dead-lettered.
    pub dead_lettered: u64,
    /// Handler run times, in milliseconds.
    pub handler_ms: Summary,
    /// Event age at success, in milliseconds.
    pub event_age_ms: Summary,
}

impl Totals {
    /// Returns the totals and starts again from zero.
    pub fn take(&self) -> TotalsSnapshot {
        let take = |m: &Mutex<Summary>| std::mem::take(&mut *m.lock().unwrap_or_else(|p| p.into_inner()));
        TotalsSnapshot {
            processed: self.processed.swap(0, Ordering::Relaxed),
            failed: self.failed.swap(0, Ordering::Relaxed),
            dead_lettered: self.dead_lettered.swap(0, Ordering::Relaxed),
            handler_ms: take(&self.handler_ms),
            event_age_ms: take(&self.event_age_ms),
        }
    }
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
            totals: Arc::default(),
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
        let total = match outcome {
            "succeeded" => &self.totals.processed,
            "retry_scheduled" => &self.totals.failed,
            "dead_lettered" => &self.totals.dead_lettered,
            _ => return,
        };
        total.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn observe_handler(&self, kind: &str, elapsed: std::time::Duration) {
        self.handler_seconds.get_or_create(&Self::kind(kind)).observe(elapsed.as_secs_f64());
        self.totals.handler_ms.lock().unwrap_or_else(|p| p.into_inner()).add(elapsed.as_secs_f64() * 1000.0);
    }

    pub(crate) fn observe_age(&self, age: std::time::Duration) {
        self.event_age_seconds.observe(age.as_secs_f64());
        self.totals.event_age_ms.lock().unwrap_or_else(|p| p.into_inner()).add(age.as_secs_f64() * 1000.0);
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
