//! The status page: queue depth, in flight, oldest message age, processed and failed rates, dead letters by
//! reason and the kinds that fail most, refreshed by a short htmx poll of [`panel`].
//!
//! Figures are cached: every open console polls, and on SQS the DLQ can only be read by receiving it (a peek
//! hides its messages for a moment), so its breakdown is read at most every 30 s there.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use eventfleet_schema::{Step, Timestamp};
use eventfleet_storage::{AuditQuery, DeadLetterFilter, QueueStats, Store};
use maud::{Markup, html};
use tokio::sync::Mutex;

use super::csrf::CsrfToken;
use super::page::{self, Section};
use super::{Operator, Shared, store_error};

/// The window of the rates.
const RATE_WINDOW: Duration = Duration::from_secs(300);

/// How the processed and failed rates are read.
pub enum Rates {
    /// From the audit trail (embedded: an indexed query).
    Audit,
    /// From the fleet's CloudWatch metrics (aws: scanning the audit table would read all of it).
    CloudWatch(crate::aws_ops::cloudwatch::Reader),
    /// Not available, and why.
    Off(&'static str),
}

impl Rates {
    /// CloudWatch's, when the workers publish there.
    pub fn cloudwatch(config: &crate::config::Config, aws: &eventfleet_storage::AwsStore) -> Self {
        match config.aws.cloudwatch_interval {
            None => Rates::Off("workers do not publish metrics (EVENTFLEET_CLOUDWATCH_INTERVAL_S=0)"),
            Some(_) => Rates::CloudWatch(crate::aws_ops::cloudwatch::Reader::new(
                aws.clients().cloudwatch.clone(),
                &config.aws.names.metrics_namespace,
                &config.aws.names.prefix,
            )),
        }
    }

    /// Events processed and failed (a retry or a dead letter) over [`RATE_WINDOW`].
    async fn read(&self, store: &Store) -> Result<(u64, u64), String> {
        match self {
            Rates::Audit => {
                let since = Some(store.clock.now().minus(RATE_WINDOW));
                let count = |step| async move {
                    let q = AuditQuery { step: Some(step), since, ..Default::default() };
                    store.audit.query(&q).await.map(|e| e.len() as u64).map_err(|e| e.to_string())
                };
                let processed = count(Step::Succeeded).await?;
                let failed = count(Step::RetryScheduled).await? + count(Step::DeadLettered).await?;
                Ok((processed, failed))
            }
            Rates::CloudWatch(reader) => {
                let sums = reader
                    .sums(&["EventsProcessed", "EventsFailed"], std::time::SystemTime::now(), RATE_WINDOW)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok((sums[0] as u64, sums[1] as u64))
            }
            Rates::Off(why) => Err((*why).to_owned()),
        }
    }
}

/// One reading of the figures.
#[derive(Clone)]
struct Snapshot {
    backend: &'static str,
    at: Timestamp,
    queue: Result<QueueStats, String>,
    rates: Result<(u64, u64), String>,
    dead: Dead,
}

/// The DLQ's breakdown, shared between snapshots (it is read less often).
type Dead = Arc<Result<DeadBreakdown, String>>;

#[derive(Clone, Default)]
struct DeadBreakdown {
    read_at: Option<Timestamp>,
    by_reason: Vec<(String, u64)>,
    top_kinds: Vec<(String, u64)>,
}

/// The cache in front of the figures.
pub struct StatusCache {
    rates: Rates,
    snapshot: Mutex<Option<(Instant, Snapshot)>>,
    dead: Mutex<Option<(Instant, Dead)>>,
    dead_every: Duration,
}

impl StatusCache {
    /// A cache reading rates so.
    pub fn new(rates: Rates) -> Self {
        let dead_every = if matches!(rates, Rates::Audit) { Duration::from_secs(4) } else { Duration::from_secs(30) };
        Self { rates, snapshot: Mutex::new(None), dead: Mutex::new(None), dead_every }
    }

    async fn read(&self, store: &Store) -> Snapshot {
        let mut cached = self.snapshot.lock().await;
        if let Some((at, snap)) = cached.as_ref()
            && at.elapsed() < Duration::from_secs(4)
        {
            return snap.clone();
        }
        let snap = Snapshot {
            backend: store.backend,
            at: store.clock.now(),
            queue: store.queue.stats().await.map_err(|e| e.to_string()),
            rates: self.rates.read(store).await,
            dead: self.dead_breakdown(store).await,
        };
        *cached = Some((Instant::now(), snap.clone()));
        snap
    }

    async fn dead_breakdown(&self, store: &Store) -> Dead {
        let mut cached = self.dead.lock().await;
        if let Some((at, dead)) = cached.as_ref()
            && at.elapsed() < self.dead_every
        {
            return dead.clone();
        }
        let dead = Arc::new(match store.dead_letters.list(&DeadLetterFilter::default()).await {
            Ok(letters) => {
                let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
                let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
                for l in &letters {
                    *by_reason.entry(l.reason.clone()).or_default() += 1;
                    *kinds.entry(l.envelope.kind().to_string()).or_default() += 1;
                }
                let sorted = |m: BTreeMap<String, u64>| {
                    let mut v: Vec<(String, u64)> = m.into_iter().collect();
                    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                    v.truncate(10);
                    v
                };
                Ok(DeadBreakdown {
                    read_at: Some(store.clock.now()),
                    by_reason: sorted(by_reason),
                    top_kinds: sorted(kinds),
                })
            }
            Err(e) => Err(e.to_string()),
        });
        *cached = Some((Instant::now(), dead.clone()));
        dead
    }
}

/// `GET /`.
pub async fn page(State(app): State<Shared>, operator: Operator, Extension(csrf): Extension<CsrfToken>) -> Response {
    let snap = app.status.read(&app.store).await;
    let body = html! {
        div #status-panel hx-get="/status/panel" hx-trigger="every 5s" hx-swap="innerHTML" {
            (render(&snap))
        }
    };
    page::frame("Status", Section::Status, &operator, &csrf, body).into_response()
}

/// `GET /status/panel`: the figures alone, for the poll.
pub async fn panel(State(app): State<Shared>, _operator: Operator) -> Response {
    let snap = app.status.read(&app.store).await;
    if let (Err(q), Err(_)) = (&snap.queue, &snap.rates) {
        return store_error(q);
    }
    render(&snap).into_response()
}

fn render(s: &Snapshot) -> Markup {
    let minutes = RATE_WINDOW.as_secs() / 60;
    let per_sec = |n: u64| format!("{:.2}/s", n as f64 / RATE_WINDOW.as_secs_f64());
    html! {
        p.muted { "Backend " strong { (s.backend) } " · read at " (page::time(s.at)) " · refreshes every 5 s" }
        @match &s.queue {
            Ok(q) => {
                div.cards {
                    div.card { span.label { "Waiting" } span.figure #queue-waiting { (q.waiting) } }
                    div.card { span.label { "In flight" } span.figure #queue-in-flight { (q.in_flight) } }
                    div.card {
                        span.label { "Oldest message" }
                        span.figure #queue-oldest { (q.oldest_age_ms.map_or("–".to_owned(), page::duration_ms)) }
                    }
                    div.card { span.label { "Dead letters" } span.figure #queue-dead { a href="/dlq" { (q.dead_letters) } } }
                    @match &s.rates {
                        Ok((processed, failed)) => {
                            div.card {
                                span.label { "Processed, last " (minutes) " min" }
                                span.figure #rate-processed { (processed) } span.muted { " " (per_sec(*processed)) }
                            }
                            // One class attribute: maud writes `class=[…]` as a second one, which browsers ignore.
                            div class={ "card" @if *failed > 0 { " bad" } } {
                                span.label { "Failed, last " (minutes) " min" }
                                span.figure #rate-failed { (failed) } span.muted { " " (per_sec(*failed)) }
                            }
                        }
                        Err(why) => div.card { span.label { "Rates" } span.muted { (why) } },
                    }
                }
            }
            Err(e) => p.error { "Queue figures unavailable: " (e) },
        }
        @match s.dead.as_ref() {
            Ok(d) => {
                div.columns {
                    section {
                        h2 { "Dead letters by reason" }
                        @if d.by_reason.is_empty() { p.muted { "None." } }
                        @else {
                            table #dlq-by-reason {
                                @for (reason, n) in &d.by_reason {
                                    tr { td.num { (n) } td { a href={"/dlq?error=" (page::q(reason))} { (reason) } } }
                                }
                            }
                        }
                    }
                    section {
                        h2 { "Top failing kinds" }
                        @if d.top_kinds.is_empty() { p.muted { "None." } }
                        @else {
                            table #top-failing-kinds {
                                @for (kind, n) in &d.top_kinds {
                                    tr { td.num { (n) } td { a href={"/dlq?kind=" (page::q(kind))} { code { (kind) } } } }
                                }
                            }
                        }
                    }
                }
                @if let Some(at) = d.read_at { p.muted { "Dead letters read at " (page::time(at)) "." } }
            }
            Err(e) => p.error { "Dead letters unavailable: " (e) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(failed: u64) -> Snapshot {
        Snapshot {
            backend: "embedded",
            at: Timestamp::from_millis(1_000),
            queue: Ok(QueueStats::default()),
            rates: Ok((10, failed)),
            dead: Arc::new(Ok(DeadBreakdown::default())),
        }
    }

    #[test]
    fn the_failed_card_is_marked_bad_with_one_class_attribute() {
        let bad = render(&snapshot(2)).into_string();
        assert!(bad.contains(r#"<div class="card bad">"#), "{bad}");
        assert!(!bad.contains(r#"class="card" class="#), "a second class attribute is ignored by browsers: {bad}");
        let fine = render(&snapshot(0)).into_string();
        assert!(!fine.contains("card bad"), "{fine}");
    }
}
