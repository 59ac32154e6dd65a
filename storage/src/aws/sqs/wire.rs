//! SQS's wire rules: message and batch sizes, the characters it takes, whole seconds, attribute encoding, and
//! which errors mean a stale receipt.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_sqs::error::SdkError;
use aws_sdk_sqs::types::{Message, MessageAttributeValue, MessageSystemAttributeName};

use crate::aws::unavailable;
use crate::queue::OutgoingMessage;
use crate::{Result, StorageError};

/// The largest message the queues take: body and attributes (names, types and values) together. SQS's default
/// `MaximumMessageSize` (256 KiB), which Terraform and `tables create` keep; a batch is held to it as well, the
/// limit of a `SendMessageBatch` before SQS raised both to 1 MiB in 2025.
pub(in crate::aws) const MAX_MESSAGE_BYTES: usize = 262_144;

/// SQS's longest long poll.
pub(in crate::aws) const MAX_WAIT: Duration = Duration::from_secs(20);
/// SQS's longest visibility timeout (12 h).
pub(in crate::aws) const MAX_VISIBILITY: Duration = Duration::from_secs(43_200);

/// The size SQS counts for a message: its body and its attributes' names, types and values.
pub(in crate::aws) fn message_size(body: &str, attributes: &BTreeMap<String, String>) -> usize {
    body.len()
        + attributes
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| k.len() + v.len() + "String".len())
            .sum::<usize>()
}

/// Splits `items` into `SendMessageBatch` requests: at most 10 entries and, together, at most SQS's 256 KiB.
pub(in crate::aws) fn batches<T>(items: &[T], size: impl Fn(&T) -> usize) -> Vec<&[T]> {
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
pub(in crate::aws) fn sqs_safe(body: String) -> String {
    if body.contains(['\u{FFFE}', '\u{FFFF}']) {
        body.replace('\u{FFFE}', "\\ufffe").replace('\u{FFFF}', "\\uffff")
    } else {
        body
    }
}

/// Free text (an error) as an attribute value: at most `max` characters, those SQS does not take replaced.
pub(in crate::aws) fn attribute_text(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| match c {
            '\t' | '\n' | '\r' => c,
            c if c < ' ' || c == '\u{FFFE}' || c == '\u{FFFF}' => '\u{FFFD}',
            c => c,
        })
        .collect()
}

pub(in crate::aws) fn whole_secs(d: Duration) -> i32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(secs).unwrap_or(i32::MAX)
}

pub(in crate::aws) fn string_attribute(value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder().data_type("String").string_value(value).build().expect("data type is set")
}

pub(in crate::aws) fn attributes_of(msg: &Message) -> BTreeMap<String, String> {
    msg.message_attributes
        .iter()
        .flatten()
        .filter_map(|(k, v)| v.string_value.clone().map(|s| (k.clone(), s)))
        .collect()
}

pub(in crate::aws) fn system_attribute(msg: &Message, name: MessageSystemAttributeName) -> Option<&str> {
    msg.attributes.as_ref().and_then(|a| a.get(&name)).map(String::as_str)
}

/// Maps a stale-receipt error of a delete or visibility change; everything else is unavailability.
pub(in crate::aws) fn receipt_error<E>(op: &str, e: SdkError<E>, is_stale: impl Fn(&E) -> bool) -> StorageError
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

/// Refuses a message SQS would refuse for its size, before anything is written for it.
pub(in crate::aws) fn check_size(m: &OutgoingMessage) -> Result<()> {
    let body = sqs_safe(serde_json::to_string(&m.envelope).map_err(|e| StorageError::Invalid(e.to_string()))?);
    let size = message_size(&body, &m.attributes);
    if size > MAX_MESSAGE_BYTES { Err(StorageError::TooLarge { size, limit: MAX_MESSAGE_BYTES }) } else { Ok(()) }
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
}
