//! The error of an SNS or CloudWatch call: which call, the service's error code when it answered with one, and
//! the SDK error itself as the source.

use std::error::Error;
use std::fmt::Debug;

use aws_sdk_sns::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// An SNS or CloudWatch call that failed.
#[derive(Debug, thiserror::Error)]
#[error("{operation}: {message}")]
pub struct OpsError {
    /// The API operation (`ConfirmSubscription`, `Publish`, `PutMetricData`).
    pub operation: &'static str,
    /// The service's error code (`NotFound`, `InvalidParameter`, `Throttling`, ...); none when the request got
    /// no answer (timeout, network, credentials).
    pub code: Option<String>,
    message: String,
    #[source]
    source: Box<dyn Error + Send + Sync>,
}

impl OpsError {
    /// The error of `operation` from the SDK.
    pub fn sdk<E, R>(operation: &'static str, e: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + Error + Send + Sync + 'static,
        R: Debug + Send + Sync + 'static,
    {
        let code = e.code().map(str::to_owned);
        let message = DisplayErrorContext(&e).to_string();
        Self { operation, code, message, source: Box::new(e) }
    }

    /// Whether the service refused the request itself (a bad token, an unknown topic, no permission): the same
    /// request fails again, so it is not worth a retry. Throttling and server errors are worth one.
    pub fn is_refusal(&self) -> bool {
        // Not credential errors: credentials can be wrong for a moment (a rotation), and a retry then succeeds.
        const REFUSALS: [&str; 4] = ["InvalidParameter", "InvalidParameterValue", "NotFound", "AuthorizationError"];
        self.code.as_deref().is_some_and(|code| REFUSALS.contains(&code))
    }
}
