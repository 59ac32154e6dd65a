//! The event log on DynamoDB: one item per event in the event-log table, put by the accept in the same
//! `BatchWriteItem` as its audit lines (no request of its own; a batch that fails with log items is written again
//! without them, `super::audit::puts`), found by time through the `by_hour` index (partition: the hour of receipt,
//! sort: receipt time and event id; keys only), read back with `BatchGetItem`. TTL deletes an item a day after its
//! window from receipt; reads hide it once it has been done for the window, or at that TTL, whichever comes first.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::KeysAndAttributes;
use eventfleet_schema::{Envelope, EventId, Timestamp};
use futures_util::{StreamExt, TryStreamExt};

use super::item::{Item, Reader, s, ts, ttl};
use super::{AwsStore, unavailable};
use crate::event_log::{
    self, Cursor, EventLog, EventPage, EventQuery, EventSummary, LoggedEvent, MAX_PAGE, outcome_of,
};
use crate::{AuditLog, OutgoingMessage, Result, StorageError};

use super::names::EVENTS_BY_HOUR_INDEX as BY_HOUR_INDEX;
/// An item outlives the window by this much before TTL deletes it: the window runs from when the event was
/// done, which the accept cannot know (reads hide it on time).
const DELETION_SLACK: Duration = Duration::from_secs(24 * 3600);
/// Index entries a listing reads for one page at most (as the embedded store's scan limit).
const SCAN_LIMIT: usize = 20_000;
/// Trails read at once to find outcomes.
const TRAILS_AT_ONCE: usize = 16;
const HOUR_MS: i64 = 3_600_000;

fn hour(at: Timestamp) -> String {
    at.as_millis().div_euclid(HOUR_MS).to_string()
}

/// The index's sort key: receipt time (fixed width, so strings sort as numbers) and event id.
fn sort_key(at: Timestamp, id: &str) -> String {
    format!("{:015}.{id}", at.as_millis().max(0))
}

impl AwsStore {
    /// The accept's item, for its `BatchWriteItem`; `None` when retention is off.
    pub(super) fn event_item(&self, message: &OutgoingMessage, event_id: EventId) -> Result<Option<(String, Item)>> {
        let Some(retention) = self.options.retention.filter(|_| event_log::kept(&message.envelope)) else {
            return Ok(None);
        };
        let env = &message.envelope;
        let id = event_id.to_string();
        let received = env.received_at();
        let mut envelope = env.clone();
        envelope.set_event_id(event_id);
        let body = serde_json::to_string(&envelope).map_err(|e| StorageError::Invalid(format!("envelope: {e}")))?;
        let mut item = Item::from([
            ("event_id".to_owned(), s(&id)),
            ("hour".to_owned(), s(hour(received))),
            ("at".to_owned(), s(sort_key(received, &id))),
            ("received_at".to_owned(), ts(received)),
            ("source".to_owned(), s(env.source().name())),
            ("kind".to_owned(), s(env.kind().as_str())),
            ("group_id".to_owned(), s(&message.group)),
            ("envelope".to_owned(), s(body)),
            ("ttl".to_owned(), ttl(received.plus(retention + DELETION_SLACK))),
        ]);
        if let Some(hook) = env.source().hook_id() {
            item.insert("hook".to_owned(), s(hook.as_str()));
        }
        Ok(Some((self.names.events_table.clone(), item)))
    }

    /// Items by event id, strongly consistent, 100 a request; `fields` limits what is read.
    async fn event_items(&self, ids: &[String], fields: Option<&str>) -> Result<HashMap<String, Item>> {
        let table = &self.names.events_table;
        let mut found = HashMap::new();
        let mut unique: Vec<&String> = ids.iter().collect();
        unique.sort();
        unique.dedup();
        for chunk in unique.chunks(100) {
            let keys: Vec<Item> = chunk.iter().map(|id| Item::from([("event_id".to_owned(), s(*id))])).collect();
            let mut request = KeysAndAttributes::builder().set_keys(Some(keys)).consistent_read(true);
            if let Some(fields) = fields {
                request = request
                    .projection_expression(fields)
                    .expression_attribute_names("#s", "source")
                    .expression_attribute_names("#k", "kind");
            }
            let request = request.build().map_err(|e| StorageError::Invalid(e.to_string()))?;
            let items =
                super::unprocessed::batch_get_table(&self.clients.dynamodb, "BatchGetItem events", table, request)
                    .await?;
            for item in items {
                let id = Reader::new(&item, "events").str("event_id")?;
                found.insert(id, item);
            }
        }
        Ok(found)
    }

    /// Each event's outcome from its trail, a few trails at a time.
    async fn outcomes(
        &self,
        ids: Vec<EventId>,
    ) -> Result<Vec<(event_log::Outcome, Option<String>, Option<Timestamp>)>> {
        futures_util::stream::iter(ids)
            .map(|id| async move {
                let trail = self.history(id).await?;
                Ok::<_, StorageError>(outcome_of(&trail))
            })
            .buffered(TRAILS_AT_ONCE)
            .try_collect()
            .await
    }

    /// One hour's index entries between `from` and `to` of the sort key, at most `limit`.
    async fn hour_keys(&self, hour: &str, from: &str, to: &str, limit: usize) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = (self.clients.dynamodb.query())
                .table_name(&self.names.events_table)
                .index_name(BY_HOUR_INDEX)
                .key_condition_expression("#h = :h AND #a BETWEEN :from AND :to")
                .expression_attribute_names("#h", "hour")
                .expression_attribute_names("#a", "at")
                .expression_attribute_values(":h", s(hour))
                .expression_attribute_values(":from", s(from))
                .expression_attribute_values(":to", s(to))
                .set_exclusive_start_key(start)
                .limit((limit - out.len()).clamp(1, 1000) as i32)
                .send()
                .await
                .map_err(|e| unavailable("Query events", e))?;
            for item in page.items.unwrap_or_default() {
                let r = Reader::new(&item, "events");
                let at = r.str("at")?;
                // BETWEEN is inclusive; the cursor's own entry is not returned again (a range bound "NNN." is
                // no entry's key).
                if at != from {
                    out.push((at, r.str("event_id")?));
                }
            }
            start = page.last_evaluated_key;
            if start.is_none() || out.len() >= limit {
                return Ok(out);
            }
        }
    }
}

fn summary(item: &Item, outcome: (event_log::Outcome, Option<String>, Option<Timestamp>)) -> Result<EventSummary> {
    let r = Reader::new(item, "events");
    let id = r.str("event_id")?;
    Ok(EventSummary {
        event_id: EventId::parse(&id).ok_or_else(|| StorageError::Corrupt(format!("events item: event id {id}")))?,
        received_at: r.ts("received_at")?,
        source: r.str("source")?,
        kind: r.str("kind")?,
        hook: r.opt_str("hook")?,
        group: r.str("group_id")?,
        outcome: outcome.0,
        outcome_detail: outcome.1,
        finished_at: outcome.2,
    })
}

#[async_trait]
impl EventLog for AwsStore {
    fn retention(&self) -> Option<Duration> {
        self.options.retention
    }

    async fn events(&self, query: &EventQuery) -> Result<EventPage> {
        let Some(retention) = self.options.retention else { return Ok(EventPage::default()) };
        let now = self.now();
        let limit = query.limit.clamp(1, MAX_PAGE);
        // Nothing older than the window (and the slack TTL leaves) can be stored.
        let oldest = now.as_millis() - (retention + DELETION_SLACK).as_millis() as i64;
        let since = query.since.map_or(oldest, |t| t.as_millis().max(oldest));
        let until = query.until.map_or(now.as_millis() + HOUR_MS, |t| t.as_millis());
        // From the cursor's entry (exclusive) or the start of the range (inclusive, "NNN." sorts before any id).
        let from = match &query.after {
            Some(c) if c.received_at.as_millis() >= since => sort_key(c.received_at, &c.event_id.to_string()),
            _ => format!("{:015}.", since.max(0)),
        };
        let to = format!("{:015}.", until.max(0));
        if from >= to {
            // An empty range (since after until, a cursor past it): nothing, as on the embedded store.
            return Ok(EventPage::default());
        }
        let first_hour = from[..15].parse::<i64>().unwrap_or(since).div_euclid(HOUR_MS);
        // Every filter but the outcome (and the cursor, which the range applies), checked before the trails are read.
        let rest = EventQuery { outcome: None, after: None, ..query.clone() };
        let mut page = EventPage::default();
        let mut scanned = 0usize;
        let mut hour_ms = first_hour;
        while hour_ms * HOUR_MS < until {
            let keys = self.hour_keys(&hour_ms.to_string(), &from, &to, SCAN_LIMIT - scanned).await?;
            scanned += keys.len();
            let last_key = keys.last().cloned();
            for chunk in keys.chunks(100) {
                let ids: Vec<String> = chunk.iter().map(|(_, id)| id.clone()).collect();
                let items = self.event_items(&ids, Some("event_id, received_at, #s, #k, hook, group_id")).await?;
                let mut candidates = Vec::new();
                for id in &ids {
                    let Some(item) = items.get(id) else { continue };
                    let blank = summary(item, (event_log::Outcome::Pending, None, None))?;
                    if rest.matches(&blank) {
                        candidates.push((item, blank.event_id));
                    }
                }
                let outcomes = self.outcomes(candidates.iter().map(|(_, id)| *id).collect()).await?;
                for ((item, _), outcome) in candidates.into_iter().zip(outcomes) {
                    let e = summary(item, outcome)?;
                    if event_log::expired(e.outcome, e.finished_at, retention, now)
                        || query.outcome.is_some_and(|o| o != e.outcome)
                    {
                        continue;
                    }
                    if page.events.len() == limit {
                        page.next = page.events.last().map(Cursor::from);
                        return Ok(page);
                    }
                    page.events.push(e);
                }
            }
            if scanned >= SCAN_LIMIT {
                // Cut short: go on after the last entry read (whether or not it matched).
                page.next = last_key.and_then(|(at, id)| {
                    Some(Cursor {
                        received_at: Timestamp::from_millis(at[..15].parse().ok()?),
                        event_id: EventId::parse(&id)?,
                    })
                });
                return Ok(page);
            }
            hour_ms += 1;
        }
        Ok(page)
    }

    async fn get_many(&self, ids: &[EventId]) -> Result<Vec<Option<LoggedEvent>>> {
        let Some(retention) = self.options.retention else { return Ok(vec![None; ids.len()]) };
        let now = self.now();
        let texts: Vec<String> = ids.iter().map(EventId::to_string).collect();
        let items = self.event_items(&texts, None).await?;
        let present: Vec<EventId> = ids.iter().filter(|id| items.contains_key(&id.to_string())).copied().collect();
        let mut outcomes = self.outcomes(present).await?.into_iter();
        let mut out = Vec::with_capacity(ids.len());
        for id in &texts {
            let Some(item) = items.get(id) else {
                out.push(None);
                continue;
            };
            let (outcome, outcome_detail, finished_at) =
                outcomes.next().unwrap_or((event_log::Outcome::Pending, None, None));
            let r = Reader::new(item, "events");
            let received = r.ts("received_at")?;
            if event_log::expired(outcome, finished_at, retention, now)
                || now.since(received) >= retention + DELETION_SLACK
            {
                out.push(None);
                continue;
            }
            let envelope: Envelope = serde_json::from_str(&r.str("envelope")?)
                .map_err(|e| StorageError::Corrupt(format!("events item {id}: envelope: {e}")))?;
            out.push(Some(LoggedEvent { envelope, group: r.str("group_id")?, outcome, outcome_detail, finished_at }));
        }
        Ok(out)
    }

    async fn sweep(&self, _max: usize) -> Result<u64> {
        // TTL deletes expired items by itself.
        Ok(0)
    }
}

#[async_trait]
impl crate::Expiry for AwsStore {
    async fn sweep_expired(&self, _max: usize) -> Result<u64> {
        // Every table's TTL deletes expired items by itself.
        Ok(0)
    }
}
