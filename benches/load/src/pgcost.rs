//! PostgreSQL's time per statement group over a scenario's measured window,
//! from `pg_stat_statements` (reset when the window opens).
//!
//! herald connects as a role of its own in the benchmark (scripts/bench
//! makes it), so every statement is first split by who ran it: herald, or
//! the load generator (the producers' inserts and its own bookkeeping).
//! Within herald's role statements are grouped by their text, comments
//! stripped, by the tables and functions they touch rather than by exact
//! wording, so rewording a query in `sql/` or `src/db/` keeps its group.
//!
//! The cluster runs with `pg_stat_statements.track = top`: a statement's
//! time includes everything it caused inside PostgreSQL, so the producers'
//! INSERT carries its triggers (the event log rows and their NOTIFY), and a
//! herald statement calling `herald.inbox()` carries that function.
//! `track_planning = on` adds planning time; times here are planning plus
//! execution.

use serde_json::{Value, json};

/// Statement groups, in the order they are reported.
pub const GROUPS: [&str; 7] = [
    "producer_inserts",
    "producer_transactions",
    "tail_steps",
    "delivery_records",
    "counts",
    "herald_other",
    "load_generator",
];

/// The groups that are herald's cost.
const HERALD: [&str; 4] = ["tail_steps", "delivery_records", "counts", "herald_other"];

/// The query text without comments, lower-case, whitespace collapsed.
fn normalize(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    let mut rest = query;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.find('\n').map_or("", |at| &after[at..]);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |at| &after[at + 2..]);
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

fn is_transaction_control(q: &str) -> bool {
    ["begin", "commit", "rollback", "start transaction", "end"]
        .iter()
        .any(|w| q == *w || q.starts_with(&format!("{w} ")) || q.starts_with(&format!("{w};")))
}

/// The group of one statement, run by herald's role or not.
pub fn classify(by_herald: bool, query: &str) -> &'static str {
    let q = normalize(query);
    if !by_herald {
        return if q.starts_with("insert into herald.notifications ")
            || q.starts_with("insert into herald.notifications(")
        {
            "producer_inserts"
        } else if is_transaction_control(&q) {
            "producer_transactions"
        } else {
            "load_generator"
        };
    }
    if q.contains("pg_current_snapshot()") && q.contains("herald.events") {
        // The tail's step: the snapshot and the events that became visible.
        "tail_steps"
    } else if q.contains("notification_deliveries")
        || q.contains("delivery_parents_key()")
        || q.starts_with("select b.id from unnest($1::uuid[]) as b (id) where exists")
    {
        // The delivery writer, every statement of a batch: the lock, the
        // lookups of its parents and the insert (and mark.delivered's
        // single rows).
        "delivery_records"
    } else if q.contains("count(") && !q.contains("herald.events") {
        // Unread counts (one user or many); replay's backlog count reads
        // the event log and is part of connecting, not counting.
        "counts"
    } else {
        "herald_other"
    }
}

/// One row of `pg_stat_statements`.
pub struct Statement {
    pub by_herald: bool,
    pub query: String,
    pub calls: i64,
    pub ms: f64,
    pub rows: i64,
}

/// Groups with their time (ms), calls and µs per delivery; herald's total
/// and its ratio to the producers' inserts; the costliest statements.
pub fn summarize(statements: &[Statement], deliveries: u64) -> Value {
    let per = |ms: f64| (deliveries > 0).then(|| ms * 1000.0 / deliveries as f64);
    let mut groups = serde_json::Map::new();
    let total = |group: &str| -> (f64, i64) {
        statements
            .iter()
            .filter(|s| classify(s.by_herald, &s.query) == group)
            .fold((0.0, 0), |(ms, calls), s| (ms + s.ms, calls + s.calls))
    };
    let mut herald_ms = 0.0;
    let mut inserts_ms = 0.0;
    for group in GROUPS {
        let (ms, calls) = total(group);
        if HERALD.contains(&group) {
            herald_ms += ms;
        }
        if group == "producer_inserts" {
            inserts_ms = ms;
        }
        groups.insert(
            group.to_string(),
            json!({"ms": ms, "calls": calls, "us_per_delivery": per(ms)}),
        );
    }
    let mut top: Vec<&Statement> = statements.iter().collect();
    top.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    let top: Vec<Value> = top
        .iter()
        .take(12)
        .map(|s| {
            let q = normalize(&s.query);
            json!({
                "group": classify(s.by_herald, &s.query),
                "calls": s.calls,
                "rows": s.rows,
                "ms": s.ms,
                "query": q.chars().take(160).collect::<String>(),
            })
        })
        .collect();
    json!({
        "deliveries": deliveries,
        "groups": groups,
        "herald_ms": herald_ms,
        "herald_us_per_delivery": per(herald_ms),
        "herald_over_producer_inserts": (inserts_ms > 0.0).then(|| herald_ms / inserts_ms),
        "top_statements": top,
    })
}

/// Clears the statistics: the measured window starts now.
pub async fn reset(db: &tokio_postgres::Client) -> anyhow::Result<()> {
    db.batch_execute(
        "create extension if not exists pg_stat_statements; select pg_stat_statements_reset()",
    )
    .await?;
    Ok(())
}

/// This database's statements since the reset, herald's role told apart.
pub async fn read(
    db: &tokio_postgres::Client,
    herald_role: &str,
) -> anyhow::Result<Vec<Statement>> {
    let rows = db
        .query(
            "select r.rolname = $1, s.query, s.calls, s.total_exec_time + s.total_plan_time, s.rows
               from pg_stat_statements s join pg_roles r on r.oid = s.userid
              where s.dbid = (select oid from pg_database where datname = current_database())",
            &[&herald_role],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Statement {
            by_herald: r.get(0),
            query: r.get(1),
            calls: r.get(2),
            ms: r.get(3),
            rows: r.get(4),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(name: &str) -> String {
        let path = format!("{}/../../sql/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn herald_queries_fall_in_their_groups() {
        assert_eq!(classify(true, &sql("events_step.sql")), "tail_steps");
        assert_eq!(
            classify(true, &sql("delivery_record_sent.sql")),
            "delivery_records"
        );
        assert_eq!(
            classify(true, &sql("delivery_mark_delivered.sql")),
            "delivery_records"
        );
        // Every statement of a batch, besides the insert.
        for writer in [
            "delivery_lock_parents.sql",
            "delivery_live_notifications.sql",
            "delivery_live_users.sql",
        ] {
            assert_eq!(classify(true, &sql(writer)), "delivery_records", "{writer}");
        }
        assert_eq!(classify(true, &sql("inbox_unread_counts.sql")), "counts");
        assert_eq!(classify(true, &sql("inbox_unread_count.sql")), "counts");
        // Comments mention counts and unread; the statements are not counts.
        assert_eq!(classify(true, &sql("inbox_unread.sql")), "herald_other");
        assert_eq!(
            classify(true, &sql("events_replay_backlog.sql")),
            "herald_other"
        );
        assert_eq!(classify(true, &sql("events_replay.sql")), "herald_other");
        assert_eq!(classify(true, "COMMIT"), "herald_other");
    }

    #[test]
    fn the_load_generators_statements_are_split_from_the_producers() {
        let insert = "insert into herald.notifications (user_id, title) select u, 'bench' from unnest($1::uuid[]) u returning id, user_id";
        assert_eq!(classify(false, insert), "producer_inserts");
        assert_eq!(classify(false, "begin"), "producer_transactions");
        assert_eq!(classify(false, "COMMIT"), "producer_transactions");
        assert_eq!(
            classify(
                false,
                "select count(*) from herald.notification_deliveries where notification_id = any($1)"
            ),
            "load_generator"
        );
        // The same text run by herald is herald's.
        assert_eq!(classify(true, insert), "herald_other");
    }

    #[test]
    fn summary_adds_up_herald_and_compares_with_the_inserts() {
        let s = |by_herald, query: &str, ms| Statement {
            by_herald,
            query: query.into(),
            calls: 1,
            ms,
            rows: 0,
        };
        let summary = summarize(
            &[
                s(
                    false,
                    "insert into herald.notifications (user_id) values ($1)",
                    100.0,
                ),
                s(
                    true,
                    "select snap from pg_current_snapshot() snap, herald.events",
                    10.0,
                ),
                s(
                    true,
                    "select pg_advisory_xact_lock_shared(herald.delivery_parents_key())",
                    5.0,
                ),
                s(true, "-- a count\nselect 1", 1.0),
            ],
            1000,
        );
        assert_eq!(summary["herald_ms"], json!(16.0));
        assert_eq!(summary["herald_over_producer_inserts"], json!(0.16));
        assert_eq!(
            summary["groups"]["delivery_records"]["us_per_delivery"],
            json!(5.0)
        );
        assert_eq!(summary["groups"]["herald_other"]["ms"], json!(1.0));
        assert_eq!(summary["groups"]["counts"]["ms"], json!(0.0));
    }
}
