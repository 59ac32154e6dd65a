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

/// Reads the fleet's own metrics back (the console's rates): sums over a recent window.
#[derive(Debug, Clone)]
pub struct Reader {
    client: aws_sdk_cloudwatch::Client,
    namespace: String,
    fleet: String,
}

impl Reader {
    /// A reader of `namespace`, dimension `Fleet=fleet`.
    pub fn new(client: aws_sdk_cloudwatch::Client, namespace: &str, fleet: &str) -> Self {
        Self { client, namespace: namespace.to_owned(), fleet: fleet.to_owned() }
    }

    /// The sum of each metric over the `window` before `now` (one `GetMetricData`), in the order asked.
    pub async fn sums(
        &self,
        names: &[&str],
        now: std::time::SystemTime,
        window: std::time::Duration,
    ) -> Result<Vec<f64>, OpsError> {
        use aws_sdk_cloudwatch::primitives::DateTime;
        use aws_sdk_cloudwatch::types::{Metric, MetricDataQuery, MetricStat};
        let fleet = Dimension::builder().name("Fleet").value(&self.fleet).build();
        let period = i32::try_from(window.as_secs()).unwrap_or(i32::MAX).max(60);
        let mut request =
            (self.client.get_metric_data()).start_time(DateTime::from(now - window)).end_time(DateTime::from(now));
        for (i, name) in names.iter().enumerate() {
            let metric = Metric::builder().namespace(&self.namespace).metric_name(*name).dimensions(fleet.clone());
            let stat = MetricStat::builder().metric(metric.build()).period(period).stat("Sum").build();
            request =
                request.metric_data_queries(MetricDataQuery::builder().id(format!("m{i}")).metric_stat(stat).build());
        }
        let out = request.send().await.map_err(|e| OpsError::sdk("GetMetricData", e))?;
        let results = out.metric_data_results.unwrap_or_default();
        Ok((0..names.len())
            .map(|i| {
                let id = format!("m{i}");
                (results.iter())
                    .filter(|r| r.id.as_deref() == Some(id.as_str()))
                    .flat_map(|r| r.values.clone().unwrap_or_default())
                    .sum()
            })
            .collect())
    }
}
