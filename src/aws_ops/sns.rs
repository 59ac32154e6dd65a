//! SNS beside the ports: confirming subscriptions through the `ConfirmSubscription` API (no URL fetch), and
//! notices to the ops topic.

use super::OpsError;

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

    /// Confirms the subscription a `SubscriptionConfirmation` announced; returns the subscription ARN. The call
    /// goes to the topic's region (from its ARN), which need not be the fleet's: alarms of every region fan in.
    pub async fn confirm_subscription(&self, topic_arn: &str, token: &str) -> Result<String, OpsError> {
        let mut request = self.client.confirm_subscription().topic_arn(topic_arn).token(token).customize();
        if let Some(region) = topic_region(topic_arn) {
            request = request.config_override(
                aws_sdk_sns::config::Builder::default().region(aws_sdk_sns::config::Region::new(region.to_owned())),
            );
        }
        let out = request.send().await.map_err(|e| OpsError::sdk("ConfirmSubscription", e))?;
        Ok(out.subscription_arn.unwrap_or_default())
    }

    /// Publishes a notice to the ops topic; `Ok(false)` when none is configured.
    pub async fn notify(&self, subject: &str, message: &str) -> Result<bool, OpsError> {
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
            .map_err(|e| OpsError::sdk("Publish", e))?;
        Ok(true)
    }
}

/// The region of a topic ARN (`arn:aws:sns:eu-west-1:123456789012:alarms`), if it has one.
fn topic_region(arn: &str) -> Option<&str> {
    let mut parts = arn.split(':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("arn"), Some(_partition), Some("sns"), Some(region)) if !region.is_empty() => Some(region),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::topic_region;

    #[test]
    fn the_region_comes_from_the_topic_arn() {
        assert_eq!(topic_region("arn:aws:sns:eu-west-1:123456789012:alarms"), Some("eu-west-1"));
        assert_eq!(topic_region("arn:aws-cn:sns:cn-north-1:123456789012:a"), Some("cn-north-1"));
        assert_eq!(topic_region("arn:aws:sns::123456789012:alarms"), None);
        assert_eq!(topic_region("arn:aws:sqs:us-east-1:123456789012:q"), None);
        assert_eq!(topic_region("alarms"), None);
    }
}
