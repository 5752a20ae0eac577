//! `<symbol>@bookTicker`: the best bid and ask of a symbol, pushed on every change, and the
//! futures `bookTicker` dump files. A state stream: the exchange keeps no history of it, so a
//! disconnect cannot be filled; ta-feed records it as a time-range gap instead.
//!
//! Binance docs: <https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams#individual-symbol-book-ticker-streams>,
//! <https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams/Individual-Symbol-Book-Ticker-Streams>
//!
//! Raw samples (captures 2021-07-22 USD-M and 2021-10-12 spot):
//! ```json
//! {"stream":"sushiusdt@bookTicker","data":{"e":"bookTicker","u":600859600576,"s":"SUSHIUSDT",
//!  "b":"7.6110","B":"2","a":"7.6120","A":"297","T":1626992741012,"E":1626992741017}}
//! {"stream":"nknusdt@bookTicker","data":{"u":499869768,"s":"NKNUSDT","b":"0.35210000",
//!  "B":"672.00000000","a":"0.35260000","A":"3199.00000000"}}
//! ```
//! Spot sends no `e`, `E` or `T`: ta-feed stores the time it received the update as
//! `event_time` there (its clock, not the exchange's) and `transaction_time` NULL.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;

use super::{exact_decimal, tick_time, Symbol, BOOK_QUANTITY, PRICE};
use crate::binance::model::ParseError;

/// `bookTicker` stream payload (spot: no `e`, `E`, `T`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct WsBookTicker<'a> {
    /// `e`: event type "bookTicker" (USD-M only).
    #[serde(rename = "e", default, borrow)]
    pub event_type: Option<&'a str>,
    /// `u`: order book update id.
    #[serde(rename = "u")]
    pub update_id: i64,
    /// `s`: symbol.
    #[serde(rename = "s", borrow)]
    pub symbol: &'a str,
    /// `b`: best bid price.
    #[serde(rename = "b", borrow)]
    pub best_bid_price: &'a str,
    /// `B`: best bid quantity.
    #[serde(rename = "B", borrow)]
    pub best_bid_qty: &'a str,
    /// `a`: best ask price.
    #[serde(rename = "a", borrow)]
    pub best_ask_price: &'a str,
    /// `A`: best ask quantity.
    #[serde(rename = "A", borrow)]
    pub best_ask_qty: &'a str,
    /// `T`: transaction time, epoch ms (USD-M only).
    #[serde(rename = "T", default)]
    pub transaction_time: Option<i64>,
    /// `E`: event time, epoch ms (USD-M only).
    #[serde(rename = "E", default)]
    pub event_time: Option<i64>,
}

/// A best bid/ask update in domain terms: one row of `market.book_tickers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookTicker {
    pub symbol: Symbol,
    pub update_id: i64,
    pub best_bid_price: Decimal,
    pub best_bid_qty: Decimal,
    pub best_ask_price: Decimal,
    pub best_ask_qty: Decimal,
    /// `T` (USD-M), else None.
    pub transaction_time: Option<DateTime<Utc>>,
    /// `E` (USD-M); on spot the receive time.
    pub event_time: DateTime<Utc>,
}

impl BookTicker {
    /// Validates the textual fields. `received_ms` is used as `event_time` when the payload
    /// has no `E` (spot). Refused: prices not positive exact decimals below 1e15, quantities
    /// negative or not exact, `best_bid_price >= best_ask_price`, a negative update id, a time
    /// outside [2010, 2100).
    pub fn from_wire(
        symbol: Symbol,
        w: &WsBookTicker<'_>,
        received_ms: i64,
    ) -> Result<BookTicker, ParseError> {
        if w.update_id < 0 {
            return Err(ParseError::InvalidValue(format!(
                "negative update id {}",
                w.update_id
            )));
        }
        let t = BookTicker {
            symbol,
            update_id: w.update_id,
            best_bid_price: exact_decimal("best_bid_price", w.best_bid_price, PRICE)?,
            best_bid_qty: exact_decimal("best_bid_qty", w.best_bid_qty, BOOK_QUANTITY)?,
            best_ask_price: exact_decimal("best_ask_price", w.best_ask_price, PRICE)?,
            best_ask_qty: exact_decimal("best_ask_qty", w.best_ask_qty, BOOK_QUANTITY)?,
            transaction_time: w
                .transaction_time
                .map(|t| tick_time("transaction_time", t))
                .transpose()?,
            event_time: tick_time("event_time", w.event_time.unwrap_or(received_ms))?,
        };
        if t.best_bid_price >= t.best_ask_price {
            return Err(ParseError::InvalidValue(format!(
                "best_bid_price {} >= best_ask_price {} (crossed book)",
                t.best_bid_price, t.best_ask_price
            )));
        }
        Ok(t)
    }

    /// Epoch ms of the event time.
    pub fn time_ms(&self) -> i64 {
        self.event_time.timestamp_millis()
    }
}

/// Parses one stream payload of a bookTicker event.
pub fn parse_ws(payload: &str) -> Result<WsBookTicker<'_>, ParseError> {
    Ok(serde_json::from_str(payload)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const USDM: &str = r#"{"e":"bookTicker","u":600859600576,"s":"SUSHIUSDT","b":"7.6110","B":"2","a":"7.6120","A":"297","T":1626992741012,"E":1626992741017}"#;
    const SPOT: &str = r#"{"u":499869768,"s":"NKNUSDT","b":"0.35210000","B":"672.00000000","a":"0.35260000","A":"3199.00000000"}"#;

    #[test]
    fn usdm_and_spot() {
        let w = parse_ws(USDM).unwrap();
        let t = BookTicker::from_wire(Symbol::new(w.symbol).unwrap(), &w, 1).unwrap();
        assert_eq!(t.time_ms(), 1626992741017);
        assert_eq!(
            t.transaction_time.map(|t| t.timestamp_millis()),
            Some(1626992741012)
        );
        assert_eq!(t.best_bid_price.to_string(), "7.6110");
        let w = parse_ws(SPOT).unwrap();
        assert_eq!(w.event_type, None);
        let t = BookTicker::from_wire(Symbol::new(w.symbol).unwrap(), &w, 1634000000123).unwrap();
        assert_eq!(t.time_ms(), 1634000000123, "spot: receive time");
        assert_eq!(t.transaction_time, None);
        assert_eq!(t.best_ask_qty.to_string(), "3199.00000000");
    }

    /// (TC, field, replacement, malformed (true) or refused (false))
    #[test]
    fn bad_payloads_table() {
        let cases: &[(&str, &str, &str, bool)] = &[
            ("TC1 bid > ask", r#""b":"7.6110""#, r#""b":"7.7000""#, false),
            ("TC2 bid = ask", r#""b":"7.6110""#, r#""b":"7.6120""#, false),
            ("TC3 negative qty", r#""B":"2""#, r#""B":"-2""#, false),
            ("TC4 zero bid price", r#""b":"7.6110""#, r#""b":"0""#, false),
            (
                "TC5 30 digits",
                r#""a":"7.6120""#,
                r#""a":"7.61200000000000000000000000001""#,
                false,
            ),
            ("TC6 u negative", r#""u":600859600576"#, r#""u":-5"#, false),
            ("TC7 u missing", r#""u":600859600576,"#, "", true),
            ("TC8 b number", r#""b":"7.6110""#, r#""b":7.611"#, true),
            ("TC9 E in 1970", r#""E":1626992741017"#, r#""E":1"#, false),
        ];
        for (tc, from, to, malformed) in cases {
            assert!(USDM.contains(from), "{tc}");
            let msg = USDM.replace(from, to);
            match parse_ws(&msg) {
                Err(e) => assert!(*malformed, "{tc}: {e}"),
                Ok(w) => {
                    assert!(!malformed, "{tc}: parsed");
                    let e = BookTicker::from_wire(Symbol::new("X").unwrap(), &w, 1).unwrap_err();
                    assert!(e.is_validation(), "{tc}: {e}");
                }
            }
        }
        // zero quantities are a valid (empty) side
        let zero = USDM.replace(r#""B":"2""#, r#""B":"0""#);
        let w = parse_ws(&zero).unwrap();
        assert!(BookTicker::from_wire(Symbol::new("X").unwrap(), &w, 1).is_ok());
    }
}
