//! herald: an event-sourced notification service driven by PostgreSQL.
//!
//! Producers only write rows. Triggers append every change to `herald.events`
//! and wake herald with `NOTIFY herald_events`; herald tails that log and
//! pushes each event over Socket.IO to the rooms it addresses.
//!
//! The modules follow the data flow:
//!
//! - [`config`]: validated configuration, one error naming the bad setting;
//! - [`audience`]: who an audience reaches, the rooms that hold them and
//!   the admin check (the SQL twins of the rule name it);
//! - [`db`]: the connection pool, the embedded migrations, every query and
//!   the values they read: the event log's rows, snapshots and positions
//!   (`eventId`); it imports only the leaves (`audience`, `wire`, `names`);
//! - [`eventlog`]: the event log's [`eventlog::tail`], which reads it past a
//!   snapshot cursor on its own LISTEN connection, and its retention;
//! - [`fanout`]: the pure mapping from one event to the rooms and socket
//!   events it produces, and what it does to [`unread`] counts;
//! - [`gateway`]: the Socket.IO namespace: handshake, connect sequence,
//!   client events, per-user presence and unread counts;
//! - [`deliveries`]: the batched writer of `SENT` delivery records;
//! - [`http`]: health, and the router that mounts the gateway;
//! - [`server`]: wires it all together around a bound TCP listener and a
//!   shutdown future, its background tasks under a [`supervisor`]; [`cli`]
//!   is the command line on top.

pub mod audience;
pub mod auth;
pub mod cli;
pub mod config;
pub mod db;
pub mod deliveries;
pub mod eventlog;
pub mod fanout;
pub mod gateway;
pub mod http;
pub mod names;
pub mod preferences;
pub mod push;
pub mod server;
pub mod supervisor;
pub mod telemetry;
pub mod unread;
pub mod wire;

#[cfg(test)]
mod fuzzing;
