//! The delivery writer's cost per `SENT` row, measured against a real
//! PostgreSQL: herald's writer (`herald::db::deliveries::record_sent`, its
//! parents looked up once each, then one insert from arrays) by each of
//! its methods, a plain insert and one `on conflict do nothing`, side by
//! side with the insert that locked each parent `FOR KEY SHARE`, which
//! they replaced.
//!
//!     HERALD_BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!       cargo bench --bench delivery_writer -- [REPETITIONS]
//!
//! The URL's role must be allowed to create databases: the run (re)creates
//! `herald_bench_deliveries` next to the URL's database and leaves it there.
//! Each repetition writes, with each writer in turn (so all meet the same
//! table growth), a fresh broadcast's batch of 1,000 and of 10,000 pairs,
//! and a batch of 200 personal notifications (a pair each), the shape of a
//! unicast load's batches.
//! Reported per row, medians over the repetitions: the client's wall time
//! for the whole batch (transaction included), and PostgreSQL's execution
//! time of the batch's statements from `pg_stat_statements` when the server
//! loads it (`shared_preload_libraries = 'pg_stat_statements'`), and the CPU
//! time the writer's backend spent when PostgreSQL runs on this machine
//! (`/proc/PID/schedstat`; on a shared, busy machine the steadiest of the
//! three, since it leaves out time spent waiting for a core).

use std::time::Instant;

use anyhow::Context;
use herald::db::deliveries::Method;
use time::OffsetDateTime;
use uuid::Uuid;

const DATABASE: &str = "herald_bench_deliveries";
/// Batches: pairs, and whether each has a notification of its own.
const SHAPES: [(usize, bool); 3] = [(1_000, false), (10_000, false), (200, true)];
/// The statement herald's writer ran before it looked parents up once each,
/// kept here verbatim to compare against.
const UNNEST: &str = "
with batch as materialized (
  select x.notification_id, x.user_id, x.sent_at
    from unnest($1::uuid[], $2::uuid[], $3::timestamptz[]) as x(notification_id, user_id, sent_at)
),
notifications as materialized (
  select n.id from herald.notifications n
   where n.id in (select notification_id from batch)
     for key share
),
users as materialized (
  select u.id from herald.users u
   where u.id in (select user_id from batch)
     for key share
)
insert into herald.notification_deliveries (notification_id, user_id, channel, status, sent_at)
select b.notification_id, b.user_id, 'IN_APP', 'SENT', b.sent_at
  from batch b
  join notifications n on n.id = b.notification_id
  join users u on u.id = b.user_id
on conflict (notification_id, user_id, channel) do nothing";

type Sent = (Uuid, Uuid, OffsetDateTime);

#[derive(Clone, Copy, PartialEq)]
enum Writer {
    Unnest,
    Herald(Method),
}

impl Writer {
    fn name(self) -> &'static str {
        match self {
            Writer::Unnest => "insert locking each parent",
            Writer::Herald(Method::OnConflict) => "herald, on conflict do nothing",
            Writer::Herald(Method::Insert) => "herald, plain insert",
        }
    }

    async fn write(self, client: &mut deadpool_postgres::Client, batch: &[Sent]) -> u64 {
        match self {
            Writer::Herald(method) => {
                let recorded = herald::db::deliveries::record_sent(client, batch, method)
                    .await
                    .expect("herald's batch");
                assert_eq!(recorded.method, method, "fresh pairs take the method asked");
                recorded.rows
            }
            Writer::Unnest => {
                let statement = client.prepare_cached(UNNEST).await.expect("prepare");
                let notifications: Vec<Uuid> = batch.iter().map(|s| s.0).collect();
                let users: Vec<Uuid> = batch.iter().map(|s| s.1).collect();
                let times: Vec<OffsetDateTime> = batch.iter().map(|s| s.2).collect();
                client
                    .execute(&statement, &[&notifications, &users, &times])
                    .await
                    .expect("unnest batch")
            }
        }
    }
}

/// Wall, PostgreSQL and backend CPU µs per row of one batch.
struct Sample {
    wall: f64,
    postgres: Option<f64>,
    cpu: Option<f64>,
}

/// CPU time in ns the process `pid` has run, from `/proc/PID/schedstat`
/// (PostgreSQL on this machine only); `None` elsewhere.
fn cpu_ns(pid: i32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The first column of `sql`'s rows.
async fn column(
    client: &tokio_postgres::Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> anyhow::Result<Vec<Uuid>> {
    Ok(client
        .query(sql, params)
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect())
}

/// `url` with its database replaced by [`DATABASE`].
fn bench_url(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .context("HERALD_BENCH_DATABASE_URL must be a postgres:// URL")?;
    let (authority, query) = match rest.split_once('/') {
        Some((authority, path)) => (authority, path.split_once('?').map(|(_, q)| q)),
        None => (rest, None),
    };
    Ok(match query {
        Some(query) => format!("postgres://{authority}/{DATABASE}?{query}"),
        None => format!("postgres://{authority}/{DATABASE}"),
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("HERALD_BENCH_DATABASE_URL")
        .context("HERALD_BENCH_DATABASE_URL: the PostgreSQL to measure against")?;
    let repetitions: usize = match std::env::args().skip(1).find(|a| a != "--bench") {
        Some(n) => n.parse().context("REPETITIONS must be a number")?,
        None => 7,
    };
    let admin = herald::db::connect(&url, "herald-bench").await?;
    admin
        .batch_execute(&format!("drop database if exists {DATABASE} with (force)"))
        .await?;
    admin
        .batch_execute(&format!("create database {DATABASE}"))
        .await?;
    let url = bench_url(&url)?;
    herald::db::migrate(&url).await?;
    let setup = herald::db::connect(&url, "herald-bench").await?;
    let statements = setup
        .batch_execute("create extension if not exists pg_stat_statements")
        .await
        .is_ok()
        && setup
            .batch_execute("select pg_stat_statements_reset()")
            .await
            .is_ok();
    if !statements {
        eprintln!("pg_stat_statements is not loaded: wall time only");
    }
    let sector = Uuid::new_v4();
    let largest = SHAPES.iter().map(|&(size, _)| size).max().unwrap_or(0);
    let mut users: Vec<Uuid> = (0..largest).map(|_| Uuid::new_v4()).collect();
    users.sort_unstable();
    setup
        .execute(
            "insert into herald.users (id, name, sector_id)
             select id, 'bench user', $2 from unnest($1::uuid[]) as id",
            &[&users, &sector],
        )
        .await?;
    let pool = herald::db::pool(&url, 2)?;
    let mut client = pool.get().await?;
    let backend: i32 = client
        .query_one("select pg_backend_pid()", &[])
        .await?
        .get(0);
    if cpu_ns(backend).is_none() {
        eprintln!("the writer's backend is not on this machine: no CPU time");
    }

    let writers = [
        Writer::Unnest,
        Writer::Herald(Method::OnConflict),
        Writer::Herald(Method::Insert),
    ];
    let mut samples: Vec<Vec<Vec<Sample>>> = writers
        .iter()
        .map(|_| SHAPES.iter().map(|_| Vec::new()).collect())
        .collect();
    // The first round warms caches and prepared statements and is not counted.
    for round in 0..=repetitions {
        for (s, &(size, personal)) in SHAPES.iter().enumerate() {
            for (w, &writer) in writers.iter().enumerate() {
                let notifications: Vec<Uuid> = column(
                    &setup,
                    "insert into herald.notifications (sector_id, title)
                     select $1, 'bench' from generate_series(1, $2::int) returning id",
                    &[&sector, &(if personal { size as i32 } else { 1 })],
                )
                .await?;
                let now = OffsetDateTime::now_utc();
                let mut batch: Vec<Sent> = users[..size]
                    .iter()
                    .enumerate()
                    .map(|(i, &user)| (notifications[i % notifications.len()], user, now))
                    .collect();
                batch.sort_unstable_by_key(|&(notification, user, _)| (notification, user));
                if statements {
                    setup
                        .batch_execute("select pg_stat_statements_reset()")
                        .await?;
                }
                let cpu_before = cpu_ns(backend);
                let started = Instant::now();
                let written = writer.write(&mut client, &batch).await;
                let wall = started.elapsed().as_secs_f64() * 1e6 / size as f64;
                let cpu = cpu_before
                    .zip(cpu_ns(backend))
                    .map(|(before, after)| (after - before) as f64 / 1e3 / size as f64);
                anyhow::ensure!(
                    written == size as u64,
                    "{} wrote {written} of {size}",
                    writer.name()
                );
                let postgres = if statements {
                    let row = setup
                        .query_one(
                            "select coalesce(sum(total_exec_time), 0)::float8
                               from pg_stat_statements
                              where dbid = (select oid from pg_database where datname = current_database())
                                and query not ilike '%pg_stat_statements%'",
                            &[],
                        )
                        .await?;
                    Some(row.get::<_, f64>(0) * 1e3 / size as f64)
                } else {
                    None
                };
                if round > 0 {
                    samples[w][s].push(Sample {
                        wall,
                        postgres,
                        cpu,
                    });
                }
            }
        }
    }

    println!("delivery writer, µs per SENT row, medians of {repetitions} batches");
    println!("| writer | batch | PostgreSQL (pg_stat_statements) | backend CPU | wall (client) |");
    println!("|---|---|---|---|---|");
    for (w, writer) in writers.iter().enumerate() {
        for (s, (size, personal)) in SHAPES.iter().enumerate() {
            let batches = &samples[w][s];
            let wall = median(batches.iter().map(|b| b.wall).collect());
            let column = |value: fn(&Sample) -> Option<f64>| {
                batches
                    .iter()
                    .map(value)
                    .collect::<Option<Vec<f64>>>()
                    .map_or("n/a".to_owned(), |p| format!("{:.2}", median(p)))
            };
            let postgres = column(|b| b.postgres);
            let cpu = column(|b| b.cpu);
            let shape = if *personal { "personal" } else { "broadcast" };
            println!(
                "| {} | {size} {shape} | {postgres} | {cpu} | {wall:.2} |",
                writer.name()
            );
        }
    }
    Ok(())
}
