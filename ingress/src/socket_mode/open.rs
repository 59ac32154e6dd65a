//! Opening one Socket Mode connection: `apps.connections.open` for a URL, the WebSocket handshake, then Slack's
//! `hello`. Nothing is read as an envelope before `hello`; a connection is counted open only after it.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use super::SocketModeConfig;
use super::envelope::{Frame, parse};

/// An open connection's stream.
pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long `apps.connections.open`, the handshake and the `hello` may each take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest frame read: envelopes are a few KiB; Slack's biggest payloads (a modal's view) stay far below.
const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// Why a connection did not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The token or the app is wrong (`invalid_auth`, `not_allowed_token_type`, `link_disabled`, ...): retrying
    /// cannot help; Socket Mode stops and says why.
    #[error("{0}")]
    Fatal(String),
    /// The app already has Slack's maximum of connections (10): wait longer than a usual reconnect.
    #[error("Slack refused another connection: too_many_websockets")]
    TooMany,
    /// Anything else (Slack unavailable, rate limited, a network error): retry with backoff, after at least
    /// the given wait when Slack named one.
    #[error("{message}")]
    Retry {
        /// What went wrong.
        message: String,
        /// Slack's `Retry-After`, when it sent one.
        after: Option<Duration>,
    },
}

impl OpenError {
    fn retry(message: impl Into<String>) -> Self {
        Self::Retry { message: message.into(), after: None }
    }
}

#[derive(Deserialize)]
struct OpenAnswer {
    ok: bool,
    url: Option<String>,
    error: Option<String>,
}

/// `apps.connections.open` errors that no retry fixes.
const FATAL: &[&str] = &[
    "invalid_auth",
    "not_authed",
    "not_allowed_token_type",
    "account_inactive",
    "token_revoked",
    "token_expired",
    "access_denied",
    "missing_scope",
    "no_permission",
    "team_access_not_granted",
    "link_disabled",
];

/// What opens connections: the HTTP client, the TLS settings of the WebSocket.
#[derive(Clone)]
pub struct Opener {
    http: reqwest::Client,
    tls: Arc<rustls::ClientConfig>,
    open_url: String,
    token: String,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener").field("open_url", &self.open_url).finish_non_exhaustive()
    }
}

impl Opener {
    /// An opener for `config`.
    pub fn new(config: &SocketModeConfig) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(STEP_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        // The provider named, not picked by crate features: several TLS stacks are linked into the binary.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS settings: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            http,
            tls: Arc::new(tls),
            open_url: format!("{}/apps.connections.open", config.api_url.trim_end_matches('/')),
            token: config.app_token.expose().to_owned(),
        })
    }

    /// A connection that has received `hello`.
    pub async fn open(&self) -> Result<Socket, OpenError> {
        let url = self.connection_url().await?;
        self.connect(&url).await
    }

    /// The handshake with a URL `apps.connections.open` gave, then `hello`.
    async fn connect(&self, url: &str) -> Result<Socket, OpenError> {
        let config = WebSocketConfig::default().max_message_size(Some(MAX_MESSAGE)).max_frame_size(Some(MAX_MESSAGE));
        let connect = tokio_tungstenite::connect_async_tls_with_config(
            url,
            Some(config),
            true,
            Some(Connector::Rustls(self.tls.clone())),
        );
        let (mut socket, _) = tokio::time::timeout(STEP_TIMEOUT, connect)
            .await
            .map_err(|_| OpenError::retry("the WebSocket handshake timed out"))?
            .map_err(|e| OpenError::retry(format!("WebSocket handshake: {e}")))?;
        tokio::time::timeout(STEP_TIMEOUT, hello(&mut socket))
            .await
            .map_err(|_| OpenError::retry("no hello from Slack within 10 s"))??;
        Ok(socket)
    }

    /// `POST apps.connections.open` with the app-level token: a one-use WebSocket URL.
    async fn connection_url(&self) -> Result<String, OpenError> {
        let response = self
            .http
            .post(&self.open_url)
            .bearer_auth(&self.token)
            .header("content-type", "application/x-www-form-urlencoded")
            .send()
            .await
            .map_err(|e| OpenError::retry(format!("apps.connections.open: {e}")))?;
        let status = response.status();
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            let after = (response.headers().get("retry-after"))
                .and_then(|v| v.to_str().ok())
                .and_then(|v| eventfleet_schema::time::retry_after(v, eventfleet_schema::Timestamp::now_system()));
            return Err(OpenError::Retry { message: "apps.connections.open answered 429".into(), after });
        }
        if !status.is_success() {
            return Err(OpenError::retry(format!("apps.connections.open answered {status}")));
        }
        let answer: OpenAnswer =
            response.json().await.map_err(|e| OpenError::retry(format!("apps.connections.open: {e}")))?;
        match (answer.ok, answer.url, answer.error) {
            (true, Some(url), _) if url.starts_with("wss://") || url.starts_with("ws://") => Ok(url),
            (true, _, _) => Err(OpenError::retry("apps.connections.open answered ok without a WebSocket URL")),
            (false, _, Some(error)) if FATAL.contains(&error.as_str()) => Err(OpenError::Fatal(format!(
                "apps.connections.open refused the app-level token (EVENTFLEET_SLACK_APP_TOKEN): {error}"
            ))),
            (false, _, error) => Err(OpenError::retry(format!(
                "apps.connections.open failed: {}",
                error.as_deref().unwrap_or("no error named")
            ))),
        }
    }
}

/// Reads until `hello`. Slack may refuse the connection instead (`disconnect`, `too_many_websockets`).
async fn hello(socket: &mut Socket) -> Result<(), OpenError> {
    while let Some(message) = socket.next().await {
        let text = match message {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(frame)) => return Err(OpenError::retry(format!("closed before hello: {frame:?}"))),
            // Pings are answered by the library.
            Ok(_) => continue,
            Err(e) => return Err(OpenError::retry(format!("before hello: {e}"))),
        };
        match parse(text.as_str()) {
            Ok(Frame::Hello) => return Ok(()),
            Ok(Frame::Disconnect { reason }) if reason == "too_many_websockets" => return Err(OpenError::TooMany),
            Ok(Frame::Disconnect { reason }) if reason == "link_disabled" => {
                return Err(OpenError::Fatal("Slack disabled Socket Mode for this app (link_disabled)".into()));
            }
            Ok(Frame::Disconnect { reason }) => {
                return Err(OpenError::retry(format!("disconnect before hello: {reason}")));
            }
            // Nothing but hello is expected first: anything else would be acked by no one.
            Ok(other) => return Err(OpenError::retry(format!("expected hello, got {other:?}"))),
            Err(e) => return Err(OpenError::retry(e)),
        }
    }
    Err(OpenError::retry("the connection ended before hello"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opener() -> Opener {
        let config = SocketModeConfig {
            app_token: "xapp-1-test".into(),
            api_url: "http://127.0.0.1:9/api/".into(),
            connections: 1,
            ping_timeout: Duration::from_secs(30),
        };
        Opener::new(&config).expect("the TLS settings build without a process-wide provider")
    }

    #[test]
    fn the_open_url_is_under_the_api_url() {
        assert_eq!(opener().open_url, "http://127.0.0.1:9/api/apps.connections.open");
    }

    /// The `wss://` path runs rustls with the named provider: a server that is not TLS is a retryable error,
    /// never a panic about crypto providers.
    #[tokio::test]
    async fn a_failed_tls_handshake_is_retryable() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                use tokio::io::AsyncWriteExt;
                let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            }
        });
        let err = opener().connect(&format!("wss://{addr}/link/?ticket=1")).await.unwrap_err();
        assert!(matches!(err, OpenError::Retry { .. }), "{err:?}");
    }
}
