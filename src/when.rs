//! Times as operators type them, for the DLQ filters of the CLI and the console.

use std::time::Duration;

use eventfleet_schema::Timestamp;

/// A time that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a time: expected RFC 3339, Unix seconds, or an age such as 90s, 30m, 2h, 7d")]
pub struct BadTime(String);

/// RFC 3339, Unix seconds, or an age (`90s`, `30m`, `2h`, `7d`) before now.
pub fn parse(text: &str, now: Timestamp) -> Result<Timestamp, BadTime> {
    let text = text.trim();
    let unit = text.chars().last().unwrap_or(' ');
    let secs = match unit {
        's' => Some(1),
        'm' => Some(60),
        'h' => Some(3600),
        'd' => Some(86_400),
        _ => None,
    };
    if let Some(secs) = secs
        && text.len() > 1
        && let Ok(n) = text[..text.len() - 1].parse::<u64>()
    {
        return Ok(now.minus(Duration::from_secs(n.saturating_mul(secs))));
    }
    Timestamp::parse(text).map_err(|_| BadTime(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_instants_and_refusals() {
        let now = Timestamp::from_millis(1_700_000_000_000);
        assert_eq!(parse("90s", now).unwrap(), Timestamp::from_millis(1_699_999_910_000));
        assert_eq!(parse("2h", now).unwrap(), Timestamp::from_millis(1_699_992_800_000));
        assert_eq!(parse("2023-11-14T22:13:20Z", now).unwrap(), now);
        assert!(parse("yesterday", now).is_err());
        assert!(parse("s", now).is_err());
    }
}
