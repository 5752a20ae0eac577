//! Database write path: the shared COPY core ([`core`]) and the sinks built on it
//! ([`copy`]).
pub mod copy;
pub mod core;

pub use copy::{AlertMode, CandleSink, CandleTransaction, QualityEvent, RetryingSink, SinkError};
pub use core::CopyRow;
