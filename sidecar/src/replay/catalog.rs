//! The symbols a replay serves: the files' symbols, their clones (`--clone-symbols`) and
//! their listing windows (`--list`, `--delist`).
//!
//! # Clones
//! With `--clone-symbols N` every file symbol `BASEUSDT` is served as N symbols: k = 0 is the
//! original; k = 1..N-1 is `{BASE}{k:02}USDT` (ALGO03USDT). A clone's open, high, low, close,
//! quote_volume and taker_buy_quote_volume are the original's multiplied by the exact decimal
//! `(1000 + k) / 1000` (`Decimal::new(1000 + k, 3)`, no rounding: the scale grows by 3, so
//! `0.1038 × 1.003 = 0.1041114`); volume, taker_buy_volume, trades and times are unchanged.
//! Clones are derived from the source kline when served, never stored. Their trades and book
//! tickers likewise: prices × the same factor, quantities, ids and times unchanged (so a
//! clone's klines derived from its trades equal its source's klines cloned: Σ p·f·q =
//! f·Σ p·q exactly).
//!
//! # Listing windows
//! A `--list SYM@T` symbol does not exist before T and has klines from T's minute on; a
//! `--delist SYM@T` symbol has no klines with open_time ≥ T and is SETTLING (usdm) / BREAK
//! (spot) in exchangeInfo from T on.

use std::borrow::Cow;
use std::collections::HashMap;

use rust_decimal::Decimal;

use super::{ReplayData, ReplayError};
use crate::binance::kind::agg_trade::AggTrade;
use crate::binance::kind::book_ticker::BookTicker;
use crate::binance::kind::Symbol;
use crate::binance::model::Kline;
use crate::constants::{KLINE_STREAM_SUFFIX, MINUTE_MS};

/// The quote asset every clonable symbol ends in.
pub const QUOTE_ASSET: &str = "USDT";

/// One served symbol.
#[derive(Debug, Clone)]
pub struct ServedSymbol {
    /// Symbol name, upper case (`ALGO03USDT`).
    pub name: String,
    /// Stream name (`algo03usdt@kline_1m`).
    pub stream: String,
    /// The name as rows carry it (shared).
    pub symbol: Symbol,
    /// Index of the source series in [`ReplayData`].
    pub source: usize,
    /// Clone number (0 = the file's own symbol).
    pub k: u32,
    /// Price and quote-volume factor of a clone (None for k = 0).
    pub factor: Option<Decimal>,
    /// Does not exist before this time (epoch ms).
    pub listed_ms: Option<i64>,
    /// No klines with open_time at or after this time (epoch ms).
    pub delisted_ms: Option<i64>,
}

impl ServedSymbol {
    /// Does the symbol exist (is it in exchangeInfo, does REST know it) at `now_ms`?
    pub fn exists_at(&self, now_ms: i64) -> bool {
        self.listed_ms.is_none_or(|t| now_ms >= t)
    }

    /// Has it been delisted at `now_ms`?
    pub fn delisted_at(&self, now_ms: i64) -> bool {
        self.delisted_ms.is_some_and(|t| now_ms >= t)
    }

    /// First visible open_time (the listing minute) and first invisible one (delisting).
    pub fn open_range(&self) -> (i64, i64) {
        let lo = self
            .listed_ms
            .map_or(i64::MIN, |t| t.div_euclid(MINUTE_MS) * MINUTE_MS);
        (lo, self.delisted_ms.unwrap_or(i64::MAX))
    }

    /// Is the kline opening at `open_ms` served (REST and stream)?
    pub fn serves_open(&self, open_ms: i64) -> bool {
        let (lo, hi) = self.open_range();
        open_ms >= lo && open_ms < hi
    }

    /// This symbol's view of a source kline (the source itself for k = 0).
    pub fn derive<'a>(&self, k: &'a Kline) -> Cow<'a, Kline> {
        match self.factor {
            None => Cow::Borrowed(k),
            Some(f) => Cow::Owned(clone_kline(k, &self.name, f)),
        }
    }

    /// This symbol's view of a source trade (price × factor for a clone).
    pub fn derive_trade<'a>(&self, t: &'a AggTrade) -> Cow<'a, AggTrade> {
        match self.factor {
            None => Cow::Borrowed(t),
            Some(f) => Cow::Owned(AggTrade {
                symbol: self.symbol.clone(),
                price: t.price * f,
                ..t.clone()
            }),
        }
    }

    /// This symbol's view of a source book ticker (prices × factor for a clone).
    pub fn derive_book<'a>(&self, b: &'a BookTicker) -> Cow<'a, BookTicker> {
        match self.factor {
            None => Cow::Borrowed(b),
            Some(f) => Cow::Owned(BookTicker {
                symbol: self.symbol.clone(),
                best_bid_price: b.best_bid_price * f,
                best_ask_price: b.best_ask_price * f,
                ..b.clone()
            }),
        }
    }

    /// Is a tick at `time_ms` served (after the listing, before the delisting)?
    pub fn serves_time(&self, time_ms: i64) -> bool {
        self.listed_ms.is_none_or(|t| time_ms >= t) && self.delisted_ms.is_none_or(|t| time_ms < t)
    }
}

/// The clone of `k` named `symbol` with prices and quote volumes × `factor` (exact).
pub fn clone_kline(k: &Kline, symbol: &str, factor: Decimal) -> Kline {
    Kline {
        symbol: symbol.to_string(),
        open_time: k.open_time,
        close_time: k.close_time,
        open: k.open * factor,
        high: k.high * factor,
        low: k.low * factor,
        close: k.close * factor,
        volume: k.volume,
        quote_volume: k.quote_volume * factor,
        trades: k.trades,
        taker_buy_volume: k.taker_buy_volume,
        taker_buy_quote_volume: k.taker_buy_quote_volume * factor,
    }
}

/// Name of clone `k` of `symbol` (`ALGOUSDT`, 3 → `ALGO03USDT`).
pub fn clone_name(symbol: &str, k: u32) -> Option<String> {
    let base = symbol.strip_suffix(QUOTE_ASSET)?;
    if k == 0 {
        Some(symbol.to_string())
    } else {
        Some(format!("{base}{k:02}{QUOTE_ASSET}"))
    }
}

/// Served symbols in order (file order; for each file symbol its clones k = 0..N-1).
#[derive(Debug, Default)]
pub struct Catalog {
    symbols: Vec<ServedSymbol>,
    index: HashMap<String, usize>,
}

impl Catalog {
    /// Builds the catalog of `data` with `clones` symbols per file symbol and the given
    /// listing (`list`) and delisting (`delist`) times.
    pub fn build(
        data: &ReplayData,
        clones: u32,
        list: &[(String, i64)],
        delist: &[(String, i64)],
    ) -> Result<Self, ReplayError> {
        let clones = clones.max(1);
        let mut cat = Catalog::default();
        for (source, symbol) in data.symbols().iter().enumerate() {
            for k in 0..clones {
                let name = if clones == 1 {
                    symbol.clone()
                } else {
                    clone_name(symbol, k).ok_or_else(|| {
                        ReplayError::Clone(format!(
                            "{symbol} does not end in {QUOTE_ASSET}; cannot name its clones"
                        ))
                    })?
                };
                if cat.index.contains_key(&name) {
                    return Err(ReplayError::Clone(format!(
                        "clone {name} of {symbol} collides with a served symbol"
                    )));
                }
                cat.index.insert(name.clone(), cat.symbols.len());
                let symbol = Symbol::new(&name).map_err(|e| ReplayError::Clone(e.to_string()))?;
                cat.symbols.push(ServedSymbol {
                    stream: format!("{}{KLINE_STREAM_SUFFIX}", name.to_ascii_lowercase()),
                    symbol,
                    name,
                    source,
                    k,
                    factor: (k > 0).then(|| Decimal::new(1000 + i64::from(k), 3)),
                    listed_ms: None,
                    delisted_ms: None,
                });
            }
        }
        for (flag, entries) in [("list", list), ("delist", delist)] {
            for (sym, t) in entries {
                let Some(&i) = cat.index.get(&sym.to_ascii_uppercase()) else {
                    return Err(ReplayError::Listing(format!(
                        "--{flag} {sym}: not a served symbol"
                    )));
                };
                let s = &mut cat.symbols[i];
                if flag == "list" {
                    s.listed_ms = Some(*t);
                } else {
                    s.delisted_ms = Some(*t);
                }
            }
        }
        Ok(cat)
    }

    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    pub fn symbols(&self) -> &[ServedSymbol] {
        &self.symbols
    }

    pub fn get(&self, i: usize) -> &ServedSymbol {
        &self.symbols[i]
    }

    /// Index of a served symbol (upper case name).
    pub fn find(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }
}

/// Parses `--list` / `--delist` values: `SYM@TIME`, TIME RFC 3339 or epoch milliseconds.
pub fn parse_listing(s: &str) -> Result<(String, i64), ReplayError> {
    let (sym, t) = s
        .split_once('@')
        .ok_or_else(|| ReplayError::Listing(format!("{s:?}: expected SYMBOL@TIME")))?;
    let sym = sym.trim().to_ascii_uppercase();
    if sym.is_empty() {
        return Err(ReplayError::Listing(format!("{s:?}: empty symbol")));
    }
    let t = super::parse_start(t)
        .map_err(|_| ReplayError::Listing(format!("{s:?}: TIME must be RFC 3339 or epoch ms")))?;
    Ok((sym, t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_names_and_factors() {
        assert_eq!(clone_name("ALGOUSDT", 3).unwrap(), "ALGO03USDT");
        assert_eq!(clone_name("ALGOUSDT", 0).unwrap(), "ALGOUSDT");
        assert_eq!(clone_name("ALGOUSDT", 71).unwrap(), "ALGO71USDT");
        assert!(clone_name("ETHBTC", 1).is_none());
        let f = Decimal::new(1003, 3);
        let p: Decimal = "0.1038".parse().unwrap();
        assert_eq!((p * f).to_string(), "0.1041114", "exact, scale + 3");
    }

    #[test]
    fn listing_values() {
        assert_eq!(
            parse_listing("algo03usdt@1634943780000").unwrap(),
            ("ALGO03USDT".to_string(), 1634943780000)
        );
        assert_eq!(
            parse_listing("BTCUSDT@2021-10-22T23:03:00Z").unwrap().1,
            1634943780000
        );
        assert!(parse_listing("BTCUSDT").is_err());
        assert!(parse_listing("@1").is_err());
        assert!(parse_listing("BTCUSDT@soon").is_err());
    }
}
