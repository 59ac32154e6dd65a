//! CloudWatch alarms as Slack threads that follow each alarm's life.
//!
//! - The first notification of an alarm (keyed by its `AlarmArn`) posts a message; later state changes reply in
//!   its thread and update the message's state line (`chat.update`). A new ALARM after the alarm has been OK for
//!   longer than [`AlarmSettings::reopen_after`] starts a new thread.
//! - A storm is a burst like any other ([`crate::digest`]): a new alarm that finds no slot in its channel's pace
//!   is folded into the channel's digest, one line each (its state, a link to it in the console, its event id).
//!   Its later state changes reply in that digest's thread.
//! - Flapping (more than [`AlarmSettings::flap_replies`] state changes, each within
//!   [`AlarmSettings::flap_window`] of the one before) collapses into one reply that counts them, updated in
//!   place.
//! - Posts keep the channel's pace ([`crate::slack::pace`]); a post without a slot, or in a channel Slack paused
//!   (`Retry-After`), is deferred: its message is hidden until then, no handler waits.
//!
//! The thread's record is written after each post, and every post carries the event id and its part in its
//! metadata, so an attempt after a crash finds what an earlier one did and does not post it again.

pub mod messages;

use std::time::Duration;

use async_trait::async_trait;
use eventfleet_schema::{Envelope, Timestamp};
use eventfleet_storage::{AlarmThread, StorageError};
use serde_json::Value;

use crate::digest::Placed;
pub use crate::handlers::alarm_settings::AlarmSettings;
use crate::handlers::sns::{SnsRouting, sns_body, str_of};
use crate::slack::{PostMark, Posted, SlackMessage};
use crate::wait::{Ready, Wait};
use crate::{Handler, HandlerContext, HandlerError};
use messages::ThreadLine;

/// How long a state change of an alarm folded into a digest waits for the digest to be posted, at most: past it
/// (the flush failing for long), the change opens a thread of its own rather than hold the alarm's changes.
const DIGEST_WAIT_LIMIT: Duration = Duration::from_secs(10 * 60);

/// While the digest is due (its flush runs one pace interval after the fold) a change looks again each interval;
/// past this, each minute: a wait is a receive of its message, and the queue's receive limit must outlast
/// [`DIGEST_WAIT_LIMIT`] (about 15 receives against the default 50).
const DIGEST_DUE: Duration = Duration::from_secs(10);

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
                let place = if t.thread_ts.is_empty() { "the channel's digest" } else { "its thread" };
                Ok(Ready::Now(format!("alarm {} {} already in {place} {}", notice.name, notice.state, t.thread_ts)))
            }
            // A replay (or a later attempt) of an event folded into this channel's digest: it is there already,
            // whatever the alarm did since.
            Some(_)
                if ctx.looks()
                    && let Some(earlier) =
                        crate::digest::folded_before(ctx, &notice.channel, envelope.event_id()).await? =>
            {
                Ok(Ready::Now(format!("alarm {} {} {earlier}", notice.name, notice.state)))
            }
            Some(t)
                if t.channel == notice.channel
                    && !(notice.state == "ALARM"
                        && t.state == "OK"
                        && now.since(t.updated_at) > settings.reopen_after) =>
            {
                let mut t = t;
                if t.thread_ts.is_empty() {
                    let waited = now.since(t.updated_at);
                    // Past the limit an earlier attempt may have opened a thread of its own and died before
                    // recording it: that thread is the alarm's, even if the digest was posted since.
                    if waited > DIGEST_WAIT_LIMIT && opened_before(ctx, &notice).await? {
                        return open(ctx, &notice, t.version).await;
                    }
                    // Folded into a digest: its thread is the digest's, once posted.
                    match digest_thread(ctx, &t).await? {
                        Some(ts) => t.thread_ts = ts,
                        None if waited > DIGEST_WAIT_LIMIT => return open(ctx, &notice, t.version).await,
                        None => {
                            let interval = ctx.poster.pace().interval.max(Duration::from_secs(1));
                            let wait = if waited < interval + DIGEST_DUE { interval } else { Duration::from_secs(60) };
                            let reason = format!("{}: the digest holding this alarm is not posted yet", notice.channel);
                            return Ok(Ready::Wait(Wait { wait, reason }));
                        }
                    }
                }
                transition(ctx, settings, &notice, t).await
            }
            other => open(ctx, &notice, other.map_or(0, |t| t.version)).await,
        }
    }
}

/// Whether Slack answered with this channel's id (`C…`, `G…`), not a name (`#ops`) as an earlier attempt's look
/// gives back.
fn is_channel_id(channel: &str) -> bool {
    !channel.is_empty() && !channel.starts_with('#')
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

/// A new thread: the alarm's message, in its turn; or, when the channel has no slot (a storm), a line in the
/// channel's digest, whose thread its later changes reply in.
async fn open(ctx: &HandlerContext, notice: &Notice<'_>, version: u64) -> Result<Ready<String>, HandlerError> {
    let event = notice.envelope.event_id();
    let message = first_message(notice);
    let mark = PostMark::part(event, "post");
    let folded = messages::digest_line(&notice.json);
    let posted = match ready!(crate::digest::turn_or_fold(ctx, notice.envelope, folded, &message, &mark).await?) {
        Placed::Turn => ready!(post(ctx, notice, "post", &message).await?),
        Placed::Earlier(posted) => posted,
        Placed::Folded(outcome) => {
            // No message of its own: its first change finds the digest's thread (the `digested` line of this
            // event's trail).
            let none = Posted { ts: String::new(), channel: String::new() };
            save(ctx, &new_thread(notice, &none, "", version, ctx.store.clock.now())).await?;
            return Ok(Ready::Now(format!("alarm {} {} {outcome}", notice.name, notice.state)));
        }
    };
    save(ctx, &new_thread(notice, &posted, &posted.ts, version, ctx.store.clock.now())).await?;
    Ok(Ready::Now(format!("alarm {} {} opened a thread in {} ({posted})", notice.name, notice.state, notice.channel)))
}

/// The message that opens the alarm's thread.
fn first_message(notice: &Notice<'_>) -> SlackMessage {
    let event_id = notice.envelope.event_id();
    let line = ThreadLine { state: notice.state.clone(), since: notice.since, transitions: 1, event_id };
    messages::parent(&notice.channel, &notice.json, &line)
}

/// Whether an earlier attempt of this event posted the message that opens a thread (a later attempt only).
async fn opened_before(ctx: &HandlerContext, notice: &Notice<'_>) -> Result<bool, HandlerError> {
    let mark = PostMark::part(notice.envelope.event_id(), "post");
    let message = first_message(notice);
    Ok(ctx.poster.posted_before(&mark, notice.envelope.received_at(), &message, false).await?.is_some())
}

/// The thread of an alarm folded into a digest: the digest's message, once its flush posted it (the `digested`
/// line in the trail of the event that folded it).
async fn digest_thread(ctx: &HandlerContext, thread: &AlarmThread) -> Result<Option<String>, HandlerError> {
    let trail = ctx.store.audit.history(thread.last_event).await.map_err(store_error("read the alarm's trail"))?;
    Ok(trail.iter().rev().find_map(|entry| {
        (entry.step == eventfleet_schema::Step::Digested && entry.detail["channel"].as_str() == Some(&thread.channel))
            .then(|| entry.detail["ts"].as_str().map(str::to_owned))
            .flatten()
    }))
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
            ready!(ctx.poster.take_turns(&notice.channel, event, 1).await);
            let (part, message) = if collapse {
                let window = settings.flap_window.as_secs() / 60;
                ("flap", messages::flapping(&notice.channel, &thread.thread_ts, &notice.json, 1, window, event))
            } else {
                ("post", messages::reply(&notice.channel, &thread.thread_ts, &notice.json, event))
            };
            let posted = ready!(post(ctx, notice, part, &message).await?);
            if !is_channel_id(&thread.channel_id) && is_channel_id(&posted.channel) {
                // An alarm folded into a digest learns its channel's id here (`chat.update` takes ids only).
                thread.channel_id = posted.channel.clone();
            }
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
    if thread.message_ts.is_empty() {
        // Folded into a digest: no message of its own to keep up to date (its replies say each state).
        return Ok(Ready::Now(()));
    }
    let line = ThreadLine {
        state: thread.state.clone(),
        since: thread.since,
        transitions: thread.transitions,
        event_id: notice.envelope.event_id(),
    };
    let mut parent = messages::parent(&notice.channel, &notice.json, &line);
    if thread.message_ts != thread.thread_ts {
        // Its message is a reply in a storm digest's thread (a row the release before wrote): keep it there.
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
