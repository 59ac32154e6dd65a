//! Signed, realistic requests: Slack events (a share re-sent as Slack-style retries), GitHub deliveries (a share
//! redelivered), generic hook payloads and SNS CloudWatch alarms signed with the test certificate the fleet is
//! told to trust. Every request that leads to a Slack post carries a marker `lt-<n>` so effects can be counted.

use eventfleet_schema::Timestamp;
use eventfleet_verify::sign::hmac_sha256_hex;
use eventfleet_verify::sign::slack as sign;

/// One HTTP request.
#[derive(Debug, Clone)]
pub struct Request {
    /// Path on the target (`/slack/events`).
    pub path: String,
    /// Content type.
    pub content_type: &'static str,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// Body.
    pub body: String,
}

/// One logical event: its first delivery, and a resend of the same event when the sender retries.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The source, for reports.
    pub source: &'static str,
    /// The first delivery.
    pub first: Request,
    /// A second delivery of the same event (Slack retry, GitHub redelivery), if this one gets one.
    pub resend: Option<Request>,
    /// Whether the event produces a Slack post carrying its marker.
    pub posts: bool,
}

/// What the generator needs to sign traffic.
#[derive(Debug, Clone)]
pub struct Traffic {
    /// The fleet's Slack signing secret.
    pub slack_secret: String,
    /// A generic hook (no secret), its group key `/service`.
    pub hook_id: String,
    /// A hook receiving GitHub deliveries, and its secret.
    pub github_hook_id: String,
    /// Its secret.
    pub github_secret: String,
    /// PKCS#8 PEM key matching the test SNS certificate.
    pub sns_key_pem: String,
    /// Share of Slack events and GitHub deliveries that are sent twice, in percent.
    pub resend_percent: u64,
    /// Part of every native id, so runs do not collide on one store.
    pub run_id: String,
}

/// The certificate URL of the test certificate (its file name is what `EVENTFLEET_SNS_CERT_DIR` is searched for).
pub const TEST_CERT_URL: &str = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-eventfleet-test.pem";
/// The topic of load-test alarms.
pub const ALARM_TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:loadtest-alarms";

impl Traffic {
    /// The `n`-th event, its Slack signature and SNS timestamp made for `at` (unix seconds): traffic prepared
    /// before a run is stamped with the time it is expected to be sent, which Slack's 300 s window allows.
    pub fn event_at(&self, n: u64, at: i64) -> Planned {
        // Each source takes every fourth event: its own count `n / 4` spreads it over its channels, repositories,
        // services and alarms (`n` itself would reach only a quarter of them).
        let resend = (n / 4) % 100 < self.resend_percent;
        match n % 4 {
            0 => self.slack(n, resend, at),
            1 => self.github(n, resend),
            2 => self.hook(n),
            _ => self.alarm(n, at),
        }
    }

    fn slack(&self, n: u64, resend: bool, ts: i64) -> Planned {
        let body = serde_json::json!({
            "type": "event_callback", "team_id": "TLOAD", "api_app_id": "ALOAD",
            "event_id": slack_event_id(&self.run_id, n), "event_time": 1_700_000_000 + n,
            "event": {"type": "message", "channel": format!("C{:03}", (n / 4) % 64), "user": "U1", "text": format!("message {n}")}
        })
        .to_string();
        let signed = |retry: Option<u32>| {
            let mut headers = vec![
                ("x-slack-request-timestamp", ts.to_string()),
                ("x-slack-signature", sign(self.slack_secret.as_bytes(), ts, body.as_bytes())),
            ];
            if let Some(r) = retry {
                headers.push(("x-slack-retry-num", r.to_string()));
                headers.push(("x-slack-retry-reason", "http_timeout".into()));
            }
            Request { path: "/slack/events".into(), content_type: "application/json", headers, body: body.clone() }
        };
        Planned { source: "slack", first: signed(None), resend: resend.then(|| signed(Some(1))), posts: false }
    }

    fn github(&self, n: u64, resend: bool) -> Planned {
        // A push as GitHub sends it (trimmed); the commit's message carries the marker into the formatted post.
        let repo = format!("acme/service-{}", (n / 4) % 16);
        let sha = format!("{n:040x}");
        let body = serde_json::json!({
            "ref": "refs/heads/main", "before": "0".repeat(40), "after": sha, "size": 1,
            "compare": format!("https://github.com/{repo}/compare/{sha}"),
            "commits": [{"id": sha, "message": format!("lt-{n} deploy"), "url": format!("https://github.com/{repo}/commit/{sha}"),
                         "author": {"name": "Load Test", "username": "loadtest"}}],
            "repository": {"full_name": repo, "html_url": format!("https://github.com/{repo}")},
            "pusher": {"name": "loadtest"}, "sender": {"login": "loadtest"}
        })
        .to_string();
        let request = Request {
            path: format!("/hooks/{}", self.github_hook_id),
            content_type: "application/json",
            headers: vec![
                ("x-github-event", "push".into()),
                ("x-github-delivery", guid(&self.run_id, "delivery", n)),
                (
                    "x-hub-signature-256",
                    format!("sha256={}", hmac_sha256_hex(self.github_secret.as_bytes(), &[body.as_bytes()])),
                ),
            ],
            body,
        };
        Planned { source: "github", resend: resend.then(|| request.clone()), first: request, posts: true }
    }

    fn hook(&self, n: u64) -> Planned {
        // From 16 services: the hook's group key (`/service`) orders each service's payloads and runs the
        // services side by side, as a team's deploy hook would be set up.
        let service = format!("service-{}", (n / 4) % 16);
        let body = serde_json::json!({ "text": format!("lt-{n} deploy finished"), "service": service }).to_string();
        let request = Request {
            path: format!("/hooks/{}", self.hook_id),
            content_type: "application/json",
            headers: vec![("idempotency-key", guid(&self.run_id, "hook", n))],
            body,
        };
        Planned { source: "hook", first: request, resend: None, posts: true }
    }

    fn alarm(&self, n: u64, at: i64) -> Planned {
        let alarm = serde_json::json!({
            "AlarmName": format!("lt-{n}"), "AlarmDescription": "load test alarm", "AWSAccountId": "123456789012",
            "NewStateValue": if n % 8 == 3 { "OK" } else { "ALARM" },
            "NewStateReason": "Threshold Crossed: 1 datapoint [99.0] was greater than the threshold (90.0).",
            "StateChangeTime": "2026-11-22T00:00:00.000+0000", "Region": "US East (N. Virginia)",
            "AlarmArn": format!("arn:aws:cloudwatch:us-east-1:123456789012:alarm:lt-{}", (n / 4) % 32),
            "OldStateValue": "OK",
            "Trigger": {"MetricName": "CPUUtilization", "Namespace": "AWS/EC2", "Statistic": "AVERAGE", "Period": 60,
                        "ComparisonOperator": "GreaterThanThreshold", "Threshold": 90.0,
                        "Dimensions": [{"name": "InstanceId", "value": format!("i-{n:08x}")}]}
        });
        let mut message = serde_json::json!({
            "Type": "Notification", "MessageId": guid(&self.run_id, "sns", n), "TopicArn": ALARM_TOPIC,
            "Subject": format!("ALARM: lt-{n}"), "Message": alarm.to_string(),
            "Timestamp": Timestamp::from_millis(at * 1000).to_string(), "SignatureVersion": "2", "Signature": "",
            "SigningCertURL": TEST_CERT_URL,
        });
        // The key is the test key shipped with the load generator; signing cannot fail for a well-formed message.
        let _ = eventfleet_verify::sign::sns(&mut message, &self.sns_key_pem);
        let request = Request {
            path: "/sns".into(),
            content_type: "text/plain; charset=UTF-8",
            headers: vec![("x-amz-sns-message-type", "Notification".into())],
            body: message.to_string(),
        };
        Planned { source: "sns", first: request, resend: None, posts: true }
    }
}

/// The plain Slack event of the closed-loop ingress benchmark (`slack` subcommand), signed for `ts` (unix
/// seconds).
pub fn slack_event(secret: &str, n: u64, ts: i64) -> Request {
    let body = serde_json::json!({
        "token": "loadtest", "team_id": "TLOAD", "api_app_id": "ALOAD", "type": "event_callback",
        "event_id": slack_event_id("bench", n), "event_time": 1_700_000_000 + n,
        "event": {"type": "message", "channel": format!("C{:04}", n % 50), "user": "U0LOAD",
                  "text": format!("load test message {n}"), "ts": format!("{}.000100", 1_700_000_000 + n)}
    })
    .to_string();
    Request {
        path: "/slack/events".into(),
        content_type: "application/json",
        headers: vec![
            ("x-slack-request-timestamp", ts.to_string()),
            ("x-slack-signature", sign(secret.as_bytes(), ts, body.as_bytes())),
        ],
        body,
    }
}

/// A sender's id of the `n`-th event as senders make them: GitHub's `X-GitHub-Delivery`, SNS's `MessageId` and most
/// `Idempotency-Key`s are GUIDs, in no order. Ids counted up (as the generator made them before) sort next to each
/// other, which let the store write each batch's records side by side: a flattering load (docs/benchmarks.md,
/// "Idempotency records in claim order"). Derived from the run and `n`, so a resend carries the same id.
fn guid(run_id: &str, what: &str, n: u64) -> String {
    let h = hmac_sha256_hex(run_id.as_bytes(), &[what.as_bytes(), &n.to_be_bytes()]);
    format!("{}-{}-4{}-8{}-{}", &h[..8], &h[8..12], &h[13..16], &h[17..20], &h[20..32])
}

/// A Slack `event_id` (`Ev` and fourteen characters, in no order), derived from the run and `n`.
fn slack_event_id(run_id: &str, n: u64) -> String {
    format!("Ev{}", hmac_sha256_hex(run_id.as_bytes(), &[b"slack", &n.to_be_bytes()])[..14].to_uppercase())
}

/// The marker numbers in a posted Slack message (a digest or a storm's summary names several).
pub fn markers(text: &str) -> Vec<u64> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("lt-") {
        rest = &rest[at + 3..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(n) = digits.parse() {
            found.push(n);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_source_spreads_over_its_channels_repositories_services_and_alarms() {
        let traffic = Traffic {
            slack_secret: "s".into(),
            hook_id: "h".into(),
            github_hook_id: "g".into(),
            github_secret: "gs".into(),
            sns_key_pem: include_str!("../../testdata/sns/test-signing-key.pem").into(),
            resend_percent: 0,
            run_id: "t".into(),
        };
        let mut seen: std::collections::HashMap<&str, std::collections::HashSet<String>> = Default::default();
        for n in 0..4 * 64 {
            let planned = traffic.event_at(n, 1_700_000_000);
            let body: serde_json::Value = match planned.source {
                // SNS wraps the alarm in its message's `Message`.
                "sns" => serde_json::from_str(
                    serde_json::from_str::<serde_json::Value>(&planned.first.body).unwrap()["Message"]
                        .as_str()
                        .unwrap(),
                )
                .unwrap(),
                _ => serde_json::from_str(&planned.first.body).unwrap(),
            };
            let key = match planned.source {
                "slack" => &body["event"]["channel"],
                "github" => &body["repository"]["full_name"],
                "hook" => &body["service"],
                _ => &body["AlarmArn"],
            };
            seen.entry(planned.source).or_default().insert(key.as_str().unwrap().to_owned());
        }
        let counts: std::collections::BTreeMap<&str, usize> = seen.iter().map(|(k, v)| (*k, v.len())).collect();
        assert_eq!(counts, [("github", 16), ("hook", 16), ("slack", 64), ("sns", 32)].into(), "{seen:?}");
    }

    /// Senders' ids are distinct, in no order (as GUIDs and Slack's ids are), and the same for the same event.
    #[test]
    fn native_ids_are_distinct_unordered_and_stable() {
        let ids: Vec<String> = (0..10_000).map(|n| guid("run", "delivery", n)).collect();
        assert_eq!(ids.iter().collect::<std::collections::HashSet<_>>().len(), ids.len());
        let ascending = ids.windows(2).filter(|w| w[0] < w[1]).count();
        assert!((4_000..6_000).contains(&ascending), "{ascending} of 9,999 pairs in order");
        assert_eq!(guid("run", "delivery", 7), ids[7]);
        assert_ne!(guid("other", "delivery", 7), ids[7], "another run's ids differ");
        let slack = slack_event_id("run", 7);
        assert!(slack.starts_with("Ev") && slack.len() == 16, "{slack}");
        assert_eq!(ids[7].len(), 36);
    }

    #[test]
    fn markers_parse_from_posted_text() {
        assert_eq!(markers("lt-42 deploy finished"), [42]);
        assert_eq!(markers(":red_circle: ALARM: lt-7: Threshold, lt-9"), [7, 9]);
        assert!(markers("nothing here, lt-x").is_empty());
    }
}
