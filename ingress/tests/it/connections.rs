//! Connection hygiene: a client that opens a connection and stalls is cut off at its phase's deadline (reading
//! a request, or idle between requests), and a shutdown drains for at most the drain deadline.

use std::time::{Duration, Instant};

use eventfleet_ingress::serve::Timeouts;
use eventfleet_storage::{EmbeddedOptions, EmbeddedStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::{Server, test_config};

/// Deadlines short enough for a test, the idle one well apart from the reading one.
fn timeouts() -> Timeouts {
    Timeouts { read: Duration::from_secs(1), idle: Duration::from_secs(3), drain: Duration::from_secs(1) }
}

async fn server() -> Server {
    Server::start_with(eventfleet_ingress::IngressConfig { timeouts: timeouts(), ..test_config() }).await
}

async fn connect(server: &Server) -> TcpStream {
    TcpStream::connect(server.base.trim_start_matches("http://")).await.unwrap()
}

/// Reads until the server closes the connection (or resets it); returns what it sent. Fails past `limit`.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buf)).await {
            Err(_) => panic!("the connection was still open after {limit:?}"),
            Ok(Ok(0) | Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn half_a_request_is_cut_off_at_the_read_deadline_while_others_are_answered() {
    let server = server().await;
    let mut stalled = Vec::new();
    for _ in 0..50 {
        let mut c = connect(&server).await;
        c.write_all(b"POST /hooks/hk_x HTTP/1.1\r\nHost: ingress\r\nContent-Ty").await.unwrap();
        stalled.push(c);
    }
    let started = Instant::now();
    // Meanwhile the ingress answers everybody else.
    let resp = server.http.get(server.url("/health")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    for c in &mut stalled {
        read_until_closed(c, Duration::from_secs(20)).await;
    }
    assert!(started.elapsed() >= timeouts().read, "not before the read deadline");

    // A body that stops halfway is cut off the same way.
    let mut c = connect(&server).await;
    c.write_all(b"POST /hooks/hk_x HTTP/1.1\r\nHost: ingress\r\nContent-Length: 100\r\n\r\n{\"text\":").await.unwrap();
    read_until_closed(&mut c, Duration::from_secs(20)).await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_lives_until_the_idle_deadline_not_the_read_one() {
    let server = server().await;
    let mut c = connect(&server).await;
    c.write_all(b"GET /health HTTP/1.1\r\nHost: ingress\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(20), c.read(&mut buf)).await.unwrap().unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    let answered = Instant::now();
    let rest = read_until_closed(&mut c, Duration::from_secs(30)).await;
    assert!(rest.is_empty(), "nothing more was sent: {}", String::from_utf8_lossy(&rest));
    assert!(answered.elapsed() >= timeouts().idle, "closed after {:?}, before the idle deadline", answered.elapsed());
}

#[tokio::test]
async fn a_shutdown_drains_for_at_most_the_drain_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_dir(dir.path(), EmbeddedOptions::default()).unwrap().into_store();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // A read deadline far beyond the drain's: only the drain deadline can end the run.
    let config = eventfleet_ingress::IngressConfig {
        timeouts: Timeouts { read: Duration::from_secs(600), ..timeouts() },
        ..test_config()
    };
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(eventfleet_ingress::run(store, config, listener, shutdown.clone()));
    // A request in flight that never finishes sending its body.
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"POST /hooks/hk_x HTTP/1.1\r\nHost: ingress\r\nContent-Length: 100\r\n\r\n{").await.unwrap();
    // Once the ingress has the request (its connection is past accept), ask it to stop.
    let probe = reqwest::Client::new().get(format!("http://{addr}/health")).send().await.unwrap();
    assert_eq!(probe.status(), 200);
    let stopping = Instant::now();
    shutdown.cancel();
    let ran =
        tokio::time::timeout(Duration::from_secs(30), run).await.expect("the ingress stopped at its drain deadline");
    ran.unwrap().unwrap();
    assert!(stopping.elapsed() >= timeouts().drain, "it waited for the request in flight first");
}
