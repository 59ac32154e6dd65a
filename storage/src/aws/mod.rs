//! The aws backend: the queue on SQS FIFO (with a FIFO DLQ) and the four tables on DynamoDB. SNS and
//! CloudWatch publishing are not storage: the binary's `aws_ops` does them with this backend's clients.
//!
//! - [`names`]: every queue, table, index and attribute name, derived from one prefix. `eventfleet tables
//!   describe --json` prints them and Terraform is checked against that output.
//! - [`protocol`]: the [`crate::Protocol`] steps in the fewest requests (see its docs for which).
//! - [`sqs`]: the [`crate::Queue`] and [`crate::DeadLetters`] ports. Batches where the API allows.
//! - [`idempotency`], [`audit`], [`retries`], [`webhooks`]: the table ports; conditional idempotency writes
//!   answer with the item that refused them (`ReturnValuesOnConditionCheckFailure=ALL_OLD`) instead of a second
//!   read; audit lines are group-committed into `BatchWriteItem`.
//! - [`provision`]: `tables create` for an emulator or a sandbox account (production uses Terraform).
//! - [`RequestCounter`]: an SDK interceptor that reports every request by service and operation.
//!
//! Items carry the same fields as the embedded tables' columns (timestamps as epoch milliseconds) plus `ttl`
//! in epoch seconds for DynamoDB TTL. DynamoDB deletes expired items lazily (within days), so every read
//! filters on `expires_at` itself.

mod alarm_threads;
mod audit;
mod batch;
mod event_log;
mod idempotency;
mod item;
pub mod names;
mod protocol;
pub mod provision;
mod retries;
mod sqs;
mod unprocessed;
mod webhooks;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

pub use names::Names;

use crate::{Clock, StorageError, Store, SystemClock};

/// Called once per HTTP request an SDK client sends (retries included), with the service, the operation and the
/// resources the request names (see [`resources_named`]).
pub type RequestObserver = Arc<dyn Fn(&str, &str, &str) + Send + Sync>;

/// An SDK interceptor counting requests: how the "AWS requests per event" figure is measured, and what the
/// `eventfleet_aws_requests_total` metric counts.
#[derive(Clone)]
pub struct RequestCounter(RequestObserver);

impl RequestCounter {
    /// A counter reporting to `observer`.
    pub fn new(observer: RequestObserver) -> Self {
        Self(observer)
    }
}

impl fmt::Debug for RequestCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RequestCounter")
    }
}

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "EventfleetRequestCounter"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(meta) = cfg.load::<Metadata>() {
            let resources = context.request().body().bytes().map(resources_named).unwrap_or_default();
            (self.0)(meta.service(), meta.name(), &resources);
        }
        Ok(())
    }
}

/// The tables, queues and topics a request's body names, sorted and joined with `+` (empty when it names none):
/// DynamoDB's `TableName`, the tables of `RequestItems` or of a transaction's `TransactItems`, SQS's `QueueUrl` (its
/// last segment) or `QueueName`
/// (JSON bodies), SNS's `TopicArn` (its last segment; form bodies). What the per-resource request counts and the
/// check of the task roles' permissions read.
pub fn resources_named(body: &[u8]) -> String {
    let mut names = std::collections::BTreeSet::new();
    if let Ok(serde_json::Value::Object(json)) = serde_json::from_slice::<serde_json::Value>(body) {
        for key in ["TableName", "QueueName"] {
            if let Some(name) = json.get(key).and_then(|v| v.as_str()) {
                names.insert(name.to_owned());
            }
        }
        if let Some(url) = json.get("QueueUrl").and_then(|v| v.as_str()) {
            names.insert(url.rsplit('/').next().unwrap_or(url).to_owned());
        }
        if let Some(tables) = json.get("RequestItems").and_then(|v| v.as_object()) {
            names.extend(tables.keys().cloned());
        }
        // A transaction names a table in each of its items (`{"Update": {"TableName": …}}`).
        for item in json.get("TransactItems").and_then(|v| v.as_array()).into_iter().flatten() {
            let tables = item.as_object().into_iter().flat_map(|kinds| kinds.values());
            names.extend(tables.filter_map(|op| op.get("TableName").and_then(|v| v.as_str()).map(str::to_owned)));
        }
    } else if let Ok(text) = std::str::from_utf8(body) {
        for pair in text.split('&') {
            if let Some(arn) = pair.strip_prefix("TopicArn=") {
                let arn = arn.replace("%3A", ":").replace("%3a", ":");
                names.insert(arn.rsplit(':').next().unwrap_or(&arn).to_owned());
            }
        }
    }
    names.into_iter().collect::<Vec<_>>().join("+")
}

/// Settings of the aws backend.
#[derive(Clone)]
pub struct AwsOptions {
    /// Queue, table and topic names.
    pub names: Names,
    /// Receives after which SQS moves a message to the DLQ (the queue's redrive policy; reported, not set).
    pub max_receive_count: u32,
    /// Audit entries expire after this long.
    pub audit_ttl: Duration,
    /// Where "now" comes from (expiry filters, leases).
    pub clock: Arc<dyn Clock>,
    /// Counts every SDK request, when set.
    pub request_observer: Option<RequestObserver>,
    /// How long a DLQ listing hides the messages it reads (they are released when it is done).
    pub dlq_peek_visibility: Duration,
    /// `SendMessageBatch` requests that concurrent accepts share at once; accepts arriving while all are in
    /// flight join the next, larger batch.
    pub send_batches_in_flight: usize,
    /// The most a send batch waits to fill while another is on the wire: it waits about as long as the recent
    /// sends took, up to this (a lone accept's message never waits).
    pub send_linger: Duration,
    /// How long the event log keeps a done event (`None`: no event log).
    pub retention: Option<Duration>,
}

impl fmt::Debug for AwsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsOptions").field("names", &self.names).finish_non_exhaustive()
    }
}

impl AwsOptions {
    /// Defaults for `names`.
    pub fn new(names: Names) -> Self {
        Self {
            names,
            max_receive_count: crate::queue::DEFAULT_MAX_RECEIVE_COUNT,
            audit_ttl: Duration::from_secs(90 * 24 * 3600),
            clock: Arc::new(SystemClock),
            request_observer: None,
            dlq_peek_visibility: Duration::from_secs(30),
            send_batches_in_flight: 4,
            send_linger: sqs::SEND_LINGER,
            retention: Some(crate::event_log::DEFAULT_RETENTION),
        }
    }
}

/// The SDK clients, built once from one [`SdkConfig`] with the request counter attached.
#[derive(Debug, Clone)]
pub struct Clients {
    /// SQS.
    pub sqs: aws_sdk_sqs::Client,
    /// DynamoDB.
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// SNS.
    pub sns: aws_sdk_sns::Client,
    /// CloudWatch.
    pub cloudwatch: aws_sdk_cloudwatch::Client,
}

impl Clients {
    /// Clients for `sdk` (its endpoint URL, region and credentials), counting requests when asked.
    pub fn new(sdk: &SdkConfig, observer: Option<RequestObserver>) -> Self {
        let counter = observer.map(RequestCounter::new);
        macro_rules! client {
            ($krate:ident) => {{
                let mut b = $krate::config::Builder::from(sdk);
                if let Some(c) = &counter {
                    b = b.interceptor(c.clone());
                }
                $krate::Client::from_conf(b.build())
            }};
        }
        Self {
            sqs: client!(aws_sdk_sqs),
            dynamodb: client!(aws_sdk_dynamodb),
            sns: client!(aws_sdk_sns),
            cloudwatch: client!(aws_sdk_cloudwatch),
        }
    }
}

/// The aws backend's shared state: clients, resolved queue URLs, names.
pub struct AwsStore {
    clients: Clients,
    names: Names,
    queue_url: String,
    dlq_url: String,
    options: AwsOptions,
    in_flight: sqs::InFlight,
    puts: audit::Puts,
    deletes: sqs::DeleteBatcher,
    dlq_deletes: sqs::DeleteBatcher,
    sends: sqs::SendBatcher,
    /// Accepts claiming their keys: the send batcher waits for them (`batch::Linger::WhileBusyOrComing`).
    claiming: Arc<batch::Coming>,
    hook_reads: webhooks::HookReads,
    /// The oldest message's age as CloudWatch last gave it, and when it was read: its datapoints are a minute
    /// apart, so asking more often than once a minute learns nothing.
    oldest_age: std::sync::Mutex<Option<(std::time::Instant, Option<u64>)>>,
}

impl fmt::Debug for AwsStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsStore").field("names", &self.names).finish_non_exhaustive()
    }
}

impl AwsStore {
    /// Connects: builds the clients and resolves the queue URLs (one `GetQueueUrl` each unless configured).
    /// The queues and tables must exist (Terraform, or `eventfleet tables create`).
    pub async fn connect(sdk: &SdkConfig, options: AwsOptions) -> Result<Arc<Self>, StorageError> {
        let clients = Clients::new(sdk, options.request_observer.clone());
        let names = options.names.clone();
        let queue_url = match &names.queue_url {
            Some(url) => url.clone(),
            None => sqs::queue_url(&clients.sqs, &names.queue).await?,
        };
        let dlq_url = match &names.dlq_url {
            Some(url) => url.clone(),
            None => sqs::queue_url(&clients.sqs, &names.dlq).await?,
        };
        let puts = audit::puts(clients.dynamodb.clone(), Some(names.events_table.clone()));
        let deletes = sqs::delete_batcher(clients.sqs.clone(), queue_url.clone());
        let dlq_deletes = sqs::delete_batcher(clients.sqs.clone(), dlq_url.clone());
        let claiming = Arc::new(batch::Coming::default());
        let sends = sqs::send_batcher(
            clients.sqs.clone(),
            queue_url.clone(),
            options.send_batches_in_flight.max(1),
            options.send_linger,
            claiming.clone(),
        );
        let hook_reads = webhooks::hook_reads(clients.dynamodb.clone(), names.webhooks_table.clone());
        Ok(Arc::new(Self {
            clients,
            names,
            queue_url,
            dlq_url,
            options,
            in_flight: sqs::InFlight::default(),
            puts,
            deletes,
            dlq_deletes,
            sends,
            claiming,
            hook_reads,
            oldest_age: std::sync::Mutex::new(None),
        }))
    }

    /// The clients (for SNS and CloudWatch users beside the ports).
    pub fn clients(&self) -> &Clients {
        &self.clients
    }

    /// The names in use.
    pub fn names(&self) -> &Names {
        &self.names
    }

    fn now(&self) -> eventfleet_schema::Timestamp {
        self.options.clock.now()
    }

    /// Bundles the ports.
    pub fn into_store(self: Arc<Self>) -> Store {
        let clock = self.options.clock.clone();
        Store::of(self, clock, "aws")
    }
}

/// An SDK error as the source of an unavailable store; the message carries its whole chain (the service's error
/// code and text), which the SDK error's own `Display` does not.
fn unavailable<E: std::error::Error + Send + Sync + 'static>(op: &str, e: E) -> StorageError {
    let message = format!("{op}: {}", aws_smithy_types::error::display::DisplayErrorContext(&e));
    StorageError::Unavailable { message, source: Some(std::sync::Arc::new(e)) }
}

#[cfg(test)]
mod request_counter_tests {
    use super::resources_named;

    #[test]
    fn the_resources_a_request_names_are_read_from_its_body() {
        assert_eq!(resources_named(br#"{"TableName":"fleet-idempotency","Key":{}}"#), "fleet-idempotency");
        assert_eq!(
            resources_named(br#"{"RequestItems":{"fleet-retries":{},"fleet-idempotency":{}}}"#),
            "fleet-idempotency+fleet-retries"
        );
        assert_eq!(
            resources_named(br#"{"QueueUrl":"http://127.0.0.1:5000/123456789012/fleet-events.fifo"}"#),
            "fleet-events.fifo"
        );
        assert_eq!(resources_named(br#"{"QueueName":"fleet-events-dlq.fifo"}"#), "fleet-events-dlq.fifo");
        assert_eq!(
            resources_named(
                br#"{"TransactItems":[{"Update":{"TableName":"fleet-webhooks"}},{"Update":{"TableName":"fleet-webhooks"}}]}"#
            ),
            "fleet-webhooks"
        );
        assert_eq!(
            resources_named(
                b"Action=Publish&TopicArn=arn%3Aaws%3Asns%3Aus-east-1%3A123456789012%3Afleet-ops&Message=x"
            ),
            "fleet-ops"
        );
        assert_eq!(resources_named(b"Action=PutMetricData&Namespace=Eventfleet"), "");
        assert_eq!(resources_named(&[0xbf, 0x01, 0xff]), "");
    }
}
