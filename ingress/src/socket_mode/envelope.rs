//! What arrives on a Socket Mode connection, and each envelope turned into the event its HTTP twin would be.
//!
//! An envelope's payload is rewritten into the body the HTTP route receives (the Events API JSON, a slash
//! command's form, an interaction's `payload=` form), with the same kind and idempotency key: workers, routes
//! and replays see one shape whatever the transport, and a delivery over both transports is one event.

use std::collections::{BTreeMap, HashMap};

use eventfleet_schema::{EnvelopeV1, Kind, Verification, VerificationMethod};
use serde::Deserialize;
use serde_json::Value;

use crate::routes::slack::SlackIds;
use crate::{ApiError, AppState};

/// A text frame from Slack.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// The connection is ready for envelopes.
    Hello,
    /// Slack will close this connection (`warning`, `refresh_requested`, `link_disabled`,
    /// `too_many_websockets`, ...).
    Disconnect {
        /// Slack's reason.
        reason: String,
    },
    /// Something to acknowledge.
    Envelope(Incoming),
    /// A frame type this version does not know; logged and ignored.
    Unknown(String),
}

/// An envelope (`events_api`, `slash_commands`, `interactive`, or a type this version does not know).
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    /// What the ack names.
    pub envelope_id: String,
    /// The envelope's `type`.
    pub kind: String,
    /// Its `payload`.
    pub payload: Value,
    /// 0 on the first delivery; Slack counts its redeliveries of an unacknowledged envelope.
    pub retry_attempt: u64,
    /// Why Slack redelivered (`timeout`, ...), when it did.
    pub retry_reason: Option<String>,
}

impl Incoming {
    /// The envelope type as a metric label: the three known ones, else `other` (bounded cardinality).
    pub fn label(&self) -> &'static str {
        match self.kind.as_str() {
            "events_api" => "events_api",
            "slash_commands" => "slash_commands",
            "interactive" => "interactive",
            _ => "other",
        }
    }
}

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "type")]
    kind: Option<String>,
    envelope_id: Option<String>,
    payload: Option<Value>,
    reason: Option<String>,
    retry_attempt: Option<u64>,
    retry_reason: Option<String>,
}

/// Parses a text frame.
pub fn parse(text: &str) -> Result<Frame, String> {
    let raw: Raw = serde_json::from_str(text).map_err(|e| format!("frame is not valid JSON: {e}"))?;
    let kind = raw.kind.unwrap_or_default();
    Ok(match (kind.as_str(), raw.envelope_id) {
        ("hello", _) => Frame::Hello,
        ("disconnect", _) => Frame::Disconnect { reason: raw.reason.unwrap_or_default() },
        (_, Some(envelope_id)) if !envelope_id.is_empty() => Frame::Envelope(Incoming {
            envelope_id,
            kind,
            payload: raw.payload.unwrap_or(Value::Null),
            retry_attempt: raw.retry_attempt.unwrap_or(0),
            retry_reason: raw.retry_reason.filter(|r| !r.is_empty()),
        }),
        _ => Frame::Unknown(kind),
    })
}

/// The ack of an envelope.
pub fn ack(envelope_id: &str) -> String {
    serde_json::json!({ "envelope_id": envelope_id }).to_string()
}

/// What to do with an envelope.
#[derive(Debug)]
pub enum Plan {
    /// Accept this event, then ack.
    Accept(Box<EnvelopeV1>),
    /// Ack without an event (`app_rate_limited`, an envelope type this version does not know).
    Ignore(String),
}

/// The event an envelope carries, built as its HTTP twin's; a malformed envelope is a `BadRequest`, as it would
/// be over HTTP.
pub fn plan(state: &AppState, incoming: &Incoming) -> Result<Plan, ApiError> {
    let verification =
        Verification { method: VerificationMethod::SlackSocketMode, verified_at: state.config.verify_clock.now() };
    let (ids, body, media) = match incoming.kind.as_str() {
        "events_api" => match incoming.payload.get("type").and_then(Value::as_str) {
            Some("event_callback") => {
                let body = serde_json::to_vec(&incoming.payload).map_err(|e| ApiError::Internal(e.to_string()))?;
                (SlackIds::event(&incoming.payload)?, body, "application/json")
            }
            other => return Ok(Plan::Ignore(format!("events_api payload of type {other:?}"))),
        },
        "slash_commands" => {
            let form = command_form(&incoming.payload)?;
            let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(&form).finish();
            let map: HashMap<String, String> = form.into_iter().collect();
            (SlackIds::command(&map)?, body.into_bytes(), "application/x-www-form-urlencoded")
        }
        "interactive" => {
            if !incoming.payload.is_object() {
                return Err(ApiError::BadRequest("interactive envelope without a payload object".into()));
            }
            let raw = incoming.payload.to_string();
            let body = form_urlencoded::Serializer::new(String::new()).append_pair("payload", &raw).finish();
            (SlackIds::interaction(&incoming.payload)?, body.into_bytes(), "application/x-www-form-urlencoded")
        }
        other => return Ok(Plan::Ignore(format!("envelope type {other:?}"))),
    };
    if body.len() > state.config.body_limit {
        return Err(ApiError::PayloadTooLarge { limit: state.config.body_limit });
    }
    let mut headers = BTreeMap::from([("content-type".to_owned(), media.to_owned())]);
    // The HTTP twin's retry headers, so a worker sees a redelivery the same way.
    if incoming.retry_attempt > 0 {
        headers.insert("x-slack-retry-num".into(), incoming.retry_attempt.to_string());
        if let Some(reason) = &incoming.retry_reason {
            headers.insert("x-slack-retry-reason".into(), reason.chars().take(100).collect());
        }
    }
    debug_assert!(matches!(ids.kind(), Kind::SLACK_EVENT | Kind::SLACK_COMMAND | Kind::SLACK_INTERACTION));
    Ok(Plan::Accept(Box::new(ids.envelope(state, &body, verification, None, headers))))
}

/// A slash command's payload (a JSON object of the form's fields) as the form's pairs.
fn command_form(payload: &Value) -> Result<Vec<(String, String)>, ApiError> {
    let object =
        payload.as_object().ok_or_else(|| ApiError::BadRequest("slash_commands envelope without a payload".into()))?;
    Ok(object
        .iter()
        .filter_map(|(k, v)| match v {
            Value::String(s) => Some((k.clone(), s.clone())),
            Value::Bool(_) | Value::Number(_) => Some((k.clone(), v.to_string())),
            _ => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse() {
        assert_eq!(parse(r#"{"type":"hello","num_connections":1}"#).unwrap(), Frame::Hello);
        assert_eq!(
            parse(r#"{"type":"disconnect","reason":"refresh_requested"}"#).unwrap(),
            Frame::Disconnect { reason: "refresh_requested".into() }
        );
        let Frame::Envelope(e) = parse(
            r#"{"envelope_id":"e1","type":"events_api","payload":{"a":1},"retry_attempt":1,"retry_reason":"timeout","accepts_response_payload":false}"#,
        )
        .unwrap() else {
            panic!("an envelope")
        };
        assert_eq!((e.envelope_id.as_str(), e.kind.as_str(), e.retry_attempt), ("e1", "events_api", 1));
        assert_eq!(e.retry_reason.as_deref(), Some("timeout"));
        assert_eq!(parse(r#"{"type":"something_new"}"#).unwrap(), Frame::Unknown("something_new".into()));
        assert!(parse("not json").is_err());
        assert_eq!(ack("e1"), r#"{"envelope_id":"e1"}"#);
    }

    #[test]
    fn command_payload_becomes_the_form_of_its_http_twin() {
        let payload = serde_json::json!({"team_id":"T1","trigger_id":"1.2.abc","command":"/page","text":"db is down",
            "is_enterprise_install":"false","api_app_id":"A1","nested":{"x":1}});
        let form = command_form(&payload).unwrap();
        let map: HashMap<_, _> = form.iter().cloned().collect();
        assert_eq!(map["text"], "db is down");
        assert!(!map.contains_key("nested"));
        assert!(SlackIds::command(&map).is_ok());
        assert!(command_form(&Value::Null).is_err());
    }
}
