//! The push worker: every instance runs one, and the database decides who
//! does what.
//!
//! Each tick, an instance
//!
//! 1. **decides** notifications whose `HERALD_PUSH_DELAY` has passed
//!    (`sql/push_plan.sql`): it takes their `push_due` rows and, in the same
//!    statement, plans one `push_sends` row per subscription of every
//!    addressed user that no socket reached (no `IN_APP` row) and who has
//!    not read it. SKIP LOCKED gives each due row to one instance only;
//! 2. **claims** sends whose time has come (`sql/push_claim.sql`), marking
//!    them `sending` in a committed transaction before any request leaves;
//! 3. **sends** each claimed push, at most [`PER_ORIGIN`] at once per push
//!    service and [`IN_FLIGHT`] in all, and records the answer with the
//!    delivery row in one transaction;
//! 4. does the same for due dismisses, which are retried like pushes.
//!
//! Where at-most-once and at-least-once meet: a send is committed as
//! `sending` before its request goes out. An instance that dies between
//! the request and the record leaves it `sending`; no instance sends it
//! again (after [`ABANDONED`] it is marked failed). A push can therefore be
//! lost in that window, never doubled: a second copy on a phone is worse
//! than a missing one, whose notification still waits in the inbox. Until a
//! send is claimed nothing is lost: a push that was due while no herald ran
//! is decided and sent by the first instance that starts. A graceful
//! shutdown stops claiming and lets the requests under way finish.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{StatusCode, Url};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::PushConfig;
use super::endpoint::{EndpointPolicy, PublicResolver};
use super::message::{self, Push, Shown};
use crate::audience::AdminRoles;
use crate::db::Pool;
use crate::telemetry::metrics;

/// How often an instance looks for due work.
const TICK: Duration = Duration::from_millis(250);
/// Notifications decided per statement.
const PLAN_BATCH: i64 = 200;
/// Requests under way on one instance, in all: the bounded queue between
/// the database and the push services.
pub const IN_FLIGHT: usize = 256;
/// Requests under way to one push service (one origin) at once.
pub const PER_ORIGIN: usize = 16;
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// A claim older than this was left by an instance that stopped.
const ABANDONED: Duration = Duration::from_secs(600);
/// Failures in a row after which a subscription is deleted.
pub const MAX_FAILURES: i32 = 5;
/// The longest wait between retries, whatever `Retry-After` says.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(3600);

/// The push worker of one instance.
pub struct Worker {
    pool: Pool,
    config: Arc<PushConfig>,
    admin_roles: Vec<String>,
    client: reqwest::Client,
    origins: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// What a push service's answer means for the send.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    /// 2xx.
    Accepted,
    /// 404 or 410: the subscription is gone.
    Gone(String),
    /// 429, 5xx or no answer: try again after this long.
    Retry(Duration, String),
    /// Anything else: this send failed for good.
    Failed(String),
}

impl Worker {
    pub fn new(
        pool: Pool,
        config: Arc<PushConfig>,
        admin_roles: &AdminRoles,
    ) -> anyhow::Result<Self> {
        let mut client = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            // A redirect would leave the checked endpoint; a proxy would hide it.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .pool_max_idle_per_host(PER_ORIGIN)
            .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")));
        if config.endpoints == EndpointPolicy::Public {
            client = client.dns_resolver(Arc::new(PublicResolver));
        }
        Ok(Self {
            pool,
            config,
            admin_roles: admin_roles.names().to_vec(),
            client: client.build()?,
            origins: Mutex::default(),
        })
    }

    /// Runs until `stop`, then lets the requests under way finish.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut tasks = JoinSet::new();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Whether the last claim filled the room: more may be waiting, so
        // claim again as soon as half the room is free, not at the next tick.
        let mut more = false;
        loop {
            let result = tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => self.step(&mut tasks).await,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {
                    if !more || tasks.len() > IN_FLIGHT / 2 {
                        continue;
                    }
                    match self.pool.get().await {
                        Ok(client) => self.claim(&client, &mut tasks).await,
                        Err(error) => Err(error.into()),
                    }
                }
            };
            match result {
                Ok(full) => more = full,
                Err(error) => {
                    more = false;
                    metrics::push_step_failed();
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "push worker step failed; retrying"
                    );
                }
            }
        }
        while tasks.join_next().await.is_some() {}
    }

    /// One tick: recover abandoned claims, decide, claim and start sends.
    /// Whether the claim filled the room.
    async fn step(self: &Arc<Self>, tasks: &mut JoinSet<()>) -> anyhow::Result<bool> {
        let client = self.pool.get().await?;
        for row in client
            .query(
                include_str!("../../sql/push_abandoned.sql"),
                &[&ABANDONED.as_secs_f64()],
            )
            .await?
        {
            metrics::push_outcome("abandoned");
            let (notification, user): (Uuid, Uuid) = (row.try_get(0)?, row.try_get(1)?);
            let error = "herald stopped while sending it";
            client
                .execute(
                    include_str!("../../sql/push_delivery_record.sql"),
                    &[&notification, &user, &error],
                )
                .await?;
        }
        let min_importance = crate::names::IMPORTANCE
            .iter()
            .position(|i| *i == self.config.min_importance)
            .map_or(2, |index| index as i32 + 1);
        let planned = client
            .query_one(
                include_str!("../../sql/push_plan.sql"),
                &[
                    &self.config.delay.as_secs_f64(),
                    &self.admin_roles,
                    &min_importance,
                    &self.config.ttl.as_secs_f64(),
                    &PLAN_BATCH,
                ],
            )
            .await?;
        metrics::push_planned(
            planned.try_get::<_, i64>("decided")?,
            planned.try_get::<_, i64>("planned")?,
        );
        let full = self.claim(&client, tasks).await?;
        let backlog = client
            .query_one(
                include_str!("../../sql/push_backlog.sql"),
                &[&self.config.delay.as_secs_f64()],
            )
            .await?;
        metrics::push_backlog(
            backlog.try_get::<_, i64>("undecided")?,
            backlog.try_get::<_, i64>("waiting")?,
            backlog.try_get::<_, f64>("lag_seconds")?,
        );
        Ok(full)
    }

    /// Claims due sends, then due dismisses, as many as there is room for
    /// under [`IN_FLIGHT`], and starts them. Whether they filled the room.
    async fn claim(
        self: &Arc<Self>,
        client: &deadpool_postgres::Client,
        tasks: &mut JoinSet<()>,
    ) -> anyhow::Result<bool> {
        let claims = [
            (
                include_str!("../../sql/push_claim.sql"),
                Job::notification as JobFromRow,
            ),
            (
                include_str!("../../sql/push_dismiss_claim.sql"),
                Job::dismiss,
            ),
        ];
        let mut full = false;
        for (statement, job) in claims {
            let room = IN_FLIGHT.saturating_sub(tasks.len());
            if room == 0 {
                full = true;
                break;
            }
            let rows = client.query(statement, &[&(room as i64)]).await?;
            full |= rows.len() == room;
            for row in rows {
                let job = job(&row)?;
                let worker = self.clone();
                tasks.spawn(async move { worker.deliver(job).await });
            }
        }
        metrics::push_in_flight(tasks.len());
        Ok(full)
    }

    /// One push service at a time, [`PER_ORIGIN`] requests at once.
    fn origin(&self, origin: &str) -> Arc<Semaphore> {
        let mut origins = self.origins.lock().unwrap_or_else(|e| e.into_inner());
        origins
            .entry(origin.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(PER_ORIGIN)))
            .clone()
    }

    async fn deliver(self: Arc<Self>, job: Job) {
        let answer = match Url::parse(&job.endpoint) {
            Ok(url) => {
                let gate = self.origin(&super::endpoint::origin(&url));
                let _permit = gate.acquire().await;
                self.attempt(&job, &url).await
            }
            Err(_) => Answer::Failed("the stored endpoint is not a URL".into()),
        };
        let outcome = match &answer {
            Answer::Accepted => "sent",
            Answer::Gone(_) => "gone",
            Answer::Retry(..) => "retried",
            Answer::Failed(_) => "failed",
        };
        match &job.kind {
            Kind::Notification { .. } => metrics::push_outcome(outcome),
            Kind::Dismiss => metrics::push_dismissed(outcome),
        }
        if let Err(error) = self.record(&job, answer).await {
            // The claim stays 'sending' and is failed as abandoned later:
            // never sent twice.
            tracing::error!(
                error = format!("{error:#}"),
                notification.id = %job.notification_id,
                "recording a push's answer failed"
            );
        }
    }

    async fn attempt(&self, job: &Job, url: &Url) -> Answer {
        // Again at every send: the address a name has can change.
        if let Err(refused) = self.config.endpoints.check_literal(url) {
            return Answer::Failed(refused.to_string());
        }
        let (body, urgency) = match &job.kind {
            Kind::Notification { shown } => (
                message::notification(shown),
                message::urgency(&shown.importance),
            ),
            Kind::Dismiss => (message::dismiss(job.notification_id), "normal"),
        };
        let push = Push {
            endpoint: url,
            p256dh: &job.p256dh,
            auth: &job.auth,
            notification_id: job.notification_id,
            urgency,
            ttl: job.ttl,
            body,
        };
        let request = match push.request(&self.client, &self.config.key, &self.config.subject) {
            Ok(request) => request,
            Err(reason) => return Answer::Failed(reason),
        };
        match request.send().await {
            Ok(response) => classify(response.status(), response.headers(), job.attempts),
            Err(error) => {
                let reason = format!("no answer from the push service: {}", error_chain(&error));
                if is_refused_address(&error) {
                    Answer::Failed(reason)
                } else {
                    Answer::Retry(backoff(job.attempts), reason)
                }
            }
        }
    }

    /// Writes the answer, the subscription's record and the delivery row in
    /// one transaction.
    async fn record(&self, job: &Job, answer: Answer) -> anyhow::Result<()> {
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        if let Kind::Dismiss = job.kind {
            let (state, retry_in) = match &answer {
                Answer::Accepted => ("sent", 0.0),
                Answer::Retry(wait, _) if *wait < job.ttl => ("due", wait.as_secs_f64()),
                Answer::Retry(..) | Answer::Gone(_) | Answer::Failed(_) => ("failed", 0.0),
            };
            transaction
                .execute(
                    include_str!("../../sql/push_dismiss_answered.sql"),
                    &[
                        &job.notification_id,
                        &job.subscription_id,
                        &state,
                        &retry_in,
                    ],
                )
                .await?;
            if let Answer::Gone(_) = answer {
                delete_subscription(&transaction, job.subscription_id).await?;
            }
            transaction.commit().await?;
            return Ok(());
        }
        let (state, retry_in, error) = match &answer {
            Answer::Accepted => ("sent", 0.0, None),
            Answer::Retry(wait, reason) if *wait < job.ttl => {
                ("pending", wait.as_secs_f64(), Some(reason.clone()))
            }
            Answer::Retry(_, reason) => (
                "failed",
                0.0,
                Some(format!("{reason}; retried until the push's TTL ran out")),
            ),
            Answer::Gone(reason) | Answer::Failed(reason) => ("failed", 0.0, Some(reason.clone())),
        };
        transaction
            .execute(
                include_str!("../../sql/push_sends_lock_user.sql"),
                &[&job.notification_id, &job.user_id],
            )
            .await?;
        let updated = transaction
            .query_opt(
                include_str!("../../sql/push_send_answered.sql"),
                &[
                    &job.notification_id,
                    &job.subscription_id,
                    &state,
                    &retry_in,
                    &error,
                ],
            )
            .await?;
        let Some(row) = updated else {
            // Deleted meanwhile (the subscription or the notification went).
            transaction.commit().await?;
            return Ok(());
        };
        let user: Uuid = row.try_get(0)?;
        match state {
            "sent" => {
                transaction
                    .execute(
                        include_str!("../../sql/push_subscription_answered.sql"),
                        &[&job.subscription_id, &true],
                    )
                    .await?;
                record_delivery(&transaction, job.notification_id, user, None).await?;
            }
            "failed" => {
                record_delivery(&transaction, job.notification_id, user, error.as_deref()).await?;
                let failures: i32 = transaction
                    .query_opt(
                        include_str!("../../sql/push_subscription_answered.sql"),
                        &[&job.subscription_id, &false],
                    )
                    .await?
                    .map(|row| row.try_get(0))
                    .transpose()?
                    .unwrap_or(0);
                if matches!(answer, Answer::Gone(_)) || failures >= MAX_FAILURES {
                    delete_subscription(&transaction, job.subscription_id).await?;
                }
            }
            _ => {}
        }
        transaction.commit().await?;
        Ok(())
    }
}

async fn record_delivery(
    transaction: &deadpool_postgres::Transaction<'_>,
    notification: Uuid,
    user: Uuid,
    error: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    transaction
        .execute(
            include_str!("../../sql/push_delivery_record.sql"),
            &[&notification, &user, &error],
        )
        .await
        .map(drop)
}

async fn delete_subscription(
    transaction: &deadpool_postgres::Transaction<'_>,
    subscription: Uuid,
) -> Result<(), tokio_postgres::Error> {
    metrics::push_subscription_removed();
    transaction
        .execute(
            include_str!("../../sql/push_subscription_delete.sql"),
            &[&subscription],
        )
        .await
        .map(drop)
}

/// Reads a claimed row into a [`Job`].
type JobFromRow = fn(&tokio_postgres::Row) -> Result<Job, tokio_postgres::Error>;

/// A claimed push or dismiss.
struct Job {
    notification_id: Uuid,
    subscription_id: Uuid,
    user_id: Uuid,
    endpoint: String,
    p256dh: String,
    auth: String,
    /// What is left of the push's life: its `TTL`, and how long retries may go on.
    ttl: Duration,
    /// Attempts so far, this one included.
    attempts: i32,
    kind: Kind,
}

enum Kind {
    Notification { shown: Shown },
    Dismiss,
}

impl Job {
    fn notification(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        let mut job = Self::common(row)?;
        job.kind = Kind::Notification {
            shown: Shown {
                id: job.notification_id,
                kind: row.try_get("kind")?,
                importance: row.try_get("importance")?,
                title: row.try_get("title")?,
                message: row.try_get("message")?,
                action_url: row.try_get("action_url")?,
                created_at: row.try_get("created_at")?,
            },
        };
        Ok(job)
    }

    fn dismiss(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Self::common(row)
    }

    fn common(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        let ttl: f64 = row.try_get("ttl_seconds")?;
        Ok(Self {
            notification_id: row.try_get("notification_id")?,
            subscription_id: row.try_get("subscription_id")?,
            user_id: row.try_get("user_id")?,
            endpoint: row.try_get("endpoint")?,
            p256dh: row.try_get("p256dh")?,
            auth: row.try_get("auth")?,
            ttl: Duration::from_secs(ttl.clamp(0.0, 28.0 * 86_400.0) as u64),
            attempts: row.try_get("attempts")?,
            kind: Kind::Dismiss,
        })
    }
}

/// The meaning of a push service's status (RFC 8030 §6 and the services'
/// own documentation).
fn classify(status: StatusCode, headers: &reqwest::header::HeaderMap, attempts: i32) -> Answer {
    if status.is_success() {
        Answer::Accepted
    } else if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
        Answer::Gone(format!(
            "the push service answered {status}: subscription gone"
        ))
    } else if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        let wait = retry_after(headers).unwrap_or_else(|| backoff(attempts));
        Answer::Retry(
            wait.min(MAX_RETRY_WAIT),
            format!("the push service answered {status}"),
        )
    } else {
        Answer::Failed(format!("the push service answered {status}"))
    }
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate_parse(value)?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

fn httpdate_parse(value: &str) -> Option<std::time::SystemTime> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let at = time::PrimitiveDateTime::parse(value, &format)
        .ok()?
        .assume_utc();
    Some(at.into())
}

/// 1 s, 2 s, 4 s ... up to 10 minutes, for answers without `Retry-After`.
fn backoff(attempts: i32) -> Duration {
    let exponent = attempts.clamp(1, 10) as u32 - 1;
    Duration::from_secs((1u64 << exponent).min(600))
}

/// Whether the request never left because [`PublicResolver`] refused the
/// host's addresses: the endpoint is not allowed (for now), not busy.
fn is_refused_address(error: &reqwest::Error) -> bool {
    error_chain(error).contains("not a public address")
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_as_the_push_services_mean_them() {
        let none = reqwest::header::HeaderMap::new();
        assert_eq!(classify(StatusCode::CREATED, &none, 1), Answer::Accepted);
        assert!(matches!(
            classify(StatusCode::GONE, &none, 1),
            Answer::Gone(_)
        ));
        assert!(matches!(
            classify(StatusCode::NOT_FOUND, &none, 1),
            Answer::Gone(_)
        ));
        assert!(matches!(
            classify(StatusCode::BAD_REQUEST, &none, 1),
            Answer::Failed(_)
        ));
        assert!(matches!(
            classify(StatusCode::PAYLOAD_TOO_LARGE, &none, 1),
            Answer::Failed(_)
        ));
        let mut later = reqwest::header::HeaderMap::new();
        later.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, &later, 1),
            Answer::Retry(
                Duration::from_secs(7),
                "the push service answered 429 Too Many Requests".into()
            )
        );
        assert!(matches!(
            classify(StatusCode::SERVICE_UNAVAILABLE, &none, 3),
            Answer::Retry(wait, _) if wait == Duration::from_secs(4)
        ));
        let mut dated = reqwest::header::HeaderMap::new();
        dated.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&dated), Some(Duration::ZERO));
    }
}
