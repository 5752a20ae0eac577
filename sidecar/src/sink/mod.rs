//! Database write path.
pub mod copy;

pub use copy::{AlertMode, CandleSink, CandleTransaction, QualityEvent, RetryingSink, SinkError};
