//! A message's hold on its worker's pool: a handler slot while its handler runs, then a place among the
//! messages whose outcome is being recorded. The slot is what `EVENTFLEET_WORKER_CONCURRENCY` bounds (handlers
//! running at once: calls to Slack, Teams and the team's services); recording the outcome is a store step (on the
//! embedded store a commit and its sync, on AWS a few requests), and a slot held through it sat idle for that
//! long while other messages waited for a receive. So the slot goes back to the pool as the handler returns, and
//! the step holds a place among at most as many recordings as there are slots: a store that slows down still
//! holds the slots back. Only without a receive window (the embedded store's default): on SQS a slot freed early
//! cost requests (docs/architecture.md, "Workers").

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What one message holds of its pool; dropping it gives everything back.
#[derive(Debug, Default)]
pub struct Hold {
    slot: Option<OwnedSemaphorePermit>,
    recordings: Option<Arc<Semaphore>>,
    recording: Option<OwnedSemaphorePermit>,
}

impl Hold {
    /// Holds `slot` until the handler returns, then a place of `recordings`; without `recordings`, the slot to the
    /// end.
    pub fn new(slot: Option<OwnedSemaphorePermit>, recordings: Option<Arc<Semaphore>>) -> Self {
        Self { slot, recordings, recording: None }
    }

    /// Nothing to hold (a delivery run outside a pool).
    pub fn none() -> Self {
        Self::default()
    }

    /// The handler returned: trades the handler slot for a place among the recordings (waiting for one while
    /// every place is taken, so the slot is held meanwhile).
    pub async fn handler_returned(&mut self) {
        let (Some(recordings), Some(_)) = (&self.recordings, &self.slot) else {
            return;
        };
        // Closed only if the pool closed it: keep the slot then.
        if let Ok(place) = recordings.clone().acquire_owned().await {
            self.recording = Some(place);
            self.slot = None;
        }
    }

    /// Whether the handler slot is still held.
    pub fn holds_slot(&self) -> bool {
        self.slot.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_slot_goes_back_as_the_handler_returns_and_a_recording_place_is_held_instead() {
        let (slots, recordings) = (Arc::new(Semaphore::new(1)), Arc::new(Semaphore::new(1)));
        let mut hold = Hold::new(Some(slots.clone().acquire_owned().await.unwrap()), Some(recordings.clone()));
        assert_eq!((slots.available_permits(), recordings.available_permits()), (0, 1));
        hold.handler_returned().await;
        assert!(!hold.holds_slot());
        assert_eq!((slots.available_permits(), recordings.available_permits()), (1, 0), "slot back, place taken");
        drop(hold);
        assert_eq!((slots.available_permits(), recordings.available_permits()), (1, 1));
    }

    #[tokio::test]
    async fn without_recording_places_the_slot_is_held_to_the_end() {
        let slots = Arc::new(Semaphore::new(1));
        let mut hold = Hold::new(Some(slots.clone().acquire_owned().await.unwrap()), None);
        hold.handler_returned().await;
        assert!(hold.holds_slot());
        assert_eq!(slots.available_permits(), 0);
        drop(hold);
        assert_eq!(slots.available_permits(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn with_every_recording_place_taken_the_slot_is_held_until_one_frees() {
        let (slots, recordings) = (Arc::new(Semaphore::new(2)), Arc::new(Semaphore::new(1)));
        let mut recording = Hold::new(Some(slots.clone().acquire_owned().await.unwrap()), Some(recordings.clone()));
        recording.handler_returned().await;
        let mut hold = Hold::new(Some(slots.clone().acquire_owned().await.unwrap()), Some(recordings.clone()));
        let waiting = tokio::spawn(async move {
            hold.handler_returned().await;
            hold
        });
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        assert_eq!(slots.available_permits(), 1, "the second message still holds its slot");
        drop(recording);
        let hold = waiting.await.unwrap();
        assert!(!hold.holds_slot());
        assert_eq!((slots.available_permits(), recordings.available_permits()), (2, 0));
    }
}
