//! Microsoft Teams egress: a Teams channel is named `teams:<name>` wherever a Slack channel can be (a hook, an SNS
//! topic, the default channel, a schedule), alone or beside a Slack channel (`#ops+teams:oncall`,
//! [`crate::targets`]), and reached through its incoming-webhook URL (a Workflows "when a Teams webhook request is
//! received" URL, or a legacy Incoming Webhook), a secret read from the environment at start-up.
//!
//! - [`card`]: the Teams layout of the content every handler builds, as an Adaptive Card under 28 KB.
//! - [`Teams`]: the webhook client: 5xx and timeouts retryable, `429` with its `Retry-After` a wait (the event is
//!   deferred, not failed), any other 4xx permanent with Teams' answer quoted.
//! - [`pace`]: Teams' 4 requests a second per webhook, kept in the poster's lanes like a Slack channel's pace
//!   (shared by the fleet's processes, a `429` pausing the webhook for all of them).
//!
//! A webhook cannot be asked whether a post landed: a post is at least once across a dead worker (the window is
//! between Teams' answer and the `sent` line in the event's trail; docs/architecture.md, "Teams").

pub mod card;

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

/// The prefix naming a Teams channel in a channel list (`teams:oncall`).
pub const PREFIX: &str = "teams:";

/// Requests a second to one webhook at most (Teams' documented limit for connectors and Workflows webhooks).
pub const PER_SECOND: u32 = 4;

/// A wait for the webhook's turn up to this long is slept in the handler; a longer one defers the event.
pub const SLEEP_AT_MOST: Duration = Duration::from_secs(2);

/// Teams' limit as a lane's interval: one request per quarter second and 5 % (requests leave a little apart from
/// their slots), with no burst on top (a burst of 4 at once and then one a quarter second would put 7 in the
/// first second).
pub fn interval() -> Duration {
    (Duration::from_secs(1) / PER_SECOND).mul_f64(1.05)
}

/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(15 * 60);

/// The Teams channels by name and their webhook URLs (secrets: never printed; `Debug` shows the names only).
#[derive(Clone, Default)]
pub struct TeamsWebhooks {
    urls: BTreeMap<String, url::Url>,
}

impl std::fmt::Debug for TeamsWebhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.urls.keys()).finish()
    }
}

/// The environment variable holding the webhook URL of the Teams channel `name`:
/// `EVENTFLEET_TEAMS_WEBHOOK_<NAME>`, upper case, `-` as `_`.
pub fn url_variable(name: &str) -> String {
    format!("EVENTFLEET_TEAMS_WEBHOOK_{}", name.to_ascii_uppercase().replace('-', "_"))
}

/// Whether `name` can name a Teams channel: letters, digits, `-` and `_`, at most 64.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl TeamsWebhooks {
    /// The channels `names`, each URL read through `lookup` from [`url_variable`]; the error names the variable
    /// (never the value).
    pub fn load(names: &[String], lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut urls = BTreeMap::new();
        for name in names {
            if !valid_name(name) {
                return Err(format!("{name:?} is not a Teams channel name (letters, digits, - and _)"));
            }
            let var = url_variable(name);
            if let Some(other) = names.iter().find(|other| *other != name && url_variable(other) == var) {
                return Err(format!("{name} and {other} would both read {var}: name them apart"));
            }
            let Some(text) = lookup(&var) else {
                return Err(format!("the Teams channel {name} needs its webhook URL in {var}"));
            };
            let url = url::Url::parse(text.trim())
                .ok()
                .filter(|u| matches!(u.scheme(), "https" | "http") && u.host_str().is_some())
                .ok_or_else(|| format!("{var} is not an http(s) URL (its value is not shown: it is a secret)"))?;
            urls.insert(name.to_ascii_lowercase(), url);
        }
        Ok(Self { urls })
    }

    /// The webhook URL of `name`.
    pub fn url(&self, name: &str) -> Option<&url::Url> {
        self.urls.get(&name.to_ascii_lowercase())
    }

    /// Whether `name` is configured.
    pub fn has(&self, name: &str) -> bool {
        self.url(name).is_some()
    }
}

/// Why a post to Teams did not land.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TeamsError {
    /// `429`, or this process's limit for the webhook: not a failure, a wait.
    #[error("teams {channel}: {message} (retry after {} s)", retry_after.as_secs_f64())]
    RateLimited {
        /// The Teams channel.
        channel: String,
        /// What happened.
        message: String,
        /// How long to wait.
        retry_after: Duration,
    },
    /// Timeouts, 5xx, `408`: another attempt may succeed.
    #[error("teams {channel}: {message}")]
    Retryable {
        /// The Teams channel.
        channel: String,
        /// What happened.
        message: String,
    },
    /// Any other answer (`400` for a card Teams refuses, `404` for a deleted webhook, a channel without a URL):
    /// another attempt gets the same.
    #[error("teams {channel}: {message}")]
    Permanent {
        /// The Teams channel.
        channel: String,
        /// What happened.
        message: String,
    },
}

/// The webhook client of one worker process. Cheap to share.
pub struct Teams {
    webhooks: TeamsWebhooks,
    /// `None`: no channels ([`Teams::none`]); nothing is ever sent.
    http: Option<reqwest::Client>,
    timeout: Duration,
}

impl std::fmt::Debug for Teams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Teams").field("webhooks", &self.webhooks).finish_non_exhaustive()
    }
}

impl Teams {
    /// A client for `webhooks` in handlers that time out after `handler_timeout`: a request is cut off at half
    /// of it (10 s at most), so that Teams' late answer still leaves the handler time to record the post.
    pub fn new(webhooks: TeamsWebhooks, handler_timeout: Duration) -> Result<Self, reqwest::Error> {
        // No redirects: a moved webhook is a configuration error, and the card must not go wherever one points.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("eventfleet/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let timeout = (handler_timeout / 2).min(Duration::from_secs(10));
        Ok(Self { webhooks, http: Some(http), timeout })
    }

    /// A client with no channels: every post is refused as not configured (an egress built without Teams).
    pub fn none() -> Self {
        Self { webhooks: TeamsWebhooks::default(), http: None, timeout: Duration::from_secs(10) }
    }

    /// Posts `card` (a webhook message, [`card::message`]) to the Teams channel `channel` (its turn taken in the
    /// poster's lanes); Teams' `429` is [`TeamsError::RateLimited`].
    pub async fn post(&self, channel: &str, card: &Value) -> Result<StatusCode, TeamsError> {
        let (Some(url), Some(http)) = (self.webhooks.url(channel), &self.http) else {
            return Err(TeamsError::Permanent {
                channel: channel.to_owned(),
                message: format!(
                    "no webhook URL configured: add {channel} to EVENTFLEET_TEAMS_CHANNELS and set {}",
                    url_variable(channel)
                ),
            });
        };
        let body = serde_json::to_vec(card).unwrap_or_default();
        let sent = http
            .post(url.clone())
            .timeout(self.timeout)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            // The URL is a secret: reqwest's error names it, so only the kind is said.
            Err(e) => {
                let kind = if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "could not connect"
                } else {
                    "request failed"
                };
                return Err(TeamsError::Retryable { channel: channel.to_owned(), message: kind.into() });
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| eventfleet_schema::time::retry_after(v, eventfleet_schema::Timestamp::now_system()));
        let answer = response.text().await.unwrap_or_default();
        classify(channel, status, retry_after, &answer)
    }
}

/// Teams' answer classified. Workflows webhooks answer `202`, legacy ones `200` with `1`; a legacy webhook may
/// answer `200` with the failure in its text ("Webhook message delivery failed with error: Microsoft Teams endpoint
/// returned HTTP error 413 …"), which is read as that status.
fn classify(
    channel: &str,
    status: StatusCode,
    retry_after: Option<Duration>,
    answer: &str,
) -> Result<StatusCode, TeamsError> {
    let quoted = quote(answer);
    let failed_in_text = status.is_success() && answer.contains("delivery failed");
    let effective = if failed_in_text {
        answer
            .split("HTTP error ")
            .nth(1)
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse::<u16>().ok())
            .and_then(|code| StatusCode::from_u16(code).ok())
            .unwrap_or(StatusCode::BAD_REQUEST)
    } else {
        status
    };
    let channel = channel.to_owned();
    if effective.is_success() {
        return Ok(effective);
    }
    let message = format!("answered {effective}{quoted}");
    if effective == StatusCode::TOO_MANY_REQUESTS {
        // `Retry-After: 0` (or none) still waits a second: an immediate retry would meet the same limit.
        let retry_after = retry_after.unwrap_or_default().clamp(Duration::from_secs(1), MAX_RETRY_AFTER);
        return Err(TeamsError::RateLimited { channel, message, retry_after });
    }
    if effective.is_server_error() || effective == StatusCode::REQUEST_TIMEOUT {
        return Err(TeamsError::Retryable { channel, message });
    }
    Err(TeamsError::Permanent { channel, message })
}

/// `: "<the first bytes>"` of an answer, for a reason in the trail.
fn quote(answer: &str) -> String {
    let answer = answer.trim();
    if answer.is_empty() {
        return String::new();
    }
    let cut = crate::slack::truncate(answer, 256, "…");
    format!(": {cut:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified() {
        assert_eq!(classify("ops", StatusCode::ACCEPTED, None, ""), Ok(StatusCode::ACCEPTED));
        assert_eq!(classify("ops", StatusCode::OK, None, "1"), Ok(StatusCode::OK));
        let limited = classify("ops", StatusCode::TOO_MANY_REQUESTS, Some(Duration::from_secs(7)), "slow down");
        assert!(
            matches!(limited, Err(TeamsError::RateLimited { retry_after, .. }) if retry_after == Duration::from_secs(7))
        );
        assert!(matches!(classify("ops", StatusCode::BAD_GATEWAY, None, ""), Err(TeamsError::Retryable { .. })));
        let bad = classify("ops", StatusCode::BAD_REQUEST, None, "Bad payload: card is invalid").unwrap_err();
        assert!(bad.to_string().contains("400 Bad Request: \"Bad payload: card is invalid\""), "{bad}");
        // A legacy connector's failure inside a 200.
        let text = "Webhook message delivery failed with error: Microsoft Teams endpoint returned HTTP error 413 with ContextId x";
        assert!(
            matches!(classify("ops", StatusCode::OK, None, text), Err(TeamsError::Permanent { message, .. }) if message.contains("413"))
        );
        let text = "Webhook message delivery failed with error: Microsoft Teams endpoint returned HTTP error 429 with ContextId x";
        assert!(matches!(classify("ops", StatusCode::OK, None, text), Err(TeamsError::RateLimited { .. })));
    }

    #[test]
    fn webhooks_need_a_url_variable_and_never_show_it() {
        let lookup = |name: &str| {
            (name == "EVENTFLEET_TEAMS_WEBHOOK_ON_CALL")
                .then(|| "https://example.webhook.office.com/x?sig=hunter2".to_owned())
        };
        let hooks = TeamsWebhooks::load(&["on-call".into()], &lookup).unwrap();
        assert!(hooks.has("On-Call"));
        assert!(!format!("{hooks:?}").contains("hunter2"));
        let missing = TeamsWebhooks::load(&["ops".into()], &lookup).unwrap_err();
        assert!(missing.contains("EVENTFLEET_TEAMS_WEBHOOK_OPS"), "{missing}");
        let bad = |_: &str| Some("not a url sig=hunter2".to_owned());
        let err = TeamsWebhooks::load(&["ops".into()], &bad).unwrap_err();
        assert!(!err.contains("hunter2") && err.contains("EVENTFLEET_TEAMS_WEBHOOK_OPS"), "{err}");
        assert!(TeamsWebhooks::load(&["a b".into()], &lookup).is_err());
    }
}
