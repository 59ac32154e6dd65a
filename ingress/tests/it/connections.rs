//! Connection hygiene: a client that opens a connection and stalls is cut off at its phase's deadline (reading
//! a request, or idle between requests), and a shutdown drains for at most the drain deadline.

use std::time::{Duration, Instant};

use eventfleet_ingress::serve::Timeouts;
use eventfleet_storage::{EmbeddedOptions, EmbeddedStore};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::{Server, test_config};

/// Deadlines short enough for a test, the idle one well apart from the reading one.
fn timeouts() -> Timeouts {
    Timeouts { read: Duration::from_secs(1), idle: Duration::from_secs(3), drain: Duration::from_secs(1) }
}

async fn server() -> Server {
    server_with(timeouts()).await
}

async fn server_with(timeouts: Timeouts) -> Server {
    Server::start_with(eventfleet_ingress::IngressConfig { timeouts, ..test_config() }).await
}

/// Reads one HTTP/1.1 response (head and a `Content-Length` body) and nothing after it (pipelined answers stay
/// buffered); returns its status and lower-cased head.
async fn read_response(stream: &mut BufReader<TcpStream>) -> (u16, String) {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(20), stream.read_line(&mut line)).await.unwrap().unwrap();
        assert!(n > 0, "the connection closed before an answer: {head}");
        if line == "\r\n" {
            break;
        }
        head.push_str(&line.to_lowercase());
    }
    let status = head[9..12].parse().unwrap();
    let length: usize =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0; length];
    tokio::time::timeout(Duration::from_secs(20), stream.read_exact(&mut body)).await.unwrap().unwrap();
    (status, head)
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
    // The idle deadline far from the reading one: a connection cut at the wrong one shows.
    let timeouts = Timeouts { idle: Duration::from_secs(60), ..timeouts() };
    let server = server_with(timeouts).await;
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
        read_until_closed(c, Duration::from_secs(30)).await;
    }
    assert!(started.elapsed() >= timeouts.read, "not before the read deadline");
    assert!(started.elapsed() < timeouts.idle, "at the read deadline, not the idle one: {:?}", started.elapsed());

    // A body that stops halfway is cut off the same way.
    let mut c = connect(&server).await;
    c.write_all(b"POST /hooks/hk_x HTTP/1.1\r\nHost: ingress\r\nContent-Length: 100\r\n\r\n{\"text\":").await.unwrap();
    read_until_closed(&mut c, Duration::from_secs(20)).await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_lives_until_the_idle_deadline_not_the_read_one() {
    let server = server().await;
    let mut c = BufReader::new(connect(&server).await);
    // Taken before the request: the server's idle clock starts after this.
    let answered = Instant::now();
    c.get_mut().write_all(b"GET /health HTTP/1.1\r\nHost: ingress\r\n\r\n").await.unwrap();
    assert_eq!(read_response(&mut c).await.0, 200);
    let rest = read_until_closed(c.get_mut(), Duration::from_secs(30)).await;
    assert!(rest.is_empty(), "nothing more was sent: {}", String::from_utf8_lossy(&rest));
    assert!(answered.elapsed() >= timeouts().idle, "closed after {:?}, before the idle deadline", answered.elapsed());
}

#[tokio::test]
async fn requests_that_keep_to_the_deadlines_are_answered_on_one_connection() {
    let server = server().await;
    let mut c = BufReader::new(connect(&server).await);
    // A body sent in two parts, the second after a pause well inside the read deadline.
    let body = br#"{"text":"two parts"}"#;
    let head = format!(
        "POST /hooks/hk_unknown HTTP/1.1\r\nHost: ingress\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    c.get_mut().write_all(head.as_bytes()).await.unwrap();
    c.get_mut().write_all(&body[..5]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.get_mut().write_all(&body[5..]).await.unwrap();
    let (status, head) = read_response(&mut c).await;
    assert_eq!(status, 404, "{head}");
    assert!(!head.contains("connection: close"), "the body was read: the connection stays open: {head}");
    // Idle for longer than the read deadline (but not the idle one), then the next request on the same connection.
    tokio::time::sleep(timeouts().read + Duration::from_millis(500)).await;
    c.get_mut().write_all(b"GET /health HTTP/1.1\r\nHost: ingress\r\n\r\n").await.unwrap();
    assert_eq!(read_response(&mut c).await.0, 200);
    // Two pipelined requests: both answered, in order.
    c.get_mut()
        .write_all(b"GET /health HTTP/1.1\r\nHost: ingress\r\n\r\nGET /version HTTP/1.1\r\nHost: ingress\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut c).await.0, 200);
    assert_eq!(read_response(&mut c).await.0, 200);
}

#[tokio::test]
async fn a_refusal_before_the_body_closes_the_connection() {
    let server = server().await;
    let mut c = BufReader::new(connect(&server).await);
    // No such route: refused before the body is read, while most of it has not even been sent.
    c.get_mut().write_all(b"POST /nowhere HTTP/1.1\r\nHost: ingress\r\nContent-Length: 100000\r\n\r\n{").await.unwrap();
    let (status, head) = read_response(&mut c).await;
    assert_eq!(status, 404, "{head}");
    assert!(head.contains("connection: close"), "{head}");
    let started = Instant::now();
    read_until_closed(c.get_mut(), Duration::from_secs(20)).await;
    assert!(started.elapsed() < timeouts().read, "closed with the answer, not at a deadline");
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
    // And the connection it waited for is cut, not left running after the ingress returned.
    read_until_closed(&mut c, Duration::from_secs(5)).await;
}
