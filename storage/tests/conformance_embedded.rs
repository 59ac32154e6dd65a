//! The conformance suite on the embedded SQLite backend, on tokio's paused clock.

use std::sync::Arc;

use eventfleet_storage::conformance::{Gaps, Harness, TimeControl};
use eventfleet_storage::{EmbeddedOptions, EmbeddedStore, TokioClock};

async fn setup(scope: &str) -> Harness {
    // Each test gets its own file; the directory lives as long as the process (tests are short-lived).
    let dir = tempfile::tempdir().expect("temp dir").keep();
    let options = EmbeddedOptions { clock: Arc::new(TokioClock::new()), ..EmbeddedOptions::default() };
    let max_receive_count = options.max_receive_count;
    let store = EmbeddedStore::open_dir(&dir, options).expect("open store").into_store();
    Harness { store, time: TimeControl::Paused, max_receive_count, gaps: Gaps::default(), scope: scope.to_owned() }
}

eventfleet_storage::conformance_suite!(setup, start_paused = true);
