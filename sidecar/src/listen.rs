//! `ta-feed listen`: LISTEN on the alert channel and print each alert as one JSON line on
//! stdout (flushed per line). Reconnects with back-off on connection loss; NOTIFYs sent while
//! disconnected are not seen (PostgreSQL does not queue them for absent listeners: use
//! `ta-feed notify` and `market.alert_deliveries` for delivery that survives restarts).
//!
//! **Only alerts stored in `market.alert_history` are printed.** Any role that may connect
//! can `NOTIFY ta_alerts, '...'` (PostgreSQL has no privilege for NOTIFY), so a payload is
//! trusted only if its `alert_id` (version 2; version 1: its key symbol, rule_id, open_time)
//! names a row of `market.alert_history` whose payload is the same JSON; the line printed is
//! the stored row's payload. Anything else (no `alert_id`,
//! an unknown one, a different payload, a replay of an alert already printed) is a *forged
//! notification*: logged at WARN with the reason, counted in
//! `ta_feed_forged_notifications_total`, and not printed. The listening role needs `SELECT` on
//! `market.alert_history` (`ta_reader` has it).

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::io::Write;
use std::time::Duration;

use tokio_postgres::Client;
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::constants::notify_metric as metric;
use crate::db::{redact_database_url, DbError};
use crate::shutdown::Shutdown;

/// LISTEN failures (database errors are handled by reconnecting).
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("{0}")]
    Connect(#[from] DbError),
    #[error("stdout: {0}")]
    Stdout(#[from] std::io::Error),
}

impl ListenError {
    pub fn is_retryable(&self) -> bool {
        match self {
            ListenError::Db(_) => true,
            ListenError::Connect(e) => e.is_retryable(),
            ListenError::Stdout(_) => false,
        }
    }
}

/// What a notification on the alert channel turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The alert is in `market.alert_history` with this payload (the stored JSON text);
    /// `key` identifies it (`alert_id`, or the version-1 key symbol/rule_id/open_time).
    Genuine { key: String, payload: String },
    /// Not an alert of `market.alert_history`; the reason says why.
    Forged(String),
}

/// Checks a NOTIFY payload against `market.alert_history` (see the module doc). Payloads
/// with an `alert_id` (version 2) are looked up by it; version-1 payloads (no `alert_id`) by
/// their key (symbol, rule_id, open_time).
pub async fn verify_notification(
    client: &Client,
    payload: &str,
) -> Result<Verdict, tokio_postgres::Error> {
    let value: serde_json::Value = match serde_json::from_str(payload) {
        Ok(v) => v,
        Err(_) => return Ok(Verdict::Forged("payload is not JSON".to_string())),
    };
    let (key, row) = if let Some(alert_id) =
        value.get("alert_id").and_then(serde_json::Value::as_i64)
    {
        let row = client
            .query_opt(
                "SELECT payload::text, payload = $2::text::jsonb \
                   FROM market.alert_history WHERE alert_id = $1",
                &[&alert_id, &payload],
            )
            .await?;
        (format!("alert_id {alert_id}"), row)
    } else {
        let symbol = value.get("symbol").and_then(serde_json::Value::as_str);
        let rule_id = value.get("rule_id").and_then(serde_json::Value::as_i64);
        let open_time = value.get("open_time").and_then(serde_json::Value::as_str);
        let (Some(symbol), Some(rule_id), Some(open_time)) = (symbol, rule_id, open_time) else {
            return Ok(Verdict::Forged(
                "payload has neither alert_id nor symbol, rule_id and open_time".to_string(),
            ));
        };
        let Some(open_time) = chrono::DateTime::parse_from_rfc3339(open_time)
            .ok()
            .map(|t| t.with_timezone(&chrono::Utc))
        else {
            return Ok(Verdict::Forged(
                "open_time is not an RFC 3339 time".to_string(),
            ));
        };
        let Ok(rule_id) = i32::try_from(rule_id) else {
            return Ok(Verdict::Forged("rule_id out of range".to_string()));
        };
        let row = client
            .query_opt(
                "SELECT payload::text, payload = $4::text::jsonb FROM market.alert_history \
                  WHERE symbol = $1 AND rule_id = $2 AND open_time = $3",
                &[&symbol, &rule_id, &open_time, &payload],
            )
            .await?;
        (
            format!("{symbol}/{rule_id}/{}", open_time.timestamp_millis()),
            row,
        )
    };
    Ok(match row {
        None => Verdict::Forged(format!("{key} is not in market.alert_history")),
        Some(r) if !r.get::<_, bool>(1) => Verdict::Forged(format!(
            "payload differs from market.alert_history row {key}"
        )),
        Some(r) => Verdict::Genuine {
            key,
            payload: r.get(0),
        },
    })
}

/// The alerts printed most recently (a replayed genuine NOTIFY is not printed twice).
#[derive(Debug, Default)]
struct Recent {
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl Recent {
    const CAPACITY: usize = 16_384;

    /// False if `key` was seen already.
    fn insert(&mut self, key: &str) -> bool {
        if !self.set.insert(key.to_string()) {
            return false;
        }
        self.order.push_back(key.to_string());
        if self.order.len() > Self::CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

/// One JSON line for a payload: the database's JSON text as is (key order kept), with
/// line breaks, which JSON allows only as whitespace, turned into spaces.
pub fn payload_line(payload: &str) -> String {
    payload.replace(['\n', '\r'], " ")
}

/// Logs and counts a forged notification.
pub fn report_forged(channel: &str, reason: &str, payload: &str) {
    // anyone may NOTIFY: the payload (and a reason quoting it) is one capped line in the log
    let shown = crate::text::sanitize(payload, crate::text::REMOTE_TEXT_MAX_CHARS);
    let reason = crate::text::sanitize(reason, crate::text::REMOTE_TEXT_MAX_CHARS);
    warn!(channel, reason = %reason, payload = %shown, "forged notification ignored");
    metrics::counter!(metric::FORGED_NOTIFICATIONS).increment(1);
}

/// Counts of one `run_listen`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListenSummary {
    /// Alerts printed.
    pub printed: u64,
    /// Notifications ignored as forged.
    pub forged: u64,
}

/// Prints the genuine alerts of `channel` until `shutdown`.
pub async fn run_listen(
    database_url: &str,
    channel: &str,
    out: &mut (dyn Write + Send),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<ListenSummary, ListenError> {
    let (_trigger, mut shutdown) = Shutdown::from_future(shutdown);
    let mut backoff = Backoff::new(Duration::from_millis(500), 2.0, Duration::from_secs(30));
    let mut summary = ListenSummary::default();
    let mut recent = Recent::default();
    loop {
        let connected = tokio::select! {
            r = crate::db::connect_listening(database_url) => r,
            _ = shutdown.recv() => return Ok(summary),
        };
        let (client, mut rx, pump) = match connected {
            Ok(c) => c,
            Err(e) if e.is_retryable() => {
                let delay = backoff.next_delay();
                warn!(error = %e, ?delay, "listen: cannot connect, retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => continue,
                    _ = shutdown.recv() => return Ok(summary),
                }
            }
            Err(e) => return Err(e.into()),
        };
        let listen = client
            .batch_execute(&format!("LISTEN {}", quote_ident(channel)))
            .await;
        if let Err(e) = listen {
            pump.abort();
            let delay = backoff.next_delay();
            warn!(error = %e, ?delay, "listen: LISTEN failed, retrying");
            tokio::select! {
                _ = tokio::time::sleep(delay) => continue,
                _ = shutdown.recv() => return Ok(summary),
            }
        }
        backoff.reset();
        info!(channel, database = %redact_database_url(database_url), "listening");
        loop {
            tokio::select! {
                _ = shutdown.recv() => {
                    pump.abort();
                    return Ok(summary);
                }
                msg = rx.recv() => match msg {
                    Some(Ok(n)) => {
                        let verdict = match verify_notification(&client, n.payload()).await {
                            Ok(v) => v,
                            Err(e) => {
                                warn!(error = %e, "listen: alert lookup failed, reconnecting");
                                break;
                            }
                        };
                        match verdict {
                            Verdict::Genuine { key, payload } => {
                                if recent.insert(&key) {
                                    writeln!(out, "{}", payload_line(&payload))?;
                                    out.flush()?;
                                    summary.printed += 1;
                                } else {
                                    report_forged(channel, &format!("replay of {key}, already printed"), n.payload());
                                    summary.forged += 1;
                                }
                            }
                            Verdict::Forged(reason) => {
                                report_forged(channel, &reason, n.payload());
                                summary.forged += 1;
                            }
                        }
                    }
                    Some(Err(e)) => {
                        warn!(error = %e, "listen: connection lost, reconnecting");
                        break;
                    }
                    None => {
                        warn!("listen: connection closed, reconnecting");
                        break;
                    }
                }
            }
        }
        pump.abort();
        drop(client);
        let delay = backoff.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.recv() => return Ok(summary),
        }
    }
}

pub use crate::db::quote_ident;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::constants::ALERT_CHANNEL;

    #[test]
    fn payload_lines() {
        assert_eq!(
            payload_line("{\n \"b\": 1,\r\n \"a\": \"x\\ny\"}"),
            r#"{  "b": 1,   "a": "x\ny"}"#
        );
        assert_eq!(quote_ident("ta_alerts"), "\"ta_alerts\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(ALERT_CHANNEL, "ta_alerts");
    }

    #[test]
    fn recent_ids_are_bounded() {
        let mut r = Recent::default();
        assert!(r.insert("1"));
        assert!(!r.insert("1"));
        for i in 2..=(Recent::CAPACITY + 1) {
            assert!(r.insert(&i.to_string()));
        }
        // 1 fell out of the window
        assert!(r.insert("1"));
        assert_eq!(r.order.len(), Recent::CAPACITY);
        assert_eq!(r.set.len(), Recent::CAPACITY);
    }
}
