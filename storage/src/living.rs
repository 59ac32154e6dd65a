//! The living-messages port: one Slack message that follows a thing's life (a GitHub workflow run, a deployment,
//! a pull request), updated in place as its state changes. A versioned [`Documents`] document keyed
//! `living#<channel>#<subject>`, written by compare-and-set.

use async_trait::async_trait;
use eventfleet_schema::{EventId, Timestamp};
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::documents::{Documents, decode, encode};

/// A living message: where it is, and the state it shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LivingMessage {
    /// `<channel>#<subject>` (the subject names the thing: `run:<repo>:<id>`, `deployment:<repo>:<id>`, …).
    pub key: String,
    /// The channel as configured.
    pub channel: String,
    /// The channel's id as Slack answered the post (`chat.update` takes ids only).
    pub channel_id: String,
    /// The message.
    pub ts: String,
    /// What the layout shows, accumulated from the deliveries so far (its shape is the handler's).
    pub state: serde_json::Value,
    /// The last event applied (a redelivered one is not applied twice).
    pub last_event: EventId,
    /// The thread reply that event still owes (written before it is posted, cleared after).
    #[serde(default)]
    pub pending_reply: Option<String>,
    /// When it was last written.
    pub updated_at: Timestamp,
    /// The version this copy was read at; 0 for one not stored yet. Writes compare it.
    pub version: u64,
}

/// Living messages by key.
#[async_trait]
pub trait LivingMessages: Send + Sync {
    /// The living message at `key`.
    async fn living(&self, key: &str) -> Result<Option<LivingMessage>>;

    /// Writes it if its stored version is still `message.version` (0: none stored); returns the new version.
    /// Another writer in between: [`crate::StorageError::Conflict`].
    async fn put_living(&self, message: &LivingMessage) -> Result<u64>;
}

#[async_trait]
impl<D: Documents + ?Sized> LivingMessages for D {
    async fn living(&self, key: &str) -> Result<Option<LivingMessage>> {
        let found = self.document(&document_key(key)).await?;
        found.map(|(json, version)| decode(&json).map(|m| LivingMessage { version, ..m })).transpose()
    }

    async fn put_living(&self, message: &LivingMessage) -> Result<u64> {
        self.put_document(&document_key(&message.key), encode(message)?, message.version).await
    }
}

/// The document key (alarm ARNs and channel states never start so).
fn document_key(key: &str) -> String {
    format!("living#{key}")
}
