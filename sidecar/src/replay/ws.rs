//! WebSocket kline streams of the fake Binance.
//!
//! Per minute and requested symbol (catalog order): an `x:false` update at +20 s and +40 s
//! and the closed kline at close_time + `close_delay_ms`. Combined routes wrap each event in
//! `{"stream":..,"data":..}`, raw routes (`/ws/<stream>[/<stream>...]`) send the event alone.
//! Each event is serialized once per (symbol, minute, phase) and shared by every connection
//! ([`PhaseCache`]).
//!
//! USDⓈ-M only (Binance's rules): more than 1024 streams → close frame right after the
//! upgrade; more than 10 client messages (text, ping, pong) within one second → close frame
//! "too many messages"; `--connection-lifetime` replay seconds after opening → close frame.
//! The legacy `/stream` and `/ws/...` routes of a USDⓈ-M replay open, ping and answer pings,
//! and never deliver a kline or an aggTrade (Binance since 2026-04-23: the unrouted path
//! carries only `/public` data, i.e. book tickers); `/market` delivers klines and aggTrades,
//! `/public` book tickers, each route nothing else.
//!
//! Ticks (`@aggTrade`, `@bookTicker`): every requested symbol's trades and book tickers after
//! the connection's start are sent at their own times (`T`, `E`), merged in time order, in the
//! market's payload form (spot aggTrade with `M`; spot bookTicker without `e`, `E`, `T`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use futures_util::SinkExt;
use rust_decimal::Decimal;
use tokio::time::Instant;
use tracing::debug;

use super::{
    find_open, partial_kline, trade_ids, trade_ids_from_trades, MessageRate, ReplayState,
    MAX_STREAMS_PER_CONNECTION,
};
use crate::binance::kind::agg_trade::AggTrade;
use crate::binance::kind::book_ticker::BookTicker;
use crate::binance::kind::StreamKind;
use crate::binance::model::{WsKline, WsKlineEvent};
use crate::constants::{EVENT_KLINE, EVENT_SERVER_SHUTDOWN, MINUTE_MS};
use crate::market::Market;

/// How a route serves its connections.
#[derive(Debug, Clone, Copy)]
struct Mode {
    /// Combined-stream wrapper (`{"stream":..,"data":..}`).
    wrapped: bool,
    /// Deliver klines and aggTrades (false: a USDⓈ-M legacy or `/public` route).
    deliver: bool,
    /// Deliver book tickers (spot; USDⓈ-M `/public` and the legacy unrouted path).
    public: bool,
}

fn split_streams(s: &str) -> Vec<String> {
    s.split('/')
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect()
}

fn upgrade(ws: WebSocketUpgrade, st: Arc<ReplayState>, names: Vec<String>, mode: Mode) -> Response {
    ws.on_upgrade(move |socket| serve_stream(socket, st, names, mode))
}

fn query_streams(q: &HashMap<String, String>) -> Vec<String> {
    q.get("streams")
        .map(|s| split_streams(s))
        .unwrap_or_default()
}

pub(super) async fn combined_handler(
    State(st): State<Arc<ReplayState>>,
    Query(q): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let mode = Mode {
        wrapped: true,
        deliver: true,
        public: st.cfg.market == Market::Spot,
    };
    upgrade(ws, st, query_streams(&q), mode)
}

pub(super) async fn public_combined_handler(
    State(st): State<Arc<ReplayState>>,
    Query(q): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let mode = Mode {
        wrapped: true,
        deliver: false,
        public: true,
    };
    upgrade(ws, st, query_streams(&q), mode)
}

pub(super) async fn public_raw_handler(
    State(st): State<Arc<ReplayState>>,
    Path(streams): Path<String>,
    ws: WebSocketUpgrade,
) -> Response {
    let mode = Mode {
        wrapped: false,
        deliver: false,
        public: true,
    };
    upgrade(ws, st, split_streams(&streams), mode)
}

pub(super) async fn raw_handler(
    State(st): State<Arc<ReplayState>>,
    Path(streams): Path<String>,
    ws: WebSocketUpgrade,
) -> Response {
    let mode = Mode {
        wrapped: false,
        deliver: true,
        public: st.cfg.market == Market::Spot,
    };
    upgrade(ws, st, split_streams(&streams), mode)
}

pub(super) async fn legacy_combined_handler(
    State(st): State<Arc<ReplayState>>,
    Query(q): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let mode = Mode {
        wrapped: true,
        deliver: false,
        public: true,
    };
    upgrade(ws, st, query_streams(&q), mode)
}

pub(super) async fn legacy_raw_handler(
    State(st): State<Arc<ReplayState>>,
    Path(streams): Path<String>,
    ws: WebSocketUpgrade,
) -> Response {
    let mode = Mode {
        wrapped: false,
        deliver: false,
        public: true,
    };
    upgrade(ws, st, split_streams(&streams), mode)
}

/// Messages of one replay event.
#[derive(Debug, Clone, Copy)]
enum Phase {
    Update(Decimal),
    Closed,
}

/// One event, serialized in both forms.
#[derive(Debug, Clone)]
struct Encoded {
    raw: Utf8Bytes,
    combined: Utf8Bytes,
}

/// The events of one (minute, phase), per catalog symbol, computed on first use.
#[derive(Debug)]
struct PhaseSlot {
    events: Vec<OnceLock<Option<Encoded>>>,
}

/// Recently sent phases shared by all connections.
#[derive(Debug, Default)]
pub(super) struct PhaseCache {
    slots: Mutex<VecDeque<(i64, usize, Arc<PhaseSlot>)>>,
}

/// Phases kept (connections lagging further behind re-encode).
const PHASES_KEPT: usize = 16;

impl PhaseCache {
    fn slot(&self, minute: i64, phase: usize, symbols: usize) -> Arc<PhaseSlot> {
        let mut g = self.slots.lock().expect("phase cache lock");
        if let Some((_, _, s)) = g.iter().find(|(m, p, _)| *m == minute && *p == phase) {
            return s.clone();
        }
        let s = Arc::new(PhaseSlot {
            events: (0..symbols).map(|_| OnceLock::new()).collect(),
        });
        g.push_back((minute, phase, s.clone()));
        while g.len() > PHASES_KEPT {
            g.pop_front();
        }
        s
    }
}

/// The event of catalog symbol `i` for `minute` at `phase` (None: nothing to send).
fn encode(st: &ReplayState, i: usize, minute: i64, offset: i64, phase: Phase) -> Option<Encoded> {
    let s = st.catalog.get(i);
    if !s.serves_open(minute) {
        return None;
    }
    let src = find_open(st.data.series_at(s.source), minute)?;
    let k = s.derive(src);
    let (first, last) =
        trade_ids_from_trades(&st.data, s.source, minute).unwrap_or_else(|| trade_ids(&k));
    let (kline, event_time) = match phase {
        Phase::Update(f) => {
            let p = partial_kline(&k, f);
            let (pf, pl) = if p.trades > 0 {
                (first, first + p.trades - 1)
            } else {
                (-1, -1)
            };
            (WsKline::from_kline(&p, false, pf, pl), minute + offset)
        }
        Phase::Closed => (
            WsKline::from_kline(&k, true, first, last),
            k.close_time_ms() + st.cfg.close_delay_ms,
        ),
    };
    if s.listed_ms.is_some_and(|t| event_time < t) {
        return None;
    }
    let ev = WsKlineEvent {
        event_type: EVENT_KLINE.to_string(),
        event_time,
        symbol: s.name.clone(),
        kline,
    };
    let raw = serde_json::to_string(&ev).expect("serializable");
    let combined = format!(r#"{{"stream":"{}","data":{raw}}}"#, s.stream);
    Some(Encoded {
        raw: raw.into(),
        combined: combined.into(),
    })
}

/// Removes the connection from the open list however its task ends.
struct Registered(Arc<ReplayState>, u64);

impl Drop for Registered {
    fn drop(&mut self) {
        self.0.unregister(self.1);
    }
}

fn close_with(code: u16, reason: String) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// Sends `close` and waits (at most a second) for the client's Close, as RFC 6455 §7.1.1 has
/// the server do before it drops the TCP connection: dropping it at once makes the kernel
/// answer a frame still in flight (an automatic pong) with a reset, and a reset discards what
/// the client had not read yet (the last events, `serverShutdown`).
async fn close_handshake(socket: &mut WebSocket, close: Message) {
    if socket.send(close).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(m)) = socket.recv().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

async fn serve_stream(mut socket: WebSocket, st: Arc<ReplayState>, names: Vec<String>, mode: Mode) {
    let id = st.connections.fetch_add(1, Ordering::Relaxed) + 1;
    let usdm = st.cfg.market == Market::Usdm;
    if usdm && names.len() > MAX_STREAMS_PER_CONNECTION {
        st.closed_too_many_streams.fetch_add(1, Ordering::Relaxed);
        let reason = format!(
            "too many streams: {} > {MAX_STREAMS_PER_CONNECTION}",
            names.len()
        );
        debug!(
            connection = id,
            streams = names.len(),
            "too many streams: closing"
        );
        let _ = socket.send(close_with(close_code::POLICY, reason)).await;
        return;
    }
    // Catalog symbols that were asked for, per kind, in catalog order (others get no
    // messages; a kind the route does not carry gets none either).
    let wanted = |kind: StreamKind| -> Vec<usize> {
        let allowed = match kind {
            StreamKind::Kline | StreamKind::AggTrade => mode.deliver,
            StreamKind::BookTicker => mode.public,
        };
        if !allowed {
            return Vec::new();
        }
        let mut v: Vec<usize> = names
            .iter()
            .filter_map(|n| StreamKind::of_stream(n))
            .filter(|(k, _)| *k == kind)
            .filter_map(|(_, s)| st.catalog.find(&s.to_ascii_uppercase()))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let symbols = wanted(StreamKind::Kline);
    let mut ticks = TickFeed::new(
        &st,
        &wanted(StreamKind::AggTrade),
        &wanted(StreamKind::BookTicker),
        st.clock.peek_ms(),
        mode.wrapped,
    );
    let now = st.clock.now_ms();
    let channel = names
        .first()
        .and_then(|n| n.split_once('@'))
        .map_or("", |(_, c)| c);
    let mut dropped = st.register(id, names.len(), channel, now);
    let _registered = Registered(st.clone(), id);
    let last_minute = symbols
        .iter()
        .filter_map(|&i| {
            st.data
                .series_at(st.catalog.get(i).source)
                .last()
                .map(|k| k.open_time_ms())
        })
        .max();
    debug!(
        connection = id,
        streams = names.len(),
        symbols = symbols.len(),
        ?mode,
        now,
        "stream connection"
    );
    let third = Decimal::ONE / Decimal::from(3);
    let offsets: [(i64, Phase); 3] = [
        (20_000, Phase::Update(third)),
        (40_000, Phase::Update(third * Decimal::from(2))),
        (MINUTE_MS - 1 + st.cfg.close_delay_ms, Phase::Closed),
    ];
    let mut minute = now.div_euclid(MINUTE_MS) * MINUTE_MS - MINUTE_MS;
    let mut phase = 0usize;
    // Skip events that happened before the connection.
    while minute + offsets[phase].0 <= now {
        phase += 1;
        if phase == offsets.len() {
            phase = 0;
            minute += MINUTE_MS;
        }
    }
    let ping_every = Duration::from_secs_f64(st.cfg.ping_secs.max(0.05));
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    let mut last_pong = Instant::now();
    let lifetime_at = st.cfg.connection_lifetime_secs.filter(|_| usdm).map(|s| {
        st.clock
            .instant_for(now.saturating_add((s as i64).saturating_mul(1000)))
    });
    let mut rate = MessageRate::default();
    let mut closed_sent = 0u64;
    let mut shutdown = st.shutdown.clone();
    loop {
        let exhausted = last_minute.is_none_or(|l| minute > l);
        let at = st.clock.instant_for(minute + offsets[phase].0);
        let tick_at = ticks.next_time().map(|t| st.clock.instant_for(t));
        tokio::select! {
            _ = async { tokio::time::sleep_until(tick_at.unwrap_or_else(Instant::now)).await }, if tick_at.is_some() => {
                let now = st.clock.now_ms();
                let mut failed = false;
                for text in ticks.due(&st, now) {
                    if socket.feed(Message::Text(text)).await.is_err() {
                        failed = true;
                        break;
                    }
                }
                if failed || socket.flush().await.is_err() {
                    debug!(connection = id, "client went away");
                    break;
                }
            }
            _ = shutdown.recv() => {
                let _ = socket.send(Message::Close(None)).await;
                break;
            }
            _ = &mut dropped => {
                // abrupt: no close frame, the TCP connection closes with the socket
                debug!(connection = id, "dropped by the test hook");
                return;
            }
            _ = async {
                match lifetime_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => {
                st.closed_lifetime.fetch_add(1, Ordering::Relaxed);
                debug!(connection = id, "connection lifetime reached: closing");
                let reason = "connection lifetime reached".to_string();
                close_handshake(&mut socket, close_with(close_code::NORMAL, reason)).await;
                break;
            }
            _ = tokio::time::sleep_until(at), if !exhausted => {
                let (offset, what) = offsets[phase];
                let slot = st.phases.slot(minute, phase, st.catalog.len());
                let mut sent = 0usize;
                let mut failed = false;
                for &i in &symbols {
                    let enc = slot.events[i].get_or_init(|| encode(&st, i, minute, offset, what));
                    let Some(enc) = enc else { continue };
                    let text = if mode.wrapped { enc.combined.clone() } else { enc.raw.clone() };
                    if socket.feed(Message::Text(text)).await.is_err() {
                        failed = true;
                        break;
                    }
                    sent += 1;
                }
                if failed || socket.flush().await.is_err() {
                    debug!(connection = id, "client went away");
                    break;
                }
                if matches!(what, Phase::Closed) {
                    if sent > 0 {
                        st.log_sent(id, minute, sent);
                    }
                    closed_sent += 1;
                    if st.cfg.drop_after.is_some_and(|n| closed_sent >= n) {
                        let ev = serde_json::json!({"e": EVENT_SERVER_SHUTDOWN, "E": st.clock.now_ms()});
                        if socket.send(Message::Text(ev.to_string().into())).await.is_ok() {
                            close_handshake(&mut socket, Message::Close(None)).await;
                        }
                        debug!(connection = id, closed_sent, "drop-after reached: closing");
                        break;
                    }
                }
                phase += 1;
                if phase == offsets.len() {
                    phase = 0;
                    minute += MINUTE_MS;
                }
            }
            _ = ping.tick() => {
                if last_pong.elapsed() > ping_every * 3 + Duration::from_secs(1) {
                    debug!(connection = id, "no pong: closing");
                    let _ = socket.send(Message::Close(None)).await;
                    break;
                }
                if socket.send(Message::Ping(axum::body::Bytes::from_static(b"replay"))).await.is_err() {
                    break;
                }
            }
            msg = socket.recv() => {
                match msg {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => {
                        debug!(connection = id, "client closed");
                        break;
                    }
                    Some(Ok(m)) => {
                        if matches!(m, Message::Pong(_)) {
                            last_pong = Instant::now();
                        }
                        if usdm && !rate.allow(Instant::now()) {
                            st.closed_too_many_messages.fetch_add(1, Ordering::Relaxed);
                            debug!(connection = id, "too many messages: closing");
                            let reason = "too many messages".to_string();
                            close_handshake(&mut socket, close_with(close_code::POLICY, reason)).await;
                            break;
                        }
                    }
                }
            }
        }
    }
    debug!(connection = id, closed_sent, "stream connection ended");
}

/// One tick series a connection sends: catalog symbol `sym`, trades or book tickers, the
/// position of the next one.
#[derive(Debug)]
struct TickSlot {
    sym: usize,
    kind: StreamKind,
    pos: usize,
}

/// The ticks of one connection, merged in time order.
struct TickFeed {
    slots: Vec<TickSlot>,
    /// (time of the slot's next tick, slot), earliest first.
    heap: std::collections::BinaryHeap<std::cmp::Reverse<(i64, usize)>>,
    wrapped: bool,
}

impl TickFeed {
    /// Starts after `now_ms`: what happened before the connection is not sent.
    fn new(
        st: &ReplayState,
        trades: &[usize],
        books: &[usize],
        now_ms: i64,
        wrapped: bool,
    ) -> Self {
        let mut feed = TickFeed {
            slots: Vec::new(),
            heap: std::collections::BinaryHeap::new(),
            wrapped,
        };
        for (&i, kind) in trades
            .iter()
            .map(|i| (i, StreamKind::AggTrade))
            .chain(books.iter().map(|i| (i, StreamKind::BookTicker)))
        {
            let src = st.catalog.get(i).source;
            let pos = match kind {
                StreamKind::AggTrade => st
                    .data
                    .trades_at(src)
                    .partition_point(|t| t.time_ms() <= now_ms),
                _ => st
                    .data
                    .books_at(src)
                    .partition_point(|b| b.time_ms() <= now_ms),
            };
            feed.slots.push(TickSlot { sym: i, kind, pos });
            let slot = feed.slots.len() - 1;
            if let Some(t) = feed.time_of(st, slot) {
                feed.heap.push(std::cmp::Reverse((t, slot)));
            }
        }
        feed
    }

    fn time_of(&self, st: &ReplayState, slot: usize) -> Option<i64> {
        let s = &self.slots[slot];
        let src = st.catalog.get(s.sym).source;
        match s.kind {
            StreamKind::AggTrade => st.data.trades_at(src).get(s.pos).map(AggTrade::time_ms),
            _ => st.data.books_at(src).get(s.pos).map(BookTicker::time_ms),
        }
    }

    fn next_time(&self) -> Option<i64> {
        self.heap.peek().map(|r| r.0 .0)
    }

    /// The messages of every tick due at `now_ms`, in time order.
    fn due(&mut self, st: &ReplayState, now_ms: i64) -> Vec<Utf8Bytes> {
        let mut out = Vec::new();
        while let Some(std::cmp::Reverse((t, slot))) = self.heap.peek().copied() {
            if t > now_ms {
                break;
            }
            self.heap.pop();
            let s = &self.slots[slot];
            let sym = st.catalog.get(s.sym);
            let src = sym.source;
            if sym.serves_time(t) {
                let text = match s.kind {
                    StreamKind::AggTrade => {
                        let tr = sym.derive_trade(&st.data.trades_at(src)[s.pos]);
                        agg_trade_event(&tr, st.cfg.market, self.wrapped)
                    }
                    _ => {
                        let b = sym.derive_book(&st.data.books_at(src)[s.pos]);
                        book_ticker_event(&b, st.cfg.market, self.wrapped)
                    }
                };
                out.push(text.into());
            }
            self.slots[slot].pos += 1;
            if let Some(next) = self.time_of(st, slot) {
                self.heap.push(std::cmp::Reverse((next, slot)));
            }
        }
        out
    }
}

/// An `aggTrade` event as the market sends it (`E = T`; spot adds `M`), wrapped or raw.
pub fn agg_trade_event(t: &AggTrade, market: Market, wrapped: bool) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(200);
    if wrapped {
        let _ = write!(
            s,
            r#"{{"stream":"{}@aggTrade","data":"#,
            t.symbol.as_str().to_ascii_lowercase()
        );
    }
    let time = t.time_ms();
    match market {
        Market::Usdm => {
            let _ = write!(
                s,
                r#"{{"e":"aggTrade","E":{time},"a":{},"s":"{}","p":"{}","q":"{}","f":{},"l":{},"T":{time},"m":{}}}"#,
                t.agg_trade_id,
                t.symbol,
                t.price,
                t.quantity,
                t.first_trade_id,
                t.last_trade_id,
                t.is_buyer_maker
            );
        }
        Market::Spot => {
            let _ = write!(
                s,
                r#"{{"e":"aggTrade","E":{time},"s":"{}","a":{},"p":"{}","q":"{}","f":{},"l":{},"T":{time},"m":{},"M":{}}}"#,
                t.symbol,
                t.agg_trade_id,
                t.price,
                t.quantity,
                t.first_trade_id,
                t.last_trade_id,
                t.is_buyer_maker,
                t.is_best_match.unwrap_or(true)
            );
        }
    }
    if wrapped {
        s.push('}');
    }
    s
}

/// A `bookTicker` event as the market sends it (USD-M with `e`, `T`, `E`; spot without).
pub fn book_ticker_event(b: &BookTicker, market: Market, wrapped: bool) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(200);
    if wrapped {
        let _ = write!(
            s,
            r#"{{"stream":"{}@bookTicker","data":"#,
            b.symbol.as_str().to_ascii_lowercase()
        );
    }
    match market {
        Market::Usdm => {
            let e = b.time_ms();
            let t = b.transaction_time.map_or(e, |t| t.timestamp_millis());
            let _ = write!(
                s,
                r#"{{"e":"bookTicker","u":{},"s":"{}","b":"{}","B":"{}","a":"{}","A":"{}","T":{t},"E":{e}}}"#,
                b.update_id,
                b.symbol,
                b.best_bid_price,
                b.best_bid_qty,
                b.best_ask_price,
                b.best_ask_qty
            );
        }
        Market::Spot => {
            let _ = write!(
                s,
                r#"{{"u":{},"s":"{}","b":"{}","B":"{}","a":"{}","A":"{}"}}"#,
                b.update_id,
                b.symbol,
                b.best_bid_price,
                b.best_bid_qty,
                b.best_ask_price,
                b.best_ask_qty
            );
        }
    }
    if wrapped {
        s.push('}');
    }
    s
}
