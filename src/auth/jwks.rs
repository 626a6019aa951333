//! Keys from an identity provider: the JWKS document at `JWT_JWKS_URL`
//! (`https://`, `http://` or `file://`).
//!
//! The document is fetched once at start (a failure stops `serve`), again
//! every `JWT_JWKS_REFRESH`, and when a token names a `kid` herald does not
//! hold, so a rotated-in key works at once. Those on-demand fetches are at
//! least [`MIN_REFETCH`] apart: a flood of forged `kid`s costs the provider
//! one request per 30 s, not one per token. A failed fetch keeps the keys
//! herald has, and is logged and counted (`herald_jwks_*`).
//!
//! Each key pins its algorithm, from the JWK's `alg` or, without one, its
//! key type: RS256 for RSA, ES256 for P-256, EdDSA for Ed25519. Symmetric
//! keys, encryption keys and other algorithms are ignored, so no token can
//! pass as HS256 with a key herald published as public.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::VerifyingKey;
use crate::telemetry::metrics;

/// How long after one on-demand fetch the next may start.
pub const MIN_REFETCH: Duration = Duration::from_secs(30);
/// A provider that has not answered by then has failed this fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The algorithms a JWKS key may pin; a token naming another is refused
/// before any lookup or fetch.
const ALGORITHMS: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];
/// Real key sets are a few kilobytes; anything near this is not one.
const MAX_DOCUMENT: usize = 1 << 20;

/// Where the document is and how often to read it.
#[derive(Debug, Clone)]
pub struct JwksOptions {
    pub url: JwksUrl,
    /// `JWT_JWKS_REFRESH`: the scheduled fetch's period.
    pub refresh: Duration,
    /// On-demand fetches (unknown `kid`) are at least this far apart:
    /// [`MIN_REFETCH`] in production, shorter in tests.
    pub min_refetch: Duration,
}

impl JwksOptions {
    pub fn new(url: JwksUrl, refresh: Duration) -> Self {
        Self {
            url,
            refresh,
            min_refetch: MIN_REFETCH,
        }
    }
}

/// A JWKS location herald can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksUrl {
    Http(reqwest::Url),
    File(PathBuf),
}

impl std::str::FromStr for JwksUrl {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        let url =
            reqwest::Url::parse(raw.trim()).map_err(|e| format!("{raw:?} is not a URL ({e})"))?;
        match url.scheme() {
            "https" | "http" if url.host().is_some() => Ok(Self::Http(url)),
            "file" => url
                .to_file_path()
                .map(Self::File)
                .map_err(|()| format!("{raw:?} is not a file:///absolute/path URL")),
            _ => Err(format!(
                "{raw:?} is not an https://, http:// or file:// URL"
            )),
        }
    }
}

impl std::fmt::Display for JwksUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Http(url) => write!(f, "{url}"),
            Self::File(path) => write!(f, "file://{}", path.display()),
        }
    }
}

/// Why one fetch of the document gave no keys.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("cannot build an HTTPS client: {0}")]
    Client(String),
    #[error("cannot fetch it: {0}")]
    Fetch(String),
    #[error("the provider answered HTTP {0}")]
    Status(u16),
    #[error("cannot read it: {0}")]
    Read(String),
    #[error("the document is larger than {MAX_DOCUMENT} bytes")]
    TooLarge,
    #[error("not a JWKS document ({0})")]
    NotJwks(String),
    #[error("it holds no RS256, ES256 or EdDSA signing key ({ignored} other key(s) ignored)")]
    NoKeys { ignored: usize },
}

/// The first fetch failed: `serve` stops with this line.
#[derive(Debug, thiserror::Error)]
#[error("no keys from JWT_JWKS_URL ({url})")]
pub struct StartError {
    url: String,
    #[source]
    source: JwksError,
}

/// What made herald fetch the document, as the metrics label it.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    Start,
    Schedule,
    UnknownKid,
}

impl Trigger {
    fn label(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Schedule => "schedule",
            Self::UnknownKid => "unknown_kid",
        }
    }
}

/// The usable keys of one version of the document.
#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, Vec<Arc<VerifyingKey>>>,
    all: Vec<Arc<VerifyingKey>>,
}

impl Keys {
    /// The key for a token's `kid` and `alg`. A token without `kid` is
    /// accepted only when the document holds a single key.
    fn find(&self, kid: Option<&str>, algorithm: Algorithm) -> Option<Arc<VerifyingKey>> {
        let key = match kid {
            Some(kid) => self
                .by_kid
                .get(kid)?
                .iter()
                .find(|key| key.algorithm == algorithm)?,
            None => match self.all.as_slice() {
                [only] => only,
                _ => return None,
            },
        };
        (key.algorithm == algorithm).then(|| key.clone())
    }

    fn knows(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }

    fn kids(&self) -> Vec<&str> {
        let mut kids: Vec<&str> = self.by_kid.keys().map(String::as_str).collect();
        kids.sort_unstable();
        kids
    }
}

/// A provider's key set, shared by every clone of the [`super::JwtConfig`].
pub struct KeySet {
    options: JwksOptions,
    client: reqwest::Client,
    keys: RwLock<Arc<Keys>>,
    /// Held during every fetch, so fetches never overlap (an older answer
    /// cannot overwrite a newer one) and tokens with unknown `kid`s that
    /// arrive meanwhile wait for the fetch instead of starting their own.
    /// Holds when the last on-demand fetch began.
    fetching: tokio::sync::Mutex<Option<Instant>>,
}

impl KeySet {
    pub fn new(options: JwksOptions) -> Result<Self, JwksError> {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::custom(redirect))
            .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| JwksError::Client(one_line(&e)))?;
        Ok(Self {
            options,
            client,
            keys: RwLock::new(Arc::default()),
            fetching: tokio::sync::Mutex::new(None),
        })
    }

    pub fn url(&self) -> &JwksUrl {
        &self.options.url
    }

    /// The first fetch, which must succeed.
    pub async fn load(&self) -> Result<(), StartError> {
        metrics::jwks_started();
        let _fetching = self.fetching.lock().await;
        self.refresh(Trigger::Start)
            .await
            .map_err(|source| StartError {
                url: self.options.url.to_string(),
                source,
            })
    }

    /// The scheduled refresh, until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(self.options.refresh) => {}
            }
            tokio::select! {
                () = stop.cancelled() => return,
                // A failure is logged and counted there; the keys stay.
                _ = async {
                    let _fetching = self.fetching.lock().await;
                    self.refresh(Trigger::Schedule).await
                } => {}
            }
        }
    }

    fn current(&self) -> Arc<Keys> {
        // A poisoned lock still holds a whole key set: swaps are one store.
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The key a token names, fetching the document once more when its
    /// `kid` is unknown and the last on-demand fetch is old enough.
    pub async fn key_for(
        &self,
        kid: Option<&str>,
        algorithm: Algorithm,
    ) -> Option<Arc<VerifyingKey>> {
        if !ALGORITHMS.contains(&algorithm) {
            return None;
        }
        let keys = self.current();
        let kid = match kid {
            Some(kid) if !keys.knows(kid) => kid,
            // A known kid with the wrong alg, or no kid: fetching cannot help.
            _ => return keys.find(kid, algorithm),
        };
        let mut last = self.fetching.lock().await;
        // The fetch this call waited for may have brought the key.
        let keys = self.current();
        if keys.knows(kid) {
            return keys.find(Some(kid), algorithm);
        }
        if last.is_some_and(|at| at.elapsed() < self.options.min_refetch) {
            metrics::jwks_refetch_skipped();
            return None;
        }
        *last = Some(Instant::now());
        let _ = self.refresh(Trigger::UnknownKid).await;
        self.current().find(Some(kid), algorithm)
    }

    /// Fetches and parses the document; on success its keys replace the
    /// old ones, on failure the old ones stay. Callers hold `fetching`.
    async fn refresh(&self, trigger: Trigger) -> Result<(), JwksError> {
        let fetched = self.fetch().await.and_then(|body| parse(&body));
        match fetched {
            Ok((keys, ignored)) => {
                let count = keys.all.len();
                let changed = self.current().kids() != keys.kids();
                if changed {
                    tracing::info!(
                        trigger = trigger.label(),
                        keys = count,
                        kids = ?keys.kids(),
                        ignored,
                        "identity provider keys loaded"
                    );
                } else {
                    tracing::debug!(trigger = trigger.label(), keys = count, "JWKS unchanged");
                }
                *self
                    .keys
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(keys);
                // Counted once the keys are in force, so a count names a key set.
                metrics::jwks_keys(count);
                metrics::jwks_fetched(trigger.label(), true);
                Ok(())
            }
            // At start the caller reports it, as the one line `serve` exits with.
            Err(error) if matches!(trigger, Trigger::Start) => {
                metrics::jwks_fetched(trigger.label(), false);
                Err(error)
            }
            Err(error) => {
                tracing::warn!(
                    trigger = trigger.label(),
                    url = %self.options.url,
                    error = %error,
                    "cannot refresh the identity provider's keys; keeping the ones herald has"
                );
                metrics::jwks_fetched(trigger.label(), false);
                Err(error)
            }
        }
    }

    async fn fetch(&self) -> Result<Vec<u8>, JwksError> {
        match &self.options.url {
            JwksUrl::File(path) => {
                let body = tokio::fs::read(path)
                    .await
                    .map_err(|e| JwksError::Read(e.to_string()))?;
                if body.len() > MAX_DOCUMENT {
                    return Err(JwksError::TooLarge);
                }
                Ok(body)
            }
            JwksUrl::Http(url) => {
                let mut response = self
                    .client
                    .get(url.clone())
                    .header(reqwest::header::ACCEPT, "application/json")
                    .send()
                    .await
                    .map_err(|e| JwksError::Fetch(one_line(&e.without_url())))?;
                if !response.status().is_success() {
                    return Err(JwksError::Status(response.status().as_u16()));
                }
                let mut body = Vec::new();
                while let Some(chunk) = response
                    .chunk()
                    .await
                    .map_err(|e| JwksError::Fetch(one_line(&e.without_url())))?
                {
                    if body.len() + chunk.len() > MAX_DOCUMENT {
                        return Err(JwksError::TooLarge);
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(body)
            }
        }
    }
}

/// Follows a few redirects, never from `https://` to anything else: keys
/// fetched over TLS must not come from a connection that has none.
fn redirect(attempt: reqwest::redirect::Attempt<'_>) -> reqwest::redirect::Action {
    let downgrade = attempt
        .previous()
        .first()
        .is_some_and(|first| first.scheme() == "https")
        && attempt.url().scheme() != "https";
    if downgrade {
        attempt.error("refusing a redirect from https:// to another scheme")
    } else if attempt.previous().len() > 3 {
        attempt.error("more than 3 redirects")
    } else {
        attempt.follow()
    }
}

/// `{"keys": [...]}`, each key read on its own so one odd key does not
/// spoil the others.
#[derive(Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

/// The usable keys of a document, and how many others it held.
fn parse(body: &[u8]) -> Result<(Keys, usize), JwksError> {
    let document: Document =
        serde_json::from_slice(body).map_err(|e| JwksError::NotJwks(e.to_string()))?;
    let mut keys = Keys::default();
    let mut ignored = 0;
    for value in document.keys {
        let Some((kid, key)) = serde_json::from_value::<Jwk>(value)
            .ok()
            .and_then(|jwk| verifying_key(&jwk).map(|key| (jwk.common.key_id, key)))
        else {
            ignored += 1;
            continue;
        };
        let key = Arc::new(key);
        if let Some(kid) = kid {
            keys.by_kid.entry(kid).or_default().push(key.clone());
        }
        keys.all.push(key);
    }
    if keys.all.is_empty() {
        return Err(JwksError::NoKeys { ignored });
    }
    Ok((keys, ignored))
}

/// A JWK as a key pinned to its algorithm, or `None` when herald does not
/// verify with it (symmetric, for encryption, another algorithm or curve).
fn verifying_key(jwk: &Jwk) -> Option<VerifyingKey> {
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|usage| *usage != PublicKeyUse::Signature)
    {
        return None;
    }
    if jwk
        .common
        .key_operations
        .as_ref()
        .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
    {
        return None;
    }
    let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm) {
        (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
        (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
            if ec.curve == EllipticCurve::P256 =>
        {
            Algorithm::ES256
        }
        (AlgorithmParameters::OctetKeyPair(okp), None | Some(KeyAlgorithm::EdDSA))
            if okp.curve == EllipticCurve::Ed25519 =>
        {
            Algorithm::EdDSA
        }
        _ => return None,
    };
    let decoding = DecodingKey::from_jwk(jwk).ok()?;
    Some(VerifyingKey {
        algorithm,
        decoding,
    })
}

/// An error and its causes on one line (reqwest nests the useful part).
fn one_line(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document(keys: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap()
    }

    /// The RSA fixture's public key as JWK members, plus `extra`.
    fn rsa(extra: serde_json::Value) -> serde_json::Value {
        let key = DecodingKey::from_rsa_pem(include_bytes!("../../tests/fixtures/jwt/rsa.pub.pem"))
            .unwrap();
        let mut jwk = serde_json::to_value(Jwk::from_decoding_key(&key, None).unwrap()).unwrap();
        for (name, value) in extra.as_object().unwrap() {
            jwk[name] = value.clone();
        }
        jwk
    }

    #[test]
    fn urls_of_three_schemes_and_nothing_else() {
        assert!(matches!(
            "https://id.example/realms/x/protocol/openid-connect/certs".parse(),
            Ok(JwksUrl::Http(_))
        ));
        assert!(matches!(
            "http://127.0.0.1:8080/jwks".parse(),
            Ok(JwksUrl::Http(_))
        ));
        assert_eq!(
            "file:///etc/herald/jwks.json".parse::<JwksUrl>(),
            Ok(JwksUrl::File("/etc/herald/jwks.json".into()))
        );
        for bad in [
            "ftp://x/jwks",
            "/etc/jwks.json",
            "https://",
            "file://relative",
        ] {
            assert!(bad.parse::<JwksUrl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_pin_their_algorithm_and_symmetric_or_encryption_keys_are_ignored() {
        let body = document(serde_json::json!([
            rsa(serde_json::json!({"kid": "r"})),
            rsa(serde_json::json!({"kid": "enc", "use": "enc"})),
            rsa(serde_json::json!({"kid": "verify-only", "key_ops": ["encrypt"]})),
            rsa(serde_json::json!({"kid": "ps", "alg": "PS256"})),
            rsa(serde_json::json!({"kid": "lying", "alg": "ES256"})),
            {"kty": "oct", "kid": "sym", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQ"},
            {"kty": "oct", "kid": "sym-hs", "alg": "HS256", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQ"},
            {"kty": "EC", "kid": "p384", "crv": "P-384", "x": "AA", "y": "AA"},
            {"kty": "weird"},
            "not even an object"
        ]));
        let (keys, ignored) = parse(&body).unwrap();
        assert_eq!(keys.kids(), ["r"]);
        assert_eq!(ignored, 9);
        assert!(keys.find(Some("r"), Algorithm::RS256).is_some());
        assert!(keys.find(Some("r"), Algorithm::HS256).is_none());
        assert!(keys.find(Some("r"), Algorithm::PS256).is_none());
        assert!(keys.find(Some("sym"), Algorithm::HS256).is_none());
        // One key: a token without kid may use it.
        assert!(keys.find(None, Algorithm::RS256).is_some());
    }

    #[test]
    fn without_kid_only_a_single_key_will_do() {
        let body = document(serde_json::json!([
            rsa(serde_json::json!({"kid": "a"})),
            rsa(serde_json::json!({"kid": "b"})),
        ]));
        let (keys, _) = parse(&body).unwrap();
        assert!(keys.find(None, Algorithm::RS256).is_none());
        assert!(keys.find(Some("b"), Algorithm::RS256).is_some());
    }

    #[test]
    fn a_document_without_usable_keys_is_an_error() {
        let body = document(serde_json::json!([{"kty": "oct", "k": "c2VjcmV0"}]));
        assert!(matches!(
            parse(&body),
            Err(JwksError::NoKeys { ignored: 1 })
        ));
        assert!(matches!(
            parse(b"{\"keys\": 3}"),
            Err(JwksError::NotJwks(_))
        ));
        assert!(matches!(parse(b"<html>"), Err(JwksError::NotJwks(_))));
    }
}
