//! Which push service URLs herald may POST to. A subscription's endpoint
//! comes from a browser, so whoever holds a token chooses where herald
//! sends requests: `public` (the default) admits only `https` URLs whose
//! host resolves to public addresses, so a subscription cannot aim herald
//! at its own network (loopback, private, link-local, unique-local and the
//! other special-purpose ranges). The check runs when a browser subscribes
//! and again when herald connects to send (DNS can change in between):
//! under `public`, the HTTP client resolves names only through
//! [`PublicResolver`], which refuses a name with any non-public address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use reqwest::Url;

/// The longest endpoint accepted; push services' URLs are a few hundred
/// characters.
pub const MAX_ENDPOINT_LENGTH: usize = 2048;

/// `HERALD_PUSH_ENDPOINTS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointPolicy {
    /// `https` on public addresses only.
    Public,
    /// Any `http` or `https` URL: tests and private push services.
    Any,
}

impl FromStr for EndpointPolicy {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw.trim() {
            "public" => Ok(Self::Public),
            "any" => Ok(Self::Any),
            other => Err(format!("{other:?} is not public or any")),
        }
    }
}

/// Why an endpoint is refused; the message is the client's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not a URL herald could ever POST to: `invalid_payload`.
    #[error("endpoint {0}")]
    Malformed(&'static str),
    /// A URL, but one the policy does not admit: `endpoint_not_allowed`.
    #[error("endpoint {0}")]
    NotAllowed(String),
}

/// Parses an endpoint: an absolute `http(s)` URL with a host, no user
/// name or password, no fragment.
pub fn parse(raw: &str) -> Result<Url, Refused> {
    if raw.is_empty() || raw.len() > MAX_ENDPOINT_LENGTH {
        return Err(Refused::Malformed("must be 1 to 2048 characters"));
    }
    let url = Url::parse(raw).map_err(|_| Refused::Malformed("is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Refused::Malformed("must be an http or https URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(Refused::Malformed("has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Refused::Malformed("must not carry a user name or password"));
    }
    if url.fragment().is_some() {
        return Err(Refused::Malformed("must not have a fragment"));
    }
    Ok(url)
}

/// The origin of an endpoint, as VAPID's `aud` names it:
/// `https://push.example.net` (with the port only when not the default).
pub fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

impl EndpointPolicy {
    /// What can be decided without DNS: the scheme, and a host that is an
    /// address. Run before every send, since the resolver never sees
    /// address literals.
    pub fn check_literal(self, url: &Url) -> Result<(), Refused> {
        if self == Self::Any {
            return Ok(());
        }
        if url.scheme() != "https" {
            return Err(Refused::NotAllowed("must use https".into()));
        }
        let ip = match url.host() {
            Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
            _ => None,
        };
        match ip {
            Some(ip) if !is_public(ip) => Err(Refused::NotAllowed(format!(
                "is on {ip}, which is not a public address"
            ))),
            _ => Ok(()),
        }
    }

    /// The whole check, resolving the host (subscribing).
    pub async fn check(self, url: &Url) -> Result<(), Refused> {
        self.check_literal(url)?;
        if self == Self::Any {
            return Ok(());
        }
        let Some(url::Host::Domain(host)) = url.host() else {
            return Ok(());
        };
        let port = url.port_or_known_default().unwrap_or(443);
        resolve_public(host, port)
            .await
            .map(|_| ())
            .map_err(Refused::NotAllowed)
    }
}

/// The addresses of `host`, all of them public, or why not.
async fn resolve_public(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|_| format!("host {host} does not resolve"))?
        .collect();
    if addresses.is_empty() {
        return Err(format!("host {host} does not resolve"));
    }
    if let Some(private) = addresses.iter().find(|a| !is_public(a.ip())) {
        return Err(format!(
            "host {host} resolves to {}, which is not a public address",
            private.ip()
        ));
    }
    Ok(addresses)
}

/// The resolver of the push client under `public`: a name with any
/// non-public address does not resolve at all, so the connection that
/// follows can only reach what [`is_public`] admits.
#[derive(Debug, Clone, Copy)]
pub struct PublicResolver;

impl reqwest::dns::Resolve for PublicResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let addresses = resolve_public(name.as_str(), 0).await?;
            let addresses: reqwest::dns::Addrs = Box::new(addresses.into_iter());
            Ok(addresses)
        })
    }
}

/// Whether an address is one anybody on the internet could reach: not
/// loopback, private, link-local, unique-local, shared, documentation,
/// benchmarking, multicast, reserved or unspecified.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let segments = ip.segments();
    // NAT64 (64:ff9b::/96) reaches the IPv4 address it embeds.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [a, b] = segments[6].to_be_bytes();
        let [c, d] = segments[7].to_be_bytes();
        return is_public_v4(Ipv4Addr::new(a, b, c, d));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (segments[0] & 0xfe00) == 0xfc00 // unique local
        || (segments[0] & 0xffc0) == 0xfe80 // link local
        || (segments[0] & 0xffc0) == 0xfec0 // site local (deprecated)
        || (segments[0] == 0x2001 && segments[1] == 0x0db8) // documentation
        || (segments[0] == 0x0100 && segments[1..4] == [0, 0, 0]) // discard
        || segments[..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible, deprecated
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2001:db8::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "8.8.8.8",
            "142.250.74.206",
            "2607:f8b0:4004:c07::64",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn endpoints_are_parsed_strictly() {
        assert!(parse("https://fcm.googleapis.com/fcm/send/abc").is_ok());
        for bad in [
            "",
            "not a url",
            "ftp://push.example/x",
            "https://user:pw@push.example/x",
            "https://push.example/x#frag",
            "file:///etc/passwd",
        ] {
            assert!(matches!(parse(bad), Err(Refused::Malformed(_))), "{bad:?}");
        }
        assert!(parse(&format!("https://p.example/{}", "a".repeat(2048))).is_err());
    }

    #[test]
    fn public_refuses_http_and_private_literals() {
        let policy = EndpointPolicy::Public;
        for refused in [
            "http://push.example/x",
            "https://127.0.0.1:8443/x",
            "https://[::1]/x",
            "https://10.0.0.8/x",
            "https://[fd00::1]/x",
        ] {
            let url = parse(refused).unwrap();
            assert!(
                matches!(policy.check_literal(&url), Err(Refused::NotAllowed(_))),
                "{refused}"
            );
        }
        let url = parse("http://127.0.0.1:9000/x").unwrap();
        assert!(EndpointPolicy::Any.check_literal(&url).is_ok());
        assert_eq!(
            origin(&parse("https://push.example:8443/a/b").unwrap()),
            "https://push.example:8443"
        );
        assert_eq!(
            origin(&parse("https://push.example:443/a").unwrap()),
            "https://push.example"
        );
    }

    #[tokio::test]
    async fn public_refuses_names_that_resolve_to_loopback() {
        let url = parse("https://localhost/x").unwrap();
        assert!(matches!(
            EndpointPolicy::Public.check(&url).await,
            Err(Refused::NotAllowed(_))
        ));
    }
}
