//! HTTP destinations: routes (`EVENTFLEET_ROUTES_FILE`) that forward verified, deduplicated events to the team's
//! own services, signed the Standard Webhooks way (`webhook-id` = the event id, `webhook-timestamp`,
//! `webhook-signature: v1,<base64 HMAC-SHA256>`). eventfleet keeps what it does for every event (ordering by
//! group, retries, dead letters, replay); the destination only answers a signed POST.
//!
//! - [`routes`]: the file, its validation, and matching an event.
//! - [`deliver`]: one delivery and its answer: 2xx succeeds; 408, 429 (with `Retry-After`), 5xx, a timeout or a
//!   connection failure retry; any other status is permanent.

pub mod deliver;
pub mod routes;

pub use deliver::{Destination, DestinationMetrics, Destinations, sign};
pub use routes::{Match, Route, RoutesFileError, SigningKey};
