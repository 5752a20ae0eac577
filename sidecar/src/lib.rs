//! ta-feed: the pg_ta sidecar. Streams closed Binance 1m klines into PostgreSQL
//! (`market.candles_1m`) with REST backfill and gap fills, and optionally aggTrades and book
//! tickers (`market.agg_trades`, `market.book_tickers`, gaps filled by id); imports Binance
//! dumps, applies the data schema, prints alert NOTIFYs, and fakes Binance for tests.
//!
//! Layers, lowest first (a module imports only from lower ones): `constants`, `market`,
//! `backoff`, `shutdown` → `binance::{model, kind}` → `binance::{rest, ws}`, `db` → `sink` →
//! `backfill`, `ticks` → `stream`, `import`, `import_ticks`, `replay`, `health`, `listen`,
//! `notify`, `migrate` → `config` → `lib::run`.
//!
//! `main.rs` only parses the command line, sets up logging and calls [`run`].

pub mod backfill;
pub mod backoff;
pub mod binance;
pub mod config;
pub mod constants;
pub mod db;
pub mod health;
pub mod import;
pub mod import_ticks;
pub mod listen;
pub mod market;
pub mod migrate;
pub mod notify;
pub mod replay;
pub mod shutdown;
pub mod sink;
pub mod stream;
pub mod text;
pub mod ticks;
pub mod timescaledb;

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use tracing::info;

use crate::config::{Cli, Command};
use crate::db::redact_database_url;

/// Installs the process-wide rustls crypto provider (ring). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Runs one subcommand until it finishes or `shutdown` completes.
pub async fn run(
    cli: Cli,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    install_crypto_provider();
    let db = redact_database_url(&cli.database_url);
    match cli.command {
        Command::Migrate => {
            info!(database = %db, "migrate");
            let applied = migrate::migrate(&cli.database_url)
                .await
                .with_context(|| format!("migrate {db}"))?;
            for f in &applied {
                println!("applied {f}");
            }
            println!(
                "migrate: {} file(s) applied in one transaction",
                applied.len()
            );
        }
        Command::Stream(args) => {
            let source = stream::SymbolSource::parse(&args.symbols);
            let exclude: Vec<String> = args
                .exclude
                .iter()
                .map(|s| s.trim().to_ascii_uppercase())
                .filter(|s| !s.is_empty())
                .collect();
            let (ws_url, rest_url) = (args.ws_url(), args.rest_url());
            info!(
                database = %db,
                market = %args.market,
                symbols = ?source,
                ?exclude,
                %ws_url,
                %rest_url,
                backfill_minutes = args.backfill_minutes,
                flush_ms = args.flush_ms,
                streams = ?args.ticks.streams,
                "stream"
            );
            let health = serve_health(
                health::Component::Stream,
                [args.health_addr, args.metrics_addr],
            )
            .await?;
            let mut cfg = stream::StreamConfig::for_market(
                &cli.database_url,
                args.market,
                source,
                &ws_url,
                &rest_url,
            );
            if let Some(h) = health {
                cfg.health = h;
            }
            cfg.exclude = exclude;
            cfg.backfill_minutes = args.backfill_minutes;
            cfg.flush = args.flush();
            cfg.reconnect_initial = Duration::from_millis(args.reconnect_initial_ms);
            cfg.reconnect_max = Duration::from_millis(args.reconnect_max_ms);
            cfg.reconnect_multiplier = args.reconnect_multiplier;
            cfg.db_retry_initial = Duration::from_millis(args.db_retry_initial_ms);
            cfg.db_retry_max = Duration::from_millis(args.db_retry_max_ms);
            cfg.max_connection_age = Duration::from_secs(args.max_connection_age_secs.max(1));
            cfg.idle_timeout = Duration::from_secs(args.idle_timeout_secs.max(1));
            if let Some(w) = args.rest_weight_soft_limit {
                cfg.rest.weight_soft_limit = w;
            }
            cfg.rest.max_attempts = args.rest_max_attempts.max(1);
            cfg.stop_after_minutes = args.stop_after_minutes;
            cfg.retention_interval = Duration::from_secs(args.retention_interval_secs);
            cfg.streams_per_connection = args.streams_per_connection as usize;
            cfg.silent_timeout = Duration::from_secs(args.silent_timeout_secs);
            cfg.alert_catchup_minutes = args.alert_catchup_minutes;
            cfg.universe_refresh = Duration::from_secs(args.universe_refresh_secs);
            args.ticks.apply(&mut cfg);
            cfg.timescaledb_check = Duration::from_secs(args.timescaledb_check_secs);
            cfg.timescaledb_margin = args
                .timescaledb_overdue_margin_secs
                .map(Duration::from_secs);
            cfg.timescaledb_repair = !args.no_timescaledb_repair;
            let summary = stream::run_stream(cfg, shutdown).await.context("stream")?;
            info!(?summary, "stream finished");
        }
        Command::Symbols(args) => {
            let rest_url = args.rest_url();
            let rest = binance::rest::RestClient::new(binance::rest::RestConfig::for_market(
                &rest_url,
                args.market,
            ))?;
            let exclude: Vec<String> = args
                .exclude
                .iter()
                .map(|s| s.trim().to_ascii_uppercase())
                .collect();
            let info = tokio::select! {
                r = rest.exchange_info() => r.with_context(|| format!("exchangeInfo from {rest_url}"))?,
                _ = shutdown => anyhow::bail!("symbols interrupted"),
            };
            let universe = args.market.universe(&info, &exclude);
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            for s in &universe {
                writeln!(out, "{s}")?;
            }
            out.flush()?;
            info!(market = %args.market, symbols = universe.len(), of = info.symbols.len(), "symbols");
        }
        Command::Import(args) => {
            info!(database = %db, files = args.files.len(), "import");
            let jobs = args.jobs.map(|j| j as usize).unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get().min(4))
                    .unwrap_or(1)
            });
            // tick dumps (by --kind or by name) go to the tick tables, the rest are klines
            let is_tick = |p: &std::path::Path| match args.kind {
                Some(binance::kind::StreamKind::Kline) => false,
                Some(_) => true,
                None => import_ticks::detect(p).is_some(),
            };
            let (tick_files, kline_files): (Vec<_>, Vec<_>) =
                args.files.iter().cloned().partition(|p| is_tick(p));
            let cfg = import::ImportConfig {
                database_url: cli.database_url.clone(),
                files: kline_files,
                symbol: args.symbol.clone(),
                batch_rows: args.batch_rows,
                market: args.market,
                jobs,
            };
            let ticks = import_ticks::TickImportConfig {
                database_url: cli.database_url.clone(),
                files: tick_files,
                kind: args.kind,
                symbol: args.symbol,
                batch_rows: args.batch_rows,
                market: args.market,
                jobs,
            };
            let work = async {
                if !cfg.files.is_empty() {
                    import::import_files(&cfg).await?;
                }
                if !ticks.files.is_empty() {
                    import_ticks::import_tick_files(&ticks).await?;
                }
                Ok::<(), import::ImportError>(())
            };
            tokio::select! {
                r = work => { r.context("import")?; }
                _ = shutdown => anyhow::bail!("import interrupted"),
            }
        }
        Command::Replay(args) => {
            let mut cfg = replay::ReplayConfig::for_market(args.market, args.files, &args.listen);
            cfg.speed = args.speed;
            cfg.start_ms = args.start.as_deref().map(replay::parse_start).transpose()?;
            cfg.drop_after = args.drop_after;
            if let Some(p) = args.ping_secs {
                cfg.ping_secs = p;
            }
            cfg.fail_rest = args.fail_rest;
            if let Some(d) = args.close_delay_ms {
                cfg.close_delay_ms = d;
            }
            if let Some(w) = args.weight_limit_1m {
                cfg.weight_limit_1m = w;
            }
            cfg.exchange_info = args.exchange_info;
            cfg.connection_lifetime_secs = args.connection_lifetime;
            cfg.clone_symbols = args.clone_symbols;
            let listing = |flag: &str, v: &[String]| -> anyhow::Result<Vec<(String, i64)>> {
                v.iter()
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| replay::parse_listing(s).with_context(|| format!("--{flag}")))
                    .collect()
            };
            cfg.list = listing("list", &args.list)?;
            cfg.delist = listing("delist", &args.delist)?;
            cfg.sent_log = args.sent_log;
            cfg.book_tickers_from = args
                .book_tickers_from
                .as_deref()
                .map(replay::parse_start)
                .transpose()
                .context("--book-tickers-from")?;
            replay::run_replay(cfg, shutdown).await.context("replay")?;
        }
        Command::Listen(args) => {
            let mut out = std::io::stdout();
            let summary = listen::run_listen(&cli.database_url, &args.channel, &mut out, shutdown)
                .await
                .context("listen")?;
            info!(
                printed = summary.printed,
                forged = summary.forged,
                "listen finished"
            );
        }
        Command::Notify(args) => {
            let cfg = args.config(&cli.database_url);
            info!(
                database = %db,
                channel = %cfg.channel,
                discord_api = %cfg.endpoints.discord_api,
                telegram_api = %cfg.endpoints.telegram_api,
                db_pool_size = cfg.db_pool_size,
                allow_private_targets = cfg.network.allow_private,
                allow_target_networks = ?cfg.network.allowed_networks,
                "notify"
            );
            let health = serve_health(health::Component::Notify, [args.health_addr, None]).await?;
            let summary = notify::run_notify(cfg, health, shutdown)
                .await
                .context("notify")?;
            info!(?summary, "notify finished");
        }
    }
    Ok(())
}

/// Starts the health endpoints on each distinct address given (none: no server, no state).
async fn serve_health(
    component: health::Component,
    addrs: [Option<std::net::SocketAddr>; 2],
) -> anyhow::Result<Option<std::sync::Arc<health::HealthState>>> {
    let mut addrs: Vec<std::net::SocketAddr> = addrs.into_iter().flatten().collect();
    addrs.dedup();
    if addrs.is_empty() {
        return Ok(None);
    }
    let state = health::HealthState::new(component);
    for addr in addrs {
        let (bound, _task) = health::serve(addr, state.clone())
            .await
            .with_context(|| format!("health endpoints on {addr}"))?;
        // tests bind port 0 and read the address from here
        println!("health on {bound}");
    }
    Ok(Some(state))
}

#[cfg(test)]
mod tests {
    /// Lower layers never import higher ones: `config` (the command line) builds the
    /// settings of `notify`, `db`, `market` and `constants`, so none of them may import
    /// `config` (issue 19.6: `config` ↔ `notify` was a cycle).
    #[test]
    fn modules_under_config_do_not_import_it() {
        let src = concat!(env!("CARGO_MANIFEST_DIR"), "/src/");
        for file in [
            "notify/mod.rs",
            "notify/sink.rs",
            "notify/format.rs",
            "db.rs",
            "market.rs",
            "constants.rs",
            "listen.rs",
            "text.rs",
        ] {
            let text = std::fs::read_to_string(format!("{src}{file}")).unwrap();
            assert!(
                !text.contains("crate::config"),
                "{file} imports crate::config (a higher layer)"
            );
        }
    }
}
