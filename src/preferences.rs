//! Per-kind preferences per channel: which kinds a user wants where.
//!
//! A rule's pattern is an exact kind (`order.shipped`: dot-separated
//! segments of `[a-z0-9_-]`), such a prefix followed by `.*` (`order.*`
//! matches `order.shipped` and `order.eu.late`, not `order` or `orders.x`),
//! or `*`. For a kind, the most specific matching rule decides (the exact
//! kind, then the longest prefix, then `*`); no rule means enabled, and
//! urgent notifications ignore preferences. `herald.kind_setting()`
//! (migration V9, which `herald.kind_enabled()` reads) is the SQL twin;
//! `tests/api/inbox_state.rs` checks that the two agree.
//!
//! The same patterns select what a filtered view or list shows
//! ([`Pattern::matches`]).

use serde::{Deserialize, Serialize};

/// The longest pattern (as the `notification_preferences_kind_pattern_valid`
/// constraint allows): a kind of up to 100 characters and `.*`.
pub const MAX_PATTERN: usize = 102;

/// A delivery channel a preference applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Channel {
    /// Live pushes over Socket.IO, the connect push and counts.
    #[serde(rename = "IN_APP")]
    InApp,
    /// Web Push.
    #[serde(rename = "PUSH")]
    Push,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InApp => "IN_APP",
            Self::Push => "PUSH",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "IN_APP" => Some(Self::InApp),
            "PUSH" => Some(Self::Push),
            _ => None,
        }
    }
}

/// A valid kind pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pattern(String);

impl Pattern {
    /// The pattern, or why it is not one.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() || text.len() > MAX_PATTERN {
            return Err(format!("a kind pattern has 1 to {MAX_PATTERN} characters"));
        }
        if text == "*" {
            return Ok(Self(text.to_owned()));
        }
        let exact = text.strip_suffix(".*").unwrap_or(text);
        let segment = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        };
        if exact.split('.').all(segment) {
            Ok(Self(text.to_owned()))
        } else {
            Err(format!(
                "{text:?} is not a kind pattern: dot-separated segments of a-z, 0-9, _ and -, optionally ending in .*, or *"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `kind` matches, and how specifically: the higher, the more
    /// specific (an exact match above every prefix, a longer prefix above a
    /// shorter one, `*` lowest).
    fn specificity(&self, kind: &str) -> Option<usize> {
        if self.0 == kind {
            Some(usize::MAX)
        } else if self.0 == "*" {
            Some(0)
        } else {
            let prefix = self.0.strip_suffix('*')?;
            kind.starts_with(prefix).then_some(prefix.len())
        }
    }

    pub fn matches(&self, kind: &str) -> bool {
        self.specificity(kind).is_some()
    }
}

/// One preference as clients and the log spell it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Preference {
    /// A kind, a prefix and `.*`, or `*`.
    #[schema(
        pattern = r"^(\*|[a-z0-9_-]+(\.[a-z0-9_-]+)*(\.\*)?)$",
        min_length = 1,
        max_length = 102
    )]
    pub kind_pattern: String,
    pub channel: Channel,
    pub enabled: bool,
}

/// A user's rules for one channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules(Vec<(Pattern, bool)>);

impl Rules {
    /// No rules: everything enabled.
    pub const fn none() -> Self {
        Self(Vec::new())
    }

    /// The rules of `channel` among `preferences` (patterns that do not
    /// parse, which the table's constraint rules out, are left out).
    pub fn of(preferences: &[Preference], channel: Channel) -> Self {
        Self(
            preferences
                .iter()
                .filter(|p| p.channel == channel)
                .filter_map(|p| Some((Pattern::parse(&p.kind_pattern).ok()?, p.enabled)))
                .collect(),
        )
    }

    /// Whether nothing is muted: every kind is enabled.
    pub fn mutes_nothing(&self) -> bool {
        self.0.iter().all(|(_, enabled)| *enabled)
    }

    /// Whether a notification of `kind` and `importance` is wanted.
    pub fn enabled(&self, kind: &str, importance: &str) -> bool {
        if importance == "urgent" {
            return true;
        }
        self.0
            .iter()
            .filter_map(|(pattern, enabled)| Some((pattern.specificity(kind)?, *enabled)))
            .max_by_key(|(specificity, _)| *specificity)
            .is_none_or(|(_, enabled)| enabled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(list: &[(&str, bool)]) -> Rules {
        let preferences: Vec<Preference> = list
            .iter()
            .map(|(pattern, enabled)| Preference {
                kind_pattern: (*pattern).into(),
                channel: Channel::InApp,
                enabled: *enabled,
            })
            .collect();
        Rules::of(&preferences, Channel::InApp)
    }

    #[test]
    fn patterns_are_kinds_prefixes_or_a_star() {
        for good in ["*", "order", "order.shipped", "order.*", "a-b_c.9.*"] {
            assert!(Pattern::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "", "Order", "order.", ".order", "order.**", "order*", "*.x", "a..b", "a b",
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
        assert!(Pattern::parse(&"a".repeat(MAX_PATTERN + 1)).is_err());
    }

    #[test]
    fn a_prefix_matches_below_its_dot_only() {
        let order = Pattern::parse("order.*").unwrap();
        assert!(order.matches("order.shipped"));
        assert!(order.matches("order.eu.late"));
        assert!(!order.matches("order"));
        assert!(!order.matches("orders.x"));
    }

    #[test]
    fn the_most_specific_rule_decides_and_urgent_ignores_them() {
        let rules = rules(&[
            ("*", false),
            ("order.*", true),
            ("order.eu.*", false),
            ("order.eu.ok", true),
        ]);
        assert!(!rules.enabled("billing.due", "normal"), "*");
        assert!(rules.enabled("order.shipped", "normal"), "order.*");
        assert!(
            !rules.enabled("order.eu.late", "normal"),
            "the longer prefix"
        );
        assert!(rules.enabled("order.eu.ok", "normal"), "exact");
        assert!(rules.enabled("billing.due", "urgent"), "urgent");
        assert!(
            Rules::default().enabled("anything", "low"),
            "no rule: enabled"
        );
        assert!(!rules.mutes_nothing());
        assert!(self::rules(&[("x", true)]).mutes_nothing());
    }
}
