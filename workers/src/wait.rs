//! A step that may have to wait: [`Ready`] (now, or after a [`Wait`]). A channel's pace and Slack's
//! `Retry-After` are waits, not failures: the event is deferred (hidden for the wait, no attempt counted) and runs
//! again, so no handler slot sleeps and no retry is spent.

use std::time::Duration;

/// Why a step waits, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    /// How long.
    pub wait: Duration,
    /// Why (the `deferred` line says it).
    pub reason: String,
}

/// A value now, or a wait before it can be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready<T> {
    /// Done.
    Now(T),
    /// Not yet: come back after the wait.
    Wait(Wait),
}

impl<T> Ready<T> {
    /// The value now, mapped.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Ready<U> {
        match self {
            Ready::Now(v) => Ready::Now(f(v)),
            Ready::Wait(w) => Ready::Wait(w),
        }
    }
}

impl<T> From<Wait> for Ready<T> {
    fn from(wait: Wait) -> Self {
        Ready::Wait(wait)
    }
}
