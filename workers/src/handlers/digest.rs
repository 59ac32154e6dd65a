//! A channel's burst digest, posted by its flush event ([`crate::digest`]).

use async_trait::async_trait;
use eventfleet_schema::Envelope;

use crate::wait::Ready;
use crate::{Handler, HandlerContext, HandlerError};

/// Posts the digest a flush event names.
pub struct DigestFlush;

#[async_trait]
impl Handler for DigestFlush {
    async fn handle(&self, ctx: &HandlerContext, envelope: &Envelope) -> Result<Ready<String>, HandlerError> {
        crate::digest::flush(ctx, envelope).await
    }
}
