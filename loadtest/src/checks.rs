//! After the run: the queue drained, then every event answered 2xx completed exactly once, duplicates not
//! handled again, nothing lost or left in flight, checked against the store and the Slack stub.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventfleet_schema::{EventId, Status, Step};
use eventfleet_storage::AuditQuery;
use eventfleet_stubs::slack::SlackStub;
use hdrhistogram::Histogram;

use crate::drive::Latency;
use crate::fleet::Fleet;
use crate::traffic::markers;

use crate::report::{Report, RunArgs, machine};
use crate::send::{Generated, Outcome};

/// Waits until the queue has been empty (nothing waiting or in flight) three polls in a row, or `limit`.
pub async fn wait_for_drain(store: &eventfleet_storage::Store, limit: Duration) -> anyhow::Result<bool> {
    let deadline = Instant::now() + limit;
    let mut quiet = 0;
    while Instant::now() < deadline {
        let stats = store.queue.stats().await?;
        if stats.waiting + stats.in_flight == 0 {
            quiet += 1;
            if quiet >= 3 {
                return Ok(true);
            }
        } else {
            quiet = 0;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(false)
}

/// Checks the run's effects against what the senders saw; returns the check's findings for the report.
#[allow(clippy::too_many_arguments)]
pub async fn verify(
    args: &RunArgs,
    store: &eventfleet_storage::Store,
    stub: &SlackStub,
    outcome: &Outcome,
    baseline_rps: f64,
    load_secs: f64,
    drained: bool,
    kills: u64,
    fleet: &Arc<Mutex<Option<Fleet>>>,
    generated: &Generated,
    receiver: Option<&crate::receiver::Receiver>,
) -> anyhow::Result<Report> {
    let accepted: HashMap<u64, (EventId, &'static str, bool)> =
        outcome.event_ids.lock().map(|m| m.clone()).unwrap_or_default();
    let received = store.audit.query(&AuditQuery { step: Some(Step::Received), ..Default::default() }).await?;
    let succeeded = store.audit.query(&AuditQuery { step: Some(Step::Succeeded), ..Default::default() }).await?;
    let dead = store.audit.query(&AuditQuery { step: Some(Step::DeadLettered), ..Default::default() }).await?;
    let mut first_received: HashMap<EventId, i64> = HashMap::new();
    for e in &received {
        first_received.entry(e.event_id).or_insert(e.at.as_millis());
    }
    let mut successes: HashMap<EventId, (u32, i64)> = HashMap::new();
    for e in &succeeded {
        let entry = successes.entry(e.event_id).or_insert((0, e.at.as_millis()));
        entry.0 += 1;
    }
    let mut e2e = Histogram::<u64>::new_with_bounds(1, 3_600_000, 3)?;
    let (mut completed, mut lost, mut duplicate_completions) = (0u64, 0u64, 0u64);
    let mut lost_examples = Vec::new();
    let mut completed_without_audit = 0u64;
    let mut by_source: BTreeMap<String, u64> = BTreeMap::new();
    let (mut first_at, mut last_at) = (i64::MAX, i64::MIN);
    for (id, source, _) in accepted.values() {
        *by_source.entry((*source).to_owned()).or_default() += 1;
        match successes.get(id) {
            Some((count, at)) => {
                completed += 1;
                if *count > 1 {
                    duplicate_completions += 1;
                }
                if let Some(r) = first_received.get(id) {
                    e2e.saturating_record((at - r).max(1) as u64);
                    first_at = first_at.min(*r);
                }
                last_at = last_at.max(*at);
            }
            // No `succeeded` line: the idempotency record is the source of truth.
            None if store.idempotency.find_by_event(*id).await?.is_some_and(|r| r.status == Status::Done) => {
                completed += 1;
                completed_without_audit += 1;
            }
            None => {
                lost += 1;
                if lost_examples.len() < 10 {
                    let record = store.idempotency.find_by_event(*id).await?;
                    let steps: Vec<String> =
                        store.audit.history(*id).await?.iter().map(|e| format!("{}@{}", e.step, e.actor)).collect();
                    lost_examples.push(serde_json::json!({
                        "event_id": id, "source": source,
                        "status": record.as_ref().map(|r| r.status.as_str()),
                        "outcome": record.and_then(|r| r.outcome), "steps": steps,
                    }));
                }
            }
        }
    }
    // Effects: posts per marker, for events that post. A burst digest lists its posts (alarms of a storm among
    // them) by event id. (A flap counter is the post of the event that started it: counted.)
    let by_event: HashMap<EventId, u64> = accepted.iter().map(|(n, (id, _, _))| (*id, *n)).collect();
    let mut posts: HashMap<u64, u64> = HashMap::new();
    let slack_posts = stub.posted();
    for p in &slack_posts {
        let part = p["metadata"]["event_payload"]["part"].as_str().unwrap_or("post");
        let text = p["text"].as_str().unwrap_or("").to_owned() + &p["blocks"].to_string();
        let shown: HashSet<u64> = match part {
            "burst" => text.split('`').filter_map(EventId::parse).filter_map(|id| by_event.get(&id).copied()).collect(),
            _ => markers(&text).into_iter().collect(),
        };
        for m in shown {
            *posts.entry(m).or_default() += 1;
        }
    }
    let duplicate_effects: u64 = posts.values().map(|c| c.saturating_sub(1)).sum();
    let mut duplicate_examples = Vec::new();
    let mut effects_beyond_attempts = 0u64;
    for (n, (id, _, _)) in accepted.iter().filter(|(n, _)| posts.get(n).is_some_and(|c| *c > 1)) {
        let attempts = store.audit.history(*id).await?.iter().filter(|e| e.step == Step::Started).count() as u64;
        effects_beyond_attempts += posts[n].saturating_sub(attempts.max(1));
    }
    for (n, (id, _, _)) in accepted.iter().filter(|(n, _)| posts.get(n).is_some_and(|c| *c > 1)).take(10) {
        let steps: Vec<String> =
            store.audit.history(*id).await?.iter().map(|e| format!("{}@{}", e.step, e.actor)).collect();
        duplicate_examples.push(serde_json::json!({ "marker": n, "event_id": id, "posts": posts[n], "steps": steps }));
    }
    // Deliveries to the destination, for the routed (GitHub) events: each completed one arrived, and none more
    // often than its recorded attempts.
    let (mut routed, mut deliveries, mut deliveries_missing, mut deliveries_beyond_attempts) = (0u64, 0u64, 0u64, 0u64);
    if let Some(receiver) = receiver {
        let by_id = receiver.deliveries();
        deliveries = by_id.values().sum();
        for (id, _, _) in accepted.values().filter(|(_, source, _)| *source == "github") {
            routed += 1;
            let got = by_id.get(&id.to_string()).copied().unwrap_or(0);
            if got == 0 && successes.contains_key(id) {
                deliveries_missing += 1;
            }
            if got > 1 {
                let attempts =
                    store.audit.history(*id).await?.iter().filter(|e| e.step == Step::Started).count() as u64;
                deliveries_beyond_attempts += got.saturating_sub(attempts.max(1));
            }
        }
    }
    // An alarm counted as flapping has no post of its own: its effect is the update of its thread's counter,
    // which carries its mark (found even when an earlier attempt made it and the next found it done).
    let counted: HashSet<String> = stub
        .updates()
        .iter()
        .filter(|u| u["text"].as_str().is_some_and(|t| t.contains(" is flapping: ")))
        .filter_map(|u| u["metadata"]["event_payload"]["event_id"].as_str().map(str::to_owned))
        .collect();
    let (mut missing_effects, mut collapsed, mut missing_examples) = (0u64, 0u64, Vec::new());
    for (_, (id, _, _)) in accepted.iter().filter(|(n, (_, _, p))| *p && !posts.contains_key(n)) {
        let outcome = store.idempotency.find_by_event(*id).await?.and_then(|r| r.outcome).unwrap_or_default();
        if counted.contains(&id.to_string()) {
            collapsed += 1;
        } else {
            missing_effects += 1;
            if missing_examples.len() < 10 {
                missing_examples.push(serde_json::json!({ "event_id": id, "outcome": outcome }));
            }
        }
    }
    let stats = store.queue.stats().await?;
    let left_in_flight = stats.waiting + stats.in_flight;
    let span_secs = if last_at > first_at { (last_at - first_at) as f64 / 1000.0 } else { load_secs };
    let requests = outcome.requests.load(Ordering::Relaxed) as f64;
    let ingress_rps = requests / load_secs.max(0.001);
    let latency = outcome.latency.lock().map(|h| Latency::from_micros(&h)).unwrap_or(Latency::zero());
    let mut peak: BTreeMap<String, f64> = BTreeMap::new();
    if let Ok(guard) = fleet.lock()
        && let Some(f) = guard.as_ref()
    {
        for p in &f.procs {
            let role = if p.name.starts_with("worker") { "worker" } else { p.name.as_str() };
            let mib = p.peak_rss_kib as f64 / 1024.0;
            let e = peak.entry(role.to_owned()).or_insert(0.0);
            *e = e.max(mib);
        }
    }
    Ok(Report {
        accepted: accepted.len() as u64,
        unaccepted: outcome.unaccepted.load(Ordering::Relaxed),
        resend_mismatches: outcome.resend_mismatches.load(Ordering::Relaxed),
        completed,
        lost,
        lost_examples,
        completed_without_audit,
        missing_effects,
        missing_examples,
        collapsed,
        slack_posts: slack_posts.len() as u64,
        slack_429: stub.limited(),
        duplicate_effects,
        effects_beyond_attempts,
        duplicate_examples,
        duplicate_completions,
        routed,
        deliveries,
        deliveries_missing,
        deliveries_beyond_attempts,
        dead_lettered: dead.len() as u64,
        left_in_flight: if drained { left_in_flight } else { left_in_flight.max(1) },
        resends: outcome.resends.load(Ordering::Relaxed),
        throughput_eps: completed as f64 / span_secs.max(0.001),
        ingress_latency_ms: latency,
        e2e_latency_ms: Latency::from_millis(&e2e),
        baseline_rps,
        ratio_to_baseline: if baseline_rps > 0.0 { ingress_rps / baseline_rps } else { 0.0 },
        ingress_rps,
        prepared_events: generated.prepared as u64,
        prepare_secs: generated.prepare_secs,
        generator_cpu_secs: generated.cpu_secs,
        generator_cores: generated.cpu_secs / load_secs.max(0.001),
        status_counts: outcome.statuses.lock().map(|s| s.clone()).unwrap_or_default(),
        accepted_by_source: by_source,
        kills,
        peak_rss_mib: peak,
        settings: serde_json::json!({
            "duration_s": args.duration.as_secs(), "rate": args.rate, "chaos": args.chaos,
            "workers": args.workers, "connections": args.connections, "target": args.target, "shape": args.shape,
            "route": args.route, "defaults": args.defaults,
        }),
        machine: machine(),
    })
}
