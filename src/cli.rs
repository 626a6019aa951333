//! The command line (docs/reference.md, "Command line"): `serve`, `migrate`,
//! `token`, `send`, `prune`.

use std::net::SocketAddr;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use uuid::Uuid;

use crate::config::{self, DatabaseArgs, JwtArgs, ServeArgs};
use crate::db::{self, notifications::NewNotification};

/// herald: PostgreSQL notifications, pushed over Socket.IO.
#[derive(Debug, Parser)]
#[command(name = "herald", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Migrate (unless --no-migrate), then serve HTTP and Socket.IO until SIGINT/SIGTERM.
    Serve(Box<ServeArgs>),
    /// Apply the embedded migrations and exit.
    Migrate(DatabaseArgs),
    /// Print a signed JWT for a user.
    Token(TokenArgs),
    /// Insert one notification and print its id.
    Send(SendArgs),
    /// Delete events past retention and, optionally, old read notifications.
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Events older than this go.
    #[arg(long, env = "HERALD_EVENT_RETENTION", default_value = "7d")]
    pub event_retention: String,
    /// Also delete notifications read, retracted or expired longer ago than
    /// this, with their receipts and delivery rows.
    #[arg(long)]
    pub read_older_than: Option<String>,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The user's id (the token's `sub`).
    #[arg(long)]
    pub user: Uuid,
    /// How long the token is good for.
    #[arg(long, default_value = "1h")]
    pub ttl: String,
    #[command(flatten)]
    pub jwt: JwtArgs,
}

#[derive(Debug, Args)]
#[group(id = "target", required = true, multiple = false)]
pub struct Target {
    /// One user.
    #[arg(long)]
    pub user: Option<Uuid>,
    /// Everyone in a sector.
    #[arg(long)]
    pub sector: Option<Uuid>,
    /// Every admin.
    #[arg(long)]
    pub admin: bool,
    /// Everyone.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub target: Target,
    #[arg(long)]
    pub title: String,
    #[arg(long)]
    pub message: Option<String>,
    /// The producer's category, e.g. order.shipped.
    #[arg(long)]
    pub kind: Option<String>,
    /// low, normal, high or urgent.
    #[arg(long)]
    pub importance: Option<String>,
    #[arg(long)]
    pub action_url: Option<String>,
    /// A JSON object of extra data.
    #[arg(long)]
    pub data: Option<String>,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    crate::telemetry::init()?;
    match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::Migrate(args) => {
            let applied = db::migrate(&args.url()?).await?;
            println!("{applied} migration(s) applied");
            Ok(())
        }
        Command::Token(args) => {
            let ttl = config::parse_duration("--ttl", &args.ttl)?;
            println!("{}", args.jwt.config()?.sign(args.user, ttl)?);
            Ok(())
        }
        Command::Prune(args) => prune(args).await,
        Command::Send(args) => {
            let id = send(args).await?;
            println!("{id}");
            Ok(())
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let address = SocketAddr::new(config.host, config.port);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} (HOST/PORT)"))?;
    crate::server::run(config, listener, shutdown_signal()).await
}

async fn send(args: SendArgs) -> anyhow::Result<Uuid> {
    let url = args.database.url()?;
    let data = match args.data.as_deref() {
        None => None,
        Some(text) => {
            let value: serde_json::Value =
                serde_json::from_str(text).context("--data is not JSON")?;
            anyhow::ensure!(value.is_object(), "--data must be a JSON object");
            Some(value)
        }
    };
    let (audience, user_id, sector_id) = match (&args.target.user, &args.target.sector) {
        (Some(user), _) => ("user", Some(*user), None),
        (_, Some(sector)) => ("sector", None, Some(*sector)),
        _ if args.target.admin => ("admin", None, None),
        _ => ("all", None, None),
    };
    let notification = NewNotification {
        audience: audience.to_owned(),
        user_id,
        sector_id,
        kind: args.kind,
        importance: args.importance,
        title: args.title,
        message: args.message,
        action_url: args.action_url,
        data,
    };
    let pool = db::pool(&url, 1)?;
    let client = pool.get().await.context("connecting to PostgreSQL")?;
    db::notifications::insert(&client, &notification)
        .await
        .map_err(
            |error| match (db::constraint_of(&error), error.as_db_error()) {
                (Some(constraint), Some(db_error)) => {
                    anyhow::anyhow!(
                        "notification refused ({constraint}): {}",
                        db_error.message()
                    )
                }
                _ => anyhow::Error::new(error).context("inserting the notification"),
            },
        )
}

async fn prune(args: PruneArgs) -> anyhow::Result<()> {
    let url = args.database.url()?;
    let retention = config::parse_duration("HERALD_EVENT_RETENTION", &args.event_retention)?;
    let read_older_than = args
        .read_older_than
        .as_deref()
        .map(|raw| config::parse_duration("--read-older-than", raw))
        .transpose()?;
    let pool = db::pool(&url, 1)?;
    let events = crate::log::retention::prune(&pool, retention).await?;
    println!(
        "deleted {events} event(s) older than {}",
        humantime::format_duration(retention)
    );
    if let Some(older_than) = read_older_than {
        let removed = crate::log::retention::prune_notifications(&pool, older_than).await?;
        println!(
            "deleted {} notification(s) read, retracted or expired more than {} ago, with {} receipt(s) and {} delivery row(s)",
            removed.notifications,
            humantime::format_duration(older_than),
            removed.receipts,
            removed.deliveries
        );
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every setting a command reads from the environment, with its flag.
    fn settings(command: &clap::Command, found: &mut Vec<(String, Option<String>)>) {
        for arg in command.get_arguments() {
            if let Some(env) = arg.get_env() {
                found.push((
                    env.to_string_lossy().into_owned(),
                    arg.get_long().map(|long| format!("--{long}")),
                ));
            }
        }
        for sub in command.get_subcommands() {
            settings(sub, found);
        }
    }

    #[test]
    fn every_setting_and_its_flag_is_in_the_reference_and_the_readme() {
        let reference = include_str!("../docs/reference.md");
        let readme = include_str!("../README.md");
        let mut found = Vec::new();
        settings(&super::Cli::command(), &mut found);
        assert!(found.len() >= 20, "found only {found:?}");
        for (env, flag) in found {
            let named = format!("`{env}`");
            assert!(
                reference.contains(&named),
                "{env} is not in docs/reference.md"
            );
            assert!(readme.contains(&named), "{env} is not in the README");
            if let Some(flag) = flag {
                assert!(
                    reference.contains(&format!("`{flag}`")),
                    "{flag} ({env}) is not in docs/reference.md"
                );
            }
        }
    }
}
