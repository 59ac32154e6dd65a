//! The closed-loop driver: `concurrency` workers each send the next request as soon as the previous answered.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::traffic::Request;

/// Latency percentiles in milliseconds.
#[derive(Debug, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Slowest.
    pub max: f64,
}

impl Latency {
    /// All zero (nothing recorded).
    pub fn zero() -> Self {
        Self { p50: 0.0, p90: 0.0, p99: 0.0, p999: 0.0, max: 0.0 }
    }

    /// Percentiles of a histogram recorded in milliseconds.
    pub fn from_millis(h: &Histogram<u64>) -> Self {
        Self::scaled(h, 1.0)
    }

    /// Percentiles of a histogram recorded in microseconds.
    pub fn from_micros(h: &Histogram<u64>) -> Self {
        Self::scaled(h, 1000.0)
    }

    fn scaled(h: &Histogram<u64>, per_ms: f64) -> Self {
        let ms = |v: u64| v as f64 / per_ms;
        Self {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// What one run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Target URL.
    pub url: String,
    /// Requests answered.
    pub requests: u64,
    /// Requests per second.
    pub rps: f64,
    /// Answers by status (`"error"` for transport failures).
    pub status_counts: BTreeMap<String, u64>,
    /// Request latency.
    pub latency_ms: Latency,
}

/// Runs the closed loop for `duration`.
pub async fn closed_loop(
    url: &str,
    concurrency: usize,
    duration: Duration,
    make: impl Fn(u64) -> Request + Send + Sync + 'static,
) -> anyhow::Result<Report> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build()?;
    let make = Arc::new(make);
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (http, make, counter, url) = (http.clone(), make.clone(), counter.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
            let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
            while Instant::now() < deadline {
                let req = make(counter.fetch_add(1, Ordering::Relaxed));
                let mut builder =
                    http.post(format!("{url}{}", req.path)).header("content-type", req.content_type).body(req.body);
                for (k, v) in req.headers {
                    builder = builder.header(k, v);
                }
                let sent = Instant::now();
                let status = match builder.send().await {
                    Ok(resp) => {
                        let status = resp.status().as_u16().to_string();
                        let _ = resp.bytes().await;
                        status
                    }
                    Err(_) => "error".to_owned(),
                };
                hist.saturating_record(sent.elapsed().as_micros() as u64);
                *statuses.entry(status).or_default() += 1;
            }
            (hist, statuses)
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut status_counts = BTreeMap::new();
    for t in tasks {
        let (h, s) = t.await?;
        hist.add(h)?;
        for (k, v) in s {
            *status_counts.entry(k).or_default() += v;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    Ok(Report {
        url: url.to_owned(),
        requests: hist.len(),
        rps: hist.len() as f64 / elapsed,
        status_counts,
        latency_ms: Latency::from_micros(&hist),
    })
}
