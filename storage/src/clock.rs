//! Injectable wall-clock time.

use std::fmt::Debug;

use eventfleet_schema::Timestamp;

/// Where the current time comes from. Everything that compares against "now" (visibility, dedup window, TTL,
/// leases, signature windows) takes a clock so tests control it.
pub trait Clock: Send + Sync + Debug {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now_system()
    }
}

/// Wall time that follows tokio's clock: starts at the system time of creation and then advances with
/// `tokio::time::Instant`, so `tokio::time::pause()` and `advance()` move it. Outside paused tests it behaves
/// like [`SystemClock`] (monotonic, no jumps).
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    wall_at_start: Timestamp,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock starting now.
    pub fn new() -> Self {
        Self { wall_at_start: Timestamp::now_system(), start: tokio::time::Instant::now() }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        self.wall_at_start.plus(self.start.elapsed())
    }
}

/// A clock stopped at one instant: verifying a captured message at the time it was sent.
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub Timestamp);

impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        self.0
    }
}
