//! The alarm-thread port: what the alarm handler remembers between notifications. An **alarm's thread** (keyed
//! by its `AlarmArn`): the channel and message that show the alarm, its state and since when, the transitions
//! seen, the flapping count. A versioned [`Documents`] document, written one event at a time (the ingress puts
//! an alarm's notifications in one message group), by compare-and-set all the same.

use async_trait::async_trait;
use eventfleet_schema::{EventId, Timestamp};
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::documents::{Documents, decode, encode};

/// One alarm's Slack thread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmThread {
    /// The alarm (`AlarmArn`, or account, region and name when the message has no ARN).
    pub alarm_arn: String,
    /// The alarm's name, as last seen.
    pub name: String,
    /// Where it is shown.
    pub channel: String,
    /// The channel's id as Slack answered the post (`chat.update` takes ids only).
    #[serde(default)]
    pub channel_id: String,
    /// The message that shows the alarm's state: the thread's parent (or, in a row of the release before, its reply
    /// in a storm digest's thread); empty for an alarm folded into a burst digest, which has no message of its own.
    pub message_ts: String,
    /// The thread its transitions go to: `message_ts`, or the digest's when it is part of one; empty while an alarm
    /// folded into a digest has not had a later change (the digest's ts is then in the folding event's trail).
    pub thread_ts: String,
    /// The current state (`ALARM`, `OK`, `INSUFFICIENT_DATA`).
    pub state: String,
    /// Since when (the alarm's `StateChangeTime`, else the event's arrival).
    pub since: Timestamp,
    /// State changes seen in this thread, the first included.
    pub transitions: u32,
    /// Changes inside the current flapping run (each within the flap window of the one before).
    pub flap_run: u32,
    /// The reply that counts a collapsed flapping run, updated in place.
    pub flap_ts: Option<String>,
    /// The last event applied (a redelivered one is not applied twice).
    pub last_event: EventId,
    /// When it was last written.
    pub updated_at: Timestamp,
    /// The version this copy was read at; 0 for a thread not stored yet. Writes compare it.
    pub version: u64,
}

/// Alarms' Slack threads, each a versioned document keyed by its `AlarmArn` (every [`Documents`] store is one).
#[async_trait]
pub trait AlarmThreads: Send + Sync {
    /// An alarm's thread.
    async fn thread(&self, alarm_arn: &str) -> Result<Option<AlarmThread>>;

    /// Writes a thread if its stored version is still `thread.version` (0: none stored); returns the new
    /// version. Another writer in between: [`crate::StorageError::Conflict`].
    async fn put_thread(&self, thread: &AlarmThread) -> Result<u64>;
}

#[async_trait]
impl<D: Documents + ?Sized> AlarmThreads for D {
    async fn thread(&self, alarm_arn: &str) -> Result<Option<AlarmThread>> {
        let found = self.document(alarm_arn).await?;
        found.map(|(json, version)| decode(&json).map(|t| AlarmThread { version, ..t })).transpose()
    }

    async fn put_thread(&self, thread: &AlarmThread) -> Result<u64> {
        self.put_document(&thread.alarm_arn, encode(thread)?, thread.version).await
    }
}
