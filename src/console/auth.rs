//! Who is at the console. Three ways in, chosen at start-up:
//!
//! - **Token**: `EVENTFLEET_CONSOLE_TOKEN`, compared in constant time at `POST /login` and exchanged for a
//!   session cookie: `name.expiry.mac`, HMAC-SHA256 under a key derived from the token (so every console replica
//!   with the same token accepts it, and changing the token ends every session). HttpOnly, SameSite=Strict.
//! - **ALB OIDC**: behind an ALB whose listener rule runs `authenticate-oidc`, the ALB signs in the operator and
//!   forwards their claims in `x-amzn-oidc-data`; the operator is the token's `email` (else `name`, `sub`), or
//!   `x-amzn-oidc-identity`. The console's security group admits only the ALB, which overwrites these headers.
//! - **Loopback**: bound to 127.0.0.1 without a token, whoever can reach the port is the machine's user.

use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The session cookie.
pub const SESSION_COOKIE: &str = "ef_session";

/// How long a session lasts: a night's shift.
pub const SESSION_SECS: i64 = 12 * 3600;

/// How operators are known.
#[derive(Clone)]
pub enum Access {
    /// A shared token, exchanged for a session cookie.
    Token {
        /// sha256 of the token: what a login is compared with.
        digest: [u8; 32],
        /// The key that signs session cookies.
        session_key: [u8; 32],
    },
    /// The ALB's `authenticate-oidc` headers.
    AlbOidc,
    /// Loopback without a token: this operator.
    Loopback {
        /// The name audit lines carry.
        operator: String,
    },
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Access::Token { .. } => "Access::Token",
            Access::AlbOidc => "Access::AlbOidc",
            Access::Loopback { .. } => "Access::Loopback",
        })
    }
}

/// Why there is no operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// Not logged in (or the session expired): the login form.
    NoSession,
    /// Behind the ALB, a request without its identity headers (it did not come through the ALB's rule).
    NoAlbIdentity,
}

impl Access {
    /// The access for a shared token.
    pub fn token(token: &str) -> Self {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(token.as_bytes()).expect("HMAC takes any key length");
        mac.update(b"eventfleet-console-session-v1");
        Access::Token { digest, session_key: mac.finalize().into_bytes().into() }
    }

    /// Whether a login with this token is right. Both sides are hashed first, so the comparison takes the same
    /// time whatever the lengths.
    pub fn token_matches(&self, given: &str) -> bool {
        match self {
            Access::Token { digest, .. } => {
                let given: [u8; 32] = Sha256::digest(given.as_bytes()).into();
                bool::from(given.ct_eq(digest))
            }
            _ => false,
        }
    }

    /// The operator of a request.
    pub fn operator(&self, headers: &HeaderMap, now_secs: i64) -> Result<String, Denied> {
        match self {
            Access::Loopback { operator } => Ok(operator.clone()),
            Access::AlbOidc => alb_operator(headers).ok_or(Denied::NoAlbIdentity),
            Access::Token { session_key, .. } => cookie(headers, SESSION_COOKIE)
                .and_then(|value| verify_session(session_key, value, now_secs))
                .ok_or(Denied::NoSession),
        }
    }

    /// A session cookie's value for `operator`, valid until `expires` (Unix seconds).
    pub fn session(&self, operator: &str, expires: i64) -> Option<String> {
        let Access::Token { session_key, .. } = self else { return None };
        let payload = format!("{}.{expires}", URL_SAFE_NO_PAD.encode(operator));
        Some(format!("{payload}.{}", hex::encode(sign(session_key, &payload))))
    }
}

fn sign(key: &[u8; 32], payload: &str) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(payload.as_bytes());
    mac.finalize().into_bytes().into()
}

fn verify_session(key: &[u8; 32], value: &str, now_secs: i64) -> Option<String> {
    let (payload, mac) = value.rsplit_once('.')?;
    let mac = hex::decode(mac).ok()?;
    let mut check = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    check.update(payload.as_bytes());
    check.verify_slice(&mac).ok()?;
    let (name, expires) = payload.split_once('.')?;
    if expires.parse::<i64>().ok()? <= now_secs {
        return None;
    }
    String::from_utf8(URL_SAFE_NO_PAD.decode(name).ok()?).ok()
}

/// A cookie of the request, by name.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The operator the ALB signed in: a claim of `x-amzn-oidc-data` (a JWT; its payload is read, the ALB having
/// replaced whatever the client sent), else `x-amzn-oidc-identity` (the subject).
fn alb_operator(headers: &HeaderMap) -> Option<String> {
    let claims = headers
        .get("x-amzn-oidc-data")
        .and_then(|v| v.to_str().ok())
        .and_then(|jwt| jwt.split('.').nth(1))
        // The ALB pads its base64url; accept either.
        .and_then(|payload| {
            let payload = payload.trim_end_matches('=').replace('-', "+").replace('_', "/");
            STANDARD_NO_PAD.decode(payload).ok()
        })
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok());
    let claim = |name: &str| {
        claims.as_ref().and_then(|c| c.get(name)).and_then(|v| v.as_str()).map(str::trim).filter(|s| !s.is_empty())
    };
    let identity =
        headers.get("x-amzn-oidc-identity").and_then(|v| v.to_str().ok()).map(str::trim).filter(|s| !s.is_empty());
    claim("email").or_else(|| claim("name")).or_else(|| claim("sub")).or(identity).map(clean_name)
}

/// An operator's name as audit lines carry it: printable, at most 64 characters.
pub fn clean_name(name: &str) -> String {
    name.chars().filter(|c| !c.is_control()).take(64).collect::<String>().trim().to_owned()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("cookie", HeaderValue::from_str(&format!("other=1; {SESSION_COOKIE}={value}")).unwrap());
        h
    }

    #[test]
    fn a_session_is_the_tokens_own_and_expires() {
        let access = Access::token("a-long-console-token");
        assert!(access.token_matches("a-long-console-token"));
        assert!(!access.token_matches("a-long-console-tokeN"));
        assert!(!access.token_matches(""));
        let session = access.session("alice", 1_000).unwrap();
        assert_eq!(access.operator(&with_cookie(&session), 999), Ok("alice".to_owned()));
        assert_eq!(access.operator(&with_cookie(&session), 1_000), Err(Denied::NoSession), "expired");
        let other = Access::token("another-console-token");
        assert_eq!(other.operator(&with_cookie(&session), 999), Err(Denied::NoSession), "another token's");
        // A forged name keeps the old MAC: refused.
        let forged = session.replacen(&URL_SAFE_NO_PAD.encode("alice"), &URL_SAFE_NO_PAD.encode("mallory"), 1);
        assert_eq!(access.operator(&with_cookie(&forged), 999), Err(Denied::NoSession));
        assert_eq!(access.operator(&HeaderMap::new(), 999), Err(Denied::NoSession));
    }

    #[test]
    fn the_alb_operator_is_the_email_claim_else_the_identity() {
        let payload = URL_SAFE_NO_PAD.encode(r#"{"sub":"1234","email":"bob@example.com","exp":1}"#);
        let mut h = HeaderMap::new();
        h.insert("x-amzn-oidc-data", HeaderValue::from_str(&format!("e30.{payload}==.sig")).unwrap());
        h.insert("x-amzn-oidc-identity", HeaderValue::from_static("1234"));
        assert_eq!(Access::AlbOidc.operator(&h, 0), Ok("bob@example.com".to_owned()));
        h.remove("x-amzn-oidc-data");
        assert_eq!(Access::AlbOidc.operator(&h, 0), Ok("1234".to_owned()));
        assert_eq!(Access::AlbOidc.operator(&HeaderMap::new(), 0), Err(Denied::NoAlbIdentity));
    }
}
