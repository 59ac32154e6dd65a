//! [`AlarmSettings`]: how CloudWatch alarms thread and flap in Slack (the SNS routing carries them to the alarm
//! handler, [`super::alarm`]; a storm is a burst like any other, [`crate::digest`]).

use std::time::Duration;

/// How alarms thread and flap.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmSettings {
    /// An alarm OK for longer than this starts a new thread on its next ALARM (`EVENTFLEET_ALARM_REOPEN_AFTER_S`).
    pub reopen_after: Duration,
    /// Replies in a run of quick state changes before the rest collapse into a count; 0: never
    /// (`EVENTFLEET_ALARM_FLAP_REPLIES`).
    pub flap_replies: u32,
    /// State changes within this of each other make a run (`EVENTFLEET_ALARM_FLAP_WINDOW_S`).
    pub flap_window: Duration,
}

impl Default for AlarmSettings {
    fn default() -> Self {
        Self { reopen_after: Duration::from_secs(3600), flap_replies: 3, flap_window: Duration::from_secs(600) }
    }
}
