//! The database: the query pool, single connections (migrations, LISTEN),
//! the embedded migrations, and one function per query in the submodules.
//!
//! SQL lives in `sql/` (queries) and `migrations/` (schema); this module
//! never assembles SQL from strings.

pub mod deliveries;
pub mod event;
pub mod events;
pub mod inbox;
pub mod notifications;
pub mod position;
pub mod preferences;
pub mod push;
pub mod snapshot;
pub mod snoozes;
pub mod users;

use anyhow::Context;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, RecyclingMethod};
use tokio_postgres::NoTls;

pub use snapshot::Snapshot;

pub use deadpool_postgres::Pool;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// How long opening any of herald's connections may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What a connection is called in `pg_stat_activity`.
#[derive(Debug, Clone, Copy)]
pub enum Name {
    /// The URL's `application_name`, else this one: the query pool, which an
    /// operator may want to name.
    Default(&'static str),
    /// This one whatever the URL says: connections with one job, which
    /// operators (and the tests) find by name.
    Fixed(&'static str),
}

/// The settings of every connection herald opens: its name, JIT off, and a
/// connect timeout (`connect_timeout` overrides the 10 s default).
pub fn config(
    url: &str,
    name: Name,
    connect_timeout: Option<std::time::Duration>,
) -> anyhow::Result<tokio_postgres::Config> {
    let mut config: tokio_postgres::Config = url.parse().context("invalid PostgreSQL URL")?;
    match name {
        Name::Default(name) if config.get_application_name().is_none() => {
            config.application_name(name);
        }
        Name::Default(_) => {}
        Name::Fixed(name) => {
            config.application_name(name);
        }
    }
    // Small OLTP queries only: JIT compilation would cost more than it saves
    // (and kicks in on misleading estimates after bulk inserts).
    without_jit(&mut config);
    config.connect_timeout(connect_timeout.unwrap_or(CONNECT_TIMEOUT));
    config.keepalives_idle(std::time::Duration::from_secs(30));
    Ok(config)
}

/// A pool of query connections.
pub fn pool(url: &str, max_size: usize) -> anyhow::Result<Pool> {
    let config = config(url, Name::Default("herald"), None).context("DATABASE_URL")?;
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(max_size)
        .wait_timeout(Some(std::time::Duration::from_secs(10)))
        .create_timeout(Some(std::time::Duration::from_secs(10)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .context("building the database pool")
}

/// Turns JIT off for a connection, keeping any options the URL carries.
fn without_jit(config: &mut tokio_postgres::Config) {
    let options = match config.get_options() {
        Some(existing) => format!("{existing} -c jit=off"),
        None => "-c jit=off".to_owned(),
    };
    config.options(options);
}

/// One connection of its own, driven by a spawned task; for work that must
/// not share a pooled connection (migrations).
pub async fn connect(url: &str, name: &'static str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = config(url, Name::Fixed(name), None)?
        .connect(NoTls)
        .await
        .context("connecting to PostgreSQL")?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(error = %error, "database connection closed");
        }
    });
    Ok(client)
}

/// Applies the embedded migrations that the database has not seen yet.
///
/// Several instances may start at once: an advisory lock lets one migrate
/// while the others wait, then find nothing left to do.
pub async fn migrate(url: &str) -> anyhow::Result<usize> {
    const MIGRATION_LOCK: i64 = 0x6865_7261_6c64; // "herald"
    let mut client = connect(url, "herald-migrate").await?;
    // Re-running finds the schema there already; that notice is noise.
    client
        .batch_execute("set client_min_messages = warning")
        .await?;
    client
        .execute("select pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = async {
        client
            .batch_execute("create schema if not exists herald")
            .await?;
        let report = embedded::migrations::runner()
            .set_migration_table_name("herald.schema_migrations")
            .run_async(&mut client)
            .await
            .context("applying migrations")?;
        anyhow::Ok(report.applied_migrations().len())
    }
    .await;
    client
        .execute("select pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await?;
    let applied = result?;
    if applied > 0 {
        tracing::info!(migrations.applied = applied, "database migrated");
    }
    Ok(applied)
}

/// The snapshot `client`'s next statement sees; the first statement of a
/// repeatable-read transaction fixes it for the whole transaction.
#[tracing::instrument(skip_all)]
pub async fn current_snapshot(
    client: &impl tokio_postgres::GenericClient,
) -> anyhow::Result<Snapshot> {
    let row = client
        .query_one("select pg_current_snapshot()::text as snapshot", &[])
        .await?;
    snapshot_column(&row, "snapshot")
}

/// A read-only repeatable-read transaction and the snapshot it sees: every
/// read in it agrees with that one snapshot, which positions and the tail
/// speak in.
pub async fn snapshot_transaction(
    client: &mut deadpool_postgres::Object,
) -> anyhow::Result<(deadpool_postgres::Transaction<'_>, Snapshot)> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    // The first query fixes the transaction's snapshot.
    let snapshot = current_snapshot(&*tx).await?;
    Ok((tx, snapshot))
}

/// A `pg_snapshot` column read as text: the one place herald parses one.
pub fn snapshot_column(row: &tokio_postgres::Row, column: &str) -> anyhow::Result<Snapshot> {
    let text: String = row.try_get(column)?;
    text.parse()
        .with_context(|| format!("reading pg_current_snapshot() {text:?}"))
}

/// Whether a pooled connection answers; `/health/ready` asks.
#[tracing::instrument(skip_all)]
pub async fn ping(client: &impl GenericClient) -> Result<(), tokio_postgres::Error> {
    client.batch_execute("select 1").await
}

/// The constraint a failed statement broke, when it broke one.
pub fn constraint_of(error: &tokio_postgres::Error) -> Option<&str> {
    error.as_db_error().and_then(|db| db.constraint())
}
