//! Binance combined-stream WebSocket client, one generic layer for every stream kind
//! ([`StreamKind`]: klines, aggTrades, book tickers). The symbols of each kind are split
//! into connections of at most `--streams-per-connection` streams ([`shard_symbols`]) on the
//! kind's route (USD-M: `/market` for klines and aggTrades, `/public` for book tickers), each
//! kept alive by its own [`run_shard`] task (opened staggered), with
//!
//! * reconnect back-off {1 s, ×2, 60 s} plus up to 20 % random jitter, reset after a session
//!   that delivered data (a closed kline, a valid tick); one shard's failures never stall
//!   another;
//! * rotation without a gap: when a session reaches `max_age` (before Binance's 24 h limit) a
//!   replacement is opened beside it, and the old one is closed `rotation_overlap` after the
//!   replacement delivered its first message; what arrives on both is written once (the
//!   writers drop a (symbol, open_time) or an id they already have);
//! * a silent-connection watchdog per connection (so per route): connected but no message of
//!   its kind for `silent_timeout` is a failure: logged as an error, counted
//!   (`ta_feed_ws_silent_connections_total`), reported to the writer (data_quality_log
//!   `silent_connection`) and reconnected. That is what a USD-M stream on the wrong route
//!   looks like since 2026-04-23;
//! * `serverShutdown` / close-frame handling, an idle timeout (no traffic, pings included),
//!   and a message-size limit ([`MAX_WS_MESSAGE_BYTES`]): a larger message ends the session
//!   (counted, reconnected) instead of being buffered.
//!
//! What a message means is the kind's [`Handler`]'s business: klines go to the stream
//! writer's channel as [`FeedEvent`]s, ticks into the bounded buffers a [`Handler`] is given.
//! The client sends nothing but one pong per server ping and close frames, far below
//! Binance's 10 incoming messages per second per connection.
//!
//! Binance docs: <https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams>,
//! <https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams>

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as TungsteniteError};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, error, info, warn};

use crate::backoff::Backoff;
use crate::binance::kind::StreamKind;
use crate::binance::model::{parse_ws_message, Kline, WsMessage};
use crate::binance::rest::truncate;
use crate::constants::{metric, MAX_STREAMS_PER_CONNECTION, MAX_WS_MESSAGE_BYTES};
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
    #[error("connected and subscribed, but no message of its kind for {0:?} (wrong route? USD-M klines and aggTrades are only under /market, book tickers under /public)")]
    Silent(Duration),
    #[error("a message larger than {MAX_WS_MESSAGE_BYTES} bytes: {0}")]
    Oversized(String),
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
    /// True when the session delivered data (a closed kline, a valid tick): resets back-off.
    pub delivered: bool,
}

/// What a session tells its shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEvent {
    /// Connected (and subscribed: the streams are in the URL).
    Up,
    /// The first message of the session's kind (a kline, closed or not; a tick) arrived.
    FirstData,
}

/// Everything one session needs.
#[derive(Clone)]
pub struct SessionCtx {
    pub shard: usize,
    /// Sessions of a shard are numbered from 1; a rotation's replacement gets the next.
    pub generation: u64,
    pub url: String,
    pub streams: usize,
    pub idle_timeout: Duration,
    pub silent_timeout: Duration,
    /// What the session's messages mean (klines → the writer's channel, ticks → buffers).
    pub handler: Arc<dyn Handler>,
    /// [`SessionEvent`]s go here, tagged with `generation`.
    pub events: UnboundedSender<(u64, SessionEvent)>,
    /// Fires when the shard stops this session.
    pub stop: Shutdown,
}

impl std::fmt::Debug for SessionCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCtx")
            .field("shard", &self.shard)
            .field("generation", &self.generation)
            .field("url", &self.url)
            .field("streams", &self.streams)
            .finish_non_exhaustive()
    }
}

/// Splits `symbols` into shards of at most `per_connection` (1..=1024) streams.
pub fn shard_symbols(symbols: &[String], per_connection: usize) -> Vec<Vec<String>> {
    symbols
        .chunks(per_connection.clamp(1, MAX_STREAMS_PER_CONNECTION))
        .map(<[String]>::to_vec)
        .collect()
}

/// Combined-stream URL of `symbols` of `kind` on `market`:
/// `{base}/stream?streams=btcusdt@kline_1m/ethusdt@kline_1m` (spot),
/// `{base}/market/stream?streams=...` (USD-M klines and aggTrades),
/// `{base}/public/stream?streams=...@bookTicker` (USD-M book tickers).
pub fn stream_url(base: &str, market: Market, kind: StreamKind, symbols: &[String]) -> String {
    let base = base.trim_end_matches('/');
    let streams = symbols
        .iter()
        .map(|s| kind.stream_name(s))
        .collect::<Vec<_>>()
        .join("/");
    format!(
        "{base}{}?streams={streams}",
        kind.route(market).combined_path()
    )
}

/// What one message means, for one stream kind: forwards data to where the kind's writer
/// reads it and says what it was.
pub trait Handler: Send + Sync + 'static {
    /// Handles one text message.
    fn handle(&self, text: &str) -> Handled;
}

/// Makes the [`Handler`] of each session of a shard and hears about the shard's
/// connectivity (the tick writers record book-ticker gaps from it).
pub trait HandlerFactory: Send + Sync + 'static {
    /// The handler of a session subscribed to `symbols`.
    fn session(&self, symbols: &[String]) -> Arc<dyn Handler>;
    /// Shard `connection` has a live session again; it streams `symbols`.
    fn connected(&self, _connection: usize, _symbols: &[String]) {}
    /// Shard `connection` lost its last live session; it streamed `symbols`.
    fn disconnected(&self, _connection: usize, _symbols: &[String]) {}
}

/// The kline [`Handler`]: closed klines (or their rejection) to the stream writer.
#[derive(Debug, Clone)]
pub struct KlineHandler {
    pub tx: UnboundedSender<FeedEvent>,
}

impl Handler for KlineHandler {
    fn handle(&self, text: &str) -> Handled {
        handle_text(text, &self.tx)
    }
}

impl HandlerFactory for KlineHandler {
    fn session(&self, _symbols: &[String]) -> Arc<dyn Handler> {
        Arc::new(self.clone())
    }
}

/// Settings of one shard.
#[derive(Clone)]
pub struct ShardConfig {
    pub id: usize,
    /// WebSocket base URL (the kind's route is appended).
    pub base_url: String,
    pub market: Market,
    /// The stream kind of every stream of this shard.
    pub kind: StreamKind,
    /// Makes each session's message handler.
    pub handler: Arc<dyn HandlerFactory>,
    /// The shard's symbols; read at every (re)connect and rotation, so a change (a delisted
    /// symbol) takes effect at the next one.
    pub symbols: watch::Receiver<Vec<String>>,
    /// Rotate (replace without a gap) a session this old.
    pub max_age: Duration,
    /// At a rotation, keep the old session this long after the replacement delivered its
    /// first message (both deliver; the writers drop what they already have).
    pub rotation_overlap: Duration,
    /// Reconnect when nothing (data, ping) arrived for this long.
    pub idle_timeout: Duration,
    /// A session with no message of its kind for this long is a failure.
    pub silent_timeout: Duration,
    /// Wait this long before the first connect (staggered opening).
    pub start_delay: Duration,
    /// Random extra delay on every back-off wait, as a fraction of it (0.2 = up to 20 %).
    pub jitter: f64,
}

impl std::fmt::Debug for ShardConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardConfig")
            .field("id", &self.id)
            .field("base_url", &self.base_url)
            .field("market", &self.market)
            .field("kind", &self.kind)
            .field("symbols", &*self.symbols.borrow())
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

struct Running {
    generation: u64,
    url: String,
    streams: usize,
    stop: crate::shutdown::ShutdownTrigger,
    handle: JoinHandle<Session>,
    opened: Instant,
    data_seen: bool,
    symbols: Vec<String>,
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
        let url = stream_url(&cfg.base_url, cfg.market, cfg.kind, &symbols);
        let (trigger, stop) = Shutdown::new();
        let ctx = SessionCtx {
            shard: cfg.id,
            generation,
            url: url.clone(),
            streams: symbols.len(),
            idle_timeout: cfg.idle_timeout,
            silent_timeout: cfg.silent_timeout,
            handler: cfg.handler.session(&symbols),
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
            data_seen: false,
            symbols,
        }
    };
    let mut current: Option<Running> = None;
    let mut next: Option<Running> = None;
    // the old session of a rotation, closed at the instant given
    let mut retiring: Option<(Running, Instant)> = None;
    // the symbols of the session that made the shard "up" (reported when it goes down)
    let mut up: Option<Vec<String>> = None;
    let mut rotate_at = Instant::now();
    let mut symbols = cfg.symbols.clone();
    let mut lists_open = true;
    let went_down = |up: &mut Option<Vec<String>>| {
        if let Some(syms) = up.take() {
            cfg.handler.disconnected(cfg.id, &syms);
            let _ = tx.send(FeedEvent::Disconnected { connection: cfg.id });
        }
    };
    let stop_now = |r: Running| {
        r.stop.trigger();
        tokio::spawn(async move {
            let _ = r.handle.await;
        });
    };
    loop {
        if current.is_none() && symbols.borrow_and_update().is_empty() {
            // Every symbol of this shard left the universe: park until it gets one again.
            went_down(&mut up);
            if let Some((r, _)) = retiring.take() {
                stop_now(r);
            }
            info!(
                connection = cfg.id,
                kind = %cfg.kind,
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
        let retire_at = retiring.as_ref().map(|(_, t)| *t);
        tokio::select! {
            _ = shutdown.recv() => {
                let old = retiring.take().map(|(r, _)| r);
                for r in [current.take(), next.take(), old].into_iter().flatten() {
                    r.stop.trigger();
                    let _ = r.handle.await;
                }
                went_down(&mut up);
                return reconnects;
            }
            r = symbols.changed(), if lists_open => {
                lists_open = r.is_ok();
                if lists_open && symbols.borrow_and_update().is_empty() {
                    for r in [current.take(), next.take()].into_iter().flatten() {
                        stop_now(r);
                    }
                }
            }
            _ = tokio::time::sleep_until(retire_at.unwrap_or_else(Instant::now)), if retire_at.is_some() => {
                if let Some((old, _)) = retiring.take() {
                    info!(connection = cfg.id, kind = %cfg.kind, old = old.generation, "rotation overlap over: closing the old connection");
                    stop_now(old);
                }
            }
            _ = tokio::time::sleep_until(rotate_at), if next.is_none() => {
                generation += 1;
                info!(connection = cfg.id, kind = %cfg.kind, generation, "connection reached its maximum age: opening its replacement");
                metrics::counter!(metric::ROTATIONS).increment(1);
                next = Some(spawn(generation));
                // if the replacement fails, the next attempt waits for the back-off
                rotate_at = Instant::now() + cfg.max_age;
            }
            ev = ev_rx.recv() => {
                let Some((g, ev)) = ev else { continue };
                match ev {
                    SessionEvent::Up => {
                        if let Some(c) = current.as_ref().filter(|c| c.generation == g) {
                            if up.is_none() {
                                cfg.handler.connected(cfg.id, &c.symbols);
                                up = Some(c.symbols.clone());
                                let _ = tx.send(FeedEvent::Connected { connection: cfg.id });
                            }
                        }
                    }
                    SessionEvent::FirstData => {
                        if let Some(c) = current.as_mut().filter(|c| c.generation == g) {
                            c.data_seen = true;
                        }
                        if next.as_ref().is_some_and(|n| n.generation == g) {
                            // The replacement delivers: switch, then close the old session
                            // after the overlap (both deliver meanwhile).
                            let old = current.take().expect("a current session");
                            let mut new = next.take().expect("a replacement");
                            new.data_seen = true;
                            rotate_at = new.opened + cfg.max_age;
                            info!(connection = cfg.id, kind = %cfg.kind, old = old.generation, new = new.generation,
                                  overlap_ms = cfg.rotation_overlap.as_millis() as u64,
                                  "rotated: replacement delivers, closing the old connection");
                            if let Some((older, _)) = retiring.take() {
                                stop_now(older);
                            }
                            if cfg.rotation_overlap.is_zero() {
                                stop_now(old);
                            } else {
                                retiring = Some((old, Instant::now() + cfg.rotation_overlap));
                            }
                            if up.is_some() {
                                up = Some(new.symbols.clone());
                            }
                            current = Some(new);
                        }
                    }
                }
            }
            s = join(&mut next) => {
                let n = next.take().expect("replacement");
                warn!(connection = cfg.id, kind = %cfg.kind, generation = n.generation, end = ?s.end, "replacement connection ended before it delivered; keeping the old one");
                rotate_at = Instant::now() + jittered(backoff.next_delay(), cfg.jitter);
            }
            s = join(&mut current) => {
                let c = current.take().expect("current");
                if let Some(n) = next.take() {
                    // The old one ended during a rotation: the replacement takes over.
                    info!(connection = cfg.id, kind = %cfg.kind, end = ?s.end, "old connection ended during rotation; the replacement takes over");
                    rotate_at = n.opened + cfg.max_age;
                    if up.is_some() {
                        up = Some(n.symbols.clone());
                    }
                    current = Some(n);
                    continue;
                }
                if let Some((old, _)) = retiring.take() {
                    // the replacement died during the overlap: the old one still delivers
                    if !old.handle.is_finished() {
                        info!(connection = cfg.id, kind = %cfg.kind, end = ?s.end, "new connection ended during the rotation overlap; the old one takes over again");
                        rotate_at = Instant::now() + jittered(backoff.next_delay(), cfg.jitter);
                        if up.is_some() {
                            up = Some(old.symbols.clone());
                        }
                        current = Some(old);
                        continue;
                    }
                }
                if s.delivered {
                    backoff.reset();
                }
                went_down(&mut up);
                let delay = jittered(backoff.next_delay(), cfg.jitter);
                match s.end {
                    SessionEnd::Shutdown => continue,
                    SessionEnd::ServerClosed(reason) => {
                        warn!(connection = cfg.id, kind = %cfg.kind, %reason, ?delay, "stream closed by server, reconnecting");
                    }
                    SessionEnd::Failed(WsError::Silent(d)) => {
                        error!(connection = cfg.id, kind = %cfg.kind, url = %c.url, silent_secs = d.as_secs(), streams = c.streams,
                            "SILENT CONNECTION: connected and subscribed but nothing of its kind arrived; reconnecting");
                        metrics::counter!(metric::SILENT_CONNECTIONS).increment(1);
                        let _ = tx.send(FeedEvent::Silent {
                            connection: cfg.id,
                            url: c.url.clone(),
                            silent_secs: d.as_secs(),
                            streams: c.streams,
                        });
                    }
                    SessionEnd::Failed(error) => {
                        warn!(connection = cfg.id, kind = %cfg.kind, %error, ?delay, "stream failed, reconnecting");
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
        handler,
        events,
        mut stop,
    } = ctx;
    let mut delivered = false;
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_WS_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_WS_MESSAGE_BYTES));
    let connect = tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true);
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
    let mut last_data = Instant::now();
    let mut data_seen = false;
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
                if last_data.elapsed() > silent_timeout {
                    let _ = ws.close(None).await;
                    break SessionEnd::Failed(WsError::Silent(silent_timeout));
                }
            }
            msg = ws.next() => {
                last_traffic = Instant::now();
                match msg {
                    None => break SessionEnd::ServerClosed("stream ended".into()),
                    Some(Err(TungsteniteError::Capacity(e @ CapacityError::MessageTooLong { .. }))) => {
                        metrics::counter!(metric::OVERSIZED_MESSAGES).increment(1);
                        error!(connection = shard, generation, error = %e, "oversized stream message: closing the connection");
                        break SessionEnd::Failed(WsError::Oversized(e.to_string()));
                    }
                    Some(Err(e)) => break SessionEnd::Failed(WsError::Connection(Box::new(e))),
                    Some(Ok(Message::Text(text))) => {
                        match handler.handle(text.as_str()) {
                            Handled::Data { delivered: d } => {
                                delivered |= d;
                                last_data = last_traffic;
                                if !data_seen {
                                    data_seen = true;
                                    let _ = events.send((generation, SessionEvent::FirstData));
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

/// What a [`Handler`] found in a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// A message of the session's kind (a kline event, closed or not; a tick, valid or
    /// refused); `delivered` when it was data for a writer (a closed kline, a valid tick).
    Data { delivered: bool },
    /// Anything else (ignored, or malformed and counted).
    Other,
    /// `serverShutdown`: reconnect.
    Reconnect(String),
}

/// Handles one kline-stream message: forwards closed klines (or their rejection) to `tx`.
pub fn handle_text(text: &str, tx: &UnboundedSender<FeedEvent>) -> Handled {
    let mut delivered = false;
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
                        delivered = true;
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
            return Handled::Data { delivered };
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
            stream_url("ws://x:1/", Market::Spot, StreamKind::Kline, &syms[..2]),
            "ws://x:1/stream?streams=btcusdt@kline_1m/ethusdt@kline_1m"
        );
        assert_eq!(
            stream_url("ws://x", Market::Usdm, StreamKind::Kline, &syms[2..]),
            "ws://x/market/stream?streams=solusdt@kline_1m"
        );
        assert_eq!(
            stream_url("ws://x", Market::Usdm, StreamKind::AggTrade, &syms[2..]),
            "ws://x/market/stream?streams=solusdt@aggTrade"
        );
        assert_eq!(
            stream_url("ws://x", Market::Usdm, StreamKind::BookTicker, &syms[..2]),
            "ws://x/public/stream?streams=btcusdt@bookTicker/ethusdt@bookTicker"
        );
        assert_eq!(
            stream_url("ws://x", Market::Spot, StreamKind::BookTicker, &syms[2..]),
            "ws://x/stream?streams=solusdt@bookTicker"
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
                kind: StreamKind::Kline,
                handler: Arc::new(KlineHandler {
                    tx: unbounded_channel().0,
                }),
                symbols: sym_rx,
                max_age,
                rotation_overlap: Duration::ZERO,
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
                    let _ = ctx.events.send((g, SessionEvent::FirstData));
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

    /// With a rotation overlap the old session keeps delivering until the overlap after the
    /// replacement's first message has passed (trades from both are deduplicated by id).
    #[tokio::test(start_paused = true)]
    async fn rotation_overlap_keeps_the_old_session_a_while() {
        let start = Instant::now();
        type Log = Arc<Mutex<Vec<(u64, &'static str, u64)>>>;
        let log: Log = Arc::default();
        let (trigger, shutdown) = Shutdown::new();
        let (tx, _rx) = unbounded_channel();
        let (mut cfg, _sym) = shard_cfg(Duration::from_secs(100));
        cfg.rotation_overlap = Duration::from_secs(3);
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
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    let _ = ctx.events.send((g, SessionEvent::FirstData));
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
        tokio::time::sleep(Duration::from_secs(150)).await;
        trigger.trigger();
        assert_eq!(task.await.unwrap(), 0);
        let got = log.lock().unwrap().clone();
        assert_eq!(
            &got[..3],
            &[(1, "open", 0), (2, "open", 100), (1, "stopped", 108)]
        );
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
        let open = r#"{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1,"s":"BTCUSDT","k":{"t":1634943780000,"T":1634943839999,"s":"BTCUSDT","i":"1m","f":1,"L":2,"o":"1","c":"1","h":"1","l":"1","v":"1","n":2,"x":false,"q":"1","V":"0","Q":"0","B":"0"}}}"#;
        assert_eq!(handle_text(open, &tx), Handled::Data { delivered: false });
        assert!(
            rx.try_recv().is_err(),
            "in-progress klines are not forwarded"
        );
        let closed = open.replace(r#""x":false"#, r#""x":true"#);
        assert_eq!(handle_text(&closed, &tx), Handled::Data { delivered: true });
        assert!(matches!(
            rx.try_recv(),
            Ok(FeedEvent::Closed { event_time: 1, .. })
        ));
        let bad = closed.replace(r#""h":"1""#, r#""h":"0.5""#);
        handle_text(&bad, &tx);
        assert!(matches!(rx.try_recv(), Ok(FeedEvent::Rejected { .. })));
        assert_eq!(handle_text("{not json", &tx), Handled::Other);
        assert!(rx.try_recv().is_err());
        assert_eq!(
            handle_text(r#"{"e":"serverShutdown","E":5}"#, &tx),
            Handled::Reconnect("serverShutdown".into())
        );
    }
}
