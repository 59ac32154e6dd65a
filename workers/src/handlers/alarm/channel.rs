//! A channel's alarm posts: their pace (about one a second, short bursts allowed, Slack's `Retry-After`
//! honoured) and storm windows (past N new alarm threads inside the window, one digest takes the rest in its
//! thread). Pure decisions over [`ChannelState`]; the handler reads the state, decides, and writes it back by
//! compare-and-set, so every worker of the fleet shares one pace per channel.

use std::time::Duration;

use eventfleet_schema::{EventId, Timestamp};
use eventfleet_storage::{ChannelState, Digest};

use super::AlarmSettings;
use crate::pace::{ChannelPace, Wait};

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
    /// Come back after this long (the state is written: a reservation or a claim may have been made).
    Wait(Duration, &'static str),
    /// Come back after this long; nothing changed (the state need not be written).
    WaitUnchanged(Duration, &'static str),
}

/// Decides a post by `event` at `now`: whether Slack's pause holds it, where a new thread (`new_thread`) goes
/// in a storm, and whether it is the pace's turn (reserving a slot when not).
pub fn decide(
    state: &mut ChannelState,
    settings: &AlarmSettings,
    pace: &ChannelPace,
    event: EventId,
    new_thread: bool,
    now: Timestamp,
) -> Decision {
    if let Some(Wait { wait, reason }) = ChannelPace::paused(state, now) {
        return Decision::WaitUnchanged(wait, reason);
    }
    // An event is counted into the storm window once: a reservation says it was.
    if new_thread && !ChannelPace::has_reservation(state, event) && settings.storm_threshold > 0 {
        if now.since(state.last_alarm_at) > settings.storm_window {
            state.window_start = now;
            state.window_alarms = 0;
            state.early.clear();
            state.digest = None;
        }
        state.window_alarms += 1;
        state.last_alarm_at = now;
    }
    let placement = if !new_thread || settings.storm_threshold == 0 {
        Placement::Alone
    } else {
        match &mut state.digest {
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
        }
    };
    let posts = match placement {
        Placement::PostDigest => 2 + state.early.len() as u32,
        _ => 1,
    };
    match pace.take(state, event, posts, now) {
        None => Decision::Go(placement),
        Some(Wait { wait, reason }) => Decision::Wait(wait, reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_PACE: ChannelPace = ChannelPace { interval: Duration::ZERO, burst: 1 };

    #[test]
    fn past_the_threshold_one_event_claims_the_digest_and_the_others_wait_for_it() {
        let s = AlarmSettings { storm_threshold: 3, ..AlarmSettings::default() };
        let mut state = ChannelState::default();
        let now = Timestamp::from_millis(5_000_000);
        for _ in 0..3 {
            assert_eq!(decide(&mut state, &s, &NO_PACE, EventId::new(), true, now), Decision::Go(Placement::Alone));
        }
        let claimer = EventId::new();
        assert_eq!(decide(&mut state, &s, &NO_PACE, claimer, true, now), Decision::Go(Placement::PostDigest));
        let other = EventId::new();
        assert!(matches!(decide(&mut state, &s, &NO_PACE, other, true, now), Decision::WaitUnchanged(..)));
        state.digest.as_mut().unwrap().ts = Some("1.000001".into());
        let placed = decide(&mut state, &s, &NO_PACE, other, true, now);
        assert_eq!(placed, Decision::Go(Placement::InDigest("1.000001".into())));
        // A quiet window ends the storm.
        let later = now.plus(s.storm_window + Duration::from_secs(1));
        assert_eq!(decide(&mut state, &s, &NO_PACE, EventId::new(), true, later), Decision::Go(Placement::Alone));
        assert!(state.digest.is_none());
    }

    #[test]
    fn an_alarm_waiting_for_its_slot_is_counted_into_the_storm_once() {
        let s = AlarmSettings { storm_threshold: 3, ..AlarmSettings::default() };
        let pace = ChannelPace { interval: Duration::from_secs(1), burst: 1 };
        let mut state = ChannelState::default();
        let now = Timestamp::from_millis(6_000_000);
        assert_eq!(decide(&mut state, &s, &pace, EventId::new(), true, now), Decision::Go(Placement::Alone));
        let waiting = EventId::new();
        let Decision::Wait(wait, _) = decide(&mut state, &s, &pace, waiting, true, now) else { panic!("no slot") };
        assert_eq!(state.window_alarms, 2);
        assert_eq!(decide(&mut state, &s, &pace, waiting, true, now.plus(wait)), Decision::Go(Placement::Alone));
        assert_eq!(state.window_alarms, 2, "its return is not a new alarm");
    }

    #[test]
    fn a_pause_holds_alarm_posts_without_a_write() {
        let now = Timestamp::from_millis(9_000_000);
        let mut state = ChannelState { paused_until: Some(now.plus(Duration::from_secs(2))), ..Default::default() };
        let decision =
            decide(&mut state, &AlarmSettings::default(), &ChannelPace::default(), EventId::new(), true, now);
        assert!(matches!(decision, Decision::WaitUnchanged(w, _) if w == Duration::from_secs(2)), "{decision:?}");
        assert_eq!(state.window_alarms, 0);
    }
}
