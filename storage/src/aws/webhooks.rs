//! The webhook registry on DynamoDB.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, ReturnValue, TransactWriteItem, Update};
use eventfleet_schema::{HookFilter, HookId, HookKind, Webhook};

use super::batch::{GroupCommit, Linger};
use super::item::{Item, Reader, n, s, ts};
use super::{AwsStore, unavailable};
use crate::webhooks::WebhookRegistry;
use crate::{Result, StorageError};

fn item(h: &Webhook) -> Item {
    let mut item = Item::from([
        ("id".into(), s(h.id.as_str())),
        ("name".into(), s(&h.name)),
        ("channel".into(), s(&h.channel)),
        ("kind".into(), s(h.kind.as_str())),
        ("active".into(), AttributeValue::Bool(h.active)),
        ("invocation_count".into(), n(h.invocation_count)),
        ("created_by".into(), s(&h.created_by)),
        ("created_at".into(), ts(h.created_at)),
    ]);
    if let Some(secret) = &h.secret {
        item.insert("secret".into(), s(secret));
    }
    if let Some(filter) = h.filter.as_ref().filter(|f| !f.is_empty()) {
        item.insert("filter".into(), s(filter_json(filter)));
    }
    if let Some(group_key) = &h.group_key {
        item.insert("group_key".into(), s(group_key));
    }
    if h.per_delivery {
        item.insert("per_delivery".into(), AttributeValue::Bool(true));
    }
    item
}

fn filter_json(filter: &HookFilter) -> String {
    // A struct of two string lists always serializes.
    serde_json::to_string(filter).unwrap_or_default()
}

fn hook(item: &Item) -> Result<Webhook> {
    let r = Reader::new(item, "webhooks");
    Ok(Webhook {
        id: HookId::from_raw(r.str("id")?),
        name: r.str("name")?,
        channel: r.str("channel")?,
        kind: r.parsed("kind", HookKind::parse)?,
        active: r.bool("active")?,
        secret: r.opt_str("secret")?,
        invocation_count: u64::try_from(r.i64("invocation_count")?)
            .map_err(|_| StorageError::Corrupt("webhooks item: negative invocation_count".into()))?,
        created_by: r.str("created_by")?,
        created_at: r.ts("created_at")?,
        filter: r
            .opt_str("filter")?
            .map(|json| serde_json::from_str(&json))
            .transpose()
            .map_err(|e| StorageError::Corrupt(format!("webhooks item: filter: {e}")))?,
        group_key: r.opt_str("group_key")?,
        per_delivery: matches!(item.get("per_delivery"), Some(AttributeValue::Bool(true))),
    })
}

/// The group commit of hook reads.
pub(super) type HookReads = GroupCommit<HookId, Result<Option<Webhook>>>;

/// Hooks a `BatchGetItem` reads at most (DynamoDB's limit of keys a request).
const READS: usize = 100;

/// `BatchGetItem`s of hook reads on the wire at once; more reads wait and share the next.
const READS_IN_FLIGHT: usize = 4;

/// DynamoDB refuses a whole request naming a key longer than this (bytes) or an empty one: no hook has such an id.
const MAX_KEY: usize = 2048;

/// Hook reads go out as `BatchGetItem`: a lone read at once, and the reads that come while one is on the wire
/// share the next. The hook cache reads a process's hooks ahead together ([`crate::hook_cache`]), and a burst of
/// requests to made-up ids (never cached) costs a request per hundred. An id that cannot be a key is answered as
/// no hook without a read, so it cannot fail the others' request.
pub(super) fn hook_reads(client: aws_sdk_dynamodb::Client, table: String) -> HookReads {
    GroupCommit::start(READS, READS_IN_FLIGHT, Linger::WhileBusy(Duration::from_millis(5)), move |ids: Vec<HookId>| {
        let (client, table) = (client.clone(), table.clone());
        async move {
            let keys: Vec<HookId> =
                ids.iter().filter(|id| !id.as_str().is_empty() && id.as_str().len() <= MAX_KEY).cloned().collect();
            let found = if keys.is_empty() { Ok(HashMap::new()) } else { read_hooks(&client, &table, &keys).await };
            match found {
                Ok(found) => ids.iter().map(|id| found.get(id.as_str()).cloned().transpose()).collect(),
                Err(e) => vec![Err(e); ids.len()],
            }
        }
    })
}

/// The hooks of `ids` that exist, by id (each read once, consistently); an item that does not parse is that
/// hook's error only.
async fn read_hooks(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    ids: &[HookId],
) -> Result<HashMap<String, Result<Webhook>>> {
    let mut keys: Vec<HashMap<String, AttributeValue>> = Vec::with_capacity(ids.len());
    for id in ids {
        // DynamoDB refuses a batch that names one key twice.
        let key = HashMap::from([("id".to_owned(), s(id.as_str()))]);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    let request = KeysAndAttributes::builder()
        .set_keys(Some(keys))
        .consistent_read(true)
        .build()
        .map_err(|e| StorageError::Invalid(e.to_string()))?;
    let items = super::unprocessed::batch_get_table(client, "BatchGetItem webhooks", table, request).await?;
    let mut found = HashMap::new();
    for item in items {
        let id = Reader::new(&item, "webhooks").str("id")?;
        found.insert(id, hook(&item));
    }
    Ok(found)
}

impl AwsStore {
    /// An update of an existing hook; an unknown id is `NotFound`.
    async fn update_hook(&self, id: &HookId, update: &str, values: Vec<(&str, AttributeValue)>) -> Result<Item> {
        let mut req = self
            .clients
            .dynamodb
            .update_item()
            .table_name(&self.names.webhooks_table)
            .key("id", s(id.as_str()))
            .update_expression(update)
            .condition_expression("attribute_exists(#id)")
            .expression_attribute_names("#id", "id")
            .return_values(ReturnValue::AllNew);
        if update.contains("#active") {
            req = req.expression_attribute_names("#active", "active");
        }
        if update.contains("#filter") {
            req = req.expression_attribute_names("#filter", "filter");
        }
        if update.contains("#group_key") {
            req = req.expression_attribute_names("#group_key", "group_key");
        }
        for (k, v) in values {
            req = req.expression_attribute_values(k, v);
        }
        match req.send().await {
            Ok(out) => Ok(out.attributes.unwrap_or_default()),
            Err(SdkError::ServiceError(e)) => match e.into_err() {
                UpdateItemError::ConditionalCheckFailedException(_) => {
                    Err(StorageError::NotFound(format!("hook {id}")))
                }
                other => Err(unavailable("UpdateItem webhooks", other)),
            },
            Err(e) => Err(unavailable("UpdateItem webhooks", e)),
        }
    }
}

#[async_trait]
impl WebhookRegistry for AwsStore {
    async fn create(&self, h: &Webhook) -> Result<()> {
        let res = self
            .clients
            .dynamodb
            .put_item()
            .table_name(&self.names.webhooks_table)
            .set_item(Some(item(h)))
            .condition_expression("attribute_not_exists(#id)")
            .expression_attribute_names("#id", "id")
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) => match e.into_err() {
                PutItemError::ConditionalCheckFailedException(_) => {
                    Err(StorageError::Conflict(format!("hook {}", h.id)))
                }
                other => Err(unavailable("PutItem webhooks", other)),
            },
            Err(e) => Err(unavailable("PutItem webhooks", e)),
        }
    }

    async fn get(&self, id: &HookId) -> Result<Option<Webhook>> {
        self.hook_reads
            .submit(id.clone())
            .await
            .unwrap_or_else(|| Err(StorageError::unavailable("hook reader stopped")))
    }

    async fn get_many(&self, ids: &[HookId]) -> Vec<Result<Option<Webhook>>> {
        // Submitted together, so they share requests (100 a request).
        let answers = self.hook_reads.submit_all(ids.to_vec()).await;
        answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err(StorageError::unavailable("hook reader stopped"))))
            .collect()
    }

    async fn list(&self) -> Result<Vec<Webhook>> {
        let scan = self.clients.dynamodb.scan().table_name(&self.names.webhooks_table);
        let items = super::item::scan_all(scan, "Scan webhooks").await?;
        let mut out = items.iter().map(hook).collect::<Result<Vec<_>>>()?;
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.id.as_str().cmp(b.id.as_str())));
        Ok(out)
    }

    async fn set_active(&self, id: &HookId, active: bool) -> Result<Webhook> {
        hook(&self.update_hook(id, "SET #active = :a", vec![(":a", AttributeValue::Bool(active))]).await?)
    }

    async fn set_filter(&self, id: &HookId, filter: Option<&HookFilter>) -> Result<Webhook> {
        let item = match filter.filter(|f| !f.is_empty()) {
            Some(filter) => self.update_hook(id, "SET #filter = :f", vec![(":f", s(filter_json(filter)))]).await?,
            None => self.update_hook(id, "REMOVE #filter", Vec::new()).await?,
        };
        hook(&item)
    }

    async fn set_group_key(&self, id: &HookId, group_key: Option<&str>) -> Result<Webhook> {
        let item = match group_key {
            Some(key) => self.update_hook(id, "SET #group_key = :g", vec![(":g", s(key))]).await?,
            None => self.update_hook(id, "REMOVE #group_key", Vec::new()).await?,
        };
        hook(&item)
    }

    async fn set_per_delivery(&self, id: &HookId, per_delivery: bool) -> Result<Webhook> {
        let item = if per_delivery {
            self.update_hook(id, "SET per_delivery = :p", vec![(":p", AttributeValue::Bool(true))]).await?
        } else {
            self.update_hook(id, "REMOVE per_delivery", Vec::new()).await?
        };
        hook(&item)
    }

    async fn record_invocations(&self, id: &HookId, count: u64) -> Result<()> {
        self.update_hook(id, "ADD invocation_count :count", vec![(":count", n(count))]).await.map(|_| ())
    }

    /// The counts of up to 100 hooks in one `TransactWriteItems` (the counts are written every 30 s: twice the
    /// write units of plain updates is nothing, one request instead of one a hook is the point). All or nothing:
    /// when it fails (a hook deleted meanwhile, a conflict with another process's write), nothing was counted,
    /// and each is written alone instead. A transaction that committed but whose answer was lost (a timeout past
    /// the SDK's retries) is counted twice so: these are statistics, as a lost answer to an update was before.
    async fn record_many_invocations(&self, counts: &[(HookId, u64)]) -> Vec<Result<()>> {
        let mut results = Vec::with_capacity(counts.len());
        for chunk in counts.chunks(MAX_TRANSACTION) {
            if chunk.len() > 1 && self.count_together(chunk).await.is_ok() {
                results.extend(chunk.iter().map(|_| Ok(())));
                continue;
            }
            for (id, count) in chunk {
                results.push(self.record_invocations(id, *count).await);
            }
        }
        results
    }
}

/// DynamoDB's limit of items in one transaction.
const MAX_TRANSACTION: usize = 100;

impl AwsStore {
    async fn count_together(&self, counts: &[(HookId, u64)]) -> Result<()> {
        let updates = counts
            .iter()
            .map(|(id, count)| {
                let update = Update::builder()
                    .table_name(&self.names.webhooks_table)
                    .key("id", s(id.as_str()))
                    .update_expression("ADD invocation_count :count")
                    .condition_expression("attribute_exists(#id)")
                    .expression_attribute_names("#id", "id")
                    .expression_attribute_values(":count", n(*count))
                    .build()
                    .map_err(|e| StorageError::Invalid(e.to_string()))?;
                Ok(TransactWriteItem::builder().update(update).build())
            })
            .collect::<Result<Vec<_>>>()?;
        self.clients
            .dynamodb
            .transact_write_items()
            .set_transact_items(Some(updates))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| unavailable("TransactWriteItems webhooks", e))
    }
}
