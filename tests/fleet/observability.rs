//! Metrics move when their events happen; the worker's spans join the ingress request's trace.

use std::time::Duration;

use eventfleet_schema::Step;
use eventfleet_stubs::slack::Reply;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt;

use crate::{Fleet, eventually};

/// The value of the first sample line starting with `prefix`.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_worker_metric_moves_when_its_event_happens() {
    // Each handler run counted once: no post waits for its channel's next slot (a wait is a run of its own).
    let f = Fleet::start_with(eventfleet_workers::WorkerConfig {
        channel_pace: crate::no_pace(),
        ..crate::worker_config()
    })
    .await;
    let before = f.metrics();
    assert_eq!(sample(&before, "eventfleet_worker_processed_total"), None, "nothing processed yet");
    let ok = f.hook("#ok").await;
    let flaky = f.hook("#flaky").await;
    let gone = f.hook("#gone").await;
    f.slack.script("#flaky", [Reply::Http(500)]);
    f.slack.always("#gone", Reply::SlackError("channel_not_found"));
    let a = f.send(&ok, "one").await;
    let b = f.send(&flaky, "two").await;
    let c = f.send(&gone, "three").await;
    f.wait_for(a, Step::Succeeded).await;
    f.wait_for(b, Step::Succeeded).await;
    f.wait_for(c, Step::DeadLettered).await;
    // The counters move just after the store step the trail shows: wait for the last of them.
    let settled = eventually(Duration::from_secs(10), || async {
        let text = f.metrics();
        let count = |s: &str| sample(&text, s).unwrap_or(0.0);
        let succeeded = count(r#"eventfleet_worker_processed_total{kind="hook.payload",outcome="succeeded"}"#);
        let dead = count(r#"eventfleet_worker_processed_total{kind="hook.payload",outcome="dead_lettered"}"#);
        (succeeded >= 2.0 && dead >= 1.0 && count("eventfleet_worker_in_flight") == 0.0).then_some(text)
    })
    .await;
    let text = settled.unwrap_or_else(|| f.metrics());
    let p = |s: &str| sample(&text, s).unwrap_or_else(|| panic!("no sample {s} in:\n{text}"));
    assert_eq!(p(r#"eventfleet_worker_processed_total{kind="hook.payload",outcome="succeeded"}"#), 2.0);
    assert_eq!(p(r#"eventfleet_worker_processed_total{kind="hook.payload",outcome="retry_scheduled"}"#), 1.0);
    assert_eq!(p(r#"eventfleet_worker_processed_total{kind="hook.payload",outcome="dead_lettered"}"#), 1.0);
    assert_eq!(p(r#"eventfleet_worker_retries_total{kind="hook.payload"}"#), 1.0);
    assert_eq!(p(r#"eventfleet_worker_dead_letters_total{kind="hook.payload"}"#), 1.0);
    assert_eq!(p(r#"eventfleet_worker_handler_duration_seconds_count{kind="hook.payload"}"#), 4.0);
    assert_eq!(p("eventfleet_worker_event_age_seconds_count"), 2.0);
    assert_eq!(p("eventfleet_worker_in_flight"), 0.0);
    assert_eq!(p(r#"eventfleet_ingress_requests_total{route="/hooks/{hook_id}",status="202"}"#), 3.0);
    assert_eq!(p(r#"eventfleet_ingress_accepted_events_total{source="hook"}"#), 3.0);
    // The queue gauges are refreshed every 15 s.
    let dlq = eventually(Duration::from_secs(40), || async {
        (sample(&f.metrics(), "eventfleet_worker_dlq_depth") == Some(1.0)).then_some(())
    })
    .await;
    assert!(dlq.is_some(), "dlq_depth reached 1:\n{}", f.metrics());
    assert_eq!(sample(&f.metrics(), "eventfleet_worker_queue_depth"), Some(0.0));
}

/// One thread (current-thread runtime), so the subscriber set for this test sees the ingress and worker spans.
#[tokio::test]
async fn the_handler_span_joins_the_ingress_request_trace() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    let subscriber =
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _guard = tracing::subscriber::set_default(subscriber);
    // Registers this thread's dispatcher with tracing's callsite cache before the fleet's first spans.
    tracing::info_span!("probe").in_scope(|| {});

    let f = Fleet::start().await;
    let hook = f.hook("#traced").await;
    let id = f.send(&hook, "follow me").await;
    f.wait_for(id, Step::Succeeded).await;
    // The pool finishes the delivery (and its spans) right after the audit line.
    let spans = eventually(Duration::from_secs(10), || async {
        provider.force_flush().unwrap();
        let spans = exporter.get_finished_spans().unwrap();
        spans.iter().any(|s| s.name == "worker.process").then_some(spans)
    })
    .await
    .expect("the worker's spans finished");
    let find = |name: &str| {
        spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
            panic!("no span {name} among {:?}", spans.iter().map(|s| s.name.to_string()).collect::<Vec<_>>())
        })
    };
    let request = find("ingress.request");
    let process = find("worker.process");
    let handle = find("worker.handle");
    assert_eq!(handle.span_context.trace_id(), request.span_context.trace_id(), "one trace across the queue");
    assert_eq!(process.parent_span_id, request.span_context.span_id(), "the worker continues the request");
    assert_eq!(handle.parent_span_id, process.span_context.span_id());
}
