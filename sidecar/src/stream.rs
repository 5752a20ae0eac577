//! `ta-feed stream`: start-up backfill, then the live combined stream with batching,
//! gap fills and clean shutdown.
//!
//! Batching: closed klines are buffered and flushed as one transaction when (a) every
//! subscribed symbol has a kline for the newest buffered minute, (b) a kline arrives for a
//! symbol already in the buffer (flush first: never two minutes of one symbol in one
//! statement, because the database evaluates only the newest new candle per symbol), or
//! (c) `flush` has passed since the first buffered kline.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::backfill::{fill_gap, floor_minute, last_closed_open_ms, GapTrigger};
use crate::backoff::Backoff;
use crate::binance::model::{from_ms, Kline};
use crate::binance::rest::{RestClient, RestConfig, RestError};
use crate::binance::ws::{run_connection, stream_urls, ConnectionConfig, FeedEvent};
use crate::constants::{metric, quality_kind, MINUTE_MS};
use crate::shutdown::{Shutdown, ShutdownTrigger};
use crate::sink::{AlertMode, QualityEvent, RetryingSink, SinkError};

/// Stream failures that stop the command.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("REST: {0}")]
    Rest(#[from] RestError),
    #[error("database: {0}")]
    Sink(#[from] SinkError),
    #[error("no symbols given")]
    NoSymbols,
}

impl StreamError {
    pub fn is_retryable(&self) -> bool {
        match self {
            StreamError::Rest(e) => e.is_retryable(),
            StreamError::Sink(e) => e.is_retryable(),
            StreamError::NoSymbols => false,
        }
    }
}

/// Everything `stream` needs.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    pub database_url: String,
    /// Upper-case symbols.
    pub symbols: Vec<String>,
    pub ws_url: String,
    pub rest: RestConfig,
    /// Minutes loaded on start-up for a symbol with no stored candles.
    pub backfill_minutes: u64,
    /// Flush interval (c).
    pub flush: Duration,
    /// WebSocket reconnect back-off.
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
    pub reconnect_multiplier: f64,
    /// Database reconnect back-off.
    pub db_retry_initial: Duration,
    pub db_retry_max: Duration,
    /// Proactive reconnect age (< 24 h).
    pub max_connection_age: Duration,
    /// Reconnect when nothing arrived for this long.
    pub idle_timeout: Duration,
    /// How long to wait for the stream connections before the start-up backfill.
    pub connect_wait: Duration,
    /// Stop cleanly after this many distinct live minutes were written (0 = never).
    pub stop_after_minutes: u64,
    /// Health state (served by `--health-addr`; reported into whether served or not).
    pub health: std::sync::Arc<crate::health::HealthState>,
    /// Call `market.apply_retention()` this often (zero: never). The first call is one
    /// interval after start.
    pub retention_interval: Duration,
}

impl StreamConfig {
    pub fn new(database_url: &str, symbols: Vec<String>, ws_url: &str, rest_url: &str) -> Self {
        StreamConfig {
            database_url: database_url.to_string(),
            symbols,
            ws_url: ws_url.to_string(),
            rest: RestConfig::new(rest_url),
            backfill_minutes: 1440,
            flush: Duration::from_millis(500),
            reconnect_initial: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(60),
            reconnect_multiplier: 2.0,
            db_retry_initial: Duration::from_millis(500),
            db_retry_max: Duration::from_secs(30),
            max_connection_age: Duration::from_secs(
                crate::constants::DEFAULT_MAX_CONNECTION_AGE_SECS,
            ),
            idle_timeout: Duration::from_secs(120),
            connect_wait: Duration::from_secs(10),
            stop_after_minutes: 0,
            health: crate::health::HealthState::new(crate::health::Component::Stream),
            retention_interval: Duration::from_secs(3600),
        }
    }
}

/// Counters of one `stream` run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamSummary {
    pub backfilled_rows: u64,
    pub live_klines: u64,
    pub live_rows_written: u64,
    pub live_minutes: u64,
    pub batches: u64,
    pub gaps_filled: u64,
    pub dropped_klines: u64,
    pub rejected: u64,
}

/// Runs the feed until `shutdown` completes (or `stop_after_minutes` is reached):
/// stop reading, flush the buffer, close the connections, return.
pub async fn run_stream(
    cfg: StreamConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<StreamSummary, StreamError> {
    if cfg.symbols.is_empty() {
        return Err(StreamError::NoSymbols);
    }
    let (trigger, mut shutdown) = Shutdown::from_future(shutdown);
    let rest = RestClient::new(cfg.rest.clone())?;
    let sink = RetryingSink::new(
        cfg.database_url.clone(),
        Backoff::new(cfg.db_retry_initial, 2.0, cfg.db_retry_max),
    );

    // 1. Connect the streams first, so nothing closes between backfill and stream.
    let (tx, mut rx) = unbounded_channel();
    let mut connections = JoinSet::new();
    let urls = stream_urls(&cfg.ws_url, &cfg.symbols);
    for (id, url) in urls.iter().enumerate() {
        let conn = ConnectionConfig {
            id,
            url: url.clone(),
            max_age: cfg.max_connection_age,
            idle_timeout: cfg.idle_timeout,
        };
        let backoff = Backoff::new(
            cfg.reconnect_initial,
            cfg.reconnect_multiplier,
            cfg.reconnect_max,
        );
        connections.spawn(run_connection(conn, backoff, tx.clone(), shutdown.clone()));
    }
    drop(tx);
    let mut pending = VecDeque::new();
    let mut connected = 0usize;
    let wait = tokio::time::sleep(cfg.connect_wait);
    tokio::pin!(wait);
    while connected < urls.len() {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(FeedEvent::Connected { .. }) => connected += 1,
                Some(other) => pending.push_back(other),
                None => break,
            },
            _ = &mut wait => {
                warn!(connected, expected = urls.len(), "stream not connected yet; backfilling anyway");
                break;
            }
            _ = shutdown.recv() => break,
        }
    }

    let retention = (!cfg.retention_interval.is_zero()).then(|| {
        tokio::spawn(retention_loop(
            cfg.database_url.clone(),
            cfg.retention_interval,
        ))
    });
    let mut writer = Writer::new(&cfg, rest, sink);
    writer.connections_total = urls.len();
    writer.set_connections(connected);
    let result = async {
        if !shutdown.is_shutdown() {
            let mut sd = shutdown.clone();
            tokio::select! {
                r = writer.startup_backfill(cfg.backfill_minutes) => r?,
                _ = sd.recv() => info!("shutdown during start-up backfill"),
            }
        }
        writer.run(&mut rx, pending, &mut shutdown, &trigger).await
    }
    .await;
    trigger.trigger();
    if let Some(task) = retention {
        task.abort();
    }
    while connections.join_next().await.is_some() {}
    let summary = writer.summary.clone();
    info!(?summary, "stream stopped");
    result.map(|()| summary)
}

struct Writer {
    symbols: Vec<String>,
    rest: RestClient,
    sink: RetryingSink,
    flush: Duration,
    stop_after_minutes: u64,
    /// Newest written open_time per symbol (epoch ms).
    last_written: HashMap<String, i64>,
    buffer: Vec<Kline>,
    buffer_since: Option<Instant>,
    live_minutes: BTreeSet<i64>,
    summary: StreamSummary,
    /// Health figures (`/health`): stream connections up of total.
    health: std::sync::Arc<crate::health::HealthState>,
    connections_up: usize,
    connections_total: usize,
}

impl Writer {
    fn new(cfg: &StreamConfig, rest: RestClient, sink: RetryingSink) -> Self {
        Writer {
            symbols: cfg.symbols.clone(),
            rest,
            sink,
            flush: cfg.flush,
            stop_after_minutes: cfg.stop_after_minutes,
            last_written: HashMap::new(),
            buffer: Vec::new(),
            buffer_since: None,
            live_minutes: BTreeSet::new(),
            summary: StreamSummary::default(),
            health: cfg.health.clone(),
            connections_up: 0,
            connections_total: 0,
        }
    }

    /// Reports connections up/total to the health state.
    fn set_connections(&mut self, up: usize) {
        self.connections_up = up.min(self.connections_total);
        self.health
            .set_connections(self.connections_up, self.connections_total);
    }

    /// For each symbol: from the last stored minute + 1 (or serverTime − backfill_minutes)
    /// up to the last closed minute at exchange time.
    async fn startup_backfill(&mut self, backfill_minutes: u64) -> Result<(), StreamError> {
        let server_time = self.rest.server_time().await?;
        let to = last_closed_open_ms(server_time);
        info!(server_time = %from_ms(server_time), last_closed = %from_ms(to), "exchange time");
        for symbol in self.symbols.clone() {
            let last = self
                .sink
                .last_open_time(&symbol, None)
                .await?
                .map(|t| t.timestamp_millis());
            let (from, trigger) = match last {
                Some(last) => (floor_minute(last) + MINUTE_MS, GapTrigger::Startup),
                None => (
                    floor_minute(server_time - backfill_minutes as i64 * MINUTE_MS),
                    GapTrigger::Startup,
                ),
            };
            if let Some(last) = last {
                self.last_written.insert(symbol.clone(), last);
            }
            if from > to {
                info!(%symbol, "already up to date");
                continue;
            }
            let started = Instant::now();
            let outcome = if last.is_some() {
                // Minutes missed while the feed was down: a gap, logged as such.
                fill_gap(
                    &self.rest,
                    &mut self.sink,
                    &symbol,
                    from,
                    to,
                    Some(server_time),
                    trigger,
                )
                .await?
            } else {
                match crate::backfill::backfill_range(
                    &self.rest,
                    &mut self.sink,
                    &symbol,
                    from,
                    to,
                    Some(server_time),
                )
                .await
                {
                    Ok(o) => o,
                    Err(crate::backfill::BackfillError::Sink(e)) => return Err(e.into()),
                    Err(crate::backfill::BackfillError::Rest(e)) => {
                        error!(%symbol, error = %e, "start-up backfill failed; continuing with the live stream");
                        continue;
                    }
                }
            };
            self.summary.backfilled_rows += outcome.written;
            if let Some(t) = outcome.last_open_ms {
                let e = self.last_written.entry(symbol.clone()).or_insert(t);
                *e = (*e).max(t);
            }
            info!(
                %symbol,
                from = %from_ms(from),
                to = %from_ms(to),
                received = outcome.received,
                written = outcome.written,
                pages = outcome.pages,
                ms = started.elapsed().as_millis() as u64,
                "start-up backfill done"
            );
        }
        Ok(())
    }

    async fn run(
        &mut self,
        rx: &mut UnboundedReceiver<FeedEvent>,
        mut pending: VecDeque<FeedEvent>,
        shutdown: &mut Shutdown,
        trigger: &ShutdownTrigger,
    ) -> Result<(), StreamError> {
        loop {
            if self.stop_after_minutes > 0
                && self.live_minutes.len() as u64 >= self.stop_after_minutes
            {
                info!(
                    minutes = self.live_minutes.len(),
                    "stop-after-minutes reached"
                );
                trigger.trigger();
                break;
            }
            let event = if let Some(ev) = pending.pop_front() {
                Some(ev)
            } else {
                let deadline = self.buffer_since.map(|t| t + self.flush);
                tokio::select! {
                    biased;
                    _ = shutdown.recv() => break,
                    _ = sleep_until_opt(deadline), if deadline.is_some() => None,
                    ev = rx.recv() => match ev {
                        Some(ev) => Some(ev),
                        None => break,
                    },
                }
            };
            match event {
                None => self.flush_or_shutdown(shutdown).await?,
                Some(FeedEvent::Connected { connection }) => {
                    debug!(connection, "stream (re)connected");
                    self.set_connections(self.connections_up + 1);
                }
                Some(FeedEvent::Disconnected { connection }) => {
                    debug!(connection, "stream disconnected");
                    self.set_connections(self.connections_up.saturating_sub(1));
                }
                Some(FeedEvent::Rejected {
                    symbol,
                    open_time_ms,
                    reason,
                    raw,
                }) => {
                    self.summary.rejected += 1;
                    let ev = QualityEvent {
                        symbol: Some(symbol),
                        kind: quality_kind::REJECTED,
                        from_time: Some(from_ms(open_time_ms)),
                        to_time: None,
                        rows: Some(0),
                        detail: json!({"reason": reason, "raw": raw, "source": "stream"}),
                    };
                    self.sink.log_quality(&[ev], None).await?;
                }
                Some(FeedEvent::Closed { kline, event_time }) => {
                    debug!(symbol = %kline.symbol, open_time = %kline.open_time, event_time, "closed kline");
                    self.health.observe_exchange_time(from_ms(event_time));
                    if self.buffer.iter().any(|b| b.symbol == kline.symbol) {
                        self.flush_or_shutdown(shutdown).await?; // (b)
                    }
                    if self.buffer.is_empty() {
                        self.buffer_since = Some(Instant::now());
                    }
                    let minute = kline.open_time;
                    self.buffer.push(kline);
                    let complete = self.symbols.iter().all(|s| {
                        self.buffer
                            .iter()
                            .any(|b| &b.symbol == s && b.open_time == minute)
                    });
                    if complete {
                        self.flush_or_shutdown(shutdown).await?; // (a)
                    }
                }
            }
        }
        // Final flush: the database gets a bounded grace period.
        if !self.buffer.is_empty() {
            let batch = std::mem::take(&mut self.buffer);
            self.write_live(batch, Some(Duration::from_secs(10)))
                .await?;
        }
        Ok(())
    }

    /// Flushes, but gives up waiting (keeping the buffer) when shutdown fires meanwhile.
    async fn flush_or_shutdown(&mut self, shutdown: &mut Shutdown) -> Result<(), StreamError> {
        if self.buffer.is_empty() {
            self.buffer_since = None;
            return Ok(());
        }
        let batch = std::mem::take(&mut self.buffer);
        self.buffer_since = None;
        let mut sd = shutdown.clone();
        let keep = batch.clone();
        let res = tokio::select! {
            r = self.write_live(batch, None) => Some(r),
            // A healthy write finishes quickly; only a stuck one (database down) is abandoned.
            _ = async { sd.recv().await; tokio::time::sleep(Duration::from_secs(2)).await } => None,
        };
        match res {
            Some(r) => r,
            None => {
                warn!(
                    klines = keep.len(),
                    "shutdown during flush; retrying once more before exit"
                );
                self.sink.reset_connection();
                self.buffer = keep;
                Ok(())
            }
        }
    }

    /// Gap-fills every symbol of `batch` that skipped minutes, then writes the batch with
    /// alerts evaluated.
    async fn write_live(
        &mut self,
        batch: Vec<Kline>,
        give_up_after: Option<Duration>,
    ) -> Result<(), StreamError> {
        for k in &batch {
            if let Some(&last) = self.last_written.get(&k.symbol) {
                let t = k.open_time_ms();
                if t > last + MINUTE_MS {
                    let outcome = fill_gap(
                        &self.rest,
                        &mut self.sink,
                        &k.symbol,
                        last + MINUTE_MS,
                        t - MINUTE_MS,
                        None,
                        GapTrigger::Live,
                    )
                    .await?;
                    self.summary.gaps_filled += 1;
                    self.summary.backfilled_rows += outcome.written;
                    if let Some(l) = outcome.last_open_ms {
                        self.last_written.insert(k.symbol.clone(), l.max(last));
                    }
                }
            }
        }
        let started = Instant::now();
        match self
            .sink
            .write_batch(&batch, AlertMode::Evaluate, give_up_after)
            .await
        {
            Ok(rows) => {
                let symbols = batch.len();
                for k in &batch {
                    let t = k.open_time_ms();
                    let e = self.last_written.entry(k.symbol.clone()).or_insert(t);
                    *e = (*e).max(t);
                    self.live_minutes.insert(t);
                    metrics::gauge!(metric::LAST_CLOSED_OPEN_TIME, "symbol" => k.symbol.clone())
                        .set(t as f64 / 1000.0);
                }
                self.health.set_db_connected(true);
                self.health.add_candles_written(rows);
                if let Some(newest) = batch.iter().map(|k| k.open_time).max() {
                    self.health.set_last_closed_open_time(newest);
                }
                self.summary.live_klines += batch.len() as u64;
                self.summary.live_rows_written += rows;
                self.summary.batches += 1;
                self.summary.live_minutes = self.live_minutes.len() as u64;
                info!(
                    rows,
                    symbols,
                    ms = started.elapsed().as_millis() as u64,
                    "wrote batch"
                );
                Ok(())
            }
            Err(e) if !e.is_retryable() => {
                // The next kline of these symbols triggers a REST gap fill that retries them.
                self.summary.dropped_klines += batch.len() as u64;
                metrics::counter!(metric::KLINES_DROPPED).increment(batch.len() as u64);
                error!(error = %e, klines = batch.len(), "batch could not be written; dropped (a later gap fill retries it)");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Applies `market.settings` retention every `interval` (`market.apply_retention()`, candle
/// time). On TimescaleDB an hourly job does the same; calling it twice is harmless. A failure
/// (database down, or a role without EXECUTE on it) is logged and retried at the next tick.
async fn retention_loop(database_url: String, interval: Duration) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = async {
            let (client, conn) = crate::db::connect(&database_url).await?;
            let row = client
                .query_one(
                    "SELECT candles_deleted, alerts_deleted, deliveries_deleted \
                     FROM market.apply_retention()",
                    &[],
                )
                .await;
            drop(client);
            conn.abort();
            anyhow::Ok(row?)
        }
        .await;
        match result {
            Ok(row) => info!(
                candles_deleted = row.get::<_, Option<i64>>(0),
                alerts_deleted = row.get::<_, Option<i64>>(1),
                deliveries_deleted = row.get::<_, Option<i64>>(2),
                "retention applied"
            ),
            Err(error) => warn!(
                error = format!("{error:#}"),
                "market.apply_retention() failed"
            ),
        }
    }
}
