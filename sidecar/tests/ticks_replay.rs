//! The fake Binance's tick side (`ta-feed replay` with aggTrades and book tickers), bound on
//! 127.0.0.1:0: klines derived from trades by Binance's rule, REST `aggTrades` selection and
//! weights, `@aggTrade` / `@bookTicker` on the right USD-M routes only, the payload forms of
//! each market, clones. No database needed; synthetic trades (exact values known here).

use std::time::Duration;

use futures_util::StreamExt;
use rust_decimal::Decimal;
use ta_feed::binance::kind::agg_trade::{self, AggTrade, RestAggTrade};
use ta_feed::binance::kind::book_ticker::{self, BookTicker, WsBookTicker};
use ta_feed::binance::kind::{split_combined, Symbol};
use ta_feed::market::Market;
use ta_feed::replay::{self, klines_from_trades, ReplayConfig, ReplayData};
use ta_feed::shutdown::Shutdown;
use tokio_tungstenite::tungstenite::Message;

/// 2026-05-08 00:00 UTC.
const BASE: i64 = 1_778_198_400_000;

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn trade(symbol: &str, id: i64, t: i64, p: &str, q: &str, m: bool, raw: i64) -> AggTrade {
    let w = RestAggTrade {
        agg_trade_id: id,
        price: p,
        quantity: q,
        first_trade_id: id * 10,
        last_trade_id: id * 10 + raw - 1,
        trade_time: t,
        is_buyer_maker: m,
        is_best_match: None,
    };
    AggTrade::from_wire(Symbol::new(symbol).unwrap(), &w, None).unwrap()
}

/// One trade every 250 ms for `minutes` minutes from BASE (ids from 1000).
fn trades(symbol: &str, minutes: i64) -> Vec<AggTrade> {
    (0..minutes * 240)
        .map(|i| {
            let p = format!("{}.{:02}", 100 + (i * 7) % 13, (i * 31) % 100);
            let q = format!("0.{:03}", 1 + (i * 17) % 999);
            trade(
                symbol,
                1000 + i,
                BASE + i * 250,
                &p,
                &q,
                i % 3 == 0,
                1 + i % 3,
            )
        })
        .collect()
}

/// One book update every 100 ms for `minutes` minutes from BASE (update ids from 1).
fn books(symbol: &str, minutes: i64) -> Vec<BookTicker> {
    (0..minutes * 600)
        .map(|i| {
            let bid = format!("{}.{:02}", 100 + i % 5, i % 100);
            let ask = format!("{}.{:02}", 106 + i % 5, i % 100);
            let w = WsBookTicker {
                event_type: None,
                update_id: 1 + i,
                symbol,
                best_bid_price: &bid,
                best_bid_qty: "1.5",
                best_ask_price: &ask,
                best_ask_qty: "2.25",
                transaction_time: Some(BASE + i * 100 - 3),
                event_time: Some(BASE + i * 100),
            };
            BookTicker::from_wire(Symbol::new(symbol).unwrap(), &w, 0).unwrap()
        })
        .collect()
}

fn data(minutes: i64) -> ReplayData {
    ReplayData::from_parts(
        Vec::new(),
        trades("TICKUSDT", minutes),
        books("TICKUSDT", minutes),
    )
    .unwrap()
}

async fn server(
    market: Market,
    speed: f64,
    start: i64,
    clones: u32,
    weight_limit: Option<u32>,
) -> (replay::ReplayServer, ta_feed::shutdown::ShutdownTrigger) {
    let mut cfg = ReplayConfig::for_market(market, vec![], "127.0.0.1:0");
    cfg.speed = speed;
    cfg.start_ms = Some(start);
    cfg.clone_symbols = clones;
    cfg.ping_secs = 0.25;
    if let Some(w) = weight_limit {
        cfg.weight_limit_1m = w;
    }
    let (trigger, shutdown) = Shutdown::new();
    let s = replay::start(cfg, data(20), shutdown).await.unwrap();
    (s, trigger)
}

/// Binance's kline of a minute is the aggregate of its trades; a minute without trades is
/// flat at the previous close (hand-computed values, exact decimals).
#[test]
fn derived_klines_follow_binance() {
    let ts = vec![
        trade("HANDUSDT", 1, BASE + 10, "10.0", "1", false, 1),
        trade("HANDUSDT", 2, BASE + 20, "12.5", "2", true, 3),
        trade("HANDUSDT", 3, BASE + 59_999, "9.5", "0.5", false, 2),
        trade("HANDUSDT", 4, BASE + 120_000, "11", "3", false, 1),
    ];
    let k = klines_from_trades("HANDUSDT", &ts).unwrap();
    assert_eq!(k.len(), 3);
    let m0 = &k[0];
    assert_eq!(m0.open_time.timestamp_millis(), BASE);
    assert_eq!(m0.close_time.timestamp_millis(), BASE + 59_999);
    assert_eq!(
        (m0.open, m0.high, m0.low, m0.close),
        (dec("10.0"), dec("12.5"), dec("9.5"), dec("9.5"))
    );
    assert_eq!(m0.volume, dec("3.5"));
    assert_eq!(m0.quote_volume, dec("39.75"), "10.0 + 25.0 + 4.75");
    assert_eq!(m0.trades, 6, "Σ(l − f + 1) = 1 + 3 + 2");
    assert_eq!(m0.taker_buy_volume, dec("1.5"), "m = false only");
    assert_eq!(m0.taker_buy_quote_volume, dec("14.75"));
    let m1 = &k[1];
    assert_eq!(
        (m1.open, m1.high, m1.low, m1.close, m1.volume, m1.trades),
        (
            dec("9.5"),
            dec("9.5"),
            dec("9.5"),
            dec("9.5"),
            Decimal::ZERO,
            0
        ),
        "flat minute"
    );
    assert_eq!(k[2].quote_volume, dec("33"));
    // a symbol with a kline file and trades is refused (its klines come from its trades)
    let kline = k[0].clone();
    let err = ReplayData::from_parts(vec![kline], ts, Vec::new()).unwrap_err();
    assert!(err.to_string().contains("derived"), "{err}");
}

/// `aggTrades?fromId/startTime/endTime/limit` select like Binance among the trades visible at
/// replay time, with weight 4 (spot) and 20 (USD-M) in `X-MBX-USED-WEIGHT-1M`.
#[tokio::test]
async fn rest_agg_trades_like_binance() {
    // the clock stands (speed 0.001) at BASE + 5 min: trades 1000..=2199 are visible
    let (srv, _t) = server(Market::Spot, 0.001, BASE + 5 * 60_000, 1, None).await;
    let get = |q: String| {
        let url = format!("http://{}/api/v3/aggTrades?{q}", srv.addr);
        async move {
            let r = reqwest::get(url).await.unwrap();
            let status = r.status().as_u16();
            let w: u64 = r
                .headers()
                .get("x-mbx-used-weight-1m")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            (status, w, r.text().await.unwrap())
        }
    };
    let ids = |body: &str| -> Vec<i64> {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r["a"].as_i64().unwrap())
            .collect()
    };
    // TC1 fromId: the first `limit` from that id, spot rows carry M
    let (s, w1, b) = get("symbol=TICKUSDT&fromId=1500&limit=3".into()).await;
    assert_eq!((s, ids(&b)), (200, vec![1500, 1501, 1502]));
    let rows = agg_trade::parse_rest(&Symbol::new("TICKUSDT").unwrap(), &b).unwrap();
    let want = trades("TICKUSDT", 20);
    assert_eq!(rows[0].as_ref().unwrap().price, want[500].price, "exact");
    assert!(b.contains(r#""M":true"#), "{b}");
    // TC2 weight 4 per request
    let (_, w2, _) = get("symbol=TICKUSDT&fromId=1".into()).await;
    assert_eq!(w2 - w1, 4);
    // TC3 default limit 500, from below the first id
    let (_, _, b) = get("symbol=TICKUSDT&fromId=1".into()).await;
    assert_eq!(ids(&b).len(), 500);
    assert_eq!(ids(&b)[0], 1000);
    // TC4 only what happened by now: from 2190 there are 10 (2190..=2199) + the one at now
    let (_, _, b) = get("symbol=TICKUSDT&fromId=2190&limit=1000".into()).await;
    let got = ids(&b);
    assert!(
        got.len() <= 11 && got.len() >= 10 && got[0] == 2190,
        "{got:?}"
    );
    // TC5 startTime/endTime window (inclusive)
    let (_, _, b) = get(format!(
        "symbol=TICKUSDT&startTime={}&endTime={}",
        BASE + 1000,
        BASE + 2000
    ))
    .await;
    assert_eq!(ids(&b), vec![1004, 1005, 1006, 1007, 1008]);
    // TC6 no selector: the newest
    let (_, _, b) = get("symbol=TICKUSDT&limit=2".into()).await;
    let got = ids(&b);
    assert_eq!(got.len(), 2);
    assert!(got[1] >= 2199, "{got:?}");
    // TC7 refused: an hour or more between start and end, fromId with a time, bad limit,
    // unknown symbol, no symbol
    for (q, code) in [
        (
            format!(
                "symbol=TICKUSDT&startTime={BASE}&endTime={}",
                BASE + 3_600_000
            ),
            -1127,
        ),
        (format!("symbol=TICKUSDT&fromId=1&startTime={BASE}"), -1128),
        ("symbol=TICKUSDT&limit=1001".to_string(), -1100),
        ("symbol=NOPEUSDT".to_string(), -1121),
        ("fromId=1".to_string(), -1102),
    ] {
        let (s, _, b) = get(q.clone()).await;
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!((s, v["code"].as_i64().unwrap()), (400, code), "{q}: {b}");
    }
    // USD-M: /fapi/v1/aggTrades, weight 20, no M; refused past the weight limit (429)
    let (usdm, _t2) = server(Market::Usdm, 0.001, BASE + 5 * 60_000, 1, Some(50)).await;
    let url = format!(
        "http://{}/fapi/v1/aggTrades?symbol=TICKUSDT&fromId=1000&limit=2",
        usdm.addr
    );
    let r = reqwest::get(&url).await.unwrap();
    let w: u64 = r.headers()["x-mbx-used-weight-1m"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(w >= 20);
    let b = r.text().await.unwrap();
    assert!(!b.contains(r#""M""#), "{b}");
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(reqwest::get(&url).await.unwrap().status().as_u16());
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(usdm.state.status()["agg_trades_requests"].as_u64().unwrap() >= 4);
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn read_texts(addr: std::net::SocketAddr, path: &str, dur: Duration) -> Vec<String> {
    let (mut ws, _): (Ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}{path}"))
        .await
        .unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::sleep(dur);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => out.push(t.to_string()),
                Some(Ok(_)) => {}
                _ => break,
            }
        }
    }
    out
}

/// USD-M: aggTrades only on `/market`, book tickers on `/public` and on the unrouted path;
/// a stream on the wrong route connects and stays silent. Each event equals the served row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usdm_routes_per_kind() {
    // 60×: 4 trades and 10 book updates per replayed second = 240 and 600 per real second
    let (srv, _t) = server(Market::Usdm, 60.0, BASE + 60_000, 1, None).await;
    let a = srv.addr;
    let d = Duration::from_millis(1500);
    let (market_trades, public_books, public_trades, market_books, legacy_books, legacy_trades) = tokio::join!(
        read_texts(a, "/market/stream?streams=tickusdt@aggTrade", d),
        read_texts(a, "/public/stream?streams=tickusdt@bookTicker", d),
        read_texts(a, "/public/stream?streams=tickusdt@aggTrade", d),
        read_texts(a, "/market/stream?streams=tickusdt@bookTicker", d),
        read_texts(a, "/stream?streams=tickusdt@bookTicker", d),
        read_texts(a, "/stream?streams=tickusdt@aggTrade", d),
    );
    assert!(market_trades.len() > 50, "{}", market_trades.len());
    assert!(public_books.len() > 100, "{}", public_books.len());
    assert!(legacy_books.len() > 100, "unrouted carries /public data");
    assert!(public_trades.is_empty() && market_books.is_empty() && legacy_trades.is_empty());
    let served = trades("TICKUSDT", 20);
    let mut last = 0;
    for t in &market_trades {
        let (stream, payload) = split_combined(t).unwrap();
        assert_eq!(stream, "tickusdt@aggTrade");
        let w = agg_trade::parse_ws(payload).unwrap();
        assert_eq!((w.event_type, w.event_time), ("aggTrade", w.trade_time));
        assert_eq!(w.is_best_match, None, "USD-M has no M");
        let got = AggTrade::from_wire(Symbol::new(w.symbol).unwrap(), &w.trade(), None).unwrap();
        let want = &served[(got.agg_trade_id - 1000) as usize];
        assert_eq!(&got, want);
        assert!(got.agg_trade_id > last, "in order");
        last = got.agg_trade_id;
    }
    let served = books("TICKUSDT", 20);
    for t in &public_books {
        let (_, payload) = split_combined(t).unwrap();
        let w = book_ticker::parse_ws(payload).unwrap();
        assert_eq!(w.event_type, Some("bookTicker"));
        let got = BookTicker::from_wire(Symbol::new(w.symbol).unwrap(), &w, 0).unwrap();
        assert_eq!(&got, &served[(got.update_id - 1) as usize]);
    }
}

/// Spot: aggTrade with `M`, bookTicker without `e`, `E` and `T` (the stream stamps the
/// receive time); everything on `/stream`. Clones carry prices × (1000 + k)/1000, and their
/// klines equal the klines derived from their own trades.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_forms_and_clones() {
    let (srv, _t) = server(Market::Spot, 60.0, BASE + 60_000, 3, None).await;
    let d = Duration::from_millis(1200);
    let (tr, bk) = tokio::join!(
        read_texts(srv.addr, "/stream?streams=tick02usdt@aggTrade", d),
        read_texts(srv.addr, "/stream?streams=tick02usdt@bookTicker", d),
    );
    assert!(!tr.is_empty() && !bk.is_empty());
    let f = Decimal::new(1002, 3);
    let served = trades("TICKUSDT", 20);
    for t in &tr {
        let (_, payload) = split_combined(t).unwrap();
        let w = agg_trade::parse_ws(payload).unwrap();
        assert_eq!(w.symbol, "TICK02USDT");
        assert_eq!(w.is_best_match, Some(true));
        let src = &served[(w.agg_trade_id - 1000) as usize];
        assert_eq!(w.price.parse::<Decimal>().unwrap(), src.price * f);
        assert_eq!(w.quantity, src.quantity.to_string());
    }
    for t in &bk {
        let (_, payload) = split_combined(t).unwrap();
        assert!(
            !payload.contains(r#""e""#)
                && !payload.contains(r#""E""#)
                && !payload.contains(r#""T""#),
            "{payload}"
        );
        let w = book_ticker::parse_ws(payload).unwrap();
        assert_eq!((w.event_time, w.transaction_time), (None, None));
    }
    // clone klines = klines of the cloned trades
    let st = &srv.state;
    let sym = st.catalog.get(st.catalog.find("TICK02USDT").unwrap());
    let cloned: Vec<AggTrade> = st
        .data
        .trades_at(sym.source)
        .iter()
        .map(|t| sym.derive_trade(t).into_owned())
        .collect();
    let from_trades = klines_from_trades("TICK02USDT", &cloned).unwrap();
    assert_eq!(from_trades.len(), 20);
    for k in &from_trades {
        assert_eq!(&st.kline("TICK02USDT", k.open_time_ms()).unwrap(), k);
    }
}
