//! Fan-out: what one event of the log means for sockets. Pure functions,
//! no I/O, so every routing rule is a unit test:
//!
//! - [`route`]: an event to the audience it reaches, the socket event and
//!   its payload, or a change to a user; live dispatch emits it to the
//!   audience's room (gateway::dispatch);
//! - [`decide`]: the same for one member, given their inbox: emit, skip,
//!   move their rooms or disconnect them. The connect sequence's replay and
//!   catch-up apply it event by event (gateway::connect), and dispatch
//!   applies [`UserChange::for_member`] to the changed user.
//!
//! Every event kind is handled in [`route`] alone; both paths follow it,
//! including what the event does to unread counts ([`Emission::unread`]).

use serde::Deserialize;
use time::OffsetDateTime;
use uuid::Uuid;

pub use crate::audience::Audience;
use crate::audience::{AdminRoles, Inbox};
use crate::eventlog::{Event, Kind};
use crate::names::emit;
use crate::preferences::{Channel, Preference, Rules};
use crate::unread::{Effect, Subject};
use crate::wire::{self, RawJson};

/// Who an event is addressed to, from its routing columns.
pub fn audience_of(event: &Event) -> Option<Audience> {
    Audience::from_columns(event.audience.as_deref()?, event.user_id, event.sector_id)
}

/// A socket event for every socket of an audience.
#[derive(Debug, Clone, PartialEq)]
pub struct Emission {
    pub audience: Audience,
    pub event: &'static str,
    /// Serialized once, when routed, and copied as it is into the packet
    /// of every socket it reaches.
    pub payload: RawJson,
    /// The notification a `notification:new` announces: its pushes are
    /// recorded as deliveries.
    pub delivers: Option<Uuid>,
    /// What it does to the unread notifications of those it reaches.
    pub unread: Effect,
}

impl Emission {
    /// Whether it is a notification a user with these `IN_APP` rules mutes.
    pub fn muted_by(&self, rules: &Rules) -> bool {
        self.unread
            .shows()
            .is_some_and(|subject| !subject.shown(rules))
    }
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
    /// A snooze ended for a notification that no longer shows (read,
    /// archived, retracted or expired meanwhile): nothing to show again.
    NothingToShow,
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

    /// The `reason` label of `herald_events_skipped_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::NothingToShow => "nothing_to_show",
            Self::Malformed(_) => "malformed",
        }
    }

    fn malformed(what: &str, error: impl std::fmt::Display) -> Self {
        Self::Malformed(format!("{what}: {error}"))
    }
}

/// What one event means for one member.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Not addressed to this member.
    NotAddressed,
    /// Addressed to them, but nothing to send; the caller logs why.
    Skip(Skip),
    /// Send it: the socket event, its payload, and whether a `SENT` row
    /// ([`Emission::delivers`]) and a recount ([`Emission::changes_count`])
    /// follow.
    Emit(Emission),
    /// Their role or sector changed: their sockets move to this inbox's
    /// rooms, and their count is recounted.
    Rooms(Inbox),
    /// They were deactivated: their sockets are disconnected.
    Disconnect,
}

impl UserChange {
    /// What this change means for `member` (their inbox before it).
    pub fn for_member(&self, member: &Inbox, admins: &AdminRoles) -> Decision {
        if self.user_id != member.user_id {
            Decision::NotAddressed
        } else if !self.is_active {
            Decision::Disconnect
        } else {
            Decision::Rooms(admins.inbox(member.user_id, self.sector_id, &self.role))
        }
    }
}

impl Route {
    /// What this routed event means for `member`.
    pub fn for_member(self, member: &Inbox, admins: &AdminRoles) -> Decision {
        match self {
            Self::Emit(emission) if emission.audience.reaches(member) => Decision::Emit(emission),
            Self::Emit(_) => Decision::NotAddressed,
            Self::UserChanged(change) => change.for_member(member, admins),
            Self::Skip(skip) => Decision::Skip(skip),
        }
    }
}

/// Decides one event for one member. `event_id` (the position clients
/// resume from after it) is built only for an event addressed to them.
///
/// The routing columns are read first, so an event addressed elsewhere
/// costs no payload parse: a catch-up reads every event of the steps its
/// socket missed.
pub fn decide(
    event: &Event,
    member: &Inbox,
    now: OffsetDateTime,
    admins: &AdminRoles,
    event_id: impl FnOnce() -> String,
) -> Decision {
    match audience_of(event) {
        None => Decision::Skip(Skip::no_audience(event)),
        Some(audience) if !audience.reaches(member) => Decision::NotAddressed,
        Some(_) => route(event, &event_id(), now).for_member(member, admins),
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
struct ArchivedPayload {
    notification_id: Uuid,
    archived_at: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SnoozedPayload {
    notification_id: Uuid,
    until: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UnsnoozedPayload {
    /// Null when there is nothing to show again (read, archived, gone).
    notification: Option<wire::Notification>,
}

#[derive(Deserialize)]
struct PreferencesPayload {
    preferences: Vec<Preference>,
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
            let Some(audience) = audience_of(event) else {
                return Route::Skip(Skip::no_audience(event));
            };
            let notification = match payload::<wire::Notification>(event) {
                Ok(notification) => notification,
                Err(error) => {
                    return Route::Skip(Skip::malformed("notification payload", error));
                }
            };
            if is_expired(&notification, now) {
                return Route::Skip(Skip::Expired);
            }
            Route::Emit(shows(
                audience,
                &notification,
                event_id,
                Some(notification.id),
            ))
        }
        Kind::NotificationRead => {
            let Some(reader) = event.user_id else {
                return Route::Skip(Skip::Malformed("no user_id (the reader)".into()));
            };
            let read = match payload::<ReadPayload>(event) {
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
                payload: RawJson::of(&payload),
                delivers: None,
                unread: Effect::Removes(read.notification_id),
            })
        }
        Kind::NotificationRetracted => {
            let Some(audience) = audience_of(event) else {
                return Route::Skip(Skip::no_audience(event));
            };
            let retracted = match payload::<RetractedPayload>(event) {
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
                payload: RawJson::of(&payload),
                delivers: None,
                unread: Effect::Removes(retracted.notification_id),
            })
        }
        Kind::UserUpdated => match payload::<UserPayload>(event) {
            Ok(user) => Route::UserChanged(UserChange {
                user_id: user.user_id,
                is_active: user.is_active,
                role: user.role,
                sector_id: user.sector_id,
            }),
            Err(error) => Route::Skip(Skip::malformed("user payload", error)),
        },
        Kind::NotificationArchived => {
            let (user, archived) = match personal::<ArchivedPayload>(event, "archive payload") {
                Ok(parsed) => parsed,
                Err(skip) => return Route::Skip(skip),
            };
            let payload = wire::NotificationArchived {
                notification_id: archived.notification_id,
                archived_at: &archived.archived_at,
                event_id,
            };
            // Its read comes before it in the log and moves the count.
            Route::Emit(to_user(
                user,
                emit::NOTIFICATION_ARCHIVED,
                RawJson::of(&payload),
                Effect::None,
            ))
        }
        Kind::NotificationUnarchived => {
            let (user, unarchived) = match personal::<RetractedPayload>(event, "unarchive payload")
            {
                Ok(parsed) => parsed,
                Err(skip) => return Route::Skip(skip),
            };
            let payload = wire::NotificationRetracted {
                notification_id: unarchived.notification_id,
                event_id,
            };
            Route::Emit(to_user(
                user,
                emit::NOTIFICATION_UNARCHIVED,
                RawJson::of(&payload),
                Effect::None,
            ))
        }
        Kind::NotificationSnoozed => {
            let (user, snoozed) = match personal::<SnoozedPayload>(event, "snooze payload") {
                Ok(parsed) => parsed,
                Err(skip) => return Route::Skip(skip),
            };
            let payload = wire::NotificationSnoozed {
                notification_id: snoozed.notification_id,
                until: &snoozed.until,
                event_id,
            };
            Route::Emit(to_user(
                user,
                emit::NOTIFICATION_SNOOZED,
                RawJson::of(&payload),
                Effect::Reload,
            ))
        }
        Kind::NotificationUnsnoozed => {
            let (user, unsnoozed) = match personal::<UnsnoozedPayload>(event, "unsnooze payload") {
                Ok(parsed) => parsed,
                Err(skip) => return Route::Skip(skip),
            };
            match unsnoozed.notification {
                Some(notification) if !is_expired(&notification, now) => {
                    Route::Emit(shows(Audience::User(user), &notification, event_id, None))
                }
                // Read, archived, retracted or expired meanwhile: the
                // events that did it told every device already.
                Some(_) | None => Route::Skip(Skip::NothingToShow),
            }
        }
        Kind::PreferencesUpdated => {
            let (user, updated) = match personal::<PreferencesPayload>(event, "preferences payload")
            {
                Ok(parsed) => parsed,
                Err(skip) => return Route::Skip(skip),
            };
            let payload = wire::PreferencesUpdated {
                preferences: &updated.preferences,
                event_id,
            };
            let rules = Rules::of(&updated.preferences, Channel::InApp);
            Route::Emit(to_user(
                user,
                emit::PREFERENCES_UPDATED,
                RawJson::of(&payload),
                Effect::Rules(rules),
            ))
        }
    }
}

/// `notification:new` for a notification to show: at its creation, or
/// again when a snooze of it ends. `delivers` is the id whose pushes are
/// recorded as deliveries (the creation's, not the snooze's end).
fn shows(
    audience: Audience,
    notification: &wire::Notification,
    event_id: &str,
    delivers: Option<Uuid>,
) -> Emission {
    let payload = wire::NewNotification {
        notification,
        event_id: Some(event_id),
    };
    Emission {
        audience,
        event: emit::NOTIFICATION_NEW,
        payload: RawJson::of(&payload),
        delivers,
        unread: Effect::Adds {
            id: notification.id,
            expires_at: expiry(notification),
            subject: Subject::new(&notification.kind, &notification.importance),
        },
    }
}

fn to_user(user: Uuid, event: &'static str, payload: RawJson, unread: Effect) -> Emission {
    Emission {
        audience: Audience::User(user),
        event,
        payload,
        delivers: None,
        unread,
    }
}

/// The user an inbox-state event is about (its `user_id`), and its payload.
fn personal<'a, T: Deserialize<'a>>(event: &'a Event, what: &str) -> Result<(Uuid, T), Skip> {
    let user = event
        .user_id
        .ok_or_else(|| Skip::Malformed("no user_id (whose inbox)".into()))?;
    let payload = payload(event).map_err(|e| Skip::malformed(what, e))?;
    Ok((user, payload))
}

/// An event's payload read as `T`, straight from the row's JSON (no copy of
/// it first: a broadcast's payload is read once per event, a replay's once
/// per socket).
fn payload<'a, T: Deserialize<'a>>(event: &'a Event) -> Result<T, serde_json::Error> {
    serde_json::from_str(event.payload.get())
}

fn is_expired(notification: &wire::Notification, now: OffsetDateTime) -> bool {
    expiry(notification).is_some_and(|at| at <= now)
}

fn expiry(notification: &wire::Notification) -> Option<OffsetDateTime> {
    let at = notification.expires_at.as_deref()?;
    OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()
}

/// Event rows as the triggers write them, for the tests of the modules
/// that route them.
#[cfg(test)]
pub(crate) mod samples {
    use super::*;

    pub const NOW: OffsetDateTime = time::macros::datetime!(2026-11-27 09:00 UTC);

    pub fn event(
        id: i64,
        tx: u64,
        kind: Kind,
        audience: &str,
        user: Option<Uuid>,
        sector: Option<Uuid>,
        payload: serde_json::Value,
    ) -> Event {
        Event {
            id,
            tx,
            created_at: NOW,
            kind,
            notification_id: Some(Uuid::nil()),
            user_id: user,
            sector_id: sector,
            audience: Some(audience.into()),
            payload: RawJson::of(&payload),
        }
    }

    /// A `notification.created` payload (`herald.notification_json`).
    pub fn created_payload(
        id: Uuid,
        audience: &str,
        expires_at: Option<&str>,
    ) -> serde_json::Value {
        serde_json::json!({
            "id": id, "audience": audience, "kind": "order.shipped", "importance": "high",
            "title": "Shipped", "message": "", "actionUrl": null, "data": {"order": 1},
            "createdAt": "2026-11-27T08:59:59.000000Z", "expiresAt": expires_at,
            "userId": null, "sectorId": null
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audience::room;
    use serde_json::json;

    use samples::NOW;

    fn event(
        kind: Kind,
        audience: &str,
        user: Option<Uuid>,
        sector: Option<Uuid>,
        payload: serde_json::Value,
    ) -> Event {
        samples::event(7, 1000, kind, audience, user, sector, payload)
    }

    fn created_payload(audience: &str, expires_at: Option<&str>) -> serde_json::Value {
        samples::created_payload(Uuid::nil(), audience, expires_at)
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
        assert_eq!(emission.payload.value()["eventId"], "p1");
        assert_eq!(emission.payload.value()["title"], "Shipped");
        assert_eq!(
            emission.payload.value()["expiresAt"],
            serde_json::Value::Null
        );
        assert!(
            emission.payload.value().get("userId").is_none(),
            "routing columns stay internal"
        );
        assert_eq!(emission.delivers, Some(Uuid::nil()));
        assert_eq!(
            emission.unread,
            Effect::Adds {
                id: Uuid::nil(),
                expires_at: None,
                subject: Subject::new("order.shipped", "high"),
            }
        );
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
        let Route::Emit(emission) = route(&later, "p", NOW) else {
            panic!("not emitted")
        };
        assert_eq!(
            emission.unread,
            Effect::Adds {
                id: Uuid::nil(),
                expires_at: Some(time::macros::datetime!(2026-11-27 10:00 UTC)),
                subject: Subject::new("order.shipped", "high"),
            },
            "its expiry goes with it, so the count falls when it passes"
        );
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
            emission.payload.value(),
            json!({"notificationId": n, "readAt": "2026-11-27T09:00:00.000000Z", "eventId": "p2"})
        );
        assert_eq!(emission.delivers, None);
        assert_eq!(emission.unread, Effect::Removes(n));
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
            emission.payload.value(),
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

    fn member(sector_id: Option<Uuid>, is_admin: bool) -> Inbox {
        Inbox {
            user_id: Uuid::new_v4(),
            sector_id,
            is_admin,
        }
    }

    fn admins() -> AdminRoles {
        AdminRoles::new(vec!["ADMIN".into()])
    }

    fn decided(e: &Event, m: &Inbox) -> Decision {
        decide(e, m, NOW, &admins(), || "p".into())
    }

    fn user_update(user: Uuid, active: bool, role: &str, sector: Option<Uuid>) -> Event {
        event(
            Kind::UserUpdated,
            "user",
            Some(user),
            sector,
            json!({"userId": user, "isActive": active, "role": role, "sectorId": sector}),
        )
    }

    #[test]
    fn a_member_is_sent_exactly_what_its_audience_reaches_as_live_dispatch_sends_it() {
        let sector = Uuid::new_v4();
        let members = [
            member(None, false),
            member(Some(sector), false),
            member(None, true),
        ];
        let events = [
            event(
                Kind::NotificationCreated,
                "user",
                Some(members[0].user_id),
                None,
                created_payload("user", None),
            ),
            event(
                Kind::NotificationCreated,
                "sector",
                None,
                Some(sector),
                created_payload("sector", None),
            ),
            event(
                Kind::NotificationCreated,
                "admin",
                None,
                None,
                created_payload("admin", None),
            ),
            event(
                Kind::NotificationCreated,
                "all",
                None,
                None,
                created_payload("all", None),
            ),
            event(
                Kind::NotificationRetracted,
                "sector",
                None,
                Some(sector),
                json!({"notificationId": Uuid::nil()}),
            ),
            event(
                Kind::NotificationRead,
                "user",
                Some(members[1].user_id),
                None,
                json!({"notificationId": Uuid::nil(), "readAt": "2026-11-27T09:00:00.000000Z"}),
            ),
        ];
        for e in &events {
            let Route::Emit(live) = route(e, "p", NOW) else {
                panic!("not emitted: {e:?}")
            };
            for m in &members {
                match decide(e, m, NOW, &admins(), || "p".into()) {
                    Decision::Emit(emission) => {
                        assert!(live.audience.reaches(m), "{e:?} sent to {m:?}");
                        assert_eq!(emission, live, "the member gets what the room gets");
                    }
                    Decision::NotAddressed => {
                        assert!(!live.audience.reaches(m), "{e:?} missed {m:?}")
                    }
                    other => panic!("{other:?} for {e:?}"),
                }
            }
        }
    }

    #[test]
    fn an_event_for_someone_else_is_not_parsed_nor_given_a_position() {
        let m = member(None, false);
        let broken = event(
            Kind::NotificationCreated,
            "user",
            Some(Uuid::new_v4()),
            None,
            json!([1]),
        );
        let decision = decide(&broken, &m, NOW, &admins(), || panic!("position built"));
        assert_eq!(decision, Decision::NotAddressed);
        let mine = event(
            Kind::NotificationCreated,
            "user",
            Some(m.user_id),
            None,
            json!([1]),
        );
        assert!(matches!(
            decided(&mine, &m),
            Decision::Skip(Skip::Malformed(_))
        ));
        let mut nowhere = mine.clone();
        nowhere.audience = None;
        assert!(matches!(
            decided(&nowhere, &m),
            Decision::Skip(Skip::Malformed(reason)) if reason.contains("no audience")
        ));
        let expired = event(
            Kind::NotificationCreated,
            "all",
            None,
            None,
            created_payload("all", Some("2026-11-27T08:00:00.000000Z")),
        );
        assert_eq!(decided(&expired, &m), Decision::Skip(Skip::Expired));
    }

    #[test]
    fn a_user_change_moves_or_disconnects_its_own_user_only() {
        let m = member(Some(Uuid::new_v4()), false);
        let sector = Uuid::new_v4();
        let moved = |sector_id, is_admin| {
            Decision::Rooms(Inbox {
                user_id: m.user_id,
                sector_id,
                is_admin,
            })
        };
        let cases = [
            ((true, "ADMIN", Some(sector)), moved(Some(sector), true)),
            ((true, "USER", None), moved(None, false)),
            ((false, "ADMIN", None), Decision::Disconnect),
        ];
        for ((active, role, sector), expected) in cases {
            let e = user_update(m.user_id, active, role, sector);
            assert_eq!(decided(&e, &m), expected, "{active} {role} {sector:?}");
        }
        let other = user_update(Uuid::new_v4(), false, "USER", m.sector_id);
        assert_eq!(decided(&other, &m), Decision::NotAddressed);
        let Route::UserChanged(change) = route(&other, "p", NOW) else {
            panic!("not a user change")
        };
        assert_eq!(change.for_member(&m, &admins()), Decision::NotAddressed);
    }

    #[test]
    fn the_emit_position_is_the_one_given() {
        let m = member(None, false);
        let e = event(
            Kind::NotificationCreated,
            "all",
            None,
            None,
            created_payload("all", None),
        );
        let Decision::Emit(emission) = decide(&e, &m, NOW, &admins(), || "after-7".into()) else {
            panic!("not emitted")
        };
        assert_eq!(emission.payload.value()["eventId"], "after-7");
        assert_eq!(emission.delivers, Some(Uuid::nil()));
    }
}
