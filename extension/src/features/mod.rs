//! Feature rows for models and rules (feature set version [`FEATURE_VERSION`]), free of
//! PostgreSQL.
//!
//! - [`exact`]: [`ExactSum`], Python's `math.fsum` as a running state (values in and out).
//! - [`engine`]: [`FeatureEngine`], the screener engine plus the rolling state of every feature:
//!   the 1m candles of one instrument (and the book features of each minute) in, one
//!   [`FeatureRow`] per candle out.
//!
//! Every feature is either the screener chain's (RSI, MACD: carried in the day checkpoints) or
//! an exact function of the values in a window of at most [`HISTORY`] candles (sums kept as
//! exact expansions, maxima compared exactly), so a row does not depend on where the
//! computation started: live, from a day checkpoint, or in a database truncated after it.

pub mod engine;
pub mod exact;

#[cfg(test)]
mod tests;

pub use engine::{
    column_names, BookInput, Extra, FeatureEngine, FeatureRow, NoVolume, BASE_COLUMNS,
    FEATURE_VERSION, HISTORY, N_BASE, N_FEATURES, Z_OF, Z_WINDOW,
};
pub use exact::{fsum, ExactSum};
