//! Secrets never appear in logs, at any level: `herald serve` run as a
//! process with `RUST_LOG=trace`, its stderr captured to a file, while
//! clients hand it tokens every way they can.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::client::{Connect, connect};
use crate::helpers::{SECRET, TestDb, insert_user};

/// A herald process, killed if the test ends early.
struct Herald(Child);

impl Drop for Herald {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `herald serve` on port 0 writing its log to `log`; its address.
fn serve(database_url: &str, log: &std::path::Path) -> (Herald, std::net::SocketAddr) {
    let file = std::fs::File::create(log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs([
            ("DATABASE_URL", database_url),
            ("JWT_SECRET", SECRET),
            ("HOST", "127.0.0.1"),
            ("PORT", "0"),
            ("HERALD_LOG_FORMAT", "json"),
            ("RUST_LOG", "trace"),
        ])
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .map(Herald)
        .unwrap();
    for _ in 0..600 {
        let text = String::from_utf8_lossy(&std::fs::read(log).unwrap()).into_owned();
        let address = text
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find_map(|entry| entry.get("address")?.as_str()?.parse().ok());
        if let Some(address) = address {
            return (child, address);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("herald did not start within 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_reaches_the_log_even_at_trace_level() {
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    let user = insert_user(&pg, "Ada", "USER", None).await;
    let jwt = herald::auth::JwtConfig::hs256(SECRET.as_bytes());
    // Distinct tokens (distinct lifetimes), so each place is checked on its own.
    let [in_auth, in_query, in_header, refreshed] =
        [600, 700, 800, 900].map(|ttl| jwt.sign(user, Duration::from_secs(ttl)).unwrap());
    let refused = format!("not-a-jwt-{}", uuid::Uuid::new_v4().simple());
    let in_bad_request = format!("never-parsed-{}", uuid::Uuid::new_v4().simple());

    let dir = std::env::temp_dir().join(format!("herald-log-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("herald.log");
    let (mut herald, address) = serve(&db.url, &log);

    let mut by_auth = connect(address, Connect::token(&in_auth)).await.unwrap();
    by_auth.connected().await;
    let ack = by_auth
        .ack("auth.refresh", Some(json!({"token": refreshed})))
        .await;
    assert_eq!(ack["success"], true, "{ack}");
    let mut by_query = connect(
        address,
        Connect {
            query: Some(format!("token={in_query}")),
            ..Connect::default()
        },
    )
    .await
    .unwrap();
    by_query.connected().await;
    let mut by_header = connect(
        address,
        Connect {
            headers: vec![("authorization".into(), format!("Bearer {in_header}"))],
            ..Connect::default()
        },
    )
    .await
    .unwrap();
    by_header.connected().await;
    assert_eq!(
        connect(address, Connect::token(&refused))
            .await
            .err()
            .as_deref(),
        Some("invalid_token")
    );
    // A request Engine.IO refuses before any socket exists (protocol 5).
    let status = reqwest::get(format!(
        "http://{address}/socket.io/?EIO=5&transport=polling&token={in_bad_request}"
    ))
    .await
    .unwrap()
    .status();
    assert!(status.is_client_error(), "{status}");
    for client in [&by_auth, &by_query, &by_header] {
        client.close();
    }
    by_auth.closed().await;

    let _ = Command::new("kill")
        .args(["-TERM", &herald.0.id().to_string()])
        .status();
    assert!(
        herald.0.wait().unwrap().success(),
        "herald did not stop cleanly"
    );
    let text = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
    let _ = std::fs::remove_dir_all(&dir);

    // The log is a trace-level one: it holds herald's own debug lines about
    // these very sockets, so a token written beside them would be seen.
    assert!(
        text.lines().count() > 20,
        "the log is nearly empty:\n{text}"
    );
    assert!(
        text.contains("\"level\":\"DEBUG\"") && text.contains("socket authenticated"),
        "no debug lines were captured:\n{text}"
    );
    for (place, token) in [
        ("auth.token", in_auth.as_str()),
        ("the query string", &in_query),
        ("the Authorization header", &in_header),
        ("auth.refresh", &refreshed),
        ("a refused token", &refused),
        ("a refused request", &in_bad_request),
    ] {
        assert!(
            !text.contains(token),
            "the token from {place} reached the log"
        );
        // The signature alone is the secret part worth grepping for too.
        if let Some(signature) = token.rsplit('.').next().filter(|s| s.len() > 20) {
            assert!(
                !text.contains(signature),
                "the signature of the token from {place} reached the log"
            );
        }
    }
    assert!(!text.contains(SECRET), "the signing secret reached the log");
}
