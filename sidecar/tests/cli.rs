//! The `ta-feed` binary itself: help text, password redaction, replay's first stdout
//! line, and clean exits on SIGINT/SIGTERM. Needs neither the database nor the recorded
//! data (a two-row CSV is written to a temp dir).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::AsyncBufReadExt;

const EXE: &str = env!("CARGO_BIN_EXE_ta-feed");

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn help_documents_env_units_defaults_and_hides_password() {
    let out = Command::new(EXE)
        .args(["stream", "--help"])
        .env("DATABASE_URL", "postgres://u:supersecret@h/db")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "[env: SYMBOLS=",
        "[env: BINANCE_WS_URL=",
        "wss://stream.binance.com:9443",
        "https://fapi.binance.com",
        "[env: MARKET=",
        "[default: spot]",
        "[env: STREAMS_PER_CONNECTION=",
        "[default: 200]",
        "[env: ALERT_CATCHUP_MINUTES=",
        "[default: 1440]",
        "[env: FLUSH_MS=",
        "milliseconds",
        "[env: METRICS_ADDR=",
        "[env: DATABASE_URL]",
    ] {
        assert!(help.contains(needle), "missing {needle:?} in:\n{help}");
    }
    assert!(!help.contains("supersecret"), "password leaked in --help");
    for sub in ["migrate", "import", "replay", "listen", "symbols"] {
        let out = Command::new(EXE).args([sub, "--help"]).output().unwrap();
        assert!(out.status.success(), "{sub} --help");
    }
}

#[tokio::test]
async fn stream_exits_zero_on_sigterm_even_while_retrying() {
    // Nothing listens on port 1: REST and WebSocket keep retrying with back-off.
    let child = tokio::process::Command::new(EXE)
        .args(["stream", "--symbols", "BTCUSDT"])
        .args([
            "--ws-url",
            "ws://127.0.0.1:1",
            "--rest-url",
            "http://127.0.0.1:1",
        ])
        .args(["--database-url", "postgres://nobody:hidden@127.0.0.1:1/x"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    signal(child.id().unwrap(), "-TERM");
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("exited after SIGTERM")
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "status {:?}\n{log}", out.status);
    assert!(!log.contains("hidden"), "password leaked in logs:\n{log}");
    assert!(log.contains("nobody:***@"), "redacted URL logged:\n{log}");
}

#[tokio::test]
async fn replay_prints_address_first_and_exits_zero_on_sigint() {
    let dir = std::env::temp_dir().join(format!("ta-feed-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("BTCUSDT-1m-2021-10-11.csv");
    std::fs::write(
        &csv,
        "1633910400000,54659.01,54670.0,54596.63,54631.19,68.54042,1633910459999,3744747.3848163,1980,28.46837,1555449.0674363,0\n\
         1633910460000,54631.19,54699.99,54587.23,54601.27,99.42446,1633910519999,5432217.8714525,2155,48.88015,2670984.5431403,0\n",
    )
    .unwrap();
    let mut child = tokio::process::Command::new(EXE)
        .args([
            "replay",
            "--listen",
            "127.0.0.1:0",
            "--start",
            "2021-10-11T00:01:30Z",
            "--file",
        ])
        .arg(&csv)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let addr = first.strip_prefix("listening on ").expect(&first);
    let body = reqwest::get(format!(
        "http://{addr}/api/v3/klines?symbol=BTCUSDT&interval=1m"
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    // The second minute is in progress at 00:01:30: half its volume, last.
    assert!(body.starts_with("[[1633910400000,\"54659.01\""), "{body}");
    assert!(body.contains("[1633910460000,\"54631.19\""), "{body}");
    assert!(
        !body.contains("99.42446"),
        "in-progress minute must be partial: {body}"
    );
    let started = Instant::now();
    signal(child.id().unwrap(), "-INT");
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exited after SIGINT")
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let _ = std::fs::remove_dir_all(dir);
}
