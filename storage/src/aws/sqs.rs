//! The queue and dead-letter ports on SQS FIFO.
//!
//! - Sends use `SendMessageBatch` (10 a request) with per-entry results; receives ask for up to 10 with the
//!   system attributes the workers need; long polls past SQS's 20 s are repeated polls.
//! - Moving to the DLQ is a send to the DLQ and then a delete. The message's body is kept from its receive (a
//!   receipt alone cannot fetch it), in [`InFlight`]. On the DLQ every dead letter gets its own message group, so
//!   a listing can see all of them (FIFO hides the rest of a group behind a received message); the original
//!   group travels in an attribute and a replay goes back to it.
//! - SQS cannot list a queue: the DLQ is read by receiving everything with a short visibility ("peek") and
//!   releasing what is not replayed or purged. Two operators peeking at once hide messages from each other for
//!   that visibility; `dlq` commands are occasional and say what they saw.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_sqs::error::SdkError;
use aws_sdk_sqs::operation::change_message_visibility::ChangeMessageVisibilityError;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message, MessageAttributeValue,
    MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};
use eventfleet_schema::{DedupId, Envelope, IdempotencyRecord, Timestamp};

use super::batch::GroupCommit;
use super::{AwsStore, unavailable};
use crate::dead_letters::{DeadLetter, DeadLetterFilter, DeadLetters, Redriven};
use crate::queue::{MessageId, OutgoingMessage, Queue, QueueStats, ReceiptHandle, ReceivedMessage};
use crate::{Result, StorageError};

/// The largest message the queues take: body and attributes (names, types and values) together. SQS's default
/// `MaximumMessageSize` (256 KiB), which Terraform and `tables create` keep; a batch is held to it as well, the
/// limit of a `SendMessageBatch` before SQS raised both to 1 MiB in 2025.
const MAX_MESSAGE_BYTES: usize = 262_144;

/// SQS's longest long poll.
const MAX_WAIT: Duration = Duration::from_secs(20);
/// SQS's longest visibility timeout (12 h).
const MAX_VISIBILITY: Duration = Duration::from_secs(43_200);
/// How long [`InFlight`] keeps a receipt past its visibility: a handler finishing just after its visibility ran
/// out may still delete or move its message if nobody received it meanwhile.
const IN_FLIGHT_GRACE: Duration = Duration::from_secs(60);
/// How often [`InFlight`] sweeps out expired receipts.
const IN_FLIGHT_SWEEP: Duration = Duration::from_secs(10);

const ATTR_REASON: &str = "eventfleet-dead-reason";
const ATTR_DEAD_AT: &str = "eventfleet-dead-at";
const ATTR_RECEIVES: &str = "eventfleet-receive-count";
const ATTR_GROUP: &str = "eventfleet-group";
const DLQ_ATTRIBUTES: [&str; 4] = [ATTR_REASON, ATTR_DEAD_AT, ATTR_RECEIVES, ATTR_GROUP];

/// The event queue's dedup id for a replay of one dead letter.
fn redrive_dedup_id(dead_letter: &MessageId) -> DedupId {
    use sha2::Digest;
    DedupId::from_raw(hex::encode(sha2::Sha256::digest(format!("redrive:{}", dead_letter.0))))
}

/// The size SQS counts for a message: its body and its attributes' names, types and values.
fn message_size(body: &str, attributes: &BTreeMap<String, String>) -> usize {
    body.len()
        + attributes
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| k.len() + v.len() + "String".len())
            .sum::<usize>()
}

/// Splits `items` into `SendMessageBatch` requests: at most 10 entries and, together, at most SQS's 256 KiB.
fn batches<T>(items: &[T], size: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        let s = size(item);
        if i > start && (i - start == 10 || bytes + s > MAX_MESSAGE_BYTES) {
            out.push(&items[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += s;
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}

/// SQS takes XML's characters only, and replaces the others with U+FFFD (changing the raw body a signature was
/// computed over). JSON serialization escapes every such character except U+FFFE and U+FFFF; those can only occur
/// inside JSON strings, where the escape `\uFFFE` means the same character, so the envelope decodes unchanged.
fn sqs_safe(body: String) -> String {
    if body.contains(['\u{FFFE}', '\u{FFFF}']) {
        body.replace('\u{FFFE}', "\\ufffe").replace('\u{FFFF}', "\\uffff")
    } else {
        body
    }
}

/// Free text (an error) as an attribute value: at most `max` characters, those SQS does not take replaced.
fn attribute_text(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| match c {
            '\t' | '\n' | '\r' => c,
            c if c < ' ' || c == '\u{FFFE}' || c == '\u{FFFF}' => '\u{FFFD}',
            c => c,
        })
        .collect()
}

/// What this process needs to move a received message to the DLQ, by receipt. Bounded by the receipts' lives:
/// a receipt is dropped when its message is deleted, moved or given back, and swept out once its visibility
/// (plus a grace) has passed, as happens after a retry is scheduled or when a handler task is lost.
#[derive(Default)]
pub(super) struct InFlight(Mutex<InFlightMap>);

#[derive(Default)]
struct InFlightMap {
    held: HashMap<String, Held>,
    swept: Option<Instant>,
}

#[derive(Clone)]
struct Held {
    message_id: String,
    body: String,
    group: String,
    attributes: BTreeMap<String, String>,
    receive_count: u32,
    /// When the receipt's visibility ends (moved by visibility changes).
    until: Instant,
    /// The idempotency record its start read (`Some(None)`: it had none), so that its success can be written
    /// as one batched put instead of a read-modify-write.
    started: Option<Option<IdempotencyRecord>>,
    /// A waiting message's records, read with the rest of its receive, for its start later.
    prefetched: Option<super::protocol::Found>,
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, InFlightMap> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn hold(&self, receipt: &str, held: Held) {
        let mut map = self.lock();
        let now = Instant::now();
        if map.swept.is_none_or(|at| now.duration_since(at) >= IN_FLIGHT_SWEEP) {
            map.held.retain(|_, h| h.until + IN_FLIGHT_GRACE > now);
            map.swept = Some(now);
        }
        map.held.insert(receipt.to_owned(), held);
    }

    fn get(&self, receipt: &str) -> Option<Held> {
        self.lock().held.get(receipt).cloned()
    }

    /// The receipt's visibility now ends `visibility` from now; zero gives the message back, so it is dropped.
    fn extend(&self, receipt: &str, visibility: Duration) {
        let mut map = self.lock();
        if visibility.is_zero() {
            map.held.remove(receipt);
        } else if let Some(h) = map.held.get_mut(receipt) {
            h.until = Instant::now() + visibility;
        }
    }

    fn forget(&self, receipt: &str) {
        self.lock().held.remove(receipt);
    }

    /// Remembers what the start of this receipt's delivery read.
    pub(super) fn set_started(&self, receipt: &str, record: Option<IdempotencyRecord>) {
        if let Some(h) = self.lock().held.get_mut(receipt) {
            h.started = Some(record);
        }
    }

    /// How much of the receipt's visibility is left, if this process holds it.
    pub(super) fn remaining(&self, receipt: &str) -> Option<Duration> {
        self.lock().held.get(receipt).map(|h| h.until.saturating_duration_since(Instant::now()))
    }

    /// Keeps a waiting message's records for its start.
    pub(super) fn prefetch(&self, receipt: &str, found: super::protocol::Found) {
        if let Some(h) = self.lock().held.get_mut(receipt) {
            h.prefetched = Some(found);
        }
    }

    /// The records read for a waiting message with its receive, once.
    pub(super) fn take_prefetched(&self, receipt: &str) -> Option<super::protocol::Found> {
        self.lock().held.get_mut(receipt).and_then(|h| h.prefetched.take())
    }

    /// What the start of this receipt's delivery read, if this process started it.
    pub(super) fn started(&self, receipt: &str) -> Option<Option<IdempotencyRecord>> {
        self.lock().held.get(receipt).and_then(|h| h.started.clone())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().held.len()
    }
}

/// A dead letter as peeked: what a redrive sends back, and the receipt to delete or release it with.
struct Peeked {
    receipt: String,
    body: String,
    group: String,
    attributes: BTreeMap<String, String>,
}

/// The group commit of deletes from the main queue.
pub(super) type DeleteBatcher = GroupCommit<String, Result<()>>;

/// How long a delete batch that is not full waits for more. Workers delete after `DONE`; the next message of the
/// group waits for it, so the wait is short.
const DELETE_LINGER: Duration = Duration::from_millis(10);

/// Deletes go out as `DeleteMessageBatch` of up to 10, shared by handlers finishing together.
pub(super) fn delete_batcher(client: aws_sdk_sqs::Client, queue_url: String) -> DeleteBatcher {
    GroupCommit::start(10, 4, DELETE_LINGER, move |receipts: Vec<String>| {
        let (client, url) = (client.clone(), queue_url.clone());
        async move {
            let n = receipts.len();
            let entries = receipts
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(r)
                        .build()
                        .map_err(|e| StorageError::Invalid(e.to_string()))
                })
                .collect::<Result<Vec<_>>>();
            let entries = match entries {
                Ok(entries) => entries,
                Err(e) => return vec![Err(e); n],
            };
            let out = match client.delete_message_batch().queue_url(&url).set_entries(Some(entries)).send().await {
                Ok(out) => out,
                Err(e) => return vec![Err(unavailable("DeleteMessageBatch", e)); n],
            };
            let mut results: Vec<Result<()>> =
                (0..n).map(|_| Err(StorageError::unavailable("DeleteMessageBatch: entry missing"))).collect();
            for ok in out.successful {
                if let Some(slot) = ok.id.parse::<usize>().ok().and_then(|i| results.get_mut(i)) {
                    *slot = Ok(());
                }
            }
            for failed in out.failed {
                if let Some(slot) = failed.id.parse::<usize>().ok().and_then(|i| results.get_mut(i)) {
                    // A receipt of an earlier receive or of a deleted message is the sender's fault.
                    *slot = Err(
                        if failed.sender_fault
                            || matches!(failed.code.as_str(), "ReceiptHandleIsInvalid" | "InvalidParameterValue")
                        {
                            StorageError::StaleReceipt
                        } else {
                            StorageError::unavailable(format!("DeleteMessageBatch entry: {}", failed.code))
                        },
                    );
                }
            }
            results
        }
    })
}

/// The URL of a queue by name.
pub(super) async fn queue_url(client: &aws_sdk_sqs::Client, name: &str) -> Result<String> {
    let out = client
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .map_err(|e| unavailable(&format!("GetQueueUrl {name}"), e))?;
    out.queue_url.ok_or_else(|| StorageError::NotFound(format!("queue {name}")))
}

fn whole_secs(d: Duration) -> i32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(secs).unwrap_or(i32::MAX)
}

fn string_attribute(value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder().data_type("String").string_value(value).build().expect("data type is set")
}

fn attributes_of(msg: &Message) -> BTreeMap<String, String> {
    msg.message_attributes
        .iter()
        .flatten()
        .filter_map(|(k, v)| v.string_value.clone().map(|s| (k.clone(), s)))
        .collect()
}

fn system_attribute(msg: &Message, name: MessageSystemAttributeName) -> Option<&str> {
    msg.attributes.as_ref().and_then(|a| a.get(&name)).map(String::as_str)
}

/// Maps a stale-receipt error of a delete or visibility change; everything else is unavailability.
fn receipt_error<E>(op: &str, e: SdkError<E>, is_stale: impl Fn(&E) -> bool) -> StorageError
where
    E: std::error::Error + Send + Sync + 'static + aws_sdk_sqs::error::ProvideErrorMetadata,
{
    if let SdkError::ServiceError(ctx) = &e {
        let err = ctx.err();
        // SQS answers InvalidParameterValue for a receipt of an earlier receive or of a deleted message.
        if is_stale(err) || matches!(err.code(), Some("InvalidParameterValue" | "ReceiptHandleIsInvalid")) {
            return StorageError::StaleReceipt;
        }
    }
    unavailable(op, e)
}

/// One `SendMessageBatch` request, with one result per entry.
async fn send_entries(
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

impl AwsStore {
    /// The message and what moving it to the DLQ needs; the message is an error text when it does not decode.
    fn decode(&self, msg: Message, visibility: Duration) -> (Held, std::result::Result<ReceivedMessage, String>) {
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

    async fn receive_once(&self, max: usize, visibility: Duration, wait: Duration) -> Result<Vec<ReceivedMessage>> {
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

    /// Every message on the DLQ, received under a short visibility. The caller releases what it keeps.
    ///
    /// Stops when the DLQ answers empty, or when half the peek visibility has passed: by then the first messages
    /// are about to reappear, and receiving them again would never end on a large DLQ (a message seen twice is
    /// counted once). Messages SQS redrove itself keep their original group on the DLQ, so beyond the first 10 of
    /// one group the rest stay hidden until a later listing.
    async fn peek_dlq(&self) -> Result<Vec<(DeadLetter, Peeked)>> {
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

    fn dead_letter(&self, msg: &Message) -> Result<DeadLetter> {
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
    async fn release_dlq(&self, receipts: Vec<String>) {
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

    async fn delete_dlq(&self, receipts: &[String]) -> Result<u64> {
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

/// Refuses a message SQS would refuse for its size, before anything is written for it.
pub(super) fn check_size(m: &OutgoingMessage) -> Result<()> {
    let body = sqs_safe(serde_json::to_string(&m.envelope).map_err(|e| StorageError::Invalid(e.to_string()))?);
    let size = message_size(&body, &m.attributes);
    if size > MAX_MESSAGE_BYTES { Err(StorageError::TooLarge { size, limit: MAX_MESSAGE_BYTES }) } else { Ok(()) }
}

/// The group commit of the ingress's sends to the event queue.
pub(super) type SendBatcher = GroupCommit<OutgoingMessage, Result<MessageId>>;

/// Concurrent accepts' messages go out together as `SendMessageBatch`, never waiting to fill a batch: whatever is
/// waiting when a slot is free is sent, so a lone request pays no extra latency.
pub(super) fn send_batcher(client: aws_sdk_sqs::Client, queue_url: String, in_flight: usize) -> SendBatcher {
    GroupCommit::start(10, in_flight, Duration::ZERO, move |messages: Vec<OutgoingMessage>| {
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
pub(super) async fn send_messages(
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
}

impl AwsStore {
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
    /// datapoint a minute) has it. `None` when CloudWatch has no recent datapoint.
    async fn oldest_age_ms(&self) -> Option<u64> {
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
            .map_err(|e| tracing::debug!(error = %unavailable("GetMetricStatistics", e), "no oldest message age"))
            .ok()?;
        let latest = out.datapoints.unwrap_or_default().into_iter().max_by_key(|d| d.timestamp.map(|t| t.secs()))?;
        latest.maximum.map(|secs| (secs.max(0.0) * 1000.0) as u64)
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
    async fn redrive_one(&self, dl: &DeadLetter, peeked: &Peeked) -> Result<Redriven> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_hold_at_most_ten_entries_and_256_kib() {
        let sizes = |chunks: Vec<&[usize]>| chunks.iter().map(|c| c.to_vec()).collect::<Vec<_>>();
        let small = vec![100; 23];
        assert_eq!(sizes(batches(&small, |s| *s)).iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 3]);
        // Three messages of 100 KiB: two fit (200 KiB), a third would not.
        let big = vec![100 * 1024; 3];
        assert_eq!(sizes(batches(&big, |s| *s)), [vec![102_400, 102_400], vec![102_400]]);
        // A message of exactly the limit goes alone; the ones around it share what fits.
        let mixed = vec![10, MAX_MESSAGE_BYTES, 10, 10];
        assert_eq!(sizes(batches(&mixed, |s| *s)), [vec![10], vec![MAX_MESSAGE_BYTES], vec![10, 10]]);
        assert!(batches::<usize>(&[], |s| *s).is_empty());
        for chunk in batches(&[MAX_MESSAGE_BYTES / 3 + 1; 7], |s| *s) {
            assert!(chunk.iter().sum::<usize>() <= MAX_MESSAGE_BYTES, "{chunk:?}");
        }
    }

    #[test]
    fn bodies_escape_the_characters_sqs_refuses_and_decode_unchanged() {
        let text = "a\u{FFFE}b\u{FFFF}c\\\u{FFFE}";
        let body = sqs_safe(serde_json::to_string(&serde_json::json!({ "t": text })).unwrap());
        assert!(!body.contains(['\u{FFFE}', '\u{FFFF}']), "{body}");
        let back: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(back["t"], text);
        assert_eq!(sqs_safe("plain".into()), "plain");
        assert_eq!(attribute_text("a\u{0}b\u{FFFF}\tc", 10), "a\u{FFFD}b\u{FFFD}\tc");
        assert_eq!(attribute_text("abcdef", 3), "abc");
    }

    fn held(visibility: Duration) -> Held {
        Held {
            message_id: "m".into(),
            body: String::new(),
            group: "g".into(),
            attributes: BTreeMap::new(),
            receive_count: 1,
            until: Instant::now() + visibility,
            started: None,
            prefetched: None,
        }
    }

    #[test]
    fn in_flight_receipts_leave_when_given_back_or_expired() {
        let in_flight = InFlight::default();
        in_flight.hold("given-back", held(Duration::from_secs(30)));
        in_flight.extend("given-back", Duration::ZERO);
        assert!(in_flight.get("given-back").is_none());
        // A receipt whose visibility (and grace) ran out goes at the next sweep.
        in_flight.hold("expired", held(Duration::ZERO));
        in_flight.lock().held.get_mut("expired").unwrap().until = Instant::now() - IN_FLIGHT_GRACE;
        in_flight.lock().swept = Some(Instant::now() - IN_FLIGHT_SWEEP);
        in_flight.hold("kept", held(Duration::from_secs(30)));
        assert!(in_flight.get("expired").is_none());
        assert!(in_flight.get("kept").is_some());
        in_flight.extend("kept", Duration::from_secs(60));
        in_flight.forget("kept");
        assert_eq!(in_flight.len(), 0);
    }
}
