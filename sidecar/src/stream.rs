//! `ta-feed stream`: resolve the universe (a list, or `all` from exchangeInfo), connect the
//! shards, start-up backfill, then the live stream with batching, gap fills, alert catch-up,
//! universe refresh and clean shutdown.
//!
//! Batching: closed klines are buffered and flushed as one transaction when (a) every
//! streamed symbol has a kline for the newest buffered minute (a counter per minute, O(1) per
//! kline), (b) a kline arrives for a symbol already in the buffer (flush first: never two
//! minutes of one symbol in one statement, because the database evaluates only the newest new
//! candle per symbol), or (c) `flush` has passed since the first buffered kline. A minute of
//! 500 symbols is one statement. A closed kline whose (symbol, open_time) was already written
//! or buffered (seen on both connections of a rotation) is dropped and counted.
//!
//! Alerts after a real gap: minutes recovered over REST (a disconnect, a restart) whose
//! open_time is within `alert_catchup_minutes` of exchange time are written like live minutes,
//! one statement per minute in time order, with alerts evaluated; older recovered minutes are
//! stored with alerts off (an alert about an hour-old candle is noise, not a signal).
//!
//! Universe refresh (`--symbols all`): every `universe_refresh`, exchangeInfo is read again; a
//! new symbol gets its own connection and its backfill, a symbol that left (delisted,
//! settling) is no longer written and leaves its connection at the next reconnect or rotation;
//! its history stays. Each change is logged and written to `market.data_quality_log`
//! (`listed`, `delisted`).
//!
//! Stream kinds (`--streams kline,agg_trade,book_ticker`, default `kline`): every kind gets
//! its own shards on its route (`binance::ws`), klines go to the writer below, ticks to one
//! writer per kind with its bounded buffer ([`crate::ticks`]), aggTrade gaps to the REST
//! filler. Before a live candle of minute m is written, the kline writer waits (at most
//! `tick_flush_wait`) until every tick received so far — those of minute m included, since
//! Binance sends a minute's closed kline after its trades — is committed, so the candle's
//! transaction (and what the database computes in it) sees them.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::backfill::{fill_gap, floor_minute, last_closed_open_ms, GapTrigger};
use crate::backoff::Backoff;
use crate::binance::kind::agg_trade::AggTrade;
use crate::binance::kind::book_ticker::BookTicker;
use crate::binance::kind::StreamKind;
use crate::binance::model::{from_ms, Kline};
use crate::binance::rest::{RestClient, RestConfig, RestError};
use crate::binance::ws::{
    run_shard, shard_symbols, FeedEvent, HandlerFactory, KlineHandler, ShardConfig,
};
use crate::constants::{metric, quality_kind, MINUTE_MS};
use crate::market::Market;
use crate::shutdown::{Shutdown, ShutdownTrigger};
use crate::sink::{AlertMode, QualityEvent, RetryingSink, SinkError};
use crate::ticks::{
    run_filler, TickBarrier, TickIntake, TickQueue, TickSummary, TickWriter, TickWriterConfig,
};

/// Stream failures that stop the command.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("REST: {0}")]
    Rest(#[from] RestError),
    #[error("database: {0}")]
    Sink(#[from] SinkError),
    #[error("no symbols given")]
    NoSymbols,
    #[error("no stream kinds given (--streams kline,agg_trade,book_ticker)")]
    NoStreams,
    #[error("--symbols all: no symbol of exchangeInfo passes the {0} filter")]
    EmptyUniverse(Market),
}

impl StreamError {
    pub fn is_retryable(&self) -> bool {
        match self {
            StreamError::Rest(e) => e.is_retryable(),
            StreamError::Sink(e) => e.is_retryable(),
            StreamError::NoSymbols | StreamError::NoStreams | StreamError::EmptyUniverse(_) => {
                false
            }
        }
    }
}

/// Which symbols to stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SymbolSource {
    /// These (upper case).
    List(Vec<String>),
    /// Every symbol of exchangeInfo that [`Market::is_in_universe`] keeps, refreshed.
    All,
}

impl SymbolSource {
    /// `all` (any case, alone) or a list of symbols, upper-cased, empty entries dropped.
    pub fn parse(items: &[String]) -> SymbolSource {
        let list: Vec<String> = items
            .iter()
            .map(|s| s.trim().to_ascii_uppercase())
            .filter(|s| !s.is_empty())
            .collect();
        if list.len() == 1 && list[0] == "ALL" {
            SymbolSource::All
        } else {
            SymbolSource::List(list)
        }
    }
}

/// The symbols to stream now: `source` resolved (exchangeInfo for `all`), minus `exclude`.
pub async fn resolve_universe(
    rest: &RestClient,
    source: &SymbolSource,
    exclude: &[String],
) -> Result<Vec<String>, StreamError> {
    match source {
        SymbolSource::List(list) => {
            let mut out: Vec<String> = Vec::new();
            for s in list {
                if !exclude.iter().any(|e| e.eq_ignore_ascii_case(s)) && !out.contains(s) {
                    out.push(s.clone());
                }
            }
            Ok(out)
        }
        SymbolSource::All => {
            let info = rest.exchange_info().await?;
            Ok(rest.market().universe(&info, exclude))
        }
    }
}

/// Everything `stream` needs.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    pub database_url: String,
    pub market: Market,
    pub symbols: SymbolSource,
    /// Symbols never streamed (upper case).
    pub exclude: Vec<String>,
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
    /// Streams per WebSocket connection (1..=1024).
    pub streams_per_connection: usize,
    /// Delay between opening two connections.
    pub connect_stagger: Duration,
    /// A connection with no kline for this long is failed and reconnected.
    pub silent_timeout: Duration,
    /// Recovered minutes this recent (vs exchange time) are evaluated for alerts.
    pub alert_catchup_minutes: u64,
    /// Re-read exchangeInfo this often with `--symbols all` (zero: never).
    pub universe_refresh: Duration,
    /// Stream kinds (`--streams`): klines, aggTrades, book tickers.
    pub streams: Vec<StreamKind>,
    /// At a rotation, keep the old connection this long after the replacement delivered.
    pub rotation_overlap: Duration,
    /// Tick rows per COPY transaction at most.
    pub tick_batch_rows: usize,
    /// Flush buffered ticks at the latest this long after the first one.
    pub tick_flush: Duration,
    /// Rows waiting per tick kind before live ticks are refused (memory cap).
    pub tick_buffer_rows: usize,
    /// Longest wait of a live candle for the ticks received before it (0: no wait).
    pub tick_flush_wait: Duration,
    /// Missing aggTrade ids go to REST when still missing this long after the jump.
    pub trade_gap_grace: Duration,
    /// Gaps of more aggTrade ids than this are logged, not filled.
    pub trade_gap_max_ids: i64,
    /// Write connections per tick kind (symbols spread over them).
    pub tick_writers: usize,
    /// Check the TimescaleDB jobs this often (zero: never); see [`crate::timescaledb`].
    pub timescaledb_check: Duration,
    /// Overdue margin of TimescaleDB work (None: the SQL default).
    pub timescaledb_margin: Option<Duration>,
    /// Run overdue TimescaleDB jobs.
    pub timescaledb_repair: bool,
}

impl StreamConfig {
    /// Spot, these symbols; see [`StreamConfig::for_market`].
    pub fn new(database_url: &str, symbols: Vec<String>, ws_url: &str, rest_url: &str) -> Self {
        Self::for_market(
            database_url,
            Market::Spot,
            SymbolSource::List(symbols),
            ws_url,
            rest_url,
        )
    }

    /// Defaults for `market`.
    pub fn for_market(
        database_url: &str,
        market: Market,
        symbols: SymbolSource,
        ws_url: &str,
        rest_url: &str,
    ) -> Self {
        StreamConfig {
            database_url: database_url.to_string(),
            market,
            symbols,
            exclude: Vec::new(),
            ws_url: ws_url.to_string(),
            rest: RestConfig::for_market(rest_url, market),
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
            streams_per_connection: 200,
            connect_stagger: Duration::from_millis(250),
            silent_timeout: Duration::from_secs(120),
            alert_catchup_minutes: 5,
            universe_refresh: Duration::from_secs(3600),
            streams: vec![StreamKind::Kline],
            rotation_overlap: Duration::from_secs(2),
            tick_batch_rows: 5000,
            tick_flush: Duration::from_millis(200),
            tick_buffer_rows: 100_000,
            tick_flush_wait: Duration::from_secs(2),
            trade_gap_grace: Duration::from_secs(1),
            trade_gap_max_ids: 1_000_000,
            tick_writers: 2,
            timescaledb_check: Duration::from_secs(60),
            timescaledb_margin: None,
            timescaledb_repair: true,
        }
    }

    /// The stream kinds, deduplicated, in [`StreamKind::ALL`] order.
    pub fn kinds(&self) -> Vec<StreamKind> {
        StreamKind::ALL
            .into_iter()
            .filter(|k| self.streams.contains(k))
            .collect()
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
    /// Closed klines seen twice (rotation overlap) and written once.
    pub duplicates: u64,
    /// Recovered minutes written with alerts (`alert_catchup_minutes`).
    pub catchup_minutes: u64,
    pub silent_connections: u64,
    pub symbols_listed: u64,
    pub symbols_delisted: u64,
    /// The aggTrade writer's counters (`--streams ...,agg_trade`).
    pub agg_trades: Option<TickSummary>,
    /// The book-ticker writer's counters (`--streams ...,book_ticker`).
    pub book_tickers: Option<TickSummary>,
    /// Live candles written after waiting the full `tick_flush_wait` for their ticks.
    pub tick_barrier_timeouts: u64,
}

/// Runs the feed until `shutdown` completes (or `stop_after_minutes` is reached):
/// stop reading, flush the buffer, close the connections, return.
pub async fn run_stream(
    cfg: StreamConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<StreamSummary, StreamError> {
    if matches!(&cfg.symbols, SymbolSource::List(l) if l.is_empty()) {
        return Err(StreamError::NoSymbols);
    }
    let kinds = cfg.kinds();
    if kinds.is_empty() {
        return Err(StreamError::NoStreams);
    }
    let (trigger, mut shutdown) = Shutdown::from_future(shutdown);
    let rest = RestClient::new(cfg.rest.clone())?;
    let symbols = resolve_universe(&rest, &cfg.symbols, &cfg.exclude).await?;
    if symbols.is_empty() {
        return Err(match cfg.symbols {
            SymbolSource::All => StreamError::EmptyUniverse(cfg.market),
            SymbolSource::List(_) => StreamError::NoSymbols,
        });
    }
    info!(market = %cfg.market, symbols = symbols.len(), "universe");
    let sink = RetryingSink::new(
        cfg.database_url.clone(),
        Backoff::new(cfg.db_retry_initial, 2.0, cfg.db_retry_max),
    )
    .with_market(cfg.market);

    // 1. Connect the streams first, so nothing closes between backfill and stream.
    let (tx, mut rx) = unbounded_channel();
    let trade_queue = kinds
        .contains(&StreamKind::AggTrade)
        .then(|| Arc::new(TickQueue::<AggTrade>::new(cfg.tick_buffer_rows)));
    let book_queue = kinds
        .contains(&StreamKind::BookTicker)
        .then(|| Arc::new(TickQueue::<BookTicker>::new(cfg.tick_buffer_rows)));
    let mut handlers: Vec<(StreamKind, Arc<dyn HandlerFactory>)> = Vec::new();
    for &k in &kinds {
        let h: Arc<dyn HandlerFactory> = match k {
            StreamKind::Kline => Arc::new(KlineHandler { tx: tx.clone() }),
            StreamKind::AggTrade => Arc::new(TickIntake::new(
                trade_queue.clone().expect("aggTrade buffer"),
            )),
            StreamKind::BookTicker => Arc::new(TickIntake::new(
                book_queue.clone().expect("book ticker buffer"),
            )),
        };
        handlers.push((k, h));
    }
    let mut shards = Shards {
        cfg: cfg.clone(),
        tx,
        shutdown: shutdown.clone(),
        tasks: JoinSet::new(),
        lists: Vec::new(),
        handlers,
    };
    shards.open(&symbols);
    let expected = shards.lists.len();
    let mut pending = VecDeque::new();
    let mut connected = 0usize;
    let wait = tokio::time::sleep(cfg.connect_wait + cfg.connect_stagger * expected as u32);
    tokio::pin!(wait);
    while connected < expected {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(FeedEvent::Connected { .. }) => connected += 1,
                Some(other) => pending.push_back(other),
                None => break,
            },
            _ = &mut wait => {
                warn!(connected, expected, "stream not connected yet; backfilling anyway");
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
    let job_watch = (!cfg.timescaledb_check.is_zero()).then(|| {
        tokio::spawn(crate::timescaledb::watch_jobs(
            crate::timescaledb::WatchConfig {
                database_url: cfg.database_url.clone(),
                interval: cfg.timescaledb_check,
                margin: cfg.timescaledb_margin,
                repair: cfg.timescaledb_repair,
            },
            cfg.health.clone(),
        ))
    });
    // 2. The tick writers (and the aggTrade filler) start before the kline backfill.
    let tick_cfg = TickWriterConfig {
        market: cfg.market,
        batch_rows: cfg.tick_batch_rows.max(1),
        flush: cfg.tick_flush,
        gap_grace: cfg.trade_gap_grace,
        max_gap_ids: cfg.trade_gap_max_ids.max(1),
        symbols: symbols.clone(),
        writers: cfg.tick_writers.max(1),
        shutdown_grace: Duration::from_secs(10),
        probe_delay: (cfg.trade_gap_grace * 5).max(Duration::from_secs(2)),
    };
    let tick_sink = || {
        RetryingSink::new(
            cfg.database_url.clone(),
            Backoff::new(cfg.db_retry_initial, 2.0, cfg.db_retry_max),
        )
        .with_market(cfg.market)
    };
    let mut barriers: Vec<TickBarrier> = Vec::new();
    let mut tick_tasks = Vec::new();
    let mut filler_task = None;
    if let Some(q) = &trade_queue {
        let (fill_tx, fill_rx) = unbounded_channel();
        let w = TickWriter::new(tick_cfg.clone(), q.clone(), tick_sink, Some(fill_tx));
        barriers.push(w.barrier());
        tick_tasks.push((StreamKind::AggTrade, tokio::spawn(w.run(shutdown.clone()))));
        filler_task = Some(tokio::spawn(run_filler(
            rest.clone(),
            q.clone(),
            fill_rx,
            shutdown.clone(),
        )));
    }
    if let Some(q) = &book_queue {
        let w = TickWriter::new(tick_cfg.clone(), q.clone(), tick_sink, None);
        barriers.push(w.barrier());
        tick_tasks.push((
            StreamKind::BookTicker,
            tokio::spawn(w.run(shutdown.clone())),
        ));
    }
    let mut writer = Writer::new(&cfg, symbols, rest, sink);
    writer.klines = kinds.contains(&StreamKind::Kline);
    writer.barriers = barriers;
    writer.tick_flush_wait = cfg.tick_flush_wait;
    writer.connections_total = expected;
    writer.set_connections(connected);
    let result = async {
        if !shutdown.is_shutdown() && writer.klines {
            let mut sd = shutdown.clone();
            let all = writer.symbols.clone();
            tokio::select! {
                r = writer.startup_backfill(&all, cfg.backfill_minutes) => r?,
                _ = sd.recv() => info!("shutdown during start-up backfill"),
            }
        }
        writer
            .run(&mut rx, pending, &mut shards, &mut shutdown, &trigger)
            .await
    }
    .await;
    trigger.trigger();
    for task in [retention, job_watch].into_iter().flatten() {
        task.abort();
    }
    while shards.tasks.join_next().await.is_some() {}
    if let Some(f) = filler_task {
        let _ = f.await;
    }
    let mut summary = writer.summary.clone();
    let mut result = result;
    for (kind, task) in tick_tasks {
        match task.await {
            Ok(Ok(s)) => match kind {
                StreamKind::AggTrade => summary.agg_trades = Some(s),
                _ => summary.book_tickers = Some(s),
            },
            Ok(Err(e)) => {
                error!(%kind, error = %e, "tick writer failed");
                if result.is_ok() {
                    result = Err(e.into());
                }
            }
            Err(e) => error!(%kind, error = %e, "tick writer task ended abnormally"),
        }
    }
    info!(?summary, "stream stopped");
    result.map(|()| summary)
}

/// The connections: one [`run_shard`] task per shard (each of one stream kind on its
/// route), and each shard's symbol list.
struct Shards {
    cfg: StreamConfig,
    tx: UnboundedSender<FeedEvent>,
    shutdown: Shutdown,
    tasks: JoinSet<u64>,
    lists: Vec<watch::Sender<Vec<String>>>,
    /// The message handler of each kind.
    handlers: Vec<(StreamKind, Arc<dyn HandlerFactory>)>,
}

impl Shards {
    /// Opens connections for `symbols`, for every kind (shards of `streams_per_connection`),
    /// staggered.
    fn open(&mut self, symbols: &[String]) {
        let mut i = 0u32;
        for (kind, handler) in self.handlers.clone() {
            for chunk in shard_symbols(symbols, self.cfg.streams_per_connection) {
                self.open_one(kind, handler.clone(), chunk, i);
                i += 1;
            }
        }
    }

    fn open_one(
        &mut self,
        kind: StreamKind,
        handler: Arc<dyn HandlerFactory>,
        chunk: Vec<String>,
        i: u32,
    ) {
        {
            let id = self.lists.len();
            let (list_tx, list_rx) = watch::channel(chunk);
            self.lists.push(list_tx);
            let shard = ShardConfig {
                id,
                base_url: self.cfg.ws_url.clone(),
                market: self.cfg.market,
                kind,
                handler,
                symbols: list_rx,
                max_age: self.cfg.max_connection_age,
                rotation_overlap: self.cfg.rotation_overlap,
                idle_timeout: self.cfg.idle_timeout,
                silent_timeout: self.cfg.silent_timeout,
                start_delay: self.cfg.connect_stagger * i,
                jitter: 0.2,
            };
            let backoff = Backoff::new(
                self.cfg.reconnect_initial,
                self.cfg.reconnect_multiplier,
                self.cfg.reconnect_max,
            );
            self.tasks.spawn(run_shard(
                shard,
                backoff,
                self.tx.clone(),
                self.shutdown.clone(),
            ));
        }
    }

    /// Takes `symbol` out of its shard's list (effective at its next reconnect/rotation).
    fn remove(&mut self, symbol: &str) {
        for l in &self.lists {
            l.send_if_modified(|v| {
                let before = v.len();
                v.retain(|s| s != symbol);
                v.len() != before
            });
        }
    }
}

struct Writer {
    market: Market,
    /// The streamed universe, in order (health, backfill order).
    symbols: Vec<String>,
    active: HashSet<String>,
    source: SymbolSource,
    exclude: Vec<String>,
    rest: RestClient,
    sink: RetryingSink,
    flush: Duration,
    stop_after_minutes: u64,
    backfill_minutes: u64,
    alert_catchup_minutes: u64,
    universe_refresh: Duration,
    /// Newest written open_time per symbol (epoch ms).
    last_written: HashMap<String, i64>,
    buffer: Vec<Kline>,
    /// open_time of each buffered symbol's kline.
    buffered: HashMap<String, i64>,
    /// Buffered klines per open_time.
    buffered_per_minute: BTreeMap<i64, usize>,
    buffer_since: Option<Instant>,
    live_minutes: BTreeSet<i64>,
    /// Newest exchange event time seen (`E`), epoch ms.
    exchange_time_ms: i64,
    summary: StreamSummary,
    /// Health figures (`/health`): stream connections up of total.
    health: std::sync::Arc<crate::health::HealthState>,
    connections_up: usize,
    connections_total: usize,
    /// Klines are streamed (`--streams` has `kline`): backfill and gap fills of candles.
    klines: bool,
    /// The tick writers' barriers: a live candle waits for the ticks received before it.
    barriers: Vec<TickBarrier>,
    tick_flush_wait: Duration,
}

impl Writer {
    fn new(cfg: &StreamConfig, symbols: Vec<String>, rest: RestClient, sink: RetryingSink) -> Self {
        metrics::gauge!(metric::SYMBOLS).set(symbols.len() as f64);
        Writer {
            market: cfg.market,
            active: symbols.iter().cloned().collect(),
            symbols,
            source: cfg.symbols.clone(),
            exclude: cfg.exclude.clone(),
            rest,
            sink,
            flush: cfg.flush,
            stop_after_minutes: cfg.stop_after_minutes,
            backfill_minutes: cfg.backfill_minutes,
            alert_catchup_minutes: cfg.alert_catchup_minutes,
            universe_refresh: cfg.universe_refresh,
            last_written: HashMap::new(),
            buffer: Vec::new(),
            buffered: HashMap::new(),
            buffered_per_minute: BTreeMap::new(),
            buffer_since: None,
            live_minutes: BTreeSet::new(),
            exchange_time_ms: 0,
            summary: StreamSummary::default(),
            health: cfg.health.clone(),
            connections_up: 0,
            connections_total: 0,
            klines: true,
            barriers: Vec::new(),
            tick_flush_wait: cfg.tick_flush_wait,
        }
    }

    /// Waits (bounded) until the ticks received so far are committed.
    async fn wait_for_ticks(&mut self) {
        if self.tick_flush_wait.is_zero() {
            return;
        }
        for b in &mut self.barriers {
            if !b.wait(self.tick_flush_wait).await {
                self.summary.tick_barrier_timeouts += 1;
                metrics::counter!(metric::TICK_BARRIER_TIMEOUTS).increment(1);
                warn!(kind = %b.kind, wait_ms = self.tick_flush_wait.as_millis() as u64,
                      "ticks of this minute not committed in time; writing the candle anyway");
            }
        }
    }

    /// Reports connections up/total to the health state.
    fn set_connections(&mut self, up: usize) {
        self.connections_up = up.min(self.connections_total);
        self.health
            .set_connections(self.connections_up, self.connections_total);
    }

    /// Oldest open_time whose recovered kline is still evaluated for alerts.
    fn catchup_from(&self, exchange_now_ms: i64) -> Option<i64> {
        (self.alert_catchup_minutes > 0)
            .then(|| floor_minute(exchange_now_ms) - self.alert_catchup_minutes as i64 * MINUTE_MS)
    }

    /// For each of `symbols`: from the last stored minute + 1 (or serverTime −
    /// backfill_minutes) up to the last closed minute at exchange time. Recent minutes of a
    /// resumed symbol are written with alerts afterwards ([`Writer::write_catchup`]).
    async fn startup_backfill(
        &mut self,
        symbols: &[String],
        backfill_minutes: u64,
    ) -> Result<(), StreamError> {
        let server_time = self.rest.server_time().await?;
        self.exchange_time_ms = self.exchange_time_ms.max(server_time);
        let to = last_closed_open_ms(server_time);
        info!(server_time = %from_ms(server_time), last_closed = %from_ms(to), symbols = symbols.len(), "exchange time");
        let started_all = Instant::now();
        let hold_from = self.catchup_from(server_time);
        let mut held = Vec::new();
        for symbol in symbols {
            let last = self
                .sink
                .last_open_time(symbol, None)
                .await?
                .map(|t| t.timestamp_millis());
            let from = match last {
                Some(last) => floor_minute(last) + MINUTE_MS,
                None => floor_minute(server_time - backfill_minutes as i64 * MINUTE_MS),
            };
            if let Some(last) = last {
                self.last_written.insert(symbol.clone(), last);
            }
            if from > to {
                debug!(%symbol, "already up to date");
                continue;
            }
            let started = Instant::now();
            let mut outcome = if last.is_some() {
                // Minutes missed while the feed was down: a gap, logged as such.
                fill_gap(
                    &self.rest,
                    &mut self.sink,
                    symbol,
                    from,
                    to,
                    Some(server_time),
                    GapTrigger::Startup,
                    hold_from,
                )
                .await?
            } else {
                match crate::backfill::backfill_range(
                    &self.rest,
                    &mut self.sink,
                    symbol,
                    from,
                    to,
                    Some(server_time),
                    None,
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
            if let Some(t) = outcome
                .held
                .first()
                .map(|k| k.open_time_ms() - MINUTE_MS)
                .or(outcome.last_open_ms)
            {
                let e = self.last_written.entry(symbol.clone()).or_insert(t);
                *e = (*e).max(t);
            }
            held.append(&mut outcome.held);
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
        self.write_catchup(held).await?;
        info!(
            symbols = symbols.len(),
            rows = self.summary.backfilled_rows,
            ms = started_all.elapsed().as_millis() as u64,
            used_weight = self.rest.used_weight(),
            "start-up backfill finished"
        );
        Ok(())
    }

    /// Writes recovered recent klines one minute per statement, oldest first, with alerts
    /// evaluated (as if they had arrived live).
    async fn write_catchup(&mut self, held: Vec<Kline>) -> Result<(), StreamError> {
        if held.is_empty() {
            return Ok(());
        }
        let mut by_minute: BTreeMap<i64, Vec<Kline>> = BTreeMap::new();
        for k in held {
            by_minute.entry(k.open_time_ms()).or_default().push(k);
        }
        let minutes = by_minute.len();
        for (minute, batch) in by_minute {
            let rows = self
                .sink
                .write_batch(&batch, AlertMode::Evaluate, None)
                .await?;
            for k in &batch {
                let e = self.last_written.entry(k.symbol.clone()).or_insert(minute);
                *e = (*e).max(minute);
            }
            self.summary.backfilled_rows += rows;
            self.summary.catchup_minutes += 1;
            metrics::counter!(metric::CATCHUP_MINUTES).increment(1);
        }
        info!(
            minutes,
            "recovered recent minutes written with alerts (alert catch-up)"
        );
        Ok(())
    }

    async fn run(
        &mut self,
        rx: &mut UnboundedReceiver<FeedEvent>,
        mut pending: VecDeque<FeedEvent>,
        shards: &mut Shards,
        shutdown: &mut Shutdown,
        trigger: &ShutdownTrigger,
    ) -> Result<(), StreamError> {
        let refresh_on = self.source == SymbolSource::All && !self.universe_refresh.is_zero();
        let period = if refresh_on {
            self.universe_refresh
        } else {
            Duration::from_secs(86_400)
        };
        let mut refresh = tokio::time::interval_at(Instant::now() + period, period);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                    _ = refresh.tick(), if refresh_on => {
                        self.refresh_universe(shards, shutdown).await?;
                        continue;
                    }
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
                Some(FeedEvent::Silent {
                    connection,
                    url,
                    silent_secs,
                    streams,
                }) => {
                    self.summary.silent_connections += 1;
                    let ev = QualityEvent {
                        symbol: None,
                        kind: quality_kind::SILENT_CONNECTION,
                        from_time: None,
                        to_time: None,
                        rows: Some(0),
                        detail: json!({
                            "connection": connection,
                            "url": crate::binance::rest::truncate(&url, 300),
                            "silent_secs": silent_secs,
                            "streams": streams,
                        }),
                    };
                    self.sink.log_quality(&[ev], None).await?;
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
                    self.exchange_time_ms = self.exchange_time_ms.max(event_time);
                    if !self.active.contains(&kline.symbol) {
                        debug!(symbol = %kline.symbol, "kline of a symbol outside the universe: ignored");
                        continue;
                    }
                    let minute = kline.open_time_ms();
                    let seen = self
                        .last_written
                        .get(&kline.symbol)
                        .is_some_and(|&t| minute <= t)
                        || self.buffered.get(&kline.symbol) == Some(&minute);
                    if seen {
                        self.summary.duplicates += 1;
                        metrics::counter!(metric::DUPLICATE_KLINES).increment(1);
                        continue;
                    }
                    if self.buffered.contains_key(&kline.symbol) {
                        self.flush_or_shutdown(shutdown).await?; // (b)
                    }
                    if self.buffer.is_empty() {
                        self.buffer_since = Some(Instant::now());
                    }
                    self.buffered.insert(kline.symbol.clone(), minute);
                    let n = self.buffered_per_minute.entry(minute).or_insert(0);
                    *n += 1;
                    let complete = *n >= self.active.len();
                    self.buffer.push(kline);
                    if complete {
                        self.flush_or_shutdown(shutdown).await?; // (a)
                    }
                }
            }
        }
        // Final flush: the database gets a bounded grace period.
        if !self.buffer.is_empty() {
            let batch = self.take_buffer();
            self.write_live(batch, Some(Duration::from_secs(10)))
                .await?;
        }
        Ok(())
    }

    fn take_buffer(&mut self) -> Vec<Kline> {
        self.buffered.clear();
        self.buffered_per_minute.clear();
        self.buffer_since = None;
        std::mem::take(&mut self.buffer)
    }

    /// Puts an unwritten batch back (shutdown during a stuck write).
    fn restore_buffer(&mut self, batch: Vec<Kline>) {
        for k in &batch {
            self.buffered.insert(k.symbol.clone(), k.open_time_ms());
            *self
                .buffered_per_minute
                .entry(k.open_time_ms())
                .or_insert(0) += 1;
        }
        self.buffer = batch;
    }

    /// Re-reads exchangeInfo: streams new symbols (own connection + backfill), stops writing
    /// those that left, after fetching over REST the minutes they closed since their last
    /// written one (the last kline may still be in flight when exchangeInfo shows the symbol
    /// gone). Errors are logged; the universe stays as it was.
    async fn refresh_universe(
        &mut self,
        shards: &mut Shards,
        shutdown: &mut Shutdown,
    ) -> Result<(), StreamError> {
        let now = match resolve_universe(&self.rest, &self.source, &self.exclude).await {
            Ok(u) => u,
            Err(StreamError::Rest(e)) => {
                warn!(error = %e, "universe refresh failed; keeping the current symbols");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let now_set: HashSet<String> = now.iter().cloned().collect();
        let listed: Vec<String> = now
            .iter()
            .filter(|s| !self.active.contains(*s))
            .cloned()
            .collect();
        let delisted: Vec<String> = self
            .symbols
            .iter()
            .filter(|s| !now_set.contains(*s))
            .cloned()
            .collect();
        if listed.is_empty() && delisted.is_empty() {
            debug!(symbols = now.len(), "universe unchanged");
            return Ok(());
        }
        if delisted.iter().any(|s| self.buffered.contains_key(s)) {
            self.flush_or_shutdown(shutdown).await?; // their buffered minute first, in order
        }
        // the exchange clock now (the last kline's event time lags it by up to a minute)
        let exchange_now = if delisted.is_empty() {
            self.exchange_time_ms
        } else {
            match self.rest.server_time().await {
                Ok(t) => t.max(self.exchange_time_ms),
                Err(e) => {
                    warn!(error = %e, "server time unavailable; closing minutes of delisted symbols up to the last kline's time");
                    self.exchange_time_ms
                }
            }
        };
        let at = Some(from_ms(exchange_now.max(0)));
        let closed_to = last_closed_open_ms(exchange_now);
        let hold_from = self.catchup_from(exchange_now);
        let mut held = Vec::new();
        let mut events = Vec::new();
        for s in &delisted {
            if let Some(&last) = self.last_written.get(s).filter(|_| self.klines) {
                if closed_to > last {
                    let mut recovered = self
                        .recover(s, last, closed_to, GapTrigger::Delisting, hold_from)
                        .await?;
                    held.append(&mut recovered);
                }
            }
            warn!(symbol = %s, market = %self.market, "symbol left the universe (delisted or not trading): no longer streamed, history kept");
            self.active.remove(s);
            shards.remove(s);
            events.push(QualityEvent {
                symbol: Some(s.clone()),
                kind: quality_kind::DELISTED,
                from_time: at,
                to_time: None,
                rows: None,
                detail: json!({"source": "exchangeInfo", "symbols": now.len()}),
            });
        }
        for s in &listed {
            info!(symbol = %s, market = %self.market, "new symbol in the universe: streaming it after its backfill");
            self.active.insert(s.clone());
            events.push(QualityEvent {
                symbol: Some(s.clone()),
                kind: quality_kind::LISTED,
                from_time: at,
                to_time: None,
                rows: None,
                detail: json!({"source": "exchangeInfo", "symbols": now.len()}),
            });
        }
        self.symbols.retain(|s| now_set.contains(s));
        self.symbols.extend(listed.iter().cloned());
        self.summary.symbols_listed += listed.len() as u64;
        self.summary.symbols_delisted += delisted.len() as u64;
        metrics::counter!(metric::SYMBOLS_LISTED).increment(listed.len() as u64);
        metrics::counter!(metric::SYMBOLS_DELISTED).increment(delisted.len() as u64);
        metrics::gauge!(metric::SYMBOLS).set(self.symbols.len() as f64);
        self.sink.log_quality(&events, None).await?;
        self.write_catchup(held).await?;
        if !listed.is_empty() {
            let before = shards.lists.len();
            shards.open(&listed);
            self.connections_total += shards.lists.len() - before;
            self.set_connections(self.connections_up);
            if self.klines {
                let minutes = self.backfill_minutes;
                self.startup_backfill(&listed, minutes).await?;
            }
        }
        Ok(())
    }

    /// Flushes, but gives up waiting (keeping the buffer) when shutdown fires meanwhile.
    async fn flush_or_shutdown(&mut self, shutdown: &mut Shutdown) -> Result<(), StreamError> {
        if self.buffer.is_empty() {
            self.buffer_since = None;
            return Ok(());
        }
        let batch = self.take_buffer();
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
                self.restore_buffer(keep);
                Ok(())
            }
        }
    }

    /// Fills `symbol` over REST from the minute after `last` (its last written one) to
    /// `to_ms`; returns the recovered minutes from `hold_from` on, for
    /// [`Writer::write_catchup`] to write with alerts.
    async fn recover(
        &mut self,
        symbol: &str,
        last: i64,
        to_ms: i64,
        trigger: GapTrigger,
        hold_from: Option<i64>,
    ) -> Result<Vec<Kline>, StreamError> {
        let outcome = fill_gap(
            &self.rest,
            &mut self.sink,
            symbol,
            last + MINUTE_MS,
            to_ms,
            None,
            trigger,
            hold_from,
        )
        .await?;
        self.summary.gaps_filled += 1;
        self.summary.backfilled_rows += outcome.written;
        if let Some(l) = outcome.last_open_ms {
            if outcome.held.is_empty() {
                self.last_written.insert(symbol.to_string(), l.max(last));
            }
        }
        Ok(outcome.held)
    }

    /// Gap-fills every symbol of `batch` that skipped minutes (recent recovered minutes
    /// with alerts, one statement per minute), then writes the batch with alerts evaluated.
    async fn write_live(
        &mut self,
        batch: Vec<Kline>,
        give_up_after: Option<Duration>,
    ) -> Result<(), StreamError> {
        let hold_from = self.catchup_from(self.exchange_time_ms);
        let mut held = Vec::new();
        for k in &batch {
            if let Some(&last) = self.last_written.get(&k.symbol) {
                let t = k.open_time_ms();
                if t > last + MINUTE_MS {
                    let mut recovered = self
                        .recover(&k.symbol, last, t - MINUTE_MS, GapTrigger::Live, hold_from)
                        .await?;
                    held.append(&mut recovered);
                }
            }
        }
        self.write_catchup(held).await?;
        self.wait_for_ticks().await;
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
