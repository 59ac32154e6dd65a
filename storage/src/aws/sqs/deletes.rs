//! Deletes from a queue, group-committed into `DeleteMessageBatch`.

use std::time::Duration;

use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;

use crate::aws::batch::{GroupCommit, Linger};
use crate::aws::unavailable;
use crate::{Result, StorageError};

/// The group commit of deletes from the main queue.
pub(in crate::aws) type DeleteBatcher = GroupCommit<String, Result<()>>;

/// How long a delete batch that is not full waits for more. Workers delete after `DONE`; the next message of the
/// group waits for it, so the wait is short.
pub(in crate::aws) const DELETE_LINGER: Duration = Duration::from_millis(10);

/// Deletes go out as `DeleteMessageBatch` of up to 10, shared by handlers finishing together.
pub(in crate::aws) fn delete_batcher(client: aws_sdk_sqs::Client, queue_url: String) -> DeleteBatcher {
    GroupCommit::start(10, 4, Linger::Always(DELETE_LINGER), move |receipts: Vec<String>| {
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
