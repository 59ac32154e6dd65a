//! The `webhooks` table: the registry of incoming webhook URLs.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{HookId, Timestamp};

/// How a hook's messages are presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HookKind {
    /// Alerts: highlighted.
    Alert,
    /// Informational.
    Info,
}

impl HookKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::Alert => "alert",
            HookKind::Info => "info",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "alert" => Some(Self::Alert),
            "info" => Some(Self::Info),
            _ => None,
        }
    }
}

/// A row of the `webhooks` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Webhook {
    /// The id in `POST /hooks/{id}`.
    pub id: HookId,
    /// A human name.
    pub name: String,
    /// The Slack channel its events go to.
    pub channel: String,
    /// Alert or info.
    pub kind: HookKind,
    /// Disabled hooks answer 404.
    pub active: bool,
    /// HMAC secret for `X-Hub-Signature-256`, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Accepted invocations.
    pub invocation_count: u64,
    /// What of its GitHub deliveries it posts; `None` posts every delivery. A filtered delivery is still
    /// accepted, deduplicated and audited (`filtered`), only not posted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<HookFilter>,
    /// A JSON pointer (`/service`) into its generic JSON payloads whose value orders them: payloads with the same
    /// value run in order, different values side by side. `None`: every payload of the hook in one order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_key: Option<String>,
    /// GitHub runs, deployments and pull requests as a message per delivery, as other GitHub events are, instead
    /// of one living message each, updated in place (the default, `false`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub per_delivery: bool,
    /// Who created it.
    pub created_by: String,
    /// When.
    pub created_at: Timestamp,
}

/// A hook's filter of GitHub deliveries: rules `event[.action][=outcome|outcome…]` (`*` for any event), for
/// example `workflow_run=failure|cancelled|timed_out` or `pull_request.opened`. A delivery is posted when it
/// matches one of `only` (or `only` is empty) and none of `skip`. The outcome of a delivery is the run's or
/// check's conclusion (its status until it completes) and a deployment status's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HookFilter {
    /// Post only deliveries matching one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub only: Vec<String>,
    /// Never post deliveries matching one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip: Vec<String>,
}

impl HookFilter {
    /// A filter with no rules filters nothing.
    pub fn is_empty(&self) -> bool {
        self.only.is_empty() && self.skip.is_empty()
    }
}
