//! Rejections: each a status and a JSON body `{"error": "<code>", "message": "<human text>"}`.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use eventfleet_storage::StorageError;

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed body or headers: 400.
    #[error("{0}")]
    BadRequest(String),
    /// Missing or bad signature: 401.
    #[error("{0}")]
    Unauthorized(String),
    /// Authenticated but not allowed (SNS topic not on the allow-list): 403.
    #[error("{0}")]
    Forbidden(String),
    /// Unknown or disabled hook, unknown route: 404.
    #[error("{0}")]
    NotFound(String),
    /// Body over the limit: 413.
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit.
        limit: usize,
    },
    /// Wrong content type: 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Over a rate limit: 429 with `Retry-After`.
    #[error("rate limit exceeded: {0}")]
    RateLimited(String, Duration),
    /// The backend could not make the event durable in time: 503 with `Retry-After`, so the sender retries.
    #[error("{0}")]
    Unavailable(String),
    /// A bug: 500, with detail only in the log.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// The status code.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RateLimited(..) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::RateLimited(..) => "rate_limited",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl From<StorageError> for ApiError {
    /// Any storage failure on the accept path is a 503 (the sender must retry, and nothing was acknowledged),
    /// except an event too large for the queue (413) or one whose content it refuses (400).
    fn from(e: StorageError) -> Self {
        // The one storage refusal a retry cannot fix: the event is larger than the queue takes.
        if let StorageError::TooLarge { limit, .. } = e {
            tracing::info!(error = %e, "event too large for the queue");
            return ApiError::PayloadTooLarge { limit };
        }
        // The queue refused this event's content (SQS: a sender fault): retrying the same bytes cannot succeed.
        if let StorageError::Invalid(detail) = &e {
            tracing::warn!(error = %e, "the queue refused the event");
            return ApiError::BadRequest(format!("the queue refused this event: {detail}"));
        }
        tracing::warn!(error = %e, "storage error on the request path");
        ApiError::Unavailable("the event store is unavailable; retry later".into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(%detail, "internal error");
        }
        let status = self.status();
        let body = Json(serde_json::json!({ "error": self.code(), "message": self.to_string() }));
        let mut response = (status, body).into_response();
        let retry_after = match &self {
            ApiError::RateLimited(_, after) => Some(after.as_secs().max(1)),
            ApiError::Unavailable(_) => Some(1),
            _ => None,
        };
        if let Some(secs) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_errors_map_to_what_a_retry_can_fix() {
        let status = |e: StorageError| ApiError::from(e).status();
        assert_eq!(status(StorageError::unavailable("down")), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status(StorageError::TooLarge { size: 300_000, limit: 262_144 }), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(status(StorageError::Invalid("InvalidMessageContents".into())), StatusCode::BAD_REQUEST);
    }
}
