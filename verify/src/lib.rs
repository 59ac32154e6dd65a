//! Sender verification, on the raw bytes, before anything parses them: pure functions plus the SNS certificate
//! store. The ingress verifies with it, the workers check SNS URLs with it, `eventfleet verify` explains a
//! refusal with it.
//!
//! # Layout
//!
//! - [`github`]: `X-Hub-Signature-256` and the HMAC-SHA256 check every HMAC sender uses.
//! - [`slack`]: Slack `v0` request signatures and their 300-second window.
//! - [`sns`]: SNS messages, their signatures (versions 1 and 2), the certificate and subscribe URL rules, and
//!   [`sns::CertStore`].
//! - `sign` (feature `sign`): signing the way each sender does, for tests and the load generator. The
//!   production binary is built without it.

pub mod github;
#[cfg(feature = "sign")]
pub mod sign;
pub mod slack;
pub mod sns;

pub use github::SignatureError;
