//! PostgreSQL snapshots (`pg_snapshot`): which transactions had committed at
//! a moment. herald's cursor into the event log is a snapshot, not an id.
//!
//! Identity ids are taken when a row is inserted but become visible when its
//! transaction commits, in any order; a reader of `id > last` skips rows of a
//! transaction that took its ids early and committed late. A snapshot names
//! exactly what was visible: everything below `xmin`, everything below `xmax`
//! except the transactions in `xip` (in progress). The rows that became
//! visible since snapshot S are exactly those whose `tx` is in `S.xip` or at
//! or above `S.xmax`: no skipped rows, and nothing held back by a long
//! transaction but that transaction's own rows.

use std::fmt;
use std::str::FromStr;

/// A snapshot in `pg_snapshot` text form `xmin:xmax:xip,xip,...`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Snapshot {
    xmin: u64,
    xmax: u64,
    /// In progress at the snapshot, ascending; every entry is in [xmin, xmax).
    xip: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed snapshot")]
pub struct MalformedSnapshot;

/// PostgreSQL's first ordinary transaction id: 0 is invalid, 1 bootstraps
/// the cluster and 2 stands for frozen rows, so no snapshot's `xmin` is
/// below it. A "snapshot" such as `1:1:` was made up, not taken.
pub const FIRST_NORMAL_XID: u64 = 3;

impl Snapshot {
    /// Whether a transaction's rows are visible in this snapshot (when it
    /// committed; rows of aborted transactions are never seen anyway).
    pub fn is_visible(&self, tx: u64) -> bool {
        tx < self.xmin || (tx < self.xmax && self.xip.binary_search(&tx).is_err())
    }

    /// Whether every transaction visible in `earlier` is visible here too.
    pub fn includes(&self, earlier: &Snapshot) -> bool {
        // What this snapshot cannot see is `xip` and everything from `xmax`
        // on; none of it may have been visible in `earlier`.
        let in_progress_ok = self.xip.iter().all(|&x| !earlier.is_visible(x));
        let horizon_ok = self.xmax >= earlier.xmax
            || (self.xmax >= earlier.xmin
                && earlier.xip.iter().filter(|&&x| x >= self.xmax).count() as u64
                    == earlier.xmax - self.xmax);
        in_progress_ok && horizon_ok
    }

    pub fn xmin(&self) -> u64 {
        self.xmin
    }

    pub fn xmax(&self) -> u64 {
        self.xmax
    }
}

impl FromStr for Snapshot {
    type Err = MalformedSnapshot;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split(':');
        let (Some(xmin), Some(xmax), Some(xip), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(MalformedSnapshot);
        };
        let xmin: u64 = xmin.parse().map_err(|_| MalformedSnapshot)?;
        let xmax: u64 = xmax.parse().map_err(|_| MalformedSnapshot)?;
        let mut list = Vec::new();
        if !xip.is_empty() {
            for x in xip.split(',') {
                list.push(x.parse::<u64>().map_err(|_| MalformedSnapshot)?);
            }
        }
        list.sort_unstable();
        list.dedup();
        let in_range = list.first().is_none_or(|&first| first >= xmin)
            && list.last().is_none_or(|&last| last < xmax);
        if xmin < FIRST_NORMAL_XID || xmin > xmax || !in_range || list.len() > 100_000 {
            return Err(MalformedSnapshot);
        }
        Ok(Self {
            xmin,
            xmax,
            xip: list,
        })
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:", self.xmin, self.xmax)?;
        for (i, x) in self.xip.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(s: &str) -> Snapshot {
        s.parse().unwrap()
    }

    #[test]
    fn round_trips_postgres_text_form() {
        for text in ["10:10:", "10:20:12,15", "748:750:748"] {
            assert_eq!(snap(text).to_string(), text);
        }
    }

    #[test]
    fn rejects_malformed_text() {
        for text in [
            "",
            "10",
            "10:20",
            "20:10:",
            "10:20:5",
            "10:20:25",
            "a:b:",
            "10:20:12:13",
            "0:0:",
            "1:1:",
            "2:5:",
        ] {
            assert!(text.parse::<Snapshot>().is_err(), "{text}");
        }
    }

    #[test]
    fn visibility_follows_xmin_xmax_and_in_progress() {
        let s = snap("10:20:12,15");
        assert!(s.is_visible(9));
        assert!(s.is_visible(11));
        assert!(!s.is_visible(12));
        assert!(!s.is_visible(15));
        assert!(s.is_visible(19));
        assert!(!s.is_visible(20));
    }

    #[test]
    fn later_snapshots_include_earlier_ones() {
        assert!(snap("10:20:12,15").includes(&snap("10:20:12,15")));
        assert!(snap("12:25:12").includes(&snap("10:20:12,15")));
        assert!(snap("30:30:").includes(&snap("10:20:12,15")));
        // 15 committed in the earlier one's view but is in progress here: impossible in time order.
        assert!(!snap("10:20:15").includes(&snap("10:20:12")));
        // The earlier snapshot saw 20..22 committed; this one does not reach them.
        assert!(!snap("10:20:").includes(&snap("10:22:")));
        // ... unless they were in progress there.
        assert!(snap("10:20:").includes(&snap("10:22:20,21")));
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// A snapshot's text parses back to the same snapshot, which sees
        /// exactly the same transactions and includes itself.
        #[test]
        fn snapshots_round_trip(snapshot in crate::fuzzing::snapshot(), probes in prop::collection::vec(0u64..1_000_100, 8)) {
            let again: Snapshot = snapshot.to_string().parse().unwrap();
            prop_assert_eq!(&again, &snapshot);
            for tx in probes.into_iter().chain([snapshot.xmin, snapshot.xmax]) {
                prop_assert_eq!(again.is_visible(tx), snapshot.is_visible(tx));
            }
            prop_assert!(snapshot.includes(&snapshot));
            prop_assert!(snapshot.xmin() >= FIRST_NORMAL_XID);
        }

        /// Any text parses or is refused, never panics; what parses is in
        /// canonical form once printed, and printing it again changes nothing.
        #[test]
        fn any_text_parses_or_is_refused(text in "[0-9:,]{0,30}|.{0,30}") {
            if let Ok(snapshot) = text.parse::<Snapshot>() {
                let printed = snapshot.to_string();
                prop_assert_eq!(printed.parse::<Snapshot>().ok(), Some(snapshot.clone()));
                prop_assert!(snapshot.xmin() >= FIRST_NORMAL_XID);
            }
        }
    }
}
