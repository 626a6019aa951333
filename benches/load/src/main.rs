//! herald's load generator, and the bare WebSocket server that is the floor
//! herald is compared with (scripts/bench runs both).
//!
//! It opens thousands of Engine.IO v4 WebSocket clients, spread over several
//! loopback source addresses, authenticates them with tokens it mints,
//! answers pings, and counts every `notification:new` per socket (so loss
//! and duplicates are measured, not assumed). It is also the producer: it
//! inserts through tokio-postgres on a fixed schedule (open loop) and
//! records, per notification, the scheduled time and the moment it sent
//! COMMIT; each arrival goes into HdrHistograms of both latencies.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

const NS: &str = "/notifications";

#[derive(Parser)]
#[command(about = "herald's load generator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A bare WebSocket broadcast server: sends one pre-encoded frame to
    /// every connection when a connection sends `b:<id>`.
    Bare {
        #[arg(long)]
        port: u16,
    },
    /// One scenario against a running server; prints JSON results.
    Run(Run),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum Scenario {
    UnicastLatency,
    UnicastThroughput,
    Broadcast,
    Idle,
    Storm,
}

#[derive(Parser, Clone)]
struct Run {
    #[arg(value_enum)]
    scenario: Scenario,
    /// The server, host:port.
    #[arg(long)]
    server: SocketAddr,
    /// The server is the bare WebSocket server (no Socket.IO, no database).
    #[arg(long)]
    bare: bool,
    #[arg(long)]
    database_url: Option<String>,
    #[arg(long, default_value = "bench-secret-0123456789abcdef")]
    secret: String,
    /// For RSS per socket.
    #[arg(long)]
    server_pid: Option<u32>,
    #[arg(long, default_value_t = 1000)]
    sockets: usize,
    /// Inserts (or broadcasts) per second, for the paced scenarios.
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Producer connections for unicast-throughput.
    #[arg(long, default_value_t = 4)]
    producers: usize,
    /// Rows per transaction for unicast-throughput.
    #[arg(long, default_value_t = 100)]
    rows: usize,
    /// Loopback source addresses to spread clients over (127.0.0.2 on).
    #[arg(long, default_value_t = 8)]
    sources: u8,
    /// A name for the results.
    #[arg(long, default_value = "herald")]
    target: String,
}

fn main() -> anyhow::Result<()> {
    raise_file_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match Cli::parse().command {
        Command::Bare { port } => runtime.block_on(bare_server(port)),
        Command::Run(run) => {
            let result = runtime.block_on(scenario(run))?;
            println!("{}", serde_json::to_string_pretty(&result)?);
            Ok(())
        }
    }
}

/// Raises the open-file limit to its hard maximum.
fn raise_file_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

// ---------------------------------------------------------------------------
// The bare server: the physical floor of fan-out time and memory per socket.
// ---------------------------------------------------------------------------

async fn bare_server(port: u16) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let (tx, _) = tokio::sync::broadcast::channel::<Message>(1024);
    eprintln!("bare server on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let tx = tx.clone();
        tokio::spawn(async move {
            // The same read buffer per socket as herald's.
            let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                .read_buffer_size(1024);
            let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await
            else {
                return;
            };
            let (mut sink, mut stream) = ws.split();
            let mut frames = tx.subscribe();
            loop {
                tokio::select! {
                    frame = frames.recv() => match frame {
                        Ok(frame) => if sink.send(frame).await.is_err() { return },
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(_) => return,
                    },
                    message = stream.next() => match message {
                        Some(Ok(Message::Text(text))) => {
                            if let Some(id) = text.strip_prefix("b:") {
                                // The same frame herald would send, encoded once.
                                let frame = format!("42{NS},[\"notification:new\",{{\"id\":\"{id}\",\"title\":\"bench\",\"eventId\":\"x\"}}]");
                                let _ = tx.send(Message::text(frame));
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => return,
                    },
                }
            }
        });
    }
}

// ---------------------------------------------------------------------------
// Clients.
// ---------------------------------------------------------------------------

/// When each notification was scheduled and when its COMMIT was sent.
#[derive(Default)]
struct Sent {
    at: RwLock<HashMap<Uuid, (Instant, Instant)>>,
}

/// What one socket saw.
struct Seen {
    ids: HashMap<Uuid, u32>,
    /// The server closed the socket before the run ended (e.g. evicted it).
    closed_early: bool,
    commit_latency: Histogram<u64>,
    schedule_latency: Histogram<u64>,
}

impl Seen {
    fn new() -> Self {
        Self {
            ids: HashMap::new(),
            closed_early: false,
            commit_latency: Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds"),
            schedule_latency: Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds"),
        }
    }
}

/// The notifications each socket should see: (socket index, id), or
/// (None, id) for every socket.
type Expected = Arc<Mutex<Vec<(Option<usize>, Uuid)>>>;

/// The last arrival of each broadcast, for fan-out completion times.
#[derive(Default)]
struct Fanout {
    last: Mutex<HashMap<Uuid, (usize, Instant)>>,
}

struct Client {
    index: usize,
    token: Option<String>,
}

async fn connect_client(
    run: &Run,
    client: &Client,
) -> anyhow::Result<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>> {
    let source = IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        0,
        2 + (client.index % run.sources.max(1) as usize) as u8,
    ));
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(run.server).await?;
    stream.set_nodelay(true)?;
    let url = if run.bare {
        format!("ws://{}/", run.server)
    } else {
        format!("ws://{}/socket.io/?EIO=4&transport=websocket", run.server)
    };
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await?;
    if run.bare {
        return Ok(ws);
    }
    let open = next_text(&mut ws).await.context("no open packet")?;
    anyhow::ensure!(open.starts_with('0'), "unexpected first packet");
    let auth = json!({"token": client.token});
    ws.send(Message::text(format!("40{NS},{auth}"))).await?;
    loop {
        let packet = next_text(&mut ws).await.context("closed during connect")?;
        if packet == "2" {
            ws.send(Message::text("3")).await?;
        } else if packet.starts_with(&format!("40{NS},")) {
            break;
        } else if packet.starts_with(&format!("44{NS},")) {
            anyhow::bail!("refused: {packet}");
        }
    }
    // Wait for the connect sequence to end, so live pushes are what follows.
    loop {
        let packet = next_text(&mut ws)
            .await
            .context("closed during connect sequence")?;
        if packet == "2" {
            ws.send(Message::text("3")).await?;
        } else if packet.starts_with(&format!("42{NS},[\"connection:success\"")) {
            return Ok(ws);
        }
    }
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

/// The id in a `notification:new` packet, without parsing the whole JSON.
fn notification_id(packet: &str) -> Option<Uuid> {
    let rest = packet.strip_prefix(&format!("42{NS},[\"notification:new\","))?;
    let at = rest.find("\"id\":\"")? + 6;
    rest.get(at..at + 36)?.parse().ok()
}

async fn read_pushes(
    mut ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    sent: Arc<Sent>,
    fanout: Arc<Fanout>,
    arrivals: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> Seen {
    let mut seen = Seen::new();
    loop {
        tokio::select! {
            _ = stop.changed() => return seen,
            message = ws.next() => {
                let Some(Ok(message)) = message else {
                    seen.closed_early = true;
                    return seen;
                };
                let Message::Text(text) = message else { continue };
                if text.as_str() == "2" {
                    let _ = ws.send(Message::text("3")).await;
                    continue;
                }
                let now = Instant::now();
                let Some(id) = notification_id(&text) else { continue };
                *seen.ids.entry(id).or_default() += 1;
                arrivals.fetch_add(1, Ordering::Relaxed);
                if let Some(&(scheduled, committed)) = sent.at.read().expect("not poisoned").get(&id) {
                    let _ = seen.commit_latency.record(now.saturating_duration_since(committed).as_micros().max(1) as u64);
                    let _ = seen.schedule_latency.record(now.saturating_duration_since(scheduled).as_micros().max(1) as u64);
                }
                let mut last = fanout.last.lock().expect("not poisoned");
                let entry = last.entry(id).or_insert((0, now));
                entry.0 += 1;
                entry.1 = now;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Scenarios.
// ---------------------------------------------------------------------------

fn token(secret: &str, user: Uuid) -> String {
    let claims = json!({"sub": user, "exp": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) + 3600});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing does not fail")
}

async fn pg(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

const SECTOR: Uuid = Uuid::from_u128(0x5e00_0000_0000_4000_8000_0000_0000_00be);

/// Creates the users the sockets log in as; all in the bench sector.
async fn create_users(db: &tokio_postgres::Client, count: usize) -> anyhow::Result<Vec<Uuid>> {
    let rows = db
        .query(
            "insert into herald.users (id, name, sector_id)
             select gen_random_uuid(), 'bench ' || i, $2 from generate_series(1, $1::int) i returning id",
            &[&(count as i32), &SECTOR],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn percentiles(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    let ms = |v: u64| (v as f64 / 1000.0 * 1000.0).round() / 1000.0;
    json!({
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p90_ms": ms(h.value_at_quantile(0.90)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "max_ms": ms(h.max()),
        "count": h.len(),
    })
}

async fn scenario(run: Run) -> anyhow::Result<Value> {
    let db = match (&run.database_url, run.bare) {
        (Some(url), false) => Some(pg(url).await?),
        _ => None,
    };
    let users = match &db {
        Some(db) => create_users(db, run.sockets).await?,
        None => (0..run.sockets).map(|_| Uuid::new_v4()).collect(),
    };
    let clients: Vec<Client> = users
        .iter()
        .enumerate()
        .map(|(index, user)| Client {
            index,
            token: (!run.bare).then(|| token(&run.secret, *user)),
        })
        .collect();
    let rss_before = rss_kib(run.server_pid);

    // Connect: all at once for the storm, 256 at a time otherwise.
    let concurrency = if run.scenario == Scenario::Storm {
        run.sockets
    } else {
        256
    };
    let started = Instant::now();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut connecting = Vec::new();
    for client in clients {
        let run = run.clone();
        let semaphore = semaphore.clone();
        let refused = refused.clone();
        connecting.push(tokio::spawn(async move {
            let _permit = semaphore.acquire_owned().await.ok()?;
            let connecting =
                tokio::time::timeout(Duration::from_secs(30), connect_client(&run, &client));
            match connecting
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("no connection:success within 30 s")))
            {
                Ok(ws) => Some((client.index, ws)),
                Err(error) => {
                    if refused.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("client {}: {error:#}", client.index);
                    }
                    None
                }
            }
        }));
    }
    let mut sockets = Vec::new();
    for handle in connecting {
        if let Some(socket) = handle.await? {
            sockets.push(socket);
        }
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    let connected = sockets.len();

    let mut result = json!({
        "scenario": format!("{:?}", run.scenario),
        "target": run.target,
        "sockets": run.sockets,
        "connected": connected,
        "refused": refused.load(Ordering::Relaxed),
        "connect_seconds": connect_seconds,
    });
    if matches!(run.scenario, Scenario::Idle | Scenario::Storm) {
        tokio::time::sleep(Duration::from_secs(3)).await;
        if let (Some(before), Some(after)) = (rss_before, rss_kib(run.server_pid)) {
            result["rss_before_kib"] = json!(before);
            result["rss_after_kib"] = json!(after);
            result["rss_per_socket_kib"] =
                json!((after.saturating_sub(before)) as f64 / connected.max(1) as f64);
        }
        return Ok(result);
    }

    // Read pushes on every socket while the producer runs.
    let sent = Arc::new(Sent::default());
    let fanout = Arc::new(Fanout::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let arrivals = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for (index, ws) in sockets {
        readers.push((
            index,
            tokio::spawn(read_pushes(
                ws,
                sent.clone(),
                fanout.clone(),
                arrivals.clone(),
                stop_rx.clone(),
            )),
        ));
    }
    // Expected notification ids per socket index (None: every socket).
    let expected: Expected = Arc::default();
    let mut produce_started = Instant::now();
    let mut fanout_ids = Vec::new();
    match run.scenario {
        Scenario::UnicastLatency => {
            produce_unicast(&run, &users, &sent, &expected, 1, Some(run.rate)).await?
        }
        Scenario::UnicastThroughput => {
            produce_unicast(&run, &users, &sent, &expected, run.rows, None).await?
        }
        Scenario::Broadcast => {
            // Single broadcasts one second apart: the fan-out time.
            for _ in 0..5 {
                let id = broadcast_one(&run, &sent).await?;
                expected.lock().expect("not poisoned").push((None, id));
                fanout_ids.push(id);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            // Then a sustained stream at the given rate; rates count from here.
            produce_started = Instant::now();
            produce_broadcasts(&run, &sent, &expected).await?;
        }
        Scenario::Idle | Scenario::Storm => unreachable!("returned above"),
    }
    let produce_seconds = produce_started.elapsed().as_secs_f64();
    // The server's SENT records, watched from now on (alongside the drain).
    let records = match &run.database_url {
        Some(url) if !run.bare => {
            let produced = expected.lock().expect("not poisoned").clone();
            let (db, sockets) = (pg(url).await?, run.sockets);
            Some(tokio::spawn(async move {
                delivery_records(&db, &produced, sockets).await
            }))
        }
        _ => None,
    };
    // Let the last pushes arrive: until nothing came for two seconds (at most a minute).
    let drain_started = Instant::now();
    let mut last_count = u64::MAX;
    while drain_started.elapsed() < Duration::from_secs(60) {
        let count = arrivals.load(Ordering::Relaxed);
        if count == last_count {
            break;
        }
        last_count = count;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let _ = stop_tx.send(true);

    let mut commit = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    let mut schedule = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    let expected = expected.lock().expect("not poisoned").clone();
    let (mut lost, mut duplicates, mut delivered, mut expected_total) = (0u64, 0u64, 0u64, 0u64);
    let mut closed_early = 0;
    for (index, reader) in readers {
        let seen = reader.await?;
        closed_early += usize::from(seen.closed_early);
        commit.add(&seen.commit_latency)?;
        schedule.add(&seen.schedule_latency)?;
        for (target, id) in &expected {
            if target.is_none_or(|t| t == index) {
                expected_total += 1;
                match seen.ids.get(id) {
                    None => lost += 1,
                    Some(&n) => {
                        delivered += 1;
                        duplicates += u64::from(n.saturating_sub(1));
                    }
                }
            }
        }
    }
    let sent_at = sent.at.read().expect("not poisoned");
    let last = fanout.last.lock().expect("not poisoned");
    let fanout_ms: Vec<f64> = fanout_ids
        .iter()
        .filter_map(|id| {
            Some(
                last.get(id)?
                    .1
                    .saturating_duration_since(sent_at.get(id)?.1)
                    .as_secs_f64()
                    * 1000.0,
            )
        })
        .collect();
    // Deliveries per second over the window from the first send to the last
    // arrival, so a server that falls behind is measured by when it caught up.
    let sustained: Vec<&Uuid> = expected
        .iter()
        .map(|(_, id)| id)
        .filter(|id| !fanout_ids.contains(id))
        .collect();
    let last_arrival = sustained
        .iter()
        .filter_map(|id| last.get(*id).map(|(_, at)| *at))
        .max();
    let window = last_arrival
        .map(|at| at.saturating_duration_since(produce_started).as_secs_f64())
        .unwrap_or(produce_seconds);
    let sustained_delivered: usize = sustained
        .iter()
        .filter_map(|id| last.get(*id).map(|(n, _)| *n))
        .sum();
    result["delivery_window_seconds"] = json!(window);
    result["sustained_deliveries_per_second"] =
        json!(sustained_delivered as f64 / window.max(0.001));
    result["closed_by_server"] = json!(closed_early);
    result["notifications"] = json!(expected.len());
    result["deliveries_expected"] = json!(expected_total);
    result["deliveries"] = json!(delivered);
    result["lost"] = json!(lost);
    result["duplicates"] = json!(duplicates);
    result["produce_seconds"] = json!(produce_seconds);
    result["deliveries_per_second"] = json!(delivered as f64 / produce_seconds);
    result["rows_per_second"] =
        json!(expected.iter().filter(|(t, _)| t.is_some()).count() as f64 / produce_seconds);
    result["commit_to_receipt"] = percentiles(&commit);
    result["schedule_to_receipt"] = percentiles(&schedule);
    if let Some(records) = records {
        let (written, expected_rows, complete_at) = records.await??;
        result["sent_records"] = json!(written);
        result["sent_records_expected"] = json!(expected_rows);
        // When the last record was written, counted from the last push's
        // arrival (0 when the records were complete first).
        result["records_complete_after_last_push_seconds"] = json!(
            complete_at
                .zip(last_arrival)
                .map(|(done, last)| done.saturating_duration_since(last).as_secs_f64())
        );
    }
    if !fanout_ms.is_empty() {
        let mut sorted = fanout_ms.clone();
        sorted.sort_by(f64::total_cmp);
        result["fanout_ms"] = json!(fanout_ms);
        result["fanout_median_ms"] = json!(sorted[sorted.len() / 2]);
    }
    Ok(result)
}

/// Polls the server's delivery records of these notifications (one `SENT`
/// row per notification and user) until all are there or the table stops
/// growing for 10 s; returns how many there are, how many were expected,
/// and when they were complete. Cheaply: the records come about in the
/// order of the pushes, so the whole count is only taken once the last
/// notification's records are in, and growth is read from the table's
/// insert counter.
async fn delivery_records(
    db: &tokio_postgres::Client,
    produced: &[(Option<usize>, Uuid)],
    sockets: usize,
) -> anyhow::Result<(i64, i64, Option<Instant>)> {
    let rows = |target: &Option<usize>| if target.is_some() { 1 } else { sockets as i64 };
    let expected: i64 = produced.iter().map(|(target, _)| rows(target)).sum();
    let ids: Vec<Uuid> = produced.iter().map(|(_, id)| *id).collect();
    let Some((last_target, last_id)) = produced.last() else {
        return Ok((0, 0, Some(Instant::now())));
    };
    let count = async |ids: &[Uuid]| -> anyhow::Result<i64> {
        Ok(db
            .query_one(
                "select count(*) from herald.notification_deliveries where notification_id = any($1)",
                &[&ids],
            )
            .await?
            .get(0))
    };
    // Rows inserted into the table so far, as the statistics have them
    // (flushed by each writing session about once a second).
    let inserted = async || -> anyhow::Result<i64> {
        Ok(db
            .query_one(
                "select pg_stat_get_tuples_inserted('herald.notification_deliveries'::regclass)",
                &[],
            )
            .await?
            .get(0))
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut progress = (inserted().await?, Instant::now());
    loop {
        // The whole count, only once the last notification's rows are in.
        let mut pause = Duration::from_millis(50);
        if count(&[*last_id]).await? >= rows(last_target) {
            let all = count(&ids).await?;
            if all >= expected {
                return Ok((all, expected, Some(Instant::now())));
            }
            pause = Duration::from_millis(500);
        }
        let now = inserted().await?;
        if now != progress.0 {
            progress = (now, Instant::now());
        }
        if progress.1.elapsed() > Duration::from_secs(10) || Instant::now() > deadline {
            return Ok((count(&ids).await?, expected, None));
        }
        tokio::time::sleep(pause).await;
    }
}

/// Inserts `rows`-row transactions for consecutive users, paced at `rate`
/// transactions per second (open loop) or as fast as they go.
async fn produce_unicast(
    run: &Run,
    users: &[Uuid],
    sent: &Arc<Sent>,
    expected: &Expected,
    rows: usize,
    rate: Option<f64>,
) -> anyhow::Result<()> {
    let url = run
        .database_url
        .clone()
        .context("--database-url is required")?;
    let producers = if rate.is_some() { 2 } else { run.producers };
    let start = Instant::now() + Duration::from_millis(100);
    let total = rate.map(|r| (r * run.seconds) as u64);
    let next = Arc::new(AtomicU64::new(0));
    let users = Arc::new(users.to_vec());
    let positions: Arc<HashMap<Uuid, usize>> =
        Arc::new(users.iter().enumerate().map(|(i, u)| (*u, i)).collect());
    let mut tasks = Vec::new();
    for _ in 0..producers {
        let (url, sent, expected, next, users) = (
            url.clone(),
            sent.clone(),
            expected.clone(),
            next.clone(),
            users.clone(),
        );
        let positions = positions.clone();
        let deadline = start + Duration::from_secs_f64(run.seconds);
        tasks.push(tokio::spawn(async move {
            let db = pg(&url).await?;
            let insert = db
                .prepare("insert into herald.notifications (user_id, title) select u, 'bench' from unnest($1::uuid[]) u returning id, user_id")
                .await?;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let scheduled = match (rate, total) {
                    (Some(rate), Some(total)) => {
                        if n >= total {
                            break;
                        }
                        let at = start + Duration::from_secs_f64(n as f64 / rate);
                        tokio::time::sleep_until(at.into()).await;
                        at
                    }
                    _ => {
                        if Instant::now() >= deadline {
                            break;
                        }
                        Instant::now()
                    }
                };
                let first = (n as usize * rows) % users.len();
                let batch: Vec<Uuid> = (0..rows).map(|i| users[(first + i) % users.len()]).collect();
                db.batch_execute("begin").await?;
                let inserted = db.query(&insert, &[&batch]).await?;
                let committed = Instant::now();
                {
                    let mut at = sent.at.write().expect("not poisoned");
                    let mut exp = expected.lock().expect("not poisoned");
                    for row in &inserted {
                        let id: Uuid = row.get(0);
                        let user: Uuid = row.get(1);
                        at.insert(id, (scheduled, committed));
                        exp.push((positions.get(&user).copied(), id));
                    }
                }
                db.batch_execute("commit").await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// One sector broadcast (or, against the bare server, one trigger); its id.
async fn broadcast_one(run: &Run, sent: &Arc<Sent>) -> anyhow::Result<Uuid> {
    if run.bare {
        let id = Uuid::new_v4();
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/", run.server)).await?;
        let now = Instant::now();
        sent.at
            .write()
            .expect("not poisoned")
            .insert(id, (now, now));
        ws.send(Message::text(format!("b:{id}"))).await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
        return Ok(id);
    }
    let url = run
        .database_url
        .clone()
        .context("--database-url is required")?;
    let db = pg(&url).await?;
    broadcast_with(&db, sent, Instant::now()).await
}

async fn broadcast_with(
    db: &tokio_postgres::Client,
    sent: &Arc<Sent>,
    scheduled: Instant,
) -> anyhow::Result<Uuid> {
    db.batch_execute("begin").await?;
    let id: Uuid = db
        .query_one("insert into herald.notifications (sector_id, title) values ($1, 'bench broadcast') returning id", &[&SECTOR])
        .await?
        .get(0);
    sent.at
        .write()
        .expect("not poisoned")
        .insert(id, (scheduled, Instant::now()));
    db.batch_execute("commit").await?;
    Ok(id)
}

async fn produce_broadcasts(
    run: &Run,
    sent: &Arc<Sent>,
    expected: &Expected,
) -> anyhow::Result<()> {
    let total = (run.rate * run.seconds) as u64;
    let start = Instant::now();
    if run.bare {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/", run.server)).await?;
        for n in 0..total {
            let at = start + Duration::from_secs_f64(n as f64 / run.rate);
            tokio::time::sleep_until(at.into()).await;
            let id = Uuid::new_v4();
            sent.at
                .write()
                .expect("not poisoned")
                .insert(id, (at, Instant::now()));
            ws.send(Message::text(format!("b:{id}"))).await?;
            expected.lock().expect("not poisoned").push((None, id));
        }
        return Ok(());
    }
    let url = run
        .database_url
        .clone()
        .context("--database-url is required")?;
    let db = pg(&url).await?;
    for n in 0..total {
        let at = start + Duration::from_secs_f64(n as f64 / run.rate);
        tokio::time::sleep_until(at.into()).await;
        let id = broadcast_with(&db, sent, at).await?;
        expected.lock().expect("not poisoned").push((None, id));
    }
    Ok(())
}
