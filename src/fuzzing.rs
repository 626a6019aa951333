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
