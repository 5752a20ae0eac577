//! `ta-feed stream --streams kline,agg_trade,book_ticker` against the fake Binance
//! (`ta-feed replay` serving synthetic trades and book tickers) and a real database:
//!
//! * `drop_and_restart_store_every_trade_once`: a dropped aggTrade connection, a dropped
//!   book-ticker connection and a restart of the stream: every aggTrade id from the first
//!   stored to the last is stored once with the served values, the gaps are logged
//!   (`trade_gap` with trigger reconnect / restart, `trade_gap_filled`), the book-ticker gaps
//!   are recorded as time ranges, and the candles (klines the replay derives from its trades)
//!   equal an aggregation of the stored trades.
//! * `database_outage_loses_no_trade`: a private cluster is stopped for a few seconds under
//!   2,000 trades/s (a 500-row buffer): the buffer stays within its cap, refuses the rest
//!   (`tick_overflow`),
//!   and once the database is back every trade is stored once (REST fills by id).
//!
//! Needs `TA_FEED_TEST_DATABASE_URL` (skipped otherwise); the outage test also needs initdb
//! (`PG_CONFIG`) and pg_ta installed there.

mod common;
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::TestDb;
use rust_decimal::Decimal;
use ta_feed::binance::kind::agg_trade::{AggTrade, RestAggTrade};
use ta_feed::binance::kind::book_ticker::{BookTicker, WsBookTicker};
use ta_feed::binance::kind::{StreamKind, Symbol};
use ta_feed::market::Market;
use ta_feed::replay::{self, ReplayConfig, ReplayData};
use ta_feed::shutdown::Shutdown;
use ta_feed::stream::{run_stream, StreamConfig, StreamSummary, SymbolSource};

/// 2026-05-08 00:00 UTC.
const BASE: i64 = 1_778_198_400_000;

/// A trade every `step_ms` for `minutes` minutes from BASE; ids from `first_id`.
fn trades(symbol: &str, minutes: i64, step_ms: i64, first_id: i64) -> Vec<AggTrade> {
    (0..minutes * 60_000 / step_ms)
        .map(|i| {
            let p = format!("{}.{:03}", 200 + (i * 7) % 23, (i * 37) % 1000);
            let q = format!("{}.{:04}", i % 3, 1 + (i * 13) % 9999);
            let w = RestAggTrade {
                agg_trade_id: first_id + i,
                price: &p,
                quantity: &q,
                first_trade_id: (first_id + i) * 3,
                last_trade_id: (first_id + i) * 3 + i % 3,
                trade_time: BASE + i * step_ms,
                is_buyer_maker: i % 4 == 1,
                is_best_match: None,
            };
            AggTrade::from_wire(Symbol::new(symbol).unwrap(), &w, None).unwrap()
        })
        .collect()
}

fn books(symbol: &str, minutes: i64, step_ms: i64) -> Vec<BookTicker> {
    (0..minutes * 60_000 / step_ms)
        .map(|i| {
            let bid = format!("{}.{:02}", 200 + i % 5, i % 100);
            let ask = format!("{}.{:02}", 206 + i % 5, i % 100);
            let w = WsBookTicker {
                event_type: None,
                update_id: 10_000 + i,
                symbol,
                best_bid_price: &bid,
                best_bid_qty: "0.5",
                best_ask_price: &ask,
                best_ask_qty: "1.25",
                transaction_time: Some(BASE + i * step_ms - 1),
                event_time: Some(BASE + i * step_ms),
            };
            BookTicker::from_wire(Symbol::new(symbol).unwrap(), &w, 0).unwrap()
        })
        .collect()
}

fn stream_cfg(url: &str, addr: std::net::SocketAddr, symbols: &[&str]) -> StreamConfig {
    let mut cfg = StreamConfig::for_market(
        url,
        Market::Usdm,
        SymbolSource::List(symbols.iter().map(|s| s.to_string()).collect()),
        &format!("ws://{addr}"),
        &format!("http://{addr}"),
    );
    cfg.streams = vec![
        StreamKind::Kline,
        StreamKind::AggTrade,
        StreamKind::BookTicker,
    ];
    cfg.backfill_minutes = 2;
    cfg.reconnect_initial = Duration::from_millis(100);
    cfg.reconnect_max = Duration::from_millis(500);
    cfg.retention_interval = Duration::ZERO;
    cfg.connect_stagger = Duration::ZERO;
    cfg.db_retry_initial = Duration::from_millis(100);
    cfg.db_retry_max = Duration::from_millis(500);
    cfg.trade_gap_grace = Duration::from_millis(300);
    cfg.tick_flush = Duration::from_millis(50);
    cfg.alert_catchup_minutes = 0;
    cfg
}

type Stream = (
    tokio::task::JoinHandle<Result<StreamSummary, ta_feed::stream::StreamError>>,
    tokio::sync::oneshot::Sender<()>,
);

fn start(cfg: StreamConfig) -> Stream {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    (
        tokio::spawn(run_stream(cfg, async move {
            let _ = rx.await;
        })),
        tx,
    )
}

async fn stop(s: Stream) -> StreamSummary {
    let _ = s.1.send(());
    s.0.await.unwrap().unwrap()
}

/// Stored trades of `symbol`: id → (price, quantity, f, l, T ms, m).
async fn stored_trades(
    c: &tokio_postgres::Client,
    symbol: &str,
) -> BTreeMap<i64, (Decimal, Decimal, i64, i64, i64, bool)> {
    c.query(
        "SELECT agg_trade_id, price, quantity, first_trade_id, last_trade_id, \
                (extract(epoch FROM transact_time) * 1000)::bigint, is_buyer_maker \
           FROM market.agg_trades WHERE symbol = $1",
        &[&symbol],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.get(0),
            (r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6)),
        )
    })
    .collect()
}

async fn count(c: &tokio_postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap().get(0)
}

async fn wait_until(what: &str, limit: Duration, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every id between the first and the last stored one is there once, with the served values.
fn assert_contiguous_and_exact(
    stored: &BTreeMap<i64, (Decimal, Decimal, i64, i64, i64, bool)>,
    served: &[AggTrade],
) {
    let (lo, hi) = (
        *stored.keys().next().unwrap(),
        *stored.keys().last().unwrap(),
    );
    assert_eq!(
        stored.len() as i64,
        hi - lo + 1,
        "ids {lo}..={hi} all stored"
    );
    let first = served[0].agg_trade_id;
    for (id, v) in stored {
        let t = &served[(id - first) as usize];
        assert_eq!(
            v,
            &(
                t.price,
                t.quantity,
                t.first_trade_id,
                t.last_trade_id,
                t.time_ms(),
                t.is_buyer_maker
            ),
            "trade {id}"
        );
        assert_eq!(
            (v.0.to_string(), v.1.to_string()),
            (t.price.to_string(), t.quantity.to_string()),
            "decimal text of {id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_and_restart_store_every_trade_once() {
    let Some(db) = TestDb::migrated("ticks_stream").await else {
        return;
    };
    let served_a = trades("TICKUSDT", 30, 200, 5_000_000);
    let served_b = trades("TOCKUSDT", 30, 350, 7_000_000);
    let data = ReplayData::from_parts(
        Vec::new(),
        served_a.iter().chain(&served_b).cloned().collect(),
        books("TICKUSDT", 30, 100),
    )
    .unwrap();
    let mut rcfg = ReplayConfig::for_market(Market::Usdm, vec![], "127.0.0.1:0");
    rcfg.speed = 60.0; // a replayed minute a second
    rcfg.start_ms = Some(BASE + 3 * 60_000);
    rcfg.close_delay_ms = 500;
    rcfg.ping_secs = 1.0;
    let (_rt, rsd) = Shutdown::new();
    let srv = replay::start(rcfg, data, rsd).await.unwrap();
    let c = db.client().await;

    let s1 = start(stream_cfg(&db.url, srv.addr, &["TICKUSDT", "TOCKUSDT"]));
    wait_until("trades", Duration::from_secs(60), async || {
        count(&c, "SELECT count(*) FROM market.agg_trades").await > 300
    })
    .await;
    // drop the aggTrade connection and the book-ticker connection mid-run
    assert!(srv
        .state
        .drop_connection_of(None, Some("aggTrade"))
        .is_some());
    assert!(srv
        .state
        .drop_connection_of(None, Some("bookTicker"))
        .is_some());
    wait_until(
        "the reconnect gap filled",
        Duration::from_secs(60),
        async || {
            count(
                &c,
                "SELECT count(*) FROM market.data_quality_log WHERE kind = 'trade_gap_filled'",
            )
            .await
                > 0
        },
    )
    .await;
    let first = stop(s1).await;
    let t = first.agg_trades.clone().unwrap();
    assert!(t.gaps >= 1 && t.filled > 0, "{t:?}");
    // the stream is down for ~2 replayed minutes, then restarts (same database)
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s2 = start(stream_cfg(&db.url, srv.addr, &["TICKUSDT", "TOCKUSDT"]));
    let before = count(&c, "SELECT count(*) FROM market.agg_trades").await;
    wait_until(
        "the restart gap filled",
        Duration::from_secs(60),
        async || {
            count(
                &c,
                "SELECT count(*) FROM market.data_quality_log WHERE kind = 'trade_gap' \
              AND detail->>'trigger' = 'restart'",
            )
            .await
                >= 2
                && count(&c, "SELECT count(*) FROM market.agg_trades").await > before + 500
        },
    )
    .await;
    // let the fills finish, then a few more live minutes
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second = stop(s2).await;

    for (sym, served) in [("TICKUSDT", &served_a), ("TOCKUSDT", &served_b)] {
        let stored = stored_trades(&c, sym).await;
        assert!(stored.len() > 500, "{sym}: {}", stored.len());
        assert_contiguous_and_exact(&stored, served);
    }
    // every gap seen was filled (none given up)
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM market.data_quality_log WHERE kind = 'trade_gap_unfilled'"
        )
        .await,
        0
    );
    let triggers: Vec<String> = c
        .query(
            "SELECT DISTINCT detail->>'trigger' FROM market.data_quality_log WHERE kind = 'trade_gap' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(triggers.contains(&"reconnect".to_string()), "{triggers:?}");
    assert!(triggers.contains(&"restart".to_string()), "{triggers:?}");
    // book tickers: what is stored is what was served; the drop and the restart are gaps
    let book_gaps: Vec<(String, i64, i64)> = c
        .query(
            "SELECT detail->>'reason', (extract(epoch FROM from_time) * 1000)::bigint, \
                    (extract(epoch FROM to_time) * 1000)::bigint \
               FROM market.data_quality_log WHERE kind = 'book_ticker_gap' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let reasons: Vec<&str> = book_gaps.iter().map(|g| g.0.as_str()).collect();
    assert!(
        reasons.contains(&"disconnect") && reasons.contains(&"restart"),
        "{book_gaps:?}"
    );
    let stored_books: Vec<(i64, i64)> = c
        .query(
            "SELECT update_id, (extract(epoch FROM event_time) * 1000)::bigint \
               FROM market.book_tickers ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let served_books = books("TICKUSDT", 30, 100);
    for w in stored_books.windows(2) {
        let (a, b) = (w[0], w[1]);
        if b.0 != a.0 + 1 {
            // a missing stretch lies inside a recorded gap
            assert!(
                book_gaps.iter().any(|g| g.1 <= a.1 && g.2 >= b.1),
                "updates {}..{} missing outside a recorded gap: {book_gaps:?}",
                a.0,
                b.0
            );
        }
    }
    for (u, t) in &stored_books {
        assert_eq!(served_books[(u - 10_000) as usize].time_ms(), *t);
    }
    // candles: the replay's klines (derived from its trades) equal the stored trades
    // aggregated, for every minute whose trades are all stored
    let diffs = count(
        &c,
        "WITH t AS ( \
           SELECT symbol, date_bin('1 minute', transact_time, timestamptz '2000-01-01') AS m, \
                  (array_agg(price ORDER BY agg_trade_id))[1] AS open, max(price) AS high, \
                  min(price) AS low, (array_agg(price ORDER BY agg_trade_id DESC))[1] AS close, \
                  sum(quantity) AS volume, sum(price * quantity) AS quote_volume, \
                  sum(last_trade_id - first_trade_id + 1) AS trades, \
                  coalesce(sum(quantity) FILTER (WHERE NOT is_buyer_maker), 0) AS buy, \
                  coalesce(sum(price * quantity) FILTER (WHERE NOT is_buyer_maker), 0) AS buy_quote \
             FROM market.agg_trades GROUP BY 1, 2) \
         SELECT count(*) FROM t JOIN market.candles_1m k ON k.symbol = t.symbol AND k.open_time = t.m \
          WHERE t.m > (SELECT min(transact_time) FROM market.agg_trades x WHERE x.symbol = t.symbol) \
            AND t.m + interval '1 minute' <= (SELECT max(transact_time) FROM market.agg_trades x WHERE x.symbol = t.symbol) \
            AND (k.open, k.high, k.low, k.close, k.volume, k.quote_volume, k.trades, \
                 k.taker_buy_volume, k.taker_buy_quote_volume) \
                IS DISTINCT FROM (t.open, t.high, t.low, t.close, t.volume, t.quote_volume, \
                                  t.trades, t.buy, t.buy_quote)",
    )
    .await;
    assert_eq!(diffs, 0, "candles differ from their trades");
    let compared = count(
        &c,
        "SELECT count(*) FROM market.candles_1m k WHERE EXISTS (SELECT 1 FROM market.agg_trades t \
          WHERE t.symbol = k.symbol AND t.transact_time >= k.open_time \
            AND t.transact_time < k.open_time + interval '1 minute')",
    )
    .await;
    assert!(compared >= 10, "{compared} candles with trades");
    assert_eq!(second.tick_barrier_timeouts, 0, "{second:?}");
    drop(c);
    db.cleanup().await;
}

/// A database outage under 2,000 trades/s with a 500-row buffer and 500-row batches: the
/// buffer overflows, the refused trades come back over REST, no trade is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_loses_no_trade() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    if common::admin_url().is_none() {
        return;
    }
    let Some(cluster) = support::Cluster::start("ticks-outage", "", None, &[]) else {
        return;
    };
    let url = cluster.url("postgres", "");
    ta_feed::migrate::migrate_files(&url, common::migrations_under_test())
        .await
        .unwrap();
    // two symbols (a clone) × a trade every 10 ms × 10 = 2,000 trades/s
    let served = trades("RUSHUSDT", 20, 10, 1_000_000);
    let data = ReplayData::from_parts(Vec::new(), served.clone(), Vec::new()).unwrap();
    let mut rcfg = ReplayConfig::for_market(Market::Usdm, vec![], "127.0.0.1:0");
    rcfg.speed = 10.0;
    rcfg.start_ms = Some(BASE + 60_000);
    rcfg.clone_symbols = 2;
    rcfg.ping_secs = 1.0;
    rcfg.weight_limit_1m = 100_000;
    let (_rt, rsd) = Shutdown::new();
    let srv = replay::start(rcfg, data, rsd).await.unwrap();
    let mut cfg = stream_cfg(&url, srv.addr, &["RUSHUSDT", "RUSH01USDT"]);
    cfg.streams = vec![StreamKind::AggTrade];
    cfg.tick_buffer_rows = 500;
    // the writer holds up to two batches per connection besides the buffer: keep them small
    // so that the 5 s outage (10,000 trades) overflows whatever the timing
    cfg.tick_batch_rows = 500;
    cfg.rest.weight_soft_limit = 50_000;
    cfg.rest.trade_weight_share = 1.0;
    let s = start(cfg);
    let c = {
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        c
    };
    wait_until("trades", Duration::from_secs(60), async || {
        count(&c, "SELECT count(*) FROM market.agg_trades").await > 4000
    })
    .await;
    drop(c);
    cluster.pg_ctl_stop();
    tokio::time::sleep(Duration::from_secs(5)).await;
    cluster.pg_ctl_start();
    let c = {
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        c
    };
    wait_until(
        "the outage recovered",
        Duration::from_secs(120),
        async || {
            count(
                &c,
                "SELECT count(*) FROM market.data_quality_log WHERE kind = 'trade_gap_filled'",
            )
            .await
                >= 2
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let summary = stop(s).await;
    let t = summary.agg_trades.unwrap();
    assert!(t.dropped > 0, "the buffer refused ticks: {t:?}");
    assert!(t.max_buffered <= 500 + 1000, "bounded: {t:?}");
    for sym in ["RUSHUSDT", "RUSH01USDT"] {
        let stored = stored_trades(&c, sym).await;
        assert!(stored.len() > 8000, "{sym}: {}", stored.len());
        let (lo, hi) = (
            *stored.keys().next().unwrap(),
            *stored.keys().last().unwrap(),
        );
        assert_eq!(stored.len() as i64, hi - lo + 1, "{sym}: every id once");
    }
    assert!(
        count(
            &c,
            "SELECT count(*) FROM market.data_quality_log WHERE kind = 'tick_overflow'"
        )
        .await
            >= 1
    );
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM market.data_quality_log WHERE kind = 'trade_gap_unfilled'"
        )
        .await,
        0
    );
}

/// Rotations (every 2 s, with the overlap) lose no trade and need no REST; and a live candle
/// is written only after the trades of its minute are committed (a trigger on candles_1m
/// counts the minute's stored trades in the candle's transaction), although ticks are flushed
/// only every 5 s or 100,000 rows otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_needs_no_rest_and_candles_see_their_trades() {
    let Some(db) = TestDb::migrated("ticks_rotation").await else {
        return;
    };
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE public.candle_seen (symbol text, open_time timestamptz, trades bigint);
         CREATE FUNCTION public.candle_seen() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           INSERT INTO public.candle_seen
           SELECT n.symbol, n.open_time,
                  (SELECT count(*) FROM market.agg_trades t
                    WHERE t.market = n.market AND t.symbol = n.symbol
                      AND t.transact_time >= n.open_time
                      AND t.transact_time < n.open_time + interval '1 minute')
             FROM new_rows n;
           RETURN NULL;
         END $$;
         CREATE TRIGGER candle_seen AFTER INSERT ON market.candles_1m
           REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
           EXECUTE FUNCTION public.candle_seen();",
    )
    .await
    .unwrap();
    let served = trades("ROTAUSDT", 30, 200, 9_000_000);
    let data = ReplayData::from_parts(Vec::new(), served.clone(), Vec::new()).unwrap();
    let mut rcfg = ReplayConfig::for_market(Market::Usdm, vec![], "127.0.0.1:0");
    rcfg.speed = 60.0;
    rcfg.start_ms = Some(BASE + 60_000);
    rcfg.close_delay_ms = 500;
    rcfg.ping_secs = 1.0;
    let (_rt, rsd) = Shutdown::new();
    let srv = replay::start(rcfg, data, rsd).await.unwrap();
    let mut cfg = stream_cfg(&db.url, srv.addr, &["ROTAUSDT"]);
    cfg.streams = vec![StreamKind::Kline, StreamKind::AggTrade];
    cfg.max_connection_age = Duration::from_secs(2);
    cfg.rotation_overlap = Duration::from_millis(500);
    cfg.tick_flush = Duration::from_secs(5);
    cfg.tick_batch_rows = 100_000;
    cfg.tick_flush_wait = Duration::from_secs(5);
    let s = start(cfg);
    wait_until("8 live candles", Duration::from_secs(60), async || {
        count(&c, "SELECT count(*) FROM public.candle_seen").await >= 8
    })
    .await;
    let summary = stop(s).await;
    let stored = stored_trades(&c, "ROTAUSDT").await;
    assert_contiguous_and_exact(&stored, &served);
    let status = srv.state.status();
    assert!(
        status["connections_total"].as_u64().unwrap() >= 6,
        "rotations happened: {status}"
    );
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM market.data_quality_log WHERE kind LIKE 'trade_gap_%'"
        )
        .await,
        0,
        "a rotation needs no REST"
    );
    assert_eq!(status["agg_trades_requests"].as_u64().unwrap(), 0);
    // each live candle saw all of its minute's trades in its own transaction (the first
    // minute of trades is partial: the stream began inside it)
    let first_minute = (served
        .iter()
        .find(|t| stored.contains_key(&t.agg_trade_id))
        .unwrap()
        .time_ms()
        / 60_000)
        * 60_000;
    let short = count(
        &c,
        &format!(
            "SELECT count(*) FROM public.candle_seen s WHERE s.open_time > to_timestamp({} / 1000.0) \
               AND s.trades <> (SELECT count(*) FROM market.agg_trades t WHERE t.symbol = s.symbol \
                                 AND t.transact_time >= s.open_time \
                                 AND t.transact_time < s.open_time + interval '1 minute')",
            first_minute
        ),
    )
    .await;
    assert_eq!(short, 0, "a candle was written before its trades");
    assert_eq!(summary.tick_barrier_timeouts, 0, "{summary:?}");
    drop(c);
    db.cleanup().await;
}
