//! The database: the query pool, single connections (migrations, LISTEN),
//! the embedded migrations, and one function per query in the submodules.
//!
//! SQL lives in `sql/` (queries) and `migrations/` (schema); this module
//! never assembles SQL from strings.

pub mod deliveries;
pub mod events;
pub mod inbox;
pub mod notifications;
pub mod users;

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod};
use tokio_postgres::NoTls;

pub use deadpool_postgres::Pool;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// A pool of query connections.
pub fn pool(url: &str, max_size: usize) -> anyhow::Result<Pool> {
    let mut config: tokio_postgres::Config = url.parse().context("invalid DATABASE_URL")?;
    if config.get_application_name().is_none() {
        config.application_name("herald");
    }
    // Small OLTP queries only: JIT compilation would cost more than it saves
    // (and kicks in on misleading estimates after bulk inserts).
    without_jit(&mut config);
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
pub fn without_jit(config: &mut tokio_postgres::Config) {
    let options = match config.get_options() {
        Some(existing) => format!("{existing} -c jit=off"),
        None => "-c jit=off".to_owned(),
    };
    config.options(options);
}

/// One connection of its own, driven by a spawned task; for work that must
/// not share a pooled connection (migrations).
pub async fn connect(url: &str, application_name: &str) -> anyhow::Result<tokio_postgres::Client> {
    let mut config: tokio_postgres::Config = url.parse().context("invalid database URL")?;
    config.application_name(application_name);
    config.connect_timeout(std::time::Duration::from_secs(10));
    let (client, connection) = config
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

/// The constraint a failed statement broke, when it broke one.
pub fn constraint_of(error: &tokio_postgres::Error) -> Option<&str> {
    error.as_db_error().and_then(|db| db.constraint())
}
