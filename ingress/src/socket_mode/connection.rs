//! One open connection: read envelopes, accept each through the same step as HTTP, and ack it only after the
//! accept returned (a backend failure sends no ack, so Slack redelivers). Pings keep the connection honest: a
//! connection that sends no frame within the ping timeout is half-open and is replaced.
//!
//! The connection tells its slot what happened to it ([`Signal`]); the slot decides what comes next. Retiring a
//! connection (a replacement is open, or the process is stopping) lets the envelopes it already read finish and
//! their acks go out, then closes it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use super::envelope::{Frame, Incoming, Plan, ack, parse, plan};
use super::open::Socket;
use crate::accept::accept;
use crate::{ApiError, AppState};

/// Envelopes of one connection being accepted at once; past it, reading waits (Slack redelivers what is not
/// acked in time, so waiting loses nothing).
const IN_FLIGHT: usize = 64;

/// How long a retiring connection keeps reading before it stops taking envelopes.
const RETIRE_READ: Duration = Duration::from_millis(500);

/// How long a close handshake may take: Slack does not always answer it (nor close the TCP connection).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// What happened to a connection, for its slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// Slack will close it soon (`warning`) or asks for a new one now (`refresh_requested`): open a replacement,
    /// then retire this one.
    Refresh(String),
    /// Slack turned Socket Mode off for the app: stop.
    LinkDisabled,
    /// Slack says the app has too many connections.
    TooMany,
    /// The connection ended (closed, reset, a read error).
    Lost(String),
    /// No frame within the ping timeout: half-open.
    Stale,
}

impl Signal {
    /// The reconnect reason label.
    pub fn reason(&self) -> &str {
        match self {
            Signal::Refresh(reason) => reason,
            Signal::LinkDisabled => "link_disabled",
            Signal::TooMany => "too_many_websockets",
            Signal::Lost(_) => "lost",
            Signal::Stale => "stale",
        }
    }
}

/// A running connection, as its slot holds it.
#[derive(Debug)]
pub struct Live {
    /// A number for logs.
    pub id: u64,
    /// When it said hello.
    pub opened_at: Instant,
    /// What happened to it (one signal, then the channel closes when the connection has ended).
    pub signals: mpsc::Receiver<Signal>,
    retire: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Live {
    /// Starts serving an open socket.
    pub fn start(state: AppState, socket: Socket, id: u64, ping_timeout: Duration) -> Self {
        let (signals_tx, signals) = mpsc::channel(4);
        let retire = CancellationToken::new();
        let task = tokio::spawn(serve(state, socket, id, ping_timeout, signals_tx, retire.clone()));
        Self { id, opened_at: Instant::now(), signals, retire, task }
    }

    /// Lets the envelopes already read finish, acks them, closes; returns when the connection has ended.
    pub async fn retire(self) {
        self.retire.cancel();
        let _ = self.task.await;
    }
}

/// An envelope's outcome, for the metric and the log.
enum Outcome {
    Accepted,
    Duplicate,
    Ignored,
    Rejected,
    Failed,
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Duplicate => "duplicate",
            Outcome::Ignored => "ignored",
            Outcome::Rejected => "rejected",
            Outcome::Failed => "failed",
        }
    }
}

async fn serve(
    state: AppState,
    socket: Socket,
    id: u64,
    ping_timeout: Duration,
    signals: mpsc::Sender<Signal>,
    retire: CancellationToken,
) {
    let status = state.socket.clone();
    if let Some(status) = &status {
        status.opened();
    }
    state.metrics.socket_connections.inc();
    let signal = run(&state, socket, id, ping_timeout, &signals, &retire).await;
    state.metrics.socket_connections.dec();
    if let Some(status) = &status {
        status.closed();
    }
    if let Some(signal) = signal {
        // Never waits: the slot may be busy retiring this very connection.
        let _ = signals.try_send(signal);
    }
}

/// Serves until the connection ends or is retired; the signal to send, if any.
async fn run(
    state: &AppState,
    socket: Socket,
    id: u64,
    ping_timeout: Duration,
    signals: &mpsc::Sender<Signal>,
    retire: &CancellationToken,
) -> Option<Signal> {
    let (mut sink, mut stream) = socket.split();
    // Acks from the accept tasks; written by this loop, the one writer.
    let (acks_tx, mut acks) = mpsc::channel::<(String, Instant)>(IN_FLIGHT);
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tasks = JoinSet::new();
    let mut last_frame = Instant::now();
    let mut ping = tokio::time::interval(ping_timeout / 3);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.reset();
    let mut reading = true;
    let mut stop_reading_at: Option<tokio::time::Instant> = None;
    let mut ended: Option<Signal> = None;
    let mut asked_to_go = false;
    // A write that does not finish within the ping timeout means the peer stopped reading: the connection is dead.
    let write_timeout = ping_timeout;
    loop {
        let retiring = stop_reading_at.is_some();
        if retiring && !reading && tasks.is_empty() && acks.is_empty() {
            break;
        }
        let stop_at = stop_reading_at.unwrap_or_else(|| tokio::time::Instant::now() + ping_timeout);
        tokio::select! {
            // Acks first: an accepted envelope's ack never waits behind reading.
            biased;
            Some((text, received)) = acks.recv() => {
                if let Err(signal) = write(&mut sink, Message::text(text), write_timeout, "an ack").await {
                    ended = Some(signal);
                    break;
                }
                state.metrics.socket_ack_seconds.observe(received.elapsed().as_secs_f64());
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            () = retire.cancelled(), if !retiring => {
                stop_reading_at = Some(tokio::time::Instant::now() + RETIRE_READ);
            }
            () = tokio::time::sleep_until(stop_at), if retiring && reading => {
                reading = false;
            }
            // Past the in-flight limit reading waits for a permit (a finishing task wakes the loop).
            frame = stream.next(), if reading && permits.available_permits() > 0 => {
                let Some(frame) = frame else {
                    ended = Some(Signal::Lost("closed by Slack".into()));
                    break;
                };
                last_frame = Instant::now();
                let text = match frame {
                    Ok(Message::Text(text)) => text,
                    Ok(Message::Close(frame)) => {
                        ended = Some(Signal::Lost(format!("closed by Slack: {frame:?}")));
                        break;
                    }
                    Ok(_) => continue,
                    Err(e) => {
                        ended = Some(Signal::Lost(format!("reading: {e}")));
                        break;
                    }
                };
                match parse(text.as_str()) {
                    Ok(Frame::Envelope(incoming)) => {
                        let Ok(permit) = permits.clone().try_acquire_owned() else { break };
                        let (state, acks) = (state.clone(), acks_tx.clone());
                        tasks.spawn(async move {
                            handle(&state, id, incoming, &acks).await;
                            drop(permit);
                        });
                    }
                    Ok(Frame::Disconnect { reason }) => {
                        tracing::info!(connection = id, reason = %reason, "Slack asked to disconnect");
                        let signal = match reason.as_str() {
                            "link_disabled" => Signal::LinkDisabled,
                            "too_many_websockets" => Signal::TooMany,
                            _ => Signal::Refresh(reason),
                        };
                        // The slot opens a replacement and then retires this one; reading goes on meanwhile. One
                        // request is enough, and a full channel must never stop this loop.
                        if !asked_to_go {
                            asked_to_go = true;
                            let _ = signals.try_send(signal);
                        }
                    }
                    Ok(Frame::Hello) => {}
                    Ok(Frame::Unknown(kind)) => tracing::debug!(connection = id, kind = %kind, "frame ignored"),
                    Err(e) => tracing::warn!(connection = id, error = %e, "frame ignored"),
                }
            }
            _ = ping.tick() => {
                // While reading waits (the in-flight limit, retiring) frames are not read, pongs included: that
                // time says nothing of the connection.
                if !(reading && permits.available_permits() > 0) {
                    last_frame = Instant::now();
                }
                if last_frame.elapsed() > ping_timeout {
                    tracing::warn!(connection = id, silent_s = last_frame.elapsed().as_secs(),
                        "no frame from Slack within the ping timeout: the connection is half-open");
                    ended = Some(Signal::Stale);
                    break;
                }
                if let Err(signal) = write(&mut sink, Message::Ping(Default::default()), write_timeout, "a ping").await {
                    ended = Some(signal);
                    break;
                }
            }
        }
    }
    if ended.is_none() {
        // Retired, every ack written: close (Slack may not answer the close; do not wait for long).
        let close = CloseFrame { code: CloseCode::Normal, reason: "replaced".into() };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            let _ = sink.send(Message::Close(Some(close))).await;
            while let Some(Ok(_)) = stream.next().await {}
        })
        .await;
    } else {
        // Envelopes being accepted finish in the background: their events are durable, and Slack's redelivery
        // of them (no ack reached it) is a duplicate then.
        tasks.detach_all();
    }
    ended
}

/// Writes one frame within `timeout`; how the connection ended when it could not.
async fn write<S>(sink: &mut S, message: Message, timeout: Duration, what: &str) -> Result<(), Signal>
where
    S: futures_util::Sink<Message> + Unpin,
    S::Error: std::fmt::Display,
{
    match tokio::time::timeout(timeout, sink.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Signal::Lost(format!("writing {what}: {e}"))),
        // The peer stopped reading: the connection is as good as half-open.
        Err(_) => Err(Signal::Stale),
    }
}

/// Accepts one envelope and queues its ack; a backend failure queues none.
async fn handle(state: &AppState, connection: u64, incoming: Incoming, acks: &mpsc::Sender<(String, Instant)>) {
    let received = Instant::now();
    let outcome = match plan(state, &incoming) {
        Ok(Plan::Accept(envelope)) => match accept(state, *envelope, Default::default()).await {
            Ok(accepted) if accepted.duplicate => Outcome::Duplicate,
            Ok(_) => Outcome::Accepted,
            // What no redelivery can change (over HTTP a 4xx) is acked, or Slack would send it again for nothing.
            Err(e) if !matches!(e, ApiError::Unavailable(_) | ApiError::Internal(_)) => {
                tracing::warn!(connection, envelope_id = %incoming.envelope_id, error = %e, "envelope refused");
                Outcome::Rejected
            }
            Err(e) => {
                tracing::warn!(connection, envelope_id = %incoming.envelope_id, retry_attempt = incoming.retry_attempt,
                    error = %e, "envelope not accepted; no ack, so Slack redelivers it");
                Outcome::Failed
            }
        },
        Ok(Plan::Ignore(what)) => {
            tracing::info!(connection, envelope_id = %incoming.envelope_id, "{what} acknowledged without processing");
            Outcome::Ignored
        }
        Err(e) => {
            // As over HTTP a 400: acked, or Slack would redeliver what can never be accepted.
            tracing::warn!(connection, envelope_id = %incoming.envelope_id, error = %e, "malformed envelope refused");
            Outcome::Rejected
        }
    };
    state.metrics.count_envelope(incoming.label(), outcome.label());
    if matches!(outcome, Outcome::Failed) {
        return;
    }
    // The channel has room for every task in flight; a closed one means the connection is gone.
    let _ = acks.send((ack(&incoming.envelope_id), received)).await;
}
