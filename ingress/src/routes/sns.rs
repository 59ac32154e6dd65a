//! `POST /sns`, and SNS deliveries posted to a hook URL: verify the signature with the certificate at
//! `SigningCertURL` (rules in [`eventfleet_verify::sns`]), apply the topic allow-list, then enqueue.
//!
//! - `Notification`: keyed `sns:{topic}:{MessageId}`; a CloudWatch alarm (the `Message` is JSON with `AlarmName`
//!   and `NewStateValue`) is kind `sns.cloudwatch_alarm` grouped per alarm, anything else `sns.notification`
//!   grouped per topic.
//! - `SubscriptionConfirmation`: its `SubscribeURL` must pass the SNS host rule; it is enqueued as
//!   `sns.subscription_confirmation` and a worker confirms it (durably, with retries) and audits it.
//! - `UnsubscribeConfirmation`: enqueued as `sns.unsubscribe_confirmation` and audited by a worker.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use eventfleet_schema::{Body, EnvelopeV1, EventId, IdempotencyKey, Kind, Source, Verification, Webhook};
use serde_json::Value;

use super::{header, kept_headers, media_type, trace_context};
use crate::accept::accept;
use crate::body::RawBody;
use crate::{ApiError, AppState};
use eventfleet_verify::sns::{MessageType, SnsError, SnsMessage, check_cert_url, check_subscribe_url};

const KEPT_HEADERS: &[&str] = &["content-type", "user-agent", "x-amz-sns-message-type", "x-amz-sns-topic-arn"];

impl From<SnsError> for ApiError {
    fn from(e: SnsError) -> Self {
        match e {
            SnsError::Malformed(_) => ApiError::BadRequest(e.to_string()),
            // A certificate we could not fetch says nothing about the sender: let SNS retry.
            SnsError::CertFetch(_) => ApiError::Unavailable(e.to_string()),
            SnsError::CertUrl(_)
            | SnsError::Cert(_)
            | SnsError::CertExpired { .. }
            | SnsError::BadSignature
            | SnsError::SubscribeUrl(_) => ApiError::Unauthorized(e.to_string()),
        }
    }
}

/// `POST /sns`.
pub async fn post_sns(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    handle(&state, &headers, &body, None).await
}

/// Verifies and enqueues one SNS delivery; `hook` is the hook it was posted to, if any.
pub async fn handle(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
    hook: Option<&Webhook>,
) -> Result<Response, ApiError> {
    let media = media_type(headers);
    if !(media.is_empty() || media == "text/plain" || media == "application/json") {
        return Err(ApiError::UnsupportedMediaType(format!("SNS sends text/plain, not {media:?}")));
    }
    let message = SnsMessage::parse(body)?;
    if let Some(declared) = header(headers, "x-amz-sns-message-type") {
        let actual = match message.kind {
            MessageType::Notification => "Notification",
            MessageType::SubscriptionConfirmation => "SubscriptionConfirmation",
            MessageType::UnsubscribeConfirmation => "UnsubscribeConfirmation",
        };
        if declared != actual {
            return Err(ApiError::BadRequest(format!("x-amz-sns-message-type {declared:?} but the body is {actual}")));
        }
    }
    let cert_url = check_cert_url(&message.signing_cert_url)?;
    let cert = state.certs.get(&cert_url).await?;
    let now = state.config.verify_clock.now();
    let method = message.verify(&cert, now)?;
    let allowed = state.config.sns_allowed_topics.as_ref().map(|topics| topics.iter().any(|t| t == &message.topic_arn));
    match allowed {
        Some(false) => {
            return Err(ApiError::Forbidden(format!("topic {} is not on the allow-list", message.topic_arn)));
        }
        // Anyone can sign SNS messages from a topic of their own. A hook with a secret does not let SNS around
        // its secret unless the topic is allow-listed; a subscription is confirmed only for allow-listed topics
        // on /sns (a hook URL is itself the capability).
        None if hook.is_some_and(|h| h.secret.is_some()) => {
            return Err(ApiError::Forbidden(
                "this hook has a secret: allow the SNS topic with EVENTFLEET_SNS_ALLOWED_TOPICS to post SNS to it"
                    .into(),
            ));
        }
        None if hook.is_none() && message.kind == MessageType::SubscriptionConfirmation => {
            return Err(ApiError::Forbidden(
                "subscriptions to /sns are confirmed only for topics on EVENTFLEET_SNS_ALLOWED_TOPICS".into(),
            ));
        }
        _ => {}
    }

    let topic = message.topic_arn.as_str();
    let (kind, group) = match message.kind {
        MessageType::Notification => match alarm_identity(&message.message) {
            Some(alarm) => (Kind::SNS_CLOUDWATCH_ALARM, format!("alarm:{alarm}")),
            None => (Kind::SNS_NOTIFICATION, format!("sns:{topic}")),
        },
        MessageType::SubscriptionConfirmation => {
            check_subscribe_url(message.subscribe_url.as_deref().unwrap_or(""))?;
            (Kind::SNS_SUBSCRIPTION_CONFIRMATION, format!("sns:{topic}"))
        }
        MessageType::UnsubscribeConfirmation => (Kind::SNS_UNSUBSCRIBE_CONFIRMATION, format!("sns:{topic}")),
    };
    let envelope = EnvelopeV1 {
        event_id: EventId::new(),
        idempotency_key: IdempotencyKey::sns(topic, &message.message_id),
        source: Source::Sns { topic_arn: topic.to_owned(), hook_id: hook.map(|h| h.id.clone()) },
        kind: Kind::new(kind),
        message_group: group,
        received_at: state.store.clock.now(),
        verification: Verification { method, verified_at: now },
        trace: trace_context(headers),
        headers: kept_headers(headers, KEPT_HEADERS),
        body: Body::from_bytes(body),
    };
    Ok(accept(state, envelope, Default::default()).await?.respond(StatusCode::ACCEPTED))
}

/// The alarm a CloudWatch alarm message is about (its ARN, else its name), or `None` for other messages.
pub fn alarm_identity(message: &str) -> Option<String> {
    let json: Value = serde_json::from_str(message).ok()?;
    json.get("NewStateValue")?.as_str()?;
    let name = json.get("AlarmName")?.as_str()?;
    Some(json.get("AlarmArn").and_then(Value::as_str).unwrap_or(name).to_owned())
}
