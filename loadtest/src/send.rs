//! The timed phase: prepared traffic sent open loop (at a rate) or closed loop (a number of senders), each event
//! retried as its sender would on 5xx and connection errors, and its resend (a Slack retry, a GitHub redelivery)
//! sent after it; what came back is recorded in [`Outcome`].

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventfleet_schema::EventId;
use hdrhistogram::Histogram;

use crate::prepare::Prepared;
use crate::report::RunArgs;
use crate::traffic::{Planned, Request, Traffic};

/// What the senders saw: the event id answered for each event, statuses, latencies, resends.
pub struct Outcome {
    pub event_ids: Mutex<HashMap<u64, (EventId, &'static str, bool)>>,
    pub statuses: Mutex<BTreeMap<String, u64>>,
    pub latency: Mutex<Histogram<u64>>,
    pub requests: AtomicU64,
    pub resends: AtomicU64,
    /// Events refused (4xx) or never answered 2xx after all retries.
    pub unaccepted: AtomicU64,
    /// Resends answered with another event id than the first delivery.
    pub resend_mismatches: AtomicU64,
}

/// What the sending phase measured of itself.
pub struct Generated {
    /// Seconds of the timed phase.
    pub load_secs: f64,
    /// Events prepared before it.
    pub prepared: usize,
    /// Seconds the preparation took.
    pub prepare_secs: f64,
    /// CPU seconds the generator used during the timed phase.
    pub cpu_secs: f64,
}

/// Prepares the traffic, then sends it: open loop at `rate`, or closed loop with `connections` senders.
pub async fn generate(
    args: &RunArgs,
    base: &str,
    traffic: &Traffic,
    outcome: Arc<Outcome>,
) -> anyhow::Result<Generated> {
    let (count, spacing) = match args.rate {
        Some(rate) => {
            let rate = rate.max(1);
            (rate * args.duration.as_secs().max(1) + rate, Duration::from_secs_f64(1.0 / rate as f64))
        }
        None => {
            let count = args.max_events.max(1);
            (count, args.duration / u32::try_from(count).unwrap_or(u32::MAX))
        }
    };
    let prepared = {
        let traffic = traffic.clone();
        Arc::new(tokio::task::spawn_blocking(move || Prepared::new(&traffic, count, spacing)).await?)
    };
    eprintln!("prepared {} events in {:.1} s", prepared.count, prepared.took.as_secs_f64());
    let http =
        reqwest::Client::builder().pool_max_idle_per_host(args.connections).timeout(Duration::from_secs(10)).build()?;
    let cpu_before = crate::prepare::cpu_time();
    let started = Instant::now();
    let deadline = started + args.duration;
    let slots = Arc::new(tokio::sync::Semaphore::new(args.connections));
    let progress = tokio::spawn({
        let outcome = outcome.clone();
        async move {
            let start = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let accepted = outcome.event_ids.lock().map(|m| m.len()).unwrap_or(0);
                let sent = outcome.requests.load(Ordering::Relaxed);
                eprintln!("t={:>4.0}s requests={sent} accepted={accepted}", start.elapsed().as_secs_f64());
            }
        }
    });
    let mut tasks = tokio::task::JoinSet::new();
    match args.rate {
        Some(rate) => {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            while Instant::now() < deadline {
                let scheduled = tick.tick().await.into_std();
                let permit = slots.clone().acquire_owned().await?;
                let Some((n, planned)) = prepared.next() else { break };
                let (http, base, outcome) = (http.clone(), base.to_owned(), outcome.clone());
                tasks.spawn(async move {
                    deliver(&http, &base, n, planned, scheduled, &outcome).await;
                    drop(permit);
                });
                while tasks.try_join_next().is_some() {}
            }
        }
        None => {
            for _ in 0..args.connections {
                let (http, base, outcome, prepared) =
                    (http.clone(), base.to_owned(), outcome.clone(), prepared.clone());
                tasks.spawn(async move {
                    while Instant::now() < deadline {
                        let Some((n, planned)) = prepared.next() else { break };
                        deliver(&http, &base, n, planned, Instant::now(), &outcome).await;
                    }
                });
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    progress.abort();
    let load_secs = started.elapsed().as_secs_f64();
    if prepared.next().is_none() && load_secs + 0.5 < args.duration.as_secs_f64() {
        eprintln!("all {} prepared events sent before the duration ran out: raise --max-events", prepared.count);
    }
    Ok(Generated {
        load_secs,
        prepared: prepared.count,
        prepare_secs: prepared.took.as_secs_f64(),
        cpu_secs: (crate::prepare::cpu_time().saturating_sub(cpu_before)).as_secs_f64(),
    })
}

/// Sends one event (retrying as senders do on 5xx and connection errors), then its resend if any.
async fn deliver(http: &reqwest::Client, base: &str, n: u64, planned: Planned, scheduled: Instant, outcome: &Outcome) {
    let Planned { source, first, resend, posts } = planned;
    if let Some(id) = send_with_retries(http, base, &first, scheduled, outcome).await {
        if let Ok(mut ids) = outcome.event_ids.lock() {
            ids.insert(n, (id, source, posts));
        }
        if let Some(again) = resend {
            outcome.resends.fetch_add(1, Ordering::Relaxed);
            match send_with_retries(http, base, &again, Instant::now(), outcome).await {
                Some(dup) if dup == id => {}
                Some(dup) => {
                    outcome.resend_mismatches.fetch_add(1, Ordering::Relaxed);
                    eprintln!("resend of event {n} answered a different event id: {dup} vs {id}");
                }
                None => {
                    outcome.unaccepted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    } else {
        outcome.unaccepted.fetch_add(1, Ordering::Relaxed);
    }
}

async fn send_with_retries(
    http: &reqwest::Client,
    base: &str,
    req: &Request,
    scheduled: Instant,
    outcome: &Outcome,
) -> Option<EventId> {
    for attempt in 0..20u32 {
        let mut builder =
            http.post(format!("{base}{}", req.path)).header("content-type", req.content_type).body(req.body.clone());
        for (k, v) in &req.headers {
            builder = builder.header(*k, v);
        }
        let sent = if attempt == 0 { scheduled } else { Instant::now() };
        outcome.requests.fetch_add(1, Ordering::Relaxed);
        let answer = builder.send().await;
        let micros = sent.elapsed().as_micros() as u64;
        if let Ok(mut h) = outcome.latency.lock() {
            h.saturating_record(micros.max(1));
        }
        let (status, id) = match answer {
            Ok(resp) => {
                let status = resp.status();
                let body: Option<serde_json::Value> = resp.json().await.ok();
                let id = body.as_ref().and_then(|b| b["event_id"].as_str()).and_then(EventId::parse);
                (status.as_u16().to_string(), status.is_success().then_some(id).flatten())
            }
            Err(_) => ("error".to_owned(), None),
        };
        if let Ok(mut s) = outcome.statuses.lock() {
            *s.entry(status.clone()).or_default() += 1;
        }
        if id.is_some() {
            return id;
        }
        if !(status == "error" || status.starts_with('5') || status == "429") {
            eprintln!("request to {} refused with {status}", req.path);
            return None;
        }
        // The sender's retry, like Slack's and SNS's: after a pause, the same request.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}
