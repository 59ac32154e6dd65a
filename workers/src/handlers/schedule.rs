//! Schedule ticks (`schedule.<name>`): a tick of a posting schedule posts its text to its channel; a tick that
//! emits an event of its own kind is for a handler the team registers (or a route), and is recorded as unhandled
//! without one.

use async_trait::async_trait;
use eventfleet_schema::Envelope;
use serde::Deserialize;

use crate::digest::Line;
use crate::slack::{SlackMessage, truncate};
use crate::wait::Ready;
use crate::{Handler, HandlerContext, HandlerError};

/// The body of a tick, as the ingress's scheduler writes it.
#[derive(Debug, Deserialize)]
struct TickBody {
    schedule: String,
    tick: String,
    #[serde(default)]
    missed: u64,
    #[serde(default)]
    first_missed: Option<String>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    text: Option<String>,
}

/// Slack's `text` limit is 40,000 characters; a schedule's text is short, this only bounds a mistake.
const MAX_TEXT: usize = 3_000;

/// Posts a posting schedule's ticks.
pub struct ScheduleTick;

#[async_trait]
impl Handler for ScheduleTick {
    async fn handle(&self, ctx: &HandlerContext, envelope: &Envelope) -> Result<Ready<String>, HandlerError> {
        let text = envelope.as_v1().body.as_text().unwrap_or_default();
        let tick: TickBody =
            serde_json::from_str(text).map_err(|e| HandlerError::Permanent(format!("not a schedule tick: {e}")))?;
        let (Some(channel), Some(text)) = (tick.channel.map(|own| ctx.channel_or(&own)), tick.text) else {
            tracing::info!(event_id = %envelope.event_id(), kind = %envelope.kind(), schedule = %tick.schedule,
                "no handler for the schedule's kind; completed");
            return Ok(Ready::Now(format!("unhandled kind {}", envelope.kind())));
        };
        let mut text = truncate(&text, MAX_TEXT, "… (truncated)");
        if tick.missed > 0 {
            let since = tick.first_missed.as_deref().unwrap_or(&tick.tick);
            text.push_str(&format!(
                "\n_(catch-up: {} missed tick{} of `{}` since {since})_",
                tick.missed,
                if tick.missed == 1 { "" } else { "s" },
                tick.schedule
            ));
        }
        let message = SlackMessage { channel: channel.clone(), text, blocks: None, attachments: None, thread_ts: None };
        let line = Line::new(format!("schedule {}", tick.schedule), &message.text, "");
        let posted = ready!(ctx.post_or_fold(envelope, line, &message).await?);
        Ok(Ready::Now(format!("posted tick {} of {} to {channel} ({posted})", tick.tick, tick.schedule)))
    }
}
