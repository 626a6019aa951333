//! The command line, run as a real process.

use std::process::Command;

use uuid::Uuid;

use crate::helpers::{SECRET, TestDb, column, insert_user};

/// Runs a herald command that must succeed; its standard output.
fn stdout_of(command: &mut Command) -> String {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn herald() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn");
    command
}

#[tokio::test]
async fn token_prints_a_jwt_that_verifies_with_the_configured_secret() {
    let user = Uuid::new_v4();
    let token = stdout_of(
        herald()
            .args(["token", "--user", &user.to_string(), "--ttl", "2h"])
            .env("JWT_SECRET", SECRET),
    );
    let verified = herald::auth::JwtConfig::hs256(SECRET.as_bytes())
        .verify(token.trim())
        .await
        .unwrap();
    assert_eq!(verified.user_id, user);
    let ttl = verified.expires_at - herald::auth::unix_now();
    assert!((7100..=7200).contains(&ttl), "ttl {ttl}");
    // Another secret does not accept it.
    assert!(
        herald::auth::JwtConfig::hs256(b"some-other-secret-entirely")
            .verify(token.trim())
            .await
            .is_err()
    );
}

#[test]
fn a_missing_or_malformed_setting_is_one_line_naming_the_variable() {
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[], "JWT_SECRET is required"),
        (
            &[("JWT_SECRET", SECRET), ("JWT_LEEWAY", "soon")],
            "invalid JWT_LEEWAY",
        ),
        (
            &[("JWT_SECRET", SECRET), ("JWT_ALGORITHM", "RS256")],
            "invalid JWT_ALGORITHM",
        ),
        (
            &[
                ("JWT_PUBLIC_KEY_FILE", "/nonexistent.pem"),
                ("JWT_ALGORITHM", "RS256"),
            ],
            "invalid JWT_PUBLIC_KEY_FILE",
        ),
    ];
    for (env, expected) in cases {
        let output = herald()
            .args(["token", "--user", &Uuid::new_v4().to_string()])
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }
    // Parsed by clap to their types, refused in the same one line.
    for (var, value) in [
        ("PORT", "eighty"),
        ("HOST", "localhost"),
        ("HERALD_TRUST_PROXY", "maybe"),
        ("HERALD_HANDSHAKE_RATE_LIMIT", "many"),
        ("HERALD_HTTP_IDLE_TIMEOUT", "0s"),
        ("HERALD_PENDING_LIMIT", "5000"),
        ("CORS_ORIGINS", "example.com"),
        ("HERALD_LISTEN_URL", "not a url"),
    ] {
        let output = herald()
            .args(["serve"])
            .envs([
                ("DATABASE_URL", "postgres://localhost/x"),
                ("JWT_SECRET", SECRET),
                (var, value),
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(!output.status.success(), "{var}={value} was accepted");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(&format!("invalid {var}: ")), "{stderr}");
    }
    let output = herald().args(["migrate"]).output().unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        !output.status.success() && stderr.contains("DATABASE_URL is required"),
        "{stderr}"
    );
}

#[tokio::test]
async fn send_inserts_the_row_it_describes() {
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    let user = insert_user(&pg, "Ada", "USER", None).await;
    let id: Uuid = stdout_of(
        herald()
            .args([
                "send",
                "--user",
                &user.to_string(),
                "--title",
                "Invoice ready",
                "--message",
                "March",
                "--kind",
                "billing.invoice",
                "--importance",
                "high",
                "--data",
                r#"{"invoice": 42}"#,
            ])
            .env("DATABASE_URL", &db.url),
    )
    .trim()
    .parse()
    .unwrap();
    let row = pg
        .query_one(
            "select audience, user_id, title, message, kind, importance, data from herald.notifications where id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "user");
    assert_eq!(row.get::<_, Option<Uuid>>(1), Some(user));
    assert_eq!(row.get::<_, String>(2), "Invoice ready");
    assert_eq!(row.get::<_, String>(3), "March");
    assert_eq!(row.get::<_, String>(4), "billing.invoice");
    assert_eq!(row.get::<_, String>(5), "high");
    assert_eq!(
        row.get::<_, serde_json::Value>(6),
        serde_json::json!({"invoice": 42})
    );

    let sector = Uuid::new_v4();
    let output = herald()
        .args([
            "send",
            "--sector",
            &sector.to_string(),
            "--title",
            "Sector news",
        ])
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(output.status.success());
    let audience: String = pg
        .query_one(
            "select audience from herald.notifications where sector_id = $1",
            &[&sector],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(audience, "sector");

    // A bad row is refused with its constraint's name, and nothing is written.
    let output = herald()
        .args(["send", "--all", "--title", "x", "--importance", "critical"])
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        !output.status.success() && stderr.contains("notifications_importance_valid"),
        "{stderr}"
    );
    // Targets are exclusive and required.
    let output = herald()
        .args(["send", "--all", "--admin", "--title", "x"])
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let count: i64 = pg
        .query_one("select count(*) from herald.notifications", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 2);
}

#[tokio::test]
async fn asymmetric_keys_sign_and_verify_and_refuse_algorithm_switching() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt");
    for (algorithm, name) in [("RS256", "rsa"), ("ES256", "es256"), ("EdDSA", "ed25519")] {
        let public = format!("{fixtures}/{name}.pub.pem");
        let private = format!("{fixtures}/{name}.key.pem");
        let user = Uuid::new_v4();
        let token = stdout_of(herald().args(["token", "--user", &user.to_string()]).envs([
            ("JWT_PUBLIC_KEY_FILE", public.as_str()),
            ("JWT_PRIVATE_KEY_FILE", private.as_str()),
            ("JWT_ALGORITHM", algorithm),
        ]));
        let pem = std::fs::read(&public).unwrap();
        let jwt = herald::auth::JwtConfig::asymmetric(algorithm, &pem, None).unwrap();
        assert_eq!(
            jwt.verify(token.trim()).await.unwrap().user_id,
            user,
            "{algorithm}"
        );
        // The classic switch: an HS256 token keyed with the public key itself.
        let forged = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &serde_json::json!({"sub": user, "exp": herald::auth::unix_now() + 60}),
            &jsonwebtoken::EncodingKey::from_secret(&pem),
        )
        .unwrap();
        assert_eq!(
            jwt.verify(&forged).await,
            Err(herald::auth::TokenError::Invalid),
            "{algorithm}"
        );
        // HS256 tokens of a secret-keyed herald are refused too.
        let hs = herald::auth::JwtConfig::hs256(SECRET.as_bytes())
            .sign(user, std::time::Duration::from_secs(60))
            .unwrap();
        assert_eq!(
            jwt.verify(&hs).await,
            Err(herald::auth::TokenError::Invalid),
            "{algorithm}"
        );
    }
    // A key that does not match the algorithm is a configuration error.
    let output = herald()
        .args(["token", "--user", &Uuid::new_v4().to_string()])
        .envs([
            ("JWT_PUBLIC_KEY_FILE", format!("{fixtures}/ed25519.pub.pem")),
            ("JWT_ALGORITHM", "RS256".into()),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        !output.status.success() && stderr.contains("invalid JWT_PUBLIC_KEY_FILE"),
        "{stderr}"
    );
}

#[tokio::test]
async fn prune_removes_old_events_and_old_read_notifications_and_reports_it() {
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    let user = insert_user(&pg, "Ada", "USER", None).await;
    let insert = |title: &'static str, age_days: i32| {
        let pg = &pg;
        async move {
            pg.query_one(
                "insert into herald.notifications (user_id, title, created_at) values ($1, $2, now() - make_interval(days => $3)) returning id",
                &[&user, &title, &age_days],
            )
            .await
            .unwrap()
            .get::<_, Uuid>(0)
        }
    };
    let old_read = insert("old and read", 100).await;
    let old_unread = insert("old and unread", 100).await;
    let recent_read = insert("recent and read", 10).await;
    let old_retracted = insert("old and retracted", 100).await;
    for (id, days) in [(old_read, 95), (recent_read, 5)] {
        pg.execute(
            "insert into herald.notification_seen (notification_id, user_id, seen_at) values ($1, $2, now() - make_interval(days => $3))",
            &[&id, &user, &days],
        )
        .await
        .unwrap();
    }
    pg.execute(
        "insert into herald.notification_deliveries (notification_id, user_id, status, sent_at) values ($1, $2, 'SENT', now())",
        &[&old_read, &user],
    )
    .await
    .unwrap();
    pg.execute("update herald.notifications set retracted_at = created_at + interval '1 day' where id = $1", &[&old_retracted])
        .await
        .unwrap();
    // Age all but the newest event past a week. The log refuses updates; a
    // superuser can still switch its triggers off for a session, as here.
    pg.batch_execute(
        "begin;
         set local session_replication_role = replica;
         update herald.events set created_at = now() - interval '8 days' where id < (select max(id) from herald.events);
         commit;",
    )
    .await
    .unwrap();
    let events_before: i64 = pg
        .query_one("select count(*) from herald.events", &[])
        .await
        .unwrap()
        .get(0);

    let report = stdout_of(
        herald()
            .args(["prune", "--read-older-than", "90d"])
            .env("DATABASE_URL", &db.url),
    );
    assert!(
        report.contains(&format!("deleted {} event(s)", events_before - 1)),
        "{report}"
    );
    assert!(
        report.contains("deleted 2 notification(s)")
            && report.contains("1 receipt(s) and 1 delivery row(s)"),
        "{report}"
    );

    let left: Vec<Uuid> = column(
        &pg,
        "select id from herald.notifications order by title",
        &[],
    )
    .await;
    assert_eq!(left, [old_unread, recent_read]);
    let events_after: i64 = pg
        .query_one("select count(*) from herald.events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(events_after, 1);
    let horizon: String = pg
        .query_one(
            "select pruned_through_tx::text from herald.event_retention",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_ne!(horizon, "0", "the pruned horizon moved");
}
