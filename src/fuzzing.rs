//! Shared generators for the property tests (test builds only).

use proptest::prelude::*;
use serde_json::Value;

/// Arbitrary JSON up to three levels deep, with object keys drawn from
/// `keys` (the fields the code under test looks for) or made up.
pub fn json(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        any::<f64>().prop_map(|n| serde_json::json!(n)),
        ".{0,40}".prop_map(Value::String),
        any::<u128>().prop_map(|n| serde_json::json!(uuid::Uuid::from_u128(n))),
    ];
    leaf.prop_recursive(3, 24, 4, move |inner| {
        let key = prop_oneof![
            proptest::sample::select(keys).prop_map(str::to_owned),
            ".{0,8}"
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key, inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Snapshots PostgreSQL could have taken: `xmin` at or above its first
/// ordinary transaction id, `xip` a sorted subset of `[xmin, xmax)`.
pub fn snapshot() -> impl Strategy<Value = crate::eventlog::Snapshot> {
    (
        3u64..1_000_000,
        0u64..40,
        prop::collection::vec(0u64..40, 0..6),
    )
        .prop_map(|(xmin, width, offsets)| {
            let xmax = xmin + width;
            let xip: Vec<String> = if width == 0 {
                Vec::new()
            } else {
                let mut xip: Vec<u64> = offsets.iter().map(|o| xmin + o % width).collect();
                xip.sort_unstable();
                xip.dedup();
                xip.iter().map(u64::to_string).collect()
            };
            format!("{xmin}:{xmax}:{}", xip.join(","))
                .parse()
                .expect("a well-formed snapshot parses")
        })
}

/// Text that looks like a `lastEventId` and often almost is one: a real
/// position's text with a few characters changed, dropped or repeated.
pub fn mutated(text: String) -> impl Strategy<Value = String> {
    let len = text.len().max(1);
    prop::collection::vec(
        (0..len, prop_oneof![Just(None), "[0-9:,/x-]".prop_map(Some)]),
        0..4,
    )
    .prop_map(move |edits| {
        let mut chars: Vec<char> = text.chars().collect();
        for (at, replacement) in edits {
            let at = at.min(chars.len());
            match replacement {
                None if at < chars.len() => {
                    chars.remove(at);
                }
                None => {}
                Some(s) => s.chars().rev().for_each(|c| chars.insert(at, c)),
            }
        }
        chars.into_iter().collect()
    })
}
