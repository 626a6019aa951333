//! Dispatch: each step of the event log, emitted to this instance's sockets.
//!
//! Every instance tails the whole log, so every emit is `.local()`: each
//! instance reaches its own sockets and no event crosses between instances.
//! Runs under the tail's progress lock; it does no database I/O itself
//! (delivery records and counts are handed to their own tasks).

use std::collections::HashSet;
use std::sync::Arc;

use socketioxide::SocketIo;
use time::OffsetDateTime;
use uuid::Uuid;

use super::counts::Counts;
use super::outbox::{self, Pacer, Sent};
use super::presence::Presence;
use crate::db::inbox::Inbox;
use crate::deliveries::DeliveryQueue;
use crate::fanout::{self, Emission, Route, UserChange};
use crate::log::tail::{Dispatch, Step};
use crate::log::{Event, Position};
use crate::names::{NAMESPACE, room};
use crate::telemetry::metrics;

pub struct Dispatcher {
    pub io: SocketIo,
    pub presence: Arc<Presence>,
    pub deliveries: DeliveryQueue,
    pub counts: Counts,
    pub admin_roles: Vec<String>,
}

impl Dispatch for Dispatcher {
    async fn dispatch(&self, step: &Step) {
        let now = OffsetDateTime::now_utc();
        let mut recount = HashSet::new();
        let mut pacer = Pacer::default();
        for event in &step.events {
            let event_id =
                Position::after_event(&step.start, &step.end, event.tx, event.id).to_string();
            metrics::event_tailed(
                event.kind.as_str(),
                (now - event.created_at).try_into().unwrap_or_default(),
            );
            self.apply(event, &event_id, now, &mut recount, &mut pacer)
                .await;
            metrics::emitted_after(
                (OffsetDateTime::now_utc() - event.created_at)
                    .try_into()
                    .unwrap_or_default(),
            );
        }
        self.counts.refresh(recount);
        metrics::delivery_lag(self.deliveries.lag());
        let (users, sockets) = self.presence.totals();
        metrics::online(users, sockets);
    }
}

impl Dispatcher {
    /// Applies one event to this instance's sockets.
    pub async fn apply(
        &self,
        event: &Event,
        event_id: &str,
        now: OffsetDateTime,
        recount: &mut HashSet<Uuid>,
        pacer: &mut Pacer,
    ) {
        match fanout::route(event, event_id, now) {
            Route::Emit(emission) => self.emit(&emission, now, recount, pacer).await,
            Route::UserChanged(change) => {
                self.change_user(&change).await;
                recount.insert(change.user_id);
            }
            Route::Skip(reason) => tracing::debug!(event.id = event.id, reason, "event not pushed"),
        }
    }

    async fn emit(
        &self,
        emission: &Emission,
        now: OffsetDateTime,
        recount: &mut HashSet<Uuid>,
        pacer: &mut Pacer,
    ) {
        let Some(ns) = self.io.of(NAMESPACE) else {
            return;
        };
        // Serialized once, copied into each socket's packet.
        let payload = match serde_json::value::to_raw_value(&emission.payload) {
            Ok(payload) => payload,
            Err(error) => {
                tracing::error!(error = %error, "payload did not serialize");
                return;
            }
        };
        for socket in ns.to(emission.audience.room()).local().sockets() {
            if outbox::send(&socket, emission.event, &payload) == Sent::Full {
                outbox::evict(socket);
            }
            pacer.sent().await;
        }
        metrics::pushed(emission.event);
        let reached = self.presence.addressed(emission.audience);
        if let Some(notification_id) = emission.delivers {
            for inbox in &reached {
                self.deliveries.sent(notification_id, inbox.user_id, now);
            }
        }
        if emission.changes_count {
            recount.extend(reached.iter().map(|inbox| inbox.user_id));
        }
    }

    /// Deactivation disconnects the user's sockets here; a role or sector
    /// change moves them between rooms without a reconnect.
    async fn change_user(&self, change: &UserChange) {
        let Some(ns) = self.io.of(NAMESPACE) else {
            return;
        };
        let Some(old) = self.presence.inbox(change.user_id) else {
            return;
        };
        let sockets = || ns.clone().within(room::user(change.user_id)).local();
        if !change.is_active {
            tracing::info!(user.id = %change.user_id, "user deactivated: disconnecting their sockets");
            if let Err(error) = sockets().disconnect().await {
                tracing::warn!(error = %error, user.id = %change.user_id, "could not disconnect every socket");
            }
            return;
        }
        let new = Inbox {
            user_id: change.user_id,
            sector_id: change.sector_id,
            is_admin: self.admin_roles.contains(&change.role),
        };
        if old.sector_id != new.sector_id {
            if let Some(sector) = old.sector_id {
                leave(sockets(), room::sector(sector)).await;
            }
            if let Some(sector) = new.sector_id {
                join(sockets(), room::sector(sector)).await;
            }
        }
        if old.is_admin != new.is_admin {
            if new.is_admin {
                join(sockets(), room::ADMIN.to_owned()).await;
            } else {
                leave(sockets(), room::ADMIN.to_owned()).await;
            }
        }
        self.presence.set_inbox(new);
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
