//! `ta-feed replay`: a local fake Binance (spot or USDⓈ-M futures) serving recorded klines12
//! files.
//!
//! Replay clock: `replay_now = start + (wall time since the first request) × speed`. The
//! clock starts with the first REST or WebSocket request, so a client started some time after
//! the replay still finds exactly the history before `--start`.
//!
//! Spot (`--market spot`, the default):
//! * `GET /api/v3/time` → `{"serverTime": replay_now}`
//! * `GET /api/v3/klines?symbol&interval=1m&startTime&endTime&limit` → recorded klines with
//!   open_time ≤ replay_now in Binance's array form; the in-progress minute is last, with
//!   partial values. `X-MBX-USED-WEIGHT-1M` counts weight per replay minute (limit 6000).
//! * `GET /api/v3/exchangeInfo` (weight 20).
//! * `GET /stream?streams=a@kline_1m/b@kline_1m` (WebSocket) → combined-stream kline
//!   events: for each minute, `x:false` updates at 20 s and 40 s (deterministic partials)
//!   and the closed kline (recorded values verbatim) at close_time + `close_delay_ms`.
//!   A connection starts at the current replay time. Pings every `ping_secs` real seconds.
//!   `GET /ws/<stream>[/<stream>...]`: the same events without the wrapper.
//!
//! USDⓈ-M (`--market usdm`): `/fapi/v1/time`, `/fapi/v1/klines` (limit ≤ 1500, weight by
//! limit), `/fapi/v1/exchangeInfo`; REQUEST_WEIGHT 2400 per wall-clock minute with 429 and
//! 418 (see [`rest`]); kline streams only under `/market/stream` and `/market/ws/...`, the
//! legacy `/stream` and `/ws/...` open but stay silent; Binance's connection limits
//! (see [`ws`]).
//!
//! Ticks (both markets): aggTrades dumps (`SYMBOL-aggTrades-…`) are served as `@aggTrade`
//! streams (each trade at its `T`, `E = T`) and by REST `aggTrades` (fromId / startTime /
//! endTime / limit as Binance, weight 4 spot and 20 USD-M, refused with 429/418 like klines);
//! a symbol with trades gets its klines **derived from those trades** (Binance's rule: open
//! and close the first and last price, volume Σq, quote volume Σp·q, trades Σ(l−f+1), taker
//! sums over `m = false`; a minute without trades is flat at the previous close), so one
//! replay is consistent across streams. Book-ticker recordings (futures `bookTicker` dumps,
//! Tardis quotes) are served as `@bookTicker` (USD-M: on `/public`, and on the legacy unrouted
//! path, which carries public data; spot: without `e`, `E`, `T`), optionally moved in time
//! (`--book-tickers-from`). USD-M klines and aggTrades are only on `/market`.
//!
//! Test hooks (both markets): `GET /_replay/status`, `POST /_replay/drop-connection[?id=N]`
//! (`?channel=aggTrade`: the oldest connection of that channel).

mod catalog;
mod rest;
mod ws;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::DateTime;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tracing::info;

pub use catalog::{clone_kline, clone_name, parse_listing, Catalog, ServedSymbol};
pub use rest::{select_agg_trades, select_klines};

use crate::binance::kind::agg_trade::AggTrade;
use crate::binance::kind::book_ticker::BookTicker;
use crate::binance::kind::Route;
use crate::binance::model::Kline;
use crate::constants::MINUTE_MS;
use crate::import::{read_klines12, ImportError};
use crate::import_ticks::{self, TickRow};
use crate::market::Market;
use crate::shutdown::Shutdown;

/// Binance's limit of streams per WebSocket connection (USDⓈ-M: more → closed).
pub const MAX_STREAMS_PER_CONNECTION: usize = crate::constants::MAX_STREAMS_PER_CONNECTION;
/// Messages a client may send per second on one USDⓈ-M connection (more → closed).
pub const MAX_CLIENT_MESSAGES_PER_SEC: usize = 10;
/// Retry-After of a 418 (IP ban after ignoring a 429), seconds.
pub const BAN_SECS: u64 = 120;

/// Replay failures.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("loading data: {0}")]
    Load(#[from] ImportError),
    #[error("no klines, trades or book tickers in the given files")]
    Empty,
    #[error("{symbol}: {reason}")]
    Derive { symbol: String, reason: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("server: {0}")]
    Serve(#[source] std::io::Error),
    #[error("invalid --start {0:?}: expected RFC 3339 or epoch milliseconds")]
    Start(String),
    #[error("--clone-symbols: {0}")]
    Clone(String),
    #[error("{0}")]
    Listing(String),
    #[error("--exchange-info {path}: {msg}")]
    ExchangeInfo { path: PathBuf, msg: String },
    #[error("--sent-log {path}: {source}")]
    SentLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid settings: {0}")]
    Config(String),
}

impl ReplayError {
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// Parses `--start`: RFC 3339 (`2021-10-12T00:00:00Z`) or epoch milliseconds.
pub fn parse_start(s: &str) -> Result<i64, ReplayError> {
    let t = s.trim();
    if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit()) {
        return t.parse::<i64>().map_err(|_| ReplayError::Start(s.into()));
    }
    DateTime::parse_from_rfc3339(t)
        .map(|d| d.timestamp_millis())
        .map_err(|_| ReplayError::Start(s.into()))
}

/// Settings of the fake Binance.
#[derive(Debug, Clone)]
pub struct ReplayConfig {
    pub files: Vec<PathBuf>,
    pub listen: String,
    /// Which Binance to fake (routes, limits, weights, WebSocket rules).
    pub market: Market,
    /// Replayed seconds per real second.
    pub speed: f64,
    /// Replay start (epoch ms); default first open_time + 1440 minutes.
    pub start_ms: Option<i64>,
    /// Close each stream connection after this many closed minutes were sent on it.
    pub drop_after: Option<u64>,
    /// Real seconds between WebSocket pings (spot 20, usdm 180).
    pub ping_secs: f64,
    /// Answer the first N klines requests with 429 + Retry-After: 1.
    pub fail_rest: u32,
    /// Delay of the closed kline after close_time (replay ms; spot 200, usdm 2000).
    pub close_delay_ms: i64,
    /// REQUEST_WEIGHT limit per minute (default: the market's, 6000 / 2400).
    pub weight_limit_1m: u32,
    /// Recorded exchangeInfo (.json or .json.gz) to serve instead of a built one.
    pub exchange_info: Option<PathBuf>,
    /// USDⓈ-M: close a connection after this many replay seconds (Binance: 86400).
    pub connection_lifetime_secs: Option<u64>,
    /// Symbols served per file symbol (1 = only the files' symbols).
    pub clone_symbols: u32,
    /// `(symbol, epoch ms)`: the symbol does not exist before that time.
    pub list: Vec<(String, i64)>,
    /// `(symbol, epoch ms)`: no klines from that time on; SETTLING in exchangeInfo.
    pub delist: Vec<(String, i64)>,
    /// Append one JSON line per connection and minute after its closed klines were sent.
    pub sent_log: Option<PathBuf>,
    /// Move each book-ticker recording so its first update is at this time (epoch ms).
    pub book_tickers_from: Option<i64>,
}

impl ReplayConfig {
    /// Spot defaults.
    pub fn new(files: Vec<PathBuf>, listen: &str) -> Self {
        Self::for_market(Market::Spot, files, listen)
    }

    /// The defaults of `market` (ping interval, close delay, weight limit).
    pub fn for_market(market: Market, files: Vec<PathBuf>, listen: &str) -> Self {
        ReplayConfig {
            files,
            listen: listen.to_string(),
            market,
            speed: 1.0,
            start_ms: None,
            drop_after: None,
            ping_secs: default_ping_secs(market),
            fail_rest: 0,
            close_delay_ms: default_close_delay_ms(market),
            weight_limit_1m: market.weight_limit_1m(),
            exchange_info: None,
            connection_lifetime_secs: None,
            clone_symbols: 1,
            list: Vec::new(),
            delist: Vec::new(),
            sent_log: None,
            book_tickers_from: None,
        }
    }
}

/// Default real seconds between server pings: spot 20, usdm 180 (Binance's intervals).
pub fn default_ping_secs(market: Market) -> f64 {
    match market {
        Market::Spot => 20.0,
        Market::Usdm => 180.0,
    }
}

/// Default replay ms between close_time and the closed kline event: spot 200, usdm 2000.
pub fn default_close_delay_ms(market: Market) -> i64 {
    match market {
        Market::Spot => 200,
        Market::Usdm => 2000,
    }
}

/// Recorded klines, trades and book tickers by symbol, in file order.
#[derive(Debug, Default)]
pub struct ReplayData {
    symbols: Vec<String>,
    series: Vec<Vec<Kline>>,
    trades: Vec<Vec<AggTrade>>,
    books: Vec<Vec<BookTicker>>,
    index: HashMap<String, usize>,
}

impl ReplayData {
    /// Loads klines12 files, aggTrades dumps and book-ticker recordings (kind and symbol from
    /// each file name).
    pub fn load(files: &[PathBuf]) -> Result<Self, ReplayError> {
        Self::load_with(files, None)
    }

    /// [`ReplayData::load`], moving every book-ticker recording to start at
    /// `book_tickers_from` (epoch ms).
    pub fn load_with(
        files: &[PathBuf],
        book_tickers_from: Option<i64>,
    ) -> Result<Self, ReplayError> {
        let mut klines = Vec::new();
        let mut trades = Vec::new();
        let mut books: Vec<Vec<BookTicker>> = Vec::new();
        for f in files {
            match import_ticks::detect(f) {
                Some((kind, symbol)) => {
                    let mut file_books = Vec::new();
                    for row in import_ticks::read_all(f, kind, &symbol)? {
                        match row {
                            TickRow::Trade(t) => trades.push(t),
                            TickRow::Book(b) => file_books.push(b),
                        }
                    }
                    if !file_books.is_empty() {
                        books.push(file_books);
                    }
                }
                None => klines.extend(read_klines12(f, None)?),
            }
        }
        if let Some(at) = book_tickers_from {
            for file in &mut books {
                shift_books(file, at);
            }
        }
        Self::from_parts(klines, trades, books.into_iter().flatten().collect())
    }

    /// Builds from klines only (sorted by open time per symbol; the last copy of a duplicate
    /// minute wins).
    pub fn from_klines(klines: Vec<Kline>) -> Result<Self, ReplayError> {
        Self::from_parts(klines, Vec::new(), Vec::new())
    }

    /// Builds from klines, trades (their symbols get klines derived from them) and book
    /// tickers. Trades are ordered by id (the last copy of a duplicate id wins), book tickers
    /// by update id.
    pub fn from_parts(
        klines: Vec<Kline>,
        trades: Vec<AggTrade>,
        books: Vec<BookTicker>,
    ) -> Result<Self, ReplayError> {
        let mut data = ReplayData::default();
        for k in klines {
            let i = data.slot(&k.symbol);
            data.series[i].push(k);
        }
        for v in &mut data.series {
            v.sort_by_key(Kline::open_time_ms);
            // keep the last copy of a duplicate open_time
            v.reverse();
            v.dedup_by_key(|k| k.open_time_ms());
            v.reverse();
        }
        for t in trades {
            let i = data.slot(t.symbol.as_str());
            data.trades[i].push(t);
        }
        for b in books {
            let i = data.slot(b.symbol.as_str());
            data.books[i].push(b);
        }
        for i in 0..data.symbols.len() {
            let v = &mut data.trades[i];
            v.sort_by_key(|t| t.agg_trade_id);
            v.reverse();
            v.dedup_by_key(|t| t.agg_trade_id);
            v.reverse();
            data.books[i].sort_by_key(|b| b.update_id);
            data.books[i].dedup_by_key(|b| b.update_id);
            if !data.trades[i].is_empty() {
                if !data.series[i].is_empty() {
                    return Err(ReplayError::Derive {
                        symbol: data.symbols[i].clone(),
                        reason: "has both a kline file and trades: its klines are derived from \
                                 its trades"
                            .into(),
                    });
                }
                data.series[i] = klines_from_trades(&data.symbols[i], &data.trades[i])?;
            }
        }
        if data.series.iter().all(Vec::is_empty) && data.books.iter().all(Vec::is_empty) {
            return Err(ReplayError::Empty);
        }
        Ok(data)
    }

    fn slot(&mut self, symbol: &str) -> usize {
        match self.index.get(symbol) {
            Some(&i) => i,
            None => {
                let i = self.symbols.len();
                self.symbols.push(symbol.to_string());
                self.index.insert(symbol.to_string(), i);
                self.series.push(Vec::new());
                self.trades.push(Vec::new());
                self.books.push(Vec::new());
                i
            }
        }
    }

    pub fn symbols(&self) -> &[String] {
        &self.symbols
    }

    pub fn series(&self, symbol: &str) -> Option<&[Kline]> {
        self.index.get(symbol).map(|&i| self.series[i].as_slice())
    }

    /// The series of the `i`-th symbol (file order).
    pub fn series_at(&self, i: usize) -> &[Kline] {
        &self.series[i]
    }

    /// The trades of the `i`-th symbol, by id.
    pub fn trades_at(&self, i: usize) -> &[AggTrade] {
        &self.trades[i]
    }

    /// The book tickers of the `i`-th symbol, by update id.
    pub fn books_at(&self, i: usize) -> &[BookTicker] {
        &self.books[i]
    }

    pub fn first_open_ms(&self) -> i64 {
        let klines = self
            .series
            .iter()
            .filter_map(|v| v.first())
            .map(Kline::open_time_ms);
        let books = self
            .books
            .iter()
            .filter_map(|v| v.first())
            .map(|b| b.time_ms().div_euclid(MINUTE_MS) * MINUTE_MS);
        klines.chain(books).min().unwrap_or(0)
    }

    pub fn last_open_ms(&self) -> i64 {
        self.series
            .iter()
            .filter_map(|v| v.last())
            .map(Kline::open_time_ms)
            .max()
            .unwrap_or(0)
    }

    /// The kline of `symbol` opening at `open_ms`.
    pub fn at(&self, symbol: &str, open_ms: i64) -> Option<&Kline> {
        find_open(self.series(symbol)?, open_ms)
    }
}

/// Moves book tickers (in update-id order) so the earliest update is at `at_ms`; relative
/// times are kept (µs included).
fn shift_books(books: &mut [BookTicker], at_ms: i64) {
    let Some(first) = books.iter().map(|b| b.event_time).min() else {
        return;
    };
    let delta = chrono::Duration::milliseconds(at_ms) - (first - DateTime::UNIX_EPOCH);
    for b in books {
        b.event_time += delta;
        b.transaction_time = b.transaction_time.map(|t| t + delta);
    }
}

/// Binance's 1m klines of `trades` (ordered by id): for each minute from the first trade's to
/// the last trade's, open/close = the first/last trade's price, high/low, volume = Σ quantity,
/// quote volume = Σ price·quantity, trades = Σ(l − f + 1), taker buy volume / quote volume =
/// the same sums over trades with `m = false` (the taker bought); a minute without trades is
/// flat at the previous close with zero volumes. Exact decimals (an error rather than a
/// rounded sum).
pub fn klines_from_trades(symbol: &str, trades: &[AggTrade]) -> Result<Vec<Kline>, ReplayError> {
    let err = |reason: String| ReplayError::Derive {
        symbol: symbol.to_string(),
        reason,
    };
    let exact_mul = |a: Decimal, b: Decimal| -> Result<Decimal, ReplayError> {
        let p = a
            .checked_mul(b)
            .ok_or_else(|| err(format!("{a} × {b} overflows")))?;
        if p.scale() != a.scale() + b.scale() && !p.is_zero() {
            return Err(err(format!("{a} × {b} is not exact in 28 digits")));
        }
        Ok(p)
    };
    let add = |a: Decimal, b: Decimal| {
        a.checked_add(b)
            .ok_or_else(|| err(format!("{a} + {b} overflows")))
    };
    let mut out: Vec<Kline> = Vec::new();
    let mut i = 0;
    while i < trades.len() {
        let minute = trades[i].time_ms().div_euclid(MINUTE_MS) * MINUTE_MS;
        // flat minutes since the previous one
        if let Some(prev) = out.last().cloned() {
            let mut m = prev.open_time_ms() + MINUTE_MS;
            while m < minute {
                out.push(flat_kline(symbol, m, prev.close));
                m += MINUTE_MS;
            }
        }
        let mut j = i;
        let first = &trades[i];
        let (mut high, mut low) = (first.price, first.price);
        let (mut volume, mut quote, mut buy, mut buy_quote) =
            (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO, Decimal::ZERO);
        let mut count = 0i64;
        while j < trades.len() && trades[j].time_ms().div_euclid(MINUTE_MS) * MINUTE_MS == minute {
            let t = &trades[j];
            high = high.max(t.price);
            low = low.min(t.price);
            let pq = exact_mul(t.price, t.quantity)?;
            volume = add(volume, t.quantity)?;
            quote = add(quote, pq)?;
            if !t.is_buyer_maker {
                buy = add(buy, t.quantity)?;
                buy_quote = add(buy_quote, pq)?;
            }
            count += t.trades();
            j += 1;
        }
        let last = &trades[j - 1];
        if out.last().is_some_and(|k| k.open_time_ms() >= minute) {
            return Err(err(format!(
                "trades are not in time order at id {} (time {})",
                first.agg_trade_id, first.transact_time
            )));
        }
        let k = Kline {
            symbol: symbol.to_string(),
            open_time: crate::binance::model::from_ms(minute),
            close_time: crate::binance::model::from_ms(
                minute + crate::constants::KLINE_CLOSE_OFFSET_MS,
            ),
            open: first.price,
            high,
            low,
            close: last.price,
            volume,
            quote_volume: quote,
            trades: count,
            taker_buy_volume: buy,
            taker_buy_quote_volume: buy_quote,
        };
        k.validate().map_err(|e| err(e.to_string()))?;
        out.push(k);
        i = j;
    }
    Ok(out)
}

fn flat_kline(symbol: &str, minute: i64, price: Decimal) -> Kline {
    Kline {
        symbol: symbol.to_string(),
        open_time: crate::binance::model::from_ms(minute),
        close_time: crate::binance::model::from_ms(
            minute + crate::constants::KLINE_CLOSE_OFFSET_MS,
        ),
        open: price,
        high: price,
        low: price,
        close: price,
        volume: Decimal::ZERO,
        quote_volume: Decimal::ZERO,
        trades: 0,
        taker_buy_volume: Decimal::ZERO,
        taker_buy_quote_volume: Decimal::ZERO,
    }
}

/// The kline of a series opening at `open_ms` (binary search).
fn find_open(v: &[Kline], open_ms: i64) -> Option<&Kline> {
    v.binary_search_by_key(&open_ms, Kline::open_time_ms)
        .ok()
        .map(|i| &v[i])
}

/// The replay clock; it starts running at the first request.
#[derive(Debug, Clone)]
pub struct ReplayClock {
    start_ms: i64,
    speed: f64,
    started: std::sync::Arc<std::sync::OnceLock<Instant>>,
}

impl ReplayClock {
    pub fn new(start_ms: i64, speed: f64) -> Self {
        ReplayClock {
            start_ms,
            speed: if speed > 0.0 { speed } else { 1.0 },
            started: Default::default(),
        }
    }

    fn started(&self) -> Instant {
        *self.started.get_or_init(Instant::now)
    }

    /// Replay time now (epoch ms); starts the clock.
    pub fn now_ms(&self) -> i64 {
        self.start_ms + (self.started().elapsed().as_secs_f64() * 1000.0 * self.speed) as i64
    }

    /// Replay time now without starting the clock (the start time before the first
    /// request).
    pub fn peek_ms(&self) -> i64 {
        match self.started.get() {
            Some(t) => self.start_ms + (t.elapsed().as_secs_f64() * 1000.0 * self.speed) as i64,
            None => self.start_ms,
        }
    }

    /// Real instant at which the replay clock reads `replay_ms`.
    pub fn instant_for(&self, replay_ms: i64) -> Instant {
        let ahead = (replay_ms - self.start_ms).max(0) as f64 / 1000.0 / self.speed;
        self.started() + Duration::from_secs_f64(ahead)
    }
}

/// A deterministic in-progress view of `k` at `fraction` (0..1) of its minute: open is
/// the final open, close/high/low move linearly towards the final values, volumes and
/// trades are scaled. Every value stays inside the final kline's range.
pub fn partial_kline(k: &Kline, fraction: Decimal) -> Kline {
    let f = fraction.clamp(Decimal::ZERO, Decimal::ONE);
    let lerp = |from: Decimal, to: Decimal| {
        let scale = from.scale().max(to.scale());
        (from + (to - from) * f).round_dp(scale)
    };
    let scale = |v: Decimal| (v * f).round_dp(v.scale());
    Kline {
        symbol: k.symbol.clone(),
        open_time: k.open_time,
        close_time: k.close_time,
        open: k.open,
        high: lerp(k.open, k.high),
        low: lerp(k.open, k.low),
        close: lerp(k.open, k.close),
        volume: scale(k.volume),
        quote_volume: scale(k.quote_volume),
        trades: (Decimal::from(k.trades) * f).floor().to_i64().unwrap_or(0),
        taker_buy_volume: scale(k.taker_buy_volume),
        taker_buy_quote_volume: scale(k.taker_buy_quote_volume),
    }
}

/// The first and last raw trade ids (f, L) of `symbol_index`'s minute `open_ms` when its
/// klines come from trades; None otherwise.
fn trade_ids_from_trades(data: &ReplayData, i: usize, open_ms: i64) -> Option<(i64, i64)> {
    let trades = data.trades_at(i);
    if trades.is_empty() {
        return None;
    }
    let lo = trades.partition_point(|t| t.time_ms() < open_ms);
    let hi = trades.partition_point(|t| t.time_ms() < open_ms + MINUTE_MS);
    if lo >= hi {
        return Some((-1, -1));
    }
    Some((trades[lo].first_trade_id, trades[hi - 1].last_trade_id))
}

/// Synthetic trade ids (f, L) for a kline: -1/-1 when there was no trade.
fn trade_ids(k: &Kline) -> (i64, i64) {
    if k.trades <= 0 {
        (-1, -1)
    } else {
        let first = k.open_time_ms() / MINUTE_MS * 10_000;
        (first, first + k.trades - 1)
    }
}

/// Wall-clock unix milliseconds.
fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// USDⓈ-M request weight of the current wall-clock minute and the 429/418 state.
#[derive(Debug, Default)]
struct WallLimiter {
    minute: i64,
    used: u32,
    /// A 429 told the client to wait until then (wall ms); earlier requests get 418.
    retry_after_until_ms: i64,
    /// 418 ban until (wall ms).
    banned_until_ms: i64,
}

/// An open stream connection, as the hooks see it.
#[derive(Debug)]
struct OpenConnection {
    streams: usize,
    /// The channel of its first stream (`kline_1m`, `aggTrade`, `bookTicker`).
    channel: String,
    opened_replay_ms: i64,
    drop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Shared server state.
#[derive(Debug)]
pub struct ReplayState {
    pub data: ReplayData,
    /// Served symbols (file symbols and clones, listing windows).
    pub catalog: Catalog,
    pub clock: ReplayClock,
    pub cfg: ReplayConfig,
    /// Spot: (replay minute, used weight).
    weight: Mutex<(i64, u32)>,
    /// USDⓈ-M: wall-clock minute weight.
    limiter: Mutex<WallLimiter>,
    fail_rest_remaining: AtomicU32,
    /// klines requests seen (including the ones answered with 429 / 418).
    pub klines_requests: AtomicU64,
    /// aggTrades requests seen (including the ones answered with 429 / 418).
    pub agg_trades_requests: AtomicU64,
    /// exchangeInfo requests seen.
    pub exchange_info_requests: AtomicU64,
    /// 429 answers sent.
    pub rate_limited: AtomicU64,
    /// 418 answers sent (requests during a 429's Retry-After or a ban).
    pub banned: AtomicU64,
    /// WebSocket connections accepted (also the last connection id).
    pub connections: AtomicU64,
    /// Connections closed for sending more than 10 messages in a second.
    pub closed_too_many_messages: AtomicU64,
    /// Connections closed for asking for more than 1024 streams.
    pub closed_too_many_streams: AtomicU64,
    /// Connections closed at `--connection-lifetime`.
    pub closed_lifetime: AtomicU64,
    open: Mutex<BTreeMap<u64, OpenConnection>>,
    exchange_info: Option<serde_json::Value>,
    phases: ws::PhaseCache,
    sent_log: Option<Mutex<BufWriter<File>>>,
    shutdown: Shutdown,
}

impl ReplayState {
    /// Spot: adds `w` to the weight of the current replay minute.
    fn add_weight(&self, w: u32) -> u32 {
        let minute = self.clock.now_ms().div_euclid(MINUTE_MS);
        let mut g = self.weight.lock().expect("weight lock");
        if g.0 != minute {
            *g = (minute, 0);
        }
        g.1 += w;
        g.1
    }

    /// Used weight of the current minute (replay minute for spot, wall minute for usdm).
    pub fn weight_used_1m(&self) -> u32 {
        match self.cfg.market {
            Market::Spot => {
                let minute = self.clock.peek_ms().div_euclid(MINUTE_MS);
                let g = self.weight.lock().expect("weight lock");
                if g.0 == minute {
                    g.1
                } else {
                    0
                }
            }
            Market::Usdm => {
                let minute = wall_ms().div_euclid(MINUTE_MS);
                let g = self.limiter.lock().expect("limiter lock");
                if g.minute == minute {
                    g.used
                } else {
                    0
                }
            }
        }
    }

    /// The kline `symbol` (any served symbol, clones derived) serves for `open_ms`,
    /// ignoring listing windows.
    pub fn kline(&self, symbol: &str, open_ms: i64) -> Option<Kline> {
        let s = self.catalog.get(self.catalog.find(symbol)?);
        let k = find_open(self.data.series_at(s.source), open_ms)?;
        Some(s.derive(k).into_owned())
    }

    /// Ids of the open stream connections, oldest first.
    pub fn open_connections(&self) -> Vec<u64> {
        self.open
            .lock()
            .expect("open lock")
            .keys()
            .copied()
            .collect()
    }

    /// What `GET /_replay/status` answers.
    pub fn status(&self) -> serde_json::Value {
        let open = self.open.lock().expect("open lock");
        let list: Vec<serde_json::Value> = open
            .iter()
            .map(|(id, c)| {
                serde_json::json!({"id": id, "streams": c.streams, "channel": c.channel,
                                   "opened_replay_ms": c.opened_replay_ms})
            })
            .collect();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "now_ms": self.clock.peek_ms(),
            "clock_started": self.clock.started.get().is_some(),
            "market": self.cfg.market.as_str(),
            "symbols": self.catalog.len(),
            "connections_open": open.len(),
            "connections_total": load(&self.connections),
            "streams_open": open.values().map(|c| c.streams).sum::<usize>(),
            "klines_requests": load(&self.klines_requests),
            "agg_trades_requests": load(&self.agg_trades_requests),
            "exchange_info_requests": load(&self.exchange_info_requests),
            "rate_limited": load(&self.rate_limited),
            "banned": load(&self.banned),
            "weight_used_1m": self.weight_used_1m(),
            "closed_too_many_messages": load(&self.closed_too_many_messages),
            "closed_too_many_streams": load(&self.closed_too_many_streams),
            "closed_lifetime": load(&self.closed_lifetime),
            "open": list,
        })
    }

    fn register(
        &self,
        id: u64,
        streams: usize,
        channel: &str,
        opened_replay_ms: i64,
    ) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.open.lock().expect("open lock").insert(
            id,
            OpenConnection {
                streams,
                channel: channel.to_string(),
                opened_replay_ms,
                drop: Some(tx),
            },
        );
        rx
    }

    fn unregister(&self, id: u64) {
        self.open.lock().expect("open lock").remove(&id);
    }

    /// Drops connection `id` (default the oldest) abruptly; its id, or None when none.
    pub fn drop_connection(&self, id: Option<u64>) -> Option<u64> {
        self.drop_connection_of(id, None)
    }

    /// Drops connection `id`, or the oldest one whose streams are of `channel` (`aggTrade`,
    /// `bookTicker`, `kline_1m`), or the oldest; its id, or None when none matches.
    pub fn drop_connection_of(&self, id: Option<u64>, channel: Option<&str>) -> Option<u64> {
        let mut open = self.open.lock().expect("open lock");
        let id = match id {
            Some(id) => open.contains_key(&id).then_some(id)?,
            None => {
                *open
                    .iter()
                    .find(|(_, c)| channel.is_none_or(|ch| c.channel == ch))?
                    .0
            }
        };
        let mut c = open.remove(&id)?;
        if let Some(tx) = c.drop.take() {
            let _ = tx.send(());
        }
        Some(id)
    }

    /// Appends a `--sent-log` line.
    fn log_sent(&self, connection: u64, open_time: i64, klines: usize) {
        let Some(w) = &self.sent_log else { return };
        let line = serde_json::json!({
            "connection": connection,
            "open_time": open_time,
            "klines": klines,
            "sent_at_ms": wall_ms(),
        });
        let mut w = w.lock().expect("sent log lock");
        let _ = writeln!(w, "{line}").and_then(|()| w.flush());
    }
}

/// A bound, running fake Binance.
pub struct ReplayServer {
    pub addr: SocketAddr,
    pub state: Arc<ReplayState>,
    pub handle: tokio::task::JoinHandle<Result<(), ReplayError>>,
}

/// Reads a recorded exchangeInfo (.json or gzip, detected by its magic bytes).
fn load_exchange_info(path: &Path) -> Result<serde_json::Value, ReplayError> {
    let err = |msg: String| ReplayError::ExchangeInfo {
        path: path.to_path_buf(),
        msg,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let text = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut s = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes.as_slice())
            .read_to_end(&mut s)
            .map_err(|e| err(e.to_string()))?;
        s
    } else {
        bytes
    };
    let v: serde_json::Value = serde_json::from_slice(&text).map_err(|e| err(e.to_string()))?;
    if !v.get("symbols").is_some_and(serde_json::Value::is_array) {
        return Err(err("no \"symbols\" array".into()));
    }
    Ok(v)
}

/// Binds `cfg.listen` and serves `data` until `shutdown` fires.
pub async fn start(
    cfg: ReplayConfig,
    data: ReplayData,
    shutdown: Shutdown,
) -> Result<ReplayServer, ReplayError> {
    if cfg.market == Market::Spot && cfg.connection_lifetime_secs.is_some() {
        return Err(ReplayError::Config(
            "--connection-lifetime is only for --market usdm".into(),
        ));
    }
    if cfg.clone_symbols == 0 {
        return Err(ReplayError::Clone("must be at least 1".into()));
    }
    let catalog = Catalog::build(&data, cfg.clone_symbols, &cfg.list, &cfg.delist)?;
    let exchange_info = cfg
        .exchange_info
        .as_deref()
        .map(load_exchange_info)
        .transpose()?;
    let sent_log = match &cfg.sent_log {
        None => None,
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| ReplayError::SentLog {
                    path: path.clone(),
                    source,
                })?;
            Some(Mutex::new(BufWriter::new(f)))
        }
    };
    let listener = TcpListener::bind(&cfg.listen)
        .await
        .map_err(|source| ReplayError::Bind {
            addr: cfg.listen.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(ReplayError::Serve)?;
    let start_ms = cfg
        .start_ms
        .unwrap_or_else(|| data.first_open_ms() + 1440 * MINUTE_MS);
    let clock = ReplayClock::new(start_ms, cfg.speed);
    info!(
        %addr,
        market = %cfg.market,
        files_symbols = ?data.symbols(),
        served_symbols = catalog.len(),
        first = %crate::binance::model::from_ms(data.first_open_ms()),
        last = %crate::binance::model::from_ms(data.last_open_ms()),
        start = %crate::binance::model::from_ms(start_ms),
        speed = cfg.speed,
        "fake Binance ready"
    );
    let market = cfg.market;
    let state = Arc::new(ReplayState {
        fail_rest_remaining: AtomicU32::new(cfg.fail_rest),
        phases: ws::PhaseCache::default(),
        data,
        catalog,
        clock,
        cfg,
        weight: Mutex::new((0, 0)),
        limiter: Mutex::new(WallLimiter::default()),
        klines_requests: AtomicU64::new(0),
        agg_trades_requests: AtomicU64::new(0),
        exchange_info_requests: AtomicU64::new(0),
        rate_limited: AtomicU64::new(0),
        banned: AtomicU64::new(0),
        connections: AtomicU64::new(0),
        closed_too_many_messages: AtomicU64::new(0),
        closed_too_many_streams: AtomicU64::new(0),
        closed_lifetime: AtomicU64::new(0),
        open: Mutex::new(BTreeMap::new()),
        exchange_info,
        sent_log,
        shutdown: shutdown.clone(),
    });
    let ping_path = match market {
        Market::Spot => "/api/v3/ping",
        Market::Usdm => "/fapi/v1/ping",
    };
    let legacy = Market::Spot;
    let mut app = Router::new()
        .route(market.rest_time_path(), get(rest::time_handler))
        .route(ping_path, get(rest::ping_handler))
        .route(market.rest_klines_path(), get(rest::klines_handler))
        .route(market.rest_agg_trades_path(), get(rest::agg_trades_handler))
        .route(
            market.rest_exchange_info_path(),
            get(rest::exchange_info_handler),
        )
        .route("/_replay/status", get(status_handler))
        .route("/_replay/drop-connection", post(drop_handler));
    app = match market {
        Market::Spot => app
            .route(legacy.ws_combined_path(), get(ws::combined_handler))
            .route(
                &format!("{}/{{*streams}}", legacy.ws_raw_path()),
                get(ws::raw_handler),
            ),
        Market::Usdm => app
            .route(market.ws_combined_path(), get(ws::combined_handler))
            .route(
                &format!("{}/{{*streams}}", market.ws_raw_path()),
                get(ws::raw_handler),
            )
            .route(
                Route::UsdmPublic.combined_path(),
                get(ws::public_combined_handler),
            )
            .route(
                &format!("{}/{{*streams}}", Route::UsdmPublic.raw_path()),
                get(ws::public_raw_handler),
            )
            .route(legacy.ws_combined_path(), get(ws::legacy_combined_handler))
            .route(
                &format!("{}/{{*streams}}", legacy.ws_raw_path()),
                get(ws::legacy_raw_handler),
            ),
    };
    let app = app.with_state(state.clone());
    let mut sd = shutdown;
    let handle = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { sd.recv().await })
            .await
            .map_err(ReplayError::Serve)
    });
    Ok(ReplayServer {
        addr,
        state,
        handle,
    })
}

async fn status_handler(
    axum::extract::State(st): axum::extract::State<Arc<ReplayState>>,
) -> Json<serde_json::Value> {
    Json(st.status())
}

async fn drop_handler(
    axum::extract::State(st): axum::extract::State<Arc<ReplayState>>,
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let id = match q.get("id").map(|s| s.parse::<u64>()) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => {
            return (
                axum::http::StatusCode::BAD_REQUEST,
                Json(serde_json::json!({"error": "id must be a connection number"})),
            )
                .into_response()
        }
    };
    match st.drop_connection_of(id, q.get("channel").map(String::as_str)) {
        Some(id) => {
            info!(connection = id, "dropping stream connection (hook)");
            Json(serde_json::json!({ "dropped": id })).into_response()
        }
        None => (
            axum::http::StatusCode::NOT_FOUND,
            Json(serde_json::json!({"error": "no such open stream connection"})),
        )
            .into_response(),
    }
}

/// `ta-feed replay`: load, bind, print `listening on ADDR` as the first stdout line, serve
/// until `shutdown`.
pub async fn run_replay(
    cfg: ReplayConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ReplayError> {
    let data = ReplayData::load_with(&cfg.files, cfg.book_tickers_from)?;
    let (_trigger, sd) = Shutdown::from_future(shutdown);
    let server = start(cfg, data, sd).await?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {}", server.addr);
        let _ = out.flush();
    }
    server
        .handle
        .await
        .map_err(|e| ReplayError::Serve(std::io::Error::other(e)))?
}

/// Client message timestamps of the last second (USDⓈ-M message rate limit).
#[derive(Debug, Default)]
struct MessageRate(VecDeque<Instant>);

impl MessageRate {
    /// Records a message at `now`; false when more than the limit arrived within 1 s.
    fn allow(&mut self, now: Instant) -> bool {
        while self
            .0
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            self.0.pop_front();
        }
        self.0.push_back(now);
        self.0.len() <= MAX_CLIENT_MESSAGES_PER_SEC
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binance::model::KlineText;

    fn k(open_ms: i64, o: &str, h: &str, l: &str, c: &str, v: &str, n: i64) -> Kline {
        Kline::from_text(KlineText {
            symbol: "BTCUSDT",
            open_time: open_ms,
            close_time: open_ms + 59_999,
            open: o,
            high: h,
            low: l,
            close: c,
            volume: v,
            quote_volume: v,
            trades: n,
            taker_buy_volume: "0.00000000",
            taker_buy_quote_volume: "0",
        })
        .unwrap()
    }

    #[test]
    fn partials_stay_inside_final_range() {
        let fin = k(0, "100.00", "110.00", "95.00", "105.00", "9.000", 10);
        let third = Decimal::ONE / Decimal::from(3);
        for f in [Decimal::ZERO, third, third * Decimal::from(2), Decimal::ONE] {
            let p = partial_kline(&fin, f);
            p.validate().unwrap();
            assert_eq!(p.open, fin.open);
            assert!(p.high <= fin.high && p.low >= fin.low);
            assert!(p.volume <= fin.volume && p.trades <= fin.trades);
        }
        let p = partial_kline(&fin, third);
        assert_eq!(p.close.to_string(), "101.67");
        assert_eq!(p.high.to_string(), "103.33");
        assert_eq!(p.volume.to_string(), "3.000");
        assert_eq!(p.trades, 3);
        assert_eq!(partial_kline(&fin, Decimal::ONE), fin);
    }

    #[test]
    fn select_like_binance() {
        let m = 1_634_943_780_000i64;
        let series: Vec<Kline> = (0..10)
            .map(|i| k(m + i * MINUTE_MS, "1", "2", "0.5", "1.5", "10", 4))
            .collect();
        let now = m + 5 * MINUTE_MS + 30_000; // minute 5 in progress
                                              // from start: minutes 0..=5, the last partial
        let rows = select_klines(&series, Some(m), None, 1000, now);
        assert_eq!(rows.len(), 6);
        assert_eq!(rows[5].0, m + 5 * MINUTE_MS);
        assert_eq!(rows[5].5, "5", "half the volume");
        assert_eq!(rows[4].5, "10");
        // limit and paging
        let rows = select_klines(
            &series,
            Some(m + MINUTE_MS),
            Some(m + 3 * MINUTE_MS),
            2,
            now,
        );
        assert_eq!(
            rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![m + MINUTE_MS, m + 2 * MINUTE_MS]
        );
        // no start: the last `limit` visible
        let rows = select_klines(&series, None, None, 2, now);
        assert_eq!(
            rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![m + 4 * MINUTE_MS, m + 5 * MINUTE_MS]
        );
        // nothing in the future
        assert!(select_klines(&series, Some(m + 7 * MINUTE_MS), None, 10, now).is_empty());
    }

    #[test]
    fn start_parsing() {
        assert_eq!(parse_start("1634943780000").unwrap(), 1634943780000);
        assert_eq!(parse_start("2021-10-22T23:03:00Z").unwrap(), 1634943780000);
        assert!(parse_start("yesterday").is_err());
    }
}
