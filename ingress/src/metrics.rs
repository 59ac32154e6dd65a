//! Prometheus metrics of the ingress, registered into a registry the process owns (no global state). `dev` shares
//! one registry between ingress and workers, so `/metrics` shows both.

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `route` and `status` of a request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The matched route (`/hooks/{hook_id}`), never the raw path (unbounded cardinality).
    pub route: String,
    /// The HTTP status.
    pub status: u16,
}

/// `source` of an event.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// `slack`, `github`, `hook`, `sns`.
    pub source: String,
}

/// `schedule` and `outcome` of a tick.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TickLabels {
    /// The schedule's name (bounded: the schedules file's entries).
    pub schedule: String,
    /// `accepted` (this process made the tick's event), `duplicate` (another process had), `caught_up` (a
    /// catch-up event), `missed` (ticks nobody ran in time), `failed` (an accept that is retried).
    pub outcome: &'static str,
}

/// A registry shared by the components of one process.
pub type SharedRegistry = Arc<Mutex<Registry>>;

/// The Prometheus text exposition of a registry.
pub fn render(registry: &SharedRegistry) -> String {
    let mut out = String::new();
    if let Ok(registry) = registry.lock() {
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    }
    out
}

/// The ingress metrics.
#[derive(Clone)]
pub struct Metrics {
    /// Requests by route and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Accepted events by source.
    pub accepted: Family<SourceLabels, Counter>,
    /// Redeliveries acknowledged without an enqueue, by source.
    pub duplicates: Family<SourceLabels, Counter>,
    /// Seconds from claim to `ENQUEUED`.
    pub enqueue_seconds: Histogram,
    /// Schedule ticks by schedule and outcome.
    pub schedule_ticks: Family<TickLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Metrics registered into `registry` under `eventfleet_ingress_`.
    pub fn register(registry: &mut Registry) -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let accepted = Family::<SourceLabels, Counter>::default();
        let duplicates = Family::<SourceLabels, Counter>::default();
        // 0.5 ms to ~4 s.
        let enqueue_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        let registry = registry.sub_registry_with_prefix("eventfleet_ingress");
        registry.register("requests", "HTTP requests by route and status", requests.clone());
        registry.register("accepted_events", "Events accepted and durably enqueued", accepted.clone());
        registry.register("duplicates", "Redeliveries acknowledged without a second enqueue", duplicates.clone());
        registry.register(
            "enqueue_latency_seconds",
            "Time from idempotency claim to ENQUEUED",
            enqueue_seconds.clone(),
        );
        let schedule_ticks = Family::<TickLabels, Counter>::default();
        registry.register("schedule_ticks", "Schedule ticks by schedule and outcome", schedule_ticks.clone());
        Self { requests, accepted, duplicates, enqueue_seconds, schedule_ticks }
    }
}

impl Metrics {
    /// Counts `n` ticks of a schedule with an outcome.
    pub fn count_ticks(&self, schedule: &str, outcome: &'static str, n: u64) {
        self.schedule_ticks.get_or_create(&TickLabels { schedule: schedule.to_owned(), outcome }).inc_by(n);
    }

    /// Counts an accepted or duplicate event.
    pub fn count_event(&self, source: &str, duplicate: bool) {
        let labels = SourceLabels { source: source.to_owned() };
        if duplicate {
            self.duplicates.get_or_create(&labels).inc();
        } else {
            self.accepted.get_or_create(&labels).inc();
        }
    }
}
