//! The built-in handlers.

pub mod alarm;
pub mod alarm_settings;
pub mod digest;
pub mod hook;
pub mod schedule;
pub mod sns;
pub mod unhandled;

use std::sync::Arc;
use std::time::Duration;

use eventfleet_schema::Kind;

use crate::Registry;

/// The registry of built-in handlers: hook payloads and GitHub deliveries to the hook's channel; CloudWatch
/// alarms and other SNS notifications to the hook's, topic's or default channel; SNS subscription changes;
/// posting schedules' ticks to their channel; posting channels' burst digests.
/// Slack events, commands and interactions, and anything else, are recorded as unhandled and completed; users
/// extend the registry with [`Registry::register`].
pub fn builtin(routing: sns::SnsRouting) -> Registry {
    builtin_with(routing, Arc::new(sns::UrlConfirmer::new(Duration::from_secs(10))))
}

/// [`builtin`] with another way to confirm SNS subscriptions (the aws backend's `ConfirmSubscription` API).
pub fn builtin_with(routing: sns::SnsRouting, confirmer: Arc<dyn sns::SubscriptionConfirmer>) -> Registry {
    let hook = Arc::new(hook::HookPayload);
    Registry::new(Arc::new(unhandled::Unhandled))
        .register(Kind::HOOK_PAYLOAD, hook.clone())
        .register("github.", hook)
        .register(Kind::SNS_CLOUDWATCH_ALARM, Arc::new(alarm::CloudWatchAlarm(routing.clone())))
        .register(Kind::SNS_NOTIFICATION, Arc::new(sns::Notification(routing)))
        .register(Kind::SNS_SUBSCRIPTION_CONFIRMATION, Arc::new(sns::SubscriptionConfirmation::new(confirmer)))
        .register(Kind::SNS_UNSUBSCRIBE_CONFIRMATION, Arc::new(sns::UnsubscribeConfirmation))
        .register(Kind::SCHEDULE_PREFIX, Arc::new(schedule::ScheduleTick))
        .register(Kind::DIGEST_FLUSH, Arc::new(digest::DigestFlush))
}
