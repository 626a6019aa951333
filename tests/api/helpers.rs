//! The test harness: a database per test, a real herald on port 0, and
//! helpers to write rows the way producers do.

use std::net::SocketAddr;
use std::sync::Once;
use std::time::Duration;

use herald::auth::JwtConfig;
use herald::config::Config;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

pub const SECRET: &str = "test-secret-that-is-long-enough";
pub const ORIGIN: &str = "http://localhost:3030";

static TRACING: Once = Once::new();

/// Logs go to a sink unless TEST_LOG is set.
pub fn init_tracing() {
    TRACING.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "debug".into()),
                )
                .with_test_writer()
                .try_init();
        }
    });
}

/// The cluster scripts/test started, as a URL to its `postgres` database.
pub fn admin_url() -> String {
    match std::env::var("HERALD_TEST_DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => no_database("HERALD_TEST_DATABASE_URL is unset"),
    }
}

/// Ends the test process with one line saying what the tests need.
///
/// Almost every test needs the cluster; a panic in each would bury that one
/// fact under dozens of backtraces. The first test to find it missing
/// prints the line and exits with an error (libtest runs every test in this
/// process; nextest gives each its own and stops at the first failure), so
/// the run fails and says why once. Other threads that get here meanwhile
/// wait in `call_once` until the process is gone.
fn no_database(reason: &str) -> ! {
    static REPORTED: Once = Once::new();
    REPORTED.call_once(|| {
        use std::io::Write;
        // Straight to stderr: libtest captures `eprintln!`, and the process
        // ends before it would show what it captured.
        let _ = writeln!(
            std::io::stderr(),
            "herald's integration tests need PostgreSQL: {reason}. Run scripts/test (it starts a throwaway cluster), or set HERALD_TEST_DATABASE_URL to a superuser URL, e.g. postgres://postgres@127.0.0.1:5432/postgres (the restart tests also need HERALD_TEST_PG_BIN, PostgreSQL's bin directory)."
        );
        std::process::exit(2);
    });
    unreachable!("the process exits in call_once");
}

/// A database of this test's own (NOTIFY channels are per database).
pub struct TestDb {
    pub url: String,
}

impl TestDb {
    /// An empty database, not migrated.
    pub async fn empty() -> Self {
        let admin = admin_url();
        let name = format!("herald_test_{}", Uuid::new_v4().simple());
        let client = match tokio_postgres::connect(&admin, tokio_postgres::NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                client
            }
            Err(error) => no_database(&format!(
                "cannot connect to HERALD_TEST_DATABASE_URL ({:#})",
                anyhow::Error::new(error)
            )),
        };
        client
            .batch_execute(&format!("create database {name}"))
            .await
            .expect("create database");
        let base = admin.rsplit_once('/').expect("admin URL has a database").0;
        Self {
            url: format!("{base}/{name}"),
        }
    }

    /// A migrated database.
    pub async fn migrated() -> Self {
        let db = Self::empty().await;
        herald::db::migrate(&db.url).await.expect("migrate");
        db
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

/// A running herald, in this process.
///
/// Its metrics go to the process-wide recorder that every other `TestApp`
/// of the process shares (`cargo test` runs all tests in one), so a test
/// that asserts on `/metrics` runs a [`HeraldProcess`] instead.
pub struct TestApp {
    pub address: SocketAddr,
    pub db: TestDb,
    pub pg: tokio_postgres::Client,
    pub jwt: JwtConfig,
    tail: herald::eventlog::tail::TailHandle,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

pub fn config(db: &TestDb) -> Config {
    Config {
        database_url: db.url.clone(),
        listen_url: db.url.clone(),
        host: "127.0.0.1".parse().unwrap(),
        port: 0,
        jwt: JwtConfig::hs256(SECRET.as_bytes()),
        cors: "http://localhost:3030,http://127.0.0.1:3030"
            .parse()
            .unwrap(),
        admin_roles: "ADMIN,SUPER_ADMIN".parse().unwrap(),
        pending_limit: 50,
        unread_tracked: 1000,
        max_sockets_per_user: 10,
        replay_limit: 1000,
        event_retention: Duration::from_secs(7 * 86400),
        // Tests open many sockets from one address; the limits get tests of their own.
        connect_rate: "10000/1s".parse().unwrap(),
        auth_failure_rate: "10000/1s".parse().unwrap(),
        event_rate: "10000/1s".parse().unwrap(),
        trust_proxy: false,
        delivery_queue: 1_000_000,
        http_idle_timeout: Duration::from_secs(10),
        max_connections: None,
        // Tests make many sessions from one address; the bounds get tests of their own.
        handshakes: herald::gateway::admission::Bounds {
            rate: "10000/1s".parse().unwrap(),
            pending: 100_000,
            pending_per_address: 100_000,
        },
        metrics_token: None,
        tls: None,
        push: None,
        migrate: true,
    }
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let db = TestDb::empty().await;
        let mut config = config(&db);
        adjust(&mut config);
        Self::spawn_on(db, config).await
    }

    /// Another herald on the same database.
    pub async fn spawn_on(db: TestDb, config: Config) -> Self {
        init_tracing();
        let jwt = config.jwt.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let server = herald::server::Server::build(&config)
            .await
            .unwrap_or_else(|error| panic!("herald did not start: {error:#}"));
        let tail = server.tail().clone();
        let handle = tokio::spawn(server.serve(listener, async move {
            let _ = rx.await;
        }));
        let pg = db.client().await;
        let app = Self {
            address,
            db,
            pg,
            jwt,
            tail,
            shutdown: Some(tx),
            handle: Some(handle),
        };
        app.wait_ready().await;
        app
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// The sum of a metric's samples in this process's `/metrics`. The
    /// recorder is process-wide: it is this test's alone because nextest
    /// runs each test in a process of its own (scripts/test always uses
    /// nextest). Tests that can use a `HeraldProcess` should; this is for the
    /// ones that need a knob only the library offers (JWKS's refetch window).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(self.url("/metrics"))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("the /metrics body");
        text.lines()
            .filter(|line| line.starts_with(name) && line[name.len()..].starts_with([' ', '{']))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Polls `/metrics` until `name` (a metric, or one of its label sets:
    /// `name{label="value"}`) reaches `value`; panics after 10 s with what
    /// it last read.
    pub async fn metric_reaches(&self, name: &str, value: f64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let now = self.metric(name).await;
            if now >= value {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} is {now}, not {value}, after 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(response) = client.get(self.url("/health/ready")).send().await
                && response.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("herald did not become ready within 5 s");
    }

    /// Signals shutdown and waits for a clean stop.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let handle = self.handle.take().expect("running");
        tokio::time::timeout(Duration::from_secs(15), handle)
            .await
            .expect("stopped within 15 s")?
    }

    pub fn token(&self, user: Uuid) -> String {
        self.jwt.sign(user, Duration::from_secs(3600)).unwrap()
    }

    /// Asks the tail for a step and waits until one that began after the
    /// call has dispatched: whatever was committed before the call has then
    /// been handed to the sockets, and the tail rests until the next NOTIFY
    /// or its tick.
    pub async fn step(&self) {
        let mut stepped = self.tail.stepped.clone();
        // A step under way when called may have read before the call; the
        // one after it has not.
        let wanted = stepped.borrow_and_update().saturating_add(2);
        tokio::time::timeout(crate::client::WAIT, async {
            while *stepped.borrow_and_update() < wanted {
                self.tail.poke.notify_one();
                stepped.changed().await.expect("the tail stopped");
            }
        })
        .await
        .expect("the tail did not step within 5 s");
    }

    /// Inserts a user; returns their id.
    pub async fn user(&self, name: &str, role: &str, sector: Option<Uuid>) -> Uuid {
        insert_user(&self.pg, name, role, sector).await
    }

    /// Inserts a personal notification the way a producer does.
    pub async fn notify(&self, user: Uuid, title: &str) -> Uuid {
        self.pg
            .query_one(
                "insert into herald.notifications (user_id, title) values ($1, $2) returning id",
                &[&user, &title],
            )
            .await
            .expect("insert notification")
            .get(0)
    }

    /// Inserts a notification to a sector, the admins or everyone.
    pub async fn broadcast(&self, audience: &str, sector: Option<Uuid>, title: &str) -> Uuid {
        self.pg
            .query_one(
                "insert into herald.notifications (audience, sector_id, title) values ($1, $2, $3) returning id",
                &[&audience, &sector, &title],
            )
            .await
            .expect("insert broadcast")
            .get(0)
    }

    pub async fn unread_count(&self, user: Uuid, sector: Option<Uuid>, admin: bool) -> i64 {
        self.pg
            .query_one(
                include_str!("../../sql/inbox_unread_count.sql"),
                &[&user, &sector, &admin],
            )
            .await
            .unwrap()
            .get(0)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The first column of every row a query returns, in its order.
pub async fn column<T: tokio_postgres::types::FromSqlOwned>(
    pg: &impl tokio_postgres::GenericClient,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Vec<T> {
    pg.query(sql, params)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"))
        .iter()
        .map(|row| row.get(0))
        .collect()
}

pub async fn insert_user(
    pg: &tokio_postgres::Client,
    name: &str,
    role: &str,
    sector: Option<Uuid>,
) -> Uuid {
    let id = Uuid::new_v4();
    pg.execute(
        "insert into herald.users (id, email, name, role, sector_id) values ($1, $2, $3, $4, $5)",
        &[&id, &format!("{id}@example.com"), &name, &role, &sector],
    )
    .await
    .expect("insert user");
    id
}

/// The constraint a statement was refused by, checked to be named in the
/// error's message as well as in its `constraint` field, the way
/// PostgreSQL's own check constraints report themselves.
pub fn refused_by(error: &tokio_postgres::Error) -> String {
    let db = error
        .as_db_error()
        .unwrap_or_else(|| panic!("not a database error: {error:?}"));
    let constraint = db
        .constraint()
        .unwrap_or_else(|| panic!("refused without a constraint name: {}", db.message()));
    assert!(
        db.message().contains(&format!("\"{constraint}\"")),
        "the message does not name {constraint}: {}",
        db.message()
    );
    constraint.to_owned()
}

/// A PostgreSQL cluster of one test's own, for tests that restart it.
pub struct PrivateCluster {
    pub data: std::path::PathBuf,
    pub port: u16,
    _dir: tempdir::TempDir,
}

mod tempdir {
    /// A directory removed on drop.
    pub struct TempDir(pub std::path::PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn pg_command(program: &str) -> std::process::Command {
    let bin = std::env::var("HERALD_TEST_PG_BIN")
        .expect("HERALD_TEST_PG_BIN is unset: run through scripts/test");
    let path = format!("{bin}/{program}");
    // initdb and the server refuse to run as root.
    if is_root() {
        let mut command = std::process::Command::new("runuser");
        command.args(["-u", "postgres", "--", &path]);
        command
    } else {
        std::process::Command::new(path)
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

impl PrivateCluster {
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("herald-cluster-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let data = dir.join("pg");
        if is_root() {
            let status = std::process::Command::new("chown")
                .args(["-R", "postgres:", dir.to_str().unwrap()])
                .status()
                .unwrap();
            assert!(status.success());
        }
        let out = pg_command("initdb")
            .args([
                "--pgdata",
                data.to_str().unwrap(),
                "--username=postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Self {
            data,
            port,
            _dir: tempdir::TempDir(dir),
        };
        cluster.pg_ctl(&["start"]);
        cluster
    }

    fn pg_ctl(&self, action: &[&str]) {
        let options = format!(
            "-c port={} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{}' -c fsync=off",
            self.port,
            self.data.display()
        );
        let log = self.data.with_extension("log");
        let out = pg_command("pg_ctl")
            .args([
                "--pgdata",
                self.data.to_str().unwrap(),
                "--wait",
                "--timeout=60",
                "--mode=fast",
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
            ])
            .args(action)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl {action:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Fast shutdown and start again, as an operator's restart does.
    pub fn restart(&self) {
        self.pg_ctl(&["restart"]);
    }

    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// A database in this cluster.
    pub async fn database(&self) -> TestDb {
        let client = connect(&self.admin_url()).await;
        client
            .batch_execute("create database herald")
            .await
            .unwrap();
        TestDb {
            url: format!("postgres://postgres@127.0.0.1:{}/herald", self.port),
        }
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = pg_command("pg_ctl")
            .args([
                "--pgdata",
                self.data.to_str().unwrap(),
                "--mode=immediate",
                "stop",
            ])
            .output();
    }
}

/// `herald serve` as a separate process on port 0.
pub struct HeraldProcess {
    pub address: SocketAddr,
    child: std::process::Child,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl HeraldProcess {
    pub fn spawn(database_url: &str, extra: &[(&str, &str)]) -> Self {
        Self::spawn_limited(database_url, extra, None)
    }

    /// With at most `descriptors` open files (soft and hard limit), when given.
    pub fn spawn_limited(
        database_url: &str,
        extra: &[(&str, &str)],
        descriptors: Option<u64>,
    ) -> Self {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        let mut command = std::process::Command::new(
            std::env::var("HERALD_BIN_OVERRIDE").unwrap_or(env!("CARGO_BIN_EXE_herald").into()),
        );
        if let Some(limit) = descriptors {
            // SAFETY: setrlimit is async-signal-safe and touches no memory
            // shared with the parent.
            unsafe {
                command.pre_exec(move || {
                    let limit = rustix::process::Rlimit {
                        current: Some(limit),
                        maximum: Some(limit),
                    };
                    rustix::process::setrlimit(rustix::process::Resource::Nofile, limit)
                        .map_err(std::io::Error::from)
                });
            }
        }
        let mut child = command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs([
                ("DATABASE_URL", database_url),
                ("JWT_SECRET", SECRET),
                ("HOST", "127.0.0.1"),
                ("PORT", "0"),
                ("HERALD_LOG_FORMAT", "json"),
                ("RUST_LOG", "info"),
            ])
            .envs(extra.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn herald");
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stderr)
                    .lines()
                    .map_while(Result::ok)
                {
                    if let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line)
                        && let Some(address) = entry.get("address").and_then(|a| a.as_str())
                    {
                        let _ = tx.send(address.parse::<SocketAddr>().unwrap());
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        let address = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("herald did not start");
        Self {
            address,
            child,
            log,
        }
    }

    pub async fn wait_ready(&self) {
        for _ in 0..200 {
            if let Ok(response) =
                reqwest::get(format!("http://{}/health/ready", self.address)).await
                && response.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("herald process not ready");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// `/metrics` as this process exports it. Its recorder is its own, so
    /// nothing another test does is counted in it.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("the /metrics body")
    }

    /// The sum of a metric's samples (all label sets) in [`Self::metrics`].
    pub async fn metric(&self, name: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .filter(|line| line.starts_with(name) && line[name.len()..].starts_with([' ', '{']))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// The process's resident memory, in bytes.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmRSS in /proc status")
            * 1024
    }

    /// SIGTERM, and whether it exited cleanly.
    pub fn terminate(mut self) -> bool {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().map(|s| s.success()).unwrap_or(false)
    }

    /// Sends a signal, such as `HUP`, to the process.
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name}");
    }

    /// Whether the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for HeraldProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A socket of `user` that resumes from `last_event_id`.
pub async fn resume(app: &TestApp, user: Uuid, last_event_id: &str) -> crate::client::SioClient {
    resume_at(app.address, &app.token(user), last_event_id).await
}

/// A socket on the herald at `address` that resumes from `last_event_id`.
pub async fn resume_at(
    address: SocketAddr,
    token: &str,
    last_event_id: &str,
) -> crate::client::SioClient {
    let auth = serde_json::json!({"token": token, "lastEventId": last_event_id});
    crate::client::connect(
        address,
        crate::client::Connect {
            auth: Some(auth),
            ..crate::client::Connect::default()
        },
    )
    .await
    .unwrap()
}

/// Two herald processes on one migrated database, both ready.
pub struct TwoInstances {
    /// Kept so the database outlives the instances.
    _db: TestDb,
    pub pg: tokio_postgres::Client,
    pub first: HeraldProcess,
    pub second: HeraldProcess,
}

impl TwoInstances {
    pub async fn start() -> Self {
        let db = TestDb::migrated().await;
        let pg = db.client().await;
        let first = HeraldProcess::spawn(&db.url, &[]);
        let second = HeraldProcess::spawn(&db.url, &[]);
        first.wait_ready().await;
        second.wait_ready().await;
        Self {
            _db: db,
            pg,
            first,
            second,
        }
    }

    /// A token for `user` that both instances accept, for ten minutes.
    pub fn token(&self, user: Uuid) -> String {
        JwtConfig::hs256(SECRET.as_bytes())
            .sign(user, Duration::from_secs(600))
            .expect("signs")
    }

    /// A connected socket of `user` on `instance`.
    pub async fn online(&self, instance: &HeraldProcess, user: Uuid) -> crate::client::SioClient {
        let mut socket = crate::client::connect(
            instance.address,
            crate::client::Connect::token(&self.token(user)),
        )
        .await
        .expect("connects");
        socket.connected().await;
        socket
    }
}
