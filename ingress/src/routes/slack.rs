//! Slack: `POST /slack/events` (Events API JSON), `POST /slack/commands` (slash commands) and
//! `POST /slack/interactions` (interactivity, `payload=` JSON), all signed with the `v0` scheme.
//!
//! Slack wants a 200 within 3 s; the accept path is bounded by the backend budget (2 s) and answers 503 rather
//! than late. A retry (`X-Slack-Retry-Num`) of an accepted event is answered 200 as a duplicate.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use eventfleet_schema::{
    Body, EnvelopeV1, EventId, IdempotencyKey, Kind, Source, TraceContext, Verification, VerificationMethod,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{header, kept_headers, media_type, trace_context};
use crate::accept::accept;
use crate::body::RawBody;
use crate::{ApiError, AppState};
use eventfleet_verify::slack::verify;

const KEPT_HEADERS: &[&str] = &["content-type", "user-agent", "x-slack-retry-num", "x-slack-retry-reason"];

/// Checks the signature; returns the verification verdict.
fn verified(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<Verification, ApiError> {
    let secret =
        state.config.slack_signing_secret.as_ref().map(eventfleet_schema::Secret::expose).ok_or_else(|| {
            ApiError::NotFound("Slack is not configured here (EVENTFLEET_SLACK_SIGNING_SECRET)".into())
        })?;
    let now = state.config.verify_clock.now();
    verify(
        secret.as_bytes(),
        header(headers, "x-slack-request-timestamp"),
        header(headers, "x-slack-signature"),
        body,
        now,
    )
    .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
    Ok(Verification { method: VerificationMethod::SlackV0, verified_at: now })
}

fn require_media(headers: &HeaderMap, expected: &str) -> Result<(), ApiError> {
    let media = media_type(headers);
    if media != expected {
        return Err(ApiError::UnsupportedMediaType(format!("expected {expected}, got {media:?}")));
    }
    Ok(())
}

/// A non-empty string field of a JSON object.
fn text<'v>(value: &'v Value, pointer: &str) -> Option<&'v str> {
    value.pointer(pointer).and_then(Value::as_str).filter(|s| !s.is_empty() && s.len() <= 200)
}

/// What identifies a Slack delivery, read from its body; the same whichever transport brought it (HTTP or Socket
/// Mode), so a delivery over both is one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackIds {
    team: String,
    /// `event_id`, or `trigger_id` for commands and interactions.
    native_id: String,
    kind: &'static str,
    channel: Option<String>,
}

impl SlackIds {
    /// An Events API `event_callback`.
    pub fn event(json: &Value) -> Result<Self, ApiError> {
        let team =
            text(json, "/team_id").ok_or_else(|| ApiError::BadRequest("event_callback without team_id".into()))?;
        let event_id =
            text(json, "/event_id").ok_or_else(|| ApiError::BadRequest("event_callback without event_id".into()))?;
        let channel = text(json, "/event/channel")
            .or_else(|| text(json, "/event/item/channel"))
            .or_else(|| text(json, "/event/channel/id"));
        Ok(Self::new(team, event_id, Kind::SLACK_EVENT, channel))
    }

    /// A slash command's form fields.
    pub fn command(form: &HashMap<String, String>) -> Result<Self, ApiError> {
        let field = |name: &str| form.get(name).map(String::as_str).filter(|v| !v.is_empty() && v.len() <= 200);
        let team = field("team_id").ok_or_else(|| ApiError::BadRequest("slash command without team_id".into()))?;
        let trigger =
            field("trigger_id").ok_or_else(|| ApiError::BadRequest("slash command without trigger_id".into()))?;
        field("command").ok_or_else(|| ApiError::BadRequest("slash command without command".into()))?;
        Ok(Self::new(team, trigger, Kind::SLACK_COMMAND, field("channel_id")))
    }

    /// An interaction's `payload` JSON. Interactions without a `trigger_id` are keyed by a digest of the JSON
    /// in one canonical form (keys sorted), so the same payload over HTTP and Socket Mode has one key.
    pub fn interaction(json: &Value) -> Result<Self, ApiError> {
        let team = text(json, "/team/id")
            .or_else(|| text(json, "/user/team_id"))
            .ok_or_else(|| ApiError::BadRequest("interaction without team.id".into()))?;
        // Most interactions carry a trigger_id; the rest (view_closed, ...) are keyed by their content.
        let native_id = match text(json, "/trigger_id") {
            Some(trigger) => trigger.to_owned(),
            None => hex::encode(Sha256::digest(json.to_string().as_bytes())),
        };
        let channel = text(json, "/channel/id").or_else(|| text(json, "/view/id"));
        Ok(Self::new(team, &native_id, Kind::SLACK_INTERACTION, channel))
    }

    fn new(team: &str, native_id: &str, kind: &'static str, channel: Option<&str>) -> Self {
        Self { team: team.to_owned(), native_id: native_id.to_owned(), kind, channel: channel.map(str::to_owned) }
    }

    /// The kind (`slack.event`, `slack.command`, `slack.interaction`).
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The envelope of this delivery: its key, group and source, the body as the HTTP route receives it.
    pub fn envelope(
        &self,
        state: &AppState,
        body: &[u8],
        verification: Verification,
        trace: Option<TraceContext>,
        headers: BTreeMap<String, String>,
    ) -> EnvelopeV1 {
        let team = &self.team;
        EnvelopeV1 {
            event_id: EventId::new(),
            idempotency_key: IdempotencyKey::slack(team, &self.native_id),
            source: Source::Slack { team_id: team.clone() },
            kind: Kind::new(self.kind),
            message_group: match &self.channel {
                Some(c) => format!("slack:{team}:{c}"),
                None => format!("slack:{team}"),
            },
            received_at: state.store.clock.now(),
            verification,
            trace,
            headers,
            body: Body::from_bytes(body),
        }
    }
}

async fn enqueue(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
    verification: Verification,
    ids: SlackIds,
) -> Result<Response, ApiError> {
    let envelope = ids.envelope(state, body, verification, trace_context(headers), kept_headers(headers, KEPT_HEADERS));
    let accepted = accept(state, envelope, Default::default()).await?;
    if ids.kind == Kind::SLACK_EVENT {
        return Ok(accepted.respond(StatusCode::OK));
    }
    // Slack reads a body on these routes as a reply (a message, a `response_action`): acknowledge with an empty
    // 200; the duplicate header still tells operators what happened.
    let mut response = StatusCode::OK.into_response();
    if accepted.duplicate {
        response.headers_mut().insert("x-eventfleet-duplicate", axum::http::HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// `POST /slack/events`.
pub async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let verification = verified(&state, &headers, &body)?;
    require_media(&headers, "application/json")?;
    let json: Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("body is not valid JSON: {e}")))?;
    match json.get("type").and_then(Value::as_str) {
        Some("url_verification") => {
            let challenge = text(&json, "/challenge")
                .ok_or_else(|| ApiError::BadRequest("url_verification without a challenge".into()))?;
            Ok(Json(serde_json::json!({ "challenge": challenge })).into_response())
        }
        Some("event_callback") => enqueue(&state, &headers, &body, verification, SlackIds::event(&json)?).await,
        Some(other) => {
            // app_rate_limited and future envelope types: acknowledged, nothing to do.
            tracing::info!(slack_type = other, "Slack envelope type acknowledged without processing");
            Ok(Json(serde_json::json!({ "ok": true })).into_response())
        }
        None => Err(ApiError::BadRequest("Events API body without a type".into())),
    }
}

/// `POST /slack/commands`.
pub async fn commands(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let verification = verified(&state, &headers, &body)?;
    require_media(&headers, "application/x-www-form-urlencoded")?;
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    enqueue(&state, &headers, &body, verification, SlackIds::command(&form)?).await
}

/// `POST /slack/interactions`.
pub async fn interactions(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let verification = verified(&state, &headers, &body)?;
    require_media(&headers, "application/x-www-form-urlencoded")?;
    let payload = form_urlencoded::parse(&body)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| ApiError::BadRequest("interaction without a payload field".into()))?;
    let json: Value =
        serde_json::from_str(&payload).map_err(|e| ApiError::BadRequest(format!("payload is not valid JSON: {e}")))?;
    enqueue(&state, &headers, &body, verification, SlackIds::interaction(&json)?).await
}
