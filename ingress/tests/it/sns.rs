//! SNS: the genuine AWS-signed fixtures verify at their own time and fail when anything signed changes, when the
//! certificate URL breaks the rules, and today (the certificate expired); the allow-list; CloudWatch alarms;
//! SNS posted to a hook URL.

use std::sync::Arc;

use eventfleet_ingress::IngressConfig;
use eventfleet_schema::{IdempotencyKey, Source, Timestamp};
use eventfleet_storage::FixedClock;
use reqwest::StatusCode;
use serde_json::Value;

use crate::{Server, error_code, test_config, testdata};

const TOPIC: &str = "arn:aws:sns:us-west-2:131990247566:dongie-standard-topic";

fn fixture(name: &str) -> Value {
    let text = std::fs::read_to_string(testdata("fixtures/sns").join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Settings verifying against the fixtures' certificate at `at`.
fn at_time(at: &str) -> IngressConfig {
    IngressConfig {
        sns_cert_dir: Some(testdata("fixtures/sns")),
        verify_clock: Arc::new(FixedClock(Timestamp::parse(at).unwrap())),
        ..test_config()
    }
}

async fn post(s: &Server, path: &str, message: &Value) -> reqwest::Response {
    s.http
        .post(s.url(path))
        .header("content-type", "text/plain; charset=UTF-8")
        .header("x-amz-sns-message-type", message["Type"].as_str().unwrap())
        .body(message.to_string())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn aws_signed_fixtures_verify_at_their_time_and_are_enqueued() {
    let cases = [
        ("notification-with-subject-v1.json", "sns.notification"),
        ("subscription-confirmation-v1.json", "sns.subscription_confirmation"),
        ("unsubscribe-confirmation-v2.json", "sns.unsubscribe_confirmation"),
    ];
    for (file, kind) in cases {
        let message = fixture(file);
        let s = Server::start_with(IngressConfig {
            sns_allowed_topics: Some(vec![TOPIC.into()]),
            ..at_time(message["Timestamp"].as_str().unwrap())
        })
        .await;
        let resp = post(&s, "/sns", &message).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "{file}");
        let answer: Value = resp.json().await.unwrap();
        assert_eq!(answer["duplicate"], false);
        let queued = s.drain().await;
        assert_eq!(queued.len(), 1, "{file}");
        let env = &queued[0].envelope;
        assert_eq!(env.kind().as_str(), kind);
        assert_eq!(env.idempotency_key(), &IdempotencyKey::sns(TOPIC, message["MessageId"].as_str().unwrap()));
        // The SNS retry of the same message is a duplicate.
        let again = post(&s, "/sns", &message).await;
        assert_eq!(again.headers()["x-eventfleet-duplicate"], "true");
    }
}

#[tokio::test]
async fn any_change_to_a_signed_field_fails_verification() {
    let original = fixture("notification-with-subject-v1.json");
    let s = Server::start_with(at_time(original["Timestamp"].as_str().unwrap())).await;
    for (field, value) in [
        ("Message", "Hello! This message has a subject?"),
        ("MessageId", "26858270-545e-5848-82a2-e05566af3dcg"),
        ("Subject", "Another subject"),
        ("Timestamp", "2026-03-06T19:53:21.425Z"),
        ("TopicArn", "arn:aws:sns:us-west-2:131990247566:other-topic"),
        ("Signature", "AAAA"),
    ] {
        let mut tampered = original.clone();
        tampered[field] = Value::String(value.into());
        let resp = post(&s, "/sns", &tampered).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{field}");
        assert_eq!(error_code(resp).await, "unauthorized");
    }
    let mut no_subject = original.clone();
    no_subject.as_object_mut().unwrap().remove("Subject");
    assert_eq!(post(&s, "/sns", &no_subject).await.status(), StatusCode::UNAUTHORIZED);
    let mut v2 = original.clone();
    v2["SignatureVersion"] = "2".into();
    assert_eq!(post(&s, "/sns", &v2).await.status(), StatusCode::UNAUTHORIZED, "v1 signature checked as v2");
    assert_eq!(s.depth().await, 0);
    assert_eq!(post(&s, "/sns", &original).await.status(), StatusCode::ACCEPTED, "the untouched message verifies");
}

#[tokio::test]
async fn certificate_url_must_be_https_on_an_sns_host_and_a_pem() {
    let original = fixture("notification-with-subject-v1.json");
    let s = Server::start_with(at_time(original["Timestamp"].as_str().unwrap())).await;
    for url in [
        "http://sns.us-west-2.amazonaws.com/SimpleNotificationService-7506a1e35b36ef5a444dd1a8e7cc3ed8.pem",
        "https://sns.us-west-2.amazonaws.com.evil.example/SimpleNotificationService-7506a1e35b36ef5a444dd1a8e7cc3ed8.pem",
        "https://evil.example/SimpleNotificationService-7506a1e35b36ef5a444dd1a8e7cc3ed8.pem",
        "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-7506a1e35b36ef5a444dd1a8e7cc3ed8.txt",
        "https://sns.us-west-2.amazonaws.com/missing.pem",
    ] {
        let mut m = original.clone();
        m["SigningCertURL"] = url.into();
        let resp = post(&s, "/sns", &m).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{url}");
    }
}

#[tokio::test]
async fn fixtures_fail_today_because_the_certificate_expired() {
    let s = Server::start_with(IngressConfig { sns_cert_dir: Some(testdata("fixtures/sns")), ..test_config() }).await;
    let resp = post(&s, "/sns", &fixture("notification-with-subject-v1.json")).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = resp.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("not valid at"), "{body}");
}

#[tokio::test]
async fn topics_off_the_allow_list_are_403() {
    let message = fixture("notification-with-subject-v1.json");
    let at = message["Timestamp"].as_str().unwrap();
    let s = Server::start_with(IngressConfig {
        sns_allowed_topics: Some(vec!["arn:aws:sns:us-west-2:131990247566:other".into()]),
        ..at_time(at)
    })
    .await;
    let resp = post(&s, "/sns", &message).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(resp).await, "forbidden");
    let s = Server::start_with(IngressConfig { sns_allowed_topics: Some(vec![TOPIC.into()]), ..at_time(at) }).await;
    assert_eq!(post(&s, "/sns", &message).await.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn malformed_or_mislabelled_sns_bodies_are_400_and_wrong_media_415() {
    let message = fixture("notification-with-subject-v1.json");
    let s = Server::start_with(at_time(message["Timestamp"].as_str().unwrap())).await;
    let resp = s.http.post(s.url("/sns")).header("content-type", "text/plain").body("{").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = s
        .http
        .post(s.url("/sns"))
        .header("content-type", "text/plain")
        .body(r#"{"Type":"Notification"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = s
        .http
        .post(s.url("/sns"))
        .header("content-type", "text/plain")
        .header("x-amz-sns-message-type", "SubscriptionConfirmation")
        .body(message.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = s.http.post(s.url("/sns")).header("content-type", "image/gif").body("x").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(s.depth().await, 0);
}

/// A CloudWatch alarm published through SNS, signed with the test certificate of `testdata/sns`.
pub fn signed_alarm(message_id: &str, state: &str) -> Value {
    let alarm = std::fs::read_to_string(testdata("fixtures/cloudwatch/alarm-single-metric.json")).unwrap();
    let mut alarm: Value = serde_json::from_str(&alarm).unwrap();
    alarm["NewStateValue"] = state.into();
    let mut message = serde_json::json!({
        "Type": "Notification",
        "MessageId": message_id,
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:alarms",
        "Subject": format!("{state}: \"EXAMPLE\" in US East (N. Virginia)"),
        "Message": alarm.to_string(),
        "Timestamp": Timestamp::now_system().to_string(),
        "SignatureVersion": "2",
        "Signature": "",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-eventfleet-test.pem",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe"
    });
    let key = std::fs::read_to_string(testdata("sns/test-signing-key.pem")).unwrap();
    eventfleet_verify::sign::sns(&mut message, &key).unwrap();
    message
}

#[tokio::test]
async fn cloudwatch_alarm_is_its_own_kind_grouped_per_alarm() {
    let s = Server::start().await;
    let resp = post(&s, "/sns", &signed_alarm("m-1", "ALARM")).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let queued = s.drain().await;
    assert_eq!(queued[0].envelope.kind().as_str(), "sns.cloudwatch_alarm");
    assert_eq!(queued[0].envelope.message_group(), "alarm:arn:aws:cloudwatch:REGION:ACCOUNT_NUMBER:alarm:EXAMPLE");
}

#[tokio::test]
async fn subscriptions_to_sns_are_confirmed_only_for_allow_listed_topics() {
    let message = fixture("subscription-confirmation-v1.json");
    let s = Server::start_with(at_time(message["Timestamp"].as_str().unwrap())).await;
    let resp = post(&s, "/sns", &message).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(resp).await, "forbidden");
    assert_eq!(s.depth().await, 0);
}

#[tokio::test]
async fn sns_on_a_hook_with_a_secret_needs_an_allow_listed_topic() {
    let s = Server::start().await;
    let hook = s.hook(Some("hook secret")).await;
    let resp = post(&s, &format!("/hooks/{}", hook.id), &signed_alarm("m-4", "OK")).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN, "SNS must not get around the hook's secret");
    let s = Server::start_with(IngressConfig {
        sns_allowed_topics: Some(vec!["arn:aws:sns:us-east-1:123456789012:alarms".into()]),
        ..test_config()
    })
    .await;
    let hook = s.hook(Some("hook secret")).await;
    let resp = post(&s, &format!("/hooks/{}", hook.id), &signed_alarm("m-5", "OK")).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn sns_posted_to_a_hook_url_is_verified_as_sns_and_tied_to_the_hook() {
    let s = Server::start().await;
    let hook = s.hook(None).await;
    let resp = post(&s, &format!("/hooks/{}", hook.id), &signed_alarm("m-2", "OK")).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let queued = s.drain().await;
    assert_eq!(
        queued[0].envelope.source(),
        &Source::Sns { topic_arn: "arn:aws:sns:us-east-1:123456789012:alarms".into(), hook_id: Some(hook.id.clone()) }
    );
    assert_eq!(s.store.webhooks.get(&hook.id).await.unwrap().unwrap().invocation_count, 1);
    let mut forged = signed_alarm("m-3", "OK");
    forged["Message"] = "forged".into();
    let resp = post(&s, &format!("/hooks/{}", hook.id), &forged).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}
