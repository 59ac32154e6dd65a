//! The conformance suite on the aws backend, against moto server (started by `scripts/test`, which exports
//! `EVENTFLEET_TEST_AWS_ENDPOINT`). Every test provisions its own uniquely named queues and tables.
//!
//! The emulator's gaps, measured against moto 5.2.5 (see `Gaps`), are marked here; the suite skips only the
//! assertion a gap makes impossible and prints what it skipped.

use std::time::Duration;

use eventfleet_storage::aws::{AwsOptions, AwsStore, Clients, Names, provision};
use eventfleet_storage::conformance::{Gaps, Harness, TimeControl};

/// The emulator's endpoint. Fails (never skips) without it: these tests are part of the suite.
fn endpoint() -> String {
    std::env::var("EVENTFLEET_TEST_AWS_ENDPOINT").expect(
        "EVENTFLEET_TEST_AWS_ENDPOINT is not set: run the tests through scripts/test, which starts moto server \
         (or `scripts/moto start FILE` and export the URL it writes)",
    )
}

/// An SDK config for the emulator, built explicitly: no host environment, static test credentials.
async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .empty_test_environment()
        .test_credentials()
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint())
        .load()
        .await
}

async fn setup(scope: &str) -> Harness {
    let sdk = sdk_config().await;
    let prefix = format!("cf-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let names = Names::from_prefix(&prefix);
    let max_receive_count = 5;
    provision::create(&Clients::new(&sdk, None), &names, max_receive_count, 30).await.expect("provision");
    let options =
        AwsOptions { max_receive_count, dlq_peek_visibility: Duration::from_secs(5), ..AwsOptions::new(names) };
    let store = AwsStore::connect(&sdk, options).await.expect("connect").into_store();
    Harness { store, time: TimeControl::Real, max_receive_count, gaps: GAPS, scope: scope.to_owned() }
}

/// What moto 5.2.5 cannot show, each measured by running the suite without the flag (the three set ones failed;
/// the rest pass). TTL deletion is not needed by any assertion (reads filter on `expires_at`), and the group lock
/// holds for the sequential receives of the suite (the racy case needs two concurrent receivers).
const GAPS: Gaps = Gaps {
    ttl_not_enforced: false,
    // A dedup id is accepted again once its message is deleted (AWS keeps it for 5 minutes).
    dedup_forgotten_after_delete: true,
    group_lock_racy: false,
    // ChangeMessageVisibility with a receipt whose visibility ran out succeeds (AWS: MessageNotInflight).
    stale_receipt_accepted: true,
    // No CloudWatch metrics for SQS, so no ApproximateAgeOfOldestMessage.
    oldest_age_unavailable: true,
};

eventfleet_storage::conformance_suite!(setup, start_paused = false);
