//! herald's integration tests: one binary, a database per test, a real
//! herald on port 0 and real Socket.IO clients.

mod audience;
mod cli;
mod client;
mod counts;
mod docs;
mod faults;
mod fuzz;
mod gateway;
mod guards;
mod hardening;
mod health;
mod helpers;
mod inbox_live;
mod inbox_state;
mod instances;
mod jwks;
mod logs;
mod payload;
mod push;
mod replay_limits;
mod rest;
mod resume;
mod roles;
mod schema;
mod security;
mod tls;
