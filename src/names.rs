//! The names clients see: Socket.IO events and the namespace (rooms are
//! built by [`crate::audience::room`]). Built here and nowhere else, so a
//! rename is one edit.

/// The namespace every client connects to.
pub const NAMESPACE: &str = "/notifications";

/// A notification's importance levels, lowest first.
pub const IMPORTANCE: [&str; 4] = ["low", "normal", "high", "urgent"];

/// Events herald emits.
pub mod emit {
    pub const NOTIFICATION_NEW: &str = "notification:new";
    pub const NOTIFICATION_READ: &str = "notification:read";
    pub const NOTIFICATION_RETRACTED: &str = "notification:retracted";
    pub const NOTIFICATION_COUNT: &str = "notification:count";
    pub const NOTIFICATION_COUNTS: &str = "notification:counts";
    pub const NOTIFICATION_ARCHIVED: &str = "notification:archived";
    pub const NOTIFICATION_UNARCHIVED: &str = "notification:unarchived";
    pub const NOTIFICATION_SNOOZED: &str = "notification:snoozed";
    pub const PREFERENCES_UPDATED: &str = "preferences:updated";
    pub const CONNECTION_SUCCESS: &str = "connection:success";
    pub const SYNC_RESET: &str = "sync:reset";
    pub const SESSION_EXPIRED: &str = "session:expired";
}

/// Events clients send, each answered through its acknowledgement.
pub mod on {
    pub const MARK_READ: &str = "mark.read";
    pub const MARK_DELIVERED: &str = "mark.delivered";
    pub const MARK_ALL_READ: &str = "mark.all_read";
    pub const NOTIFICATIONS_LIST: &str = "notifications.list";
    pub const AUTH_REFRESH: &str = "auth.refresh";
    pub const MARK_ARCHIVED: &str = "mark.archived";
    pub const MARK_UNARCHIVED: &str = "mark.unarchived";
    pub const ARCHIVE_ALL_READ: &str = "archive.all_read";
    pub const MARK_SNOOZED: &str = "mark.snoozed";
    pub const MARK_UNSNOOZED: &str = "mark.unsnoozed";
    pub const PREFERENCES_GET: &str = "preferences.get";
    pub const PREFERENCES_SET: &str = "preferences.set";
    pub const COUNTS_WATCH: &str = "counts.watch";
}

/// Kinds of rows in `herald.events`, as the triggers write them.
pub mod kind {
    pub const NOTIFICATION_CREATED: &str = "notification.created";
    pub const NOTIFICATION_READ: &str = "notification.read";
    pub const NOTIFICATION_RETRACTED: &str = "notification.retracted";
    pub const USER_UPDATED: &str = "user.updated";
    pub const NOTIFICATION_ARCHIVED: &str = "notification.archived";
    pub const NOTIFICATION_UNARCHIVED: &str = "notification.unarchived";
    pub const NOTIFICATION_SNOOZED: &str = "notification.snoozed";
    pub const NOTIFICATION_UNSNOOZED: &str = "notification.unsnoozed";
    pub const PREFERENCES_UPDATED: &str = "preferences.updated";
}
