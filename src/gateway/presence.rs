//! Who is online on this instance: per user, how many sockets they hold and
//! which rooms their notifications come through.
//!
//! The map answers "which online users does this event address" without a
//! query, so a broadcast to a sector costs one lookup per online member, and
//! it enforces `HERALD_MAX_SOCKETS_PER_USER`. A socket holds a [`Slot`] from
//! the handshake on; dropping the slot (with the socket) releases it, so the
//! count cannot leak. It never holds `SocketRef`s: sockets live in
//! socketioxide's rooms.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex, MutexGuard};

use uuid::Uuid;

use crate::audience::Audience;
use crate::db::inbox::Inbox;

#[derive(Debug, Default)]
struct Member {
    /// Sockets past the handshake, joined or still syncing.
    sockets: usize,
    /// Sockets in their rooms, receiving live events.
    joined: usize,
    /// The user's rooms as of the log position dispatched so far; set when
    /// the first socket joins, kept current by `user.updated` events.
    inbox: Option<Inbox>,
}

#[derive(Debug, Default)]
pub struct Presence {
    members: Mutex<HashMap<Uuid, Member>>,
}

/// The user already holds the most sockets allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManySockets;

/// One socket's place in [`Presence`]; released on drop.
#[derive(Debug)]
pub struct Slot {
    presence: Arc<Presence>,
    user_id: Uuid,
    joined: std::sync::atomic::AtomicBool,
}

impl Presence {
    fn members(&self) -> MutexGuard<'_, HashMap<Uuid, Member>> {
        // A panic while holding this lock leaves plain counters behind, which
        // are still the best information there is.
        self.members
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a socket slot for `user_id`, or refuses past `max`.
    pub fn reserve(self: &Arc<Self>, user_id: Uuid, max: usize) -> Result<Slot, TooManySockets> {
        let mut members = self.members();
        let member = members.entry(user_id).or_default();
        if member.sockets >= max {
            return Err(TooManySockets);
        }
        member.sockets += 1;
        Ok(Slot {
            presence: self.clone(),
            user_id,
            joined: false.into(),
        })
    }

    /// The user's rooms, when they have a joined socket here.
    pub fn inbox(&self, user_id: Uuid) -> Option<Inbox> {
        self.members().get(&user_id).and_then(|m| m.inbox)
    }

    /// Records the user's rooms after a change; only for users online here.
    pub fn set_inbox(&self, inbox: Inbox) {
        if let Some(member) = self.members().get_mut(&inbox.user_id) {
            member.inbox = Some(inbox);
        }
    }

    /// The online users (with a joined socket) that an audience reaches.
    pub fn addressed(&self, audience: Audience) -> Vec<Inbox> {
        let members = self.members();
        if let Audience::User(id) = audience {
            return members
                .get(&id)
                .filter(|m| m.joined > 0)
                .and_then(|m| m.inbox)
                .into_iter()
                .collect();
        }
        members
            .values()
            .filter(|m| m.joined > 0)
            .filter_map(|m| m.inbox)
            .filter(|inbox| audience.reaches(inbox))
            .collect()
    }

    /// (users with a socket, sockets) on this instance.
    pub fn totals(&self) -> (usize, usize) {
        let members = self.members();
        (members.len(), members.values().map(|m| m.sockets).sum())
    }

    fn release(&self, user_id: Uuid, joined: bool) {
        let mut members = self.members();
        if let Entry::Occupied(mut entry) = members.entry(user_id) {
            let member = entry.get_mut();
            member.sockets = member.sockets.saturating_sub(1);
            if joined {
                member.joined = member.joined.saturating_sub(1);
            }
            if member.sockets == 0 {
                entry.remove();
            }
        }
    }
}

impl Slot {
    pub fn user_id(&self) -> Uuid {
        self.user_id
    }

    /// The socket is in its rooms now; `inbox` is the user's state at the
    /// dispatched position (the caller holds the tail's progress lock).
    pub fn join(&self, inbox: Inbox) {
        use std::sync::atomic::Ordering;
        let mut members = self.presence.members();
        if let Some(member) = members.get_mut(&self.user_id) {
            member.inbox = Some(inbox);
            if !self.joined.swap(true, Ordering::SeqCst) {
                member.joined += 1;
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.presence.release(self.user_id, *self.joined.get_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inbox(user: Uuid, sector: Option<Uuid>, admin: bool) -> Inbox {
        Inbox {
            user_id: user,
            sector_id: sector,
            is_admin: admin,
        }
    }

    #[test]
    fn slots_are_limited_per_user_and_released_on_drop() {
        let presence = Arc::new(Presence::default());
        let user = Uuid::new_v4();
        let a = presence.reserve(user, 2).unwrap();
        let b = presence.reserve(user, 2).unwrap();
        assert_eq!(presence.reserve(user, 2).unwrap_err(), TooManySockets);
        drop(a);
        let c = presence.reserve(user, 2).unwrap();
        assert_eq!(presence.totals(), (1, 2));
        drop((b, c));
        assert_eq!(presence.totals(), (0, 0));
    }

    #[test]
    fn only_joined_users_are_addressed() {
        let presence = Arc::new(Presence::default());
        let sector = Uuid::new_v4();
        let (u1, u2, u3) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let s1 = presence.reserve(u1, 5).unwrap();
        let s2 = presence.reserve(u2, 5).unwrap();
        let _syncing = presence.reserve(u3, 5).unwrap();
        s1.join(inbox(u1, Some(sector), false));
        s2.join(inbox(u2, None, true));
        assert_eq!(
            presence.addressed(Audience::Sector(sector)),
            vec![inbox(u1, Some(sector), false)]
        );
        assert_eq!(
            presence.addressed(Audience::Admins),
            vec![inbox(u2, None, true)]
        );
        assert_eq!(presence.addressed(Audience::All).len(), 2);
        assert!(presence.addressed(Audience::User(u3)).is_empty());
    }
}
