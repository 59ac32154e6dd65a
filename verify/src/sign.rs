//! Signing requests the way their senders do (feature `sign`): the tests and the load generator sign their
//! traffic with these, and their fleets trust a test certificate through `EVENTFLEET_SNS_CERT_DIR`. Production
//! never signs, so the binary is built without this module.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::sns::{SnsError, SnsMessage};

/// The hex HMAC-SHA256 of the concatenation of `parts`.
pub fn hmac_sha256_hex(secret: &[u8], parts: &[&[u8]]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    hex::encode(mac.finalize().into_bytes())
}

/// The `X-Hub-Signature-256` value for a body: `sha256=<hex>`.
pub fn hub_signature_256(secret: &[u8], body: &[u8]) -> String {
    format!("sha256={}", hmac_sha256_hex(secret, &[body]))
}

/// The `X-Slack-Signature` value for a body sent at `timestamp` (Unix seconds): `v0=<hex>`.
pub fn slack(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    format!("v0={}", hmac_sha256_hex(secret, &[b"v0:", ts.as_bytes(), b":", body]))
}

/// Signs an SNS `message` in place (its `Signature`, with `SignatureVersion` as set) with a PKCS#8 PEM RSA key,
/// the way SNS does.
pub fn sns(message: &mut serde_json::Value, private_key_pem: &str) -> Result<(), SnsError> {
    use rsa::pkcs1v15::SigningKey;
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::signature::{SignatureEncoding, Signer};

    let key = rsa::RsaPrivateKey::from_pkcs8_pem(private_key_pem).map_err(|e| SnsError::Cert(e.to_string()))?;
    message["Signature"] = serde_json::Value::String(String::new());
    let parsed: SnsMessage = serde_json::from_value(message.clone()).map_err(|e| SnsError::Malformed(e.to_string()))?;
    let text = parsed.string_to_sign()?;
    let signature = match parsed.signature_version.as_str() {
        "1" => SigningKey::<sha1::Sha1>::new(key).sign(text.as_bytes()).to_vec(),
        "2" => SigningKey::<sha2::Sha256>::new(key).sign(text.as_bytes()).to_vec(),
        other => return Err(SnsError::Malformed(format!("unknown SignatureVersion {other:?}"))),
    };
    message["Signature"] = serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(signature));
    Ok(())
}
