//! Audiences: who a notification is addressed to, which members that
//! reaches, the rooms that hold them and who counts as an admin. The one
//! Rust statement of the rule; it imports nothing of herald's.
//!
//! The same rule is written in SQL where PostgreSQL must apply it itself,
//! and each of those twins names this module: `herald.inbox()`
//! (migrations/V1__herald_schema.sql), sql/events_replay.sql,
//! sql/events_replay_backlog.sql and sql/inbox_unread_counts.sql.
//! tests/api/audience.rs checks that they agree with [`Audience::reaches`].

use uuid::Uuid;

/// A member: a user and the rooms their notifications come through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Inbox {
    pub user_id: Uuid,
    pub sector_id: Option<Uuid>,
    pub is_admin: bool,
}

/// Who a notification or event is addressed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    User(Uuid),
    Sector(Uuid),
    Admins,
    All,
}

/// The words of the `audience` column (its check constraint lists them).
pub mod word {
    pub const USER: &str = "user";
    pub const SECTOR: &str = "sector";
    pub const ADMIN: &str = "admin";
    pub const ALL: &str = "all";
}

impl Audience {
    /// From a row's `audience`, `user_id` and `sector_id` columns; `None`
    /// when they name no audience.
    pub fn from_columns(
        audience: &str,
        user_id: Option<Uuid>,
        sector_id: Option<Uuid>,
    ) -> Option<Self> {
        match audience {
            word::USER => user_id.map(Self::User),
            word::SECTOR => sector_id.map(Self::Sector),
            word::ADMIN => Some(Self::Admins),
            word::ALL => Some(Self::All),
            _ => None,
        }
    }

    /// The row's `audience`, `user_id` and `sector_id` columns.
    pub fn columns(self) -> (&'static str, Option<Uuid>, Option<Uuid>) {
        match self {
            Self::User(id) => (word::USER, Some(id), None),
            Self::Sector(id) => (word::SECTOR, None, Some(id)),
            Self::Admins => (word::ADMIN, None, None),
            Self::All => (word::ALL, None, None),
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

/// Socket.IO room names, built here and nowhere else, so a typo cannot
/// split a room in two. Sockets join them once their connect sequence is
/// done (gateway::connect).
pub mod room {
    use super::Uuid;

    pub const ADMIN: &str = "admin";

    /// Every authenticated socket, for notifications addressed to `all`.
    /// Sockets join it with their other rooms, after the connect sequence,
    /// so a broadcast never reaches a socket that is still catching up.
    pub const ALL: &str = "all";

    pub fn user(id: Uuid) -> String {
        format!("user:{id}")
    }

    pub fn sector(id: Uuid) -> String {
        format!("sector:{id}")
    }
}

/// The rooms of a member: their own, their sector's, `admin` for admins,
/// `all`. Each audience that reaches the member has its room here.
pub fn rooms(inbox: &Inbox) -> Vec<String> {
    let mut rooms = vec![room::user(inbox.user_id)];
    if let Some(sector) = inbox.sector_id {
        rooms.push(room::sector(sector));
    }
    if inbox.is_admin {
        rooms.push(room::ADMIN.to_owned());
    }
    rooms.push(room::ALL.to_owned());
    rooms
}

/// The rooms a member's sockets leave and join when their inbox changes
/// from `old` to `new` (a role or sector change, applied without a reconnect).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Moves {
    pub leave: Vec<String>,
    pub join: Vec<String>,
}

pub fn moves(old: &Inbox, new: &Inbox) -> Moves {
    let (before, after) = (rooms(old), rooms(new));
    Moves {
        leave: before
            .iter()
            .filter(|r| !after.contains(r))
            .cloned()
            .collect(),
        join: after
            .iter()
            .filter(|r| !before.contains(r))
            .cloned()
            .collect(),
    }
}

/// The configured roles whose users are admins (`HERALD_ADMIN_ROLES`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminRoles(Vec<String>);

/// `ADMIN,SUPER_ADMIN`: comma-separated, at least one.
impl std::str::FromStr for AdminRoles {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let roles: Vec<String> = raw
            .split(',')
            .map(str::trim)
            .filter(|role| !role.is_empty())
            .map(str::to_owned)
            .collect();
        if roles.is_empty() {
            return Err("name at least one role".into());
        }
        Ok(Self(roles))
    }
}

impl AdminRoles {
    pub fn new(roles: Vec<String>) -> Self {
        Self(roles)
    }

    /// The roles, as configured.
    pub fn names(&self) -> &[String] {
        &self.0
    }

    pub fn is_admin(&self, role: &str) -> bool {
        self.0.iter().any(|r| r == role)
    }

    /// The inbox of a user with this sector and role.
    pub fn inbox(&self, user_id: Uuid, sector_id: Option<Uuid>, role: &str) -> Inbox {
        Inbox {
            user_id,
            sector_id,
            is_admin: self.is_admin(role),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inbox(sector_id: Option<Uuid>, is_admin: bool) -> Inbox {
        Inbox {
            user_id: Uuid::new_v4(),
            sector_id,
            is_admin,
        }
    }

    #[test]
    fn every_audience_round_trips_through_its_columns() {
        let id = Uuid::new_v4();
        for audience in [
            Audience::User(id),
            Audience::Sector(id),
            Audience::Admins,
            Audience::All,
        ] {
            let (word, user, sector) = audience.columns();
            assert_eq!(Audience::from_columns(word, user, sector), Some(audience));
        }
        assert_eq!(Audience::from_columns("user", None, Some(id)), None);
        assert_eq!(Audience::from_columns("sector", Some(id), None), None);
        assert_eq!(Audience::from_columns("everyone", None, None), None);
    }

    #[test]
    fn an_audience_reaches_a_member_exactly_when_its_room_is_one_of_theirs() {
        let sector = Uuid::new_v4();
        let members = [
            inbox(None, false),
            inbox(Some(sector), false),
            inbox(Some(sector), true),
            inbox(Some(Uuid::new_v4()), true),
        ];
        for member in &members {
            for audience in [
                Audience::User(member.user_id),
                Audience::User(members[0].user_id),
                Audience::Sector(sector),
                Audience::Admins,
                Audience::All,
            ] {
                assert_eq!(
                    audience.reaches(member),
                    rooms(member).contains(&audience.room()),
                    "{audience:?} and {member:?}"
                );
            }
        }
    }

    #[test]
    fn a_role_or_sector_change_moves_only_the_rooms_that_differ() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let old = Inbox {
            user_id: Uuid::new_v4(),
            sector_id: Some(a),
            is_admin: false,
        };
        let new = Inbox {
            sector_id: Some(b),
            is_admin: true,
            ..old
        };
        assert_eq!(
            moves(&old, &new),
            Moves {
                leave: vec![room::sector(a)],
                join: vec![room::sector(b), room::ADMIN.to_owned()],
            }
        );
        assert_eq!(moves(&old, &old), Moves::default());
        let demoted = Inbox {
            sector_id: None,
            is_admin: false,
            ..new
        };
        assert_eq!(
            moves(&new, &demoted),
            Moves {
                leave: vec![room::sector(b), room::ADMIN.to_owned()],
                join: vec![],
            }
        );
    }

    #[test]
    fn only_the_configured_roles_are_admins() {
        let roles = AdminRoles::new(vec!["ADMIN".into(), "OPS".into()]);
        assert!(roles.is_admin("OPS"));
        assert!(!roles.is_admin("ops"), "roles compare exactly");
        assert!(!roles.is_admin("USER"));
        let user = Uuid::new_v4();
        assert!(roles.inbox(user, None, "ADMIN").is_admin);
        assert!(!AdminRoles::default().is_admin("ADMIN"));
    }
}
