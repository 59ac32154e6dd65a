//! Burst digests: posts that come faster than their channel's pace are folded into one message, never flooded and
//! never dropped.
//!
//! - **Fold.** A post that finds a free slot in its channel's pace goes at once (a quiet channel never waits). One
//!   that finds none is added to the channel's open digest ([`eventfleet_storage::Digests`], one compare-and-set
//!   write) and its event completes at once: its message group goes on, and its outcome names the digest.
//! - **Flush.** The first post folded into a digest also accepts a flush event (source `digest`, key
//!   `digest:<channel>:<first event>`, its own message group): the digest's durable owner, with the retries, trail
//!   and dead letters of any event. It waits one pace interval for the burst to gather and for its slot, closes
//!   the digest (later posts open the next), posts it once (its mark is the flush event's), writes a `digested`
//!   line in the trail of every post in it, and clears it.
//! - **Once.** A later attempt of a post first looks for it in the channel's digests and in its own trail, so a
//!   post folded before its worker died is not folded or posted again.
//! - **Teams.** A card that finds the webhook at Teams' limit folds the same way into the digest of the channel
//!   `teams:<name>` ([`card_or_fold`]); its flush posts the digest as one card.
//!
//! docs/architecture.md ("Egress") has the crash points.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventfleet_schema::{
    AuditEntry, Body, Envelope, EnvelopeV1, EventId, IdempotencyKey, Kind, Source, Step, Verification,
    VerificationMethod, message_group,
};
use eventfleet_storage::{ChannelDigest, ClosedDigest, DigestItem, OutgoingMessage, StorageError};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::block_kit::{MAX_BLOCKS, MAX_SECTION_TEXT, code, context, escape, section};
use crate::slack::{PostMark, Posted, SlackMessage, truncate};
use crate::wait::{Ready, Wait};
use crate::{HandlerContext, HandlerError};

/// Posts in one digest at most; the next fold opens another (a digest stays one readable message).
pub const MAX_ITEMS: usize = 100;

/// How a CloudWatch alarm's line in a digest says where it came from (then its namespace): the digest tells the
/// channel that alarms' later changes reply in its thread.
pub const ALARM_FROM: &str = "CloudWatch ";

/// A post's headline in a digest is cut to this many bytes.
const MAX_TITLE: usize = 200;

/// Compare-and-set tries on a channel's digests before the attempt fails (and retries), a few ms apart.
const CAS_TRIES: usize = 20;

/// Full digests a channel keeps waiting for their flush at most (each about 30 KB of the channel's document).
pub const MAX_CLOSED: usize = 3;

/// A digest whose first post was folded this long ago should have been flushed: a fold makes sure of its flush.
const FLUSH_OVERDUE: Duration = Duration::from_secs(30);

/// How long a flush event's key is remembered (the first post's later attempts accept it again within minutes).
const FLUSH_HORIZON: Duration = Duration::from_secs(24 * 3600);

/// What a digest says of one post: where it came from and its headline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Where it came from, as the digest counts it (`hook deploys`, `GitHub push via ci`).
    pub from: String,
    /// Its headline.
    pub title: String,
}

impl Line {
    /// A post from `from` whose headline is the first line of `text` that says something (not `skip`, not a code
    /// fence).
    pub fn new(from: impl Into<String>, text: &str, skip: &str) -> Self {
        let title = text
            .lines()
            .map(str::trim)
            .find(|line| !line.is_empty() && *line != skip && !line.starts_with("```"))
            .unwrap_or(skip);
        Self { from: from.into(), title: truncate(title, MAX_TITLE, "…") }
    }
}

/// Posts the event's message once, in its channel's pace; when the channel has no slot, folds it into the
/// channel's digest instead (with digests on). Returns the outcome for the trail, or a wait.
pub async fn post_or_fold(
    ctx: &HandlerContext,
    envelope: &Envelope,
    line: Line,
    message: &SlackMessage,
) -> Result<Ready<String>, HandlerError> {
    let mark = PostMark::post(envelope.event_id());
    Ok(Ready::Now(match ready!(turn_or_fold(ctx, envelope, line, message, &mark).await?) {
        Placed::Folded(outcome) => outcome,
        Placed::Earlier(posted) => format!("{posted}, by an earlier attempt: not posted again"),
        Placed::Turn => match ready!(ctx.poster.post(&mark, envelope.received_at(), message, false).await?) {
            (posted, true) => format!("{posted}, by an earlier attempt: not posted again"),
            (posted, false) => posted.to_string(),
        },
    }))
}

/// Where a post of the event goes in its channel.
#[derive(Debug)]
pub enum Placed {
    /// Its own message: the turn in the channel's pace is taken, the caller posts it (unpaced).
    Turn,
    /// An earlier attempt posted it as itself.
    Earlier(Posted),
    /// Into the channel's digest, now or by an earlier attempt: what the trail says.
    Folded(String),
}

/// The place of the event's post `mark` of `message` in its channel: a turn when the channel has a free slot (a
/// quiet channel never waits), else a fold into the channel's digest (with digests on; off, the post waits for
/// its turn). Every source's bursts, CloudWatch alarm storms among them, go through here.
pub async fn turn_or_fold(
    ctx: &HandlerContext,
    envelope: &Envelope,
    line: Line,
    message: &SlackMessage,
    mark: &PostMark,
) -> Result<Ready<Placed>, HandlerError> {
    let poster = &ctx.poster;
    let event = envelope.event_id();
    let channel = &message.channel;
    // A replay asked to post again posts its own message in its turn: folding it would meet the event's earlier
    // fold (a digest holds an event once) and the digests of earlier runs.
    let post_again = ctx.replay.as_ref().is_some_and(|r| r.post_again);
    if !poster.pace().digests || poster.pace().is_off() || message.thread_ts.is_some() || post_again {
        ready!(poster.take_turns(channel, event, 1).await);
        return Ok(Ready::Now(Placed::Turn));
    }
    if ctx.looks() {
        if let Some(earlier) = folded_before(ctx, channel, event).await? {
            return Ok(Ready::Now(Placed::Folded(earlier)));
        }
        // An earlier attempt may have posted it as itself: folding it now would show it twice.
        if let Some(ts) = poster.posted_before(mark, envelope.received_at(), message, false).await? {
            return Ok(Ready::Now(Placed::Earlier(Posted { ts, channel: channel.clone() })));
        }
    }
    // This process folded into the channel within a pace interval: its digest is still gathering, so this post
    // joins it rather than take a slot that just came free. It keeps a message group's posts in order (the
    // group's earlier post is in that digest) and keeps processes that have not yet learnt their share of the
    // channel from posting on top of each other.
    let now = ctx.store.clock.now();
    let mid_burst = ctx.folds.folded_lately(channel, now, poster.pace().interval);
    let behind = if mid_burst {
        Wait { wait: poster.pace().interval, reason: "the channel's digest is gathering".into() }
    } else {
        match poster.try_turn(channel, event).await {
            Ready::Now(()) => return Ok(Ready::Now(Placed::Turn)),
            Ready::Wait(behind) => behind,
        }
    };
    Ok(fold(ctx, channel, envelope, line, &behind, mid_burst).await?.map(Placed::Folded))
}

/// How long a fold in the middle of a burst waits at most for the folds of the other message groups folding into
/// the channel to share its write: it holds the post's message group that long, which the digest's gather of a
/// pace interval hides. A burst from one group (one hook) has no one to wait for and writes at once.
const FOLD_LINGER: Duration = Duration::from_millis(25);

/// A message group counts as folding into a channel (so a fold waits for its next one) this long after its last
/// fold there: a group whose folds come further apart would rarely make the wait. Above the aws backend's default
/// receive window (100 ms), the gap between a busy group's receives (a window set longer than this makes folds of
/// different groups share a write less often, never wrongly).
const FOLDING_GROUP: Duration = Duration::from_millis(250);

/// How long a Teams channel's digest gathers a burst before its flush posts it.
const TEAMS_GATHER: Duration = Duration::from_secs(1);

/// Posts the event's card to the Teams channel `name` when the webhook's window has room; when it has none (Teams'
/// 4 a second), folds the post into that channel's digest (`teams:<name>`), as a Slack post without a slot is
/// (with digests on). Returns the outcome for the trail, or a wait.
pub async fn card_or_fold(
    ctx: &HandlerContext,
    envelope: &Envelope,
    line: Line,
    name: &str,
    message: &SlackMessage,
) -> Result<Ready<String>, HandlerError> {
    let poster = &ctx.poster;
    let event = envelope.event_id();
    let posted = |status: reqwest::StatusCode| format!("card posted ({})", status.as_u16());
    if !poster.pace().digests || ctx.replay.as_ref().is_some_and(|r| r.post_again) {
        let status = ready!(poster.post_to_teams(name, event, message, false).await?);
        return Ok(Ready::Now(posted(status)));
    }
    let channel = format!("{}{name}", crate::teams::PREFIX);
    if ctx.looks()
        && let Some(earlier) = folded_before(ctx, &channel, event).await?
    {
        return Ok(Ready::Now(earlier));
    }
    // As for Slack: while this process's digest of the channel gathers, later posts join it (a group's order).
    let now = ctx.store.clock.now();
    if ctx.folds.folded_lately(&channel, now, TEAMS_GATHER) {
        let behind = Wait { wait: TEAMS_GATHER, reason: format!("{channel}: the channel's digest is gathering") };
        return fold(ctx, &channel, envelope, line, &behind, true).await;
    }
    match poster.try_teams_turn(name, event).await {
        Ready::Now(()) => {
            let status = ready!(poster.post_to_teams(name, event, message, true).await?);
            Ok(Ready::Now(posted(status)))
        }
        Ready::Wait(behind) => fold(ctx, &channel, envelope, line, &behind, false).await,
    }
}

/// Where an earlier attempt folded the event, if it did: in a digest not posted yet (its flush is made sure of),
/// or in one posted (the `digested` line of its trail).
pub(crate) async fn folded_before(
    ctx: &HandlerContext,
    channel: &str,
    event: EventId,
) -> Result<Option<String>, HandlerError> {
    let digests = ctx.store.digests.digest(channel).await.map_err(store_error)?;
    if let Some((seq, first)) = digests.as_ref().and_then(|d| d.first_of(event)) {
        if first == event {
            ensure_flush(ctx, channel, event, seq).await?;
        }
        return Ok(Some(format!("folded into digest {seq} of {channel} by an earlier attempt")));
    }
    let trail = ctx.store.audit.history(event).await.map_err(store_error)?;
    // This channel's digest only: an event posted to several chats may have been folded into another's.
    Ok(trail
        .iter()
        .find(|entry| entry.step == Step::Digested && entry.detail["channel"].as_str() == Some(channel))
        .map(|entry| format!("in a digest of {channel} posted before ({}): not posted again", entry.detail)))
}

/// Adds the post to the channel's open digest (a full one is closed for its flush and the next opened); the first
/// post of a digest makes sure of its flush event, and any post of a digest whose flush is overdue. A channel
/// with [`MAX_CLOSED`] full digests waiting folds no more: the post waits.
async fn fold(
    ctx: &HandlerContext,
    channel: &str,
    envelope: &Envelope,
    line: Line,
    behind: &Wait,
    mid_burst: bool,
) -> Result<Ready<String>, HandlerError> {
    let now = ctx.store.clock.now();
    let event = envelope.event_id();
    let item = DigestItem { event_id: event, from: line.from, title: line.title, at: now };
    let folded = ctx.folds.fold(ctx, channel, item, envelope.message_group(), mid_burst).await?;
    let Some((seq, first, overdue)) = folded else {
        // The channel has the most digests waiting to be posted (Slack paused it, their flushes fail, or a worker
        // died mid-flush and its flush waits out the visibility timeout): the post waits for a slot of its own
        // rather than grow them past what one document holds.
        return Ok(Ready::Wait(Wait {
            wait: behind.wait.max(full_wait(ctx.receive)),
            reason: format!("{channel}: the channel's digests are full; waiting for them to be posted"),
        }));
    };
    if first == event {
        ensure_flush(ctx, channel, event, seq).await?;
    }
    for (seq, first) in overdue.into_iter().filter(|(_, f)| *f != event) {
        ensure_flush(ctx, channel, first, seq).await?;
    }
    tracing::debug!(%channel, seq, reason = %behind.reason, "folded a post into the channel's digest");
    let key = IdempotencyKey::digest(channel, &first);
    Ok(Ready::Now(format!("folded into digest {seq} of {channel} (the channel had no slot; its flush: {key})")))
}

/// How long a post waits when its channel's digests are full, on its `receive`-th receive: 1 s for its first
/// four, then twice as long every five receives, up to 60 s. Each wait is a deferral, one of the queue's
/// receives: a flood past the channel's rate, or a stalled flush, must not spend them all in a minute and
/// dead-letter the post (50 receives last about 25 minutes of this), while a post that just came to full digests
/// (a backlog's old event among them) looks again within a second or two.
fn full_wait(receive: u32) -> Duration {
    let doubled = (receive / 5).min(6);
    Duration::from_secs(1u64 << doubled).min(Duration::from_secs(60))
}

/// Where a fold put its post: the digest's number, its first post, and the flushes of the channel that are
/// overdue (digest number, first post).
type Folded = (u64, EventId, Vec<(u64, EventId)>);

/// Adds `item` to the channel's open digest, closing a full one first; `None` when the channel has the most
/// closed digests waiting. A post already in a digest is not added again.
fn add(digest: &mut ChannelDigest, item: &DigestItem) -> Option<Folded> {
    let (event, now) = (item.event_id, item.at);
    let overdue_at = now.minus(FLUSH_OVERDUE);
    if digest.first_of(event).is_none() {
        if digest.items.len() >= MAX_ITEMS {
            if digest.closed.len() >= MAX_CLOSED {
                return None;
            }
            let items = std::mem::take(&mut digest.items);
            digest.closed.push(ClosedDigest { seq: digest.seq, items });
            digest.seq += 1;
        }
        if digest.items.is_empty() {
            digest.opened_at = now;
        }
        digest.items.push(item.clone());
    }
    let (seq, first) = digest.first_of(event)?;
    // Digests whose flush should have run by now: their first post may have died between its fold and its
    // flush's accept (dead-lettered on its last attempt), so any fold makes sure of their flush again.
    let open = (digest.opened_at < overdue_at).then(|| (digest.seq, digest.items.first()));
    let closed = digest.closed.iter().map(|c| (c.seq, c.items.first()));
    let overdue: Vec<(u64, EventId)> = open
        .into_iter()
        .chain(closed)
        .filter_map(|(seq, first)| first.filter(|f| f.at < overdue_at).map(|f| (seq, f.event_id)))
        .collect();
    Some((seq, first, overdue))
}

/// This process's folds, by channel. Folds that come while one write of the channel's digests is in flight
/// share the next write (a fold mid-burst also waits briefly for the other groups folding there; a burst to one
/// hook is one message group, whose folds come one after another), and the document is kept as last written, so a burst costs a few conditional writes and
/// no reads (on DynamoDB two requests per fold before). The compare-and-set still guards every write: another
/// process's fold or a flush in between is a conflict, and the batch rereads and applies again.
#[derive(Default)]
pub struct Folds {
    channels: Mutex<HashMap<String, Arc<ChannelFolds>>>,
}

#[derive(Default)]
struct ChannelFolds {
    /// When this process last folded a post into the channel's digest.
    last_fold: Mutex<Option<eventfleet_schema::Timestamp>>,
    /// The message groups that folded into the channel here lately, with when (a fold mid-burst waits for theirs).
    groups: Mutex<HashMap<String, tokio::time::Instant>>,
    /// Folds waiting for the next write, each with where its answer goes.
    waiting: Mutex<Vec<(DigestItem, oneshot::Sender<Option<Folded>>)>>,
    /// Batches taken from `waiting` for a write so far (changed under its lock).
    taken: std::sync::atomic::AtomicU64,
    /// Told of every fold that joins `waiting` and of every batch taken from it.
    joined: tokio::sync::Notify,
    /// Held by the fold that writes; the channel's digests as this process last read or wrote them.
    writer: tokio::sync::Mutex<Option<ChannelDigest>>,
}

impl std::fmt::Debug for Folds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Folds").finish_non_exhaustive()
    }
}

impl Folds {
    /// Whether this process folded a post into `channel`'s digest within `within` of `now`.
    fn folded_lately(&self, channel: &str, now: eventfleet_schema::Timestamp, within: Duration) -> bool {
        let channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let last = channels.get(channel).and_then(|folds| *folds.last_fold.lock().unwrap_or_else(|p| p.into_inner()));
        last.is_some_and(|at| now.since(at) < within)
    }

    /// Adds `item` (a post of message group `group`) to `channel`'s open digest, in one write with the other folds
    /// of this process waiting for it. `mid_burst`: this process folded into the channel within a pace interval,
    /// so more folds are coming: the fold waits up to [`FOLD_LINGER`] for those of the other groups folding into
    /// the channel here to share its write (its post is in a digest posted a pace interval later anyway). A fold
    /// after a quiet spell, or the only group folding, writes at once.
    async fn fold(
        &self,
        ctx: &HandlerContext,
        channel: &str,
        item: DigestItem,
        group: &str,
        mid_burst: bool,
    ) -> Result<Option<Folded>, HandlerError> {
        let folds = self.channel(channel);
        let (tx, mut rx) = oneshot::channel();
        let at = item.at;
        let folding = {
            let mut groups = folds.groups.lock().unwrap_or_else(|p| p.into_inner());
            let now = tokio::time::Instant::now();
            groups.retain(|_, last| now.duration_since(*last) < FOLDING_GROUP);
            groups.insert(group.to_owned(), now);
            groups.len()
        };
        let taken_before = {
            let mut waiting = folds.waiting.lock().unwrap_or_else(|p| p.into_inner());
            waiting.push((item, tx));
            folds.taken.load(std::sync::atomic::Ordering::Acquire)
        };
        folds.joined.notify_waiters();
        {
            let mut last = folds.last_fold.lock().unwrap_or_else(|p| p.into_inner());
            *last = (*last).max(Some(at));
        }
        if mid_burst && folding > 1 {
            let deadline = tokio::time::Instant::now() + FOLD_LINGER;
            loop {
                // Created before the look, so a fold or a batch taken in between still wakes it.
                let joined = folds.joined.notified();
                let (gathered, taken) = {
                    let waiting = folds.waiting.lock().unwrap_or_else(|p| p.into_inner());
                    (waiting.len() >= folding, folds.taken.load(std::sync::atomic::Ordering::Acquire) != taken_before)
                };
                // Every folding group's fold is here, or another fold took this one into its write.
                if gathered || taken {
                    break;
                }
                if tokio::time::timeout_at(deadline, joined).await.is_err() {
                    break;
                }
            }
        }
        let mut cached = folds.writer.lock().await;
        // The fold that held the writer before may have taken this one into its batch: written (the answer is
        // here) or failed (its sender is gone). Only a fold still waiting is in the batch this one writes.
        match rx.try_recv() {
            Ok(answer) => return Ok(answer),
            Err(oneshot::error::TryRecvError::Closed) => return Err(not_written(channel)),
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        let batch = {
            let mut waiting = folds.waiting.lock().unwrap_or_else(|p| p.into_inner());
            folds.taken.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            std::mem::take(&mut *waiting)
        };
        // The folds taken stop waiting for others: they are in this write.
        folds.joined.notify_waiters();
        let apply = |digest: &mut ChannelDigest| batch.iter().map(|(item, _)| add(digest, item)).collect::<Vec<_>>();
        let answers = match write(ctx, channel, &mut cached, apply).await {
            Ok(answers) => answers,
            Err(e) => {
                *cached = None;
                return Err(e);
            }
        };
        for ((_, tx), answer) in batch.into_iter().zip(answers) {
            let _ = tx.send(answer);
        }
        drop(cached);
        // Ours was in the batch (it was waiting before the writer was taken); a batch that failed dropped the
        // senders of the others, whose folds fail and are retried.
        rx.await.map_err(|_| not_written(channel))
    }

    /// Applies `apply` to `channel`'s digests and writes them, in turn with this process's folds (a flush that
    /// went around them would lose every compare-and-set to a burst's back-to-back fold writes).
    async fn change<T>(
        &self,
        ctx: &HandlerContext,
        channel: &str,
        apply: impl FnMut(&mut ChannelDigest) -> T,
    ) -> Result<T, HandlerError> {
        let folds = self.channel(channel);
        let mut cached = folds.writer.lock().await;
        let result = write(ctx, channel, &mut cached, apply).await;
        if result.is_err() {
            *cached = None;
        }
        result
    }

    fn channel(&self, channel: &str) -> Arc<ChannelFolds> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if channels.len() > 256 {
            channels.retain(|_, folds| Arc::strong_count(folds) > 1);
        }
        channels.entry(channel.to_owned()).or_default().clone()
    }
}

/// A fold taken into a batch that failed (or whose writer was cancelled by its timeout): retried.
fn not_written(channel: &str) -> HandlerError {
    HandlerError::retryable(format!("the fold into {channel}'s digest was not written"))
}

/// Applies `apply` to the channel's digests and writes them in one compare-and-set, from the cached copy when
/// there is one (a conflict rereads).
async fn write<T>(
    ctx: &HandlerContext,
    channel: &str,
    cached: &mut Option<ChannelDigest>,
    mut apply: impl FnMut(&mut ChannelDigest) -> T,
) -> Result<T, HandlerError> {
    for _ in 0..CAS_TRIES {
        let (stored, from_cache) = match cached.take() {
            Some(digest) => (Some(digest), true),
            None => (ctx.store.digests.digest(channel).await.map_err(store_error)?, false),
        };
        let mut digest = stored.clone().unwrap_or_else(|| ChannelDigest {
            channel: channel.to_owned(),
            seq: 1,
            ..Default::default()
        });
        let before = digest.clone();
        let answer = apply(&mut digest);
        if digest == before {
            // Nothing to write, so no compare-and-set checks the copy: a cached one may be stale (a flush emptied
            // the digests this process last saw full), so only a fresh read answers.
            if from_cache {
                continue;
            }
            *cached = stored;
            return Ok(answer);
        }
        match ctx.store.digests.put_digest(&digest).await {
            Ok(version) => {
                *cached = Some(ChannelDigest { version, ..digest });
                return Ok(answer);
            }
            Err(StorageError::Conflict(_)) => {
                // Another process folded or flushed: reread, after a few ms to spread the tries.
                tokio::time::sleep(Duration::from_millis(rand::random_range(2..=30))).await;
            }
            Err(e) => return Err(store_error(e)),
        }
    }
    Err(HandlerError::retryable(format!("the digests of {channel} kept changing under {CAS_TRIES} writes")))
}

/// Accepts the flush event of digest `seq`, named by its first post (a second accept is a duplicate).
async fn ensure_flush(ctx: &HandlerContext, channel: &str, first: EventId, seq: u64) -> Result<(), HandlerError> {
    let now = ctx.store.clock.now();
    let envelope = EnvelopeV1 {
        event_id: EventId::new(),
        idempotency_key: IdempotencyKey::digest(channel, &first),
        source: Source::Digest { channel: channel.to_owned() },
        kind: Kind::new(Kind::DIGEST_FLUSH),
        message_group: message_group(&format!("digest:{channel}")),
        received_at: now,
        verification: Verification { method: VerificationMethod::Fleet, verified_at: now },
        trace: None,
        headers: BTreeMap::from([("content-type".to_owned(), "application/json".to_owned())]),
        body: Body::Utf8(json!({ "channel": channel, "seq": seq, "first": first }).to_string()),
    };
    let message = OutgoingMessage::first_delivery(Envelope::V1(envelope));
    ctx.store.protocol.accept(message, FLUSH_HORIZON, ctx.poster.worker()).await.map_err(store_error)?;
    Ok(())
}

/// Posts digest `seq` of the flush event's channel: after one pace interval from its first post and in the
/// channel's pace, closed first (later posts open the next), once, then a `digested` line in each post's trail,
/// then cleared.
pub async fn flush(ctx: &HandlerContext, envelope: &Envelope) -> Result<Ready<String>, HandlerError> {
    let Source::Digest { channel } = envelope.source() else {
        return Err(HandlerError::Permanent("a digest flush from another source".into()));
    };
    let body = envelope.as_v1().body.to_bytes().map_err(|e| HandlerError::Permanent(format!("body: {e}")))?;
    let body: Value = serde_json::from_slice(&body).map_err(|e| HandlerError::Permanent(format!("body: {e}")))?;
    let (Some(seq), Some(first)) =
        (body.get("seq").and_then(Value::as_u64), body.get("first").and_then(Value::as_str).and_then(EventId::parse))
    else {
        return Err(HandlerError::Permanent("a digest flush without its digest's number and first post".into()));
    };
    // A digest is known by its first post (its number starts again when the channel's document expires).
    let starts = |items: &[DigestItem]| items.first().is_some_and(|item| item.event_id == first);
    let Some(digest) = ctx.store.digests.digest(channel).await.map_err(store_error)? else {
        return Ok(Ready::Now(format!("digest {seq} of {channel}: posted and cleared before")));
    };
    let open = starts(&digest.items);
    if !open && !digest.closed.iter().any(|c| starts(&c.items)) {
        return Ok(Ready::Now(format!("digest {seq} of {channel}: posted and cleared before")));
    }
    let now = ctx.store.clock.now();
    let teams = channel.strip_prefix(crate::teams::PREFIX);
    let gather = if teams.is_some() { TEAMS_GATHER } else { ctx.poster.pace().interval };
    let due = digest.opened_at.plus(gather);
    if open && due > now {
        return Ok(Ready::Wait(Wait {
            wait: due.since(now),
            reason: format!("{channel}: the digest gathers the burst for one pace interval"),
        }));
    }
    if teams.is_none() {
        ready!(ctx.poster.take_turns(channel, envelope.event_id(), 1).await);
    }
    let closed = ctx.folds.change(ctx, channel, |digest| {
        if starts(&digest.items) {
            let items = std::mem::take(&mut digest.items);
            digest.closed.push(ClosedDigest { seq: digest.seq, items });
            digest.seq += 1;
        }
        digest.closed.iter().find(|c| starts(&c.items)).map(|c| c.items.clone())
    });
    let Some(items) = closed.await? else {
        return Ok(Ready::Now(format!("digest {seq} of {channel}: posted and cleared before")));
    };
    let message = layout(channel, &items);
    if let Some(name) = teams {
        // Teams cannot be asked whether the card landed: the flush's `sent` line says it did.
        let flush = envelope.event_id();
        let sent = crate::sent::before(ctx, flush).await?;
        let outcome = match sent.iter().find(|(target, _)| target == channel) {
            Some((_, outcome)) => format!("{outcome}, by an earlier attempt: not posted again"),
            None => {
                let status = ready!(ctx.poster.post_to_teams(name, flush, &message, false).await?);
                let outcome = format!("card posted ({})", status.as_u16());
                crate::sent::record(ctx, flush, channel, &outcome).await?;
                outcome
            }
        };
        let detail = json!({ "channel": channel, "digest": seq, "flush": envelope.event_id() });
        digested(ctx, &items, detail).await?;
        ctx.folds.change(ctx, channel, |digest| digest.closed.retain(|c| !starts(&c.items))).await?;
        return Ok(Ready::Now(format!("posted digest {seq} of {channel} with {} posts ({outcome})", items.len())));
    }
    let mark = PostMark::part(envelope.event_id(), "burst");
    // A replayed flush runs as attempt 1 but may have posted before it was dead-lettered: look first, always
    // (a later attempt's post looks by itself).
    let before = if ctx.attempt <= 1 {
        ctx.poster.posted_before(&mark, envelope.received_at(), &message, true).await?
    } else {
        None
    };
    let (posted, earlier) = match before {
        Some(ts) => (crate::slack::Posted { ts, channel: channel.clone() }, true),
        None => ready!(ctx.poster.post(&mark, envelope.received_at(), &message, false).await?),
    };
    let detail = json!({ "channel": channel, "ts": posted.ts, "digest": seq, "flush": envelope.event_id() });
    digested(ctx, &items, detail).await?;
    ctx.folds.change(ctx, channel, |digest| digest.closed.retain(|c| !starts(&c.items))).await?;
    let by = if earlier { ", by an earlier attempt: not posted again" } else { "" };
    Ok(Ready::Now(format!("posted digest {seq} of {channel} with {} posts ({posted}{by})", items.len())))
}

/// A `digested` line in the trail of every post of a digest posted.
async fn digested(ctx: &HandlerContext, items: &[DigestItem], detail: Value) -> Result<(), HandlerError> {
    let at = ctx.store.clock.now();
    let lines: Vec<AuditEntry> = items
        .iter()
        .map(|item| AuditEntry::new(item.event_id, at, Step::Digested, ctx.poster.worker()).with_detail(detail.clone()))
        .collect();
    ctx.store.audit.append(lines).await.map_err(store_error)
}

fn store_error(e: StorageError) -> HandlerError {
    HandlerError::retryable(format!("store: {e}"))
}

/// The digest message: what came (counts by where from), then a line per post with its event id, in sections
/// within Block Kit's limits.
pub fn layout(channel: &str, items: &[DigestItem]) -> SlackMessage {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for item in items {
        *counts.entry(item.from.as_str()).or_default() += 1;
    }
    let mut by_count: Vec<(&str, usize)> = counts.into_iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let summary = by_count.iter().map(|(from, n)| format!("{n} from {}", escape(from))).collect::<Vec<_>>().join(" · ");
    let posts = if items.len() == 1 { "1 post".to_owned() } else { format!("{} posts", items.len()) };
    let head = format!(":card_index_dividers: *{posts} came faster than this channel takes them*: {summary}");
    let mut blocks = vec![section(&head)];
    let mut chunk = String::new();
    let mut shown = 0;
    for item in items {
        let line = format!("• *{}*: {} {}\n", escape(&item.from), whole(&item.title), code(&item.event_id.to_string()));
        if chunk.len() + line.len() > MAX_SECTION_TEXT - 1 {
            if blocks.len() + 2 >= MAX_BLOCKS {
                break;
            }
            blocks.push(section(chunk.trim_end()));
            chunk.clear();
        }
        chunk.push_str(&line);
        shown += 1;
    }
    if !chunk.is_empty() {
        blocks.push(section(chunk.trim_end()));
    }
    let mut notes = vec!["Each post's trail: `eventfleet events show <event id>`".to_owned()];
    // Slack's only: a Teams card has no thread.
    let slack = !channel.starts_with(crate::teams::PREFIX);
    if slack && items.iter().any(|item| item.from.starts_with(ALARM_FROM)) {
        notes.push("Alarms listed here: their later state changes reply in this thread".to_owned());
    }
    if shown < items.len() {
        notes.insert(0, format!("{} more not shown: their trails say this digest", items.len() - shown));
    }
    blocks.push(context(&notes));
    let text = truncate(&format!("{posts} in one digest: {}", by_count_text(&by_count)), 300, "…");
    SlackMessage {
        channel: channel.to_owned(),
        text,
        blocks: Some(Value::Array(blocks)),
        attachments: None,
        thread_ts: None,
    }
}

fn by_count_text(by_count: &[(&str, usize)]) -> String {
    by_count.iter().map(|(from, n)| format!("{n} from {}", escape(from))).collect::<Vec<_>>().join(", ")
}

/// A headline fit for one line of mrkdwn: no code fence, and a link or mention cut off by the headline's limit
/// (`<https://…` without its `>`) dropped, so it cannot swallow the lines after it.
fn whole(title: &str) -> String {
    let title = title.replace("```", "");
    match (title.rfind('<'), title.rfind('>')) {
        (Some(open), close) if close.is_none_or(|close| close < open) => title[..open].trim_end().to_owned(),
        _ => title,
    }
}

#[cfg(test)]
mod tests {
    use eventfleet_schema::Timestamp;

    use eventfleet_schema::ErrorClass;

    use super::*;
    use crate::block_kit::problems;

    fn item(from: &str, title: &str) -> DigestItem {
        DigestItem { event_id: EventId::new(), from: from.into(), title: title.into(), at: Timestamp::from_millis(1) }
    }

    fn context(dir: &tempfile::TempDir) -> Arc<HandlerContext> {
        let store = eventfleet_storage::EmbeddedStore::open_dir(dir.path(), Default::default()).unwrap().into_store();
        let outbox = Arc::new(crate::slack::DevOutbox::new(dir.path().join("outbox.jsonl")));
        let egress = crate::slack::Egress::new(outbox, Default::default(), &store, "test");
        Arc::new(HandlerContext {
            store,
            attempt: 1,
            receive: 1,
            poster: egress.poster(1),
            folds: Arc::default(),
            channel: None,
            replay: None,
        })
    }

    #[tokio::test]
    async fn folds_that_come_together_share_a_write_and_none_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(&dir);
        let now = ctx.store.clock.now();
        let events: Vec<EventId> = (0..40).map(|_| EventId::new()).collect();
        let mut folds = tokio::task::JoinSet::new();
        for event in events.clone() {
            let ctx = ctx.clone();
            let item = DigestItem { event_id: event, from: "hook h".into(), title: "t".into(), at: now };
            folds.spawn(async move { ctx.folds.fold(&ctx, "#c", item, "g", false).await });
        }
        let first = events[0];
        while let Some(folded) = folds.join_next().await {
            let (seq, digest_first, _) = folded.unwrap().unwrap().expect("room in the digest");
            assert_eq!((seq, digest_first), (1, first), "one digest, opened by the first fold");
        }
        let digest = ctx.store.digests.digest("#c").await.unwrap().unwrap();
        let folded: Vec<EventId> = digest.items.iter().map(|item| item.event_id).collect();
        assert_eq!(folded, events, "every post once, in the order they came");
        assert!(digest.version < 10, "40 folds at once share their writes: {} writes", digest.version);

        // Another process (or a flush) writes in between: this process's copy is stale, and the next fold rereads
        // rather than overwrite what the other wrote.
        let mut other = digest.clone();
        let theirs = EventId::new();
        other.items.push(DigestItem { event_id: theirs, from: "elsewhere".into(), title: "t".into(), at: now });
        ctx.store.digests.put_digest(&other).await.unwrap();
        let ours = EventId::new();
        let item = DigestItem { event_id: ours, from: "hook h".into(), title: "t".into(), at: now };
        assert!(ctx.folds.fold(&ctx, "#c", item, "g", false).await.unwrap().is_some());
        let digest = ctx.store.digests.digest("#c").await.unwrap().unwrap();
        assert!(digest.first_of(theirs).is_some() && digest.first_of(ours).is_some(), "both folds kept");
        assert_eq!(digest.items.len(), 42);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fold_mid_burst_waits_for_the_other_groups_folding_there_and_a_lone_group_writes_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(&dir);
        let fold = |group: &'static str| {
            let ctx = ctx.clone();
            let item = item("hook h", "t");
            async move { ctx.folds.fold(&ctx, "#c", item, group, true).await.unwrap().expect("room") }
        };
        let version = || async { ctx.store.digests.digest("#c").await.unwrap().map_or(0, |d| d.version) };
        // Group a alone: nobody to wait for, so each fold is its write, at once (no time passes).
        let start = tokio::time::Instant::now();
        fold("a").await;
        fold("a").await;
        assert_eq!(version().await, 2);
        assert_eq!(start.elapsed(), Duration::ZERO, "a lone group's folds do not linger");
        // Group b folds there too: now a's next fold waits for b's, and the two share one write.
        fold("b").await;
        assert_eq!(version().await, 3);
        let a = tokio::spawn({
            let fold = fold("a");
            async move {
                let start = tokio::time::Instant::now();
                fold.await;
                start.elapsed()
            }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        fold("b").await;
        let waited = a.await.unwrap();
        assert_eq!(version().await, 4, "a's fold waited for b's and they were written together");
        assert!(waited < FOLD_LINGER, "a stopped waiting once b's fold took it into its write: {waited:?}");
        // b stops folding: a waits at most the linger for it, then writes alone.
        let start = tokio::time::Instant::now();
        fold("a").await;
        assert_eq!(version().await, 5);
        assert!(start.elapsed() <= FOLD_LINGER, "{:?}", start.elapsed());
        // Once b has not folded for a while, a's folds write at once again.
        tokio::time::sleep(FOLDING_GROUP).await;
        let start = tokio::time::Instant::now();
        fold("a").await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test]
    async fn a_fold_whose_batch_failed_under_another_writer_is_retried_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(&dir);
        let channel = ctx.folds.channels.lock().unwrap().entry("#c".to_owned()).or_default().clone();
        // Another fold holds the writer; ours queues behind it.
        let writer = channel.writer.lock().await;
        let fold = tokio::spawn({
            let ctx = ctx.clone();
            let item = DigestItem {
                event_id: EventId::new(),
                from: "hook h".into(),
                title: "t".into(),
                at: ctx.store.clock.now(),
            };
            async move { ctx.folds.fold(&ctx, "#c", item, "g", false).await }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while channel.waiting.lock().unwrap().is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "the fold never queued");
            tokio::task::yield_now().await;
        }
        // That writer took ours into its batch and failed (a store error, or its handler's timeout): the batch's
        // senders are dropped before the writer is let go.
        drop(std::mem::take(&mut *channel.waiting.lock().unwrap()));
        drop(writer);
        let result = fold.await.expect("the fold does not panic");
        let error = result.expect_err("a fold that was not written says so");
        assert_eq!(error.class(), ErrorClass::Retryable, "{error}");
        assert!(ctx.store.digests.digest("#c").await.unwrap().is_none(), "nothing was written for it");
    }

    #[tokio::test]
    async fn a_process_that_saw_the_digests_full_folds_again_once_they_were_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(&dir);
        let now = ctx.store.clock.now();
        let item = || DigestItem { event_id: EventId::new(), from: "h".into(), title: "t".into(), at: now };
        let mut full = None;
        for _ in 0..(MAX_CLOSED + 1) * MAX_ITEMS + 1 {
            full = Some(ctx.folds.fold(&ctx, "#c", item(), "g", false).await.unwrap());
        }
        assert_eq!(full, Some(None), "the channel's digests are full: the post waits");
        // The flushes post and clear them, in another process.
        let mut flushed = ctx.store.digests.digest("#c").await.unwrap().unwrap();
        flushed.closed.clear();
        flushed.items.clear();
        ctx.store.digests.put_digest(&flushed).await.unwrap();
        assert!(
            ctx.folds.fold(&ctx, "#c", item(), "g", false).await.unwrap().is_some(),
            "this process does not go on seeing them full"
        );
    }

    #[tokio::test]
    async fn a_digest_of_another_chat_does_not_count_as_this_ones() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(&dir);
        let ctx = HandlerContext { attempt: 2, ..(*ctx).clone() };
        let event = EventId::new();
        let detail = json!({ "channel": "#both", "ts": "1.2", "digest": 1, "flush": EventId::new() });
        let line = AuditEntry::new(event, ctx.store.clock.now(), Step::Digested, "test").with_detail(detail);
        ctx.store.audit.append(vec![line]).await.unwrap();
        // The event's Slack post went out in #both's digest; its card to Teams is still owed.
        assert_eq!(folded_before(&ctx, "teams:ops", event).await.unwrap(), None);
        assert!(folded_before(&ctx, "#both", event).await.unwrap().is_some_and(|s| s.contains("posted before")));
    }

    #[test]
    fn a_full_digest_closes_for_its_flush_and_a_channel_with_the_most_waiting_folds_no_more() {
        let now = Timestamp::from_millis(10_000_000);
        let at = |event_id| DigestItem { event_id, from: "h".into(), title: "t".into(), at: now };
        let mut digest = ChannelDigest { channel: "#c".into(), seq: 1, ..Default::default() };
        let first = EventId::new();
        assert_eq!(add(&mut digest, &at(first)).map(|(seq, f, _)| (seq, f)), Some((1, first)));
        for _ in 1..MAX_ITEMS {
            assert_eq!(add(&mut digest, &at(EventId::new())).map(|(seq, ..)| seq), Some(1));
        }
        // The 101st opens digest 2; digest 1 waits, closed, for its flush.
        let next = EventId::new();
        assert_eq!(add(&mut digest, &at(next)).map(|(seq, f, _)| (seq, f)), Some((2, next)));
        assert_eq!(digest.closed.iter().map(|c| (c.seq, c.items.len())).collect::<Vec<_>>(), [(1, MAX_ITEMS)]);
        assert_eq!(
            add(&mut digest, &at(first)).map(|(seq, ..)| seq),
            Some(1),
            "a post folded before is not added again"
        );
        while digest.closed.len() < MAX_CLOSED || digest.items.len() < MAX_ITEMS {
            add(&mut digest, &at(EventId::new())).expect("room until the most digests wait");
        }
        let unchanged = digest.clone();
        assert_eq!(add(&mut digest, &at(EventId::new())), None, "full: the post waits for a slot instead");
        assert_eq!(digest, unchanged, "and nothing is written");
    }

    #[test]
    fn a_post_waiting_for_full_digests_waits_longer_the_more_it_has_waited() {
        assert_eq!(full_wait(1), Duration::from_secs(1));
        assert_eq!(full_wait(4), Duration::from_secs(1));
        assert_eq!(full_wait(10), Duration::from_secs(4));
        assert_eq!(full_wait(49), Duration::from_secs(60));
        // The queue's default receive limit (50) covers far more than a minute of such waits.
        let waited: Duration = (1..50).map(full_wait).sum();
        assert!(waited > Duration::from_secs(20 * 60), "{waited:?}");
    }

    #[test]
    fn a_fold_names_the_digests_whose_flush_is_overdue() {
        let opened = Timestamp::from_millis(20_000_000);
        let item = |at| DigestItem { event_id: EventId::new(), from: "h".into(), title: "t".into(), at };
        let mut digest = ChannelDigest { channel: "#c".into(), seq: 7, ..Default::default() };
        let first = item(opened);
        add(&mut digest, &first).unwrap();
        let soon = opened.plus(FLUSH_OVERDUE - Duration::from_secs(1));
        assert_eq!(add(&mut digest, &item(soon)).unwrap().2, [], "its flush still has time");
        let late = opened.plus(FLUSH_OVERDUE + Duration::from_secs(1));
        let (seq, by, overdue) = add(&mut digest, &item(late)).unwrap();
        assert_eq!((seq, by), (7, first.event_id));
        assert_eq!(
            overdue,
            [(7, first.event_id)],
            "the first post died before its flush was accepted: make sure of it"
        );
    }

    #[test]
    fn a_digest_counts_by_where_from_and_lists_every_post_with_its_event() {
        let items: Vec<DigestItem> = (0..37)
            .map(|i| item("hook deploys", &format!("*Disk {i} full*")))
            .chain((0..3).map(|i| item("GitHub push via ci", &format!("push {i}"))))
            .collect();
        let message = layout("#ops", &items);
        assert!(problems(&message).is_empty(), "{:?}", problems(&message));
        let shown = message.blocks.as_ref().unwrap().to_string();
        assert!(shown.contains("40 posts came faster"), "{shown}");
        assert!(shown.contains("37 from hook deploys · 3 from GitHub push via ci"), "{shown}");
        for item in &items {
            assert!(shown.contains(&item.event_id.to_string()), "every post is listed with its event id");
        }
        assert!(message.text.starts_with("40 posts in one digest: 37 from hook deploys, 3 from GitHub push via ci"));
    }

    #[test]
    fn the_most_a_digest_holds_stays_within_block_kit_limits() {
        let long = "x".repeat(MAX_TITLE);
        let items: Vec<DigestItem> = (0..MAX_ITEMS).map(|_| item(&"h".repeat(80), &long)).collect();
        let message = layout("#ops", &items);
        assert!(problems(&message).is_empty(), "{:?}", problems(&message));
        let shown = message.blocks.as_ref().unwrap().to_string();
        assert!(items.iter().all(|i| shown.contains(&i.event_id.to_string())), "a full digest shows every post");
        let hostile = layout("#ops", &[item("<!channel>", "t")]);
        assert!(!hostile.blocks.unwrap().to_string().contains("<!channel>"), "where-from is escaped");
    }

    #[test]
    fn a_line_is_the_first_thing_the_post_says() {
        assert_eq!(Line::new("h", "ops\n*Disk full*\nstatus: `firing`", "ops").title, "*Disk full*");
        assert_eq!(Line::new("h", "ops\n```\n{}\n```", "ops").title, "{}");
        assert_eq!(Line::new("h", "", "ops").title, "ops");
        assert!(Line::new("h", &"é".repeat(500), "").title.len() <= MAX_TITLE + "…".len());
        assert_eq!(
            whole("see <https://example.com/a|the run> and <https://exa…"),
            "see <https://example.com/a|the run> and"
        );
        assert_eq!(whole("```code"), "code");
    }
}
