//! Binance spot market data: wire model, WebSocket stream client, REST client.
pub mod model;
pub mod rest;
pub mod ws;
