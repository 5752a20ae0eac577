//! REST endpoints of the fake Binance: time, klines, aggTrades, exchangeInfo, and request
//! weight.
//!
//! Spot counts weight per *replay* minute (limit 6000; only klines are refused, 429 +
//! `Retry-After: 1`). USDⓈ-M counts weight per *wall-clock* UTC minute (limit 2400): every
//! response carries `X-MBX-USED-WEIGHT-1M`; a request that would exceed the limit gets 429
//! `{"code":-1003,...}` with `Retry-After` = seconds to the next wall minute (≥ 1) and adds no
//! weight; a request during an unexpired 429 Retry-After gets 418 (IP ban, `Retry-After:
//! 120`), and so does every request during the ban.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header::RETRY_AFTER, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rust_decimal::Decimal;
use tracing::debug;

use super::{partial_kline, wall_ms, ReplayState, BAN_SECS};
use crate::binance::kind::agg_trade::{AggTrade, OwnedAggTrade};
use crate::binance::model::{ApiError, Kline, RestKline, ServerTime};
use crate::constants::{KLINE_INTERVAL, MINUTE_MS, USED_WEIGHT_HEADER};
use crate::market::Market;

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

fn with_retry_after(mut resp: Response, secs: u64) -> Response {
    resp.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(secs));
    resp
}

fn too_many(market: Market, limit: u32, used: u32, retry_after: u64) -> Response {
    let msg = match market {
        // spot's text is unchanged since the first replay
        Market::Spot => {
            format!("Too many requests; current limit of IP is {limit} requests per minute.")
        }
        Market::Usdm => format!(
            "Too many requests; current limit of IP is {limit} requests per minute. Please \
             use the websocket for live updates to avoid polling the API."
        ),
    };
    with_retry_after(
        api_error(StatusCode::TOO_MANY_REQUESTS, -1003, &msg, used),
        retry_after,
    )
}

/// Why a USDⓈ-M request was refused.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// 429: the minute's weight would exceed the limit.
    TooMany {
        limit: u32,
        used: u32,
        retry_after: u64,
    },
    /// 418: a 429's Retry-After was ignored (or the ban is still running).
    Banned {
        used: u32,
        until_ms: i64,
        retry_after: u64,
    },
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::TooMany {
                limit,
                used,
                retry_after,
            } => too_many(Market::Usdm, limit, used, retry_after),
            Refusal::Banned {
                used,
                until_ms,
                retry_after,
            } => {
                let msg = format!(
                    "Way too many requests; IP banned until {until_ms}. Please use the \
                     websocket for live updates to avoid bans."
                );
                with_retry_after(
                    api_error(StatusCode::IM_A_TEAPOT, -1003, &msg, used),
                    retry_after,
                )
            }
        }
    }
}

impl ReplayState {
    /// USDⓈ-M admission of a request of weight `w`: the used weight after it, or why it
    /// is refused.
    fn admit_usdm(&self, w: u32) -> Result<u32, Refusal> {
        let now = wall_ms();
        let minute = now.div_euclid(MINUTE_MS);
        let limit = self.cfg.weight_limit_1m;
        let mut l = self.limiter.lock().expect("limiter lock");
        if l.minute != minute {
            l.minute = minute;
            l.used = 0;
        }
        let retry_after = if now < l.banned_until_ms {
            Some(((l.banned_until_ms - now) as u64).div_ceil(1000).max(1))
        } else if now < l.retry_after_until_ms {
            l.banned_until_ms = now + BAN_SECS as i64 * 1000;
            l.retry_after_until_ms = 0;
            Some(BAN_SECS)
        } else {
            None
        };
        if let Some(retry_after) = retry_after {
            self.banned.fetch_add(1, Ordering::Relaxed);
            debug!(used = l.used, retry_after, "answered with 418");
            return Err(Refusal::Banned {
                used: l.used,
                until_ms: l.banned_until_ms,
                retry_after,
            });
        }
        if l.used.saturating_add(w) > limit {
            let next = (minute + 1) * MINUTE_MS;
            l.retry_after_until_ms = next;
            let retry_after = ((next - now) as u64).div_ceil(1000).max(1);
            self.rate_limited.fetch_add(1, Ordering::Relaxed);
            debug!(used = l.used, w, limit, retry_after, "answered with 429");
            return Err(Refusal::TooMany {
                limit,
                used: l.used,
                retry_after,
            });
        }
        l.used += w;
        Ok(l.used)
    }

    /// Admission for endpoints that spot never refuses (time, exchangeInfo).
    fn admit(&self, w: u32) -> Result<u32, Refusal> {
        match self.cfg.market {
            Market::Spot => Ok(self.add_weight(w)),
            Market::Usdm => self.admit_usdm(w),
        }
    }
}

pub(super) async fn ping_handler(State(st): State<Arc<ReplayState>>) -> Response {
    match st.admit(1) {
        Ok(used) => (weight_headers(used), Json(serde_json::json!({}))).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

pub(super) async fn time_handler(State(st): State<Arc<ReplayState>>) -> Response {
    let used = match st.admit(st.cfg.market.time_weight()) {
        Ok(used) => used,
        Err(refusal) => return refusal.into_response(),
    };
    (
        weight_headers(used),
        Json(ServerTime {
            server_time: st.clock.now_ms(),
        }),
    )
        .into_response()
}

pub(super) async fn klines_handler(
    State(st): State<Arc<ReplayState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    st.klines_requests.fetch_add(1, Ordering::Relaxed);
    let market = st.cfg.market;
    let num = |name: &str| -> Result<Option<i64>, String> {
        match q.get(name) {
            None => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .map(Some)
                .map_err(|_| format!("Illegal characters found in parameter '{name}'.")),
        }
    };
    let limit = num("limit")
        .ok()
        .flatten()
        .unwrap_or(i64::from(market.klines_default_limit()))
        .clamp(1, i64::from(market.klines_max_limit())) as usize;
    let used = match market {
        Market::Spot => {
            let used = st.add_weight(market.klines_weight(limit as u32));
            let failing = st
                .fail_rest_remaining
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if failing || used > st.cfg.weight_limit_1m {
                st.rate_limited.fetch_add(1, Ordering::Relaxed);
                debug!(failing, used, "klines answered with 429");
                return too_many(market, st.cfg.weight_limit_1m, used, 1);
            }
            used
        }
        Market::Usdm => {
            let failing = st
                .fail_rest_remaining
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if failing {
                // Simulated: no weight and no 418 for the next request.
                st.rate_limited.fetch_add(1, Ordering::Relaxed);
                debug!("klines answered with 429 (--fail-rest)");
                return too_many(market, st.cfg.weight_limit_1m, st.weight_used_1m(), 1);
            }
            match st.admit_usdm(market.klines_weight(limit as u32)) {
                Ok(used) => used,
                Err(refusal) => return refusal.into_response(),
            }
        }
    };
    let Some(symbol) = q.get("symbol").filter(|s| !s.is_empty()) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            -1102,
            "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
            used,
        );
    };
    let now = st.clock.now_ms();
    let Some(sym) = st
        .catalog
        .find(symbol)
        .map(|i| st.catalog.get(i))
        .filter(|s| s.exists_at(now))
    else {
        return api_error(StatusCode::BAD_REQUEST, -1121, "Invalid symbol.", used);
    };
    if q.get("interval").map(String::as_str) != Some(KLINE_INTERVAL) {
        return api_error(StatusCode::BAD_REQUEST, -1120, "Invalid interval.", used);
    }
    let (start, end) = match (num("startTime"), num("endTime"), num("limit")) {
        (Ok(s), Ok(e), Ok(_)) => (s, e),
        (Err(msg), _, _) | (_, Err(msg), _) | (_, _, Err(msg)) => {
            return api_error(StatusCode::BAD_REQUEST, -1100, &msg, used)
        }
    };
    let series = st.data.series_at(sym.source);
    let (lo, hi) = sym.open_range();
    let visible = &series[series.partition_point(|k| k.open_time_ms() < lo)
        ..series.partition_point(|k| k.open_time_ms() < hi)];
    let rows: Vec<RestKline> = select_range(visible, start, end, limit, now)
        .iter()
        .map(|k| rest_row(&sym.derive(k), now))
        .collect();
    debug!(%symbol, ?start, ?end, limit, rows = rows.len(), now, "klines");
    (weight_headers(used), Json(rows)).into_response()
}

/// `GET /api/v3/aggTrades` | `/fapi/v1/aggTrades` `?symbol&fromId&startTime&endTime&limit`:
/// Binance's selection ([`select_agg_trades`]) of the trades visible at replay time (`T` ≤
/// now); weight 4 (spot) / 20 (USD-M), refused with 429 / 418 like klines (not by
/// `--fail-rest`).
pub(super) async fn agg_trades_handler(
    State(st): State<Arc<ReplayState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    st.agg_trades_requests.fetch_add(1, Ordering::Relaxed);
    let market = st.cfg.market;
    let w = market.agg_trades_weight();
    let used = match market {
        Market::Spot => {
            let used = st.add_weight(w);
            if used > st.cfg.weight_limit_1m {
                st.rate_limited.fetch_add(1, Ordering::Relaxed);
                return too_many(market, st.cfg.weight_limit_1m, used, 1);
            }
            used
        }
        Market::Usdm => match st.admit_usdm(w) {
            Ok(used) => used,
            Err(refusal) => return refusal.into_response(),
        },
    };
    let num = |name: &str| -> Result<Option<i64>, String> {
        match q.get(name) {
            None => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .map(Some)
                .map_err(|_| format!("Illegal characters found in parameter '{name}'.")),
        }
    };
    let Some(symbol) = q.get("symbol").filter(|s| !s.is_empty()) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            -1102,
            "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
            used,
        );
    };
    let (from_id, start, end, limit) = match (
        num("fromId"),
        num("startTime"),
        num("endTime"),
        num("limit"),
    ) {
        (Ok(a), Ok(b), Ok(c), Ok(d)) => (a, b, c, d),
        (Err(m), ..) | (_, Err(m), ..) | (_, _, Err(m), _) | (.., Err(m)) => {
            return api_error(StatusCode::BAD_REQUEST, -1100, &m, used)
        }
    };
    let limit = limit.unwrap_or(500);
    if !(1..=1000).contains(&limit) {
        return api_error(
            StatusCode::BAD_REQUEST,
            -1100,
            "Illegal characters found in parameter 'limit'; legal range is '1000'.",
            used,
        );
    }
    if from_id.is_some() && (start.is_some() || end.is_some()) {
        return api_error(
            StatusCode::BAD_REQUEST,
            -1128,
            "Combination of optional parameters invalid.",
            used,
        );
    }
    if let (Some(a), Some(b)) = (start, end) {
        if b < a || b - a >= 3_600_000 {
            return api_error(
                StatusCode::BAD_REQUEST,
                -1127,
                "More than 1 hours between startTime and endTime.",
                used,
            );
        }
    }
    let now = st.clock.now_ms();
    let Some(sym) = st
        .catalog
        .find(symbol)
        .map(|i| st.catalog.get(i))
        .filter(|s| s.exists_at(now))
    else {
        return api_error(StatusCode::BAD_REQUEST, -1121, "Invalid symbol.", used);
    };
    let trades = st.data.trades_at(sym.source);
    let rows: Vec<OwnedAggTrade> =
        select_agg_trades(trades, from_id, start, end, limit as usize, now)
            .iter()
            .filter(|t| sym.serves_time(t.time_ms()))
            .map(|t| {
                let mut w = sym.derive_trade(t).to_wire();
                if market == Market::Usdm {
                    w.is_best_match = None;
                } else if w.is_best_match.is_none() {
                    w.is_best_match = Some(true);
                }
                w
            })
            .collect();
    debug!(%symbol, ?from_id, ?start, ?end, limit, rows = rows.len(), now, "aggTrades");
    (weight_headers(used), Json(rows)).into_response()
}

/// Binance's aggTrades selection among `trades` (ordered by id) visible at `now` (`T` ≤ now):
/// `fromId`: the first `limit` with id ≥ fromId; `startTime`/`endTime` (inclusive, < 1 h
/// apart; one alone means an hour from/to it): the first `limit` in the window; none: the
/// newest `limit`.
pub fn select_agg_trades(
    trades: &[AggTrade],
    from_id: Option<i64>,
    start: Option<i64>,
    end: Option<i64>,
    limit: usize,
    now: i64,
) -> &[AggTrade] {
    let visible = &trades[..trades.partition_point(|t| t.time_ms() <= now)];
    match (from_id, start, end) {
        (Some(id), _, _) => {
            let lo = visible.partition_point(|t| t.agg_trade_id < id);
            &visible[lo..(lo + limit).min(visible.len())]
        }
        (None, None, None) => &visible[visible.len().saturating_sub(limit)..],
        (None, s, e) => {
            let (s, e) = match (s, e) {
                (Some(s), Some(e)) => (s, e),
                (Some(s), None) => (s, s + 3_600_000 - 1),
                (None, Some(e)) => (e - 3_600_000 + 1, e),
                (None, None) => unreachable!(),
            };
            let lo = visible.partition_point(|t| t.time_ms() < s);
            let hi = visible.partition_point(|t| t.time_ms() <= e);
            &visible[lo..hi.min(lo + limit).max(lo)]
        }
    }
}

pub(super) async fn exchange_info_handler(State(st): State<Arc<ReplayState>>) -> Response {
    st.exchange_info_requests.fetch_add(1, Ordering::Relaxed);
    let used = match st.admit(st.cfg.market.exchange_info_weight()) {
        Ok(used) => used,
        Err(refusal) => return refusal.into_response(),
    };
    let now = st.clock.now_ms();
    let body = match &st.exchange_info {
        Some(recorded) => {
            let mut v = recorded.clone();
            v["serverTime"] = serde_json::Value::from(now);
            v
        }
        None => built_exchange_info(&st, now),
    };
    (weight_headers(used), Json(body)).into_response()
}

/// The exchangeInfo of the served symbols (those that exist at `now`).
fn built_exchange_info(st: &ReplayState, now: i64) -> serde_json::Value {
    use serde_json::json;
    let market = st.cfg.market;
    let symbols: Vec<serde_json::Value> = st
        .catalog
        .symbols()
        .iter()
        .filter(|s| s.exists_at(now))
        .map(|s| {
            let (base, quote) = match s.name.strip_suffix(super::catalog::QUOTE_ASSET) {
                Some(base) => (base, super::catalog::QUOTE_ASSET),
                None => (s.name.as_str(), ""),
            };
            let first = st.data.series_at(s.source).first();
            let price_precision = first.map_or(8, |k| k.close.scale() + s.factor.map_or(0, |_| 3));
            let qty_precision = first.map_or(8, |k| k.volume.scale());
            match market {
                Market::Usdm => json!({
                    "symbol": s.name,
                    "pair": s.name,
                    "contractType": "PERPETUAL",
                    "deliveryDate": 4_133_404_800_000i64,
                    "onboardDate": s.listed_ms.or(first.map(Kline::open_time_ms)).unwrap_or(0),
                    "status": if s.delisted_at(now) { "SETTLING" } else { "TRADING" },
                    "baseAsset": base,
                    "quoteAsset": quote,
                    "marginAsset": quote,
                    "pricePrecision": price_precision,
                    "quantityPrecision": qty_precision,
                    "baseAssetPrecision": 8,
                    "quotePrecision": 8,
                    "underlyingType": "COIN",
                    "underlyingSubType": [],
                    "filters": [],
                    "orderTypes": ["LIMIT", "MARKET"],
                    "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
                }),
                Market::Spot => json!({
                    "symbol": s.name,
                    "status": if s.delisted_at(now) { "BREAK" } else { "TRADING" },
                    "baseAsset": base,
                    "baseAssetPrecision": 8,
                    "quoteAsset": quote,
                    "quotePrecision": 8,
                    "quoteAssetPrecision": 8,
                    "isSpotTradingAllowed": true,
                    "isMarginTradingAllowed": false,
                    "filters": [],
                    "permissions": ["SPOT"],
                }),
            }
        })
        .collect();
    let weight = json!({"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE",
                        "intervalNum": 1, "limit": st.cfg.weight_limit_1m});
    let rate_limits = match market {
        Market::Usdm => json!([
            weight,
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
        ]),
        Market::Spot => json!([
            weight,
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
            {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
        ]),
    };
    let mut v = json!({
        "timezone": "UTC",
        "serverTime": now,
        "rateLimits": rate_limits,
        "exchangeFilters": [],
        "symbols": symbols,
    });
    if market == Market::Usdm {
        v["futuresType"] = json!("U_MARGINED");
    }
    v
}

/// A REST row: verbatim when closed at `now`, partial when in progress.
fn rest_row(k: &Kline, now: i64) -> RestKline {
    if now < k.open_time_ms() + MINUTE_MS {
        let f = Decimal::from(now - k.open_time_ms()) / Decimal::from(MINUTE_MS);
        RestKline::from_kline(&partial_kline(k, f))
    } else {
        RestKline::from_kline(k)
    }
}

/// Binance's selection: open_time in [start, end], only minutes that have opened at
/// `now`, the first `limit` from `start` (or the last `limit` when only `end`/nothing is
/// given).
fn select_range(
    series: &[Kline],
    start: Option<i64>,
    end: Option<i64>,
    limit: usize,
    now: i64,
) -> &[Kline] {
    let hi_bound = end.unwrap_or(i64::MAX).min(now);
    let upper = series.partition_point(|k| k.open_time_ms() <= hi_bound);
    let lower = match start {
        Some(s) => series.partition_point(|k| k.open_time_ms() < s),
        None => 0,
    };
    if lower >= upper {
        return &[];
    }
    if start.is_some() {
        &series[lower..upper.min(lower + limit)]
    } else {
        &series[upper.saturating_sub(limit).max(lower)..upper]
    }
}

/// Binance's selection (see `select_range`) in wire form; the in-progress minute is
/// returned with partial values.
pub fn select_klines(
    series: &[Kline],
    start: Option<i64>,
    end: Option<i64>,
    limit: usize,
    now: i64,
) -> Vec<RestKline> {
    select_range(series, start, end, limit, now)
        .iter()
        .map(|k| rest_row(k, now))
        .collect()
}
