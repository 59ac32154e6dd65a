//! Slack request signatures (`v0`): `X-Slack-Signature: v0=hex(HMAC-SHA256(secret, "v0:{timestamp}:{body}"))`
//! with `X-Slack-Request-Timestamp` inside a 300-second window.

use std::time::Duration;

use eventfleet_schema::Timestamp;

use crate::github::verify_hmac_sha256;

/// Slack's replay window.
pub const WINDOW: Duration = Duration::from_secs(300);

/// Why a Slack request did not verify. Safe to show a caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlackSignatureError {
    /// No `X-Slack-Request-Timestamp`.
    #[error("missing X-Slack-Request-Timestamp header")]
    MissingTimestamp,
    /// Not whole Unix seconds.
    #[error("malformed X-Slack-Request-Timestamp header")]
    MalformedTimestamp,
    /// Outside the window: a replay, or a badly wrong clock.
    #[error("request timestamp is {0} s away from now (limit 300 s)")]
    Stale(i64),
    /// No `X-Slack-Signature`.
    #[error("missing X-Slack-Signature header")]
    MissingSignature,
    /// Not `v0=<hex>`.
    #[error("malformed X-Slack-Signature header")]
    MalformedSignature,
    /// The signature does not match.
    #[error("signature does not match the request body")]
    Mismatch,
}

/// Verifies a Slack request at `now`.
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: Timestamp,
) -> Result<(), SlackSignatureError> {
    let ts_text = timestamp.ok_or(SlackSignatureError::MissingTimestamp)?.trim();
    let ts: i64 = ts_text.parse().map_err(|_| SlackSignatureError::MalformedTimestamp)?;
    let skew = now.as_secs().saturating_sub(ts);
    if skew.unsigned_abs() > WINDOW.as_secs() {
        return Err(SlackSignatureError::Stale(skew));
    }
    let hex_sig = signature
        .ok_or(SlackSignatureError::MissingSignature)?
        .trim()
        .strip_prefix("v0=")
        .ok_or(SlackSignatureError::MalformedSignature)?;
    let tag = hex::decode(hex_sig).map_err(|_| SlackSignatureError::MalformedSignature)?;
    verify_hmac_sha256(secret, &[b"v0:", ts_text.as_bytes(), b":", body], &tag)
        .map_err(|_| SlackSignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of Slack's "Verifying requests from Slack" documentation.
    const SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";
    const TS: &str = "1531420618";
    const SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V\
&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=\
&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN\
&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_millis(secs * 1000)
    }

    #[test]
    fn documented_example_verifies_at_its_time() {
        assert_eq!(verify(SECRET, Some(TS), Some(SIG), BODY.as_bytes(), at(1_531_420_618)), Ok(()));
        assert_eq!(verify(SECRET, Some(TS), Some(SIG), BODY.as_bytes(), at(1_531_420_618 + 299)), Ok(()));
        assert_eq!(crate::sign::slack(SECRET, 1_531_420_618, BODY.as_bytes()), SIG);
    }

    #[test]
    fn tampered_stale_or_malformed_requests_fail() {
        let now = at(1_531_420_618);
        let tampered = BODY.replace("roadrunner", "coyote");
        assert_eq!(verify(SECRET, Some(TS), Some(SIG), tampered.as_bytes(), now), Err(SlackSignatureError::Mismatch));
        assert_eq!(verify(b"other", Some(TS), Some(SIG), BODY.as_bytes(), now), Err(SlackSignatureError::Mismatch));
        assert_eq!(
            verify(SECRET, Some("1531420619"), Some(SIG), BODY.as_bytes(), now),
            Err(SlackSignatureError::Mismatch),
            "the timestamp is signed"
        );
        assert_eq!(
            verify(SECRET, Some(TS), Some(SIG), BODY.as_bytes(), at(1_531_420_618 + 301)),
            Err(SlackSignatureError::Stale(301))
        );
        assert_eq!(
            verify(SECRET, Some(TS), Some(SIG), BODY.as_bytes(), at(1_531_420_618 - 400)),
            Err(SlackSignatureError::Stale(-400))
        );
        assert_eq!(verify(SECRET, None, Some(SIG), BODY.as_bytes(), now), Err(SlackSignatureError::MissingTimestamp));
        assert_eq!(
            verify(SECRET, Some("soon"), Some(SIG), BODY.as_bytes(), now),
            Err(SlackSignatureError::MalformedTimestamp)
        );
        assert_eq!(verify(SECRET, Some(TS), None, BODY.as_bytes(), now), Err(SlackSignatureError::MissingSignature));
        assert_eq!(
            verify(SECRET, Some(TS), Some("v1=abc"), BODY.as_bytes(), now),
            Err(SlackSignatureError::MalformedSignature)
        );
        assert_eq!(
            verify(SECRET, Some(TS), Some("v0=xyz"), BODY.as_bytes(), now),
            Err(SlackSignatureError::MalformedSignature)
        );
    }
}
