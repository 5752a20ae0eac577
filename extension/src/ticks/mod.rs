//! Tick aggregates, free of PostgreSQL: the minute of a trade stream as a Binance kline
//! ([`kline`]) and the minute of a best bid/ask stream as book features ([`book`]).
//!
//! Both are order-independent functions of the *set* of rows they are given (the SQL wrappers
//! can then offer combine functions, run in parallel plans and in TimescaleDB continuous
//! aggregates, and give the same answer however the rows arrive).

pub mod book;
pub mod kline;

pub use book::{BookMinute, BookState, Quote};
pub use kline::{Decimal, Kline, KlineState, Trade};
