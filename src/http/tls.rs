//! TLS without a proxy: HTTPS and WSS on herald's own port, with rustls
//! (TLS 1.2 and 1.3), when `HERALD_TLS_CERT_FILE` and `HERALD_TLS_KEY_FILE`
//! are set.
//!
//! The certificate is chosen per handshake from [`Certificates`], so SIGHUP
//! can read both files again and swap it in: new connections get the new
//! certificate, open ones (their handshake long done) are not touched. A
//! pair that cannot be read or parsed is an error naming the setting at
//! start; on SIGHUP it is logged and counted, and the old one stays.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

use crate::telemetry::metrics;

/// Why a certificate/key pair was not loaded; the setting it concerns.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("HERALD_TLS_CERT_FILE: {0}")]
    Certificate(String),
    #[error("HERALD_TLS_KEY_FILE: {0}")]
    Key(String),
}

impl TlsError {
    /// The setting the error names.
    pub fn var(&self) -> &'static str {
        match self {
            Self::Certificate(_) => "HERALD_TLS_CERT_FILE",
            Self::Key(_) => "HERALD_TLS_KEY_FILE",
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            Self::Certificate(reason) | Self::Key(reason) => reason,
        }
    }
}

/// The certificate in force and where it is read from.
pub struct Certificates {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for Certificates {
    // The key stays out of every Debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

impl Certificates {
    /// Reads the pair once; an error names the file's setting.
    pub fn load(cert_file: PathBuf, key_file: PathBuf) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let current = read_pair(&provider, &cert_file, &key_file)?;
        Ok(Self {
            cert_file,
            key_file,
            provider,
            current: RwLock::new(Arc::new(current)),
        })
    }

    /// Reads both files again; on success new handshakes use them.
    pub fn reload(&self) -> Result<(), TlsError> {
        let pair = read_pair(&self.provider, &self.cert_file, &self.key_file)?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(pair);
        Ok(())
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// What accepted connections are wrapped in.
    pub fn acceptor(self: &Arc<Self>) -> Result<tokio_rustls::TlsAcceptor, rustls::Error> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        // herald speaks HTTP/1.1 only (WebSocket upgrades need it).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }

    /// Reloads on every SIGHUP until `stop` (a supervised task: it ends
    /// only then).
    pub async fn reload_on_hangup(self: Arc<Self>, stop: CancellationToken) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP; the TLS certificate will not be reloaded");
                stop.cancelled().await;
                return;
            }
        };
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                received = hangups.recv() => if received.is_none() {
                    stop.cancelled().await;
                    return;
                },
            }
            match self.reload() {
                Ok(()) => {
                    metrics::tls_reloaded(true);
                    tracing::info!(cert = %self.cert_file.display(), "SIGHUP: TLS certificate reloaded");
                }
                Err(error) => {
                    metrics::tls_reloaded(false);
                    tracing::warn!(%error, "SIGHUP: TLS certificate not reloaded; keeping the one in use");
                }
            }
        }
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn read_pair(
    provider: &CryptoProvider,
    cert_file: &Path,
    key_file: &Path,
) -> Result<CertifiedKey, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let pem = read(cert_file).map_err(TlsError::Certificate)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            TlsError::Certificate(format!(
                "{} is not a PEM certificate chain ({e})",
                cert_file.display()
            ))
        })?;
    if chain.is_empty() {
        return Err(TlsError::Certificate(format!(
            "{} holds no PEM certificate",
            cert_file.display()
        )));
    }
    let pem = read(key_file).map_err(TlsError::Key)?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        TlsError::Key(format!(
            "{} is not a PEM private key ({e})",
            key_file.display()
        ))
    })?;
    let key = provider.key_provider.load_private_key(key).map_err(|e| {
        TlsError::Key(format!(
            "{}: unsupported private key ({e})",
            key_file.display()
        ))
    })?;
    let pair = CertifiedKey::new(chain, key);
    pair.keys_match().map_err(|e| {
        TlsError::Key(format!(
            "{} does not belong to the certificate in {} ({e})",
            key_file.display(),
            cert_file.display()
        ))
    })?;
    Ok(pair)
}
