//! The command-line contract (docs/operations.md). `--data-dir` is global; every read command takes `--json`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Where the embedded store and the dev outbox live unless `--data-dir` or `EVENTFLEET_DATA_DIR` says otherwise.
pub const DEFAULT_DATA_DIR: &str = "./.eventfleet";

/// A listen address: `HOST:PORT`, with an error that says so (a bare port is a common slip).
fn listen_addr(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| match text.trim().parse::<u16>() {
        Ok(port) => format!("expected HOST:PORT, e.g. 127.0.0.1:{port} (or 0.0.0.0:{port} for every interface)"),
        Err(_) => "expected HOST:PORT, e.g. 127.0.0.1:8080".to_owned(),
    })
}

/// A JSON pointer (RFC 6901): empty for the whole document is no use as a group key, so `/` and a name at least.
fn json_pointer(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.len() < 2 || !text.starts_with('/') || text.len() > 200 {
        return Err("expected a JSON pointer like /service or /labels/team (RFC 6901, at most 200 characters)".into());
    }
    Ok(text.to_owned())
}

/// Event ingress and worker fleet for SRE teams.
#[derive(Debug, Parser)]
#[command(name = "eventfleet", version, about)]
pub struct Cli {
    /// Directory of the embedded store and the dev outbox.
    #[arg(long, global = true, env = "EVENTFLEET_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ingress and workers in one process on the embedded backend.
    Dev {
        /// Address to listen on (default: `EVENTFLEET_LISTEN`, else 127.0.0.1:8080).
        #[arg(long, value_parser = listen_addr)]
        listen: Option<SocketAddr>,
        /// Concurrent handlers (default: `EVENTFLEET_WORKER_CONCURRENCY`, else 8).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
        workers: Option<u16>,
    },
    /// The ingress service (configured by environment).
    Ingress {
        /// Address to listen on (default: `EVENTFLEET_LISTEN`, else 0.0.0.0:8080).
        #[arg(long, value_parser = listen_addr)]
        listen: Option<SocketAddr>,
    },
    /// The worker service (configured by environment).
    Worker,
    /// Ingress and workers in one process, configured by environment: the production shape on one machine.
    Serve {
        /// Address to listen on (default: `EVENTFLEET_LISTEN`, else 0.0.0.0:8080).
        #[arg(long, value_parser = listen_addr)]
        listen: Option<SocketAddr>,
    },
    /// The operator console: status, events, dead letters and hooks in a browser (its own listener, never the
    /// public ingress port).
    Console {
        /// Address to listen on (default: `EVENTFLEET_CONSOLE_LISTEN`, else 127.0.0.1:9092).
        #[arg(long, value_parser = listen_addr)]
        listen: Option<SocketAddr>,
    },
    /// The webhook registry.
    Hooks {
        /// What to do with hooks.
        #[command(subcommand)]
        command: HooksCommand,
    },
    /// The schedules of `EVENTFLEET_SCHEDULES_FILE`.
    Schedules {
        /// What to do with schedules.
        #[command(subcommand)]
        command: SchedulesCommand,
    },
    /// Audit trails of events.
    Events {
        /// What to do with events.
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// The dead-letter queue: list, show, replay, purge.
    Dlq {
        /// What to do with dead letters.
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Messages the workers wrote to the dev outbox (no Slack bot token configured).
    Outbox(JsonFlag),
    /// Create the store's queues and tables.
    Tables {
        /// What to do with tables.
        #[command(subcommand)]
        command: TablesCommand,
    },
    /// Queue depth, in-flight, oldest message age, dead letters.
    Status(JsonFlag),
    /// The Slack app this fleet needs.
    Slack {
        /// What to do.
        #[command(subcommand)]
        command: SlackCommand,
    },
    /// Check a captured request's signature offline (body on stdin): exit 0 valid, 1 invalid with the reason.
    Verify {
        /// Which sender.
        #[command(subcommand)]
        command: VerifyCommand,
    },
}

/// `eventfleet slack ...`
#[derive(Debug, Subcommand)]
pub enum SlackCommand {
    /// Print the Slack app manifest (JSON) for "Create an app → From a manifest": the bot scopes the code
    /// needs, the event, command and interactivity URLs from `EVENTFLEET_PUBLIC_URL`, or Socket Mode when
    /// `EVENTFLEET_SLACK_APP_TOKEN` is set.
    Manifest {
        /// The app's and its bot user's name.
        #[arg(long, default_value = "eventfleet")]
        name: String,
        /// The slash command.
        #[arg(long, default_value = "/eventfleet")]
        command: String,
    },
}

/// `eventfleet verify ...`
#[derive(Debug, Subcommand)]
pub enum VerifyCommand {
    /// A Slack request (`X-Slack-Request-Timestamp`, `X-Slack-Signature`).
    Slack {
        /// The signing secret.
        #[arg(long)]
        secret: String,
        /// `X-Slack-Request-Timestamp`.
        #[arg(long)]
        timestamp: String,
        /// `X-Slack-Signature` (`v0=...`).
        #[arg(long)]
        signature: String,
        /// Check the 300 s window at this time (Unix seconds or RFC 3339) instead of now.
        #[arg(long)]
        at: Option<String>,
    },
    /// A GitHub (or any `X-Hub-Signature-256`) delivery.
    Github {
        /// The hook secret.
        #[arg(long)]
        secret: String,
        /// `X-Hub-Signature-256` (`sha256=...`).
        #[arg(long)]
        signature: String,
    },
    /// An SNS message (the JSON body).
    Sns {
        /// The signing certificate (PEM); default: fetched from `SigningCertURL`.
        #[arg(long)]
        cert: Option<PathBuf>,
        /// Check the certificate's validity at this time (Unix seconds or RFC 3339) instead of now.
        #[arg(long)]
        at: Option<String>,
    },
}

/// `--json`: print one JSON document on stdout.
#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `eventfleet hooks ...`
#[derive(Debug, Subcommand)]
pub enum HooksCommand {
    /// Register a hook; prints `{"id", "url", ...}` as JSON.
    Create {
        /// A human name.
        #[arg(long)]
        name: String,
        /// The Slack channel its events go to.
        #[arg(long)]
        channel: String,
        /// Alert or info.
        #[arg(long, value_enum, default_value = "info")]
        kind: HookKindArg,
        /// Generate an HMAC secret; senders sign with `X-Hub-Signature-256`.
        #[arg(long)]
        secret: bool,
        /// Who creates it (default: `$USER`).
        #[arg(long, env = "USER", default_value = "operator")]
        by: String,
        /// The hook's filter of GitHub deliveries.
        #[command(flatten)]
        filter: FilterArgs,
        /// A JSON pointer (like `/service`) into its JSON payloads: payloads with the same value there run in
        /// order, different values side by side (default: all of the hook's payloads in one order).
        #[arg(long, value_name = "POINTER", value_parser = json_pointer)]
        group_key: Option<String>,
        /// Post GitHub runs, deployments and pull requests as a message per delivery, as other GitHub events
        /// are (default: one message each, updated in place as its deliveries arrive).
        #[arg(long)]
        per_delivery: bool,
    },
    /// How a hook posts GitHub runs, deployments and pull requests: `living` (one message each, updated in place;
    /// the default) or `per-delivery` (a message per delivery).
    Messages {
        /// Hook id.
        id: String,
        /// `living` or `per-delivery`.
        #[arg(value_enum)]
        messages: MessagesArg,
    },
    /// Set a hook's group key (a JSON pointer into its payloads), or remove it with `--clear`.
    GroupKey {
        /// Hook id.
        id: String,
        /// The JSON pointer, like `/service` or `/labels/team`.
        #[arg(value_parser = json_pointer, conflicts_with = "clear")]
        pointer: Option<String>,
        /// Remove the group key: every payload of the hook in one order again.
        #[arg(long)]
        clear: bool,
    },
    /// Set a hook's filter of GitHub deliveries (replacing the one it had), or remove it with `--clear`.
    Filter {
        /// Hook id.
        id: String,
        /// The new filter.
        #[command(flatten)]
        filter: FilterArgs,
        /// Remove the filter: every delivery is posted.
        #[arg(long, conflicts_with_all = ["only", "skip"])]
        clear: bool,
    },
    /// Every hook.
    List(JsonFlag),
    /// Enable a hook.
    Enable {
        /// Hook id.
        id: String,
    },
    /// Disable a hook: its URL answers 404.
    Disable {
        /// Hook id.
        id: String,
    },
}

/// A hook's filter: rules `event[.action][=outcome|outcome...]` (docs/operations.md, "GitHub messages").
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FilterArgs {
    /// Post only GitHub deliveries matching this rule (repeatable), e.g. `workflow_run=failure|cancelled`.
    #[arg(long = "only", value_name = "RULE")]
    pub only: Vec<String>,
    /// Never post GitHub deliveries matching this rule (repeatable), e.g. `pull_request.synchronize`.
    #[arg(long = "skip", value_name = "RULE")]
    pub skip: Vec<String>,
}

/// How a hook posts GitHub runs, deployments and pull requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MessagesArg {
    /// One message each, updated in place.
    Living,
    /// A message per delivery.
    PerDelivery,
}

/// Hook kinds on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum HookKindArg {
    /// Alerts.
    Alert,
    /// Informational.
    Info,
}

/// `eventfleet schedules ...`
#[derive(Debug, Subcommand)]
pub enum SchedulesCommand {
    /// Each schedule, its next tick, and its last tick's event and outcome.
    List(JsonFlag),
}

/// `eventfleet events ...`
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// An event's audit timeline and retry record.
    Show {
        /// Event id, idempotency key, or the sender's own id (Slack `event_id`, `X-GitHub-Delivery`, SNS
        /// `MessageId`).
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Search the event log (events kept for `EVENTFLEET_RETENTION_H` after they are done), oldest first, a page
    /// at a time.
    List {
        /// Filters.
        #[command(flatten)]
        filter: EventFilterArgs,
        /// At most N events (1 to 1000).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=1000))]
        limit: u16,
        /// Go on after this point (the `next` the previous page printed).
        #[arg(long)]
        after: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run retained events again: every handler, or one route (`--to-route`, the backfill of a new destination).
    Replay {
        /// Event ids (or idempotency keys, senders' own ids); or `--all`, or filters.
        ids: Vec<String>,
        /// Every retained event (with filters: every matching one).
        #[arg(long)]
        all: bool,
        /// Filters.
        #[command(flatten)]
        filter: EventFilterArgs,
        /// Deliver to this route only (its destination or chats), whether or not it matched the event.
        #[arg(long, value_name = "ROUTE")]
        to_route: Option<String>,
        /// Post new messages in the chats. Without it a replayed event looks for the messages its earlier runs
        /// made and posts only what is missing, so replaying twice by mistake posts nothing twice.
        #[arg(long)]
        post_again: bool,
        /// Show the count, the message groups and the time range; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// At most N events per second.
        #[arg(long)]
        rate: Option<f64>,
        /// Why (written on each event's trail).
        #[arg(long)]
        reason: Option<String>,
        /// Who replays (audited).
        #[arg(long, env = "USER", default_value = "operator")]
        by: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Which retained events: `--since --until --source --kind --hook --route --outcome`.
#[derive(Debug, Args, Clone, Default)]
pub struct EventFilterArgs {
    /// Received at or after: RFC 3339, Unix seconds, or an age like `30m`, `2h`, `7d`.
    #[arg(long)]
    pub since: Option<String>,
    /// Received before: same forms as `--since`.
    #[arg(long)]
    pub until: Option<String>,
    /// Source: slack, github, hook, sns, schedule, digest.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(eventfleet_schema::Source::NAMES))]
    pub source: Option<String>,
    /// Kind, exactly or with `*` (`sns.cloudwatch_alarm`, `github.*`).
    #[arg(long)]
    pub kind: Option<String>,
    /// The hook id the events arrived on.
    #[arg(long)]
    pub hook: Option<String>,
    /// Events this route (in `EVENTFLEET_ROUTES_FILE`) matches.
    #[arg(long)]
    pub route: Option<String>,
    /// Outcome: pending, succeeded, filtered, dead_lettered.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["pending", "succeeded", "filtered", "dead_lettered"]))]
    pub outcome: Option<String>,
}

impl EventFilterArgs {
    /// Whether no filter is set.
    pub fn is_empty(&self) -> bool {
        self.since.is_none()
            && self.until.is_none()
            && self.source.is_none()
            && self.kind.is_none()
            && self.hook.is_none()
            && self.route.is_none()
            && self.outcome.is_none()
    }
}

/// `eventfleet tables ...`
#[derive(Debug, Subcommand)]
pub enum TablesCommand {
    /// Create queues and tables (idempotent): the embedded store, or on the aws backend the queues, tables and
    /// ops topic (for an emulator or a sandbox; production uses Terraform).
    Create,
    /// The AWS queue, table, index and TTL names the code uses (from `EVENTFLEET_NAME_PREFIX`); Terraform is
    /// checked against this.
    Describe(JsonFlag),
}

/// Which dead letters: `--source --kind --error --since --until`.
#[derive(Debug, Args, Clone, Default)]
pub struct DlqFilterArgs {
    /// Source: slack, github, hook, sns, schedule.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(eventfleet_schema::Source::NAMES))]
    pub source: Option<String>,
    /// Exact kind (`sns.cloudwatch_alarm`, `github.push`, ...).
    #[arg(long)]
    pub kind: Option<String>,
    /// Case-insensitive text in the dead-letter reason.
    #[arg(long)]
    pub error: Option<String>,
    /// Dead-lettered at or after: RFC 3339, Unix seconds, or an age like `30m`, `2h`, `7d`.
    #[arg(long)]
    pub since: Option<String>,
    /// Dead-lettered before: same forms as `--since`.
    #[arg(long)]
    pub until: Option<String>,
}

/// Dead letters named by id, or `--all`, or filters (what `replay` and `purge` act on).
#[derive(Debug, Args, Clone, Default)]
pub struct DlqSelection {
    /// Dead-letter ids (or event ids, idempotency keys, senders' own ids); or `--all`, or filters.
    pub ids: Vec<String>,
    /// Every dead letter (with filters: every matching one).
    #[arg(long)]
    pub all: bool,
    /// Filters.
    #[command(flatten)]
    pub filter: DlqFilterArgs,
}

/// `eventfleet dlq ...`
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Dead letters, oldest first.
    List {
        /// Filters.
        #[command(flatten)]
        filter: DlqFilterArgs,
        /// At most this many.
        #[arg(long)]
        limit: Option<usize>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One dead letter with its retry record and audit trail.
    Show {
        /// Dead-letter id (from `dlq list`), or an event id, idempotency key or sender's own id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Put dead letters back on the queue (group order kept, each audited with `--by`).
    Replay {
        /// Which dead letters.
        #[command(flatten)]
        selection: DlqSelection,
        /// Show what would be replayed; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// At most N replays per second.
        #[arg(long)]
        rate: Option<f64>,
        /// Who replays (audited).
        #[arg(long, env = "USER", default_value = "operator")]
        by: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete dead letters for good.
    Purge {
        /// Which dead letters.
        #[command(flatten)]
        selection: DlqSelection,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}
