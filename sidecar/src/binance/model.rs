//! Binance kline wire structs (field meanings exactly as Binance documents them) and the
//! domain [`Kline`] (full-word fields, exact decimals) they convert into.
//!
//! Every source (WebSocket, REST, CSV dumps) goes through [`KlineText`] →
//! [`Kline::from_text`], so decimals are parsed straight from Binance's strings into
//! [`Decimal`] (never through `f64`) and validated the same way everywhere.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::constants::{
    EVENT_KLINE, EVENT_SERVER_SHUTDOWN, KLINE_CLOSE_OFFSET_MS, MAX_CLOCK_SKEW_MS, MAX_DECIMALS,
    MAX_SYMBOL_LEN, MICROSECOND_THRESHOLD, MINUTE_MS, PRICE_LIMIT, VOLUME_LIMIT,
};

/// Why a payload or a kline could not be turned into a [`Kline`].
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("field {field}: invalid decimal {value:?}")]
    Decimal { field: &'static str, value: String },
    #[error("field {field}: invalid timestamp {value}")]
    Timestamp { field: &'static str, value: i64 },
    #[error("field {field}: {reason}")]
    Field { field: &'static str, reason: String },
    #[error("invalid kline: {0}")]
    Invalid(String),
    /// A tick (aggTrade, book ticker) value the tables refuse.
    #[error("invalid value: {0}")]
    InvalidValue(String),
}

impl ParseError {
    /// Parsing the same bytes again gives the same answer: never retryable.
    pub fn is_retryable(&self) -> bool {
        false
    }

    /// True when the kline text was well-formed but its values failed validation
    /// (those are logged as `rejected` rather than as malformed messages).
    pub fn is_validation(&self) -> bool {
        matches!(
            self,
            ParseError::Decimal { .. }
                | ParseError::Timestamp { .. }
                | ParseError::Invalid(_)
                | ParseError::InvalidValue(_)
        )
    }
}

/// A closed (or in-progress) 1-minute kline in domain terms.
///
/// Prices are in quote units, `volume` and `taker_buy_volume` in base units,
/// `quote_volume` and `taker_buy_quote_volume` in quote units (USDT for *USDT pairs).
/// Times keep the source precision (ms from the API, µs from 2025+ spot dumps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kline {
    pub symbol: String,
    pub open_time: DateTime<Utc>,
    pub close_time: DateTime<Utc>,
    pub open: Decimal,
    pub high: Decimal,
    pub low: Decimal,
    pub close: Decimal,
    pub volume: Decimal,
    pub quote_volume: Decimal,
    pub trades: i64,
    pub taker_buy_volume: Decimal,
    pub taker_buy_quote_volume: Decimal,
}

/// The textual fields of one kline as every Binance source delivers them.
#[derive(Debug, Clone, Copy)]
pub struct KlineText<'a> {
    pub symbol: &'a str,
    /// Open time, epoch ms or µs (≥ 1e15 is µs).
    pub open_time: i64,
    /// Close time, epoch ms or µs.
    pub close_time: i64,
    pub open: &'a str,
    pub high: &'a str,
    pub low: &'a str,
    pub close: &'a str,
    pub volume: &'a str,
    pub quote_volume: &'a str,
    pub trades: i64,
    pub taker_buy_volume: &'a str,
    pub taker_buy_quote_volume: &'a str,
}

/// Parses a Binance decimal string exactly ("54659.01", "78189.20000000"; scientific
/// notation is accepted as a fallback). NaN, infinities and empty strings are errors.
pub fn parse_decimal(field: &'static str, value: &str) -> Result<Decimal, ParseError> {
    let v = value.trim();
    Decimal::from_str(v)
        .or_else(|_| {
            if v.contains(['e', 'E']) {
                Decimal::from_scientific(v)
            } else {
                Err(rust_decimal::Error::ErrorString("not a decimal".into()))
            }
        })
        .map_err(|_| ParseError::Decimal {
            field,
            value: value.chars().take(64).collect(),
        })
}

/// Epoch ms or µs (decided by magnitude: ≥ 1e15 is µs) to a UTC timestamp.
pub fn timestamp_from_raw(field: &'static str, value: i64) -> Result<DateTime<Utc>, ParseError> {
    let parsed = if value >= MICROSECOND_THRESHOLD {
        Utc.timestamp_micros(value).single()
    } else {
        Utc.timestamp_millis_opt(value).single()
    };
    match parsed {
        Some(t) if value >= 0 => Ok(t),
        _ => Err(ParseError::Timestamp { field, value }),
    }
}

/// Epoch milliseconds of a timestamp (µs are floored: …59_999_999 µs → …59_999 ms).
pub fn to_ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// Epoch ms to a UTC timestamp (for values known to be valid ms).
pub fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// True for a symbol `market.candles_1m` accepts (`candles_1m_symbol_check`:
/// `^[A-Z0-9][A-Z0-9_]{0,39}$`).
pub fn is_valid_symbol(symbol: &str) -> bool {
    symbol.len() <= MAX_SYMBOL_LEN
        && symbol
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        && symbol
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

impl Kline {
    /// Parses and validates one kline from its textual fields.
    pub fn from_text(t: KlineText<'_>) -> Result<Kline, ParseError> {
        let symbol = t.symbol.trim().to_ascii_uppercase();
        if !is_valid_symbol(&symbol) {
            return Err(ParseError::Field {
                field: "symbol",
                reason: format!(
                    "invalid symbol {:?}",
                    t.symbol.chars().take(64).collect::<String>()
                ),
            });
        }
        let kline = Kline {
            symbol,
            open_time: timestamp_from_raw("open_time", t.open_time)?,
            close_time: timestamp_from_raw("close_time", t.close_time)?,
            open: parse_decimal("open", t.open)?,
            high: parse_decimal("high", t.high)?,
            low: parse_decimal("low", t.low)?,
            close: parse_decimal("close", t.close)?,
            volume: parse_decimal("volume", t.volume)?,
            quote_volume: parse_decimal("quote_volume", t.quote_volume)?,
            trades: t.trades,
            taker_buy_volume: parse_decimal("taker_buy_volume", t.taker_buy_volume)?,
            taker_buy_quote_volume: parse_decimal(
                "taker_buy_quote_volume",
                t.taker_buy_quote_volume,
            )?,
        };
        kline.validate()?;
        Ok(kline)
    }

    /// Checks the invariants every stored candle must satisfy, against the clock now: see
    /// [`Kline::validate_at`].
    pub fn validate(&self) -> Result<(), ParseError> {
        self.validate_at(Utc::now())
    }

    /// Checks the invariants every stored candle must satisfy: exactly the CHECK constraints
    /// of `market.candles_1m` (sql/002_candles.sql), so that a kline the table would refuse is
    /// rejected alone (by `import`, `stream` and the REST backfill alike) instead of failing
    /// the batch it would have been written with.
    ///
    /// # Rules  symbol `^[A-Z0-9][A-Z0-9_]{0,39}$`; open_time on a whole minute and at most
    ///   [`MAX_CLOCK_SKEW_MS`] after `now`; open_time < close_time < open_time + 1 min;
    ///   0 < low ≤ open, close ≤ high < 1e15; volumes, quote volumes and taker volumes
    ///   in [0, 1e20); every decimal with at most 20 decimals; trades ≥ 0.
    /// # Errors ParseError::Invalid with the first rule broken.
    pub fn validate_at(&self, now: DateTime<Utc>) -> Result<(), ParseError> {
        let invalid = |reason: String| Err(ParseError::Invalid(reason));
        if !is_valid_symbol(&self.symbol) {
            return invalid(format!(
                "invalid symbol {:?}",
                self.symbol.chars().take(64).collect::<String>()
            ));
        }
        let open_us = self.open_time.timestamp_micros();
        if open_us % (MINUTE_MS * 1000) != 0 {
            return invalid(format!("open_time {} is not on a minute", self.open_time));
        }
        let span_us = self.close_time.timestamp_micros() - open_us;
        if span_us <= 0 || span_us >= MINUTE_MS * 1000 {
            return invalid(format!(
                "close_time {} is not inside the minute opening at {}",
                self.close_time, self.open_time
            ));
        }
        if self.low > self.high {
            return invalid(format!("low {} > high {}", self.low, self.high));
        }
        for (name, price) in [("open", self.open), ("close", self.close)] {
            if price < self.low || price > self.high {
                return invalid(format!(
                    "{name} {price} outside [low {}, high {}]",
                    self.low, self.high
                ));
            }
        }
        let latest_us = now
            .timestamp_micros()
            .saturating_add(MAX_CLOCK_SKEW_MS * 1000);
        if open_us > latest_us {
            return invalid(format!(
                "open_time {} is in the future (more than {} s after the clock, {})",
                self.open_time,
                MAX_CLOCK_SKEW_MS / 1000,
                now
            ));
        }
        if self.low <= Decimal::ZERO {
            return invalid(format!("low {} is not positive", self.low));
        }
        if self.high >= Decimal::from(PRICE_LIMIT) {
            return invalid(format!("high {} is not below 1e15", self.high));
        }
        let volume_limit = Decimal::from_i128_with_scale(VOLUME_LIMIT, 0);
        for (name, v) in [
            ("volume", self.volume),
            ("quote_volume", self.quote_volume),
            ("taker_buy_volume", self.taker_buy_volume),
            ("taker_buy_quote_volume", self.taker_buy_quote_volume),
        ] {
            if v.is_sign_negative() && !v.is_zero() {
                return invalid(format!("negative {name} {v}"));
            }
            if v >= volume_limit {
                return invalid(format!("{name} {v} is not below 1e20"));
            }
        }
        for (name, v) in [
            ("open", self.open),
            ("high", self.high),
            ("low", self.low),
            ("close", self.close),
            ("volume", self.volume),
            ("quote_volume", self.quote_volume),
            ("taker_buy_volume", self.taker_buy_volume),
            ("taker_buy_quote_volume", self.taker_buy_quote_volume),
        ] {
            if v.scale() > MAX_DECIMALS {
                return invalid(format!(
                    "{name} {v} has {} decimals (at most {MAX_DECIMALS})",
                    v.scale()
                ));
            }
        }
        if self.trades < 0 {
            return invalid(format!("negative trades {}", self.trades));
        }
        Ok(())
    }

    /// Epoch ms of the open time.
    pub fn open_time_ms(&self) -> i64 {
        to_ms(self.open_time)
    }

    /// Epoch ms of the close time.
    pub fn close_time_ms(&self) -> i64 {
        to_ms(self.close_time)
    }

    /// True when close_time is not the last millisecond of the minute (exchange halts:
    /// e.g. BTCUSDT 2021-04-25 04:00 closed at …258146 instead of …259999).
    pub fn is_truncated(&self) -> bool {
        self.close_time_ms() - self.open_time_ms() != KLINE_CLOSE_OFFSET_MS
    }
}

// ---- WebSocket -----------------------------------------------------------------------

/// Kline/candlestick stream payload (`<symbol>@kline_<interval>`).
///
/// Binance docs: <https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams#klinecandlestick-streams-for-utc>
///
/// Raw sample (USD-M capture 2021-07-22, combined-stream wrapper removed):
/// ```json
/// {"e":"kline","E":1626992741424,"s":"CTKUSDT","k":{"t":1626992700000,"T":1626992759999,
///  "s":"CTKUSDT","i":"1m","f":23961275,"L":23961322,"o":"1.01000","c":"1.01100",
///  "h":"1.01100","l":"1.01000","v":"3917","n":48,"x":false,"q":"3957.89900",
///  "V":"1729","Q":"1748.01900","B":"0"}}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WsKlineEvent {
    /// `e`: event type, always "kline".
    #[serde(rename = "e")]
    pub event_type: String,
    /// `E`: event time, epoch ms (the exchange's clock).
    #[serde(rename = "E")]
    pub event_time: i64,
    /// `s`: symbol, upper case.
    #[serde(rename = "s")]
    pub symbol: String,
    /// `k`: the kline.
    #[serde(rename = "k")]
    pub kline: WsKline,
}

/// The `k` object of a kline event; field order is Binance's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WsKline {
    /// `t`: kline start time, epoch ms.
    #[serde(rename = "t")]
    pub start_time: i64,
    /// `T`: kline close time, epoch ms (start + 59 999 for a full minute).
    #[serde(rename = "T")]
    pub close_time: i64,
    /// `s`: symbol.
    #[serde(rename = "s")]
    pub symbol: String,
    /// `i`: interval, "1m".
    #[serde(rename = "i")]
    pub interval: String,
    /// `f`: first trade id (-1 when no trade).
    #[serde(rename = "f")]
    pub first_trade_id: i64,
    /// `L`: last trade id (-1 when no trade).
    #[serde(rename = "L")]
    pub last_trade_id: i64,
    /// `o`: open price (decimal string).
    #[serde(rename = "o")]
    pub open_price: String,
    /// `c`: close price (latest price while `x` is false).
    #[serde(rename = "c")]
    pub close_price: String,
    /// `h`: high price.
    #[serde(rename = "h")]
    pub high_price: String,
    /// `l`: low price.
    #[serde(rename = "l")]
    pub low_price: String,
    /// `v`: base asset volume.
    #[serde(rename = "v")]
    pub base_asset_volume: String,
    /// `n`: number of trades.
    #[serde(rename = "n")]
    pub number_of_trades: i64,
    /// `x`: is this kline closed?
    #[serde(rename = "x")]
    pub is_closed: bool,
    /// `q`: quote asset volume.
    #[serde(rename = "q")]
    pub quote_asset_volume: String,
    /// `V`: taker buy base asset volume.
    #[serde(rename = "V")]
    pub taker_buy_base_asset_volume: String,
    /// `Q`: taker buy quote asset volume.
    #[serde(rename = "Q")]
    pub taker_buy_quote_asset_volume: String,
    /// `B`: ignore.
    #[serde(rename = "B")]
    pub ignore: String,
}

impl WsKline {
    /// Textual view for [`Kline::from_text`].
    pub fn as_text(&self) -> KlineText<'_> {
        KlineText {
            symbol: &self.symbol,
            open_time: self.start_time,
            close_time: self.close_time,
            open: &self.open_price,
            high: &self.high_price,
            low: &self.low_price,
            close: &self.close_price,
            volume: &self.base_asset_volume,
            quote_volume: &self.quote_asset_volume,
            trades: self.number_of_trades,
            taker_buy_volume: &self.taker_buy_base_asset_volume,
            taker_buy_quote_volume: &self.taker_buy_quote_asset_volume,
        }
    }

    /// Wire form of a domain kline (used by the fake Binance).
    pub fn from_kline(k: &Kline, is_closed: bool, first_trade_id: i64, last_trade_id: i64) -> Self {
        WsKline {
            start_time: k.open_time_ms(),
            close_time: k.close_time_ms(),
            symbol: k.symbol.clone(),
            interval: crate::constants::KLINE_INTERVAL.to_string(),
            first_trade_id,
            last_trade_id,
            open_price: k.open.to_string(),
            close_price: k.close.to_string(),
            high_price: k.high.to_string(),
            low_price: k.low.to_string(),
            base_asset_volume: k.volume.to_string(),
            number_of_trades: k.trades,
            is_closed,
            quote_asset_volume: k.quote_volume.to_string(),
            taker_buy_base_asset_volume: k.taker_buy_volume.to_string(),
            taker_buy_quote_asset_volume: k.taker_buy_quote_volume.to_string(),
            ignore: "0".to_string(),
        }
    }
}

/// Combined-stream envelope: `{"stream":"btcusdt@kline_1m","data":{...}}`.
///
/// Binance docs: <https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams#general-wss-information>
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CombinedStreamMessage<T> {
    /// Stream name, e.g. `btcusdt@kline_1m`.
    pub stream: String,
    /// The raw stream payload.
    pub data: T,
}

/// One WebSocket text message, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum WsMessage {
    /// A kline event (closed or in progress).
    Kline(Box<WsKlineEvent>),
    /// `serverShutdown`: the server will close this connection; reconnect.
    ServerShutdown { event_time: Option<i64> },
    /// Any other well-formed message (other stream types, subscription replies).
    Other { event_type: Option<String> },
}

/// Classifies a WebSocket text message (combined-stream wrapper or raw payload, and
/// `{"event":{...}}`-wrapped events). Malformed JSON and kline events with missing or
/// mistyped fields are errors; decimals are checked later by [`Kline::from_text`].
pub fn parse_ws_message(text: &str) -> Result<WsMessage, ParseError> {
    let mut value: Value = serde_json::from_str(text)?;
    let payload = match value.as_object_mut() {
        Some(obj) if obj.contains_key("data") && obj.contains_key("stream") => {
            obj.remove("data").unwrap_or(Value::Null)
        }
        Some(obj) if obj.get("event").is_some_and(Value::is_object) => {
            obj.remove("event").unwrap_or(Value::Null)
        }
        _ => value,
    };
    let event_type = payload.get("e").and_then(Value::as_str).map(str::to_owned);
    match event_type.as_deref() {
        Some(EVENT_KLINE) => Ok(WsMessage::Kline(Box::new(serde_json::from_value(payload)?))),
        Some(EVENT_SERVER_SHUTDOWN) => Ok(WsMessage::ServerShutdown {
            event_time: payload.get("E").and_then(Value::as_i64),
        }),
        _ => Ok(WsMessage::Other { event_type }),
    }
}

// ---- REST ----------------------------------------------------------------------------

/// One row of `GET /api/v3/klines`.
///
/// Binance docs: <https://developers.binance.com/docs/binance-spot-api-docs/rest-api/market-data-endpoints#klinecandlestick-data>
///
/// Raw sample (BTCUSDT 2021-10-22 23:03):
/// ```json
/// [1634943780000,"60685.22000000","60729.84000000","60670.90000000","60719.27000000",
///  "21.63272000",1634943839999,"1313200.01340410",617,"12.28492000","745719.41022840","0"]
/// ```
/// Fields: open time, open, high, low, close, volume, close time, quote asset volume,
/// number of trades, taker buy base asset volume, taker buy quote asset volume, ignore.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestKline(
    pub i64,
    pub String,
    pub String,
    pub String,
    pub String,
    pub String,
    pub i64,
    pub String,
    pub i64,
    pub String,
    pub String,
    pub String,
);

impl RestKline {
    /// Textual view for [`Kline::from_text`] (REST rows carry no symbol).
    pub fn as_text<'a>(&'a self, symbol: &'a str) -> KlineText<'a> {
        KlineText {
            symbol,
            open_time: self.0,
            close_time: self.6,
            open: &self.1,
            high: &self.2,
            low: &self.3,
            close: &self.4,
            volume: &self.5,
            quote_volume: &self.7,
            trades: self.8,
            taker_buy_volume: &self.9,
            taker_buy_quote_volume: &self.10,
        }
    }

    /// Wire form of a domain kline (used by the fake Binance).
    pub fn from_kline(k: &Kline) -> Self {
        RestKline(
            k.open_time_ms(),
            k.open.to_string(),
            k.high.to_string(),
            k.low.to_string(),
            k.close.to_string(),
            k.volume.to_string(),
            k.close_time_ms(),
            k.quote_volume.to_string(),
            k.trades,
            k.taker_buy_volume.to_string(),
            k.taker_buy_quote_volume.to_string(),
            "0".to_string(),
        )
    }
}

/// `GET /api/v3/time` response.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ServerTime {
    /// `serverTime`: epoch ms.
    #[serde(rename = "serverTime")]
    pub server_time: i64,
}

/// One entry of `exchangeInfo.symbols` (`GET /api/v3/exchangeInfo`, `GET /fapi/v1/exchangeInfo`),
/// the fields discovery reads. Futures entries carry `contractType` (`PERPETUAL`,
/// `CURRENT_QUARTER`, `TRADIFI_PERPETUAL`, ...) and `marginAsset`; spot entries have neither.
///
/// ```json
/// {"symbol":"BTCUSDT","pair":"BTCUSDT","contractType":"PERPETUAL","status":"TRADING",
///  "baseAsset":"BTC","quoteAsset":"USDT","marginAsset":"USDT", ...}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SymbolInfo {
    pub symbol: String,
    /// `TRADING`, `SETTLING`, `PENDING_TRADING`, `BREAK`, ...
    pub status: String,
    #[serde(rename = "quoteAsset")]
    pub quote_asset: String,
    #[serde(rename = "marginAsset", default)]
    pub margin_asset: Option<String>,
    #[serde(rename = "contractType", default)]
    pub contract_type: Option<String>,
}

/// `exchangeInfo` response (only `symbols` is read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeInfo {
    pub symbols: Vec<SymbolInfo>,
}

/// Binance error body, e.g. `{"code":-1121,"msg":"Invalid symbol."}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    pub code: i64,
    pub msg: String,
}

/// Parses a `/api/v3/klines` body into domain klines of `symbol`.
pub fn parse_rest_klines(symbol: &str, body: &str) -> Result<Vec<Kline>, ParseError> {
    let rows: Vec<RestKline> = serde_json::from_str(body)?;
    rows.iter()
        .map(|r| Kline::from_text(r.as_text(symbol)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros_free::dec;

    /// Tiny stand-in for `rust_decimal_macros::dec!` (avoids another dependency).
    mod rust_decimal_macros_free {
        macro_rules! dec {
            ($s:literal) => {
                <rust_decimal::Decimal as std::str::FromStr>::from_str(stringify!($s)).unwrap()
            };
        }
        pub(crate) use dec;
    }

    const CLOSED: &str = r#"{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1634943840100,"s":"BTCUSDT","k":{"t":1634943780000,"T":1634943839999,"s":"BTCUSDT","i":"1m","f":1,"L":617,"o":"60685.22000000","c":"60719.27000000","h":"60729.84000000","l":"60670.90000000","v":"21.63272000","n":617,"x":true,"q":"1313200.01340410","V":"12.28492000","Q":"745719.41022840","B":"0"}}}"#;

    #[test]
    fn closed_kline_converts_exactly() {
        let WsMessage::Kline(ev) = parse_ws_message(CLOSED).unwrap() else {
            panic!("not a kline")
        };
        assert!(ev.kline.is_closed);
        assert_eq!(ev.event_time, 1634943840100);
        let k = Kline::from_text(ev.kline.as_text()).unwrap();
        assert_eq!(k.symbol, "BTCUSDT");
        assert_eq!(k.open_time_ms(), 1634943780000);
        assert_eq!(k.open, dec!(60685.22));
        assert_eq!(k.open.to_string(), "60685.22000000", "scale kept verbatim");
        assert_eq!(k.quote_volume.to_string(), "1313200.01340410");
        assert_eq!(k.trades, 617);
        assert!(!k.is_truncated());
    }

    /// Table of (case, message, expected classification or error kind).
    #[test]
    fn ws_messages_table() {
        let kline_with = |field: &str, replacement: &str| {
            let needle = match field {
                "o" => r#""o":"60685.22000000""#,
                "l" => r#""l":"60670.90000000""#,
                "v" => r#""v":"21.63272000""#,
                "n" => r#""n":617"#,
                "x" => r#""x":true"#,
                _ => unreachable!(),
            };
            assert!(CLOSED.contains(needle));
            CLOSED.replace(needle, replacement)
        };
        enum Want {
            Closed,
            Other,
            Shutdown,
            Malformed,
            Rejected,
        }
        let cases: Vec<(&str, String, Want)> = vec![
            ("TC1 closed kline", CLOSED.to_string(), Want::Closed),
            (
                "TC2 spot bookTicker has no e",
                r#"{"stream":"btcusdt@bookTicker","data":{"u":1,"s":"BTCUSDT","b":"1","B":"2","a":"3","A":"4"}}"#.into(),
                Want::Other,
            ),
            ("TC3 subscribe reply", r#"{"result":null,"id":1}"#.into(), Want::Other),
            (
                "TC4 serverShutdown raw",
                r#"{"e":"serverShutdown","E":1700000000000}"#.into(),
                Want::Shutdown,
            ),
            (
                "TC5 serverShutdown wrapped",
                r#"{"event":{"e":"serverShutdown","E":1700000000000}}"#.into(),
                Want::Shutdown,
            ),
            ("TC6 truncated JSON", CLOSED[..CLOSED.len() - 10].to_string(), Want::Malformed),
            ("TC7 not JSON", "ping".into(), Want::Malformed),
            ("TC8 missing field n", kline_with("n", r#""nn":617"#), Want::Malformed),
            ("TC9 x is a string", kline_with("x", r#""x":"true""#), Want::Malformed),
            ("TC10 open not a decimal", kline_with("o", r#""o":"abc""#), Want::Rejected),
            ("TC11 empty volume", kline_with("v", r#""v":"""#), Want::Rejected),
            ("TC12 negative volume", kline_with("v", r#""v":"-1.0""#), Want::Rejected),
            ("TC13 low above high", kline_with("l", r#""l":"70000.0""#), Want::Rejected),
            ("TC14 NaN open", kline_with("o", r#""o":"NaN""#), Want::Rejected),
            ("TC15 number instead of string", kline_with("o", r#""o":60685.22"#), Want::Malformed),
        ];
        for (name, msg, want) in cases {
            let got = parse_ws_message(&msg);
            match (want, got) {
                (Want::Closed, Ok(WsMessage::Kline(ev))) => {
                    Kline::from_text(ev.kline.as_text()).unwrap_or_else(|e| panic!("{name}: {e}"));
                }
                (Want::Other, Ok(WsMessage::Other { .. })) => {}
                (Want::Shutdown, Ok(WsMessage::ServerShutdown { event_time })) => {
                    assert_eq!(event_time, Some(1700000000000), "{name}")
                }
                (Want::Malformed, Err(e)) => assert!(!e.is_validation(), "{name}: {e}"),
                (Want::Rejected, Ok(WsMessage::Kline(ev))) => {
                    let err = Kline::from_text(ev.kline.as_text())
                        .expect_err(&format!("{name}: should be rejected"));
                    assert!(err.is_validation(), "{name}: {err}");
                }
                (_, got) => panic!("{name}: unexpected {got:?}"),
            }
        }
    }

    #[test]
    fn timestamps_ms_and_us() {
        // TC1: ms
        let t = timestamp_from_raw("t", 1633910400000).unwrap();
        assert_eq!(t.to_rfc3339(), "2021-10-11T00:00:00+00:00");
        // TC2: µs (2025+ spot dumps)
        let t = timestamp_from_raw("t", 1789430400000000).unwrap();
        assert_eq!(t.to_rfc3339(), "2026-09-15T00:00:00+00:00");
        let c = timestamp_from_raw("T", 1789430459999999).unwrap();
        assert_eq!(to_ms(c), 1789430459999);
        // TC3: negative
        assert!(timestamp_from_raw("t", -1).is_err());
    }

    #[test]
    fn truncated_kline_detected() {
        // The real halt kline: BTCUSDT 2021-04-25 04:00 closed at …258146.
        let text = KlineText {
            symbol: "btcusdt",
            open_time: 1619323200000,
            close_time: 1619323258146,
            open: "1",
            high: "2",
            low: "0.5",
            close: "1.5",
            volume: "0",
            quote_volume: "0",
            trades: 0,
            taker_buy_volume: "0",
            taker_buy_quote_volume: "0",
        };
        let k = Kline::from_text(text).unwrap();
        assert_eq!(k.symbol, "BTCUSDT");
        assert!(k.is_truncated());
        // Off-minute open time is rejected.
        let bad = KlineText {
            open_time: 1619323200001,
            ..text
        };
        assert!(Kline::from_text(bad).unwrap_err().is_validation());
        // Close time past the minute is rejected.
        let bad = KlineText {
            close_time: 1619323260000,
            ..text
        };
        assert!(Kline::from_text(bad).is_err());
    }

    #[test]
    fn rest_inline_sample() {
        let body = r#"[[1634943780000,"60685.22000000","60729.84000000","60670.90000000","60719.27000000","21.63272000",1634943839999,"1313200.01340410",617,"12.28492000","745719.41022840","0"]]"#;
        let ks = parse_rest_klines("BTCUSDT", body).unwrap();
        assert_eq!(ks.len(), 1);
        assert_eq!(ks[0].high, dec!(60729.84));
        // Round trip through the fake's serializer keeps the text.
        let again = serde_json::to_string(&vec![RestKline::from_kline(&ks[0])]).unwrap();
        assert_eq!(again, body);
        // Missing column
        assert!(parse_rest_klines("BTCUSDT", r#"[[1634943780000,"1"]]"#).is_err());
    }
}
