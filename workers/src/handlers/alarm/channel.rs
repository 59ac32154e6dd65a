//! A channel's alarm posts: their pace (about one a second, short bursts allowed, Slack's `Retry-After`
//! honoured) and storm windows (past N new alarm threads inside the window, one digest takes the rest in its
//! thread). Pure decisions over [`ChannelState`]; the handler reads the state, decides, and writes it back by
//! compare-and-set, so every worker of the fleet shares one pace per channel.

use std::time::Duration;

use eventfleet_schema::{EventId, Timestamp};
use eventfleet_storage::{ChannelState, Digest};

use super::AlarmSettings;

/// A claimed digest whose poster went quiet this long is taken over (its worker died before posting it).
pub const CLAIM_TIMEOUT: Duration = Duration::from_secs(60);

/// How long an event waits for another event's digest to be posted before looking again.
pub const DIGEST_WAIT: Duration = Duration::from_secs(2);

/// Reservations older than this are dropped: their events went elsewhere (replayed, dead-lettered).
const RESERVATION_TTL: Duration = Duration::from_secs(600);

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

/// Decides a post of `posts` messages by `event` at `now`: whether Slack's pause holds it, whether it is its
/// pace's turn (reserving a slot when not), and, for a new thread (`new_thread`), where it goes in a storm.
pub fn decide(
    state: &mut ChannelState,
    settings: &AlarmSettings,
    event: EventId,
    new_thread: bool,
    now: Timestamp,
) -> Decision {
    if let Some(until) = state.paused_until.filter(|until| *until > now) {
        return Decision::WaitUnchanged(until.since(now), "Slack asked this channel to wait (Retry-After)");
    }
    state.reserved.retain(|(_, at)| now.since(*at) < RESERVATION_TTL);
    let reserved = state.reserved.iter().position(|(e, _)| *e == event);
    // An event is counted into the storm window once: a reservation says it was.
    if new_thread && reserved.is_none() && settings.storm_threshold > 0 {
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
            Some(Digest { ts: Some(ts), .. }) => Placement::InDigest(ts.clone()),
            Some(d) if d.claimed_by == Some(event) => Placement::PostDigest,
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
    match reserved {
        Some(i) => {
            let at = state.reserved[i].1;
            if at > now.plus(Duration::from_millis(20)) {
                return Decision::Wait(at.since(now), "waiting for its reserved slot in the channel's pace");
            }
            state.reserved.remove(i);
            Decision::Go(placement)
        }
        None => match reserve(state, settings, event, posts, now) {
            None => Decision::Go(placement),
            Some(wait) => Decision::Wait(wait, "the channel's pace (about one post a second) has no slot yet"),
        },
    }
}

/// GCRA over `next_slot`: `posts` messages may go now when the channel is at most `burst - 1` intervals ahead;
/// else a slot is reserved for `event` and the wait until it returned.
fn reserve(
    state: &mut ChannelState,
    settings: &AlarmSettings,
    event: EventId,
    posts: u32,
    now: Timestamp,
) -> Option<Duration> {
    let interval = settings.channel_interval;
    if interval.is_zero() {
        return None;
    }
    let tat = state.next_slot.max(now);
    let allowed_at = tat.minus(interval * settings.channel_burst.saturating_sub(1));
    state.next_slot = tat.plus(interval * posts);
    if allowed_at <= now {
        return None;
    }
    state.reserved.push((event, allowed_at));
    Some(allowed_at.since(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> AlarmSettings {
        AlarmSettings {
            storm_threshold: 3,
            channel_interval: Duration::from_secs(1),
            channel_burst: 2,
            ..AlarmSettings::default()
        }
    }

    #[test]
    fn the_pace_allows_a_burst_then_reserves_one_slot_a_second() {
        let s = settings();
        let mut state = ChannelState::default();
        let t0 = Timestamp::from_millis(1_000_000);
        let (a, b, c) = (EventId::new(), EventId::new(), EventId::new());
        assert_eq!(decide(&mut state, &s, a, false, t0), Decision::Go(Placement::Alone));
        assert_eq!(decide(&mut state, &s, b, false, t0), Decision::Go(Placement::Alone));
        let Decision::Wait(wait, _) = decide(&mut state, &s, c, false, t0) else { panic!("the burst is spent") };
        assert_eq!(wait, Duration::from_secs(1));
        // Back early: still waiting, and the slot is not taken twice.
        assert!(matches!(decide(&mut state, &s, c, false, t0.plus(Duration::from_millis(500))), Decision::Wait(..)));
        assert_eq!(decide(&mut state, &s, c, false, t0.plus(wait)), Decision::Go(Placement::Alone));
        assert!(state.reserved.is_empty());
    }

    #[test]
    fn past_the_threshold_one_event_claims_the_digest_and_the_others_wait_for_it() {
        let s = AlarmSettings { channel_interval: Duration::ZERO, ..settings() };
        let mut state = ChannelState::default();
        let now = Timestamp::from_millis(5_000_000);
        for _ in 0..3 {
            assert_eq!(decide(&mut state, &s, EventId::new(), true, now), Decision::Go(Placement::Alone));
        }
        let claimer = EventId::new();
        assert_eq!(decide(&mut state, &s, claimer, true, now), Decision::Go(Placement::PostDigest));
        let other = EventId::new();
        assert!(matches!(decide(&mut state, &s, other, true, now), Decision::WaitUnchanged(..)));
        state.digest.as_mut().unwrap().ts = Some("1.000001".into());
        assert_eq!(decide(&mut state, &s, other, true, now), Decision::Go(Placement::InDigest("1.000001".into())));
        // A quiet window ends the storm.
        let later = now.plus(s.storm_window + Duration::from_secs(1));
        assert_eq!(decide(&mut state, &s, EventId::new(), true, later), Decision::Go(Placement::Alone));
        assert!(state.digest.is_none());
    }

    #[test]
    fn a_pause_holds_every_post_until_it_ends() {
        let s = settings();
        let now = Timestamp::from_millis(9_000_000);
        let mut state = ChannelState { paused_until: Some(now.plus(Duration::from_secs(2))), ..Default::default() };
        assert_eq!(
            decide(&mut state, &s, EventId::new(), false, now),
            Decision::WaitUnchanged(Duration::from_secs(2), "Slack asked this channel to wait (Retry-After)")
        );
        assert_eq!(
            decide(&mut state, &s, EventId::new(), false, now.plus(Duration::from_secs(2))),
            Decision::Go(Placement::Alone)
        );
    }
}
