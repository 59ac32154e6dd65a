//! The idempotency port on DynamoDB. Each transition is one conditional write; when its condition fails,
//! `ReturnValuesOnConditionCheckFailure=ALL_OLD` hands back the item that made it fail, so deciding what to
//! answer needs no second read. Exactly one of concurrent claims of a key wins because the claim is a
//! conditional put.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{ReturnValue, ReturnValuesOnConditionCheckFailure};
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

/// The outcome of a conditional write: the new item, or the live item that failed the condition (`None` when
/// absent or expired).
enum Conditional {
    Written(Item),
    Refused(Option<Item>),
}

fn live(item: Option<Item>, now: Timestamp) -> Result<Option<Item>> {
    match item {
        Some(item) if Reader::new(&item, "idempotency").ts("expires_at")? > now => Ok(Some(item)),
        _ => Ok(None),
    }
}

impl AwsStore {
    fn idem_table(&self) -> &str {
        &self.names.idempotency_table
    }

    /// Puts a fresh record if the key is absent or expired.
    async fn put_if_absent(&self, item: Item, now: Timestamp) -> Result<Conditional> {
        let res = self
            .clients
            .dynamodb
            .put_item()
            .table_name(self.idem_table())
            .set_item(Some(item.clone()))
            .condition_expression("attribute_not_exists(#k) OR expires_at <= :now")
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

    /// `UpdateItem` on a live record under `condition` (ANDed with "exists and unexpired").
    async fn update_live(
        &self,
        key: &IdempotencyKey,
        update: &str,
        condition: Option<&str>,
        values: Vec<(&str, aws_sdk_dynamodb::types::AttributeValue)>,
        now: Timestamp,
    ) -> Result<Conditional> {
        let full_condition = match condition {
            Some(c) => format!("attribute_exists(#k) AND expires_at > :now AND ({c})"),
            None => "attribute_exists(#k) AND expires_at > :now".to_owned(),
        };
        let mut req = self
            .clients
            .dynamodb
            .update_item()
            .table_name(self.idem_table())
            .key("key", s(key.as_str()))
            .update_expression(update)
            .condition_expression(full_condition)
            .expression_attribute_names("#k", "key")
            .expression_attribute_values(":now", ts(now))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if update.contains("#s") || condition.is_some_and(|c| c.contains("#s")) {
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

/// `#s IN (...)` for the statuses that may become `to`, with their values.
fn from_statuses(to: Status) -> (String, Vec<(&'static str, aws_sdk_dynamodb::types::AttributeValue)>) {
    const ALL: [(Status, &str); 5] = [
        (Status::Pending, ":f_pending"),
        (Status::Enqueued, ":f_enqueued"),
        (Status::Processing, ":f_processing"),
        (Status::Done, ":f_done"),
        (Status::Dead, ":f_dead"),
    ];
    let allowed: Vec<_> = ALL.iter().filter(|(from, _)| from.can_become(to)).collect();
    let names: Vec<_> = allowed.iter().map(|(_, name)| *name).collect();
    let values = allowed.iter().map(|(from, name)| (*name, s(from.as_str()))).collect();
    (format!("#s IN ({})", names.join(", ")), values)
}

#[async_trait]
impl Idempotency for AwsStore {
    async fn claim(&self, key: &IdempotencyKey, event_id: EventId, horizon: Duration) -> Result<Claim> {
        // Absent → put; present → count the duplicate. A record that expires between the two is claimed on
        // the next turn; three turns cover any plausible race.
        for _ in 0..3 {
            let now = self.now();
            let item = new_item(key, Status::Pending, event_id, now, None, now.plus(horizon));
            if let Conditional::Written(item) = self.put_if_absent(item, now).await? {
                return Ok(Claim::Claimed(record(&item)?));
            }
            let counted = self
                .update_live(key, "SET last_seen = :now ADD duplicate_count :one", None, vec![(":one", n(1))], now)
                .await?;
            if let Conditional::Written(item) = counted {
                return Ok(Claim::Existing(record(&item)?));
            }
        }
        Err(StorageError::Unavailable(format!("claim of {key} kept racing with its expiry")))
    }

    async fn mark_enqueued(&self, key: &IdempotencyKey) -> Result<IdempotencyRecord> {
        let now = self.now();
        let res = self
            .update_live(
                key,
                "SET #s = :enqueued, last_seen = :now REMOVE lease_until",
                Some("#s = :pending"),
                vec![(":enqueued", s(Status::Enqueued.as_str())), (":pending", s(Status::Pending.as_str()))],
                now,
            )
            .await?;
        match res {
            Conditional::Written(item) => record(&item),
            // Already ENQUEUED or later: another request or a worker got there first.
            Conditional::Refused(Some(item)) => record(&item),
            Conditional::Refused(None) => Err(StorageError::NotFound(format!("key {key}"))),
        }
    }

    async fn begin(&self, key: &IdempotencyKey, event_id: EventId, lease: Duration) -> Result<Begin> {
        for _ in 0..3 {
            let now = self.now();
            let lease_until = now.plus(lease);
            let res = self
                .update_live(
                    key,
                    "SET #s = :processing, last_seen = :now, lease_until = :lease",
                    Some("#s IN (:pending, :enqueued) OR (#s = :processing AND lease_until <= :now)"),
                    vec![
                        (":processing", s(Status::Processing.as_str())),
                        (":pending", s(Status::Pending.as_str())),
                        (":enqueued", s(Status::Enqueued.as_str())),
                        (":lease", ts(lease_until)),
                    ],
                    now,
                )
                .await?;
            match res {
                Conditional::Written(item) => return Ok(Begin::Started(record(&item)?)),
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
                    if let Conditional::Written(item) = self.put_if_absent(item, now).await? {
                        return Ok(Begin::Started(record(&item)?));
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
        let update = match outcome {
            Some(outcome) => {
                values.push((":outcome", s(outcome)));
                "SET #s = :to, last_seen = :now, outcome = :outcome REMOVE lease_until"
            }
            None => "SET #s = :to, last_seen = :now REMOVE lease_until",
        };
        match self.update_live(key, update, Some(&condition), values, now).await? {
            Conditional::Written(item) => record(&item),
            Conditional::Refused(Some(item)) => {
                let from = record(&item)?.status;
                Err(StorageError::IllegalTransition { key: key.as_str().to_owned(), from, to })
            }
            Conditional::Refused(None) => Err(StorageError::NotFound(format!("key {key}"))),
        }
    }

    async fn get(&self, key: &IdempotencyKey) -> Result<Option<IdempotencyRecord>> {
        let now = self.now();
        let out = self
            .clients
            .dynamodb
            .get_item()
            .table_name(self.idem_table())
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
            .table_name(self.idem_table())
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
