//! Screener rule helpers, free of PostgreSQL.
//!
//! Rules are boolean expressions over the columns of a screener metrics row
//! (`market.screener_row` in the data schema). [`expr`] validates an expression and compiles
//! it to SQL that is safe to evaluate inside the trigger that writes candles.

pub mod expr;
