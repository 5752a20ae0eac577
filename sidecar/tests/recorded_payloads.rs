//! Parsing of real recorded Binance data (shared/data/binance). Each test prints
//! "skipped: ..." and passes when the data is absent; the parsing logic itself is also
//! covered by inline samples in the unit tests.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;

use flate2::read::MultiGzDecoder;
use ta_feed::binance::model::{parse_rest_klines, parse_ws_message, Kline, WsMessage};
use ta_feed::import::{read_klines12, symbol_from_file_name, Klines12Reader};

#[derive(Debug, Default, PartialEq)]
struct WsCounts {
    lines: usize,
    kline_1m_open: usize,
    kline_1m_closed: usize,
    other: usize,
    malformed: usize,
}

fn count_ws(path: &Path) -> WsCounts {
    let reader = BufReader::new(MultiGzDecoder::new(std::fs::File::open(path).unwrap()));
    let mut c = WsCounts::default();
    for line in reader.lines() {
        let line = line.unwrap();
        if line.trim().is_empty() {
            continue;
        }
        c.lines += 1;
        match parse_ws_message(&line) {
            Ok(WsMessage::Kline(ev)) => {
                assert_eq!(ev.kline.interval, "1m", "{line}");
                // Every recorded kline, open or closed, is a valid candle.
                let k =
                    Kline::from_text(ev.kline.as_text()).unwrap_or_else(|e| panic!("{e}: {line}"));
                assert_eq!(k.symbol, ev.symbol);
                assert!(!k.is_truncated(), "{line}");
                if ev.kline.is_closed {
                    c.kline_1m_closed += 1;
                    assert!(
                        ev.event_time > ev.kline.close_time,
                        "closed event after close: {line}"
                    );
                } else {
                    c.kline_1m_open += 1;
                }
            }
            Ok(_) => c.other += 1,
            Err(_) => c.malformed += 1,
        }
    }
    c
}

#[test]
fn ws_captures_closed_vs_in_progress() {
    // (file, in-progress kline_1m, closed kline_1m, total messages)
    let cases = [
        ("ws/binance_usdm_combined_2021-07-22.jsonl.gz", 63, 4, 1535),
        ("ws/binanceus_spot_combined_2021-10-12.jsonl.gz", 4, 1, 480),
        ("ws/binance_spot_combined_2021-10-12.jsonl.gz", 2, 0, 265),
    ];
    for (rel, open, closed, total) in cases {
        let Some(path) = common::data_file(rel) else {
            continue;
        };
        let c = count_ws(&path);
        assert_eq!(c.lines, total, "{rel}");
        assert_eq!(c.malformed, 0, "{rel}");
        assert_eq!(
            (c.kline_1m_open, c.kline_1m_closed),
            (open, closed),
            "{rel}: {c:?}"
        );
        assert_eq!(c.other, total - open - closed, "{rel}");
    }
}

#[test]
fn ws_capture_closed_values_exact() {
    let Some(path) = common::data_file("ws/binance_usdm_combined_2021-07-22.jsonl.gz") else {
        return;
    };
    let reader = BufReader::new(MultiGzDecoder::new(std::fs::File::open(path).unwrap()));
    let closed: Vec<Kline> = reader
        .lines()
        .map(Result::unwrap)
        .filter_map(|l| match parse_ws_message(&l) {
            Ok(WsMessage::Kline(ev)) if ev.kline.is_closed => {
                Kline::from_text(ev.kline.as_text()).ok()
            }
            _ => None,
        })
        .collect();
    // README: KEEPUSDT closed with n=14, v=8464 for T 1626992759999.
    let keep = closed
        .iter()
        .find(|k| k.symbol == "KEEPUSDT")
        .expect("KEEPUSDT closed kline");
    assert_eq!(keep.trades, 14);
    assert_eq!(keep.volume.to_string(), "8464");
    assert_eq!(keep.close_time_ms(), 1626992759999);
    assert_eq!(keep.open_time_ms(), 1626992700000);
}

#[test]
fn rest_sample_parses_exactly() {
    let Some(path) =
        common::data_file("rest/binance_spot_api_v3_klines_BTCUSDT_1m_2021-10-22.nautilus.json")
    else {
        return;
    };
    let body = std::fs::read_to_string(path).unwrap();
    let ks = parse_rest_klines("BTCUSDT", &body).unwrap();
    assert_eq!(ks.len(), 10);
    let first = &ks[0];
    assert_eq!(first.open_time_ms(), 1634943780000);
    assert_eq!(first.close_time_ms(), 1634943839999);
    assert_eq!(first.open.to_string(), "60685.22000000");
    assert_eq!(first.high.to_string(), "60729.84000000");
    assert_eq!(first.low.to_string(), "60670.90000000");
    assert_eq!(first.close.to_string(), "60719.27000000");
    assert_eq!(first.volume.to_string(), "21.63272000");
    assert_eq!(first.quote_volume.to_string(), "1313200.01340410");
    assert_eq!(first.trades, 617);
    assert_eq!(first.taker_buy_volume.to_string(), "12.28492000");
    assert_eq!(first.taker_buy_quote_volume.to_string(), "745719.41022840");
    for w in ks.windows(2) {
        assert_eq!(w[1].open_time_ms() - w[0].open_time_ms(), 60_000);
    }
}

#[test]
fn csv_microseconds_sample() {
    let Some(path) = common::data_file("spot/klines12/samples/BTCUSDT-1m-2026-09-15.head.csv")
    else {
        return;
    };
    assert_eq!(symbol_from_file_name(&path).as_deref(), Some("BTCUSDT"));
    let ks = read_klines12(&path, None).unwrap();
    assert_eq!(ks.len(), 4);
    assert_eq!(ks[0].open_time.to_rfc3339(), "2026-09-15T00:00:00+00:00");
    assert_eq!(ks[0].close_time.timestamp_micros(), 1789430459999999);
    assert_eq!(ks[0].open.to_string(), "78189.20000000");
    assert_eq!(ks[3].open_time_ms(), 1789430580000);
    assert!(ks.iter().all(|k| !k.is_truncated()));
}

#[test]
fn csv_futures_header_and_ms() {
    let Some(path) = common::data_file("futures_um/klines12/FILUSDT-1m-2023-08.csv.gz") else {
        return;
    };
    let mut r = Klines12Reader::open(&path, "FILUSDT").unwrap();
    let first = r.next().unwrap().unwrap();
    assert_eq!(first.open_time_ms(), 1690848000000);
    assert_eq!(first.open.to_string(), "4.255");
    assert_eq!(first.volume.to_string(), "25259.1");
    assert_eq!(first.trades, 208);
    let rest: Vec<Kline> = r.collect::<Result<_, _>>().unwrap();
    assert_eq!(rest.len() + 1, 44640, "README row count");
}

#[test]
fn csv_spot_files_counts_gaps_truncation() {
    // (file, rows, truncated rows, missing minutes)
    let cases = [
        (
            "spot/klines12/BTCUSDT-1m-2021-10-11_2021-10-21.csv.gz",
            15693,
            0,
            0,
        ),
        (
            "spot/klines12/BTCUSDT-1m-2021-04-24_2021-04-28.csv.gz",
            5671,
            1,
            284,
        ),
        (
            "spot/klines12/ETHUSDT-1m-2025-10-29_2025-11-01.csv.gz",
            4320,
            0,
            0,
        ),
    ];
    for (rel, rows, truncated, missing) in cases {
        let Some(path) = common::data_file(rel) else {
            continue;
        };
        let ks = read_klines12(&path, None).unwrap();
        assert_eq!(ks.len(), rows, "{rel}");
        let t: Vec<&Kline> = ks.iter().filter(|k| k.is_truncated()).collect();
        assert_eq!(t.len(), truncated, "{rel}");
        if truncated == 1 {
            // README quirk 2: open 1619323200000 closed at 1619323258146.
            assert_eq!(t[0].open_time_ms(), 1619323200000);
            assert_eq!(t[0].close_time_ms(), 1619323258146);
        }
        let gaps: i64 = ks
            .windows(2)
            .map(|w| (w[1].open_time_ms() - w[0].open_time_ms()) / 60_000 - 1)
            .sum();
        assert_eq!(gaps, missing, "{rel}");
    }
}
