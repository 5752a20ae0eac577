//! `ta-feed replay`: a local fake Binance serving recorded klines12 files.
//!
//! Replay clock: `replay_now = start + (wall time since the first request) × speed`. The
//! clock starts with the first REST or WebSocket request, so a client started some time after
//! the replay still finds exactly the history before `--start`.
//!
//! * `GET /api/v3/time` → `{"serverTime": replay_now}`
//! * `GET /api/v3/klines?symbol&interval=1m&startTime&endTime&limit` → recorded klines with
//!   open_time ≤ replay_now in Binance's array form; the in-progress minute is last, with
//!   partial values. `X-MBX-USED-WEIGHT-1M` counts weight per replay minute.
//! * `GET /stream?streams=a@kline_1m/b@kline_1m` (WebSocket) → combined-stream kline
//!   events: for each minute, `x:false` updates at 20 s and 40 s (deterministic partials)
//!   and the closed kline (recorded values verbatim) at close_time + `close_delay_ms`.
//!   A connection starts at the current replay time. Pings every `ping_secs` real seconds.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::DateTime;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::binance::model::{
    ApiError, CombinedStreamMessage, Kline, RestKline, ServerTime, WsKline, WsKlineEvent,
};
use crate::constants::{
    EVENT_KLINE, EVENT_SERVER_SHUTDOWN, KLINE_INTERVAL, KLINE_STREAM_SUFFIX, MINUTE_MS,
    REST_KLINES_DEFAULT_LIMIT, REST_KLINES_MAX_LIMIT, REST_KLINES_PATH, REST_KLINES_WEIGHT,
    REST_TIME_PATH, REST_TIME_WEIGHT, REST_WEIGHT_LIMIT_1M, USED_WEIGHT_HEADER, WS_COMBINED_PATH,
};
use crate::import::{read_klines12, ImportError};
use crate::shutdown::Shutdown;

/// Replay failures.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("loading data: {0}")]
    Load(#[from] ImportError),
    #[error("no klines in the given files")]
    Empty,
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
    /// Replayed seconds per real second.
    pub speed: f64,
    /// Replay start (epoch ms); default first open_time + 1440 minutes.
    pub start_ms: Option<i64>,
    /// Close each stream connection after this many closed minutes were sent on it.
    pub drop_after: Option<u64>,
    /// Real seconds between WebSocket pings.
    pub ping_secs: f64,
    /// Answer the first N klines requests with 429 + Retry-After: 1.
    pub fail_rest: u32,
    /// Delay of the closed kline after close_time (replay ms).
    pub close_delay_ms: i64,
}

impl ReplayConfig {
    pub fn new(files: Vec<PathBuf>, listen: &str) -> Self {
        ReplayConfig {
            files,
            listen: listen.to_string(),
            speed: 1.0,
            start_ms: None,
            drop_after: None,
            ping_secs: 20.0,
            fail_rest: 0,
            close_delay_ms: 200,
        }
    }
}

/// Recorded klines by symbol, in file order.
#[derive(Debug, Default)]
pub struct ReplayData {
    symbols: Vec<String>,
    series: HashMap<String, Vec<Kline>>,
}

impl ReplayData {
    /// Loads klines12 files (symbol from each file name).
    pub fn load(files: &[PathBuf]) -> Result<Self, ReplayError> {
        let mut all = Vec::new();
        for f in files {
            all.extend(read_klines12(f, None)?);
        }
        Self::from_klines(all)
    }

    /// Builds from klines (sorted by open time per symbol; the last copy of a duplicate
    /// minute wins).
    pub fn from_klines(klines: Vec<Kline>) -> Result<Self, ReplayError> {
        let mut data = ReplayData::default();
        for k in klines {
            if !data.series.contains_key(&k.symbol) {
                data.symbols.push(k.symbol.clone());
            }
            data.series.entry(k.symbol.clone()).or_default().push(k);
        }
        for v in data.series.values_mut() {
            v.sort_by_key(Kline::open_time_ms);
            // keep the last copy of a duplicate open_time
            v.reverse();
            v.dedup_by_key(|k| k.open_time_ms());
            v.reverse();
        }
        if data.series.values().all(Vec::is_empty) {
            return Err(ReplayError::Empty);
        }
        Ok(data)
    }

    pub fn symbols(&self) -> &[String] {
        &self.symbols
    }

    pub fn series(&self, symbol: &str) -> Option<&[Kline]> {
        self.series.get(symbol).map(Vec::as_slice)
    }

    pub fn first_open_ms(&self) -> i64 {
        self.series
            .values()
            .filter_map(|v| v.first())
            .map(Kline::open_time_ms)
            .min()
            .unwrap_or(0)
    }

    pub fn last_open_ms(&self) -> i64 {
        self.series
            .values()
            .filter_map(|v| v.last())
            .map(Kline::open_time_ms)
            .max()
            .unwrap_or(0)
    }

    /// The kline of `symbol` opening at `open_ms`.
    pub fn at(&self, symbol: &str, open_ms: i64) -> Option<&Kline> {
        let v = self.series.get(symbol)?;
        v.binary_search_by_key(&open_ms, Kline::open_time_ms)
            .ok()
            .map(|i| &v[i])
    }
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

    /// Replay time now (epoch ms).
    pub fn now_ms(&self) -> i64 {
        self.start_ms + (self.started().elapsed().as_secs_f64() * 1000.0 * self.speed) as i64
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

/// Synthetic trade ids (f, L) for a kline: -1/-1 when there was no trade.
fn trade_ids(k: &Kline) -> (i64, i64) {
    if k.trades <= 0 {
        (-1, -1)
    } else {
        let first = k.open_time_ms() / MINUTE_MS * 10_000;
        (first, first + k.trades - 1)
    }
}

/// Shared server state.
#[derive(Debug)]
pub struct ReplayState {
    pub data: ReplayData,
    pub clock: ReplayClock,
    pub cfg: ReplayConfig,
    weight: Mutex<(i64, u32)>,
    fail_rest_remaining: AtomicU32,
    /// klines requests seen (including the ones answered with 429).
    pub klines_requests: AtomicU64,
    /// 429 answers sent.
    pub rate_limited: AtomicU64,
    /// WebSocket connections accepted.
    pub connections: AtomicU64,
    shutdown: Shutdown,
}

impl ReplayState {
    fn add_weight(&self, w: u32) -> u32 {
        let minute = self.clock.now_ms().div_euclid(MINUTE_MS);
        let mut g = self.weight.lock().expect("weight lock");
        if g.0 != minute {
            *g = (minute, 0);
        }
        g.1 += w;
        g.1
    }
}

/// A bound, running fake Binance.
pub struct ReplayServer {
    pub addr: SocketAddr,
    pub state: Arc<ReplayState>,
    pub handle: tokio::task::JoinHandle<Result<(), ReplayError>>,
}

/// Binds `cfg.listen` and serves `data` until `shutdown` fires.
pub async fn start(
    cfg: ReplayConfig,
    data: ReplayData,
    shutdown: Shutdown,
) -> Result<ReplayServer, ReplayError> {
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
        symbols = ?data.symbols(),
        first = %crate::binance::model::from_ms(data.first_open_ms()),
        last = %crate::binance::model::from_ms(data.last_open_ms()),
        start = %crate::binance::model::from_ms(start_ms),
        speed = cfg.speed,
        "fake Binance ready"
    );
    let state = Arc::new(ReplayState {
        fail_rest_remaining: AtomicU32::new(cfg.fail_rest),
        data,
        clock,
        cfg,
        weight: Mutex::new((0, 0)),
        klines_requests: AtomicU64::new(0),
        rate_limited: AtomicU64::new(0),
        connections: AtomicU64::new(0),
        shutdown: shutdown.clone(),
    });
    let app = Router::new()
        .route(REST_TIME_PATH, get(time_handler))
        .route(
            "/api/v3/ping",
            get(|| async { Json(serde_json::json!({})) }),
        )
        .route(REST_KLINES_PATH, get(klines_handler))
        .route(WS_COMBINED_PATH, get(stream_handler))
        .with_state(state.clone());
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

/// `ta-feed replay`: load, bind, print `listening on ADDR` as the first stdout line, serve
/// until `shutdown`.
pub async fn run_replay(
    cfg: ReplayConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ReplayError> {
    let data = ReplayData::load(&cfg.files)?;
    let (_trigger, sd) = Shutdown::from_future(shutdown);
    let server = start(cfg, data, sd).await?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {}", server.addr);
        let _ = out.flush();
    }
    server
        .handle
        .await
        .map_err(|e| ReplayError::Serve(std::io::Error::other(e)))?
}

fn weight_headers(used: u32) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(USED_WEIGHT_HEADER, HeaderValue::from(used));
    h
}

fn api_error(status: StatusCode, code: i64, msg: &str, used: u32) -> Response {
    (
        status,
        weight_headers(used),
        Json(ApiError {
            code,
            msg: msg.to_string(),
        }),
    )
        .into_response()
}

async fn time_handler(State(st): State<Arc<ReplayState>>) -> Response {
    let used = st.add_weight(REST_TIME_WEIGHT);
    (
        weight_headers(used),
        Json(ServerTime {
            server_time: st.clock.now_ms(),
        }),
    )
        .into_response()
}

async fn klines_handler(
    State(st): State<Arc<ReplayState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    st.klines_requests.fetch_add(1, Ordering::Relaxed);
    let used = st.add_weight(REST_KLINES_WEIGHT);
    let failing = st
        .fail_rest_remaining
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing || used > REST_WEIGHT_LIMIT_1M {
        st.rate_limited.fetch_add(1, Ordering::Relaxed);
        let mut resp = api_error(
            StatusCode::TOO_MANY_REQUESTS,
            -1003,
            "Too many requests; current limit of IP is 6000 requests per minute.",
            used,
        );
        resp.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            HeaderValue::from_static("1"),
        );
        debug!(failing, used, "klines answered with 429");
        return resp;
    }
    let Some(symbol) = q.get("symbol").filter(|s| !s.is_empty()) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            -1102,
            "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
            used,
        );
    };
    let Some(series) = st.data.series(symbol) else {
        return api_error(StatusCode::BAD_REQUEST, -1121, "Invalid symbol.", used);
    };
    if q.get("interval").map(String::as_str) != Some(KLINE_INTERVAL) {
        return api_error(StatusCode::BAD_REQUEST, -1120, "Invalid interval.", used);
    }
    let num = |name: &str| -> Result<Option<i64>, String> {
        match q.get(name) {
            None => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .map(Some)
                .map_err(|_| format!("Illegal characters found in parameter '{name}'.")),
        }
    };
    let (start, end, limit) = match (num("startTime"), num("endTime"), num("limit")) {
        (Ok(s), Ok(e), Ok(l)) => (s, e, l),
        (Err(msg), _, _) | (_, Err(msg), _) | (_, _, Err(msg)) => {
            return api_error(StatusCode::BAD_REQUEST, -1100, &msg, used)
        }
    };
    let limit = limit
        .unwrap_or(i64::from(REST_KLINES_DEFAULT_LIMIT))
        .clamp(1, i64::from(REST_KLINES_MAX_LIMIT)) as usize;
    let now = st.clock.now_ms();
    let rows = select_klines(series, start, end, limit, now);
    debug!(%symbol, ?start, ?end, limit, rows = rows.len(), now, "klines");
    (weight_headers(used), Json(rows)).into_response()
}

/// Binance's selection: open_time in [start, end], only minutes that have opened at
/// `now`, the first `limit` from `start` (or the last `limit` when only `end`/nothing is
/// given); the in-progress minute is returned with partial values.
pub fn select_klines(
    series: &[Kline],
    start: Option<i64>,
    end: Option<i64>,
    limit: usize,
    now: i64,
) -> Vec<RestKline> {
    let hi_bound = end.unwrap_or(i64::MAX).min(now);
    let upper = series.partition_point(|k| k.open_time_ms() <= hi_bound);
    let lower = match start {
        Some(s) => series.partition_point(|k| k.open_time_ms() < s),
        None => 0,
    };
    if lower >= upper {
        return Vec::new();
    }
    let slice = if start.is_some() {
        &series[lower..upper.min(lower + limit)]
    } else {
        &series[upper.saturating_sub(limit).max(lower)..upper]
    };
    slice
        .iter()
        .map(|k| {
            if now < k.open_time_ms() + MINUTE_MS {
                let f = Decimal::from(now - k.open_time_ms()) / Decimal::from(MINUTE_MS);
                RestKline::from_kline(&partial_kline(k, f))
            } else {
                RestKline::from_kline(k)
            }
        })
        .collect()
}

async fn stream_handler(
    State(st): State<Arc<ReplayState>>,
    Query(q): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let requested: Vec<String> = q
        .get("streams")
        .map(|s| {
            s.split('/')
                .filter_map(|name| name.strip_suffix(KLINE_STREAM_SUFFIX))
                .map(str::to_ascii_uppercase)
                .collect()
        })
        .unwrap_or_default();
    ws.on_upgrade(move |socket| serve_stream(socket, st, requested))
}

/// Messages of one replay event.
enum Phase {
    Update(Decimal),
    Closed,
}

async fn serve_stream(mut socket: WebSocket, st: Arc<ReplayState>, requested: Vec<String>) {
    let id = st.connections.fetch_add(1, Ordering::Relaxed) + 1;
    // Symbols in file order that were asked for (others get no messages, as on Binance).
    let symbols: Vec<String> = st
        .data
        .symbols()
        .iter()
        .filter(|s| requested.contains(s))
        .cloned()
        .collect();
    let now = st.clock.now_ms();
    let last_minute = symbols
        .iter()
        .filter_map(|s| {
            st.data
                .series(s)
                .and_then(|v| v.last())
                .map(Kline::open_time_ms)
        })
        .max();
    debug!(
        connection = id,
        ?requested,
        ?symbols,
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
    let mut closed_sent = 0u64;
    let mut shutdown = st.shutdown.clone();
    loop {
        let exhausted = last_minute.is_none_or(|l| minute > l);
        let at = st.clock.instant_for(minute + offsets[phase].0);
        tokio::select! {
            _ = shutdown.recv() => {
                let _ = socket.send(Message::Close(None)).await;
                break;
            }
            _ = tokio::time::sleep_until(at), if !exhausted => {
                let (offset, ref what) = offsets[phase];
                let mut failed = false;
                for s in &symbols {
                    let Some(k) = st.data.at(s, minute) else { continue };
                    let (first, last) = trade_ids(k);
                    let (kline, event_time) = match what {
                        Phase::Update(f) => {
                            let p = partial_kline(k, *f);
                            let (pf, pl) = if p.trades > 0 { (first, first + p.trades - 1) } else { (-1, -1) };
                            (WsKline::from_kline(&p, false, pf, pl), minute + offset)
                        }
                        Phase::Closed => (
                            WsKline::from_kline(k, true, first, last),
                            k.close_time_ms() + st.cfg.close_delay_ms,
                        ),
                    };
                    let msg = CombinedStreamMessage {
                        stream: format!("{}{KLINE_STREAM_SUFFIX}", s.to_ascii_lowercase()),
                        data: WsKlineEvent {
                            event_type: EVENT_KLINE.to_string(),
                            event_time,
                            symbol: s.clone(),
                            kline,
                        },
                    };
                    let text = serde_json::to_string(&msg).expect("serializable");
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        failed = true;
                        break;
                    }
                }
                if failed {
                    debug!(connection = id, "client went away");
                    break;
                }
                if matches!(what, Phase::Closed) {
                    closed_sent += 1;
                    if st.cfg.drop_after.is_some_and(|n| closed_sent >= n) {
                        let ev = serde_json::json!({"e": EVENT_SERVER_SHUTDOWN, "E": st.clock.now_ms()});
                        let _ = socket.send(Message::Text(ev.to_string().into())).await;
                        let _ = socket.send(Message::Close(None)).await;
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
            msg = socket.recv() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => {
                    debug!(connection = id, "client closed");
                    break;
                }
                Some(Ok(Message::Pong(_))) => last_pong = Instant::now(),
                Some(Ok(_)) => {}
            }
        }
    }
    debug!(connection = id, closed_sent, "stream connection ended");
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
