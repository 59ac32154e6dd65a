//! Scheduled events: every process running the ingress evaluates the schedules file and accepts each tick as an
//! event keyed `schedule:{name}:{tick}` through the same [`crate::accept`] step as an HTTP delivery. The key is
//! the same in every process, so the protocol keeps exactly one event per tick however many evaluate it; the
//! others' accepts are counted duplicates. Ticks of one schedule share the message group `schedule:{name}`, so
//! they run in order.
//!
//! - [`file`]: the TOML file and its validation.
//! - [`run`]: the per-schedule loops, the catch-up after downtime, and [`look_back`] (the last tick on record).

pub mod file;
pub mod run;

pub use file::{Action, CatchUp, Schedule, ScheduleFileError, Schedules};
pub use run::{GRACE, LOOK_BACK, LastTick, LookBack, look_back, run, tick_label};
