//! Several herald processes on one database: every instance tails the same
//! log and serves its own sockets.

use std::time::Duration;

use serde_json::json;

use crate::client::{Connect, connect};
use crate::helpers::{HeraldProcess, TestDb, TwoInstances, insert_user};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_deliver_once_per_socket_share_reads_and_both_disconnect() {
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    let first = HeraldProcess::spawn(&db.url, &[]);
    // The second logs at debug, to show that not even then a token is written.
    let second = HeraldProcess::spawn(&db.url, &[("RUST_LOG", "debug")]);
    first.wait_ready().await;
    second.wait_ready().await;
    let user = insert_user(&pg, "Ada", "USER", None).await;
    let jwt = herald::auth::JwtConfig::hs256(crate::helpers::SECRET.as_bytes());
    let (token_a, token_b) = (
        jwt.sign(user, Duration::from_secs(600)).unwrap(),
        jwt.sign(user, Duration::from_secs(900)).unwrap(),
    );

    let mut on_first = connect(first.address, Connect::token(&token_a))
        .await
        .unwrap();
    let mut on_second = connect(
        second.address,
        Connect {
            query: Some(format!("token={token_b}")),
            ..Connect::default()
        },
    )
    .await
    .unwrap();
    on_first.connected().await;
    on_second.connected().await;

    let id: uuid::Uuid = pg
        .query_one(
            "insert into herald.notifications (user_id, title) values ($1, 'to both') returning id",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    // Each instance pushes in log order: a second copy of the first row
    // would reach its socket before a marker inserted after it.
    let marker: uuid::Uuid = pg
        .query_one(
            "insert into herald.notifications (user_id, title) values ($1, 'marker') returning id",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    for client in [&mut on_first, &mut on_second] {
        let pushed = client.before(marker).await;
        let copies: Vec<_> = pushed
            .iter()
            .filter(|(e, _)| e == "notification:new")
            .map(|(_, data)| &data["id"])
            .collect();
        assert_eq!(copies, [&json!(id)], "{pushed:?}");
    }

    // A read through one instance reaches the socket on the other.
    let ack = on_first
        .ack("mark.read", Some(json!({"notificationId": id})))
        .await;
    assert_eq!(ack["success"], true);
    let read = on_second.wait_for("notification:read").await;
    assert_eq!(read["notificationId"], json!(id));
    // With the marker read too, the other instance's count falls to zero.
    let ack = on_first
        .ack("mark.read", Some(json!({"notificationId": marker})))
        .await;
    assert_eq!(ack["success"], true);
    on_second.settles_at(0).await;

    // Both instances record the delivery; the audit keeps one row.
    let mut rows = 0;
    for _ in 0..100 {
        rows = pg
            .query_one(
                "select count(*) from herald.notification_deliveries where notification_id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        if rows > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rows, 1);

    pg.execute(
        "update herald.users set is_active = false where id = $1",
        &[&user],
    )
    .await
    .unwrap();
    on_first.closed().await;
    on_second.closed().await;

    for log in [first.log_text(), second.log_text()] {
        assert!(
            !log.contains(&token_a) && !log.contains(&token_b),
            "a token reached the log"
        );
        assert!(
            !log.contains(crate::helpers::SECRET),
            "the secret reached the log"
        );
    }
    assert!(
        first.terminate(),
        "the first instance did not stop cleanly on SIGTERM"
    );
    assert!(
        second.terminate(),
        "the second instance did not stop cleanly on SIGTERM"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_user_disconnects_their_sockets_on_every_instance() {
    let herald = TwoInstances::start().await;
    let pg = &herald.pg;
    let user = insert_user(pg, "Ada", "USER", None).await;
    let bystander = insert_user(pg, "Bob", "USER", None).await;
    let sockets = [
        herald.online(&herald.first, user).await,
        herald.online(&herald.second, user).await,
    ];
    let mut other = herald.online(&herald.first, bystander).await;

    pg.execute("delete from herald.users where id = $1", &[&user])
        .await
        .unwrap();
    for socket in &sockets {
        socket.closed().await;
    }
    // Only that user: a broadcast after the delete still reaches the others.
    let after: uuid::Uuid = pg
        .query_one(
            "insert into herald.notifications (audience, title) values ('all', 'after') returning id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(other.wait_for("notification:new").await["id"], json!(after));
    let again = connect(herald.second.address, Connect::token(&herald.token(user)))
        .await
        .err();
    assert_eq!(again.as_deref(), Some("user_not_found"));

    let TwoInstances { first, second, .. } = herald;
    assert!(first.terminate() && second.terminate(), "stopped cleanly");
}
