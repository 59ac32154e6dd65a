//! The [`SlackSink`] port: where Slack messages go (the Web API, or the dev outbox). Only the poster
//! ([`super::Poster`]) calls it.

use async_trait::async_trait;
use eventfleet_schema::Timestamp;

use super::{PostCheck, PostMark, Posted, SlackError, SlackMessage};

/// Where Slack messages are posted.
#[async_trait]
pub trait SlackSink: Send + Sync {
    /// Posts one message (a reply when it has a `thread_ts`), marked; returns where it landed.
    async fn post_message(&self, mark: &PostMark, message: &SlackMessage) -> Result<Posted, SlackError>;

    /// Replaces the message `ts` of `channel` (an id, as [`Posted::channel`] has it) with `message`
    /// (`chat.update`).
    /// The update carries `mark` in the message's metadata, so a later attempt can tell it was made
    /// ([`SlackSink::find_update`]).
    async fn update_message(
        &self,
        mark: &PostMark,
        channel: &str,
        ts: &str,
        message: &SlackMessage,
    ) -> Result<(), SlackError>;

    /// Whether the message `ts` of `channel` carries `mark`: the update `mark` names was made (an earlier
    /// attempt's, that landed before its worker died or its answer was lost).
    async fn find_update(&self, mark: &PostMark, channel: &str, ts: &str) -> Result<PostCheck, SlackError> {
        let _ = (mark, channel, ts);
        Ok(PostCheck::Unknown("this sink keeps no history".into()))
    }

    /// Whether a message with `mark` was posted to `channel` (in the thread `thread_ts`, when given) at or after
    /// `since`, and before `until` when given (an earlier attempt's post that landed before its worker died or its
    /// answer was lost; a replay looks between the event's receipt and when it was done).
    async fn find_post(
        &self,
        mark: &PostMark,
        channel: &str,
        thread_ts: Option<&str>,
        since: Timestamp,
        until: Option<Timestamp>,
    ) -> Result<PostCheck, SlackError> {
        let _ = (mark, channel, thread_ts, since, until);
        Ok(PostCheck::Unknown("this sink keeps no history".into()))
    }
}
