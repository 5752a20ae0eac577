//! End to end: `ta-feed replay` (recorded BTCUSDT week of the 2021-05-19 crash) → `ta-feed
//! stream` → candle triggers evaluate the preset rules → `market.alert_history` +
//! `market.alert_deliveries` in the candle's transaction → `ta-feed notify` → a fake Discord.
//!
//! Needs `TA_FEED_TEST_DATABASE_URL`, the recorded data (`TA_FEED_DATA_DIR`) and the 0.2.0
//! alert schema (an evaluator that writes `alert_id` and calls `market._enqueue_deliveries`);
//! otherwise it prints why it is skipped.

mod common;
mod support;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use common::TestDb;
use support::{add_sink, wait_delivered, FakeSink};
use ta_feed::notify::{run_notify, NotifyConfig};
use tokio::io::AsyncBufReadExt;
use url::Url;

const WEEK: &str = "spot/klines12/BTCUSDT-1m-2021-05-15_2021-05-22.csv.gz";
const LIVE_MINUTES: &str = "60";
/// The crash afternoon: big_bear_60, pioneer_bear and bear_volume fire within the hour.
const START: &str = "2021-05-19T12:00:00Z";

#[tokio::test]
async fn replay_stream_alerts_notify_discord() {
    let Some(file) = common::data_file(WEEK) else {
        return;
    };
    let Some(db) = TestDb::migrated("notify_e2e").await else {
        return;
    };
    let c = db.client().await;
    if !support::alert_schema_v2(&c).await {
        db.cleanup().await;
        return;
    }
    // a fake Discord that records the wall-clock time of each request
    let discord = FakeSink::ok(r#"{"id": "1"}"#).await;
    let d = add_sink(
        &c,
        "discord",
        "discord",
        "https://discord.com/api/webhooks/1/e2e-token",
        None,
        None,
        ("NULL", "'{spot}'", "'{BTCUSDT}'"),
    )
    .await;
    let mut cfg = NotifyConfig::new(&db.url);
    cfg.endpoints.discord_api = Url::parse(&discord.url("/api")).unwrap();
    cfg.sinks_refresh = Duration::from_millis(500);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let notifier = tokio::spawn(run_notify(cfg, None, async {
        let _ = stop_rx.await;
    }));

    let exe = env!("CARGO_BIN_EXE_ta-feed");
    let mut replay = tokio::process::Command::new(exe)
        .args([
            "replay",
            "--listen",
            "127.0.0.1:0",
            "--speed",
            "600",
            "--start",
            START,
            "--file",
        ])
        .arg(&file)
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
    let started = Instant::now();
    let status = tokio::process::Command::new(exe)
        .args([
            "stream",
            "--symbols",
            "BTCUSDT",
            "--stop-after-minutes",
            LIVE_MINUTES,
        ])
        .args([
            "--ws-url",
            &format!("ws://{addr}"),
            "--rest-url",
            &format!("http://{addr}"),
        ])
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status();
    let status = tokio::time::timeout(Duration::from_secs(120), status)
        .await
        .expect("stream finished")
        .unwrap();
    assert!(status.success(), "stream: {status:?}");
    let streamed = started.elapsed();
    wait_delivered(&c, &[d], Duration::from_secs(30)).await;
    let _ = stop_tx.send(());
    let summary = notifier.await.unwrap().unwrap();
    let _ = replay.kill().await;

    let alerts: BTreeMap<i64, (String, SystemTime)> = c
        .query(
            "SELECT alert_id, rule, fired_at FROM market.alert_history ORDER BY alert_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    assert!(
        !alerts.is_empty(),
        "the replayed live minutes fired no alert"
    );
    let mut received: BTreeMap<i64, usize> = BTreeMap::new();
    let mut latencies = Vec::new();
    for r in discord.requests() {
        let desc = r.json()["embeds"][0]["description"]
            .as_str()
            .unwrap()
            .to_string();
        let id: i64 = desc.rsplit(' ').next().unwrap().parse().unwrap();
        *received.entry(id).or_default() += 1;
        if let Some((_, fired)) = alerts.get(&id) {
            latencies.push(r.wall.duration_since(*fired).unwrap_or_default());
        }
        assert_eq!(r.json()["embeds"][0]["title"], alerts[&id].0.as_str());
    }
    assert_eq!(
        received.keys().copied().collect::<Vec<_>>(),
        alerts.keys().copied().collect::<Vec<_>>(),
        "every alert of alert_history reached Discord"
    );
    assert!(
        received.values().all(|n| *n == 1),
        "each once: {received:?}"
    );
    assert_eq!(summary.delivered as usize, alerts.len());
    latencies.sort();
    let rules: BTreeMap<&str, usize> = alerts.values().fold(BTreeMap::new(), |mut m, (r, _)| {
        *m.entry(r.as_str()).or_default() += 1;
        m
    });
    println!(
        "e2e: {LIVE_MINUTES} live minutes streamed in {streamed:.1?}; {} alerts {rules:?} delivered to the fake Discord; \
         commit-to-Discord latency p50 {:?}, max {:?} (informational)",
        alerts.len(),
        latencies[latencies.len() / 2],
        latencies.last().unwrap()
    );
    drop(c);
    db.cleanup().await;
}
