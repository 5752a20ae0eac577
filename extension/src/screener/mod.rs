//! The screener of pg_ta 0.2.0: one engine, used three ways by the SQL surface (the window
//! aggregate `ta._screener_state`, the public aggregate `ta.screener`, and the per-session
//! cache `ta._screener_cache_*`; see `pg::screener`).
//!
//! - [`engine`]: [`Engine`], the candles of one instrument in, the screener row
//!   ([`ScreenerRow`]), the chain state ([`Checkpoint`]) and the UTC-day checkpoints out.
//! - [`windows`]: [`SlidingWindows`], the high/low/open/volume windows of the last candles.
//! - [`pgfloat`]: PostgreSQL's float8 operators, so results equal pg_ta 0.1.0's SQL bit for bit.
//!
//! Plain Rust: no pgrx; tested by `cargo test` against a naive scan of every metric.

pub mod engine;
pub mod pgfloat;
pub mod windows;

#[cfg(test)]
mod tests;

pub use engine::{
    Candle, Checkpoint, Engine, EngineError, ScreenerRow, Volume, WindowMetrics, MACD_ARRAY_LEN,
    RSI_ARRAY_LEN,
};
pub use pgfloat::FloatError;
pub use windows::{SlidingWindows, HISTORY, WINDOWS};
