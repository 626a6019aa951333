//! A browser's `PushSubscription.toJSON()`, checked field by field:
//! `{endpoint, expirationTime?, keys: {p256dh, auth}}`. Every refusal names
//! the field, so a page's developer sees which part their browser sent wrong.
//! Whether the endpoint is one herald may POST to is [`super::endpoint`]'s
//! question, asked after this one.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::Url;
use serde_json::Value;

use super::endpoint;

/// The largest body accepted: an endpoint of 2048 characters and the keys
/// fit with room to spare.
pub const MAX_BODY: usize = 4096;

/// A subscription as stored: the keys in canonical base64url.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub endpoint: Url,
    /// The user agent's P-256 public key, uncompressed (65 bytes).
    pub p256dh: String,
    /// The 16-byte authentication secret.
    pub auth: String,
}

/// What is wrong with a body, naming the field: the message of a 400
/// `invalid_payload`.
pub type Invalid = String;

/// Reads a `POST /api/push/subscriptions` body.
pub fn parse(body: &[u8]) -> Result<Subscription, Invalid> {
    let object = object(body)?;
    let endpoint = match object.get("endpoint") {
        Some(Value::String(text)) => endpoint::parse(text).map_err(|e| e.to_string())?,
        Some(_) => return Err("endpoint must be a string".into()),
        None => return Err("endpoint is required".into()),
    };
    match object.get("expirationTime") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_f64().is_some_and(|t| t >= 0.0) => {}
        Some(_) => return Err("expirationTime must be null or a time in milliseconds".into()),
    }
    let keys = match object.get("keys") {
        Some(Value::Object(keys)) => keys,
        Some(_) => return Err("keys must be an object {p256dh, auth}".into()),
        None => return Err("keys is required: {p256dh, auth}".into()),
    };
    let p256dh = match keys.get("p256dh") {
        Some(Value::String(text)) => p256dh(text)?,
        Some(_) => return Err("keys.p256dh must be a string".into()),
        None => return Err("keys.p256dh is required: the base64url P-256 public key".into()),
    };
    let auth = match keys.get("auth") {
        Some(Value::String(text)) => auth(text)?,
        Some(_) => return Err("keys.auth must be a string".into()),
        None => return Err("keys.auth is required: the base64url 16-byte secret".into()),
    };
    Ok(Subscription {
        endpoint,
        p256dh,
        auth,
    })
}

/// Reads `{endpoint}` (`DELETE /api/push/subscriptions`).
pub fn parse_endpoint(body: &[u8]) -> Result<String, Invalid> {
    match object(body)?.get("endpoint") {
        // No URL holds a control character (nor can PostgreSQL's text hold
        // NUL), so such an endpoint was never stored.
        Some(Value::String(text)) if text.chars().any(char::is_control) => {
            Err("endpoint is not a URL: it holds a control character".into())
        }
        Some(Value::String(text))
            if !text.is_empty() && text.len() <= endpoint::MAX_ENDPOINT_LENGTH =>
        {
            Ok(text.clone())
        }
        Some(_) => Err("endpoint must be a string of 1 to 2048 characters".into()),
        None => Err("endpoint is required".into()),
    }
}

fn object(body: &[u8]) -> Result<serde_json::Map<String, Value>, Invalid> {
    if body.len() > MAX_BODY {
        return Err(format!("the body is larger than {MAX_BODY} bytes"));
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err("the body must be a JSON object".into()),
        Err(_) => Err("the body is not JSON".into()),
    }
}

/// A base64url (padding tolerated) uncompressed P-256 point.
fn p256dh(text: &str) -> Result<String, Invalid> {
    let bytes = decode(text).ok_or("keys.p256dh is not base64url")?;
    if bytes.len() != 65 || bytes[0] != 0x04 {
        return Err("keys.p256dh must be an uncompressed P-256 point (65 bytes)".into());
    }
    p256::PublicKey::from_sec1_bytes(&bytes).map_err(|_| "keys.p256dh is not a point on P-256")?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

fn auth(text: &str) -> Result<String, Invalid> {
    let bytes = decode(text).ok_or("keys.auth is not base64url")?;
    if bytes.len() != 16 {
        return Err("keys.auth must be 16 bytes".into());
    }
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

fn decode(text: &str) -> Option<Vec<u8>> {
    if text.len() > 256 {
        return None;
    }
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::elliptic_curve::sec1::ToEncodedPoint as _;

    fn browser_keys() -> (String, String) {
        let secret = p256::SecretKey::random(&mut rand_core::OsRng);
        let point = secret.public_key().to_encoded_point(false);
        (
            URL_SAFE_NO_PAD.encode(point.as_bytes()),
            URL_SAFE_NO_PAD.encode([7u8; 16]),
        )
    }

    fn body(endpoint: &str, p256dh: &str, auth: &str) -> Vec<u8> {
        serde_json::json!({"endpoint": endpoint, "expirationTime": null,
                           "keys": {"p256dh": p256dh, "auth": auth}})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_browser_subscription_parses() {
        let (p256dh, auth) = browser_keys();
        let parsed = parse(&body("https://push.example/abc", &p256dh, &auth)).unwrap();
        assert_eq!(parsed.p256dh, p256dh);
        assert_eq!(parsed.auth, auth);
        // Padded base64url is read too, and stored canonical.
        let padded = parse(&body(
            "https://push.example/abc",
            &p256dh,
            &format!("{auth}=="),
        ))
        .unwrap();
        assert_eq!(padded.auth, auth);
    }

    #[test]
    fn each_refusal_names_its_field() {
        let (p256dh, auth) = browser_keys();
        let mut off_curve = URL_SAFE_NO_PAD.decode(&p256dh).unwrap();
        off_curve[64] ^= 1;
        let off_curve = URL_SAFE_NO_PAD.encode(off_curve);
        let cases = [
            (b"[]".to_vec(), "the body must be a JSON object"),
            (b"{".to_vec(), "the body is not JSON"),
            (body("nope", &p256dh, &auth), "endpoint"),
            (body("https://p.example/x", "!!", &auth), "keys.p256dh"),
            (body("https://p.example/x", &auth, &auth), "keys.p256dh"),
            (
                body("https://p.example/x", &off_curve, &auth),
                "keys.p256dh",
            ),
            (body("https://p.example/x", &p256dh, &p256dh), "keys.auth"),
            (br#"{"endpoint":"https://p.example/x"}"#.to_vec(), "keys"),
            (
                br#"{"endpoint":"https://p.example/x","expirationTime":"soon","keys":{}}"#.to_vec(),
                "expirationTime",
            ),
            (vec![b' '; MAX_BODY + 1], "larger than"),
        ];
        for (body, named) in cases {
            let error = parse(&body).unwrap_err();
            assert!(error.contains(named), "{error:?} should name {named}");
        }
    }
}
