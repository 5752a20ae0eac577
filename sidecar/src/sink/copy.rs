//! Write path into `market.candles_1m`: one transaction per batch (or, for `import`, per file:
//! [`CandleSink::begin`]), binary COPY into the per-connection temp table `candles_in`, then an
//! idempotent upsert that never rewrites an identical row. Also the `market.data_quality_log`
//! writer.
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
use std::error::Error as _;
use std::pin::pin;
use std::sync::OnceLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use postgres_types::{ToSql, Type};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::binance::model::Kline;
use crate::config::redact_database_url;
use crate::constants::{
    metric, quality_kind, CANDLES_TABLE, CANDLE_VALUE_COLUMNS, DATA_QUALITY_TABLE,
    EVALUATE_ALERTS_SETTING, STAGING_TABLE,
};
use crate::market::Market;

/// Database failures.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("database error during {during}: {source}")]
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

impl SinkError {
    fn db(during: &'static str) -> impl FnOnce(tokio_postgres::Error) -> SinkError {
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

/// Classifies a tokio-postgres error.
pub fn is_retryable_pg(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        // No SQLSTATE: I/O, connect refused, timeouts.
        None => e.source().is_some_and(|s| s.is::<std::io::Error>()) || e.source().is_none(),
        Some(code) => {
            let c = code.code();
            c.starts_with("08") // connection exception
                || c.starts_with("53") // insufficient resources
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
                || *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED
                || *code == SqlState::LOCK_NOT_AVAILABLE
        }
    }
}

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

fn copy_sql() -> String {
    format!(
        "COPY {STAGING_TABLE} (symbol, open_time, {}, market) FROM STDIN (FORMAT binary)",
        CANDLE_VALUE_COLUMNS.join(", ")
    )
}

const COPY_TYPES: [Type; 13] = [
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
];

/// A connection that writes candle batches and data-quality events.
pub struct CandleSink {
    client: Client,
    connection: JoinHandle<()>,
    staging_ready: bool,
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
            staging_ready: false,
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

    async fn ensure_staging(&mut self) -> Result<(), SinkError> {
        if !self.staging_ready {
            self.client
                .batch_execute(&format!(
                    "CREATE TEMP TABLE IF NOT EXISTS {STAGING_TABLE} (LIKE {CANDLES_TABLE}) \
                     ON COMMIT DELETE ROWS"
                ))
                .await
                .map_err(SinkError::db("create temp table"))?;
            self.staging_ready = true;
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
        self.ensure_staging().await?;
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
        let sink = tx
            .copy_in(&copy_sql())
            .await
            .map_err(SinkError::db("copy in"))?;
        let writer = BinaryCopyInWriter::new(sink, &COPY_TYPES);
        let mut writer = pin!(writer);
        for k in klines {
            let row: [&(dyn ToSql + Sync); 13] = [
                &k.symbol,
                &k.open_time,
                &k.close_time,
                &k.open,
                &k.high,
                &k.low,
                &k.close,
                &k.volume,
                &k.quote_volume,
                &k.trades,
                &k.taker_buy_volume,
                &k.taker_buy_quote_volume,
                &market_name,
            ];
            writer
                .as_mut()
                .write(&row)
                .await
                .map_err(SinkError::db("copy row"))?;
        }
        // A BinaryCopyInWriter must be finished or the COPY aborts.
        writer
            .finish()
            .await
            .map_err(SinkError::db("copy finish"))?;

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
        let started = Instant::now();
        loop {
            let sink = self.connected(started, give_up_after).await?;
            match sink.write_batch(klines, mode).await {
                Ok(v) => {
                    self.backoff.reset();
                    return Ok(v);
                }
                Err(e) => self.on_error(e, started, give_up_after).await?,
            }
        }
    }

    /// [`CandleSink::log_quality`] with retries.
    pub async fn log_quality(
        &mut self,
        events: &[QualityEvent],
        give_up_after: Option<Duration>,
    ) -> Result<(), SinkError> {
        let started = Instant::now();
        loop {
            let sink = self.connected(started, give_up_after).await?;
            match sink.log_quality(events).await {
                Ok(v) => {
                    self.backoff.reset();
                    return Ok(v);
                }
                Err(e) => self.on_error(e, started, give_up_after).await?,
            }
        }
    }

    /// [`CandleSink::last_open_time`] with retries.
    pub async fn last_open_time(
        &mut self,
        symbol: &str,
        give_up_after: Option<Duration>,
    ) -> Result<Option<DateTime<Utc>>, SinkError> {
        let started = Instant::now();
        loop {
            let sink = self.connected(started, give_up_after).await?;
            match sink.last_open_time(symbol).await {
                Ok(v) => {
                    self.backoff.reset();
                    return Ok(v);
                }
                Err(e) => self.on_error(e, started, give_up_after).await?,
            }
        }
    }
}
