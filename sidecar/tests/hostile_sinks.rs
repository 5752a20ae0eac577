//! Hostile sinks (issue 18): `ta-feed notify` against fake servers that echo what they are
//! sent, stream endless answers, send 20 MB errors with newlines, answer `Retry-After: 0`, and
//! listen on loopback addresses a webhook must not reach. Every case runs the real binary and
//! ends bounded: peak memory (VmHWM of the notifier), attempts per sink, bytes of log; and
//! nothing secret or remote reaches `last_error` (readable by `ta_reader`).
//!
//! Only loopback addresses are ever connected to (the private ranges are checked by the unit
//! tests of `notify::net`, without traffic). Needs `TA_FEED_TEST_DATABASE_URL` (see
//! db_integration.rs); each test makes its own database.

mod common;
mod support;

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use axum::Router;
use common::TestDb;
use support::{add_sink, insert_alert, FakeSink, Received};
use tokio::io::AsyncReadExt;

const DISCORD_TARGET: &str = "https://discord.com/api/webhooks/123456/tok-en_SECRETDISCORD";
const TELEGRAM_TOKEN: &str = "123456:AAH-SECRETTELEGRAM";

/// A notifier process and what it wrote to stderr.
struct Notifier {
    child: tokio::process::Child,
    log: tokio::task::JoinHandle<(usize, String)>,
}

/// What a stopped notifier left.
struct Finished {
    /// Bytes written to the log (stderr), all of them.
    log_bytes: usize,
    /// The first 4 MiB of the log.
    log: String,
    /// Peak resident memory, KiB (VmHWM).
    peak_rss_kib: u64,
}

/// Starts `ta-feed notify` on `db_url` with fast timings and `extra` flags.
fn spawn_notifier(db_url: &str, extra: &[&str]) -> Notifier {
    let mut args = vec![
        "notify",
        "--poll-interval-ms",
        "100",
        "--sinks-refresh-ms",
        "100",
        "--retry-initial-ms",
        "200",
        "--retry-max-ms",
        "1000",
        "--unhealthy-after",
        "3",
        "--unhealthy-retry-ms",
        "2000",
        "--send-timeout-ms",
        "3000",
    ];
    args.extend_from_slice(extra);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ta-feed"))
        .args(&args)
        .env("DATABASE_URL", db_url)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("TA_FEED_ALLOW_PRIVATE_TARGETS")
        .env_remove("TA_FEED_ALLOW_TARGET_NETWORKS")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let log = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let (mut total, mut kept) = (0usize, Vec::new());
        loop {
            match stderr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    total += n;
                    if kept.len() < 4 << 20 {
                        kept.extend_from_slice(&buf[..n]);
                    }
                }
            }
        }
        (total, String::from_utf8_lossy(&kept).into_owned())
    });
    Notifier { child, log }
}

impl Notifier {
    fn peak_rss_kib(&self) -> u64 {
        let pid = self.child.id().unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// SIGTERM, wait, collect.
    async fn stop(mut self) -> Finished {
        let peak_rss_kib = self.peak_rss_kib();
        let pid = self.child.id().unwrap().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("notify stops on SIGTERM")
            .unwrap();
        assert!(status.success(), "notify exit: {status:?}");
        let (log_bytes, log) = self.log.await.unwrap();
        Finished {
            log_bytes,
            log,
            peak_rss_kib,
        }
    }
}

impl Finished {
    /// Every case ends bounded: peak memory under 100 MiB (a debug build idles at ~25 MiB) and
    /// under 64 KiB of log.
    fn assert_bounded(&self, what: &str) {
        println!(
            "{what}: peak RSS {} KiB, log {} bytes",
            self.peak_rss_kib, self.log_bytes
        );
        assert!(
            self.peak_rss_kib < 100 * 1024,
            "{what}: peak RSS {} KiB",
            self.peak_rss_kib
        );
        assert!(
            self.log_bytes < 64 * 1024,
            "{what}: log {} bytes",
            self.log_bytes
        );
    }
}

/// Polls `sql` (one boolean) until true.
async fn wait_until(c: &tokio_postgres::Client, sql: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if c.query_one(sql, &[])
            .await
            .unwrap()
            .get::<_, Option<bool>>(0)
            == Some(true)
        {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {sql}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every `last_error` a reader can see.
async fn stored_errors(c: &tokio_postgres::Client) -> Vec<String> {
    c.query(
        "SELECT last_error FROM market.alert_deliveries WHERE last_error IS NOT NULL \
         UNION ALL SELECT last_error FROM market.alert_sink_status WHERE last_error IS NOT NULL",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// The last_error of each delivery of sink `name`, by alert.
async fn errors_of(c: &tokio_postgres::Client, name: &str) -> Vec<Option<String>> {
    c.query(
        "SELECT d.last_error FROM market.alert_deliveries d JOIN market.alert_sinks s USING \
         (sink_id) WHERE s.name = $1 ORDER BY d.alert_id",
        &[&name],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

async fn webhook(c: &tokio_postgres::Client, name: &str, url: &str, secret: Option<&str>) -> i32 {
    add_sink(
        c,
        name,
        "webhook",
        url,
        None,
        secret,
        ("NULL", "NULL", "NULL"),
    )
    .await
}

/// Issue 18.1: a webhook pointed at the notifier's own host — by IP in every spelling the URL
/// parser accepts, by a name that resolves there, on an open or a closed port — fails
/// permanently with the same clear reason and is never connected to; an operator's
/// `--allow-target-network` lets it through.
#[tokio::test]
async fn webhooks_to_local_addresses_are_refused() {
    let Some(db) = TestDb::migrated("hostile_private").await else {
        return;
    };
    let c = db.client().await;
    if !support::alert_schema_v2(&c).await {
        db.cleanup().await;
        return;
    }
    let fake = FakeSink::ok("db_password=hunter2 aws_key=AKIAEXAMPLE").await;
    let p = fake.addr.port();
    let closed = support::free_port();
    let targets = [
        ("ip", format!("http://127.0.0.1:{p}/a")),
        ("name", format!("http://localhost:{p}/b")),
        ("mapped", format!("http://[::ffff:127.0.0.1]:{p}/c")),
        ("decimal", format!("http://2130706433:{p}/d")),
        ("hex", format!("http://0x7f.1:{p}/e")),
        ("octal", format!("http://0177.0.0.1:{p}/f")),
        ("unspecified", format!("http://0.0.0.0:{p}/g")),
        ("closed", format!("http://127.0.0.1:{closed}/h")),
    ];
    for (name, url) in &targets {
        webhook(&c, name, url, None).await;
    }
    insert_alert(&c, "spot", "BTCUSDT", "big_bear_60", 0, 41695.93).await;
    let notifier = spawn_notifier(&db.url, &[]);
    wait_until(
        &c,
        "SELECT bool_and(failed_at IS NOT NULL) FROM market.alert_deliveries",
        Duration::from_secs(20),
    )
    .await;
    let done = notifier.stop().await;
    assert_eq!(
        fake.requests().len(),
        0,
        "a refused target was connected to"
    );
    for (name, _) in &targets {
        let kind = if *name == "unspecified" {
            "unspecified"
        } else {
            "loopback"
        };
        let errors = errors_of(&c, name).await;
        assert_eq!(
            errors,
            [Some(format!(
                "webhook target refused: its host is a {kind} address; the notifier sends only \
                 to public addresses unless its operator allows more (ta-feed notify \
                 --allow-private-targets or --allow-target-network) (attempt 1; permanent, not \
                 retried)"
            ))],
            "{name}"
        );
    }
    assert!(done
        .log
        .contains("notify: webhook host resolves to a refused address"));
    done.assert_bounded("local targets");

    // the operator allows the loopback network: the same sinks deliver
    let n: i32 = c
        .query_one(
            "SELECT market.retry_alert_deliveries('ip') + market.retry_alert_deliveries('name')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    let notifier = spawn_notifier(&db.url, &["--allow-target-network", "127.0.0.0/8"]);
    wait_until(
        &c,
        "SELECT bool_and(delivered_at IS NOT NULL) FROM market.alert_deliveries d \
           JOIN market.alert_sinks s USING (sink_id) WHERE s.name IN ('ip', 'name')",
        Duration::from_secs(20),
    )
    .await;
    notifier
        .stop()
        .await
        .assert_bounded("local targets allowed");
    let paths: Vec<String> = fake.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths.len(), 2, "{paths:?}");
    drop(c);
    db.cleanup().await;
}

/// Issue 18.1, 18.6, 18.7: an echoing webhook (answering with its path, query, headers and
/// body, as text and as JSON `message`) and an echoing chat API: `last_error` and the log keep
/// the status (and the chat API's message, redacted), never the echo, never a secret.
#[tokio::test]
async fn echoing_sinks_reveal_nothing() {
    let Some(db) = TestDb::migrated("hostile_echo").await else {
        return;
    };
    let c = db.client().await;
    if !support::alert_schema_v2(&c).await {
        db.cleanup().await;
        return;
    }
    let echo = |r: &Received| {
        format!(
            "{} {} {:?} {}",
            r.path,
            r.query.clone().unwrap_or_default(),
            r.headers,
            String::from_utf8_lossy(&r.body)
        )
    };
    let hook = FakeSink::start(Duration::ZERO, move |i, r| {
        let e = echo(r);
        let status = if i == 0 { 500 } else { 400 };
        (
            status,
            vec![],
            serde_json::json!({"message": e, "description": e, "error": e}).to_string(),
        )
    })
    .await;
    let chat = FakeSink::start(Duration::ZERO, move |_, r| {
        let e = echo(r);
        (
            400,
            vec![],
            serde_json::json!({"ok": false, "message": e, "description": e}).to_string(),
        )
    })
    .await;
    let target = hook.url("/x/hooks/abcdefghsecret?token=abc");
    webhook(&c, "hook", &target, Some("whsec_topsecret")).await;
    add_sink(
        &c,
        "discord",
        "discord",
        DISCORD_TARGET,
        None,
        None,
        ("NULL", "NULL", "NULL"),
    )
    .await;
    add_sink(
        &c,
        "telegram",
        "telegram",
        TELEGRAM_TOKEN,
        Some("42"),
        None,
        ("NULL", "NULL", "NULL"),
    )
    .await;
    insert_alert(&c, "spot", "BTCUSDT", "big_bear_60", 0, 41695.93).await;
    let (discord_api, telegram_api) = (chat.url("/api"), chat.url("/"));
    let notifier = spawn_notifier(
        &db.url,
        &[
            "--allow-private-targets",
            "--discord-api-url",
            &discord_api,
            "--telegram-api-url",
            &telegram_api,
        ],
    );
    wait_until(
        &c,
        "SELECT bool_and(failed_at IS NOT NULL) FROM market.alert_deliveries",
        Duration::from_secs(20),
    )
    .await;
    let done = notifier.stop().await;
    assert_eq!(hook.requests().len(), 2, "500 retried once, 400 permanent");
    let hook_errors = c
        .query_one(
            "SELECT d.last_error, st.last_error FROM market.alert_deliveries d \
               JOIN market.alert_sinks s USING (sink_id) \
               JOIN market.alert_sink_status st USING (sink_id) WHERE s.name = 'hook'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        hook_errors.get::<_, String>(0),
        "HTTP 400 Bad Request (the request was refused as malformed: check chat_id and the \
         sink's kind) (attempt 2; permanent, not retried)"
    );
    let errors = stored_errors(&c).await;
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("HTTP 400 Bad Request (")),
        "the chat API's answer is recorded as its status and ta-feed's own reason: {errors:?}"
    );
    for text in errors.iter().chain([&done.log]) {
        for secret in [
            "abcdefghsecret",
            "token=abc",
            "whsec_topsecret",
            "SECRETDISCORD",
            "SECRETTELEGRAM",
            "x-signature",
            "x-alert-id",
            "hooks/",
        ] {
            assert!(
                !text.contains(secret),
                "{secret:?} reached a log or a table: {text}"
            );
        }
    }
    done.assert_bounded("echoing sinks");
    drop(c);
    db.cleanup().await;
}

/// A fake that answers every request with `status` and an endless chunked body (64 KiB
/// chunks, about 64 MB/s at most); counts the bytes it managed to send.
async fn endless(status: u16) -> (std::net::SocketAddr, Arc<AtomicU64>) {
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let app = Router::new().fallback(move || {
        let sent = counter.clone();
        async move {
            let chunk = axum::body::Bytes::from(vec![b'x'; 64 * 1024]);
            let stream = futures_util::stream::unfold((), move |()| {
                let (sent, chunk) = (sent.clone(), chunk.clone());
                async move {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    Some((Ok::<_, std::io::Error>(chunk), ()))
                }
            });
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from_stream(stream))
                .unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, sent)
}

/// Issue 18.2, 18.6: endless answers (a webhook's and a chat API's) and huge error messages
/// with newlines: the notifier reads at most 64 KiB of an answer, stores and logs at most a
/// short line, and no log line is forged.
#[tokio::test]
async fn endless_and_huge_answers_stay_bounded() {
    let Some(db) = TestDb::migrated("hostile_endless").await else {
        return;
    };
    let c = db.client().await;
    if !support::alert_schema_v2(&c).await {
        db.cleanup().await;
        return;
    }
    let (hook_addr, hook_sent) = endless(500).await;
    let (chat_addr, chat_sent) = endless(500).await;
    // Telegram: a 60 kB description (under the read cap) with forged log lines in it
    let forged = "2026-12-07T00:00:00.000000Z ERROR ta_feed: FORGED LINE";
    let description = format!("first\n{forged}\r\n{}", "y".repeat(60_000));
    let answer =
        serde_json::json!({"ok": false, "error_code": 400, "description": description}).to_string();
    let telegram = FakeSink::start(Duration::ZERO, move |_, _| (400, vec![], answer.clone())).await;
    // Discord: a 20 MB message with newlines (cut at 64 KiB: no longer JSON)
    let huge = format!("first\n{forged}\n{}", "z\n".repeat(10 << 20));
    let answer = serde_json::json!({"message": huge, "code": 50035}).to_string();
    drop(huge);
    let discord = FakeSink::start(Duration::ZERO, move |_, _| (400, vec![], answer.clone())).await;
    webhook(&c, "hook", &format!("http://{hook_addr}/endless"), None).await;
    add_sink(
        &c,
        "discord",
        "discord",
        DISCORD_TARGET,
        None,
        None,
        ("NULL", "NULL", "NULL"),
    )
    .await;
    add_sink(
        &c,
        "telegram",
        "telegram",
        TELEGRAM_TOKEN,
        Some("42"),
        None,
        ("NULL", "NULL", "NULL"),
    )
    .await;
    // the endless chat API is the Discord API of a second notifier below
    insert_alert(&c, "spot", "BTCUSDT", "big_bear_60", 0, 1.0).await;
    let (discord_api, telegram_api) = (discord.url("/api"), telegram.url("/"));
    let notifier = spawn_notifier(
        &db.url,
        &[
            "--allow-private-targets",
            "--discord-api-url",
            &discord_api,
            "--telegram-api-url",
            &telegram_api,
        ],
    );
    wait_until(
        &c,
        "SELECT bool_and(d.failed_at IS NOT NULL) FROM market.alert_deliveries d \
           JOIN market.alert_sinks s USING (sink_id) WHERE s.kind <> 'webhook'",
        Duration::from_secs(30),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await; // the endless webhook is retried meanwhile
    let done = notifier.stop().await;
    // and a notifier whose Discord API streams an endless 500
    c.batch_execute(
        "UPDATE market.alert_sinks SET enabled = (kind = 'discord'); \
                     SELECT market.retry_alert_deliveries('discord')",
    )
    .await
    .unwrap();
    let endless_api = format!("http://{chat_addr}/api");
    let notifier2 = spawn_notifier(
        &db.url,
        &["--allow-private-targets", "--discord-api-url", &endless_api],
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let done2 = notifier2.stop().await;

    for (what, f) in [
        ("webhook + huge errors", &done),
        ("endless chat API", &done2),
    ] {
        f.assert_bounded(what);
        for line in f.log.lines().filter(|l| l.contains("FORGED LINE")) {
            assert!(
                line.contains("notify: "),
                "{what}: a forged log line: {line}"
            );
        }
    }
    // the endless answers were not read to the end: the senders were stopped early
    let (h, a) = (
        hook_sent.load(Ordering::Relaxed),
        chat_sent.load(Ordering::Relaxed),
    );
    println!("endless bodies sent: webhook {h} bytes, chat API {a} bytes");
    assert!(
        h < 64 << 20 && a < 64 << 20,
        "webhook {h}, chat API {a} bytes"
    );
    for e in stored_errors(&c).await {
        assert!(
            e.chars().count() <= 500,
            "{} characters stored",
            e.chars().count()
        );
        assert!(!e.contains('\n') && !e.contains('\r'), "{e}");
    }
    let tg = errors_of(&c, "telegram").await;
    let tg = tg[0].as_deref().unwrap();
    // the chat API's text is never stored (it reaches the log only, one capped line)
    assert!(
        tg.starts_with("HTTP 400 Bad Request (") && !tg.contains(forged),
        "{tg}"
    );
    drop(c);
    db.cleanup().await;
}

/// Issue 18.5: `Retry-After: 0` (webhook 503), `retry_after: 0` (Discord 429) and
/// `parameters.retry_after: 0` (Telegram 429) cannot make a tight loop: the notifier's own
/// back-off is the floor, and an unhealthy sink waits its --unhealthy-retry-ms whatever the
/// server says.
#[tokio::test]
async fn retry_after_zero_cannot_make_a_tight_loop() {
    let Some(db) = TestDb::migrated("hostile_retry").await else {
        return;
    };
    let c = db.client().await;
    if !support::alert_schema_v2(&c).await {
        db.cleanup().await;
        return;
    }
    let hook = FakeSink::start(Duration::ZERO, |_, _| {
        (503, vec![("retry-after", "0".to_string())], String::new())
    })
    .await;
    let limited = FakeSink::start(Duration::ZERO, |_, _| {
        (429, vec![("retry-after", "0".to_string())], String::new())
    })
    .await;
    let discord = FakeSink::start(Duration::ZERO, |_, _| {
        (
            429,
            vec![],
            r#"{"message": "You are being rate limited.", "retry_after": 0, "global": false}"#
                .into(),
        )
    })
    .await;
    let telegram = FakeSink::start(Duration::ZERO, |_, _| {
        (
            429,
            vec![],
            r#"{"ok":false,"error_code":429,"description":"Too Many Requests","parameters":{"retry_after":0}}"#
                .into(),
        )
    })
    .await;
    webhook(&c, "hook", &hook.url("/h"), None).await;
    let unhealthy = webhook(&c, "unhealthy", &limited.url("/u"), None).await;
    add_sink(
        &c,
        "discord",
        "discord",
        DISCORD_TARGET,
        None,
        None,
        ("NULL", "NULL", "NULL"),
    )
    .await;
    add_sink(
        &c,
        "telegram",
        "telegram",
        TELEGRAM_TOKEN,
        Some("42"),
        None,
        ("NULL", "NULL", "NULL"),
    )
    .await;
    // a sink already marked unhealthy (10 consecutive failures) that now answers 429 + 0
    c.execute(
        "INSERT INTO market.alert_sink_status (sink_id, healthy, consecutive_failures) \
         VALUES ($1, false, 10)",
        &[&unhealthy],
    )
    .await
    .unwrap();
    insert_alert(&c, "spot", "BTCUSDT", "big_bear_60", 0, 1.0).await;
    let (discord_api, telegram_api) = (discord.url("/api"), telegram.url("/"));
    let notifier = spawn_notifier(
        &db.url,
        &[
            "--allow-private-targets",
            "--discord-api-url",
            &discord_api,
            "--telegram-api-url",
            &telegram_api,
        ],
    );
    let run = Duration::from_secs(6);
    tokio::time::sleep(run).await;
    let done = notifier.stop().await;
    // back-off 200 ms doubling to 1 s (jitter: half to all of it), unhealthy after 3 failures:
    // at most ~10 attempts in 6 s; 0.2.0 made hundreds
    for (name, fake) in [
        ("webhook 503 Retry-After: 0", &hook),
        ("Discord 429 retry_after: 0", &discord),
        ("Telegram 429 retry_after: 0", &telegram),
    ] {
        let n = fake.requests().len();
        println!("{name}: {n} attempts in {run:?}");
        assert!((2..=20).contains(&n), "{name}: {n} attempts in {run:?}");
    }
    // the unhealthy sink: its --unhealthy-retry-ms (2 s, jitter ≥ 1 s) wins over the header
    let u = limited.requests();
    println!("unhealthy sink, 429 Retry-After: 0: {} attempts", u.len());
    assert!((1..=6).contains(&u.len()), "{} attempts", u.len());
    for w in u.windows(2) {
        let gap = w[1].at - w[0].at;
        assert!(gap >= Duration::from_millis(950), "retried after {gap:?}");
    }
    done.assert_bounded("Retry-After: 0");
    drop(c);
    db.cleanup().await;
}

/// Issue 18.3: sinks share one bounded pool: with 12 sinks sending at once (each answer takes
/// 300 ms) and --db-pool-size 3 the notifier holds at most 3 + 1 connections (0.2.0: one per
/// sink, 13), and every alert is still delivered.
#[tokio::test]
async fn many_sinks_share_a_bounded_connection_pool() {
    let Some(db) = TestDb::migrated("hostile_pool").await else {
        return;
    };
    let c = db.client().await;
    if !support::alert_schema_v2(&c).await {
        db.cleanup().await;
        return;
    }
    let slow = FakeSink::start(Duration::from_millis(300), |_, _| {
        (200, vec![], String::new())
    })
    .await;
    for i in 0..12 {
        webhook(&c, &format!("s{i:02}"), &slow.url(&format!("/{i}")), None).await;
    }
    for m in 0..3 {
        insert_alert(&c, "spot", "BTCUSDT", "big_bear_60", m, 1.0).await;
    }
    let notifier = spawn_notifier(&db.url, &["--allow-private-targets", "--db-pool-size", "3"]);
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut most = 0i64;
    loop {
        let r = c
            .query_one(
                "SELECT (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                          AND backend_type = 'client backend' AND pid <> pg_backend_pid()), \
                        (SELECT count(*) FROM market.alert_deliveries WHERE delivered_at IS NULL)",
                &[],
            )
            .await
            .unwrap();
        most = most.max(r.get::<_, i64>(0));
        if r.get::<_, i64>(1) == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "deliveries still pending");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done = notifier.stop().await;
    println!("12 sinks, pool 3: at most {most} connections");
    assert!(most <= 4, "{most} connections for pool 3 + LISTEN");
    assert_eq!(slow.requests().len(), 36);
    done.assert_bounded("12 sinks, pool 3");
    drop(c);
    db.cleanup().await;
}
