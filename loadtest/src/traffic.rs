//! Signed, realistic requests.

use eventfleet_ingress::verify::slack::sign;
use eventfleet_schema::Timestamp;

/// One request to send.
pub struct Request {
    /// Content type.
    pub content_type: &'static str,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// Body.
    pub body: String,
}

/// The `n`-th Slack `event_callback` (a message in one of 50 channels), signed now.
pub fn slack_event(secret: &str, n: u64) -> Request {
    let body = serde_json::json!({
        "token": "loadtest",
        "team_id": "TLOAD",
        "api_app_id": "ALOAD",
        "type": "event_callback",
        "event_id": format!("Ev{n:012}"),
        "event_time": 1_700_000_000 + n,
        "event": {
            "type": "message",
            "channel": format!("C{:04}", n % 50),
            "user": "U0LOAD",
            "text": format!("load test message {n}"),
            "ts": format!("{}.000100", 1_700_000_000 + n),
        }
    })
    .to_string();
    let ts = Timestamp::now_system().as_secs();
    Request {
        content_type: "application/json",
        headers: vec![
            ("x-slack-request-timestamp", ts.to_string()),
            ("x-slack-signature", sign(secret.as_bytes(), ts, body.as_bytes())),
        ],
        body,
    }
}
