//! TLS without a proxy: `herald serve` as a process with a certificate from
//! a test CA (made here with openssl), reached over HTTPS and WSS with
//! rustls clients that trust only that CA.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;
use uuid::Uuid;

use crate::client::{Connect, SioClient, connect_over};
use crate::helpers::{HeraldProcess, SECRET, TestDb, insert_user};

/// A CA of the test's own, and the server certificates it issues.
pub struct TestCa {
    dir: PathBuf,
}

impl TestCa {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("herald-tls-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=herald test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        Self { dir }
    }

    fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.ca_file()).unwrap()
    }

    /// The CA certificate's file, for clients told to trust it.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A certificate for localhost and 127.0.0.1 with this serial (hex),
    /// as `name.pem` and `name.key`.
    pub fn issue(&self, name: &str, serial: &str) -> (PathBuf, PathBuf) {
        std::fs::write(
            self.dir.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        openssl(
            &self.dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                "/CN=localhost",
            ],
        );
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                &format!("0x{serial}"),
                "-days",
                "2",
                "-out",
                &pem,
                "-extfile",
                "server.ext",
            ],
        );
        (self.dir.join(pem), self.dir.join(key))
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The serial number of a DER certificate, as openssl prints it (hex).
fn serial_of(der: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(["x509", "-inform", "DER", "-noout", "-serial"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(der).unwrap();
    let output = child.wait_with_output().unwrap();
    String::from_utf8(output.stdout)
        .unwrap()
        .trim()
        .trim_start_matches("serial=")
        .to_owned()
}

/// A rustls client that trusts the test CA only, offering `versions`.
fn client_config(
    ca: &TestCa,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&ca.ca_pem()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TLS session with herald, as `localhost`.
async fn handshake(
    address: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream> {
    let tcp = tokio::net::TcpStream::connect(address).await?;
    tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// The serial of the certificate a new handshake is given.
async fn served_serial(address: SocketAddr, ca: &TestCa) -> String {
    let stream = handshake(address, client_config(ca, rustls::ALL_VERSIONS))
        .await
        .expect("TLS handshake");
    let leaf = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    serial_of(&leaf)
}

/// A Socket.IO client over WSS; the serial it was shown, too.
async fn wss(address: SocketAddr, ca: &TestCa, token: &str) -> (SioClient, String) {
    let stream = handshake(address, client_config(ca, rustls::ALL_VERSIONS))
        .await
        .expect("TLS handshake");
    let serial = serial_of(&stream.get_ref().1.peer_certificates().unwrap()[0]);
    let base = format!("wss://localhost:{}", address.port());
    let mut client = connect_over(stream, &base, Connect::token(token))
        .await
        .expect("connects over WSS");
    client.connected().await;
    (client, serial)
}

fn https(ca: &TestCa) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca.ca_pem()).unwrap())
        .build()
        .unwrap()
}

/// A metric's sum, read over HTTPS.
async fn metric(client: &reqwest::Client, address: SocketAddr, name: &str) -> f64 {
    let text = client
        .get(format!("https://localhost:{}/metrics", address.port()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|line| line.starts_with(name) && line[name.len()..].starts_with([' ', '{']))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `herald serve` over TLS, ready.
async fn serve_tls(db: &TestDb, ca: &TestCa, cert: &Path, key: &Path) -> HeraldProcess {
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let herald = HeraldProcess::spawn(
        &db.url,
        &[
            ("HERALD_TLS_CERT_FILE", &cert),
            ("HERALD_TLS_KEY_FILE", &key),
        ],
    );
    let client = https(ca);
    let url = format!("https://localhost:{}/health/ready", herald.address.port());
    for _ in 0..200 {
        if let Ok(response) = client.get(&url).send().await
            && response.status() == 200
        {
            return herald;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("herald not ready over HTTPS: {}", herald.log_text());
}

fn token(user: Uuid) -> String {
    herald::auth::JwtConfig::hs256(SECRET.as_bytes())
        .sign(user, Duration::from_secs(600))
        .unwrap()
}

#[tokio::test]
async fn https_and_wss_share_the_port_over_tls_1_2_and_1_3() {
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    let ca = TestCa::new();
    let (cert, key) = ca.issue("server", "1001");
    let herald = serve_tls(&db, &ca, &cert, &key).await;
    let address = herald.address;

    for (versions, expected) in [
        (
            &[&rustls::version::TLS13][..],
            rustls::ProtocolVersion::TLSv1_3,
        ),
        (
            &[&rustls::version::TLS12][..],
            rustls::ProtocolVersion::TLSv1_2,
        ),
    ] {
        let stream = handshake(address, client_config(&ca, versions))
            .await
            .unwrap();
        let session = stream.get_ref().1;
        assert_eq!(session.protocol_version(), Some(expected));
        assert_eq!(session.alpn_protocol(), Some(&b"http/1.1"[..]));
    }

    let user = insert_user(&pg, "Ada", "USER", None).await;
    let response = https(&ca)
        .get(format!(
            "https://localhost:{}/api/notifications/unread-count",
            address.port()
        ))
        .bearer_auth(token(user))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap(),
        json!({"count": 0})
    );

    let (mut client, serial) = wss(address, &ca, &token(user)).await;
    assert_eq!(serial, "1001");
    pg.execute(
        "insert into herald.notifications (user_id, title) values ($1, 'over WSS')",
        &[&user],
    )
    .await
    .unwrap();
    assert_eq!(
        client.wait_for("notification:new").await["title"],
        "over WSS"
    );

    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = reqwest::get(format!("http://{address}/health/live")).await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
    assert!(metric(&https(&ca), address, "herald_tls_handshake_failures_total").await >= 1.0);
}

#[tokio::test]
async fn sighup_reloads_the_certificate_and_open_sockets_stay() {
    let db = TestDb::migrated().await;
    let pg = db.client().await;
    let ca = TestCa::new();
    let (cert, key) = ca.issue("live", "1001");
    let mut herald = serve_tls(&db, &ca, &cert, &key).await;
    let address = herald.address;
    let client = https(&ca);
    let user = insert_user(&pg, "Ada", "USER", None).await;

    let (mut old_socket, old_serial) = wss(address, &ca, &token(user)).await;
    assert_eq!(old_serial, "1001");

    // The operator's renewal: new files in place, then SIGHUP.
    let (next_cert, next_key) = ca.issue("next", "1002");
    std::fs::copy(&next_cert, &cert).unwrap();
    std::fs::copy(&next_key, &key).unwrap();
    assert_eq!(
        served_serial(address, &ca).await,
        "1001",
        "nothing changes before SIGHUP"
    );
    herald.signal("HUP");
    let mut reloaded = false;
    for _ in 0..250 {
        if metric(&client, address, "herald_tls_reloads_total{outcome=\"ok\"}").await >= 1.0 {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reloaded, "no reload counted: {}", herald.log_text());
    let new_serial = served_serial(address, &ca).await;
    assert_eq!(new_serial, "1002");
    let (mut new_socket, serial) = wss(address, &ca, &token(user)).await;
    assert_eq!(serial, "1002");

    // The socket opened under the old certificate is still served.
    pg.execute(
        "insert into herald.notifications (user_id, title) values ($1, 'after the reload')",
        &[&user],
    )
    .await
    .unwrap();
    assert_eq!(
        old_socket.wait_for("notification:new").await["title"],
        "after the reload"
    );
    assert_eq!(
        new_socket.wait_for("notification:new").await["title"],
        "after the reload"
    );
    assert!(old_socket.is_open());

    // A broken key on the next SIGHUP: logged, counted, the certificate stays.
    std::fs::write(&key, "not a key").unwrap();
    herald.signal("HUP");
    let mut failed = false;
    for _ in 0..250 {
        if metric(
            &client,
            address,
            "herald_tls_reloads_total{outcome=\"failed\"}",
        )
        .await
            >= 1.0
        {
            failed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(failed, "no failed reload counted");
    assert_eq!(served_serial(address, &ca).await, "1002");
    assert!(herald.is_running());
    assert!(herald.log_text().contains("HERALD_TLS_KEY_FILE"));
    println!(
        "SIGHUP reload: old socket shown serial {old_serial}, new connections after SIGHUP shown {new_serial}; the old socket received the next notification"
    );
}

#[test]
fn tls_files_that_do_not_load_stop_serve_with_one_line_naming_the_setting() {
    let ca = TestCa::new();
    let (cert, key) = ca.issue("server", "1001");
    let (_, other_key) = ca.issue("other", "1002");
    let garbage = ca.dir.join("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN NOTHING-----\n").unwrap();
    let path = |p: &Path| p.display().to_string();
    let cases: [(Vec<(&str, String)>, &str); 5] = [
        (
            vec![
                ("HERALD_TLS_CERT_FILE", "/nonexistent.pem".into()),
                ("HERALD_TLS_KEY_FILE", path(&key)),
            ],
            "invalid HERALD_TLS_CERT_FILE: cannot read /nonexistent.pem",
        ),
        (
            vec![
                ("HERALD_TLS_CERT_FILE", path(&garbage)),
                ("HERALD_TLS_KEY_FILE", path(&key)),
            ],
            "invalid HERALD_TLS_CERT_FILE",
        ),
        (
            vec![
                ("HERALD_TLS_CERT_FILE", path(&cert)),
                ("HERALD_TLS_KEY_FILE", path(&garbage)),
            ],
            "invalid HERALD_TLS_KEY_FILE",
        ),
        (
            vec![
                ("HERALD_TLS_CERT_FILE", path(&cert)),
                ("HERALD_TLS_KEY_FILE", path(&other_key)),
            ],
            "invalid HERALD_TLS_KEY_FILE",
        ),
        (
            vec![("HERALD_TLS_CERT_FILE", path(&cert))],
            "HERALD_TLS_KEY_FILE is required",
        ),
    ];
    for (env, expected) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_herald"))
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs([
                ("DATABASE_URL", "postgres://localhost/x"),
                ("JWT_SECRET", SECRET),
            ])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(!output.status.success(), "{env:?}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(expected), "{env:?}: {stderr}");
    }
}
