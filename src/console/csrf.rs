//! CSRF protection, by double submit: every response that finds no `ef_csrf` cookie sets one (random,
//! HttpOnly, SameSite=Strict), pages put its value in every form, and [`Form`], the only way a handler reads a
//! POST, refuses a body whose `csrf` field (or `X-CSRF-Token` header) is not the cookie's value. Another site can
//! neither read the cookie nor send it (SameSite), so it cannot forge the pair.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::auth::cookie;

/// The cookie.
pub const CSRF_COOKIE: &str = "ef_csrf";

/// The request's CSRF token (its cookie's, or the one this response sets), for pages to put in their forms.
#[derive(Debug, Clone)]
pub struct CsrfToken(pub String);

/// Gives every request a [`CsrfToken`], setting the cookie when the request had none.
pub async fn issue(mut request: Request, next: Next) -> Response {
    let existing = cookie(request.headers(), CSRF_COOKIE).filter(|v| v.len() == 64).map(str::to_owned);
    let fresh = existing.is_none();
    let token = existing.unwrap_or_else(|| hex::encode(rand::random::<[u8; 32]>()));
    let secure = super::is_https(request.headers());
    request.extensions_mut().insert(CsrfToken(token.clone()));
    let mut response = next.run(request).await;
    if fresh {
        let secure = if secure { "; Secure" } else { "" };
        let value = format!("{CSRF_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}");
        if let Ok(v) = HeaderValue::from_str(&value) {
            response.headers_mut().append(SET_COOKIE, v);
        }
    }
    response
}

/// The fields of a form POST whose CSRF token matched. Repeated fields (`ids`) keep every value.
#[derive(Debug, Clone, Default)]
pub struct Form(pub Vec<(String, String)>);

impl Form {
    /// The first value of a field, trimmed; `None` when absent or blank.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim()).filter(|v| !v.is_empty())
    }

    /// Every non-blank value of a field.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0.iter().filter(|(k, v)| k == name && !v.trim().is_empty()).map(|(_, v)| v.trim().to_owned()).collect()
    }
}

/// A refused form.
#[derive(Debug)]
pub enum FormRejection {
    /// No CSRF token, or not the cookie's.
    Csrf,
    /// Larger than a console form can be.
    TooLarge,
}

impl IntoResponse for FormRejection {
    fn into_response(self) -> Response {
        match self {
            FormRejection::Csrf => (
                StatusCode::FORBIDDEN,
                "refused: this form's CSRF token is missing or stale; reload the page and try again",
            )
                .into_response(),
            FormRejection::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "form too large").into_response(),
        }
    }
}

/// A console form is small; a selection of a few thousand dead-letter ids fits.
const FORM_LIMIT: usize = 1024 * 1024;

impl<S: Send + Sync> FromRequest<S> for Form {
    type Rejection = FormRejection;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let expected = cookie(request.headers(), CSRF_COOKIE).map(str::to_owned);
        let header = request.headers().get("x-csrf-token").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body: Bytes =
            axum::body::to_bytes(request.into_body(), FORM_LIMIT).await.map_err(|_| FormRejection::TooLarge)?;
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
        let given = header.or_else(|| pairs.iter().find(|(k, _)| k == "csrf").map(|(_, v)| v.clone()));
        match (expected, given) {
            (Some(expected), Some(given)) if bool::from(expected.as_bytes().ct_eq(given.as_bytes())) => Ok(Form(pairs)),
            _ => Err(FormRejection::Csrf),
        }
    }
}
