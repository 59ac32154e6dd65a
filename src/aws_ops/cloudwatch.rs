//! Publishing the fleet's metrics to CloudWatch: one `PutMetricData` a period with every datum, each carrying
//! the dimension `Fleet` = the name prefix.

use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit, StatisticSet};

use super::OpsError;

/// The unit of a datum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A count.
    Count,
    /// Milliseconds.
    Milliseconds,
    /// Seconds.
    Seconds,
}

/// One value or a summary of many.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// A single value (a count over the period, a gauge).
    Single(f64),
    /// Samples summarised: count, sum, min, max.
    Summary {
        /// Samples.
        count: u64,
        /// Their sum.
        sum: f64,
        /// The smallest.
        min: f64,
        /// The largest.
        max: f64,
    },
}

/// One metric datum.
#[derive(Debug, Clone, PartialEq)]
pub struct Datum {
    /// Metric name (`EventsProcessed`, ...).
    pub name: &'static str,
    /// Its unit.
    pub unit: Unit,
    /// The value.
    pub value: Value,
}

/// Sends data to one namespace.
#[derive(Debug, Clone)]
pub struct Publisher {
    client: aws_sdk_cloudwatch::Client,
    namespace: String,
    fleet: String,
}

impl Publisher {
    /// A publisher into `namespace` tagging every datum with `Fleet=fleet`.
    pub fn new(client: aws_sdk_cloudwatch::Client, namespace: &str, fleet: &str) -> Self {
        Self { client, namespace: namespace.to_owned(), fleet: fleet.to_owned() }
    }

    /// Publishes `data` (summaries with no samples are left out), 1000 data per request.
    pub async fn put(&self, data: &[Datum]) -> Result<(), OpsError> {
        let fleet = Dimension::builder().name("Fleet").value(&self.fleet).build();
        let data: Vec<MetricDatum> = data
            .iter()
            .filter(|d| !matches!(d.value, Value::Summary { count: 0, .. }))
            .map(|d| {
                let unit = match d.unit {
                    Unit::Count => StandardUnit::Count,
                    Unit::Milliseconds => StandardUnit::Milliseconds,
                    Unit::Seconds => StandardUnit::Seconds,
                };
                let b = MetricDatum::builder().metric_name(d.name).unit(unit).dimensions(fleet.clone());
                match d.value {
                    Value::Single(v) => b.value(v),
                    Value::Summary { count, sum, min, max } => b.statistic_values(
                        StatisticSet::builder().sample_count(count as f64).sum(sum).minimum(min).maximum(max).build(),
                    ),
                }
                .build()
            })
            .collect();
        for chunk in data.chunks(1000) {
            self.client
                .put_metric_data()
                .namespace(&self.namespace)
                .set_metric_data(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| OpsError::sdk("PutMetricData", e))?;
        }
        Ok(())
    }
}
