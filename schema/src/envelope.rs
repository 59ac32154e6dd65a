//! The queue message: every accepted event travels as an [`Envelope`].

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{EventId, HookId, IdempotencyKey, Timestamp};

/// A queued event. Versioned and tagged by `"version"`: a worker of a newer release still reads every version
/// that may be in flight during a deploy. Add a variant for an incompatible change; never edit a shipped one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "version")]
pub enum Envelope {
    /// The first version.
    #[serde(rename = "1")]
    V1(EnvelopeV1),
}

impl Envelope {
    /// The event's id.
    pub fn event_id(&self) -> EventId {
        match self {
            Envelope::V1(v1) => v1.event_id,
        }
    }

    /// The event's idempotency key.
    pub fn idempotency_key(&self) -> &IdempotencyKey {
        match self {
            Envelope::V1(v1) => &v1.idempotency_key,
        }
    }

    /// The event's kind.
    pub fn kind(&self) -> &Kind {
        match self {
            Envelope::V1(v1) => &v1.kind,
        }
    }

    /// The FIFO message group.
    pub fn message_group(&self) -> &str {
        match self {
            Envelope::V1(v1) => &v1.message_group,
        }
    }

    /// The sender.
    pub fn source(&self) -> &Source {
        match self {
            Envelope::V1(v1) => &v1.source,
        }
    }

    /// When ingress received it.
    pub fn received_at(&self) -> Timestamp {
        match self {
            Envelope::V1(v1) => v1.received_at,
        }
    }

    /// Gives the event another id: a delivery that finishes an earlier, unfinished one takes that one's id.
    pub fn set_event_id(&mut self, event_id: EventId) {
        match self {
            Envelope::V1(e) => e.event_id = event_id,
        }
    }

    /// The version-1 body, which every current reader understands.
    pub fn as_v1(&self) -> &EnvelopeV1 {
        match self {
            Envelope::V1(v1) => v1,
        }
    }
}

/// Version 1 of the envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EnvelopeV1 {
    /// UUIDv7 assigned at ingress.
    pub event_id: EventId,
    /// Source-scoped native id.
    pub idempotency_key: IdempotencyKey,
    /// Who sent it.
    pub source: Source,
    /// What it is; chooses the handler.
    pub kind: Kind,
    /// FIFO message group: per channel, alarm or hook.
    pub message_group: String,
    /// When ingress received it.
    pub received_at: Timestamp,
    /// How ingress verified it. Replays never re-verify: this verdict stands.
    pub verification: Verification,
    /// W3C trace context of the ingress request, so the worker's span joins the same trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceContext>,
    /// Selected request headers (content type, sender event headers), lower-cased names. Never secrets or
    /// signatures.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The raw request body, as received.
    pub body: Body,
}

/// The longest message group kept as is (SQS allows 128 characters).
const MAX_GROUP: usize = 128;

/// A message group safe on every backend: printable ASCII up to 128 characters as is, anything else replaced by
/// `g:` and its sha256 (same input, same group).
pub fn message_group(raw: &str) -> String {
    use sha2::Digest as _;
    let printable = raw.bytes().all(|b| b.is_ascii_graphic());
    if printable && !raw.is_empty() && raw.len() <= MAX_GROUP {
        raw.to_owned()
    } else {
        format!("g:{}", hex::encode(sha2::Sha256::digest(raw.as_bytes())))
    }
}

/// The sender of an event, with its identifiers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Source {
    /// Slack Events API, slash commands or interactivity.
    Slack {
        /// Workspace (`team_id`).
        team_id: String,
    },
    /// A GitHub delivery to a registered hook.
    Github {
        /// The hook it was posted to.
        hook_id: HookId,
        /// `X-GitHub-Delivery`.
        delivery: String,
    },
    /// A generic webhook payload.
    Hook {
        /// The hook it was posted to.
        hook_id: HookId,
    },
    /// An AWS SNS message, on `/sns` or on a hook URL.
    Sns {
        /// `TopicArn`.
        topic_arn: String,
        /// The hook it was posted to, when it arrived on a hook URL.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hook_id: Option<HookId>,
    },
    /// A tick of a schedule in the schedules file, made by every process that evaluates it (one event per tick:
    /// the key is the schedule's name and the tick's time).
    Schedule {
        /// The schedule's name.
        name: String,
    },
    /// A channel's burst digest to post: made by the worker that folded the digest's first post (the posts that
    /// came faster than the channel's pace), so that the digest has a durable owner of its own.
    Digest {
        /// The Slack channel, as configured.
        channel: String,
    },
}

impl Source {
    /// Every source's name ([`Source::name`]), as filters accept them.
    pub const NAMES: [&'static str; 6] = ["slack", "github", "hook", "sns", "schedule", "digest"];

    /// The source's name as used in filters and metrics: `slack`, `github`, `hook`, `sns`, `schedule`, `digest`.
    pub fn name(&self) -> &'static str {
        match self {
            Source::Schedule { .. } => "schedule",
            Source::Digest { .. } => "digest",
            Source::Slack { .. } => "slack",
            Source::Github { .. } => "github",
            Source::Hook { .. } => "hook",
            Source::Sns { .. } => "sns",
        }
    }

    /// The hook the event arrived on, if any.
    pub fn hook_id(&self) -> Option<&HookId> {
        match self {
            Source::Github { hook_id, .. } | Source::Hook { hook_id } => Some(hook_id),
            Source::Sns { hook_id, .. } => hook_id.as_ref(),
            Source::Slack { .. } | Source::Schedule { .. } | Source::Digest { .. } => None,
        }
    }
}

/// What an event is: `slack.event`, `slack.command`, `slack.interaction`, `github.<event>`, `hook.payload`,
/// `sns.cloudwatch_alarm`, `sns.notification`, ... Open-ended because GitHub's event names are.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Kind(String);

impl Kind {
    /// A Slack Events API `event_callback`.
    pub const SLACK_EVENT: &'static str = "slack.event";
    /// A Slack slash command.
    pub const SLACK_COMMAND: &'static str = "slack.command";
    /// A Slack interaction (`payload=` form field).
    pub const SLACK_INTERACTION: &'static str = "slack.interaction";
    /// A generic hook payload.
    pub const HOOK_PAYLOAD: &'static str = "hook.payload";
    /// A CloudWatch alarm state change delivered by SNS.
    pub const SNS_CLOUDWATCH_ALARM: &'static str = "sns.cloudwatch_alarm";
    /// Any other SNS notification.
    pub const SNS_NOTIFICATION: &'static str = "sns.notification";
    /// An SNS subscription to confirm.
    pub const SNS_SUBSCRIPTION_CONFIRMATION: &'static str = "sns.subscription_confirmation";
    /// An SNS subscription was removed.
    pub const SNS_UNSUBSCRIBE_CONFIRMATION: &'static str = "sns.unsubscribe_confirmation";

    /// A kind by name.
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    /// A channel's burst digest to post.
    pub const DIGEST_FLUSH: &'static str = "digest.flush";

    /// The prefix of every schedule tick's kind (`schedule.<name>` unless the schedule names another).
    pub const SCHEDULE_PREFIX: &'static str = "schedule.";

    /// `github.<event>` for an `X-GitHub-Event` header value.
    pub fn github(event: &str) -> Self {
        Self(format!("github.{event}"))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The verdict of ingress verification, carried so that workers and replays never verify again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Verification {
    /// How it was verified.
    pub method: VerificationMethod,
    /// When.
    pub verified_at: Timestamp,
}

/// A verification method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VerificationMethod {
    /// Slack `v0` HMAC-SHA256 signature with the signing secret.
    SlackV0,
    /// `X-Hub-Signature-256` HMAC-SHA256 with the hook's secret.
    HmacSha256,
    /// SNS signature version 1 (SHA1withRSA).
    SnsV1,
    /// SNS signature version 2 (SHA256withRSA).
    SnsV2,
    /// A hook without a secret: its unguessable URL is the only credential.
    HookUrl,
    /// Made by the fleet itself from its schedules file: nothing outside sent it.
    Schedule,
    /// Made by the workers themselves (a channel's digest): nothing outside sent it.
    Fleet,
    /// Received over a Slack Socket Mode connection: the connection was opened with the app-level token over
    /// TLS, so what arrives on it is Slack's (Socket Mode payloads carry no signature).
    SlackSocketMode,
}

/// W3C trace context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TraceContext {
    /// `traceparent` header value.
    pub traceparent: String,
    /// `tracestate` header value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

/// A raw request body: UTF-8 text as is, anything else base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "encoding", content = "data", rename_all = "snake_case")]
pub enum Body {
    /// The body was valid UTF-8.
    Utf8(String),
    /// The body was not UTF-8; standard base64 with padding.
    Base64(String),
}

impl Body {
    /// Wraps raw bytes, keeping text readable in the queue and the DLQ.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(text) => Body::Utf8(text.to_owned()),
            Err(_) => Body::Base64(base64::engine::general_purpose::STANDARD.encode(bytes)),
        }
    }

    /// The raw bytes. A corrupt base64 body (never written by eventfleet) yields an error.
    pub fn to_bytes(&self) -> Result<Vec<u8>, base64::DecodeError> {
        match self {
            Body::Utf8(text) => Ok(text.as_bytes().to_vec()),
            Body::Base64(data) => base64::engine::general_purpose::STANDARD.decode(data),
        }
    }

    /// The body as text when it is text.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Body::Utf8(text) => Some(text),
            Body::Base64(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        let hook = HookId::from_raw("hk_1");
        Envelope::V1(EnvelopeV1 {
            event_id: EventId::new(),
            idempotency_key: IdempotencyKey::hook(&hook, "k"),
            source: Source::Hook { hook_id: hook.clone() },
            kind: Kind::new(Kind::HOOK_PAYLOAD),
            message_group: format!("hook:{hook}"),
            received_at: Timestamp::from_millis(1_772_826_801_424),
            verification: Verification {
                method: VerificationMethod::HookUrl,
                verified_at: Timestamp::from_millis(1_772_826_801_424),
            },
            trace: None,
            headers: BTreeMap::from([("content-type".into(), "application/json".into())]),
            body: Body::from_bytes(br#"{"text":"hi"}"#),
        })
    }

    #[test]
    fn envelope_is_tagged_with_its_version_and_round_trips() {
        let env = sample();
        let json = serde_json::to_value(&env).unwrap();
        assert_eq!(json["version"], "1");
        assert_eq!(json["source"]["type"], "hook");
        assert_eq!(json["body"]["encoding"], "utf8");
        let back: Envelope = serde_json::from_value(json).unwrap();
        assert_eq!(back, env);
    }

    #[test]
    fn unknown_version_is_an_error_not_a_guess() {
        let mut json = serde_json::to_value(sample()).unwrap();
        json["version"] = "99".into();
        assert!(serde_json::from_value::<Envelope>(json).is_err());
    }

    #[test]
    fn binary_bodies_survive_as_base64() {
        let bytes = [0xff, 0x00, 0x80];
        let body = Body::from_bytes(&bytes);
        assert!(matches!(body, Body::Base64(_)));
        assert_eq!(body.to_bytes().unwrap(), bytes);
        assert!(Body::Base64("!!".into()).to_bytes().is_err());
    }
}
