//! One sink of `market.alert_sinks`: where to send, how, and how to read the answer.
//!
//! | kind | request | success | retried | permanent |
//! |---|---|---|---|---|
//! | discord | `POST {discord-api-url}/webhooks/{id}/{token}?wait=true` (id, token and any `thread_id` from the saved webhook URL), JSON embed | 2xx | 429 after the body's `retry_after` (seconds), 5xx, network errors, timeouts | other 4xx, a target that is not a webhook URL |
//! | telegram | `POST {telegram-api-url}/bot{token}/sendMessage` `{chat_id, text, parse_mode: "MarkdownV2"}` | 2xx with `ok: true` | 429 after `parameters.retry_after`, 5xx, network | other 4xx (`description` recorded), a malformed token |
//! | webhook | `POST {target}` with the stored alert JSON, `Content-Type: application/json`, `X-Alert-Id`, and `X-Signature: sha256=<hex HMAC-SHA256(signing_secret, body)>` when a secret is set | 2xx | 429 after `Retry-After` (seconds), 5xx, network | other 4xx, 3xx (redirects are not followed), an invalid or non-http(s) URL, a host on a refused address ([`super::net`]) |
//!
//! What is recorded of an answer (`last_error`, the log): the HTTP status, and for Discord
//! and Telegram their API's `message` / `description`, cut to
//! [`crate::text::REMOTE_TEXT_MAX_CHARS`] characters on one line. A webhook's answer body is
//! never recorded (a webhook host is anyone's: its body could be an internal page). At most
//! [`super::net::MAX_RESPONSE_BYTES`] of any answer are read.
//!
//! Secrets (the Discord URL's token, the bot token, webhook URLs, the signing secret) never
//! appear in an error message: reqwest errors are stripped of their URL and every message
//! goes through [`Redactor`], which masks each secret (and its percent-encoded form), and the
//! whole path and query of each URL, as `***`.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use reqwest::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use sha2::Sha256;
use url::Url;

use super::format::AlertPayload;
use super::net::{read_capped, refusal_in, HttpClients};
use crate::text::{sanitize, REMOTE_TEXT_MAX_CHARS};

/// The row of `market.alert_sinks` the notifier reads (compared to detect changes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkRow {
    pub sink_id: i32,
    pub name: String,
    pub kind: String,
    pub target: String,
    pub chat_id: Option<String>,
    pub signing_secret: Option<String>,
}

/// Base URLs of the chat APIs (flags, so tests use local fakes).
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub discord_api: Url,
    pub telegram_api: Url,
}

/// A ready-to-use sink: the request target, or why there is none.
#[derive(Debug, Clone)]
pub struct Sink {
    pub row: SinkRow,
    target: Result<Target, String>,
    redactor: Redactor,
}

#[derive(Debug, Clone)]
enum Target {
    Discord { url: Url },
    Telegram { url: Url, chat_id: String },
    Webhook { url: Url, secret: Option<Vec<u8>> },
}

/// What a failed send means for the delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum ErrorClass {
    /// Try again after the back-off (or the server's Retry-After, if it gave one).
    Retryable { retry_after: Option<Duration> },
    /// HTTP 429: try again after this long; not a sink failure.
    RateLimited { retry_after: Duration },
    /// Will fail the same way again: record and give up on this delivery.
    Permanent,
}

/// A failed send; `message` is redacted.
#[derive(Debug, Clone, PartialEq)]
pub struct SendError {
    pub class: ErrorClass,
    /// What is recorded (`alert_deliveries.last_error`, readable by ta_reader) and logged: the
    /// HTTP status and a reason of ta-feed's own, never text from the remote side.
    pub message: String,
    /// The chat API's own explanation (Discord `message`, Telegram `description`), sanitized and
    /// capped: written to ta-feed's log only. Webhook answers are never read into it.
    pub remote: Option<String>,
}

/// ta-feed's own words for an HTTP status a sink answered (recorded instead of the answer).
fn own_reason(status: StatusCode) -> &'static str {
    match status.as_u16() {
        300..=399 => " (a redirect: redirects are not followed, save the final URL)",
        400 => " (the request was refused as malformed: check chat_id and the sink's kind)",
        401 | 403 => " (not authorized: the webhook URL or bot token is wrong or revoked)",
        404 => " (not found: the webhook or chat does not exist)",
        413 => " (the message was too large for the sink)",
        429 => " (rate limited)",
        500..=599 => " (the sink's server failed)",
        _ => "",
    }
}

/// Longest server-provided Retry-After honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// Retry-After assumed for a 429 that names none.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Masks secrets in text.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    /// Masks `secrets`, their percent-encoded forms, and for URLs the whole path, the whole
    /// query (each alone, together, raw and percent-decoded) and every path segment and query
    /// value of 6 or more characters (webhook ids and tokens, in any case).
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Redactor {
        let mut out: Vec<String> = Vec::new();
        let decoded = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        for s in secrets {
            let s = s.trim();
            if s.len() < 4 {
                continue;
            }
            out.push(s.to_string());
            out.push(
                percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
                    .to_string(),
            );
            if let Ok(u) = Url::parse(s) {
                out.push(u.to_string());
                let path = u.path();
                let mut pieces: Vec<String> = Vec::new();
                if path != "/" {
                    pieces.push(path.to_string());
                }
                if let Some(q) = u.query() {
                    pieces.push(q.to_string());
                    pieces.push(format!("{path}?{q}"));
                }
                for seg in u.path_segments().into_iter().flatten() {
                    if seg.len() >= 6 {
                        pieces.push(seg.to_string());
                    }
                }
                for (_, v) in u.query_pairs() {
                    if v.len() >= 6 {
                        pieces.push(v.into_owned());
                    }
                }
                for p in pieces {
                    let d = decoded(&p);
                    out.push(p);
                    out.push(d);
                }
            }
            // a bot token's secret half
            if let Some((_, tail)) = s.split_once(':') {
                if tail.len() >= 6 {
                    out.push(tail.to_string());
                }
            }
        }
        out.retain(|s| s.len() >= 4);
        out.sort_by_key(|s| std::cmp::Reverse(s.len()));
        out.dedup();
        Redactor { secrets: out }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut t = text.to_string();
        for s in &self.secrets {
            if t.contains(s.as_str()) {
                t = t.replace(s.as_str(), "***");
            }
        }
        t
    }
}

fn http_url(s: &str, what: &str) -> Result<Url, String> {
    let u = Url::parse(s.trim()).map_err(|e| format!("invalid {what} URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!(
            "invalid {what} URL: scheme must be http or https, not \"{}\"",
            u.scheme()
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(format!("invalid {what} URL: no host"));
    }
    Ok(u)
}

/// `base` + path segments (percent-encoded).
fn join(base: &Url, segments: &[&str]) -> Url {
    let mut u = base.clone();
    if let Ok(mut p) = u.path_segments_mut() {
        p.pop_if_empty();
        for s in segments {
            p.push(s);
        }
    }
    u
}

impl Sink {
    pub fn new(row: SinkRow, endpoints: &Endpoints) -> Sink {
        let redactor = Redactor::new(
            [Some(row.target.as_str()), row.signing_secret.as_deref()]
                .into_iter()
                .flatten(),
        );
        let target = Self::target(&row, endpoints);
        Sink {
            row,
            target,
            redactor,
        }
    }

    fn target(row: &SinkRow, endpoints: &Endpoints) -> Result<Target, String> {
        match row.kind.as_str() {
            "discord" => {
                let u = http_url(&row.target, "Discord webhook")?;
                let segs: Vec<&str> = u.path_segments().map(|s| s.collect()).unwrap_or_default();
                let pos = segs.iter().position(|s| *s == "webhooks");
                let (id, token) = match pos.map(|p| (segs.get(p + 1), segs.get(p + 2))) {
                    Some((Some(id), Some(token)))
                        if !id.is_empty()
                            && id.bytes().all(|b| b.is_ascii_digit())
                            && !token.is_empty() =>
                    {
                        (*id, *token)
                    }
                    _ => {
                        return Err("not a Discord webhook URL (expected \
                                    https://discord.com/api/webhooks/ID/TOKEN)"
                            .to_string())
                    }
                };
                let mut url = join(&endpoints.discord_api, &["webhooks", id, token]);
                {
                    let mut q = url.query_pairs_mut();
                    for (k, v) in u.query_pairs().filter(|(k, _)| k != "wait") {
                        q.append_pair(&k, &v);
                    }
                    q.append_pair("wait", "true");
                }
                Ok(Target::Discord { url })
            }
            "telegram" => {
                let token = row.target.trim();
                let valid = token.split_once(':').is_some_and(|(id, secret)| {
                    !id.is_empty()
                        && id.bytes().all(|b| b.is_ascii_digit())
                        && !secret.is_empty()
                        && secret
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                });
                if !valid {
                    return Err("invalid Telegram bot token (expected 123456789:AA... as \
                                @BotFather gives it)"
                        .to_string());
                }
                let chat_id = row
                    .chat_id
                    .clone()
                    .filter(|c| !c.is_empty())
                    .ok_or_else(|| "telegram sink without chat_id".to_string())?;
                let url = join(
                    &endpoints.telegram_api,
                    &[&format!("bot{token}"), "sendMessage"],
                );
                Ok(Target::Telegram { url, chat_id })
            }
            "webhook" => Ok(Target::Webhook {
                url: http_url(&row.target, "webhook")?,
                secret: row.signing_secret.as_ref().map(|s| s.as_bytes().to_vec()),
            }),
            other => Err(format!("unknown sink kind \"{other}\"")),
        }
    }

    pub fn name(&self) -> &str {
        &self.row.name
    }

    pub fn kind(&self) -> &str {
        &self.row.kind
    }

    pub fn redact(&self, text: &str) -> String {
        self.redactor.redact(text)
    }

    /// Why this sink cannot send at all (invalid target), if so.
    pub fn config_error(&self) -> Option<&str> {
        self.target.as_ref().err().map(String::as_str)
    }

    /// Sends one alert (`payload` is the stored JSON text).
    pub async fn send(&self, http: &HttpClients, payload: &str) -> Result<(), SendError> {
        let target = self.target.as_ref().map_err(|e| SendError {
            class: ErrorClass::Permanent,
            message: self.redact(e),
            remote: None,
        })?;
        if let Target::Webhook { url, .. } = target {
            // an IP literal is never resolved: the resolver cannot see it
            if let Err(refused) = http.policy.check_host(url.host()) {
                return Err(SendError {
                    class: ErrorClass::Permanent,
                    message: refused.to_string(),
                    remote: None,
                });
            }
        }
        let parsed = || -> Result<AlertPayload, SendError> {
            serde_json::from_str(payload).map_err(|e| SendError {
                class: ErrorClass::Permanent,
                message: format!("alert payload cannot be formatted: {e}"),
                remote: None,
            })
        };
        let request = match target {
            Target::Discord { url } => http.api.post(url.clone()).json(&parsed()?.discord_body()),
            Target::Telegram { url, chat_id } => {
                http.api.post(url.clone()).json(&serde_json::json!({
                    "chat_id": chat_id,
                    "text": parsed()?.telegram_text(),
                    "parse_mode": "MarkdownV2",
                    "link_preview_options": {"is_disabled": true},
                }))
            }
            Target::Webhook { url, secret } => {
                let mut r = http
                    .webhook
                    .post(url.clone())
                    .header(CONTENT_TYPE, "application/json")
                    .body(payload.to_string());
                if let Some(id) = serde_json::from_str::<serde_json::Value>(payload)
                    .ok()
                    .and_then(|v| v.get("alert_id").and_then(serde_json::Value::as_i64))
                {
                    r = r.header("X-Alert-Id", id.to_string());
                }
                if let Some(key) = secret {
                    r = r.header("X-Signature", signature(key, payload.as_bytes()));
                }
                r
            }
        };
        let response = request.send().await.map_err(|e| {
            if let Some(refused) = refusal_in(&e) {
                return SendError {
                    class: ErrorClass::Permanent,
                    message: refused.to_string(),
                    remote: None,
                };
            }
            SendError {
                class: ErrorClass::Retryable { retry_after: None },
                message: self.redact(&sanitize(&reqwest_error_text(e), 2 * REMOTE_TEXT_MAX_CHARS)),
                remote: None,
            }
        })?;
        let status = response.status();
        let headers = response.headers().clone();
        // a webhook's answer is never recorded, so never read; the chat APIs' is read up to
        // MAX_RESPONSE_BYTES
        let body = match target {
            Target::Webhook { .. } => Vec::new(),
            _ => read_capped(response).await,
        };
        self.classify(status, &headers, &body)
    }

    fn classify(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), SendError> {
        let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
        let telegram = matches!(self.target, Ok(Target::Telegram { .. }));
        // the API's own explanation (Discord `message`, Telegram `description`), one short line
        let api_text = |field: &str| -> String {
            json.as_ref()
                .and_then(|j| j.get(field))
                .and_then(|d| d.as_str())
                .map(|d| sanitize(d, REMOTE_TEXT_MAX_CHARS))
                .unwrap_or_default()
        };
        if status.is_success() {
            if telegram
                && json
                    .as_ref()
                    .and_then(|j| j.get("ok"))
                    .and_then(|v| v.as_bool())
                    == Some(false)
            {
                return Err(SendError {
                    class: ErrorClass::Permanent,
                    message: "Telegram answered ok=false (its description is in ta-feed's log)"
                        .to_string(),
                    remote: Some(self.redact(&api_text("description"))).filter(|t| !t.is_empty()),
                });
            }
            return Ok(());
        }
        // the chat API's explanation goes to the log only; what is recorded is ours
        let remote = match self.target {
            Ok(Target::Telegram { .. }) => api_text("description"),
            Ok(Target::Discord { .. }) => api_text("message"),
            _ => String::new(),
        };
        let remote = Some(self.redact(&remote)).filter(|t| !t.is_empty());
        let message = format!("HTTP {status}{}", own_reason(status));
        let header_retry = headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok());
        if status == StatusCode::TOO_MANY_REQUESTS {
            let body_retry = json.as_ref().and_then(|j| {
                j.get("retry_after")
                    .or_else(|| j.get("parameters").and_then(|p| p.get("retry_after")))
                    .and_then(|v| v.as_f64())
            });
            return Err(SendError {
                class: ErrorClass::RateLimited {
                    retry_after: retry_after(body_retry.or(header_retry))
                        .unwrap_or(DEFAULT_RETRY_AFTER),
                },
                message,
                remote: remote.clone(),
            });
        }
        if status.is_server_error() {
            return Err(SendError {
                class: ErrorClass::Retryable {
                    retry_after: retry_after(header_retry),
                },
                message,
                remote: remote.clone(),
            });
        }
        Err(SendError {
            class: ErrorClass::Permanent,
            message,
            remote,
        })
    }
}

fn retry_after(seconds: Option<f64>) -> Option<Duration> {
    seconds
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(MAX_RETRY_AFTER.as_secs_f64())))
}

/// reqwest's error and its causes, without the URL.
fn reqwest_error_text(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let e = e.without_url();
    let mut parts = vec![kind.to_string(), e.to_string()];
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// `sha256=<lower-case hex HMAC-SHA256(key, body)>`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(7 + digest.len() * 2);
    hex.push_str("sha256=");
    for b in digest.iter() {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints() -> Endpoints {
        Endpoints {
            discord_api: Url::parse("http://127.0.0.1:9/api").unwrap(),
            telegram_api: Url::parse("http://127.0.0.1:9/").unwrap(),
        }
    }

    fn row(kind: &str, target: &str) -> SinkRow {
        SinkRow {
            sink_id: 1,
            name: "s".into(),
            kind: kind.into(),
            target: target.into(),
            chat_id: (kind == "telegram").then(|| "-100123".to_string()),
            signing_secret: None,
        }
    }

    #[test]
    fn targets() {
        let s = Sink::new(
            row(
                "discord",
                "https://discord.com/api/webhooks/1234/tok_EN-x?thread_id=99",
            ),
            &endpoints(),
        );
        match &s.target {
            Ok(Target::Discord { url }) => assert_eq!(
                url.as_str(),
                "http://127.0.0.1:9/api/webhooks/1234/tok_EN-x?thread_id=99&wait=true"
            ),
            other => panic!("{other:?}"),
        }
        let s = Sink::new(
            row("discord", "https://discord.com/channels/1/2"),
            &endpoints(),
        );
        assert!(s
            .config_error()
            .unwrap()
            .contains("not a Discord webhook URL"));
        let s = Sink::new(row("telegram", "123456:AAH-x_y"), &endpoints());
        match &s.target {
            Ok(Target::Telegram { url, chat_id }) => {
                assert_eq!(
                    url.as_str(),
                    "http://127.0.0.1:9/bot123456:AAH-x_y/sendMessage"
                );
                assert_eq!(chat_id, "-100123");
            }
            other => panic!("{other:?}"),
        }
        let s = Sink::new(row("telegram", "not a token"), &endpoints());
        assert!(s
            .config_error()
            .unwrap()
            .contains("invalid Telegram bot token"));
        for bad in ["htp//nope", "ftp://h/x", "http://", "not a url at all"] {
            let s = Sink::new(row("webhook", bad), &endpoints());
            let e = s.config_error().unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(e.starts_with("invalid webhook URL"), "{e}");
        }
    }

    #[test]
    fn redaction() {
        let r = Redactor::new([
            "https://discord.com/api/webhooks/1234567/s3cr3t-T0ken",
            "k3y!",
        ]);
        let t = r.redact(
            "error sending request for url (https://discord.com/api/webhooks/1234567/s3cr3t-T0ken?wait=true) \
             and path /webhooks/1234567/s3cr3t-T0ken and %2Fs3cr3t-T0ken and key k3y!",
        );
        assert!(
            !t.contains("s3cr3t") && !t.contains("1234567") && !t.contains("k3y!"),
            "{t}"
        );
        let r = Redactor::new(["123456:AAH-secret_part"]);
        let t = r.redact("POST /bot123456:AAH-secret_part/sendMessage; token AAH-secret_part");
        assert!(!t.contains("secret_part"), "{t}");
    }

    #[test]
    fn signature_matches_rfc4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?"
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn classification() {
        let s = Sink::new(
            row("discord", "https://discord.com/api/webhooks/1/t0ken123"),
            &endpoints(),
        );
        let h = HeaderMap::new();
        assert!(s.classify(StatusCode::NO_CONTENT, &h, b"").is_ok());
        let e = s
            .classify(
                StatusCode::TOO_MANY_REQUESTS,
                &h,
                br#"{"message":"You are being rate limited.","retry_after":0.25,"global":false}"#,
            )
            .unwrap_err();
        assert_eq!(
            e.class,
            ErrorClass::RateLimited {
                retry_after: Duration::from_millis(250)
            }
        );
        let e = s
            .classify(StatusCode::INTERNAL_SERVER_ERROR, &h, b"oops")
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::Retryable { retry_after: None });
        assert_eq!(
            e.message, "HTTP 500 Internal Server Error (the sink's server failed)",
            "a body that is not the API's JSON is not recorded"
        );
        assert_eq!(e.remote, None);
        let e = s
            .classify(
                StatusCode::NOT_FOUND,
                &h,
                br#"{"message": "Unknown Webhook", "code": 10015}"#,
            )
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::Permanent);
        assert_eq!(
            e.message,
            "HTTP 404 Not Found (not found: the webhook or chat does not exist)"
        );
        assert_eq!(
            e.remote.as_deref(),
            Some("Unknown Webhook"),
            "logged, not stored"
        );
        let t = Sink::new(row("telegram", "1:abcdef"), &endpoints());
        let e = t
            .classify(
                StatusCode::TOO_MANY_REQUESTS,
                &h,
                br#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 3","parameters":{"retry_after":3}}"#,
            )
            .unwrap_err();
        assert_eq!(
            e.class,
            ErrorClass::RateLimited {
                retry_after: Duration::from_secs(3)
            }
        );
        let e = t
            .classify(
                StatusCode::BAD_REQUEST,
                &h,
                br#"{"ok":false,"error_code":400,"description":"Bad Request: chat not found"}"#,
            )
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::Permanent);
        assert!(e
            .message
            .starts_with("HTTP 400 Bad Request (the request was refused"));
        assert_eq!(e.remote.as_deref(), Some("Bad Request: chat not found"));
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        let w = Sink::new(row("webhook", "http://example.invalid/hook"), &endpoints());
        let e = w
            .classify(StatusCode::TOO_MANY_REQUESTS, &h, b"")
            .unwrap_err();
        assert_eq!(
            e.class,
            ErrorClass::RateLimited {
                retry_after: Duration::from_secs(7)
            }
        );
        let e = w
            .classify(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), b"")
            .unwrap_err();
        assert_eq!(
            e.class,
            ErrorClass::RateLimited {
                retry_after: DEFAULT_RETRY_AFTER
            }
        );
        let e = w
            .classify(StatusCode::MOVED_PERMANENTLY, &HeaderMap::new(), b"")
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::Permanent);
    }

    /// Finding 1/6: what a sink answers never reaches `last_error`: it records the status and a
    /// reason of ta-feed's own; a chat API's explanation reaches the log only, as one short line.
    #[test]
    fn remote_text_is_never_stored_whole() {
        let h = HeaderMap::new();
        let w = Sink::new(row("webhook", "http://example.invalid/h"), &endpoints());
        for body in [
            &b"db_password=hunter2 aws_key=AKIA..."[..],
            br#"{"message": "db_password=hunter2"}"#,
            b"\n2026-12-07T00:00:00Z ERROR ta_feed: FORGED LINE",
        ] {
            let e = w
                .classify(StatusCode::INTERNAL_SERVER_ERROR, &h, body)
                .unwrap_err();
            assert_eq!(
                e.message,
                "HTTP 500 Internal Server Error (the sink's server failed)"
            );
            assert_eq!(e.remote, None);
            let e = w.classify(StatusCode::BAD_REQUEST, &h, body).unwrap_err();
            assert!(
                e.message.starts_with("HTTP 400 Bad Request ("),
                "{}",
                e.message
            );
            assert!(!e.message.contains("hunter2") && e.remote.is_none());
        }
        let d = Sink::new(
            row("discord", "https://discord.com/api/webhooks/1/t0ken123"),
            &endpoints(),
        );
        let huge = format!("first\nERROR ta_feed: FORGED LINE {}", "x".repeat(1 << 20));
        let body = serde_json::json!({ "message": huge }).to_string();
        let e = d
            .classify(StatusCode::BAD_REQUEST, &h, body.as_bytes())
            .unwrap_err();
        assert!(!e.message.contains("FORGED"), "{}", e.message);
        let remote = e.remote.expect("Discord's message is logged");
        assert!(!remote.contains('\n'), "{remote}");
        assert!(remote.starts_with("first ERROR ta_feed: FORGED LINE x"));
        assert!(remote.chars().count() <= crate::text::REMOTE_TEXT_MAX_CHARS + 8);
        let t = Sink::new(row("telegram", "1:abcdef"), &endpoints());
        let body =
            serde_json::json!({"ok": false, "description": "bad\r\n\u{1b}[31mred"}).to_string();
        let e = t.classify(StatusCode::OK, &h, body.as_bytes()).unwrap_err();
        assert_eq!(
            e.message,
            "Telegram answered ok=false (its description is in ta-feed's log)"
        );
        assert_eq!(e.remote.as_deref(), Some("bad [31mred"));
    }

    /// Finding 7: the whole path and query of a webhook URL are masked, whatever their case
    /// or length.
    #[test]
    fn redaction_masks_whole_path_and_query() {
        let target = "https://hooks.example.com/x/hooks/abcdefghsecret?token=abc";
        let r = Redactor::new([target]);
        for text in [
            "echo: /x/hooks/abcdefghsecret?token=abc",
            "path /x/hooks/abcdefghsecret and query token=abc",
            "encoded %2Fx%2Fhooks%2Fabcdefghsecret",
            "just the segment abcdefghsecret",
        ] {
            let t = r.redact(text);
            assert!(
                !t.contains("abcdefghsecret") && !t.contains("token=abc"),
                "{text} -> {t}"
            );
        }
        // a lower-case segment and a short value: masked as part of the whole path/query
        let r = Redactor::new(["http://h.example/lowercasesecret/x?k=ab1"]);
        let t = r.redact("GET /lowercasesecret/x?k=ab1");
        assert_eq!(t, "GET ***", "{t}");
    }
}
