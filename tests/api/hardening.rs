//! What an anonymous client can make herald spend: handshakes, connections
//! that never finish a request, descriptors, WebSocket frames. Each test
//! drives the attack on loopback, bounded in count and time, and checks the
//! bound herald keeps, generously enough to tell "bounded" from "grows with
//! the attack".

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::{HeraldProcess, SECRET, TestApp, TestDb, insert_user};

const HANDSHAKE: &str = "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n";

/// One kept-alive HTTP/1.1 connection that sends requests one at a time.
struct Http {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Http {
    async fn open(address: SocketAddr) -> Self {
        Self::from(address, None).await
    }

    /// A connection that has been served one request and is kept alive.
    async fn answered(address: SocketAddr) -> Self {
        let mut http = Self::open(address).await;
        let (status, _) = http
            .request("GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("an answer to /health/live");
        assert_eq!(status, 200);
        http
    }

    /// From a source address of our choosing (any of 127.0.0.0/8).
    async fn from(address: SocketAddr, source: Option<IpAddr>) -> Self {
        let socket = TcpSocket::new_v4().unwrap();
        if let Some(source) = source {
            socket.bind(SocketAddr::new(source, 0)).unwrap();
        }
        Self {
            stream: socket.connect(address).await.unwrap(),
            buffer: Vec::new(),
        }
    }

    /// Sends a raw request and reads its response's status and body.
    async fn request(&mut self, raw: &str) -> Option<(u16, String)> {
        self.stream.write_all(raw.as_bytes()).await.ok()?;
        loop {
            if let Some(end) = find(&self.buffer, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buffer[..end]).to_string();
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if self.buffer.len() >= end + 4 + length {
                    let body = String::from_utf8_lossy(&self.buffer[end + 4..end + 4 + length])
                        .to_string();
                    self.buffer.drain(..end + 4 + length);
                    let status = head.split(' ').nth(1)?.parse().ok()?;
                    return Some((status, body));
                }
            }
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Waits until the server closes `stream`; false if it is still open at
/// the deadline.
async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    let mut sink = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// `GET /health/ready` on a fresh connection, and how long it took.
async fn health(address: SocketAddr) -> (Option<u16>, Duration) {
    let started = std::time::Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        let mut http = Http::open(address).await;
        http.request("GET /health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .map(|(status, _)| status)
    })
    .await
    .ok()
    .flatten();
    (answer, started.elapsed())
}

#[tokio::test]
async fn a_handshake_flood_is_refused_cheaply_while_health_answers() {
    let db = TestDb::migrated().await;
    let herald = HeraldProcess::spawn(&db.url, &[]);
    herald.wait_ready().await;
    let address = herald.address;
    let before = herald.rss();

    const LOOPS: usize = 20;
    const PER_LOOP: usize = 1_000;
    let flood = (0..LOOPS)
        .map(|_| {
            tokio::spawn(async move {
                let mut http = Http::open(address).await;
                let (mut made, mut refused) = (0, 0);
                for _ in 0..PER_LOOP {
                    match http.request(HANDSHAKE).await {
                        Some((200, _)) => made += 1,
                        Some((429 | 503, _)) => refused += 1,
                        other => panic!("unexpected answer to a handshake: {other:?}"),
                    }
                }
                (made, refused)
            })
        })
        .collect::<Vec<_>>();
    let mut slowest = Duration::ZERO;
    let mut checks = 0;
    while !flood.iter().all(|task| task.is_finished()) {
        let (status, took) = health(address).await;
        assert_eq!(status, Some(200), "health unanswered during the flood");
        slowest = slowest.max(took);
        checks += 1;
    }
    let (mut made, mut refused) = (0, 0);
    for task in flood {
        let (m, r) = task.await.unwrap();
        made += m;
        refused += r;
    }
    let grown = herald.rss().saturating_sub(before);
    eprintln!(
        "{made} sessions made, {refused} refused; RSS +{} KiB; {checks} health checks, slowest {slowest:?}",
        grown / 1024
    );
    // The default allows 300 handshakes a minute from one address.
    assert!(made <= 400, "{made} sessions made from one address");
    assert_eq!(made + refused, LOOPS * PER_LOOP);
    assert!(
        grown < 64 << 20,
        "RSS grew by {} MiB under the flood",
        grown >> 20
    );
    herald.terminate();
}

/// Metrics are read from a herald process of the test's own: an in-process
/// one shares its recorder with every other test of the process.
#[tokio::test]
async fn sessions_that_never_connect_hold_a_bounded_number_of_places() {
    let db = TestDb::migrated().await;
    let app = HeraldProcess::spawn(
        &db.url,
        &[
            ("HERALD_MAX_PENDING_PER_ADDRESS", "3"),
            ("HERALD_MAX_PENDING_SESSIONS", "5"),
        ],
    );
    app.wait_ready().await;
    let refused_before = app.metric("herald_handshakes_refused_total").await;
    let a: IpAddr = "127.0.0.1".parse().unwrap();
    let b: IpAddr = "127.0.0.2".parse().unwrap();
    let mut from_a = Http::from(app.address, Some(a)).await;
    let mut from_b = Http::from(app.address, Some(b)).await;
    for _ in 0..3 {
        assert_eq!(from_a.request(HANDSHAKE).await.unwrap().0, 200);
    }
    let (status, body) = from_a.request(HANDSHAKE).await.unwrap();
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("rate_limited"), "{body}");
    for _ in 0..2 {
        assert_eq!(from_b.request(HANDSHAKE).await.unwrap().0, 200);
    }
    assert_eq!(
        from_b.request(HANDSHAKE).await.unwrap().0,
        503,
        "five sessions wait in all"
    );
    assert_eq!(app.metric("herald_handshakes_pending").await, 5.0);
    assert_eq!(
        app.metric("herald_handshakes_refused_total").await - refused_before,
        2.0,
        "each refusal is counted"
    );
    // Sessions that never send CONNECT end at the connect timeout and give
    // their places back.
    let deadline = tokio::time::Instant::now() + herald::gateway::CONNECT_TIMEOUT * 4;
    while app.metric("herald_handshakes_pending").await > 0.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "pending sessions were not released"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(from_a.request(HANDSHAKE).await.unwrap().0, 200);
}

#[tokio::test]
async fn a_socket_that_connects_gives_its_pending_place_back() {
    let db = TestDb::migrated().await;
    let app = HeraldProcess::spawn(&db.url, &[("HERALD_MAX_PENDING_PER_ADDRESS", "1")]);
    app.wait_ready().await;
    let user = insert_user(&db.client().await, "Ada", "USER", None).await;
    let token = herald::auth::JwtConfig::hs256(SECRET.as_bytes())
        .sign(user, Duration::from_secs(600))
        .unwrap();
    for _ in 0..3 {
        // With one place per address, each connect needs the last one's back.
        let mut client = crate::client::connect(app.address, crate::client::Connect::token(&token))
            .await
            .unwrap();
        client.connected().await;
        client.close();
    }
    assert_eq!(app.metric("herald_handshakes_pending").await, 0.0);
}

#[tokio::test]
async fn half_sent_and_idle_connections_are_closed_after_the_idle_timeout() {
    let db = TestDb::migrated().await;
    let app = HeraldProcess::spawn(&db.url, &[("HERALD_HTTP_IDLE_TIMEOUT", "1s")]);
    app.wait_ready().await;
    let timed_out_before = app.metric("herald_http_idle_timeouts_total").await;
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(TcpStream::connect(app.address).await.unwrap());
    }
    let mut half_sent = Vec::new();
    for _ in 0..50 {
        let mut stream = TcpStream::connect(app.address).await.unwrap();
        stream
            .write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        half_sent.push(stream);
    }
    let mut kept_alive = Vec::new();
    for _ in 0..20 {
        kept_alive.push(Http::answered(app.address).await.stream);
    }
    for (kind, streams) in [
        ("idle", &mut idle),
        ("half-sent", &mut half_sent),
        ("kept-alive", &mut kept_alive),
    ] {
        for stream in streams.iter_mut() {
            assert!(
                closed_by_server(stream, Duration::from_secs(10)).await,
                "a {kind} connection was left open"
            );
        }
    }
    let timed_out = app.metric("herald_http_idle_timeouts_total").await - timed_out_before;
    assert!(timed_out >= 70.0, "{timed_out} idle timeouts counted");
}

#[tokio::test]
async fn past_the_connection_cap_only_health_is_answered_then_connections_are_refused() {
    let app = TestApp::spawn_with(|c| {
        c.max_connections = Some(10);
        c.http_idle_timeout = Duration::from_secs(60);
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(Http::answered(app.address).await);
    }
    // Full: a connection in the reserve is answered on health only.
    let mut extra = Http::open(app.address).await;
    let (status, body) = extra
        .request("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("server_busy"), "{body}");
    let (status, _) = health(app.address).await;
    assert_eq!(status, Some(200), "health is answered past the cap");
    // Fill the reserve too; the next connection is closed on accept.
    let mut reserve = Vec::new();
    for _ in 0..herald::http::listen::HEALTH_RESERVE {
        reserve.push(TcpStream::connect(app.address).await.unwrap());
    }
    let mut refused = TcpStream::connect(app.address).await.unwrap();
    assert!(closed_by_server(&mut refused, Duration::from_secs(5)).await);
    // Those held connections still work.
    let (status, _) = held[0]
        .request("GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn out_of_descriptors_herald_refuses_connections_instead_of_stalling() {
    let db = TestDb::migrated().await;
    let herald =
        HeraldProcess::spawn_limited(&db.url, &[("HERALD_HTTP_IDLE_TIMEOUT", "60s")], Some(256));
    herald.wait_ready().await;
    // More idle connections than the process has descriptors.
    let mut idle = Vec::new();
    for _ in 0..400 {
        idle.push(TcpStream::connect(herald.address).await.unwrap());
    }
    // Health is answered within the reserve's short timeout, not after the
    // idle connections give up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _) = health(herald.address).await;
        if status == Some(200) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "health unanswered with the descriptors taken"
        );
    }
    // The connections past the cap and the reserve were closed, not left
    // waiting in the backlog.
    let mut closed = 0;
    for stream in &mut idle {
        if closed_by_server(stream, Duration::from_millis(50)).await {
            closed += 1;
        }
    }
    assert!(
        closed >= 100,
        "only {closed} of 400 connections were refused"
    );
    drop(idle);
    herald.terminate();
}

/// A masked client frame: text, `length` announced, `payload` sent.
fn client_frame(length: u64, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x81];
    match length {
        0..=125 => frame.push(0x80 | length as u8),
        126..=0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(length as u16).to_be_bytes());
        }
        _ => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&length.to_be_bytes());
        }
    }
    // A zero mask leaves the payload as it is.
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(payload);
    frame
}

/// Reads one server frame's payload (servers do not mask).
async fn server_frame(stream: &mut TcpStream) -> Vec<u8> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).await.unwrap();
    let length = match head[1] & 0x7f {
        126 => u64::from(stream.read_u16().await.unwrap()),
        127 => stream.read_u64().await.unwrap(),
        n => u64::from(n),
    };
    let mut payload = vec![0u8; length as usize];
    stream.read_exact(&mut payload).await.unwrap();
    payload
}

#[tokio::test]
async fn a_websocket_frame_above_the_message_limit_closes_its_connection_before_it_is_read() {
    let app = TestApp::spawn().await;
    let user = app.user("Ada", "USER", None).await;
    let mut stream = TcpStream::connect(app.address).await.unwrap();
    stream
        .write_all(
            b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n\
              Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    while find(&head, b"\r\n\r\n").is_none() {
        let mut byte = [0u8; 1];
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1);
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    assert!(
        server_frame(&mut stream).await.starts_with(b"0{"),
        "Engine.IO open"
    );
    // A connected socket, so no connect timeout can be what closes it.
    let connect = format!("40/notifications,{{\"token\":\"{}\"}}", app.token(user));
    stream
        .write_all(&client_frame(connect.len() as u64, connect.as_bytes()))
        .await
        .unwrap();
    // Engine.IO pings ("2") may come first.
    let mut answer = server_frame(&mut stream).await;
    while answer == b"2" {
        answer = server_frame(&mut stream).await;
    }
    assert!(
        answer.starts_with(b"40/notifications,"),
        "Socket.IO connect: {}",
        String::from_utf8_lossy(&answer)
    );
    // A frame that announces 15 MiB, then the first 64 KiB of it.
    let _ = stream
        .write_all(&client_frame(15 << 20, &vec![b'4'; 64 * 1024]))
        .await;
    assert!(
        closed_by_server(&mut stream, Duration::from_secs(3)).await,
        "herald waited for the rest of a 15 MiB frame"
    );
}

#[tokio::test]
async fn herald_own_origin_is_the_address_it_was_reached_on_not_the_host_header() {
    let app = TestApp::spawn().await;
    let port = app.address.port();
    let http = reqwest::Client::new();
    let polling = app.url("/socket.io/?EIO=4&transport=polling");
    // The DNS-rebinding shape: a page on the attacker's name, which now
    // resolves here, names itself in both headers.
    let rebound = http
        .get(&polling)
        .header("host", format!("evil.example:{port}"))
        .header("origin", format!("http://evil.example:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 403);
    // herald's own page, opened by the address it listens on.
    for origin in [
        format!("http://127.0.0.1:{port}"),
        format!("http://localhost:{port}"),
    ] {
        let own = http
            .get(&polling)
            .header("origin", &origin)
            .send()
            .await
            .unwrap();
        assert_eq!(own.status(), 200, "{origin}");
        assert_eq!(
            own.headers().get("access-control-allow-origin").unwrap(),
            origin.as_str()
        );
    }
}

#[tokio::test]
async fn the_inbox_page_sends_a_policy_that_keeps_its_token_to_itself() {
    let app = TestApp::spawn().await;
    let page = reqwest::get(app.url("/")).await.unwrap();
    assert_eq!(page.status(), 200);
    let header = |name: &str| {
        page.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let policy = header("content-security-policy");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(policy.contains(directive), "{directive} missing: {policy}");
    }
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    assert_eq!(header("x-frame-options"), "DENY");
    assert_eq!(header("referrer-policy"), "no-referrer");
    assert_eq!(header("x-content-type-options"), "nosniff");
    // Nothing inline for the policy to refuse: the page's code is served.
    let html = page.text().await.unwrap();
    assert!(!html.contains("<script>") && !html.contains("<style>"));
    for asset in ["/assets/inbox.js", "/assets/inbox.css"] {
        assert!(html.contains(asset), "{asset} not linked");
        assert_eq!(reqwest::get(app.url(asset)).await.unwrap().status(), 200);
    }
}

#[tokio::test]
async fn metrics_ask_for_their_token_when_one_is_set() {
    const TOKEN: &str = "metrics-token-for-tests";
    let app = TestApp::spawn_with(|c| c.metrics_token = Some(TOKEN.into())).await;
    let http = reqwest::Client::new();
    let anonymous = http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        anonymous.headers().get("www-authenticate").unwrap(),
        "Bearer"
    );
    let wrong = http
        .get(app.url("/metrics"))
        .bearer_auth("metrics-token-for-tests-not")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let scraped = http
        .get(app.url("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), 200);
    assert!(scraped.text().await.unwrap().contains("herald_"));
    // Health stays open for orchestrators.
    assert_eq!(
        http.get(app.url("/health/live"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
