//! The digests port: a Slack channel's burst digest, the posts folded into one message while the channel had no
//! slot in its pace. A versioned [`Documents`] document per channel (keyed `digest#<channel>`), written by
//! compare-and-set: the open digest takes folds; a flush closes it (the next folds open the next one), posts it
//! and clears it.

use async_trait::async_trait;
use eventfleet_schema::{EventId, Timestamp};
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::documents::{Documents, decode, encode};

/// One post folded into a digest: what the digest's line says of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DigestItem {
    /// The event whose post it is.
    pub event_id: EventId,
    /// Where it came from, as the digest counts it (`hook deploys`, `GitHub push via ci`, `schedule standup`).
    pub from: String,
    /// Its headline, short.
    pub title: String,
    /// When it was folded.
    pub at: Timestamp,
}

/// A digest closed by its flush and not yet cleared (its post may be in progress, or its worker died).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClosedDigest {
    /// Its number in the channel.
    pub seq: u64,
    /// Its posts.
    pub items: Vec<DigestItem>,
}

/// A channel's digests.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChannelDigest {
    /// The channel, as configured.
    pub channel: String,
    /// The number of the open digest (the one folds go to).
    pub seq: u64,
    /// When its first post was folded.
    pub opened_at: Timestamp,
    /// Its posts, in the order they were folded.
    pub items: Vec<DigestItem>,
    /// Digests closed by their flush, not yet posted and cleared.
    pub closed: Vec<ClosedDigest>,
    /// The version this copy was read at; 0 for one not stored yet. Writes compare it.
    pub version: u64,
}

impl ChannelDigest {
    /// The digest (`seq`) holding `event`, and the first post of that digest, if it is in one.
    pub fn first_of(&self, event: EventId) -> Option<(u64, EventId)> {
        let open = std::iter::once((self.seq, &self.items));
        let closed = self.closed.iter().map(|closed| (closed.seq, &closed.items));
        open.chain(closed)
            .find_map(|(seq, items)| items.iter().any(|item| item.event_id == event).then(|| (seq, items[0].event_id)))
    }
}

/// Channels' digests.
#[async_trait]
pub trait Digests: Send + Sync {
    /// A channel's digests.
    async fn digest(&self, channel: &str) -> Result<Option<ChannelDigest>>;

    /// Writes them if the stored version is still `digest.version` (0: none stored); returns the new version.
    /// Another writer in between: [`crate::StorageError::Conflict`].
    async fn put_digest(&self, digest: &ChannelDigest) -> Result<u64>;
}

#[async_trait]
impl<D: Documents + ?Sized> Digests for D {
    async fn digest(&self, channel: &str) -> Result<Option<ChannelDigest>> {
        let found = self.document(&document_key(channel)).await?;
        found.map(|(json, version)| decode(&json).map(|d| ChannelDigest { version, ..d })).transpose()
    }

    async fn put_digest(&self, digest: &ChannelDigest) -> Result<u64> {
        self.put_document(&document_key(&digest.channel), encode(digest)?, digest.version).await
    }
}

/// The document key (alarm ARNs, channel states and living messages never start so).
fn document_key(channel: &str) -> String {
    format!("digest#{channel}")
}
