//! One delivery to a destination: the envelope as JSON, signed the Standard Webhooks way, and its answer
//! classified as success, retryable or permanent.

use std::time::{Duration, Instant};

use base64::Engine as _;
use eventfleet_schema::{Envelope, Kind};
use hmac::{Hmac, Mac};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use reqwest::StatusCode;
use sha2::Sha256;
use tokio::sync::Semaphore;

use super::routes::{Route, SigningKey};
use crate::{HandlerContext, HandlerError};

/// `destination` and `outcome` of a delivery.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    /// The route's name.
    pub destination: String,
    /// `delivered`, `retryable` or `permanent`.
    pub outcome: &'static str,
}

/// `destination` of a latency sample.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationLabels {
    /// The route's name.
    pub destination: String,
}

/// The destinations' metrics.
#[derive(Clone)]
pub struct DestinationMetrics {
    /// Deliveries by destination and outcome.
    pub deliveries: Family<DeliveryLabels, Counter>,
    /// Seconds from the request to its answer (or the timeout), by destination.
    pub seconds: Family<DestinationLabels, Histogram>,
}

impl std::fmt::Debug for DestinationMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DestinationMetrics").finish_non_exhaustive()
    }
}

impl DestinationMetrics {
    /// Metrics registered into `registry` under `eventfleet_worker_destination_`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::unregistered();
        let sub = registry.sub_registry_with_prefix("eventfleet_worker_destination");
        sub.register("deliveries", "Deliveries to HTTP destinations by destination and outcome", m.deliveries.clone());
        sub.register("duration_seconds", "Time to a destination's answer", m.seconds.clone());
        m
    }

    /// Metrics nobody renders (tests, benchmarks).
    pub fn unregistered() -> Self {
        Self {
            deliveries: Family::default(),
            // 1 ms to ~65 s.
            seconds: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 17))),
        }
    }
}

/// A route with its concurrency limit.
pub struct Destination {
    /// The route.
    pub route: Route,
    permits: Semaphore,
}

/// The routes, their HTTP client and their concurrency limits.
pub struct Destinations {
    routes: Vec<Destination>,
    http: reqwest::Client,
    metrics: DestinationMetrics,
}

impl std::fmt::Debug for Destinations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Destinations").field("routes", &self.routes.len()).finish_non_exhaustive()
    }
}

/// The longest answer read back: enough for a Slack command's reply (its `response_url` takes a message).
const MAX_ANSWER: usize = 64 * 1024;
/// How much of a refusing answer the dead letter quotes.
const QUOTED: usize = 256;
/// The longest `Retry-After` honoured; a longer hint is capped so the attempts are not all spent waiting.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(15 * 60);
/// How long Slack accepts posts to a command's `response_url`.
const RESPONSE_URL_LIFETIME: Duration = Duration::from_secs(30 * 60);

impl Destinations {
    /// The destinations of `routes` (file order: the first route that matches an event wins).
    pub fn new(routes: Vec<Route>, metrics: DestinationMetrics) -> Result<Self, reqwest::Error> {
        // Redirects are not followed: a destination that moved is a configuration error (a permanent 3xx), and
        // a signed body must not be replayed to wherever a redirect points.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("eventfleet/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let routes =
            routes.into_iter().map(|route| Destination { permits: Semaphore::new(route.concurrency), route }).collect();
        Ok(Self { routes, http, metrics })
    }

    /// Whether there are no routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The route named `name`.
    pub fn by_name(&self, name: &str) -> Option<&Destination> {
        self.routes.iter().find(|d| d.route.name == name)
    }

    /// The first route matching `envelope`.
    pub fn route_for(&self, envelope: &Envelope) -> Option<&Destination> {
        self.routes.iter().find(|d| d.route.matcher.matches(envelope))
    }

    /// Delivers `envelope` to `route`; a `slack.command` answered with JSON has that answer posted to the
    /// command's `response_url`. Returns the outcome for the trail.
    pub async fn deliver(
        &self,
        destination: &Destination,
        ctx: &HandlerContext,
        envelope: &Envelope,
    ) -> Result<String, HandlerError> {
        let route = &destination.route;
        // Waiting for a permit holds this handler slot: the limit protects the destination, and the handler
        // timeout still bounds the wait.
        let _permit =
            destination.permits.acquire().await.map_err(|_| HandlerError::retryable("the worker is stopping"))?;
        let started = Instant::now();
        let result = self.post(route, ctx, envelope).await;
        let labels = DestinationLabels { destination: route.name.clone() };
        self.metrics.seconds.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
        let outcome = match &result {
            Ok(_) => "delivered",
            Err(HandlerError::Retryable { .. }) => "retryable",
            Err(HandlerError::Permanent(_)) => "permanent",
        };
        self.metrics.deliveries.get_or_create(&DeliveryLabels { destination: route.name.clone(), outcome }).inc();
        let (status, answer) = result?;
        let mut said = format!("delivered to {} ({})", route.name, status.as_u16());
        if envelope.kind().as_str() == Kind::SLACK_COMMAND
            && let Some(answer) = answer
        {
            said.push_str(&self.answer_command(route, ctx, envelope, answer).await?);
        }
        Ok(said)
    }

    /// The request and its answer: the status, and the body when it is JSON.
    async fn post(
        &self,
        route: &Route,
        ctx: &HandlerContext,
        envelope: &Envelope,
    ) -> Result<(StatusCode, Option<Vec<u8>>), HandlerError> {
        let body = payload(envelope, ctx.attempt);
        let id = envelope.event_id().to_string();
        let timestamp = ctx.store.clock.now().as_secs().to_string();
        let crate::destinations::routes::Target::Url(url) = &route.target else {
            return Err(HandlerError::Permanent(format!("route {} names chats, not a service", route.name)));
        };
        let mut request = self
            .http
            .post(url.clone())
            .timeout(route.timeout)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", &timestamp);
        if let Some(key) = &route.key {
            request = request.header("webhook-signature", sign(key, &id, &timestamp, &body));
        }
        for (name, value) in &route.headers {
            request = request.header(name, value);
        }
        let response = request.body(body).send().await.map_err(|e| transport_error(route, &e))?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let is_json =
            response.headers().get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|v| {
                v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
            });
        let answer = read_limited(response).await;
        if status.is_success() {
            let answer = answer.map_err(|e| transport_error(route, &e))?;
            return Ok((status, (is_json && !answer.is_empty()).then_some(answer)));
        }
        let quoted = answer.as_deref().map(quote).unwrap_or_default();
        let what = format!("{} answered {status}{quoted}", route.name);
        if status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
        {
            return Err(HandlerError::Retryable { message: what, retry_after });
        }
        Err(HandlerError::Permanent(what))
    }

    /// Posts a destination's JSON answer to a Slack command's `response_url`.
    async fn answer_command(
        &self,
        route: &Route,
        ctx: &HandlerContext,
        envelope: &Envelope,
        answer: Vec<u8>,
    ) -> Result<String, HandlerError> {
        let form = envelope.as_v1().body.as_text().unwrap_or_default();
        let Some(response_url) =
            url::form_urlencoded::parse(form.as_bytes()).find(|(k, _)| k == "response_url").map(|(_, v)| v)
        else {
            return Ok("; the command has no response_url for the answer".into());
        };
        if ctx.store.clock.now().since(envelope.received_at()) > RESPONSE_URL_LIFETIME {
            return Ok("; the answer came after the command's response_url expired (30 min)".into());
        }
        if serde_json::from_slice::<serde_json::Value>(&answer).is_err() {
            return Ok("; the answer is not JSON and was not posted".into());
        }
        let posted = self
            .http
            .post(response_url.as_ref())
            .timeout(route.timeout)
            .header("content-type", "application/json")
            .body(answer)
            .send()
            .await
            .map_err(|e| HandlerError::retryable(format!("post the answer to response_url: {e}")))?;
        let status = posted.status();
        if status.is_success() {
            return Ok("; answer posted to response_url".into());
        }
        // Slack answers 404 `expired_url` or `used_url` after 30 minutes or five posts: another attempt gets the
        // same answer.
        let what = format!(
            "response_url answered {status}{}",
            read_limited(posted).await.map(|a| quote(&a)).unwrap_or_default()
        );
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            Err(HandlerError::retryable(what))
        } else {
            Err(HandlerError::Permanent(what))
        }
    }
}

/// What a destination receives: the envelope's fields a receiver needs, and the original body.
fn payload(envelope: &Envelope, attempt: u32) -> Vec<u8> {
    let e = envelope.as_v1();
    let body = serde_json::json!({
        "event_id": e.event_id,
        "kind": e.kind,
        "source": e.source,
        "idempotency_key": e.idempotency_key,
        "message_group": e.message_group,
        "received_at": e.received_at,
        "verification": e.verification.method,
        "attempt": attempt,
        "headers": e.headers,
        "body": e.body,
    });
    body.to_string().into_bytes()
}

/// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, the Standard Webhooks signature.
pub fn sign(key: &SigningKey, id: &str, timestamp: &str, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key.0) else {
        // HMAC takes keys of any length; unreachable, and an unsigned request would be refused, not trusted.
        return String::new();
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

fn transport_error(route: &Route, e: &reqwest::Error) -> HandlerError {
    if e.is_timeout() {
        HandlerError::retryable(format!("{} did not answer within {} ms", route.name, route.timeout.as_millis()))
    } else {
        // Refused connections, resets, DNS: the destination may be back on the next attempt.
        HandlerError::retryable(format!("{} could not be reached: {}", route.name, error_chain(e)))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A destination's `Retry-After` (seconds or an HTTP date), capped at [`MAX_RETRY_AFTER`].
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get("retry-after")?.to_str().ok()?;
    let wait = eventfleet_schema::time::retry_after(value, eventfleet_schema::Timestamp::now_system())?;
    Some(wait.min(MAX_RETRY_AFTER))
}

/// Reads at most [`MAX_ANSWER`] bytes of an answer.
async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_ANSWER - out.len();
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= MAX_ANSWER {
            break;
        }
    }
    Ok(out)
}

/// `: "<the first bytes>"` of an answer, for a reason in the trail.
fn quote(answer: &[u8]) -> String {
    if answer.is_empty() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&answer[..answer.len().min(QUOTED)]);
    let more = if answer.len() > QUOTED { "…" } else { "" };
    format!(": {:?}{more}", text.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification (and its libraries' tests).
        let key = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn retry_after_is_seconds_or_a_date_and_capped() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert("retry-after", "999999".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(MAX_RETRY_AFTER));
        headers.insert("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::ZERO), "a date already past: no wait");
        headers.insert("retry-after", "later".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn quotes_are_short() {
        assert_eq!(quote(b""), "");
        assert_eq!(quote(b"bad field"), ": \"bad field\"");
        assert!(quote(&[b'x'; 1000]).ends_with('…'));
    }
}
