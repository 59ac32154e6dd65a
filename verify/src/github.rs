//! GitHub-style `X-Hub-Signature-256` and the HMAC-SHA256 primitives every HMAC sender uses, compared in
//! constant time.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Why a signature did not verify. The text is safe to return to a caller: it never contains the secret or the
/// expected value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No signature header.
    #[error("missing signature header {0}")]
    Missing(&'static str),
    /// The header is not of the documented form.
    #[error("malformed signature header {0}")]
    Malformed(&'static str),
    /// The signature does not match the body.
    #[error("signature does not match the request body")]
    Mismatch,
}

/// Verifies a GitHub-style `X-Hub-Signature-256: sha256=<hex>` over the raw body.
pub fn verify_hub_signature_256(secret: &[u8], body: &[u8], header: Option<&str>) -> Result<(), SignatureError> {
    const NAME: &str = "X-Hub-Signature-256";
    let header = header.ok_or(SignatureError::Missing(NAME))?;
    let hex_sig = header.trim().strip_prefix("sha256=").ok_or(SignatureError::Malformed(NAME))?;
    let expected = hex::decode(hex_sig).map_err(|_| SignatureError::Malformed(NAME))?;
    verify_hmac_sha256(secret, &[body], &expected)
}

/// Verifies an HMAC-SHA256 tag over the concatenation of `parts` (constant-time comparison).
pub fn verify_hmac_sha256(secret: &[u8], parts: &[&[u8]], tag: &[u8]) -> Result<(), SignatureError> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    for part in parts {
        mac.update(part);
    }
    mac.verify_slice(tag).map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of GitHub's "Validating webhook deliveries" documentation.
    #[test]
    fn github_documented_example_verifies_and_tampering_fails() {
        let secret = b"It's a Secret to Everybody";
        let body = b"Hello, World!";
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(verify_hub_signature_256(secret, body, Some(header)), Ok(()));
        assert_eq!(verify_hub_signature_256(secret, b"Hello, World?", Some(header)), Err(SignatureError::Mismatch));
        assert_eq!(verify_hub_signature_256(b"wrong", body, Some(header)), Err(SignatureError::Mismatch));
        assert!(matches!(verify_hub_signature_256(secret, body, None), Err(SignatureError::Missing(_))));
        assert!(matches!(verify_hub_signature_256(secret, body, Some("sha1=abc")), Err(SignatureError::Malformed(_))));
        assert!(matches!(verify_hub_signature_256(secret, body, Some("sha256=zz")), Err(SignatureError::Malformed(_))));
        assert_eq!(crate::sign::hub_signature_256(secret, body), header);
    }
}
