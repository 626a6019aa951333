//! Unread counts kept in memory, moved by the log.
//!
//! A user's unread count is read once, when their first socket on this
//! instance connects, in the same snapshot as the pending push: as the ids
//! of what they have unread, not only their number. From then on each event
//! dispatched to them moves it: a new notification that reaches them adds
//! its id, their read, a retraction or an expiry removes one. Holding ids
//! rather than a number is what keeps the count exact: a read, retraction or
//! expiry lowers it only if its notification was unread and addressed to
//! this user, which the set answers and a number cannot.
//!
//! The set is bounded: a user with more unread than the limit
//! (`HERALD_UNREAD_TRACKED`) is counted by the database instead, once per
//! batch of changes, as every user was before (gateway::counts). A change of
//! rooms reads the set again, since other broadcasts now reach them.

use std::collections::{BTreeSet, HashSet, VecDeque};

use time::OffsetDateTime;
use uuid::Uuid;

/// What an event does to the unread notifications of the users it reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Nothing (a user change is applied as a change of rooms).
    None,
    /// A new notification: unread until read, retracted or expired.
    Adds {
        id: Uuid,
        expires_at: Option<OffsetDateTime>,
    },
    /// A read, or a retraction: no longer unread, if it was.
    Removes(Uuid),
}

/// One user's unread notifications, as of the dispatched position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unread {
    Tracked(Tracked),
    /// More than the limit unread: the database counts them on each change.
    Untracked,
    /// Their rooms changed and their unread notifications are being read
    /// again; the number tells reloads apart, so an outdated one is dropped.
    Reloading(u64),
}

/// The ids, and those that expire in expiry order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tracked {
    ids: HashSet<Uuid>,
    expiring: BTreeSet<(OffsetDateTime, Uuid)>,
    /// The latest removals of ids the set did not hold. Two transactions
    /// that become visible in one step are dispatched in transaction id
    /// order, which is not always commit order: a read can come just
    /// before the creation it reads. A notification is created once, so an
    /// id removed before it was added is never unread.
    removed_first: VecDeque<Uuid>,
}

/// How many removals of absent ids a set remembers.
const REMOVED_FIRST: usize = 16;

/// A count after a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Unchanged,
    /// The new count, known here.
    Count(i64),
    /// It changed and only the database can say to what.
    Query,
}

impl Unread {
    /// The set read from the database, or [`Unread::Untracked`] past `limit`.
    pub fn load(
        unread: impl IntoIterator<Item = (Uuid, Option<OffsetDateTime>)>,
        limit: usize,
    ) -> Self {
        let mut tracked = Tracked::default();
        for (id, expires_at) in unread {
            tracked.add(id, expires_at);
            if tracked.ids.len() > limit {
                return Self::Untracked;
            }
        }
        Self::Tracked(tracked)
    }

    /// The count, when it is known here.
    pub fn count(&self) -> Option<i64> {
        match self {
            Self::Tracked(tracked) => Some(tracked.count()),
            Self::Untracked | Self::Reloading(_) => None,
        }
    }

    /// The count as a [`Change`] to push: known here, the database's to
    /// give, or on its way with a reload.
    pub fn as_change(&self) -> Change {
        match self {
            Self::Tracked(tracked) => Change::Count(tracked.count()),
            Self::Untracked => Change::Query,
            Self::Reloading(_) => Change::Unchanged,
        }
    }

    /// Applies an event's effect; past `limit` the set is given up.
    pub fn apply(&mut self, effect: Effect, limit: usize) -> Change {
        let Self::Tracked(tracked) = self else {
            return match (self, effect) {
                (_, Effect::None) | (Self::Reloading(_), _) => Change::Unchanged,
                _ => Change::Query,
            };
        };
        let changed = match effect {
            Effect::None => false,
            Effect::Adds { id, expires_at } => tracked.add(id, expires_at),
            Effect::Removes(id) => tracked.remove(id),
        };
        if !changed {
            Change::Unchanged
        } else if tracked.ids.len() > limit {
            *self = Self::Untracked;
            Change::Query
        } else {
            Change::Count(tracked.count())
        }
    }

    /// When the next of its notifications expires, if one does.
    pub fn next_expiry(&self) -> Option<OffsetDateTime> {
        match self {
            Self::Tracked(tracked) => tracked.expiring.first().map(|(at, _)| *at),
            Self::Untracked | Self::Reloading(_) => None,
        }
    }

    /// Drops what expired by `now`.
    pub fn expire(&mut self, now: OffsetDateTime) -> Change {
        let Self::Tracked(tracked) = self else {
            return Change::Unchanged;
        };
        let mut changed = false;
        while let Some(&(at, id)) = tracked.expiring.first() {
            if at > now {
                break;
            }
            tracked.expiring.pop_first();
            changed |= tracked.ids.remove(&id);
        }
        if changed {
            Change::Count(tracked.count())
        } else {
            Change::Unchanged
        }
    }
}

impl Tracked {
    fn count(&self) -> i64 {
        i64::try_from(self.ids.len()).unwrap_or(i64::MAX)
    }

    fn add(&mut self, id: Uuid, expires_at: Option<OffsetDateTime>) -> bool {
        if self.removed_first.contains(&id) {
            return false;
        }
        let added = self.ids.insert(id);
        if let (true, Some(at)) = (added, expires_at) {
            self.expiring.insert((at, id));
        }
        added
    }

    fn remove(&mut self, id: Uuid) -> bool {
        // Its expiry entry, if any, stays until its time and then finds
        // nothing to remove: cheaper than a search by id now.
        let removed = self.ids.remove(&id);
        if !removed {
            if self.removed_first.len() == REMOVED_FIRST {
                self.removed_first.pop_front();
            }
            self.removed_first.push_back(id);
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-02 09:00 UTC);

    fn ids(n: u128) -> Vec<(Uuid, Option<OffsetDateTime>)> {
        (0..n).map(|i| (Uuid::from_u128(i), None)).collect()
    }

    #[test]
    fn a_loaded_set_counts_its_ids_and_gives_up_past_the_limit() {
        assert_eq!(Unread::load(ids(3), 3).count(), Some(3));
        assert_eq!(Unread::load(ids(4), 3), Unread::Untracked);
        assert_eq!(Unread::load(ids(0), 3).count(), Some(0));
    }

    #[test]
    fn adds_and_removes_move_the_count_only_for_what_was_unread() {
        let mut unread = Unread::load(ids(2), 10);
        let new = Uuid::new_v4();
        let adds = Effect::Adds {
            id: new,
            expires_at: None,
        };
        assert_eq!(unread.apply(adds, 10), Change::Count(3));
        assert_eq!(unread.apply(adds, 10), Change::Unchanged, "once only");
        assert_eq!(unread.apply(Effect::Removes(new), 10), Change::Count(2));
        assert_eq!(
            unread.apply(Effect::Removes(new), 10),
            Change::Unchanged,
            "a second read, or a retraction of a read one"
        );
        assert_eq!(
            unread.apply(Effect::Removes(Uuid::new_v4()), 10),
            Change::Unchanged,
            "a read of something never addressed to them"
        );
        assert_eq!(unread.apply(Effect::None, 10), Change::Unchanged);
    }

    #[test]
    fn a_read_dispatched_before_its_creation_leaves_it_read() {
        let mut unread = Unread::load(ids(0), 10);
        let id = Uuid::new_v4();
        assert_eq!(unread.apply(Effect::Removes(id), 10), Change::Unchanged);
        let adds = Effect::Adds {
            id,
            expires_at: None,
        };
        assert_eq!(unread.apply(adds, 10), Change::Unchanged);
        assert_eq!(unread.count(), Some(0));
    }

    #[test]
    fn growing_past_the_limit_hands_the_count_to_the_database() {
        let mut unread = Unread::load(ids(2), 2);
        let adds = Effect::Adds {
            id: Uuid::new_v4(),
            expires_at: None,
        };
        assert_eq!(unread.apply(adds, 2), Change::Query);
        assert_eq!(unread, Unread::Untracked);
        assert_eq!(
            unread.apply(Effect::Removes(Uuid::new_v4()), 2),
            Change::Query
        );
        assert_eq!(unread.apply(Effect::None, 2), Change::Unchanged);
        assert_eq!(unread.count(), None);
    }

    #[test]
    fn a_reloading_set_ignores_events_its_reload_will_include() {
        let mut unread = Unread::Reloading(1);
        let adds = Effect::Adds {
            id: Uuid::new_v4(),
            expires_at: None,
        };
        assert_eq!(unread.apply(adds, 10), Change::Unchanged);
        assert_eq!(unread.expire(NOW), Change::Unchanged);
    }

    #[test]
    fn expiries_fall_due_in_order_and_skip_what_was_already_read() {
        let (soon, later, read) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let at = |minutes| Some(NOW + time::Duration::minutes(minutes));
        let mut unread = Unread::load(
            [
                (soon, at(1)),
                (later, at(10)),
                (read, at(2)),
                (Uuid::new_v4(), None),
            ],
            10,
        );
        assert_eq!(unread.next_expiry(), at(1));
        unread.apply(Effect::Removes(read), 10);
        assert_eq!(unread.expire(NOW), Change::Unchanged);
        assert_eq!(
            unread.expire(NOW + time::Duration::minutes(5)),
            Change::Count(2)
        );
        assert_eq!(unread.next_expiry(), at(10));
        assert_eq!(
            unread.expire(NOW + time::Duration::minutes(10)),
            Change::Count(1)
        );
        assert_eq!(unread.next_expiry(), None);
    }
}
