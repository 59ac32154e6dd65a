//! Slack Socket Mode as a source: the ingress opens WebSocket connections to Slack (no public Request URL) and
//! every envelope on them goes through the same accept step as its HTTP twin; **an envelope is acked only after
//! its event is durable**, so a backend failure or a crash leaves it unacked and Slack redelivers it.
//!
//! - [`open`]: `apps.connections.open`, the handshake, `hello`.
//! - [`connection`]: one connection's envelopes, acks, pings and its end.
//! - [`envelope`]: frames parsed, envelopes turned into events.
//!
//! Each of the `connections` slots keeps one connection open. A `warning` or `refresh_requested` disconnect
//! opens the replacement first and then retires the old connection, so no envelope falls in a gap; a lost or
//! half-open connection is replaced with backoff; `too_many_websockets` waits longer; `link_disabled` (or a
//! token Slack refuses) stops Socket Mode and `/ready` says why.

pub mod connection;
pub mod envelope;
pub mod open;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::BackoffBuilder;
use eventfleet_schema::Secret;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::AppState;
use connection::{Live, Signal};
use open::{OpenError, Opener};

/// Slack's limit of connections per app.
pub const MAX_CONNECTIONS: usize = 10;

/// How long a slot waits after `too_many_websockets` (another process, or a leak, holds the app's connections).
const TOO_MANY_WAIT: Duration = Duration::from_secs(60);

/// Socket Mode settings.
#[derive(Debug, Clone)]
pub struct SocketModeConfig {
    /// The app-level token (`xapp-…`, scope `connections:write`).
    pub app_token: Secret,
    /// The Web API base URL `apps.connections.open` is called on.
    pub api_url: String,
    /// Connections this process keeps open (1 to [`MAX_CONNECTIONS`]).
    pub connections: usize,
    /// A connection without a frame (a ping, a pong, an envelope) for this long is half-open and replaced;
    /// pings go out every third of it.
    pub ping_timeout: Duration,
}

/// What `/ready` reports of Socket Mode.
#[derive(Debug)]
pub struct SocketStatus {
    wanted: usize,
    open: AtomicUsize,
    stopped: Mutex<Option<String>>,
}

impl SocketStatus {
    /// The status of a process that wants `wanted` connections.
    pub fn new(wanted: usize) -> Self {
        Self { wanted, open: AtomicUsize::new(0), stopped: Mutex::new(None) }
    }

    fn opened(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    fn closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    fn stop(&self, why: String) {
        *self.stopped.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
    }

    /// Ready when at least one connection is open and Socket Mode has not stopped.
    pub fn ready(&self) -> bool {
        self.open.load(Ordering::Relaxed) > 0 && self.stopped.lock().unwrap_or_else(|p| p.into_inner()).is_none()
    }

    /// `{connections_open, connections_wanted, stopped?}`.
    pub fn report(&self) -> Value {
        let mut report = json!({
            "connections_open": self.open.load(Ordering::Relaxed),
            "connections_wanted": self.wanted,
        });
        if let Some(why) = self.stopped.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            report["stopped"] = Value::String(why);
        }
        report
    }
}

/// Shared by the slots.
struct Shared {
    state: AppState,
    opener: Opener,
    ping_timeout: Duration,
    next_id: AtomicU64,
    /// Cancelled at shutdown, and when Socket Mode stops for good.
    stop: CancellationToken,
}

/// Runs Socket Mode until `shutdown` (or until Slack disables it); returns when every connection has closed.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    let (Some(config), Some(status)) = (state.config.socket_mode.clone(), state.socket.clone()) else {
        return;
    };
    let opener = match Opener::new(&config) {
        Ok(opener) => opener,
        Err(e) => {
            tracing::error!(error = %e, "Socket Mode cannot start");
            status.stop(e);
            return;
        }
    };
    tracing::info!(connections = config.connections, api = %config.api_url, "Socket Mode starting");
    let shared = Arc::new(Shared {
        state,
        opener,
        ping_timeout: config.ping_timeout,
        next_id: AtomicU64::new(1),
        stop: shutdown.child_token(),
    });
    let mut slots = tokio::task::JoinSet::new();
    for slot in 0..config.connections {
        slots.spawn(run_slot(shared.clone(), slot));
    }
    while slots.join_next().await.is_some() {}
}

/// A connection that lived at least this long reset its slot's backoff; one that died sooner makes the next
/// open wait (a peer that closes right after `hello` must not be reconnected at network speed).
const HEALTHY_AFTER: Duration = Duration::from_secs(30);

fn backoff() -> backon::ExponentialBackoff {
    // Jittered so that the slots of a fleet restarted together do not reconnect in step.
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Keeps one connection open.
async fn run_slot(shared: Arc<Shared>, slot: usize) {
    let Some(mut live) = open_until_ok(&shared, slot, None).await else { return };
    let mut short_lived = backoff();
    loop {
        let signal = tokio::select! {
            signal = live.signals.recv() => signal.unwrap_or_else(|| Signal::Lost("ended".into())),
            () = shared.stop.cancelled() => {
                live.retire().await;
                return;
            }
        };
        let reason = signal.reason().to_owned();
        tracing::info!(slot, connection = live.id, reason = %reason, "replacing the Socket Mode connection");
        shared.state.metrics.count_reconnect(&reason);
        if let Signal::Lost(why) = &signal {
            tracing::warn!(slot, connection = live.id, why = %why, "Socket Mode connection lost");
        }
        let wait = match signal {
            Signal::LinkDisabled => {
                stop_for_good(&shared, "Slack disabled Socket Mode for this app (link_disabled)".into());
                live.retire().await;
                return;
            }
            Signal::Refresh(_) => {
                // The old connection keeps taking envelopes until the new one has said hello.
                let next = open_until_ok(&shared, slot, None).await;
                live.retire().await;
                match next {
                    Some(next) => {
                        live = next;
                        continue;
                    }
                    None => return,
                }
            }
            Signal::TooMany => Some(TOO_MANY_WAIT),
            Signal::Lost(_) | Signal::Stale if live.opened_at.elapsed() < HEALTHY_AFTER => short_lived.next(),
            Signal::Lost(_) | Signal::Stale => {
                short_lived = backoff();
                None
            }
        };
        live.retire().await;
        live = match open_until_ok(&shared, slot, wait).await {
            Some(next) => next,
            None => return,
        };
    }
}

/// Opens a connection, retrying with backoff (after `first_wait`, when given); `None` at shutdown or when Socket
/// Mode stopped for good.
async fn open_until_ok(shared: &Shared, slot: usize, first_wait: Option<Duration>) -> Option<Live> {
    if let Some(wait) = first_wait
        && !pause(shared, wait).await
    {
        return None;
    }
    let mut delays = backoff();
    loop {
        let opened = tokio::select! {
            opened = shared.opener.open() => opened,
            () = shared.stop.cancelled() => return None,
        };
        let wait = match opened {
            Ok(socket) => {
                let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
                tracing::info!(slot, connection = id, "Socket Mode connection open");
                return Some(Live::start(shared.state.clone(), socket, id, shared.ping_timeout));
            }
            Err(OpenError::Fatal(why)) => {
                stop_for_good(shared, why);
                return None;
            }
            Err(OpenError::TooMany) => {
                tracing::warn!(slot, "Slack refused a connection: too_many_websockets; waiting");
                shared.state.metrics.count_reconnect("too_many_websockets");
                TOO_MANY_WAIT
            }
            Err(OpenError::Retry { message, after }) => {
                let delay = delays.next().unwrap_or(Duration::from_secs(30));
                let wait = after.map_or(delay, |after| after.max(delay));
                tracing::warn!(slot, error = %message, retry_in_ms = wait.as_millis() as u64,
                    "Socket Mode connection did not open");
                shared.state.metrics.count_reconnect("open_failed");
                wait
            }
        };
        if !pause(shared, wait).await {
            return None;
        }
    }
}

/// Sleeps; false when Socket Mode stops meanwhile.
async fn pause(shared: &Shared, wait: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(wait) => true,
        () = shared.stop.cancelled() => false,
    }
}

fn stop_for_good(shared: &Shared, why: String) {
    tracing::error!(why = %why, "Socket Mode stopped; the HTTP routes keep serving");
    if let Some(status) = &shared.state.socket {
        status.stop(why);
    }
    shared.stop.cancel();
}
