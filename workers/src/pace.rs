//! A Slack channel's posting pace, shared by every worker of the fleet: about one post a second with short bursts
//! allowed (Slack's limit for `chat.postMessage` per channel), and a `429` with `Retry-After` pausing the channel
//! for every worker. The state is the channel's [`ChannelState`] (in the alarm-threads table), changed by
//! compare-and-set. A post without a slot reserves the next one and its event is deferred until then (hidden
//! from the queue, not an attempt), so a wait holds neither a handler slot nor another channel.

use std::time::Duration;

use eventfleet_schema::{EventId, Timestamp};
use eventfleet_storage::{ChannelState, StorageError, Store};

use crate::handler::HandlerError;

/// Reservations older than this are dropped: their events went elsewhere (replayed, dead-lettered).
const RESERVATION_TTL: Duration = Duration::from_secs(600);

/// Waiting posts a channel keeps slots for. Past it a post waits for the backlog without a reservation (and
/// competes again when it returns): the state stays a small document (DynamoDB items hold 400 KB), and a
/// channel with this many posts waiting is more than a quarter of an hour behind at Slack's pace anyway.
pub const MAX_RESERVATIONS: usize = 1_000;

/// Compare-and-set tries before giving up on a contended channel state (the event is then retried).
const CAS_TRIES: usize = 20;

/// The pace of posts to one channel: a generic cell rate (GCRA) of one post per `interval`, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelPace {
    /// One post per this much time in a channel; zero: no pace, and Slack's pauses are not shared
    /// (`EVENTFLEET_SLACK_CHANNEL_INTERVAL_MS`).
    pub interval: Duration,
    /// Posts that may go at once before the pace applies (`EVENTFLEET_SLACK_CHANNEL_BURST`).
    pub burst: u32,
}

impl Default for ChannelPace {
    fn default() -> Self {
        Self { interval: Duration::from_secs(1), burst: 3 }
    }
}

/// Why a post waits, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    /// How long.
    pub wait: Duration,
    /// Why.
    pub reason: &'static str,
}

impl ChannelPace {
    /// Whether there is a pace at all.
    pub fn is_off(&self) -> bool {
        self.interval.is_zero()
    }

    /// Whether Slack's pause holds the channel at `now`.
    pub fn paused(state: &ChannelState, now: Timestamp) -> Option<Wait> {
        let until = state.paused_until.filter(|until| *until > now)?;
        Some(Wait { wait: until.since(now), reason: "Slack asked this channel to wait (Retry-After)" })
    }

    /// Whether `event` holds a reservation in the channel (it waited once already).
    pub fn has_reservation(state: &ChannelState, event: EventId) -> bool {
        state.reserved.iter().any(|(e, _)| *e == event)
    }

    /// Takes the pace's turn for `posts` messages of `event` at `now`: its reserved slot when it has one and the
    /// slot has come, a free slot when the channel is at most `burst - 1` intervals ahead; else it reserves the
    /// next slot and says how long to wait for it. `state` is changed either way (write it back).
    pub fn take(&self, state: &mut ChannelState, event: EventId, posts: u32, now: Timestamp) -> Option<Wait> {
        state.reserved.retain(|(_, at)| now.since(*at) < RESERVATION_TTL);
        if let Some(i) = state.reserved.iter().position(|(e, _)| *e == event) {
            let at = state.reserved[i].1;
            // A deferral comes back a little early or late; early by a few ms is its turn.
            if at > now.plus(Duration::from_millis(20)) {
                return Some(Wait {
                    wait: at.since(now),
                    reason: "waiting for its reserved slot in the channel's pace",
                });
            }
            state.reserved.remove(i);
            return None;
        }
        if self.is_off() {
            return None;
        }
        let tat = state.next_slot.max(now);
        let allowed_at = tat.minus(self.interval * self.burst.saturating_sub(1));
        if allowed_at <= now {
            state.next_slot = tat.plus(self.interval * posts);
            return None;
        }
        if state.reserved.len() >= MAX_RESERVATIONS {
            return Some(Wait { wait: allowed_at.since(now), reason: "the channel's pace has its most posts waiting" });
        }
        state.next_slot = tat.plus(self.interval * posts);
        state.reserved.push((event, allowed_at));
        Some(Wait {
            wait: allowed_at.since(now),
            reason: "the channel's pace (about one post a second) has no slot yet",
        })
    }

    /// Asks `channel` for room to post one message of `event`; a wait is a deferral of the event.
    pub async fn room(&self, store: &Store, channel: &str, event: EventId) -> Result<(), HandlerError> {
        if self.is_off() {
            return Ok(());
        }
        let mut waits = None;
        update_channel(store, channel, |state| {
            let now = store.clock.now();
            if let Some(paused) = Self::paused(state, now) {
                waits = Some(paused);
                return false;
            }
            waits = self.take(state, event, 1, now);
            true
        })
        .await?;
        match waits {
            None => Ok(()),
            Some(Wait { wait, reason }) => Err(HandlerError::Deferred { reason: format!("{channel}: {reason}"), wait }),
        }
    }

    /// Records Slack's `Retry-After` for `channel`, so every worker waits it out (best effort: the event that
    /// got the 429 is deferred either way).
    pub async fn pause(&self, store: &Store, channel: &str, retry_after: Duration) {
        if self.is_off() {
            return;
        }
        let until = store.clock.now().plus(retry_after);
        let paused = update_channel(store, channel, |state| {
            state.paused_until = Some(state.paused_until.map_or(until, |p| p.max(until)));
            true
        })
        .await;
        if let Err(e) = paused {
            tracing::warn!(error = %e, %channel, "could not record Slack's pause of the channel");
        }
    }
}

/// Reads, changes and writes a channel's state until no other writer came in between; `change` says whether it
/// changed anything (nothing is written when not).
pub async fn update_channel(
    store: &Store,
    channel: &str,
    mut change: impl FnMut(&mut ChannelState) -> bool,
) -> Result<ChannelState, HandlerError> {
    let failed = |what: &str, e: StorageError| HandlerError::retryable(format!("{what}: {e}"));
    for _ in 0..CAS_TRIES {
        let mut state = (store.alarm_threads.channel(channel).await)
            .map_err(|e| failed("read the channel state", e))?
            .unwrap_or_else(|| ChannelState { channel: channel.to_owned(), ..Default::default() });
        if !change(&mut state) {
            return Ok(state);
        }
        match store.alarm_threads.put_channel(&state).await {
            Ok(version) => return Ok(ChannelState { version, ..state }),
            Err(StorageError::Conflict(_)) => continue,
            Err(e) => return Err(failed("write the channel state", e)),
        }
    }
    Err(HandlerError::retryable(format!("the state of {channel} kept changing under {CAS_TRIES} writes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACE: ChannelPace = ChannelPace { interval: Duration::from_secs(1), burst: 2 };

    #[test]
    fn the_pace_allows_a_burst_then_reserves_one_slot_a_second() {
        let mut state = ChannelState::default();
        let t0 = Timestamp::from_millis(1_000_000);
        let (a, b, c) = (EventId::new(), EventId::new(), EventId::new());
        assert_eq!(PACE.take(&mut state, a, 1, t0), None);
        assert_eq!(PACE.take(&mut state, b, 1, t0), None);
        let wait = PACE.take(&mut state, c, 1, t0).expect("the burst is spent").wait;
        assert_eq!(wait, Duration::from_secs(1));
        // Back early: still waiting, and the slot is not taken twice.
        assert!(PACE.take(&mut state, c, 1, t0.plus(Duration::from_millis(500))).is_some());
        assert_eq!(state.reserved.len(), 1);
        assert_eq!(PACE.take(&mut state, c, 1, t0.plus(wait)), None);
        assert!(state.reserved.is_empty());
    }

    #[test]
    fn a_full_backlog_makes_posts_wait_without_growing_the_state() {
        let mut state = ChannelState::default();
        let now = Timestamp::from_millis(2_000_000);
        for _ in 0..MAX_RESERVATIONS + 2 {
            PACE.take(&mut state, EventId::new(), 1, now);
        }
        assert_eq!(state.reserved.len(), MAX_RESERVATIONS);
        let last = PACE.take(&mut state, EventId::new(), 1, now).expect("no slot");
        assert!(last.wait >= Duration::from_secs(MAX_RESERVATIONS as u64 - 1), "{last:?}");
        assert_eq!(state.reserved.len(), MAX_RESERVATIONS);
    }

    #[test]
    fn a_pause_holds_every_post_until_it_ends() {
        let now = Timestamp::from_millis(9_000_000);
        let state = ChannelState { paused_until: Some(now.plus(Duration::from_secs(2))), ..Default::default() };
        assert_eq!(ChannelPace::paused(&state, now).map(|w| w.wait), Some(Duration::from_secs(2)));
        assert_eq!(ChannelPace::paused(&state, now.plus(Duration::from_secs(2))), None);
    }

    #[test]
    fn no_pace_lets_every_post_go() {
        let off = ChannelPace { interval: Duration::ZERO, burst: 1 };
        let mut state = ChannelState::default();
        let now = Timestamp::from_millis(3_000_000);
        assert!((0..100).all(|_| off.take(&mut state, EventId::new(), 1, now).is_none()));
    }
}
