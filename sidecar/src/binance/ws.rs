//! Binance combined-stream WebSocket client for `<symbol>@kline_1m`, with reconnect
//! back-off {1 s, ×2, 60 s}, reset after a connection delivered a closed kline (a
//! successful minute), proactive reconnect before Binance's 24 h connection limit, and
//! `serverShutdown` / close-frame handling.
//!
//! Binance docs: <https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams>

use std::future::Future;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::binance::model::{parse_ws_message, Kline, WsMessage};
use crate::binance::rest::truncate;
use crate::constants::{metric, KLINE_STREAM_SUFFIX, MAX_STREAMS_PER_CONNECTION, WS_COMBINED_PATH};
use crate::shutdown::Shutdown;

/// WebSocket failures (each ends one session; the loop reconnects).
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    #[error("connect to {url} failed: {source}")]
    Connect {
        url: String,
        #[source]
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
    #[error("connection error: {0}")]
    Connection(#[source] Box<tokio_tungstenite::tungstenite::Error>),
    #[error("no pong/traffic for {0:?}")]
    Idle(Duration),
}

impl WsError {
    /// Every WebSocket failure is handled by reconnecting.
    pub fn is_retryable(&self) -> bool {
        true
    }
}

/// What the stream hands to the writer.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedEvent {
    /// A closed kline (`k.x == true`) that passed validation; `event_time` is `E`.
    Closed { kline: Kline, event_time: i64 },
    /// A closed kline that failed validation (to be logged as `rejected`).
    Rejected {
        symbol: String,
        open_time_ms: i64,
        reason: String,
        raw: String,
    },
    /// Connection `connection` is established and subscribed.
    Connected { connection: usize },
    /// Connection `connection` ended (it reconnects unless shutting down).
    Disconnected { connection: usize },
}

/// Why a session ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// Shutdown was requested: stop reconnecting.
    Shutdown,
    /// The connection reached its maximum age: reconnect at once.
    MaxAge,
    /// The server sent `serverShutdown`, a close frame, or the stream ended.
    ServerClosed(String),
    /// A connect or I/O error.
    Failed(WsError),
}

/// The outcome of one connection attempt.
#[derive(Debug)]
pub struct Session {
    pub end: SessionEnd,
    /// True when the session delivered at least one closed kline (resets back-off).
    pub delivered: bool,
}

/// Combined-stream URLs for `symbols`, at most 1024 streams per connection:
/// `{base}/stream?streams=btcusdt@kline_1m/ethusdt@kline_1m`.
pub fn stream_urls(base: &str, symbols: &[String]) -> Vec<String> {
    stream_urls_with_limit(base, symbols, MAX_STREAMS_PER_CONNECTION)
}

/// [`stream_urls`] with an explicit per-connection limit.
pub fn stream_urls_with_limit(
    base: &str,
    symbols: &[String],
    per_connection: usize,
) -> Vec<String> {
    let base = base.trim_end_matches('/');
    symbols
        .chunks(per_connection.max(1))
        .map(|chunk| {
            let streams = chunk
                .iter()
                .map(|s| format!("{}{KLINE_STREAM_SUFFIX}", s.to_ascii_lowercase()))
                .collect::<Vec<_>>()
                .join("/");
            format!("{base}{WS_COMBINED_PATH}?streams={streams}")
        })
        .collect()
}

/// Runs `session` until it reports [`SessionEnd::Shutdown`] or `shutdown` fires, waiting
/// `backoff` between failed sessions (none after [`SessionEnd::MaxAge`]) and resetting it
/// after a session that delivered data. Returns the number of reconnects.
pub async fn reconnect_loop<F, Fut>(
    mut backoff: Backoff,
    mut shutdown: Shutdown,
    mut session: F,
) -> u64
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Session>,
{
    let mut reconnects = 0u64;
    loop {
        if shutdown.is_shutdown() {
            return reconnects;
        }
        let s = session().await;
        if s.delivered {
            backoff.reset();
        }
        match s.end {
            SessionEnd::Shutdown => return reconnects,
            SessionEnd::MaxAge => {
                info!("connection reached its maximum age, reconnecting now");
            }
            SessionEnd::ServerClosed(reason) => {
                let delay = backoff.next_delay();
                warn!(%reason, ?delay, "stream closed by server, reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.recv() => return reconnects,
                }
            }
            SessionEnd::Failed(error) => {
                let delay = backoff.next_delay();
                warn!(%error, ?delay, "stream failed, reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.recv() => return reconnects,
                }
            }
        }
        reconnects += 1;
        metrics::counter!(metric::RECONNECTS).increment(1);
    }
}

/// Settings of one stream connection.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    pub id: usize,
    pub url: String,
    pub max_age: Duration,
    /// Reconnect when nothing (data, ping) arrived for this long.
    pub idle_timeout: Duration,
}

/// Keeps one combined-stream connection alive, forwarding closed klines to `tx`.
pub async fn run_connection(
    cfg: ConnectionConfig,
    backoff: Backoff,
    tx: UnboundedSender<FeedEvent>,
    shutdown: Shutdown,
) -> u64 {
    let session_shutdown = shutdown.clone();
    reconnect_loop(backoff, shutdown, || {
        session(cfg.clone(), tx.clone(), session_shutdown.clone())
    })
    .await
}

/// One connection: connect, read until it ends. Pings are answered by tungstenite
/// (the pong is queued while reading and flushed explicitly here).
pub async fn session(
    cfg: ConnectionConfig,
    tx: UnboundedSender<FeedEvent>,
    mut shutdown: Shutdown,
) -> Session {
    let mut delivered = false;
    let connect = tokio_tungstenite::connect_async(cfg.url.as_str());
    let ws = tokio::select! {
        r = connect => r,
        _ = shutdown.recv() => return Session { end: SessionEnd::Shutdown, delivered },
    };
    let mut ws = match ws {
        Ok((ws, _response)) => ws,
        Err(e) => {
            return Session {
                end: SessionEnd::Failed(WsError::Connect {
                    url: cfg.url.clone(),
                    source: Box::new(e),
                }),
                delivered,
            }
        }
    };
    info!(connection = cfg.id, url = %cfg.url, "stream connected");
    let _ = tx.send(FeedEvent::Connected { connection: cfg.id });
    let max_age = tokio::time::sleep(cfg.max_age);
    tokio::pin!(max_age);
    let mut last_traffic = Instant::now();
    let mut idle_check = tokio::time::interval(cfg.idle_timeout / 4 + Duration::from_millis(1));
    idle_check.tick().await;
    let end = loop {
        tokio::select! {
            _ = shutdown.recv() => {
                let _ = ws.close(None).await;
                break SessionEnd::Shutdown;
            }
            _ = &mut max_age => {
                let _ = ws.close(None).await;
                break SessionEnd::MaxAge;
            }
            _ = idle_check.tick() => {
                if last_traffic.elapsed() > cfg.idle_timeout {
                    let _ = ws.close(None).await;
                    break SessionEnd::Failed(WsError::Idle(cfg.idle_timeout));
                }
            }
            msg = ws.next() => {
                last_traffic = Instant::now();
                match msg {
                    None => break SessionEnd::ServerClosed("stream ended".into()),
                    Some(Err(e)) => break SessionEnd::Failed(WsError::Connection(Box::new(e))),
                    Some(Ok(Message::Text(text))) => {
                        match handle_text(text.as_str(), &tx, &mut delivered) {
                            Some(reason) => {
                                let _ = ws.close(None).await;
                                break SessionEnd::ServerClosed(reason);
                            }
                            None => continue,
                        }
                    }
                    Some(Ok(Message::Ping(_))) => {
                        // tungstenite queued the pong; push it out now.
                        if let Err(e) = ws.flush().await {
                            break SessionEnd::Failed(WsError::Connection(Box::new(e)));
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        let reason = frame
                            .map(|f| format!("close frame {} {}", f.code, f.reason))
                            .unwrap_or_else(|| "close frame".into());
                        break SessionEnd::ServerClosed(reason);
                    }
                    Some(Ok(_)) => {}
                }
            }
        }
    };
    debug!(connection = cfg.id, ?end, delivered, "stream session ended");
    let _ = tx.send(FeedEvent::Disconnected { connection: cfg.id });
    Session { end, delivered }
}

/// Handles one text message; returns Some(reason) when the connection should be
/// re-established (serverShutdown).
pub fn handle_text(
    text: &str,
    tx: &UnboundedSender<FeedEvent>,
    delivered: &mut bool,
) -> Option<String> {
    match parse_ws_message(text) {
        Err(error) => {
            metrics::counter!(metric::MALFORMED_MESSAGES).increment(1);
            warn!(%error, raw = %truncate(text, 256), "malformed stream message");
        }
        Ok(WsMessage::Kline(ev)) => {
            metrics::counter!(metric::KLINES_RECEIVED).increment(1);
            if ev.kline.is_closed {
                metrics::counter!(metric::KLINES_CLOSED).increment(1);
                match Kline::from_text(ev.kline.as_text()) {
                    Ok(kline) => {
                        *delivered = true;
                        let _ = tx.send(FeedEvent::Closed {
                            kline,
                            event_time: ev.event_time,
                        });
                    }
                    Err(error) => {
                        metrics::counter!(metric::KLINES_REJECTED).increment(1);
                        warn!(%error, symbol = %ev.symbol, raw = %truncate(text, 256), "rejected closed kline");
                        let _ = tx.send(FeedEvent::Rejected {
                            symbol: ev.symbol.to_ascii_uppercase(),
                            open_time_ms: ev.kline.start_time,
                            reason: error.to_string(),
                            raw: truncate(text, 2000),
                        });
                    }
                }
            }
        }
        Ok(WsMessage::ServerShutdown { event_time }) => {
            info!(?event_time, "serverShutdown received");
            return Some("serverShutdown".into());
        }
        Ok(WsMessage::Other { event_type }) => {
            debug!(?event_type, "ignored stream message");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn urls_are_lower_case_and_chunked() {
        let syms: Vec<String> = ["BTCUSDT", "ETHUSDT", "SOLUSDT"].map(String::from).to_vec();
        assert_eq!(
            stream_urls("ws://x:1/", &syms[..2]),
            vec!["ws://x:1/stream?streams=btcusdt@kline_1m/ethusdt@kline_1m".to_string()]
        );
        let chunks = stream_urls_with_limit("ws://x", &syms, 2);
        assert_eq!(chunks.len(), 2);
        assert!(chunks[1].ends_with("streams=solusdt@kline_1m"));
        let many: Vec<String> = (0..2049).map(|i| format!("S{i}USDT")).collect();
        assert_eq!(stream_urls("ws://x", &many).len(), 3);
    }

    /// Sessions that fail immediately are retried after 1, 2, 4, ... s (virtual time);
    /// a session that delivered data resets the back-off; MaxAge reconnects at once.
    #[tokio::test(start_paused = true)]
    async fn reconnect_backoff_in_virtual_time() {
        let start = Instant::now();
        let starts: Arc<Mutex<Vec<u64>>> = Arc::default();
        let plan = Arc::new(Mutex::new(vec![
            (false, "fail"),
            (false, "fail"),
            (false, "fail"),
            (true, "closed"), // delivered, then server closed: back-off reset → 1 s
            (false, "fail"),
            (false, "maxage"), // reconnect without delay
            (false, "fail"),
            (false, "stop"),
        ]));
        let (_trigger, shutdown) = Shutdown::new();
        let s2 = starts.clone();
        let reconnects = reconnect_loop(Backoff::reconnect_default(), shutdown, move || {
            let starts = s2.clone();
            let plan = plan.clone();
            async move {
                starts
                    .lock()
                    .unwrap()
                    .push(start.elapsed().as_millis() as u64);
                let (delivered, what) = plan.lock().unwrap().remove(0);
                let end = match what {
                    "fail" => SessionEnd::Failed(WsError::Idle(Duration::ZERO)),
                    "closed" => SessionEnd::ServerClosed("close".into()),
                    "maxage" => SessionEnd::MaxAge,
                    _ => SessionEnd::Shutdown,
                };
                Session { end, delivered }
            }
        })
        .await;
        assert_eq!(reconnects, 7);
        let got = starts.lock().unwrap().clone();
        // 0, +1, +2, +4, (delivered → reset) +1, +2, maxage +0, +4
        assert_eq!(got, vec![0, 1000, 3000, 7000, 8000, 10000, 10000, 14000]);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_interrupts_backoff_wait() {
        let (trigger, shutdown) = Shutdown::new();
        let start = Instant::now();
        let handle = tokio::spawn(reconnect_loop(
            Backoff::new(Duration::from_secs(60), 2.0, Duration::from_secs(60)),
            shutdown,
            || async {
                Session {
                    end: SessionEnd::Failed(WsError::Idle(Duration::ZERO)),
                    delivered: false,
                }
            },
        ));
        tokio::time::sleep(Duration::from_secs(5)).await;
        trigger.trigger();
        assert_eq!(handle.await.unwrap(), 0);
        assert!(start.elapsed() < Duration::from_secs(6));
    }

    #[test]
    fn handle_text_routes_messages() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut delivered = false;
        let open = r#"{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1,"s":"BTCUSDT","k":{"t":1634943780000,"T":1634943839999,"s":"BTCUSDT","i":"1m","f":1,"L":2,"o":"1","c":"1","h":"1","l":"1","v":"1","n":2,"x":false,"q":"1","V":"0","Q":"0","B":"0"}}}"#;
        assert_eq!(handle_text(open, &tx, &mut delivered), None);
        assert!(
            rx.try_recv().is_err(),
            "in-progress klines are not forwarded"
        );
        let closed = open.replace(r#""x":false"#, r#""x":true"#);
        assert_eq!(handle_text(&closed, &tx, &mut delivered), None);
        assert!(delivered);
        assert!(matches!(
            rx.try_recv(),
            Ok(FeedEvent::Closed { event_time: 1, .. })
        ));
        let bad = closed.replace(r#""h":"1""#, r#""h":"0.5""#);
        handle_text(&bad, &tx, &mut delivered);
        assert!(matches!(rx.try_recv(), Ok(FeedEvent::Rejected { .. })));
        assert_eq!(handle_text("{not json", &tx, &mut delivered), None);
        assert!(rx.try_recv().is_err());
        assert_eq!(
            handle_text(r#"{"e":"serverShutdown","E":5}"#, &tx, &mut delivered).as_deref(),
            Some("serverShutdown")
        );
    }
}
