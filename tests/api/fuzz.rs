//! A fuzz target run as a property test: random and structured Engine.IO /
//! Socket.IO frames sent over a real WebSocket to a real herald, which must
//! keep serving (a control socket still gets its acks, `/health/live`
//! answers) and must never panic. A case is one connection: its frames,
//! then our close, waited for until herald has read everything.
//!
//! The frames are what herald receives: Engine.IO packet types; Socket.IO
//! packets of every type with namespaces, ack ids and binary attachment
//! counts; CONNECTs with good and bad tokens and made-up `lastEventId`s;
//! each client event with payloads near and far from valid; binary frames
//! and garbage.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{Connect, connect};
use crate::helpers::TestApp;

/// Cases per run: a few seconds in scripts/test.
const CASES: u32 = 256;

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Counts panics anywhere in the process (herald's handler tasks included,
/// which tokio would otherwise swallow), then reports them as usual.
fn count_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));
}

const EVENTS: [&str; 6] = [
    "mark.read",
    "mark.delivered",
    "mark.all_read",
    "notifications.list",
    "auth.refresh",
    "no.such.event",
];
const KEYS: [&str; 7] = [
    "notificationId",
    "before",
    "limit",
    "unreadOnly",
    "token",
    "lastEventId",
    "_placeholder",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        ".{0,24}".prop_map(Value::String),
        any::<u128>().prop_map(|n| json!(uuid::Uuid::from_u128(n))),
        "[0-9:,/]{0,24}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        let key = prop_oneof![
            proptest::sample::select(&KEYS[..]).prop_map(str::to_owned),
            ".{0,6}"
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key, inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A payload for `event`: usually the right shape with odd values.
fn payload() -> impl Strategy<Value = Value> {
    prop_oneof![
        2 => json_value(),
        3 => (any::<u128>(), any::<bool>()).prop_map(|(n, real)| {
            let id = if real {
                json!(uuid::Uuid::from_u128(n))
            } else {
                json!(n.to_string())
            };
            json!({"notificationId": id})
        }),
        2 => (json_value(), json_value(), json_value()).prop_map(|(before, limit, unread)| {
            json!({"before": before, "limit": limit, "unreadOnly": unread})
        }),
        1 => ".{0,40}".prop_map(|token| json!({"token": token})),
        1 => Just(json!({})),
    ]
}

/// A Socket.IO packet's text: type, attachments, namespace, ack id, data.
fn socket_io(token: String) -> impl Strategy<Value = String> {
    let namespace = prop_oneof![
        4 => Just("/notifications,".to_owned()),
        1 => Just(String::new()),
        1 => Just("/,".to_owned()),
        1 => "/[a-z]{0,8},?",
    ];
    let ack = prop_oneof![
        Just(String::new()),
        (0u64..1000).prop_map(|n| n.to_string()),
        Just(u64::MAX.to_string()),
        Just("99999999999999999999999".to_owned()),
    ];
    let data = prop_oneof![
        (proptest::sample::select(&EVENTS[..]), payload())
            .prop_map(|(event, payload)| json!([event, payload]).to_string()),
        proptest::sample::select(&EVENTS[..]).prop_map(|event| json!([event]).to_string()),
        json_value().prop_map(|v| v.to_string()),
        (any::<bool>(), json_value()).prop_map(move |(good, last)| {
            let token = if good { json!(token) } else { json!("garbage") };
            json!({"token": token, "lastEventId": last}).to_string()
        }),
        ".{0,40}",
    ];
    let attachments = prop_oneof![
        Just(String::new()),
        (0u32..4).prop_map(|n| format!("{n}-")),
        Just("x-".to_owned())
    ];
    (0u8..8, attachments, namespace, ack, data).prop_map(
        |(kind, attachments, namespace, ack, data)| {
            format!("{kind}{attachments}{namespace}{ack}{data}")
        },
    )
}

/// A client event as herald's clients send it, with an ack id.
fn client_event() -> impl Strategy<Value = String> {
    (
        proptest::sample::select(&EVENTS[..]),
        payload(),
        1u32..10_000,
    )
        .prop_map(|(event, payload, ack)| {
            format!("42/notifications,{ack}{}", json!([event, payload]))
        })
}

/// One WebSocket frame.
fn frame(token: String) -> impl Strategy<Value = Message> {
    prop_oneof![
        4 => client_event().prop_map(Message::text),
        6 => socket_io(token).prop_map(|p| Message::text(format!("4{p}"))),
        1 => "[0-9][a-z0-9]{0,8}".prop_map(Message::text),
        1 => ".{0,60}".prop_map(Message::text),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Message::binary),
        1 => Just(Message::text("2")),
    ]
}

/// A binary event with its attachments: the header announces `count`
/// placeholders, then `sent` binary frames follow (not always as many).
fn binary_event() -> impl Strategy<Value = Vec<Message>> {
    (
        proptest::sample::select(&EVENTS[..]),
        0usize..4,
        0usize..4,
        1u32..10_000,
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..32), 4),
    )
        .prop_map(|(event, count, sent, ack, blobs)| {
            let placeholders: Vec<Value> = (0..count)
                .map(|num| json!({"_placeholder": true, "num": num}))
                .collect();
            let header = format!(
                "45{count}-/notifications,{ack}{}",
                json!([event, {"notificationId": placeholders.first(), "rest": placeholders}])
            );
            std::iter::once(Message::text(header))
                .chain(blobs.into_iter().take(sent).map(Message::binary))
                .collect()
        })
}

/// A case: a CONNECT first (usually), then up to eight frames or runs of
/// frames.
fn case(token: String) -> impl Strategy<Value = (bool, Vec<Message>)> {
    let unit = prop_oneof![
        6 => frame(token).prop_map(|frame| vec![frame]),
        1 => binary_event(),
    ];
    (
        prop::bool::weighted(0.8),
        prop::collection::vec(unit, 0..8).prop_map(|units| units.concat()),
    )
}

/// Sends one case on a fresh connection; waits until herald has read it.
/// Whether herald accepted a namespace CONNECT on it.
async fn send(app: &TestApp, token: &str, connect_first: bool, frames: Vec<Message>) -> bool {
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", app.address);
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket");
    if connect_first {
        let connect = format!("40/notifications,{}", json!({"token": token}));
        let _ = ws.send(Message::text(connect)).await;
    }
    for frame in frames {
        if ws.send(frame).await.is_err() {
            break;
        }
    }
    let _ = ws.send(Message::Close(None)).await;
    // Herald reads in order: once the stream ends it has read every frame.
    tokio::time::timeout(Duration::from_secs(5), async {
        let mut connected = false;
        while let Some(Ok(message)) = ws.next().await {
            if let Message::Text(text) = message {
                connected |= text.starts_with("40/notifications,{");
            }
        }
        connected
    })
    .await
    .expect("herald did not close the connection within 5 s")
}

/// Client events herald answered, of every event but `except`.
async fn handled_other_than(app: &TestApp, except: &str) -> f64 {
    let text = reqwest::get(app.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|line| line.starts_with("herald_client_events_total{"))
        .filter(|line| !line.contains(&format!("event=\"{except}\"")))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn random_frames_never_stop_herald_serving_or_make_it_panic() {
    count_panics();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (app, control, token) = runtime.block_on(async {
        let app = TestApp::spawn().await;
        let user = app.user("Ada", "USER", None).await;
        app.notify(user, "something to mark").await;
        let mut control = connect(app.address, Connect::token(&app.token(user)))
            .await
            .unwrap();
        control.connected().await;
        let token = app.token(user);
        (app, control, token)
    });
    let http = reqwest::Client::new();
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        // A failing case is shrunk a little, not for minutes: each try is
        // a real connection.
        max_shrink_iters: 64,
        failure_persistence: None,
        ..Config::default()
    });
    let connected = std::cell::Cell::new(0usize);
    let result = runner.run(&case(token.clone()), |(connect_first, frames)| {
        runtime.block_on(async {
            let accepted = send(&app, &token, connect_first, frames).await;
            connected.set(connected.get() + usize::from(accepted));
            let ack = control.ack("mark.all_read", None).await;
            prop_assert_eq!(&ack["success"], &json!(true), "control ack: {}", ack);
            let live = http.get(app.url("/health/live")).send().await;
            prop_assert_eq!(live.map(|r| r.status().as_u16()).ok(), Some(200));
            prop_assert_eq!(PANICS.load(Ordering::SeqCst), 0, "herald panicked");
            Ok(())
        })
    });
    if let Err(error) = result {
        panic!("{error}");
    }
    // The structured frames reached herald's handlers, not only its parser:
    // the control socket only ever sends mark.all_read.
    assert!(connected.get() > 0, "no fuzzed CONNECT was accepted");
    runtime.block_on(async {
        let mut handled = 0.0;
        for _ in 0..100 {
            handled = handled_other_than(&app, "mark.all_read").await;
            if handled > 0.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(handled > 0.0, "no fuzzed client event reached a handler");
    });
    runtime.block_on(async {
        assert!(control.is_open(), "the control socket was closed");
        drop(control);
        app.stop().await.expect("herald stopped cleanly");
    });
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "herald panicked");
}
