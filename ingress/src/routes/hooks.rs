//! `POST /hooks/{hook_id}`: incoming webhooks from the registry, GitHub deliveries among them.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use eventfleet_schema::{
    Body, EnvelopeV1, EventId, HookId, IdempotencyKey, Kind, Source, Verification, VerificationMethod,
};

use super::{header, kept_headers, trace_context};
use crate::accept::accept;
use crate::body::RawBody;
use crate::{ApiError, AppState};
use eventfleet_verify::github::verify_hub_signature_256;
use eventfleet_verify::sns::SnsMessage;

/// Request headers copied into the envelope. Signatures and credentials are deliberately absent.
const KEPT_HEADERS: &[&str] =
    &["content-type", "user-agent", "idempotency-key", "x-github-event", "x-github-delivery", "x-github-hook-id"];

/// The longest `Idempotency-Key` or `X-GitHub-Delivery` accepted (keys end up in table keys).
const MAX_NATIVE_ID: usize = 200;

/// Handles one delivery to a registered hook.
pub async fn post_hook(
    State(state): State<AppState>,
    Path(hook_id): Path<String>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let hook_id = HookId::from_raw(hook_id);
    let hook = state
        .store
        .webhooks
        .get(&hook_id)
        .await?
        .filter(|h| h.active)
        .ok_or_else(|| ApiError::NotFound(format!("no active hook {hook_id}")))?;

    // CloudWatch → SNS → hook URL: an SNS delivery is verified as SNS (its own signature), whatever the hook's
    // secret, and routed to the hook's channel.
    if headers.contains_key("x-amz-sns-message-type") || SnsMessage::looks_like_sns(&body) {
        let response = super::sns::handle(&state, &headers, &body, Some(&hook)).await?;
        count_invocation(&state, &hook_id, is_duplicate(&response)).await;
        return Ok(response);
    }

    let method = match &hook.secret {
        Some(secret) => {
            verify_hub_signature_256(secret.as_bytes(), &body, header(&headers, "x-hub-signature-256"))
                .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
            VerificationMethod::HmacSha256
        }
        None => VerificationMethod::HookUrl,
    };
    // Only now, on verified bytes, is the body parsed.
    check_content_type(header(&headers, "content-type"), &body)?;

    let github_event = header(&headers, "x-github-event");
    let github_delivery = header(&headers, "x-github-delivery");
    let mut group = format!("hook:{hook_id}");
    let (source, kind, key) = match (github_event, github_delivery) {
        (Some(event), Some(delivery)) => {
            let delivery = native_id(delivery, "X-GitHub-Delivery")?;
            if event.is_empty() || event.len() > 64 || !event.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(ApiError::BadRequest("malformed X-GitHub-Event header".into()));
            }
            if let Some(repository) = github_repository(&body) {
                group = github_group(&hook_id, &repository);
            }
            (
                Source::Github { hook_id: hook_id.clone(), delivery: delivery.to_owned() },
                Kind::github(event),
                IdempotencyKey::github(&hook_id, delivery),
            )
        }
        _ => {
            let key = match header(&headers, "idempotency-key") {
                Some(k) => IdempotencyKey::hook(&hook_id, native_id(k, "Idempotency-Key")?),
                None => IdempotencyKey::hook_body(&hook_id, &body),
            };
            if let Some(value) = hook.group_key.as_deref().and_then(|pointer| group_value(&body, pointer)) {
                group = keyed_group(&hook_id, &value);
            }
            (Source::Hook { hook_id: hook_id.clone() }, Kind::new(Kind::HOOK_PAYLOAD), key)
        }
    };

    let now = state.store.clock.now();
    let envelope = EnvelopeV1 {
        event_id: EventId::new(),
        idempotency_key: key,
        source,
        kind,
        message_group: group,
        received_at: now,
        verification: Verification { method, verified_at: now },
        trace: trace_context(&headers),
        headers: kept_headers(&headers, KEPT_HEADERS),
        body: Body::from_bytes(&body),
    };
    let response = accept(&state, envelope, BTreeMap::new()).await?.respond(StatusCode::ACCEPTED);
    count_invocation(&state, &hook_id, is_duplicate(&response)).await;
    Ok(response)
}

/// The repository a GitHub delivery is about (`repository.full_name`), from a JSON body or the form content
/// type's `payload` field; `None` for organisation-wide events and bodies that are not GitHub's JSON.
fn github_repository(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Delivery {
        repository: Option<Repository>,
    }
    #[derive(serde::Deserialize)]
    struct Repository {
        full_name: String,
    }
    let parsed = serde_json::from_slice::<Delivery>(body).ok().or_else(|| {
        let payload = form_urlencoded::parse(body).find(|(k, _)| k == "payload")?.1;
        serde_json::from_str::<Delivery>(&payload).ok()
    });
    parsed?.repository.map(|r| r.full_name).filter(|name| !name.is_empty())
}

/// The value at `pointer` in a JSON payload, when it is a string, a number or a boolean (a payload without it, or
/// not JSON, keeps the hook's own group).
fn group_value(body: &[u8], pointer: &str) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    match json.pointer(pointer)? {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_)) => Some(v.to_string()),
        _ => None,
    }
}

/// The message group of a hook's payloads whose group key says `value`.
fn keyed_group(hook_id: &HookId, value: &str) -> String {
    bounded_group(format!("hook:{hook_id}:{value}"), || format!("hook:{hook_id}:"), value)
}

/// `group` when it fits SQS's group id (128 printable characters), else `prefix()` and a digest of `value`.
fn bounded_group(group: String, prefix: impl Fn() -> String, value: &str) -> String {
    if group.len() <= 128 && group.bytes().all(|b| b.is_ascii_graphic()) {
        return group;
    }
    use sha2::Digest as _;
    let digest = hex::encode(sha2::Sha256::digest(value.as_bytes()));
    format!("{}{}", prefix(), &digest[..32])
}

/// The message group of a hook's GitHub deliveries about `repository`: one per repository, so one busy
/// repository does not hold up another's deliveries, while each repository's (a run's, a pull request's) stay in
/// order. A name that would not fit SQS's group id (128 printable characters) is hashed.
fn github_group(hook_id: &HookId, repository: &str) -> String {
    bounded_group(format!("github:{hook_id}:{repository}"), || format!("github:{hook_id}:"), repository)
}

/// Counts an accepted, non-duplicate invocation. A lost count is not worth failing an accepted event over.
async fn count_invocation(state: &AppState, hook_id: &HookId, duplicate: bool) {
    if duplicate {
        return;
    }
    if let Err(e) = state.store.webhooks.record_invocations(hook_id, 1).await {
        tracing::warn!(error = %e, %hook_id, "could not count a hook invocation");
    }
}

fn native_id<'a>(value: &'a str, name: &str) -> Result<&'a str, ApiError> {
    let value = value.trim();
    if value.is_empty() || value.len() > MAX_NATIVE_ID || value.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!("malformed {name} header")));
    }
    Ok(value)
}

/// JSON bodies must parse; text and form bodies pass; other media types are 415. No content type at all is
/// accepted (many alerting tools send none) and the body is kept as received.
fn check_content_type(content_type: Option<&str>, body: &[u8]) -> Result<(), ApiError> {
    let Some(ct) = content_type else {
        return Ok(());
    };
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let is_json = essence == "application/json" || essence.ends_with("+json");
    if is_json {
        serde_json::from_slice::<serde::de::IgnoredAny>(body)
            .map_err(|e| ApiError::BadRequest(format!("body is not valid JSON: {e}")))?;
        return Ok(());
    }
    if essence.starts_with("text/") || essence == "application/x-www-form-urlencoded" {
        return Ok(());
    }
    Err(ApiError::UnsupportedMediaType(format!(
        "content type {essence:?} is not accepted on hooks; send JSON, text or a form"
    )))
}

fn is_duplicate(response: &Response) -> bool {
    response.headers().contains_key("x-eventfleet-duplicate")
}
