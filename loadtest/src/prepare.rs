//! Traffic prepared before the timed phase: every request of the run built and signed up front (HMAC for Slack
//! and GitHub, RSA for SNS) on every core, so that during the run the generator only sends. Each event is stamped
//! with the time it is expected to go out (Slack accepts signatures within 300 s of its clock, either side), so a
//! run of a few minutes stays inside the window however long the preparation took.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use eventfleet_schema::Timestamp;

use crate::traffic::{Planned, Traffic};

/// The prepared events, handed out once each, in order.
pub struct Prepared {
    events: Mutex<std::vec::IntoIter<(u64, Planned)>>,
    /// How many were prepared.
    pub count: usize,
    /// How long preparing took.
    pub took: Duration,
}

impl Prepared {
    /// Prepares `count` events, event `n` stamped `n × spacing` after now.
    pub fn new(traffic: &Traffic, count: u64, spacing: Duration) -> Self {
        let started = Instant::now();
        let now = Timestamp::now_system().as_millis();
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).max(1) as u64;
        let chunk = count.div_ceil(threads).max(1);
        let spacing_ms = spacing.as_secs_f64() * 1000.0;
        let mut events: Vec<(u64, Planned)> = Vec::with_capacity(count as usize);
        std::thread::scope(|scope| {
            let parts: Vec<_> = (0..threads)
                .map(|t| {
                    let range = (t * chunk).min(count)..((t + 1) * chunk).min(count);
                    scope.spawn(move || {
                        range
                            .map(|n| {
                                let at = now + (n as f64 * spacing_ms) as i64;
                                (n, traffic.event_at(n, at.div_euclid(1000)))
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for part in parts {
                // A generator thread cannot fail short of a bug; its panic is re-raised here.
                events.extend(part.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
            }
        });
        Self { count: events.len(), events: Mutex::new(events.into_iter()), took: started.elapsed() }
    }

    /// The next event, until all are sent.
    pub fn next(&self) -> Option<(u64, Planned)> {
        self.events.lock().ok()?.next()
    }

    /// The first deliveries of up to `n` events, for the baseline (which answers everything and keeps nothing,
    /// so it may see them again).
    pub fn sample(traffic: &Traffic, n: u64) -> Vec<crate::traffic::Request> {
        Prepared::new(traffic, n, Duration::ZERO)
            .events
            .into_inner()
            .map(|e| e.map(|(_, p)| p.first).collect())
            .unwrap_or_default()
    }
}

/// This process's CPU time so far (user and system), from `/proc/self/stat`.
pub fn cpu_time() -> Duration {
    let ticks = std::fs::read_to_string("/proc/self/stat").ok().and_then(|stat| {
        // Fields after the command name (which may hold spaces) start after the last ')'.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some(utime + stime)
    });
    // The kernel's USER_HZ is 100 on every Linux this runs on.
    Duration::from_millis(ticks.unwrap_or(0) * 10)
}
