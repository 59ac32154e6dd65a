//! SNS beside the ports: confirming subscriptions through the `ConfirmSubscription` API (no URL fetch), and
//! notices to the ops topic.

use crate::StorageError;

use super::unavailable;

/// SNS calls of the workers.
#[derive(Debug, Clone)]
pub struct SnsOps {
    client: aws_sdk_sns::Client,
    ops_topic_arn: Option<String>,
}

impl SnsOps {
    /// Operations on `client`; notices go to `ops_topic_arn` when set.
    pub fn new(client: aws_sdk_sns::Client, ops_topic_arn: Option<String>) -> Self {
        Self { client, ops_topic_arn }
    }

    /// Confirms the subscription a `SubscriptionConfirmation` announced; returns the subscription ARN.
    pub async fn confirm_subscription(&self, topic_arn: &str, token: &str) -> Result<String, StorageError> {
        let out = self
            .client
            .confirm_subscription()
            .topic_arn(topic_arn)
            .token(token)
            .send()
            .await
            .map_err(|e| unavailable("ConfirmSubscription", e))?;
        Ok(out.subscription_arn.unwrap_or_default())
    }

    /// Publishes a notice to the ops topic; `Ok(false)` when none is configured.
    pub async fn notify(&self, subject: &str, message: &str) -> Result<bool, StorageError> {
        let Some(topic) = &self.ops_topic_arn else { return Ok(false) };
        // SNS subjects: at most 100 printable ASCII characters, no line breaks.
        let subject: String = subject.chars().filter(|c| c.is_ascii_graphic() || *c == ' ').take(100).collect();
        self.client
            .publish()
            .topic_arn(topic)
            .subject(subject)
            .message(message)
            .send()
            .await
            .map_err(|e| unavailable("Publish", e))?;
        Ok(true)
    }
}
