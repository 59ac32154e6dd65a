//! Sender verification, on the raw bytes, before anything parses them. Pure functions (plus the SNS certificate
//! store), shared by the routes and by `eventfleet verify`.

pub mod github;
pub mod slack;
pub mod sns;

pub use github::SignatureError;
