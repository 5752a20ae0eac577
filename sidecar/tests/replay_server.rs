//! The fake Binance (`ta-feed replay`) bound on 127.0.0.1:0, exercised with ta-feed's own
//! REST client and a plain WebSocket client. No database needed. Uses the recorded
//! 2025-10-29 BTCUSDT/ETHUSDT klines when present, else a synthetic series.

mod common;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use ta_feed::binance::model::{parse_ws_message, Kline, KlineText, WsMessage};
use ta_feed::binance::rest::{RestClient, RestConfig, RestError};
use ta_feed::import::read_klines12;
use ta_feed::replay::{self, ReplayConfig, ReplayData};
use ta_feed::shutdown::Shutdown;
use tokio_tungstenite::tungstenite::Message;

fn synthetic(symbol: &str, minutes: i64) -> Vec<Kline> {
    let base = 1_761_711_720_000i64;
    (0..minutes)
        .map(|i| {
            let p = format!("{}.{:02}", 100 + i % 7, i % 100);
            Kline::from_text(KlineText {
                symbol,
                open_time: base + i * 60_000,
                close_time: base + i * 60_000 + 59_999,
                open: &p,
                high: "200.00",
                low: "50.00",
                close: &p,
                volume: "12.34500",
                quote_volume: "1234.5",
                trades: 30 + i % 5,
                taker_buy_volume: "1.00000",
                taker_buy_quote_volume: "100.0",
            })
            .unwrap()
        })
        .collect()
}

fn data() -> ReplayData {
    let files = [
        "spot/klines12/BTCUSDT-1m-2025-10-29_2025-11-01.csv.gz",
        "spot/klines12/ETHUSDT-1m-2025-10-29_2025-11-01.csv.gz",
    ];
    let mut all = Vec::new();
    for f in files {
        match common::data_dir()
            .map(|d| d.join(f))
            .filter(|p| p.is_file())
        {
            Some(p) => all.extend(read_klines12(&p, None).unwrap()),
            None => {
                println!("recorded data absent: using a synthetic series instead of {f}");
                let sym = if f.contains("BTC") {
                    "BTCUSDT"
                } else {
                    "ETHUSDT"
                };
                all.extend(synthetic(sym, 3000));
            }
        }
    }
    ReplayData::from_klines(all).unwrap()
}

async fn server(cfg: ReplayConfig) -> (replay::ReplayServer, ta_feed::shutdown::ShutdownTrigger) {
    let (trigger, shutdown) = Shutdown::new();
    let s = replay::start(cfg, data(), shutdown).await.unwrap();
    (s, trigger)
}

fn rest(addr: std::net::SocketAddr) -> RestClient {
    RestClient::new(RestConfig::new(format!("http://{addr}"))).unwrap()
}

#[tokio::test]
async fn rest_time_and_klines_like_binance() {
    let mut cfg = ReplayConfig::new(vec![], "127.0.0.1:0");
    cfg.speed = 60.0;
    let (srv, _t) = server(cfg).await;
    let d = &srv.state.data;
    let start = d.first_open_ms() + 1440 * 60_000;
    let client = rest(srv.addr);
    let now = client.server_time().await.unwrap();
    assert!(
        now >= start && now < start + 60_000,
        "serverTime {now} vs start {start}"
    );
    assert!(client.used_weight() >= 1);

    // A full page from the beginning: 1000 rows, recorded values verbatim.
    let first = d.first_open_ms();
    let page = client.klines("BTCUSDT", first, now, 1000).await.unwrap();
    assert_eq!(page.len(), 1000);
    assert_eq!(&page[0], &d.series("BTCUSDT").unwrap()[0]);
    assert_eq!(page[999].open_time_ms(), first + 999 * 60_000);

    // The newest rows: the in-progress minute comes last with partial values.
    let tail = client
        .klines("BTCUSDT", now - 5 * 60_000, now, 1000)
        .await
        .unwrap();
    let last = tail.last().unwrap();
    assert!(last.open_time_ms() <= now && now < last.open_time_ms() + 60_000);
    let recorded = d.at("BTCUSDT", last.open_time_ms()).unwrap();
    assert_eq!(last.open, recorded.open);
    assert!(
        last.volume <= recorded.volume && last.high <= recorded.high && last.low >= recorded.low
    );
    // The one before it is closed and verbatim.
    let prev = &tail[tail.len() - 2];
    assert_eq!(prev, d.at("BTCUSDT", prev.open_time_ms()).unwrap());

    // Unknown symbol → 400 {"code":-1121,"msg":"Invalid symbol."}
    match client.klines("NOPEUSDT", first, now, 10).await {
        Err(RestError::Api {
            status: 400,
            code: -1121,
            msg,
        }) => assert_eq!(msg, "Invalid symbol."),
        other => panic!("unexpected {other:?}"),
    }
    // Nothing after now.
    assert!(client
        .klines("ETHUSDT", now + 120_000, now + 600_000, 10)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn rest_429_is_retried_after_retry_after() {
    let mut cfg = ReplayConfig::new(vec![], "127.0.0.1:0");
    cfg.fail_rest = 2;
    let (srv, _t) = server(cfg).await;
    let client = rest(srv.addr);
    let first = srv.state.data.first_open_ms();
    let started = Instant::now();
    let page = client
        .klines("ETHUSDT", first, first + 9 * 60_000, 1000)
        .await
        .unwrap();
    assert_eq!(page.len(), 10);
    assert_eq!(
        srv.state
            .rate_limited
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    assert_eq!(
        srv.state
            .klines_requests
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "waited Retry-After twice"
    );

    // With too few attempts the 429 surfaces as a retryable error.
    let mut cfg = ReplayConfig::new(vec![], "127.0.0.1:0");
    cfg.fail_rest = 5;
    let (srv, _t) = server(cfg).await;
    let mut rc = RestConfig::new(format!("http://{}", srv.addr));
    rc.max_attempts = 1;
    let client = RestClient::new(rc).unwrap();
    let err = client.klines("ETHUSDT", first, first, 1).await.unwrap_err();
    assert!(
        matches!(err, RestError::RateLimited { .. }) && err.is_retryable(),
        "{err:?}"
    );
}

/// Combined stream: x:false updates at 1/3 and 2/3 of each minute, then the recorded
/// closed kline with E = close_time + 200 ms; symbols in file order; pings answered;
/// serverShutdown + close after --drop-after minutes.
#[tokio::test]
async fn websocket_stream_layout_and_drop_after() {
    let mut cfg = ReplayConfig::new(vec![], "127.0.0.1:0");
    cfg.speed = 1200.0; // 50 ms per minute
    cfg.drop_after = Some(4);
    cfg.ping_secs = 0.05;
    let (srv, _t) = server(cfg).await;
    let url = format!(
        "ws://{}/stream?streams=btcusdt@kline_1m/ethusdt@kline_1m/nopeusdt@kline_1m",
        srv.addr
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut closed: Vec<(i64, Kline)> = Vec::new();
    let mut updates = 0;
    let mut shutdown_seen = false;
    let mut pings = 0;
    let deadline = tokio::time::sleep(Duration::from_secs(10));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => panic!("connection was not dropped after 4 minutes"),
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => match parse_ws_message(t.as_str()).unwrap() {
                    WsMessage::Kline(ev) => {
                        assert!(t.as_str().starts_with(r#"{"stream":""#), "{t}");
                        let k = Kline::from_text(ev.kline.as_text()).unwrap();
                        let rec = srv.state.data.at(&k.symbol, k.open_time_ms()).unwrap();
                        if ev.kline.is_closed {
                            assert_eq!(&k, rec, "closed kline carries the recorded values");
                            assert_eq!(ev.event_time, rec.close_time_ms() + 200);
                            assert_eq!(ev.kline.ignore, "0");
                            closed.push((ev.event_time, k));
                        } else {
                            updates += 1;
                            assert_eq!(k.open, rec.open);
                            assert!(k.volume <= rec.volume && k.trades <= rec.trades);
                            let into_minute = ev.event_time - k.open_time_ms();
                            assert!(into_minute == 20_000 || into_minute == 40_000, "{into_minute}");
                        }
                    }
                    WsMessage::ServerShutdown { .. } => shutdown_seen = true,
                    WsMessage::Other { .. } => panic!("unexpected {t}"),
                },
                Some(Ok(Message::Ping(_))) => pings += 1,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            }
        }
    }
    assert!(shutdown_seen, "serverShutdown before close");
    assert_eq!(
        closed.len(),
        8,
        "4 minutes × 2 symbols (unknown symbol gets nothing)"
    );
    for pair in closed.chunks(2) {
        assert_eq!(pair[0].1.symbol, "BTCUSDT", "file order");
        assert_eq!(pair[1].1.symbol, "ETHUSDT");
        assert_eq!(pair[0].1.open_time, pair[1].1.open_time);
    }
    for w in closed.windows(3).step_by(2) {
        assert_eq!(
            w[2].1.open_time_ms() - w[0].1.open_time_ms(),
            60_000,
            "consecutive minutes"
        );
    }
    assert!(updates >= 12, "updates {updates}");
    assert!(pings >= 1, "server pings");
}
