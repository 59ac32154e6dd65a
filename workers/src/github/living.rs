//! Living messages: a GitHub workflow run, deployment or pull request is one Slack message, updated in place
//! (`chat.update`) as its deliveries arrive, with a thread reply for the transitions a person cares about (a
//! failed run or job, a failed deployment, a merge). Keyed by the GitHub ids in the payload and the channel; the
//! state lives behind the [`eventfleet_storage::LivingMessages`] port.
//!
//! A hook's deliveries about one repository are one message group, so one thing's deliveries apply one at a
//! time, in order. Every post and update carries the event's mark: an attempt after a crash finds what an
//! earlier one did (the post in the channel, the update on the message) and does not do it again.

use eventfleet_schema::{Envelope, Webhook};
use eventfleet_storage::{LivingMessage, StorageError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Summary, layout, number, state_marker, state_words, summarize, text};
use crate::block_kit;
use crate::slack::{PostMark, SlackError, SlackMessage, truncate};
use crate::wait::Ready;
use crate::{HandlerContext, HandlerError};

/// Lines of parts (jobs, statuses, reviews) a message lists; the rest are counted.
const MAX_PARTS: usize = 25;

/// What a delivery is about, when it has a life of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// `run:<repo>:<run id>`, `deployment:<repo>:<id>`, `pr:<repo>:<number>`.
    pub key: String,
}

/// The subject of a delivery of `event`: a workflow run (its `workflow_run` and `workflow_job` deliveries), a
/// deployment (`deployment`, `deployment_status`) or a pull request (`pull_request`, `pull_request_review`).
/// Other events (pushes, releases, alerts, check suites) are one message each.
pub fn subject(event: &str, payload: &Value) -> Option<Subject> {
    let repo = text(payload, "/repository/full_name")?;
    let (kind, id) = match event {
        "workflow_run" => ("run", number(payload, "/workflow_run/id")?),
        "workflow_job" => ("run", number(payload, "/workflow_job/run_id")?),
        "deployment" | "deployment_status" => ("deployment", number(payload, "/deployment/id")?),
        "pull_request" | "pull_request_review" => ("pr", number(payload, "/pull_request/number")?),
        _ => return None,
    };
    Some(Subject { key: format!("{kind}:{repo}:{id}") })
}

/// Whether a delivery of a living subject is one a chat that cannot update its messages (Teams) shows: a run
/// that completed, a deployment's final status, a pull request opened, reopened, ready, merged or closed, a
/// submitted review. Runs' jobs and in-progress states are left to the run's completion.
pub fn worth_a_card(event: &str, payload: &Value) -> bool {
    let action = text(payload, "/action").unwrap_or_default();
    match event {
        "workflow_run" => action == "completed",
        "deployment_status" => matches!(
            text(payload, "/deployment_status/state").as_deref(),
            Some("success" | "failure" | "error" | "inactive")
        ),
        "pull_request" => matches!(action.as_str(), "opened" | "reopened" | "ready_for_review" | "closed"),
        "pull_request_review" => action == "submitted",
        _ => false,
    }
}

/// What a living message shows, accumulated from its deliveries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Life {
    /// The thing itself, as its latest delivery says (the run, the deployment's latest status, the PR).
    pub head: Option<Summary>,
    /// The parts that report on their own (a run's jobs, a deployment's statuses, a PR's reviews), by id.
    pub parts: Vec<Part>,
    /// The transitions already replied in the thread (a delivery sent twice replies once).
    pub replied: Vec<String>,
}

/// One line of a living message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Part {
    /// The part's id (a job's, a status's, a review's).
    pub id: String,
    /// The line: marker and headline.
    pub line: String,
}

/// Applies a delivery of `event` to `life`; returns the thread reply its transition deserves, if any.
pub fn merge(life: &mut Life, event: &str, payload: &Value) -> Option<String> {
    let summary = summarize(event, payload);
    let line = format!("{} {}", summary.marker, summary.headline);
    let state = |object: &str| {
        text(payload, &format!("/{object}/conclusion")).or_else(|| text(payload, &format!("/{object}/state")))
    };
    let (transition, part) = match event {
        "workflow_run" => {
            let failed = state("workflow_run").filter(|s| is_failure(s));
            let key = failed.map(|s| format!("run:{s}:{}", number(payload, "/workflow_run/run_attempt").unwrap_or(1)));
            (key, None)
        }
        "workflow_job" => {
            let id = number(payload, "/workflow_job/id").map(|n| n.to_string()).unwrap_or_default();
            let failed = state("workflow_job").filter(|s| is_failure(s)).map(|s| format!("job:{id}:{s}"));
            (failed, Some(Part { id: format!("job:{id}"), line: line.clone() }))
        }
        "deployment_status" => {
            let id = number(payload, "/deployment_status/id").map(|n| n.to_string()).unwrap_or_default();
            let failed = state("deployment_status").filter(|s| is_failure(s)).map(|s| format!("status:{id}:{s}"));
            (failed, Some(Part { id: format!("status:{id}"), line: line.clone() }))
        }
        "pull_request" => {
            let merged = payload.pointer("/pull_request/merged").and_then(Value::as_bool) == Some(true);
            let closed = text(payload, "/action").as_deref() == Some("closed");
            ((closed && merged).then(|| "pr:merged".to_owned()), None)
        }
        "pull_request_review" => {
            let id = number(payload, "/review/id").map(|n| n.to_string()).unwrap_or_default();
            (None, Some(Part { id: format!("review:{id}"), line: line.clone() }))
        }
        _ => (None, None),
    };
    match part {
        Some(part) => {
            match life.parts.iter_mut().find(|p| p.id == part.id) {
                Some(existing) => existing.line = part.line,
                None => life.parts.push(part),
            }
            // A deployment shows its latest status; a run or a PR keeps its own delivery's head, and one seen
            // first through a job gets a head made from it until its own arrives.
            if event == "deployment_status" || life.head.is_none() {
                life.head = Some(head_from_part(event, payload, summary));
            }
        }
        None => life.head = Some(summary),
    }
    let transition = transition.filter(|t| !life.replied.contains(t))?;
    life.replied.push(transition);
    Some(line)
}

/// A head for a thing first seen through one of its parts: a job says which workflow, a status which deployment.
fn head_from_part(event: &str, payload: &Value, summary: Summary) -> Summary {
    match event {
        "workflow_job" => {
            let workflow = text(payload, "/workflow_job/workflow_name").unwrap_or_else(|| "workflow".into());
            // The job's page is under its run's: …/actions/runs/<run>/job/<job>.
            let url = text(payload, "/workflow_job/html_url").map(|u| u.split("/job/").next().unwrap_or(&u).to_owned());
            Summary {
                marker: state_marker("in_progress").into(),
                headline: format!("Workflow {} {}", super::bold(&workflow), state_words("in_progress")),
                url,
                details: Vec::new(),
                ..summary
            }
        }
        _ => summary,
    }
}

fn is_failure(state: &str) -> bool {
    matches!(state, "failure" | "timed_out" | "startup_failure" | "error" | "failed")
}

/// The message of `life` in `channel`, for the hook `hook`: the head as any delivery is laid out, then its parts.
pub fn render(channel: &str, hook: &str, life: &Life) -> SlackMessage {
    let head = life.head.clone().unwrap_or_default();
    let mut message = layout(channel, hook, &head);
    if !life.parts.is_empty() {
        let mut lines: Vec<String> = life.parts.iter().take(MAX_PARTS).map(|p| truncate(&p.line, 200, "…")).collect();
        if life.parts.len() > MAX_PARTS {
            lines.push(format!("… and {} more", life.parts.len() - MAX_PARTS));
        }
        if let Some(Value::Array(blocks)) = message.blocks.as_mut() {
            blocks.push(block_kit::section(&lines.join("\n")));
        }
    }
    message
}

/// Posts or updates the living message of `subject` for this delivery, once; then its thread reply, if the
/// delivery is a transition. Each Slack action is recorded before the next one, so a wait (the pace, a `429`)
/// or a crash between them never repeats one.
pub async fn deliver(
    ctx: &HandlerContext,
    envelope: &Envelope,
    hook: &Webhook,
    event: &str,
    payload: &Value,
    subject: &Subject,
) -> Result<Ready<String>, HandlerError> {
    let key = format!("{}#{}", hook.channel, subject.key);
    let found = ctx.store.living.living(&key).await.map_err(store_error("read the living message"))?;
    let event_id = envelope.event_id();
    if let Some(mut done) = found.clone().filter(|m| m.last_event == event_id) {
        // This event's update is on the message already; its reply may be owed still.
        ready!(reply_owed(ctx, envelope, &mut done).await?);
        return Ok(Ready::Now(format!("in its living message ts {} in {}", done.ts, done.channel_id)));
    }
    let mut life: Life = match &found {
        Some(m) => serde_json::from_value(m.state.clone()).unwrap_or_default(),
        None => Life::default(),
    };
    // A transition replies in the thread of a message that said otherwise before; a first message says it itself.
    let reply = merge(&mut life, event, payload).filter(|_| found.is_some());
    let message = render(&hook.channel, &hook.name, &life);
    let received = envelope.received_at();
    let (channel_id, ts, version, did) = match found {
        None => {
            let (posted, _) = ready!(ctx.poster.post(&PostMark::post(event_id), received, &message, true).await?);
            (posted.channel, posted.ts, 0, "posted")
        }
        Some(m) => {
            let mark = PostMark::part(event_id, "update");
            match ctx.poster.update(&mark, &m.channel_id, &m.ts, &message, false).await {
                Ok(ready) => {
                    ready!(ready);
                    (m.channel_id, m.ts, m.version, "updated")
                }
                // Someone deleted the message: the thing goes on in a new one.
                Err(SlackError::Permanent(why)) if why.contains("message_not_found") => {
                    let mark = PostMark::part(event_id, "repost");
                    let (posted, _) = ready!(ctx.poster.post(&mark, received, &message, true).await?);
                    (posted.channel, posted.ts, m.version, "posted again (its message was deleted)")
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let mut living = LivingMessage {
        key,
        channel: hook.channel.clone(),
        channel_id,
        ts,
        state: serde_json::to_value(&life).unwrap_or_default(),
        last_event: event_id,
        pending_reply: reply,
        updated_at: ctx.store.clock.now(),
        version,
    };
    living.version = ctx.store.living.put_living(&living).await.map_err(store_error("write the living message"))?;
    let replied = if living.pending_reply.is_some() { ", replied in its thread" } else { "" };
    ready!(reply_owed(ctx, envelope, &mut living).await?);
    Ok(Ready::Now(format!(
        "{did} the living message of {} (ts {} in {}){replied}",
        subject.key, living.ts, living.channel_id
    )))
}

/// Posts the thread reply `living` owes for its last event, if any, and records that it did.
async fn reply_owed(
    ctx: &HandlerContext,
    envelope: &Envelope,
    living: &mut LivingMessage,
) -> Result<Ready<()>, HandlerError> {
    let Some(line) = living.pending_reply.clone() else { return Ok(Ready::Now(())) };
    let reply = SlackMessage {
        channel: living.channel.clone(),
        text: truncate(&line, 2_000, "…"),
        blocks: None,
        attachments: None,
        thread_ts: Some(living.ts.clone()),
    };
    let mark = PostMark::part(envelope.event_id(), "transition");
    ready!(ctx.poster.post(&mark, envelope.received_at(), &reply, true).await?);
    living.pending_reply = None;
    living.updated_at = ctx.store.clock.now();
    living.version = ctx.store.living.put_living(living).await.map_err(store_error("write the living message"))?;
    Ok(Ready::Now(()))
}

fn store_error(what: &'static str) -> impl Fn(StorageError) -> HandlerError {
    move |e| HandlerError::retryable(format!("{what}: {e}"))
}
