//! The data eventfleet moves and records: the versioned event envelope and the record types of its tables.
//!
//! # Layout
//!
//! - [`time`]: [`Timestamp`], milliseconds since the Unix epoch, serialized as RFC 3339; [`time::retry_after`],
//!   the one reading of an HTTP `Retry-After`.
//! - [`ids`]: [`EventId`] (UUIDv7, assigned at ingress), [`IdempotencyKey`] (source-scoped native id) and
//!   [`DedupId`] (what the queue deduplicates on).
//! - [`envelope`]: [`Envelope`], the queue message, versioned and serde-tagged so that messages written by an
//!   older release still parse after a deploy; its [`Source`], [`Kind`], [`Verification`] and raw [`Body`].
//! - [`idempotency`]: the `idempotency` table: [`IdempotencyRecord`] and its status machine [`Status`].
//! - [`audit`]: the `audit` table: [`AuditEntry`] with named [`Step`]s.
//! - [`retry`]: the `retries` table: [`RetryRecord`], which is also the dead-letter record.
//! - [`webhook`]: the `webhooks` table: [`Webhook`].
//! - [`secret`]: [`Secret`], a string that `Debug` never prints.
//!
//! Every type here is backend-neutral: the embedded SQLite and the AWS backends store the same shapes.

pub mod audit;
pub mod envelope;
pub mod idempotency;
pub mod ids;
pub mod retry;
pub mod secret;
pub mod time;
pub mod webhook;

pub use audit::{AuditEntry, Step};
pub use envelope::{
    Body, Envelope, EnvelopeV1, Kind, Source, TraceContext, Verification, VerificationMethod, message_group,
};
pub use idempotency::{IdempotencyRecord, Status};
pub use ids::{DedupId, EventId, HookId, IdempotencyKey};
pub use retry::{ErrorClass, RetryRecord, RetryStatus};
pub use secret::Secret;
pub use time::Timestamp;
pub use webhook::{HookFilter, HookKind, Webhook};

/// The JSON Schema of [`Envelope`], as checked in under `docs/schema/envelope.schema.json`.
pub fn envelope_json_schema() -> String {
    let schema = schemars::schema_for!(Envelope);
    let mut text = serde_json::to_string_pretty(&schema).expect("a JSON Schema always serializes");
    text.push('\n');
    text
}
