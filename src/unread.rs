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
//! rooms reads the set again, since other broadcasts now reach them, and so
//! does a change of what shows (a snooze, new preferences).
//!
//! The set holds what shows: unread, not snoozed, not muted for `IN_APP`.
//! Each id keeps its kind and importance, so the counts of filtered views
//! ([`View`]) come from the same set.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::preferences::{Pattern, Rules};

/// What preferences and views select a notification by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subject {
    pub kind: Arc<str>,
    pub importance: Arc<str>,
}

impl Subject {
    pub fn new(kind: &str, importance: &str) -> Self {
        Self {
            kind: kind.into(),
            importance: importance.into(),
        }
    }

    /// Whether a user with these `IN_APP` rules is shown it.
    pub fn shown(&self, rules: &Rules) -> bool {
        rules.enabled(&self.kind, &self.importance)
    }
}

/// A filtered view of the inbox (`counts.watch`): kinds matching any of
/// its patterns, importance any of its levels; `None` is no filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    pub kinds: Option<Vec<Pattern>>,
    pub importance: Option<Vec<String>>,
}

impl View {
    /// The kind patterns as SQL takes them (`herald.kind_matches`).
    pub fn kind_patterns(&self) -> Option<Vec<&str>> {
        self.kinds
            .as_ref()
            .map(|kinds| kinds.iter().map(|k| k.as_str()).collect())
    }

    pub fn selects(&self, subject: &Subject) -> bool {
        self.kinds
            .as_ref()
            .is_none_or(|kinds| kinds.iter().any(|k| k.matches(&subject.kind)))
            && self
                .importance
                .as_ref()
                .is_none_or(|levels| levels.iter().any(|l| **l == *subject.importance))
    }
}

/// What an event does to the unread notifications of the users it reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Nothing (a user change is applied as a change of rooms).
    None,
    /// A notification to show: unread until read, retracted or expired;
    /// counted only by those who do not mute its kind.
    Adds {
        id: Uuid,
        expires_at: Option<OffsetDateTime>,
        subject: Subject,
    },
    /// A read, or a retraction: no longer unread, if it was.
    Removes(Uuid),
    /// What shows changed in a way only the database can say (a snooze):
    /// the set is read again.
    Reload,
    /// New `IN_APP` rules: kept for what follows, and the set read again.
    Rules(Rules),
}

impl Effect {
    /// The subject of a notification this shows, which preferences may mute.
    pub fn shows(&self) -> Option<&Subject> {
        match self {
            Self::Adds { subject, .. } => Some(subject),
            _ => None,
        }
    }

    /// Whether the set must be read again after it.
    pub fn reloads(&self) -> bool {
        matches!(self, Self::Reload | Self::Rules(_))
    }
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

/// The ids with their subjects, and those that expire in expiry order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tracked {
    ids: HashMap<Uuid, Subject>,
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
    /// What shows changed: the set is being read again (a reload).
    Reload,
}

impl Unread {
    /// The set read from the database, or [`Unread::Untracked`] past `limit`.
    pub fn load(
        unread: impl IntoIterator<Item = (Uuid, Option<OffsetDateTime>, Subject)>,
        limit: usize,
    ) -> Self {
        let mut tracked = Tracked::default();
        for (id, expires_at, subject) in unread {
            tracked.add(id, expires_at, subject);
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

    /// How many of those counted a view selects, when it is known here.
    pub fn count_of(&self, view: &View) -> Option<i64> {
        match self {
            Self::Tracked(tracked) => {
                let n = tracked.ids.values().filter(|s| view.selects(s)).count();
                Some(i64::try_from(n).unwrap_or(i64::MAX))
            }
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

    /// Applies an event's effect for a user with these `IN_APP` rules;
    /// past `limit` the set is given up. A reload ([`Effect::reloads`]) is
    /// the caller's to start: it changes nothing here.
    pub fn apply(&mut self, effect: &Effect, rules: &Rules, limit: usize) -> Change {
        let Self::Tracked(tracked) = self else {
            return match (&*self, effect) {
                (_, Effect::None | Effect::Reload | Effect::Rules(_)) | (Self::Reloading(_), _) => {
                    Change::Unchanged
                }
                (_, Effect::Adds { subject, .. }) if !subject.shown(rules) => Change::Unchanged,
                _ => Change::Query,
            };
        };
        let changed = match effect {
            Effect::None | Effect::Reload | Effect::Rules(_) => false,
            Effect::Adds {
                id,
                expires_at,
                subject,
            } => subject.shown(rules) && tracked.add(*id, *expires_at, subject.clone()),
            Effect::Removes(id) => tracked.remove(*id),
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
            changed |= tracked.ids.remove(&id).is_some();
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

    fn add(&mut self, id: Uuid, expires_at: Option<OffsetDateTime>, subject: Subject) -> bool {
        if self.removed_first.contains(&id) {
            return false;
        }
        let added = self.ids.insert(id, subject).is_none();
        if let (true, Some(at)) = (added, expires_at) {
            self.expiring.insert((at, id));
        }
        added
    }

    fn remove(&mut self, id: Uuid) -> bool {
        // Its expiry entry, if any, stays until its time and then finds
        // nothing to remove: cheaper than a search by id now.
        let removed = self.ids.remove(&id).is_some();
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

    fn subject() -> Subject {
        Subject::new("order.shipped", "normal")
    }

    fn ids(n: u128) -> Vec<(Uuid, Option<OffsetDateTime>, Subject)> {
        (0..n)
            .map(|i| (Uuid::from_u128(i), None, subject()))
            .collect()
    }

    fn adds(id: Uuid) -> Effect {
        Effect::Adds {
            id,
            expires_at: None,
            subject: subject(),
        }
    }

    const ALL: Rules = Rules::none();

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
        let adds = adds(new);
        assert_eq!(unread.apply(&adds, &ALL, 10), Change::Count(3));
        assert_eq!(
            unread.apply(&adds, &ALL, 10),
            Change::Unchanged,
            "once only"
        );
        assert_eq!(
            unread.apply(&Effect::Removes(new), &ALL, 10),
            Change::Count(2)
        );
        assert_eq!(
            unread.apply(&Effect::Removes(new), &ALL, 10),
            Change::Unchanged,
            "a second read, or a retraction of a read one"
        );
        assert_eq!(
            unread.apply(&Effect::Removes(Uuid::new_v4()), &ALL, 10),
            Change::Unchanged,
            "a read of something never addressed to them"
        );
        assert_eq!(unread.apply(&Effect::None, &ALL, 10), Change::Unchanged);
    }

    #[test]
    fn a_read_dispatched_before_its_creation_leaves_it_read() {
        let mut unread = Unread::load(ids(0), 10);
        let id = Uuid::new_v4();
        assert_eq!(
            unread.apply(&Effect::Removes(id), &ALL, 10),
            Change::Unchanged
        );
        assert_eq!(unread.apply(&adds(id), &ALL, 10), Change::Unchanged);
        assert_eq!(unread.count(), Some(0));
    }

    #[test]
    fn growing_past_the_limit_hands_the_count_to_the_database() {
        let mut unread = Unread::load(ids(2), 2);
        let adds = adds(Uuid::new_v4());
        assert_eq!(unread.apply(&adds, &ALL, 2), Change::Query);
        assert_eq!(unread, Unread::Untracked);
        assert_eq!(
            unread.apply(&Effect::Removes(Uuid::new_v4()), &ALL, 2),
            Change::Query
        );
        assert_eq!(unread.apply(&Effect::None, &ALL, 2), Change::Unchanged);
        assert_eq!(unread.count(), None);
    }

    #[test]
    fn a_reloading_set_ignores_events_its_reload_will_include() {
        let mut unread = Unread::Reloading(1);
        let adds = adds(Uuid::new_v4());
        assert_eq!(unread.apply(&adds, &ALL, 10), Change::Unchanged);
        assert_eq!(unread.expire(NOW), Change::Unchanged);
    }

    #[test]
    fn expiries_fall_due_in_order_and_skip_what_was_already_read() {
        let (soon, later, read) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let at = |minutes| Some(NOW + time::Duration::minutes(minutes));
        let mut unread = Unread::load(
            [
                (soon, at(1), subject()),
                (later, at(10), subject()),
                (read, at(2), subject()),
                (Uuid::new_v4(), None, subject()),
            ],
            10,
        );
        assert_eq!(unread.next_expiry(), at(1));
        unread.apply(&Effect::Removes(read), &ALL, 10);
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

#[cfg(test)]
mod shown {
    use super::*;
    use crate::preferences::{Channel, Preference};

    fn rules(pattern: &str, enabled: bool) -> Rules {
        let preference = Preference {
            kind_pattern: pattern.into(),
            channel: Channel::InApp,
            enabled,
        };
        Rules::of(&[preference], Channel::InApp)
    }

    #[test]
    fn a_muted_kind_is_not_counted_unless_urgent() {
        let muted = rules("order.*", false);
        let mut unread = Unread::load([], 10);
        let order = |importance| Effect::Adds {
            id: Uuid::new_v4(),
            expires_at: None,
            subject: Subject::new("order.shipped", importance),
        };
        assert_eq!(unread.apply(&order("high"), &muted, 10), Change::Unchanged);
        assert_eq!(unread.apply(&order("urgent"), &muted, 10), Change::Count(1));
        assert_eq!(
            Unread::Untracked.apply(&order("low"), &muted, 10),
            Change::Unchanged,
            "nothing for the database to count either"
        );
    }

    #[test]
    fn views_count_what_their_filters_select() {
        let unread = Unread::load(
            [
                (Uuid::new_v4(), None, Subject::new("order.shipped", "high")),
                (Uuid::new_v4(), None, Subject::new("order.eu.late", "low")),
                (Uuid::new_v4(), None, Subject::new("billing.due", "high")),
            ],
            10,
        );
        let orders = View {
            kinds: Some(vec![Pattern::parse("order.*").unwrap()]),
            importance: None,
        };
        let high = View {
            kinds: None,
            importance: Some(vec!["high".into(), "urgent".into()]),
        };
        let high_orders = View {
            kinds: orders.kinds.clone(),
            importance: high.importance.clone(),
        };
        assert_eq!(unread.count_of(&orders), Some(2));
        assert_eq!(unread.count_of(&high), Some(2));
        assert_eq!(unread.count_of(&high_orders), Some(1));
        assert_eq!(unread.count_of(&View::default()), Some(3));
        assert_eq!(Unread::Untracked.count_of(&orders), None);
    }
}
