//! `eventfleet tables create` on the aws backend: the queues, tables and ops topic of [`Names::describe`], for an
//! emulator or a sandbox account. Production uses Terraform (`infra/terraform`), checked against the same
//! description. Every step is idempotent: what exists is left as it is.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;
use serde::Serialize;

use super::names::{Key, Names};
use super::{Clients, unavailable};
use crate::StorageError;

/// What `tables create` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Provisioned {
    /// Queue name → URL.
    pub queues: Vec<(String, String)>,
    /// Tables created now.
    pub tables_created: Vec<String>,
    /// Tables that were there already.
    pub tables_existing: Vec<String>,
    /// The ops topic's ARN.
    pub ops_topic_arn: String,
}

fn key_element(key: &Key, kind: KeyType) -> Result<KeySchemaElement, StorageError> {
    KeySchemaElement::builder()
        .attribute_name(&key.name)
        .key_type(kind)
        .build()
        .map_err(|e| StorageError::Invalid(e.to_string()))
}

fn attribute(key: &Key) -> Result<AttributeDefinition, StorageError> {
    AttributeDefinition::builder()
        .attribute_name(&key.name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(|e| StorageError::Invalid(e.to_string()))
}

/// Creates everything `names` describes.
pub async fn create(
    clients: &Clients,
    names: &Names,
    max_receive_count: u32,
    visibility_s: u64,
) -> Result<Provisioned, StorageError> {
    let mut done = Provisioned::default();
    let description = names.describe(max_receive_count);

    // The DLQ first: the queue's redrive policy names its ARN.
    let dlq = clients
        .sqs
        .create_queue()
        .queue_name(&names.dlq)
        .attributes(QueueAttributeName::FifoQueue, "true")
        .attributes(QueueAttributeName::MessageRetentionPeriod, (14 * 24 * 3600).to_string())
        .send()
        .await
        .map_err(|e| unavailable("CreateQueue DLQ", e))?
        .queue_url
        .unwrap_or_default();
    let dlq_arn = clients
        .sqs
        .get_queue_attributes()
        .queue_url(&dlq)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| unavailable("GetQueueAttributes DLQ", e))?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .unwrap_or_default();
    let redrive =
        serde_json::json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count }).to_string();
    let queue = clients
        .sqs
        .create_queue()
        .queue_name(&names.queue)
        .attributes(QueueAttributeName::FifoQueue, "true")
        .attributes(QueueAttributeName::ContentBasedDeduplication, "false")
        .attributes(QueueAttributeName::VisibilityTimeout, visibility_s.to_string())
        .attributes(QueueAttributeName::RedrivePolicy, redrive)
        .send()
        .await
        .map_err(|e| unavailable("CreateQueue", e))?
        .queue_url
        .unwrap_or_default();
    done.queues = vec![(names.queue.clone(), queue), (names.dlq.clone(), dlq)];

    for table in &description.tables {
        let mut keys = vec![key_element(&table.hash_key, KeyType::Hash)?];
        let mut attributes = vec![attribute(&table.hash_key)?];
        if let Some(range) = &table.range_key {
            keys.push(key_element(range, KeyType::Range)?);
            attributes.push(attribute(range)?);
        }
        let mut req = clients
            .dynamodb
            .create_table()
            .table_name(&table.name)
            .billing_mode(BillingMode::PayPerRequest)
            .set_key_schema(Some(keys));
        for index in &table.global_secondary_indexes {
            let mut index_keys = vec![key_element(&index.hash_key, KeyType::Hash)?];
            attributes.push(attribute(&index.hash_key)?);
            if let Some(range) = &index.range_key {
                index_keys.push(key_element(range, KeyType::Range)?);
                attributes.push(attribute(range)?);
            }
            req = req.global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(index.name)
                    .set_key_schema(Some(index_keys))
                    .projection(Projection::builder().projection_type(ProjectionType::from(index.projection)).build())
                    .build()
                    .map_err(|e| StorageError::Invalid(e.to_string()))?,
            );
        }
        match req.set_attribute_definitions(Some(attributes)).send().await {
            Ok(_) => done.tables_created.push(table.name.clone()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception()) => {
                done.tables_existing.push(table.name.clone());
            }
            Err(e) => return Err(unavailable(&format!("CreateTable {}", table.name), e)),
        }
        if let Some(ttl) = table.ttl_attribute {
            let spec = TimeToLiveSpecification::builder()
                .attribute_name(ttl)
                .enabled(true)
                .build()
                .map_err(|e| StorageError::Invalid(e.to_string()))?;
            let res = clients
                .dynamodb
                .update_time_to_live()
                .table_name(&table.name)
                .time_to_live_specification(spec)
                .send()
                .await;
            // "TimeToLive is already enabled" on a second run is fine.
            if let Err(e) = res
                && !format!("{}", aws_smithy_types::error::display::DisplayErrorContext(&e)).contains("already enabled")
            {
                return Err(unavailable(&format!("UpdateTimeToLive {}", table.name), e));
            }
        }
    }

    done.ops_topic_arn = clients
        .sns
        .create_topic()
        .name(&names.ops_topic)
        .send()
        .await
        .map_err(|e| unavailable("CreateTopic", e))?
        .topic_arn
        .unwrap_or_default();
    Ok(done)
}
