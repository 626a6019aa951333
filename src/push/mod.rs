//! Web Push: herald's `PUSH` channel, for the users no socket reached in
//! time (docs/operators.md, "Web Push").
//!
//! - [`settings`]: the `HERALD_VAPID_*` and `HERALD_PUSH_*` settings;
//! - [`vapid`]: the application server's P-256 key and its RFC 8292 tokens;
//! - [`endpoint`]: which push service URLs herald may POST to (the SSRF
//!   boundary), checked when a browser subscribes and again on every send;
//! - [`subscription`]: a browser's `PushSubscription`, validated.

pub mod endpoint;
pub mod settings;
pub mod subscription;
pub mod vapid;

pub use settings::{PushArgs, PushConfig};
