//! A minimal Socket.IO v5 / Engine.IO v4 client over WebSocket, enough to
//! drive herald's namespace from tests: connect with auth, receive events in
//! order, emit with acknowledgements, answer pings, send raw packets.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const NS: &str = "/notifications";
pub const WAIT: Duration = Duration::from_secs(5);

type Acks = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

pub struct SioClient {
    out: mpsc::UnboundedSender<Message>,
    events: mpsc::UnboundedReceiver<(String, Value)>,
    acks: Acks,
    next_ack: AtomicU64,
    /// `true` until the server closes the socket.
    open: watch::Receiver<bool>,
    /// The task reading the socket: it holds the connection's read half.
    reader: tokio::task::AbortHandle,
}

/// Dropping a client drops its connection, as a client that goes away does.
impl Drop for SioClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// How to connect.
#[derive(Default, Clone)]
pub struct Connect {
    pub auth: Option<Value>,
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
}

impl Connect {
    pub fn token(token: &str) -> Self {
        Self {
            auth: Some(serde_json::json!({"token": token})),
            ..Self::default()
        }
    }
}

/// Connects; `Err` carries the `connect_error` message.
pub async fn connect(address: SocketAddr, options: Connect) -> Result<SioClient, String> {
    let request = upgrade_request(&format!("ws://{address}"), &options);
    let (ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| format!("websocket: {e}"))?;
    join(ws, options).await
}

/// Connects over a stream the caller opened (a TLS session, say); `base`
/// is the URL's start, such as `wss://localhost:4000`.
pub async fn connect_over<S>(stream: S, base: &str, options: Connect) -> Result<SioClient, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let request = upgrade_request(base, &options);
    let (ws, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .map_err(|e| format!("websocket: {e}"))?;
    join(ws, options).await
}

fn upgrade_request(
    base: &str,
    options: &Connect,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut url = format!("{base}/socket.io/?EIO=4&transport=websocket");
    if let Some(query) = &options.query {
        url.push('&');
        url.push_str(query);
    }
    let mut request = url.into_client_request().unwrap();
    for (name, value) in &options.headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            http::HeaderValue::from_str(value).unwrap(),
        );
    }
    request
}

/// Joins the namespace over an open WebSocket.
async fn join<S>(
    ws: tokio_tungstenite::WebSocketStream<S>,
    options: Connect,
) -> Result<SioClient, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();

    // Engine.IO open packet, then the namespace connect.
    let open = next_text(&mut stream).await.ok_or("no open packet")?;
    assert!(open.starts_with('0'), "unexpected first packet {open}");
    let auth = options.auth.map(|a| a.to_string()).unwrap_or_default();
    sink.send(Message::text(format!("40{NS},{auth}")))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let packet = next_text(&mut stream)
            .await
            .ok_or("closed during connect")?;
        if packet == "2" {
            sink.send(Message::text("3"))
                .await
                .map_err(|e| e.to_string())?;
        } else if let Some(rest) = packet.strip_prefix(&format!("40{NS},")) {
            let _ = rest;
            break;
        } else if let Some(rest) = packet.strip_prefix(&format!("44{NS},")) {
            let error: Value = serde_json::from_str(rest).map_err(|e| e.to_string())?;
            return Err(error["message"].as_str().unwrap_or_default().to_owned());
        } else {
            return Err(format!("unexpected packet during connect: {packet}"));
        }
    }

    let (out, mut out_rx) = mpsc::unbounded_channel::<Message>();
    let (events_tx, events) = mpsc::unbounded_channel();
    let acks: Acks = Arc::default();
    let (opened, open) = watch::channel(true);
    tokio::spawn(async move {
        while let Some(message) = out_rx.recv().await {
            if sink.send(message).await.is_err() {
                break;
            }
        }
    });
    let reader = {
        let out = out.clone();
        let acks = acks.clone();
        tokio::spawn(async move {
            while let Some(packet) = next_text(&mut stream).await {
                if packet == "2" {
                    let _ = out.send(Message::text("3"));
                } else if let Some(rest) = packet.strip_prefix(&format!("42{NS},")) {
                    let mut array: Vec<Value> = serde_json::from_str(rest).expect("event array");
                    let name = array.remove(0).as_str().unwrap_or_default().to_owned();
                    let data = array.into_iter().next().unwrap_or(Value::Null);
                    let _ = events_tx.send((name, data));
                } else if let Some(rest) = packet.strip_prefix(&format!("43{NS},")) {
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    let id: u64 = digits.parse().expect("ack id");
                    let array: Vec<Value> =
                        serde_json::from_str(&rest[digits.len()..]).expect("ack array");
                    if let Some(tx) = acks.lock().unwrap().remove(&id) {
                        let _ = tx.send(array.into_iter().next().unwrap_or(Value::Null));
                    }
                } else if packet.starts_with(&format!("41{NS}")) || packet == "1" {
                    break;
                }
            }
            opened.send_replace(false);
        })
        .abort_handle()
    };
    Ok(SioClient {
        out,
        events,
        acks,
        next_ack: AtomicU64::new(1),
        open,
        reader,
    })
}

async fn next_text<S>(stream: &mut S) -> Option<String>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match stream.next().await? {
            Ok(Message::Text(text)) => return Some(text.to_string()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

impl SioClient {
    /// The next event, in arrival order.
    pub async fn next(&mut self) -> (String, Value) {
        self.next_within(WAIT).await.expect("no event within 5 s")
    }

    /// The next event, or `None` when none arrives within `patience`.
    pub async fn next_within(&mut self, patience: Duration) -> Option<(String, Value)> {
        tokio::time::timeout(patience, self.events.recv())
            .await
            .ok()
            .map(|event| event.expect("socket closed"))
    }

    /// The next event, which must be `name`.
    pub async fn expect(&mut self, name: &str) -> Value {
        let (event, data) = self.next().await;
        assert_eq!(event, name, "expected {name}, got {event} {data}");
        data
    }

    /// Skips events until `name` arrives.
    pub async fn wait_for(&mut self, name: &str) -> Value {
        self.wait_for_within(name, WAIT).await
    }

    /// [`Self::wait_for`], with `patience` for each event.
    pub async fn wait_for_within(&mut self, name: &str, patience: Duration) -> Value {
        loop {
            let (event, data) = self
                .next_within(patience)
                .await
                .unwrap_or_else(|| panic!("no event within {patience:?} while waiting for {name}"));
            if event == name {
                return data;
            }
        }
    }

    /// The events that arrive before the `notification:new` of `marker`,
    /// which ends the wait.
    ///
    /// herald pushes to a socket in the log's order, so once a notification
    /// inserted after the events under test has arrived, everything those
    /// events caused on this socket has arrived before it: what this returns
    /// is all that did, and asserting on what is absent is sound.
    pub async fn before(&mut self, marker: uuid::Uuid) -> Vec<(String, Value)> {
        let marker = Value::String(marker.to_string());
        let mut events = Vec::new();
        loop {
            let next = tokio::time::timeout(WAIT, self.events.recv()).await;
            let Ok(Some((event, data))) = next else {
                let why = if next.is_ok() {
                    "the socket closed"
                } else {
                    "5 s passed"
                };
                panic!("{why} before the marker arrived, after {events:?}");
            };
            if event == "notification:new" && data["id"] == marker {
                return events;
            }
            events.push((event, data));
        }
    }

    /// Reads `notification:count`s until one says `count`.
    ///
    /// Counts go out in the order herald's state moved (dispatch, expiries
    /// and reloads push under the tail's lock; the database's counts come
    /// from one task), so a later one is never
    /// older: the sequence ends at the database's value, and a count that
    /// never gets there fails the wait.
    pub async fn settles_at(&mut self, count: i64) {
        self.settles_within(count, WAIT).await;
    }

    pub async fn settles_within(&mut self, count: i64, patience: Duration) {
        let want = serde_json::json!({ "count": count });
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_within(left).await {
                Some((event, data)) if event == "notification:count" && data == want => return,
                Some(_) => {}
                None => panic!("the count did not reach {count} within {patience:?}"),
            }
        }
    }

    /// Waits for the connect sequence to end.
    pub async fn connected(&mut self) -> Value {
        self.wait_for("connection:success").await
    }

    /// Emits with an acknowledgement and waits for it.
    pub async fn ack(&self, event: &str, data: Option<Value>) -> Value {
        let id = self.next_ack.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = oneshot::channel();
        self.acks.lock().unwrap().insert(id, tx);
        let args = match data {
            Some(data) => serde_json::json!([event, data]),
            None => serde_json::json!([event]),
        };
        self.raw(&format!("42{NS},{id}{args}"));
        tokio::time::timeout(WAIT, rx)
            .await
            .expect("no ack within 5 s")
            .expect("socket closed")
    }

    /// Sends a raw Engine.IO packet.
    pub fn raw(&self, packet: &str) {
        let _ = self.out.send(Message::text(packet.to_owned()));
    }

    pub fn is_open(&self) -> bool {
        *self.open.borrow()
    }

    /// Waits until the server closes the socket.
    pub async fn closed(&self) {
        let mut open = self.open.clone();
        tokio::time::timeout(WAIT, open.wait_for(|open| !open))
            .await
            .expect("socket still open after 5 s")
            .expect("the reader ends by saying so");
    }

    pub fn close(&self) {
        let _ = self.out.send(Message::text(format!("41{NS},")));
        let _ = self.out.send(Message::Close(None));
    }
}

/// A client that authenticates and then never reads again: its socket's
/// receive buffer is tiny, so the server's queue for it fills.
pub struct Stalled(#[allow(dead_code)] tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>);

pub async fn stalled(address: SocketAddr, token: &str) -> Stalled {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(address).await.unwrap();
    let url = format!("ws://{address}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    let open = next_text(&mut ws).await.unwrap();
    assert!(open.starts_with('0'));
    ws.send(Message::text(format!(
        "40{NS},{}",
        serde_json::json!({"token": token})
    )))
    .await
    .unwrap();
    loop {
        let packet = next_text(&mut ws).await.unwrap();
        if packet.starts_with(&format!("42{NS},[\"connection:success\"")) {
            return Stalled(ws);
        }
    }
}
