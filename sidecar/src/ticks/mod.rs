//! The tick path of `ta-feed stream` (aggTrades and book tickers), beside the klines:
//!
//! ```text
//!  sessions (binance::ws, one Handler per kind: intake)
//!     │ push_live, never waits; refused while the buffer is full
//!     ▼
//!  TickQueue (queue: bounded, per kind) ◄── REST pages (fill: aggTrade gaps by id)
//!     │ take
//!     ▼
//!  TickWriter (writer: duplicates, gaps, batches by size/time/barrier) ──► COPY core (sink)
//!     │ committed sequence number
//!     ▼
//!  TickBarrier: the kline writer waits (bounded) for the ticks received before a candle
//! ```
//!
//! Each kind is one writer with its own database connection; the REST filler shares the one
//! REST client (and weight budget) of the stream.

pub mod fill;
pub mod intake;
pub mod latency;
pub mod queue;
pub mod ranges;
pub mod writer;

pub use fill::{run_filler, FillJob};
pub use intake::TickIntake;
pub use queue::TickQueue;
pub use writer::{TickBarrier, TickSummary, TickWriter, TickWriterConfig};

use crate::binance::kind::agg_trade::AggTrade;
use crate::binance::kind::book_ticker::BookTicker;
use crate::binance::kind::{StreamKind, Symbol};
use crate::constants::{AGG_TRADES_TABLE, BOOK_TICKERS_TABLE};
use crate::sink::CopyRow;

/// A tick row kind as the writer sees it.
pub trait TickRow: CopyRow + Send + Sync + 'static {
    const KIND: StreamKind;
    /// Ids are contiguous per symbol (aggTrades): a jump is a gap to fill by id.
    const CONTIGUOUS: bool;
    fn symbol(&self) -> &Symbol;
    /// The exchange id (`a`, `u`).
    fn id(&self) -> i64;
    /// The row's time, epoch ms (`T`, `E`).
    fn time_ms(&self) -> i64;
    /// (table, id column, time column).
    fn stored_columns() -> (&'static str, &'static str, &'static str);
}

impl TickRow for AggTrade {
    const KIND: StreamKind = StreamKind::AggTrade;
    const CONTIGUOUS: bool = true;
    fn symbol(&self) -> &Symbol {
        &self.symbol
    }
    fn id(&self) -> i64 {
        self.agg_trade_id
    }
    fn time_ms(&self) -> i64 {
        AggTrade::time_ms(self)
    }
    fn stored_columns() -> (&'static str, &'static str, &'static str) {
        (AGG_TRADES_TABLE, "agg_trade_id", "transact_time")
    }
}

impl TickRow for BookTicker {
    const KIND: StreamKind = StreamKind::BookTicker;
    const CONTIGUOUS: bool = false;
    fn symbol(&self) -> &Symbol {
        &self.symbol
    }
    fn id(&self) -> i64 {
        self.update_id
    }
    fn time_ms(&self) -> i64 {
        BookTicker::time_ms(self)
    }
    fn stored_columns() -> (&'static str, &'static str, &'static str) {
        (BOOK_TICKERS_TABLE, "update_id", "event_time")
    }
}
