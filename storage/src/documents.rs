//! Versioned JSON documents by key, written by compare-and-set: what the alarm threads ([`crate::AlarmThreads`])
//! and the channels' posting states ([`crate::Channels`]) are stored as. Both backends keep them in one table
//! (`alarm_threads` on SQLite, `<prefix>-alarm-threads` on DynamoDB); the typed ports are built on this one.

use async_trait::async_trait;
use serde::Serialize;

use crate::Result;

/// How long a document is kept after its last write.
pub const DOCUMENT_TTL: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// A store of versioned documents.
#[async_trait]
pub trait Documents: Send + Sync {
    /// The document at `key` (unexpired) with its version.
    async fn document(&self, key: &str) -> Result<Option<(String, u64)>>;

    /// Writes the document at `key` if its stored version is still `version` (0: none stored, or expired);
    /// returns the new version. Another writer in between: [`crate::StorageError::Conflict`].
    async fn put_document(&self, key: &str, json: String, version: u64) -> Result<u64>;
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(json: &str) -> Result<T> {
    serde_json::from_str(json).map_err(|e| crate::StorageError::Corrupt(format!("document: {e}")))
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| crate::StorageError::Invalid(e.to_string()))
}
