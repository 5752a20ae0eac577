//! Integration tests against a real PostgreSQL cluster (with pg_ta installed).
//!
//! Run only when `TA_FEED_TEST_DATABASE_URL` is set (a superuser URL, e.g.
//! `postgres://postgres@127.0.0.1:5440/postgres`); each test creates and drops its own
//! database `ta_feed_it_<test>_<pid>`. Otherwise each test prints
//! "skipped: TA_FEED_TEST_DATABASE_URL not set" and passes.

mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::TestDb;
use rust_decimal::Decimal;
use ta_feed::backfill::backfill_range;
use ta_feed::backoff::Backoff;
use ta_feed::binance::model::Kline;
use ta_feed::binance::rest::{RestClient, RestConfig};
use ta_feed::import::{import_file, read_klines12};
use ta_feed::replay::{self, ReplayConfig, ReplayData};
use ta_feed::shutdown::Shutdown;
use ta_feed::sink::{AlertMode, CandleSink, RetryingSink};
use ta_feed::stream::{run_stream, StreamConfig};
use tokio::io::AsyncBufReadExt;

const BTC_2021_10: &str = "spot/klines12/BTCUSDT-1m-2021-10-11_2021-10-21.csv.gz";
const BTC_2021_04: &str = "spot/klines12/BTCUSDT-1m-2021-04-24_2021-04-28.csv.gz";
const BTC_2025: &str = "spot/klines12/BTCUSDT-1m-2025-10-29_2025-11-01.csv.gz";
const ETH_2025: &str = "spot/klines12/ETHUSDT-1m-2025-10-29_2025-11-01.csv.gz";

/// All stored rows of `symbol`, as klines, ordered by open_time.
async fn stored(client: &tokio_postgres::Client, symbol: &str) -> Vec<Kline> {
    client
        .query(
            "SELECT symbol, open_time, close_time, open, high, low, close, volume, quote_volume, \
             trades, taker_buy_volume, taker_buy_quote_volume FROM market.candles_1m \
             WHERE symbol = $1 ORDER BY open_time",
            &[&symbol],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| Kline {
            symbol: r.get(0),
            open_time: r.get::<_, DateTime<Utc>>(1),
            close_time: r.get(2),
            open: r.get(3),
            high: r.get(4),
            low: r.get(5),
            close: r.get(6),
            volume: r.get(7),
            quote_volume: r.get(8),
            trades: r.get(9),
            taker_buy_volume: r.get(10),
            taker_buy_quote_volume: r.get(11),
        })
        .collect()
}

/// Exact equality including the decimal text (scale) of every value.
fn assert_same(stored: &Kline, recorded: &Kline) {
    assert_eq!(stored, recorded);
    let text = |k: &Kline| {
        [
            k.open,
            k.high,
            k.low,
            k.close,
            k.volume,
            k.quote_volume,
            k.taker_buy_volume,
            k.taker_buy_quote_volume,
        ]
        .map(|d: Decimal| d.to_string())
    };
    assert_eq!(
        text(stored),
        text(recorded),
        "decimal text of {}",
        recorded.open_time
    );
}

async fn quality(
    client: &tokio_postgres::Client,
    kind: &str,
) -> Vec<(String, DateTime<Utc>, DateTime<Utc>, i64)> {
    client
        .query(
            "SELECT symbol, from_time, to_time, rows FROM market.data_quality_log WHERE kind = $1 ORDER BY id",
            &[&kind],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

#[tokio::test]
async fn migrate_twice_is_idempotent() {
    let Some(db) = TestDb::create("migrate").await else {
        return;
    };
    let files = common::migrations_under_test();
    let first = ta_feed::migrate::migrate_files(&db.url, files)
        .await
        .unwrap();
    let second = ta_feed::migrate::migrate_files(&db.url, files)
        .await
        .unwrap();
    assert_eq!(first, second);
    assert_eq!(first.len(), files.len());
    let c = db.client().await;
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'market' \
             AND table_name IN ('candles_1m', 'data_quality_log')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    drop(c);
    db.cleanup().await;
}

#[tokio::test]
async fn import_exact_values_and_reimport_writes_nothing() {
    let Some(path) = common::data_file(BTC_2021_10) else {
        return;
    };
    let Some(db) = TestDb::migrated("import").await else {
        return;
    };
    let mut sink = CandleSink::connect(&db.url).await.unwrap();
    let stats = import_file(&mut sink, &path, None, 5000).await.unwrap();
    assert_eq!((stats.rows_read, stats.rows_written), (15693, 15693));
    assert_eq!(stats.symbol, "BTCUSDT");
    let c = db.client().await;
    let rows = stored(&c, "BTCUSDT").await;
    let recorded = read_klines12(&path, None).unwrap();
    assert_eq!(rows.len(), recorded.len());
    // First, a middle and the last row, exactly (decimal text included).
    for i in [0, 7777, recorded.len() - 1] {
        assert_same(&rows[i], &recorded[i]);
    }
    assert_eq!(rows[0].open.to_string(), "54659.01");
    assert_eq!(rows[0].high.to_string(), "54670.0");
    assert_eq!(rows[0].quote_volume.to_string(), "3744747.3848163");
    // Re-import: identical rows are never rewritten.
    let again = import_file(&mut sink, &path, None, 50_000).await.unwrap();
    assert_eq!((again.rows_read, again.rows_written), (15693, 0));
    // A changed value is updated (and only that row).
    c.batch_execute(
        "UPDATE market.candles_1m SET close = close + 1 WHERE open_time = '2021-10-15 12:00Z'",
    )
    .await
    .unwrap();
    let fix = import_file(&mut sink, &path, None, 50_000).await.unwrap();
    assert_eq!(fix.rows_written, 1);

    // The truncated halt kline (2021-04-25 04:00) is stored and logged once, also on re-import.
    if let Some(p) = common::data_file(BTC_2021_04) {
        let s = import_file(&mut sink, &p, None, 50_000).await.unwrap();
        assert_eq!(s.rows_written, 5671);
        import_file(&mut sink, &p, None, 50_000).await.unwrap();
        let t = quality(&c, "truncated").await;
        assert_eq!(t.len(), 1, "{t:?}");
        assert_eq!(t[0].1.timestamp_millis(), 1619323200000);
        assert_eq!(t[0].2.timestamp_millis(), 1619323258146);
    }
    drop((c, sink));
    db.cleanup().await;
}

#[tokio::test]
async fn database_connection_loss_is_retried() {
    let Some(db) = TestDb::migrated("dbloss").await else {
        return;
    };
    let ks = ReplayData::from_klines(synthetic_pair()).unwrap();
    let btc = ks.series("BTCUSDT").unwrap().to_vec();
    let mut sink = RetryingSink::new(
        db.url.clone(),
        Backoff::new(Duration::from_millis(50), 2.0, Duration::from_secs(1)),
    );
    assert_eq!(
        sink.write_batch(&btc[..1], AlertMode::Evaluate, None)
            .await
            .unwrap(),
        1
    );
    // Kill every other backend of this database (the sink's connection).
    let c = db.client().await;
    c.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        &[&db.name],
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        sink.write_batch(&btc[1..3], AlertMode::Evaluate, None)
            .await
            .unwrap(),
        2
    );
    assert_eq!(stored(&c, "BTCUSDT").await.len(), 3);
    drop(c);
    db.cleanup().await;
}

fn synthetic_pair() -> Vec<Kline> {
    use ta_feed::binance::model::KlineText;
    let base = 1_700_000_000_000i64 / 60_000 * 60_000;
    let mut out = Vec::new();
    for sym in ["BTCUSDT", "ETHUSDT"] {
        for i in 0..10i64 {
            out.push(
                Kline::from_text(KlineText {
                    symbol: sym,
                    open_time: base + i * 60_000,
                    close_time: base + i * 60_000 + 59_999,
                    open: "10.5",
                    high: "11",
                    low: "10",
                    close: "10.75",
                    volume: "1.000",
                    quote_volume: "10.6",
                    trades: i,
                    taker_buy_volume: "0.5",
                    taker_buy_quote_volume: "5.3",
                })
                .unwrap(),
            );
        }
    }
    out
}

/// REST 429 → retried (Retry-After), then a paged backfill (pages of 1000, no overlap)
/// writes every minute exactly once with alerts off.
#[tokio::test]
async fn backfill_pages_with_429_retried() {
    let Some(path) = common::data_file(BTC_2021_10) else {
        return;
    };
    let Some(db) = TestDb::migrated("backfill").await else {
        return;
    };
    let data = ReplayData::load(&[path]).unwrap();
    let mut cfg = ReplayConfig::new(vec![], "127.0.0.1:0");
    cfg.fail_rest = 2;
    cfg.start_ms = Some(data.first_open_ms() + 3000 * 60_000);
    let (_trigger, shutdown) = Shutdown::new();
    let srv = replay::start(cfg, data, shutdown).await.unwrap();
    let rest = RestClient::new(RestConfig::new(format!("http://{}", srv.addr))).unwrap();
    let mut sink = RetryingSink::new(db.url.clone(), Backoff::reconnect_default());
    let series = srv.state.data.series("BTCUSDT").unwrap();
    let from = series[0].open_time_ms();
    let to = from + 2499 * 60_000; // 2500 minutes: pages of 1000, 1000, 500
    let now = rest.server_time().await.unwrap();
    let out = backfill_range(&rest, &mut sink, "BTCUSDT", from, to, Some(now), None)
        .await
        .unwrap();
    assert_eq!((out.received, out.written, out.pages), (2500, 2500, 3));
    assert!(out.missing.is_empty());
    assert_eq!(
        srv.state
            .rate_limited
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    let c = db.client().await;
    let rows = stored(&c, "BTCUSDT").await;
    assert_eq!(rows.len(), 2500);
    for (r, k) in rows.iter().zip(series) {
        assert_same(r, k);
    }
    // Again: nothing new, one page per 1000.
    let again = backfill_range(&rest, &mut sink, "BTCUSDT", from, to, Some(now), None)
        .await
        .unwrap();
    assert_eq!((again.received, again.written), (2500, 0));
    drop(c);
    db.cleanup().await;
}

/// Stream logic against the fake Binance at 600× with connections dropped every 5
/// minutes: every minute from the backfill start to the last streamed minute is stored
/// exactly once with the recorded values, and the reconnect gaps were logged gap_filled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_against_replay_with_drops() {
    let (Some(btc), Some(eth)) = (common::data_file(BTC_2025), common::data_file(ETH_2025)) else {
        return;
    };
    let Some(db) = TestDb::migrated("stream").await else {
        return;
    };
    let data = ReplayData::load(&[btc, eth]).unwrap();
    let mut cfg = ReplayConfig::new(vec![], "127.0.0.1:0");
    cfg.speed = 600.0;
    cfg.drop_after = Some(5);
    cfg.ping_secs = 0.5;
    let (_trigger, shutdown) = Shutdown::new();
    let srv = replay::start(cfg, data, shutdown).await.unwrap();
    let addr = srv.addr;

    let mut sc = StreamConfig::new(
        &db.url,
        vec!["BTCUSDT".into(), "ETHUSDT".into()],
        &format!("ws://{addr}"),
        &format!("http://{addr}"),
    );
    sc.backfill_minutes = 120;
    sc.reconnect_initial = Duration::from_millis(300);
    sc.stop_after_minutes = 30;
    let health = sc.health.clone();
    let started = Instant::now();
    let summary = tokio::time::timeout(
        Duration::from_secs(90),
        run_stream(sc, std::future::pending()),
    )
    .await
    .expect("stream finished in time")
    .unwrap();
    let elapsed = started.elapsed();
    println!("summary {summary:?} in {elapsed:?}");
    assert!(summary.live_minutes >= 30);
    assert!(summary.gaps_filled >= 2, "drops every 5 minutes cause gaps");
    // the /health figures of the stream follow what it did
    let report = health.report();
    assert_eq!(report.connections_total, Some(1), "{report:?}");
    assert_eq!(
        report.candles_written, summary.live_rows_written,
        "{report:?}"
    );
    assert_eq!(report.database_connected, Some(true), "{report:?}");
    assert!(report.last_closed_open_time.is_some(), "{report:?}");
    assert!(report.lag_seconds.is_some(), "{report:?}");
    assert_eq!(summary.dropped_klines, 0);
    // A gap fill after a reconnect may already have written the minute whose live kline
    // arrives next (at 600x the minute closes within a millisecond); that write then changes
    // nothing. Every other live kline is a new row.
    assert!(summary.live_rows_written <= summary.live_klines);
    assert!(
        summary.live_klines - summary.live_rows_written <= 2 * summary.gaps_filled,
        "live klines were new rows, except minutes a gap fill wrote first: {summary:?}"
    );

    let now = srv.state.clock.now_ms();
    let c = db.client().await;
    let mut ranges = HashMap::new();
    for sym in ["BTCUSDT", "ETHUSDT"] {
        let rows = stored(&c, sym).await;
        let first = rows.first().unwrap().open_time_ms();
        let last = rows.last().unwrap().open_time_ms();
        assert_eq!(
            rows.len() as i64,
            (last - first) / 60_000 + 1,
            "{sym}: contiguous, once each"
        );
        assert!(last + 60_000 <= now, "{sym}: only closed minutes");
        // Backfill started ~120 minutes before the exchange time at start-up.
        let start_ms = srv.state.data.first_open_ms() + 1440 * 60_000;
        assert!(
            (first - (start_ms - 120 * 60_000)).abs() <= 5 * 60_000,
            "{sym}: backfill start"
        );
        for r in &rows {
            assert_same(r, srv.state.data.at(sym, r.open_time_ms()).unwrap());
        }
        ranges.insert(sym, (first, last, rows.len()));
    }
    assert_eq!(
        ranges["BTCUSDT"], ranges["ETHUSDT"],
        "both symbols advance together"
    );
    let gaps = quality(&c, "gap_filled").await;
    assert!(!gaps.is_empty(), "gap_filled logged");
    assert!(gaps.iter().all(|g| g.3 >= 1));
    assert!(quality(&c, "gap_unfilled").await.is_empty());
    let minutes = ranges["BTCUSDT"].2 as f64;
    println!(
        "stream path: {minutes} minutes ({} live) stored in {:.2}s = {:.1} live minutes/s end to end",
        summary.live_minutes,
        elapsed.as_secs_f64(),
        summary.live_minutes as f64 / elapsed.as_secs_f64()
    );
    drop(c);
    db.cleanup().await;
}

/// The binaries: `replay` prints its address first; `stream` exits 0 on SIGTERM after
/// writing; `migrate` prints what it applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_stream_stops_cleanly_on_sigterm() {
    let Some(btc) = common::data_file(BTC_2025) else {
        return;
    };
    let Some(db) = TestDb::create("binary").await else {
        return;
    };
    let exe = env!("CARGO_BIN_EXE_ta-feed");
    if std::env::var_os("TA_FEED_TEST_MIGRATIONS").is_none() {
        let out = std::process::Command::new(exe)
            .args(["migrate", "--database-url", &db.url])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("applied 002_candles.sql"), "{stdout}");
    } else {
        ta_feed::migrate::migrate_files(&db.url, common::migrations_under_test())
            .await
            .unwrap();
    }

    let mut replay = tokio::process::Command::new(exe)
        .args([
            "replay",
            "--listen",
            "127.0.0.1:0",
            "--speed",
            "300",
            "--file",
        ])
        .arg(&btc)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(replay.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let addr = first
        .strip_prefix("listening on ")
        .expect("first line")
        .to_string();

    let mut stream = tokio::process::Command::new(exe)
        .args(["stream", "--symbols", "btcusdt", "--backfill-minutes", "30"])
        .args([
            "--ws-url",
            &format!("ws://{addr}"),
            "--rest-url",
            &format!("http://{addr}"),
        ])
        .env("DATABASE_URL", &db.url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let c = db.client().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n: i64 = c
            .query_one("SELECT count(*) FROM market.candles_1m", &[])
            .await
            .unwrap()
            .get(0);
        if n >= 33 {
            break; // backfill + a few live minutes
        }
        assert!(Instant::now() < deadline, "stream wrote only {n} rows");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pid = stream.id().unwrap().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(15), stream.wait())
        .await
        .expect("stream exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    let _ = replay.kill().await;
    drop(c);
    db.cleanup().await;
}
