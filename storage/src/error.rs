//! The error every storage port returns.

use eventfleet_schema::Status;

/// Why a storage operation failed. Backend detail is flattened to text so no backend type leaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The backend did not answer or could not commit (locked, I/O, throttled, network). Try again later; a
    /// caller at the edge answers 503.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The named thing does not exist (or has expired).
    #[error("not found: {0}")]
    NotFound(String),
    /// An idempotency record was asked to make a move the status machine forbids.
    #[error("illegal idempotency transition {from} -> {to} for key {key}")]
    IllegalTransition {
        /// The key.
        key: String,
        /// Its status.
        from: Status,
        /// The requested status.
        to: Status,
    },
    /// A receipt handle that is not (or no longer) the current one for its message: the visibility timeout
    /// ran out and another consumer received the message, or it was deleted.
    #[error("receipt handle is stale or unknown")]
    StaleReceipt,
    /// The thing already exists.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A request the backend cannot carry out as asked (an argument out of range).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A message is larger than the queue takes (SQS: 256 KiB with its attributes). Sending it again fails again.
    #[error("message of {size} bytes is over the queue's limit of {limit} bytes")]
    TooLarge {
        /// The message's size.
        size: usize,
        /// The queue's limit.
        limit: usize,
    },
    /// A stored record did not decode: a bug or a foreign writer.
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

impl StorageError {
    /// Whether trying the same operation again later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StorageError::Unavailable(_))
    }
}
