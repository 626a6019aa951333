//! What a push carries and the request that carries it: the JSON herald's
//! service worker reads, at most [`MAX_PAYLOAD`] bytes, encrypted for the
//! subscription (RFC 8291 `aes128gcm`, by `web-push-native`), with `TTL`,
//! `Urgency`, `Topic` and the VAPID `Authorization`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::Url;
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::vapid::VapidKey;

/// The largest decrypted body: push services accept about 4 KiB after
/// encryption, and 3,000 bytes leaves room for every one of them.
pub const MAX_PAYLOAD: usize = 3000;

/// How long a VAPID token is good for (RFC 8292 allows 24 hours at most).
const TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// The fields of a notification that a push shows.
#[derive(Debug, Clone)]
pub struct Shown {
    pub id: Uuid,
    pub kind: String,
    pub importance: String,
    pub title: String,
    pub message: String,
    pub action_url: Option<String>,
    pub created_at: OffsetDateTime,
}

/// `{"type": "notification", "notification": {...}}`, at most
/// [`MAX_PAYLOAD`] bytes: the message is cut (marked with `…`) to the
/// longest prefix that fits; if even an empty message does not fit,
/// `actionUrl` is dropped, then the title is cut the same way.
pub fn notification(shown: &Shown) -> Vec<u8> {
    let whole = encode(shown);
    if whole.len() <= MAX_PAYLOAD {
        return whole;
    }
    let mut shown = shown.clone();
    let message = std::mem::take(&mut shown.message);
    if encode(&shown).len() > MAX_PAYLOAD {
        shown.action_url = None;
    }
    if encode(&shown).len() > MAX_PAYLOAD {
        let title = std::mem::take(&mut shown.title);
        shown.title = longest_fitting(&shown, &title, |s, t| s.title = t);
        return encode(&shown);
    }
    shown.message = longest_fitting(&shown, &message, |s, m| s.message = m);
    encode(&shown)
}

fn encode(shown: &Shown) -> Vec<u8> {
    json!({
        "type": "notification",
        "notification": {
            "id": shown.id,
            "kind": shown.kind,
            "importance": shown.importance,
            "title": shown.title,
            "message": shown.message,
            "actionUrl": shown.action_url,
            "createdAt": crate::wire::rfc3339(shown.created_at),
        },
    })
    .to_string()
    .into_bytes()
}

/// The longest prefix of `text` (with `…` after it) that, set into `shown`
/// by `set`, keeps the payload within [`MAX_PAYLOAD`]: a binary search over
/// character counts, since escaping makes bytes and characters differ.
fn longest_fitting(shown: &Shown, text: &str, set: impl Fn(&mut Shown, String)) -> String {
    let boundaries: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    let cut = |chars: usize| -> String {
        if chars == 0 {
            String::new()
        } else {
            format!(
                "{}…",
                text[..boundaries.get(chars).copied().unwrap_or(text.len())].trim_end()
            )
        }
    };
    let fits = |chars: usize| {
        let mut candidate = shown.clone();
        set(&mut candidate, cut(chars));
        encode(&candidate).len() <= MAX_PAYLOAD
    };
    let (mut low, mut high) = (0, boundaries.len());
    while low < high {
        let middle = (low + high).div_ceil(2);
        if fits(middle) {
            low = middle;
        } else {
            high = middle - 1;
        }
    }
    cut(low)
}

/// `{"type": "dismiss", "notificationId"}`: the service worker closes it.
pub fn dismiss(id: Uuid) -> Vec<u8> {
    json!({"type": "dismiss", "notificationId": id})
        .to_string()
        .into_bytes()
}

/// `Urgency` (RFC 8030 §5.3) for an importance.
pub fn urgency(importance: &str) -> &'static str {
    match importance {
        "low" => "low",
        "high" | "urgent" => "high",
        _ => "normal",
    }
}

/// One push to one subscription.
pub struct Push<'a> {
    pub endpoint: &'a Url,
    pub p256dh: &'a str,
    pub auth: &'a str,
    pub notification_id: Uuid,
    pub urgency: &'static str,
    pub ttl: Duration,
    pub body: Vec<u8>,
}

impl Push<'_> {
    /// The request, encrypted and signed.
    pub fn request(
        self,
        client: &reqwest::Client,
        key: &VapidKey,
        subject: &str,
    ) -> Result<reqwest::RequestBuilder, String> {
        let p256dh = URL_SAFE_NO_PAD
            .decode(self.p256dh)
            .ok()
            .and_then(|bytes| p256::PublicKey::from_sec1_bytes(&bytes).ok())
            .ok_or("the stored p256dh is not a P-256 point")?;
        let auth: [u8; 16] = URL_SAFE_NO_PAD
            .decode(self.auth)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or("the stored auth is not 16 bytes")?;
        let auth = web_push_native::Auth::from(auth);
        let body = web_push_native::encrypt(self.body, &p256dh, &auth)
            .map_err(|e| format!("encrypting the push: {e}"))?;
        let expires = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_add(TOKEN_LIFETIME)
            .as_secs();
        let audience = super::endpoint::origin(self.endpoint);
        Ok(client
            .post(self.endpoint.clone())
            .header("TTL", self.ttl.as_secs().to_string())
            .header("Urgency", self.urgency)
            .header("Topic", self.notification_id.simple().to_string())
            .header("Content-Encoding", "aes128gcm")
            .header("Content-Type", "application/octet-stream")
            .header(
                "Authorization",
                key.authorization(&audience, subject, expires),
            )
            .body(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(message: String, action_url: Option<String>) -> Shown {
        Shown {
            id: Uuid::new_v4(),
            kind: "order.shipped".into(),
            importance: "high".into(),
            title: "Your order shipped".into(),
            message,
            action_url,
            created_at: OffsetDateTime::now_utc(),
        }
    }

    #[test]
    fn a_long_message_is_cut_to_fit_and_short_ones_are_whole() {
        let whole = notification(&shown("on its way".into(), None));
        let value: serde_json::Value = serde_json::from_slice(&whole).unwrap();
        assert_eq!(value["notification"]["message"], "on its way");
        assert_eq!(value["notification"]["actionUrl"], serde_json::Value::Null);
        for message in ["é".repeat(4000), "\"".repeat(4000), "\u{1}".repeat(4000)] {
            let body = notification(&shown(message, Some("https://a.example/x".into())));
            assert!(body.len() <= MAX_PAYLOAD, "{}", body.len());
            let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert!(
                value["notification"]["message"]
                    .as_str()
                    .unwrap()
                    .ends_with('…')
            );
            assert_eq!(value["notification"]["actionUrl"], "https://a.example/x");
        }
        let huge_url = Some(format!("https://a.example/{}", "x".repeat(5000)));
        let body = notification(&shown("hi".into(), huge_url));
        assert!(body.len() <= MAX_PAYLOAD);
    }

    #[test]
    fn urgency_follows_importance() {
        assert_eq!(urgency("low"), "low");
        assert_eq!(urgency("normal"), "normal");
        assert_eq!(urgency("high"), "high");
        assert_eq!(urgency("urgent"), "high");
    }
}
