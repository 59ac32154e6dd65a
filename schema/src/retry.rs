//! The `retries` table: attempts of an event that failed at least once. A record with status `DEAD` is the
//! dead-letter record, with the reason.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{EventId, IdempotencyKey, Timestamp};

/// Whether another attempt can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Timeouts, 5xx, rate limits: try again later.
    Retryable,
    /// `channel_not_found`, invalid payload: another attempt gives the same answer.
    Permanent,
}

impl ErrorClass {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Retryable => "retryable",
            ErrorClass::Permanent => "permanent",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "retryable" => Some(Self::Retryable),
            "permanent" => Some(Self::Permanent),
            _ => None,
        }
    }
}

/// The state of a retry record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RetryStatus {
    /// More attempts will come.
    Active,
    /// Dead-lettered.
    Dead,
    /// A later attempt (or a replay) succeeded.
    Resolved,
}

impl RetryStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryStatus::Active => "ACTIVE",
            RetryStatus::Dead => "DEAD",
            RetryStatus::Resolved => "RESOLVED",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "ACTIVE" => Some(Self::Active),
            "DEAD" => Some(Self::Dead),
            "RESOLVED" => Some(Self::Resolved),
            _ => None,
        }
    }
}

/// A row of the `retries` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RetryRecord {
    /// The event.
    pub event_id: EventId,
    /// Its key, to find the idempotency record.
    pub idempotency_key: IdempotencyKey,
    /// Attempts made so far.
    pub attempts: u32,
    /// The latest error, as text for operators.
    pub last_error: String,
    /// The latest error's class.
    pub error_class: ErrorClass,
    /// When the next attempt is due (`ACTIVE` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<Timestamp>,
    /// Active, dead or resolved.
    pub status: RetryStatus,
    /// Why it was dead-lettered (`DEAD` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_reason: Option<String>,
    /// Last change.
    pub updated_at: Timestamp,
    /// When the record expires.
    pub expires_at: Timestamp,
}
