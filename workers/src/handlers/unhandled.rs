//! Kinds nobody registered a handler for: recorded and completed, never failed (a failure would only fill the
//! dead-letter queue with events nobody can handle).

use async_trait::async_trait;
use eventfleet_schema::Envelope;

use crate::wait::Ready;
use crate::{Handler, HandlerContext, HandlerError};

/// Completes the event with the outcome `unhandled kind <kind>`.
pub struct Unhandled;

#[async_trait]
impl Handler for Unhandled {
    async fn handle(&self, _ctx: &HandlerContext, envelope: &Envelope) -> Result<Ready<String>, HandlerError> {
        tracing::info!(event_id = %envelope.event_id(), kind = %envelope.kind(), "no handler for kind; completed");
        Ok(Ready::Now(format!("unhandled kind {}", envelope.kind())))
    }
}
