//! Dispatch: each step of the event log, emitted to this instance's sockets.
//!
//! Every instance tails the whole log, so every emit is `.local()`: each
//! instance reaches its own sockets and no event crosses between instances.
//! Runs under the tail's progress lock; it does no database I/O itself:
//! unread counts move in memory (crate::unread) and go out with the events
//! that moved them, and delivery records are handed to their writer.

use std::collections::HashMap;
use std::sync::Arc;

use socketioxide::SocketIo;
use socketioxide::extract::SocketRef;
use time::OffsetDateTime;
use tokio::sync::Notify;
use uuid::Uuid;

use super::counts::{self, Counts};
use super::outbox::{self, Pacer, Sent};
use super::presence::Presence;
use super::session::SocketUser;
use crate::audience::{self, AdminRoles, Audience, room};
use crate::deliveries::DeliveryQueue;
use crate::eventlog::tail::{Dispatch, Step};
use crate::eventlog::{Event, Kind, Position};
use crate::fanout::{self, Decision, Emission, Route, Skip, UserChange};
use crate::names::{NAMESPACE, emit};
use crate::telemetry::metrics;
use crate::unread::{Change, Effect};
use crate::wire;

pub struct Dispatcher {
    pub io: SocketIo,
    pub presence: Arc<Presence>,
    pub deliveries: DeliveryQueue,
    pub counts: Counts,
    pub admin_roles: AdminRoles,
    /// `HERALD_UNREAD_TRACKED`.
    pub unread_tracked: usize,
    /// Wakes the wake-up task (gateway::snoozes) when a snooze is logged:
    /// it may end before the one it waits for.
    pub snoozed: Arc<Notify>,
}

impl Dispatch for Dispatcher {
    async fn dispatch(&self, step: &Step) {
        let now = OffsetDateTime::now_utc();
        let mut pacer = Pacer::default();
        let mut run = Run::default();
        for event in &step.events {
            let event_id =
                Position::after_event(&step.start, &step.end, event.tx, event.id).to_string();
            metrics::event_tailed(
                event.kind.as_str(),
                (now - event.created_at).try_into().unwrap_or_default(),
            );
            if event.kind == Kind::NotificationSnoozed {
                self.snoozed.notify_one();
            }
            match fanout::route(event, &event_id, now) {
                Route::Emit(emission) => {
                    if !run.takes(&emission) {
                        self.emit(&mut run, now, &mut pacer).await;
                    }
                    run.push(emission, event.created_at);
                }
                Route::UserChanged(change) => {
                    self.emit(&mut run, now, &mut pacer).await;
                    self.change_user(&change).await;
                }
                Route::Skip(skip) => skipped(event, &skip),
            }
        }
        self.emit(&mut run, now, &mut pacer).await;
        metrics::delivery_lag(self.deliveries.lag());
        let (users, sockets) = self.presence.totals();
        metrics::online(users, sockets);
    }
}

/// Consecutive emissions to one audience, sent socket by socket: each
/// socket is handed all of them at once, so its writer sends them together
/// (a few broadcasts committed close together cost each socket one write,
/// not one each), and the order each socket sees is still the log's.
#[derive(Default)]
struct Run {
    audience: Option<Audience>,
    /// Each with its event's commit-side timestamp, for the emit-lag metric.
    emissions: Vec<(Emission, OffsetDateTime)>,
}

impl Run {
    /// Whether `emission` joins this run rather than starting the next.
    /// New preferences end a run: what follows them is sent by them.
    fn takes(&self, emission: &Emission) -> bool {
        let rules_changed = self
            .emissions
            .last()
            .is_some_and(|(e, _)| matches!(e.unread, Effect::Rules(_)));
        !rules_changed && self.audience.is_none_or(|a| a == emission.audience)
    }

    fn push(&mut self, emission: Emission, created_at: OffsetDateTime) {
        self.audience = Some(emission.audience);
        self.emissions.push((emission, created_at));
    }

    /// The run's audience and emissions, leaving it empty.
    fn take(&mut self) -> Option<(Audience, Vec<(Emission, OffsetDateTime)>)> {
        let audience = self.audience.take()?;
        Some((audience, std::mem::take(&mut self.emissions)))
    }
}

impl Dispatcher {
    /// Sends a run to this instance's sockets in its audience, each socket's
    /// unread count after the run's events, and empties it.
    ///
    /// The run moves the counts in memory first, so each socket is handed
    /// its events and then its count together and its writer sends them in
    /// one write; a broadcast costs each socket one write, not two.
    async fn emit(&self, run: &mut Run, now: OffsetDateTime, pacer: &mut Pacer) {
        let Some((audience, emissions)) = run.take() else {
            return;
        };
        let Some(ns) = self.io.of(NAMESPACE) else {
            return;
        };
        // Serialized when routed, copied into each socket's packet.
        let packets: Vec<_> = emissions
            .iter()
            .map(|(emission, _)| (emission.event, &emission.payload, emission.unread.shows()))
            .collect();
        // Those who mute a kind a notification here is of, when any does.
        let muting = if emissions.iter().any(|(e, _)| e.unread.shows().is_some()) {
            self.presence.muting(audience)
        } else {
            HashMap::new()
        };
        let effects: Vec<Effect> = emissions.iter().map(|(e, _)| e.unread.clone()).collect();
        let reached = self.presence.reach(audience, &effects, self.unread_tracked);
        // Counts known here go out with the events, socket by socket; each
        // is marked once a socket of its user took it.
        let mut counts: HashMap<Uuid, (wire::Count, bool)> = reached
            .counts
            .iter()
            .filter_map(|(user_id, change)| match change {
                Change::Count(count) => Some((*user_id, (wire::Count { count: *count }, false))),
                Change::Query | Change::Reload | Change::Unchanged => None,
            })
            .collect();
        for socket in ns.to(audience.room()).local().sockets() {
            let user_id = match audience {
                Audience::User(id) => Some(id),
                _ => (!muting.is_empty() || !counts.is_empty())
                    .then(|| socket.extensions.get::<SocketUser>())
                    .flatten()
                    .map(|SocketUser(id)| id),
            };
            let rules = user_id.and_then(|user_id| muting.get(&user_id));
            let mut queued = true;
            for (event, payload, shows) in &packets {
                if rules.zip(*shows).is_some_and(|(rules, s)| !s.shown(rules)) {
                    continue;
                }
                if !queue(&socket, event, payload, pacer).await {
                    queued = false;
                    break;
                }
            }
            if let Some((count, taken)) = user_id.and_then(|user_id| counts.get_mut(&user_id))
                && queued
                && queue(&socket, emit::NOTIFICATION_COUNT, count, pacer).await
            {
                *taken = true;
            }
            pacer.served().await;
        }
        let sent_at = OffsetDateTime::now_utc();
        for (emission, created_at) in &emissions {
            metrics::pushed(emission.event);
            metrics::emitted_after((sent_at - *created_at).try_into().unwrap_or_default());
            if let Some(notification_id) = emission.delivers {
                for user_id in &reached.users {
                    self.deliveries.sent(notification_id, *user_id, now);
                }
            }
        }
        let mut counts_sent = 0;
        for (user_id, change) in reached.counts {
            match change {
                Change::Count(count) => {
                    match counts.get(&user_id) {
                        // Sent above: what watches this user's views follows.
                        Some((_, true)) => {
                            counts_sent += 1;
                            let moved = self.presence.moved_views(user_id);
                            if !moved.is_empty() {
                                counts::push_views(&self.io, &self.presence, user_id, moved);
                            }
                        }
                        // No socket of theirs took it in the run's room.
                        _ => counts::push(&self.io, &self.presence, user_id, count),
                    }
                    pacer.served().await;
                }
                Change::Query => self.counts.query([user_id]),
                Change::Reload => self.counts.reload(user_id),
                Change::Unchanged => {}
            }
        }
        // Once per run: a counter's labels are looked up on every call.
        metrics::pushed_times(emit::NOTIFICATION_COUNT, counts_sent);
    }

    /// Applies a change to a user online here: deactivation disconnects
    /// their sockets, a role or sector change moves them between rooms
    /// without a reconnect.
    async fn change_user(&self, change: &UserChange) {
        let Some(ns) = self.io.of(NAMESPACE) else {
            return;
        };
        let Some(old) = self.presence.inbox(change.user_id) else {
            return;
        };
        let sockets = || ns.clone().within(room::user(change.user_id)).local();
        match change.for_member(&old, &self.admin_roles) {
            Decision::Disconnect => {
                tracing::info!(user.id = %change.user_id, "user deactivated: disconnecting their sockets");
                if let Err(error) = sockets().disconnect().await {
                    tracing::warn!(error = %error, user.id = %change.user_id, "could not disconnect every socket");
                }
            }
            Decision::Rooms(new) => {
                let moves = audience::moves(&old, &new);
                for room in moves.leave {
                    leave(sockets(), room).await;
                }
                for room in moves.join {
                    join(sockets(), room).await;
                }
                // What reaches them now differs: their unread set is read
                // again, and their count pushed when it is.
                if self.presence.rooms_changed(new).is_some() {
                    self.counts.reload(change.user_id);
                }
            }
            // A change is always for its own user, who is `old`'s.
            Decision::NotAddressed | Decision::Skip(_) | Decision::Emit(_) => {}
        }
    }
}

/// Queues one packet for a live socket; false when the socket is gone
/// or was evicted for a full queue (nothing more may reach it).
async fn queue<T: ?Sized + serde::Serialize>(
    socket: &SocketRef,
    event: &str,
    payload: &T,
    pacer: &mut Pacer,
) -> bool {
    match outbox::send(socket, event, payload) {
        Sent::Queued => {
            pacer.sent().await;
            true
        }
        Sent::Full => {
            outbox::evict(socket.clone());
            false
        }
        Sent::Closed => false,
    }
}

/// Logs and counts an event that reaches no socket, by its id and kind: an
/// expired notification at debug, a malformed row as the error it is (a
/// push lost).
pub fn skipped(event: &Event, skip: &Skip) {
    metrics::event_skipped(event.kind.as_str(), skip.reason());
    match skip {
        Skip::Expired => tracing::debug!(
            event.id = event.id,
            event.kind = event.kind.as_str(),
            "event not pushed: its notification expired before it was read"
        ),
        Skip::NothingToShow => tracing::debug!(
            event.id = event.id,
            event.kind = event.kind.as_str(),
            "event not pushed: the snooze ended for a notification that no longer shows"
        ),
        Skip::Malformed(reason) => tracing::error!(
            event.id = event.id,
            event.kind = event.kind.as_str(),
            reason = reason.as_str(),
            "event not pushed: malformed event row"
        ),
    }
}

async fn join(sockets: socketioxide::operators::BroadcastOperators, room: String) {
    if let Err(error) = sockets.join(room).await {
        tracing::warn!(error = %error, "could not move sockets into a room");
    }
}

async fn leave(sockets: socketioxide::operators::BroadcastOperators, room: String) {
    if let Err(error) = sockets.leave(room).await {
        tracing::warn!(error = %error, "could not move sockets out of a room");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emission(audience: Audience, n: u128) -> Emission {
        Emission {
            audience,
            event: crate::names::emit::NOTIFICATION_NEW,
            payload: crate::wire::RawJson::of(&serde_json::json!({"n": n})),
            delivers: None,
            unread: Effect::None,
        }
    }

    /// The runs dispatch sends a sequence of emissions in, as it forms them.
    fn runs(emissions: Vec<Emission>) -> Vec<(Audience, Vec<u128>)> {
        let mut run = Run::default();
        let mut sent = Vec::new();
        let mut flush = |run: &mut Run| {
            if let Some((audience, emissions)) = run.take() {
                let ns = emissions
                    .iter()
                    .map(|(e, _)| e.payload.value()["n"].as_u64().unwrap_or(0) as u128);
                sent.push((audience, ns.collect()));
            }
        };
        for emission in emissions {
            if !run.takes(&emission) {
                flush(&mut run);
            }
            run.push(emission, OffsetDateTime::UNIX_EPOCH);
        }
        flush(&mut run);
        sent
    }

    #[test]
    fn consecutive_emissions_to_one_audience_go_out_together_in_log_order() {
        let user = Audience::User(uuid::Uuid::new_v4());
        let emissions = vec![
            emission(Audience::All, 1),
            emission(Audience::All, 2),
            emission(user, 3),
            emission(user, 4),
            emission(Audience::All, 5),
            emission(Audience::Admins, 6),
        ];
        assert_eq!(
            runs(emissions),
            vec![
                (Audience::All, vec![1, 2]),
                (user, vec![3, 4]),
                (Audience::All, vec![5]),
                (Audience::Admins, vec![6]),
            ]
        );
    }

    #[test]
    fn an_emptied_run_takes_any_audience_and_sends_nothing() {
        let mut run = Run::default();
        assert!(run.take().is_none());
        assert!(run.takes(&emission(Audience::Admins, 1)));
        run.push(emission(Audience::Admins, 1), OffsetDateTime::UNIX_EPOCH);
        assert!(!run.takes(&emission(Audience::All, 2)));
        assert!(run.take().is_some());
        assert!(run.takes(&emission(Audience::All, 2)));
    }
}
