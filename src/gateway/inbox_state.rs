//! Client events for the inbox state beyond read: `mark.archived`,
//! `mark.unarchived`, `archive.all_read`, `mark.snoozed`, `mark.unsnoozed`,
//! `preferences.get`, `preferences.set` and `counts.watch`.
//!
//! As with reads, each write is a row; its trigger logs the change, and the
//! tail tells every socket of the user on every instance, this one
//! included. Only `counts.watch` is answered from this instance's memory.

use std::collections::BTreeMap;
use std::future::Future;

use serde::Deserialize;
use serde_json::Value;
use socketioxide::extract::{AckSender, SocketRef, State, TryData};
use time::OffsetDateTime;
use tracing::Instrument;
use uuid::Uuid;

use super::Gateway;
use super::client_events::{
    AckError, AckResult, ByNotification, admit, answer, inbox, parse, payload, span, succeeded,
};
use super::counts;
use super::listing::Filters;
use super::presence::Watch;
use crate::db::{self, inbox::SnoozeRefused};
use crate::names::on;
use crate::preferences::{Channel, Pattern, Preference};
use crate::wire;

/// The most preferences a user keeps.
pub const MAX_PREFERENCES: usize = 100;
/// The most views one `counts.watch` names, and the longest name.
const MAX_VIEWS: usize = 10;
const MAX_VIEW_NAME: usize = 40;
/// The furthest a snooze may reach.
const MAX_SNOOZE: time::Duration = time::Duration::days(90);

pub fn register(socket: &SocketRef) {
    socket.on(on::MARK_ARCHIVED, mark_archived);
    socket.on(on::MARK_UNARCHIVED, mark_unarchived);
    socket.on(on::ARCHIVE_ALL_READ, archive_all_read);
    socket.on(on::MARK_SNOOZED, mark_snoozed);
    socket.on(on::MARK_UNSNOOZED, mark_unsnoozed);
    socket.on(on::PREFERENCES_GET, preferences_get);
    socket.on(on::PREFERENCES_SET, preferences_set);
    socket.on(on::COUNTS_WATCH, counts_watch);
}

/// Runs one client event's work in its span and sends its ack.
async fn respond(
    socket: &SocketRef,
    ack: AckSender,
    event: &'static str,
    work: impl Future<Output = AckResult>,
) {
    let result = work.instrument(span(socket, event)).await;
    answer(socket, ack, event, result);
}

/// An empty payload: `{}` or none.
fn empty(data: Value) -> Result<(), AckError> {
    match data {
        Value::Null => Ok(()),
        Value::Object(fields) if fields.is_empty() => Ok(()),
        _ => Err(AckError::InvalidPayload(
            "expected an empty object {}".into(),
        )),
    }
}

async fn mark_archived(
    socket: SocketRef,
    TryData(data): TryData<Value>,
    ack: AckSender,
    State(gateway): State<Gateway>,
) {
    let work = async {
        let session = admit(&socket)?;
        let request: ByNotification = parse(payload(data), "{notificationId: uuid}")?;
        let client = gateway.pool.get().await?;
        let archived_at = inbox(&gateway, &session)
            .archive(&client, request.notification_id)
            .await?
            .ok_or(AckError::NotFound)?;
        succeeded(wire::ArchiveAck {
            success: true,
            notification_id: request.notification_id,
            archived_at,
        })
    };
    respond(&socket, ack, on::MARK_ARCHIVED, work).await;
}

/// What an early end undoes: an archive or a snooze.
#[derive(Clone, Copy)]
enum Undo {
    Archive,
    Snooze,
}

async fn mark_unarchived(
    socket: SocketRef,
    data: TryData<Value>,
    ack: AckSender,
    gateway: State<Gateway>,
) {
    undo(socket, data, ack, gateway, Undo::Archive).await;
}

async fn mark_unsnoozed(
    socket: SocketRef,
    data: TryData<Value>,
    ack: AckSender,
    gateway: State<Gateway>,
) {
    undo(socket, data, ack, gateway, Undo::Snooze).await;
}

/// `mark.unarchived` and `mark.unsnoozed`: the same request and ack.
async fn undo(
    socket: SocketRef,
    TryData(data): TryData<Value>,
    ack: AckSender,
    State(gateway): State<Gateway>,
    what: Undo,
) {
    let event = match what {
        Undo::Archive => on::MARK_UNARCHIVED,
        Undo::Snooze => on::MARK_UNSNOOZED,
    };
    let work = async {
        let session = admit(&socket)?;
        let request: ByNotification = parse(payload(data), "{notificationId: uuid}")?;
        let client = gateway.pool.get().await?;
        let inbox = inbox(&gateway, &session);
        let id = request.notification_id;
        let found = match what {
            Undo::Archive => inbox.unarchive(&client, id).await?,
            Undo::Snooze => inbox.unsnooze(&client, id).await?,
        };
        if !found {
            return Err(AckError::NotFound);
        }
        succeeded(wire::UnarchiveAck {
            success: true,
            notification_id: id,
        })
    };
    respond(&socket, ack, event, work).await;
}

async fn archive_all_read(
    socket: SocketRef,
    TryData(data): TryData<Value>,
    ack: AckSender,
    State(gateway): State<Gateway>,
) {
    let work = async {
        let session = admit(&socket)?;
        empty(payload(data))?;
        let client = gateway.pool.get().await?;
        let count = inbox(&gateway, &session).archive_read(&client).await?;
        succeeded(wire::ArchiveReadAck {
            success: true,
            count,
        })
    };
    respond(&socket, ack, on::ARCHIVE_ALL_READ, work).await;
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SnoozeRequest {
    notification_id: Uuid,
    until: String,
}

/// A snooze's end: an RFC 3339 time in the future, within 90 days.
pub fn snooze_until(text: &str, now: OffsetDateTime) -> Result<OffsetDateTime, AckError> {
    let until = OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| AckError::InvalidPayload("until is not an RFC 3339 time".into()))?;
    if until <= now {
        return Err(AckError::InvalidPayload(
            "until must lie in the future".into(),
        ));
    }
    if until > now + MAX_SNOOZE {
        return Err(AckError::InvalidPayload(
            "until must lie within 90 days".into(),
        ));
    }
    Ok(until)
}

impl From<SnoozeRefused> for AckError {
    fn from(refused: SnoozeRefused) -> Self {
        match refused {
            SnoozeRefused::Check {
                constraint,
                message,
            } => Self::InvalidPayload(match constraint.as_str() {
                "notification_snoozed_unread_only" => {
                    "a read notification cannot be snoozed".into()
                }
                "notification_snoozed_until_future" => "until must lie in the future".into(),
                "notification_snoozed_until_bounded" => "until must lie within 90 days".into(),
                _ => message,
            }),
            SnoozeRefused::Database(error) => error.into(),
        }
    }
}

async fn mark_snoozed(
    socket: SocketRef,
    TryData(data): TryData<Value>,
    ack: AckSender,
    State(gateway): State<Gateway>,
) {
    let work = async {
        let session = admit(&socket)?;
        let request: SnoozeRequest = parse(
            payload(data),
            "{notificationId: uuid, until: RFC 3339 time}",
        )?;
        let until = snooze_until(&request.until, OffsetDateTime::now_utc())?;
        let client = gateway.pool.get().await?;
        let until = inbox(&gateway, &session)
            .snooze(&client, request.notification_id, until)
            .await?
            .ok_or(AckError::NotFound)?;
        succeeded(wire::SnoozeAck {
            success: true,
            notification_id: request.notification_id,
            until,
        })
    };
    respond(&socket, ack, on::MARK_SNOOZED, work).await;
}

async fn preferences_get(
    socket: SocketRef,
    TryData(data): TryData<Value>,
    ack: AckSender,
    State(gateway): State<Gateway>,
) {
    let work = async {
        let session = admit(&socket)?;
        empty(payload(data))?;
        let client = gateway.pool.get().await?;
        let preferences = db::preferences::list(&client, session.user_id).await?;
        succeeded(wire::PreferencesAck {
            success: true,
            preferences,
        })
    };
    respond(&socket, ack, on::PREFERENCES_GET, work).await;
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SetRequest {
    reset: Option<bool>,
    kind_pattern: Option<String>,
    channel: Option<String>,
    enabled: Option<bool>,
}

/// One preference as a client sent it, checked: a valid pattern and a
/// channel herald knows.
pub fn preference(kind_pattern: &str, channel: &str, enabled: bool) -> Result<Preference, String> {
    let pattern = Pattern::parse(kind_pattern)?;
    let channel = Channel::parse(channel)
        .ok_or_else(|| format!("channel {channel:?} is not IN_APP or PUSH"))?;
    Ok(Preference {
        kind_pattern: pattern.as_str().to_owned(),
        channel,
        enabled,
    })
}

async fn preferences_set(
    socket: SocketRef,
    TryData(data): TryData<Value>,
    ack: AckSender,
    State(gateway): State<Gateway>,
) {
    let work = async {
        let session = admit(&socket)?;
        let expected = "{kindPattern, channel: IN_APP|PUSH, enabled: boolean} or {reset: true}";
        let request: SetRequest = parse(payload(data), expected)?;
        let client = gateway.pool.get().await?;
        match request {
            SetRequest {
                reset: Some(true),
                kind_pattern: None,
                channel: None,
                enabled: None,
            } => db::preferences::replace(&client, session.user_id, &[]).await?,
            SetRequest {
                reset: None,
                kind_pattern: Some(pattern),
                channel: Some(channel),
                enabled: Some(enabled),
            } => {
                let wanted =
                    preference(&pattern, &channel, enabled).map_err(AckError::InvalidPayload)?;
                let kept = db::preferences::list(&client, session.user_id).await?;
                let known = kept
                    .iter()
                    .any(|p| p.kind_pattern == wanted.kind_pattern && p.channel == wanted.channel);
                if !known && kept.len() >= MAX_PREFERENCES {
                    return Err(AckError::InvalidPayload(format!(
                        "at most {MAX_PREFERENCES} preferences per user"
                    )));
                }
                db::preferences::set(&client, session.user_id, &wanted).await?;
            }
            _ => return Err(AckError::InvalidPayload(format!("expected {expected}"))),
        }
        let preferences = db::preferences::list(&client, session.user_id).await?;
        succeeded(wire::PreferencesAck {
            success: true,
            preferences,
        })
    };
    respond(&socket, ack, on::PREFERENCES_SET, work).await;
}

#[derive(Deserialize)]
struct WatchRequest {
    views: BTreeMap<String, Filters>,
}

async fn counts_watch(
    socket: SocketRef,
    TryData(data): TryData<Value>,
    ack: AckSender,
    State(gateway): State<Gateway>,
) {
    let work = async {
        let session = admit(&socket)?;
        let request: WatchRequest = parse(
            payload(data),
            "{views: {name: {kinds?: [pattern], importance?: [level]}}}",
        )?;
        if request.views.len() > MAX_VIEWS {
            return Err(AckError::InvalidPayload(format!(
                "at most {MAX_VIEWS} views"
            )));
        }
        let mut views = Vec::with_capacity(request.views.len());
        for (name, filters) in request.views {
            if name.is_empty() || name.chars().count() > MAX_VIEW_NAME {
                return Err(AckError::InvalidPayload(format!(
                    "a view's name has 1 to {MAX_VIEW_NAME} characters"
                )));
            }
            let view = filters
                .view()
                .map_err(|e| AckError::InvalidPayload(format!("view {name:?}: {e}")))?;
            views.push((name, view));
        }
        let known = gateway
            .presence
            .watch(session.user_id, socket.id, Watch::new(views.clone()));
        let counts = match known {
            Some(counts) => counts,
            // Counted by the database (past the kept limit, or reloading).
            None => {
                let client = gateway.pool.get().await?;
                crate::telemetry::metrics::count_query("views");
                counts::view_counts(&client, &inbox(&gateway, &session), &views).await?
            }
        };
        succeeded(wire::CountsAck {
            success: true,
            counts,
        })
    };
    respond(&socket, ack, on::COUNTS_WATCH, work).await;
}
