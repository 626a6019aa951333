//! Who is online on this instance: per user, how many sockets they hold and
//! which rooms their notifications come through.
//!
//! The map answers "which online users does this event address" without a
//! query, so a broadcast to a sector costs one lookup per online member, and
//! it enforces `HERALD_MAX_SOCKETS_PER_USER`. A socket holds a [`Slot`] from
//! the handshake on; dropping the slot (with the socket) releases it, so the
//! count cannot leak. It never holds `SocketRef`s: sockets live in
//! socketioxide's rooms.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use uuid::Uuid;

use socketioxide::socket::Sid;

use crate::audience::Audience;
use crate::db::inbox::Inbox;
use crate::preferences::Rules;
use crate::unread::{Change, Effect, Unread, View};

#[derive(Debug, Default)]
struct Member {
    /// Sockets past the handshake, joined or still syncing.
    sockets: usize,
    /// Sockets in their rooms, receiving live events.
    joined: usize,
    /// Set when the first socket joins, kept at the dispatched position
    /// while one is joined, dropped when the last leaves.
    live: Option<Live>,
    /// The views their sockets watch (`counts.watch`), by socket; a
    /// socket's goes when it leaves, all go with the last.
    watches: HashMap<Sid, Watch>,
}

/// A joined user's rooms, unread notifications and `IN_APP` rules.
#[derive(Debug)]
struct Live {
    inbox: Inbox,
    unread: Unread,
    in_app: Rules,
}

/// One socket's watched views (`counts.watch`) and the counts it was last
/// sent.
#[derive(Debug, Clone)]
pub struct Watch {
    pub views: Vec<(String, View)>,
    last: Option<BTreeMap<String, i64>>,
}

impl Watch {
    pub fn new(views: Vec<(String, View)>) -> Self {
        Self { views, last: None }
    }

    /// The counts as `unread` gives them, when it knows them.
    fn counts(&self, unread: &Unread) -> Option<BTreeMap<String, i64>> {
        self.views
            .iter()
            .map(|(name, view)| Some((name.clone(), unread.count_of(view)?)))
            .collect()
    }
}

/// What one event did to the users it reached here.
#[derive(Debug, Default, PartialEq)]
pub struct Reached {
    /// Every user it reached.
    pub users: Vec<Uuid>,
    /// Those whose unread count moved, with the count or a request for one.
    pub counts: Vec<(Uuid, Change)>,
}

#[derive(Debug, Default)]
pub struct Presence {
    members: Mutex<HashMap<Uuid, Member>>,
    /// The sum of the members' `sockets`, kept beside them (changed only
    /// under their lock) so the totals cost no walk over every member.
    sockets: AtomicUsize,
    /// Numbers reloads of unread sets (see [`Unread::Reloading`]).
    reloads: AtomicU64,
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
        self.sockets.fetch_add(1, Ordering::Relaxed);
        Ok(Slot {
            presence: self.clone(),
            user_id,
            joined: false.into(),
        })
    }

    /// The user's rooms, when they have a joined socket here.
    pub fn inbox(&self, user_id: Uuid) -> Option<Inbox> {
        self.members()
            .get(&user_id)
            .and_then(|m| m.live.as_ref())
            .map(|live| live.inbox)
    }

    /// The user's rooms, when they have a joined socket here and more unread
    /// than this instance keeps: their count is the database's to give.
    pub fn untracked(&self, user_id: Uuid) -> Option<Inbox> {
        self.members()
            .get(&user_id)
            .and_then(|m| m.live.as_ref())
            .filter(|live| live.unread == Unread::Untracked)
            .map(|live| live.inbox)
    }

    /// Whether any user here is counted by the database.
    pub fn has_untracked(&self) -> bool {
        self.members()
            .values()
            .filter_map(|m| m.live.as_ref())
            .any(|live| live.unread == Unread::Untracked)
    }

    /// The online users (with a joined socket) that an audience reaches.
    pub fn addressed(&self, audience: Audience) -> Vec<Inbox> {
        let members = self.members();
        let live = |m: &Member| m.live.as_ref().map(|live| live.inbox);
        if let Audience::User(id) = audience {
            return members.get(&id).and_then(live).into_iter().collect();
        }
        members
            .values()
            .filter_map(live)
            .filter(|inbox| audience.reaches(inbox))
            .collect()
    }

    /// Applies a run of events for one audience to the unread notifications
    /// of the users it reaches here, in order.
    pub fn reach(&self, audience: Audience, effects: &[Effect], limit: usize) -> Reached {
        let mut members = self.members();
        let mut reached = Reached::default();
        let reloads = &self.reloads;
        let mut visit = |user_id: Uuid, live: &mut Live| {
            reached.users.push(user_id);
            let before = live.unread.count();
            let (mut asked, mut reload) = (false, false);
            for effect in effects {
                if let Effect::Rules(rules) = effect {
                    live.in_app = rules.clone();
                }
                if effect.reloads() {
                    // What follows is in the reload's snapshot or after it.
                    live.unread = Unread::Reloading(reloads.fetch_add(1, Ordering::Relaxed));
                    reload = true;
                }
                asked |= live.unread.apply(effect, &live.in_app, limit) == Change::Query;
            }
            // A run that ends where it began (a notification created and
            // read at once) tells nobody anything.
            let change = match live.unread.count() {
                _ if reload => Change::Reload,
                _ if asked => Change::Query,
                Some(count) if Some(count) != before => Change::Count(count),
                Some(_) | None => Change::Unchanged,
            };
            if change != Change::Unchanged {
                reached.counts.push((user_id, change));
            }
        };
        if let Audience::User(id) = audience {
            if let Some(live) = members.get_mut(&id).and_then(|m| m.live.as_mut()) {
                visit(id, live);
            }
            return reached;
        }
        for (user_id, member) in members.iter_mut() {
            if let Some(live) = member.live.as_mut().filter(|l| audience.reaches(&l.inbox)) {
                visit(*user_id, live);
            }
        }
        reached
    }

    /// A joined user's rooms (or what shows them) changed: records them,
    /// and sets their unread notifications aside to be read again. The
    /// reload's number, when they are joined here.
    pub fn rooms_changed(&self, inbox: Inbox) -> Option<u64> {
        let mut members = self.members();
        let live = members.get_mut(&inbox.user_id)?.live.as_mut()?;
        let reload = self.reloads.fetch_add(1, Ordering::Relaxed);
        live.inbox = inbox;
        live.unread = Unread::Reloading(reload);
        Some(reload)
    }

    /// A joined user's `IN_APP` rules.
    pub fn in_app(&self, user_id: Uuid) -> Option<Rules> {
        let members = self.members();
        Some(members.get(&user_id)?.live.as_ref()?.in_app.clone())
    }

    /// The rules of the users an audience reaches here who mute something:
    /// those a notification to it may have to skip.
    pub fn muting(&self, audience: Audience) -> HashMap<Uuid, Rules> {
        let members = self.members();
        let muting = |(user_id, member): (&Uuid, &Member)| {
            let live = member.live.as_ref()?;
            (!live.in_app.mutes_nothing() && audience.reaches(&live.inbox))
                .then(|| (*user_id, live.in_app.clone()))
        };
        if let Audience::User(id) = audience {
            return members
                .get_key_value(&id)
                .and_then(muting)
                .into_iter()
                .collect();
        }
        members.iter().filter_map(muting).collect()
    }

    /// Sets what a socket of a joined user watches, replacing what it
    /// watched. The counts, when they are known here (they are then
    /// recorded as sent); `None`: the caller asks the database.
    pub fn watch(
        &self,
        user_id: Uuid,
        sid: Sid,
        mut watch: Watch,
    ) -> Option<BTreeMap<String, i64>> {
        let mut members = self.members();
        let member = members.get_mut(&user_id)?;
        watch.last = member.live.as_ref().and_then(|l| watch.counts(&l.unread));
        let counts = watch.last.clone();
        member.watches.insert(sid, watch);
        counts
    }

    /// Forgets a socket's watch (it left).
    pub fn unwatch(&self, user_id: Uuid, sid: Sid) {
        if let Some(member) = self.members().get_mut(&user_id) {
            member.watches.remove(&sid);
        }
    }

    /// The watches of a user's sockets whose counts moved since they were
    /// last sent, with the counts to send (recorded as sent).
    pub fn moved_views(&self, user_id: Uuid) -> Vec<(Sid, BTreeMap<String, i64>)> {
        let mut members = self.members();
        let Some(member) = members.get_mut(&user_id) else {
            return Vec::new();
        };
        let Some(live) = member.live.as_ref() else {
            return Vec::new();
        };
        member
            .watches
            .iter_mut()
            .filter_map(|(sid, watch)| {
                let counts = watch.counts(&live.unread)?;
                (watch.last.as_ref() != Some(&counts)).then(|| {
                    watch.last = Some(counts.clone());
                    (*sid, counts)
                })
            })
            .collect()
    }

    /// The watches of a user, for the database to count.
    pub fn watches(&self, user_id: Uuid) -> Vec<(Sid, Vec<(String, View)>)> {
        let members = self.members();
        let Some(member) = members.get(&user_id) else {
            return Vec::new();
        };
        member
            .watches
            .iter()
            .map(|(sid, watch)| (*sid, watch.views.clone()))
            .collect()
    }

    /// Installs a reload's result, when it is still the one awaited for
    /// `inbox`; what the count is then, or `None` when it was overtaken.
    pub fn reloaded(&self, reload: u64, inbox: Inbox, unread: Unread) -> Option<Change> {
        let mut members = self.members();
        let live = members.get_mut(&inbox.user_id)?.live.as_mut()?;
        if live.unread != Unread::Reloading(reload) || live.inbox != inbox {
            return None;
        }
        live.unread = unread;
        Some(live.unread.as_change())
    }

    /// A user awaiting a reload: their rooms and the reload's number.
    pub fn reloading(&self, user_id: Uuid) -> Option<(Inbox, u64)> {
        let members = self.members();
        let live = members.get(&user_id)?.live.as_ref()?;
        match live.unread {
            Unread::Reloading(reload) => Some((live.inbox, reload)),
            _ => None,
        }
    }

    /// Drops what expired by `now` from every joined user's unread
    /// notifications; the counts that fell.
    pub fn expire(&self, now: time::OffsetDateTime) -> Vec<(Uuid, i64)> {
        let mut members = self.members();
        let mut fell = Vec::new();
        for (user_id, member) in members.iter_mut() {
            let Some(live) = member.live.as_mut() else {
                continue;
            };
            if live.unread.next_expiry().is_some_and(|at| at <= now)
                && let Change::Count(count) = live.unread.expire(now)
            {
                fell.push((*user_id, count));
            }
        }
        fell
    }

    /// (users with a socket, sockets) on this instance.
    pub fn totals(&self) -> (usize, usize) {
        let members = self.members();
        (members.len(), self.sockets.load(Ordering::Relaxed))
    }

    fn release(&self, user_id: Uuid, joined: bool) {
        let mut members = self.members();
        if let Entry::Occupied(mut entry) = members.entry(user_id) {
            let member = entry.get_mut();
            if member.sockets > 0 {
                member.sockets -= 1;
                self.sockets.fetch_sub(1, Ordering::Relaxed);
            }
            if joined {
                member.joined = member.joined.saturating_sub(1);
                if member.joined == 0 {
                    // Nothing keeps it current any more; the next socket
                    // to join reads it afresh.
                    member.live = None;
                }
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

    /// The socket is in its rooms now. `inbox` and `unread` are the user's
    /// at the dispatched position (the caller holds the tail's progress
    /// lock); `unread` is kept only when no other socket of theirs is joined,
    /// since theirs is already current. Their count as kept.
    pub fn join(&self, inbox: Inbox, in_app: Rules, unread: impl FnOnce() -> Unread) -> Change {
        let mut members = self.presence.members();
        let Some(member) = members.get_mut(&self.user_id) else {
            return Change::Unchanged;
        };
        if !self.joined.swap(true, Ordering::SeqCst) {
            member.joined += 1;
        }
        let live = member.live.get_or_insert_with(|| Live {
            inbox,
            unread: unread(),
            in_app,
        });
        live.inbox = inbox;
        live.unread.as_change()
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
    use crate::unread::Subject;

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
        let other = presence.reserve(Uuid::new_v4(), 2).unwrap();
        assert_eq!(presence.totals(), (2, 3), "every user's sockets add up");
        drop((b, c));
        assert_eq!(presence.totals(), (1, 1));
        drop(other);
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
        s1.join(inbox(u1, Some(sector), false), Rules::none(), none_unread);
        s2.join(inbox(u2, None, true), Rules::none(), none_unread);
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

    fn none_unread() -> Unread {
        Unread::load([], 10)
    }

    fn adds(id: Uuid) -> Effect {
        Effect::Adds {
            id,
            expires_at: None,
            subject: Subject::new("order.shipped", "normal"),
        }
    }

    #[test]
    fn a_run_moves_the_counts_of_those_it_reaches_and_reports_the_last() {
        let presence = Arc::new(Presence::default());
        let sector = Uuid::new_v4();
        let (u1, u2) = (Uuid::new_v4(), Uuid::new_v4());
        let s1 = presence.reserve(u1, 5).unwrap();
        let s2 = presence.reserve(u2, 5).unwrap();
        s1.join(inbox(u1, Some(sector), false), Rules::none(), none_unread);
        s2.join(inbox(u2, None, false), Rules::none(), none_unread);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let reached = presence.reach(Audience::Sector(sector), &[adds(a), adds(b)], 10);
        assert_eq!(reached.users, vec![u1]);
        assert_eq!(reached.counts, vec![(u1, Change::Count(2))]);
        // A read of one of them by u1, and one by u2 of something not theirs.
        let read = presence.reach(Audience::User(u1), &[Effect::Removes(a)], 10);
        assert_eq!(read.counts, vec![(u1, Change::Count(1))]);
        let c = Uuid::new_v4();
        let at_once = presence.reach(Audience::User(u1), &[adds(c), Effect::Removes(c)], 10);
        assert!(at_once.counts.is_empty(), "created and read in one run");
        let stray = presence.reach(Audience::User(u2), &[Effect::Removes(b)], 10);
        assert_eq!((stray.users, stray.counts), (vec![u2], vec![]));
        // Past the limit, the database counts them.
        let flood = presence.reach(Audience::All, &[adds(Uuid::new_v4())], 1);
        let counts: HashMap<Uuid, Change> = flood.counts.into_iter().collect();
        assert_eq!(
            counts,
            HashMap::from([(u1, Change::Query), (u2, Change::Count(1))])
        );
        assert_eq!(presence.untracked(u1), Some(inbox(u1, Some(sector), false)));
        assert!(presence.has_untracked());
    }

    #[test]
    fn a_second_socket_keeps_the_set_the_first_keeps_current() {
        let presence = Arc::new(Presence::default());
        let user = Uuid::new_v4();
        let first = presence.reserve(user, 5).unwrap();
        let second = presence.reserve(user, 5).unwrap();
        assert_eq!(
            first.join(inbox(user, None, false), Rules::none(), none_unread),
            Change::Count(0)
        );
        presence.reach(Audience::User(user), &[adds(Uuid::new_v4())], 10);
        let stale = || panic!("a joined user's set is current; a newer socket's is not read");
        assert_eq!(
            second.join(inbox(user, None, false), Rules::none(), stale),
            Change::Count(1)
        );
        drop(first);
        assert_eq!(
            presence.addressed(Audience::All).len(),
            1,
            "one socket left"
        );
        drop(second);
        // Nobody joined: nothing keeps a set current, so none is kept.
        let third = presence.reserve(user, 5).unwrap();
        assert!(presence.addressed(Audience::All).is_empty());
        assert_eq!(
            third.join(inbox(user, None, false), Rules::none(), none_unread),
            Change::Count(0)
        );
    }

    #[test]
    fn a_reload_is_installed_only_while_it_is_the_one_awaited() {
        let presence = Arc::new(Presence::default());
        let (user, sector) = (Uuid::new_v4(), Uuid::new_v4());
        let slot = presence.reserve(user, 5).unwrap();
        slot.join(inbox(user, None, false), Rules::none(), none_unread);
        let moved = inbox(user, Some(sector), false);
        let first = presence.rooms_changed(moved).unwrap();
        assert_eq!(presence.reloading(user), Some((moved, first)));
        let quiet = presence.reach(Audience::User(user), &[adds(Uuid::new_v4())], 10);
        assert!(quiet.counts.is_empty(), "the reload will include it");
        let again = inbox(user, None, true);
        let second = presence.rooms_changed(again).unwrap();
        let loaded = || Unread::load([(Uuid::new_v4(), None, Subject::new("k", "low"))], 10);
        assert_eq!(presence.reloaded(first, moved, loaded()), None, "overtaken");
        assert_eq!(
            presence.reloaded(second, moved, loaded()),
            None,
            "other rooms"
        );
        assert_eq!(
            presence.reloaded(second, again, loaded()),
            Some(Change::Count(1))
        );
        assert_eq!(presence.reloading(user), None);
        assert_eq!(
            presence.rooms_changed(inbox(Uuid::new_v4(), None, false)),
            None
        );
    }

    #[test]
    fn expiries_lower_only_the_counts_they_touch() {
        let presence = Arc::new(Presence::default());
        let (u1, u2) = (Uuid::new_v4(), Uuid::new_v4());
        let s1 = presence.reserve(u1, 5).unwrap();
        let s2 = presence.reserve(u2, 5).unwrap();
        s1.join(inbox(u1, None, false), Rules::none(), none_unread);
        s2.join(inbox(u2, None, false), Rules::none(), none_unread);
        let now = time::OffsetDateTime::now_utc();
        let brief = Effect::Adds {
            id: Uuid::new_v4(),
            expires_at: Some(now),
            subject: Subject::new("order.shipped", "normal"),
        };
        presence.reach(Audience::User(u1), &[brief, adds(Uuid::new_v4())], 10);
        presence.reach(Audience::User(u2), &[adds(Uuid::new_v4())], 10);
        assert_eq!(presence.expire(now), vec![(u1, 1)]);
        assert!(presence.expire(now).is_empty());
    }
}
