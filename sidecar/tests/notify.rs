//! `ta-feed notify` and `listen` against a real cluster and local fake Discord, Telegram and
//! webhook servers (axum on 127.0.0.1:0).
//!
//! Run only when `TA_FEED_TEST_DATABASE_URL` is set (see db_integration.rs); each test makes
//! its own database. Alerts are inserted into `market.alert_history` directly and enqueued
//! with `market._enqueue_deliveries`, as the rule evaluator does.

mod common;
mod support;

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::TestDb;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use support::{add_sink, fake_telegram, insert_alert, markdown_v2_plain, wait_delivered, FakeSink};
use ta_feed::notify::{run_notify, NotifyConfig, NotifySummary};
use tokio::io::AsyncReadExt;
use url::Url;

const DISCORD_TARGET: &str = "https://discord.com/api/webhooks/123456/tok-en_X?thread_id=7";
const TELEGRAM_TOKEN: &str = "123456:AAH-tok_en";

fn test_config(url: &str, discord: &FakeSink, telegram: &FakeSink) -> NotifyConfig {
    let mut c = NotifyConfig::new(url);
    c.endpoints.discord_api = Url::parse(&discord.url("/api")).unwrap();
    c.endpoints.telegram_api = Url::parse(&telegram.url("/")).unwrap();
    c.poll_interval = Duration::from_millis(200);
    c.sinks_refresh = Duration::from_millis(200);
    c.retry_initial = Duration::from_millis(50);
    c.retry_max = Duration::from_millis(200);
    c.unhealthy_after = 3;
    c.unhealthy_retry = Duration::from_millis(300);
    c.send_timeout = Duration::from_secs(5);
    // the fake sinks listen on 127.0.0.1, which the notifier refuses by default
    c.network.allow_private = true;
    c
}

/// Runs the notifier in-process while `body` runs, then stops it.
async fn with_notifier<F: std::future::Future>(
    cfg: NotifyConfig,
    body: F,
) -> (NotifySummary, F::Output) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run_notify(cfg, None, async {
        let _ = rx.await;
    }));
    let out = body.await;
    let _ = tx.send(());
    let summary = task.await.unwrap().expect("notify failed");
    (summary, out)
}

fn hmac_hex(key: &[u8], body: &[u8]) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
    m.update(body);
    m.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every alert reaches each subscribed sink (and only those) in the documented format.
#[tokio::test]
async fn sinks_receive_their_alerts_in_the_documented_format() {
    let Some(db) = TestDb::migrated("notify_formats").await else {
        return;
    };
    let c = db.client().await;
    if !support::alert_schema_v2(&c).await {
        db.cleanup().await;
        return;
    }
    let discord = FakeSink::ok(r#"{"id": "1"}"#).await;
    let telegram = fake_telegram().await;
    let webhook = FakeSink::ok("").await;
    let d = add_sink(
        &c,
        "discord-main",
        "discord",
        DISCORD_TARGET,
        None,
        None,
        ("'{big_bear_60}'", "NULL", "NULL"),
    )
    .await;
    let t = add_sink(
        &c,
        "tg",
        "telegram",
        TELEGRAM_TOKEN,
        Some("-100123"),
        None,
        ("NULL", "'{usdm}'", "'{BTC_USDT-(TEST).X,ETHUSDT}'"),
    )
    .await;
    let w = add_sink(
        &c,
        "hook",
        "webhook",
        &webhook.url("/alerts"),
        None,
        Some("whsec_k3y"),
        ("NULL", "NULL", "NULL"),
    )
    .await;
    // a disabled subscription and a disabled sink add nothing
    c.execute(
        "INSERT INTO market.alert_subscriptions (sink_id, enabled) VALUES ($1, false)",
        &[&d],
    )
    .await
    .unwrap();
    add_sink(
        &c,
        "off",
        "webhook",
        &webhook.url("/off"),
        None,
        None,
        ("NULL", "NULL", "NULL"),
    )
    .await;
    c.execute(
        "UPDATE market.alert_sinks SET enabled = false WHERE name = 'off'",
        &[],
    )
    .await
    .unwrap();

    let a1 = insert_alert(&c, "spot", "BTCUSDT", "big_bear_60", 0, 41695.93).await;
    let a2 = insert_alert(
        &c,
        "usdm",
        "BTC_USDT-(TEST).X",
        "big_bull_60",
        1,
        0.00001234,
    )
    .await;
    let a3 = insert_alert(&c, "usdm", "ETHUSDT", "big_bear_60", 2, 2501.5).await;
    let a4 = insert_alert(&c, "spot", "ETHUSDT", "big_bull_5", 3, 2502.0).await;
    let queued: Vec<(i64, i32)> = c
        .query(
            "SELECT alert_id, sink_id FROM market.alert_deliveries ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut want = vec![
        (a1, d),
        (a1, w),
        (a2, t),
        (a2, w),
        (a3, d),
        (a3, t),
        (a3, w),
        (a4, w),
    ];
    want.sort();
    assert_eq!(
        queued, want,
        "one delivery per (alert, matching enabled sink)"
    );
    // idempotent
    let again: i32 = c
        .query_one(
            "SELECT market._enqueue_deliveries(ARRAY[$1, $2, $3, $4]::bigint[])",
            &[&a1, &a2, &a3, &a4],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(again, 0);

    let cfg = test_config(&db.url, &discord, &telegram);
    let (summary, ()) =
        with_notifier(cfg, wait_delivered(&c, &[d, t, w], Duration::from_secs(20))).await;
    assert_eq!(summary.delivered, 8, "{summary:?}");
    assert_eq!((summary.retried, summary.failed), (0, 0));

    // Discord: the configured API base, the webhook's id/token and thread_id, wait=true
    let dr = discord.requests();
    assert_eq!(dr.len(), 2);
    for (r, (id, symbol, market)) in dr
        .iter()
        .zip([(a1, "BTCUSDT", "spot"), (a3, "ETHUSDT", "usdm")])
    {
        assert_eq!(r.path, "/api/webhooks/123456/tok-en_X");
        assert_eq!(r.query.as_deref(), Some("thread_id=7&wait=true"));
        let e = &r.json()["embeds"][0];
        assert_eq!(e["title"], "big_bear_60");
        assert_eq!(
            e["description"],
            format!("**{symbol}** · {market} · alert {id}")
        );
        let close: String = c
            .query_one(
                "SELECT payload->>'close_time' FROM market.alert_history WHERE alert_id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(e["timestamp"], close.as_str());
        let names: Vec<&str> = e["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "Price",
                "Change 1h",
                "Volume 1h",
                "VCP",
                "Window",
                "RSI(14)",
                "Changes"
            ]
        );
        assert_eq!(e["fields"][1]["value"], "-3.48 %");
        assert_eq!(e["fields"][2]["value"], "328.28M");
        assert_eq!(e["fields"][3]["value"], "-0.123");
    }

    // Telegram: MarkdownV2 accepted by the strict fake; symbols and numbers with _ . - ( )
    let tr = telegram.requests();
    assert_eq!(tr.len(), 2);
    for r in &tr {
        assert_eq!(r.path, format!("/bot{TELEGRAM_TOKEN}/sendMessage"));
        assert_eq!(r.json()["chat_id"], "-100123");
    }
    let first = tr[0].json();
    let raw = first["text"].as_str().unwrap();
    assert!(raw.contains(r"BTC\_USDT\-\(TEST\)\.X \(usdm\)"), "{raw}");
    let plain = markdown_v2_plain(raw).unwrap();
    assert!(
        plain.starts_with("▼ big_bull_60 BTC_USDT-(TEST).X (usdm)\n"),
        "{plain}"
    );
    assert!(plain.contains("Price: 0.00001234"), "{plain}");
    assert!(plain.contains("Change 1h: -3.48 %"), "{plain}");
    assert!(plain.contains("VCP: -0.123 · RSI(14): 36.78"), "{plain}");
    assert!(plain.contains("candle 2021-05-19 01:26 UTC"), "{plain}");

    // webhook: the stored payload byte for byte, signed
    let wr = webhook.requests();
    assert_eq!(wr.len(), 4);
    for (r, id) in wr.iter().zip([a1, a2, a3, a4]) {
        assert_eq!(r.path, "/alerts");
        let stored: String = c
            .query_one(
                "SELECT payload::text FROM market.alert_history WHERE alert_id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(String::from_utf8(r.body.clone()).unwrap(), stored);
        assert_eq!(r.headers["x-alert-id"], id.to_string().as_str());
        assert_eq!(r.headers["content-type"], "application/json");
        let sig = r.headers["x-signature"].to_str().unwrap();
        assert_eq!(
            sig,
            format!("sha256={}", hmac_hex(b"whsec_k3y", &r.body)),
            "signature verifies"
        );
    }
    let rows = c
        .query(
            "SELECT attempts, delivered_at IS NOT NULL, last_error FROM market.alert_deliveries",
            &[],
        )
        .await
        .unwrap();
    assert!(rows.iter().all(|r| r.get::<_, i32>(0) == 1
        && r.get::<_, bool>(1)
        && r.get::<_, Option<String>>(2).is_none()));
    let healthy: Vec<bool> = c
        .query(
            "SELECT healthy FROM market.alert_sink_status ORDER BY sink_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(healthy, vec![true, true, true]);
    drop(c);
    db.cleanup().await;
}

/// A sink answering 429, then 500 three times, then 200 receives each alert once more after
/// its retry: the first alert 5 times (4 refused), the others once, in order; Retry-After
/// of the 429 is honoured.
#[tokio::test]
async fn rate_limits_and_server_errors_are_retried_then_delivered_once() {
    let Some(db) = TestDb::migrated("notify_retry").await else {
        return;
    };
    let c = db.client().await;
    if !support::alert_schema_v2(&c).await {
        db.cleanup().await;
        return;
    }
    let discord = FakeSink::start(Duration::ZERO, |i, _| match i {
        0 => (
            429,
            vec![],
            r#"{"message": "You are being rate limited.", "retry_after": 0.4, "global": false}"#
                .into(),
        ),
        1..=3 => (
            500,
            vec![],
            r#"{"message": "Internal Server Error", "code": 0}"#.into(),
        ),
        _ => (200, vec![], r#"{"id": "1"}"#.into()),
    })
    .await;
    let telegram = FakeSink::start(Duration::ZERO, |i, _| match i {
        0 => (429, vec![], r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 1","parameters":{"retry_after":1}}"#.into()),
        _ => (200, vec![], r#"{"ok":true,"result":{}}"#.into()),
    })
    .await;
    let d = add_sink(
        &c,
        "d",
        "discord",
        DISCORD_TARGET,
        None,
        None,
        ("NULL", "NULL", "NULL"),
    )
    .await;
    let t = add_sink(
        &c,
        "t",
        "telegram",
        TELEGRAM_TOKEN,
        Some("42"),
        None,
        ("NULL", "NULL", "NULL"),
    )
    .await;
    let mut ids = Vec::new();
    for m in 0..3 {
        ids.push(insert_alert(&c, "spot", "BTCUSDT", "big_bear_60", m, 41000.0 + m as f64).await);
    }
    let cfg = test_config(&db.url, &discord, &telegram);
    let (summary, ()) =
        with_notifier(cfg, wait_delivered(&c, &[d, t], Duration::from_secs(30))).await;
    assert_eq!(summary.delivered, 6, "{summary:?}");
    assert_eq!(summary.retried, 5, "4 Discord + 1 Telegram refusals");

    let dr = discord.requests();
    assert_eq!(dr.len(), 7);
    let alert_of = |r: &support::Received| -> String {
        r.json()["embeds"][0]["description"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let first = alert_of(&dr[0]);
    assert!(
        dr[..5].iter().all(|r| alert_of(r) == first),
        "the oldest alert is retried before the next"
    );
    let delivered: Vec<String> = dr[4..].iter().map(alert_of).collect();
    let want: Vec<String> = ids
        .iter()
        .map(|id| format!("**BTCUSDT** · spot · alert {id}"))
        .collect();
    assert_eq!(
        delivered, want,
        "each alert accepted exactly once, oldest first"
    );
    let gap = dr[1].at - dr[0].at;
    assert!(
        gap >= Duration::from_millis(400),
        "Discord retry_after honoured: {gap:?}"
    );
    let tr = telegram.requests();
    assert_eq!(tr.len(), 4);
    let gap = tr[1].at - tr[0].at;
    assert!(
        gap >= Duration::from_secs(1),
        "Telegram parameters.retry_after honoured: {gap:?}"
    );

    let attempts: BTreeMap<(i32, i64), (i32, Option<String>)> = c
        .query(
            "SELECT sink_id, alert_id, attempts, last_error FROM market.alert_deliveries",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| ((r.get(0), r.get(1)), (r.get(2), r.get(3))))
        .collect();
    let (n, err) = &attempts[&(d, ids[0])];
    assert_eq!(*n, 5);
    assert!(
        err.as_deref()
            .unwrap()
            .starts_with("HTTP 500 Internal Server Error (the sink's server failed) (attempt 4"),
        "{err:?}"
    );
    assert_eq!(attempts[&(d, ids[1])].0, 1);
    assert_eq!(attempts[&(t, ids[0])].0, 2);
    assert!(attempts[&(t, ids[0])]
        .1
        .as_deref()
        .unwrap()
        .starts_with("HTTP 429 Too Many Requests (rate limited) (attempt"));
    let st = c
        .query_one("SELECT healthy, consecutive_failures, last_failure_at IS NOT NULL, last_success_at IS NOT NULL \
                    FROM market.alert_sink_status WHERE sink_id = $1", &[&d])
        .await
        .unwrap();
    assert_eq!(
        (
            st.get::<_, bool>(0),
            st.get::<_, i32>(1),
            st.get::<_, bool>(2),
            st.get::<_, bool>(3)
        ),
        (true, 0, true, true)
    );
    drop(c);
    db.cleanup().await;
}

/// A bad sink (unreachable, or an invalid URL saved in SQL) gives a clear error in
/// market.alert_deliveries and in the log, never leaks its secret, and the other sinks go on.
#[tokio::test]
async fn bad_sinks_fail_clearly_while_the_others_go_on() {
    let Some(db) = TestDb::migrated("notify_bad").await else {
        return;
    };
    let c = db.client().await;
    if !support::alert_schema_v2(&c).await {
        db.cleanup().await;
        return;
    }
    let good = FakeSink::ok("").await;
    let unreachable = "http://127.0.0.1:1/hook/SECRETTOKEN123456";
    let down = add_sink(
        &c,
        "down",
        "webhook",
        unreachable,
        None,
        None,
        ("NULL", "NULL", "NULL"),
    )
    .await;
    let broken = add_sink(
        &c,
        "broken",
        "webhook",
        "https://exa mple.com/hook/SECRETTOKEN654321",
        None,
        None,
        ("NULL", "NULL", "NULL"),
    )
    .await;
    let ok = add_sink(
        &c,
        "good",
        "webhook",
        &good.url("/h"),
        None,
        None,
        ("NULL", "NULL", "NULL"),
    )
    .await;
    for m in 0..5 {
        insert_alert(&c, "spot", "BTCUSDT", "big_bear_60", m, 100.0).await;
    }
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ta-feed"))
        .args([
            "notify",
            "--poll-interval-ms",
            "100",
            "--sinks-refresh-ms",
            "100",
            "--retry-initial-ms",
            "50",
            "--retry-max-ms",
            "100",
            "--unhealthy-after",
            "2",
            "--unhealthy-retry-ms",
            "200",
        ])
        .env("DATABASE_URL", &db.url)
        .env("TA_FEED_ALLOW_PRIVATE_TARGETS", "1")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let log_task = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });
    wait_delivered(&c, &[ok, broken], Duration::from_secs(20)).await;
    assert_eq!(good.requests().len(), 5, "the good sink got every alert");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = c
            .query_one(
                "SELECT max(attempts), bool_or(NOT healthy) FROM market.alert_deliveries d \
                        JOIN market.alert_sink_status s USING (sink_id) WHERE d.sink_id = $1",
                &[&down],
            )
            .await
            .unwrap();
        if r.get::<_, Option<i32>>(0).unwrap_or(0) >= 3 && r.get::<_, Option<bool>>(1) == Some(true)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the unreachable sink was not retried and marked unhealthy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let broken_rows = c
        .query("SELECT failed_at IS NOT NULL, attempts, last_error FROM market.alert_deliveries WHERE sink_id = $1", &[&broken])
        .await
        .unwrap();
    assert_eq!(broken_rows.len(), 5);
    for r in &broken_rows {
        let err: String = r.get(2);
        assert!(
            r.get::<_, bool>(0) && r.get::<_, i32>(1) == 1,
            "failed once, not retried"
        );
        assert_eq!(err, "invalid webhook URL: invalid international domain name (attempt 1; permanent, not retried)");
    }
    // fix the saved URL: the changed sink's worker restarts, and the failed rows can be queued again
    c.execute(
        "UPDATE market.alert_sinks SET target = $1 WHERE name = 'broken'",
        &[&good.url("/fixed")],
    )
    .await
    .unwrap();
    // (a worker of the old row never sends with it: it ends at its next claim)
    let queued: i32 = c
        .query_one("SELECT market.retry_alert_deliveries('broken')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(queued, 5);
    wait_delivered(&c, &[broken], Duration::from_secs(20)).await;
    let fixed = good
        .requests()
        .iter()
        .filter(|r| r.path == "/fixed")
        .count();
    assert_eq!(fixed, 5, "the repaired sink received its failed alerts");
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "SIGTERM: exit 0, got {status:?}");
    let log = log_task.await.unwrap();
    let down_first = c
        .query_one("SELECT attempts, last_error, delivered_at IS NULL AND failed_at IS NULL FROM market.alert_deliveries \
                    WHERE sink_id = $1 ORDER BY alert_id LIMIT 1", &[&down])
        .await
        .unwrap();
    let err: String = down_first.get(1);
    assert!(
        down_first.get::<_, bool>(2),
        "still pending: retried until it succeeds"
    );
    assert!(
        err.starts_with("cannot connect: error sending request"),
        "{err}"
    );
    assert!(err.contains("Connection refused"), "{err}");
    let all_errors: Vec<String> = c
        .query(
            "SELECT coalesce(last_error, '') FROM market.alert_deliveries UNION ALL \
                SELECT coalesce(last_error, '') FROM market.alert_sink_status",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for text in all_errors.iter().chain([&log]) {
        assert!(!text.contains("SECRETTOKEN"), "a secret leaked: {text}");
    }
    assert!(
        log.contains("notify: delivery failed permanently")
            && log.contains("sink=broken")
            && log.contains("invalid webhook URL: invalid international domain name"),
        "{log}"
    );
    assert!(
        log.contains("notify: sink marked unhealthy; retrying slowly") && log.contains("sink=down"),
        "{log}"
    );
    assert!(log.contains("Connection refused"), "{log}");
    drop(c);
    db.cleanup().await;
}

/// `kill -9` of the notifier in the middle of deliveries, twice, then a clean run: every
/// alert reaches every sink (none lost) and duplicates stay within the documented bound of one
/// per sink per crash.
#[tokio::test]
async fn kill_9_mid_delivery_then_restart_loses_nothing() {
    let Some(db) = TestDb::migrated("notify_crash").await else {
        return;
    };
    let c = db.client().await;
    if !support::alert_schema_v2(&c).await {
        db.cleanup().await;
        return;
    }
    // every answer takes 100 ms, so each sink has a request in flight most of the time
    let slow = Duration::from_millis(100);
    let discord = FakeSink::start(slow, |_, _| (200, vec![], "{}".into())).await;
    let telegram = FakeSink::start(slow, |_, _| (200, vec![], r#"{"ok":true}"#.into())).await;
    let webhook = FakeSink::start(slow, |_, _| (200, vec![], String::new())).await;
    let sinks = [
        add_sink(
            &c,
            "d",
            "discord",
            DISCORD_TARGET,
            None,
            None,
            ("NULL", "NULL", "NULL"),
        )
        .await,
        add_sink(
            &c,
            "t",
            "telegram",
            TELEGRAM_TOKEN,
            Some("42"),
            None,
            ("NULL", "NULL", "NULL"),
        )
        .await,
        add_sink(
            &c,
            "w",
            "webhook",
            &webhook.url("/w"),
            None,
            None,
            ("NULL", "NULL", "NULL"),
        )
        .await,
    ];
    const ALERTS: usize = 40;
    for i in 0..ALERTS {
        insert_alert(
            &c,
            "spot",
            &format!("S{i:03}USDT"),
            "big_bear_60",
            i as i64,
            1.0,
        )
        .await;
    }
    let spawn = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_ta-feed"))
            .args([
                "notify",
                "--poll-interval-ms",
                "100",
                "--sinks-refresh-ms",
                "100",
                "--discord-api-url",
                &discord.url("/api"),
                "--telegram-api-url",
                &telegram.url("/"),
            ])
            .env("DATABASE_URL", &db.url)
            .env("TA_FEED_ALLOW_PRIVATE_TARGETS", "1")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let received =
        || discord.requests().len() + telegram.requests().len() + webhook.requests().len();
    let mut kills = 0;
    for target in [12usize, 45] {
        let mut child = spawn();
        let deadline = Instant::now() + Duration::from_secs(30);
        while received() < target {
            assert!(Instant::now() < deadline, "no progress");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // mid-delivery: the sinks are holding requests for 100 ms
        tokio::time::sleep(Duration::from_millis(30)).await;
        child.start_kill().unwrap(); // SIGKILL
        child.wait().await.unwrap();
        kills += 1;
    }
    let mut child = spawn();
    wait_delivered(&c, &sinks, Duration::from_secs(60)).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();

    let symbol_of = |kind: &str, r: &support::Received| -> String {
        let j = r.json();
        match kind {
            "discord" => j["embeds"][0]["description"]
                .as_str()
                .unwrap()
                .split("**")
                .nth(1)
                .unwrap()
                .to_string(),
            "telegram" => markdown_v2_plain(j["text"].as_str().unwrap())
                .unwrap()
                .split(' ')
                .nth(2)
                .unwrap()
                .to_string(),
            _ => j["symbol"].as_str().unwrap().to_string(),
        }
    };
    let fired = ALERTS;
    let expected = ALERTS * sinks.len();
    let mut distinct = 0;
    let mut total = 0;
    for (kind, fake) in [
        ("discord", &discord),
        ("telegram", &telegram),
        ("webhook", &webhook),
    ] {
        let mut per: HashMap<String, usize> = HashMap::new();
        for r in fake.requests() {
            *per.entry(symbol_of(kind, &r)).or_default() += 1;
        }
        assert_eq!(per.len(), ALERTS, "{kind}: every alert arrived");
        distinct += per.len();
        total += per.values().sum::<usize>();
        let dups: usize = per.values().map(|n| n - 1).sum();
        assert!(
            dups <= kills,
            "{kind}: {dups} duplicates after {kills} crashes (bound: 1 per sink per crash)"
        );
    }
    let duplicated = total - distinct;
    let lost = expected - distinct;
    println!(
        "crash test: {kills} x kill -9; alerts fired {fired}, deliveries expected {expected} ({} sinks), \
         delivered {distinct}, duplicated {duplicated} (bound {}), lost {lost}",
        sinks.len(),
        kills * sinks.len()
    );
    assert_eq!(lost, 0);
    assert!(duplicated <= kills * sinks.len());
    assert!(
        duplicated >= 1,
        "the kills hit in-flight deliveries (otherwise this test proves nothing)"
    );
    let undelivered: i64 = c
        .query_one(
            "SELECT count(*) FROM market.alert_deliveries WHERE delivered_at IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(undelivered, 0);
    drop(c);
    db.cleanup().await;
}

async fn forge(c: &tokio_postgres::Client, payloads: Vec<String>) {
    for p in payloads {
        c.execute("SELECT pg_notify('ta_alerts', $1)", &[&p])
            .await
            .unwrap();
    }
}

/// The backends of this database now.
async fn backends(c: &tokio_postgres::Client) -> Vec<i32> {
    c.query(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Waits until a session of this database other than `before` (a notifier that stopped may
/// still be listed while it exits) has run LISTEN last.
async fn wait_listener(c: &tokio_postgres::Client, before: &[i32]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                        AND query ILIKE 'LISTEN%' AND pid <> ALL ($1)",
                &[&before],
            )
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            return;
        }
        assert!(Instant::now() < deadline, "listener never connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Any role can `NOTIFY ta_alerts`: `listen` prints only alerts stored in alert_history and
/// `notify` sends nothing for a forged notification.
#[tokio::test]
async fn forged_notifications_are_ignored_by_listen_and_notify() {
    let Some(db) = TestDb::migrated("notify_forged").await else {
        return;
    };
    let c = db.client().await;
    if !support::alert_schema_v2(&c).await {
        db.cleanup().await;
        return;
    }
    let webhook = FakeSink::ok("").await;
    let w = add_sink(
        &c,
        "w",
        "webhook",
        &webhook.url("/w"),
        None,
        None,
        ("NULL", "NULL", "NULL"),
    )
    .await;
    let genuine = insert_alert(&c, "spot", "BTCUSDT", "big_bear_60", 0, 41695.93).await;
    let stored: String = c
        .query_one(
            "SELECT payload::text FROM market.alert_history WHERE alert_id = $1",
            &[&genuine],
        )
        .await
        .unwrap()
        .get(0);
    // deliver the genuine one first, so the fake sees only what a forgery would add
    let discord = FakeSink::ok("").await;
    let cfg = test_config(&db.url, &discord, &discord);
    let (summary, ()) = with_notifier(
        cfg.clone(),
        wait_delivered(&c, &[w], Duration::from_secs(20)),
    )
    .await;
    assert_eq!(summary.delivered, 1);
    assert_eq!(webhook.requests().len(), 1);

    let forged_payloads = vec![
        r#"{"version": 2, "symbol": "BTCUSDT", "rule": "big_bull_60", "price": 1}"#.to_string(),
        format!(
            r#"{{"version": 2, "alert_id": {}, "symbol": "SCAMUSDT", "rule": "big_bull_60"}}"#,
            genuine + 1000
        ),
        stored.replace("41695.93", "99999.99"),
        "not json at all".to_string(),
    ];
    // notify: a forged notification wakes it, nothing is sent
    let (summary, ()) = with_notifier(cfg, async {
        tokio::time::sleep(Duration::from_millis(1000)).await; // connected and listening
        forge(&c, forged_payloads.clone()).await;
        tokio::time::sleep(Duration::from_millis(800)).await;
    })
    .await;
    assert_eq!(summary.forged, 4, "{summary:?}");
    assert_eq!(summary.delivered, 0);
    assert_eq!(
        webhook.requests().len(),
        1,
        "nothing sent for forged notifications"
    );

    // listen: the genuine alert (NOTIFY with its stored payload, as the evaluator sends it)
    // is printed once; forgeries and a replay are not
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut out: Vec<u8> = Vec::new();
    let url = db.url.clone();
    let before = backends(&c).await;
    let sender = async {
        wait_listener(&c, &before).await;
        let mut all = forged_payloads.clone();
        all.insert(1, stored.clone());
        all.push(stored.clone()); // a replay of the genuine one
        forge(&c, all).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let _ = stop_tx.send(());
    };
    let listener = ta_feed::listen::run_listen(&url, "ta_alerts", &mut out, async {
        let _ = stop_rx.await;
    });
    let (summary, ()) = tokio::join!(listener, sender);
    let summary = summary.unwrap();
    assert_eq!((summary.printed, summary.forged), (1, 5), "{summary:?}");
    assert_eq!(String::from_utf8(out).unwrap(), format!("{stored}\n"));
    drop(c);
    db.cleanup().await;
}

/// The notifier's role needs only ta_notifier's grants; ta_reader cannot read secrets and
/// ta_rule_admin writes them without reading them back.
#[tokio::test]
async fn roles_and_secret_columns() {
    let Some(db) = TestDb::migrated("notify_roles").await else {
        return;
    };
    let c = db.client().await;
    if !support::alert_schema_v2(&c).await {
        db.cleanup().await;
        return;
    }
    let pid = std::process::id();
    let (notifier, reader, admin) = (
        format!("it_notifier_{pid}"),
        format!("it_reader_{pid}"),
        format!("it_admin_{pid}"),
    );
    c.batch_execute(&format!(
        "DROP ROLE IF EXISTS {notifier}; DROP ROLE IF EXISTS {reader}; DROP ROLE IF EXISTS {admin};
         CREATE ROLE {notifier} LOGIN IN ROLE ta_notifier; CREATE ROLE {reader} LOGIN IN ROLE ta_reader;
         CREATE ROLE {admin} LOGIN IN ROLE ta_rule_admin;"
    ))
    .await
    .unwrap();
    let as_role = |role: &str| {
        let u = Url::parse(&db.url).unwrap();
        let mut u = u;
        u.set_username(role).unwrap();
        u.to_string()
    };
    let (ac, _h) = ta_feed::db::connect(&as_role(&admin)).await.unwrap();
    let webhook = FakeSink::ok("").await;
    let sink: i32 = ac
        .query_one(
            "INSERT INTO market.alert_sinks (name, kind, target, signing_secret) \
                    VALUES ('w', 'webhook', $1, 'k3y-secret') RETURNING sink_id",
            &[&webhook.url("/w")],
        )
        .await
        .unwrap()
        .get(0);
    ac.execute(
        "INSERT INTO market.alert_subscriptions (sink_id, symbols) VALUES ($1, '{BTCUSDT}')",
        &[&sink],
    )
    .await
    .unwrap();
    ac.execute(
        "UPDATE market.alert_sinks SET enabled = true WHERE name = 'w'",
        &[],
    )
    .await
    .unwrap();
    for q in [
        "SELECT target FROM market.alert_sinks",
        "SELECT signing_secret FROM market.alert_sinks",
        "SELECT * FROM market.alert_sinks",
        "SELECT 1 FROM market.alert_sinks WHERE target LIKE 'http%'",
        "UPDATE market.alert_sinks SET name = target",
    ] {
        let e = ac.execute(q, &[]).await.unwrap_err();
        assert_eq!(
            e.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{q}"
        );
    }
    let bad = ac
        .execute(
            "INSERT INTO market.alert_sinks (name, kind, target) VALUES ('t', 'telegram', '1:x')",
            &[],
        )
        .await
        .unwrap_err();
    assert!(
        bad.to_string().contains("alert_sinks_chat_id_check")
            || format!("{bad:?}").contains("alert_sinks_chat_id_check"),
        "{bad:?}"
    );
    let (rc, _h2) = ta_feed::db::connect(&as_role(&reader)).await.unwrap();
    let names: Vec<String> = rc
        .query("SELECT name FROM market.alert_sinks", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(names, ["w"]);
    for q in [
        "SELECT target FROM market.alert_sinks",
        "SELECT market._enqueue_deliveries('{1}')",
        "INSERT INTO market.alert_sinks (name, kind, target) VALUES ('x', 'webhook', 'http://h/')",
        "UPDATE market.alert_deliveries SET delivered_at = now()",
    ] {
        let e = rc.execute(q, &[]).await.unwrap_err();
        assert_eq!(
            e.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{q}"
        );
    }
    insert_alert(&c, "spot", "BTCUSDT", "big_bear_60", 0, 1.0).await;
    insert_alert(&c, "spot", "ETHUSDT", "big_bear_60", 1, 1.0).await;
    let discord = FakeSink::ok("").await;
    let cfg = test_config(&as_role(&notifier), &discord, &discord);
    let (summary, ()) =
        with_notifier(cfg, wait_delivered(&c, &[sink], Duration::from_secs(20))).await;
    assert_eq!(
        summary.delivered, 1,
        "only the subscribed symbol; sent with ta_notifier's rights"
    );
    let r = &webhook.requests()[0];
    assert_eq!(
        r.headers["x-signature"].to_str().unwrap(),
        format!("sha256={}", hmac_hex(b"k3y-secret", &r.body))
    );
    // retry_alert_deliveries: for rule admins
    let n: i32 = ac
        .query_one("SELECT market.retry_alert_deliveries('w')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    let e = ac
        .query_one("SELECT market.retry_alert_deliveries('nope')", &[])
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Some(&tokio_postgres::error::SqlState::INVALID_PARAMETER_VALUE)
    );
    drop((ac, rc));
    drop(c);
    db.cleanup().await;
    let (admin_c, _h3) = ta_feed::db::connect(&common::admin_url().unwrap())
        .await
        .unwrap();
    admin_c
        .batch_execute(&format!("DROP ROLE IF EXISTS {notifier}; DROP ROLE IF EXISTS {reader}; DROP ROLE IF EXISTS {admin};"))
        .await
        .unwrap();
}

/// Deliveries whose alert was deleted by retention fail with that reason and are pruned.
#[tokio::test]
async fn deleted_alerts_do_not_break_the_notifier() {
    let Some(db) = TestDb::migrated("notify_retention").await else {
        return;
    };
    let c = db.client().await;
    if !support::alert_schema_v2(&c).await {
        db.cleanup().await;
        return;
    }
    let webhook = FakeSink::ok("").await;
    let w = add_sink(
        &c,
        "w",
        "webhook",
        &webhook.url("/w"),
        None,
        None,
        ("NULL", "NULL", "NULL"),
    )
    .await;
    let gone = insert_alert(&c, "spot", "BTCUSDT", "big_bear_60", 0, 1.0).await;
    let kept = insert_alert(&c, "spot", "BTCUSDT", "big_bear_60", 10, 1.0).await;
    c.execute(
        "DELETE FROM market.alert_history WHERE alert_id = $1",
        &[&gone],
    )
    .await
    .unwrap();
    let discord = FakeSink::ok("").await;
    let mut cfg = test_config(&db.url, &discord, &discord);
    cfg.prune_interval = Duration::from_millis(300);
    let (summary, ()) = with_notifier(cfg, async {
        wait_delivered(&c, &[w], Duration::from_secs(20)).await;
        tokio::time::sleep(Duration::from_millis(700)).await; // a prune pass
    })
    .await;
    assert_eq!((summary.delivered, summary.failed), (1, 1), "{summary:?}");
    assert_eq!(webhook.requests().len(), 1);
    let rows: Vec<i64> = c
        .query("SELECT alert_id FROM market.alert_deliveries", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows, vec![kept], "the deleted alert's delivery was pruned");
    drop(c);
    db.cleanup().await;
}
