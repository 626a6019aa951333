//! What a page of the inbox lists, checked once for `notifications.list`
//! and `GET /api/notifications` alike: the cursor, the size, the shelf and
//! the filters. Views (`counts.watch`) take the same filters.

use serde::Deserialize;
use uuid::Uuid;

use crate::db::inbox::{Listing, Shelf};
use crate::names::IMPORTANCE;
use crate::preferences::Pattern;
use crate::unread::View;

/// The most kind patterns one filter lists.
pub const MAX_KIND_FILTERS: usize = 20;
/// A page's size when none is asked, and the largest.
const DEFAULT_LIMIT: i64 = 20;
const MAX_LIMIT: i64 = 100;

/// A page's options as clients send them (REST's query values are
/// gathered into the same shape).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListOptions {
    pub before: Option<String>,
    pub limit: Option<i64>,
    pub unread_only: Option<bool>,
    pub archived: Option<bool>,
    pub snoozed: Option<bool>,
    pub kinds: Option<Vec<String>>,
    pub importance: Option<Vec<String>>,
}

/// The shape `notifications.list` takes, for its `invalid_payload` message.
pub const LIST_SHAPE: &str = "{before?: cursor, limit?: 1..100, unreadOnly?: boolean, \
     archived?: boolean, snoozed?: boolean, kinds?: [pattern], importance?: [level]}";

impl ListOptions {
    /// The page these options ask for, or what is wrong with them.
    pub fn listing(self) -> Result<Listing, String> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(format!(
                "limit must be a whole number from 1 to {MAX_LIMIT}"
            ));
        }
        let before = match self.before.as_deref() {
            None => None,
            Some(cursor) => Some(decode_cursor(cursor).ok_or("before is not a nextCursor")?),
        };
        let shelf = match (
            self.archived.unwrap_or(false),
            self.snoozed.unwrap_or(false),
        ) {
            (false, false) => Shelf::Inbox,
            (true, false) => Shelf::Archived,
            (false, true) => Shelf::Snoozed,
            // Archiving reads a notification, and reading ends its snooze.
            (true, true) => {
                return Err("archived and snoozed exclude each other: \
                            an archived notification is never snoozed"
                    .into());
            }
        };
        let view = Filters {
            kinds: self.kinds,
            importance: self.importance,
        }
        .view()?;
        Ok(Listing {
            before,
            limit: limit as u32,
            unread_only: self.unread_only.unwrap_or(false),
            shelf,
            view,
        })
    }
}

/// A list's or a view's filters as clients send them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filters {
    pub kinds: Option<Vec<String>>,
    pub importance: Option<Vec<String>>,
}

impl Filters {
    /// The view these filters select, or what is wrong with them.
    pub fn view(self) -> Result<View, String> {
        let kinds = match self.kinds {
            None => None,
            Some(kinds) if kinds.is_empty() || kinds.len() > MAX_KIND_FILTERS => {
                return Err(format!("kinds lists 1 to {MAX_KIND_FILTERS} patterns"));
            }
            Some(kinds) => Some(
                kinds
                    .iter()
                    .map(|k| Pattern::parse(k))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let importance = match self.importance {
            None => None,
            Some(levels) if levels.is_empty() || levels.len() > IMPORTANCE.len() => {
                return Err("importance lists 1 to 4 levels".into());
            }
            Some(levels) => {
                if let Some(bad) = levels.iter().find(|l| !IMPORTANCE.contains(&l.as_str())) {
                    return Err(format!(
                        "importance {bad:?} is not one of low, normal, high, urgent"
                    ));
                }
                Some(levels)
            }
        };
        Ok(View { kinds, importance })
    }
}

/// A page's cursor: the last item's created_at in microseconds and its id.
pub fn encode_cursor((micros, id): (i64, Uuid)) -> String {
    format!("{micros}_{id}")
}

pub fn decode_cursor(cursor: &str) -> Option<(i64, Uuid)> {
    // Exactly what encode_cursor writes: up to 17 digits (microseconds
    // since 1970, to the year 5138, well within PostgreSQL's range), `_`,
    // and a hyphenated UUID.
    let (micros, id) = cursor.split_once('_')?;
    let digits_ok = (1..=17).contains(&micros.len()) && micros.bytes().all(|b| b.is_ascii_digit());
    let hyphens_ok = id.len() == 36 && [8, 13, 18, 23].iter().all(|&i| id.as_bytes()[i] == b'-');
    if !digits_ok || !hyphens_ok {
        return None;
    }
    Some((micros.parse().ok()?, id.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn listing(options: serde_json::Value) -> Result<Listing, String> {
        serde_json::from_value::<ListOptions>(options)
            .map_err(|e| e.to_string())?
            .listing()
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let id = Uuid::new_v4();
        assert_eq!(
            decode_cursor(&encode_cursor((1_764_000_000_123_456, id))),
            Some((1_764_000_000_123_456, id))
        );
        for bad in ["", "_", "12", "x_y", "12_not-a-uuid"] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_page_lists_one_shelf_with_checked_filters() {
        let page = listing(json!({})).expect("no options is a first page");
        assert_eq!(
            (page.shelf, page.limit, page.unread_only),
            (Shelf::Inbox, 20, false)
        );
        assert_eq!(page.view, View::default());
        assert_eq!(
            listing(json!({"archived": true})).map(|p| p.shelf),
            Ok(Shelf::Archived)
        );
        assert_eq!(
            listing(json!({"snoozed": true})).map(|p| p.shelf),
            Ok(Shelf::Snoozed)
        );
        let filtered = listing(json!({"kinds": ["order.*"], "importance": ["urgent"]}))
            .expect("valid filters");
        assert_eq!(filtered.view.importance, Some(vec!["urgent".to_string()]));
        let kinds = |n: usize| (0..n).map(|i| format!("kind{i}")).collect::<Vec<_>>();
        assert!(listing(json!({"kinds": kinds(MAX_KIND_FILTERS)})).is_ok());
        for bad in [
            json!({"kinds": kinds(MAX_KIND_FILTERS + 1)}),
            json!({"archived": true, "snoozed": true}),
            json!({"limit": 0}),
            json!({"limit": 101}),
            json!({"before": "nope"}),
            json!({"kinds": []}),
            json!({"kinds": ["order."]}),
            json!({"importance": ["loud"]}),
        ] {
            assert!(listing(bad.clone()).is_err(), "{bad}");
        }
    }
}
