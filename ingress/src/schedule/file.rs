//! The schedules file (`EVENTFLEET_SCHEDULES_FILE`): TOML, validated whole at start-up so that a typo stops the
//! process with the entry's name instead of a schedule that silently never fires.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use eventfleet_schema::Kind;
use serde::Deserialize;

/// Why a schedules file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleFileError {
    /// The file could not be read.
    #[error("read the schedules file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML of the expected shape (the message names the line and the field).
    #[error("the schedules file {path} is not valid: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// One entry is wrong.
    #[error("schedule {entry} in {path}: {reason}")]
    Entry {
        /// The file.
        path: PathBuf,
        /// The entry's name, quoted, or `#N` (from 1) when it has none.
        entry: String,
        /// What is wrong.
        reason: String,
    },
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    schedule: Vec<RawSchedule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    name: String,
    cron: String,
    timezone: Option<String>,
    channel: Option<String>,
    text: Option<String>,
    kind: Option<String>,
    payload: Option<toml::Table>,
    #[serde(default)]
    catch_up: CatchUp,
}

/// What a schedule does after downtime: the ticks no process was running for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Nothing: the next tick is the next one after start-up.
    #[default]
    Skip,
    /// One event for all the missed ticks, saying how many.
    Once,
}

/// What a tick does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// The built-in handler posts `text` to `channel`.
    Post {
        /// The channel.
        channel: String,
        /// The message.
        text: String,
    },
    /// An event of `kind` for the handler registry (or a route), with `payload` in its body.
    Emit {
        /// `schedule.<name>` unless the entry names another `schedule.` kind.
        kind: String,
        /// The entry's `payload` table as JSON (`null` without one).
        payload: serde_json::Value,
    },
}

/// One validated schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Unique in the file; part of every tick's key, kind and message group.
    pub name: String,
    /// The expression as written.
    pub expression: String,
    /// The parsed expression.
    pub cron: Cron,
    /// Where the expression is evaluated.
    pub timezone: chrono_tz::Tz,
    /// What a tick does.
    pub action: Action,
    /// What happens to ticks missed while no process ran.
    pub catch_up: CatchUp,
}

impl Schedule {
    /// The first tick strictly after `after`, in UTC; `None` when the expression has no later time.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.timezone);
        self.cron.find_next_occurrence(&local, false).ok().map(|t| t.with_timezone(&Utc))
    }

    /// The ticks at or before `at`, newest first.
    pub fn ticks_back_from(&self, at: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        // Stepped with `find_previous_occurrence` rather than croner's `iter_before`, which (3.0.1) skips every
        // other tick of a per-second schedule. Ticks are whole seconds: `at`'s own second is included.
        let whole = DateTime::from_timestamp(at.timestamp(), 0).unwrap_or(at).with_timezone(&self.timezone);
        let first = self.cron.find_previous_occurrence(&whole, true).ok();
        std::iter::successors(first, |t| self.cron.find_previous_occurrence(t, false).ok())
            .map(|t| t.with_timezone(&Utc))
    }

    /// The kind of this schedule's ticks.
    pub fn kind(&self) -> Kind {
        match &self.action {
            Action::Post { .. } => Kind::new(format!("{}{}", Kind::SCHEDULE_PREFIX, self.name)),
            Action::Emit { kind, .. } => Kind::new(kind.clone()),
        }
    }
}

/// The schedules of one file, in file order.
#[derive(Debug, Clone, Default)]
pub struct Schedules {
    /// Where they were read from.
    pub path: Option<PathBuf>,
    /// The schedules.
    pub entries: Vec<Schedule>,
}

/// The longest schedule name: it appears in idempotency keys and message groups (SQS allows 128 characters).
const MAX_NAME: usize = 64;

impl Schedules {
    /// Reads and validates a schedules file.
    pub fn load(path: &Path) -> Result<Self, ScheduleFileError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ScheduleFileError::Read { path: path.to_owned(), source })?;
        Self::parse(path, &text)
    }

    /// Validates the text of a schedules file (`path` names it in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self, ScheduleFileError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            // `[schedule]` (one table) for `[[schedule]]` (an entry of the array) is the usual slip; serde's
            // "expected a sequence" does not say so.
            let message = match toml::from_str::<toml::Table>(text) {
                Ok(t) if t.get("schedule").is_some_and(toml::Value::is_table) => {
                    "`[schedule]` declares a single table; each schedule is an entry of an array: write `[[schedule]]`"
                        .to_owned()
                }
                _ => e.to_string().trim().to_owned(),
            };
            ScheduleFileError::Syntax { path: path.to_owned(), message }
        })?;
        let mut seen = BTreeSet::new();
        let mut entries = Vec::with_capacity(raw.schedule.len());
        for (index, entry) in raw.schedule.into_iter().enumerate() {
            let label = if entry.name.is_empty() { format!("#{}", index + 1) } else { format!("{:?}", entry.name) };
            let fail =
                |reason: String| ScheduleFileError::Entry { path: path.to_owned(), entry: label.clone(), reason };
            if !seen.insert(entry.name.clone()) {
                return Err(fail("the name is used by an earlier schedule; names must be unique".into()));
            }
            entries.push(validate(entry).map_err(fail)?);
        }
        Ok(Self { path: Some(path.to_owned()), entries })
    }

    /// Whether there is nothing to run.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn validate(raw: RawSchedule) -> Result<Schedule, String> {
    let name_ok = raw.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if raw.name.is_empty() || raw.name.len() > MAX_NAME || !name_ok {
        return Err(format!("name must be 1 to {MAX_NAME} letters, digits, '-' or '_'"));
    }
    let fields = raw.cron.split_whitespace().count();
    let nickname = raw.cron.trim_start().starts_with('@');
    if !nickname && !(5..=6).contains(&fields) {
        return Err(format!(
            "cron {:?} has {fields} fields; it needs 5 (minute hour day month weekday) or 6 (seconds first)",
            raw.cron
        ));
    }
    let parser = CronParser::builder().seconds(Seconds::Optional).year(Year::Disallowed).build();
    let cron = parser.parse(&raw.cron).map_err(|e| match bad_field(&parser, &raw.cron) {
        Some(field) => format!("cron {:?} is not valid: its {field} field: {e}", raw.cron),
        None => format!("cron {:?} is not valid: {e}", raw.cron),
    })?;
    let timezone = match &raw.timezone {
        None => chrono_tz::UTC,
        Some(tz) => chrono_tz::Tz::from_str(tz)
            .map_err(|_| format!("timezone {tz:?} is not an IANA time zone name (like \"Europe/Paris\" or \"UTC\")"))?,
    };
    let action = match (raw.channel, raw.text, raw.kind, raw.payload) {
        (Some(_), _, Some(_), _) | (Some(_), _, _, Some(_)) => {
            return Err("a schedule either posts (channel and text) or emits (kind, payload), not both".into());
        }
        (Some(channel), Some(text), None, None) => {
            if channel.trim().is_empty() || text.trim().is_empty() {
                return Err("channel and text must not be empty".into());
            }
            Action::Post { channel, text }
        }
        (Some(_), None, _, _) => return Err("channel is set but text is missing".into()),
        (None, Some(_), _, _) => return Err("text is set but channel is missing".into()),
        (None, None, kind, payload) => {
            let kind = kind.unwrap_or_else(|| format!("{}{}", Kind::SCHEDULE_PREFIX, raw.name));
            let rest = kind.strip_prefix(Kind::SCHEDULE_PREFIX).unwrap_or_default();
            if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "kind {kind:?} must be \"{}\" followed by a name (sender kinds are the senders')",
                    Kind::SCHEDULE_PREFIX
                ));
            }
            let payload = match payload {
                Some(table) => serde_json::to_value(table).map_err(|e| format!("payload: {e}"))?,
                None => serde_json::Value::Null,
            };
            Action::Emit { kind, payload }
        }
    };
    let schedule = Schedule { name: raw.name, expression: raw.cron, cron, timezone, action, catch_up: raw.catch_up };
    if schedule.next_after(Utc::now()).is_none() {
        return Err(format!("cron {:?} never fires", schedule.expression));
    }
    Ok(schedule)
}

/// The field of a 5- or 6-field cron expression that makes it invalid: the first one whose replacement by `*`
/// makes it parse (croner's errors do not say which field they are about).
fn bad_field(parser: &CronParser, cron: &str) -> Option<&'static str> {
    const FIVE: [&str; 5] = ["minute", "hour", "day-of-month", "month", "day-of-week"];
    const SIX: [&str; 6] = ["second", "minute", "hour", "day-of-month", "month", "day-of-week"];
    let fields: Vec<&str> = cron.split_whitespace().collect();
    let names: &[&'static str] = match fields.len() {
        5 => &FIVE,
        6 => &SIX,
        _ => return None,
    };
    (0..fields.len()).find_map(|i| {
        let mut fixed = fields.clone();
        fixed[i] = "*";
        parser.parse(&fixed.join(" ")).is_ok().then_some(names[i])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Schedules, ScheduleFileError> {
        Schedules::parse(Path::new("schedules.toml"), text)
    }

    fn error(text: &str) -> String {
        parse(text).expect_err("refused").to_string()
    }

    #[test]
    fn the_documented_example_parses() {
        let s = parse(
            r##"
            [[schedule]]
            name = "heartbeat"
            cron = "*/5 * * * *"
            timezone = "America/Toronto"
            channel = "#sre-ops"
            text = "still alive"
            catch_up = "skip"

            [[schedule]]
            name = "oncall-sync"
            cron = "30 0 9 * * MON-FRI"
            kind = "schedule.oncall"
            payload = { rotation = "primary", teams = ["sre", "db"] }
            catch_up = "once"
            "##,
        )
        .unwrap();
        assert_eq!(s.entries.len(), 2);
        assert_eq!(s.entries[0].action, Action::Post { channel: "#sre-ops".into(), text: "still alive".into() });
        assert_eq!(s.entries[0].kind().as_str(), "schedule.heartbeat");
        assert_eq!(s.entries[0].timezone, chrono_tz::America::Toronto);
        assert_eq!(s.entries[1].kind().as_str(), "schedule.oncall");
        assert_eq!(s.entries[1].catch_up, CatchUp::Once);
        let Action::Emit { payload, .. } = &s.entries[1].action else { panic!("emits") };
        assert_eq!(payload["teams"][1], "db");
    }

    #[test]
    fn six_fields_put_seconds_first_and_ticks_follow_the_timezone() {
        let s = parse("[[schedule]]\nname = \"s\"\ncron = \"*/10 * * * * *\"\n").unwrap();
        let at: DateTime<Utc> = "2026-12-02T03:00:05Z".parse().unwrap();
        assert_eq!(s.entries[0].next_after(at).unwrap().to_rfc3339(), "2026-12-02T03:00:10+00:00");
        let back: Vec<_> = s.entries[0].ticks_back_from("2026-12-02T03:00:10Z".parse().unwrap()).take(2).collect();
        assert_eq!(back[0].to_rfc3339(), "2026-12-02T03:00:10+00:00");
        assert_eq!(back[1].to_rfc3339(), "2026-12-02T03:00:00+00:00");

        let daily =
            parse("[[schedule]]\nname = \"d\"\ncron = \"0 9 * * *\"\ntimezone = \"America/Toronto\"\n").unwrap();
        let next = daily.entries[0].next_after("2026-12-02T00:00:00Z".parse().unwrap()).unwrap();
        // 09:00 in Toronto in December is 14:00 UTC.
        assert_eq!(next.to_rfc3339(), "2026-12-02T14:00:00+00:00");
    }

    #[test]
    fn errors_name_the_entry() {
        let bad_cron = error("[[schedule]]\nname = \"nightly\"\ncron = \"61 * * * *\"\n");
        assert!(bad_cron.contains("schedule \"nightly\"") && bad_cron.contains("not valid"), "{bad_cron}");
        let fields = error("[[schedule]]\nname = \"x\"\ncron = \"* * * *\"\n");
        assert!(fields.contains("\"x\"") && fields.contains("4 fields"), "{fields}");
        let tz = error("[[schedule]]\nname = \"sweep\"\ncron = \"0 3 * * *\"\ntimezone = \"Mars/Olympus\"\n");
        assert!(tz.contains("\"sweep\"") && tz.contains("Mars/Olympus"), "{tz}");
        let dup = error(
            "[[schedule]]\nname = \"a\"\ncron = \"* * * * *\"\n[[schedule]]\nname = \"a\"\ncron = \"0 * * * *\"\n",
        );
        assert!(dup.contains("\"a\"") && dup.contains("unique"), "{dup}");
        let never = error("[[schedule]]\nname = \"feb30\"\ncron = \"0 0 30 2 *\"\n");
        assert!(never.contains("\"feb30\"") && never.contains("never fires"), "{never}");
    }

    #[test]
    fn shape_errors_are_refused() {
        assert!(error("[[schedule]]\nname = \"a\"\ncron = \"* * * * *\"\ncolour = \"red\"\n").contains("colour"));
        assert!(error("[[schedule]]\ncron = \"* * * * *\"\n").contains("name"));
        assert!(error("[[schedule]]\nname = \"a b\"\ncron = \"* * * * *\"\n").contains("letters"));
        assert!(error("[[schedule]]\nname = \"a\"\ncron = \"* * * * *\"\nchannel = \"#c\"\n").contains("text"));
        assert!(error("[[schedule]]\nname = \"a\"\ncron = \"* * * * *\"\ntext = \"t\"\n").contains("channel"));
        let both = error(
            "[[schedule]]\nname = \"a\"\ncron = \"* * * * *\"\nchannel = \"#c\"\ntext = \"t\"\nkind = \"schedule.a\"\n",
        );
        assert!(both.contains("not both"), "{both}");
        let kind = error("[[schedule]]\nname = \"a\"\ncron = \"* * * * *\"\nkind = \"github.push\"\n");
        assert!(kind.contains("schedule."), "{kind}");
        assert!(error("[[schedule]]\nname = \"a\"\ncron = \"* * * * *\"\ncatch_up = \"all\"\n").contains("catch_up"));
        assert!(error("[[schedule]\n").contains("not valid"));
        let single = error("[schedule]\nname = \"a\"\ncron = \"* * * * *\"\n");
        assert!(single.contains("write `[[schedule]]`"), "{single}");
    }

    #[test]
    fn a_bad_cron_names_its_field() {
        let hour = error("[[schedule]]\nname = \"a\"\ncron = \"0 61 * * *\"\nkind = \"schedule.a\"\n");
        assert!(hour.contains("its hour field"), "{hour}");
        let weekday = error("[[schedule]]\nname = \"a\"\ncron = \"0 0 9 * * MOX\"\nkind = \"schedule.a\"\n");
        assert!(weekday.contains("its day-of-week field"), "{weekday}");
    }

    #[test]
    fn walking_back_visits_every_tick() {
        let s = parse("[[schedule]]\nname = \"s\"\ncron = \"* * * * * *\"\n").unwrap();
        let at: DateTime<Utc> = "2026-12-02T03:21:48.500Z".parse().unwrap();
        let back: Vec<i64> = s.entries[0].ticks_back_from(at).take(5).map(|t| t.timestamp()).collect();
        let top = at.timestamp();
        assert_eq!(back, vec![top, top - 1, top - 2, top - 3, top - 4]);
    }

    #[test]
    fn an_empty_file_has_no_schedules() {
        assert!(parse("").unwrap().is_empty());
    }
}
