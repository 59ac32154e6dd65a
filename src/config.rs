//! Settings from `EVENTFLEET_*` environment variables, parsed and validated at start-up. Every variable is
//! documented in `docs/configuration.md`; an invalid one stops the process with a message naming it.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use eventfleet_ingress::serve::Timeouts;
use eventfleet_ingress::{IngressConfig, RateLimits};
use eventfleet_storage::embedded::Durability;
use eventfleet_workers::WorkerConfig;

/// A variable that did not validate.
#[derive(Debug, thiserror::Error)]
#[error("{var}={value:?}: {reason}")]
pub struct ConfigError {
    var: &'static str,
    value: String,
    reason: String,
}

/// Which storage backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One SQLite file.
    Embedded,
    /// SQS FIFO + DynamoDB.
    Aws,
}

/// Log output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (default outside `dev`).
    Json,
    /// Human-readable (default in `dev`).
    Pretty,
}

/// Everything configurable by environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// `EVENTFLEET_BACKEND`.
    pub backend: Backend,
    /// `EVENTFLEET_LISTEN`.
    pub listen: Option<SocketAddr>,
    /// `EVENTFLEET_WORKER_CONCURRENCY` when set (`worker.concurrency` holds the services' default otherwise;
    /// `dev` has its own).
    pub worker_concurrency: Option<usize>,
    /// `EVENTFLEET_METRICS_LISTEN`: where `eventfleet worker` serves `/metrics`.
    pub metrics_listen: SocketAddr,
    /// `EVENTFLEET_PUBLIC_URL`: the base URL senders use, for printed hook URLs.
    pub public_url: Option<String>,
    /// `EVENTFLEET_SLACK_BOT_TOKEN`.
    pub slack_bot_token: Option<eventfleet_schema::Secret>,
    /// `EVENTFLEET_SLACK_API_URL`.
    pub slack_api_url: String,
    /// `EVENTFLEET_DEFAULT_CHANNEL`.
    pub default_channel: String,
    /// `EVENTFLEET_SNS_TOPIC_CHANNELS`: topic ARN → channel.
    pub sns_topic_channels: Vec<(String, String)>,
    /// `EVENTFLEET_ALARM_*`: alarm threads, storms and flapping.
    pub alarms: eventfleet_workers::handlers::alarm::AlarmSettings,
    /// `EVENTFLEET_LOG_FORMAT`.
    pub log_format: Option<LogFormat>,
    /// `EVENTFLEET_SYNC`.
    pub durability: Durability,
    /// `EVENTFLEET_RETENTION_H`: how long the event log keeps a done event (`None`: 0, no event log).
    pub retention: Option<Duration>,
    /// `EVENTFLEET_HOOK_CACHE_S`: how long hooks are served from memory, on either backend (invocation counts are
    /// then added up and written every `hook_cache::COUNTS_EVERY`); `None` (0) reads and writes the webhooks
    /// table on every delivery.
    pub hook_cache: Option<Duration>,
    /// Ingress settings.
    pub ingress: IngressConfig,
    /// Worker settings.
    pub worker: WorkerConfig,
    /// The aws backend's settings (read whatever the backend; used when it is `aws`).
    pub aws: AwsSettings,
    /// `EVENTFLEET_ROUTES_FILE`: the HTTP destinations, validated (their secrets read) at start-up.
    pub routes: Vec<eventfleet_workers::destinations::Route>,
    /// The operator console's settings (`eventfleet console`).
    pub console: ConsoleConfig,
}

/// Settings of `eventfleet console`. Whether they suffice for the address it binds is checked when it starts.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// `EVENTFLEET_CONSOLE_LISTEN` (default 127.0.0.1:9092; `--listen` wins).
    pub listen: SocketAddr,
    /// `EVENTFLEET_CONSOLE_TOKEN`: exchanged for a session cookie at the login form.
    pub token: Option<eventfleet_schema::Secret>,
    /// `EVENTFLEET_CONSOLE_TRUST_ALB_OIDC`: the operator is who the ALB's `authenticate-oidc` says.
    pub trust_alb_oidc: bool,
}

/// Settings of the aws backend. Region and credentials come from the standard AWS variables and chain.
#[derive(Debug, Clone)]
pub struct AwsSettings {
    /// `EVENTFLEET_AWS_ENDPOINT_URL`: one endpoint for every AWS client (an emulator).
    pub endpoint_url: Option<String>,
    /// Names from `EVENTFLEET_NAME_PREFIX`, with any per-name override applied.
    pub names: eventfleet_storage::aws::Names,
    /// `EVENTFLEET_OPS_TOPIC_ARN`: where dead-letter notices go.
    pub ops_topic_arn: Option<String>,
    /// `EVENTFLEET_CLOUDWATCH_INTERVAL_S`: how often workers publish metrics to CloudWatch; `None` (0) disables.
    pub cloudwatch_interval: Option<Duration>,
    /// `EVENTFLEET_ENQUEUE_BATCHES_IN_FLIGHT`: `SendMessageBatch` requests the ingress's accepts share at once.
    pub send_batches_in_flight: usize,
    /// `EVENTFLEET_ENQUEUE_LINGER_MS`: the most a send batch waits to fill while another is on the wire (it waits
    /// about as long as the recent sends took).
    pub send_linger: Duration,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup` (tests pass a map; nothing touches the process environment).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(&lookup);
        let backend = match env.text("EVENTFLEET_BACKEND").as_deref() {
            None | Some("embedded") => Backend::Embedded,
            Some("aws") => Backend::Aws,
            Some(other) => {
                return Err(invalid("EVENTFLEET_BACKEND", other, "expected `embedded` or `aws`"));
            }
        };
        let log_format = match env.text("EVENTFLEET_LOG_FORMAT").as_deref() {
            None => None,
            Some("json") => Some(LogFormat::Json),
            Some("pretty") => Some(LogFormat::Pretty),
            Some(other) => {
                return Err(invalid("EVENTFLEET_LOG_FORMAT", other, "expected `json` or `pretty`"));
            }
        };
        if let Some(filter) = env.text("EVENTFLEET_LOG") {
            check_log_filter(&filter).map_err(|why| invalid("EVENTFLEET_LOG", &filter, &why))?;
        }
        let durability = match env.text("EVENTFLEET_SYNC").as_deref() {
            None | Some("full") => Durability::Full,
            Some("normal") => Durability::Normal,
            Some(other) => {
                return Err(invalid("EVENTFLEET_SYNC", other, "expected `full` or `normal`"));
            }
        };
        // At most the audit trail's 90 days: an event's outcome is read from its trail.
        let retention = match env.parse_in("EVENTFLEET_RETENTION_H", 168u64, 0..=24 * 90)? {
            0 => None,
            hours => Some(secs(hours * 3600)),
        };
        let hook_cache = match env.parse_in("EVENTFLEET_HOOK_CACHE_S", 5u64, 0..=300)? {
            0 => None,
            s => Some(secs(s)),
        };
        let public_url = env.text("EVENTFLEET_PUBLIC_URL").map(|u| u.trim_end_matches('/').to_owned());
        if let Some(url) = &public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(invalid("EVENTFLEET_PUBLIC_URL", url, "expected an http:// or https:// URL"));
        }

        let worker_concurrency = env.parse_opt_in("EVENTFLEET_WORKER_CONCURRENCY", 1..=1024usize)?;
        let worker = WorkerConfig {
            concurrency: worker_concurrency.unwrap_or(16),
            visibility_timeout: secs(env.parse_in("EVENTFLEET_VISIBILITY_TIMEOUT_S", 30u64, 1..=43_200)?),
            handler_timeout: secs(env.parse_in("EVENTFLEET_HANDLER_TIMEOUT_S", 20u64, 1..=43_200)?),
            drain_timeout: secs(env.parse_in("EVENTFLEET_DRAIN_TIMEOUT_S", 25u64, 0..=3_600)?),
            max_attempts: env.parse_in("EVENTFLEET_MAX_ATTEMPTS", 5u32, 1..=100)?,
            max_receive_count: env.parse_in(
                "EVENTFLEET_MAX_RECEIVE_COUNT",
                eventfleet_storage::queue::DEFAULT_MAX_RECEIVE_COUNT,
                2..=1_000,
            )?,
            retry_base_delay: millis(env.parse_in("EVENTFLEET_RETRY_BASE_DELAY_MS", 1_000u64, 1..=3_600_000)?),
            retry_max_delay: millis(env.parse_in("EVENTFLEET_RETRY_MAX_DELAY_MS", 60_000u64, 1..=43_200_000)?),
            receive_wait: secs(env.parse_in("EVENTFLEET_RECEIVE_WAIT_S", 5u64, 0..=20)?),
            // SQS bills every request, and each receive brings a read, a write and a delete of its own; a receive
            // on the embedded queue is a local query.
            receive_window: millis(env.parse_in(
                "EVENTFLEET_RECEIVE_WINDOW_MS",
                if backend == Backend::Aws { DEFAULT_AWS_RECEIVE_WINDOW_MS } else { 0 },
                0..=1_000,
            )?),
            actor: actor("worker"),
            idempotency_horizon: secs(3600 * env.parse_in("EVENTFLEET_IDEMPOTENCY_HORIZON_H", 72u64, 1..=24 * 365)?),
            channel_pace: eventfleet_workers::slack::ChannelPace {
                interval: millis(env.parse_in("EVENTFLEET_SLACK_CHANNEL_INTERVAL_MS", 1_000u64, 0..=60_000)?),
                burst: env.parse_in("EVENTFLEET_SLACK_CHANNEL_BURST", 3u32, 1..=100)?,
                digests: env.parse_bool("EVENTFLEET_SLACK_DIGESTS", true)?,
            },
            teams: {
                let names = env.list("EVENTFLEET_TEAMS_CHANNELS").unwrap_or_default();
                eventfleet_workers::teams::TeamsWebhooks::load(&names, &|name| lookup(name))
                    .map_err(|why| invalid("EVENTFLEET_TEAMS_CHANNELS", &names.join(","), &why))?
            },
        };
        if worker.retry_max_delay < worker.retry_base_delay {
            return Err(invalid(
                "EVENTFLEET_RETRY_MAX_DELAY_MS",
                &worker.retry_max_delay.as_millis().to_string(),
                "must be at least EVENTFLEET_RETRY_BASE_DELAY_MS",
            ));
        }
        if worker.drain_timeout <= worker.receive_wait {
            return Err(invalid(
                "EVENTFLEET_DRAIN_TIMEOUT_S",
                &worker.drain_timeout.as_secs().to_string(),
                "must exceed EVENTFLEET_RECEIVE_WAIT_S, or messages taken by the last poll stay hidden after exit",
            ));
        }
        if worker.max_receive_count < 2 * worker.max_attempts {
            return Err(invalid(
                "EVENTFLEET_MAX_RECEIVE_COUNT",
                &worker.max_receive_count.to_string(),
                &format!(
                    "must be at least {} (twice EVENTFLEET_MAX_ATTEMPTS, {}): a message waiting behind a failing one \
                     of its group is received with it each time, so the queue's count runs ahead of its own attempts",
                    2 * worker.max_attempts,
                    worker.max_attempts
                ),
            ));
        }
        if worker.handler_timeout >= worker.visibility_timeout {
            return Err(invalid(
                "EVENTFLEET_HANDLER_TIMEOUT_S",
                &worker.handler_timeout.as_secs().to_string(),
                "must be below EVENTFLEET_VISIBILITY_TIMEOUT_S, or a slow handler's message reappears while it runs",
            ));
        }
        let sns_cert_dir = env.text("EVENTFLEET_SNS_CERT_DIR").map(std::path::PathBuf::from);
        if let Some(dir) = &sns_cert_dir
            && !dir.is_dir()
        {
            return Err(invalid("EVENTFLEET_SNS_CERT_DIR", &dir.display().to_string(), "not a directory"));
        }
        let rate_limits = RateLimits {
            global_per_second: env.parse_in("EVENTFLEET_RATE_LIMIT_GLOBAL_RPS", 500u32, 0..=1_000_000)?,
            per_ip: env.parse_in("EVENTFLEET_RATE_LIMIT_PER_IP", 1_000u32, 0..=10_000_000)?,
            per_ip_window: secs(env.parse_in("EVENTFLEET_RATE_LIMIT_PER_IP_WINDOW_S", 300u64, 1..=86_400)?),
            per_hook_per_second: env.parse_in("EVENTFLEET_RATE_LIMIT_PER_HOOK_RPS", 100u32, 0..=1_000_000)?,
            trust_forwarded_for: env.parse_bool("EVENTFLEET_TRUST_FORWARDED_FOR", false)?,
        };
        // Read and validated whole here: a bad entry stops start-up with its name.
        let schedules = match env.text("EVENTFLEET_SCHEDULES_FILE") {
            None => Vec::new(),
            Some(path) => {
                eventfleet_ingress::schedule::Schedules::load(std::path::Path::new(&path))
                    .map_err(|e| invalid("EVENTFLEET_SCHEDULES_FILE", &path, &e.to_string()))?
                    .entries
            }
        };
        let ingress = IngressConfig {
            idempotency_horizon: secs(3600 * env.parse_in("EVENTFLEET_IDEMPOTENCY_HORIZON_H", 72u64, 1..=24 * 365)?),
            body_limit: env.parse_in("EVENTFLEET_BODY_LIMIT_BYTES", 256 * 1024usize, 1_024..=16 * 1024 * 1024)?,
            backend_budget: millis(env.parse_in("EVENTFLEET_BACKEND_BUDGET_MS", 2_000u64, 10..=60_000)?),
            actor: actor("ingress"),
            slack_signing_secret: env.text("EVENTFLEET_SLACK_SIGNING_SECRET").map(Into::into),
            sns_allowed_topics: env.list("EVENTFLEET_SNS_ALLOWED_TOPICS"),
            sns_cert_dir,
            sns_cert_timeout: secs(env.parse_in("EVENTFLEET_SNS_CERT_TIMEOUT_S", 5u64, 1..=60)?),
            rate_limits,
            timeouts: Timeouts {
                read: secs(env.parse_in("EVENTFLEET_READ_TIMEOUT_S", 10u64, 1..=3_600)?),
                idle: secs(env.parse_in("EVENTFLEET_IDLE_TIMEOUT_S", 75u64, 1..=3_600)?),
                drain: worker.drain_timeout,
            },
            schedules,
            ..IngressConfig::default()
        };
        let slack_api_url = env.text("EVENTFLEET_SLACK_API_URL").unwrap_or_else(|| "https://slack.com/api".into());
        if url::Url::parse(&slack_api_url).map_or(true, |u| !matches!(u.scheme(), "http" | "https")) {
            return Err(invalid("EVENTFLEET_SLACK_API_URL", &slack_api_url, "expected an http(s) URL"));
        }
        let socket_mode = socket_mode(&env, &slack_api_url)?;
        let ingress = IngressConfig { socket_mode, ..ingress };
        let mut sns_topic_channels = Vec::new();
        for pair in env.list("EVENTFLEET_SNS_TOPIC_CHANNELS").unwrap_or_default() {
            let Some((topic, channel)) = pair.split_once('=').filter(|(t, c)| !t.is_empty() && !c.is_empty()) else {
                return Err(invalid("EVENTFLEET_SNS_TOPIC_CHANNELS", &pair, "expected topic-arn=channel pairs"));
            };
            sns_topic_channels.push((topic.trim().to_owned(), channel.trim().to_owned()));
        }
        // Alarm storms are burst digests now: a setting of the old storm digest would silently mean nothing.
        for removed in ["EVENTFLEET_ALARM_STORM_THRESHOLD", "EVENTFLEET_ALARM_STORM_WINDOW_S"] {
            if let Some(value) = env.text(removed) {
                return Err(invalid(
                    removed,
                    &value,
                    "is no longer read: an alarm storm folds into its channel's burst digest like any burst \
                     (EVENTFLEET_SLACK_DIGESTS, EVENTFLEET_SLACK_CHANNEL_BURST); unset it",
                ));
            }
        }
        let alarms = eventfleet_workers::handlers::alarm::AlarmSettings {
            reopen_after: secs(env.parse_in("EVENTFLEET_ALARM_REOPEN_AFTER_S", 3_600u64, 0..=30 * 86_400)?),
            flap_replies: env.parse_in("EVENTFLEET_ALARM_FLAP_REPLIES", 3u32, 0..=100)?,
            flap_window: secs(env.parse_in("EVENTFLEET_ALARM_FLAP_WINDOW_S", 600u64, 1..=86_400)?),
        };
        let default_channel = env.text("EVENTFLEET_DEFAULT_CHANNEL").unwrap_or_else(|| "#eventfleet".into());
        // Every channel list named here must parse, and name only Teams channels that have a webhook.
        let teams = &worker.teams;
        check_channels("EVENTFLEET_DEFAULT_CHANNEL", &default_channel, teams)?;
        for (_, channel) in &sns_topic_channels {
            check_channels("EVENTFLEET_SNS_TOPIC_CHANNELS", channel, teams)?;
        }
        for schedule in &ingress.schedules {
            if let eventfleet_ingress::schedule::Action::Post { channel, .. } = &schedule.action {
                check_channels("EVENTFLEET_SCHEDULES_FILE", channel, teams)?;
            }
        }
        let aws = aws_settings(&env)?;
        // Read and validated whole here, secrets included: a bad route stops start-up with its name.
        let routes = match env.text("EVENTFLEET_ROUTES_FILE") {
            None => Vec::new(),
            Some(path) => eventfleet_workers::destinations::routes::load(
                std::path::Path::new(&path),
                &|name| lookup(name),
                worker.handler_timeout,
            )
            .map_err(|e| invalid("EVENTFLEET_ROUTES_FILE", &path, &e.to_string()))?,
        };
        for route in &routes {
            if let eventfleet_workers::destinations::routes::Target::Channel(channel) = &route.target {
                check_channels("EVENTFLEET_ROUTES_FILE", channel, &worker.teams)?;
            }
        }
        Ok(Config {
            aws,
            routes,
            backend,
            listen: env.parse("EVENTFLEET_LISTEN")?,
            worker_concurrency,
            metrics_listen: env
                .parse("EVENTFLEET_METRICS_LISTEN")?
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 9091))),
            public_url,
            slack_bot_token: env.text("EVENTFLEET_SLACK_BOT_TOKEN").map(Into::into),
            slack_api_url,
            default_channel,
            sns_topic_channels,
            alarms,
            log_format,
            durability,
            retention,
            hook_cache,
            ingress,
            worker,
            console: ConsoleConfig {
                listen: env
                    .parse("EVENTFLEET_CONSOLE_LISTEN")?
                    .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9092))),
                token: console_token(&env)?,
                trust_alb_oidc: env.parse_bool("EVENTFLEET_CONSOLE_TRUST_ALB_OIDC", false)?,
            },
        })
    }
}

/// A channel list (`#ops+teams:oncall`) that parses and names only configured Teams channels.
fn check_channels(
    var: &'static str,
    channel: &str,
    teams: &eventfleet_workers::teams::TeamsWebhooks,
) -> Result<(), ConfigError> {
    let targets = eventfleet_workers::targets::Targets::parse(channel).map_err(|why| invalid(var, channel, &why))?;
    if let Some(name) = targets.teams.iter().find(|name| !teams.has(name)) {
        return Err(invalid(
            var,
            channel,
            &format!(
                "the Teams channel {name} is not in EVENTFLEET_TEAMS_CHANNELS (list it there and set {})",
                eventfleet_workers::teams::url_variable(name)
            ),
        ));
    }
    Ok(())
}

/// `EVENTFLEET_CONSOLE_TOKEN`, long enough not to be guessed at the login form.
fn console_token(env: &Env<'_>) -> Result<Option<eventfleet_schema::Secret>, ConfigError> {
    match env.text("EVENTFLEET_CONSOLE_TOKEN") {
        Some(token) if token.len() < 16 => {
            Err(invalid("EVENTFLEET_CONSOLE_TOKEN", "(hidden)", "must be at least 16 characters"))
        }
        token => Ok(token.map(Into::into)),
    }
}

/// Slack Socket Mode, on when `EVENTFLEET_SLACK_APP_TOKEN` is set.
fn socket_mode(
    env: &Env<'_>,
    api_url: &str,
) -> Result<Option<eventfleet_ingress::socket_mode::SocketModeConfig>, ConfigError> {
    use eventfleet_ingress::socket_mode::{MAX_CONNECTIONS, SocketModeConfig};
    let connections = env.parse_in("EVENTFLEET_SLACK_SOCKET_CONNECTIONS", 2usize, 1..=MAX_CONNECTIONS)?;
    let ping_timeout = secs(env.parse_in("EVENTFLEET_SLACK_SOCKET_PING_TIMEOUT_S", 30u64, 3..=600)?);
    let Some(token) = env.text("EVENTFLEET_SLACK_APP_TOKEN") else {
        return Ok(None);
    };
    if !token.starts_with("xapp-") {
        // The value is a secret: never echoed.
        return Err(invalid(
            "EVENTFLEET_SLACK_APP_TOKEN",
            "(hidden)",
            "expected an app-level token (xapp-...), made under Basic Information > App-Level Tokens with the \
             connections:write scope; a bot token (xoxb-) goes in EVENTFLEET_SLACK_BOT_TOKEN",
        ));
    }
    Ok(Some(SocketModeConfig { app_token: token.into(), api_url: api_url.to_owned(), connections, ping_timeout }))
}

fn aws_settings(env: &Env<'_>) -> Result<AwsSettings, ConfigError> {
    use eventfleet_storage::aws::Names;
    let prefix =
        env.text("EVENTFLEET_NAME_PREFIX").unwrap_or_else(|| eventfleet_storage::aws::names::DEFAULT_PREFIX.into());
    if !Names::valid_prefix(&prefix) {
        return Err(invalid("EVENTFLEET_NAME_PREFIX", &prefix, "expected 1 to 60 letters, digits, `-` or `_`"));
    }
    let mut names = Names::from_prefix(&prefix);
    let http_url = |name: &'static str| -> Result<Option<String>, ConfigError> {
        match env.text(name) {
            Some(url) if url::Url::parse(&url).map_or(true, |u| !matches!(u.scheme(), "http" | "https")) => {
                Err(invalid(name, &url, "expected an http(s) URL"))
            }
            other => Ok(other),
        }
    };
    let endpoint_url = http_url("EVENTFLEET_AWS_ENDPOINT_URL")?;
    names.queue_url = http_url("EVENTFLEET_QUEUE_URL")?;
    names.dlq_url = http_url("EVENTFLEET_DLQ_URL")?;
    for (var, slot) in [
        ("EVENTFLEET_IDEMPOTENCY_TABLE", &mut names.idempotency_table),
        ("EVENTFLEET_AUDIT_TABLE", &mut names.audit_table),
        ("EVENTFLEET_RETRIES_TABLE", &mut names.retries_table),
        ("EVENTFLEET_WEBHOOKS_TABLE", &mut names.webhooks_table),
        ("EVENTFLEET_ALARM_THREADS_TABLE", &mut names.alarm_threads_table),
        ("EVENTFLEET_CLOUDWATCH_NAMESPACE", &mut names.metrics_namespace),
    ] {
        if let Some(v) = env.text(var) {
            *slot = v;
        }
    }
    let ops_topic_arn = env.text("EVENTFLEET_OPS_TOPIC_ARN");
    if let Some(arn) = &ops_topic_arn
        && !arn.starts_with("arn:")
    {
        return Err(invalid("EVENTFLEET_OPS_TOPIC_ARN", arn, "expected a topic ARN (arn:aws:sns:...)"));
    }
    let interval = env.parse_in("EVENTFLEET_CLOUDWATCH_INTERVAL_S", 60u64, 0..=3_600)?;
    Ok(AwsSettings {
        endpoint_url,
        names,
        ops_topic_arn,
        cloudwatch_interval: (interval > 0).then(|| Duration::from_secs(interval)),
        send_batches_in_flight: env.parse_in("EVENTFLEET_ENQUEUE_BATCHES_IN_FLIGHT", 4usize, 1..=64)?,
        send_linger: Duration::from_millis(env.parse_in("EVENTFLEET_ENQUEUE_LINGER_MS", 50u64, 0..=100)?),
    })
}

struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    /// A non-empty value.
    fn text(&self, name: &str) -> Option<String> {
        (self.0)(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    /// A comma-separated list; `None` when unset.
    fn list(&self, name: &str) -> Option<Vec<String>> {
        self.text(name).map(|v| v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
    }

    fn parse_bool(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.text(name).as_deref() {
            None => Ok(default),
            // What the docs list, nothing else: `yes` or `on` read as true would be a guess.
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(other) => Err(invalid(name, other, "expected `true` or `false`")),
        }
    }

    fn parse<T: FromStr>(&self, name: &'static str) -> Result<Option<T>, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        self.text(name).map(|v| v.parse::<T>().map_err(|e| invalid(name, &v, &e.to_string()))).transpose()
    }

    /// [`Env::parse_in`] without a default: `None` when unset.
    fn parse_opt_in<T>(&self, name: &'static str, range: std::ops::RangeInclusive<T>) -> Result<Option<T>, ConfigError>
    where
        T: FromStr + PartialOrd + std::fmt::Display + Copy,
        T::Err: std::fmt::Display,
    {
        match self.parse::<T>(name)? {
            None => Ok(None),
            Some(value) => self.parse_in(name, value, range).map(Some),
        }
    }

    fn parse_in<T>(&self, name: &'static str, default: T, range: std::ops::RangeInclusive<T>) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + std::fmt::Display + Copy,
        T::Err: std::fmt::Display,
    {
        let value = self.parse::<T>(name)?.unwrap_or(default);
        if !range.contains(&value) {
            return Err(invalid(
                name,
                &value.to_string(),
                &format!("must be between {} and {}", range.start(), range.end()),
            ));
        }
        Ok(value)
    }
}

fn invalid(var: &'static str, value: &str, reason: &str) -> ConfigError {
    ConfigError { var, value: value.to_owned(), reason: reason.to_owned() }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// `role@host:pid`, as the audit trail names the process.
fn actor(role: &str) -> String {
    let host = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "localhost".into());
    format!("{role}@{host}:{}", std::process::id())
}

/// `EVENTFLEET_RECEIVE_WINDOW_MS` on the aws backend: see docs/configuration.md.
pub const DEFAULT_AWS_RECEIVE_WINDOW_MS: u64 = 100;

/// `tracing` levels, as `EVENTFLEET_LOG` names them.
const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Checks an `EVENTFLEET_LOG` filter: comma-separated directives, each a level (`info`) or `target=level`
/// (`eventfleet_storage=debug`). `EnvFilter` would take a misspelt level (`debg`) as a target's name and start
/// with no logs at all, so a directive without `=` must be a level.
fn check_log_filter(filter: &str) -> Result<(), String> {
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = directive.rsplit_once('=').map_or(directive, |(_, level)| level);
        if !LOG_LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level)) {
            return Err(format!(
                "{directive:?} is not a level: expected one of {} or TARGET=LEVEL (e.g. info,eventfleet_storage=debug)",
                LOG_LEVELS.join(", ")
            ));
        }
    }
    tracing_subscriber::EnvFilter::try_new(filter).map(|_| ()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_match_the_design() {
        let c = config(&[]).unwrap();
        assert_eq!(c.backend, Backend::Embedded);
        assert_eq!(c.worker.max_attempts, 5);
        assert_eq!(c.worker.max_receive_count, 50);
        assert_eq!(c.worker.drain_timeout, Duration::from_secs(25));
        assert_eq!(c.ingress.body_limit, 256 * 1024);
        assert_eq!(c.ingress.idempotency_horizon, Duration::from_secs(72 * 3600));
        assert_eq!(c.ingress.timeouts.read, Duration::from_secs(10));
        assert_eq!(c.ingress.timeouts.idle, Duration::from_secs(75));
        assert_eq!(c.ingress.timeouts.drain, c.worker.drain_timeout, "the ingress drains as long as the workers");
        assert_eq!((c.worker_concurrency, c.worker.concurrency), (None, 16));
        assert_eq!(c.worker.receive_window, Duration::ZERO, "the embedded queue's receive is a local query");
        let aws = config(&[("EVENTFLEET_BACKEND", "aws")]).unwrap();
        assert_eq!(aws.worker.receive_window, Duration::from_millis(DEFAULT_AWS_RECEIVE_WINDOW_MS));
        let set = config(&[("EVENTFLEET_BACKEND", "aws"), ("EVENTFLEET_RECEIVE_WINDOW_MS", "0")]).unwrap();
        assert_eq!(set.worker.receive_window, Duration::ZERO);
    }

    #[test]
    fn connection_deadlines_and_concurrency_are_read() {
        let c = config(&[
            ("EVENTFLEET_READ_TIMEOUT_S", "3"),
            ("EVENTFLEET_IDLE_TIMEOUT_S", "120"),
            ("EVENTFLEET_DRAIN_TIMEOUT_S", "12"),
            ("EVENTFLEET_WORKER_CONCURRENCY", "3"),
        ])
        .unwrap();
        assert_eq!(c.ingress.timeouts.read, Duration::from_secs(3));
        assert_eq!(c.ingress.timeouts.idle, Duration::from_secs(120));
        assert_eq!(c.ingress.timeouts.drain, Duration::from_secs(12));
        assert_eq!((c.worker_concurrency, c.worker.concurrency), (Some(3), 3));
    }

    #[test]
    fn errors_say_what_to_write_instead() {
        let err = config(&[("EVENTFLEET_MAX_RECEIVE_COUNT", "6")]).unwrap_err().to_string();
        assert!(err.contains("at least 10 (twice EVENTFLEET_MAX_ATTEMPTS, 5)"), "{err}");
        let err = config(&[("EVENTFLEET_LOG", "debg")]).unwrap_err().to_string();
        assert!(err.contains("\"debg\" is not a level") && err.contains("debug"), "{err}");
        for fine in ["debug", "info,eventfleet_storage=debug", "WARN", "eventfleet_workers[worker.process]=trace"] {
            config(&[("EVENTFLEET_LOG", fine)]).unwrap_or_else(|e| panic!("{fine}: {e}"));
        }
        let c = config(&[("EVENTFLEET_CONSOLE_TRUST_ALB_OIDC", "true")]).unwrap();
        assert!(c.console.trust_alb_oidc);
    }

    #[test]
    fn teams_channels_need_their_url_and_every_list_names_known_ones() {
        let url = ("EVENTFLEET_TEAMS_WEBHOOK_ON_CALL", "https://example.webhook.office.com/webhookb2/x?sig=hunter2");
        let c = config(&[
            ("EVENTFLEET_TEAMS_CHANNELS", "on-call"),
            url,
            ("EVENTFLEET_DEFAULT_CHANNEL", "#ops+teams:on-call"),
            ("EVENTFLEET_SNS_TOPIC_CHANNELS", "arn:aws:sns:eu-west-1:1:alarms=teams:on-call"),
        ])
        .unwrap();
        assert!(c.worker.teams.has("on-call"));
        assert!(!format!("{c:?}").contains("hunter2"), "the URL is a secret");
        let err = config(&[("EVENTFLEET_TEAMS_CHANNELS", "on-call")]).unwrap_err().to_string();
        assert!(err.contains("EVENTFLEET_TEAMS_WEBHOOK_ON_CALL"), "{err}");
        let err =
            config(&[("EVENTFLEET_TEAMS_CHANNELS", "on-call"), ("EVENTFLEET_TEAMS_WEBHOOK_ON_CALL", "nope hunter2")])
                .unwrap_err()
                .to_string();
        assert!(err.contains("not an http(s) URL") && !err.contains("hunter2"), "{err}");
        let err = config(&[("EVENTFLEET_SNS_TOPIC_CHANNELS", "arn:aws:sns:eu-west-1:1:alarms=#a+teams:ops")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("EVENTFLEET_SNS_TOPIC_CHANNELS") && err.contains("EVENTFLEET_TEAMS_WEBHOOK_OPS"), "{err}");
        let err = config(&[("EVENTFLEET_DEFAULT_CHANNEL", "#a+#b")]).unwrap_err().to_string();
        assert!(err.contains("EVENTFLEET_DEFAULT_CHANNEL") && err.contains("two Slack channels"), "{err}");
    }

    #[test]
    fn invalid_values_name_the_variable() {
        let cases = [
            ("EVENTFLEET_BACKEND", "postgres"),
            ("EVENTFLEET_MAX_RECEIVE_COUNT", "0"),
            ("EVENTFLEET_MAX_RECEIVE_COUNT", "five"),
            ("EVENTFLEET_MAX_RECEIVE_COUNT", "5"),
            ("EVENTFLEET_MAX_ATTEMPTS", "0"),
            ("EVENTFLEET_MAX_ATTEMPTS", "101"),
            ("EVENTFLEET_LISTEN", "localhost"),
            ("EVENTFLEET_LOG_FORMAT", "xml"),
            ("EVENTFLEET_PUBLIC_URL", "ftp://x"),
            ("EVENTFLEET_HANDLER_TIMEOUT_S", "30"),
            ("EVENTFLEET_SNS_TOPIC_CHANNELS", "arn:aws:sns:x"),
            ("EVENTFLEET_ALARM_STORM_WINDOW_S", "30"),
            ("EVENTFLEET_ALARM_STORM_THRESHOLD", "0"),
            ("EVENTFLEET_SLACK_CHANNEL_BURST", "0"),
            ("EVENTFLEET_ALARM_FLAP_REPLIES", "many"),
            ("EVENTFLEET_SNS_CERT_DIR", "/no/such/dir"),
            ("EVENTFLEET_TRUST_FORWARDED_FOR", "maybe"),
            ("EVENTFLEET_SLACK_API_URL", "slack.com/api"),
            ("EVENTFLEET_DRAIN_TIMEOUT_S", "2"),
            ("EVENTFLEET_READ_TIMEOUT_S", "0"),
            ("EVENTFLEET_IDLE_TIMEOUT_S", "soon"),
            ("EVENTFLEET_WORKER_CONCURRENCY", "0"),
            ("EVENTFLEET_HOOK_CACHE_S", "301"),
            ("EVENTFLEET_ENQUEUE_LINGER_MS", "101"),
            ("EVENTFLEET_RECEIVE_WINDOW_MS", "1001"),
            ("EVENTFLEET_RECEIVE_WINDOW_MS", "-1"),
            ("EVENTFLEET_SLACK_APP_TOKEN", "xoxb-a-bot-token"),
            ("EVENTFLEET_SLACK_SOCKET_CONNECTIONS", "11"),
            ("EVENTFLEET_SLACK_SOCKET_CONNECTIONS", "0"),
            ("EVENTFLEET_SLACK_SOCKET_PING_TIMEOUT_S", "1"),
            ("EVENTFLEET_LOG", "debg"),
            ("EVENTFLEET_LOG", "info,eventfleet_storage=verbose"),
            ("EVENTFLEET_CONSOLE_TRUST_ALB_OIDC", "yes"),
            ("EVENTFLEET_CONSOLE_TRUST_ALB_OIDC", "1"),
        ];
        for (var, value) in cases {
            let err = config(&[(var, value)]).expect_err(var).to_string();
            assert!(err.starts_with(var), "{err}");
        }
        let err = config(&[("EVENTFLEET_SLACK_APP_TOKEN", "xoxb-secret-value")]).unwrap_err().to_string();
        assert!(!err.contains("secret-value"), "a token is never echoed: {err}");
        let socket =
            config(&[("EVENTFLEET_SLACK_APP_TOKEN", "xapp-1-A1-2-abc"), ("EVENTFLEET_SLACK_SOCKET_CONNECTIONS", "3")])
                .unwrap()
                .ingress
                .socket_mode
                .expect("socket mode on");
        assert_eq!((socket.connections, socket.ping_timeout), (3, Duration::from_secs(30)));
        assert!(config(&[]).unwrap().ingress.socket_mode.is_none());
        let err = config(&[("EVENTFLEET_RETRY_BASE_DELAY_MS", "5000"), ("EVENTFLEET_RETRY_MAX_DELAY_MS", "100")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("EVENTFLEET_RETRY_MAX_DELAY_MS"), "{err}");
    }
}
