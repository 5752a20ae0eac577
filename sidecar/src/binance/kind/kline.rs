//! `<symbol>@kline_1m`: closed 1-minute klines. The wire structs and the validated domain
//! [`Kline`] live in [`crate::binance::model`] (every kline source — WebSocket, REST, CSV
//! dumps — goes through `Kline::from_text`); this module names them as a stream kind.
//!
//! Binance docs: <https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams#klinecandlestick-streams-for-utc>

pub use crate::binance::model::{Kline, KlineText, WsKline, WsKlineEvent};
