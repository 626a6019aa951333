//! Positions in the event log: what a client has been sent, as the opaque
//! `eventId` strings it resumes from (docs/reference.md, "Positions").
//!
//! herald reads the log in steps: each step reads the rows that became
//! visible between the previous snapshot and the current one, and emits them
//! in `(tx, id)` order. A client that was sent everything up to event E of
//! such a step has seen everything visible in the step's starting snapshot,
//! plus the rows visible in its ending snapshot that sort at or before E.
//! A position records exactly that, so a resume replays what the client
//! missed and nothing it has seen, whichever instance it returns to.

use std::fmt;
use std::str::FromStr;

use super::snapshot::{MalformedSnapshot, Snapshot};

/// A client's place in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// Everything visible in this snapshot has been sent.
    base: Snapshot,
    /// And, of what became visible by `step_end`, the rows up to (tx, id).
    within: Option<Within>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Within {
    step_end: Snapshot,
    tx: u64,
    id: i64,
}

impl Position {
    /// Everything visible in `snapshot`, nothing after.
    pub fn at(snapshot: Snapshot) -> Self {
        Self {
            base: snapshot,
            within: None,
        }
    }

    /// Just after the event (tx, id) of the step from `start` to `end`.
    pub fn after_event(start: &Snapshot, end: &Snapshot, tx: u64, id: i64) -> Self {
        Self {
            base: start.clone(),
            within: Some(Within {
                step_end: end.clone(),
                tx,
                id,
            }),
        }
    }

    /// Whether a client at this position has been sent event (tx, id).
    pub fn has_seen(&self, tx: u64, id: i64) -> bool {
        self.base.is_visible(tx)
            || self
                .within
                .as_ref()
                .is_some_and(|w| w.step_end.is_visible(tx) && (tx, id) <= (w.tx, w.id))
    }

    /// The snapshot below which everything has been seen: no event older
    /// than its `xmin` needs replaying.
    pub fn base(&self) -> &Snapshot {
        &self.base
    }

    /// Whether a database whose current snapshot is `now` could have issued
    /// this position: everything it says was seen was visible by `now`. A
    /// position ahead of the log was made up, not issued.
    pub fn is_issuable_at(&self, now: &Snapshot) -> bool {
        now.includes(&self.base)
            && self
                .within
                .as_ref()
                .is_none_or(|w| now.includes(&w.step_end))
    }

    /// The parts a SQL query needs to test `has_seen` on the server:
    /// (base, step end, tx, id); without a partial step, the step is empty.
    pub fn sql_parts(&self) -> (String, String, i64, i64) {
        match &self.within {
            Some(w) => (
                self.base.to_string(),
                w.step_end.to_string(),
                w.tx as i64,
                w.id,
            ),
            None => (self.base.to_string(), self.base.to_string(), 0, 0),
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.base)?;
        if let Some(w) = &self.within {
            write!(f, "/{}/{}/{}", w.step_end, w.tx, w.id)?;
        }
        Ok(())
    }
}

impl FromStr for Position {
    type Err = MalformedSnapshot;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > 4096 {
            return Err(MalformedSnapshot);
        }
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [base] => Ok(Self::at(base.parse()?)),
            [base, end, tx, id] => {
                let base: Snapshot = base.parse()?;
                let step_end: Snapshot = end.parse()?;
                let tx: u64 = tx.parse().map_err(|_| MalformedSnapshot)?;
                let id: i64 = id.parse().map_err(|_| MalformedSnapshot)?;
                if !step_end.includes(&base)
                    || !step_end.is_visible(tx)
                    || base.is_visible(tx)
                    || id <= 0
                {
                    return Err(MalformedSnapshot);
                }
                Ok(Self {
                    base,
                    within: Some(Within { step_end, tx, id }),
                })
            }
            _ => Err(MalformedSnapshot),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(s: &str) -> Snapshot {
        s.parse().unwrap()
    }

    #[test]
    fn after_event_has_seen_the_step_up_to_the_event() {
        // Step from 10:12:10 (10 in progress) to 13:15: (10, 12, 13, 14 committed).
        let p = Position::after_event(&snap("10:12:10"), &snap("15:15:"), 12, 7);
        assert!(p.has_seen(11, 1)); // visible at the start
        assert!(p.has_seen(10, 99)); // committed during the step, sorts before (12, 7)
        assert!(p.has_seen(12, 7));
        assert!(!p.has_seen(12, 8));
        assert!(!p.has_seen(14, 3));
        assert!(!p.has_seen(15, 1)); // after the step
    }

    #[test]
    fn round_trips_and_validates() {
        let p = Position::after_event(&snap("10:12:10"), &snap("15:15:"), 12, 7);
        assert_eq!(p.to_string(), "10:12:10/15:15:/12/7");
        assert_eq!(p.to_string().parse::<Position>().unwrap(), p);
        assert_eq!(
            "20:20:".parse::<Position>().unwrap(),
            Position::at(snap("20:20:"))
        );
        for bad in [
            "",
            "x",
            "10:12:10/15:15:/12",
            "10:12:10/15:15:/11/7",
            "10:12:10/15:15:/12/0",
            "15:15:/10:12:/12/7",
            "1:1:",
            "1:1:/2:2:/1/1",
        ] {
            assert!(bad.parse::<Position>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_position_ahead_of_the_log_was_not_issued() {
        let now = snap("20:25:22");
        assert!(Position::at(snap("20:22:")).is_issuable_at(&now));
        assert!(
            Position::after_event(&snap("20:22:"), &snap("20:25:22"), 23, 4).is_issuable_at(&now)
        );
        // Sees 22, which is still in progress now.
        assert!(!Position::at(snap("23:23:")).is_issuable_at(&now));
        // Its step ends after the log does.
        assert!(
            !Position::after_event(&snap("20:22:"), &snap("30:30:"), 26, 1).is_issuable_at(&now)
        );
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// A position herald could issue: the start of a step and its end (a
    /// later snapshot), and an event of a transaction that became visible
    /// during it.
    fn issued() -> impl Strategy<Value = Position> {
        (
            crate::fuzzing::snapshot(),
            0u64..20,
            0u64..20,
            1i64..1_000_000,
            any::<bool>(),
        )
            .prop_filter_map(
                "no transaction became visible in the step",
                |(start, advance, pick, id, within)| {
                    let end: Snapshot = format!("{x}:{x}:", x = start.xmax() + advance)
                        .parse()
                        .ok()?;
                    if !within {
                        return Some(Position::at(start));
                    }
                    let tx = (start.xmin()..end.xmax())
                        .filter(|&tx| !start.is_visible(tx))
                        .nth(pick as usize)?;
                    Some(Position::after_event(&start, &end, tx, id))
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// An issued position's eventId parses back to the same position,
        /// which has seen exactly what the original has seen, and a database
        /// at its step's end could have issued it.
        #[test]
        fn issued_positions_round_trip(position in issued(), probes in prop::collection::vec((0u64..1_000_100, 1i64..1_000_000), 8)) {
            let again: Position = position.to_string().parse().unwrap();
            prop_assert_eq!(&again, &position);
            for (tx, id) in probes {
                prop_assert_eq!(again.has_seen(tx, id), position.has_seen(tx, id));
            }
            if let Some(w) = &position.within {
                prop_assert!(position.has_seen(w.tx, w.id));
                prop_assert!(!position.has_seen(w.tx, w.id + 1) || position.base.is_visible(w.tx));
                prop_assert!(position.is_issuable_at(&w.step_end));
            }
            prop_assert!(position.is_issuable_at(position.within.as_ref().map_or(&position.base, |w| &w.step_end)));
        }

        /// A damaged eventId parses or is refused, never panics, and what
        /// parses round-trips: a client cannot hand herald a position that
        /// prints as something else.
        #[test]
        fn damaged_positions_parse_or_are_refused(text in issued().prop_flat_map(|p| crate::fuzzing::mutated(p.to_string()))) {
            if let Ok(position) = text.parse::<Position>() {
                prop_assert_eq!(position.to_string().parse::<Position>().ok(), Some(position.clone()));
                prop_assert!(position.base().xmin() >= crate::db::snapshot::FIRST_NORMAL_XID);
            }
        }
    }
}
