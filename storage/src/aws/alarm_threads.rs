//! Documents (alarm threads, channel states) on DynamoDB: one item per document, put only when its version still matches.

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;

use super::item::{Item, Reader, n, s, ts, ttl};
use super::{AwsStore, unavailable};
use crate::documents::{DOCUMENT_TTL, Documents};
use crate::{Result, StorageError};

#[async_trait]
impl Documents for AwsStore {
    async fn document(&self, key: &str) -> Result<Option<(String, u64)>> {
        let out = (self.clients.dynamodb.get_item())
            .table_name(&self.names.alarm_threads_table)
            .key("alarm_arn", s(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("GetItem alarm_threads", e))?;
        let Some(item) = out.item else { return Ok(None) };
        let r = Reader::new(&item, "alarm_threads");
        // DynamoDB deletes expired items late: an expired one reads as absent, as on SQLite.
        if r.ts("expires_at")? <= self.now() {
            return Ok(None);
        }
        let record = r.str("record")?;
        let version = u64::try_from(r.i64("version")?)
            .map_err(|_| StorageError::Corrupt("alarm_threads item: negative version".into()))?;
        Ok(Some((record, version)))
    }

    async fn put_document(&self, key: &str, json: String, version: u64) -> Result<u64> {
        let now = self.now();
        let expires = now.plus(DOCUMENT_TTL);
        let item = Item::from([
            ("alarm_arn".into(), s(key)),
            ("version".into(), n(version + 1)),
            ("record".into(), s(json)),
            ("updated_at".into(), ts(now)),
            ("expires_at".into(), ts(expires)),
            ("ttl".into(), ttl(expires)),
        ]);
        let mut put =
            (self.clients.dynamodb.put_item()).table_name(&self.names.alarm_threads_table).set_item(Some(item));
        put = if version == 0 {
            put.condition_expression("attribute_not_exists(alarm_arn) OR expires_at <= :now")
                .expression_attribute_values(":now", ts(now))
        } else {
            put.condition_expression("version = :v").expression_attribute_values(":v", n(version))
        };
        match put.send().await {
            Ok(_) => Ok(version + 1),
            Err(SdkError::ServiceError(e)) => match e.into_err() {
                PutItemError::ConditionalCheckFailedException(_) => {
                    Err(StorageError::Conflict(format!("{key} changed since version {version}")))
                }
                other => Err(unavailable("PutItem alarm_threads", other)),
            },
            Err(e) => Err(unavailable("PutItem alarm_threads", e)),
        }
    }
}
