//! Wall-clock instants as stored in every table.

use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An instant, in whole milliseconds since the Unix epoch.
///
/// Stored as an integer (cheap to compare and index in SQLite and DynamoDB) and written in JSON as an RFC 3339
/// string so that operators can read it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The instant `millis` milliseconds after the Unix epoch.
    pub const fn from_millis(millis: i64) -> Self {
        Self(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// Whole seconds since the Unix epoch (the unit of DynamoDB TTL attributes).
    pub const fn as_secs(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// The current system time. Code that must be testable takes a clock instead of calling this.
    pub fn now_system() -> Self {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Self(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
    }

    /// This instant plus `d`, saturating.
    pub fn plus(self, d: Duration) -> Self {
        Self(self.0.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
    }

    /// This instant minus `d`, saturating.
    pub fn minus(self, d: Duration) -> Self {
        Self(self.0.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
    }

    /// The time from `earlier` to `self`, zero when `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }

    /// Parses RFC 3339 (`2026-03-06T19:53:21.424Z`) or whole Unix seconds (`1772826801`).
    pub fn parse(text: &str) -> Result<Self, crate::time::ParseTimestampError> {
        let text = text.trim();
        if let Ok(secs) = text.parse::<i64>() {
            return secs.checked_mul(1000).map(Self).ok_or_else(|| ParseTimestampError(text.to_owned()));
        }
        text.parse::<jiff::Timestamp>()
            .map(|ts| Self(ts.as_millisecond()))
            .map_err(|_| ParseTimestampError(text.to_owned()))
    }
}

/// How long an HTTP `Retry-After` value asks to wait at `now`: delay-seconds (`120`) or an HTTP-date (`Wed, 21
/// Oct 2015 07:28:00 GMT`, a wait until then; a date already past is no wait). `None` when it is neither. The
/// one parser for every caller: Slack's answers, HTTP destinations', Socket Mode's `apps.connections.open`.
pub fn retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    Some(Timestamp(at.as_millisecond()).since(now))
}

/// A timestamp that is neither RFC 3339 nor whole Unix seconds.
#[derive(Debug, thiserror::Error)]
#[error("not an RFC 3339 time or Unix seconds: {0:?}")]
pub struct ParseTimestampError(String);

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match jiff::Timestamp::from_millisecond(self.0) {
            Ok(ts) => write!(f, "{ts:.3}"),
            Err(_) => write!(f, "{}ms", self.0),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Timestamp::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Timestamp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timestamp".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "format": "date-time",
            "description": "RFC 3339 instant with millisecond precision"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        let now = Timestamp::parse("2015-10-21T07:27:00Z").unwrap();
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now), Some(Duration::from_secs(60)));
        assert_eq!(retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now), Some(Duration::ZERO), "past: no wait");
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-5", now), None);
    }

    #[test]
    fn round_trips_through_rfc3339() {
        let ts = Timestamp::parse("2026-03-06T19:53:21.424Z").unwrap();
        assert_eq!(ts.as_millis(), 1_772_826_801_424);
        assert_eq!(ts.to_string(), "2026-03-06T19:53:21.424Z");
        let json = serde_json::to_string(&ts).unwrap();
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), ts);
    }

    #[test]
    fn parses_unix_seconds_and_rejects_garbage() {
        assert_eq!(Timestamp::parse("1772826801").unwrap().as_millis(), 1_772_826_801_000);
        assert!(Timestamp::parse("yesterday").is_err());
        assert!(Timestamp::parse("99999999999999999999").is_err());
    }
}
