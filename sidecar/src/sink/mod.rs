//! Database write path.
pub mod copy;

pub use copy::{AlertMode, CandleSink, QualityEvent, RetryingSink, SinkError};
