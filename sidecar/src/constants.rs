//! Wire and database constants shared by every ta-feed module (one place, on purpose).

// ---- PostgreSQL contract (sql/*.sql) -------------------------------------------------

/// NOTIFY channel on which the database publishes alert payloads (JSON text).
pub const ALERT_CHANNEL: &str = "ta_alerts";

/// Custom setting read by the alert trigger; `off` inside a transaction suppresses
/// alert evaluation for that transaction (historical loads).
pub const EVALUATE_ALERTS_SETTING: &str = "market.evaluate_alerts";

/// Target table for closed 1-minute klines.
pub const CANDLES_TABLE: &str = "market.candles_1m";

/// Per-connection temporary staging table that binary COPY writes into.
pub const STAGING_TABLE: &str = "candles_in";

/// Aggregate trades (`sql/013_ticks.sql`).
pub const AGG_TRADES_TABLE: &str = "market.agg_trades";

/// Best bid/ask updates (`sql/013_ticks.sql`).
pub const BOOK_TICKERS_TABLE: &str = "market.book_tickers";

/// Table for data-quality events.
pub const DATA_QUALITY_TABLE: &str = "market.data_quality_log";

/// Non-key columns of `market.candles_1m`, in table order (the key is symbol, open_time).
pub const CANDLE_VALUE_COLUMNS: [&str; 10] = [
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
];

/// Key of `pg_advisory_xact_lock` taken by `ta-feed migrate` ("ta_feed" as ASCII bytes).
pub const MIGRATE_LOCK_KEY: i64 = 0x0074_615f_6665_6564;

/// `data_quality_log.kind` values (see COMMENT ON TABLE in sql/002_candles.sql).
pub mod quality_kind {
    /// A missing range of minutes was backfilled over REST (rows = candles written).
    pub const GAP_FILLED: &str = "gap_filled";
    /// REST had no candles for a missing range (exchange outage, or REST unavailable).
    pub const GAP_UNFILLED: &str = "gap_unfilled";
    /// A kline failed validation and was not written.
    pub const REJECTED: &str = "rejected";
    /// close_time is not open_time + 59.999 s (exchange halts); the kline is stored.
    pub const TRUNCATED: &str = "truncated";
    /// A symbol entered the streamed universe (`--symbols all` refresh).
    pub const LISTED: &str = "listed";
    /// A symbol left the streamed universe (delisted, settling); its history is kept.
    pub const DELISTED: &str = "delisted";
    /// A connection was up but delivered no kline for `--silent-timeout-secs`.
    pub const SILENT_CONNECTION: &str = "silent_connection";
    /// An aggTrade id jump seen on the live stream (detail: first_id, last_id, trigger),
    /// written with the trade that revealed it; most are filled within the grace period by a
    /// lagging connection or over REST (`trade_gap_filled`).
    pub const TRADE_GAP: &str = "trade_gap";
    /// An aggTrade id range was recovered over REST `aggTrades?fromId=` (rows = trades
    /// written; detail: first_id, last_id, trigger).
    pub const TRADE_GAP_FILLED: &str = "trade_gap_filled";
    /// An aggTrade id range that REST could not fill (delisted, refused, skipped ids, too
    /// large); detail: first_id, last_id, ids, reason.
    pub const TRADE_GAP_UNFILLED: &str = "trade_gap_unfilled";
    /// Book tickers of a symbol were not received in [from_time, to_time] (a disconnect, a
    /// restart, a full buffer): a state stream has no history to fill it.
    pub const BOOK_TICKER_GAP: &str = "book_ticker_gap";
    /// Ticks that failed validation (per kind, symbol and flush: rows = how many; detail has
    /// a sample with the reason); not written.
    pub const TICK_REJECTED: &str = "tick_rejected";
    /// The tick buffer reached its cap: live ticks were refused until it drained (detail:
    /// kind, dropped, cap); trades come back over REST by id, book tickers are a gap.
    pub const TICK_OVERFLOW: &str = "tick_overflow";
    /// A TimescaleDB job pg_ta relies on started failing (detail: job, relation, last error,
    /// whether its work is overdue) / succeeds again.
    pub const TIMESCALEDB_JOB_FAILING: &str = "timescaledb_job_failing";
    pub const TIMESCALEDB_JOB_OK: &str = "timescaledb_job_ok";
    /// A job's work became overdue (detail.overdue_work) / is done again.
    pub const TIMESCALEDB_WORK_OVERDUE: &str = "timescaledb_work_overdue";
    pub const TIMESCALEDB_WORK_DONE: &str = "timescaledb_work_done";
    /// ta-feed ran an overdue job itself (`CALL run_job`; detail.ok, detail.error).
    pub const TIMESCALEDB_JOB_RUN: &str = "timescaledb_job_run";
}

// ---- Binance wire constants ----------------------------------------------------------

/// Default Binance spot WebSocket base URL.
pub const DEFAULT_WS_URL: &str = "wss://stream.binance.com:9443";
/// Default Binance spot REST base URL.
pub const DEFAULT_REST_URL: &str = "https://api.binance.com";
/// Default DATABASE_URL.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5433/postgres";

/// Kline interval used everywhere.
pub const KLINE_INTERVAL: &str = "1m";
/// Stream name suffix: `<lower-case symbol>@kline_1m`.
pub const KLINE_STREAM_SUFFIX: &str = "@kline_1m";
/// One minute in milliseconds.
pub const MINUTE_MS: i64 = 60_000;
/// close_time − open_time of a complete 1m kline, in milliseconds.
pub const KLINE_CLOSE_OFFSET_MS: i64 = 59_999;
/// Timestamps at or above this are microseconds (spot dumps from 2025 on), below are ms.
pub const MICROSECOND_THRESHOLD: i64 = 1_000_000_000_000_000;

// The limits of `market.candles_1m`'s CHECK constraints (sql/002_candles.sql), mirrored by
// `Kline::validate` so that a kline the table would refuse is rejected alone, before a batch.
/// Largest open_time accepted: the clock plus this, milliseconds (`candles_1m_open_time_check`:
/// `open_time <= statement_timestamp() + interval '2 minutes'`). A closed kline is never in
/// the future; the 2 minutes are the clock skew tolerated between writer and server.
pub const MAX_CLOCK_SKEW_MS: i64 = 2 * MINUTE_MS;
/// Prices are below this (`candles_1m_prices_check`: `high < 1e15`).
pub const PRICE_LIMIT: i64 = 1_000_000_000_000_000;
/// Volumes are below this (`candles_1m_volumes_check`: `volume < 1e20`, ...).
pub const VOLUME_LIMIT: i128 = 100_000_000_000_000_000_000;
/// Most decimals a price or volume may have (`scale(x) <= 20`).
pub const MAX_DECIMALS: u32 = 20;
/// Longest symbol (`candles_1m_symbol_check`: `^[A-Z0-9][A-Z0-9_]{0,39}$`).
pub const MAX_SYMBOL_LEN: usize = 40;

/// REST path of the server time endpoint.
pub const REST_TIME_PATH: &str = "/api/v3/time";
/// REST path of the klines endpoint.
pub const REST_KLINES_PATH: &str = "/api/v3/klines";
/// Maximum `limit` of `/api/v3/klines`.
pub const REST_KLINES_MAX_LIMIT: u32 = 1000;
/// Default `limit` of `/api/v3/klines` when the parameter is absent.
pub const REST_KLINES_DEFAULT_LIMIT: u32 = 500;
/// Request weight of `/api/v3/klines` (limit ≤ 1000).
pub const REST_KLINES_WEIGHT: u32 = 2;
/// Request weight of `/api/v3/time`.
pub const REST_TIME_WEIGHT: u32 = 1;
/// Spot REQUEST_WEIGHT limit per minute per IP.
pub const REST_WEIGHT_LIMIT_1M: u32 = 6000;
/// Response header carrying the used weight of the current minute.
pub const USED_WEIGHT_HEADER: &str = "x-mbx-used-weight-1m";

/// Largest WebSocket message accepted (Binance's are below 10 KiB); a larger one ends the
/// connection (counted, reconnected) instead of being buffered.
pub const MAX_WS_MESSAGE_BYTES: usize = 1 << 20;

/// WebSocket path of combined streams.
pub const WS_COMBINED_PATH: &str = "/stream";
/// Binance limit of streams per WebSocket connection.
pub const MAX_STREAMS_PER_CONNECTION: usize = 1024;
/// Binance closes a connection after 24 h; ta-feed reconnects before that.
pub const DEFAULT_MAX_CONNECTION_AGE_SECS: u64 = 23 * 3600 + 50 * 60;
/// Event type of kline stream payloads.
pub const EVENT_KLINE: &str = "kline";
/// Event type Binance sends before it closes a connection for maintenance.
pub const EVENT_SERVER_SHUTDOWN: &str = "serverShutdown";

// ---- Metrics (Prometheus names) ------------------------------------------------------

pub mod metric {
    pub const KLINES_RECEIVED: &str = "ta_feed_klines_received_total";
    pub const KLINES_CLOSED: &str = "ta_feed_klines_closed_total";
    pub const KLINES_WRITTEN: &str = "ta_feed_klines_written_total";
    pub const KLINES_REJECTED: &str = "ta_feed_klines_rejected_total";
    pub const KLINES_DROPPED: &str = "ta_feed_klines_dropped_total";
    pub const MALFORMED_MESSAGES: &str = "ta_feed_malformed_messages_total";
    pub const RECONNECTS: &str = "ta_feed_ws_reconnects_total";
    pub const BACKFILLED_ROWS: &str = "ta_feed_backfilled_rows_total";
    pub const REST_REQUESTS: &str = "ta_feed_rest_requests_total";
    pub const REST_USED_WEIGHT: &str = "ta_feed_rest_used_weight_1m";
    pub const LAST_CLOSED_OPEN_TIME: &str = "ta_feed_last_closed_open_time_seconds";
    pub const DB_RETRIES: &str = "ta_feed_db_retries_total";
    /// Waits for the next UTC minute because the REST weight budget was spent.
    pub const REST_WEIGHT_WAITS: &str = "ta_feed_rest_weight_waits_total";
    /// Connections that were up but delivered no kline for `--silent-timeout-secs`.
    pub const SILENT_CONNECTIONS: &str = "ta_feed_ws_silent_connections_total";
    /// Planned connection replacements before the exchange's 24 h limit.
    pub const ROTATIONS: &str = "ta_feed_ws_rotations_total";
    /// Closed klines seen twice (on two connections during a rotation) and written once.
    pub const DUPLICATE_KLINES: &str = "ta_feed_klines_duplicate_total";
    /// Symbols added to / removed from the streamed universe.
    pub const SYMBOLS_LISTED: &str = "ta_feed_symbols_listed_total";
    pub const SYMBOLS_DELISTED: &str = "ta_feed_symbols_delisted_total";
    /// Symbols streamed now.
    pub const SYMBOLS: &str = "ta_feed_symbols";
    /// Recovered minutes evaluated for alerts after a gap (`--alert-catchup-minutes`).
    pub const CATCHUP_MINUTES: &str = "ta_feed_alert_catchup_minutes_total";
    /// Tick messages received, by `kind` (agg_trade, book_ticker).
    pub const TICKS_RECEIVED: &str = "ta_feed_ticks_received_total";
    /// Ticks inserted (new rows), by `kind`.
    pub const TICKS_WRITTEN: &str = "ta_feed_ticks_written_total";
    /// Ticks refused by validation, by `kind`.
    pub const TICKS_REJECTED: &str = "ta_feed_ticks_rejected_total";
    /// Ticks already stored or seen (rotation overlap, restart, repeated or backward ids),
    /// by `kind`.
    pub const TICKS_DUPLICATE: &str = "ta_feed_ticks_duplicate_total";
    /// Live ticks refused because the buffer was at its cap, by `kind`.
    pub const TICKS_DROPPED: &str = "ta_feed_ticks_dropped_total";
    /// Ticks waiting to be written, by `kind`.
    pub const TICKS_BUFFERED: &str = "ta_feed_ticks_buffered";
    /// aggTrades recovered over REST by id.
    pub const TRADES_FILLED: &str = "ta_feed_trades_filled_total";
    /// aggTrade ids that could not be recovered.
    pub const TRADES_UNFILLED: &str = "ta_feed_trades_unfilled_total";
    /// Receive → commit latency of live ticks, seconds (histogram), by `kind`.
    pub const TICK_COMMIT_LATENCY: &str = "ta_feed_tick_commit_latency_seconds";
    /// Candle writes that waited the full `--tick-flush-wait-ms` for their minute's ticks.
    pub const TICK_BARRIER_TIMEOUTS: &str = "ta_feed_tick_barrier_timeouts_total";
    /// WebSocket messages larger than the limit (the connection is closed and reconnected).
    pub const OVERSIZED_MESSAGES: &str = "ta_feed_ws_oversized_messages_total";
    /// 1 while a TimescaleDB job pg_ta relies on is failing / its work is overdue (labels
    /// job_id, relation).
    pub const TIMESCALEDB_JOB_FAILING: &str = "ta_feed_timescaledb_job_failing";
    pub const TIMESCALEDB_JOB_OVERDUE: &str = "ta_feed_timescaledb_job_overdue";
    /// Overdue jobs ta-feed ran itself (labels job_id, result).
    pub const TIMESCALEDB_JOB_RUNS: &str = "ta_feed_timescaledb_job_runs_total";
}

// ---- Alert delivery, listen, health (sql/011_alert_delivery.sql, notify, health) -----

/// Metric names of `listen`, `notify` and the health server.
pub mod notify_metric {
    pub const FORGED_NOTIFICATIONS: &str = "ta_feed_forged_notifications_total";
}
