//! The application server's VAPID key (RFC 8292): an EC P-256 key whose
//! public half browsers subscribe with (`applicationServerKey`), and the
//! ES256 tokens that prove a push comes from its holder.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use p256::pkcs8::DecodePrivateKey as _;

/// A VAPID private key and its public key as browsers take it.
pub struct VapidKey {
    signing: SigningKey,
    /// base64url of the uncompressed public point (65 bytes).
    public_key: String,
}

impl std::fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VapidKey")
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

impl VapidKey {
    /// Reads a PEM `EC PRIVATE KEY` (SEC1) or `PRIVATE KEY` (PKCS#8) on P-256.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let secret = if pem.contains("-----BEGIN EC PRIVATE KEY-----") {
            p256::SecretKey::from_sec1_pem(pem)
                .map_err(|_| "the EC PRIVATE KEY is not a P-256 key".to_owned())?
        } else if pem.contains("-----BEGIN PRIVATE KEY-----") {
            p256::SecretKey::from_pkcs8_pem(pem)
                .map_err(|_| "the PRIVATE KEY is not an EC P-256 key".to_owned())?
        } else {
            return Err(
                "expected a PEM EC PRIVATE KEY or PRIVATE KEY (herald vapid-keys writes one)"
                    .into(),
            );
        };
        Ok(Self::from_secret(&secret))
    }

    /// A new random key, and its PEM (SEC1) to store.
    pub fn generate() -> Result<(Self, String), String> {
        let secret = p256::SecretKey::random(&mut rand_core::OsRng);
        let pem = secret
            .to_sec1_pem(p256::pkcs8::LineEnding::LF)
            .map_err(|e| format!("encoding the key: {e}"))?;
        Ok((Self::from_secret(&secret), pem.to_string()))
    }

    fn from_secret(secret: &p256::SecretKey) -> Self {
        let point = secret.public_key().to_encoded_point(false);
        Self {
            signing: SigningKey::from(secret),
            public_key: URL_SAFE_NO_PAD.encode(point.as_bytes()),
        }
    }

    /// The `applicationServerKey`: base64url, uncompressed point.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// `vapid t=<JWT>, k=<public key>` for a push service at `audience`
    /// (its origin), good until `expires` (seconds since the epoch).
    pub fn authorization(&self, audience: &str, subject: &str, expires: u64) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = serde_json::json!({"aud": audience, "exp": expires, "sub": subject});
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signed = format!("{header}.{claims}");
        let signature: Signature = self.signing.sign(signed.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(signature.to_bytes());
        format!("vapid t={signed}.{signature}, k={}", self.public_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_reads_back_and_signs_verifiable_tokens() {
        use p256::ecdsa::signature::Verifier as _;
        let (key, pem) = VapidKey::generate().unwrap();
        let again = VapidKey::from_pem(&pem).unwrap();
        assert_eq!(key.public_key(), again.public_key());
        assert_eq!(URL_SAFE_NO_PAD.decode(key.public_key()).unwrap().len(), 65);

        let header = key.authorization("https://push.example", "mailto:a@example.com", 99);
        let (token, k) = header
            .strip_prefix("vapid t=")
            .and_then(|rest| rest.split_once(", k="))
            .unwrap();
        assert_eq!(k, key.public_key());
        let (signed, signature) = token.rsplit_once('.').unwrap();
        let verifying =
            p256::ecdsa::VerifyingKey::from_sec1_bytes(&URL_SAFE_NO_PAD.decode(k).unwrap())
                .unwrap();
        let signature = Signature::from_slice(&URL_SAFE_NO_PAD.decode(signature).unwrap()).unwrap();
        verifying.verify(signed.as_bytes(), &signature).unwrap();
        let claims = signed.split('.').nth(1).unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
        assert_eq!(claims["aud"], "https://push.example");
        assert_eq!(claims["exp"], 99);
    }

    #[test]
    fn other_keys_are_refused() {
        assert!(VapidKey::from_pem("not a key").is_err());
        let rsa = "-----BEGIN PRIVATE KEY-----\nMIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEA\n-----END PRIVATE KEY-----\n";
        assert!(VapidKey::from_pem(rsa).is_err());
    }
}
