//! Prometheus metrics of the ingress, registered into a registry the process owns (no global state). `dev` shares
//! one registry between ingress and workers, so `/metrics` shows both.

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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

/// `type` and `outcome` of a Socket Mode envelope.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EnvelopeLabels {
    /// `events_api`, `slash_commands`, `interactive`, `other`.
    pub r#type: &'static str,
    /// `accepted`, `duplicate`, `ignored` (acked without an event), `rejected` (malformed, acked), `failed` (not
    /// acked: Slack redelivers).
    pub outcome: &'static str,
}

/// Why a Socket Mode connection was replaced.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconnectLabels {
    /// `refresh_requested`, `warning`, `lost`, `stale`, `too_many_websockets`, `open_failed`, or another reason
    /// Slack gave.
    pub reason: String,
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
    /// Socket Mode connections open (after `hello`).
    pub socket_connections: Gauge,
    /// Socket Mode envelopes by type and outcome.
    pub socket_envelopes: Family<EnvelopeLabels, Counter>,
    /// Socket Mode connections replaced, by reason.
    pub socket_reconnects: Family<ReconnectLabels, Counter>,
    /// Seconds from an envelope's arrival to its ack written.
    pub socket_ack_seconds: Histogram,
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
        let socket_connections = Gauge::default();
        let socket_envelopes = Family::<EnvelopeLabels, Counter>::default();
        let socket_reconnects = Family::<ReconnectLabels, Counter>::default();
        let socket_ack_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register("socket_connections", "Slack Socket Mode connections open", socket_connections.clone());
        registry.register(
            "socket_envelopes",
            "Slack Socket Mode envelopes by type and outcome",
            socket_envelopes.clone(),
        );
        registry.register(
            "socket_reconnects",
            "Slack Socket Mode connections replaced, by reason",
            socket_reconnects.clone(),
        );
        registry.register(
            "socket_ack_latency_seconds",
            "Time from a Socket Mode envelope's arrival to its ack",
            socket_ack_seconds.clone(),
        );
        Self {
            requests,
            accepted,
            duplicates,
            enqueue_seconds,
            schedule_ticks,
            socket_connections,
            socket_envelopes,
            socket_reconnects,
            socket_ack_seconds,
        }
    }
}

impl Metrics {
    /// Counts `n` ticks of a schedule with an outcome.
    pub fn count_ticks(&self, schedule: &str, outcome: &'static str, n: u64) {
        self.schedule_ticks.get_or_create(&TickLabels { schedule: schedule.to_owned(), outcome }).inc_by(n);
    }

    /// Counts a Socket Mode envelope.
    pub fn count_envelope(&self, kind: &'static str, outcome: &'static str) {
        self.socket_envelopes.get_or_create(&EnvelopeLabels { r#type: kind, outcome }).inc();
    }

    /// Counts a replaced Socket Mode connection.
    pub fn count_reconnect(&self, reason: &str) {
        // Slack's reasons are a handful; anything longer is not one of them.
        let reason = if reason.len() <= 40 { reason } else { "other" };
        self.socket_reconnects.get_or_create(&ReconnectLabels { reason: reason.to_owned() }).inc();
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
