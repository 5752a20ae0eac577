//! Write path into `market.candles_1m`: one transaction per batch (or, for `import`, per file:
//! [`CandleSink::begin`]), binary COPY into the per-connection temp table `candles_in` (the
//! shared core, [`super::core`]), then an idempotent upsert that never rewrites an identical
//! row. Also the tick batches ([`CandleSink::write_ticks`], [`CandleSink::begin_import`]), the
//! `market.data_quality_log` writer, and [`RetryingSink`], which repeats any of them through
//! connection loss.
//!
//! ```text
//! BEGIN;
//!   [SET LOCAL market.evaluate_alerts = 'off';]      -- backfill and import only
//!   COPY candles_in (...) FROM STDIN (FORMAT binary);
//!   INSERT INTO market.candles_1m SELECT * FROM candles_in
//!     ON CONFLICT (market, symbol, open_time) DO UPDATE SET ... = EXCLUDED....
//!     WHERE (candles_1m.close_time, ...) IS DISTINCT FROM (EXCLUDED.close_time, ...);
//!   [INSERT INTO market.data_quality_log ... kind = 'truncated' for written truncated rows]
//! COMMIT;   -- candles_in is ON COMMIT DELETE ROWS
//! ```

use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use postgres_types::ToSql;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_postgres::{Client, Row};
use tracing::{debug, info, warn};

use super::core::{copy_rows, ensure_staging, insert_new, CopyRow, CopyTable};
use crate::backoff::Backoff;
use crate::binance::model::Kline;
use crate::constants::{
    metric, quality_kind, CANDLES_TABLE, CANDLE_VALUE_COLUMNS, DATA_QUALITY_TABLE,
    EVALUATE_ALERTS_SETTING, STAGING_TABLE,
};
use crate::db::redact_database_url;
use crate::market::Market;

/// Database failures.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("database error during {during}: {}", pg_message(source))]
    Db {
        during: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("gave up after retrying for {0:?}")]
    GaveUp(Duration),
    #[error("database: {0}")]
    Connect(#[from] crate::db::DbError),
}

/// A tokio-postgres error with the server's SQLSTATE, message and constraint when there is
/// one (its own Display says only "db error").
pub fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut m = format!("{} {}", db.code().code(), db.message());
            if let Some(c) = db.constraint() {
                m.push_str(&format!(" (constraint {c})"));
            }
            m
        }
        None => e.to_string(),
    }
}

impl SinkError {
    pub(crate) fn db(during: &'static str) -> impl FnOnce(tokio_postgres::Error) -> SinkError {
        move |source| SinkError::Db { during, source }
    }

    /// True for connection loss and transient server states (retry with back-off);
    /// false for errors that the same statement would hit again (schema, constraints).
    pub fn is_retryable(&self) -> bool {
        match self {
            SinkError::GaveUp(_) => false,
            SinkError::Connect(e) => e.is_retryable(),
            SinkError::Db { source, .. } => is_retryable_pg(source),
        }
    }
}

/// Classifies a tokio-postgres error (defined in [`crate::db`], the lower layer).
pub use crate::db::is_retryable_pg;

/// Whether the database evaluates alert rules for this write (`market.evaluate_alerts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertMode {
    /// Live stream: default setting (on).
    Evaluate,
    /// Backfill and import: `SET LOCAL market.evaluate_alerts = 'off'`.
    Suppress,
}

/// One row for `market.data_quality_log`.
#[derive(Debug, Clone, PartialEq)]
pub struct QualityEvent {
    pub symbol: Option<String>,
    /// One of [`quality_kind`].
    pub kind: &'static str,
    pub from_time: Option<DateTime<Utc>>,
    pub to_time: Option<DateTime<Utc>>,
    pub rows: Option<i64>,
    pub detail: serde_json::Value,
}

/// Connects (with TLS as `sslmode` says: [`crate::db::connect`]) and drives the connection
/// on a task.
pub async fn connect(database_url: &str) -> Result<(Client, JoinHandle<()>), SinkError> {
    Ok(crate::db::connect(database_url).await?)
}

fn upsert_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        let set = CANDLE_VALUE_COLUMNS
            .iter()
            .map(|c| format!("{c} = EXCLUDED.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let old = CANDLE_VALUE_COLUMNS
            .iter()
            .map(|c| format!("candles_1m.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let new = CANDLE_VALUE_COLUMNS
            .iter()
            .map(|c| format!("EXCLUDED.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "INSERT INTO {CANDLES_TABLE} SELECT * FROM {STAGING_TABLE} \
             ON CONFLICT (market, symbol, open_time) DO UPDATE SET {set} \
             WHERE ({old}) IS DISTINCT FROM ({new})"
        )
    })
}

/// A connection that writes candle batches and data-quality events.
pub struct CandleSink {
    client: Client,
    connection: JoinHandle<()>,
    /// Staging tables created on this connection.
    staging: HashSet<&'static str>,
    market: Market,
}

impl Drop for CandleSink {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl CandleSink {
    pub async fn connect(database_url: &str) -> Result<Self, SinkError> {
        let (client, connection) = connect(database_url).await?;
        Ok(CandleSink {
            client,
            connection,
            staging: HashSet::new(),
            market: Market::Spot,
        })
    }

    /// The market every row and event of this sink is written for (default spot).
    pub fn with_market(mut self, market: Market) -> Self {
        self.market = market;
        self
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Newest stored open_time of (the sink's market, `symbol`).
    pub async fn last_open_time(&self, symbol: &str) -> Result<Option<DateTime<Utc>>, SinkError> {
        let row = self
            .client
            .query_one(
                &format!(
                    "SELECT max(open_time) FROM {CANDLES_TABLE} WHERE market = $1 AND symbol = $2"
                ),
                &[&self.market.as_str(), &symbol],
            )
            .await
            .map_err(SinkError::db("select max(open_time)"))?;
        Ok(row.get(0))
    }

    /// The market of this sink's rows.
    pub fn market(&self) -> Market {
        self.market
    }

    async fn ensure_staging(&mut self, table: &'static CopyTable) -> Result<(), SinkError> {
        if !self.staging.contains(table.staging) {
            ensure_staging(&self.client, table).await?;
            self.staging.insert(table.staging);
        }
        Ok(())
    }

    /// Writes one batch in one transaction and returns how many rows were inserted or
    /// changed (identical rows are not rewritten). Truncated klines that were written are
    /// logged as `truncated` in the same transaction.
    pub async fn write_batch(
        &mut self,
        klines: &[Kline],
        mode: AlertMode,
    ) -> Result<u64, SinkError> {
        if klines.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin(mode).await?;
        let written = tx.write(klines).await?;
        tx.commit().await?;
        Ok(written)
    }

    /// Opens one transaction for several batches ([`CandleTransaction::write`]): `import`
    /// writes a whole file in one, so a file is stored entirely or not at all.
    pub async fn begin(&mut self, mode: AlertMode) -> Result<CandleTransaction<'_>, SinkError> {
        self.ensure_staging(Kline::TABLE).await?;
        let market = self.market;
        let tx = self
            .client
            .transaction()
            .await
            .map_err(SinkError::db("begin"))?;
        Ok(CandleTransaction {
            tx,
            market,
            mode,
            batches: 0,
            written: 0,
        })
    }

    /// Copies `klines` into the staging table and upserts them, inside `tx`.
    async fn write_in(
        tx: &tokio_postgres::Transaction<'_>,
        klines: &[Kline],
        mode: AlertMode,
        market: Market,
    ) -> Result<u64, SinkError> {
        let market_name: &str = market.as_str();
        if mode == AlertMode::Suppress {
            tx.batch_execute(&format!("SET LOCAL {EVALUATE_ALERTS_SETTING} = 'off'"))
                .await
                .map_err(SinkError::db("set evaluate_alerts"))?;
        }
        copy_rows(tx, klines, market_name).await?;

        let truncated: Vec<&Kline> = klines.iter().filter(|k| k.is_truncated()).collect();
        let written = if truncated.is_empty() {
            tx.execute(upsert_sql(), &[])
                .await
                .map_err(SinkError::db("upsert"))?
        } else {
            let rows = tx
                .query(
                    &format!("{} RETURNING symbol, open_time", upsert_sql()),
                    &[],
                )
                .await
                .map_err(SinkError::db("upsert"))?;
            let changed: HashSet<(String, DateTime<Utc>)> =
                rows.iter().map(|r| (r.get(0), r.get(1))).collect();
            for k in truncated {
                if changed.contains(&(k.symbol.clone(), k.open_time)) {
                    let ev = QualityEvent {
                        symbol: Some(k.symbol.clone()),
                        kind: quality_kind::TRUNCATED,
                        from_time: Some(k.open_time),
                        to_time: Some(k.close_time),
                        rows: Some(1),
                        detail: serde_json::json!({
                            "open_time_ms": k.open_time_ms(),
                            "close_time_ms": k.close_time_ms(),
                            "expected_close_time_ms": k.open_time_ms() + crate::constants::KLINE_CLOSE_OFFSET_MS,
                            "alerts": mode == AlertMode::Evaluate,
                        }),
                    };
                    insert_quality(tx, &ev, market).await?;
                    warn!(symbol = %k.symbol, open_time = %k.open_time, close_time = %k.close_time, "stored truncated kline");
                }
            }
            rows.len() as u64
        };
        Ok(written)
    }

    /// Writes one batch of ticks (aggTrades or book tickers) and `events` in one transaction:
    /// COPY, then `INSERT ... ON CONFLICT DO NOTHING`; returns how many rows were new.
    pub async fn write_ticks<R: CopyRow>(
        &mut self,
        rows: &[R],
        events: &[QualityEvent],
    ) -> Result<u64, SinkError> {
        if rows.is_empty() && events.is_empty() {
            return Ok(0);
        }
        let market = self.market;
        self.ensure_staging(R::TABLE).await?;
        let tx = self
            .client
            .transaction()
            .await
            .map_err(SinkError::db("begin"))?;
        let written = insert_new(&tx, rows, market.as_str()).await?;
        for ev in events {
            insert_quality(&tx, ev, market).await?;
        }
        tx.commit().await.map_err(SinkError::db("commit"))?;
        Ok(written)
    }

    /// A read-only query (`during` names it in errors).
    pub async fn query(
        &mut self,
        during: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, SinkError> {
        self.client
            .query(sql, params)
            .await
            .map_err(SinkError::db(during))
    }

    /// Begins a transaction that imports tick batches of one file ([`TickImport`]).
    pub async fn begin_import(
        &mut self,
        _kind: crate::binance::kind::StreamKind,
    ) -> Result<TickImport<'_>, SinkError> {
        self.ensure_staging(&super::core::AGG_TRADES).await?;
        self.ensure_staging(&super::core::BOOK_TICKERS).await?;
        let market = self.market.as_str();
        let tx = self
            .client
            .transaction()
            .await
            .map_err(SinkError::db("begin"))?;
        Ok(TickImport { tx, market })
    }

    /// Inserts data-quality events in one transaction.
    pub async fn log_quality(&mut self, events: &[QualityEvent]) -> Result<(), SinkError> {
        if events.is_empty() {
            return Ok(());
        }
        let tx = self
            .client
            .transaction()
            .await
            .map_err(SinkError::db("begin"))?;
        for ev in events {
            insert_quality(&tx, ev, self.market).await?;
        }
        tx.commit().await.map_err(SinkError::db("commit"))?;
        Ok(())
    }
}

/// One file's import of ticks: batches are copied and inserted (`ON CONFLICT DO NOTHING`)
/// inside one transaction, so a failed file leaves nothing behind.
pub struct TickImport<'a> {
    tx: tokio_postgres::Transaction<'a>,
    market: &'static str,
}

impl TickImport<'_> {
    /// Copies and inserts one batch; returns how many rows were new.
    pub async fn add<R: CopyRow>(&mut self, rows: &[R]) -> Result<u64, SinkError> {
        let n = insert_new(&self.tx, rows, self.market).await?;
        // the staging table empties at commit only: empty it for the next batch
        self.tx
            .batch_execute(&format!("TRUNCATE {}", R::TABLE.staging))
            .await
            .map_err(SinkError::db("truncate staging"))?;
        Ok(n)
    }

    pub async fn commit(self) -> Result<(), SinkError> {
        self.tx.commit().await.map_err(SinkError::db("commit"))
    }
}

/// An open transaction of a [`CandleSink`] into which several batches are written; nothing
/// is stored unless [`CandleTransaction::commit`] succeeds (dropped: rolled back).
pub struct CandleTransaction<'a> {
    tx: tokio_postgres::Transaction<'a>,
    market: Market,
    mode: AlertMode,
    batches: u64,
    written: u64,
}

impl CandleTransaction<'_> {
    /// Writes one batch (COPY into the staging table, then the upsert) and returns how many
    /// rows it inserted or changed.
    pub async fn write(&mut self, klines: &[Kline]) -> Result<u64, SinkError> {
        if klines.is_empty() {
            return Ok(0);
        }
        if self.batches > 0 {
            // the staging table empties at commit only: the previous batch is still in it
            self.tx
                .batch_execute(&format!("TRUNCATE {STAGING_TABLE}"))
                .await
                .map_err(SinkError::db("truncate staging"))?;
        }
        self.batches += 1;
        let written = CandleSink::write_in(&self.tx, klines, self.mode, self.market).await?;
        self.written += written;
        Ok(written)
    }

    /// Commits every batch written; returns the rows they inserted or changed.
    pub async fn commit(self) -> Result<u64, SinkError> {
        self.tx.commit().await.map_err(SinkError::db("commit"))?;
        metrics::counter!(metric::KLINES_WRITTEN).increment(self.written);
        Ok(self.written)
    }

    /// Discards every batch written.
    pub async fn rollback(self) -> Result<(), SinkError> {
        self.tx.rollback().await.map_err(SinkError::db("rollback"))
    }
}

async fn insert_quality(
    tx: &tokio_postgres::Transaction<'_>,
    ev: &QualityEvent,
    market: Market,
) -> Result<(), SinkError> {
    let detail = ev.detail.to_string();
    tx.execute(
        &format!(
            "INSERT INTO {DATA_QUALITY_TABLE} \
             (symbol, kind, from_time, to_time, rows, detail, market) \
             VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7)"
        ),
        &[
            &ev.symbol,
            &ev.kind,
            &ev.from_time,
            &ev.to_time,
            &ev.rows,
            &detail,
            &market.as_str(),
        ],
    )
    .await
    .map_err(SinkError::db("insert data_quality_log"))?;
    debug!(kind = ev.kind, symbol = ?ev.symbol, "logged data-quality event");
    Ok(())
}

/// The retry loop of [`RetryingSink`]: runs `$op` (one transaction, or read-only) on a
/// connected sink; after a retryable failure drops the connection, waits (back-off) and runs
/// it again; returns its value, a non-retryable error, or `GaveUp` after `$give_up`.
macro_rules! retrying {
    ($self:ident, $give_up:expr, |$s:ident| $op:expr) => {{
        let started = Instant::now();
        let give_up: Option<Duration> = $give_up;
        loop {
            let $s = $self.connected(started, give_up).await?;
            match $op.await {
                Ok(v) => {
                    $self.backoff.reset();
                    break Ok(v);
                }
                Err(e) => $self.on_error(e, started, give_up).await?,
            }
        }
    }};
}

/// A [`CandleSink`] that reconnects with back-off on connection loss and retries the same
/// batch, so buffered closed klines are never dropped because the database went away.
pub struct RetryingSink {
    database_url: String,
    sink: Option<CandleSink>,
    backoff: Backoff,
    market: Market,
}

impl RetryingSink {
    pub fn new(database_url: impl Into<String>, backoff: Backoff) -> Self {
        RetryingSink {
            database_url: database_url.into(),
            sink: None,
            backoff,
            market: Market::Spot,
        }
    }

    /// The market every row and event is written for (default spot).
    pub fn with_market(mut self, market: Market) -> Self {
        self.market = market;
        self
    }

    /// Drops the current connection (e.g. after an abandoned transaction).
    pub fn reset_connection(&mut self) {
        self.sink = None;
    }

    /// A connected sink, (re)connecting with back-off.
    async fn connected(
        &mut self,
        started: Instant,
        give_up_after: Option<Duration>,
    ) -> Result<&mut CandleSink, SinkError> {
        loop {
            if self.sink.as_ref().is_some_and(|s| !s.is_closed()) {
                break;
            }
            self.sink = None;
            match CandleSink::connect(&self.database_url).await {
                Ok(s) => {
                    let s = s.with_market(self.market);
                    info!(database = %redact_database_url(&self.database_url), "connected to database");
                    self.sink = Some(s);
                }
                Err(e) if e.is_retryable() => self.pause(&e, started, give_up_after).await?,
                Err(e) => return Err(e),
            }
        }
        Ok(self.sink.as_mut().expect("connected"))
    }

    /// After a failed operation: non-retryable errors are returned, retryable ones drop
    /// the connection and wait.
    async fn on_error(
        &mut self,
        error: SinkError,
        started: Instant,
        give_up_after: Option<Duration>,
    ) -> Result<(), SinkError> {
        if !error.is_retryable() {
            return Err(error);
        }
        self.sink = None;
        self.pause(&error, started, give_up_after).await
    }

    async fn pause(
        &mut self,
        error: &SinkError,
        started: Instant,
        give_up_after: Option<Duration>,
    ) -> Result<(), SinkError> {
        if let Some(limit) = give_up_after {
            if started.elapsed() >= limit {
                return Err(SinkError::GaveUp(limit));
            }
        }
        metrics::counter!(metric::DB_RETRIES).increment(1);
        let delay = self.backoff.next_delay();
        warn!(%error, ?delay, "database unavailable, retrying");
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// [`CandleSink::write_batch`], retried through connection loss until it succeeds, a
    /// non-retryable error occurs or `give_up_after` passes.
    pub async fn write_batch(
        &mut self,
        klines: &[Kline],
        mode: AlertMode,
        give_up_after: Option<Duration>,
    ) -> Result<u64, SinkError> {
        retrying!(self, give_up_after, |s| s.write_batch(klines, mode))
    }

    /// [`CandleSink::write_ticks`], retried through connection loss.
    pub async fn write_ticks<R: CopyRow>(
        &mut self,
        rows: &[R],
        events: &[QualityEvent],
        give_up_after: Option<Duration>,
    ) -> Result<u64, SinkError> {
        retrying!(self, give_up_after, |s| s.write_ticks(rows, events))
    }

    /// [`CandleSink::log_quality`] with retries.
    pub async fn log_quality(
        &mut self,
        events: &[QualityEvent],
        give_up_after: Option<Duration>,
    ) -> Result<(), SinkError> {
        retrying!(self, give_up_after, |s| s.log_quality(events))
    }

    /// [`CandleSink::last_open_time`] with retries.
    pub async fn last_open_time(
        &mut self,
        symbol: &str,
        give_up_after: Option<Duration>,
    ) -> Result<Option<DateTime<Utc>>, SinkError> {
        retrying!(self, give_up_after, |s| s.last_open_time(symbol))
    }

    /// A read-only query, retried through connection loss (`during` names it in errors).
    pub async fn query(
        &mut self,
        during: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, SinkError> {
        retrying!(self, None, |s| s.query(during, sql, params))
    }

    /// The market of this sink's rows.
    pub fn market(&self) -> Market {
        self.market
    }
}
