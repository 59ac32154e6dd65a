//! A Slack channel's pace: about one post a second with short bursts allowed (Slack's limit for
//! `chat.postMessage` per channel), kept by each worker process in memory, with no store round trip per post.
//!
//! - **Local lanes.** Each process keeps a lane per channel it posts to: a generic cell rate (GCRA) of one post
//!   per `interval × share`, `burst ÷ share` at once, where `share` is the number of processes posting to that
//!   channel lately. A post without a slot reserves the next one in the lane and its event is deferred until then
//!   (hidden from the queue, not an attempt), so a wait holds neither a handler slot nor another channel.
//! - **The share.** A process that keeps posting to a channel (a lane warm for [`WARM`]) registers in the
//!   channel's shared state ([`eventfleet_storage::Channels`]) and renews every [`RENEW`]: one read and one
//!   conditional write per renewal, not per post; a process that stopped posting drops out after [`LANE_TTL`].
//!   A quiet channel (one post now and then) is never registered: its post goes at once, for free.
//! - **Slack's pause.** A `429` or `ratelimited` pauses the channel in this process at once and in the shared
//!   state for every other (they read it at their next renewal, or meet their own `429` first): the only write
//!   outside the renewals.
//!
//! docs/architecture.md ("Egress") has the reasoning and the crash points.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use eventfleet_schema::{EventId, Timestamp};

use crate::wait::Wait;

/// A lane that posted within this long is warm: it registers in the channel's shared state.
pub const WARM: Duration = Duration::from_secs(10);

/// How often a warm lane renews its registration (and rereads the share and the pause).
pub const RENEW: Duration = Duration::from_secs(10);

/// How soon a lane whose share is still changing renews.
pub const UNSETTLED_RENEW: Duration = Duration::from_secs(2);

/// A registration counts this long after its last renewal.
pub const LANE_TTL: Duration = Duration::from_secs(30);

/// A reservation is dropped this long after its slot: its event came back to another process (a deferred
/// message goes to whichever worker receives it), was replayed or dead-lettered.
const RESERVATION_TTL: Duration = Duration::from_secs(10);

/// Waiting posts a lane keeps slots for; past it a post waits for the backlog without one (and competes again
/// when it returns). A channel this far behind is a quarter of an hour late at Slack's pace anyway.
pub const MAX_RESERVATIONS: usize = 1_000;

/// Lanes of channels not posted to for this long are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// The pace of posts to one channel, for the whole fleet: one post per `interval`, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelPace {
    /// One post per this much time in a channel; zero: no pace, and Slack's pauses are not shared
    /// (`EVENTFLEET_SLACK_CHANNEL_INTERVAL_MS`).
    pub interval: Duration,
    /// Posts that may go at once before the pace applies (`EVENTFLEET_SLACK_CHANNEL_BURST`).
    pub burst: u32,
    /// A post that finds no slot is folded into the channel's digest (posted at the next slot) rather than
    /// waiting for a slot of its own (`EVENTFLEET_SLACK_DIGESTS`).
    pub digests: bool,
}

impl Default for ChannelPace {
    fn default() -> Self {
        Self { interval: Duration::from_secs(1), burst: 3, digests: true }
    }
}

impl ChannelPace {
    /// Whether there is a pace at all.
    pub fn is_off(&self) -> bool {
        self.interval.is_zero()
    }
}

/// One channel as this process posts to it.
#[derive(Debug, Clone, Default)]
struct Lane {
    /// GCRA's theoretical arrival time: a post may go when it is at most the burst ahead of now.
    tat: Timestamp,
    /// Slack asked to wait until then (this process's `429`, or the shared state).
    paused_until: Option<Timestamp>,
    /// Processes posting to the channel, this one included (1 until it registers).
    share: u32,
    /// The registration holds until then; renew after.
    renew_at: Timestamp,
    /// Registered in the channel's shared state at least once.
    registered: bool,
    /// The last two renewals saw the same share: the lane renews at the slower pace.
    settled: bool,
    /// The last post (or reservation).
    last_post: Timestamp,
    /// Events holding a slot, and when.
    reserved: Vec<(EventId, Timestamp)>,
}

/// This process's lanes.
#[derive(Debug)]
pub struct Lanes {
    pace: ChannelPace,
    lanes: Mutex<HashMap<String, Lane>>,
}

impl Lanes {
    /// No lanes yet, at `pace`.
    pub fn new(pace: ChannelPace) -> Self {
        Self { pace, lanes: Mutex::default() }
    }

    /// The pace.
    pub fn pace(&self) -> ChannelPace {
        self.pace
    }

    fn with_lane<T>(&self, channel: &str, f: impl FnOnce(&mut Lane) -> T) -> T {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        let lane = lanes.entry(channel.to_owned()).or_insert_with(|| Lane { share: 1, ..Lane::default() });
        f(lane)
    }

    /// Whether this delivery should register (or renew) this process in `channel`'s shared state before posting
    /// at `now`: the lane posted within [`WARM`] and its registration is due. Claimed under the lane's lock, so
    /// of the deliveries posting to a channel at once one renews.
    pub fn claim_renewal(&self, channel: &str, now: Timestamp) -> bool {
        !self.pace.is_off()
            && self.with_lane(channel, |lane| {
                let due = now.since(lane.last_post) < WARM && lane.renew_at <= now;
                if due {
                    lane.renew_at = now.plus(RENEW);
                }
                due
            })
    }

    /// Slack's pause of `channel` at `now`, if one holds it in this process.
    pub fn paused(&self, channel: &str, now: Timestamp) -> Option<Wait> {
        let until = self.with_lane(channel, |lane| lane.paused_until).filter(|until| *until > now)?;
        Some(Wait { wait: until.since(now), reason: "Slack asked this channel to wait (Retry-After)".into() })
    }

    /// What the shared state said at a renewal: `share` processes post there, Slack's pause (if any).
    pub fn renewed(&self, channel: &str, share: u32, paused_until: Option<Timestamp>, now: Timestamp) {
        self.with_lane(channel, |lane| {
            let share = share.max(1);
            // Posters join a busy channel together: until two renewals agree on the share, the lane looks again
            // soon, so that the first to register does not pace as if it were alone for long.
            lane.settled = lane.registered && lane.share == share;
            lane.registered = true;
            lane.share = share;
            lane.paused_until = lane.paused_until.max(paused_until);
            lane.renew_at = now.plus(if lane.settled { RENEW } else { UNSETTLED_RENEW });
        });
    }

    /// A renewal that failed (the store): try again after a while, keep the share known.
    pub fn renewal_failed(&self, channel: &str, now: Timestamp) {
        self.with_lane(channel, |lane| lane.renew_at = now.plus(RENEW));
    }

    /// Pauses `channel` in this process until `until` (Slack's `Retry-After`). A `429` says the fleet posts
    /// faster than the channel takes: the next post renews at once, to learn the share (a process that
    /// registered when it was alone paces as if it still were until its next renewal).
    pub fn pause(&self, channel: &str, until: Timestamp) {
        self.with_lane(channel, |lane| {
            lane.paused_until = lane.paused_until.max(Some(until));
            lane.renew_at = Timestamp::default();
        });
    }

    /// Takes the turn for `posts` messages of `event` in `channel` at `now`: its reserved slot when it has one and
    /// the slot has come, a free slot when the lane is at most its burst ahead; else it reserves the next slot
    /// and says how long to wait for it. Slack's pause holds every post.
    pub fn take(&self, channel: &str, event: EventId, posts: u32, now: Timestamp) -> Result<(), Wait> {
        if self.pace.is_off() {
            return Ok(());
        }
        let taken = self.with_lane(channel, |lane| take(self.pace, lane, event, posts, now));
        self.forget_idle(now);
        taken
    }

    /// Takes a turn for one post of `event` in `channel` at `now` if the lane has a free slot (or the event's
    /// reserved one has come); else says how long the channel is behind, reserving nothing: the post is folded
    /// into the channel's digest instead of waiting ([`super::digest`]).
    pub fn try_take(&self, channel: &str, event: EventId, now: Timestamp) -> Result<(), Wait> {
        if self.pace.is_off() {
            return Ok(());
        }
        let taken = self.with_lane(channel, |lane| {
            let mut tried = lane.clone();
            let taken = take(self.pace, &mut tried, event, 1, now);
            // Keep the turn taken; a reservation made instead is undone (nothing waits for it), and a post folded
            // rather than made does not make this process one of the channel's posters.
            if taken.is_ok() {
                *lane = tried;
            }
            taken
        });
        self.forget_idle(now);
        taken
    }

    fn forget_idle(&self, now: Timestamp) {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        if lanes.len() > 256 {
            lanes.retain(|_, lane| now.since(lane.last_post) < FORGET_AFTER);
        }
    }
}

/// [`Lanes::take`] on one lane.
fn take(pace: ChannelPace, lane: &mut Lane, event: EventId, posts: u32, now: Timestamp) -> Result<(), Wait> {
    if let Some(until) = lane.paused_until.filter(|until| *until > now) {
        return Err(Wait { wait: until.since(now), reason: "Slack asked this channel to wait (Retry-After)".into() });
    }
    lane.reserved.retain(|(_, at)| now.since(*at) < RESERVATION_TTL);
    if let Some(i) = lane.reserved.iter().position(|(e, _)| *e == event) {
        let at = lane.reserved[i].1;
        // A deferral comes back a little early or late; early by a few ms is its turn.
        if at > now.plus(Duration::from_millis(20)) {
            return Err(Wait {
                wait: at.since(now),
                reason: "waiting for its reserved slot in the channel's pace".into(),
            });
        }
        lane.reserved.remove(i);
        return Ok(());
    }
    let share = lane.share.max(1);
    let interval = pace.interval * share;
    // Until two registrations agree on the share, this process cannot know who else posts to the channel:
    // processes starting on one channel together would each take the whole of Slack's burst. One post goes at
    // once (a quiet channel waits for nothing); the rest wait for the pace, or fold into a digest.
    let burst = if lane.settled { (pace.burst / share).max(1) } else { 1 };
    let tat = lane.tat.max(now);
    let allowed_at = tat.minus(interval * (burst - 1));
    lane.last_post = now;
    if allowed_at <= now {
        lane.tat = tat.plus(interval * posts);
        return Ok(());
    }
    if lane.reserved.len() >= MAX_RESERVATIONS {
        return Err(Wait {
            wait: allowed_at.since(now),
            reason: "the channel's pace has its most posts waiting".into(),
        });
    }
    lane.tat = tat.plus(interval * posts);
    lane.reserved.push((event, allowed_at));
    Err(Wait {
        wait: allowed_at.since(now),
        reason: "the channel's pace (about one post a second) has no slot yet".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACE: ChannelPace = ChannelPace { interval: Duration::from_secs(1), burst: 2, digests: true };

    #[test]
    fn the_pace_allows_a_burst_then_reserves_one_slot_a_second() {
        let lanes = Lanes::new(PACE);
        let t0 = Timestamp::from_millis(1_000_000);
        // Two registrations that agree: this process posts alone (until then it takes no burst).
        lanes.renewed("#c", 1, None, t0);
        lanes.renewed("#c", 1, None, t0);
        let (a, b, c) = (EventId::new(), EventId::new(), EventId::new());
        assert_eq!(lanes.take("#c", a, 1, t0), Ok(()));
        assert_eq!(lanes.take("#c", b, 1, t0), Ok(()));
        let wait = lanes.take("#c", c, 1, t0).expect_err("the burst is spent").wait;
        assert_eq!(wait, Duration::from_secs(1));
        // Back early: still waiting, and the slot is not taken twice.
        assert!(lanes.take("#c", c, 1, t0.plus(Duration::from_millis(500))).is_err());
        assert_eq!(lanes.take("#c", c, 1, t0.plus(wait)), Ok(()));
        assert_eq!(lanes.take("#other", EventId::new(), 1, t0), Ok(()), "another channel has its own lane");
    }

    #[test]
    fn a_lane_whose_share_is_not_settled_posts_one_at_once_whatever_the_burst() {
        let lanes = Lanes::new(ChannelPace { interval: Duration::from_secs(1), burst: 3, digests: true });
        let now = Timestamp::from_millis(6_000_000);
        assert_eq!(lanes.try_take("#new", EventId::new(), now), Ok(()), "a quiet channel's post goes at once");
        assert!(lanes.try_take("#new", EventId::new(), now).is_err(), "other processes may be starting on it too");
        lanes.renewed("#new", 1, None, now);
        let soon = now.plus(Duration::from_secs(1));
        assert_eq!(lanes.try_take("#new", EventId::new(), soon), Ok(()));
        assert!(lanes.try_take("#new", EventId::new(), soon).is_err(), "registered once: the share may still grow");
        lanes.renewed("#new", 1, None, soon);
        let later = now.plus(Duration::from_secs(4));
        assert!(
            (0..3).all(|_| lanes.try_take("#new", EventId::new(), later).is_ok()),
            "alone once registered: the burst"
        );
    }

    #[test]
    fn a_full_backlog_makes_posts_wait_without_growing() {
        let lanes = Lanes::new(PACE);
        let now = Timestamp::from_millis(2_000_000);
        for _ in 0..MAX_RESERVATIONS + 2 {
            let _ = lanes.take("#c", EventId::new(), 1, now);
        }
        let last = lanes.take("#c", EventId::new(), 1, now).expect_err("no slot");
        assert!(last.wait >= Duration::from_secs(MAX_RESERVATIONS as u64 - 1), "{last:?}");
        assert_eq!(lanes.with_lane("#c", |l| l.reserved.len()), MAX_RESERVATIONS);
    }

    #[test]
    fn a_pause_holds_every_post_until_it_ends() {
        let lanes = Lanes::new(PACE);
        let now = Timestamp::from_millis(9_000_000);
        lanes.pause("#c", now.plus(Duration::from_secs(2)));
        assert_eq!(lanes.take("#c", EventId::new(), 1, now).map_err(|w| w.wait), Err(Duration::from_secs(2)));
        assert_eq!(lanes.take("#c", EventId::new(), 1, now.plus(Duration::from_secs(2))), Ok(()));
    }

    #[test]
    fn a_share_of_the_fleet_slows_the_lane_to_its_part() {
        let lanes = Lanes::new(ChannelPace { interval: Duration::from_secs(1), burst: 3, digests: true });
        let now = Timestamp::from_millis(4_000_000);
        lanes.renewed("#c", 3, None, now);
        lanes.renewed("#c", 3, None, now);
        assert_eq!(lanes.take("#c", EventId::new(), 1, now), Ok(()), "its one post of the burst");
        let wait = lanes.take("#c", EventId::new(), 1, now).expect_err("a third of the rate").wait;
        assert_eq!(wait, Duration::from_secs(3));
    }

    #[test]
    fn only_a_warm_lane_renews_and_not_before_its_time() {
        let lanes = Lanes::new(PACE);
        let now = Timestamp::from_millis(5_000_000);
        assert!(!lanes.claim_renewal("#quiet", now), "a channel never posted to costs nothing");
        lanes.take("#c", EventId::new(), 1, now).unwrap();
        let soon = now.plus(Duration::from_secs(1));
        assert!(lanes.claim_renewal("#c", soon));
        assert!(!lanes.claim_renewal("#c", soon), "one delivery renews; the others post on");
        lanes.renewed("#c", 2, None, soon);
        assert!(lanes.claim_renewal("#c", soon.plus(UNSETTLED_RENEW)), "a first registration looks again soon");
        lanes.renewed("#c", 2, None, soon.plus(UNSETTLED_RENEW));
        assert!(!lanes.claim_renewal("#c", now.plus(Duration::from_secs(5))));
        assert!(!lanes.claim_renewal("#c", now.plus(WARM + RENEW)), "cold again: no renewal");
    }

    #[test]
    fn no_pace_lets_every_post_go() {
        let lanes = Lanes::new(ChannelPace { interval: Duration::ZERO, burst: 1, digests: false });
        let now = Timestamp::from_millis(3_000_000);
        assert!((0..100).all(|_| lanes.take("#c", EventId::new(), 1, now).is_ok()));
    }
}
