//! Web Push: herald's `PUSH` channel, for the users no socket reached in
//! time (docs/operators.md, "Web Push").
//!
//! - [`settings`]: the `HERALD_VAPID_*` and `HERALD_PUSH_*` settings;
//! - [`vapid`]: the application server's P-256 key and its RFC 8292 tokens;
//! - [`endpoint`]: which push service URLs herald may POST to (the SSRF
//!   boundary), checked when a browser subscribes and again on every send;
//! - [`subscription`]: a browser's `PushSubscription`, validated;
//! - [`message`]: what a push carries, encrypted per RFC 8291;
//! - [`worker`]: decides from the database what is due, claims it there,
//!   sends it and records the answer.

pub mod endpoint;
pub mod message;
pub mod settings;
pub mod subscription;
pub mod vapid;
pub mod worker;

pub use settings::{PushArgs, PushConfig};
