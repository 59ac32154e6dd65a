//! A hook's filter of GitHub deliveries ([`HookFilter`]): rules `event[.action][=outcome|outcome…]`.
//!
//! - `workflow_run=failure|cancelled|timed_out`: runs that ended badly (a requested or running run has a status
//!   for its outcome, so it does not match);
//! - `deployment_status=failure|error`; `pull_request.opened`; `push`; `*` (every event).
//!
//! A delivery is posted when it matches one of `only` (or `only` is empty) and none of `skip`.

use eventfleet_schema::HookFilter;

/// A rule that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "filter rule {rule:?}: {reason} (expected event[.action][=outcome|outcome...], e.g. workflow_run=failure|cancelled)"
)]
pub struct RuleError {
    rule: String,
    reason: &'static str,
}

/// A parsed rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    event: String,
    action: Option<String>,
    outcomes: Vec<String>,
}

fn word(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl Rule {
    /// Parses `event[.action][=outcome|outcome…]`.
    pub fn parse(rule: &str) -> Result<Self, RuleError> {
        let err = |reason| RuleError { rule: rule.to_owned(), reason };
        let (head, outcomes) = match rule.trim().split_once('=') {
            Some((head, outcomes)) => (head, outcomes.split('|').map(str::trim).map(str::to_owned).collect()),
            None => (rule.trim(), Vec::new()),
        };
        let (event, action) = match head.split_once('.') {
            Some((event, action)) => (event, Some(action.to_owned())),
            None => (head, None),
        };
        if event != "*" && !word(event) {
            return Err(err("the event is not a GitHub event name (lower case, digits, `_`) or `*`"));
        }
        if action.as_deref().is_some_and(|a| !word(a)) {
            return Err(err("the action is not a GitHub action name"));
        }
        if outcomes.iter().any(|o: &String| !word(o)) {
            return Err(err("an outcome is empty or not a conclusion or state name"));
        }
        Ok(Self { event: event.to_owned(), action, outcomes })
    }

    /// Whether a delivery matches.
    pub fn matches(&self, event: &str, action: Option<&str>, outcome: Option<&str>) -> bool {
        (self.event == "*" || self.event == event)
            && self.action.as_deref().is_none_or(|a| Some(a) == action)
            && (self.outcomes.is_empty() || outcome.is_some_and(|o| self.outcomes.iter().any(|w| w == o)))
    }
}

/// Checks every rule of a filter.
pub fn validate(filter: &HookFilter) -> Result<(), RuleError> {
    filter.only.iter().chain(&filter.skip).try_for_each(|r| Rule::parse(r).map(|_| ()))
}

/// What a filter says of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Post it.
    Post,
    /// Do not: the rule that decided (`skip <rule>`, or `only <rules>` when none of them matched).
    Filtered(String),
}

/// The filter's decision on a delivery. A rule stored by an older build that no longer parses matches nothing
/// (so a broken `only` filters, a broken `skip` does not).
pub fn decide(filter: &HookFilter, event: &str, action: Option<&str>, outcome: Option<&str>) -> Decision {
    let matches = |rule: &String| Rule::parse(rule).is_ok_and(|r| r.matches(event, action, outcome));
    if let Some(rule) = filter.skip.iter().find(|r| matches(r)) {
        return Decision::Filtered(format!("skip {rule}"));
    }
    if !filter.only.is_empty() && !filter.only.iter().any(matches) {
        return Decision::Filtered(format!("only {}", filter.only.join(" or ")));
    }
    Decision::Post
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(only: &[&str], skip: &[&str]) -> HookFilter {
        HookFilter {
            only: only.iter().map(|s| (*s).to_owned()).collect(),
            skip: skip.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn failures_only() {
        let f = filter(&["workflow_run=failure|cancelled|timed_out", "deployment_status=failure|error"], &[]);
        assert_eq!(decide(&f, "workflow_run", Some("completed"), Some("failure")), Decision::Post);
        assert_eq!(decide(&f, "deployment_status", Some("created"), Some("error")), Decision::Post);
        let Decision::Filtered(rule) = decide(&f, "workflow_run", Some("completed"), Some("success")) else {
            panic!("a successful run is filtered")
        };
        assert!(rule.starts_with("only workflow_run=failure|cancelled|timed_out"), "{rule}");
        assert!(matches!(decide(&f, "workflow_run", Some("requested"), Some("queued")), Decision::Filtered(_)));
        assert!(matches!(decide(&f, "push", None, None), Decision::Filtered(_)));
    }

    #[test]
    fn skip_names_its_rule_and_actions_match() {
        let f = filter(&[], &["pull_request.synchronize", "*=skipped"]);
        assert_eq!(
            decide(&f, "pull_request", Some("synchronize"), None),
            Decision::Filtered("skip pull_request.synchronize".into())
        );
        assert_eq!(decide(&f, "pull_request", Some("opened"), None), Decision::Post);
        assert_eq!(
            decide(&f, "check_run", Some("completed"), Some("skipped")),
            Decision::Filtered("skip *=skipped".into())
        );
        assert_eq!(decide(&HookFilter::default(), "push", None, None), Decision::Post);
    }

    #[test]
    fn bad_rules_are_refused_with_the_syntax() {
        for bad in ["", "Workflow_Run", "push.", "workflow_run=", "workflow_run=failure|", "a b", "x=y z"] {
            let err = Rule::parse(bad).unwrap_err().to_string();
            assert!(err.contains("event[.action]"), "{bad}: {err}");
        }
        assert!(validate(&filter(&["push", "workflow_run=failure"], &["*"])).is_ok());
        assert!(validate(&filter(&["push"], &["NOPE"])).is_err());
    }
}
