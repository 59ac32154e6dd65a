//! AWS SNS message signatures: version 1 (SHA1withRSA) and 2 (SHA256withRSA), with the certificate at
//! `SigningCertURL`, after AWS's "Verifying the signatures of Amazon SNS messages".
//!
//! The certificate URL must be `https`, on a host matching `^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$`, and end
//! in `.pem`; the certificate must be valid at the (injectable) time of verification.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use eventfleet_schema::{Timestamp, VerificationMethod};
use ring::signature::{
    RSA_PKCS1_1024_8192_SHA1_FOR_LEGACY_USE_ONLY, RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
    RsaPublicKeyComponents,
};
use serde::Deserialize;
use x509_cert::der::DecodePem;

/// Why an SNS message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnsError {
    /// Not an SNS message (not JSON, missing fields, unknown type).
    #[error("malformed SNS message: {0}")]
    Malformed(String),
    /// The certificate URL breaks the rules.
    #[error("SigningCertURL rejected: {0}")]
    CertUrl(String),
    /// The certificate could not be read or parsed.
    #[error("signing certificate unusable: {0}")]
    Cert(String),
    /// The certificate could not be fetched (network, timeout): transient.
    #[error("signing certificate could not be fetched: {0}")]
    CertFetch(String),
    /// The certificate is not valid at the time of verification.
    #[error("signing certificate is not valid at {at} (valid {not_before} to {not_after})")]
    CertExpired {
        /// The time of verification.
        at: Timestamp,
        /// Start of validity.
        not_before: Timestamp,
        /// End of validity.
        not_after: Timestamp,
    },
    /// The signature does not match the message.
    #[error("signature does not match the message")]
    BadSignature,
    /// `SubscribeURL` fails the host rule: never fetched.
    #[error("SubscribeURL rejected: {0}")]
    SubscribeUrl(String),
}

/// The three message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum MessageType {
    /// A published message.
    Notification,
    /// A new subscription to confirm.
    SubscriptionConfirmation,
    /// A subscription was removed.
    UnsubscribeConfirmation,
}

/// An SNS HTTP(S) delivery.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SnsMessage {
    /// The type.
    #[serde(rename = "Type")]
    pub kind: MessageType,
    /// Unique per message: the idempotency key.
    pub message_id: String,
    /// The topic.
    pub topic_arn: String,
    /// The payload.
    pub message: String,
    /// Notifications only, optional.
    #[serde(default)]
    pub subject: Option<String>,
    /// When SNS sent it.
    pub timestamp: String,
    /// `1` or `2`.
    pub signature_version: String,
    /// Base64.
    pub signature: String,
    /// Where the certificate is.
    #[serde(rename = "SigningCertURL")]
    pub signing_cert_url: String,
    /// Confirmations only.
    #[serde(default, rename = "SubscribeURL")]
    pub subscribe_url: Option<String>,
    /// Confirmations only.
    #[serde(default)]
    pub token: Option<String>,
}

impl SnsMessage {
    /// Parses a delivery body.
    pub fn parse(body: &[u8]) -> Result<Self, SnsError> {
        serde_json::from_slice(body).map_err(|e| SnsError::Malformed(e.to_string()))
    }

    /// Whether a body looks like an SNS delivery (for hook URLs that receive SNS).
    pub fn looks_like_sns(body: &[u8]) -> bool {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Probe {
            #[serde(rename = "Type")]
            _kind: String,
            #[serde(rename = "SigningCertURL")]
            _cert: String,
        }
        serde_json::from_slice::<Probe>(body).is_ok()
    }

    /// The canonical string AWS signs for this message type.
    pub fn string_to_sign(&self) -> Result<String, SnsError> {
        let mut out = String::new();
        let mut field = |name: &str, value: &str| {
            out.push_str(name);
            out.push('\n');
            out.push_str(value);
            out.push('\n');
        };
        match self.kind {
            MessageType::Notification => {
                field("Message", &self.message);
                field("MessageId", &self.message_id);
                if let Some(subject) = &self.subject {
                    field("Subject", subject);
                }
                field("Timestamp", &self.timestamp);
                field("TopicArn", &self.topic_arn);
                field("Type", "Notification");
            }
            MessageType::SubscriptionConfirmation | MessageType::UnsubscribeConfirmation => {
                let missing = |f: &str| SnsError::Malformed(format!("{f} missing from a confirmation"));
                field("Message", &self.message);
                field("MessageId", &self.message_id);
                field("SubscribeURL", self.subscribe_url.as_deref().ok_or_else(|| missing("SubscribeURL"))?);
                field("Timestamp", &self.timestamp);
                field("Token", self.token.as_deref().ok_or_else(|| missing("Token"))?);
                field("TopicArn", &self.topic_arn);
                let kind = match self.kind {
                    MessageType::SubscriptionConfirmation => "SubscriptionConfirmation",
                    _ => "UnsubscribeConfirmation",
                };
                field("Type", kind);
            }
        }
        Ok(out)
    }

    /// Verifies the signature with `cert` at `now`; returns the method used.
    pub fn verify(&self, cert: &SigningCert, now: Timestamp) -> Result<VerificationMethod, SnsError> {
        cert.check_validity(now)?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(self.signature.trim())
            .map_err(|_| SnsError::BadSignature)?;
        let text = self.string_to_sign()?;
        // ring's RSA (an order of magnitude faster than the pure-Rust `rsa` crate's, which was about a twentieth of
        // the fleet's CPU in the load mix); keys from 1024 bits, as SNS's certificates have been (2048 today).
        let (algorithm, method) = match self.signature_version.as_str() {
            "1" => (&RSA_PKCS1_1024_8192_SHA1_FOR_LEGACY_USE_ONLY, VerificationMethod::SnsV1),
            "2" => (&RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY, VerificationMethod::SnsV2),
            other => return Err(SnsError::Malformed(format!("unknown SignatureVersion {other:?}"))),
        };
        cert.key.verify(algorithm, text.as_bytes(), &signature).map(|()| method).map_err(|_| SnsError::BadSignature)
    }
}

/// The RSA key sizes verified (within ring's `RSA_PKCS1_1024_8192_*`, which count whole bytes): SNS's
/// certificates had 1024-bit keys once and have 2048-bit ones now.
const MIN_KEY_BITS: usize = 1024;
const MAX_KEY_BITS: usize = 8192;

/// `rsaEncryption` (RFC 8017), the algorithm of an RSA certificate's subject public key.
const RSA_ENCRYPTION: x509_cert::der::asn1::ObjectIdentifier =
    x509_cert::der::asn1::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// Whether a host is an SNS endpoint: `sns.<region>.amazonaws.com` or `.amazonaws.com.cn`.
pub fn is_sns_host(host: &str) -> bool {
    let rest = host.strip_suffix(".amazonaws.com").or_else(|| host.strip_suffix(".amazonaws.com.cn"));
    let Some(region) = rest.and_then(|r| r.strip_prefix("sns.")) else {
        return false;
    };
    !region.is_empty() && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Checks a `SigningCertURL`; returns the parsed URL.
pub fn check_cert_url(raw: &str) -> Result<url::Url, SnsError> {
    let url = url::Url::parse(raw).map_err(|e| SnsError::CertUrl(format!("{raw:?} is not a URL: {e}")))?;
    if url.scheme() != "https" {
        return Err(SnsError::CertUrl("the certificate URL must be https".into()));
    }
    if !url.host_str().is_some_and(is_sns_host) || url.port().is_some() || !url.username().is_empty() {
        return Err(SnsError::CertUrl(format!("host {:?} is not an SNS endpoint", url.host_str().unwrap_or(""))));
    }
    if !url.path().ends_with(".pem") || url.query().is_some() {
        return Err(SnsError::CertUrl("the certificate URL must name a .pem file".into()));
    }
    Ok(url)
}

/// Checks a `SubscribeURL` with the same host rule; it is fetched only if this passes.
pub fn check_subscribe_url(raw: &str) -> Result<url::Url, SnsError> {
    let url = url::Url::parse(raw).map_err(|e| SnsError::SubscribeUrl(format!("not a URL: {e}")))?;
    if url.scheme() != "https" || !url.host_str().is_some_and(is_sns_host) || url.port().is_some() {
        return Err(SnsError::SubscribeUrl(format!("{raw:?} is not an https SNS endpoint")));
    }
    Ok(url)
}

/// A parsed signing certificate: its RSA key and validity.
#[derive(Debug, Clone)]
pub struct SigningCert {
    /// The RSA key's modulus and exponent, which ring verifies with.
    key: RsaPublicKeyComponents<Vec<u8>>,
    not_before: Timestamp,
    not_after: Timestamp,
}

impl SigningCert {
    /// Parses a PEM certificate.
    pub fn from_pem(pem: &[u8]) -> Result<Self, SnsError> {
        let cert = x509_cert::Certificate::from_pem(pem).map_err(|e| SnsError::Cert(e.to_string()))?;
        let tbs = &cert.tbs_certificate;
        let spki = &tbs.subject_public_key_info;
        if spki.algorithm.oid != RSA_ENCRYPTION {
            return Err(SnsError::Cert(format!("not RSA: the key's algorithm is {}", spki.algorithm.oid)));
        }
        // Read and checked here, so a certificate whose key cannot verify is refused when it is loaded (and
        // named), rather than every message signed with it failing as a bad signature.
        let der =
            spki.subject_public_key.as_bytes().ok_or_else(|| SnsError::Cert("the key is not whole bytes".into()))?;
        let key = pkcs1::RsaPublicKey::try_from(der).map_err(|e| SnsError::Cert(format!("not an RSA key: {e}")))?;
        let (n, e) = (key.modulus.as_bytes(), key.public_exponent.as_bytes());
        let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
        if !(MIN_KEY_BITS..=MAX_KEY_BITS).contains(&bits) {
            return Err(SnsError::Cert(format!(
                "an RSA key of {bits} bits; {MIN_KEY_BITS} to {MAX_KEY_BITS} are verified"
            )));
        }
        // ring's other rules for a public key: an odd modulus, an odd exponent from 3 to 2^33 - 1.
        let odd = |v: &[u8]| v.last().is_some_and(|b| b & 1 == 1);
        let exponent = (e.len() <= 5).then(|| e.iter().fold(0u64, |acc, b| acc << 8 | u64::from(*b)));
        if !odd(n) || !odd(e) || !exponent.is_some_and(|e| (3..1 << 33).contains(&e)) {
            return Err(SnsError::Cert("an RSA key with an even modulus or an exponent ring cannot use".into()));
        }
        let key = RsaPublicKeyComponents { n: n.to_vec(), e: e.to_vec() };
        let millis = |t: &x509_cert::time::Time| Timestamp::from_millis(t.to_unix_duration().as_millis() as i64);
        Ok(Self { key, not_before: millis(&tbs.validity.not_before), not_after: millis(&tbs.validity.not_after) })
    }

    /// Errs unless `now` is inside the validity period.
    pub fn check_validity(&self, now: Timestamp) -> Result<(), SnsError> {
        if now < self.not_before || now > self.not_after {
            return Err(SnsError::CertExpired { at: now, not_before: self.not_before, not_after: self.not_after });
        }
        Ok(())
    }
}

/// Where signing certificates come from: a directory (`EVENTFLEET_SNS_CERT_DIR`, files named as the URL's last
/// path segment) or HTTPS, fetched once per URL and cached for the life of the process.
pub struct CertStore {
    dir: Option<PathBuf>,
    http: reqwest::Client,
    cache: Mutex<HashMap<String, Arc<SigningCert>>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore").field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// The most certificates kept; SNS uses a handful, so a full cache means someone is probing.
const MAX_CACHED: usize = 64;

impl CertStore {
    /// A store reading `dir` when given, else fetching with a `timeout`.
    pub fn new(dir: Option<PathBuf>, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self { dir, http, cache: Mutex::new(HashMap::new()) }
    }

    /// The certificate at a checked URL.
    pub async fn get(&self, url: &url::Url) -> Result<Arc<SigningCert>, SnsError> {
        if let Some(cert) = self.cache.lock().ok().and_then(|c| c.get(url.as_str()).cloned()) {
            return Ok(cert);
        }
        let pem = match &self.dir {
            Some(dir) => {
                let name = url.path_segments().and_then(|mut s| s.next_back()).unwrap_or("");
                if name.is_empty() || name.contains("..") {
                    return Err(SnsError::CertUrl("no file name in the certificate URL".into()));
                }
                let path = dir.join(name);
                tokio::fs::read(&path)
                    .await
                    .map_err(|e| SnsError::Cert(format!("{} (EVENTFLEET_SNS_CERT_DIR): {e}", path.display())))?
            }
            None => {
                let resp = self
                    .http
                    .get(url.clone())
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .map_err(|e| SnsError::CertFetch(e.to_string()))?;
                resp.bytes().await.map_err(|e| SnsError::CertFetch(e.to_string()))?.to_vec()
            }
        };
        let cert = Arc::new(SigningCert::from_pem(&pem)?);
        if let Ok(mut cache) = self.cache.lock()
            && cache.len() < MAX_CACHED
        {
            cache.insert(url.as_str().to_owned(), cert.clone());
        }
        Ok(cert)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate with an EC key (P-256), which SNS never uses.
    const EC_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBoTCCAUegAwIBAgIUaoLVTThya4wETNB0LqqEH4oo7REwCgYIKoZIzj0EAwIw
JjEkMCIGA1UEAwwbc25zLnVzLWVhc3QtMS5hbWF6b25hd3MuY29tMB4XDTI2MTIw
NjIyMDgxMFoXDTM2MTIwMzIyMDgxMFowJjEkMCIGA1UEAwwbc25zLnVzLWVhc3Qt
MS5hbWF6b25hd3MuY29tMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE4FVrBsnU
El/6jDr9GsDnnqKmLMw0KvS32utzeLLD+xpOar55EL9U/8/xCf5vf7Y9yHljAXMw
rgzJ9EUkpNfcQKNTMFEwHQYDVR0OBBYEFPaRDyrNNhbA9FCjfOd6NBt6JcJXMB8G
A1UdIwQYMBaAFPaRDyrNNhbA9FCjfOd6NBt6JcJXMA8GA1UdEwEB/wQFMAMBAf8w
CgYIKoZIzj0EAwIDSAAwRQIhAN8ySioUv42O5AbnicK8nYmfhDuTnnUkw7JzeSCZ
6ZEuAiBBxYMGmD/Rb+aM292kClCq8vXpxelrhfEVBv8kOaFrBg==
-----END CERTIFICATE-----";

    /// A self-signed certificate with a 768-bit RSA key: below what is verified.
    const SMALL_RSA_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIB4zCCAW2gAwIBAgIUWJFSa26U/Tt9sLYrjqZbYA4coJwwDQYJKoZIhvcNAQEL
BQAwJjEkMCIGA1UEAwwbc25zLnVzLWVhc3QtMS5hbWF6b25hd3MuY29tMB4XDTI2
MTIwNjIyMzMwN1oXDTM2MTIwMzIyMzMwN1owJjEkMCIGA1UEAwwbc25zLnVzLWVh
c3QtMS5hbWF6b25hd3MuY29tMHwwDQYJKoZIhvcNAQEBBQADawAwaAJhALcglV0Y
aozDapcIHImzvMTE2aRN7iqh4NDjDhEO6RGJRg6qRx1jcsMPBvkZmSv7gCV71d4n
FcSM8MEYFDLx6K3wI9G1+1avVtYdZRSyXM1Sca5M1Ny7ZhU5hgTUOZ9rHwIDAQAB
o1MwUTAdBgNVHQ4EFgQU3nNRYPDYwBCJsxhXf90hAD5fJdMwHwYDVR0jBBgwFoAU
3nNRYPDYwBCJsxhXf90hAD5fJdMwDwYDVR0TAQH/BAUwAwEB/zANBgkqhkiG9w0B
AQsFAANhAFCwRBdZ/v2y8wu0ZZYXGabopz9LFHKk6KtaXMHIX47Ng4jbpt9u9Zrr
z3V5zNs3nueQoxC8Pz6VAOh/xYm8r8SGf4WAOIU7eG/YqaGrzXrrujewpZhHE+3n
c1r2l4BOCw==
-----END CERTIFICATE-----";

    /// The load test's 1024-bit certificate with its key's exponent made even (65538): ring cannot verify with it.
    const EVEN_EXPONENT_CERT: &str = "-----BEGIN CERTIFICATE-----
MIICFjCCAX+gAwIBAgIUQueqXoRKL3+6NplKMmBhQdpoCXMwDQYJKoZIhvcNAQEL
BQAwHDEaMBgGA1UEAwwRc25zLmFtYXpvbmF3cy5jb20wIBcNMjYxMTIyMDMyNzA3
WhgPMjEyNjEwMjkwMzI3MDdaMBwxGjAYBgNVBAMMEXNucy5hbWF6b25hd3MuY29t
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC8Yhd9ykOB6r/roZPhNJzN3Efz
UdCXgJBN268BvDiWEhwH/ekr3RUGb54I+5kL9uw3YDl/+VWe6YP2ALC726WFkSn2
055wwE4WHjLxItY/5ehV5hGEGd3/WLJxZUTnaJ3JiXOpnaxyVtkOXKSJH6L3/lL1
7R4kX2OKUxRZjkuzrQIDAQACo1MwUTAdBgNVHQ4EFgQU8uarTPi6poD5utJacvO3
VJsdo+owHwYDVR0jBBgwFoAU8uarTPi6poD5utJacvO3VJsdo+owDwYDVR0TAQH/
BAUwAwEB/zANBgkqhkiG9w0BAQsFAAOBgQCaey7teQNalrCuthArCsR74VYZAx/t
Mc21FUJUNa7jgr8v2JF1Cjz/tmK7Ptg71NG45SqTJTWBCLsuodvlMBuEvCP0n8JP
vofN2peg0y72TAluRhqHVwMTuKf1d8fbHFcADkC1jZa1KFMA8La0YXXQNgzYiBuu
f34nwxiNlClEKw==
-----END CERTIFICATE-----";

    #[test]
    fn a_certificate_without_an_rsa_key_is_refused_when_loaded() {
        let err = SigningCert::from_pem(EC_CERT.as_bytes()).unwrap_err();
        assert!(matches!(&err, SnsError::Cert(m) if m.contains("not RSA")), "{err:?}");
        let err = SigningCert::from_pem(SMALL_RSA_CERT.as_bytes()).unwrap_err();
        assert!(matches!(&err, SnsError::Cert(m) if m.contains("768 bits")), "{err:?}");
        let err = SigningCert::from_pem(EVEN_EXPONENT_CERT.as_bytes()).unwrap_err();
        assert!(matches!(&err, SnsError::Cert(m) if m.contains("exponent")), "{err:?}");
        let unchanged = include_str!("../../testdata/sns/SimpleNotificationService-eventfleet-test.pem");
        assert!(SigningCert::from_pem(unchanged.as_bytes()).is_ok(), "the same certificate as made loads");
        assert!(SigningCert::from_pem(b"not a certificate").is_err());
    }

    #[test]
    fn host_rule() {
        for ok in ["sns.us-west-2.amazonaws.com", "sns.cn-north-1.amazonaws.com.cn", "sns.eu-central-1.amazonaws.com"] {
            assert!(is_sns_host(ok), "{ok}");
        }
        for bad in [
            "sns.amazonaws.com",
            "evil.com",
            "sns.us-west-2.amazonaws.com.evil.com",
            "xsns.us-west-2.amazonaws.com",
            "sns.US-WEST-2.amazonaws.com",
            "sns.us_west.amazonaws.com",
            "s3.us-west-2.amazonaws.com",
        ] {
            assert!(!is_sns_host(bad), "{bad}");
        }
    }

    #[test]
    fn cert_url_rules() {
        assert!(check_cert_url("https://sns.us-west-2.amazonaws.com/SimpleNotificationService-abc.pem").is_ok());
        for bad in [
            "http://sns.us-west-2.amazonaws.com/x.pem",
            "https://evil.example/x.pem",
            "https://sns.us-west-2.amazonaws.com/x.txt",
            "https://sns.us-west-2.amazonaws.com:8443/x.pem",
            "https://sns.us-west-2.amazonaws.com/x.pem?y=1",
            "https://user@sns.us-west-2.amazonaws.com/x.pem",
            "not a url",
        ] {
            assert!(matches!(check_cert_url(bad), Err(SnsError::CertUrl(_))), "{bad}");
        }
        assert!(check_subscribe_url("https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription").is_ok());
        assert!(check_subscribe_url("https://169.254.169.254/latest/meta-data").is_err());
        assert!(check_subscribe_url("http://sns.us-west-2.amazonaws.com/").is_err());
    }
}
