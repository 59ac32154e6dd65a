//! The alarm-thread port: what the alarm handler remembers between notifications. Two kinds of row share the
//! `alarm_threads` table, each a versioned document written by compare-and-set:
//!
//! - an **alarm's thread** (keyed by its `AlarmArn`): the channel and message that show the alarm, its state and
//!   since when, the transitions seen, the flapping count;
//! - a **channel's posting state** (keyed `channel#<channel>`): the pace of alarm posts (the next free slot),
//!   the pause Slack asked for (`Retry-After`), and the storm window with its digest.
//!
//! The alarm's own rows are written one event at a time (the ingress puts an alarm's notifications in one message
//! group); a channel's row is shared by every alarm posting there, so its writers race and the version decides.

use async_trait::async_trait;
use eventfleet_schema::{EventId, Timestamp};
use serde::{Deserialize, Serialize};

use crate::Result;

/// How long an alarm thread or channel state is kept after its last write.
pub const THREAD_TTL: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

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
    /// The message that shows the alarm's state: the thread's parent, or its reply in a storm digest's thread.
    pub message_ts: String,
    /// The thread its transitions go to: `message_ts`, or the digest's when it is part of one.
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

/// A channel's storm digest.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Digest {
    /// The digest message, once posted; `None` while the event that claimed it posts it.
    pub ts: Option<String>,
    /// The channel's id, as Slack answered the digest's post.
    #[serde(default)]
    pub channel_id: String,
    /// The event that posts it.
    pub claimed_by: Option<EventId>,
    /// When it was claimed (a claim whose poster died is taken over after a while).
    pub claimed_at: Timestamp,
    /// Alarms in it.
    pub total: u32,
    /// Counts by state.
    pub states: std::collections::BTreeMap<String, u32>,
    /// Counts by namespace.
    pub namespaces: std::collections::BTreeMap<String, u32>,
    /// Counts by account.
    pub accounts: std::collections::BTreeMap<String, u32>,
    /// The first alarm names.
    pub names: Vec<String>,
    /// When the message last showed these counts.
    pub shown_at: Timestamp,
    /// The total it showed then.
    pub shown_total: u32,
}

/// An alarm posted alone in a storm window before its digest began: the digest's thread links back to it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct EarlyAlarm {
    /// Its name.
    pub name: String,
    /// Its message.
    pub ts: String,
    /// Its state then.
    pub state: String,
    /// Its metric namespace.
    pub namespace: String,
    /// Its account.
    pub account: String,
}

/// A channel's alarm posting state.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChannelState {
    /// The channel.
    pub channel: String,
    /// The pace's theoretical arrival time (GCRA): a post may go when it is at most the burst ahead of now.
    pub next_slot: Timestamp,
    /// Slack said to wait until then (`Retry-After`).
    pub paused_until: Option<Timestamp>,
    /// Start of the storm window.
    pub window_start: Timestamp,
    /// New alarm threads opened in it.
    pub window_alarms: u32,
    /// Threads opened alone in the window before a digest began.
    pub early: Vec<EarlyAlarm>,
    /// Posts reserved in the pace, by event: it may post at that time (its message was hidden until then).
    #[serde(default)]
    pub reserved: Vec<(EventId, Timestamp)>,
    /// The storm digest, while a storm lasts.
    pub digest: Option<Digest>,
    /// When the last alarm thread was opened (a digest ends a window after it).
    pub last_alarm_at: Timestamp,
    /// The version this copy was read at; 0 for a state not stored yet. Writes compare it.
    pub version: u64,
}

/// Alarm threads and channel posting states. A backend stores versioned JSON documents by key
/// ([`AlarmThreads::document`], [`AlarmThreads::put_document`]); the typed reads and writes are built on them.
#[async_trait]
pub trait AlarmThreads: Send + Sync {
    /// The document at `key` (unexpired) with its version.
    async fn document(&self, key: &str) -> Result<Option<(String, u64)>>;

    /// Writes the document at `key` if its stored version is still `version` (0: none stored, or expired);
    /// returns the new version. Another writer in between: [`crate::StorageError::Conflict`].
    async fn put_document(&self, key: &str, json: String, version: u64) -> Result<u64>;

    /// An alarm's thread.
    async fn thread(&self, alarm_arn: &str) -> Result<Option<AlarmThread>> {
        let found = self.document(alarm_arn).await?;
        found.map(|(json, version)| decode(&json).map(|t| AlarmThread { version, ..t })).transpose()
    }

    /// Writes a thread if its stored version is still `thread.version` (0: none stored); returns the new
    /// version. Another writer in between: [`crate::StorageError::Conflict`].
    async fn put_thread(&self, thread: &AlarmThread) -> Result<u64> {
        self.put_document(&thread.alarm_arn, encode(thread)?, thread.version).await
    }

    /// A channel's posting state.
    async fn channel(&self, channel: &str) -> Result<Option<ChannelState>> {
        let found = self.document(&channel_key(channel)).await?;
        found.map(|(json, version)| decode(&json).map(|c| ChannelState { version, ..c })).transpose()
    }

    /// Writes a channel's state if its stored version is still `state.version`; returns the new version.
    /// Another writer in between: [`crate::StorageError::Conflict`].
    async fn put_channel(&self, state: &ChannelState) -> Result<u64> {
        self.put_document(&channel_key(&state.channel), encode(state)?, state.version).await
    }
}

fn decode<T: serde::de::DeserializeOwned>(json: &str) -> Result<T> {
    serde_json::from_str(json).map_err(|e| crate::StorageError::Corrupt(format!("alarm_threads record: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| crate::StorageError::Invalid(e.to_string()))
}

/// The row key of a channel's state (alarm rows are keyed by their ARN, which never starts so).
pub fn channel_key(channel: &str) -> String {
    format!("channel#{channel}")
}
