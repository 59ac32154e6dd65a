//! The [`Queue`] port on the event queue: receives (long polls past SQS's 20 s are repeated polls), deletes,
//! visibility changes and the move to the DLQ.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_sqs::operation::change_message_visibility::ChangeMessageVisibilityError;
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, SendMessageBatchRequestEntry};
use eventfleet_schema::{Envelope, Timestamp};

use super::dlq::{ATTR_DEAD_AT, ATTR_GROUP, ATTR_REASON, ATTR_RECEIVES};
use super::in_flight::Held;
use super::sends::{send_entries, send_messages};
use super::wire::{
    MAX_VISIBILITY, MAX_WAIT, attribute_text, attributes_of, receipt_error, string_attribute, system_attribute,
    whole_secs,
};
use crate::aws::{AwsStore, unavailable};
use crate::queue::{MessageId, OutgoingMessage, Queue, QueueStats, ReceiptHandle, ReceivedMessage};
use crate::{Result, StorageError};

/// The URL of a queue by name.
pub(in crate::aws) async fn queue_url(client: &aws_sdk_sqs::Client, name: &str) -> Result<String> {
    let out = client
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .map_err(|e| unavailable(&format!("GetQueueUrl {name}"), e))?;
    out.queue_url.ok_or_else(|| StorageError::NotFound(format!("queue {name}")))
}

impl AwsStore {
    /// The message and what moving it to the DLQ needs; the message is an error text when it does not decode.
    pub(in crate::aws) fn decode(
        &self,
        msg: Message,
        visibility: Duration,
    ) -> (Held, std::result::Result<ReceivedMessage, String>) {
        let body = msg.body.clone().unwrap_or_default();
        let group = system_attribute(&msg, MessageSystemAttributeName::MessageGroupId).unwrap_or_default().to_owned();
        let receive_count = system_attribute(&msg, MessageSystemAttributeName::ApproximateReceiveCount)
            .and_then(|c| c.parse().ok())
            .unwrap_or(1);
        let sent_at = system_attribute(&msg, MessageSystemAttributeName::SentTimestamp)
            .and_then(|t| t.parse().ok())
            .map_or_else(|| self.now(), Timestamp::from_millis);
        let attributes = attributes_of(&msg);
        let message_id = msg.message_id.clone().unwrap_or_default();
        let held = Held {
            message_id: message_id.clone(),
            body: body.clone(),
            group: group.clone(),
            attributes: attributes.clone(),
            receive_count,
            until: Instant::now() + visibility,
            started: None,
            prefetched: None,
            deletes: Vec::new(),
        };
        let received = match serde_json::from_str::<Envelope>(&body) {
            Ok(envelope) => Ok(ReceivedMessage {
                message_id: MessageId(message_id),
                receipt: ReceiptHandle(msg.receipt_handle.unwrap_or_default()),
                envelope,
                group,
                attributes,
                receive_count,
                sent_at,
            }),
            Err(e) => Err(format!("undecodable envelope: {e}")),
        };
        (held, received)
    }

    pub(in crate::aws) async fn receive_once(
        &self,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>> {
        let out = self
            .clients
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max as i32)
            .visibility_timeout(whole_secs(visibility))
            .wait_time_seconds(whole_secs(wait))
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|e| unavailable("ReceiveMessage", e))?;
        let mut received = Vec::new();
        for msg in out.messages.unwrap_or_default() {
            let receipt = msg.receipt_handle.clone().unwrap_or_default();
            match self.decode(msg, visibility) {
                (held, Ok(m)) => {
                    self.in_flight.hold(&receipt, held);
                    received.push(m);
                }
                (held, Err(reason)) => {
                    // A newer envelope version during a deploy, or a foreign writer: it would block its group
                    // for ever, so it goes to the DLQ with the reason.
                    tracing::error!(message_id = %held.message_id, %reason, "moving an undecodable message to the DLQ");
                    self.in_flight.hold(&receipt, held);
                    if let Err(e) = self.move_to_dlq(&ReceiptHandle(receipt), &reason).await {
                        tracing::warn!(error = %e, "could not move an undecodable message; it reappears later");
                    }
                }
            }
        }
        Ok(received)
    }
}

#[async_trait]
impl Queue for AwsStore {
    async fn send_batch(&self, messages: Vec<OutgoingMessage>) -> Result<Vec<Result<MessageId>>> {
        send_messages(&self.clients.sqs, &self.queue_url, &messages).await
    }

    async fn receive(&self, max: usize, visibility: Duration, wait: Duration) -> Result<Vec<ReceivedMessage>> {
        if !(1..=10).contains(&max) {
            return Err(StorageError::Invalid(format!("receive of {max} messages: SQS takes 1 to 10")));
        }
        if visibility > MAX_VISIBILITY {
            return Err(StorageError::Invalid(format!("visibility of {visibility:?}: SQS allows up to 12 h")));
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let got = self.receive_once(max, visibility, left.min(MAX_WAIT)).await?;
            if !got.is_empty() || left <= MAX_WAIT {
                return Ok(got);
            }
        }
    }

    async fn delete(&self, receipt: &ReceiptHandle) -> Result<()> {
        self.deletes
            .submit(receipt.0.clone())
            .await
            .unwrap_or_else(|| Err(StorageError::unavailable("delete batcher stopped")))?;
        self.in_flight.forget(&receipt.0);
        Ok(())
    }

    async fn change_visibility(&self, receipt: &ReceiptHandle, visibility: Duration) -> Result<()> {
        if visibility > MAX_VISIBILITY {
            return Err(StorageError::Invalid(format!("visibility of {visibility:?}: SQS allows up to 12 h")));
        }
        // A handler that runs long enough for a heartbeat deletes the done messages of its chain left to it now,
        // while their receipts are still good (they were left with half their visibility to run).
        let left = self.in_flight.take_deletes(&receipt.0);
        if !left.is_empty() {
            self.delete_done(left).await;
        }
        self.clients
            .sqs
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(&receipt.0)
            .visibility_timeout(whole_secs(visibility))
            .send()
            .await
            .map_err(|e| {
                receipt_error("ChangeMessageVisibility", e, |e| {
                    matches!(
                        e,
                        ChangeMessageVisibilityError::MessageNotInflight(_)
                            | ChangeMessageVisibilityError::ReceiptHandleIsInvalid(_)
                    )
                })
            })?;
        self.in_flight.extend(&receipt.0, visibility);
        Ok(())
    }

    async fn move_to_dlq(&self, receipt: &ReceiptHandle, reason: &str) -> Result<()> {
        let held = self.in_flight.get(&receipt.0).ok_or_else(|| {
            StorageError::Invalid("move to the DLQ: this process did not receive that message".into())
        })?;
        let reason = if reason.is_empty() { "unknown" } else { reason };
        let mut attributes = held.attributes.clone();
        attributes.insert(ATTR_REASON.into(), attribute_text(reason, 1024));
        attributes.insert(ATTR_DEAD_AT.into(), self.now().as_millis().to_string());
        attributes.insert(ATTR_RECEIVES.into(), held.receive_count.to_string());
        attributes.insert(ATTR_GROUP.into(), held.group.clone());
        let mut entry = SendMessageBatchRequestEntry::builder()
            .id("0")
            .message_body(&held.body)
            // Its own group on the DLQ (see the module docs); its message id as dedup id, so moving it twice
            // (a retry after a crash between the send and the delete) leaves one dead letter.
            .message_group_id(&held.message_id)
            .message_deduplication_id(&held.message_id);
        for (k, v) in &attributes {
            if !v.is_empty() {
                entry = entry.message_attributes(k, string_attribute(v));
            }
        }
        let entry = entry.build().map_err(|e| StorageError::Invalid(e.to_string()))?;
        let sent = send_entries(&self.clients.sqs, &self.dlq_url, vec![entry]).await?;
        sent.into_iter().next().unwrap_or_else(|| Err(StorageError::unavailable("no answer for the DLQ send")))?;
        Queue::delete(self, receipt).await
    }

    async fn stats(&self) -> Result<QueueStats> {
        self.queue_stats().await
    }
}
