//! The routes file (`EVENTFLEET_ROUTES_FILE`): which events go to which HTTP destination, or to which chats (a
//! route's `channel`: the built-in handler's messages go to that channel list, `#ops+teams:oncall`, instead of the
//! hook's, topic's or schedule's). Validated whole at start-up, secrets included, so that a typo stops the worker
//! instead of dead-lettering every event it routes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use eventfleet_schema::Envelope;
use eventfleet_storage::event_log::glob_match;
use reqwest::header::{HeaderName, HeaderValue};
use serde::Deserialize;

/// Why a routes file was refused.
#[derive(Debug, thiserror::Error)]
pub enum RoutesFileError {
    /// The file could not be read.
    #[error("read the routes file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML of the expected shape (the message names the line and the field).
    #[error("the routes file {path} is not valid: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// One route is wrong.
    #[error("route {route} in {path}: {reason}")]
    Route {
        /// The file.
        path: PathBuf,
        /// The route's name, quoted, or `#N` (from 1) when it has none.
        route: String,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    route: Vec<RawRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: String,
    #[serde(rename = "match")]
    matcher: RawMatch,
    url: Option<String>,
    channel: Option<String>,
    secret_env: Option<String>,
    secret_file: Option<PathBuf>,
    timeout_ms: Option<u64>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    also_builtin: bool,
    concurrency: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    kind: Option<String>,
    source: Option<String>,
    hook: Option<String>,
}

/// What a route matches; every field set must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// A glob over the kind (`*` matches any run of characters: `github.*`, `sns.*`, `slack.command`).
    pub kind: Option<String>,
    /// The source's name: `slack`, `github`, `hook`, `sns`, `schedule`.
    pub source: Option<String>,
    /// The hook id the event arrived on.
    pub hook: Option<String>,
}

impl Match {
    /// Whether `envelope` matches.
    pub fn matches(&self, envelope: &Envelope) -> bool {
        self.kind.as_deref().is_none_or(|glob| glob_match(glob, envelope.kind().as_str()))
            && self.source.as_deref().is_none_or(|s| s == envelope.source().name())
            && self.hook.as_deref().is_none_or(|h| envelope.source().hook_id().is_some_and(|id| id.as_str() == h))
    }
}

/// A Standard Webhooks signing key (the bytes a `whsec_<base64>` secret decodes to). Never printed.
#[derive(Clone)]
pub struct SigningKey(pub(crate) Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

impl SigningKey {
    /// A `whsec_<base64>` secret (the prefix is optional, as in the Standard Webhooks libraries).
    pub fn parse(secret: &str) -> Result<Self, String> {
        let encoded = secret.trim().strip_prefix("whsec_").unwrap_or(secret.trim());
        let key = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| "the signing secret must be whsec_ followed by base64 (Standard Webhooks)".to_owned())?;
        if key.len() < 16 {
            return Err(format!("the signing secret is {} bytes; use at least 16 (24 to 64 is usual)", key.len()));
        }
        Ok(Self(key))
    }
}

/// One validated route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Unique in the file; the destination's name in metrics and outcomes.
    pub name: String,
    /// What it matches.
    pub matcher: Match,
    /// Where matched events go.
    pub target: Target,
    /// How long one delivery may take.
    pub timeout: Duration,
    /// Extra request headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The signing key; without one, deliveries carry no `webhook-signature`.
    pub key: Option<SigningKey>,
    /// Run the built-in handler too (after the delivery).
    pub also_builtin: bool,
    /// Deliveries to this destination at once, per worker process.
    pub concurrency: usize,
}

/// Where a route sends the events it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The team's service: the event envelope, posted and signed.
    Url(url::Url),
    /// A channel list (`#ops+teams:oncall`): the built-in handler runs, and its messages go there instead of the
    /// channel the event's hook, topic or schedule names.
    Channel(String),
}

/// The default timeout of one delivery (below a handler timeout shorter than it).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The default concurrency of a destination per worker process.
pub const DEFAULT_CONCURRENCY: usize = 8;

/// Headers eventfleet sets itself; a route may not override them.
const RESERVED_HEADERS: [&str; 7] =
    ["webhook-id", "webhook-timestamp", "webhook-signature", "content-type", "content-length", "host", "user-agent"];

/// Reads and validates a routes file. `env` looks up `secret_env` variables (the process environment in the
/// binary); `handler_timeout` bounds the routes' timeouts.
pub fn load(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    handler_timeout: Duration,
) -> Result<Vec<Route>, RoutesFileError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| RoutesFileError::Read { path: path.to_owned(), source })?;
    parse(path, &text, env, handler_timeout)
}

/// Validates the text of a routes file (`path` names it in errors, and relative `secret_file`s are not
/// resolved against it: they are relative to the working directory, as every path in the configuration).
pub fn parse(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    handler_timeout: Duration,
) -> Result<Vec<Route>, RoutesFileError> {
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        // `[route]` (one table) for `[[route]]` (an entry of the array) is the usual slip; serde's "expected a
        // sequence" does not say so.
        let message = match toml::from_str::<toml::Table>(text) {
            Ok(t) if t.get("route").is_some_and(toml::Value::is_table) => {
                "`[route]` declares a single table; each route is an entry of an array: write `[[route]]`".to_owned()
            }
            _ => e.to_string().trim().to_owned(),
        };
        RoutesFileError::Syntax { path: path.to_owned(), message }
    })?;
    let mut routes: Vec<Route> = Vec::with_capacity(raw.route.len());
    for (index, entry) in raw.route.into_iter().enumerate() {
        let label = if entry.name.is_empty() { format!("#{}", index + 1) } else { format!("{:?}", entry.name) };
        let fail = |reason: String| RoutesFileError::Route { path: path.to_owned(), route: label.clone(), reason };
        if routes.iter().any(|r| r.name == entry.name) {
            return Err(fail("the name is used by an earlier route; names must be unique".into()));
        }
        routes.push(validate(entry, env, handler_timeout).map_err(fail)?);
    }
    Ok(routes)
}

fn validate(raw: RawRoute, env: &dyn Fn(&str) -> Option<String>, handler_timeout: Duration) -> Result<Route, String> {
    let name_ok = raw.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if raw.name.is_empty() || raw.name.len() > 64 || !name_ok {
        return Err("name must be 1 to 64 letters, digits, '-' or '_'".into());
    }
    let target = match (&raw.url, &raw.channel) {
        (Some(_), Some(_)) => return Err("set url (a service) or channel (chats), not both".into()),
        (None, None) => return Err("set url (the service to post events to) or channel (chats to post them in)".into()),
        (Some(text), None) => {
            let url = url::Url::parse(text).map_err(|e| format!("url {text:?} is not a URL: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
                return Err(format!("url {text:?} must be an http(s) URL with a host"));
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err(
                    "url must not carry credentials: use headers, read from the file, or the signing secret".into()
                );
            }
            Target::Url(url)
        }
        (None, Some(channel)) => {
            crate::targets::Targets::parse(channel).map_err(|why| format!("channel: {why}"))?;
            let http_only = raw.secret_env.is_some()
                || raw.secret_file.is_some()
                || raw.timeout_ms.is_some()
                || !raw.headers.is_empty()
                || raw.also_builtin
                || raw.concurrency.is_some();
            if http_only {
                return Err(
                    "a channel route runs the built-in handler: secret, timeout_ms, headers, also_builtin and \
                            concurrency are for url routes"
                        .into(),
                );
            }
            Target::Channel(channel.trim().to_owned())
        }
    };
    let RawMatch { kind, source, hook } = raw.matcher;
    if kind.is_none() && source.is_none() && hook.is_none() {
        return Err("match is empty: name a kind, a source or a hook (kind = \"*\" matches every event)".into());
    }
    if let Some(source) = &source
        && !["slack", "github", "hook", "sns", "schedule"].contains(&source.as_str())
    {
        return Err(format!("match.source {source:?} is not one of slack, github, hook, sns, schedule"));
    }
    if kind.as_deref().is_some_and(|k| k.is_empty() || !k.bytes().all(|b| b.is_ascii_graphic())) {
        return Err("match.kind must be a non-empty glob without spaces".into());
    }
    let key = match (raw.secret_env, raw.secret_file) {
        (Some(_), Some(_)) => return Err("set secret_env or secret_file, not both".into()),
        (Some(var), None) => {
            let secret = env(&var).filter(|s| !s.trim().is_empty());
            let secret = secret.ok_or_else(|| format!("secret_env names {var}, which is not set"))?;
            Some(SigningKey::parse(&secret).map_err(|e| format!("{var}: {e}"))?)
        }
        (None, Some(file)) => {
            let secret = std::fs::read_to_string(&file).map_err(|e| format!("secret_file {}: {e}", file.display()))?;
            Some(SigningKey::parse(&secret).map_err(|e| format!("secret_file {}: {e}", file.display()))?)
        }
        (None, None) => None,
    };
    // Unset: 5 s, or three quarters of a shorter handler timeout (the delivery must end before the handler's).
    let timeout = raw.timeout_ms.map_or(DEFAULT_TIMEOUT.min(handler_timeout.mul_f64(0.75)), Duration::from_millis);
    if timeout.is_zero() || timeout >= handler_timeout {
        return Err(format!(
            "timeout_ms {} must be above 0 and below the handler timeout (EVENTFLEET_HANDLER_TIMEOUT_S, {} ms)",
            timeout.as_millis(),
            handler_timeout.as_millis()
        ));
    }
    let mut headers = Vec::with_capacity(raw.headers.len());
    for (name, value) in raw.headers {
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("header {name:?} is not a name"))?;
        if RESERVED_HEADERS.contains(&header.as_str()) {
            return Err(format!("header {name:?} is set by eventfleet"));
        }
        let value = HeaderValue::from_str(&value).map_err(|_| format!("header {name:?} has an invalid value"))?;
        headers.push((header, value));
    }
    let concurrency = raw.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
    if !(1..=1024).contains(&concurrency) {
        return Err(format!("concurrency {concurrency} must be 1 to 1024"));
    }
    Ok(Route {
        name: raw.name,
        matcher: Match { kind, source, hook },
        target,
        timeout,
        headers,
        key,
        also_builtin: raw.also_builtin,
        concurrency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn env(name: &str) -> Option<String> {
        (name == "BOT_WEBHOOK_SECRET").then(|| SECRET.to_owned())
    }

    fn parse_text(text: &str) -> Result<Vec<Route>, RoutesFileError> {
        parse(Path::new("routes.toml"), text, &env, Duration::from_secs(30))
    }

    fn error(text: &str) -> String {
        parse_text(text).expect_err("refused").to_string()
    }

    #[test]
    fn a_channel_route_names_chats_and_takes_no_http_settings() {
        let routes = parse_text(
            "[[route]]\nname = \"platform\"\nmatch = { kind = \"github.*\" }\nchannel = \"#platform+teams:platform\"\n",
        )
        .unwrap();
        assert_eq!(routes[0].target, Target::Channel("#platform+teams:platform".into()));
        let both =
            error("[[route]]\nname = \"x\"\nmatch = { kind = \"*\" }\nurl = \"https://a.example\"\nchannel = \"#a\"\n");
        assert!(both.contains("not both"), "{both}");
        let neither = error("[[route]]\nname = \"x\"\nmatch = { kind = \"*\" }\n");
        assert!(neither.contains("set url") && neither.contains("or channel"), "{neither}");
        let http =
            error("[[route]]\nname = \"x\"\nmatch = { kind = \"*\" }\nchannel = \"teams:a\"\ntimeout_ms = 100\n");
        assert!(http.contains("are for url routes"), "{http}");
        let bad = error("[[route]]\nname = \"x\"\nmatch = { kind = \"*\" }\nchannel = \"#a+#b\"\n");
        assert!(bad.contains("channel: ") && bad.contains("two Slack channels"), "{bad}");
    }

    #[test]
    fn the_documented_example_parses() {
        let routes = parse_text(
            r#"
            [[route]]
            name = "bot"
            match = { kind = "github.*" }
            url = "https://bot.internal/events"
            secret_env = "BOT_WEBHOOK_SECRET"
            timeout_ms = 5000
            also_builtin = false
            headers = { x-team = "sre" }
            "#,
        )
        .unwrap();
        assert_eq!(routes[0].name, "bot");
        assert_eq!(routes[0].timeout, Duration::from_secs(5));
        assert_eq!(routes[0].key.as_ref().unwrap().0.len(), 24);
        assert_eq!(routes[0].headers[0].0.as_str(), "x-team");
        assert_eq!(routes[0].concurrency, DEFAULT_CONCURRENCY);
    }

    #[test]
    fn globs_match_kinds() {
        assert!(glob_match("github.*", "github.push"));
        assert!(!glob_match("github.*", "githubx"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("slack.command", "slack.command"));
        assert!(!glob_match("slack.command", "slack.commands"));
        assert!(glob_match("*.alarm*", "sns.alarm_state"));
        assert!(glob_match("a*b*c", "aXbYc"));
        assert!(!glob_match("a*b*c", "aXcYb"));
        assert!(!glob_match("ab*ba", "aba"));
    }

    #[test]
    fn bad_routes_are_refused_naming_the_route() {
        let single = error("[route]\nname = \"bot\"\nmatch = { kind = \"*\" }\nurl = \"https://x\"\n");
        assert!(single.contains("write `[[route]]`"), "{single}");
        let base = "[[route]]\nname = \"bot\"\nmatch = { kind = \"*\" }\n";
        let unknown = error(&format!("{base}url = \"https://x\"\nretries = 3\n"));
        assert!(unknown.contains("retries"), "{unknown}");
        let bad_url = error(&format!("{base}url = \"not a url\"\n"));
        assert!(bad_url.contains("route \"bot\"") && bad_url.contains("not a URL"), "{bad_url}");
        assert!(error(&format!("{base}url = \"ftp://x/y\"\n")).contains("http(s)"));
        assert!(error(&format!("{base}url = \"https://u:p@x/\"\n")).contains("credentials"));
        let missing = error(&format!("{base}url = \"https://x\"\nsecret_env = \"NOPE\"\n"));
        assert!(missing.contains("NOPE") && missing.contains("not set"), "{missing}");
        let file = error(&format!("{base}url = \"https://x\"\nsecret_file = \"/nonexistent/s\"\n"));
        assert!(file.contains("/nonexistent/s"), "{file}");
        assert!(error(&format!("{base}url = \"https://x\"\ntimeout_ms = 60000\n")).contains("handler timeout"));
        assert!(error(&format!("{base}url = \"https://x\"\nheaders = {{ webhook-id = \"x\" }}\n")).contains("set by"));
        assert!(error("[[route]]\nname = \"e\"\nmatch = {}\nurl = \"https://x\"\n").contains("match is empty"));
        assert!(error("[[route]]\nname = \"s\"\nmatch = { source = \"irc\" }\nurl = \"https://x\"\n").contains("irc"));
        let dup = format!("{base}url = \"https://x\"\n{base}url = \"https://y\"\n");
        assert!(error(&dup).contains("unique"));
        assert!(error("[[route]\n").contains("not valid"));
    }

    fn envelope(source: eventfleet_schema::Source, kind: &str) -> Envelope {
        use eventfleet_schema::*;
        let now = Timestamp::from_millis(0);
        Envelope::V1(EnvelopeV1 {
            event_id: EventId::new(),
            idempotency_key: IdempotencyKey::from_raw("k"),
            source,
            kind: Kind::new(kind),
            message_group: "g".into(),
            received_at: now,
            verification: Verification { method: VerificationMethod::HookUrl, verified_at: now },
            trace: None,
            headers: BTreeMap::new(),
            body: Body::Utf8(String::new()),
        })
    }

    #[test]
    fn every_field_of_a_match_must_match() {
        use eventfleet_schema::{HookId, Source};
        let hook = |id: &str| Source::Hook { hook_id: HookId::from_raw(id) };
        let github = Source::Github { hook_id: HookId::from_raw("hk_a"), delivery: "d".into() };
        let on_a = Match { kind: None, source: None, hook: Some("hk_a".into()) };
        assert!(on_a.matches(&envelope(hook("hk_a"), "hook.payload")));
        assert!(on_a.matches(&envelope(github.clone(), "github.push")));
        assert!(!on_a.matches(&envelope(hook("hk_b"), "hook.payload")));
        assert!(!on_a.matches(&envelope(Source::Slack { team_id: "T".into() }, "slack.command")));
        let github_on_a =
            Match { kind: Some("github.*".into()), source: Some("github".into()), hook: Some("hk_a".into()) };
        assert!(github_on_a.matches(&envelope(github, "github.push")));
        assert!(!github_on_a.matches(&envelope(hook("hk_a"), "hook.payload")));
    }

    #[test]
    fn secrets_must_be_standard_webhooks_keys() {
        assert!(SigningKey::parse(SECRET).is_ok());
        assert!(SigningKey::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok(), "the prefix is optional");
        assert!(SigningKey::parse("whsec_not base64!").unwrap_err().contains("base64"));
        assert!(SigningKey::parse("whsec_c2hvcnQ=").unwrap_err().contains("16"));
        assert_eq!(format!("{:?}", SigningKey::parse(SECRET).unwrap()), "SigningKey(..)");
    }
}
