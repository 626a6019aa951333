//! Prometheus metrics: one function per thing herald counts, so names and
//! labels are written once. The recorder is process-wide; `/metrics`
//! renders it.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder once per process; later calls share it.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ])
                .ok()?
                .install_recorder()
                .ok()
                .inspect(|_| {
                    // Rare counters start at zero, so dashboards show 0, not "no data".
                    for name in [
                        "herald_tail_reconnects_total",
                        "herald_socket_queue_overflows_total",
                        "herald_deliveries_dropped_total",
                        "herald_deliveries_recorded_total",
                        "herald_deliveries_acknowledged_total",
                        "herald_reads_total",
                        "herald_connects_total",
                        "herald_http_idle_timeouts_total",
                        "herald_replay_rows_read_total",
                    ] {
                        counter!(name).increment(0);
                    }
                })
        })
        .as_ref()
}

pub fn tail_reconnect() {
    counter!("herald_tail_reconnects_total").increment(1);
}

pub fn step_finished(events: usize, took: Duration) {
    counter!("herald_log_steps_total").increment(1);
    counter!("herald_events_tailed_total").increment(events as u64);
    histogram!("herald_log_step_seconds").record(took.as_secs_f64());
}

pub fn event_tailed(kind: &'static str, lag: Duration) {
    counter!("herald_events_by_kind_total", "kind" => kind).increment(1);
    histogram!("herald_tail_lag_seconds").record(lag.as_secs_f64());
}

/// An event that reached no socket: `reason` is `expired` (routine: the
/// notification expired before herald read it), `malformed` (a row without
/// what its kind needs) or `unreadable` (a row the tail could not read at
/// all). Anything but `expired` is a push lost to a bug.
pub fn event_skipped(kind: &'static str, reason: &'static str) {
    counter!("herald_events_skipped_total", "kind" => kind, "reason" => reason).increment(1);
}

pub fn pushed(event: &'static str) {
    pushed_times(event, 1);
}

pub fn pushed_times(event: &'static str, times: u64) {
    if times > 0 {
        counter!("herald_pushes_total", "event" => event).increment(times);
    }
}

/// A statement that read unread counts or sets, by why it ran: `connect`
/// (a user's first socket here), `reload` (their rooms changed) or
/// `untracked` (users with more unread than herald keeps in memory). None
/// runs per event for the users herald keeps.
pub fn count_query(reason: &'static str) {
    counter!("herald_count_queries_total", "reason" => reason).increment(1);
}

pub fn queue_overflow(sockets: usize) {
    counter!("herald_socket_queue_overflows_total").increment(sockets as u64);
}

pub fn connected() {
    counter!("herald_connects_total").increment(1);
}

pub fn refused(reason: &'static str) {
    counter!("herald_connects_refused_total", "reason" => reason).increment(1);
}

/// A resume's outcome: `replayed`, or why it was reset.
pub fn resumed(outcome: &'static str) {
    counter!("herald_resumes_total", "outcome" => outcome).increment(1);
}

/// Event rows a replay loaded, payloads included.
pub fn replay_rows_read(rows: usize) {
    counter!("herald_replay_rows_read_total").increment(rows as u64);
}

/// A connect refused by one of the per-address limits: `connect` or
/// `auth_failure`.
pub fn rate_limited(limit: &'static str) {
    counter!("herald_rate_limited_total", "limit" => limit).increment(1);
}

pub fn online(users: usize, sockets: usize) {
    gauge!("herald_online_users").set(users as f64);
    gauge!("herald_connected_sockets").set(sockets as f64);
}

pub fn client_event(event: &'static str, outcome: &'static str) {
    counter!("herald_client_events_total", "event" => event, "outcome" => outcome).increment(1);
}

pub fn reads(count: u64) {
    counter!("herald_reads_total").increment(count);
}

pub fn deliveries_acknowledged() {
    counter!("herald_deliveries_acknowledged_total").increment(1);
}

pub fn emitted_after(lag: Duration) {
    histogram!("herald_event_to_emit_seconds").record(lag.as_secs_f64());
}

pub fn pool(size: usize, available: usize, waiting: usize) {
    gauge!("herald_db_pool_connections").set(size as f64);
    gauge!("herald_db_pool_available").set(available as f64);
    gauge!("herald_db_pool_waiting").set(waiting as f64);
}

pub fn deliveries_recorded(rows: usize) {
    counter!("herald_deliveries_recorded_total").increment(rows as u64);
}

/// A batch of `SENT` rows written: by a plain `insert`, `on_conflict`, or
/// `insert_then_on_conflict` (its plain insert met a pair recorded
/// already).
pub fn delivery_batch(method: &'static str) {
    counter!("herald_delivery_batches_total", "method" => method).increment(1);
}

pub fn deliveries_dropped(rows: usize) {
    counter!("herald_deliveries_dropped_total").increment(rows as u64);
}

pub fn delivery_lag(rows: usize) {
    gauge!("herald_delivery_queue_depth").set(rows as f64);
}

pub fn connection_opened() {
    gauge!("herald_http_connections").increment(1.0);
}

pub fn connection_closed() {
    gauge!("herald_http_connections").decrement(1.0);
}

/// A connection refused at accept: `full` (past the cap) or `descriptors`.
pub fn connection_refused(reason: &'static str) {
    counter!("herald_http_connections_refused_total", "reason" => reason).increment(1);
}

/// A connection closed for sending no request head in time.
pub fn connection_timed_out() {
    counter!("herald_http_idle_timeouts_total").increment(1);
}

/// An Engine.IO handshake refused before a session was made: `rate_limited`
/// (per address), `address_pending` or `server_pending` (sessions waiting
/// for CONNECT, per address or in all).
pub fn handshake_refused(reason: &'static str) {
    counter!("herald_handshakes_refused_total", "reason" => reason).increment(1);
}

/// Engine.IO sessions that have not sent a Socket.IO CONNECT yet.
pub fn handshakes_pending(sessions: usize) {
    gauge!("herald_handshakes_pending").set(sessions as f64);
}

/// JWKS counters start at zero once keys come from a provider.
pub fn jwks_started() {
    for trigger in ["start", "schedule", "unknown_kid"] {
        counter!("herald_jwks_fetches_total", "trigger" => trigger).increment(0);
        counter!("herald_jwks_fetch_failures_total", "trigger" => trigger).increment(0);
    }
    counter!("herald_jwks_refetches_skipped_total").increment(0);
}

pub fn jwks_fetched(trigger: &'static str, ok: bool) {
    counter!("herald_jwks_fetches_total", "trigger" => trigger).increment(1);
    if !ok {
        counter!("herald_jwks_fetch_failures_total", "trigger" => trigger).increment(1);
    }
}

pub fn jwks_keys(count: usize) {
    gauge!("herald_jwks_keys").set(count as f64);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    gauge!("herald_jwks_updated_timestamp_seconds").set(now);
}

pub fn jwks_refetch_skipped() {
    counter!("herald_jwks_refetches_skipped_total").increment(1);
}

/// A SIGHUP's reload of the TLS certificate, by outcome.
pub fn tls_reloaded(ok: bool) {
    let outcome = if ok { "ok" } else { "failed" };
    counter!("herald_tls_reloads_total", "outcome" => outcome).increment(1);
}

/// A TLS handshake that failed or did not finish within the idle timeout.
pub fn tls_handshake_failed() {
    counter!("herald_tls_handshake_failures_total").increment(1);
}

/// A push's answer: `sent`, `gone` (404/410), `retried` (429, 5xx, no
/// answer), `failed` (for good), or `abandoned` (claimed by an instance
/// that stopped before recording it).
pub fn push_outcome(outcome: &'static str) {
    counter!("herald_push_sends_total", "outcome" => outcome).increment(1);
}

/// A dismiss's answer, with the same outcomes.
pub fn push_dismissed(outcome: &'static str) {
    counter!("herald_push_dismisses_total", "outcome" => outcome).increment(1);
}

/// Notifications decided after their delay, and the sends planned for them.
pub fn push_planned(decided: i64, planned: i64) {
    counter!("herald_push_decided_total").increment(decided.max(0) as u64);
    counter!("herald_push_planned_total").increment(planned.max(0) as u64);
}

pub fn push_subscription_removed() {
    counter!("herald_push_subscriptions_removed_total").increment(1);
}

pub fn push_step_failed() {
    counter!("herald_push_step_failures_total").increment(1);
}

/// Requests under way on this instance.
pub fn push_in_flight(requests: usize) {
    gauge!("herald_push_in_flight").set(requests as f64);
}

/// The work waiting in the database, for every instance: notifications past
/// their delay not decided yet, sends due but unclaimed, and how long the
/// oldest of those has waited.
pub fn push_backlog(undecided: i64, waiting: i64, lag_seconds: f64) {
    gauge!("herald_push_undecided").set(undecided as f64);
    gauge!("herald_push_queue").set(waiting as f64);
    gauge!("herald_push_lag_seconds").set(lag_seconds);
}
