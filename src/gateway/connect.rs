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

use anyhow::Context;
use socketioxide::extract::{SocketRef, State};
use time::OffsetDateTime;
use tokio_postgres::IsolationLevel;
use tracing::Instrument;

use super::Gateway;
use super::client_events;
use super::dispatch::skipped;
use super::outbox::{self, Sent, send_waiting};
use super::replay::{self, Plan, Reset};
use super::session::{Resume, Session};
use crate::audience::{Inbox, rooms};
use crate::db;
use crate::fanout::{self, Decision};
use crate::log::{Event, Position, Snapshot};
use crate::names::emit;
use crate::telemetry::metrics;
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
                    Decision::Emit(emission) => {
                        send_waiting(socket, emission.event, &emission.payload).await?;
                        if let Some(id) = emission.delivers {
                            gateway.deliveries.sent(id, session.user_id, now);
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
                    .sent(unread.notification.id, session.user_id, now);
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
    join_live(socket, gateway, session, initial.snapshot, initial.inbox).await
}

async fn read_initial(gateway: &Gateway, session: &Session) -> anyhow::Result<Option<Initial>> {
    let mut client = gateway.pool.get().await?;
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    // The first query fixes the transaction's snapshot; every read below sees
    // the database as of exactly this one.
    let text: String = tx
        .query_one("select pg_current_snapshot()::text", &[])
        .await?
        .try_get(0)?;
    let snapshot: Snapshot = text.parse().context("reading pg_current_snapshot()")?;
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
    let count = inbox.unread_count(&tx).await?;
    tx.commit().await?;
    Ok(Some(Initial {
        snapshot,
        inbox,
        reset,
        replay,
        pending,
        count,
    }))
}

/// Sends what was dispatched between `from` and the tail's position, then
/// joins the rooms, all under the progress lock.
async fn join_live(
    socket: &SocketRef,
    gateway: &Gateway,
    session: &Session,
    mut from: Snapshot,
    mut inbox: Inbox,
) -> anyhow::Result<()> {
    let mut stepped = gateway.tail.stepped.clone();
    let deadline = tokio::time::Instant::now() + TAIL_WAIT;
    loop {
        let progress = gateway.tail.progress.lock().await;
        if progress.position.includes(&from) {
            let end = progress.position.clone();
            let Some(missed) = progress.since(&from) else {
                // Older than the steps kept in memory: catch up from the log.
                drop(progress);
                let events = {
                    let client = gateway.pool.get().await?;
                    db::events::replay(&client, &inbox, &Position::at(from.clone()), &end, i64::MAX)
                        .await?
                };
                if !send_catch_up(
                    socket,
                    gateway,
                    &from,
                    &end,
                    events.iter().collect(),
                    &mut inbox,
                )? {
                    return Ok(());
                }
                from = end;
                continue;
            };
            if !send_catch_up(socket, gateway, &from, &end, missed, &mut inbox)? {
                return Ok(());
            }
            socket.join(rooms(&inbox));
            session.slot.join(inbox);
            drop(progress);
            tracing::debug!(socket.id = %socket.id, user.id = %inbox.user_id, "socket live");
            return Ok(());
        }
        drop(progress);
        // The tail has not dispatched our snapshot yet: ask it for a step.
        gateway.tail.poke.notify_one();
        tokio::time::timeout_at(deadline, stepped.changed())
            .await
            .context("the event log listener did not catch up")?
            .context("the event log listener stopped")?;
    }
}

/// Emits the events of (from, end] addressed to this user, in (tx, id)
/// order with their live positions, applying changes to the user on the
/// way. False when the user was deactivated (the socket is then closed).
fn send_catch_up(
    socket: &SocketRef,
    gateway: &Gateway,
    from: &Snapshot,
    end: &Snapshot,
    mut events: Vec<&Event>,
    inbox: &mut Inbox,
) -> anyhow::Result<bool> {
    events.sort_by_key(|e| (e.tx, e.id));
    let now = OffsetDateTime::now_utc();
    let mut count_changed = false;
    for event in events {
        let event_id = || Position::after_event(from, end, event.tx, event.id).to_string();
        match fanout::decide(event, inbox, now, &gateway.admin_roles, event_id) {
            Decision::NotAddressed => {}
            Decision::Skip(skip) => skipped(event, &skip),
            Decision::Disconnect => {
                let _ = socket.clone().disconnect();
                return Ok(false);
            }
            Decision::Rooms(new) => {
                *inbox = new;
                count_changed = true;
            }
            // Under the progress lock nothing may wait: a socket that cannot
            // take its catch-up is evicted and resumes when it reconnects.
            Decision::Emit(emission) => {
                match outbox::send(socket, emission.event, &emission.payload) {
                    Sent::Queued => {
                        count_changed |= emission.changes_count;
                        if let Some(id) = emission.delivers {
                            gateway.deliveries.sent(id, inbox.user_id, now);
                        }
                    }
                    Sent::Full => {
                        outbox::evict(socket.clone());
                        return Ok(false);
                    }
                    Sent::Closed => return Ok(false),
                }
            }
        }
    }
    if count_changed {
        gateway.counts.refresh([inbox.user_id]);
    }
    Ok(true)
}
