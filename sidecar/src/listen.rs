//! `ta-feed listen`: LISTEN on the alert channel and print each payload as one JSON line
//! on stdout (flushed per line). Reconnects with back-off on connection loss; NOTIFYs sent
//! while disconnected are not seen (PostgreSQL does not queue them for absent listeners).

use std::future::Future;
use std::io::Write;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_postgres::{AsyncMessage, NoTls};
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::config::redact_database_url;
use crate::shutdown::Shutdown;

/// LISTEN failures (all handled by reconnecting; kept for `is_retryable` symmetry).
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("stdout: {0}")]
    Stdout(#[from] std::io::Error),
}

impl ListenError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, ListenError::Db(_))
    }
}

/// One JSON line for a payload: the database's JSON text as is (key order kept), with
/// line breaks, which JSON allows only as whitespace, turned into spaces; a payload that
/// is not JSON is printed as a JSON string.
pub fn payload_line(payload: &str) -> String {
    if serde_json::from_str::<serde::de::IgnoredAny>(payload).is_ok() {
        payload.replace(['\n', '\r'], " ")
    } else {
        serde_json::Value::String(payload.to_string()).to_string()
    }
}

/// Prints notifications of `channel` until `shutdown`; returns how many were printed.
pub async fn run_listen(
    database_url: &str,
    channel: &str,
    out: &mut (dyn Write + Send),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<u64, ListenError> {
    let (_trigger, mut shutdown) = Shutdown::from_future(shutdown);
    let mut backoff = Backoff::new(Duration::from_millis(500), 2.0, Duration::from_secs(30));
    let mut printed = 0u64;
    loop {
        let connected = tokio::select! {
            r = tokio_postgres::connect(database_url, NoTls) => r,
            _ = shutdown.recv() => return Ok(printed),
        };
        let (client, mut connection) = match connected {
            Ok(c) => c,
            Err(e) => {
                let delay = backoff.next_delay();
                warn!(error = %e, ?delay, "listen: cannot connect, retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => continue,
                    _ = shutdown.recv() => return Ok(printed),
                }
            }
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let pump = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(m) = messages.next().await {
                match m {
                    Ok(AsyncMessage::Notification(n)) => {
                        if tx.send(Ok(n)).is_err() {
                            break;
                        }
                    }
                    Ok(AsyncMessage::Notice(n)) => debug!(notice = %n.message(), "server notice"),
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        break;
                    }
                }
            }
        });
        let listen = client
            .batch_execute(&format!("LISTEN {}", quote_ident(channel)))
            .await;
        if let Err(e) = listen {
            pump.abort();
            let delay = backoff.next_delay();
            warn!(error = %e, ?delay, "listen: LISTEN failed, retrying");
            tokio::select! {
                _ = tokio::time::sleep(delay) => continue,
                _ = shutdown.recv() => return Ok(printed),
            }
        }
        backoff.reset();
        info!(channel, database = %redact_database_url(database_url), "listening");
        loop {
            tokio::select! {
                _ = shutdown.recv() => {
                    pump.abort();
                    return Ok(printed);
                }
                msg = rx.recv() => match msg {
                    Some(Ok(n)) => {
                        writeln!(out, "{}", payload_line(n.payload()))?;
                        out.flush()?;
                        printed += 1;
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
            _ = shutdown.recv() => return Ok(printed),
        }
    }
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

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
        assert_eq!(payload_line("not json"), r#""not json""#);
        assert_eq!(quote_ident("ta_alerts"), "\"ta_alerts\"");
        assert_eq!(ALERT_CHANNEL, "ta_alerts");
    }
}
