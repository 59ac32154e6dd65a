//! `--route`: a local HTTP destination for the fleet's GitHub deliveries (a route with `also_builtin`, so they
//! are posted to the Slack stub too). It counts deliveries by `webhook-id` (the event id) and answers 503 to one
//! request in 25, so retries of a destination are part of every run.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

/// The signing secret of the route (a Standard Webhooks key).
pub const SECRET: &str = "whsec_bG9hZHRlc3Qtcm91dGUtc2lnbmluZy1rZXk=";

/// The running receiver.
#[derive(Clone, Default)]
pub struct Receiver {
    /// Base URL, `http://127.0.0.1:port`.
    pub url: String,
    state: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    by_id: Mutex<HashMap<String, u64>>,
    requests: AtomicU64,
}

impl Receiver {
    /// Starts it on 127.0.0.1.
    pub async fn start() -> anyhow::Result<Self> {
        let state = Arc::new(Counts::default());
        let app = axum::Router::new().fallback(receive).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { url, state })
    }

    /// The routes file that sends GitHub deliveries here, as well as to the built-in handler.
    pub fn routes_file(&self) -> String {
        format!(
            "[[route]]\nname = \"loadtest\"\nmatch = {{ kind = \"github.*\" }}\nurl = \"{}/events\"\n\
             secret_env = \"EVENTFLEET_LOADTEST_ROUTE_SECRET\"\nalso_builtin = true\n",
            self.url
        )
    }

    /// Deliveries by event id (answered 2xx or not).
    pub fn deliveries(&self) -> HashMap<String, u64> {
        self.state.by_id.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

async fn receive(State(state): State<Arc<Counts>>, headers: HeaderMap) -> StatusCode {
    let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    if let Ok(mut by_id) = state.by_id.lock() {
        *by_id.entry(id).or_default() += 1;
    }
    if state.requests.fetch_add(1, Ordering::Relaxed) % 25 == 24 {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}
