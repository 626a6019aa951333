//! The event log, `herald.events`: the tail that reads it and the
//! retention that prunes it.
//!
//! The log's rows, snapshots and positions are values of the database
//! layer ([`crate::db::event`], [`crate::db::snapshot`],
//! [`crate::db::position`]), which reads them; they are re-exported here
//! for the modules above that speak of the log.

pub mod retention;
pub mod tail;

pub use crate::db::event::{Event, Kind, RowError};
pub use crate::db::position::{self, Position};
pub use crate::db::snapshot::{self, Snapshot};
