//! Naming events and dead letters the way operators know them: by event id, by idempotency key, or by the
//! sender's own id (a Slack `event_id`, an `X-GitHub-Delivery`, an SNS `MessageId`). The CLI and the console
//! both resolve through here, so they name things alike.

use std::collections::BTreeSet;

use eventfleet_schema::{EventId, IdempotencyKey, IdempotencyRecord};
use eventfleet_storage::{DeadLetter, DeadLetterFilter, MessageId, StorageError, Store};

/// One event a name matched.
#[derive(Debug, Clone)]
pub struct EventMatch {
    /// Its id.
    pub event_id: EventId,
    /// Its idempotency record, unless it has expired.
    pub record: Option<IdempotencyRecord>,
}

/// The events `text` names, newest first: an event id, else an idempotency key, else a sender's own id (which
/// several sources may share). An event id whose record has expired still matches while its trail remains.
/// A UUID that names no event is looked up as a key and a sender id too: `X-GitHub-Delivery` and SNS
/// `MessageId`s are UUIDs as well.
pub async fn events(store: &Store, text: &str) -> Result<Vec<EventMatch>, StorageError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(event_id) = EventId::parse(text) {
        let record = store.idempotency.find_by_event(event_id).await?;
        if record.is_some() || !store.audit.history(event_id).await?.is_empty() {
            return Ok(vec![EventMatch { event_id, record }]);
        }
    }
    if let Some(record) = store.idempotency.get(&IdempotencyKey::from_raw(text)).await? {
        return Ok(vec![EventMatch { event_id: record.event_id, record: Some(record) }]);
    }
    let found = store.idempotency.find_by_sender_id(text).await?;
    Ok(found.into_iter().map(|r| EventMatch { event_id: r.event_id, record: Some(r) }).collect())
}

/// The dead letters `text` names: a dead letter's own id, else those of the events it names (see [`events`]),
/// matched on the DLQ by event id or key, oldest first.
pub async fn dead_letters(store: &Store, text: &str) -> Result<Vec<DeadLetter>, StorageError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(letter) = store.dead_letters.get(&MessageId(text.to_owned())).await? {
        return Ok(vec![letter]);
    }
    let matches = events(store, text).await?;
    let ids: BTreeSet<EventId> = matches.iter().map(|m| m.event_id).collect();
    let keys: BTreeSet<&str> = matches.iter().filter_map(|m| m.record.as_ref()).map(|r| r.key.as_str()).collect();
    // The DLQ has no index by event: read it and match. A record past its horizon is gone, so a key or sender id
    // is also matched on the envelope itself.
    let all = store.dead_letters.list(&DeadLetterFilter::default()).await?;
    Ok(all
        .into_iter()
        .filter(|l| {
            let key = l.envelope.idempotency_key();
            // An event id names its letter even when its record and its trail have expired.
            ids.contains(&l.envelope.event_id())
                || l.envelope.event_id().to_string() == text
                || keys.contains(key.as_str())
                || key.as_str() == text
                || key.sender_id() == text
        })
        .collect())
}
