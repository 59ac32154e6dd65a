//! Queue depths (`GetQueueAttributes`), the oldest message's age (CloudWatch), the redrive policy.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;

use crate::aws::{AwsStore, unavailable};
use crate::queue::QueueStats;
use crate::{Result, StorageError};

/// How often the oldest message's age is read from CloudWatch at most (its datapoints are a minute apart).
const OLDEST_AGE_EVERY: Duration = Duration::from_secs(60);

impl AwsStore {
    /// The depths of both queues and the oldest message's age.
    pub(in crate::aws) async fn queue_stats(&self) -> Result<QueueStats> {
        let attrs = |url: &str| {
            self.clients
                .sqs
                .get_queue_attributes()
                .queue_url(url)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
                .send()
        };
        let (main, dlq) = tokio::join!(attrs(&self.queue_url), attrs(&self.dlq_url));
        let main = main.map_err(|e| unavailable("GetQueueAttributes", e))?.attributes.unwrap_or_default();
        let dlq = dlq.map_err(|e| unavailable("GetQueueAttributes DLQ", e))?.attributes.unwrap_or_default();
        let count = |m: &HashMap<QueueAttributeName, String>, a: QueueAttributeName| -> u64 {
            m.get(&a).and_then(|v| v.parse().ok()).unwrap_or(0)
        };
        Ok(QueueStats {
            waiting: count(&main, QueueAttributeName::ApproximateNumberOfMessages)
                + count(&main, QueueAttributeName::ApproximateNumberOfMessagesDelayed),
            in_flight: count(&main, QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            oldest_age_ms: self.oldest_age_ms().await,
            dead_letters: count(&dlq, QueueAttributeName::ApproximateNumberOfMessages)
                + count(&dlq, QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        })
    }

    /// The event queue's redrive `maxReceiveCount`, `None` without a redrive policy (checked at worker start-up).
    pub async fn redrive_max_receive_count(&self) -> Result<Option<u32>> {
        let out = self
            .clients
            .sqs
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .map_err(|e| unavailable("GetQueueAttributes RedrivePolicy", e))?;
        let Some(policy) = out.attributes.unwrap_or_default().remove(&QueueAttributeName::RedrivePolicy) else {
            return Ok(None);
        };
        let policy: serde_json::Value = serde_json::from_str(&policy)
            .map_err(|e| StorageError::Invalid(format!("the queue's redrive policy is not JSON: {e}")))?;
        // SQS writes the count as a number or, in older policies, as a string.
        let count = match &policy["maxReceiveCount"] {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        };
        count.and_then(|c| u32::try_from(c).ok()).map(Some).ok_or_else(|| {
            StorageError::Invalid(format!("the queue's redrive policy has no maxReceiveCount: {policy}"))
        })
    }

    /// SQS has no attribute for the oldest message's age; CloudWatch's `ApproximateAgeOfOldestMessage` (one
    /// datapoint a minute) has it, read at most once a minute. `None` when CloudWatch has no recent datapoint (kept
    /// like an age) or could not be asked (not kept, so a throttled read is tried again at the next refresh).
    pub(in crate::aws) async fn oldest_age_ms(&self) -> Option<u64> {
        let cached = *self.oldest_age.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, age)) = cached.filter(|(at, _)| at.elapsed() < OLDEST_AGE_EVERY) {
            return age;
        }
        let age = self.read_oldest_age_ms().await.ok()?;
        *self.oldest_age.lock().unwrap_or_else(|p| p.into_inner()) = Some((std::time::Instant::now(), age));
        age
    }

    /// The latest datapoint, `Ok(None)` without one; `Err` when CloudWatch could not be asked (logged here).
    async fn read_oldest_age_ms(&self) -> std::result::Result<Option<u64>, ()> {
        use aws_sdk_cloudwatch::types::{Dimension, Statistic};
        let now = std::time::SystemTime::now();
        let out = self
            .clients
            .cloudwatch
            .get_metric_statistics()
            .namespace("AWS/SQS")
            .metric_name("ApproximateAgeOfOldestMessage")
            .dimensions(Dimension::builder().name("QueueName").value(&self.names.queue).build())
            .start_time((now - Duration::from_secs(600)).into())
            .end_time(now.into())
            .period(60)
            .statistics(Statistic::Maximum)
            .send()
            .await
            .map_err(|e| tracing::debug!(error = %unavailable("GetMetricStatistics", e), "no oldest message age"))?;
        let latest = out.datapoints.unwrap_or_default().into_iter().max_by_key(|d| d.timestamp.map(|t| t.secs()));
        Ok(latest.and_then(|d| d.maximum).map(|secs| (secs.max(0.0) * 1000.0) as u64))
    }
}
