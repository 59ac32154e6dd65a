//! The [`DeadLetters`] port on the DLQ. SQS cannot list a queue: the DLQ is read by receiving everything with a
//! short visibility ("peek") and releasing what is not replayed or purged.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use async_trait::async_trait;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, Message, MessageSystemAttributeName, SendMessageBatchRequestEntry,
};
use eventfleet_schema::{DedupId, Envelope, Timestamp};

use super::sends::send_entries;
use super::wire::{attributes_of, string_attribute, system_attribute, whole_secs};
use crate::aws::{AwsStore, unavailable};
use crate::dead_letters::{DeadLetter, DeadLetterFilter, DeadLetters, Redriven};
use crate::queue::MessageId;
use crate::{Result, StorageError};

pub(in crate::aws) const ATTR_REASON: &str = "eventfleet-dead-reason";
pub(in crate::aws) const ATTR_DEAD_AT: &str = "eventfleet-dead-at";
pub(in crate::aws) const ATTR_RECEIVES: &str = "eventfleet-receive-count";
pub(in crate::aws) const ATTR_GROUP: &str = "eventfleet-group";
pub(in crate::aws) const DLQ_ATTRIBUTES: [&str; 4] = [ATTR_REASON, ATTR_DEAD_AT, ATTR_RECEIVES, ATTR_GROUP];

/// The event queue's dedup id for a replay of one dead letter.
pub(in crate::aws) fn redrive_dedup_id(dead_letter: &MessageId) -> DedupId {
    use sha2::Digest;
    DedupId::from_raw(hex::encode(sha2::Sha256::digest(format!("redrive:{}", dead_letter.0))))
}

/// A dead letter as peeked: what a redrive sends back, and the receipt to delete or release it with.
pub(in crate::aws) struct Peeked {
    pub(in crate::aws) receipt: String,
    pub(in crate::aws) body: String,
    pub(in crate::aws) group: String,
    pub(in crate::aws) attributes: BTreeMap<String, String>,
}

impl AwsStore {
    /// Every message on the DLQ, received under a short visibility. The caller releases what it keeps.
    ///
    /// Stops when the DLQ answers empty, or when half the peek visibility has passed: by then the first messages
    /// are about to reappear, and receiving them again would never end on a large DLQ (a message seen twice is
    /// counted once). Messages SQS redrove itself keep their original group on the DLQ, so beyond the first 10 of
    /// one group the rest stay hidden until a later listing.
    pub(in crate::aws) async fn peek_dlq(&self) -> Result<Vec<(DeadLetter, Peeked)>> {
        let mut all = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let deadline = Instant::now() + self.options.dlq_peek_visibility / 2;
        loop {
            if Instant::now() >= deadline {
                tracing::warn!(
                    seen = seen.len(),
                    "the DLQ listing stopped at half its peek visibility; what it did not reach shows in the next listing"
                );
                break;
            }
            let out = self
                .clients
                .sqs
                .receive_message()
                .queue_url(&self.dlq_url)
                .max_number_of_messages(10)
                .visibility_timeout(whole_secs(self.options.dlq_peek_visibility))
                // Long polling (≥ 1 s) asks every SQS server, so an empty answer means empty.
                .wait_time_seconds(1)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send()
                .await
                .map_err(|e| unavailable("ReceiveMessage DLQ", e))?;
            let messages = out.messages.unwrap_or_default();
            if messages.is_empty() {
                break;
            }
            for msg in messages {
                let receipt = msg.receipt_handle.clone().unwrap_or_default();
                if !seen.insert(msg.message_id.clone().unwrap_or_default()) {
                    // Its earlier receipt is stale now; this one is the one to use.
                    if let Some((_, p)) = all.iter_mut().find(|(dl, _): &&mut (DeadLetter, Peeked)| {
                        Some(dl.message_id.0.as_str()) == msg.message_id.as_deref()
                    }) {
                        p.receipt = receipt;
                    }
                    continue;
                }
                match self.dead_letter(&msg) {
                    Ok(dl) => all.push((
                        dl,
                        Peeked {
                            receipt,
                            body: msg.body.clone().unwrap_or_default(),
                            group: system_attribute(&msg, MessageSystemAttributeName::MessageGroupId)
                                .unwrap_or_default()
                                .to_owned(),
                            attributes: attributes_of(&msg),
                        },
                    )),
                    Err(e) => {
                        tracing::warn!(message_id = ?msg.message_id, error = %e, "skipping an undecodable dead letter");
                        self.release_dlq(vec![receipt]).await;
                    }
                }
            }
        }
        all.sort_by_key(|a| a.0.dead_lettered_at);
        Ok(all)
    }

    pub(in crate::aws) fn dead_letter(&self, msg: &Message) -> Result<DeadLetter> {
        let attrs = attributes_of(msg);
        let envelope: Envelope = serde_json::from_str(msg.body.as_deref().unwrap_or_default())
            .map_err(|e| StorageError::Corrupt(format!("dead letter body: {e}")))?;
        let sent = system_attribute(msg, MessageSystemAttributeName::SentTimestamp).and_then(|t| t.parse().ok());
        Ok(DeadLetter {
            message_id: MessageId(msg.message_id.clone().unwrap_or_default()),
            envelope,
            // Messages moved by the queue's redrive policy (not by a worker) carry no reason of ours.
            reason: attrs.get(ATTR_REASON).cloned().unwrap_or_else(|| {
                format!("exceeded the max receive count of {} (moved by the queue)", self.options.max_receive_count)
            }),
            receive_count: attrs
                .get(ATTR_RECEIVES)
                .and_then(|c| c.parse().ok())
                .unwrap_or(self.options.max_receive_count),
            dead_lettered_at: Timestamp::from_millis(
                attrs.get(ATTR_DEAD_AT).and_then(|t| t.parse().ok()).or(sent).unwrap_or(0),
            ),
        })
    }

    /// Makes peeked dead letters visible again. Best effort: what is not released reappears after the peek
    /// visibility anyway.
    pub(in crate::aws) async fn release_dlq(&self, receipts: Vec<String>) {
        for chunk in receipts.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(r)
                        .visibility_timeout(0)
                        .build()
                        .expect("id and receipt are set")
                })
                .collect();
            let res = self
                .clients
                .sqs
                .change_message_visibility_batch()
                .queue_url(&self.dlq_url)
                .set_entries(Some(entries))
                .send()
                .await;
            if let Err(e) = res {
                tracing::warn!(error = %unavailable("ChangeMessageVisibilityBatch DLQ", e), "dead letters stay hidden until the peek expires");
            }
        }
    }

    pub(in crate::aws) async fn delete_dlq(&self, receipts: &[String]) -> Result<u64> {
        let mut deleted = 0;
        for result in self.dlq_deletes.submit_all(receipts.to_vec()).await {
            match result {
                Some(Ok(())) => deleted += 1,
                // Already gone (another operator, or the peek expired and it was received again): not ours.
                Some(Err(StorageError::StaleReceipt)) => {}
                Some(Err(e)) => return Err(e),
                None => return Err(StorageError::unavailable("delete batcher stopped")),
            }
        }
        Ok(deleted)
    }
}

#[async_trait]
impl DeadLetters for AwsStore {
    async fn list(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>> {
        let peeked = self.peek_dlq().await?;
        let mut out = Vec::new();
        let mut receipts = Vec::with_capacity(peeked.len());
        for (dl, p) in peeked {
            receipts.push(p.receipt);
            if filter.matches(&dl) && filter.limit.is_none_or(|l| out.len() < l) {
                out.push(dl);
            }
        }
        self.release_dlq(receipts).await;
        Ok(out)
    }

    async fn get(&self, id: &MessageId) -> Result<Option<DeadLetter>> {
        let peeked = self.peek_dlq().await?;
        let mut found = None;
        let mut receipts = Vec::with_capacity(peeked.len());
        for (dl, p) in peeked {
            receipts.push(p.receipt);
            if &dl.message_id == id {
                found = Some(dl);
            }
        }
        self.release_dlq(receipts).await;
        Ok(found)
    }

    async fn redrive(&self, ids: &[MessageId]) -> Result<Vec<Result<Redriven>>> {
        let peeked = self.peek_dlq().await?;
        let mut by_id: HashMap<MessageId, (DeadLetter, Peeked)> =
            peeked.into_iter().map(|(dl, p)| (dl.message_id.clone(), (dl, p))).collect();
        let mut results = Vec::with_capacity(ids.len());
        for id in ids {
            let Some((dl, p)) = by_id.remove(id) else {
                results.push(Err(StorageError::NotFound(format!("dead letter {id}"))));
                continue;
            };
            let result = self.redrive_one(&dl, &p).await;
            if result.is_err() {
                by_id.insert(id.clone(), (dl, p));
            }
            results.push(result);
        }
        self.release_dlq(by_id.into_values().map(|(_, p)| p.receipt).collect()).await;
        Ok(results)
    }

    async fn purge(&self, filter: &DeadLetterFilter) -> Result<u64> {
        let peeked = self.peek_dlq().await?;
        let (doomed, mut kept): (Vec<_>, Vec<_>) = peeked.into_iter().partition(|(dl, _)| filter.matches(dl));
        let doomed: Vec<String> = match filter.limit {
            // Beyond the limit, matching dead letters stay (and are released below with the rest).
            Some(l) => {
                let mut doomed = doomed;
                let rest = doomed.split_off(l.min(doomed.len()));
                kept.extend(rest);
                doomed.into_iter().map(|(_, p)| p.receipt).collect()
            }
            None => doomed.into_iter().map(|(_, p)| p.receipt).collect(),
        };
        let deleted = self.delete_dlq(&doomed).await;
        self.release_dlq(kept.into_iter().map(|(_, p)| p.receipt).collect()).await;
        deleted
    }

    async fn delete(&self, ids: &[MessageId]) -> Result<u64> {
        let peeked = self.peek_dlq().await?;
        let (doomed, kept): (Vec<_>, Vec<_>) = peeked.into_iter().partition(|(dl, _)| ids.contains(&dl.message_id));
        let deleted = self.delete_dlq(&doomed.into_iter().map(|(_, p)| p.receipt).collect::<Vec<_>>()).await;
        self.release_dlq(kept.into_iter().map(|(_, p)| p.receipt).collect()).await;
        deleted
    }
}

impl AwsStore {
    /// Sends one dead letter back to the tail of its group with a fresh dedup id, then deletes it from the DLQ.
    pub(in crate::aws) async fn redrive_one(&self, dl: &DeadLetter, peeked: &Peeked) -> Result<Redriven> {
        let group = peeked.attributes.get(ATTR_GROUP).cloned().unwrap_or_else(|| peeked.group.clone());
        let mut entry = SendMessageBatchRequestEntry::builder()
            .id("0")
            .message_body(&peeked.body)
            .message_group_id(group)
            // A new id for the event queue (its first delivery's is spent), but one per dead letter: two
            // operators replaying the same dead letter within SQS's 5-minute window send it once.
            .message_deduplication_id(redrive_dedup_id(&dl.message_id).as_str());
        for (k, v) in peeked.attributes.iter().filter(|(k, _)| !DLQ_ATTRIBUTES.contains(&k.as_str())) {
            entry = entry.message_attributes(k, string_attribute(v));
        }
        let entry = entry.build().map_err(|e| StorageError::Invalid(e.to_string()))?;
        let sent = send_entries(&self.clients.sqs, &self.queue_url, vec![entry]).await?;
        let requeued_as =
            sent.into_iter().next().unwrap_or_else(|| Err(StorageError::unavailable("no answer for the send")))?;
        // The event is back on the queue whatever happens to the delete: a dead letter left behind is a stale
        // copy, which a later replay recognises by the `replayed` line and only deletes.
        match self.delete_dlq(std::slice::from_ref(&peeked.receipt)).await {
            Ok(1) => {}
            // Our peek ran out and someone else holds it now: their replay of it is deduplicated with ours.
            Ok(_) => {
                tracing::warn!(dead_letter = %dl.message_id, "the dead letter was not deleted (its peek expired); it may be listed again")
            }
            Err(e) => {
                tracing::warn!(dead_letter = %dl.message_id, error = %e, "the dead letter was requeued but not deleted; it may be listed again")
            }
        }
        Ok(Redriven { dead_letter: dl.message_id.clone(), requeued_as })
    }
}
