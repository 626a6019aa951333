//! A socket's session: who authenticated it, until when, and where it asked
//! to resume from. Stored in the socket's extensions by the handshake.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use super::limits::{Bucket, Rate};
use super::presence::Slot;
use crate::db::inbox::Inbox;
use crate::eventlog::Position;

/// What `auth.lastEventId` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// No `lastEventId`: the pending push.
    Fresh,
    /// Replay everything after this position.
    From(Position),
    /// Malformed, unknown or pruned: `sync:reset`, then the pending push.
    Reset,
}

#[derive(Clone)]
pub struct Session(Arc<State>);

/// The socket's user, stored beside its [`Session`] by the handshake: a
/// plain copy, so the fan-out, which reads it for every socket of a
/// broadcast, touches no shared counter (cloning the session is an atomic
/// increment on memory no other socket shares, a cache miss each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketUser(pub Uuid);

pub struct State {
    pub user_id: Uuid,
    pub user_name: String,
    /// The user's rooms when they authenticated; the presence map has the
    /// current ones once the socket has joined.
    pub inbox: Inbox,
    pub resume: Resume,
    /// The token's `exp`, moved by `auth.refresh`.
    expires_at: AtomicU64,
    pub slot: Slot,
    /// Client events this socket may still send.
    events: Mutex<(Bucket, Rate)>,
}

impl Session {
    pub fn new(
        user_name: String,
        inbox: Inbox,
        expires_at: u64,
        resume: Resume,
        slot: Slot,
        rate: Rate,
    ) -> Self {
        Self(Arc::new(State {
            user_id: slot.user_id(),
            user_name,
            inbox,
            resume,
            expires_at: AtomicU64::new(expires_at),
            slot,
            events: Mutex::new((Bucket::full(rate), rate)),
        }))
    }

    /// Takes one client event from the socket's allowance.
    pub fn allow_event(&self) -> bool {
        let mut events = self.0.events.lock().unwrap_or_else(|p| p.into_inner());
        let (bucket, rate) = &mut *events;
        bucket.take(*rate, std::time::Instant::now())
    }

    pub fn expires_at(&self) -> u64 {
        self.0.expires_at.load(Ordering::Relaxed)
    }

    pub fn extend(&self, expires_at: u64) {
        self.0.expires_at.store(expires_at, Ordering::Relaxed);
    }
}

impl std::ops::Deref for Session {
    type Target = State;

    fn deref(&self) -> &State {
        &self.0
    }
}
