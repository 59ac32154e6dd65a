//! The idempotency port on DynamoDB. Each transition is one conditional write; when its condition fails,
//! `ReturnValuesOnConditionCheckFailure=ALL_OLD` hands back the item that made it fail, so deciding what to
//! answer needs no second read. Exactly one of concurrent claims of a key wins because the claim is a
//! conditional put.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use eventfleet_schema::{EventId, IdempotencyKey, IdempotencyRecord, Status, Timestamp};

use super::item::{Item, Reader, n, s, ts, ttl};
use super::names::EVENT_ID_INDEX;
use super::{AwsStore, unavailable};
use crate::idempotency::{Begin, Claim, Idempotency};
use crate::{Result, StorageError};

/// Records created by a worker's `begin` (the claim expired or was lost) keep the sources' default horizon.
const BEGIN_HORIZON: Duration = Duration::from_secs(72 * 3600);

fn record(item: &Item) -> Result<IdempotencyRecord> {
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

fn new_item(
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
enum Write {
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
enum Conditional {
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

fn live(item: Option<Item>, now: Timestamp) -> Result<Option<Item>> {
    match item {
        Some(item) if Reader::new(&item, "idempotency").ts("expires_at")? > now => Ok(Some(item)),
        _ => Ok(None),
    }
}

impl AwsStore {
    /// One conditional write of the idempotency table.
    async fn write(&self, write: Write, now: Timestamp) -> Result<Conditional> {
        single(&self.clients.dynamodb, &self.names.idempotency_table, write, now).await
    }
}

fn update(
    key: &IdempotencyKey,
    update: &'static str,
    condition: &'static str,
    values: Vec<(&'static str, AttributeValue)>,
) -> Write {
    Write::Update { key: key.as_str().to_owned(), update, condition, values }
}

/// `#s IN (...)` for the statuses that may become `to`, with their values.
fn from_statuses(to: Status) -> (&'static str, Vec<(&'static str, AttributeValue)>) {
    let condition = match to {
        Status::Enqueued => "#s IN (:f_pending, :f_processing, :f_done, :f_dead)",
        Status::Processing => "#s IN (:f_pending, :f_enqueued, :f_processing)",
        Status::Done | Status::Dead => "#s IN (:f_processing)",
        Status::Pending => "#s IN (:f_none)",
    };
    let all = [
        (Status::Pending, ":f_pending"),
        (Status::Enqueued, ":f_enqueued"),
        (Status::Processing, ":f_processing"),
        (Status::Done, ":f_done"),
        (Status::Dead, ":f_dead"),
    ];
    let mut values: Vec<_> =
        all.iter().filter(|(from, _)| from.can_become(to)).map(|(from, name)| (*name, s(from.as_str()))).collect();
    if values.is_empty() {
        values.push((":f_none", s("-")));
    }
    (condition, values)
}

/// `resumed`: the write took over an expired `PROCESSING` lease.
fn started(rec: &IdempotencyRecord, resumed: bool) -> Begin {
    Begin::Started { lease_until: rec.lease_until.unwrap_or(rec.last_seen), replay: rec.outcome.is_some(), resumed }
}

#[async_trait]
impl Idempotency for AwsStore {
    async fn claim(&self, key: &IdempotencyKey, event_id: EventId, horizon: Duration) -> Result<Claim> {
        // Absent → put; present → count the duplicate. A record that expires between the two is claimed on
        // the next turn; three turns cover any plausible race.
        for _ in 0..3 {
            let now = self.now();
            let item = new_item(key, Status::Pending, event_id, now, None, now.plus(horizon));
            if let Conditional::Written(item) = self.write(Write::Put(item), now).await? {
                return Ok(Claim::Claimed(record(&item)?));
            }
            let count = update(
                key,
                "SET last_seen = :now ADD duplicate_count :one",
                "attribute_exists(#k)",
                vec![(":one", n(1))],
            );
            let counted = self.write(count, now).await?;
            if let Conditional::Written(item) = counted {
                return Ok(Claim::Existing(record(&item)?));
            }
        }
        Err(StorageError::Unavailable(format!("claim of {key} kept racing with its expiry")))
    }

    async fn mark_enqueued(&self, key: &IdempotencyKey) -> Result<Status> {
        let now = self.now();
        let values = vec![(":enqueued", s(Status::Enqueued.as_str())), (":pending", s(Status::Pending.as_str()))];
        let write = update(key, "SET #s = :enqueued, last_seen = :now REMOVE lease_until", "#s = :pending", values);
        match self.write(write, now).await? {
            // Refused with a live record: already ENQUEUED or later (another request or a worker was first).
            Conditional::Written(item) | Conditional::Refused(Some(item)) => Ok(record(&item)?.status),
            Conditional::Refused(None) => Err(StorageError::NotFound(format!("key {key}"))),
        }
    }

    async fn begin(&self, key: &IdempotencyKey, event_id: EventId, lease: Duration) -> Result<Begin> {
        for _ in 0..3 {
            let now = self.now();
            let lease_until = now.plus(lease);
            let values = vec![
                (":processing", s(Status::Processing.as_str())),
                (":pending", s(Status::Pending.as_str())),
                (":enqueued", s(Status::Enqueued.as_str())),
                (":lease", ts(lease_until)),
            ];
            // `begun_from` takes the status before this write (a SET's right-hand side reads the old item): it
            // tells a takeover of an expired lease from a first start.
            let write = update(
                key,
                "SET begun_from = #s, #s = :processing, last_seen = :now, lease_until = :lease",
                "#s IN (:pending, :enqueued) OR (#s = :processing AND lease_until <= :now)",
                values,
            );
            match self.write(write, now).await? {
                Conditional::Written(item) => {
                    let resumed = Reader::new(&item, "idempotency").opt_str("begun_from")?.as_deref()
                        == Some(Status::Processing.as_str());
                    return Ok(started(&record(&item)?, resumed));
                }
                Conditional::Refused(Some(item)) => {
                    let rec = record(&item)?;
                    return Ok(match rec.status {
                        Status::Done => Begin::AlreadyDone(rec),
                        Status::Dead => Begin::Dead(rec),
                        _ => Begin::Busy(rec),
                    });
                }
                Conditional::Refused(None) => {
                    let item =
                        new_item(key, Status::Processing, event_id, now, Some(lease_until), now.plus(BEGIN_HORIZON));
                    if let Conditional::Written(item) = self.write(Write::Put(item), now).await? {
                        return Ok(started(&record(&item)?, false));
                    }
                    // Someone claimed it meanwhile: decide again on its record.
                }
            }
        }
        Err(StorageError::Unavailable(format!("begin of {key} kept racing with other writers")))
    }

    async fn transition(&self, key: &IdempotencyKey, to: Status, outcome: Option<&str>) -> Result<IdempotencyRecord> {
        let now = self.now();
        let (condition, mut values) = from_statuses(to);
        values.push((":to", s(to.as_str())));
        let update_expr = match outcome {
            Some(outcome) => {
                values.push((":outcome", s(outcome)));
                "SET #s = :to, last_seen = :now, outcome = :outcome REMOVE lease_until"
            }
            None => "SET #s = :to, last_seen = :now REMOVE lease_until",
        };
        match self.write(update(key, update_expr, condition, values), now).await? {
            Conditional::Written(item) => record(&item),
            Conditional::Refused(Some(item)) => {
                let from = record(&item)?.status;
                Err(StorageError::IllegalTransition { key: key.as_str().to_owned(), from, to })
            }
            Conditional::Refused(None) => Err(StorageError::NotFound(format!("key {key}"))),
        }
    }

    async fn complete(&self, key: &IdempotencyKey, outcome: &str) -> Result<()> {
        let now = self.now();
        let values = vec![
            (":done", s(Status::Done.as_str())),
            (":processing", s(Status::Processing.as_str())),
            (":outcome", s(outcome)),
        ];
        let write = update(
            key,
            "SET #s = :done, last_seen = :now, outcome = :outcome REMOVE lease_until",
            "#s = :processing",
            values,
        );
        match self.write(write, now).await? {
            Conditional::Written(_) => Ok(()),
            Conditional::Refused(Some(item)) => Err(StorageError::IllegalTransition {
                key: key.as_str().to_owned(),
                from: record(&item)?.status,
                to: Status::Done,
            }),
            Conditional::Refused(None) => Err(StorageError::NotFound(format!("key {key}"))),
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_conditions_follow_the_status_machine() {
        for to in [Status::Pending, Status::Enqueued, Status::Processing, Status::Done, Status::Dead] {
            let (condition, values) = from_statuses(to);
            for (name, _) in &values {
                assert!(condition.contains(name), "{to}: {name} unused in {condition}");
            }
            let named = condition.matches(":f_").count();
            assert_eq!(named, values.len(), "{to}: {condition}");
        }
    }
}
