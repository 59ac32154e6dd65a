//! Identifiers: event ids, idempotency keys, queue deduplication ids and hook ids.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The id eventfleet gives an event when ingress first accepts it: a UUIDv7, so ids sort by arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct EventId(uuid::Uuid);

impl EventId {
    /// A fresh UUIDv7.
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }

    /// Parses the hyphenated form.
    pub fn parse(text: &str) -> Option<Self> {
        uuid::Uuid::parse_str(text.trim()).ok().map(Self)
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The source-scoped native id of an event: two deliveries with the same key are the same event.
///
/// Forms: `slack:{team}:{event_id}`, `github:{hook}:{delivery}`, `sns:{topic}:{message_id}`,
/// `hook:{hook}:{idempotency-key or sha256(body)}`, `schedule:{name}:{tick}`, `digest:{channel}:{first event}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// A Slack event, command or interaction: `event_id`, or `trigger_id` for commands and interactions.
    pub fn slack(team: &str, native_id: &str) -> Self {
        Self(format!("slack:{team}:{native_id}"))
    }

    /// A GitHub delivery (`X-GitHub-Delivery`) on a hook.
    pub fn github(hook: &HookId, delivery: &str) -> Self {
        Self(format!("github:{hook}:{delivery}"))
    }

    /// An SNS message on a topic.
    pub fn sns(topic_arn: &str, message_id: &str) -> Self {
        Self(format!("sns:{topic_arn}:{message_id}"))
    }

    /// A generic hook payload keyed by the sender's `Idempotency-Key` header.
    pub fn hook(hook: &HookId, idempotency_key: &str) -> Self {
        Self(format!("hook:{hook}:{idempotency_key}"))
    }

    /// A generic hook payload without an `Idempotency-Key`: the sha256 of the body.
    pub fn hook_body(hook: &HookId, body: &[u8]) -> Self {
        Self(format!("hook:{hook}:{}", hex::encode(Sha256::digest(body))))
    }

    /// A schedule's tick: `schedule:{name}:{tick}`, the tick an RFC 3339 UTC time to the second. Every process
    /// evaluating the schedule makes the same key, so the protocol keeps one event per tick.
    pub fn schedule(name: &str, tick: &str) -> Self {
        Self(format!("schedule:{name}:{tick}"))
    }

    /// A channel's burst digest, named by the channel and the first event folded into it: the worker that folds
    /// it (again, after a crash) makes the same key, so the digest has one flush event.
    pub fn digest(channel: &str, first: &EventId) -> Self {
        Self(format!("digest:{channel}:{first}"))
    }

    /// Wraps a key read back from storage or typed by an operator.
    pub fn from_raw(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The sender's own id of the event: what follows the key's last `:` (Slack `event_id` or `trigger_id`,
    /// `X-GitHub-Delivery`, SNS `MessageId`, a hook's `Idempotency-Key`, a tick). Operators search by it.
    pub fn sender_id(&self) -> &str {
        Self::sender_id_of(&self.0)
    }

    /// [`IdempotencyKey::sender_id`] of a key's text.
    pub fn sender_id_of(key: &str) -> &str {
        key.rsplit(':').next().unwrap_or(key)
    }

    /// The queue deduplication id of the first delivery of this key: sha256 of the key, hex (64 characters,
    /// inside SQS's 128-character limit whatever the key's length).
    pub fn dedup_id(&self) -> DedupId {
        DedupId(hex::encode(Sha256::digest(self.0.as_bytes())))
    }

    /// A short, non-reversible digest for logs: keys can carry customer identifiers.
    pub fn log_hash(&self) -> String {
        hex::encode(&Sha256::digest(self.0.as_bytes())[..8])
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the queue deduplicates on within its 5-minute window.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct DedupId(String);

impl DedupId {
    /// A dedup id that never collides: used when an operator replays an event on purpose.
    pub fn fresh() -> Self {
        Self(uuid::Uuid::now_v7().simple().to_string())
    }

    /// Wraps a dedup id read back from storage.
    pub fn from_raw(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The id of a registered incoming webhook, the `{hook_id}` of `POST /hooks/{hook_id}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct HookId(String);

impl HookId {
    /// A fresh, unguessable hook id (the URL is a capability when the hook has no secret).
    pub fn new() -> Self {
        Self(format!("hk_{}", uuid::Uuid::new_v4().simple()))
    }

    /// Wraps an id from a URL or storage.
    pub fn from_raw(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for HookId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for HookId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_source_scoped() {
        let hook = HookId::from_raw("hk_1");
        assert_eq!(IdempotencyKey::slack("T1", "Ev1").as_str(), "slack:T1:Ev1");
        assert_eq!(IdempotencyKey::github(&hook, "d-1").as_str(), "github:hk_1:d-1");
        assert_eq!(IdempotencyKey::sns("arn:t", "m-1").as_str(), "sns:arn:t:m-1");
        assert_eq!(IdempotencyKey::hook(&hook, "abc").as_str(), "hook:hk_1:abc");
        assert_eq!(
            IdempotencyKey::hook_body(&hook, b"").as_str(),
            "hook:hk_1:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn dedup_id_is_sha256_of_key_and_stable() {
        let key = IdempotencyKey::from_raw("abc");
        assert_eq!(key.dedup_id().as_str(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_ne!(DedupId::fresh(), DedupId::fresh());
    }

    #[test]
    fn event_ids_sort_by_creation() {
        let a = EventId::new();
        let b = EventId::new();
        assert!(a < b);
        assert_eq!(EventId::parse(&a.to_string()), Some(a));
        assert_eq!(EventId::parse("not-a-uuid"), None);
    }
}
