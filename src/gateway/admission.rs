//! Admission of Engine.IO sessions, before socketioxide makes one.
//!
//! An Engine.IO handshake (a `/socket.io/` request without `sid`) costs a
//! session that lives until the client sends its Socket.IO CONNECT or the
//! connect timeout ends it, and asks for no token. So handshakes are limited
//! per client address, and so are the sessions still waiting for CONNECT,
//! per address and in all; past a bound the request is answered at once
//! (429 or 503) and no session is made.
//!
//! A session's place is a [`Ticket`] carried in its request's extensions,
//! which socketioxide keeps for the session's life: the handshake middleware
//! settles it when CONNECT arrives, and a session that ends without one
//! gives its place back when the ticket is dropped with it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::limits::Limiter;
pub use crate::config::HandshakeBounds as Bounds;
use crate::telemetry::metrics;

/// Why a handshake was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// This address made too many handshakes lately (429).
    RateLimited,
    /// This address has too many sessions waiting for CONNECT (429).
    AddressPending,
    /// Too many sessions wait for CONNECT in all (503).
    ServerPending,
}

impl Refused {
    pub fn reason(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::AddressPending => "address_pending",
            Self::ServerPending => "server_pending",
        }
    }
}

/// Counts of sessions waiting for CONNECT.
#[derive(Debug, Default)]
struct Pending {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

#[derive(Debug)]
pub struct Admission {
    bounds: Bounds,
    handshakes: Limiter<IpAddr>,
    pending: Mutex<Pending>,
}

impl Admission {
    pub fn new(bounds: Bounds) -> Arc<Self> {
        Arc::new(Self {
            bounds,
            handshakes: Limiter::new(bounds.rate),
            pending: Mutex::default(),
        })
    }

    /// A place for one new session from `address`, or why there is none.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Result<Ticket, Refused> {
        let mut pending = self.lock();
        if pending.total >= self.bounds.pending {
            return Err(Refused::ServerPending);
        }
        let mine = pending.by_address.get(&address).copied().unwrap_or(0);
        if mine >= self.bounds.pending_per_address {
            return Err(Refused::AddressPending);
        }
        if !self.handshakes.allow(address) {
            return Err(Refused::RateLimited);
        }
        pending.total += 1;
        *pending.by_address.entry(address).or_default() += 1;
        metrics::handshakes_pending(pending.total);
        Ok(Ticket(Arc::new(Place {
            admission: self.clone(),
            address,
            settled: AtomicBool::new(false),
        })))
    }

    /// Sessions waiting for CONNECT now.
    pub fn pending(&self) -> usize {
        self.lock().total
    }

    fn release(&self, address: IpAddr) {
        let mut pending = self.lock();
        pending.total = pending.total.saturating_sub(1);
        if let Some(count) = pending.by_address.get_mut(&address) {
            *count -= 1;
            if *count == 0 {
                pending.by_address.remove(&address);
            }
        }
        metrics::handshakes_pending(pending.total);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // The counts stay consistent under a panic: each update is one step.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A session's place among those waiting for CONNECT.
#[derive(Debug, Clone)]
pub struct Ticket(Arc<Place>);

#[derive(Debug)]
struct Place {
    admission: Arc<Admission>,
    address: IpAddr,
    settled: AtomicBool,
}

impl Ticket {
    /// The session sent CONNECT: it no longer waits.
    pub fn settle(&self) {
        self.0.settle();
    }
}

impl Place {
    fn settle(&self) {
        if !self.settled.swap(true, Ordering::AcqRel) {
            self.admission.release(self.address);
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.settle();
    }
}

/// Whether a `/socket.io/` request starts a session: it names none.
pub fn is_handshake(query: Option<&str>) -> bool {
    !query
        .is_some_and(|query| form_urlencoded::parse(query.as_bytes()).any(|(key, _)| key == "sid"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Rate;

    fn admission(burst: u32, pending: usize, per_address: usize) -> Arc<Admission> {
        Admission::new(Bounds {
            rate: Rate {
                burst,
                period: Duration::from_secs(60),
            },
            pending,
            pending_per_address: per_address,
        })
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

    #[test]
    fn an_address_waits_with_at_most_its_share_of_sessions() {
        let admission = admission(100, 10, 2);
        let first = admission.admit(A).unwrap();
        let _second = admission.admit(A).unwrap();
        assert_eq!(admission.admit(A).unwrap_err(), Refused::AddressPending);
        assert!(
            admission.admit(B).is_ok(),
            "another address is not held back"
        );
        first.settle();
        assert!(admission.admit(A).is_ok(), "a settled place is free again");
    }

    #[test]
    fn all_addresses_together_wait_with_at_most_the_total() {
        let admission = admission(100, 2, 2);
        let _a = admission.admit(A).unwrap();
        let _b = admission.admit(B).unwrap();
        assert_eq!(admission.admit(B).unwrap_err(), Refused::ServerPending);
        assert_eq!(admission.pending(), 2);
    }

    #[test]
    fn a_dropped_session_gives_its_place_back_once() {
        let admission = admission(100, 1, 1);
        let ticket = admission.admit(A).unwrap();
        let copy = ticket.clone();
        ticket.settle();
        drop(ticket);
        drop(copy);
        assert_eq!(admission.pending(), 0);
        let unsettled = admission.admit(A).unwrap();
        drop(unsettled);
        assert_eq!(admission.pending(), 0, "released when the session ends");
    }

    #[test]
    fn handshakes_per_address_are_rate_limited() {
        let admission = admission(3, 100, 100);
        for _ in 0..3 {
            admission.admit(A).unwrap().settle();
        }
        assert_eq!(admission.admit(A).unwrap_err(), Refused::RateLimited);
        assert!(admission.admit(B).is_ok());
    }

    #[test]
    fn only_requests_without_a_session_id_are_handshakes() {
        assert!(is_handshake(None));
        assert!(is_handshake(Some("EIO=4&transport=polling")));
        assert!(is_handshake(Some("EIO=4&transport=websocket&token=x")));
        assert!(!is_handshake(Some("EIO=4&transport=polling&sid=abc")));
        assert!(!is_handshake(Some("sid=abc&EIO=4&transport=websocket")));
    }
}
