//! The stream kinds ta-feed subscribes to, each a small module with its wire structs, its
//! domain row and its validation ([`kline`], [`agg_trade`], [`book_ticker`]), and the one
//! mapping from a kind to Binance's channel name and WebSocket route ([`StreamKind`]).
//! Connections, reconnects, rotation and routing are written once for every kind
//! (`binance::ws`), as in barter-rs' `subscription/{trade,book,candle}.rs` +
//! `exchange/binance/channel.rs`.
//!
//! | kind | channel (`<symbol>@…`) | spot route | USD-M route (since 2026-04-23) |
//! |---|---|---|---|
//! | `kline` | `kline_1m` | `/stream` | `/market/stream` |
//! | `agg_trade` | `aggTrade` | `/stream` | `/market/stream` |
//! | `book_ticker` | `bookTicker` | `/stream` | `/public/stream` |
//!
//! A USD-M stream on the wrong route connects, acknowledges and delivers nothing (Binance:
//! "fails silently rather than erroring"); a connection on the legacy unrouted path receives
//! only `/public` data.
//!
//! Binance docs: <https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams>,
//! <https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams>

pub mod agg_trade;
pub mod book_ticker;
pub mod kline;

use std::fmt;
use std::sync::Arc;

use postgres_types::{to_sql_checked, IsNull, ToSql, Type};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::binance::model::ParseError;
use crate::market::Market;

/// A stream kind. `clap` parses `kline`, `agg_trade`, `book_ticker`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum StreamKind {
    /// `<symbol>@kline_1m`: closed 1-minute klines → `market.candles_1m`.
    #[value(name = "kline")]
    Kline,
    /// `<symbol>@aggTrade`: aggregate trades → `market.agg_trades`.
    #[value(name = "agg_trade")]
    AggTrade,
    /// `<symbol>@bookTicker`: best bid/ask updates → `market.book_tickers`.
    #[value(name = "book_ticker")]
    BookTicker,
}

impl StreamKind {
    /// Every kind, in `--streams` order.
    pub const ALL: [StreamKind; 3] = [
        StreamKind::Kline,
        StreamKind::AggTrade,
        StreamKind::BookTicker,
    ];

    /// The `--streams` name (`kline`, `agg_trade`, `book_ticker`); also the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Kline => "kline",
            StreamKind::AggTrade => "agg_trade",
            StreamKind::BookTicker => "book_ticker",
        }
    }

    /// Binance's channel name: a stream is `<lower-case symbol>@<channel>`. The one mapping.
    pub fn channel(self) -> &'static str {
        match self {
            StreamKind::Kline => "kline_1m",
            StreamKind::AggTrade => "aggTrade",
            StreamKind::BookTicker => "bookTicker",
        }
    }

    /// `<lower-case symbol>@<channel>`.
    pub fn stream_name(self, symbol: &str) -> String {
        format!("{}@{}", symbol.to_ascii_lowercase(), self.channel())
    }

    /// The kind of a stream name (`btcusdt@aggTrade` → AggTrade) and its symbol part.
    pub fn of_stream(stream: &str) -> Option<(StreamKind, &str)> {
        let (symbol, channel) = stream.split_once('@')?;
        StreamKind::ALL
            .into_iter()
            .find(|k| k.channel() == channel)
            .map(|k| (k, symbol))
    }

    /// The WebSocket route that serves this kind on `market`.
    pub fn route(self, market: Market) -> Route {
        match (market, self) {
            (Market::Spot, _) => Route::Spot,
            (Market::Usdm, StreamKind::Kline | StreamKind::AggTrade) => Route::UsdmMarket,
            (Market::Usdm, StreamKind::BookTicker) => Route::UsdmPublic,
        }
    }

    /// The `market` table its rows go to.
    pub fn table(self) -> &'static str {
        match self {
            StreamKind::Kline => crate::constants::CANDLES_TABLE,
            StreamKind::AggTrade => crate::constants::AGG_TRADES_TABLE,
            StreamKind::BookTicker => crate::constants::BOOK_TICKERS_TABLE,
        }
    }
}

impl fmt::Display for StreamKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A WebSocket route (path prefix) of a market.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Route {
    /// Spot: every stream on `/stream` (combined) and `/ws` (raw).
    Spot,
    /// USD-M `/market`: klines, aggTrades, mark price.
    UsdmMarket,
    /// USD-M `/public`: book data (bookTicker, depth).
    UsdmPublic,
}

impl Route {
    /// Path of combined streams (`?streams=a/b/...`).
    pub fn combined_path(self) -> &'static str {
        match self {
            Route::Spot => "/stream",
            Route::UsdmMarket => "/market/stream",
            Route::UsdmPublic => "/public/stream",
        }
    }

    /// Path prefix of raw single streams (`/ws/<stream>`).
    pub fn raw_path(self) -> &'static str {
        match self {
            Route::Spot => "/ws",
            Route::UsdmMarket => "/market/ws",
            Route::UsdmPublic => "/public/ws",
        }
    }

    /// A short name for logs (`spot`, `market`, `public`).
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Spot => "spot",
            Route::UsdmMarket => "market",
            Route::UsdmPublic => "public",
        }
    }
}

/// An instrument's symbol, shared cheaply by every row of it (upper case).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Symbol(Arc<str>);

impl Symbol {
    /// `s` upper-cased, or an error when it is not a Binance symbol (upper-case letters,
    /// digits and `_`, 1 to 40 characters, not starting with `_`: the tables' CHECK).
    pub fn new(s: &str) -> Result<Symbol, ParseError> {
        let up = s.trim().to_ascii_uppercase();
        let ok = !up.is_empty()
            && up.len() <= 40
            && !up.starts_with('_')
            && up
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if ok {
            Ok(Symbol(Arc::from(up)))
        } else {
            Err(ParseError::Field {
                field: "symbol",
                reason: format!(
                    "invalid symbol {:?}",
                    s.chars().take(48).collect::<String>()
                ),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for Symbol {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl ToSql for Symbol {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        <&str as ToSql>::to_sql(&&*self.0, ty, out)
    }

    fn accepts(ty: &Type) -> bool {
        <&str as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

/// Bounds of an exact decimal field (the tables' CHECK constraints).
#[derive(Debug, Clone, Copy)]
pub struct DecimalBounds {
    /// Digits before the point at most (1e15 → 15).
    pub int_digits: usize,
    /// Zero is allowed (book quantities); otherwise the value must be > 0.
    pub zero_ok: bool,
}

/// Prices: `0 < p < 1e15`.
pub const PRICE: DecimalBounds = DecimalBounds {
    int_digits: 15,
    zero_ok: false,
};
/// Trade quantities: `0 < q < 1e20`.
pub const QUANTITY: DecimalBounds = DecimalBounds {
    int_digits: 20,
    zero_ok: false,
};
/// Book quantities: `0 ≤ q < 1e20`.
pub const BOOK_QUANTITY: DecimalBounds = DecimalBounds {
    int_digits: 20,
    zero_ok: true,
};
/// Most decimals a stored value may have (the tables' `scale(x) <= 20`).
pub const MAX_SCALE: usize = 20;

/// Parses a Binance decimal string **exactly** or refuses it: plain digits with at most one
/// point (no sign, no exponent, no NaN), at most `bounds.int_digits` digits before the point,
/// at most 20 after it, at most 28 significant digits (what [`Decimal`] holds without
/// rounding), and positive (or zero when `bounds.zero_ok`). A 30-digit price is refused,
/// never rounded.
pub fn exact_decimal(
    field: &'static str,
    text: &str,
    bounds: DecimalBounds,
) -> Result<Decimal, ParseError> {
    let bad =
        |reason: &str| ParseError::InvalidValue(format!("{field} {:?}: {reason}", short(text)));
    let (int, frac) = match text.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (text, None),
    };
    if text.starts_with('-') {
        return Err(bad("negative"));
    }
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || frac.is_some_and(|f| f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(ParseError::Decimal {
            field,
            value: short(text),
        });
    }
    let int_sig = int.trim_start_matches('0');
    let frac = frac.unwrap_or("");
    if int_sig.len() > bounds.int_digits {
        return Err(bad("too large"));
    }
    if frac.len() > MAX_SCALE {
        return Err(bad("more than 20 decimals"));
    }
    let significant = if int_sig.is_empty() {
        frac.trim_start_matches('0').len()
    } else {
        int_sig.len() + frac.len()
    };
    if significant > 28 {
        return Err(bad("more than 28 significant digits"));
    }
    let d: Decimal = text.parse().map_err(|_| ParseError::Decimal {
        field,
        value: short(text),
    })?;
    if d.scale() as usize != frac.len() {
        return Err(bad("not representable exactly"));
    }
    if d.is_zero() && !bounds.zero_ok {
        return Err(bad("zero"));
    }
    Ok(d)
}

/// Earliest exchange time a tick may carry (2010-01-01, before any Binance market).
pub const MIN_TICK_MS: i64 = 1_262_304_000_000;
/// Tick times must be before 2100-01-01 (the tables' CHECK).
pub const MAX_TICK_MS: i64 = 4_102_444_800_000;

/// A tick time (epoch ms, or µs when ≥ 1e15 as in spot dumps from 2025) inside
/// [2010-01-01, 2100-01-01).
pub fn tick_time(
    field: &'static str,
    raw: i64,
) -> Result<chrono::DateTime<chrono::Utc>, ParseError> {
    let t = crate::binance::model::timestamp_from_raw(field, raw)?;
    let ms = t.timestamp_millis();
    if !(MIN_TICK_MS..MAX_TICK_MS).contains(&ms) {
        return Err(ParseError::Timestamp { field, value: raw });
    }
    Ok(t)
}

fn short(s: &str) -> String {
    s.chars().take(64).collect()
}

/// A combined-stream message with its payload left unparsed
/// (`{"stream":"btcusdt@aggTrade","data":{...}}`).
#[derive(Debug, Deserialize)]
pub struct Combined<'a> {
    #[serde(borrow)]
    pub stream: &'a str,
    #[serde(borrow)]
    pub data: &'a RawValue,
}

/// Splits a combined-stream message into its stream name and raw payload; `None` for
/// anything else (raw-route payloads, subscription replies, `serverShutdown`).
pub fn split_combined(text: &str) -> Option<(&str, &str)> {
    if !text.trim_start().starts_with("{\"stream\"") {
        return None;
    }
    serde_json::from_str::<Combined<'_>>(text)
        .ok()
        .map(|c| (c.stream, c.data.get()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_and_routes() {
        assert_eq!(
            StreamKind::AggTrade.stream_name("BTCUSDT"),
            "btcusdt@aggTrade"
        );
        assert_eq!(StreamKind::Kline.stream_name("ETHUSDT"), "ethusdt@kline_1m");
        assert_eq!(
            StreamKind::of_stream("btcusdt@bookTicker"),
            Some((StreamKind::BookTicker, "btcusdt"))
        );
        assert_eq!(StreamKind::of_stream("btcusdt@depth"), None);
        assert_eq!(
            StreamKind::BookTicker.route(Market::Usdm).combined_path(),
            "/public/stream"
        );
        assert_eq!(
            StreamKind::AggTrade.route(Market::Usdm).combined_path(),
            "/market/stream"
        );
        assert_eq!(
            StreamKind::Kline.route(Market::Usdm).combined_path(),
            Market::Usdm.ws_combined_path()
        );
        for k in StreamKind::ALL {
            assert_eq!(k.route(Market::Spot), Route::Spot);
        }
    }

    /// (TC, text, bounds, Ok(decimal text) or Err)
    #[test]
    fn exact_decimals_table() {
        let cases: &[(&str, &str, DecimalBounds, Option<&str>)] = &[
            ("TC1 plain", "79972.8", PRICE, Some("79972.8")),
            (
                "TC2 8 decimals kept",
                "0.00141342",
                PRICE,
                Some("0.00141342"),
            ),
            (
                "TC3 trailing zeros kept",
                "23.00000000",
                QUANTITY,
                Some("23.00000000"),
            ),
            (
                "TC4 30-digit price",
                "123456789012345678901234567890",
                PRICE,
                None,
            ),
            (
                "TC5 30 decimals",
                "0.123456789012345678901234567890",
                PRICE,
                None,
            ),
            (
                "TC6 29 significant",
                "1234567890.1234567890123456789",
                PRICE,
                None,
            ),
            ("TC7 negative", "-1.5", QUANTITY, None),
            ("TC8 zero quantity", "0.00000000", QUANTITY, None),
            (
                "TC9 zero book quantity",
                "0.00000000",
                BOOK_QUANTITY,
                Some("0.00000000"),
            ),
            ("TC10 exponent", "1e5", PRICE, None),
            ("TC11 NaN", "NaN", PRICE, None),
            ("TC12 empty", "", PRICE, None),
            ("TC13 price 1e15", "1000000000000000", PRICE, None),
            (
                "TC14 just below 1e15",
                "999999999999999.99",
                PRICE,
                Some("999999999999999.99"),
            ),
            ("TC15 sign", "+1", PRICE, None),
            ("TC16 spaces", " 1", PRICE, None),
            ("TC17 dot only", "1.", PRICE, None),
            (
                "TC18 20 decimals",
                "0.00000000000000000001",
                PRICE,
                Some("0.00000000000000000001"),
            ),
        ];
        for (tc, text, b, want) in cases {
            let got = exact_decimal("price", text, *b);
            match want {
                Some(w) => assert_eq!(got.unwrap().to_string(), *w, "{tc}"),
                None => assert!(got.is_err(), "{tc}: {got:?}"),
            }
        }
    }

    #[test]
    fn symbols_and_combined() {
        assert_eq!(Symbol::new("btcusd_perp").unwrap().as_str(), "BTCUSD_PERP");
        assert!(Symbol::new("BTC-USDT").is_err());
        assert!(Symbol::new("").is_err());
        assert!(Symbol::new(&"A".repeat(41)).is_err());
        let (s, d) = split_combined(r#"{"stream":"x@aggTrade","data":{"a":1}}"#).unwrap();
        assert_eq!((s, d), ("x@aggTrade", r#"{"a":1}"#));
        assert!(split_combined(r#"{"e":"serverShutdown"}"#).is_none());
        assert!(split_combined(r#"{"stream":"x","data":"#).is_none());
    }
}
