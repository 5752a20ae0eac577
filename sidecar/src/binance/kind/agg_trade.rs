//! `<symbol>@aggTrade`: Binance aggregate trades (trades that filled at the same time, from
//! the same taker order, at the same price, with their quantities summed), and the REST
//! `aggTrades` rows and dump files that carry the same fields.
//!
//! Binance docs: <https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams#aggregate-trade-streams>,
//! <https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams/Aggregate-Trade-Streams>,
//! REST <https://developers.binance.com/docs/binance-spot-api-docs/rest-api/market-data-endpoints#compressedaggregate-trades-list>.
//!
//! Raw samples (USD-M capture 2021-07-22; spot REST docs):
//! ```json
//! {"stream":"ctkusdt@aggTrade","data":{"e":"aggTrade","E":1626992741575,"a":16599292,
//!  "s":"CTKUSDT","p":"1.01100","q":"10","f":23961322,"l":23961322,"T":1626992741421,"m":false}}
//! [{"a":26129,"p":"0.01633102","q":"4.70443515","f":27781,"l":27781,"T":1498793709153,
//!   "m":true,"M":true}]
//! ```
//! Spot adds `M` (was the trade the best price match); USD-M has none. `a` is contiguous per
//! symbol, so a gap in it is known exactly and can be filled with REST `aggTrades?fromId=`.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{exact_decimal, tick_time, Symbol, PRICE, QUANTITY};
use crate::binance::model::ParseError;

/// `aggTrade` stream payload; field meanings are Binance's.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct WsAggTrade<'a> {
    /// `e`: event type, "aggTrade".
    #[serde(rename = "e", borrow)]
    pub event_type: &'a str,
    /// `E`: event time, epoch ms.
    #[serde(rename = "E")]
    pub event_time: i64,
    /// `s`: symbol, upper case.
    #[serde(rename = "s", borrow)]
    pub symbol: &'a str,
    /// `a`: aggregate trade id.
    #[serde(rename = "a")]
    pub agg_trade_id: i64,
    /// `p`: price (decimal string).
    #[serde(rename = "p", borrow)]
    pub price: &'a str,
    /// `q`: quantity (decimal string).
    #[serde(rename = "q", borrow)]
    pub quantity: &'a str,
    /// `f`: first trade id.
    #[serde(rename = "f")]
    pub first_trade_id: i64,
    /// `l`: last trade id.
    #[serde(rename = "l")]
    pub last_trade_id: i64,
    /// `T`: trade time, epoch ms.
    #[serde(rename = "T")]
    pub trade_time: i64,
    /// `m`: is the buyer the maker.
    #[serde(rename = "m")]
    pub is_buyer_maker: bool,
    /// `M`: best price match (spot only).
    #[serde(rename = "M", default)]
    pub is_best_match: Option<bool>,
}

impl<'a> WsAggTrade<'a> {
    /// The trade fields (the REST row form).
    pub fn trade(&self) -> RestAggTrade<'a> {
        RestAggTrade {
            agg_trade_id: self.agg_trade_id,
            price: self.price,
            quantity: self.quantity,
            first_trade_id: self.first_trade_id,
            last_trade_id: self.last_trade_id,
            trade_time: self.trade_time,
            is_buyer_maker: self.is_buyer_maker,
            is_best_match: self.is_best_match,
        }
    }
}

/// One row of REST `aggTrades` (and the body of the stream payload).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
pub struct RestAggTrade<'a> {
    /// `a`: aggregate trade id.
    #[serde(rename = "a")]
    pub agg_trade_id: i64,
    /// `p`: price (decimal string).
    #[serde(rename = "p", borrow)]
    pub price: &'a str,
    /// `q`: quantity (decimal string).
    #[serde(rename = "q", borrow)]
    pub quantity: &'a str,
    /// `f`: first trade id.
    #[serde(rename = "f")]
    pub first_trade_id: i64,
    /// `l`: last trade id.
    #[serde(rename = "l")]
    pub last_trade_id: i64,
    /// `T`: trade time, epoch ms.
    #[serde(rename = "T")]
    pub trade_time: i64,
    /// `m`: is the buyer the maker (true: the taker sold).
    #[serde(rename = "m")]
    pub is_buyer_maker: bool,
    /// `M`: was the trade the best price match (spot only).
    #[serde(rename = "M", default, skip_serializing_if = "Option::is_none")]
    pub is_best_match: Option<bool>,
}

/// An aggregate trade in domain terms: one row of `market.agg_trades`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggTrade {
    pub symbol: Symbol,
    pub agg_trade_id: i64,
    /// Quote units per base unit, exactly as Binance printed it.
    pub price: Decimal,
    /// Base units (coin-M dumps: contracts), exactly as printed.
    pub quantity: Decimal,
    pub first_trade_id: i64,
    pub last_trade_id: i64,
    /// `T` (ms from the API; µs in spot dumps from 2025).
    pub transact_time: DateTime<Utc>,
    /// `m`: true when the taker sold.
    pub is_buyer_maker: bool,
    /// `M` (spot only).
    pub is_best_match: Option<bool>,
}

impl AggTrade {
    /// Validates and converts the textual fields every source delivers. Refused: a price or
    /// quantity that is not a plain positive decimal storable exactly (≤ 20 decimals, price
    /// < 1e15, quantity < 1e20), negative ids, `f > l`, a time outside [2010, 2100).
    pub fn from_wire(
        symbol: Symbol,
        t: &RestAggTrade<'_>,
        is_best_match: Option<bool>,
    ) -> Result<AggTrade, ParseError> {
        if t.agg_trade_id < 0 || t.first_trade_id < 0 || t.first_trade_id > t.last_trade_id {
            return Err(ParseError::InvalidValue(format!(
                "ids a={} f={} l={} (non-negative, f <= l)",
                t.agg_trade_id, t.first_trade_id, t.last_trade_id
            )));
        }
        Ok(AggTrade {
            symbol,
            agg_trade_id: t.agg_trade_id,
            price: exact_decimal("price", t.price, PRICE)?,
            quantity: exact_decimal("quantity", t.quantity, QUANTITY)?,
            first_trade_id: t.first_trade_id,
            last_trade_id: t.last_trade_id,
            transact_time: tick_time("transact_time", t.trade_time)?,
            is_buyer_maker: t.is_buyer_maker,
            is_best_match: is_best_match.or(t.is_best_match),
        })
    }

    /// Raw trades in this aggregate (`l − f + 1`).
    pub fn trades(&self) -> i64 {
        self.last_trade_id - self.first_trade_id + 1
    }

    /// Epoch ms of the trade time.
    pub fn time_ms(&self) -> i64 {
        self.transact_time.timestamp_millis()
    }

    /// The wire row (REST form) of this trade; `M` only when known.
    pub fn to_wire(&self) -> OwnedAggTrade {
        OwnedAggTrade {
            agg_trade_id: self.agg_trade_id,
            price: self.price.to_string(),
            quantity: self.quantity.to_string(),
            first_trade_id: self.first_trade_id,
            last_trade_id: self.last_trade_id,
            trade_time: self.time_ms(),
            is_buyer_maker: self.is_buyer_maker,
            is_best_match: self.is_best_match,
        }
    }
}

/// [`RestAggTrade`] with owned strings (what the fake Binance serializes).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OwnedAggTrade {
    #[serde(rename = "a")]
    pub agg_trade_id: i64,
    #[serde(rename = "p")]
    pub price: String,
    #[serde(rename = "q")]
    pub quantity: String,
    #[serde(rename = "f")]
    pub first_trade_id: i64,
    #[serde(rename = "l")]
    pub last_trade_id: i64,
    #[serde(rename = "T")]
    pub trade_time: i64,
    #[serde(rename = "m")]
    pub is_buyer_maker: bool,
    #[serde(rename = "M", skip_serializing_if = "Option::is_none")]
    pub is_best_match: Option<bool>,
}

/// Parses one stream payload (the `data` of a combined message, or a raw-route message) of
/// an aggTrade event. Malformed JSON and missing or mistyped fields are errors; values are
/// checked by [`AggTrade::from_wire`].
pub fn parse_ws(payload: &str) -> Result<WsAggTrade<'_>, ParseError> {
    Ok(serde_json::from_str(payload)?)
}

/// One REST row: the trade, or its id and why it was refused.
pub type RestRow = Result<AggTrade, (i64, ParseError)>;

/// Parses a REST `aggTrades` body into trades of `symbol`; a row that fails validation is
/// returned as its id and the error (the caller decides: the fill logs it as unfillable).
pub fn parse_rest(symbol: &Symbol, body: &str) -> Result<Vec<RestRow>, ParseError> {
    let rows: Vec<RestAggTrade<'_>> = serde_json::from_str(body)?;
    Ok(rows
        .iter()
        .map(|r| AggTrade::from_wire(symbol.clone(), r, None).map_err(|e| (r.agg_trade_id, e)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const USDM: &str = r#"{"e":"aggTrade","E":1626992741575,"a":16599292,"s":"CTKUSDT","p":"1.01100","q":"10","f":23961322,"l":23961322,"T":1626992741421,"m":false}"#;

    fn sym() -> Symbol {
        Symbol::new("CTKUSDT").unwrap()
    }

    #[test]
    fn usdm_and_spot_payloads() {
        let w = parse_ws(USDM).unwrap();
        assert_eq!(w.event_type, "aggTrade");
        let t = AggTrade::from_wire(sym(), &w.trade(), None).unwrap();
        assert_eq!(t.price.to_string(), "1.01100", "scale kept");
        assert_eq!(t.quantity.to_string(), "10");
        assert_eq!(t.time_ms(), 1626992741421);
        assert_eq!(t.is_best_match, None);
        assert_eq!(t.trades(), 1);
        let spot = USDM.replace(r#""m":false"#, r#""m":true,"M":true"#);
        let t = AggTrade::from_wire(sym(), &parse_ws(&spot).unwrap().trade(), None).unwrap();
        assert_eq!((t.is_buyer_maker, t.is_best_match), (true, Some(true)));
        // newer USD-M payloads carry extra fields ("nq"): ignored
        let extra = USDM.replace(r#""m":false"#, r#""m":false,"nq":"10""#);
        assert!(parse_ws(&extra).is_ok());
    }

    /// (TC, field replaced, replacement, malformed (true) or refused value (false))
    #[test]
    fn bad_payloads_table() {
        let cases: &[(&str, &str, &str, bool)] = &[
            (
                "TC1 30-digit price",
                r#""p":"1.01100""#,
                r#""p":"123456789012345678901234567890""#,
                false,
            ),
            (
                "TC2 negative quantity",
                r#""q":"10""#,
                r#""q":"-10""#,
                false,
            ),
            ("TC3 zero quantity", r#""q":"10""#, r#""q":"0.000""#, false),
            ("TC4 zero price", r#""p":"1.01100""#, r#""p":"0""#, false),
            ("TC5 f > l", r#""f":23961322"#, r#""f":23961323"#, false),
            ("TC6 negative id", r#""a":16599292"#, r#""a":-1"#, false),
            (
                "TC7 time in 1970",
                r#""T":1626992741421"#,
                r#""T":5"#,
                false,
            ),
            (
                "TC8 price as number",
                r#""p":"1.01100""#,
                r#""p":1.011"#,
                true,
            ),
            ("TC9 missing a", r#""a":16599292,"#, "", true),
            ("TC10 m as string", r#""m":false"#, r#""m":"false""#, true),
            (
                "TC11 id not an integer",
                r#""a":16599292"#,
                r#""a":1.5"#,
                true,
            ),
            ("TC12 NaN price", r#""p":"1.01100""#, r#""p":"NaN""#, false),
        ];
        for (tc, from, to, malformed) in cases {
            assert!(USDM.contains(from), "{tc}");
            let msg = USDM.replace(from, to);
            match parse_ws(&msg) {
                Err(e) => assert!(*malformed, "{tc}: unexpected parse error {e}"),
                Ok(w) => {
                    assert!(!malformed, "{tc}: parsed");
                    let e = AggTrade::from_wire(sym(), &w.trade(), None).unwrap_err();
                    assert!(e.is_validation(), "{tc}: {e}");
                }
            }
        }
        assert!(parse_ws("{not json").is_err());
    }

    #[test]
    fn rest_rows() {
        let body = r#"[{"a":26129,"p":"0.01633102","q":"4.70443515","f":27781,"l":27781,"T":1498793709153,"m":true,"M":true},
                       {"a":26130,"p":"-1","q":"1","f":27782,"l":27782,"T":1498793709153,"m":true,"M":true}]"#;
        let rows = parse_rest(&sym(), body).unwrap();
        assert_eq!(rows.len(), 2);
        let t = rows[0].as_ref().unwrap();
        assert_eq!(t.price.to_string(), "0.01633102");
        assert_eq!(t.is_best_match, Some(true));
        assert_eq!(rows[1].as_ref().unwrap_err().0, 26130);
        let again = serde_json::to_string(&t.to_wire()).unwrap();
        assert_eq!(
            again,
            r#"{"a":26129,"p":"0.01633102","q":"4.70443515","f":27781,"l":27781,"T":1498793709153,"m":true,"M":true}"#
        );
        assert!(parse_rest(&sym(), "[1,2]").is_err());
    }
}
