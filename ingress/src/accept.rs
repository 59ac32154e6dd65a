//! The ingress half of the protocol (docs/architecture.md, "accept"): **never acknowledge what is not durable**.
//!
//! Each verified event goes through one step, [`eventfleet_storage::Protocol::accept`], which the backend does
//! as one unit of work (claim, enqueue, mark, the `received` and `enqueued` lines; or a duplicate counted and
//! audited) and which returns only once the event is durable. The answer follows it; any backend failure, or a
//! backend slower than the budget, is a 503 so the sender retries.

use std::collections::BTreeMap;

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use eventfleet_schema::{Envelope, EnvelopeV1, EventId};
use eventfleet_storage::OutgoingMessage;

use crate::{ApiError, AppState};

/// The answer to an accepted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Accepted {
    /// The event's id (the first delivery's, for duplicates).
    pub event_id: EventId,
    /// Whether this request was a redelivery of an event already queued.
    pub duplicate: bool,
}

impl Accepted {
    /// `status` with `{"event_id", "duplicate"}`, and `X-Eventfleet-Duplicate: true` on duplicates.
    pub fn respond(self, status: StatusCode) -> Response {
        let mut response = (status, Json(self)).into_response();
        if self.duplicate {
            response.headers_mut().insert("x-eventfleet-duplicate", HeaderValue::from_static("true"));
        }
        response
    }
}

pub use eventfleet_schema::message_group;

/// Runs the protocol for one verified event, within the configured backend budget.
pub async fn accept(
    state: &AppState,
    envelope: EnvelopeV1,
    attributes: BTreeMap<String, String>,
) -> Result<Accepted, ApiError> {
    let source = envelope.source.name();
    let span = tracing::info_span!(
        "ingress.accept",
        event_id = %envelope.event_id,
        key_hash = %envelope.idempotency_key.log_hash(),
        source,
        kind = %envelope.kind,
        group = %envelope.message_group,
        duplicate = tracing::field::Empty,
    );
    let accepted = tracing::Instrument::instrument(accept_in_budget(state, envelope, attributes), span.clone()).await?;
    span.record("duplicate", accepted.duplicate);
    Ok(accepted)
}

async fn accept_in_budget(
    state: &AppState,
    envelope: EnvelopeV1,
    attributes: BTreeMap<String, String>,
) -> Result<Accepted, ApiError> {
    let budget = state.config.backend_budget;
    let source = envelope.source.name();
    let started = std::time::Instant::now();
    let accepted = match tokio::time::timeout(budget, accept_unbounded(state, envelope, attributes)).await {
        Ok(result) => result?,
        // Whatever was written stands: a PENDING claim is finished by the sender's retry.
        Err(_) => {
            return Err(ApiError::Unavailable(format!(
                "the event store did not answer within {} ms; retry later",
                budget.as_millis()
            )));
        }
    };
    if !accepted.duplicate {
        state.metrics.enqueue_seconds.observe(started.elapsed().as_secs_f64());
    }
    state.metrics.count_event(source, accepted.duplicate);
    tracing::debug!(event_id = %accepted.event_id, duplicate = accepted.duplicate, "accepted");
    Ok(accepted)
}

async fn accept_unbounded(
    state: &AppState,
    mut envelope: EnvelopeV1,
    mut attributes: BTreeMap<String, String>,
) -> Result<Accepted, ApiError> {
    // The trace context also travels as message attributes, where a worker (or any SQS consumer) finds it
    // without parsing the body.
    if let Some(trace) = &envelope.trace {
        attributes.insert("traceparent".into(), trace.traceparent.clone());
        if let Some(state) = &trace.tracestate {
            attributes.insert("tracestate".into(), state.clone());
        }
    }
    envelope.message_group = message_group(&envelope.message_group);
    let message = OutgoingMessage { attributes, ..OutgoingMessage::first_delivery(Envelope::V1(envelope)) };
    // One protocol step: the backend claims, enqueues, marks and audits as one unit of work.
    let accepted =
        state.store.protocol.accept(message, state.config.idempotency_horizon, state.config.actor.as_str()).await?;
    Ok(Accepted { event_id: accepted.event_id(), duplicate: accepted.is_duplicate() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_backend_safe() {
        assert_eq!(message_group("slack:T1:C1"), "slack:T1:C1");
        let long = "x".repeat(200);
        assert_eq!(message_group(&long).len(), 66);
        assert_eq!(message_group(&long), message_group(&long));
        assert!(message_group("alarm:caf\u{e9}").starts_with("g:"));
        assert!(message_group("has space").starts_with("g:"));
        assert!(message_group("").starts_with("g:"));
    }
}
