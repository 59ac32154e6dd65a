//! Serving the router with deadlines on every connection, so that a client that opens a connection and stalls
//! cannot pin a file descriptor, and with a deadline on the drain at shutdown.
//!
//! A connection is in one of three phases, each with its own deadline:
//!
//! - **idle** (waiting for a request): closed after [`Timeouts::idle`] without a byte. Behind a load balancer
//!   this must be longer than the balancer's own idle timeout (ALB: 60 s), or it closes connections the
//!   balancer is about to reuse;
//! - **reading** (from the first byte of a request until its body is read): closed after [`Timeouts::read`],
//!   however slowly the bytes trickle in;
//! - **handling**: no deadline here (the backend budget bounds it); the answer ready, the connection is idle
//!   again.
//!
//! hyper's own `header_read_timeout` starts when a connection becomes ready for a request, so it would also
//! close idle keep-alive connections after the (short) header deadline; hence the phases here. They are an
//! HTTP/1 model, and the ingress serves HTTP/1 only (every sender speaks it; the ALB speaks it to its targets).
//!
//! A request whose body the handler did not read (a refusal before the body: 404, 429) is answered with
//! `Connection: close`: the rest of its body would otherwise arrive after the answer and look like the start of
//! another request.
//!
//! At shutdown the listener closes, idle connections close at once, and connections with a request in flight
//! close after its answer; at the drain deadline whatever is left is cut, and `serve` returns only when every
//! connection task has ended.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
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
/// [`Timeouts::drain`]. Returns when every connection has ended.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    timeouts: Timeouts,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e, &shutdown).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        // Answers are small and written at once: no reason to hold them back.
        let _ = stream.set_nodelay(true);
        let connection = Arc::new(Connection { phase: Mutex::new(Phase::Idle { since: Instant::now() }) });
        let timer = Box::pin(tokio::time::sleep_until(Instant::now() + timeouts.idle));
        let io = GuardedIo { stream, connection: connection.clone(), timeouts, timer };
        let service = Tracked { router: router.clone(), connection, peer };
        let service = TowerToHyperService::new(
            service.map_request(|req: axum::http::Request<hyper::body::Incoming>| req.map(Body::new)),
        );
        let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), service);
        let conn = graceful.watch(conn);
        connections.spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
        // Reap the connections that ended, so the set stays the size of the open ones.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(timeouts.drain) => {
            tracing::warn!(
                drain_s = timeouts.drain.as_secs(),
                open = connections.len(),
                "requests still in flight at the drain deadline; their connections are cut"
            );
            connections.abort_all();
        }
    }
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// A failed accept: a connection that went away before it was accepted is nothing; anything else (out of file
/// descriptors) is logged and the loop waits a moment rather than spinning on it.
async fn accept_failed(e: io::Error, shutdown: &CancellationToken) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    tracing::warn!(error = %e, "accept failed; retrying in 1 s");
    tokio::select! {
        () = tokio::time::sleep(Duration::from_secs(1)) => {}
        () = shutdown.cancelled() => {}
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

    /// hyper has a request's head: it is being read since its first byte arrived, or since now when its bytes
    /// came in while the connection was busy with the one before (pipelining).
    fn request_started(&self) {
        let mut phase = self.phase.lock().unwrap_or_else(|p| p.into_inner());
        if !matches!(*phase, Phase::Reading { .. }) {
            *phase = Phase::Reading { since: Instant::now() };
        }
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
        self.connection.request_started();
        let (mut parts, body) = req.into_parts();
        parts.extensions.insert(ConnectInfo(self.peer));
        let read = Arc::new(AtomicBool::new(body.is_end_stream()));
        if body.is_end_stream() {
            self.connection.body_read();
        }
        let body = Body::new(Watched { body, connection: self.connection.clone(), read: read.clone() });
        let answer = self.router.clone().oneshot(Request::from_parts(parts, body));
        let connection = self.connection.clone();
        Box::pin(async move {
            let Ok(mut response) = answer.await;
            if !read.load(Ordering::Acquire) {
                response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            connection.set(Phase::Idle { since: Instant::now() });
            Ok(response)
        })
    }
}

/// A request body that tells its connection when it has been read to the end, or dropped unread; `read` says
/// which of the two.
struct Watched {
    body: Body,
    connection: Arc<Connection>,
    read: Arc<AtomicBool>,
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.body.is_end_stream() {
            self.read.store(true, Ordering::Release);
            self.connection.body_read();
        } else if matches!(polled, Poll::Ready(Some(Err(_)))) {
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
