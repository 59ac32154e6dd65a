//! Serving the router with deadlines on every connection, so that a client that opens a connection and stalls
//! cannot pin a file descriptor, and with a deadline on the drain at shutdown.
//!
//! A connection is in one of four phases, and each has its own deadline:
//!
//! - **idle** (waiting for a request): closed after [`Timeouts::idle`] without a byte. Behind a load balancer
//!   this must be longer than the balancer's own idle timeout (ALB: 60 s), or it closes connections the
//!   balancer is about to reuse;
//! - **reading** (from the first byte of a request until its body is read): closed after [`Timeouts::read`],
//!   however slowly the bytes trickle in;
//! - **handling**: no deadline here (the backend budget bounds it);
//! - the answer sent, the connection is idle again.
//!
//! hyper's own `header_read_timeout` starts when a connection becomes ready for a request, so it would also
//! close idle keep-alive connections after the (short) header deadline; hence the phases here.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceExt};

/// The deadlines of the ingress's connections and of its drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From a request's first byte until its head and body are read.
    pub read: Duration,
    /// Without a byte while no request is on the connection.
    pub idle: Duration,
    /// After shutdown, how long requests in flight may finish; connections still open then are closed.
    pub drain: Duration,
}

impl Default for Timeouts {
    /// 10 s to send a request; 75 s idle (longer than an ALB's default 60 s); 25 s to drain (ECS kills 30 s after
    /// SIGTERM).
    fn default() -> Self {
        Self { read: Duration::from_secs(10), idle: Duration::from_secs(75), drain: Duration::from_secs(25) }
    }
}

/// Serves `router` on `listener` until `shutdown`, then lets requests in flight finish for at most
/// [`Timeouts::drain`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    timeouts: Timeouts,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let listener = Guarded { listener, timeouts };
    let graceful = shutdown.clone();
    let server = axum::serve(listener, MakeTracked { router }).with_graceful_shutdown(async move {
        graceful.cancelled().await;
    });
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(timeouts.drain).await;
    };
    tokio::select! {
        served = server => served,
        () = deadline => {
            tracing::warn!(drain_s = timeouts.drain.as_secs(), "requests still in flight at the drain deadline; their connections are closed");
            Ok(())
        }
    }
}

/// Where a connection is, shared by its IO (which enforces the deadlines) and its service (which sees requests
/// start and end).
#[derive(Debug)]
enum Phase {
    Idle { since: Instant },
    Reading { since: Instant },
    Handling,
}

#[derive(Debug)]
struct Connection {
    phase: Mutex<Phase>,
}

impl Connection {
    fn set(&self, phase: Phase) {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = phase;
    }

    /// Bytes arrived: a request has begun if the connection was idle.
    fn bytes_read(&self) {
        let mut phase = self.phase.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*phase, Phase::Idle { .. }) {
            *phase = Phase::Reading { since: Instant::now() };
        }
    }

    /// Its body read (or none to read): the request is being handled.
    fn body_read(&self) {
        let mut phase = self.phase.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*phase, Phase::Reading { .. }) {
            *phase = Phase::Handling;
        }
    }

    fn deadline(&self, timeouts: &Timeouts) -> Option<Instant> {
        match *self.phase.lock().unwrap_or_else(|p| p.into_inner()) {
            Phase::Idle { since } => Some(since + timeouts.idle),
            Phase::Reading { since } => Some(since + timeouts.read),
            Phase::Handling => None,
        }
    }
}

/// A listener whose connections enforce the deadlines.
struct Guarded {
    listener: TcpListener,
    timeouts: Timeouts,
}

impl Listener for Guarded {
    type Io = GuardedIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, addr) = Listener::accept(&mut self.listener).await;
        let connection = Arc::new(Connection { phase: Mutex::new(Phase::Idle { since: Instant::now() }) });
        let timer = Box::pin(tokio::time::sleep_until(Instant::now() + self.timeouts.idle));
        (GuardedIo { stream, connection, timeouts: self.timeouts, timer }, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// A connection's stream: a read that waits past its phase's deadline fails, and hyper closes the connection.
struct GuardedIo {
    stream: TcpStream,
    connection: Arc<Connection>,
    timeouts: Timeouts,
    timer: Pin<Box<Sleep>>,
}

impl AsyncRead for GuardedIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.connection.bytes_read();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let Some(deadline) = self.connection.deadline(&self.timeouts) else {
                    return Poll::Pending;
                };
                if self.timer.deadline() != deadline {
                    self.timer.as_mut().reset(deadline);
                }
                match self.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "connection deadline"))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Makes each connection's service, sharing its [`Connection`].
#[derive(Clone)]
struct MakeTracked {
    router: Router,
}

impl Service<IncomingStream<'_, Guarded>> for MakeTracked {
    type Response = Tracked;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Tracked, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, incoming: IncomingStream<'_, Guarded>) -> Self::Future {
        let connection = incoming.io().connection.clone();
        std::future::ready(Ok(Tracked { router: self.router.clone(), connection, peer: *incoming.remote_addr() }))
    }
}

/// The router, telling the connection when a request's body is read and when its answer is ready; it also
/// gives handlers the peer address (`ConnectInfo`), as `into_make_service_with_connect_info` would.
#[derive(Clone)]
struct Tracked {
    router: Router,
    connection: Arc<Connection>,
    peer: SocketAddr,
}

impl Service<Request> for Tracked {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        parts.extensions.insert(ConnectInfo(self.peer));
        if body.is_end_stream() {
            self.connection.body_read();
        }
        let body = Body::new(Watched { body, connection: self.connection.clone() });
        let answer = self.router.clone().oneshot(Request::from_parts(parts, body));
        let connection = self.connection.clone();
        Box::pin(async move {
            let response = answer.await;
            connection.set(Phase::Idle { since: Instant::now() });
            response
        })
    }
}

/// A request body that tells its connection when it has been read to the end, or dropped unread.
struct Watched {
    body: Body,
    connection: Arc<Connection>,
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.connection.body_read();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.connection.body_read();
    }
}
