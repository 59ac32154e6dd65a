//! Slack egress: everything the fleet says in Slack goes through here, and handlers reach it only through the
//! [`Poster`].
//!
//! # Layout
//!
//! - [`message`]: [`SlackMessage`], the [`PostMark`] every post carries (event id and part), [`Posted`],
//!   [`SlackError`] (rate limited, retryable, permanent), [`PostCheck`], [`truncate`].
//! - [`sink`]: the [`SlackSink`] port: where messages go.
//! - [`web_api`]: [`SlackWebApi`], the Web API client (`chat.postMessage`, `chat.update`, and the
//!   `conversations.*` reads of the exactly-once check).
//! - [`outbox`]: [`DevOutbox`], the local outbox used when no bot token is configured.
//! - [`pace`]: a channel's pace, kept per process in memory ([`pace::Lanes`]) with the fleet's share and Slack's
//!   pause in the channel's shared state.
//! - [`poster`]: [`Egress`] (one per worker process) and [`Poster`] (one per delivery): post, reply and update
//!   once, in the pace, with `Retry-After` as a wait.

pub mod message;
pub mod outbox;
pub mod pace;
pub mod poster;
pub mod sink;
pub mod web_api;

pub use message::{METADATA_EVENT_TYPE, PostCheck, PostMark, Posted, SlackError, SlackMessage, truncate};
pub use outbox::{DevOutbox, OUTBOX_FILE, OutboxEntry};
pub use pace::ChannelPace;
pub use poster::{Egress, Poster};
pub use sink::SlackSink;
pub use web_api::SlackWebApi;
