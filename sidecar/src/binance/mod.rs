//! Binance market data (spot and USD-M): wire model, stream kinds, WebSocket stream client,
//! REST client.
pub mod kind;
pub mod model;
pub mod rest;
pub mod ws;
