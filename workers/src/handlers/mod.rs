//! The built-in handlers.

pub mod hook;
pub mod unhandled;

use std::sync::Arc;

use eventfleet_schema::Kind;

use crate::Registry;

/// The registry of built-in handlers: hook payloads and GitHub deliveries to the hook's channel; everything else
/// recorded as unhandled and completed. Users extend it with [`Registry::register`].
pub fn builtin() -> Registry {
    let hook = Arc::new(hook::HookPayload);
    Registry::new(Arc::new(unhandled::Unhandled)).register(Kind::HOOK_PAYLOAD, hook.clone()).register("github.", hook)
}
