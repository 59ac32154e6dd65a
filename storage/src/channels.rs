//! The channels port: a Slack channel's state shared by the fleet, a versioned document (keyed
//! `channel#<channel>`) written by compare-and-set. It holds what every worker must agree on and nothing that
//! changes per post: the pause Slack asked for (`Retry-After`) and the workers posting there lately (each paces
//! itself at its share of the channel's rate). The storm fields are no longer written (alarm storms fold into
//! the channel's burst digest, [`crate::Digests`]); they stay, empty, so that a worker of the release before
//! reads the document while a deploy rolls. Remove them in the release after.

use async_trait::async_trait;
use eventfleet_schema::{EventId, Timestamp};
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::documents::{Documents, decode, encode};

/// A worker process posting to the channel, until when it counts (it renews while it keeps posting).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Lane {
    /// The worker (`worker@host:pid`).
    pub worker: String,
    /// It counts until then.
    pub until: Timestamp,
}

/// A channel's storm digest, as the release before wrote it (no longer written).
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

/// An alarm posted alone in a storm window before its digest began, as the release before wrote it (no longer
/// written).
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

/// A channel's shared posting state.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChannelState {
    /// The channel.
    pub channel: String,
    /// Slack said to wait until then (`Retry-After`).
    pub paused_until: Option<Timestamp>,
    /// Start of the storm window.
    pub window_start: Timestamp,
    /// New alarm threads opened in it.
    pub window_alarms: u32,
    /// Threads opened alone in the window before a digest began.
    pub early: Vec<EarlyAlarm>,
    /// The workers posting to the channel lately: each paces itself at one share of the channel's rate.
    #[serde(default)]
    pub lanes: Vec<Lane>,
    /// The alarms counted into the current window, and when (an alarm that waits and comes back is counted
    /// once; entries older than any wait are dropped, so a channel that never goes quiet keeps a short list).
    #[serde(default)]
    pub counted: Vec<(EventId, Timestamp)>,
    /// The storm digest, while a storm lasts.
    pub digest: Option<Digest>,
    /// When the last alarm thread was opened (a digest ends a window after it).
    pub last_alarm_at: Timestamp,
    /// The version this copy was read at; 0 for a state not stored yet. Writes compare it.
    pub version: u64,
}

/// Channels' shared posting states.
#[async_trait]
pub trait Channels: Send + Sync {
    /// A channel's state.
    async fn channel(&self, channel: &str) -> Result<Option<ChannelState>>;

    /// Writes a channel's state if its stored version is still `state.version`; returns the new version.
    /// Another writer in between: [`crate::StorageError::Conflict`].
    async fn put_channel(&self, state: &ChannelState) -> Result<u64>;
}

#[async_trait]
impl<D: Documents + ?Sized> Channels for D {
    async fn channel(&self, channel: &str) -> Result<Option<ChannelState>> {
        let found = self.document(&channel_key(channel)).await?;
        found.map(|(json, version)| decode(&json).map(|c| ChannelState { version, ..c })).transpose()
    }

    async fn put_channel(&self, state: &ChannelState) -> Result<u64> {
        self.put_document(&channel_key(&state.channel), encode(state)?, state.version).await
    }
}

/// The document key of a channel's state (alarm threads are keyed by their ARN, which never starts so).
pub fn channel_key(channel: &str) -> String {
    format!("channel#{channel}")
}
