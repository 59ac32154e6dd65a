//! CloudWatch alarms as Slack threads that follow each alarm's life.
//!
//! - The first notification of an alarm (keyed by its `AlarmArn`) posts a message; later state changes reply in
//!   its thread and update the message's state line (`chat.update`). A new ALARM after the alarm has been OK for
//!   longer than [`AlarmSettings::reopen_after`] starts a new thread.
//! - A storm (more than [`AlarmSettings::storm_threshold`] new alarm threads in one channel, each within
//!   [`AlarmSettings::storm_window`] of the one before) becomes one digest message with the alarms in its thread;
//!   the alarms posted alone just before it get a back-link there.
//! - Flapping (more than [`AlarmSettings::flap_replies`] state changes, each within
//!   [`AlarmSettings::flap_window`] of the one before) collapses into one reply that counts them, updated in
//!   place.
//! - Posts keep the channel's pace ([`crate::slack::pace`]), taken before the storm's count; a post without a
//!   slot, or in a channel Slack paused (`Retry-After`), is deferred: its message is hidden until then, no
//!   handler waits.
//!
//! The thread's record is written after each post, and every post carries the event id and its part in its
//! metadata, so an attempt after a crash finds what an earlier one did and does not post it again.

pub mod channel;
pub mod messages;

use std::time::Duration;

use async_trait::async_trait;
use eventfleet_schema::{Envelope, Timestamp};
use eventfleet_storage::{AlarmThread, ChannelState, Digest, EarlyAlarm, StorageError};
use serde_json::Value;

pub use crate::handlers::alarm_settings::AlarmSettings;
use crate::handlers::sns::{SnsRouting, sns_body, str_of};
use crate::slack::{PostMark, Posted, SlackMessage};
use crate::wait::{Ready, Wait};
use crate::{Handler, HandlerContext, HandlerError};
use channel::{Decision, Placement, change_channel as update_channel};
use messages::ThreadLine;

/// How often a digest's counts are refreshed at most (`chat.update` is limited per workspace).
const DIGEST_REFRESH: Duration = Duration::from_secs(3);

/// CloudWatch alarm state changes.
pub struct CloudWatchAlarm(pub SnsRouting);

/// One notification, as the thread needs it.
struct Notice<'a> {
    json: Value,
    envelope: &'a Envelope,
    key: String,
    name: String,
    state: String,
    since: Timestamp,
    channel: String,
}

fn store_error(what: &str) -> impl Fn(StorageError) -> HandlerError + '_ {
    move |e| HandlerError::retryable(format!("{what}: {e}"))
}

#[async_trait]
impl Handler for CloudWatchAlarm {
    async fn handle(&self, ctx: &HandlerContext, envelope: &Envelope) -> Result<Ready<String>, HandlerError> {
        let sns = sns_body(envelope)?;
        let json: Value = serde_json::from_str(str_of(&sns, "Message"))
            .map_err(|e| HandlerError::Permanent(format!("alarm message is not JSON: {e}")))?;
        let targets = crate::targets::targets(&self.0.channel(ctx, envelope).await?)?;
        // Teams has no threads to follow an alarm in: each state change is a card of its own, posted first (a
        // `sent` line keeps it once while the Slack thread below waits or retries).
        let to_teams = if targets.teams.is_empty() {
            String::new()
        } else {
            let message = messages::notification(&targets.first(), &json);
            // A storm folds into the Teams channel's digest like any burst.
            let line = crate::digest::Line::new("CloudWatch alarm", &message.text, "");
            ready!(crate::targets::teams(ctx, envelope, &targets.teams, &message, Some(line)).await?)
        };
        let Some(channel) = targets.slack else {
            return Ok(Ready::Now(to_teams));
        };
        let name = str_of(&json, "AlarmName").to_owned();
        let key = match str_of(&json, "AlarmArn") {
            "" => format!("{}:{}:{name}", str_of(&json, "AWSAccountId"), str_of(&json, "Region")),
            arn => arn.to_owned(),
        };
        let state = str_of(&json, "NewStateValue").to_owned();
        let since = parse_change_time(str_of(&json, "StateChangeTime")).unwrap_or(envelope.received_at());
        let notice = Notice { json, envelope, key, name, state, since, channel };
        let settings = &self.0.alarms;
        let thread = ctx.store.alarm_threads.thread(&notice.key).await.map_err(store_error("read the alarm thread"))?;
        let now = ctx.store.clock.now();
        match thread {
            Some(t) if t.last_event == envelope.event_id() => {
                // Recorded by this event before: its state line update may not have been made (a wait, a crash).
                if t.transitions > 1 {
                    ready!(show_state(ctx, &notice, &t, true).await?);
                }
                Ok(Ready::Now(format!("alarm {} {} already in its thread {}", notice.name, notice.state, t.thread_ts)))
            }
            Some(t)
                if t.channel == notice.channel
                    && !(notice.state == "ALARM"
                        && t.state == "OK"
                        && now.since(t.updated_at) > settings.reopen_after) =>
            {
                transition(ctx, settings, &notice, t).await
            }
            other => open(ctx, settings, &notice, other.map_or(0, |t| t.version)).await,
        }
    }
}

/// `2026-12-01T10:00:00.000+0000` (CloudWatch's offset has no colon).
fn parse_change_time(text: &str) -> Option<Timestamp> {
    let fixed = match text.len() {
        28 if text.as_bytes()[23] == b'+' || text.as_bytes()[23] == b'-' => {
            format!("{}:{}", &text[..26], &text[26..])
        }
        _ => text.to_owned(),
    };
    Timestamp::parse(&fixed).ok()
}

/// The event's place in the channel's storm (a new thread, storms on), then its turns in the channel's pace.
async fn room(
    ctx: &HandlerContext,
    settings: &AlarmSettings,
    notice: &Notice<'_>,
    new_thread: bool,
) -> Result<Ready<(Placement, ChannelState)>, HandlerError> {
    let event = notice.envelope.event_id();
    if !new_thread || settings.storm_threshold == 0 {
        ready!(ctx.poster.take_turns(&notice.channel, event, 1).await);
        return Ok(Ready::Now((Placement::Alone, ChannelState::default())));
    }
    // The storm first (an event waiting for the digest takes no turn meanwhile), then the turns it needs.
    let mut decision = Decision::Go(Placement::Alone);
    let state = update_channel(&ctx.store, &notice.channel, |state| {
        decision = channel::decide(state, settings, event, ctx.store.clock.now());
        !matches!(decision, Decision::WaitUnchanged(..))
    })
    .await?;
    match decision {
        Decision::Go(Placement::PostDigest) => {
            // The digest, the back-links to the alarms posted alone before it, and its own reply.
            ready!(ctx.poster.take_turns(&notice.channel, event, 2 + state.early.len() as u32).await);
            Ok(Ready::Now((Placement::PostDigest, state)))
        }
        Decision::Go(placement) => {
            ready!(ctx.poster.take_turns(&notice.channel, event, 1).await);
            Ok(Ready::Now((placement, state)))
        }
        Decision::WaitUnchanged(wait, reason) => {
            Ok(Ready::Wait(Wait { wait, reason: format!("{}: {reason}", notice.channel) }))
        }
    }
}

/// Posts one part of the event, once (the caller took its turns).
async fn post(
    ctx: &HandlerContext,
    notice: &Notice<'_>,
    part: &str,
    message: &SlackMessage,
) -> Result<Ready<Posted>, HandlerError> {
    let mark = PostMark::part(notice.envelope.event_id(), part);
    Ok(ctx.poster.post(&mark, notice.envelope.received_at(), message, false).await?.map(|(posted, _)| posted))
}

/// Replaces a message, once for this event; a failure other than a rate limit is logged, not fatal (the thread
/// has the news).
async fn update(
    ctx: &HandlerContext,
    notice: &Notice<'_>,
    channel: &str,
    ts: &str,
    message: &SlackMessage,
    checked: bool,
) -> Result<Ready<()>, HandlerError> {
    let mark = PostMark::part(notice.envelope.event_id(), format!("update:{ts}"));
    match ctx.poster.update(&mark, channel, ts, message, checked).await {
        Ok(ready) => Ok(ready),
        Err(e) => {
            tracing::warn!(error = %e, %channel, %ts, "could not update the message");
            Ok(Ready::Now(()))
        }
    }
}

fn new_thread(notice: &Notice<'_>, posted: &Posted, thread_ts: &str, version: u64, now: Timestamp) -> AlarmThread {
    AlarmThread {
        alarm_arn: notice.key.clone(),
        name: notice.name.clone(),
        channel: notice.channel.clone(),
        channel_id: posted.channel.clone(),
        message_ts: posted.ts.clone(),
        thread_ts: thread_ts.to_owned(),
        state: notice.state.clone(),
        since: notice.since,
        transitions: 1,
        // The opening post is no reply: a run counts replies.
        flap_run: 0,
        flap_ts: None,
        last_event: notice.envelope.event_id(),
        updated_at: now,
        version,
    }
}

async fn save(ctx: &HandlerContext, thread: &AlarmThread) -> Result<(), HandlerError> {
    ctx.store.alarm_threads.put_thread(thread).await.map(|_| ()).map_err(store_error("write the alarm thread"))
}

fn count_into(d: &mut Digest, name: &str, state: &str, namespace: &str, account: &str) {
    d.total += 1;
    *d.states.entry(state.to_owned()).or_default() += 1;
    *d.namespaces.entry(namespace.to_owned()).or_default() += 1;
    *d.accounts.entry(account.to_owned()).or_default() += 1;
    if d.names.len() < messages::DIGEST_NAMES {
        d.names.push(name.to_owned());
    }
}

/// A new thread: alone, or in the channel's storm digest.
async fn open(
    ctx: &HandlerContext,
    settings: &AlarmSettings,
    notice: &Notice<'_>,
    version: u64,
) -> Result<Ready<String>, HandlerError> {
    let event = notice.envelope.event_id();
    let (placement, state) = ready!(room(ctx, settings, notice, true).await?);
    let namespace = messages::namespace(&notice.json);
    let account = str_of(&notice.json, "AWSAccountId").to_owned();
    let line = ThreadLine { state: notice.state.clone(), since: notice.since, transitions: 1, event_id: event };
    match placement {
        Placement::Alone => {
            let message = messages::parent(&notice.channel, &notice.json, &line);
            let posted = ready!(post(ctx, notice, "post", &message).await?);
            let now = ctx.store.clock.now();
            save(ctx, &new_thread(notice, &posted, &posted.ts, version, now)).await?;
            if settings.storm_threshold > 0 {
                let early = EarlyAlarm {
                    name: notice.name.clone(),
                    ts: posted.ts.clone(),
                    state: notice.state.clone(),
                    namespace,
                    account,
                };
                // Listed for a digest's back-links until the digest is posted; one posted since this alarm took
                // its place gets the back-link from this event (its poster read the list before this was in it).
                let threshold = settings.storm_threshold as usize;
                let mut digest_ts = None;
                update_channel(&ctx.store, &notice.channel, |s| {
                    digest_ts = s.digest.as_ref().and_then(|d| d.ts.clone());
                    let add =
                        digest_ts.is_none() && s.early.len() < threshold && !s.early.iter().any(|e| e.ts == early.ts);
                    if add {
                        s.early.push(early.clone());
                    }
                    add
                })
                .await?;
                if let Some(digest_ts) = digest_ts {
                    let message =
                        messages::backlink(&notice.channel, &digest_ts, &notice.name, &notice.state, &posted.ts);
                    ready!(post(ctx, notice, &format!("backlink:{}", posted.ts), &message).await?);
                }
            }
            Ok(Ready::Now(format!(
                "alarm {} {} opened a thread in {} ({posted})",
                notice.name, notice.state, notice.channel
            )))
        }
        Placement::PostDigest => {
            let digest = state.digest.clone().unwrap_or_default();
            // The back-links go to the alarms listed when the digest's ts was written: one listed later saw the
            // ts and posts its own.
            let (digest_ts, early) = match digest.ts.clone() {
                Some(ts) => (ts, state.early.clone()),
                None => {
                    let mut shown = digest.clone();
                    for e in &state.early {
                        count_into(&mut shown, &e.name, &e.state, &e.namespace, &e.account);
                    }
                    count_into(&mut shown, &notice.name, &notice.state, &namespace, &account);
                    let message = messages::digest(&notice.channel, &shown, settings.storm_window.as_secs());
                    let posted = ready!(post(ctx, notice, "digest", &message).await?);
                    let now = ctx.store.clock.now();
                    let saved = update_channel(&ctx.store, &notice.channel, |s| {
                        let d = s.digest.get_or_insert_with(Digest::default);
                        if d.ts.is_some() {
                            return false;
                        }
                        *d = Digest {
                            ts: Some(posted.ts.clone()),
                            channel_id: posted.channel.clone(),
                            shown_at: now,
                            shown_total: shown.total,
                            ..shown.clone()
                        };
                        true
                    })
                    .await?;
                    (saved.digest.and_then(|d| d.ts).unwrap_or(posted.ts), saved.early)
                }
            };
            // The alarms posted alone just before: a back-link each, removed from the list once posted.
            for early in early {
                let message = messages::backlink(&notice.channel, &digest_ts, &early.name, &early.state, &early.ts);
                ready!(post(ctx, notice, &format!("backlink:{}", early.ts), &message).await?);
                update_channel(&ctx.store, &notice.channel, |s| {
                    let before = s.early.len();
                    s.early.retain(|e| e.ts != early.ts);
                    s.early.len() != before
                })
                .await?;
            }
            let message = messages::in_digest(&notice.channel, &digest_ts, &notice.json, event);
            let posted = ready!(post(ctx, notice, "post", &message).await?);
            let now = ctx.store.clock.now();
            save(ctx, &new_thread(notice, &posted, &digest_ts, version, now)).await?;
            Ok(Ready::Now(format!(
                "alarm {} {} began the storm digest {digest_ts} in {} ({posted})",
                notice.name, notice.state, notice.channel
            )))
        }
        Placement::InDigest(digest_ts) => {
            let message = messages::in_digest(&notice.channel, &digest_ts, &notice.json, event);
            let posted = ready!(post(ctx, notice, "post", &message).await?);
            let now = ctx.store.clock.now();
            save(ctx, &new_thread(notice, &posted, &digest_ts, version, now)).await?;
            // Count it into the digest, and show the counts when they were last shown a while ago.
            let mut refresh = None;
            let counted = update_channel(&ctx.store, &notice.channel, |s| {
                let Some(d) = s.digest.as_mut().filter(|d| d.ts.as_deref() == Some(digest_ts.as_str())) else {
                    return false;
                };
                count_into(d, &notice.name, &notice.state, &namespace, &account);
                refresh = (now.since(d.shown_at) >= DIGEST_REFRESH).then(|| d.clone());
                if let Some(d) = s.digest.as_mut().filter(|_| refresh.is_some()) {
                    d.shown_at = now;
                    d.shown_total = d.total;
                }
                true
            })
            .await;
            match counted {
                Ok(_) => {
                    if let Some(d) = refresh {
                        let message = messages::digest(&notice.channel, &d, settings.storm_window.as_secs());
                        let channel =
                            if d.channel_id.is_empty() { notice.channel.clone() } else { d.channel_id.clone() };
                        ready!(update(ctx, notice, &channel, &digest_ts, &message, false).await?);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not count the alarm into its digest"),
            }
            Ok(Ready::Now(format!(
                "alarm {} {} posted in the storm digest {digest_ts} of {} ({posted})",
                notice.name, notice.state, notice.channel
            )))
        }
    }
}

/// A state change of an alarm with a thread: a reply (or the flapping count), and the state line updated.
async fn transition(
    ctx: &HandlerContext,
    settings: &AlarmSettings,
    notice: &Notice<'_>,
    mut thread: AlarmThread,
) -> Result<Ready<String>, HandlerError> {
    let event = notice.envelope.event_id();
    let now = ctx.store.clock.now();
    let quick = now.since(thread.updated_at) <= settings.flap_window;
    let (flap_run, flap_ts) = if quick { (thread.flap_run + 1, thread.flap_ts.clone()) } else { (1, None) };
    let collapse = settings.flap_replies > 0 && flap_run > settings.flap_replies;
    let channel = if thread.channel_id.is_empty() { thread.channel.clone() } else { thread.channel_id.clone() };
    let said = match (collapse, &flap_ts) {
        (true, Some(ts)) => {
            let collapsed = flap_run - settings.flap_replies;
            let window = settings.flap_window.as_secs() / 60;
            let message =
                messages::flapping(&notice.channel, &thread.thread_ts, &notice.json, collapsed, window, event);
            ready!(update(ctx, notice, &channel, ts, &message, false).await?);
            format!("counted as flapping ({collapsed} collapsed) in {}", thread.thread_ts)
        }
        _ => {
            ready!(room(ctx, settings, notice, false).await?);
            let (part, message) = if collapse {
                let window = settings.flap_window.as_secs() / 60;
                ("flap", messages::flapping(&notice.channel, &thread.thread_ts, &notice.json, 1, window, event))
            } else {
                ("post", messages::reply(&notice.channel, &thread.thread_ts, &notice.json, event))
            };
            let posted = ready!(post(ctx, notice, part, &message).await?);
            if collapse {
                thread.flap_ts = Some(posted.ts.clone());
            }
            format!("replied in {} ({posted})", thread.thread_ts)
        }
    };
    if !collapse {
        thread.flap_ts = None;
    }
    thread.flap_run = flap_run;
    thread.transitions += 1;
    thread.state = notice.state.clone();
    thread.since = notice.since;
    thread.last_event = event;
    thread.updated_at = now;
    // The reply (or the count) is recorded before the state line is updated, which may wait (a `429`): the
    // event's return finds its own thread record and only updates the state line, never replying twice.
    save(ctx, &thread).await?;
    ready!(show_state(ctx, notice, &thread, false).await?);
    Ok(Ready::Now(format!("alarm {} {} {said}; its message shows {}", notice.name, notice.state, thread.state)))
}

/// Updates the alarm's message to the thread's state (`checked`: ask Slack first whether this event's update is
/// on it already, as an event that comes back after recording its thread does).
async fn show_state(
    ctx: &HandlerContext,
    notice: &Notice<'_>,
    thread: &AlarmThread,
    checked: bool,
) -> Result<Ready<()>, HandlerError> {
    let line = ThreadLine {
        state: thread.state.clone(),
        since: thread.since,
        transitions: thread.transitions,
        event_id: notice.envelope.event_id(),
    };
    let mut parent = messages::parent(&notice.channel, &notice.json, &line);
    if thread.message_ts != thread.thread_ts {
        // Its message is a reply in a storm digest's thread: keep it there.
        parent.thread_ts = Some(thread.thread_ts.clone());
    }
    let channel = if thread.channel_id.is_empty() { thread.channel.clone() } else { thread.channel_id.clone() };
    update(ctx, notice, &channel, &thread.message_ts, &parent, checked).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloudwatch_change_times_parse() {
        let t = parse_change_time("2015-06-03T17:43:27.123+0000").unwrap();
        assert_eq!(t, Timestamp::parse("2015-06-03T17:43:27.123Z").unwrap());
        assert!(parse_change_time("garbage").is_none());
    }
}
