//! The idempotency table on DynamoDB, and the conditional writes the protocol steps ([`super::protocol`]) make of
//! it. When a condition fails, `ReturnValuesOnConditionCheckFailure=ALL_OLD` hands back the item that made it
//! fail, so deciding what to answer needs no second read. Exactly one of concurrent claims of a key wins because
//! the claim is a conditional put.

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, ReturnValue, ReturnValuesOnConditionCheckFailure};
use eventfleet_schema::{EventId, IdempotencyKey, IdempotencyRecord, Status, Timestamp};

use super::item::{Item, Reader, n, s, ts, ttl};
use super::names::{EVENT_ID_INDEX, SENDER_ID_INDEX};
use super::{AwsStore, unavailable};
use crate::Result;
use crate::idempotency::{Idempotency, SENDER_ID_MATCHES};

pub(super) fn record(item: &Item) -> Result<IdempotencyRecord> {
    let r = Reader::new(item, "idempotency");
    Ok(IdempotencyRecord {
        key: IdempotencyKey::from_raw(r.str("key")?),
        status: r.parsed("status", Status::parse)?,
        event_id: r.parsed("event_id", EventId::parse)?,
        first_seen: r.ts("first_seen")?,
        last_seen: r.ts("last_seen")?,
        duplicate_count: r.u32("duplicate_count")?,
        lease_until: r.opt_ts("lease_until")?,
        outcome: r.opt_str("outcome")?,
        expires_at: r.ts("expires_at")?,
    })
}

pub(super) fn new_item(
    key: &IdempotencyKey,
    status: Status,
    event_id: EventId,
    now: Timestamp,
    lease: Option<Timestamp>,
    expires: Timestamp,
) -> Item {
    let mut item = Item::from([
        ("key".into(), s(key.as_str())),
        ("status".into(), s(status.as_str())),
        ("event_id".into(), s(event_id.to_string())),
        ("sender_id".into(), s(key.sender_id())),
        ("first_seen".into(), ts(now)),
        ("last_seen".into(), ts(now)),
        ("duplicate_count".into(), n(0)),
        ("expires_at".into(), ts(expires)),
        ("ttl".into(), ttl(expires)),
    ]);
    if let Some(lease) = lease {
        item.insert("lease_until".into(), ts(lease));
    }
    item
}

/// A conditional write of one idempotency record.
pub(super) enum Write {
    /// Put a fresh record if the key is absent or expired.
    Put(Item),
    /// Update a live record.
    Update {
        key: String,
        update: &'static str,
        /// The condition of the exact single write (ANDed with "exists and unexpired"); when it fails the old
        /// item comes back.
        condition: &'static str,
        values: Vec<(&'static str, AttributeValue)>,
    },
}

/// The outcome of a conditional write: the new item, or the live item that failed the condition (`None` when
/// absent or expired).
pub(super) enum Conditional {
    Written(Item),
    Refused(Option<Item>),
}

const PUT_CONDITION: &str = "attribute_not_exists(#k) OR expires_at <= :now";

fn live_condition(condition: &str) -> String {
    format!("attribute_exists(#k) AND expires_at > :now AND ({condition})")
}

/// The exact write of one record, returning the new item or the one that refused it.
async fn single(client: &aws_sdk_dynamodb::Client, table: &str, write: Write, now: Timestamp) -> Result<Conditional> {
    match write {
        Write::Put(item) => {
            let res = client
                .put_item()
                .table_name(table)
                .set_item(Some(item.clone()))
                .condition_expression(PUT_CONDITION)
                .expression_attribute_names("#k", "key")
                .expression_attribute_values(":now", ts(now))
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .send()
                .await;
            match res {
                Ok(_) => Ok(Conditional::Written(item)),
                Err(SdkError::ServiceError(e)) => match e.into_err() {
                    PutItemError::ConditionalCheckFailedException(c) => Ok(Conditional::Refused(live(c.item, now)?)),
                    other => Err(unavailable("PutItem idempotency", other)),
                },
                Err(e) => Err(unavailable("PutItem idempotency", e)),
            }
        }
        Write::Update { key, update, condition, values } => {
            let mut req = client
                .update_item()
                .table_name(table)
                .key("key", s(&key))
                .update_expression(update)
                .condition_expression(live_condition(condition))
                .expression_attribute_names("#k", "key")
                .expression_attribute_values(":now", ts(now))
                .return_values(ReturnValue::AllNew)
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
            if update.contains("#s") || condition.contains("#s") {
                req = req.expression_attribute_names("#s", "status");
            }
            for (name, value) in values {
                req = req.expression_attribute_values(name, value);
            }
            match req.send().await {
                Ok(out) => Ok(Conditional::Written(out.attributes.unwrap_or_default())),
                Err(SdkError::ServiceError(e)) => match e.into_err() {
                    UpdateItemError::ConditionalCheckFailedException(c) => Ok(Conditional::Refused(live(c.item, now)?)),
                    other => Err(unavailable("UpdateItem idempotency", other)),
                },
                Err(e) => Err(unavailable("UpdateItem idempotency", e)),
            }
        }
    }
}

pub(super) fn live(item: Option<Item>, now: Timestamp) -> Result<Option<Item>> {
    match item {
        Some(item) if Reader::new(&item, "idempotency").ts("expires_at")? > now => Ok(Some(item)),
        _ => Ok(None),
    }
}

impl AwsStore {
    /// One conditional write of the idempotency table.
    pub(super) async fn write_idempotency(&self, write: Write, now: Timestamp) -> Result<Conditional> {
        single(&self.clients.dynamodb, &self.names.idempotency_table, write, now).await
    }

    /// One `BatchGetItem` of at most 100 distinct keys, strongly consistent, retrying the keys DynamoDB leaves
    /// unprocessed under throttling.
    async fn batch_get(&self, keys: &[&str]) -> Result<Vec<Item>> {
        let table = &self.names.idempotency_table;
        let keys: Vec<Item> = keys.iter().map(|k| Item::from([("key".to_owned(), s(*k))])).collect();
        let request = KeysAndAttributes::builder()
            .set_keys(Some(keys))
            .consistent_read(true)
            .build()
            .map_err(|e| crate::StorageError::Invalid(e.to_string()))?;
        super::unprocessed::batch_get_table(&self.clients.dynamodb, "BatchGetItem idempotency", table, request).await
    }
}

pub(super) fn update(
    key: &IdempotencyKey,
    update: &'static str,
    condition: &'static str,
    values: Vec<(&'static str, AttributeValue)>,
) -> Write {
    Write::Update { key: key.as_str().to_owned(), update, condition, values }
}

#[async_trait]
impl Idempotency for AwsStore {
    async fn reopen(&self, key: &IdempotencyKey, outcome: &str) -> Result<Option<IdempotencyRecord>> {
        let now = self.now();
        let values = vec![
            (":enqueued", s(Status::Enqueued.as_str())),
            (":outcome", s(outcome)),
            (":done", s(Status::Done.as_str())),
            (":dead", s(Status::Dead.as_str())),
            (":processing", s(Status::Processing.as_str())),
        ];
        let write = update(
            key,
            "SET #s = :enqueued, outcome = :outcome, last_seen = :now REMOVE lease_until",
            "#s IN (:done, :dead, :processing)",
            values,
        );
        match self.write_idempotency(write, now).await? {
            Conditional::Written(item) | Conditional::Refused(Some(item)) => Ok(Some(record(&item)?)),
            Conditional::Refused(None) => Ok(None),
        }
    }

    async fn get(&self, key: &IdempotencyKey) -> Result<Option<IdempotencyRecord>> {
        let now = self.now();
        let out = self
            .clients
            .dynamodb
            .get_item()
            .table_name(&self.names.idempotency_table)
            .key("key", s(key.as_str()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("GetItem idempotency", e))?;
        live(out.item, now)?.as_ref().map(record).transpose()
    }

    async fn get_many(&self, keys: &[IdempotencyKey]) -> Result<Vec<Option<IdempotencyRecord>>> {
        let now = self.now();
        let mut found: HashMap<String, IdempotencyRecord> = HashMap::new();
        let mut unique: Vec<&str> = keys.iter().map(IdempotencyKey::as_str).collect();
        unique.sort_unstable();
        unique.dedup();
        // BatchGetItem takes at most 100 keys, and refuses a request that names one twice.
        for chunk in unique.chunks(100) {
            let items = self.batch_get(chunk).await?;
            for item in items {
                if let Some(item) = live(Some(item), now)? {
                    let rec = record(&item)?;
                    found.insert(rec.key.as_str().to_owned(), rec);
                }
            }
        }
        Ok(keys.iter().map(|k| found.get(k.as_str()).cloned()).collect())
    }

    async fn find_by_event(&self, event_id: EventId) -> Result<Option<IdempotencyRecord>> {
        let now = self.now();
        // A global secondary index is eventually consistent: fine for operators looking an event up.
        let out = self
            .clients
            .dynamodb
            .query()
            .table_name(&self.names.idempotency_table)
            .index_name(EVENT_ID_INDEX)
            .key_condition_expression("event_id = :e")
            .expression_attribute_values(":e", s(event_id.to_string()))
            .send()
            .await
            .map_err(|e| unavailable("Query idempotency by event id", e))?;
        let mut records = Vec::new();
        for item in out.items.unwrap_or_default() {
            if let Some(item) = live(Some(item), now)? {
                records.push(record(&item)?);
            }
        }
        Ok(records.into_iter().max_by_key(|r| r.first_seen))
    }

    async fn find_by_sender_id(&self, sender_id: &str) -> Result<Vec<IdempotencyRecord>> {
        // The index holds keys only (and is eventually consistent): each match is read from the table.
        let out = self
            .clients
            .dynamodb
            .query()
            .table_name(&self.names.idempotency_table)
            .index_name(SENDER_ID_INDEX)
            .key_condition_expression("sender_id = :id")
            .expression_attribute_values(":id", s(sender_id))
            .send()
            .await
            .map_err(|e| unavailable("Query idempotency by sender id", e))?;
        let keys: Vec<IdempotencyKey> = (out.items.unwrap_or_default().iter())
            .filter_map(|item| item.get("key").and_then(|k| k.as_s().ok()))
            .map(|k| IdempotencyKey::from_raw(k.as_str()))
            .collect();
        let mut records: Vec<IdempotencyRecord> = self.get_many(&keys).await?.into_iter().flatten().collect();
        records.sort_by_key(|r| std::cmp::Reverse(r.first_seen));
        records.truncate(SENDER_ID_MATCHES);
        Ok(records)
    }
}
