//! `ta-feed import` of tick dumps into a real database: the recorded aggTrades dumps (coin-M
//! BTCUSD_PERP, a whole day, futures layout; spot XRPETH, spot layout) stored exactly (every
//! row of the file, byte-for-byte decimals, ms times), again as a `.zip` (Binance's packaging),
//! a futures bookTicker dump, re-imports that write nothing, and a file with a bad row that
//! leaves nothing behind (one transaction per file). Synthetic files when the recorded data
//! is absent (said so).
//!
//! Needs `TA_FEED_TEST_DATABASE_URL` (skipped otherwise).

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::TestDb;

const CM: &str = "futures_cm/aggTrades/BTCUSD_PERP-aggTrades-2026-05-08.csv.gz";
const SPOT: &str = "spot/aggTrades/XRPETH-aggTrades-2019-10-11_2019-10-13.csv.gz";

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ta-feed"))
}

fn import(url: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(bin())
        .arg("import")
        .args(args)
        .env("DATABASE_URL", url)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// The CSV text of a dump (gz or plain), read independently of ta-feed.
fn text_of(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    let mut s = String::new();
    if bytes.starts_with(&[0x1f, 0x8b]) {
        flate2::read::MultiGzDecoder::new(bytes.as_slice())
            .read_to_string(&mut s)
            .unwrap();
    } else {
        s = String::from_utf8(bytes).unwrap();
    }
    s
}

/// The rows of an aggTrades CSV as text fields: (id, price, qty, f, l, T ms, m, M).
fn csv_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| !l.is_empty() && l.as_bytes()[0].is_ascii_digit())
        .map(|l| l.split(',').map(|f| f.trim().to_string()).collect())
        .collect()
}

/// What the database holds for `symbol`, as the same text fields.
async fn db_rows(c: &tokio_postgres::Client, market: &str, symbol: &str) -> Vec<Vec<String>> {
    c.query(
        "SELECT agg_trade_id::text, price::text, quantity::text, first_trade_id::text, \
                last_trade_id::text, ((extract(epoch FROM transact_time) * 1000)::bigint)::text, \
                is_buyer_maker::text, coalesce(is_best_match::text, '') \
           FROM market.agg_trades t WHERE market = $1 AND symbol = $2 ORDER BY t.agg_trade_id",
        &[&market, &symbol],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (0..8).map(|i| r.get::<_, String>(i)).collect())
    .collect()
}

fn same(file: &[Vec<String>], db: &[Vec<String>]) {
    assert_eq!(file.len(), db.len());
    for (f, d) in file.iter().zip(db) {
        let norm = |b: &str| b.to_ascii_lowercase();
        assert_eq!(&f[..6], &d[..6], "row {}", f[0]);
        assert_eq!(norm(&f[6]), d[6], "is_buyer_maker of {}", f[0]);
        assert_eq!(
            f.get(7).map(|m| norm(m)).unwrap_or_default(),
            d[7],
            "M of {}",
            f[0]
        );
    }
}

fn synthetic_dump(dir: &Path, name: &str, spot: bool, rows: i64) -> PathBuf {
    let mut s = String::new();
    if !spot {
        s.push_str("agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker\n");
    }
    for i in 0..rows {
        let m = if spot {
            if i % 2 == 0 {
                "True"
            } else {
                "False"
            }
        } else if i % 2 == 0 {
            "true"
        } else {
            "false"
        };
        s.push_str(&format!(
            "{},{}.{:02},{}.{:03},{},{},{},{m}{}\n",
            100 + i,
            50 + i % 9,
            i % 100,
            1 + i % 4,
            i % 1000,
            1000 + i * 2,
            1000 + i * 2 + i % 2,
            1_778_198_400_000 + i * 37,
            if spot { ",True" } else { "" }
        ));
    }
    let p = dir.join(name);
    std::fs::write(&p, s).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tick_dumps_import_exactly() {
    let Some(db) = TestDb::migrated("ticks_import").await else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("ta-feed-ticks-import-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cm = common::data_file(CM).unwrap_or_else(|| {
        println!("recorded coin-M dump absent: a synthetic futures-layout dump instead");
        synthetic_dump(&dir, "BTCUSD_PERP-aggTrades-2026-05-08.csv", false, 5000)
    });
    let spot = common::data_file(SPOT).unwrap_or_else(|| {
        println!("recorded spot dump absent: a synthetic spot-layout dump instead");
        synthetic_dump(&dir, "XRPETH-aggTrades-2019-10-11.csv", true, 3000)
    });
    let c = db.client().await;

    // the coin-M day as USD-M (the file's quantity counts contracts; stored as printed)
    let (ok, out) = import(&db.url, &["--market", "usdm", cm.to_str().unwrap()]);
    assert!(ok, "{out}");
    let file = csv_rows(&text_of(&cm));
    same(&file, &db_rows(&c, "usdm", "BTCUSD_PERP").await);
    // ids contiguous in the file: stored contiguous
    let first: i64 = file[0][0].parse().unwrap();
    let last: i64 = file[file.len() - 1][0].parse().unwrap();
    assert_eq!(last - first + 1, file.len() as i64);
    // again: nothing new
    let (ok, out) = import(&db.url, &["--market", "usdm", cm.to_str().unwrap()]);
    assert!(ok && out.contains("rows_written=0"), "{out}");

    // spot layout (no header, True/False, M)
    let (ok, out) = import(&db.url, &[spot.to_str().unwrap()]);
    assert!(ok, "{out}");
    same(
        &csv_rows(&text_of(&spot)),
        &db_rows(&c, "spot", "XRPETH").await,
    );

    // the same spot dump packed as Binance does (a zip holding the CSV), under another
    // symbol with --symbol
    let zip_path = dir.join("XRPETH-aggTrades-2019-10.zip");
    {
        let f = std::fs::File::create(&zip_path).unwrap();
        let mut z = zip::ZipWriter::new(f);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        z.start_file("XRPETH-aggTrades-2019-10.csv", opts).unwrap();
        z.write_all(text_of(&spot).as_bytes()).unwrap();
        z.finish().unwrap();
    }
    let (ok, out) = import(&db.url, &["--symbol", "ZIPETH", zip_path.to_str().unwrap()]);
    assert!(ok, "{out}");
    same(
        &csv_rows(&text_of(&spot)),
        &db_rows(&c, "spot", "ZIPETH").await,
    );

    // a futures bookTicker dump
    let book = dir.join("SUSHIUSDT-bookTicker-2021-07-22.csv");
    std::fs::write(
        &book,
        "update_id,best_bid_price,best_bid_qty,best_ask_price,best_ask_qty,transaction_time,event_time\n\
         600859600576,7.6110,2,7.6120,297,1626992741012,1626992741017\n\
         600859603936,7.6110,6,7.6120,297,1626992741163,1626992741167\n\
         600859605000,7.6100,0,7.6120,12.5,1626992741300,1626992741301\n",
    )
    .unwrap();
    let (ok, out) = import(&db.url, &["--market", "usdm", book.to_str().unwrap()]);
    assert!(ok, "{out}");
    let rows: Vec<String> = c
        .query(
            "SELECT concat_ws(',', update_id, best_bid_price, best_bid_qty, best_ask_price, \
                    best_ask_qty, (extract(epoch FROM transaction_time) * 1000)::bigint, \
                    (extract(epoch FROM event_time) * 1000)::bigint) \
               FROM market.book_tickers WHERE market = 'usdm' AND symbol = 'SUSHIUSDT' ORDER BY update_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let want: Vec<String> = std::fs::read_to_string(&book)
        .unwrap()
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect();
    assert_eq!(rows, want);

    // a bad row (a crossed book) in the middle: the file imports nothing
    let bad = dir.join("BADUSDT-bookTicker-2021-07-22.csv");
    std::fs::write(
        &bad,
        "600859600576,7.6110,2,7.6120,297,1626992741012,1626992741017\n\
         600859600577,7.7,2,7.6120,297,1626992741012,1626992741018\n",
    )
    .unwrap();
    let (ok, out) = import(
        &db.url,
        &[
            "--market",
            "usdm",
            "--batch-rows",
            "1",
            bad.to_str().unwrap(),
        ],
    );
    assert!(
        !ok && out.contains("BADUSDT-bookTicker-2021-07-22.csv:2:") && out.contains("crossed"),
        "{out}"
    );
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM market.book_tickers WHERE symbol = 'BADUSDT'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "one transaction per file");
    let _ = std::fs::remove_dir_all(&dir);
    drop(c);
    db.cleanup().await;
}
