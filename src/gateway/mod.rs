//! The Socket.IO gateway: namespace `/notifications` (docs/reference.md,
//! "Socket.IO").
//!
//! - [`handshake`] authenticates in a connect middleware and refuses with the
//!   documented `connect_error` codes; nothing is emitted before it passes.
//! - [`connect`] runs the connect sequence and lines the socket up with the
//!   live stream, so nothing is lost or doubled between them.
//! - [`replay`] decides, cheaply and first, whether a resume is replayed
//!   or reset, and bounds what a replay loads.
//! - [`client_events`] answers `mark.*`, `notifications.list`, `auth.refresh`.
//! - [`dispatch`] turns each step of the event log into room emits, delivery
//!   records and unread counts.
//! - [`presence`] knows who is online here and what they have unread
//!   (crate::unread); [`counts`] pushes their counts and does the database's
//!   part: reloads, expiries, and the users it counts itself.
//! - [`snoozes`] ends snoozes when they are due, once across instances.

pub mod admission;
pub mod client_events;
pub mod connect;
pub mod counts;
pub mod dispatch;
pub mod handshake;
pub mod inbox_state;
pub mod limits;
pub mod listing;
pub mod outbox;
pub mod presence;
pub mod replay;
pub mod session;
pub mod session_expiry;
pub mod snoozes;

use std::sync::Arc;
use std::time::Duration;

use socketioxide::handler::ConnectHandler;
use socketioxide::layer::SocketIoLayer;
use socketioxide::{SocketIo, TransportType};

use crate::audience::AdminRoles;
use crate::auth::JwtConfig;
use crate::db::Pool;
use crate::db::inbox::Inbox;
use crate::db::users::User;
use crate::eventlog::tail::TailHandle;
use crate::names::NAMESPACE;

/// What the gateway's handlers share.
#[derive(Clone)]
pub struct Gateway(Arc<Shared>);

pub struct Shared {
    pub pool: Pool,
    pub jwt: JwtConfig,
    /// Roles that join the `admin` room.
    pub admin_roles: AdminRoles,
    pub pending_limit: u32,
    /// Unread notifications kept in memory per online user.
    pub unread_tracked: usize,
    pub max_sockets_per_user: usize,
    /// How much a resume may replay before it is reset.
    pub replay_limit: replay::ReplayLimit,
    /// Connects with a verified token, per client address.
    pub connects: limits::ConnectLimiter,
    /// Failed authentications, per client address.
    pub auth_failures: limits::ConnectLimiter,
    /// Whether X-Forwarded-For names the client.
    pub trust_proxy: bool,
    /// Client events per socket.
    pub event_rate: crate::config::Rate,
    /// REST calls per user, at the same rate as a socket's events.
    pub api_calls: limits::Limiter<uuid::Uuid>,
    pub presence: Arc<presence::Presence>,
    pub tail: TailHandle,
    pub counts: counts::Counts,
    /// Ends sessions whose token expired.
    pub expiries: Arc<session_expiry::SessionExpiries>,
    /// `SENT` records for what the connect sequence pushes itself.
    pub deliveries: crate::deliveries::DeliveryQueue,
}

impl std::ops::Deref for Gateway {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl Gateway {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }

    /// The inbox a user's row describes.
    pub fn inbox_of(&self, user: &User) -> Inbox {
        self.admin_roles.inbox(user.id, user.sector_id, &user.role)
    }
}

/// The largest message a client may send, over either transport.
const MAX_MESSAGE: usize = 64 * 1024;
/// How long a new session has to send its Socket.IO CONNECT.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Builds the Socket.IO layer and registers the namespace.
pub fn layer(gateway: Gateway) -> (SocketIoLayer, SocketIo) {
    let (layer, io) = SocketIo::builder()
        .ping_interval(Duration::from_secs(25))
        .ping_timeout(Duration::from_secs(60))
        // A session that has not sent CONNECT holds a place among the
        // pending ones (admission): clients send it at once, so a short
        // wait frees the place of one that never will.
        .connect_timeout(CONNECT_TIMEOUT)
        // Room for a burst (a 1,000-row transaction for one user) while the
        // socket writer drains; a socket that stays behind is evicted (outbox).
        .max_buffer_size(1024)
        // Client payloads are small JSON objects; anything larger is refused
        // by the transport before it is parsed.
        .max_payload(MAX_MESSAGE as u64)
        // Clients send small acks and requests (a refreshed token is the
        // largest): a 256-byte read buffer per socket instead of 4 KiB, as
        // idle sockets are herald's memory (1 KiB -> 256 B: 0.5 KiB less
        // RSS per idle socket).
        .ws_read_buffer_size(256)
        // Frames too: tungstenite buffers a whole frame before the message
        // limit applies, so a 16 MiB frame (its default) would be read in.
        .ws_max_message_size(MAX_MESSAGE)
        .ws_max_frame_size(MAX_MESSAGE)
        .transports([TransportType::Websocket, TransportType::Polling])
        .with_state(gateway)
        .build_layer();
    io.ns(NAMESPACE, connect::on_connect.with(handshake::authenticate));
    (layer, io)
}
