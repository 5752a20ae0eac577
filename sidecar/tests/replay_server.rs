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

// ---- USDⓈ-M (`--market usdm`), clones, listing windows, hooks ------------------------

use std::sync::atomic::Ordering;
use std::sync::OnceLock;

use rust_decimal::Decimal;
use ta_feed::binance::model::parse_rest_klines;
use ta_feed::market::Market;

const USDM_FILES: [&str; 2] = [
    "futures_um/klines12/ALGOUSDT-1m-2026-02.csv.gz",
    "futures_um/klines12/AVAXUSDT-1m-2026-02.csv.gz",
];
/// Minutes of each usdm file the tests serve (three days keep loading cheap).
const USDM_MINUTES: usize = 4320;

/// ALGOUSDT and AVAXUSDT (recorded first three days of 2026-02, or synthetic), cached.
fn usdm_klines() -> &'static [Kline] {
    static CACHE: OnceLock<Vec<Kline>> = OnceLock::new();
    CACHE.get_or_init(|| {
        let mut all = Vec::new();
        for f in USDM_FILES {
            let sym = if f.contains("ALGO") {
                "ALGOUSDT"
            } else {
                "AVAXUSDT"
            };
            match common::data_dir()
                .map(|d| d.join(f))
                .filter(|p| p.is_file())
            {
                Some(p) => {
                    let mut v = read_klines12(&p, None).unwrap();
                    v.truncate(USDM_MINUTES);
                    all.extend(v);
                }
                None => {
                    println!("recorded data absent: using a synthetic series instead of {f}");
                    all.extend(synthetic(sym, USDM_MINUTES as i64));
                }
            }
        }
        all
    })
}

fn usdm_data() -> ReplayData {
    ReplayData::from_klines(usdm_klines().to_vec()).unwrap()
}

fn usdm_cfg() -> ReplayConfig {
    let mut cfg = ReplayConfig::for_market(Market::Usdm, vec![], "127.0.0.1:0");
    // keep the client's automatic pongs well under 10 messages per second
    cfg.ping_secs = 0.25;
    cfg
}

async fn usdm_server(
    cfg: ReplayConfig,
) -> (replay::ReplayServer, ta_feed::shutdown::ShutdownTrigger) {
    let (trigger, shutdown) = Shutdown::new();
    let s = replay::start(cfg, usdm_data(), shutdown).await.unwrap();
    (s, trigger)
}

struct Http {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Http {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
    fn header(&self, name: &str) -> Option<u64> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    }
    fn weight(&self) -> u64 {
        self.header("x-mbx-used-weight-1m")
            .expect("X-MBX-USED-WEIGHT-1M")
    }
}

async fn get(addr: std::net::SocketAddr, path: &str) -> Http {
    let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    Http {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.text().await.unwrap(),
    }
}

async fn post(addr: std::net::SocketAddr, path: &str) -> Http {
    let r = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap();
    Http {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.text().await.unwrap(),
    }
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Waits for the next wall-clock minute when fewer than 10 s of this one are left.
async fn away_from_minute_edge() {
    let into = wall_ms() % 60_000;
    if into > 50_000 {
        tokio::time::sleep(Duration::from_millis((60_000 - into + 200) as u64)).await;
    }
}

/// The clone rule, computed independently: prices and quote volumes × (1000 + k) / 1000.
fn expected_clone(k: &Kline, name: &str, n: i64) -> Kline {
    let f = Decimal::new(1000 + n, 3);
    let mut c = k.clone();
    c.symbol = name.to_string();
    for v in [
        &mut c.open,
        &mut c.high,
        &mut c.low,
        &mut c.close,
        &mut c.quote_volume,
        &mut c.taker_buy_quote_volume,
    ] {
        *v *= f;
    }
    c
}

/// What one WebSocket connection received.
#[derive(Debug, Default)]
struct WsLog {
    texts: Vec<String>,
    pings: usize,
    /// The close frame's reason, when the server sent one.
    close: Option<String>,
    /// Ended without a close frame (TCP closed / error).
    abrupt: bool,
}

impl WsLog {
    fn closed_klines(&self) -> Vec<(i64, Kline)> {
        self.texts
            .iter()
            .filter_map(|t| match parse_ws_message(t).unwrap() {
                WsMessage::Kline(ev) if ev.kline.is_closed => {
                    Some((ev.event_time, Kline::from_text(ev.kline.as_text()).unwrap()))
                }
                _ => None,
            })
            .collect()
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_connect(addr: std::net::SocketAddr, path: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}{path}"))
        .await
        .unwrap();
    ws
}

/// Reads `ws` for `dur` or until it ends.
async fn ws_read(mut ws: Ws, dur: Duration) -> WsLog {
    let mut log = WsLog::default();
    let deadline = tokio::time::sleep(dur);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => log.texts.push(t.to_string()),
                Some(Ok(Message::Ping(_))) => log.pings += 1,
                Some(Ok(Message::Close(f))) => {
                    log.close = Some(f.map(|f| f.reason.to_string()).unwrap_or_default());
                    break;
                }
                None | Some(Err(_)) => {
                    log.abrupt = true;
                    break;
                }
                Some(Ok(_)) => {}
            }
        }
    }
    log
}

/// /fapi/v1 routes with Binance's weights; 429 over the limit of the wall-clock minute
/// (Retry-After to the next minute), 418 for a request that ignores it; spot keeps its
/// routes and gains /api/v3/exchangeInfo.
#[tokio::test]
async fn usdm_rest_routes_weights_429_then_418() {
    away_from_minute_edge().await;
    let mut cfg = usdm_cfg();
    cfg.weight_limit_1m = 40;
    let (srv, _t) = usdm_server(cfg).await;
    let addr = srv.addr;
    let first = srv.state.data.first_open_ms();

    let t = get(addr, "/fapi/v1/time").await;
    assert_eq!(t.status, 200);
    let now = t.json()["serverTime"].as_i64().unwrap();
    assert_eq!(now, first + 1440 * 60_000);
    let w0 = t.weight();
    assert_eq!(w0, 1, "time weighs 1");

    let r = get(
        addr,
        &format!("/fapi/v1/klines?symbol=ALGOUSDT&interval=1m&startTime={first}&limit=1500"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let rows = parse_rest_klines("ALGOUSDT", &r.body).unwrap();
    assert_eq!(
        rows.len(),
        1441,
        "all minutes up to now (the in-progress one last)"
    );
    assert_eq!(r.weight(), w0 + 10, "limit 1500 weighs 10");
    let r = get(addr, "/fapi/v1/klines?symbol=ALGOUSDT&interval=1m&limit=99").await;
    assert_eq!(parse_rest_klines("ALGOUSDT", &r.body).unwrap().len(), 99);
    assert_eq!(r.weight(), w0 + 11, "limit 99 weighs 1");
    let r = get(
        addr,
        "/fapi/v1/klines?symbol=ALGOUSDT&interval=1m&limit=5000",
    )
    .await;
    assert_eq!(parse_rest_klines("ALGOUSDT", &r.body).unwrap().len(), 1441);
    assert_eq!(r.weight(), w0 + 21, "limit clamped to 1500, weight 10");
    let e = get(addr, "/fapi/v1/exchangeInfo").await;
    assert_eq!((e.status, e.weight()), (200, w0 + 22));
    let bad = get(addr, "/fapi/v1/klines?symbol=NOPEUSDT&interval=1m").await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["code"], -1121);
    assert_eq!(
        bad.weight(),
        w0 + 27,
        "default limit 500 weighs 5; errors carry the header"
    );
    assert_eq!(
        get(addr, "/api/v3/klines?symbol=ALGOUSDT&interval=1m")
            .await
            .status,
        404
    );

    // 28 + 10 = 38 ≤ 40; the next limit-1500 request would make 48: 429.
    let ok = get(
        addr,
        "/fapi/v1/klines?symbol=ALGOUSDT&interval=1m&limit=1500",
    )
    .await;
    assert_eq!((ok.status, ok.weight()), (200, 38));
    let limited = get(
        addr,
        "/fapi/v1/klines?symbol=ALGOUSDT&interval=1m&limit=1500",
    )
    .await;
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert_eq!(limited.json()["code"], -1003);
    assert!(limited.json()["msg"]
        .as_str()
        .unwrap()
        .starts_with("Too many requests;"));
    assert_eq!(limited.weight(), 38, "a refused request adds no weight");
    let retry = limited.header("retry-after").unwrap();
    let to_next_minute = (60_000 - wall_ms() % 60_000) as u64;
    assert!(
        (1..=60).contains(&retry) && retry * 1000 >= to_next_minute,
        "Retry-After {retry} s, next minute in {to_next_minute} ms"
    );
    // Ignoring Retry-After: 418, even for a light request.
    let banned = get(addr, "/fapi/v1/time").await;
    assert_eq!(banned.status, 418, "{}", banned.body);
    assert_eq!(banned.json()["code"], -1003);
    assert!(banned.json()["msg"]
        .as_str()
        .unwrap()
        .starts_with("Way too many requests; IP banned until"));
    assert_eq!(banned.header("retry-after"), Some(120));
    assert_eq!(srv.state.rate_limited.load(Ordering::Relaxed), 1);
    assert_eq!(srv.state.banned.load(Ordering::Relaxed), 1);
    let status = get(addr, "/_replay/status").await.json();
    assert_eq!(status["rate_limited"], 1);
    assert_eq!(status["banned"], 1);
    assert_eq!(status["weight_used_1m"], 38);
    assert_eq!(status["market"], "usdm");
    assert_eq!(status["klines_requests"], 6);
    assert_eq!(status["exchange_info_requests"], 1);

    // --fail-rest still works on usdm (simulated 429s: no ban for the retry).
    let mut cfg = usdm_cfg();
    cfg.fail_rest = 1;
    let (srv, _t) = usdm_server(cfg).await;
    let path = "/fapi/v1/klines?symbol=AVAXUSDT&interval=1m&limit=10";
    let r = get(srv.addr, path).await;
    assert_eq!((r.status, r.header("retry-after")), (429, Some(1)));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let r = get(srv.addr, path).await;
    assert_eq!((r.status, r.weight()), (200, 1));

    // Spot: unchanged routes, plus exchangeInfo (weight 20 per replay minute).
    let (srv, _t) = server(ReplayConfig::new(vec![], "127.0.0.1:0")).await;
    let r = get(
        srv.addr,
        "/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=1500",
    )
    .await;
    assert_eq!(parse_rest_klines("BTCUSDT", &r.body).unwrap().len(), 1000);
    assert_eq!(r.weight(), 2);
    let e = get(srv.addr, "/api/v3/exchangeInfo").await;
    assert_eq!((e.status, e.weight()), (200, 22));
    let info = e.json();
    assert_eq!(info["rateLimits"][0]["limit"], 6000);
    let s0 = &info["symbols"][0];
    assert_eq!(s0["symbol"], "BTCUSDT");
    assert_eq!(s0["baseAsset"], "BTC");
    assert_eq!(s0["isSpotTradingAllowed"], true);
    assert!(s0.get("contractType").is_none());
    assert_eq!(
        get(srv.addr, "/fapi/v1/klines?symbol=BTCUSDT&interval=1m")
            .await
            .status,
        404
    );
}

/// The recorded 2021-07-22 exchangeInfo is served as is (122 symbols, 117 USDT-margined
/// TRADING perpetuals); the built one lists the clones in order.
#[tokio::test]
async fn usdm_exchange_info_recorded_and_built() {
    if let Some(path) =
        common::data_file("rest/binance_usdm_fapi_v1_exchangeInfo_2021-07-22.json.gz")
    {
        let mut cfg = usdm_cfg();
        cfg.exchange_info = Some(path);
        let (srv, _t) = usdm_server(cfg).await;
        let info = get(srv.addr, "/fapi/v1/exchangeInfo").await.json();
        let symbols = info["symbols"].as_array().unwrap();
        assert_eq!(symbols.len(), 122);
        let usable = symbols
            .iter()
            .filter(|s| {
                s["contractType"] == "PERPETUAL"
                    && s["status"] == "TRADING"
                    && s["quoteAsset"] == "USDT"
                    && s["marginAsset"] == "USDT"
            })
            .count();
        assert_eq!(usable, 117);
        let now = srv.state.clock.now_ms();
        let server_time = info["serverTime"].as_i64().unwrap();
        assert!(
            (now - 60_000..=now).contains(&server_time),
            "{server_time} vs {now}"
        );
        assert_eq!(info["rateLimits"][0]["limit"], 2400);
    }

    let mut cfg = usdm_cfg();
    cfg.clone_symbols = 3;
    let (srv, _t) = usdm_server(cfg).await;
    let info = get(srv.addr, "/fapi/v1/exchangeInfo").await.json();
    let names: Vec<&str> = info["symbols"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["symbol"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "ALGOUSDT",
            "ALGO01USDT",
            "ALGO02USDT",
            "AVAXUSDT",
            "AVAX01USDT",
            "AVAX02USDT"
        ]
    );
    let s = &info["symbols"][2];
    assert_eq!(s["pair"], "ALGO02USDT");
    assert_eq!(s["contractType"], "PERPETUAL");
    assert_eq!(s["status"], "TRADING");
    assert_eq!(s["baseAsset"], "ALGO02");
    assert_eq!(
        (&s["quoteAsset"], &s["marginAsset"]),
        (&"USDT".into(), &"USDT".into())
    );
    assert_eq!(s["onboardDate"], srv.state.data.first_open_ms());
    assert_eq!(info["timezone"], "UTC");
    assert_eq!(info["rateLimits"][0]["rateLimitType"], "REQUEST_WEIGHT");
    assert_eq!(info["rateLimits"][0]["limit"], 2400);
    assert_eq!(get(srv.addr, "/_replay/status").await.json()["symbols"], 6);

    // A symbol without the USDT suffix cannot be cloned.
    let mut cfg = ReplayConfig::for_market(Market::Usdm, vec![], "127.0.0.1:0");
    cfg.clone_symbols = 2;
    let (_trigger, shutdown) = Shutdown::new();
    let odd = ReplayData::from_klines(synthetic("ETHBTC", 10)).unwrap();
    let err = replay::start(cfg, odd, shutdown).await.err().unwrap();
    assert!(
        err.to_string().contains("ETHBTC does not end in USDT"),
        "{err}"
    );
}

/// k = 3 clones are the source × 1.003 exactly, on REST and on the stream; the stream
/// sends the original before its clones; the legacy `/stream` and `/ws` stay silent
/// while `/market/stream` (wrapped) and `/market/ws` (raw) deliver, E = close_time + 2 s.
#[tokio::test]
async fn usdm_clones_exact_and_only_market_routes_deliver() {
    let mut cfg = usdm_cfg();
    cfg.clone_symbols = 4;
    cfg.speed = 1200.0; // 50 ms per minute
    let (srv, _t) = usdm_server(cfg).await;
    let addr = srv.addr;
    let d = &srv.state.data;
    let first = d.first_open_ms();

    let r = get(
        addr,
        &format!("/fapi/v1/klines?symbol=ALGO03USDT&interval=1m&startTime={first}&limit=1000"),
    )
    .await;
    let rows = parse_rest_klines("ALGO03USDT", &r.body).unwrap();
    assert_eq!(rows.len(), 1000);
    for (row, src) in rows.iter().zip(d.series("ALGOUSDT").unwrap()) {
        assert_eq!(row, &expected_clone(src, "ALGO03USDT", 3));
    }

    let streams = "algo03usdt@kline_1m/algousdt@kline_1m";
    let market = ws_connect(addr, &format!("/market/stream?streams={streams}")).await;
    let raw = ws_connect(addr, "/market/ws/algo03usdt@kline_1m/avax01usdt@kline_1m").await;
    let legacy = ws_connect(addr, &format!("/stream?streams={streams}")).await;
    let legacy_raw = ws_connect(addr, "/ws/algousdt@kline_1m").await;
    let dur = Duration::from_millis(1500); // ~30 replay minutes
    let (market, raw, legacy, legacy_raw) = tokio::join!(
        ws_read(market, dur),
        ws_read(raw, dur),
        ws_read(legacy, dur),
        ws_read(legacy_raw, dur)
    );
    for l in [&legacy, &legacy_raw] {
        assert!(
            l.texts.is_empty(),
            "legacy route delivered {:?}",
            l.texts.first()
        );
        assert!(l.pings >= 2 && l.close.is_none() && !l.abrupt, "{l:?}");
    }
    let closed = market.closed_klines();
    assert!(closed.len() >= 40, "{} closed klines", closed.len());
    assert!(market.texts.iter().all(|t| t.starts_with(r#"{"stream":""#)));
    for pair in closed.chunks(2) {
        assert_eq!(pair[0].1.symbol, "ALGOUSDT", "the original first");
        assert_eq!(pair[1].1.symbol, "ALGO03USDT");
    }
    for (e, k) in &closed {
        let src = d.at("ALGOUSDT", k.open_time_ms()).unwrap();
        assert_eq!(*e, src.close_time_ms() + 2000, "usdm close delay");
        if k.symbol == "ALGOUSDT" {
            assert_eq!(k, src);
        } else {
            assert_eq!(k, &expected_clone(src, "ALGO03USDT", 3));
        }
    }
    assert!(raw.texts.iter().all(|t| t.starts_with(r#"{"e":"kline""#)));
    let raw_closed = raw.closed_klines();
    assert!(raw_closed.len() >= 40, "{}", raw_closed.len());
    for (_, k) in &raw_closed {
        let (src, n) = match k.symbol.as_str() {
            "ALGO03USDT" => ("ALGOUSDT", 3),
            "AVAX01USDT" => ("AVAXUSDT", 1),
            other => panic!("unexpected {other}"),
        };
        let src = d.at(src, k.open_time_ms()).unwrap();
        assert_eq!(k, &expected_clone(src, &k.symbol, n));
        assert_eq!(
            srv.state.kline(&k.symbol, k.open_time_ms()).as_ref(),
            Some(k)
        );
    }
}

/// Binance's connection rules on usdm: > 1024 streams, > 10 messages a second and the
/// connection lifetime all end in a close frame, counted in the status.
#[tokio::test]
async fn usdm_connection_limits_close() {
    let mut cfg = usdm_cfg();
    cfg.speed = 1200.0;
    cfg.connection_lifetime_secs = Some(600); // 10 replay minutes = 0.5 s
    let (srv, _t) = usdm_server(cfg).await;
    let addr = srv.addr;

    let many: Vec<String> = (0..1025).map(|i| format!("s{i}usdt@kline_1m")).collect();
    let ws = ws_connect(addr, &format!("/market/stream?streams={}", many.join("/"))).await;
    let log = ws_read(ws, Duration::from_secs(5)).await;
    assert!(
        log.close
            .as_deref()
            .unwrap_or("")
            .contains("too many streams"),
        "{log:?}"
    );
    // exactly 1024 is fine
    let ok = ws_connect(
        addr,
        &format!("/market/stream?streams={}", many[..1024].join("/")),
    )
    .await;

    let mut chatty = ws_connect(addr, "/market/stream?streams=algousdt@kline_1m").await;
    for _ in 0..11 {
        futures_util::SinkExt::send(&mut chatty, Message::Ping(b"x".to_vec().into()))
            .await
            .unwrap();
    }
    let started = Instant::now();
    let ((log, took), ok_log) = tokio::join!(
        async {
            let log = ws_read(chatty, Duration::from_secs(5)).await;
            (log, started.elapsed())
        },
        ws_read(ok, Duration::from_secs(5))
    );
    assert_eq!(log.close.as_deref(), Some("too many messages"), "{log:?}");
    assert!(
        took < Duration::from_millis(400),
        "closed before its lifetime: {took:?}"
    );
    assert!(ok_log.close.is_some(), "lifetime close frame: {ok_log:?}");

    let quiet = ws_connect(addr, "/market/ws/algousdt@kline_1m").await;
    let started = Instant::now();
    let log = ws_read(quiet, Duration::from_secs(5)).await;
    let took = started.elapsed();
    assert_eq!(
        log.close.as_deref(),
        Some("connection lifetime reached"),
        "{log:?}"
    );
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // 10 replay minutes: about 10 closed klines
    let n = log.closed_klines().len();
    assert!((8..=11).contains(&n), "{n}");

    let status = get(addr, "/_replay/status").await.json();
    assert_eq!(status["closed_too_many_streams"], 1);
    assert_eq!(status["closed_too_many_messages"], 1);
    assert_eq!(status["closed_lifetime"], 2);
    assert_eq!(status["connections_open"], 0);
    assert_eq!(status["connections_total"], 4);

    // spot refuses the flag
    let mut cfg = ReplayConfig::new(vec![], "127.0.0.1:0");
    cfg.connection_lifetime_secs = Some(60);
    let (_trigger, shutdown) = Shutdown::new();
    let err = replay::start(cfg, data(), shutdown).await.err().unwrap();
    assert!(err.to_string().contains("--connection-lifetime"), "{err}");
}

/// `POST /_replay/drop-connection` closes the oldest (or `?id=`) connection without a
/// close frame; `GET /_replay/status` lists the open ones.
#[tokio::test]
async fn drop_connection_hook_and_status() {
    let mut cfg = usdm_cfg();
    cfg.speed = 60.0;
    let (srv, _t) = usdm_server(cfg).await;
    let addr = srv.addr;
    let a = ws_connect(
        addr,
        "/market/stream?streams=algousdt@kline_1m/avaxusdt@kline_1m",
    )
    .await;
    let b = ws_connect(addr, "/market/ws/avaxusdt@kline_1m").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while srv.state.open_connections().len() < 2 {
        assert!(Instant::now() < deadline, "connections registered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = get(addr, "/_replay/status").await.json();
    assert_eq!(status["connections_open"], 2);
    assert_eq!(status["streams_open"], 3);
    assert_eq!(status["open"][0]["id"], 1);
    assert_eq!(status["open"][0]["streams"], 2);
    assert!(
        status["open"][1]["opened_replay_ms"].as_i64().unwrap() >= srv.state.data.first_open_ms()
    );
    assert!(status["now_ms"].as_i64().is_some());

    let (dropped, a_log) = tokio::join!(
        post(addr, "/_replay/drop-connection"),
        ws_read(a, Duration::from_secs(3))
    );
    assert_eq!(dropped.status, 200);
    assert_eq!(dropped.json(), serde_json::json!({"dropped": 1}));
    assert!(a_log.abrupt && a_log.close.is_none(), "{a_log:?}");
    assert_eq!(
        post(addr, "/_replay/drop-connection?id=99").await.status,
        404
    );
    let (dropped, b_log) = tokio::join!(
        post(addr, "/_replay/drop-connection?id=2"),
        ws_read(b, Duration::from_secs(3))
    );
    assert_eq!(dropped.json()["dropped"], 2);
    assert!(b_log.abrupt, "{b_log:?}");
    assert_eq!(post(addr, "/_replay/drop-connection").await.status, 404);
    assert_eq!(
        get(addr, "/_replay/status").await.json()["connections_open"],
        0
    );
}

/// `--list`: absent before its time, klines from its minute on; `--delist`: SETTLING,
/// no klines from its time on (REST and stream).
#[tokio::test]
async fn list_and_delist_windows() {
    let start = usdm_klines()[0].open_time_ms() + 1440 * 60_000;
    let listed = start + 10 * 60_000 + 30_000; // mid-minute
    let delisted = start + 5 * 60_000;
    let mut cfg = usdm_cfg();
    cfg.speed = 600.0; // 10 minutes per second
    cfg.clone_symbols = 2;
    cfg.list = vec![("ALGO01USDT".into(), listed)];
    cfg.delist = vec![("ALGOUSDT".into(), delisted)];
    let (srv, _t) = usdm_server(cfg).await;
    let addr = srv.addr;
    let symbols = |info: &serde_json::Value| -> Vec<(String, String)> {
        info["symbols"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["symbol"].as_str().unwrap().into(),
                    s["status"].as_str().unwrap().into(),
                )
            })
            .collect()
    };
    let ws = ws_connect(
        addr,
        "/market/stream?streams=algousdt@kline_1m/algo01usdt@kline_1m",
    )
    .await;
    let reader = tokio::spawn(ws_read(ws, Duration::from_millis(2500)));
    let info = get(addr, "/fapi/v1/exchangeInfo").await.json();
    let s = symbols(&info);
    assert!(!s.iter().any(|(n, _)| n == "ALGO01USDT"), "{s:?}");
    assert!(s.contains(&("ALGOUSDT".into(), "TRADING".into())));
    let r = get(addr, "/fapi/v1/klines?symbol=ALGO01USDT&interval=1m").await;
    assert_eq!((r.status, r.json()["code"].as_i64()), (400, Some(-1121)));

    while srv.state.clock.now_ms() < listed + 60_000 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let info = get(addr, "/fapi/v1/exchangeInfo").await.json();
    let s = symbols(&info);
    assert!(
        s.contains(&("ALGO01USDT".into(), "TRADING".into())),
        "{s:?}"
    );
    assert!(s.contains(&("ALGOUSDT".into(), "SETTLING".into())), "{s:?}");
    let listed_minute = listed - 30_000;
    let one = info["symbols"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["symbol"] == "ALGO01USDT")
        .unwrap()
        .clone();
    assert_eq!(one["onboardDate"], listed);
    let r = get(
        addr,
        "/fapi/v1/klines?symbol=ALGO01USDT&interval=1m&startTime=0&limit=1500",
    )
    .await;
    let rows = parse_rest_klines("ALGO01USDT", &r.body).unwrap();
    assert_eq!(
        rows[0].open_time_ms(),
        listed_minute,
        "klines from the listing minute on"
    );
    let r = get(
        addr,
        "/fapi/v1/klines?symbol=ALGOUSDT&interval=1m&limit=1500",
    )
    .await;
    let rows = parse_rest_klines("ALGOUSDT", &r.body).unwrap();
    assert_eq!(
        rows.last().unwrap().open_time_ms(),
        delisted - 60_000,
        "nothing from the delisting on"
    );

    let log = reader.await.unwrap();
    let closed = log.closed_klines();
    assert!(closed.iter().any(|(_, k)| k.symbol == "ALGOUSDT"));
    assert!(
        closed.iter().any(|(_, k)| k.symbol == "ALGO01USDT"),
        "{}",
        closed.len()
    );
    for (_, k) in &closed {
        match k.symbol.as_str() {
            "ALGOUSDT" => assert!(k.open_time_ms() < delisted),
            _ => assert!(k.open_time_ms() >= listed_minute),
        }
    }
    for t in &log.texts {
        if let WsMessage::Kline(ev) = parse_ws_message(t).unwrap() {
            if ev.symbol == "ALGO01USDT" {
                assert!(ev.event_time >= listed, "nothing before the listing time");
            }
        }
    }

    // unknown symbols are refused up front
    let mut cfg = usdm_cfg();
    cfg.list = vec![("NOPEUSDT".into(), start)];
    let (_trigger, shutdown) = Shutdown::new();
    let err = replay::start(cfg, usdm_data(), shutdown)
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("NOPEUSDT"), "{err}");
}

/// 504 symbols (2 files × 252 clones) on two connections at 10 minutes a second: every
/// minute's closed klines arrive on both, and `--sent-log` has one line per connection
/// and minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sent_log_and_504_symbols_keep_up() {
    let log_path = std::env::temp_dir().join(format!("ta-feed-sent-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&log_path);
    let mut cfg = usdm_cfg();
    cfg.speed = 600.0;
    cfg.clone_symbols = 252;
    cfg.sent_log = Some(log_path.clone());
    let (srv, _t) = usdm_server(cfg).await;
    let names: Vec<String> = srv
        .state
        .catalog
        .symbols()
        .iter()
        .map(|s| s.stream.clone())
        .collect();
    assert_eq!(names.len(), 504);
    let path = format!("/market/stream?streams={}", names.join("/"));
    let a = ws_connect(srv.addr, &path).await;
    let b = ws_connect(srv.addr, &path).await;
    // ~80 replay minutes on an idle machine; what is checked below is the content of the
    // minutes read (every one complete, the log contiguous), not how many a loaded machine
    // manages, so a handful is enough
    let dur = Duration::from_secs(8);
    let (a, b) = tokio::join!(ws_read(a, dur), ws_read(b, dur));
    for log in [&a, &b] {
        let closed = log.closed_klines();
        let mut per_minute = std::collections::BTreeMap::<i64, usize>::new();
        for (_, k) in &closed {
            *per_minute.entry(k.open_time_ms()).or_default() += 1;
        }
        per_minute.pop_last(); // the read may have stopped inside the last batch
        assert!(per_minute.len() >= 5, "{} minutes in 8 s", per_minute.len());
        assert!(per_minute.values().all(|&n| n == 504), "{per_minute:?}");
    }
    let text = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 10, "{} lines", lines.len());
    for c in [1, 2] {
        let mine: Vec<&serde_json::Value> = lines.iter().filter(|l| l["connection"] == c).collect();
        assert!(mine.len() >= 5, "{} lines of connection {c}", mine.len());
        for w in mine.windows(2) {
            assert_eq!(
                w[1]["open_time"].as_i64().unwrap() - w[0]["open_time"].as_i64().unwrap(),
                60_000
            );
        }
        for l in &mine {
            assert_eq!(l["klines"], 504);
            let sent = l["sent_at_ms"].as_i64().unwrap();
            assert!((wall_ms() - 60_000..=wall_ms()).contains(&sent));
        }
    }
    let _ = std::fs::remove_file(&log_path);
}
