//! Microsoft Teams egress: a Teams channel is named `teams:<name>` wherever a Slack channel can be (a hook, an SNS
//! topic, the default channel, a schedule), alone or beside a Slack channel (`#ops+teams:oncall`,
//! [`crate::targets`]), and reached through its incoming-webhook URL (a Workflows "when a Teams webhook request is
//! received" URL, or a legacy Incoming Webhook), a secret read from the environment at start-up.
//!
//! - [`card`]: the Teams layout of the content every handler builds, as an Adaptive Card under 28 KB.
//! - [`Teams`]: the webhook client: at most [`PER_SECOND`] requests a second per webhook in this process, `429`
//!   and `Retry-After` a wait (the event is deferred, not failed), 5xx and timeouts retryable, any other 4xx
//!   permanent with Teams' answer quoted.
//!
//! A webhook cannot be asked whether a post landed: a post is at least once across a dead worker (the window is
//! between Teams' answer and the `sent` line in the event's trail; docs/architecture.md, "Teams").

pub mod card;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::time::Instant;

/// Requests a second to one webhook at most (Teams' documented limit for connectors and Workflows webhooks).
pub const PER_SECOND: usize = 4;

/// A wait for the webhook's limit up to this long is slept in the handler; a longer one defers the event.
const SLEEP_AT_MOST: Duration = Duration::from_secs(2);

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

    /// The configured names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.urls.keys().map(String::as_str)
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
    http: reqwest::Client,
    timeout: Duration,
    /// Per channel: the last [`PER_SECOND`] requests, and a pause Teams asked for.
    windows: Mutex<HashMap<String, Window>>,
}

#[derive(Default)]
struct Window {
    sent: VecDeque<Instant>,
    paused_until: Option<Instant>,
}

impl std::fmt::Debug for Teams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Teams").field("webhooks", &self.webhooks).finish_non_exhaustive()
    }
}

impl Teams {
    /// A client for `webhooks`, each request cut off after `timeout`.
    pub fn new(webhooks: TeamsWebhooks, timeout: Duration) -> Self {
        // No redirects: a moved webhook is a configuration error, and the card must not go wherever one points.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("eventfleet/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Self { webhooks, http, timeout, windows: Mutex::default() }
    }

    /// The configured channels.
    pub fn webhooks(&self) -> &TeamsWebhooks {
        &self.webhooks
    }

    /// Posts `card` (a webhook message, [`card::message`]) to the Teams channel `channel`, within its limit
    /// (`taken`: the caller took its slot with [`Teams::try_take`]): a short wait for it is slept, a longer one (or
    /// Teams' `429`) is [`TeamsError::RateLimited`].
    pub async fn post(&self, channel: &str, card: &Value, taken: bool) -> Result<StatusCode, TeamsError> {
        let Some(url) = self.webhooks.url(channel) else {
            return Err(TeamsError::Permanent {
                channel: channel.to_owned(),
                message: format!(
                    "no webhook URL configured: add {channel} to EVENTFLEET_TEAMS_CHANNELS and set {}",
                    url_variable(channel)
                ),
            });
        };
        if !taken {
            loop {
                match self.take(channel) {
                    Ok(()) => break,
                    Err(wait) if wait <= SLEEP_AT_MOST => tokio::time::sleep(wait).await,
                    Err(wait) => {
                        return Err(TeamsError::RateLimited {
                            channel: channel.to_owned(),
                            message: "the webhook's limit".into(),
                            retry_after: wait,
                        });
                    }
                }
            }
        }
        let body = serde_json::to_vec(card).unwrap_or_default();
        let sent = self
            .http
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
        classify(channel, status, retry_after, &answer).inspect_err(|e| {
            if let TeamsError::RateLimited { retry_after, .. } = e {
                self.pause(channel, *retry_after);
            }
        })
    }

    /// Takes a slot in the channel's window if one is free now (the caller then posts with `taken`); `false`:
    /// the channel is at its limit (or paused), and a post now would wait.
    pub fn try_take(&self, channel: &str) -> bool {
        self.take(channel).is_ok()
    }

    /// Takes a slot in the channel's window, or says how long until one frees.
    fn take(&self, channel: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let window = windows.entry(channel.to_ascii_lowercase()).or_default();
        if let Some(until) = window.paused_until.filter(|until| *until > now) {
            return Err(until - now);
        }
        while window.sent.front().is_some_and(|at| now.duration_since(*at) >= Duration::from_secs(1)) {
            window.sent.pop_front();
        }
        if window.sent.len() >= PER_SECOND {
            let oldest = window.sent.front().copied().unwrap_or(now);
            return Err(Duration::from_secs(1)
                .saturating_sub(now.duration_since(oldest))
                .max(Duration::from_millis(1)));
        }
        window.sent.push_back(now);
        Ok(())
    }

    fn pause(&self, channel: &str, wait: Duration) {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let window = windows.entry(channel.to_ascii_lowercase()).or_default();
        let until = Instant::now() + wait;
        window.paused_until = Some(window.paused_until.map_or(until, |u| u.max(until)));
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
        let retry_after = retry_after.unwrap_or(Duration::from_secs(1)).min(MAX_RETRY_AFTER);
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

    #[tokio::test(start_paused = true)]
    async fn four_a_second_then_a_wait() {
        let teams = Teams::new(TeamsWebhooks::default(), Duration::from_secs(1));
        for _ in 0..PER_SECOND {
            assert_eq!(teams.take("ops"), Ok(()));
        }
        let wait = teams.take("ops").unwrap_err();
        assert!(wait <= Duration::from_secs(1) && wait > Duration::ZERO, "{wait:?}");
        assert_eq!(teams.take("other"), Ok(()), "each webhook has its own window");
        tokio::time::advance(wait).await;
        assert_eq!(teams.take("ops"), Ok(()));
        teams.pause("ops", Duration::from_secs(30));
        assert!(teams.take("ops").unwrap_err() > Duration::from_secs(29));
    }
}
