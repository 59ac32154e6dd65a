//! Local stand-ins for the external services eventfleet talks to, for tests and the load generator: they record
//! what they got and behave like the real service where it matters. Not a dependency of anything shipped
//! (`scripts/check-layering` checks it).
//!
//! # Layout
//!
//! - [`slack`]: the Slack Web API ([`slack::SlackStub`]: posts, updates, threads, history, scripted failures)
//!   and Socket Mode ([`slack::socket`]).
//! - [`teams`]: Microsoft Teams' incoming webhooks ([`teams::TeamsStub`]: cards, 28 KB, 4 a second, scripted
//!   answers).

pub mod slack;
pub mod teams;
