//! Every AWS name the code uses, derived from one prefix: the single source of truth that `tables create`
//! provisions from and that `eventfleet tables describe --json` prints for the Terraform consistency check.

use serde::Serialize;

/// The idempotency table's index on `event_id` (`events show <event id>`).
pub const EVENT_ID_INDEX: &str = "by_event_id";
/// The idempotency table's index on `sender_id`, the key's text after its last `:` (find an event by the
/// sender's own id). Keys only: the records are read from the table.
pub const SENDER_ID_INDEX: &str = "by_sender_id";
/// The event log's index by hour of receipt (partition: the hour's number since the epoch; sort: receipt time
/// and event id). Keys only: the items are read from the table.
pub const EVENTS_BY_HOUR_INDEX: &str = "by_hour";
/// The TTL attribute every expiring table carries, in epoch seconds.
pub const TTL_ATTRIBUTE: &str = "ttl";
/// The CloudWatch namespace unless configured.
pub const DEFAULT_NAMESPACE: &str = "Eventfleet";
/// The prefix unless configured.
pub const DEFAULT_PREFIX: &str = "eventfleet";

/// Queue, table and topic names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The prefix everything else derives from.
    pub prefix: String,
    /// The FIFO queue.
    pub queue: String,
    /// Its FIFO dead-letter queue.
    pub dlq: String,
    /// Queue URL when configured (skips `GetQueueUrl`).
    pub queue_url: Option<String>,
    /// DLQ URL when configured.
    pub dlq_url: Option<String>,
    /// Idempotency records.
    pub idempotency_table: String,
    /// Audit trail.
    pub audit_table: String,
    /// Retry and dead-letter records.
    pub retries_table: String,
    /// Webhook registry.
    pub webhooks_table: String,
    /// Alarm threads and channels' posting states.
    pub alarm_threads_table: String,
    /// The event log: accepted envelopes kept for the retention window.
    pub events_table: String,
    /// The ops topic's name (`tables create` makes it).
    pub ops_topic: String,
    /// CloudWatch namespace.
    pub metrics_namespace: String,
}

impl Names {
    /// Every name derived from `prefix`.
    pub fn from_prefix(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            queue: format!("{prefix}-events.fifo"),
            dlq: format!("{prefix}-events-dlq.fifo"),
            queue_url: None,
            dlq_url: None,
            idempotency_table: format!("{prefix}-idempotency"),
            audit_table: format!("{prefix}-audit"),
            retries_table: format!("{prefix}-retries"),
            webhooks_table: format!("{prefix}-webhooks"),
            alarm_threads_table: format!("{prefix}-alarm-threads"),
            events_table: format!("{prefix}-event-log"),
            ops_topic: format!("{prefix}-ops"),
            metrics_namespace: DEFAULT_NAMESPACE.to_owned(),
        }
    }

    /// Whether `prefix` makes valid queue and table names (letters, digits, `-`, `_`; 1–60 characters so the
    /// longest derived name fits SQS's 80).
    pub fn valid_prefix(prefix: &str) -> bool {
        (1..=60).contains(&prefix.len()) && prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }

    /// The queues and tables with their keys, as `tables describe --json` prints them.
    pub fn describe(&self, max_receive_count: u32) -> Description {
        let s = |name: &str| Key { name: name.to_owned(), r#type: "S" };
        Description {
            prefix: self.prefix.clone(),
            queues: vec![
                QueueDescription {
                    role: "events",
                    name: self.queue.clone(),
                    fifo: true,
                    content_based_deduplication: false,
                    dead_letter: Some(DeadLetterTarget { role: "dead_letters", max_receive_count }),
                },
                QueueDescription {
                    role: "dead_letters",
                    name: self.dlq.clone(),
                    fifo: true,
                    content_based_deduplication: false,
                    dead_letter: None,
                },
            ],
            tables: vec![
                TableDescription {
                    role: "idempotency",
                    name: self.idempotency_table.clone(),
                    hash_key: s("key"),
                    range_key: None,
                    ttl_attribute: Some(TTL_ATTRIBUTE),
                    global_secondary_indexes: vec![
                        IndexDescription {
                            name: EVENT_ID_INDEX,
                            hash_key: s("event_id"),
                            range_key: None,
                            projection: "ALL",
                        },
                        IndexDescription {
                            name: SENDER_ID_INDEX,
                            hash_key: s("sender_id"),
                            range_key: None,
                            projection: "KEYS_ONLY",
                        },
                    ],
                },
                TableDescription {
                    role: "audit",
                    name: self.audit_table.clone(),
                    hash_key: s("event_id"),
                    range_key: Some(s("at_seq")),
                    ttl_attribute: Some(TTL_ATTRIBUTE),
                    global_secondary_indexes: vec![],
                },
                TableDescription {
                    role: "retries",
                    name: self.retries_table.clone(),
                    hash_key: s("event_id"),
                    range_key: None,
                    ttl_attribute: Some(TTL_ATTRIBUTE),
                    global_secondary_indexes: vec![],
                },
                TableDescription {
                    role: "webhooks",
                    name: self.webhooks_table.clone(),
                    hash_key: s("id"),
                    range_key: None,
                    ttl_attribute: None,
                    global_secondary_indexes: vec![],
                },
                TableDescription {
                    role: "alarm_threads",
                    name: self.alarm_threads_table.clone(),
                    hash_key: s("alarm_arn"),
                    range_key: None,
                    ttl_attribute: Some(TTL_ATTRIBUTE),
                    global_secondary_indexes: vec![],
                },
                TableDescription {
                    role: "events",
                    name: self.events_table.clone(),
                    hash_key: s("event_id"),
                    range_key: None,
                    ttl_attribute: Some(TTL_ATTRIBUTE),
                    global_secondary_indexes: vec![IndexDescription {
                        name: EVENTS_BY_HOUR_INDEX,
                        hash_key: s("hour"),
                        range_key: Some(s("at")),
                        projection: "KEYS_ONLY",
                    }],
                },
            ],
            topics: vec![TopicDescription { role: "ops", name: self.ops_topic.clone() }],
            metrics_namespace: self.metrics_namespace.clone(),
        }
    }
}

/// What `tables describe --json` prints.
#[derive(Debug, Clone, Serialize)]
#[allow(missing_docs)]
pub struct Description {
    pub prefix: String,
    pub queues: Vec<QueueDescription>,
    pub tables: Vec<TableDescription>,
    pub topics: Vec<TopicDescription>,
    pub metrics_namespace: String,
}

/// A queue.
#[derive(Debug, Clone, Serialize)]
#[allow(missing_docs)]
pub struct QueueDescription {
    pub role: &'static str,
    pub name: String,
    pub fifo: bool,
    pub content_based_deduplication: bool,
    pub dead_letter: Option<DeadLetterTarget>,
}

/// A queue's redrive policy.
#[derive(Debug, Clone, Serialize)]
#[allow(missing_docs)]
pub struct DeadLetterTarget {
    pub role: &'static str,
    pub max_receive_count: u32,
}

/// A key attribute.
#[derive(Debug, Clone, Serialize)]
#[allow(missing_docs)]
pub struct Key {
    pub name: String,
    pub r#type: &'static str,
}

/// A table.
#[derive(Debug, Clone, Serialize)]
#[allow(missing_docs)]
pub struct TableDescription {
    pub role: &'static str,
    pub name: String,
    pub hash_key: Key,
    pub range_key: Option<Key>,
    pub ttl_attribute: Option<&'static str>,
    pub global_secondary_indexes: Vec<IndexDescription>,
}

/// A global secondary index.
#[derive(Debug, Clone, Serialize)]
#[allow(missing_docs)]
pub struct IndexDescription {
    pub name: &'static str,
    pub hash_key: Key,
    pub range_key: Option<Key>,
    pub projection: &'static str,
}

/// A topic.
#[derive(Debug, Clone, Serialize)]
#[allow(missing_docs)]
pub struct TopicDescription {
    pub role: &'static str,
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_derive_from_the_prefix() {
        let n = Names::from_prefix("acme-prod");
        assert_eq!(n.queue, "acme-prod-events.fifo");
        assert_eq!(n.dlq, "acme-prod-events-dlq.fifo");
        assert_eq!(n.idempotency_table, "acme-prod-idempotency");
        assert!(Names::valid_prefix("acme-prod_1"));
        assert!(!Names::valid_prefix(""));
        assert!(!Names::valid_prefix("has space"));
        assert!(!Names::valid_prefix(&"x".repeat(61)));
        let d = serde_json::to_value(n.describe(5)).unwrap();
        assert_eq!(d["queues"][0]["dead_letter"]["max_receive_count"], 5);
        assert_eq!(d["tables"][1]["range_key"]["name"], "at_seq");
        assert_eq!(d["tables"][3]["ttl_attribute"], serde_json::Value::Null);
    }
}
