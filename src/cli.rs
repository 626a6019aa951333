//! The command line (docs/reference.md, "Command line"): `serve`, `migrate`,
//! `token`, `send`, `prune`, `vapid-keys`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand};
use uuid::Uuid;

use crate::audience::Audience;
use crate::config::{DatabaseArgs, JwtArgs, ServeArgs, values};
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
    /// Write a new VAPID private key for Web Push and print its public key.
    VapidKeys(VapidKeysArgs),
}

#[derive(Debug, Args)]
pub struct VapidKeysArgs {
    /// Where to write the private key (PEM, mode 0600); an existing file is
    /// never overwritten.
    #[arg(long)]
    pub out: std::path::PathBuf,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Events older than this go.
    #[arg(long, env = "HERALD_EVENT_RETENTION", default_value = "7d", value_parser = values::duration)]
    pub event_retention: Duration,
    /// Also delete notifications read, retracted or expired longer ago than
    /// this, with their receipts and delivery rows.
    #[arg(long, value_parser = values::duration)]
    pub read_older_than: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The user's id (the token's `sub`).
    #[arg(long)]
    pub user: Uuid,
    /// How long the token is good for.
    #[arg(long, default_value = "1h", value_parser = values::positive_duration)]
    pub ttl: Duration,
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

/// Parses the command line. A setting whose value is refused stops herald
/// with one line naming it (its environment variable, or its flag when it
/// has none), as the checks after parsing do; other usage errors are
/// clap's own.
pub fn parse() -> Cli {
    Cli::try_parse().unwrap_or_else(|error| match refused_setting(&error) {
        Some(line) => {
            eprintln!("herald: {line}");
            std::process::exit(2)
        }
        None => error.exit(),
    })
}

/// `invalid PORT: "eighty" is not a port number (0-65535)` for a value a
/// parser refused.
fn refused_setting(error: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if error.kind() != ErrorKind::ValueValidation {
        return None;
    }
    let Some(ContextValue::String(arg)) = error.get(ContextKind::InvalidArg) else {
        return None;
    };
    let reason = std::error::Error::source(error)?.to_string();
    let long = arg.split_whitespace().next()?.trim_start_matches("--");
    let name = setting_name(&Cli::command(), long).unwrap_or_else(|| format!("--{long}"));
    Some(format!("invalid {name}: {reason}"))
}

/// The environment variable behind the flag `--{long}`, in any subcommand.
fn setting_name(command: &clap::Command, long: &str) -> Option<String> {
    command
        .get_arguments()
        .find(|arg| arg.get_long() == Some(long))
        .and_then(|arg| arg.get_env())
        .map(|env| env.to_string_lossy().into_owned())
        .or_else(|| {
            command
                .get_subcommands()
                .find_map(|sub| setting_name(sub, long))
        })
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
            println!("{}", args.jwt.config()?.sign(args.user, args.ttl)?);
            Ok(())
        }
        Command::Prune(args) => prune(args).await,
        Command::VapidKeys(args) => {
            println!("{}", vapid_keys(&args.out)?);
            Ok(())
        }
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
        (Some(user), _) => Audience::User(*user),
        (_, Some(sector)) => Audience::Sector(*sector),
        _ if args.target.admin => Audience::Admins,
        _ => Audience::All,
    }
    .columns();
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
    let (retention, read_older_than) = (args.event_retention, args.read_older_than);
    let pool = db::pool(&url, 1)?;
    let events = crate::eventlog::retention::prune(&pool, retention).await?;
    println!(
        "deleted {events} event(s) older than {}",
        humantime::format_duration(retention)
    );
    if let Some(older_than) = read_older_than {
        let removed = db::notifications::prune(&pool, older_than).await?;
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

/// Writes a new key to `out` (created, never replaced, readable by its
/// owner only) and returns the public key browsers subscribe with.
fn vapid_keys(out: &std::path::Path) -> anyhow::Result<String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let (key, pem) = crate::push::vapid::VapidKey::generate().map_err(anyhow::Error::msg)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| format!("cannot create {} (it must not exist yet)", out.display()))?;
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(key.public_key().to_owned())
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
