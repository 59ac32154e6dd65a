//! The error every storage port returns.

use std::sync::Arc;

use eventfleet_schema::Status;

/// The backend's own error behind an [`StorageError::Unavailable`]: shared, because one failed batch answers
/// every caller in it.
pub type Source = Arc<dyn std::error::Error + Send + Sync>;

/// Why a storage operation failed. No backend type is named here; a backend's error is kept as the source.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The backend did not answer or could not commit (locked, I/O, throttled, network). Try again later; a
    /// caller at the edge answers 503.
    #[error("storage unavailable: {message}")]
    Unavailable {
        /// What failed, with the backend's error text.
        message: String,
        /// The backend's error (an SDK error, a SQLite error), when there was one.
        #[source]
        source: Option<Source>,
    },
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
        matches!(self, StorageError::Unavailable { .. })
    }

    /// The backend's own error, to inspect or downcast (`source()` is the shared handle around it, which prints
    /// the same).
    pub fn backend(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        match self {
            StorageError::Unavailable { source: Some(source), .. } => Some(&**source),
            _ => None,
        }
    }

    /// Unavailable, for a reason of our own (a batcher stopped, keys left unprocessed).
    pub fn unavailable(message: impl Into<String>) -> Self {
        StorageError::Unavailable { message: message.into(), source: None }
    }

    /// Unavailable because of the backend's error `source` while doing `what`.
    pub fn unavailable_from(
        what: impl std::fmt::Display,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StorageError::Unavailable { message: format!("{what}: {source}"), source: Some(Arc::new(source)) }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::StorageError;

    #[test]
    fn an_unavailable_store_keeps_the_backend_error_as_its_source() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "read-only file system");
        let e = StorageError::unavailable_from("open events.db", io);
        assert_eq!(e.to_string(), "storage unavailable: open events.db: read-only file system");
        assert_eq!(e.source().expect("a source").to_string(), "read-only file system");
        let io = e.backend().and_then(|b| b.downcast_ref::<std::io::Error>()).expect("the io::Error itself");
        assert_eq!(io.kind(), std::io::ErrorKind::PermissionDenied);
        assert!(e.is_retryable());
        assert!(StorageError::unavailable("batcher stopped").source().is_none());
    }
}
