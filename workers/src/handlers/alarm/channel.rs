//! A channel's alarm storms: past N new alarm threads inside the window, one digest takes the rest in its
//! thread. Pure decisions over the channel's shared [`ChannelState`]; the handler reads the state, decides, and
//! writes it back by compare-and-set, so every worker of the fleet sees one storm per channel. (The pace of the
//! posts is the poster's, [`crate::slack::pace`].)

use std::time::Duration;

use eventfleet_schema::{EventId, Timestamp};
use eventfleet_storage::{ChannelState, Digest};

use eventfleet_storage::{StorageError, Store};

use crate::handler::HandlerError;
use crate::handlers::alarm_settings::AlarmSettings;

/// A claimed digest whose poster went quiet this long is taken over (its worker died before posting it).
pub const CLAIM_TIMEOUT: Duration = Duration::from_secs(60);

/// How long an event waits for another event's digest to be posted before looking again.
pub const DIGEST_WAIT: Duration = Duration::from_secs(2);

/// Where a new alarm thread goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// A message of its own in the channel.
    Alone,
    /// A reply in the storm digest's thread (the digest's ts).
    InDigest(String),
    /// This event posts the digest (and the early alarms' back-links), then its own reply in it.
    PostDigest,
}

/// What the channel said to a post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Post now, so.
    Go(Placement),
    /// Come back after this long; nothing changed (the state need not be written).
    WaitUnchanged(Duration, &'static str),
}

/// Decides where a new alarm thread of `event` goes at `now`: Slack's pause holds it; past the storm threshold
/// one event claims the digest and the others go in its thread once it is posted. An event is counted into the
/// window once, however often it comes back (a wait for its turn in the pace, for the digest).
pub fn decide(state: &mut ChannelState, settings: &AlarmSettings, event: EventId, now: Timestamp) -> Decision {
    if let Some(until) = state.paused_until.filter(|until| *until > now) {
        return Decision::WaitUnchanged(until.since(now), "Slack asked this channel to wait (Retry-After)");
    }
    // An alarm comes back within a wait (at most a deferral's 15 minutes): older entries are no one's.
    state.counted.retain(|(_, at)| now.since(*at) <= COUNTED_FOR);
    if !state.counted.iter().any(|(e, _)| *e == event) {
        if now.since(state.last_alarm_at) > settings.storm_window {
            state.window_start = now;
            state.window_alarms = 0;
            state.early.clear();
            state.digest = None;
            state.counted.clear();
        }
        state.window_alarms += 1;
        state.last_alarm_at = now;
        state.counted.push((event, now));
    }
    let placement = match &mut state.digest {
        // Its claimer comes back to PostDigest even once the digest is posted (a crash before the back-links).
        Some(d) if d.claimed_by == Some(event) => Placement::PostDigest,
        Some(Digest { ts: Some(ts), .. }) => Placement::InDigest(ts.clone()),
        Some(d) if now.since(d.claimed_at) > CLAIM_TIMEOUT => {
            d.claimed_by = Some(event);
            d.claimed_at = now;
            Placement::PostDigest
        }
        // Not written: it comes back and is counted then.
        Some(_) => return Decision::WaitUnchanged(DIGEST_WAIT, "the channel's storm digest is being posted"),
        None if state.window_alarms > settings.storm_threshold => {
            state.digest = Some(Digest { claimed_by: Some(event), claimed_at: now, ..Digest::default() });
            Placement::PostDigest
        }
        None => Placement::Alone,
    };
    Decision::Go(placement)
}

/// Reads, changes and writes a channel's shared state until no other writer came in between; `change` says
/// whether it changed anything (nothing is written when not).
pub async fn change_channel(
    store: &Store,
    channel: &str,
    mut change: impl FnMut(&mut ChannelState) -> bool,
) -> Result<ChannelState, HandlerError> {
    let failed = |what: &str, e: StorageError| HandlerError::retryable(format!("{what}: {e}"));
    for _ in 0..CAS_TRIES {
        let mut state = (store.channels.channel(channel).await)
            .map_err(|e| failed("read the channel state", e))?
            .unwrap_or_else(|| ChannelState { channel: channel.to_owned(), ..Default::default() });
        if !change(&mut state) {
            return Ok(state);
        }
        match store.channels.put_channel(&state).await {
            Ok(version) => return Ok(ChannelState { version, ..state }),
            Err(StorageError::Conflict(_)) => continue,
            Err(e) => return Err(failed("write the channel state", e)),
        }
    }
    Err(HandlerError::retryable(format!("the state of {channel} kept changing under {CAS_TRIES} writes")))
}

/// How long an alarm stays counted into a window: longer than any deferral (15 min).
const COUNTED_FOR: Duration = Duration::from_secs(20 * 60);

/// Compare-and-set tries before giving up on a contended channel state (the event is then retried).
const CAS_TRIES: usize = 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_threshold_one_event_claims_the_digest_and_the_others_wait_for_it() {
        let s = AlarmSettings { storm_threshold: 3, ..AlarmSettings::default() };
        let mut state = ChannelState::default();
        let now = Timestamp::from_millis(5_000_000);
        for _ in 0..3 {
            assert_eq!(decide(&mut state, &s, EventId::new(), now), Decision::Go(Placement::Alone));
        }
        let claimer = EventId::new();
        assert_eq!(decide(&mut state, &s, claimer, now), Decision::Go(Placement::PostDigest));
        let other = EventId::new();
        assert!(matches!(decide(&mut state, &s, other, now), Decision::WaitUnchanged(..)));
        state.digest.as_mut().unwrap().ts = Some("1.000001".into());
        assert_eq!(decide(&mut state, &s, other, now), Decision::Go(Placement::InDigest("1.000001".into())));
        // A quiet window ends the storm.
        let later = now.plus(s.storm_window + Duration::from_secs(1));
        assert_eq!(decide(&mut state, &s, EventId::new(), later), Decision::Go(Placement::Alone));
        assert!(state.digest.is_none());
    }

    #[test]
    fn an_alarm_coming_back_is_counted_into_the_storm_once() {
        let s = AlarmSettings { storm_threshold: 1, ..AlarmSettings::default() };
        let mut state = ChannelState::default();
        let now = Timestamp::from_millis(6_000_000);
        assert_eq!(decide(&mut state, &s, EventId::new(), now), Decision::Go(Placement::Alone));
        let claimer = EventId::new();
        assert_eq!(decide(&mut state, &s, claimer, now), Decision::Go(Placement::PostDigest));
        assert_eq!(state.window_alarms, 2);
        assert_eq!(decide(&mut state, &s, claimer, now), Decision::Go(Placement::PostDigest));
        assert_eq!(state.window_alarms, 2, "its return is not a new alarm");
        let waiting = EventId::new();
        assert!(matches!(decide(&mut state, &s, waiting, now), Decision::WaitUnchanged(..)));
        assert_eq!(state.window_alarms, 3, "counted, though its write is skipped while it waits for the digest");
    }

    #[test]
    fn a_pause_holds_alarm_posts_without_a_write() {
        let now = Timestamp::from_millis(9_000_000);
        let mut state = ChannelState { paused_until: Some(now.plus(Duration::from_secs(2))), ..Default::default() };
        let decision = decide(&mut state, &AlarmSettings::default(), EventId::new(), now);
        assert!(matches!(decision, Decision::WaitUnchanged(w, _) if w == Duration::from_secs(2)), "{decision:?}");
        assert_eq!(state.window_alarms, 0);
    }
}
