//! The Binance markets ta-feed speaks, and everything that differs between them: base URLs,
//! REST paths, `limit` bounds, request weights and the WebSocket route.
//!
//! An instrument is (market, symbol): BTCUSDT spot and the BTCUSDT USD-M perpetual are
//! different rows of `market.candles_1m` (`market` column, values [`Market::as_str`]).
//!
//! Sources (checked 2026): Binance Spot API "Kline/Candlestick data" (`GET /api/v3/klines`,
//! weight 2, limit ≤ 1000, REQUEST_WEIGHT 6000/min); USDⓈ-M Futures "Kline/Candlestick Data"
//! (`GET /fapi/v1/klines`, weight 1/2/5/10 for limit <100/<500/≤1000/>1000, limit ≤ 1500,
//! REQUEST_WEIGHT 2400/min) and "Exchange Information" (`GET /fapi/v1/exchangeInfo`, weight 1);
//! "Compressed/Aggregate Trades List" (`GET /api/v3/aggTrades` weight 4, `GET /fapi/v1/aggTrades`
//! weight 20; `limit` ≤ 1000, default 500);
//! USDⓈ-M WebSocket market streams are served only under `/market` since 2026-04-23.

use std::fmt;
use std::str::FromStr;

/// A Binance market. `clap` parses `spot` / `usdm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, clap::ValueEnum)]
pub enum Market {
    /// Binance spot (`api.binance.com`, `stream.binance.com`).
    #[default]
    Spot,
    /// Binance USDⓈ-M futures (`fapi.binance.com`, `fstream.binance.com`).
    Usdm,
}

impl Market {
    /// Every market, in `market.candles_1m.market` order of the CHECK constraint.
    pub const ALL: [Market; 2] = [Market::Spot, Market::Usdm];

    /// The value stored in the `market` column (`'spot'`, `'usdm'`).
    pub fn as_str(self) -> &'static str {
        match self {
            Market::Spot => "spot",
            Market::Usdm => "usdm",
        }
    }

    /// Default REST base URL.
    pub fn default_rest_url(self) -> &'static str {
        match self {
            Market::Spot => "https://api.binance.com",
            Market::Usdm => "https://fapi.binance.com",
        }
    }

    /// Default WebSocket base URL (the route, [`Market::ws_combined_path`], is appended).
    pub fn default_ws_url(self) -> &'static str {
        match self {
            Market::Spot => "wss://stream.binance.com:9443",
            Market::Usdm => "wss://fstream.binance.com",
        }
    }

    /// Path of combined streams (`?streams=a/b/...`). USD-M kline streams are served only
    /// under the `/market` route; a legacy `/stream` connection opens but never delivers.
    pub fn ws_combined_path(self) -> &'static str {
        match self {
            Market::Spot => "/stream",
            Market::Usdm => "/market/stream",
        }
    }

    /// Path of raw single streams (`/ws/<stream>`).
    pub fn ws_raw_path(self) -> &'static str {
        match self {
            Market::Spot => "/ws",
            Market::Usdm => "/market/ws",
        }
    }

    /// REST path of the server time endpoint.
    pub fn rest_time_path(self) -> &'static str {
        match self {
            Market::Spot => "/api/v3/time",
            Market::Usdm => "/fapi/v1/time",
        }
    }

    /// REST path of the klines endpoint.
    pub fn rest_klines_path(self) -> &'static str {
        match self {
            Market::Spot => "/api/v3/klines",
            Market::Usdm => "/fapi/v1/klines",
        }
    }

    /// REST path of the exchange information endpoint.
    pub fn rest_exchange_info_path(self) -> &'static str {
        match self {
            Market::Spot => "/api/v3/exchangeInfo",
            Market::Usdm => "/fapi/v1/exchangeInfo",
        }
    }

    /// REST path of the aggregate trades endpoint.
    pub fn rest_agg_trades_path(self) -> &'static str {
        match self {
            Market::Spot => "/api/v3/aggTrades",
            Market::Usdm => "/fapi/v1/aggTrades",
        }
    }

    /// Largest `limit` of the aggTrades endpoint (both markets: 1000; default 500).
    pub fn agg_trades_max_limit(self) -> u32 {
        1000
    }

    /// Request weight of one aggTrades request (spot 4, USD-M 20, any limit).
    pub fn agg_trades_weight(self) -> u32 {
        match self {
            Market::Spot => 4,
            Market::Usdm => 20,
        }
    }

    /// Largest `limit` the klines endpoint accepts.
    pub fn klines_max_limit(self) -> u32 {
        match self {
            Market::Spot => 1000,
            Market::Usdm => 1500,
        }
    }

    /// `limit` the klines endpoint uses when the parameter is absent.
    pub fn klines_default_limit(self) -> u32 {
        500
    }

    /// Request weight of one klines request with this `limit` (absent = default limit).
    pub fn klines_weight(self, limit: u32) -> u32 {
        match self {
            Market::Spot => 2,
            Market::Usdm => match limit {
                0..=99 => 1,
                100..=499 => 2,
                500..=1000 => 5,
                _ => 10,
            },
        }
    }

    /// Request weight of the time endpoint.
    pub fn time_weight(self) -> u32 {
        1
    }

    /// Request weight of the exchange information endpoint.
    pub fn exchange_info_weight(self) -> u32 {
        match self {
            Market::Spot => 20,
            Market::Usdm => 1,
        }
    }

    /// REQUEST_WEIGHT limit per minute per IP.
    pub fn weight_limit_1m(self) -> u32 {
        match self {
            Market::Spot => 6000,
            Market::Usdm => 2400,
        }
    }
}

impl Market {
    /// Whether `ta-feed --symbols all` streams this `exchangeInfo` entry. USD-M: perpetual
    /// USDT-margined USDT contracts that trade now (`contractType = PERPETUAL`, `status =
    /// TRADING`, `quoteAsset = USDT`, `marginAsset = USDT`; not `TRADIFI_PERPETUAL`,
    /// quarterlies, `SETTLING`, `PENDING_TRADING`). Spot: `status = TRADING` and `quoteAsset =
    /// USDT`.
    pub fn is_in_universe(self, s: &crate::binance::model::SymbolInfo) -> bool {
        let trading = s.status == "TRADING" && s.quote_asset == "USDT";
        match self {
            Market::Spot => trading,
            Market::Usdm => {
                trading
                    && s.contract_type.as_deref() == Some("PERPETUAL")
                    && s.margin_asset.as_deref() == Some("USDT")
            }
        }
    }

    /// The symbols of `info` that [`Market::is_in_universe`] keeps, minus `exclude`
    /// (upper case), sorted and deduplicated.
    pub fn universe(
        self,
        info: &crate::binance::model::ExchangeInfo,
        exclude: &[String],
    ) -> Vec<String> {
        let mut out: Vec<String> = info
            .symbols
            .iter()
            .filter(|s| self.is_in_universe(s))
            .map(|s| s.symbol.to_ascii_uppercase())
            .filter(|s| !exclude.iter().any(|e| e.eq_ignore_ascii_case(s)))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Page size of REST backfill: the largest `limit` with the smallest weight per candle
    /// (spot: 1000 at weight 2; USD-M: 499 at weight 2, i.e. 3 requests = weight 6 per day
    /// instead of 10 for one `limit=1440` request).
    pub fn klines_page_limit(self) -> u32 {
        match self {
            Market::Spot => 1000,
            Market::Usdm => 499,
        }
    }

    /// Default `--rest-weight-soft-limit`: 5/6 of the exchange's per-minute limit.
    pub fn default_weight_soft_limit(self) -> u32 {
        self.weight_limit_1m() * 5 / 6
    }
}

impl fmt::Display for Market {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error of [`Market::from_str`].
#[derive(Debug, thiserror::Error)]
#[error("unknown market {0:?} (expected spot or usdm)")]
pub struct UnknownMarket(pub String);

impl FromStr for Market {
    type Err = UnknownMarket;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "spot" => Ok(Market::Spot),
            "usdm" => Ok(Market::Usdm),
            _ => Err(UnknownMarket(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for m in Market::ALL {
            assert_eq!(m.as_str().parse::<Market>().unwrap(), m);
            assert_eq!(m.to_string(), m.as_str());
        }
        assert!("coinm".parse::<Market>().is_err());
    }

    #[test]
    fn usdm_klines_weights_follow_binance() {
        let m = Market::Usdm;
        assert_eq!(m.klines_weight(99), 1);
        assert_eq!(m.klines_weight(100), 2);
        assert_eq!(m.klines_weight(499), 2);
        assert_eq!(m.klines_weight(500), 5);
        assert_eq!(m.klines_weight(1000), 5);
        assert_eq!(m.klines_weight(1001), 10);
        assert_eq!(m.klines_weight(1500), 10);
        assert_eq!(Market::Spot.klines_weight(1000), 2);
        assert_eq!(m.klines_weight(m.klines_page_limit()), 2);
        assert_eq!(m.default_weight_soft_limit(), 2000);
    }

    #[test]
    fn universe_filter() {
        use crate::binance::model::ExchangeInfo;
        let info: ExchangeInfo = serde_json::from_str(
            r#"{"symbols":[
            {"symbol":"BTCUSDT","status":"TRADING","quoteAsset":"USDT","marginAsset":"USDT","contractType":"PERPETUAL"},
            {"symbol":"ETHUSDT_260327","status":"TRADING","quoteAsset":"USDT","marginAsset":"USDT","contractType":"CURRENT_QUARTER"},
            {"symbol":"XAUUSDT","status":"TRADING","quoteAsset":"USDT","marginAsset":"USDT","contractType":"TRADIFI_PERPETUAL"},
            {"symbol":"OLDUSDT","status":"SETTLING","quoteAsset":"USDT","marginAsset":"USDT","contractType":"PERPETUAL"},
            {"symbol":"NEWUSDT","status":"PENDING_TRADING","quoteAsset":"USDT","marginAsset":"USDT","contractType":"PERPETUAL"},
            {"symbol":"BTCUSDC","status":"TRADING","quoteAsset":"USDC","marginAsset":"USDC","contractType":"PERPETUAL"},
            {"symbol":"BTCBUSD","status":"TRADING","quoteAsset":"USDT","marginAsset":"BUSD","contractType":"PERPETUAL"},
            {"symbol":"ETHUSDT","status":"TRADING","quoteAsset":"USDT","marginAsset":"USDT","contractType":"PERPETUAL","extra":1}
            ]}"#,
        )
        .unwrap();
        assert_eq!(
            Market::Usdm.universe(&info, &[]),
            vec!["BTCUSDT", "ETHUSDT"]
        );
        assert_eq!(
            Market::Usdm.universe(&info, &["ethusdt".into()]),
            vec!["BTCUSDT"]
        );
        assert_eq!(Market::Spot.universe(&info, &[]).len(), 5);
    }
}
