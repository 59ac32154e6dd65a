//! The queue and dead-letter ports on SQS FIFO.
//!
//! - Sends use `SendMessageBatch` (10 a request) with per-entry results; receives ask for up to 10 with the
//!   system attributes the workers need; long polls past SQS's 20 s are repeated polls.
//! - Moving to the DLQ is a send to the DLQ and then a delete. The message's body is kept from its receive (a
//!   receipt alone cannot fetch it), in [`InFlight`]. On the DLQ every dead letter gets its own message group, so
//!   a listing can see all of them (FIFO hides the rest of a group behind a received message); the original
//!   group travels in an attribute and a replay goes back to it.
//! - SQS cannot list a queue: the DLQ is read by receiving everything with a short visibility ("peek") and
//!   releasing what is not replayed or purged. Two operators peeking at once hide messages from each other for
//!   that visibility; `dlq` commands are occasional and say what they saw.
//!
//! - [`wire`]: SQS's limits and encodings;
//! - [`in_flight`]: the receipts this process holds;
//! - [`sends`], [`deletes`]: the group commits of sends and deletes;
//! - [`queue`]: the [`crate::Queue`] port; [`dlq`]: the [`crate::DeadLetters`] port; [`stats`]: depths and ages.

mod deletes;
mod dlq;
mod in_flight;
mod queue;
mod sends;
mod stats;
mod wire;

pub(in crate::aws) use self::deletes::{DeleteBatcher, delete_batcher};
pub(in crate::aws) use self::in_flight::InFlight;
pub(in crate::aws) use self::queue::queue_url;
pub(in crate::aws) use self::sends::{SEND_LINGER, SendBatcher, send_batcher};
pub(in crate::aws) use self::wire::check_size;
