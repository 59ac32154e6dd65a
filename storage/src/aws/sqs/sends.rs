//! Sends, group-committed into `SendMessageBatch` requests that respect SQS's limits.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

use super::wire::{MAX_MESSAGE_BYTES, batches, message_size, sqs_safe, string_attribute};
use crate::aws::batch::{Coming, GroupCommit, Linger};
use crate::aws::unavailable;
use crate::queue::{MessageId, OutgoingMessage};
use crate::{Result, StorageError};

/// One `SendMessageBatch` request, with one result per entry.
pub(in crate::aws) async fn send_entries(
    client: &aws_sdk_sqs::Client,
    url: &str,
    entries: Vec<SendMessageBatchRequestEntry>,
) -> Result<Vec<Result<MessageId>>> {
    let n = entries.len();
    let out = client
        .send_message_batch()
        .queue_url(url)
        .set_entries(Some(entries))
        .send()
        .await
        .map_err(|e| unavailable("SendMessageBatch", e))?;
    let mut results: Vec<Result<MessageId>> =
        (0..n).map(|_| Err(StorageError::unavailable("SendMessageBatch: entry missing from the answer"))).collect();
    for ok in out.successful {
        if let Ok(i) = ok.id.parse::<usize>()
            && i < n
        {
            results[i] = Ok(MessageId(ok.message_id));
        }
    }
    for failed in out.failed {
        if let Ok(i) = failed.id.parse::<usize>()
            && i < n
        {
            let text = format!("SendMessageBatch entry: {} {}", failed.code, failed.message.unwrap_or_default());
            // Only a refusal of the content itself is the event's fault (the ingress answers 400). Any other
            // failure, a sender fault included (a bad parameter is our bug, not the sender's), answers 503 so
            // the sender keeps the event.
            results[i] = Err(if failed.code == "InvalidMessageContents" {
                StorageError::Invalid(text)
            } else {
                if failed.sender_fault {
                    tracing::error!(error = %text, "SQS refused a send as our fault");
                }
                StorageError::unavailable(text)
            });
        }
    }
    Ok(results)
}

/// The most a batch of sends waits to fill while another is on the wire, by default: it waits about as long as the
/// recent sends took (10 to 20 ms on SQS), and this long only when SQS is that slow.
pub(in crate::aws) const SEND_LINGER: Duration = Duration::from_millis(50);

/// The group commit of the ingress's sends to the event queue.
pub(in crate::aws) type SendBatcher = GroupCommit<OutgoingMessage, Result<MessageId>>;

/// Concurrent accepts' messages go out together as `SendMessageBatch`. A lone accept's message goes at once; while
/// another batch is on the wire, or other accepts are claiming their keys (`coming`), a batch waits about as long
/// as the recent sends took, at most `linger`, to fill (under load the messages that come during a request share
/// the next one instead of each taking a slot of its own: SQS bills per request). Without the claims, concurrent
/// accepts whose claims end a few milliseconds apart each sent a request of their own whenever no batch was on
/// the wire.
pub(in crate::aws) fn send_batcher(
    client: aws_sdk_sqs::Client,
    queue_url: String,
    in_flight: usize,
    linger: Duration,
    coming: Arc<Coming>,
) -> SendBatcher {
    let linger = Linger::WhileBusyOrComing(linger, coming);
    GroupCommit::start(10, in_flight, linger, move |messages: Vec<OutgoingMessage>| {
        let (client, url) = (client.clone(), queue_url.clone());
        async move {
            match send_messages(&client, &url, &messages).await {
                Ok(results) => results,
                Err(e) => vec![Err(e); messages.len()],
            }
        }
    })
}

/// Sends messages to `url` in as few `SendMessageBatch` requests as SQS allows; one result per message. A message
/// too large for SQS is refused alone, so the rest go out.
pub(in crate::aws) async fn send_messages(
    client: &aws_sdk_sqs::Client,
    url: &str,
    messages: &[OutgoingMessage],
) -> Result<Vec<Result<MessageId>>> {
    // Too large for SQS: refused here, alone, so the rest of the batch goes out.
    let mut results: Vec<Option<Result<MessageId>>> = Vec::with_capacity(messages.len());
    let mut sendable: Vec<(usize, &OutgoingMessage, String, usize)> = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let body = sqs_safe(serde_json::to_string(&m.envelope).map_err(|e| StorageError::Invalid(e.to_string()))?);
        let size = message_size(&body, &m.attributes);
        if size > MAX_MESSAGE_BYTES {
            results.push(Some(Err(StorageError::TooLarge { size, limit: MAX_MESSAGE_BYTES })));
        } else {
            results.push(None);
            sendable.push((i, m, body, size));
        }
    }
    for chunk in batches(&sendable, |(.., size)| *size) {
        let mut entries = Vec::with_capacity(chunk.len());
        for (i, (_, m, body, _)) in chunk.iter().enumerate() {
            let body = body.clone();
            let mut entry = SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(body)
                .message_group_id(&m.group)
                .message_deduplication_id(m.dedup_id.as_str());
            for (k, v) in &m.attributes {
                if !v.is_empty() {
                    entry = entry.message_attributes(k, string_attribute(v));
                }
            }
            entries.push(entry.build().map_err(|e| StorageError::Invalid(e.to_string()))?);
        }
        let sent = send_entries(client, url, entries).await?;
        for ((index, ..), result) in chunk.iter().zip(sent) {
            results[*index] = Some(result);
        }
    }
    Ok(results.into_iter().map(|r| r.unwrap_or_else(|| Err(StorageError::unavailable("message not sent")))).collect())
}
