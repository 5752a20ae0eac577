//! Binance combined-stream WebSocket client for `<symbol>@kline_1m`, sharded: the symbols are
//! split into connections of at most `--streams-per-connection` streams ([`shard_symbols`]),
//! each kept alive by its own [`run_shard`] task (opened staggered), with
//!
//! * reconnect back-off {1 s, ×2, 60 s} plus up to 20 % random jitter, reset after a session
//!   that delivered a closed kline; one shard's failures never stall another;
//! * rotation without a gap: when a session reaches `max_age` (before Binance's 24 h limit) a
//!   replacement is opened beside it, and the old one is closed only once the replacement
//!   delivered its first kline; klines seen on both are written once (the writer drops a
//!   (symbol, open_time) it already has);
//! * a silent-connection watchdog: connected but no kline for `silent_timeout` (while the
//!   exchange clock advances, i.e. wall time passes) is a failure: logged as an error, counted
//!   (`ta_feed_ws_silent_connections_total`), reported to the writer (data_quality_log
//!   `silent_connection`) and reconnected. That is what a USD-M connection on the legacy
//!   `/stream` route looks like since 2026-04-23;
//! * `serverShutdown` / close-frame handling, and an idle timeout (no traffic, pings included).
//!
//! The client sends nothing but one pong per server ping and close frames, far below
//! Binance's 10 incoming messages per second per connection.
//!
//! Binance docs: <https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams>,
//! <https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams>

use std::future::Future;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, error, info, warn};

use crate::backoff::Backoff;
use crate::binance::model::{parse_ws_message, Kline, WsMessage};
use crate::binance::rest::truncate;
use crate::constants::{metric, KLINE_STREAM_SUFFIX, MAX_STREAMS_PER_CONNECTION};
use crate::market::Market;
use crate::shutdown::Shutdown;

/// WebSocket failures (each ends one session; the shard reconnects).
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
    #[error("connected and subscribed, but no kline for {0:?} (wrong route? USD-M klines are only under /market)")]
    Silent(Duration),
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
    /// Shard `connection` is established and subscribed (it had no live session before).
    Connected { connection: usize },
    /// Shard `connection` has no live session any more (it reconnects unless shutting down).
    Disconnected { connection: usize },
    /// A session of shard `connection` was up but silent for `silent_secs`.
    Silent {
        connection: usize,
        url: String,
        silent_secs: u64,
        streams: usize,
    },
}

/// Why a session ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// Its stop signal fired (shutdown, or replaced by a rotation).
    Shutdown,
    /// The server sent `serverShutdown`, a close frame, or the stream ended.
    ServerClosed(String),
    /// A connect or I/O error, an idle or a silent connection.
    Failed(WsError),
}

/// The outcome of one connection attempt.
#[derive(Debug)]
pub struct Session {
    pub end: SessionEnd,
    /// True when the session delivered at least one closed kline (resets back-off).
    pub delivered: bool,
}

/// What a session tells its shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEvent {
    /// Connected (and subscribed: the streams are in the URL).
    Up,
    /// The first kline message (closed or not) arrived.
    FirstKline,
}

/// Everything one session needs.
#[derive(Debug, Clone)]
pub struct SessionCtx {
    pub shard: usize,
    /// Sessions of a shard are numbered from 1; a rotation's replacement gets the next.
    pub generation: u64,
    pub url: String,
    pub streams: usize,
    pub idle_timeout: Duration,
    pub silent_timeout: Duration,
    /// Closed klines go here.
    pub tx: UnboundedSender<FeedEvent>,
    /// [`SessionEvent`]s go here, tagged with `generation`.
    pub events: UnboundedSender<(u64, SessionEvent)>,
    /// Fires when the shard stops this session.
    pub stop: Shutdown,
}

/// Splits `symbols` into shards of at most `per_connection` (1..=1024) streams.
pub fn shard_symbols(symbols: &[String], per_connection: usize) -> Vec<Vec<String>> {
    symbols
        .chunks(per_connection.clamp(1, MAX_STREAMS_PER_CONNECTION))
        .map(<[String]>::to_vec)
        .collect()
}

/// Combined-stream URL of `symbols` on `market`:
/// `{base}/stream?streams=btcusdt@kline_1m/ethusdt@kline_1m` (spot),
/// `{base}/market/stream?streams=...` (USD-M).
pub fn stream_url(base: &str, market: Market, symbols: &[String]) -> String {
    let base = base.trim_end_matches('/');
    let streams = symbols
        .iter()
        .map(|s| format!("{}{KLINE_STREAM_SUFFIX}", s.to_ascii_lowercase()))
        .collect::<Vec<_>>()
        .join("/");
    format!("{base}{}?streams={streams}", market.ws_combined_path())
}

/// Settings of one shard.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    pub id: usize,
    /// WebSocket base URL (the market's route is appended).
    pub base_url: String,
    pub market: Market,
    /// The shard's symbols; read at every (re)connect and rotation, so a change (a delisted
    /// symbol) takes effect at the next one.
    pub symbols: watch::Receiver<Vec<String>>,
    /// Rotate (replace without a gap) a session this old.
    pub max_age: Duration,
    /// Reconnect when nothing (data, ping) arrived for this long.
    pub idle_timeout: Duration,
    /// A session with no kline for this long is a failure.
    pub silent_timeout: Duration,
    /// Wait this long before the first connect (staggered opening).
    pub start_delay: Duration,
    /// Random extra delay on every back-off wait, as a fraction of it (0.2 = up to 20 %).
    pub jitter: f64,
}

struct Running {
    generation: u64,
    url: String,
    streams: usize,
    stop: crate::shutdown::ShutdownTrigger,
    handle: JoinHandle<Session>,
    opened: Instant,
    kline_seen: bool,
}

async fn join(r: &mut Option<Running>) -> Session {
    match r {
        Some(run) => match (&mut run.handle).await {
            Ok(s) => s,
            Err(e) => Session {
                end: SessionEnd::ServerClosed(format!("session task ended: {e}")),
                delivered: false,
            },
        },
        None => std::future::pending().await,
    }
}

/// Keeps one shard's connection alive with real WebSocket sessions ([`session`]).
pub async fn run_shard(
    cfg: ShardConfig,
    backoff: Backoff,
    tx: UnboundedSender<FeedEvent>,
    shutdown: Shutdown,
) -> u64 {
    run_shard_with(cfg, backoff, tx, shutdown, session).await
}

/// [`run_shard`] with the session function given (tests script sessions). Returns the
/// number of reconnects (rotations not counted).
pub async fn run_shard_with<F, Fut>(
    cfg: ShardConfig,
    mut backoff: Backoff,
    tx: UnboundedSender<FeedEvent>,
    mut shutdown: Shutdown,
    connect: F,
) -> u64
where
    F: Fn(SessionCtx) -> Fut,
    Fut: Future<Output = Session> + Send + 'static,
{
    let mut reconnects = 0u64;
    tokio::select! {
        _ = tokio::time::sleep(cfg.start_delay) => {}
        _ = shutdown.recv() => return reconnects,
    }
    let (ev_tx, mut ev_rx) = unbounded_channel::<(u64, SessionEvent)>();
    let mut generation = 0u64;
    let spawn = |generation: u64| {
        let symbols = cfg.symbols.borrow().clone();
        let url = stream_url(&cfg.base_url, cfg.market, &symbols);
        let (trigger, stop) = Shutdown::new();
        let ctx = SessionCtx {
            shard: cfg.id,
            generation,
            url: url.clone(),
            streams: symbols.len(),
            idle_timeout: cfg.idle_timeout,
            silent_timeout: cfg.silent_timeout,
            tx: tx.clone(),
            events: ev_tx.clone(),
            stop,
        };
        Running {
            generation,
            url,
            streams: symbols.len(),
            stop: trigger,
            handle: tokio::spawn(connect(ctx)),
            opened: Instant::now(),
            kline_seen: false,
        }
    };
    let mut current: Option<Running> = None;
    let mut next: Option<Running> = None;
    let mut up = false;
    let mut rotate_at = Instant::now();
    let mut symbols = cfg.symbols.clone();
    let mut lists_open = true;
    loop {
        if current.is_none() && symbols.borrow_and_update().is_empty() {
            // Every symbol of this shard left the universe: park until it gets one again.
            if up {
                up = false;
                let _ = tx.send(FeedEvent::Disconnected { connection: cfg.id });
            }
            info!(
                connection = cfg.id,
                "no symbols left on this connection; idle"
            );
            tokio::select! {
                r = symbols.changed(), if lists_open => lists_open = r.is_ok(),
                _ = shutdown.recv() => return reconnects,
            }
            continue;
        }
        if current.is_none() {
            generation += 1;
            let run = spawn(generation);
            rotate_at = run.opened + cfg.max_age;
            current = Some(run);
        }
        tokio::select! {
            _ = shutdown.recv() => {
                for r in [current.take(), next.take()].into_iter().flatten() {
                    r.stop.trigger();
                    let _ = r.handle.await;
                }
                if up {
                    let _ = tx.send(FeedEvent::Disconnected { connection: cfg.id });
                }
                return reconnects;
            }
            r = symbols.changed(), if lists_open => {
                lists_open = r.is_ok();
                if lists_open && symbols.borrow_and_update().is_empty() {
                    for r in [current.take(), next.take()].into_iter().flatten() {
                        r.stop.trigger();
                        tokio::spawn(async move { let _ = r.handle.await; });
                    }
                }
            }
            _ = tokio::time::sleep_until(rotate_at), if next.is_none() => {
                generation += 1;
                info!(connection = cfg.id, generation, "connection reached its maximum age: opening its replacement");
                metrics::counter!(metric::ROTATIONS).increment(1);
                next = Some(spawn(generation));
                // if the replacement fails, the next attempt waits for the back-off
                rotate_at = Instant::now() + cfg.max_age;
            }
            ev = ev_rx.recv() => {
                let Some((g, ev)) = ev else { continue };
                match ev {
                    SessionEvent::Up => {
                        if current.as_ref().is_some_and(|c| c.generation == g) && !up {
                            up = true;
                            let _ = tx.send(FeedEvent::Connected { connection: cfg.id });
                        }
                    }
                    SessionEvent::FirstKline => {
                        if let Some(c) = current.as_mut().filter(|c| c.generation == g) {
                            c.kline_seen = true;
                        }
                        if next.as_ref().is_some_and(|n| n.generation == g) {
                            // The replacement delivers: switch, then close the old session.
                            let old = current.take().expect("a current session");
                            let mut new = next.take().expect("a replacement");
                            new.kline_seen = true;
                            rotate_at = new.opened + cfg.max_age;
                            info!(connection = cfg.id, old = old.generation, new = new.generation, "rotated: replacement delivers, closing the old connection");
                            old.stop.trigger();
                            current = Some(new);
                            tokio::spawn(async move { let _ = old.handle.await; });
                        }
                    }
                }
            }
            s = join(&mut next) => {
                let n = next.take().expect("replacement");
                warn!(connection = cfg.id, generation = n.generation, end = ?s.end, "replacement connection ended before it delivered; keeping the old one");
                rotate_at = Instant::now() + jittered(backoff.next_delay(), cfg.jitter);
            }
            s = join(&mut current) => {
                let c = current.take().expect("current");
                if let Some(n) = next.take() {
                    // The old one ended during a rotation: the replacement takes over.
                    info!(connection = cfg.id, end = ?s.end, "old connection ended during rotation; the replacement takes over");
                    rotate_at = n.opened + cfg.max_age;
                    current = Some(n);
                    continue;
                }
                if s.delivered {
                    backoff.reset();
                }
                if up {
                    up = false;
                    let _ = tx.send(FeedEvent::Disconnected { connection: cfg.id });
                }
                let delay = jittered(backoff.next_delay(), cfg.jitter);
                match s.end {
                    SessionEnd::Shutdown => continue,
                    SessionEnd::ServerClosed(reason) => {
                        warn!(connection = cfg.id, %reason, ?delay, "stream closed by server, reconnecting");
                    }
                    SessionEnd::Failed(WsError::Silent(d)) => {
                        error!(connection = cfg.id, url = %c.url, silent_secs = d.as_secs(), streams = c.streams,
                            "SILENT CONNECTION: connected and subscribed but no kline arrived; reconnecting");
                        metrics::counter!(metric::SILENT_CONNECTIONS).increment(1);
                        let _ = tx.send(FeedEvent::Silent {
                            connection: cfg.id,
                            url: c.url.clone(),
                            silent_secs: d.as_secs(),
                            streams: c.streams,
                        });
                    }
                    SessionEnd::Failed(error) => {
                        warn!(connection = cfg.id, %error, ?delay, "stream failed, reconnecting");
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.recv() => return reconnects,
                }
                reconnects += 1;
                metrics::counter!(metric::RECONNECTS).increment(1);
            }
        }
    }
}

/// `d` plus a random `[0, jitter]` fraction of it.
fn jittered(d: Duration, jitter: f64) -> Duration {
    if jitter <= 0.0 {
        return d;
    }
    d.mul_f64(1.0 + rand::random_range(0.0..=jitter.min(1.0)))
}

/// One connection: connect, read until it ends or `ctx.stop` fires. Pings are answered by
/// tungstenite (the pong is queued while reading and flushed explicitly here).
pub async fn session(ctx: SessionCtx) -> Session {
    let SessionCtx {
        shard,
        generation,
        url,
        streams,
        idle_timeout,
        silent_timeout,
        tx,
        events,
        mut stop,
    } = ctx;
    let mut delivered = false;
    let connect = tokio_tungstenite::connect_async(url.as_str());
    let ws = tokio::select! {
        r = connect => r,
        _ = stop.recv() => return Session { end: SessionEnd::Shutdown, delivered },
    };
    let mut ws = match ws {
        Ok((ws, _response)) => ws,
        Err(e) => {
            return Session {
                end: SessionEnd::Failed(WsError::Connect {
                    url,
                    source: Box::new(e),
                }),
                delivered,
            }
        }
    };
    info!(connection = shard, generation, streams, url = %truncate(&url, 200), "stream connected");
    let _ = events.send((generation, SessionEvent::Up));
    let mut last_traffic = Instant::now();
    let mut last_kline = Instant::now();
    let mut kline_seen = false;
    let check_every = (idle_timeout.min(silent_timeout) / 4).max(Duration::from_millis(10));
    let mut check = tokio::time::interval(check_every);
    check.tick().await;
    let end = loop {
        tokio::select! {
            _ = stop.recv() => {
                let _ = ws.close(None).await;
                break SessionEnd::Shutdown;
            }
            _ = check.tick() => {
                if last_traffic.elapsed() > idle_timeout {
                    let _ = ws.close(None).await;
                    break SessionEnd::Failed(WsError::Idle(idle_timeout));
                }
                if last_kline.elapsed() > silent_timeout {
                    let _ = ws.close(None).await;
                    break SessionEnd::Failed(WsError::Silent(silent_timeout));
                }
            }
            msg = ws.next() => {
                last_traffic = Instant::now();
                match msg {
                    None => break SessionEnd::ServerClosed("stream ended".into()),
                    Some(Err(e)) => break SessionEnd::Failed(WsError::Connection(Box::new(e))),
                    Some(Ok(Message::Text(text))) => {
                        match handle_text(text.as_str(), &tx, &mut delivered) {
                            Handled::Kline => {
                                last_kline = last_traffic;
                                if !kline_seen {
                                    kline_seen = true;
                                    let _ = events.send((generation, SessionEvent::FirstKline));
                                }
                            }
                            Handled::Other => {}
                            Handled::Reconnect(reason) => {
                                let _ = ws.close(None).await;
                                break SessionEnd::ServerClosed(reason);
                            }
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
    debug!(
        connection = shard,
        generation,
        ?end,
        delivered,
        "stream session ended"
    );
    Session { end, delivered }
}

/// What [`handle_text`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// A kline event (closed or not).
    Kline,
    /// Anything else (ignored, or malformed and counted).
    Other,
    /// `serverShutdown`: reconnect.
    Reconnect(String),
}

/// Handles one text message: forwards closed klines (or their rejection) to `tx`.
pub fn handle_text(text: &str, tx: &UnboundedSender<FeedEvent>, delivered: &mut bool) -> Handled {
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
                        warn!(%error, symbol = %truncate(&ev.symbol, 40), raw = %truncate(text, 256), "rejected closed kline");
                        let _ = tx.send(FeedEvent::Rejected {
                            symbol: truncate(&ev.symbol, 40).to_ascii_uppercase(),
                            open_time_ms: ev.kline.start_time,
                            reason: error.to_string(),
                            raw: truncate(text, 2000),
                        });
                    }
                }
            }
            return Handled::Kline;
        }
        Ok(WsMessage::ServerShutdown { event_time }) => {
            info!(?event_time, "serverShutdown received");
            return Handled::Reconnect("serverShutdown".into());
        }
        Ok(WsMessage::Other { event_type }) => {
            debug!(?event_type, "ignored stream message");
        }
    }
    Handled::Other
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn urls_are_lower_case_and_sharded() {
        let syms: Vec<String> = ["BTCUSDT", "ETHUSDT", "SOLUSDT"].map(String::from).to_vec();
        assert_eq!(
            stream_url("ws://x:1/", Market::Spot, &syms[..2]),
            "ws://x:1/stream?streams=btcusdt@kline_1m/ethusdt@kline_1m"
        );
        assert_eq!(
            stream_url("ws://x", Market::Usdm, &syms[2..]),
            "ws://x/market/stream?streams=solusdt@kline_1m"
        );
        let shards = shard_symbols(&syms, 2);
        assert_eq!(shards.len(), 2);
        assert_eq!(shards[1], vec!["SOLUSDT".to_string()]);
        let many: Vec<String> = (0..2049).map(|i| format!("S{i}USDT")).collect();
        assert_eq!(
            shard_symbols(&many, 5000).len(),
            3,
            "never more than 1024 a connection"
        );
        assert_eq!(shard_symbols(&many, 200).len(), 11);
    }

    fn shard_cfg(max_age: Duration) -> (ShardConfig, watch::Sender<Vec<String>>) {
        let (sym_tx, sym_rx) = watch::channel(vec!["BTCUSDT".to_string()]);
        (
            ShardConfig {
                id: 0,
                base_url: "ws://x".into(),
                market: Market::Usdm,
                symbols: sym_rx,
                max_age,
                idle_timeout: Duration::from_secs(120),
                silent_timeout: Duration::from_secs(120),
                start_delay: Duration::ZERO,
                jitter: 0.0,
            },
            sym_tx,
        )
    }

    /// Sessions that fail immediately are retried after 1, 2, 4, ... s (virtual time); a
    /// session that delivered data resets the back-off.
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
            (false, "fail"),
        ]));
        let (trigger, shutdown) = Shutdown::new();
        let (tx, _rx) = unbounded_channel();
        let s2 = starts.clone();
        let (cfg, _sym) = shard_cfg(Duration::from_secs(86_400));
        let task = tokio::spawn(run_shard_with(
            cfg,
            Backoff::reconnect_default(),
            tx,
            shutdown,
            move |mut ctx: SessionCtx| {
                let starts = s2.clone();
                let plan = plan.clone();
                async move {
                    starts
                        .lock()
                        .unwrap()
                        .push(start.elapsed().as_millis() as u64);
                    let step = plan.lock().unwrap().pop_front_like();
                    match step {
                        Some((delivered, "closed")) => Session {
                            end: SessionEnd::ServerClosed("close".into()),
                            delivered,
                        },
                        Some((delivered, _)) => Session {
                            end: SessionEnd::Failed(WsError::Idle(Duration::ZERO)),
                            delivered,
                        },
                        None => {
                            ctx.stop.recv().await;
                            Session {
                                end: SessionEnd::Shutdown,
                                delivered: false,
                            }
                        }
                    }
                }
            },
        ));
        tokio::time::sleep(Duration::from_secs(60)).await;
        trigger.trigger();
        assert_eq!(task.await.unwrap(), 6);
        let got = starts.lock().unwrap().clone();
        // 0, +1, +2, +4, (delivered → reset) +1, +2, +4
        assert_eq!(got, vec![0, 1000, 3000, 7000, 8000, 10000, 14000]);
    }

    trait PopFront<T> {
        fn pop_front_like(&mut self) -> Option<T>;
    }
    impl<T> PopFront<T> for Vec<T> {
        fn pop_front_like(&mut self) -> Option<T> {
            (!self.is_empty()).then(|| self.remove(0))
        }
    }

    /// At max age a replacement opens beside the old session; the old one is stopped only
    /// after the replacement delivered its first kline, and no reconnect is counted.
    #[tokio::test(start_paused = true)]
    async fn rotation_opens_replacement_then_closes_old() {
        let start = Instant::now();
        type Log = Arc<Mutex<Vec<(u64, &'static str, u64)>>>;
        let log: Log = Arc::default();
        let (trigger, shutdown) = Shutdown::new();
        let (tx, mut rx) = unbounded_channel();
        let (cfg, _sym) = shard_cfg(Duration::from_secs(100));
        let l2 = log.clone();
        let task = tokio::spawn(run_shard_with(
            cfg,
            Backoff::reconnect_default(),
            tx,
            shutdown,
            move |mut ctx: SessionCtx| {
                let log = l2.clone();
                async move {
                    let g = ctx.generation;
                    log.lock()
                        .unwrap()
                        .push((g, "open", start.elapsed().as_secs()));
                    let _ = ctx.events.send((g, SessionEvent::Up));
                    // the replacement needs 5 s to deliver its first kline
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    let _ = ctx.events.send((g, SessionEvent::FirstKline));
                    ctx.stop.recv().await;
                    log.lock()
                        .unwrap()
                        .push((g, "stopped", start.elapsed().as_secs()));
                    Session {
                        end: SessionEnd::Shutdown,
                        delivered: true,
                    }
                }
            },
        ));
        tokio::time::sleep(Duration::from_secs(250)).await;
        trigger.trigger();
        assert_eq!(task.await.unwrap(), 0, "rotations are not reconnects");
        let got = log.lock().unwrap().clone();
        assert_eq!(
            &got[..4],
            &[
                (1, "open", 0),
                (2, "open", 100),
                (1, "stopped", 105),
                (3, "open", 200)
            ]
        );
        let mut connected = 0;
        while let Ok(ev) = rx.try_recv() {
            if matches!(ev, FeedEvent::Connected { .. }) {
                connected += 1;
            }
        }
        assert_eq!(connected, 1, "a rotation is not a reconnect for the writer");
    }

    /// A shard whose symbols all left the universe stops its session and idles (no
    /// reconnects, no silent-connection errors) until it gets symbols again.
    #[tokio::test(start_paused = true)]
    async fn emptied_shard_parks() {
        let opened: Arc<Mutex<Vec<u64>>> = Arc::default();
        let (trigger, shutdown) = Shutdown::new();
        let (tx, mut rx) = unbounded_channel();
        let (cfg, sym) = shard_cfg(Duration::from_secs(86_400));
        let o2 = opened.clone();
        let task = tokio::spawn(run_shard_with(
            cfg,
            Backoff::reconnect_default(),
            tx,
            shutdown,
            move |mut ctx: SessionCtx| {
                let opened = o2.clone();
                async move {
                    opened.lock().unwrap().push(ctx.generation);
                    let _ = ctx.events.send((ctx.generation, SessionEvent::Up));
                    ctx.stop.recv().await;
                    Session {
                        end: SessionEnd::Shutdown,
                        delivered: false,
                    }
                }
            },
        ));
        tokio::time::sleep(Duration::from_secs(5)).await;
        sym.send(Vec::new()).unwrap();
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(*opened.lock().unwrap(), vec![1], "no reconnect while empty");
        sym.send(vec!["ETHUSDT".into()]).unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(*opened.lock().unwrap(), vec![1, 2]);
        trigger.trigger();
        task.await.unwrap();
        let evs: Vec<FeedEvent> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(
            evs,
            vec![
                FeedEvent::Connected { connection: 0 },
                FeedEvent::Disconnected { connection: 0 },
                FeedEvent::Connected { connection: 0 },
                FeedEvent::Disconnected { connection: 0 },
            ]
        );
    }

    /// A silent session (real session function against a local WebSocket server that
    /// answers but never sends a kline) ends as Silent and is reported to the writer.
    #[tokio::test]
    async fn silent_connection_is_reported() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await {
                        while let Some(Ok(_)) = ws.next().await {}
                    }
                });
            }
        });
        let (trigger, shutdown) = Shutdown::new();
        let (tx, mut rx) = unbounded_channel();
        let (mut cfg, _sym) = shard_cfg(Duration::from_secs(86_400));
        cfg.base_url = format!("ws://{addr}");
        cfg.silent_timeout = Duration::from_millis(300);
        let task = tokio::spawn(run_shard(
            cfg,
            Backoff::new(Duration::from_secs(30), 2.0, Duration::from_secs(30)),
            tx,
            shutdown,
        ));
        let mut seen = Vec::new();
        while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            let silent = matches!(ev, FeedEvent::Silent { .. });
            seen.push(ev);
            if silent {
                break;
            }
        }
        trigger.trigger();
        task.await.unwrap();
        assert!(matches!(seen[0], FeedEvent::Connected { connection: 0 }));
        assert!(matches!(seen[1], FeedEvent::Disconnected { connection: 0 }));
        match &seen[2] {
            FeedEvent::Silent { url, streams, .. } => {
                assert!(url.ends_with("/market/stream?streams=btcusdt@kline_1m"));
                assert_eq!(*streams, 1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn handle_text_routes_messages() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut delivered = false;
        let open = r#"{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1,"s":"BTCUSDT","k":{"t":1634943780000,"T":1634943839999,"s":"BTCUSDT","i":"1m","f":1,"L":2,"o":"1","c":"1","h":"1","l":"1","v":"1","n":2,"x":false,"q":"1","V":"0","Q":"0","B":"0"}}}"#;
        assert_eq!(handle_text(open, &tx, &mut delivered), Handled::Kline);
        assert!(
            rx.try_recv().is_err(),
            "in-progress klines are not forwarded"
        );
        let closed = open.replace(r#""x":false"#, r#""x":true"#);
        assert_eq!(handle_text(&closed, &tx, &mut delivered), Handled::Kline);
        assert!(delivered);
        assert!(matches!(
            rx.try_recv(),
            Ok(FeedEvent::Closed { event_time: 1, .. })
        ));
        let bad = closed.replace(r#""h":"1""#, r#""h":"0.5""#);
        handle_text(&bad, &tx, &mut delivered);
        assert!(matches!(rx.try_recv(), Ok(FeedEvent::Rejected { .. })));
        assert_eq!(
            handle_text("{not json", &tx, &mut delivered),
            Handled::Other
        );
        assert!(rx.try_recv().is_err());
        assert_eq!(
            handle_text(r#"{"e":"serverShutdown","E":5}"#, &tx, &mut delivered),
            Handled::Reconnect("serverShutdown".into())
        );
    }
}
