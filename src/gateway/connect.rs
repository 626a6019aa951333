//! The connect sequence (docs/reference.md, "On connect") and the hand-over
//! from it to the live stream.
//!
//! The user, the replay or pending push and the unread count are all read in
//! one repeatable-read transaction, so they agree with one snapshot Q. The
//! socket then waits until the tail has dispatched at least Q and, under the
//! tail's progress lock, is sent the events dispatched between Q and the
//! tail's position before it joins its rooms. Events up to Q came through
//! the sequence, events after it through rooms: none twice, none missed,
//! and all after `connection:success`.

use std::time::Duration;

use socketioxide::extract::{SocketRef, State};
use time::OffsetDateTime;
use tracing::Instrument;

use super::Gateway;
use super::client_events;
use super::dispatch::skipped;
use super::outbox::{self, Sent, send_waiting};
use super::replay::{self, Plan, Reset};
use super::session::{Resume, Session};
use crate::audience::{AdminRoles, Inbox, rooms};
use crate::db;
use crate::eventlog::{Event, Position, Snapshot};
use crate::fanout::{self, Decision};
use crate::names::emit;
use crate::preferences::{Channel, Rules};
use crate::telemetry::metrics;
use crate::unread::{Change, Effect, Unread};
use crate::wire;

/// How long a connecting socket waits for the tail to reach its snapshot.
const TAIL_WAIT: Duration = Duration::from_secs(10);

/// The namespace's connect handler; runs after [`super::handshake`].
pub async fn on_connect(socket: SocketRef, State(gateway): State<Gateway>) {
    let Some(session) = socket.extensions.get::<Session>() else {
        // The middleware always stores a session before it lets a socket in.
        tracing::error!(socket.id = %socket.id, "socket without a session");
        let _ = socket.disconnect();
        return;
    };
    metrics::connected();
    let (users, sockets) = gateway.presence.totals();
    metrics::online(users, sockets);
    client_events::register(&socket);
    socket.on_disconnect(
        async |socket: SocketRef,
               reason: socketioxide::socket::DisconnectReason,
               State(gateway): State<Gateway>| {
            tracing::debug!(socket.id = %socket.id, ?reason, "socket disconnected");
            if let Some(session) = socket.extensions.get::<Session>() {
                gateway.presence.unwatch(session.user_id, socket.id);
            }
            let (users, sockets) = gateway.presence.totals();
            // This socket's slot is released when the socket is dropped, just after.
            metrics::online(users, sockets.saturating_sub(1));
        },
    );
    gateway.expiries.watch(
        socket.id,
        session
            .expires_at()
            .saturating_add(gateway.jwt.leeway().as_secs()),
    );

    let span = tracing::info_span!("connect", socket.id = %socket.id, user.id = %session.user_id);
    if let Err(error) = sync(&socket, &gateway, &session).instrument(span).await {
        tracing::warn!(socket.id = %socket.id, user.id = %session.user_id, error = format!("{error:#}"), "connect sequence failed");
        let _ = socket.disconnect();
    }
}

/// Everything the sequence reads, as of one snapshot.
struct Initial {
    snapshot: Snapshot,
    inbox: Inbox,
    reset: bool,
    replay: Option<Vec<Event>>,
    pending: Vec<db::inbox::Unread>,
    count: i64,
    /// What they have unread, kept if no other socket of theirs is joined.
    unread: Unread,
    /// Their `IN_APP` rules: a replayed notification of a kind they mute
    /// now is not sent, as the pending push leaves it out.
    in_app: Rules,
}

async fn sync(socket: &SocketRef, gateway: &Gateway, session: &Session) -> anyhow::Result<()> {
    let Some(initial) = read_initial(gateway, session).await? else {
        tracing::info!(socket.id = %socket.id, user.id = %session.user_id, "user left or was deactivated while connecting");
        let _ = socket.clone().disconnect();
        return Ok(());
    };
    let now = OffsetDateTime::now_utc();
    if initial.reset {
        send_waiting(socket, emit::SYNC_RESET, &wire::Empty {}).await?;
    }
    // By value: the replay is freed once sent, not held while the socket
    // waits for the tail below.
    match initial.replay {
        Some(events) => {
            for event in &events {
                // Replayed events carry their log id for reference; the
                // resume position is connection:success's lastEventId.
                let id = || event.id.to_string();
                match fanout::decide(event, &initial.inbox, now, &gateway.admin_roles, id) {
                    Decision::Emit(emission) if emission.muted_by(&initial.in_app) => {}
                    Decision::Emit(emission) => {
                        send_waiting(socket, emission.event, &emission.payload).await?;
                        if let Some(id) = emission.delivers {
                            gateway.deliveries.sent_again(id, session.user_id, now);
                        }
                    }
                    Decision::Skip(skip) => skipped(event, &skip),
                    // The replay holds only what is addressed to this inbox,
                    // and no user changes: the session read the user itself.
                    Decision::NotAddressed | Decision::Rooms(_) | Decision::Disconnect => {}
                }
            }
        }
        None => {
            for unread in &initial.pending {
                let event_id = unread.event_id.map(|id| id.to_string());
                let payload = wire::NewNotification {
                    notification: &unread.notification,
                    event_id: event_id.as_deref(),
                };
                send_waiting(socket, emit::NOTIFICATION_NEW, &payload).await?;
                gateway
                    .deliveries
                    .sent_again(unread.notification.id, session.user_id, now);
            }
        }
    }
    send_waiting(
        socket,
        emit::NOTIFICATION_COUNT,
        &wire::Count {
            count: initial.count,
        },
    )
    .await?;
    send_waiting(
        socket,
        emit::CONNECTION_SUCCESS,
        &wire::ConnectionSuccess {
            user_id: session.user_id,
            user_name: session.user_name.clone(),
            timestamp: wire::rfc3339(now),
            unread_count: initial.count,
            last_event_id: Position::at(initial.snapshot.clone()).to_string(),
        },
    )
    .await?;
    let synced = Synced {
        snapshot: initial.snapshot,
        inbox: initial.inbox,
        count: initial.count,
        unread: initial.unread,
        in_app: initial.in_app,
    };
    join_live(socket, gateway, session, synced).await
}

async fn read_initial(gateway: &Gateway, session: &Session) -> anyhow::Result<Option<Initial>> {
    let mut client = gateway.pool.get().await?;
    // Every read below sees the database as of exactly this snapshot.
    let (tx, snapshot) = db::snapshot_transaction(&mut client).await?;
    let Some(user) = db::users::find(&tx, session.user_id)
        .await?
        .filter(|u| u.is_active)
    else {
        return Ok(None);
    };
    let inbox = gateway.inbox_of(&user);
    let plan = match &session.resume {
        Resume::Fresh => None,
        Resume::Reset => Some(replay::reset(Reset::Malformed)),
        Resume::From(position) => {
            Some(replay::plan(&tx, &inbox, position, &snapshot, gateway.replay_limit).await?)
        }
    };
    let (reset, replay) = match plan {
        None => (false, None),
        Some(Plan::Reset(_)) => (true, None),
        Some(Plan::Replay(events)) => (false, Some(events)),
    };
    let pending = match replay {
        Some(_) => Vec::new(),
        None => inbox.unread(&tx, gateway.pending_limit).await?,
    };
    // The unread set, whose size is the count; a user past the limit is
    // counted by the database instead.
    metrics::count_query("connect");
    let ids = inbox.unread_ids(&tx, gateway.unread_tracked + 1).await?;
    let unread = Unread::load(ids, gateway.unread_tracked);
    let count = match unread.count() {
        Some(count) => count,
        None => {
            metrics::count_query("connect");
            inbox.unread_count(&tx).await?
        }
    };
    let preferences = db::preferences::list(&tx, session.user_id).await?;
    tx.commit().await?;
    Ok(Some(Initial {
        snapshot,
        inbox,
        reset,
        replay,
        pending,
        count,
        unread,
        in_app: Rules::of(&preferences, Channel::InApp),
    }))
}

/// Where the connect sequence left the socket: at `snapshot`, in `inbox`'s
/// rooms, told `count`, with `unread` behind it.
struct Synced {
    snapshot: Snapshot,
    inbox: Inbox,
    count: i64,
    unread: Unread,
    in_app: Rules,
}

/// Sends what was dispatched between the socket's snapshot and the tail's
/// position, then joins the rooms and takes the user's place among those
/// whose counts move in memory, all under the progress lock.
async fn join_live(
    socket: &SocketRef,
    gateway: &Gateway,
    session: &Session,
    synced: Synced,
) -> anyhow::Result<()> {
    let Synced {
        snapshot: mut from,
        mut inbox,
        count,
        mut unread,
        mut in_app,
    } = synced;
    let mut moved = false;
    let deadline = tokio::time::Instant::now() + TAIL_WAIT;
    loop {
        let progress = gateway.tail.reached(&from, deadline).await?;
        let end = progress.position.clone();
        let Some(missed) = progress.since(&from) else {
            // Older than the steps kept in memory: catch up from the log.
            drop(progress);
            let events = {
                let client = gateway.pool.get().await?;
                db::events::catch_up(&client, &inbox, &Position::at(from.clone()), &end).await?
            };
            let events = events.iter().collect();
            let Some(plan) = send_catch_up(socket, gateway, &from, &end, events, inbox, in_app)?
            else {
                return Ok(());
            };
            plan.apply(&mut unread, gateway.unread_tracked);
            (inbox, in_app, moved) = (plan.inbox, plan.in_app, moved | plan.moved);
            from = end;
            continue;
        };
        let Some(plan) = send_catch_up(socket, gateway, &from, &end, missed, inbox, in_app)? else {
            return Ok(());
        };
        plan.apply(&mut unread, gateway.unread_tracked);
        (inbox, in_app, moved) = (plan.inbox, plan.in_app, moved | plan.moved);
        socket.join(rooms(&inbox));
        let kept = session.slot.join(inbox, in_app, || unread);
        if moved {
            // The set was read for the rooms they had at connect.
            if gateway.presence.rooms_changed(inbox).is_some() {
                gateway.counts.reload(inbox.user_id);
            }
        } else {
            match kept {
                Change::Count(now) if now != count => {
                    let _ = outbox::send(
                        socket,
                        emit::NOTIFICATION_COUNT,
                        &wire::Count { count: now },
                    );
                }
                Change::Query => gateway.counts.query([inbox.user_id]),
                Change::Reload => gateway.counts.reload(inbox.user_id),
                Change::Count(_) | Change::Unchanged => {}
            }
        }
        drop(progress);
        tracing::debug!(socket.id = %socket.id, user.id = %inbox.user_id, "socket live");
        return Ok(());
    }
}

/// Emits the events of (from, end] addressed to this user, in (tx, id)
/// order with their live positions, applying changes to the user on the
/// way. `None` when the socket is closed meanwhile (the user was
/// deactivated, or the socket could not take its catch-up).
fn send_catch_up(
    socket: &SocketRef,
    gateway: &Gateway,
    from: &Snapshot,
    end: &Snapshot,
    events: Vec<&Event>,
    inbox: Inbox,
    in_app: Rules,
) -> anyhow::Result<Option<CatchUp>> {
    let now = OffsetDateTime::now_utc();
    let plan = catch_up(
        events,
        from,
        end,
        (inbox, in_app),
        now,
        &gateway.admin_roles,
    );
    for emission in &plan.emissions {
        // Under the progress lock nothing may wait: a socket that cannot
        // take its catch-up is evicted and resumes when it reconnects.
        match outbox::send(socket, emission.event, &emission.payload) {
            Sent::Queued => {
                if let Some(id) = emission.delivers {
                    gateway.deliveries.sent_again(id, inbox.user_id, now);
                }
            }
            Sent::Full => {
                outbox::evict(socket.clone());
                return Ok(None);
            }
            Sent::Closed => return Ok(None),
        }
    }
    if plan.disconnect {
        let _ = socket.clone().disconnect();
        return Ok(None);
    }
    Ok(Some(plan))
}

/// What a catch-up sends a member and leaves them as.
#[derive(Debug, PartialEq)]
struct CatchUp {
    /// In (tx, id) order, each with its live position.
    emissions: Vec<fanout::Emission>,
    /// Their inbox after the changes to them among the events.
    inbox: Inbox,
    /// Their `IN_APP` rules after the events.
    in_app: Rules,
    /// They were deactivated: what came before is sent, then the socket
    /// is closed, and nothing after it is planned.
    disconnect: bool,
    /// Whether their rooms, or what shows them, changed among the events:
    /// the set read at `from` is read again.
    moved: bool,
}

impl CatchUp {
    /// Moves an unread set read at `from` to `end`.
    fn apply(&self, unread: &mut Unread, limit: usize) {
        for emission in &self.emissions {
            unread.apply(&emission.unread, &self.in_app, limit);
        }
    }
}

/// Decides the events of (from, end] for one member, each against their
/// inbox as the events before it left it.
fn catch_up(
    mut events: Vec<&Event>,
    from: &Snapshot,
    end: &Snapshot,
    (mut inbox, mut in_app): (Inbox, Rules),
    now: OffsetDateTime,
    admins: &AdminRoles,
) -> CatchUp {
    events.sort_by_key(|e| (e.tx, e.id));
    let mut emissions = Vec::new();
    let mut moved = false;
    for event in events {
        let event_id = || Position::after_event(from, end, event.tx, event.id).to_string();
        match fanout::decide(event, &inbox, now, admins, event_id) {
            Decision::NotAddressed => {}
            Decision::Skip(skip) => skipped(event, &skip),
            Decision::Disconnect => {
                return CatchUp {
                    emissions,
                    inbox,
                    in_app,
                    disconnect: true,
                    moved,
                };
            }
            Decision::Rooms(new) => {
                inbox = new;
                moved = true;
            }
            Decision::Emit(emission) if emission.muted_by(&in_app) => {}
            Decision::Emit(emission) => {
                if let Effect::Rules(rules) = &emission.unread {
                    in_app = rules.clone();
                }
                moved |= emission.unread.reloads();
                emissions.push(emission);
            }
        }
    }
    CatchUp {
        emissions,
        inbox,
        in_app,
        disconnect: false,
        moved,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::eventlog::Kind;
    use crate::fanout::samples::{self, NOW};

    fn snapshots() -> (Snapshot, Snapshot) {
        ("100:100:".parse().unwrap(), "110:110:".parse().unwrap())
    }

    fn admins() -> AdminRoles {
        AdminRoles::new(vec!["ADMIN".into()])
    }

    fn created(
        id: i64,
        tx: u64,
        audience: &str,
        user: Option<Uuid>,
        sector: Option<Uuid>,
    ) -> Event {
        let payload = samples::created_payload(Uuid::from_u128(id as u128), audience, None);
        samples::event(
            id,
            tx,
            Kind::NotificationCreated,
            audience,
            user,
            sector,
            payload,
        )
    }

    fn updated(
        id: i64,
        tx: u64,
        user: Uuid,
        active: bool,
        role: &str,
        sector: Option<Uuid>,
    ) -> Event {
        samples::event(
            id,
            tx,
            Kind::UserUpdated,
            "user",
            Some(user),
            sector,
            json!({"userId": user, "isActive": active, "role": role, "sectorId": sector}),
        )
    }

    fn ids(plan: &CatchUp) -> Vec<serde_json::Value> {
        plan.emissions
            .iter()
            .map(|e| e.payload.value()["id"].clone())
            .collect()
    }

    fn member() -> Inbox {
        Inbox {
            user_id: Uuid::new_v4(),
            sector_id: None,
            is_admin: false,
        }
    }

    #[test]
    fn events_go_out_in_commit_order_with_their_live_positions() {
        let (from, end) = snapshots();
        let m = member();
        let events = [
            created(3, 105, "all", None, None),
            created(1, 101, "user", Some(m.user_id), None),
            created(2, 101, "all", None, None),
        ];
        let plan = catch_up(
            events.iter().collect(),
            &from,
            &end,
            (m, Rules::none()),
            NOW,
            &admins(),
        );
        assert_eq!(
            ids(&plan),
            vec![
                json!(Uuid::from_u128(1)),
                json!(Uuid::from_u128(2)),
                json!(Uuid::from_u128(3))
            ]
        );
        assert_eq!(
            plan.emissions[2].payload.value()["eventId"],
            Position::after_event(&from, &end, 105, 3).to_string()
        );
        assert!(!plan.moved && !plan.disconnect);
        assert_eq!(plan.inbox, m);
    }

    #[test]
    fn a_move_changes_what_the_events_after_it_reach() {
        let (from, end) = snapshots();
        let m = member();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let events = [
            created(1, 101, "sector", None, Some(a)),
            created(2, 102, "admin", None, None),
            updated(3, 103, m.user_id, true, "ADMIN", Some(a)),
            created(4, 104, "sector", None, Some(a)),
            created(5, 105, "admin", None, None),
            created(6, 106, "sector", None, Some(b)),
        ];
        let plan = catch_up(
            events.iter().collect(),
            &from,
            &end,
            (m, Rules::none()),
            NOW,
            &admins(),
        );
        assert_eq!(
            ids(&plan),
            vec![json!(Uuid::from_u128(4)), json!(Uuid::from_u128(5))]
        );
        assert_eq!(
            plan.inbox,
            Inbox {
                user_id: m.user_id,
                sector_id: Some(a),
                is_admin: true
            }
        );
        assert!(plan.moved);
    }

    #[test]
    fn a_deactivation_ends_the_catch_up_with_a_disconnect() {
        let (from, end) = snapshots();
        let m = member();
        let events = [
            created(1, 101, "all", None, None),
            updated(2, 102, m.user_id, false, "USER", None),
            created(3, 103, "all", None, None),
        ];
        let plan = catch_up(
            events.iter().collect(),
            &from,
            &end,
            (m, Rules::none()),
            NOW,
            &admins(),
        );
        assert_eq!(ids(&plan), vec![json!(Uuid::from_u128(1))]);
        assert!(plan.disconnect);
    }

    #[test]
    fn what_is_for_others_changes_nothing() {
        let (from, end) = snapshots();
        let m = member();
        let events = [
            created(1, 101, "user", Some(Uuid::new_v4()), None),
            created(2, 102, "sector", None, Some(Uuid::new_v4())),
            created(3, 103, "admin", None, None),
            updated(4, 104, Uuid::new_v4(), false, "USER", None),
        ];
        let plan = catch_up(
            events.iter().collect(),
            &from,
            &end,
            (m, Rules::none()),
            NOW,
            &admins(),
        );
        assert_eq!(
            plan,
            CatchUp {
                emissions: vec![],
                inbox: m,
                in_app: Rules::none(),
                disconnect: false,
                moved: false
            }
        );
    }
}
