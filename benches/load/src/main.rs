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

mod cpu;
mod pgcost;
mod push;

const NS: &str = "/notifications";

#[derive(Parser)]
#[command(about = "herald's load generator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start-up: the size of the larger variant costs nothing.
#[allow(clippy::large_enum_variant)]
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
    /// Web Push: a push service, offline subscribers, and broadcasts to
    /// them (herald with push on); prints JSON results.
    Push(push::PushRun),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum Scenario {
    UnicastLatency,
    UnicastThroughput,
    Broadcast,
    Idle,
    Storm,
    /// Open-loop unicast: `--rows`-row transactions at each of `--rates`
    /// (rows per second) in turn, `--seconds` each, on the same sockets.
    UnicastCapacity,
    /// Single broadcasts on request: one per line read from stdin, each
    /// answered with a line of its fan-out time, so scripts/bench can
    /// interleave the samples of two servers; results on EOF.
    Fanout,
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
    /// Producer connections (each runs one transaction at a time).
    #[arg(long, default_value_t = 4)]
    producers: usize,
    /// Rows per second of each open-loop step, for unicast-capacity.
    #[arg(long, value_delimiter = ',')]
    rates: Vec<f64>,
    /// Single broadcasts a second apart before the sustained stream.
    #[arg(long, default_value_t = 5)]
    singles: usize,
    /// PostgreSQL's postmaster, for the cluster's CPU seconds.
    #[arg(long)]
    postgres_pid: Option<u32>,
    /// Measure PostgreSQL's time per statement group (pg_stat_statements,
    /// reset when production starts) and CPU seconds over the window.
    #[arg(long)]
    pg_stats: bool,
    /// The role the server connects as: its statements are the server's.
    #[arg(long, default_value = "herald")]
    server_role: String,
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
        Command::Push(run) => {
            let result = runtime.block_on(push::run(run))?;
            println!("{}", serde_json::to_string(&result)?);
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
                                let _ = tx.send(bare_frame(id));
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

/// The `notification:new` herald writes to each socket for one sector
/// broadcast, encoded once: the same fields in the same order, the load
/// generator's title, a timestamp and an event id as long as herald's. So
/// the floor moves the same bytes; only the work around them differs.
/// (herald also sends each socket its new `notification:count` in the same
/// write; that frame is herald's own work and is left out of the floor.)
fn bare_frame(id: &str) -> Message {
    let created_at = "2026-12-03T15:38:43.169943Z";
    Message::text(format!(
        "42{NS},[\"notification:new\",{{\"id\":\"{id}\",\"audience\":\"sector\",\
         \"kind\":\"general\",\"importance\":\"normal\",\"title\":\"bench broadcast\",\
         \"message\":\"\",\"actionUrl\":null,\"data\":{{}},\"createdAt\":\"{created_at}\",\
         \"expiresAt\":null,\"eventId\":\"1048576:1048577:/1048576:1048580:/1048577/1048576\"}}]"
    ))
}

// ---------------------------------------------------------------------------
// Clients.
// ---------------------------------------------------------------------------

/// When a notification was scheduled and when its COMMIT was sent; `step`
/// is the open-loop step it belongs to (0 outside unicast-capacity).
#[derive(Clone, Copy)]
struct Stamp {
    scheduled: Instant,
    committed: Instant,
    step: usize,
}

impl Stamp {
    fn now() -> Self {
        let now = Instant::now();
        Self {
            scheduled: now,
            committed: now,
            step: 0,
        }
    }
}

/// One producer transaction's timeline: where schedule→receipt time goes
/// before the COMMIT.
struct Transaction {
    step: usize,
    scheduled: Instant,
    /// When BEGIN was sent.
    began: Instant,
    /// When COMMIT was sent (the insert's answer had arrived).
    commit_sent: Instant,
    /// When COMMIT was answered.
    commit_acked: Instant,
    /// The producer slept until `scheduled` (it was not behind): lateness
    /// of such a transaction is timer and scheduler delay, not backlog.
    waited: bool,
}

#[derive(Default)]
struct Sent {
    at: RwLock<HashMap<Uuid, Stamp>>,
    transactions: Mutex<Vec<Transaction>>,
    /// Per step, how long opening and preparing the producers' connections
    /// took (before the schedule's first slot is set).
    connecting: Mutex<Vec<(usize, Duration)>>,
}

/// What one socket saw.
struct Seen {
    ids: HashMap<Uuid, u32>,
    /// The server closed the socket before the run ended (e.g. evicted it).
    closed_early: bool,
    /// COMMIT→receipt and schedule→receipt (µs), per step.
    latency: Vec<(Histogram<u64>, Histogram<u64>)>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds")
}

impl Seen {
    fn new() -> Self {
        Self {
            ids: HashMap::new(),
            closed_early: false,
            latency: Vec::new(),
        }
    }

    fn record(&mut self, stamp: &Stamp, now: Instant) {
        while self.latency.len() <= stamp.step {
            self.latency.push((histogram(), histogram()));
        }
        let (commit, schedule) = &mut self.latency[stamp.step];
        let us = |since: Instant| now.saturating_duration_since(since).as_micros().max(1) as u64;
        let _ = commit.record(us(stamp.committed));
        let _ = schedule.record(us(stamp.scheduled));
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
                if let Some(stamp) = sent.at.read().expect("not poisoned").get(&id) {
                    seen.record(stamp, now);
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
    // The measured window opens: PostgreSQL's statements and CPU from here.
    let window_opened = match (&db, run.pg_stats) {
        (Some(db), true) => {
            pgcost::reset(db).await?;
            Some(cpu::read(run.server_pid, run.postgres_pid))
        }
        _ => None,
    };
    let origin = Instant::now();
    let mut produce_started = Instant::now();
    let mut fanout_ids = Vec::new();
    // Open-loop steps: rows per second asked, and how long producing took.
    let mut steps: Vec<(f64, f64)> = Vec::new();
    let unicast = |rows, rate, step| Production {
        rows,
        rate,
        seconds: run.seconds,
        producers: run.producers,
        step,
    };
    match run.scenario {
        Scenario::UnicastLatency => {
            produce_unicast(
                &run,
                &users,
                &sent,
                &expected,
                unicast(1, Some(run.rate), 0),
            )
            .await?
        }
        Scenario::UnicastThroughput => {
            produce_unicast(&run, &users, &sent, &expected, unicast(run.rows, None, 0)).await?
        }
        Scenario::UnicastCapacity => {
            anyhow::ensure!(!run.rates.is_empty(), "unicast-capacity needs --rates");
            for (step, &rows_per_second) in run.rates.iter().enumerate() {
                anyhow::ensure!(
                    rows_per_second.is_finite() && rows_per_second > 0.0,
                    "--rates must be positive rows per second, not {rows_per_second}"
                );
                let began = Instant::now();
                let rate = rows_per_second / run.rows.max(1) as f64;
                produce_unicast(
                    &run,
                    &users,
                    &sent,
                    &expected,
                    unicast(run.rows, Some(rate), step),
                )
                .await?;
                steps.push((rows_per_second, began.elapsed().as_secs_f64()));
                // This step's pushes arrive before the next step starts.
                let produced = expected.lock().expect("not poisoned").len() as u64;
                settle(&arrivals, produced).await;
            }
        }
        Scenario::Broadcast => {
            // Single broadcasts one second apart: the fan-out time.
            for _ in 0..run.singles {
                let id = broadcast_one(&run, &sent).await?;
                expected.lock().expect("not poisoned").push((None, id));
                fanout_ids.push(id);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            // Then a sustained stream at the given rate; rates count from here.
            produce_started = Instant::now();
            produce_broadcasts(&run, &sent, &expected).await?;
        }
        Scenario::Fanout => {
            fanout_ids = fanout_on_request(&run, &sent, &expected, &fanout, connected).await?;
        }
        Scenario::Idle | Scenario::Storm => unreachable!("returned above"),
    }
    let produce_seconds = produce_started.elapsed().as_secs_f64();
    // The server's SENT records, watched from now on (alongside the drain).
    let records = match &run.database_url {
        Some(url)
            if !run.bare
                && matches!(
                    run.scenario,
                    Scenario::UnicastLatency | Scenario::UnicastThroughput | Scenario::Broadcast
                ) =>
        {
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

    let expected = expected.lock().expect("not poisoned").clone();
    let step_of = {
        let at = sent.at.read().expect("not poisoned");
        move |id: &Uuid| at.get(id).map_or(0, |stamp| stamp.step)
    };
    // Per socket index, the ids addressed to it alone; and the broadcasts.
    let mut addressed: HashMap<usize, Vec<(usize, Uuid)>> = HashMap::new();
    let mut everyone: Vec<(usize, Uuid)> = Vec::new();
    for (target, id) in &expected {
        let entry = (step_of(id), *id);
        match target {
            Some(index) => addressed.entry(*index).or_default().push(entry),
            None => everyone.push(entry),
        }
    }
    drop(step_of);
    let step_count = steps.len().max(1);
    // Per step: COMMIT→receipt, schedule→receipt, lost, duplicated, delivered.
    type Tally = (Histogram<u64>, Histogram<u64>, u64, u64, u64);
    let mut per_step: Vec<Tally> = (0..step_count)
        .map(|_| (histogram(), histogram(), 0, 0, 0))
        .collect();
    let mut expected_total = 0u64;
    let mut closed_early = 0;
    for (index, reader) in readers {
        let seen = reader.await?;
        closed_early += usize::from(seen.closed_early);
        for (step, (commit, schedule)) in seen.latency.iter().enumerate() {
            if let Some(into) = per_step.get_mut(step) {
                into.0.add(commit)?;
                into.1.add(schedule)?;
            }
        }
        let mine = addressed.get(&index).map(Vec::as_slice).unwrap_or(&[]);
        for (step, id) in mine.iter().chain(everyone.iter()) {
            expected_total += 1;
            let Some(into) = per_step.get_mut(*step) else {
                continue;
            };
            match seen.ids.get(id) {
                None => into.2 += 1,
                Some(&n) => {
                    into.4 += 1;
                    into.3 += u64::from(n.saturating_sub(1));
                }
            }
        }
    }
    let mut commit = histogram();
    let mut schedule = histogram();
    let (mut lost, mut duplicates, mut delivered) = (0u64, 0u64, 0u64);
    for (c, s, l, d, n) in &per_step {
        commit.add(c)?;
        schedule.add(s)?;
        lost += l;
        duplicates += d;
        delivered += n;
    }
    if run.scenario == Scenario::UnicastCapacity {
        result["steps"] = json!(
            steps
                .iter()
                .enumerate()
                .map(|(step, &(asked, seconds))| {
                    let (c, _, l, d, n) = &per_step[step];
                    let rows = l + n;
                    json!({
                        "rows_per_second_asked": asked,
                        "rows_per_second": rows as f64 / seconds.max(0.001),
                        "produce_seconds": seconds,
                        "commit_to_receipt": percentiles(c),
                        "lost": l,
                        "duplicates": d,
                        "deliveries": n,
                        "producer": producer_timeline(&sent, step, origin),
                    })
                })
                .collect::<Vec<_>>()
        );
    }
    // Read under the locks, released before the awaits below.
    let (fanout_ms, last_arrival, window, sustained_delivered) = {
        let sent_at = sent.at.read().expect("not poisoned");
        let last = fanout.last.lock().expect("not poisoned");
        let fanout_ms: Vec<f64> = fanout_ids
            .iter()
            .filter_map(|id| {
                Some(
                    last.get(id)?
                        .1
                        .saturating_duration_since(sent_at.get(id)?.committed)
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
        (fanout_ms, last_arrival, window, sustained_delivered)
    };
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
    if matches!(
        run.scenario,
        Scenario::UnicastLatency | Scenario::UnicastThroughput
    ) {
        result["producer"] = producer_timeline(&sent, 0, origin);
    }
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
    // The window closes once the records are written: what the server made
    // PostgreSQL do for these deliveries, and the CPU it all took.
    if let (Some(opened), Some(db)) = (window_opened, &db) {
        let closed = cpu::read(run.server_pid, run.postgres_pid);
        let pids: Vec<u32> = db
            .query(
                "select pid from pg_stat_activity where usename = $1 and datname = current_database()",
                &[&run.server_role],
            )
            .await?
            .iter()
            .filter_map(|row| u32::try_from(row.get::<_, i32>(0)).ok())
            .collect();
        result["cpu"] = opened.until(&closed, &pids);
        result["window_seconds"] = json!(origin.elapsed().as_secs_f64());
        let statements = pgcost::read(db, &run.server_role).await?;
        result["pg_cost"] = pgcost::summarize(&statements, delivered);
    }
    Ok(result)
}

/// Lets pushes arrive until `want` have (or none came for two seconds, at
/// most a minute): one open-loop step's tail before the next begins.
async fn settle(arrivals: &AtomicU64, want: u64) {
    let started = Instant::now();
    let mut progress = (arrivals.load(Ordering::Relaxed), Instant::now());
    while started.elapsed() < Duration::from_secs(60) {
        let now = arrivals.load(Ordering::Relaxed);
        if now >= want {
            return;
        }
        if now != progress.0 {
            progress = (now, Instant::now());
        } else if progress.1.elapsed() > Duration::from_secs(2) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One broadcast per line on stdin, each answered on stdout with its fan-out
/// time (COMMIT, or the bare server's trigger, to the last socket's receipt)
/// once every socket has it or 15 s passed. Returns the broadcasts' ids.
async fn fanout_on_request(
    run: &Run,
    sent: &Arc<Sent>,
    expected: &Expected,
    fanout: &Fanout,
    connected: usize,
) -> anyhow::Result<Vec<Uuid>> {
    use tokio::io::AsyncBufReadExt;
    println!("{}", json!({"ready": true, "connected": connected}));
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut ids = Vec::new();
    while lines.next_line().await?.is_some() {
        let id = broadcast_one(run, sent).await?;
        expected.lock().expect("not poisoned").push((None, id));
        ids.push(id);
        let asked = Instant::now();
        let received = loop {
            let received = fanout
                .last
                .lock()
                .expect("not poisoned")
                .get(&id)
                .map_or(0, |(n, _)| *n);
            if received >= connected || asked.elapsed() > Duration::from_secs(15) {
                break received;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let committed = sent
            .at
            .read()
            .expect("not poisoned")
            .get(&id)
            .map(|s| s.committed);
        let last = fanout
            .last
            .lock()
            .expect("not poisoned")
            .get(&id)
            .map(|(_, at)| *at);
        let ms = committed
            .zip(last)
            .map(|(c, l)| l.saturating_duration_since(c).as_secs_f64() * 1000.0);
        println!("{}", json!({"sample_ms": ms, "received": received}));
    }
    Ok(ids)
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

/// One spell of unicast production.
#[derive(Clone, Copy)]
struct Production {
    /// Rows per transaction.
    rows: usize,
    /// Transactions per second (open loop), or None: as fast as they go.
    rate: Option<f64>,
    seconds: f64,
    /// Connections, each running one transaction at a time.
    producers: usize,
    step: usize,
}

/// Inserts `rows`-row transactions for consecutive users, paced at `rate`
/// transactions per second (open loop) or as fast as they go. Paced, the
/// connections share one schedule: each takes the next slot and sleeps
/// until it, so a transaction stuck on one connection delays only its own
/// slot while the others keep to the schedule.
async fn produce_unicast(
    run: &Run,
    users: &[Uuid],
    sent: &Arc<Sent>,
    expected: &Expected,
    production: Production,
) -> anyhow::Result<()> {
    let Production {
        rows,
        rate,
        seconds,
        producers,
        step,
    } = production;
    let url = run
        .database_url
        .clone()
        .context("--database-url is required")?;
    // Connections first, so connecting is not part of the schedule.
    let connecting = Instant::now();
    let mut connections = Vec::new();
    for _ in 0..producers.max(1) {
        let db = pg(&url).await?;
        let insert = db
            .prepare("insert into herald.notifications (user_id, title) select u, 'bench' from unnest($1::uuid[]) u returning id, user_id")
            .await?;
        connections.push((db, insert));
    }
    sent.connecting
        .lock()
        .expect("not poisoned")
        .push((step, connecting.elapsed()));
    let start = Instant::now() + Duration::from_millis(100);
    let deadline = start + Duration::from_secs_f64(seconds);
    let total = rate.map(|r| (r * seconds) as u64);
    let next = Arc::new(AtomicU64::new(0));
    let users = Arc::new(users.to_vec());
    let positions: Arc<HashMap<Uuid, usize>> =
        Arc::new(users.iter().enumerate().map(|(i, u)| (*u, i)).collect());
    let mut tasks = Vec::new();
    for (db, insert) in connections {
        let (sent, expected, next, users) =
            (sent.clone(), expected.clone(), next.clone(), users.clone());
        let positions = positions.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let (scheduled, waited) = match (rate, total) {
                    (Some(rate), Some(total)) => {
                        if n >= total {
                            break;
                        }
                        let at = start + Duration::from_secs_f64(n as f64 / rate);
                        let waited = Instant::now() < at;
                        tokio::time::sleep_until(at.into()).await;
                        (at, waited)
                    }
                    _ => {
                        let now = Instant::now();
                        if now >= deadline {
                            break;
                        }
                        (now, true)
                    }
                };
                let first = (n as usize * rows) % users.len();
                let batch: Vec<Uuid> = (0..rows)
                    .map(|i| users[(first + i) % users.len()])
                    .collect();
                let began = Instant::now();
                db.batch_execute("begin").await?;
                let inserted = db.query(&insert, &[&batch]).await?;
                let committed = Instant::now();
                {
                    let mut at = sent.at.write().expect("not poisoned");
                    let mut exp = expected.lock().expect("not poisoned");
                    for row in &inserted {
                        let id: Uuid = row.get(0);
                        let user: Uuid = row.get(1);
                        at.insert(
                            id,
                            Stamp {
                                scheduled,
                                committed,
                                step,
                            },
                        );
                        exp.push((positions.get(&user).copied(), id));
                    }
                }
                db.batch_execute("commit").await?;
                sent.transactions
                    .lock()
                    .expect("not poisoned")
                    .push(Transaction {
                        step,
                        scheduled,
                        began,
                        commit_sent: committed,
                        commit_acked: Instant::now(),
                        waited,
                    });
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Where the producer's transactions of `step` spent their time before
/// COMMIT (µs percentiles): `lag` from the scheduled slot to BEGIN (timer
/// and scheduler delay when the producer was idle, `timer_lag`; backlog
/// otherwise), `insert` from BEGIN to COMMIT sent (PostgreSQL's answer to
/// BEGIN and the INSERT), `commit` COMMIT's round trip; and the slowest
/// few, by when in the run they were scheduled.
fn producer_timeline(sent: &Sent, step: usize, origin: Instant) -> Value {
    let transactions = sent.transactions.lock().expect("not poisoned");
    let mine: Vec<&Transaction> = transactions.iter().filter(|t| t.step == step).collect();
    if mine.is_empty() {
        return Value::Null;
    }
    let (mut lag, mut timer, mut insert, mut commit) =
        (histogram(), histogram(), histogram(), histogram());
    let us = |a: Instant, b: Instant| b.saturating_duration_since(a).as_micros().max(1) as u64;
    for t in &mine {
        let _ = lag.record(us(t.scheduled, t.began));
        if t.waited {
            let _ = timer.record(us(t.scheduled, t.began));
        }
        let _ = insert.record(us(t.began, t.commit_sent));
        let _ = commit.record(us(t.commit_sent, t.commit_acked));
    }
    let mut slowest: Vec<&&Transaction> = mine.iter().collect();
    slowest
        .sort_by_key(|t| std::cmp::Reverse(t.commit_sent.saturating_duration_since(t.scheduled)));
    let ms = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64() * 1000.0;
    let connect_ms: Vec<f64> = sent
        .connecting
        .lock()
        .expect("not poisoned")
        .iter()
        .filter(|(s, _)| *s == step)
        .map(|(_, took)| took.as_secs_f64() * 1000.0)
        .collect();
    json!({
        "connect_ms": connect_ms,
        "transactions": mine.len(),
        "behind": mine.iter().filter(|t| !t.waited).count(),
        "lag": percentiles(&lag),
        "timer_lag": percentiles(&timer),
        "insert": percentiles(&insert),
        "commit": percentiles(&commit),
        "slowest": slowest.iter().take(5).map(|t| json!({
            "at_s": t.scheduled.saturating_duration_since(origin).as_secs_f64(),
            "lag_ms": ms(t.scheduled, t.began),
            "insert_ms": ms(t.began, t.commit_sent),
            "commit_ms": ms(t.commit_sent, t.commit_acked),
            "waited": t.waited,
        })).collect::<Vec<_>>(),
    })
}

/// One sector broadcast (or, against the bare server, one trigger); its id.
async fn broadcast_one(run: &Run, sent: &Arc<Sent>) -> anyhow::Result<Uuid> {
    if run.bare {
        let id = Uuid::new_v4();
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/", run.server)).await?;
        sent.at
            .write()
            .expect("not poisoned")
            .insert(id, Stamp::now());
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
    sent.at.write().expect("not poisoned").insert(
        id,
        Stamp {
            scheduled,
            committed: Instant::now(),
            step: 0,
        },
    );
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
            sent.at.write().expect("not poisoned").insert(
                id,
                Stamp {
                    scheduled: at,
                    committed: Instant::now(),
                    step: 0,
                },
            );
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
