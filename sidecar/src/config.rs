//! Command line (clap derive). Every flag can also be set through the environment
//! variable named in `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::constants::{ALERT_CHANNEL, DEFAULT_DATABASE_URL, DEFAULT_MAX_CONNECTION_AGE_SECS};
use crate::market::Market;
use crate::notify::{DEFAULT_DISCORD_API_URL, DEFAULT_TELEGRAM_API_URL};

/// Re-exported from [`crate::db`], where it lives (a lower layer than the command line).
pub use crate::db::redact_database_url;

/// ta-feed: Binance 1-minute klines into PostgreSQL for pg_ta.
#[derive(Debug, Parser)]
#[command(name = "ta-feed", version, about, long_about = None)]
pub struct Cli {
    /// PostgreSQL connection string (URL or key=value). The password is never printed.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = DEFAULT_DATABASE_URL,
        global = true,
        hide_env_values = true
    )]
    pub database_url: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply the embedded sql/*.sql files (file-name order, one transaction, advisory lock).
    Migrate,
    /// Stream closed 1m klines from Binance into market.candles_1m (with REST backfill).
    Stream(StreamArgs),
    /// Print the symbols `stream --symbols all` would stream (exchangeInfo filtered), one a
    /// line, sorted.
    Symbols(SymbolsArgs),
    /// Import Binance public-data kline CSVs (12 columns, plain or .gz) with alerts off.
    Import(ImportArgs),
    /// Run a fake Binance (REST + WebSocket) that replays recorded klines12 CSVs.
    Replay(ReplayArgs),
    /// LISTEN on the alert channel and print every alert stored in market.alert_history as
    /// one JSON line (forged notifications are logged and skipped).
    Listen(ListenArgs),
    /// Deliver alerts from market.alert_deliveries to Discord, Telegram and webhook sinks
    /// (at least once per matching sink, across restarts).
    Notify(NotifyArgs),
}

#[derive(Debug, Clone, Args)]
pub struct SymbolsArgs {
    /// Market: spot (api.binance.com) or usdm (USDⓈ-M futures, fapi.binance.com).
    #[arg(long, env = "MARKET", value_enum, default_value_t = Market::Spot)]
    pub market: Market,

    /// Binance REST base URL; default by market (https://api.binance.com,
    /// https://fapi.binance.com).
    #[arg(long, env = "BINANCE_REST_URL")]
    pub rest_url: Option<String>,

    /// Symbols left out, comma separated (case-insensitive).
    #[arg(long, env = "EXCLUDE_SYMBOLS", value_delimiter = ',')]
    pub exclude: Vec<String>,
}

impl SymbolsArgs {
    /// `--rest-url` or the market's default.
    pub fn rest_url(&self) -> String {
        self.rest_url
            .clone()
            .unwrap_or_else(|| self.market.default_rest_url().to_string())
    }
}

#[derive(Debug, Clone, Args)]
pub struct StreamArgs {
    /// Symbols to stream, comma separated (case-insensitive), e.g. BTCUSDT,ETHUSDT; or `all`:
    /// every symbol of exchangeInfo in the market's universe (usdm: PERPETUAL, TRADING,
    /// quote and margin asset USDT; spot: TRADING with quote asset USDT), refreshed every
    /// --universe-refresh-secs.
    #[arg(long, env = "SYMBOLS", value_delimiter = ',', required = true, num_args = 1..)]
    pub symbols: Vec<String>,

    /// Market: spot (api.binance.com) or usdm (USDⓈ-M futures, fapi.binance.com). Stored in
    /// market.candles_1m.market.
    #[arg(long, env = "MARKET", value_enum, default_value_t = Market::Spot)]
    pub market: Market,

    /// Symbols never streamed, comma separated (case-insensitive).
    #[arg(long, env = "EXCLUDE_SYMBOLS", value_delimiter = ',')]
    pub exclude: Vec<String>,

    /// Binance WebSocket base URL; default by market (wss://stream.binance.com:9443,
    /// wss://fstream.binance.com). Combined streams are at {ws-url}/stream (spot) and
    /// {ws-url}/market/stream (usdm).
    #[arg(long, env = "BINANCE_WS_URL")]
    pub ws_url: Option<String>,

    /// Binance REST base URL; default by market (https://api.binance.com,
    /// https://fapi.binance.com).
    #[arg(long, env = "BINANCE_REST_URL")]
    pub rest_url: Option<String>,

    /// Streams per WebSocket connection (Binance allows 1024); connections open 250 ms apart.
    #[arg(long, env = "STREAMS_PER_CONNECTION", default_value_t = 200,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub streams_per_connection: u64,

    /// A connection that is up but delivered no kline for this many seconds is logged as an
    /// error (data_quality_log kind silent_connection), counted and reconnected.
    #[arg(long, env = "SILENT_TIMEOUT_SECS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub silent_timeout_secs: u64,

    /// Minutes recovered over REST after a gap that are at most this many minutes older
    /// than exchange time are evaluated for alerts like live minutes (one statement per
    /// minute, in order); older ones are stored with alerts off. 0: never.
    #[arg(long, env = "ALERT_CATCHUP_MINUTES", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(0..=1440))]
    pub alert_catchup_minutes: u64,

    /// With --symbols all, re-read exchangeInfo this often, seconds (new listings start
    /// streaming with their backfill; delisted symbols stop). 0: never.
    #[arg(long, env = "UNIVERSE_REFRESH_SECS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(0..=604_800))]
    pub universe_refresh_secs: u64,

    /// Minutes of history loaded at start-up for a symbol with no stored candles
    /// (symbols with candles resume after their newest stored minute).
    #[arg(long, env = "BACKFILL_MINUTES", default_value_t = 1440)]
    pub backfill_minutes: u64,

    /// Flush buffered closed klines at the latest this many milliseconds after the first
    /// one was buffered.
    #[arg(long, env = "FLUSH_MS", default_value_t = 500)]
    pub flush_ms: u64,

    /// WebSocket reconnect: first delay, milliseconds.
    #[arg(long, env = "RECONNECT_INITIAL_MS", default_value_t = 1000)]
    pub reconnect_initial_ms: u64,

    /// WebSocket reconnect: maximum delay, milliseconds.
    #[arg(long, env = "RECONNECT_MAX_MS", default_value_t = 60_000)]
    pub reconnect_max_ms: u64,

    /// WebSocket reconnect: delay multiplier after each failed attempt (reset once a
    /// connection delivered a closed kline).
    #[arg(long, env = "RECONNECT_MULTIPLIER", default_value_t = 2.0,
          value_parser = finite_in(1.0, 10.0))]
    pub reconnect_multiplier: f64,

    /// Database reconnect: first delay, milliseconds (doubles up to --db-retry-max-ms).
    #[arg(long, env = "DB_RETRY_INITIAL_MS", default_value_t = 500)]
    pub db_retry_initial_ms: u64,

    /// Database reconnect: maximum delay, milliseconds.
    #[arg(long, env = "DB_RETRY_MAX_MS", default_value_t = 30_000)]
    pub db_retry_max_ms: u64,

    /// Reconnect each WebSocket proactively after this many seconds (Binance closes
    /// connections at 24 h). Default 85800 s = 23 h 50 min.
    #[arg(long, env = "MAX_CONNECTION_AGE_SECS", default_value_t = DEFAULT_MAX_CONNECTION_AGE_SECS)]
    pub max_connection_age_secs: u64,

    /// Reconnect when nothing (data or ping) arrived on a connection for this many seconds.
    #[arg(long, env = "IDLE_TIMEOUT_SECS", default_value_t = 120)]
    pub idle_timeout_secs: u64,

    /// REST request weight spent per UTC minute at most (X-MBX-USED-WEIGHT-1M counts it
    /// too); default 5/6 of the market's limit: 5000 of spot's 6000, 2000 of usdm's 2400.
    #[arg(long, env = "REST_WEIGHT_SOFT_LIMIT",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rest_weight_soft_limit: Option<u32>,

    /// Attempts per REST request on 429 (after Retry-After), 5xx or network errors.
    #[arg(long, env = "REST_MAX_ATTEMPTS", default_value_t = 8)]
    pub rest_max_attempts: u32,

    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9898); off when unset.
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Stop cleanly after this many distinct live minutes were written (0 = run until
    /// SIGINT/SIGTERM). Meant for tests and demos.
    #[arg(long, env = "STOP_AFTER_MINUTES", default_value_t = 0)]
    pub stop_after_minutes: u64,

    /// Serve /health, /ready, /live and /metrics on this address (e.g. 127.0.0.1:9898); off
    /// when unset. --metrics-addr serves the same endpoints.
    #[arg(long, env = "HEALTH_ADDR")]
    pub health_addr: Option<SocketAddr>,

    /// Call market.apply_retention() (market.settings retention, candle time) this often,
    /// seconds; 0 = never (e.g. when a TimescaleDB job or cron does it).
    #[arg(long, env = "RETENTION_INTERVAL_SECS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(0..=604_800))]
    pub retention_interval_secs: u64,

    /// With TimescaleDB: check the jobs pg_ta relies on (compression, continuous-aggregate
    /// refresh, retention) this often, seconds, by status and by outcome
    /// (market.timescaledb_job_health()); 0 = never.
    #[arg(long, env = "TIMESCALEDB_CHECK_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub timescaledb_check_secs: u64,

    /// A TimescaleDB job's work that stays pending (as seen by these checks) for longer than
    /// this is overdue, seconds (default: two schedule intervals of the job, at least 10
    /// minutes).
    #[arg(long, env = "TIMESCALEDB_OVERDUE_MARGIN_SECS",
          value_parser = clap::value_parser!(u64).range(1..=2_592_000))]
    pub timescaledb_overdue_margin_secs: Option<u64>,

    /// Report overdue TimescaleDB jobs but never run them (by default ta-feed runs an overdue
    /// job itself with CALL run_job(id)).
    #[arg(long, env = "NO_TIMESCALEDB_REPAIR")]
    pub no_timescaledb_repair: bool,

    #[command(flatten)]
    pub ticks: TickArgs,
}

/// The tick options of `stream` (aggTrades and book tickers).
#[derive(Debug, Clone, Args)]
pub struct TickArgs {
    /// Stream kinds, comma separated: kline (closed 1m klines → market.candles_1m), agg_trade
    /// (aggregate trades → market.agg_trades, gaps filled by id over REST), book_ticker (best
    /// bid/ask → market.book_tickers, gaps recorded). USD-M: klines and aggTrades on /market,
    /// book tickers on /public.
    #[arg(long, env = "STREAMS", value_enum, value_delimiter = ',', num_args = 1..,
          default_value = "kline")]
    pub streams: Vec<crate::binance::kind::StreamKind>,

    /// Tick rows per COPY transaction at most.
    #[arg(long, env = "TICK_BATCH_ROWS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub tick_batch_rows: u64,

    /// Write buffered ticks at the latest this many milliseconds after the first one.
    #[arg(long, env = "TICK_FLUSH_MS", default_value_t = 200,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub tick_flush_ms: u64,

    /// Ticks waiting per kind (aggTrades, book tickers) before live ticks are refused: the
    /// memory cap. Refused aggTrades are recovered over REST by id once the buffer drained to
    /// half; refused book tickers are a recorded gap.
    #[arg(long, env = "TICK_BUFFER_ROWS", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(100..=100_000_000))]
    pub tick_buffer_rows: u64,

    /// Longest wait, milliseconds, of a live candle for the ticks received before it to be
    /// committed (their minute's trades and book tickers are then in the database when the
    /// candle's transaction runs); 0: do not wait.
    #[arg(long, env = "TICK_FLUSH_WAIT_MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub tick_flush_wait_ms: u64,

    /// Missing aggTrade ids are fetched over REST when still missing this many milliseconds
    /// after the jump (a lagging connection, e.g. during a rotation, usually delivers them).
    #[arg(long, env = "TRADE_GAP_GRACE_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub trade_gap_grace_ms: u64,

    /// A gap of more aggTrade ids than this is logged as unfilled instead of read over REST
    /// (import the exchange's dumps for long outages).
    #[arg(long, env = "TRADE_GAP_MAX_IDS", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(i64).range(1..))]
    pub trade_gap_max_ids: i64,

    /// Share of --rest-weight-soft-limit that aggTrade gap fills may spend per minute (the
    /// rest is kept for kline backfill, kline gap fills and exchangeInfo), in (0, 1].
    #[arg(long, env = "TRADE_FILL_WEIGHT_SHARE", default_value_t = 0.5,
          value_parser = finite_in(0.01, 1.0))]
    pub trade_fill_weight_share: f64,

    /// Database connections writing each tick kind (symbols are spread over them; each
    /// symbol's rows are committed in order).
    #[arg(long, env = "TICK_WRITERS", default_value_t = 2,
          value_parser = clap::value_parser!(u64).range(1..=16))]
    pub tick_writers: u64,

    /// At a rotation, keep the old connection this many milliseconds after its replacement
    /// delivered its first message (both deliver; what is seen twice is written once).
    #[arg(long, env = "ROTATION_OVERLAP_MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub rotation_overlap_ms: u64,
}

impl TickArgs {
    /// Applies the tick options to a stream configuration.
    pub fn apply(&self, cfg: &mut crate::stream::StreamConfig) {
        cfg.streams = self.streams.clone();
        cfg.tick_batch_rows = self.tick_batch_rows as usize;
        cfg.tick_flush = Duration::from_millis(self.tick_flush_ms);
        cfg.tick_buffer_rows = self.tick_buffer_rows as usize;
        cfg.tick_flush_wait = Duration::from_millis(self.tick_flush_wait_ms);
        cfg.trade_gap_grace = Duration::from_millis(self.trade_gap_grace_ms);
        cfg.trade_gap_max_ids = self.trade_gap_max_ids;
        cfg.rest.trade_weight_share = self.trade_fill_weight_share;
        cfg.rotation_overlap = Duration::from_millis(self.rotation_overlap_ms);
        cfg.tick_writers = self.tick_writers as usize;
    }
}

#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// Kline CSV files (.csv or .csv.gz). Symbol from the file name
    /// (SYMBOL-1m-....csv[.gz]) unless --symbol is given.
    #[arg(env = "IMPORT_FILES", value_delimiter = ',', required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,

    /// Symbol for every file (overrides the file name).
    #[arg(long, env = "IMPORT_SYMBOL")]
    pub symbol: Option<String>,

    /// Rows per COPY + upsert statement. Each file is one transaction: a bad row anywhere
    /// in it leaves nothing of that file behind.
    #[arg(long, env = "IMPORT_BATCH_ROWS", default_value_t = 50_000)]
    pub batch_rows: usize,

    /// Market of the files' instruments (`market.candles_1m.market`): spot (data.binance.vision
    /// spot/...) or usdm (futures/um/...).
    #[arg(long, env = "MARKET", value_enum, default_value_t = crate::market::Market::Spot)]
    pub market: crate::market::Market,

    /// Connections importing different symbols in parallel (files of one symbol always go
    /// one after another, in the order given). Default: the number of CPUs, at most 4.
    #[arg(long, env = "IMPORT_JOBS", value_parser = clap::value_parser!(u64).range(1..=64))]
    pub jobs: Option<u64>,

    /// What the files hold: kline (klines12 CSVs), agg_trade (aggTrades dumps → market.
    /// agg_trades), book_ticker (futures bookTicker dumps → market.book_tickers). Default: from
    /// each file name (SYMBOL-aggTrades-..., SYMBOL-bookTicker-..., else klines).
    #[arg(long, env = "IMPORT_KIND", value_enum)]
    pub kind: Option<crate::binance::kind::StreamKind>,
}

#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// Files to serve (any number of files and symbols; kind and symbol from the file name):
    /// klines12 CSVs (SYMBOL-1m-...), aggTrades dumps (SYMBOL-aggTrades-...: @aggTrade, REST
    /// aggTrades, and the symbol's klines derived from its trades), book-ticker recordings
    /// (SYMBOL-bookTicker-..., SYMBOL-quotes-....tardis.csv[.gz]: @bookTicker). Plain, .gz or
    /// .zip. Repeat --file or separate with commas.
    #[arg(long = "file", env = "REPLAY_FILES", value_delimiter = ',', required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,

    /// Address to listen on; port 0 picks a free port. The first stdout line is
    /// `listening on ADDR`.
    #[arg(long, env = "REPLAY_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: String,

    /// Replayed seconds per real second (600 = ten replayed minutes per second); finite, in
    /// [0.001, 10000000].
    #[arg(long, env = "REPLAY_SPEED", default_value_t = 1.0,
          value_parser = finite_in(0.001, 1e7))]
    pub speed: f64,

    /// Replay start time: RFC 3339 or epoch milliseconds. Default: first open_time in the
    /// data + 1440 minutes (a day of history for backfill). The replay clock starts at this
    /// time with the first request it serves.
    #[arg(long, env = "REPLAY_START")]
    pub start: Option<String>,

    /// Close each WebSocket connection (serverShutdown event + close frame) after this many
    /// closed minutes were sent on it.
    #[arg(long, env = "REPLAY_DROP_AFTER")]
    pub drop_after: Option<u64>,

    /// Real seconds between WebSocket pings (connections without pongs for 3 intervals
    /// are closed). Default: 20 (spot), 180 (usdm).
    #[arg(long, env = "REPLAY_PING_SECS", value_parser = finite_in(0.05, 86_400.0))]
    pub ping_secs: Option<f64>,

    /// Answer the first N klines requests with 429 and Retry-After: 1.
    #[arg(long, env = "REPLAY_FAIL_REST", default_value_t = 0)]
    pub fail_rest: u32,

    /// Replay milliseconds between a kline's close_time and its closed (x:true) event.
    /// Default: 200 (spot), 2000 (usdm).
    #[arg(long, env = "REPLAY_CLOSE_DELAY_MS")]
    pub close_delay_ms: Option<i64>,

    /// Binance market to fake: spot (/api/v3, /stream) or usdm (/fapi/v1, /market/stream,
    /// 2400 weight per wall-clock minute, Binance's WebSocket limits).
    #[arg(long, env = "REPLAY_MARKET", value_enum, default_value_t = crate::market::Market::Spot)]
    pub market: crate::market::Market,

    /// Recorded Binance exchangeInfo (.json or .json.gz) served as is (serverTime set to
    /// replay now). Default: one built from the served symbols.
    #[arg(long, env = "REPLAY_EXCHANGE_INFO")]
    pub exchange_info: Option<PathBuf>,

    /// usdm only: close each WebSocket connection after this many replay seconds (Binance:
    /// 86400). Default: never.
    #[arg(long, env = "REPLAY_CONNECTION_LIFETIME",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub connection_lifetime: Option<u64>,

    /// Serve every file symbol BASEUSDT as N symbols: itself and BASE01USDT..BASE{N-1}USDT
    /// with prices and quote volumes × (1000 + k) / 1000 (exact decimals).
    #[arg(long, env = "REPLAY_CLONE_SYMBOLS", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub clone_symbols: u32,

    /// SYMBOL@TIME (RFC 3339 or epoch ms; repeatable): the symbol does not exist before
    /// TIME and has klines from TIME's minute on.
    #[arg(long, env = "REPLAY_LIST", value_delimiter = ',')]
    pub list: Vec<String>,

    /// SYMBOL@TIME (repeatable): no klines with open_time ≥ TIME; status SETTLING (spot:
    /// BREAK) in exchangeInfo from TIME on.
    #[arg(long, env = "REPLAY_DELIST", value_delimiter = ',')]
    pub delist: Vec<String>,

    /// Append one JSON line per connection and minute once its closed klines were sent:
    /// {"connection","open_time","klines","sent_at_ms"}.
    #[arg(long, env = "REPLAY_SENT_LOG")]
    pub sent_log: Option<PathBuf>,

    /// REQUEST_WEIGHT limit per minute. Default: the market's (spot 6000, usdm 2400).
    #[arg(long, env = "REPLAY_WEIGHT_LIMIT_1M")]
    pub weight_limit_1m: Option<u32>,

    /// Move each book-ticker recording (bookTicker dumps, Tardis quotes) in time so its first
    /// update is at TIME (RFC 3339 or epoch ms): a recording of another day can accompany the
    /// trades of this replay.
    #[arg(long, env = "REPLAY_BOOK_TICKERS_FROM")]
    pub book_tickers_from: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ListenArgs {
    /// NOTIFY channel to LISTEN on.
    #[arg(long, env = "ALERT_CHANNEL", default_value = ALERT_CHANNEL)]
    pub channel: String,
}

#[derive(Debug, Clone, Args)]
pub struct NotifyArgs {
    /// NOTIFY channel that wakes the notifier (payloads are never trusted).
    #[arg(long, env = "ALERT_CHANNEL", default_value = ALERT_CHANNEL)]
    pub channel: String,

    /// Serve /health, /ready, /live and /metrics on this address; off when unset.
    #[arg(long, env = "HEALTH_ADDR")]
    pub health_addr: Option<SocketAddr>,

    /// Discord API base URL (requests go to {url}/webhooks/ID/TOKEN).
    #[arg(long, env = "DISCORD_API_URL", default_value = DEFAULT_DISCORD_API_URL)]
    pub discord_api_url: url::Url,

    /// Telegram Bot API base URL (requests go to {url}/botTOKEN/sendMessage).
    #[arg(long, env = "TELEGRAM_API_URL", default_value = DEFAULT_TELEGRAM_API_URL)]
    pub telegram_api_url: url::Url,

    /// Look for due deliveries at least this often, milliseconds (LISTEN wakes it sooner).
    #[arg(long, env = "NOTIFY_POLL_INTERVAL_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub poll_interval_ms: u64,

    /// Re-read market.alert_sinks (and refresh /health figures) this often, milliseconds.
    #[arg(long, env = "NOTIFY_SINKS_REFRESH_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub sinks_refresh_ms: u64,

    /// First retry delay after a failed send, milliseconds (doubles per consecutive failure).
    #[arg(long, env = "NOTIFY_RETRY_INITIAL_MS", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub retry_initial_ms: u64,

    /// Longest retry delay of a healthy sink, milliseconds.
    #[arg(long, env = "NOTIFY_RETRY_MAX_MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    pub retry_max_ms: u64,

    /// Consecutive failed sends after which a sink is marked unhealthy.
    #[arg(long, env = "NOTIFY_UNHEALTHY_AFTER", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub unhealthy_after: u32,

    /// Retry delay of an unhealthy sink, milliseconds.
    #[arg(long, env = "NOTIFY_UNHEALTHY_RETRY_MS", default_value_t = 300_000,
          value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    pub unhealthy_retry_ms: u64,

    /// Timeout of one HTTP request to a sink, milliseconds.
    #[arg(long, env = "NOTIFY_SEND_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub send_timeout_ms: u64,

    /// Call market.prune_alert_deliveries() this often, seconds.
    #[arg(long, env = "NOTIFY_PRUNE_INTERVAL_SECS", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub prune_interval_secs: u64,

    /// Database connections shared by all sink workers (the notifier opens one more to
    /// LISTEN and read the sinks). A send holds one for its duration; more sinks than
    /// connections take turns.
    #[arg(long, env = "NOTIFY_DB_POOL_SIZE", default_value_t = crate::notify::DEFAULT_DB_POOL_SIZE as u64,
          value_parser = clap::value_parser!(u64).range(1..=64))]
    pub db_pool_size: u64,

    /// Let webhooks reach any address: loopback, private (10/8, 172.16/12, 192.168/16),
    /// link-local (169.254/16, fe80::/10), unique-local (fc00::/7), multicast, unspecified.
    /// Off: such targets fail permanently ("webhook target refused"). For tests and trusted
    /// setups; prefer --allow-target-network.
    #[arg(long, env = "TA_FEED_ALLOW_PRIVATE_TARGETS",
          value_parser = clap::builder::FalseyValueParser::new())]
    pub allow_private_targets: bool,

    /// Networks (CIDR, e.g. 10.20.0.0/16 or fd00:1::/64; repeat or separate with commas)
    /// that webhooks may reach although they are not public.
    #[arg(
        long = "allow-target-network",
        env = "TA_FEED_ALLOW_TARGET_NETWORKS",
        value_delimiter = ','
    )]
    pub allow_target_networks: Vec<ipnet::IpNet>,
}

impl NotifyArgs {
    /// The notifier's settings.
    pub fn config(&self, database_url: &str) -> crate::notify::NotifyConfig {
        let mut c = crate::notify::NotifyConfig::new(database_url);
        c.channel = self.channel.clone();
        c.endpoints.discord_api = self.discord_api_url.clone();
        c.endpoints.telegram_api = self.telegram_api_url.clone();
        c.poll_interval = Duration::from_millis(self.poll_interval_ms);
        c.sinks_refresh = Duration::from_millis(self.sinks_refresh_ms);
        c.retry_initial = Duration::from_millis(self.retry_initial_ms);
        c.retry_max = Duration::from_millis(self.retry_max_ms);
        c.unhealthy_after = self.unhealthy_after;
        c.unhealthy_retry = Duration::from_millis(self.unhealthy_retry_ms);
        c.send_timeout = Duration::from_millis(self.send_timeout_ms);
        c.prune_interval = Duration::from_secs(self.prune_interval_secs);
        c.db_pool_size = self.db_pool_size as usize;
        c.network = crate::notify::NetworkPolicy {
            allow_private: self.allow_private_targets,
            allowed_networks: self.allow_target_networks.clone(),
        };
        c
    }
}

/// A clap value parser for an `f64` that must be finite and within `[lo, hi]` (a clear error
/// instead of a panic in `Duration::from_secs_f64` later).
fn finite_in(lo: f64, hi: f64) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync {
    move |text: &str| {
        let v: f64 = text
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not a number"))?;
        if v.is_finite() && (lo..=hi).contains(&v) {
            Ok(v)
        } else {
            Err(format!("{text} is outside [{lo}, {hi}]"))
        }
    }
}

impl StreamArgs {
    pub fn flush(&self) -> Duration {
        Duration::from_millis(self.flush_ms)
    }

    /// `--ws-url` or the market's default.
    pub fn ws_url(&self) -> String {
        self.ws_url
            .clone()
            .unwrap_or_else(|| self.market.default_ws_url().to_string())
    }

    /// `--rest-url` or the market's default.
    pub fn rest_url(&self) -> String {
        self.rest_url
            .clone()
            .unwrap_or_else(|| self.market.default_rest_url().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent_and_parses() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "ta-feed",
            "stream",
            "--symbols",
            "btcusdt,ETHUSDT",
            "--flush-ms",
            "100",
        ])
        .unwrap();
        let Command::Stream(s) = cli.command else {
            panic!()
        };
        assert_eq!(s.symbols, vec!["btcusdt", "ETHUSDT"]);
        assert_eq!(s.flush(), Duration::from_millis(100));
        assert_eq!(s.backfill_minutes, 1440);
        assert_eq!(s.market, Market::Spot);
        assert_eq!(s.ws_url(), "wss://stream.binance.com:9443");
        let cli = Cli::try_parse_from([
            "ta-feed",
            "stream",
            "--symbols",
            "all",
            "--market",
            "usdm",
            "--exclude",
            "a,b",
        ])
        .unwrap();
        let Command::Stream(s) = cli.command else {
            panic!()
        };
        assert_eq!(s.market, Market::Usdm);
        assert_eq!(s.rest_url(), "https://fapi.binance.com");
        assert_eq!(s.ws_url(), "wss://fstream.binance.com");
        assert_eq!(s.exclude, vec!["a", "b"]);
        assert_eq!(s.streams_per_connection, 200);
        for bad in [
            ["--streams-per-connection", "1025"],
            ["--streams-per-connection", "0"],
            ["--silent-timeout-secs", "0"],
            ["--market", "coinm"],
        ] {
            let r = Cli::try_parse_from(["ta-feed", "stream", "--symbols", "all", bad[0], bad[1]]);
            assert!(r.is_err(), "{bad:?} accepted");
        }
        let cli = Cli::try_parse_from([
            "ta-feed", "replay", "--file", "a.csv", "b.csv", "--speed", "600",
        ])
        .unwrap();
        let Command::Replay(r) = cli.command else {
            panic!()
        };
        assert_eq!(r.files.len(), 2);
        assert_eq!(r.speed, 600.0);
        // numeric flags are range-checked: never a panic in Duration::from_secs_f64
        for bad in [
            ["--speed", "1e-300"],
            ["--speed", "inf"],
            ["--speed", "NaN"],
            ["--ping-secs", "inf"],
            ["--ping-secs", "0"],
            ["--ping-secs", "x"],
        ] {
            let r = Cli::try_parse_from(["ta-feed", "replay", "--file", "a.csv", bad[0], bad[1]]);
            assert!(r.is_err(), "{bad:?} accepted");
        }
        for bad in ["inf", "0.5", "1e300"] {
            let r = Cli::try_parse_from([
                "ta-feed",
                "stream",
                "--symbols",
                "BTCUSDT",
                "--reconnect-multiplier",
                bad,
            ]);
            assert!(r.is_err(), "--reconnect-multiplier {bad} accepted");
        }
        let cli =
            Cli::try_parse_from(["ta-feed", "import", "x.csv.gz", "--symbol", "btcusdt"]).unwrap();
        assert!(matches!(cli.command, Command::Import(_)));
        let cli = Cli::try_parse_from([
            "ta-feed",
            "notify",
            "--discord-api-url",
            "http://127.0.0.1:9/api",
            "--retry-initial-ms",
            "250",
        ])
        .unwrap();
        let Command::Notify(n) = cli.command else {
            panic!()
        };
        let c = n.config("postgres://h/db");
        assert_eq!(c.endpoints.discord_api.as_str(), "http://127.0.0.1:9/api");
        assert_eq!(c.retry_initial, Duration::from_millis(250));
        assert_eq!(c.unhealthy_after, 5);
        // numeric flags are range-checked
        for bad in [
            ["--retry-initial-ms", "0"],
            ["--unhealthy-after", "0"],
            ["--send-timeout-ms", "-1"],
            ["--poll-interval-ms", "1e300"],
        ] {
            let r = Cli::try_parse_from(["ta-feed", "notify", bad[0], bad[1]]);
            assert!(r.is_err(), "{bad:?} accepted");
        }
        assert!(
            Cli::try_parse_from(["ta-feed", "notify", "--discord-api-url", "not a url"]).is_err()
        );
        // the network policy: strict by default; private targets and networks on request
        assert!(!c.network.allow_private && c.network.allowed_networks.is_empty());
        assert_eq!(c.db_pool_size, crate::notify::DEFAULT_DB_POOL_SIZE);
        let cli = Cli::try_parse_from([
            "ta-feed",
            "notify",
            "--allow-private-targets",
            "--allow-target-network",
            "10.20.0.0/16,fd00:1::/64",
            "--allow-target-network",
            "127.0.0.1/32",
            "--db-pool-size",
            "2",
        ])
        .unwrap();
        let Command::Notify(n) = cli.command else {
            panic!()
        };
        let c = n.config("postgres://h/db");
        assert!(c.network.allow_private);
        assert_eq!(c.network.allowed_networks.len(), 3);
        assert_eq!(c.db_pool_size, 2);
        for bad in [
            ["--allow-target-network", "10.0.0.0/33"],
            ["--allow-target-network", "localhost"],
            ["--db-pool-size", "0"],
            ["--db-pool-size", "65"],
        ] {
            let r = Cli::try_parse_from(["ta-feed", "notify", bad[0], bad[1]]);
            assert!(r.is_err(), "{bad:?} accepted");
        }
    }
}
