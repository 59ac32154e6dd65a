//! The raw request body, with the size limit turned into a JSON 413.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};

use crate::{ApiError, AppState};

/// The request body as received. Signatures are verified on these bytes before anything parses them.
pub struct RawBody(pub Bytes);

impl FromRequest<AppState> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.config.body_limit;
        let declared = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit as u64) {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        let bytes = axum::body::to_bytes(req.into_body(), limit).await.map_err(|e| {
            // `to_bytes` fails either on the limit (a chunked body grew too large) or on a broken connection.
            if over_limit(&e) {
                ApiError::PayloadTooLarge { limit }
            } else {
                ApiError::BadRequest(format!("could not read the request body: {e}"))
            }
        })?;
        Ok(RawBody(bytes))
    }
}

/// Whether a body-read error is the length limit, anywhere in its source chain.
fn over_limit(e: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = c.source();
    }
    false
}
