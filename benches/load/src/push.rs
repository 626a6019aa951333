//! The Web Push scenario: a push service on loopback, as many offline
//! subscribers as asked, and broadcasts to them while another process
//! measures socket delivery (S1) on the same herald.
//!
//! Every subscriber is a user of a sector of their own with one
//! subscription whose keys are made here as a browser makes them; the push
//! service answers 201 to each push, counts it per subscriber (so loss and
//! duplicates are measured), and decrypts a sample with the subscriber's
//! private key to check that what arrives is the broadcast.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Parser;
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use uuid::Uuid;

/// The subscribers' sector: no socket of the latency scenario is in it.
const PUSH_SECTOR: Uuid = Uuid::from_u128(0x5e00_0000_0000_4000_8000_0000_0000_0b05);
/// One subscriber in this many has its pushes decrypted and checked.
const SAMPLE_EVERY: usize = 50;

#[derive(Parser, Clone)]
pub struct PushRun {
    #[arg(long)]
    database_url: String,
    /// Offline users, one subscription each.
    #[arg(long, default_value_t = 10_000)]
    subscribers: usize,
    /// Broadcasts to all of them, one after another.
    #[arg(long, default_value_t = 3)]
    broadcasts: usize,
    /// Created once the subscriptions are stored and the service listens.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Seconds between ready and the first broadcast.
    #[arg(long, default_value_t = 0.0)]
    after_seconds: f64,
}

/// The push service's state, shared by its connections.
struct Service {
    /// Pushes per subscriber in the current round.
    counts: Vec<AtomicU32>,
    /// Arrivals in the current round, and when the first and last came.
    arrivals: AtomicU64,
    first: Mutex<Option<Instant>>,
    last: Mutex<Option<Instant>>,
    /// The sampled subscribers' keys, by index.
    keys: HashMap<usize, (p256::SecretKey, [u8; 16])>,
    /// The notification the round is about: what a sample must decrypt to.
    expected: Mutex<Option<Uuid>>,
    verified: AtomicU64,
    bad: Mutex<Vec<String>>,
}

pub async fn run(run: PushRun) -> anyhow::Result<Value> {
    let db = super::pg(&run.database_url).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;

    let mut keys = HashMap::new();
    let mut endpoints = Vec::with_capacity(run.subscribers);
    let mut p256dhs = Vec::with_capacity(run.subscribers);
    let mut auths = Vec::with_capacity(run.subscribers);
    for index in 0..run.subscribers {
        let secret = p256::SecretKey::random(&mut rand_core::OsRng);
        let mut auth = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut auth);
        endpoints.push(format!("http://{address}/push/{index}"));
        p256dhs
            .push(URL_SAFE_NO_PAD.encode(secret.public_key().to_encoded_point(false).as_bytes()));
        auths.push(URL_SAFE_NO_PAD.encode(auth));
        if index % SAMPLE_EVERY == 0 {
            keys.insert(index, (secret, auth));
        }
    }
    db.execute(
        "insert into herald.users (id, name, sector_id)
         select gen_random_uuid(), 'subscriber ' || i, $2 from generate_series(1, $1::int) i",
        &[&(run.subscribers as i32), &PUSH_SECTOR],
    )
    .await?;
    db.execute(
        "insert into herald.push_subscriptions (user_id, endpoint, p256dh, auth)
         select u.id, s.endpoint, s.p256dh, s.auth
           from (select id, row_number() over (order by id) as n
                   from herald.users where sector_id = $4) u
           join unnest($1::text[], $2::text[], $3::text[]) with ordinality
                  as s(endpoint, p256dh, auth, n) using (n)",
        &[&endpoints, &p256dhs, &auths, &PUSH_SECTOR],
    )
    .await?;

    let service = Arc::new(Service {
        counts: (0..run.subscribers).map(|_| AtomicU32::new(0)).collect(),
        arrivals: AtomicU64::new(0),
        first: Mutex::default(),
        last: Mutex::default(),
        keys,
        expected: Mutex::default(),
        verified: AtomicU64::new(0),
        bad: Mutex::default(),
    });
    tokio::spawn(serve(listener, service.clone()));
    if let Some(path) = &run.ready_file {
        std::fs::write(path, address.to_string()).context("writing --ready-file")?;
    }
    tokio::time::sleep(Duration::from_secs_f64(run.after_seconds.max(0.0))).await;

    let mut rounds = Vec::new();
    for _ in 0..run.broadcasts {
        for count in &service.counts {
            count.store(0, Ordering::Relaxed);
        }
        service.arrivals.store(0, Ordering::Relaxed);
        *service.first.lock().expect("not poisoned") = None;
        *service.last.lock().expect("not poisoned") = None;
        let id: Uuid = db
            .query_one(
                "insert into herald.notifications (sector_id, title, message)
                 values ($1, 'bench push', 'to every subscriber') returning id",
                &[&PUSH_SECTOR],
            )
            .await?
            .get(0);
        let committed = Instant::now();
        *service.expected.lock().expect("not poisoned") = Some(id);
        let want = run.subscribers as u64;
        let deadline = committed + Duration::from_secs(180);
        while service.arrivals.load(Ordering::Relaxed) < want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Late duplicates would arrive within herald's next claims.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let first = service
            .first
            .lock()
            .expect("not poisoned")
            .unwrap_or(committed);
        let last = service
            .last
            .lock()
            .expect("not poisoned")
            .unwrap_or(committed);
        let (mut lost, mut duplicated) = (0u64, 0u64);
        for count in &service.counts {
            match count.load(Ordering::Relaxed) {
                0 => lost += 1,
                n => duplicated += u64::from(n - 1),
            }
        }
        let spread = (last - first).as_secs_f64();
        rounds.push(json!({
            "notification": id,
            "pushes": service.arrivals.load(Ordering::Relaxed),
            "lost": lost,
            "duplicated": duplicated,
            "commit_to_first_seconds": (first - committed).as_secs_f64(),
            "first_to_last_seconds": spread,
            "commit_to_last_seconds": (last - committed).as_secs_f64(),
            "pushes_per_second": if spread > 0.0 { (want - lost) as f64 / spread } else { 0.0 },
        }));
    }
    let bad = service.bad.lock().expect("not poisoned").clone();
    Ok(json!({
        "scenario": "Push",
        "target": "herald",
        "subscribers": run.subscribers,
        "push_service": address.to_string(),
        "rounds": rounds,
        "sampled_and_decrypted": service.verified.load(Ordering::Relaxed),
        "sample_failures": bad.len(),
        "sample_failure_examples": bad.iter().take(3).collect::<Vec<_>>(),
    }))
}

async fn serve(listener: tokio::net::TcpListener, service: Arc<Service>) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(connection(stream, service.clone()));
    }
}

/// One keep-alive HTTP/1.1 connection from herald: POSTs, each answered 201.
async fn connection(stream: tokio::net::TcpStream, service: Arc<Service>) -> anyhow::Result<()> {
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut line = String::new();
    loop {
        line.clear();
        if read.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let path = line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let mut length = 0usize;
        loop {
            line.clear();
            if read.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().context("content-length")?;
            }
        }
        let mut body = vec![0u8; length.min(8192)];
        read.read_exact(&mut body).await?;
        receive(&service, &path, body);
        write
            .write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n")
            .await?;
    }
}

fn receive(service: &Service, path: &str, body: Vec<u8>) {
    let Some(index) = path
        .strip_prefix("/push/")
        .and_then(|i| i.parse::<usize>().ok())
        .filter(|i| *i < service.counts.len())
    else {
        service
            .bad
            .lock()
            .expect("not poisoned")
            .push(format!("no subscriber at {path}"));
        return;
    };
    let now = Instant::now();
    service
        .first
        .lock()
        .expect("not poisoned")
        .get_or_insert(now);
    *service.last.lock().expect("not poisoned") = Some(now);
    service.counts[index].fetch_add(1, Ordering::Relaxed);
    service.arrivals.fetch_add(1, Ordering::Relaxed);
    let Some((secret, auth)) = service.keys.get(&index) else {
        return;
    };
    let expected = *service.expected.lock().expect("not poisoned");
    let checked = web_push_native::decrypt(body, secret, &web_push_native::Auth::from(*auth))
        .map_err(|e| format!("does not decrypt: {e}"))
        .and_then(|plain| serde_json::from_slice::<Value>(&plain).map_err(|e| e.to_string()))
        .and_then(|push| {
            let id = push["notification"]["id"].as_str().map(str::to_owned);
            if push["type"] == "notification" && id == expected.map(|e| e.to_string()) {
                Ok(())
            } else {
                Err(format!("unexpected push {push}"))
            }
        });
    match checked {
        Ok(()) => {
            service.verified.fetch_add(1, Ordering::Relaxed);
        }
        Err(why) => service
            .bad
            .lock()
            .expect("not poisoned")
            .push(format!("{index}: {why}")),
    }
}
