//! DynamoDB's batch requests (`BatchWriteItem`, `BatchGetItem`) may leave part of a batch unprocessed under
//! throttling: that part is sent again, after backon's exponential backoff with jitter, a few times; what is still
//! left then makes the request an error (retryable: the caller's step is retried as a whole). One helper for every
//! batch the backend sends.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use aws_sdk_dynamodb::types::{KeysAndAttributes, WriteRequest};
use backon::{BackoffBuilder, ExponentialBuilder};

use crate::{Result, StorageError};

/// Resends of the unprocessed part before giving up.
pub(super) const RESENDS: usize = 5;

/// What is left of a batch request.
pub(super) trait Pending {
    /// Items (writes or keys) left.
    fn left(&self) -> usize;
}

impl Pending for HashMap<String, Vec<WriteRequest>> {
    fn left(&self) -> usize {
        self.values().map(Vec::len).sum()
    }
}

impl Pending for HashMap<String, KeysAndAttributes> {
    fn left(&self) -> usize {
        self.values().map(|ka| ka.keys().len()).sum()
    }
}

/// The backoff between resends.
fn backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(25))
        .with_max_delay(Duration::from_secs(1))
        .with_max_times(RESENDS)
        .with_jitter()
        .build()
}

/// The items of one table's `BatchGetItem` of `request` (at most 100 keys), resending the keys DynamoDB leaves
/// unprocessed. `what` names the request in errors.
pub(super) async fn batch_get_table(
    client: &aws_sdk_dynamodb::Client,
    what: &str,
    table: &str,
    request: KeysAndAttributes,
) -> Result<Vec<HashMap<String, aws_sdk_dynamodb::types::AttributeValue>>> {
    let first = HashMap::from([(table.to_owned(), request)]);
    let parts = until_processed(what, first, |pending| async move {
        let out = (client.batch_get_item())
            .set_request_items(Some(pending))
            .send()
            .await
            .map_err(|e| super::unavailable(what, e))?;
        let items = out.responses.unwrap_or_default().remove(table).unwrap_or_default();
        Ok((items, out.unprocessed_keys.unwrap_or_default()))
    })
    .await?;
    Ok(parts.into_iter().flatten().collect())
}

/// Sends `first`, then what each answer says is unprocessed, until nothing is left; returns every answer's part
/// (`send` gives back what it got and what is left). `what` names the request in the error.
pub(super) async fn until_processed<P, R, F, Fut>(what: &str, first: P, mut send: F) -> Result<Vec<R>>
where
    P: Pending,
    F: FnMut(P) -> Fut,
    Fut: Future<Output = Result<(R, P)>>,
{
    let mut delays = backoff();
    let mut got = Vec::new();
    let mut pending = first;
    loop {
        let (part, left) = send(pending).await?;
        got.push(part);
        if left.left() == 0 {
            return Ok(got);
        }
        let Some(delay) = delays.next() else {
            return Err(StorageError::unavailable(format!(
                "{what}: {} items still unprocessed after {RESENDS} resends",
                left.left()
            )));
        };
        tracing::debug!(what, left = left.left(), delay_ms = delay.as_millis() as u64, "resending unprocessed items");
        tokio::time::sleep(delay).await;
        pending = left;
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
    use aws_smithy_http_client::test_util::{ReplayEvent, StaticReplayClient};
    use aws_smithy_types::body::SdkBody;

    use super::*;
    use crate::aws::item::{Item, s};

    /// A DynamoDB client whose HTTP exchanges are `answers`, in order (a request beyond them fails).
    fn replaying(answers: &[&str]) -> (aws_sdk_dynamodb::Client, StaticReplayClient) {
        let events = answers
            .iter()
            .map(|body| {
                let request = http::Request::builder()
                    .uri("https://dynamodb.us-east-1.amazonaws.com/")
                    .body(SdkBody::empty())
                    .unwrap();
                let response = http::Response::builder()
                    .status(200)
                    .header("content-type", "application/x-amz-json-1.0")
                    .body(SdkBody::from(body.to_string()))
                    .unwrap();
                ReplayEvent::new(request, response)
            })
            .collect();
        let replay = StaticReplayClient::new(events);
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("AKID", "SECRET", None, None, "test"))
            .http_client(replay.clone())
            .build();
        (aws_sdk_dynamodb::Client::from_conf(config), replay)
    }

    fn line(key: &str) -> (String, Item) {
        ("audit".to_owned(), Item::from([("event_id".to_owned(), s(key)), ("at_seq".to_owned(), s("1"))]))
    }

    fn bodies(replay: &StaticReplayClient) -> Vec<String> {
        replay.actual_requests().map(|r| String::from_utf8_lossy(r.body().bytes().unwrap_or_default()).into()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn unprocessed_writes_are_sent_again_until_none_is_left() {
        let unprocessed =
            r#"{"UnprocessedItems":{"audit":[{"PutRequest":{"Item":{"event_id":{"S":"b"},"at_seq":{"S":"1"}}}}]}}"#;
        let (client, replay) = replaying(&[unprocessed, r#"{"UnprocessedItems":{}}"#]);
        crate::aws::audit::write_all(&client, vec![line("a"), line("b")]).await.unwrap();
        let sent = bodies(&replay);
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert!(sent[0].contains(r#""S":"a""#) && sent[0].contains(r#""S":"b""#), "{}", sent[0]);
        assert!(sent[1].contains(r#""S":"b""#) && !sent[1].contains(r#""S":"a""#), "only what was left: {}", sent[1]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_still_unprocessed_after_the_resends_is_an_error() {
        let unprocessed =
            r#"{"UnprocessedItems":{"audit":[{"PutRequest":{"Item":{"event_id":{"S":"a"},"at_seq":{"S":"1"}}}}]}}"#;
        let (client, replay) = replaying(&[unprocessed; RESENDS + 1]);
        let err = crate::aws::audit::write_all(&client, vec![line("a")]).await.unwrap_err();
        assert!(err.is_retryable() && err.to_string().contains("1 items still unprocessed"), "{err}");
        assert_eq!(replay.actual_requests().count(), RESENDS + 1);
    }

    #[tokio::test(start_paused = true)]
    async fn unprocessed_keys_are_read_again_and_every_answer_kept() {
        let first = r#"{"Responses":{"t":[{"key":{"S":"a"}}]},"UnprocessedKeys":{"t":{"Keys":[{"key":{"S":"b"}}],"ConsistentRead":true}}}"#;
        let second = r#"{"Responses":{"t":[{"key":{"S":"b"}}]},"UnprocessedKeys":{}}"#;
        let (client, replay) = replaying(&[first, second]);
        let keys = KeysAndAttributes::builder()
            .set_keys(Some(vec![Item::from([("key".to_owned(), s("a"))]), Item::from([("key".to_owned(), s("b"))])]))
            .build()
            .unwrap();
        let parts = until_processed("BatchGetItem", HashMap::from([("t".to_owned(), keys)]), |pending| {
            let client = client.clone();
            async move {
                let out = client.batch_get_item().set_request_items(Some(pending)).send().await.unwrap();
                Ok((out.responses.unwrap_or_default(), out.unprocessed_keys.unwrap_or_default()))
            }
        })
        .await
        .unwrap();
        let read: Vec<usize> = parts.iter().map(|p| p["t"].len()).collect();
        assert_eq!(read, [1, 1]);
        assert_eq!(replay.actual_requests().count(), 2);
    }
}
