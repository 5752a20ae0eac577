//! The one write core every writer uses (klines, aggTrades, book tickers, imports): rows go
//! by binary COPY into a per-connection temporary staging table, then one `INSERT ... SELECT`
//! moves them into the target table inside the caller's transaction.
//!
//! ```text
//! CREATE TEMP TABLE <staging> (LIKE <target>) ON COMMIT DELETE ROWS;   -- once per connection
//! BEGIN;
//!   COPY <staging> (<columns>) FROM STDIN (FORMAT binary);
//!   INSERT INTO <target> SELECT * FROM <staging> ON CONFLICT DO NOTHING;  -- ticks
//!   ... (klines: an upsert that never rewrites an identical row; data-quality rows)
//! COMMIT;
//! ```
//! `ON CONFLICT DO NOTHING` has no conflict target, so it works with either key of
//! `sql/013_ticks.sql` (plain PostgreSQL `(market, symbol, id)`, TimescaleDB `(market,
//! symbol, id, time)`). A `BinaryCopyInWriter` must be `finish()`ed or the COPY aborts.
//! [`RetryingSink::retry`](super::RetryingSink::retry) reconnects and repeats a whole
//! transaction after connection loss, so a batch is written once or not at all.

use std::pin::pin;

use postgres_types::{ToSql, Type};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::{Client, Transaction};

use super::copy::SinkError;
use crate::binance::kind::agg_trade::AggTrade;
use crate::binance::kind::book_ticker::BookTicker;
use crate::binance::model::Kline;
use crate::constants::{AGG_TRADES_TABLE, BOOK_TICKERS_TABLE, CANDLES_TABLE, STAGING_TABLE};

/// Where a row kind is copied to.
#[derive(Debug)]
pub struct CopyTable {
    /// Temporary staging table (per connection).
    pub staging: &'static str,
    /// The `market` table it is inserted into.
    pub target: &'static str,
    /// Columns given to COPY, in [`CopyRow::values`] order.
    pub columns: &'static [&'static str],
    /// Their types.
    pub types: &'static [Type],
}

impl CopyTable {
    /// `COPY <staging> (<columns>) FROM STDIN (FORMAT binary)`.
    pub fn copy_sql(&self) -> String {
        format!(
            "COPY {} ({}) FROM STDIN (FORMAT binary)",
            self.staging,
            self.columns.join(", ")
        )
    }

    /// `INSERT INTO <target> SELECT * FROM <staging> ON CONFLICT DO NOTHING`.
    pub fn insert_new_sql(&self) -> String {
        format!(
            "INSERT INTO {} SELECT * FROM {} ON CONFLICT DO NOTHING",
            self.target, self.staging
        )
    }

    /// `CREATE TEMP TABLE IF NOT EXISTS <staging> (LIKE <target>) ON COMMIT DELETE ROWS`.
    pub fn create_staging_sql(&self) -> String {
        format!(
            "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {}) ON COMMIT DELETE ROWS",
            self.staging, self.target
        )
    }
}

/// A row kind the core can COPY.
pub trait CopyRow: Send + Sync {
    /// Its staging and target tables and COPY columns.
    const TABLE: &'static CopyTable;
    /// The row's values in `TABLE.columns` order; `market` is the instrument's market.
    fn values<'a>(&'a self, market: &'a &'static str, out: &mut Vec<&'a (dyn ToSql + Sync)>);
}

/// Creates the staging table of `T` on this connection (idempotent).
pub async fn ensure_staging(client: &Client, table: &CopyTable) -> Result<(), SinkError> {
    client
        .batch_execute(&table.create_staging_sql())
        .await
        .map_err(SinkError::db("create temp table"))
}

/// COPYs `rows` into the staging table of `R` inside `tx` (binary format).
pub async fn copy_rows<R: CopyRow>(
    tx: &Transaction<'_>,
    rows: &[R],
    market: &'static str,
) -> Result<(), SinkError> {
    let sink = tx
        .copy_in(&R::TABLE.copy_sql())
        .await
        .map_err(SinkError::db("copy in"))?;
    let writer = BinaryCopyInWriter::new(sink, R::TABLE.types);
    let mut writer = pin!(writer);
    let market_ref: &'static str = market;
    let mut values: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(R::TABLE.columns.len());
    for row in rows {
        values.clear();
        row.values(&market_ref, &mut values);
        writer
            .as_mut()
            .write(&values)
            .await
            .map_err(SinkError::db("copy row"))?;
    }
    // A BinaryCopyInWriter must be finished or the COPY aborts.
    writer
        .finish()
        .await
        .map_err(SinkError::db("copy finish"))?;
    Ok(())
}

/// COPYs `rows` and inserts the new ones into the target (`ON CONFLICT DO NOTHING`);
/// returns how many were inserted.
pub async fn insert_new<R: CopyRow>(
    tx: &Transaction<'_>,
    rows: &[R],
    market: &'static str,
) -> Result<u64, SinkError> {
    if rows.is_empty() {
        return Ok(0);
    }
    copy_rows(tx, rows, market).await?;
    tx.execute(&R::TABLE.insert_new_sql(), &[])
        .await
        .map_err(SinkError::db("insert"))
}

// ---- the row kinds ---------------------------------------------------------------------

/// `market.candles_1m` through `candles_in`.
pub static CANDLES: CopyTable = CopyTable {
    staging: STAGING_TABLE,
    target: CANDLES_TABLE,
    columns: &[
        "symbol",
        "open_time",
        "close_time",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "quote_volume",
        "trades",
        "taker_buy_volume",
        "taker_buy_quote_volume",
        "market",
    ],
    types: &[
        Type::TEXT,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
        Type::NUMERIC,
        Type::NUMERIC,
        Type::NUMERIC,
        Type::NUMERIC,
        Type::NUMERIC,
        Type::NUMERIC,
        Type::INT8,
        Type::NUMERIC,
        Type::NUMERIC,
        Type::TEXT,
    ],
};

impl CopyRow for Kline {
    const TABLE: &'static CopyTable = &CANDLES;
    fn values<'a>(&'a self, market: &'a &'static str, out: &mut Vec<&'a (dyn ToSql + Sync)>) {
        out.extend_from_slice(&[
            &self.symbol as &(dyn ToSql + Sync),
            &self.open_time,
            &self.close_time,
            &self.open,
            &self.high,
            &self.low,
            &self.close,
            &self.volume,
            &self.quote_volume,
            &self.trades,
            &self.taker_buy_volume,
            &self.taker_buy_quote_volume,
            market,
        ]);
    }
}

/// `market.agg_trades` through `agg_trades_in`.
pub static AGG_TRADES: CopyTable = CopyTable {
    staging: "agg_trades_in",
    target: AGG_TRADES_TABLE,
    columns: &[
        "market",
        "symbol",
        "agg_trade_id",
        "price",
        "quantity",
        "first_trade_id",
        "last_trade_id",
        "transact_time",
        "is_buyer_maker",
        "is_best_match",
    ],
    types: &[
        Type::TEXT,
        Type::TEXT,
        Type::INT8,
        Type::NUMERIC,
        Type::NUMERIC,
        Type::INT8,
        Type::INT8,
        Type::TIMESTAMPTZ,
        Type::BOOL,
        Type::BOOL,
    ],
};

impl CopyRow for AggTrade {
    const TABLE: &'static CopyTable = &AGG_TRADES;
    fn values<'a>(&'a self, market: &'a &'static str, out: &mut Vec<&'a (dyn ToSql + Sync)>) {
        out.extend_from_slice(&[
            market as &(dyn ToSql + Sync),
            &self.symbol,
            &self.agg_trade_id,
            &self.price,
            &self.quantity,
            &self.first_trade_id,
            &self.last_trade_id,
            &self.transact_time,
            &self.is_buyer_maker,
            &self.is_best_match,
        ]);
    }
}

/// `market.book_tickers` through `book_tickers_in`.
pub static BOOK_TICKERS: CopyTable = CopyTable {
    staging: "book_tickers_in",
    target: BOOK_TICKERS_TABLE,
    columns: &[
        "market",
        "symbol",
        "update_id",
        "best_bid_price",
        "best_bid_qty",
        "best_ask_price",
        "best_ask_qty",
        "transaction_time",
        "event_time",
    ],
    types: &[
        Type::TEXT,
        Type::TEXT,
        Type::INT8,
        Type::NUMERIC,
        Type::NUMERIC,
        Type::NUMERIC,
        Type::NUMERIC,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
    ],
};

impl CopyRow for BookTicker {
    const TABLE: &'static CopyTable = &BOOK_TICKERS;
    fn values<'a>(&'a self, market: &'a &'static str, out: &mut Vec<&'a (dyn ToSql + Sync)>) {
        out.extend_from_slice(&[
            market as &(dyn ToSql + Sync),
            &self.symbol,
            &self.update_id,
            &self.best_bid_price,
            &self.best_bid_qty,
            &self.best_ask_price,
            &self.best_ask_qty,
            &self.transaction_time,
            &self.event_time,
        ]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements() {
        assert_eq!(
            AGG_TRADES.insert_new_sql(),
            "INSERT INTO market.agg_trades SELECT * FROM agg_trades_in ON CONFLICT DO NOTHING"
        );
        assert!(BOOK_TICKERS
            .copy_sql()
            .starts_with("COPY book_tickers_in (market, symbol, update_id, "));
        for t in [&CANDLES, &AGG_TRADES, &BOOK_TICKERS] {
            assert_eq!(t.columns.len(), t.types.len(), "{}", t.target);
        }
        assert_eq!(
            CANDLES.copy_sql(),
            "COPY candles_in (symbol, open_time, close_time, open, high, low, close, volume, \
             quote_volume, trades, taker_buy_volume, taker_buy_quote_volume, market) FROM \
             STDIN (FORMAT binary)"
        );
    }
}
