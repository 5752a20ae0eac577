//! Hostile or broken writers (issue 18.4 and 18.9): one validation, `Kline::validate`, that
//! refuses exactly what `market.candles_1m`'s CHECK constraints refuse (a candle in the future
//! included), shared by `import` and `stream`; an import that is all or nothing per file; a bad
//! kline in a stream minute that is rejected alone.
//!
//! The database cases run only when `TA_FEED_TEST_DATABASE_URL` is set (see
//! db_integration.rs); each test makes its own database.

mod common;

use std::io::Write;

use chrono::Utc;
use common::TestDb;
use ta_feed::binance::model::{Kline, KlineText};
use ta_feed::binance::ws::{handle_text, FeedEvent};
use ta_feed::import::import_file;
use ta_feed::sink::{AlertMode, CandleSink};

const MINUTE_MS: i64 = 60_000;

/// A valid kline of `symbol` opening at `open_ms`, as text.
fn text(symbol: &str, open_ms: i64) -> KlineText<'_> {
    KlineText {
        symbol,
        open_time: open_ms,
        close_time: open_ms + 59_999,
        open: "100.5",
        high: "101",
        low: "99.25",
        close: "100",
        volume: "12.5",
        quote_volume: "1250.75",
        trades: 42,
        taker_buy_volume: "6",
        taker_buy_quote_volume: "600.125",
    }
}

/// The minute before the current one, epoch ms.
fn last_minute_ms() -> i64 {
    let now = Utc::now().timestamp_millis();
    now - now.rem_euclid(MINUTE_MS) - MINUTE_MS
}

/// Does the database store this kline? (`true`: inserted; `false`: refused by a CHECK.)
/// Inserted in a transaction that is rolled back.
async fn table_accepts(c: &mut tokio_postgres::Client, t: &KlineText<'_>) -> bool {
    let tx = c.transaction().await.unwrap();
    let r = tx
        .execute(
            "INSERT INTO market.candles_1m (symbol, open_time, close_time, open, high, low, close, \
                    volume, quote_volume, trades, taker_buy_volume, taker_buy_quote_volume) \
             VALUES (upper(btrim($1)), timestamptz 'epoch' + $2::bigint * interval '1 ms', \
                     timestamptz 'epoch' + $3::bigint * interval '1 ms', $4::text::numeric, \
                     $5::text::numeric, $6::text::numeric, $7::text::numeric, $8::text::numeric, \
                     $9::text::numeric, $10, $11::text::numeric, $12::text::numeric)",
            &[
                &t.symbol,
                &t.open_time,
                &t.close_time,
                &t.open,
                &t.high,
                &t.low,
                &t.close,
                &t.volume,
                &t.quote_volume,
                &t.trades,
                &t.taker_buy_volume,
                &t.taker_buy_quote_volume,
            ],
        )
        .await;
    let _ = tx.rollback().await;
    match r {
        Ok(n) => n == 1,
        Err(e) => {
            let db = e.as_db_error().unwrap_or_else(|| panic!("{e:?}"));
            assert_eq!(
                db.code(),
                &tokio_postgres::error::SqlState::CHECK_VIOLATION,
                "{db:?}"
            );
            false
        }
    }
}

/// Issue 18.9 (and 18.4): for every boundary of the table's CHECK constraints, the Rust
/// validation and the table agree, and both give the expected verdict.
#[tokio::test]
async fn kline_validation_is_the_mirror_of_the_table_checks() {
    let m = last_minute_ms();
    let symbol40 = "A".repeat(40);
    let symbol41 = "A".repeat(41);
    let scale21 = "1.000000000000000000001";
    let scale20 = "1.00000000000000000001";
    let future_day = m + 1440 * MINUTE_MS;
    // (case, kline, stored?)
    let cases: Vec<(&str, KlineText<'_>, bool)> = vec![
        ("TC1 valid", text("BTCUSDT", m), true),
        (
            "TC2 open with 21 decimals",
            KlineText {
                open: scale21,
                low: "1",
                high: "2",
                close: "1",
                ..text("BTCUSDT", m)
            },
            false,
        ),
        (
            "TC3 open with 20 decimals",
            KlineText {
                open: scale20,
                low: "1",
                high: "2",
                close: "1",
                ..text("BTCUSDT", m)
            },
            true,
        ),
        (
            "TC4 high = 1e15",
            KlineText {
                high: "1000000000000000",
                ..text("BTCUSDT", m)
            },
            false,
        ),
        (
            "TC5 high just below 1e15",
            KlineText {
                high: "999999999999999.99",
                ..text("BTCUSDT", m)
            },
            true,
        ),
        (
            "TC6 volume = 1e20",
            KlineText {
                volume: "100000000000000000000",
                ..text("BTCUSDT", m)
            },
            false,
        ),
        (
            "TC7 volume just below 1e20",
            KlineText {
                volume: "99999999999999999999.9",
                ..text("BTCUSDT", m)
            },
            true,
        ),
        (
            "TC8 quote volume with 21 decimals",
            KlineText {
                quote_volume: scale21,
                ..text("BTCUSDT", m)
            },
            false,
        ),
        (
            "TC9 taker buy quote volume = 1e20",
            KlineText {
                taker_buy_quote_volume: "1e20",
                ..text("BTCUSDT", m)
            },
            false,
        ),
        (
            "TC10 low = 0",
            KlineText {
                low: "0",
                open: "0",
                ..text("BTCUSDT", m)
            },
            false,
        ),
        (
            "TC11 open_time one day ahead",
            text("BTCUSDT", future_day),
            false,
        ),
        (
            "TC12 open_time 3 minutes ahead",
            text("BTCUSDT", m + 4 * MINUTE_MS),
            false,
        ),
        (
            "TC13 open_time this minute (a minute of skew)",
            text("BTCUSDT", m + MINUTE_MS),
            true,
        ),
        (
            "TC14 ms just under the µs threshold: year 33658",
            text("BTCUSDT", 999_999_999_960_000),
            false,
        ),
        ("TC15 40-character symbol", text(&symbol40, m), true),
        ("TC16 41-character symbol", text(&symbol41, m), false),
        ("TC17 underscore inside", text("BTCUSDT_260327", m), true),
        ("TC18 leading underscore", text("_BTCUSDT", m), false),
        (
            "TC19 negative trades",
            KlineText {
                trades: -1,
                ..text("BTCUSDT", m)
            },
            false,
        ),
        (
            "TC20 close above high",
            KlineText {
                close: "102",
                ..text("BTCUSDT", m)
            },
            false,
        ),
    ];
    // the Rust side, without a database
    for (name, t, stored) in &cases {
        let rust = Kline::from_text(*t);
        assert_eq!(
            rust.is_ok(),
            *stored,
            "{name}: Kline::from_text gave {rust:?}"
        );
    }
    let Some(db) = TestDb::migrated("kline_mirror").await else {
        return;
    };
    let mut c = db.client().await;
    for (name, t, stored) in &cases {
        let table = table_accepts(&mut c, t).await;
        assert_eq!(table, *stored, "{name}: the table's verdict");
    }
    drop(c);
    db.cleanup().await;
}

/// A klines12 row; `close_after_ms` is close_time − open_time (59 999 for a whole minute).
fn csv_row(open_ms: i64, open: &str, close_after_ms: i64) -> String {
    format!(
        "{open_ms},{open},101,99,100,12.5,{},1250.75,42,6,600.125,0\n",
        open_ms + close_after_ms
    )
}

/// Issue 18.9: a file is imported whole or not at all. A file whose 4th row is bad (a price
/// the table refuses, or text that is no number) leaves nothing behind although rows 1–2 were
/// already written in an earlier batch; the corrected file then imports whole. Issue 18.4: a
/// row in the future is refused by the importer.
#[tokio::test]
async fn import_is_all_or_nothing_per_file() {
    let Some(db) = TestDb::migrated("import_atomic").await else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("ta-feed-import-atomic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let start = 1_633_910_400_000i64; // 2021-10-11 00:00 UTC
    let good: Vec<String> = (0..5)
        .map(|i| csv_row(start + i * MINUTE_MS, "100", 59_999))
        .collect();
    let mut sink = CandleSink::connect(&db.url).await.unwrap();
    let c = db.client().await;
    let count = |symbol: &'static str| {
        let c = &c;
        async move {
            c.query_one(
                "SELECT count(*) FROM market.candles_1m WHERE symbol = $1",
                &[&symbol],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
        }
    };
    // (case, symbol, bad 4th row, what the error names)
    let cases = [
        (
            "TC1 a price with 21 decimals",
            "SCALEUSDT",
            csv_row(start + 3 * MINUTE_MS, "100.000000000000000000001", 59_999),
            "decimals",
        ),
        (
            "TC2 not a number",
            "TEXTUSDT",
            csv_row(start + 3 * MINUTE_MS, "x1", 59_999),
            "open",
        ),
        (
            "TC3 a row in the future (ms just under the µs threshold, year 33658)",
            "FUTUREUSDT",
            csv_row(999_999_999_960_000, "100", 39_999),
            "future",
        ),
    ];
    for (name, symbol, bad, names) in cases {
        let path = dir.join(format!("{symbol}-1m-2021-10-11.csv"));
        let mut rows = good.clone();
        rows[3] = bad;
        std::fs::File::create(&path)
            .unwrap()
            .write_all(rows.concat().as_bytes())
            .unwrap();
        // batches of 2 rows: rows 1-2 are written before row 4 is read
        let err = import_file(&mut sink, &path, None, 2)
            .await
            .expect_err(name)
            .to_string();
        assert!(err.contains(":4:") && err.contains(names), "{name}: {err}");
        assert_eq!(
            count(symbol).await,
            0,
            "{name}: nothing of the file is stored"
        );
        // the corrected file imports whole
        std::fs::write(&path, good.concat()).unwrap();
        let stats = import_file(&mut sink, &path, None, 2).await.unwrap();
        assert_eq!((stats.rows_read, stats.rows_written), (5, 5), "{name}");
        assert_eq!(count(symbol).await, 5, "{name}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    drop((c, sink));
    db.cleanup().await;
}

fn ws_kline(symbol: &str, open_ms: i64, open: &str) -> String {
    serde_json::json!({
        "stream": format!("{}@kline_1m", symbol.to_lowercase()),
        "data": {"e": "kline", "E": open_ms + 60_100, "s": symbol, "k": {
            "t": open_ms, "T": open_ms + 59_999, "s": symbol, "i": "1m", "f": 1, "L": 2,
            "o": open, "c": "100", "h": "101", "l": "99", "v": "12.5", "n": 2, "x": true,
            "q": "1250.75", "V": "6", "Q": "600.125", "B": "0"}}
    })
    .to_string()
}

/// Issue 18.9 (stream): one closed kline the table would refuse (21 decimals) is rejected
/// alone at parse time; the minute of every other symbol is written.
#[tokio::test]
async fn a_bad_kline_in_a_stream_minute_is_rejected_alone() {
    let m = last_minute_ms();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for (symbol, open) in [
        ("BTCUSDT", "100"),
        ("ETHUSDT", "100.000000000000000000001"),
        ("SOLUSDT", "100"),
    ] {
        handle_text(&ws_kline(symbol, m, open), &tx);
    }
    handle_text(&ws_kline("XRPUSDT", m + 1440 * MINUTE_MS, "100"), &tx);
    drop(tx);
    let mut closed = Vec::new();
    let mut rejected = Vec::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            FeedEvent::Closed { kline, .. } => closed.push(kline),
            FeedEvent::Rejected { symbol, reason, .. } => rejected.push((symbol, reason)),
            other => panic!("unexpected {other:?}"),
        }
    }
    let names: Vec<&str> = closed.iter().map(|k| k.symbol.as_str()).collect();
    assert_eq!(names, ["BTCUSDT", "SOLUSDT"]);
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert_eq!(rejected[0].0, "ETHUSDT");
    assert!(rejected[0].1.contains("decimals"), "{rejected:?}");
    assert_eq!(rejected[1].0, "XRPUSDT");
    assert!(rejected[1].1.contains("future"), "{rejected:?}");
    let Some(db) = TestDb::migrated("stream_reject_alone").await else {
        return;
    };
    let mut sink = CandleSink::connect(&db.url).await.unwrap();
    let written = sink
        .write_batch(&closed, AlertMode::Evaluate)
        .await
        .unwrap();
    assert_eq!(written, 2, "the minute of the other symbols is stored");
    // and the table refuses what was rejected, so the batch would have failed whole
    let bad = Kline {
        open: "100.000000000000000000001".parse().unwrap(),
        low: "99".parse().unwrap(),
        symbol: "ETHUSDT".into(),
        ..closed[0].clone()
    };
    assert!(sink
        .write_batch(&[closed[0].clone(), bad], AlertMode::Evaluate)
        .await
        .is_err());
    drop(sink);
    db.cleanup().await;
}
