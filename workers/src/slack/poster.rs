//! The poster: the one way a handler reaches Slack. Every post, thread reply and update goes through it, so the
//! channel's pace, Slack's `Retry-After` and the exactly-once check cannot be skipped.
//!
//! - A post carries its [`PostMark`] (event id and part) in its metadata. A first attempt posts; a later one (an
//!   earlier attempt may have posted before it failed, timed out or its worker died) first looks for the mark in
//!   the channel or thread, and posts only when it is not there. When the sink cannot tell (scopes not
//!   granted), it posts: at least once, logged.
//! - A post takes its turn in the channel's lane ([`super::pace`]); no turn yet, or Slack's `429`, is a
//!   [`Ready::Wait`]: the event is deferred, not failed. A `429` also pauses the channel for the fleet.

use std::sync::Arc;

use eventfleet_schema::{EventId, Timestamp};
use eventfleet_storage::{ChannelState, Channels, Clock, Lane, StorageError, Store};

use super::pace::{ChannelPace, LANE_TTL, Lanes};
use super::{PostCheck, PostMark, Posted, SlackError, SlackMessage, SlackSink};
use crate::wait::{Ready, Wait};

/// Compare-and-set tries on a contended channel state before giving up (a renewal is retried later).
const CAS_TRIES: usize = 10;

/// What every delivery of a worker process posts through: the sink, this process's lanes, the channels' shared
/// states. Cheap to clone.
#[derive(Clone)]
pub struct Egress {
    sink: Arc<dyn SlackSink>,
    lanes: Arc<Lanes>,
    /// Teams' webhooks' lanes (keyed `teams:<name>`): Teams' 4 a second, shared by the fleet as Slack's pace is.
    teams_lanes: Arc<Lanes>,
    channels: Arc<dyn Channels>,
    clock: Arc<dyn Clock>,
    /// This process, as its lanes register in the channels' states (`worker@host:pid`).
    worker: String,
    /// Teams' webhooks, behind the same owner (none configured: a post to Teams is refused, permanently).
    teams: Arc<crate::teams::Teams>,
}

impl Egress {
    /// The egress of one worker process (`worker` names it in the channels' states).
    pub fn new(sink: Arc<dyn SlackSink>, pace: ChannelPace, store: &Store, worker: &str) -> Self {
        // A random part: two processes with one name (no HOSTNAME, the same pid in two containers) must count
        // as two posters.
        let worker = format!("{worker}#{:08x}", rand::random::<u32>());
        Self {
            sink,
            lanes: Arc::new(Lanes::new(pace)),
            teams_lanes: Arc::new(Lanes::new(ChannelPace { interval: crate::teams::interval(), burst: 1, ..pace })),
            channels: store.channels.clone(),
            clock: store.clock.clone(),
            worker,
            teams: Arc::new(crate::teams::Teams::none()),
        }
    }

    /// Posts to Teams through `teams`.
    pub fn with_teams(self, teams: Arc<crate::teams::Teams>) -> Self {
        Self { teams, ..self }
    }

    /// The poster of one delivery: attempt `attempt` of its event.
    pub fn poster(&self, attempt: u32) -> Poster {
        Poster { egress: self.clone(), attempt, replay: None }
    }
}

/// The poster of one delivery.
#[derive(Clone)]
pub struct Poster {
    egress: Egress,
    attempt: u32,
    /// The operator's replay the delivery runs for: it looks before every post as a later attempt does, or, asked
    /// to post again, marks its posts with the replay's id so that they are new ones.
    replay: Option<crate::replay::Replay>,
}

impl Poster {
    /// The poster of a delivery that runs for `replay`.
    pub fn replaying(self, replay: Option<crate::replay::Replay>) -> Self {
        Self { replay, ..self }
    }

    /// Whether an earlier run may have made this delivery's posts (see [`crate::HandlerContext::looks`]).
    fn looks(&self) -> bool {
        self.attempt > 1 || self.replay.as_ref().is_some_and(|r| !r.post_again)
    }

    /// `mark` as this delivery posts it: under a replay that posts again, a part of that replay's own.
    fn marked(&self, mark: &PostMark) -> PostMark {
        match self.replay.as_ref().and_then(|r| r.mark_suffix()) {
            Some(id) => PostMark::part(mark.event_id, format!("{}@{id}", mark.part)),
            None => mark.clone(),
        }
    }

    /// Posts the event's message once, in the channel's pace; returns what the trail says of it.
    pub async fn post_once(
        &self,
        event: EventId,
        received_at: Timestamp,
        message: &SlackMessage,
    ) -> Result<Ready<String>, SlackError> {
        let mark = PostMark::post(event);
        Ok(self.post(&mark, received_at, message, true).await?.map(|(posted, earlier)| {
            if earlier { format!("{posted}, by an earlier attempt: not posted again") } else { posted.to_string() }
        }))
    }

    /// Posts one of the event's messages (`mark`), in a thread when the message has a `thread_ts`, once.
    /// `paced`: take a turn in the channel's pace first (else the caller took the turns with
    /// [`Poster::take_turns`]). Returns where it is, and whether an earlier attempt had posted it.
    pub async fn post(
        &self,
        mark: &PostMark,
        received_at: Timestamp,
        message: &SlackMessage,
        paced: bool,
    ) -> Result<Ready<(Posted, bool)>, SlackError> {
        // The turn first: a channel Slack paused is not read either (the history read is a call in it too).
        if paced && let Ready::Wait(wait) = self.take_turns(&message.channel, mark.event_id, 1).await {
            return Ok(Ready::Wait(wait));
        }
        if !paced && let Some(wait) = self.egress.lanes.paused(&message.channel, self.egress.clock.now()) {
            return Ok(Ready::Wait(Wait { reason: format!("{}: {}", message.channel, wait.reason), ..wait }));
        }
        let mark = &self.marked(mark);
        match self.look(mark, received_at, message, false).await {
            Ok(Some(ts)) => return Ok(Ready::Now((Posted { ts, channel: message.channel.clone() }, true))),
            Ok(None) => {}
            // Reading the history was rate limited: the post waits too, rather than risk a second one.
            Err(e) => return self.waited(&message.channel, e, true).await,
        }
        match self.egress.sink.post_message(mark, message).await {
            Ok(posted) => Ok(Ready::Now((posted, false))),
            Err(e) => self.waited(&message.channel, e, true).await,
        }
    }

    /// Replaces the message `ts` of `channel` (`chat.update`; Slack limits it per workspace, not per channel, so
    /// it takes no turn and a `429` pauses no channel), once: the update carries `mark`, and a later attempt (or
    /// a caller that knows it may have made it, `checked`) first asks whether the message already carries it. A
    /// rate limit is a wait.
    pub async fn update(
        &self,
        mark: &PostMark,
        channel: &str,
        ts: &str,
        message: &SlackMessage,
        checked: bool,
    ) -> Result<Ready<()>, SlackError> {
        let mark = &self.marked(mark);
        if self.looks() || checked {
            match self.egress.sink.find_update(mark, channel, ts).await {
                Ok(PostCheck::Posted(_)) => {
                    tracing::info!(%channel, %ts, part = %mark.part, "an earlier attempt made this update: not again");
                    return Ok(Ready::Now(()));
                }
                Ok(PostCheck::NotPosted) => {}
                Ok(PostCheck::Unknown(why)) => {
                    tracing::warn!(%channel, %ts, %why, "cannot tell whether an earlier attempt made this update: updating");
                }
                Err(e) => return self.waited(channel, e, false).await,
            }
        }
        match self.egress.sink.update_message(mark, channel, ts, message).await {
            Ok(()) => Ok(Ready::Now(())),
            Err(e) => self.waited(channel, e, false).await,
        }
    }

    /// A turn for one post of `event` in `channel` if the channel has a free slot now; else how far behind the
    /// channel is, with nothing reserved (the caller folds the post into the channel's digest instead of
    /// waiting, [`crate::digest`]).
    pub async fn try_turn(&self, channel: &str, event: EventId) -> Ready<()> {
        let now = self.egress.clock.now();
        if self.egress.lanes.claim_renewal(channel, now) {
            self.renew(&self.egress.lanes, channel, now).await;
        }
        match self.egress.lanes.try_take(channel, event, now) {
            Ok(()) => Ready::Now(()),
            Err(wait) => Ready::Wait(Wait { reason: format!("{channel}: {}", wait.reason), ..wait }),
        }
    }

    /// Posts `message` to the Teams channel `channel` as an Adaptive Card (its Teams layout, [`crate::teams::card`]),
    /// closed by the event's id; Teams' `429` (or this process's limit for the webhook, past a short sleep) is a
    /// wait. Teams cannot be asked whether a post landed: the caller records it at once ([`crate::targets`]).
    pub async fn post_to_teams(
        &self,
        channel: &str,
        event: EventId,
        message: &SlackMessage,
        taken: bool,
    ) -> Result<Ready<reqwest::StatusCode>, crate::teams::TeamsError> {
        let key = format!("{}{channel}", crate::teams::PREFIX);
        if !taken {
            // A turn in the webhook's lane: a short wait for it is slept (the slot is this event's), a longer one
            // defers the event.
            loop {
                match self.lane_turns(&self.egress.teams_lanes, &key, event, 1).await {
                    Ready::Now(()) => break,
                    Ready::Wait(wait) if wait.wait <= crate::teams::SLEEP_AT_MOST => {
                        tokio::time::sleep(wait.wait).await
                    }
                    Ready::Wait(wait) => return Ok(Ready::Wait(wait)),
                }
            }
        }
        let card = crate::teams::card::message(message, &format!("event {event} · eventfleet"));
        match self.egress.teams.post(channel, &card).await {
            Ok(status) => Ok(Ready::Now(status)),
            Err(crate::teams::TeamsError::RateLimited { message, retry_after, .. }) => {
                // Teams' 429 pauses the webhook here at once and for the fleet in its shared state.
                let until = self.egress.clock.now().plus(retry_after);
                self.egress.teams_lanes.pause(&key, until);
                let shared =
                    self.change_channel(&key, |state| state.paused_until = state.paused_until.max(Some(until))).await;
                if let Err(e) = shared {
                    tracing::warn!(error = %e, channel = %key, "could not share Teams' pause of the webhook");
                }
                Ok(Ready::Wait(Wait { wait: retry_after, reason: format!("{key}: {message}") }))
            }
            Err(e) => Err(e),
        }
    }

    /// A slot for a card of `event` to the Teams channel `channel` if its lane has one now (then post with
    /// `taken`); else how far behind the webhook is, nothing reserved (the caller folds the card into a digest).
    pub async fn try_teams_turn(&self, channel: &str, event: EventId) -> Ready<()> {
        let key = format!("{}{channel}", crate::teams::PREFIX);
        let (lanes, now) = (&self.egress.teams_lanes, self.egress.clock.now());
        if lanes.claim_renewal(&key, now) {
            self.renew(lanes, &key, now).await;
        }
        match lanes.try_take(&key, event, now) {
            Ok(()) => Ready::Now(()),
            Err(wait) => Ready::Wait(Wait { reason: format!("{key}: {}", wait.reason), ..wait }),
        }
    }

    /// The channels' pace this process keeps.
    pub fn pace(&self) -> ChannelPace {
        self.egress.lanes.pace()
    }

    /// This process, as it names itself in the channels' states and the trails it writes.
    pub fn worker(&self) -> &str {
        &self.egress.worker
    }

    /// Takes `posts` turns in `channel`'s pace for `event` at once (a message and the replies that follow it);
    /// renews this process's place among the channel's posters when that is due.
    pub async fn take_turns(&self, channel: &str, event: EventId, posts: u32) -> Ready<()> {
        self.lane_turns(&self.egress.lanes, channel, event, posts).await
    }

    /// `posts` turns in the lane `channel` of `lanes` (Slack's channels, or Teams' webhooks).
    async fn lane_turns(&self, lanes: &Lanes, channel: &str, event: EventId, posts: u32) -> Ready<()> {
        let now = self.egress.clock.now();
        if lanes.claim_renewal(channel, now) {
            self.renew(lanes, channel, now).await;
        }
        match lanes.take(channel, event, posts, now) {
            Ok(()) => Ready::Now(()),
            Err(wait) => Ready::Wait(Wait { reason: format!("{channel}: {}", wait.reason), ..wait }),
        }
    }

    /// A failed Slack call: a rate limit is a wait, and (a post's, `pause`) pauses the channel here at once and
    /// for the fleet in its shared state; anything else is the caller's error.
    async fn waited<T>(&self, channel: &str, e: SlackError, pause: bool) -> Result<Ready<T>, SlackError> {
        let SlackError::RateLimited { retry_after, message } = e else { return Err(e) };
        let until = self.egress.clock.now().plus(retry_after);
        if pause && !self.egress.lanes.pace().is_off() {
            self.egress.lanes.pause(channel, until);
            let paused = self
                .change_channel(channel, |state| {
                    state.paused_until = state.paused_until.max(Some(until));
                })
                .await;
            if let Err(e) = paused {
                tracing::warn!(error = %e, %channel, "could not share Slack's pause of the channel");
            }
        }
        Ok(Ready::Wait(Wait { wait: retry_after, reason: message }))
    }

    /// Registers (or renews) this process among `channel`'s posters, and learns the share and Slack's pause.
    async fn renew(&self, lanes: &Lanes, channel: &str, now: Timestamp) {
        let worker = self.egress.worker.clone();
        let renewed = self
            .change_channel(channel, |state| {
                state.lanes.retain(|lane| lane.until > now && lane.worker != worker);
                state.lanes.push(Lane { worker: worker.clone(), until: now.plus(LANE_TTL) });
            })
            .await;
        match renewed {
            Ok(state) => lanes.renewed(channel, state.lanes.len() as u32, state.paused_until, now),
            Err(e) => {
                tracing::warn!(error = %e, %channel, "could not renew this worker's place in the channel's pace");
                lanes.renewal_failed(channel, now);
            }
        }
    }

    /// Reads, changes and writes a channel's shared state until no other writer came in between.
    async fn change_channel(
        &self,
        channel: &str,
        mut change: impl FnMut(&mut ChannelState),
    ) -> Result<ChannelState, StorageError> {
        for _ in 0..CAS_TRIES {
            let mut state = (self.egress.channels.channel(channel).await?)
                .unwrap_or_else(|| ChannelState { channel: channel.to_owned(), ..Default::default() });
            change(&mut state);
            match self.egress.channels.put_channel(&state).await {
                Ok(version) => return Ok(ChannelState { version, ..state }),
                Err(StorageError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StorageError::Conflict(format!("the state of {channel} kept changing under {CAS_TRIES} writes")))
    }

    /// Where an earlier attempt posted `mark`, if it did: asked on a later attempt only, or always (`force`: a
    /// replayed event starts again at attempt 1, and a digest's flush may have posted before it was
    /// dead-lettered).
    pub async fn posted_before(
        &self,
        mark: &PostMark,
        received_at: Timestamp,
        message: &SlackMessage,
        force: bool,
    ) -> Result<Option<String>, SlackError> {
        self.look(&self.marked(mark), received_at, message, force).await
    }

    /// [`Poster::posted_before`] for a mark already as this delivery posts it.
    async fn look(
        &self,
        mark: &PostMark,
        received_at: Timestamp,
        message: &SlackMessage,
        force: bool,
    ) -> Result<Option<String>, SlackError> {
        if !self.looks() && !force {
            return Ok(None);
        }
        let thread = message.thread_ts.as_deref();
        // A replay that looks for the event's earlier posts looks only until the event was done: a busy channel's
        // later messages would otherwise hide them.
        let until = self.replay.as_ref().filter(|r| !r.post_again).and_then(|r| r.done_at);
        match self.egress.sink.find_post(mark, &message.channel, thread, received_at, until).await {
            Ok(PostCheck::Posted(ts)) => {
                tracing::info!(channel = %message.channel, %ts, part = %mark.part,
                    "an earlier attempt posted this: not posted again");
                Ok(Some(ts))
            }
            Ok(PostCheck::NotPosted) => Ok(None),
            Ok(PostCheck::Unknown(why)) => {
                tracing::warn!(channel = %message.channel, %why,
                    "cannot tell whether an earlier attempt posted this event: posting (at least once)");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}
