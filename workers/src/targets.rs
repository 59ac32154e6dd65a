//! An event's chats: the channel a hook, an SNS topic, the default channel or a schedule names is a list of targets
//! joined by `+`: at most one Slack channel (`#ops`, `C0123ABCD`) and any Teams channels (`teams:oncall`), e.g.
//! `#ops+teams:oncall`.
//!
//! Each target is posted to once. With a Teams target, every target that succeeds writes a `sent` line in the
//! event's trail before the next is tried, and each run first reads the trail: a retry, a wait or a replay
//! after one target failed never repeats another. A Slack post alone keeps its own exactly-once check
//! ([`crate::slack::Poster`]).

use eventfleet_schema::Envelope;

use crate::digest::Line;
use crate::slack::SlackMessage;
use crate::wait::Ready;
use crate::{HandlerContext, HandlerError};

use crate::teams::PREFIX as TEAMS;

/// Where an event's messages go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Targets {
    /// The Slack channel, if any.
    pub slack: Option<String>,
    /// The Teams channels' names.
    pub teams: Vec<String>,
}

impl Targets {
    /// Parses `#ops`, `teams:oncall`, `#ops+teams:oncall+teams:platform`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut targets = Targets::default();
        for part in spec.split('+').map(str::trim).filter(|p| !p.is_empty()) {
            let teams = part.get(..TEAMS.len()).filter(|prefix| prefix.eq_ignore_ascii_case(TEAMS));
            if teams.is_some() {
                // Names are case-insensitive (their variable is upper case): one spelling for keys and trails.
                let name = part[TEAMS.len()..].to_ascii_lowercase();
                if !crate::teams::valid_name(&name) {
                    return Err(format!("{part:?}: a Teams channel is teams:<name> (letters, digits, - and _)"));
                }
                if !targets.teams.contains(&name) {
                    targets.teams.push(name);
                }
            } else if let Some(slack) = &targets.slack {
                return Err(format!("{spec:?} names two Slack channels ({slack} and {part}); one at most"));
            } else if part.contains(|c: char| c.is_whitespace() || c == ':') {
                return Err(format!("{part:?} is not a Slack channel (a Teams channel is teams:<name>)"));
            } else {
                targets.slack = Some(part.to_owned());
            }
        }
        if targets.slack.is_none() && targets.teams.is_empty() {
            return Err(format!("{spec:?} names no channel"));
        }
        Ok(targets)
    }

    /// The Slack channel, or the first Teams target (what a key per channel is named after).
    pub fn first(&self) -> String {
        self.slack.clone().unwrap_or_else(|| format!("{TEAMS}{}", self.teams[0]))
    }
}

/// The targets of a channel list, a bad one a permanent failure (a hook's channel is checked when it is made;
/// the files' and variables' at start-up).
pub fn targets(spec: &str) -> Result<Targets, HandlerError> {
    Targets::parse(spec).map_err(HandlerError::Permanent)
}

/// Posts the event's `message` to every target of its channel once: Slack through its pace and digests
/// ([`crate::digest::post_or_fold`]), Teams as a card. The outcome for the trail, or a wait.
pub async fn post(
    ctx: &HandlerContext,
    envelope: &Envelope,
    line: Line,
    message: &SlackMessage,
) -> Result<Ready<String>, HandlerError> {
    let targets = targets(&message.channel)?;
    if targets.teams.is_empty() {
        return crate::digest::post_or_fold(ctx, envelope, line, message).await;
    }
    let event = envelope.event_id();
    let sent = crate::sent::before(ctx, event).await?;
    let teams_line = line.clone();
    let mut said = Vec::new();
    if let Some(slack) = &targets.slack {
        match sent.iter().find(|(target, _)| target == slack) {
            Some((_, outcome)) => said.push(format!("{slack}: {outcome} (before)")),
            None => {
                let message = SlackMessage { channel: slack.clone(), ..message.clone() };
                let posted = ready!(crate::digest::post_or_fold(ctx, envelope, line, &message).await?);
                crate::sent::record(ctx, event, slack, &posted).await?;
                said.push(format!("{slack}: {posted}"));
            }
        }
    }
    said.push(ready!(teams_with(ctx, envelope, &targets.teams, message, &sent, Some(&teams_line)).await?));
    Ok(Ready::Now(said.join("; ")))
}

/// Posts `message` as a card to each of the Teams channels `teams` not posted to before (with `line`, what a
/// digest says of it, a card that finds the webhook at its limit folds into the channel's digest); the outcome,
/// or a wait.
pub async fn teams(
    ctx: &HandlerContext,
    envelope: &Envelope,
    teams: &[String],
    message: &SlackMessage,
    line: Option<Line>,
) -> Result<Ready<String>, HandlerError> {
    if teams.is_empty() {
        return Ok(Ready::Now(String::new()));
    }
    let sent = crate::sent::before(ctx, envelope.event_id()).await?;
    teams_with(ctx, envelope, teams, message, &sent, line.as_ref()).await
}

/// The Teams part: with `line` (what a digest says of the post) a card that finds the webhook at its limit is
/// folded into the Teams channel's digest ([`crate::digest::card_or_fold`]); without, it waits its turn.
async fn teams_with(
    ctx: &HandlerContext,
    envelope: &Envelope,
    teams: &[String],
    message: &SlackMessage,
    sent: &[(String, String)],
    line: Option<&Line>,
) -> Result<Ready<String>, HandlerError> {
    let event = envelope.event_id();
    let mut said = Vec::new();
    for name in teams {
        let target = format!("{TEAMS}{name}");
        if let Some((_, outcome)) = sent.iter().find(|(t, _)| t.eq_ignore_ascii_case(&target)) {
            said.push(format!("{target}: {outcome} (before)"));
            continue;
        }
        let outcome = match line {
            Some(line) => ready!(crate::digest::card_or_fold(ctx, envelope, line.clone(), name, message).await?),
            None => {
                let status = ready!(ctx.poster.post_to_teams(name, event, message, false).await?);
                format!("card posted ({})", status.as_u16())
            }
        };
        crate::sent::record(ctx, event, &target, &outcome).await?;
        said.push(format!("{target}: {outcome}"));
    }
    Ok(Ready::Now(said.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_list_names_one_slack_channel_and_any_teams_channels() {
        assert_eq!(Targets::parse("#ops").unwrap(), Targets { slack: Some("#ops".into()), teams: vec![] });
        assert_eq!(
            Targets::parse("#ops + teams:on-call+teams:platform").unwrap(),
            Targets { slack: Some("#ops".into()), teams: vec!["on-call".into(), "platform".into()] }
        );
        assert_eq!(Targets::parse("teams:ops").unwrap(), Targets { slack: None, teams: vec!["ops".into()] });
        assert_eq!(
            Targets::parse("Teams:OnCall+teams:oncall").unwrap(),
            Targets { slack: None, teams: vec!["oncall".into()] }
        );
        assert!(Targets::parse("team:ops").unwrap_err().contains("not a Slack channel"));
        assert!(Targets::parse("#a+#b").unwrap_err().contains("two Slack channels"));
        assert!(Targets::parse("teams:").unwrap_err().contains("teams:<name>"));
        assert!(Targets::parse("teams:a b").is_err());
        assert!(Targets::parse(" + ").unwrap_err().contains("names no channel"));
    }
}
