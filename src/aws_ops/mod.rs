//! The AWS services beside the storage ports, wired into the workers: subscription confirmation through the
//! SNS `ConfirmSubscription` API, dead-letter notices to the ops topic, and metrics to CloudWatch. They use the
//! aws backend's clients but are not storage, so they fail with their own [`OpsError`], which keeps the
//! service's error code.
//!
//! - [`sns`]: `ConfirmSubscription` (in the topic's region) and ops notices.
//! - [`cloudwatch`]: `PutMetricData` batches.
//! - [`error`]: the error type, [`OpsError`].

pub mod cloudwatch;
pub mod error;
pub mod sns;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eventfleet_storage::Store;
use eventfleet_workers::handlers::sns::SubscriptionConfirmer;
use eventfleet_workers::metrics::Summary;
use eventfleet_workers::{DeadLetterNotice, DeadLetterNotifier, HandlerError, WorkerMetrics};
use tokio_util::sync::CancellationToken;

use self::cloudwatch::{Datum, Publisher, Unit, Value};
pub use self::error::OpsError;
use self::sns::SnsOps;

/// Confirms subscriptions with `ConfirmSubscription` (no URL is fetched).
pub struct ApiConfirmer(pub SnsOps);

#[async_trait]
impl SubscriptionConfirmer for ApiConfirmer {
    async fn confirm(&self, topic_arn: &str, token: &str, _subscribe_url: &str) -> Result<(), HandlerError> {
        match self.0.confirm_subscription(topic_arn, token).await {
            Ok(arn) => {
                tracing::info!(topic = topic_arn, subscription = %arn, "subscription confirmed");
                Ok(())
            }
            // A bad token or an unknown topic: no retry fixes it.
            Err(e) if e.is_refusal() => Err(HandlerError::Permanent(e.to_string())),
            Err(e) => Err(HandlerError::retryable(e.to_string())),
        }
    }
}

/// Publishes a notice for every dead letter to the ops topic.
pub struct OpsTopic(pub SnsOps);

#[async_trait]
impl DeadLetterNotifier for OpsTopic {
    async fn dead_lettered(&self, notice: &DeadLetterNotice) -> Result<(), String> {
        let subject = format!("eventfleet: {} dead-lettered", notice.kind);
        let message = serde_json::to_string_pretty(notice).map_err(|e| e.to_string())?;
        self.0.notify(&subject, &message).await.map(|_| ()).map_err(|e| e.to_string())
    }
}

/// Every `interval`, publishes what the workers did since the last time and the queue's depths; once more at
/// shutdown so the last period is not lost.
pub async fn publish_metrics(
    publisher: Publisher,
    metrics: WorkerMetrics,
    store: Store,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        let stop = tokio::select! {
            _ = tokio::time::sleep(interval) => false,
            _ = shutdown.cancelled() => true,
        };
        let data = data(&metrics, &store).await;
        if let Err(e) = publisher.put(&data).await {
            tracing::warn!(error = %e, "could not publish metrics to CloudWatch");
        }
        if stop {
            return;
        }
    }
}

async fn data(metrics: &WorkerMetrics, store: &Store) -> Vec<Datum> {
    let t = metrics.totals.take();
    let summary = |s: Summary| Value::Summary { count: s.count, sum: s.sum, min: s.min, max: s.max };
    let mut data = vec![
        Datum { name: "EventsProcessed", unit: Unit::Count, value: Value::Single(t.processed as f64) },
        Datum { name: "EventsFailed", unit: Unit::Count, value: Value::Single(t.failed as f64) },
        Datum { name: "EventsDeadLettered", unit: Unit::Count, value: Value::Single(t.dead_lettered as f64) },
        Datum { name: "HandlerDuration", unit: Unit::Milliseconds, value: summary(t.handler_ms) },
        Datum { name: "EventAge", unit: Unit::Milliseconds, value: summary(t.event_age_ms) },
    ];
    match store.queue.stats().await {
        Ok(stats) => {
            data.extend([
                Datum { name: "QueueDepth", unit: Unit::Count, value: Value::Single(stats.waiting as f64) },
                Datum { name: "QueueInFlight", unit: Unit::Count, value: Value::Single(stats.in_flight as f64) },
                Datum { name: "DeadLetterDepth", unit: Unit::Count, value: Value::Single(stats.dead_letters as f64) },
            ]);
            // SQS publishes the age itself (AWS/SQS ApproximateAgeOfOldestMessage, where `stats` reads it); it is
            // repeated here so the fleet's own namespace has every figure of the dashboard under one dimension.
            if let Some(ms) = stats.oldest_age_ms {
                let secs = ms as f64 / 1000.0;
                data.push(Datum { name: "OldestMessageAge", unit: Unit::Seconds, value: Value::Single(secs) });
            }
        }
        Err(e) => tracing::warn!(error = %e, "queue stats unavailable for CloudWatch"),
    }
    data
}

/// The ops services for an aws store: the confirmer and the notifier share one SNS client.
pub fn sns_ops(aws: &Arc<eventfleet_storage::AwsStore>, ops_topic_arn: Option<String>) -> SnsOps {
    SnsOps::new(aws.clients().sns.clone(), ops_topic_arn)
}

#[cfg(test)]
mod tests {
    use aws_config::{BehaviorVersion, Region};
    use eventfleet_schema::ErrorClass;

    use super::*;

    /// SNS clients on `endpoint` with test credentials.
    fn sns_client(endpoint: &str) -> aws_sdk_sns::Client {
        let config = aws_sdk_sns::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .credentials_provider(aws_sdk_sns::config::Credentials::new("test", "test", None, None, "test"))
            .build();
        aws_sdk_sns::Client::from_conf(config)
    }

    /// A refusal by SNS (its error code) is permanent; a request that got no answer is worth a retry.
    #[tokio::test]
    async fn a_refused_confirmation_is_permanent_and_an_unanswered_one_retryable() {
        let endpoint = std::env::var("EVENTFLEET_TEST_AWS_ENDPOINT")
            .expect("EVENTFLEET_TEST_AWS_ENDPOINT is not set: run the tests through scripts/test, which starts moto");
        let ops = SnsOps::new(sns_client(&endpoint), None);
        let missing = "arn:aws:sns:us-east-1:123456789012:no-such-topic";
        let err = ops.confirm_subscription(missing, "token").await.expect_err("an unknown topic is refused");
        assert_eq!((err.operation, err.code.as_deref()), ("ConfirmSubscription", Some("NotFound")), "{err}");
        assert!(std::error::Error::source(&err).is_some(), "the SDK error is kept as the source");
        let refused = ApiConfirmer(ops).confirm(missing, "token", "").await.expect_err("refused");
        assert_eq!(refused.class(), ErrorClass::Permanent, "{refused}");

        // Nothing listens on this port: no answer, no code.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let unanswered = ApiConfirmer(SnsOps::new(sns_client(&url), None));
        let err = unanswered.confirm(missing, "token", "").await.expect_err("no server");
        assert_eq!(err.class(), ErrorClass::Retryable, "{err}");
    }
}
