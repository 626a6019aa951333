//! Fan-out: what one event of the log means for sockets. A pure function
//! from an event to the rooms it reaches, the socket event and its payload;
//! it does no I/O, so every routing rule is a unit test.

use serde::Deserialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::db::inbox::Inbox;
use crate::log::{Event, Kind};
use crate::names::{emit, room};
use crate::wire;

/// Who an event is addressed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    User(Uuid),
    Sector(Uuid),
    Admins,
    All,
}

impl Audience {
    /// From the routing columns of an event row.
    pub fn of(event: &Event) -> Option<Self> {
        Self::from_columns(event.audience.as_deref()?, event.user_id, event.sector_id)
    }

    /// From a row's `audience`, `user_id` and `sector_id` columns.
    pub fn from_columns(
        audience: &str,
        user_id: Option<Uuid>,
        sector_id: Option<Uuid>,
    ) -> Option<Self> {
        match audience {
            "user" => user_id.map(Self::User),
            "sector" => sector_id.map(Self::Sector),
            "admin" => Some(Self::Admins),
            "all" => Some(Self::All),
            _ => None,
        }
    }

    /// Whether this audience includes the owner of `inbox`.
    pub fn reaches(self, inbox: &Inbox) -> bool {
        match self {
            Self::User(id) => inbox.user_id == id,
            Self::Sector(id) => inbox.sector_id == Some(id),
            Self::Admins => inbox.is_admin,
            Self::All => true,
        }
    }

    /// The room that holds exactly the addressed sockets.
    pub fn room(self) -> String {
        match self {
            Self::User(id) => room::user(id),
            Self::Sector(id) => room::sector(id),
            Self::Admins => room::ADMIN.to_owned(),
            Self::All => room::ALL.to_owned(),
        }
    }
}

/// A socket event for every socket of an audience.
#[derive(Debug, Clone, PartialEq)]
pub struct Emission {
    pub audience: Audience,
    pub event: &'static str,
    pub payload: serde_json::Value,
    /// The notification a `notification:new` announces: its pushes are
    /// recorded as deliveries.
    pub delivers: Option<Uuid>,
    /// Whether the addressed users' unread counts may have changed.
    pub changes_count: bool,
}

/// A change to a user's access or rooms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserChange {
    pub user_id: Uuid,
    pub is_active: bool,
    pub role: String,
    pub sector_id: Option<Uuid>,
}

/// What to do with one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    Emit(Emission),
    UserChanged(UserChange),
    /// Nothing to send.
    Skip(Skip),
}

/// Why an event is not sent; the caller logs it with the event's id and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// The notification expired before herald read its event: routine.
    Expired,
    /// The row lacks what the event needs (routing columns or a payload of
    /// the right shape). Only triggers write the log, so this is a push
    /// lost to a bug, never a client's doing. Says what is wrong.
    Malformed(String),
}

impl Skip {
    /// An event whose routing columns name no audience.
    pub fn no_audience(event: &Event) -> Self {
        Self::Malformed(format!(
            "no audience in the routing columns (audience {:?}, user_id {:?}, sector_id {:?})",
            event.audience, event.user_id, event.sector_id
        ))
    }

    fn malformed(what: &str, error: impl std::fmt::Display) -> Self {
        Self::Malformed(format!("{what}: {error}"))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReadPayload {
    notification_id: Uuid,
    read_at: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RetractedPayload {
    notification_id: Uuid,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserPayload {
    user_id: Uuid,
    is_active: bool,
    role: String,
    sector_id: Option<Uuid>,
}

/// Routes one event. `event_id` is the position clients resume from after
/// it; `now` decides whether a notification has expired meanwhile.
pub fn route(event: &Event, event_id: &str, now: OffsetDateTime) -> Route {
    match event.kind {
        Kind::NotificationCreated => {
            let Some(audience) = Audience::of(event) else {
                return Route::Skip(Skip::no_audience(event));
            };
            let notification =
                match serde_json::from_value::<wire::Notification>(event.payload.clone()) {
                    Ok(notification) => notification,
                    Err(error) => {
                        return Route::Skip(Skip::malformed("notification payload", error));
                    }
                };
            if is_expired(&notification, now) {
                return Route::Skip(Skip::Expired);
            }
            let payload = wire::NewNotification {
                notification: &notification,
                event_id: Some(event_id),
            };
            Route::Emit(Emission {
                audience,
                event: emit::NOTIFICATION_NEW,
                payload: json(&payload),
                delivers: Some(notification.id),
                changes_count: true,
            })
        }
        Kind::NotificationRead => {
            let Some(reader) = event.user_id else {
                return Route::Skip(Skip::Malformed("no user_id (the reader)".into()));
            };
            let read = match serde_json::from_value::<ReadPayload>(event.payload.clone()) {
                Ok(read) => read,
                Err(error) => return Route::Skip(Skip::malformed("read payload", error)),
            };
            let payload = wire::NotificationRead {
                notification_id: read.notification_id,
                read_at: &read.read_at,
                event_id,
            };
            Route::Emit(Emission {
                audience: Audience::User(reader),
                event: emit::NOTIFICATION_READ,
                payload: json(&payload),
                delivers: None,
                changes_count: true,
            })
        }
        Kind::NotificationRetracted => {
            let Some(audience) = Audience::of(event) else {
                return Route::Skip(Skip::no_audience(event));
            };
            let retracted = match serde_json::from_value::<RetractedPayload>(event.payload.clone())
            {
                Ok(retracted) => retracted,
                Err(error) => return Route::Skip(Skip::malformed("retraction payload", error)),
            };
            let payload = wire::NotificationRetracted {
                notification_id: retracted.notification_id,
                event_id,
            };
            Route::Emit(Emission {
                audience,
                event: emit::NOTIFICATION_RETRACTED,
                payload: json(&payload),
                delivers: None,
                changes_count: true,
            })
        }
        Kind::UserUpdated => match serde_json::from_value::<UserPayload>(event.payload.clone()) {
            Ok(user) => Route::UserChanged(UserChange {
                user_id: user.user_id,
                is_active: user.is_active,
                role: user.role,
                sector_id: user.sector_id,
            }),
            Err(error) => Route::Skip(Skip::malformed("user payload", error)),
        },
    }
}

fn is_expired(notification: &wire::Notification, now: OffsetDateTime) -> bool {
    notification
        .expires_at
        .as_deref()
        .and_then(|at| {
            OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()
        })
        .is_some_and(|at| at <= now)
}

fn json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    // Serializing these plain structs of strings, ids and JSON values cannot fail.
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-27 09:00 UTC);

    fn event(
        kind: Kind,
        audience: &str,
        user: Option<Uuid>,
        sector: Option<Uuid>,
        payload: serde_json::Value,
    ) -> Event {
        Event {
            id: 7,
            tx: 1000,
            created_at: NOW,
            kind,
            notification_id: Some(Uuid::nil()),
            user_id: user,
            sector_id: sector,
            audience: Some(audience.into()),
            payload,
        }
    }

    fn created_payload(audience: &str, expires_at: Option<&str>) -> serde_json::Value {
        json!({
            "id": Uuid::nil(), "audience": audience, "kind": "order.shipped", "importance": "high",
            "title": "Shipped", "message": "", "actionUrl": null, "data": {"order": 1},
            "createdAt": "2026-11-27T08:59:59.000000Z", "expiresAt": expires_at,
            "userId": null, "sectorId": null
        })
    }

    #[test]
    fn a_personal_notification_goes_to_its_user_room_with_its_event_id() {
        let user = Uuid::new_v4();
        let e = event(
            Kind::NotificationCreated,
            "user",
            Some(user),
            None,
            created_payload("user", None),
        );
        let Route::Emit(emission) = route(&e, "p1", NOW) else {
            panic!("not emitted")
        };
        assert_eq!(emission.audience, Audience::User(user));
        assert_eq!(emission.audience.room(), format!("user:{user}"));
        assert_eq!(emission.event, "notification:new");
        assert_eq!(emission.payload["eventId"], "p1");
        assert_eq!(emission.payload["title"], "Shipped");
        assert_eq!(emission.payload["expiresAt"], serde_json::Value::Null);
        assert!(
            emission.payload.get("userId").is_none(),
            "routing columns stay internal"
        );
        assert_eq!(emission.delivers, Some(Uuid::nil()));
        assert!(emission.changes_count);
    }

    #[test]
    fn sector_admin_and_all_reach_their_rooms() {
        let sector = Uuid::new_v4();
        let cases = [
            (
                event(
                    Kind::NotificationCreated,
                    "sector",
                    None,
                    Some(sector),
                    created_payload("sector", None),
                ),
                format!("sector:{sector}"),
            ),
            (
                event(
                    Kind::NotificationCreated,
                    "admin",
                    None,
                    None,
                    created_payload("admin", None),
                ),
                "admin".to_owned(),
            ),
            (
                event(
                    Kind::NotificationCreated,
                    "all",
                    None,
                    None,
                    created_payload("all", None),
                ),
                room::ALL.to_owned(),
            ),
        ];
        for (e, expected) in cases {
            let Route::Emit(emission) = route(&e, "p", NOW) else {
                panic!("not emitted")
            };
            assert_eq!(emission.audience.room(), expected);
        }
    }

    #[test]
    fn an_expired_notification_is_not_pushed() {
        let e = event(
            Kind::NotificationCreated,
            "all",
            None,
            None,
            created_payload("all", Some("2026-11-27T08:59:59.500000Z")),
        );
        assert_eq!(route(&e, "p", NOW), Route::Skip(Skip::Expired));
        let later = event(
            Kind::NotificationCreated,
            "all",
            None,
            None,
            created_payload("all", Some("2026-11-27T10:00:00.000000Z")),
        );
        assert!(matches!(route(&later, "p", NOW), Route::Emit(_)));
    }

    #[test]
    fn a_read_goes_to_the_reader_only() {
        let reader = Uuid::new_v4();
        let n = Uuid::new_v4();
        let e = event(
            Kind::NotificationRead,
            "user",
            Some(reader),
            None,
            json!({"notificationId": n, "userId": reader, "readAt": "2026-11-27T09:00:00.000000Z"}),
        );
        let Route::Emit(emission) = route(&e, "p2", NOW) else {
            panic!("not emitted")
        };
        assert_eq!(emission.audience, Audience::User(reader));
        assert_eq!(emission.event, "notification:read");
        assert_eq!(
            emission.payload,
            json!({"notificationId": n, "readAt": "2026-11-27T09:00:00.000000Z", "eventId": "p2"})
        );
        assert_eq!(emission.delivers, None);
    }

    #[test]
    fn a_retraction_reaches_the_original_audience() {
        let sector = Uuid::new_v4();
        let n = Uuid::new_v4();
        let e = event(
            Kind::NotificationRetracted,
            "sector",
            None,
            Some(sector),
            json!({"notificationId": n, "retractedAt": "2026-11-27T09:00:00.000000Z"}),
        );
        let Route::Emit(emission) = route(&e, "p3", NOW) else {
            panic!("not emitted")
        };
        assert_eq!(emission.audience, Audience::Sector(sector));
        assert_eq!(
            emission.payload,
            json!({"notificationId": n, "eventId": "p3"})
        );
    }

    #[test]
    fn a_user_update_is_a_user_change() {
        let user = Uuid::new_v4();
        let sector = Uuid::new_v4();
        let e = event(
            Kind::UserUpdated,
            "user",
            Some(user),
            Some(sector),
            json!({"userId": user, "isActive": false, "role": "USER", "sectorId": sector, "previousRole": "USER", "previousSectorId": null}),
        );
        assert_eq!(
            route(&e, "p", NOW),
            Route::UserChanged(UserChange {
                user_id: user,
                is_active: false,
                role: "USER".into(),
                sector_id: Some(sector)
            })
        );
    }

    #[test]
    fn malformed_rows_are_skipped_not_fatal_and_say_what_is_wrong() {
        let malformed = |route: Route| match route {
            Route::Skip(Skip::Malformed(reason)) => reason,
            other => panic!("not skipped as malformed: {other:?}"),
        };
        let e = event(
            Kind::NotificationCreated,
            "user",
            Some(Uuid::new_v4()),
            None,
            json!([1, 2]),
        );
        let reason = malformed(route(&e, "p", NOW));
        assert!(reason.starts_with("notification payload: "), "{reason}");
        let mut no_audience = event(
            Kind::NotificationCreated,
            "user",
            None,
            None,
            created_payload("user", None),
        );
        no_audience.audience = None;
        let reason = malformed(route(&no_audience, "p", NOW));
        assert!(reason.contains("no audience"), "{reason}");
        let read = event(
            Kind::NotificationRead,
            "user",
            Some(Uuid::new_v4()),
            None,
            json!({"notificationId": "not a uuid"}),
        );
        let reason = malformed(route(&read, "p", NOW));
        assert!(reason.starts_with("read payload: "), "{reason}");
    }
}
