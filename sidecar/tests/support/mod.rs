//! Helpers of the notify / health / TLS tests: fake HTTP sinks, alert rows, private clusters.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;

// ---- fake HTTP sinks ------------------------------------------------------------------

/// One request a fake received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub at: Instant,
    pub wall: std::time::SystemTime,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

/// The answer of a fake: status, extra headers, body.
pub type Answer = (u16, Vec<(&'static str, String)>, String);

type Behaviour = Arc<dyn Fn(usize, &Received) -> Answer + Send + Sync>;

#[derive(Clone)]
struct FakeState {
    log: Arc<Mutex<Vec<Received>>>,
    behaviour: Behaviour,
    delay: Duration,
}

/// A local HTTP server on 127.0.0.1:0 that records every request and answers with
/// `behaviour(index, request)` after `delay`.
pub struct FakeSink {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeSink {
    pub async fn start(
        delay: Duration,
        behaviour: impl Fn(usize, &Received) -> Answer + Send + Sync + 'static,
    ) -> FakeSink {
        let log = Arc::new(Mutex::new(Vec::new()));
        let state = FakeState {
            log: log.clone(),
            behaviour: Arc::new(behaviour),
            delay,
        };
        let app = Router::new().fallback(record).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeSink { addr, log, task }
    }

    /// Always 200 with `body`.
    pub async fn ok(body: &'static str) -> FakeSink {
        FakeSink::start(Duration::ZERO, move |_, _| (200, vec![], body.to_string())).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn requests(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for FakeSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(State(s): State<FakeState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body: Bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let r = Received {
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers,
        body: body.to_vec(),
        at: Instant::now(),
        wall: std::time::SystemTime::now(),
    };
    let index = {
        let mut log = s.log.lock().unwrap();
        log.push(r.clone());
        log.len() - 1
    };
    if !s.delay.is_zero() {
        tokio::time::sleep(s.delay).await;
    }
    let (status, headers, body) = (s.behaviour)(index, &r);
    let mut resp = (StatusCode::from_u16(status).unwrap(), body).into_response();
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    for (k, v) in headers {
        resp.headers_mut().insert(k, v.parse().unwrap());
    }
    resp
}

/// Telegram's MarkdownV2 parser, strictly: `\x` is a literal x, `*` toggles bold, any other
/// reserved character unescaped is an error (Telegram: "can't parse entities"). Returns the
/// plain text.
pub fn markdown_v2_plain(text: &str) -> Result<String, String> {
    const RESERVED: &str = "_*[]()~`>#+-=|{}.!";
    let mut out = String::new();
    let mut bold = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) if (n as u32) < 127 => out.push(n),
                Some(n) => return Err(format!("'\\' before non-ASCII {n:?}")),
                None => return Err("text ends with '\\'".into()),
            },
            '*' => bold = !bold,
            c if RESERVED.contains(c) => {
                return Err(format!(
                    "Character '{c}' is reserved and must be escaped with the preceding '\\'"
                ))
            }
            c => out.push(c),
        }
    }
    if bold {
        return Err("unclosed bold entity".into());
    }
    Ok(out)
}

/// A fake Telegram Bot API that checks MarkdownV2 like Telegram.
pub async fn fake_telegram() -> FakeSink {
    FakeSink::start(Duration::ZERO, |_, r| {
        let j = r.json();
        if j["parse_mode"] != "MarkdownV2" {
            return (400, vec![], r#"{"ok":false,"error_code":400,"description":"Bad Request: parse_mode"}"#.into());
        }
        match markdown_v2_plain(j["text"].as_str().unwrap_or_default()) {
            Ok(_) => (200, vec![], r#"{"ok":true,"result":{"message_id":1}}"#.into()),
            Err(e) => (
                400,
                vec![],
                serde_json::json!({"ok": false, "error_code": 400,
                                   "description": format!("Bad Request: can't parse entities: {e}")})
                .to_string(),
            ),
        }
    })
    .await
}

// ---- alerts -----------------------------------------------------------------------------

/// True when `market.alert_history` has the 0.2.0 columns (`alert_id`, `market`); otherwise
/// prints why the test is skipped.
pub async fn alert_schema_v2(c: &tokio_postgres::Client) -> bool {
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'market.alert_history'::regclass \
              AND attname IN ('alert_id', 'market') AND NOT attisdropped",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    if n < 2 {
        println!("skipped: market.alert_history has no alert_id/market (the 0.2.0 alert schema is not applied)");
    }
    n == 2
}

/// Inserts an alert row (payload version 2) and enqueues its deliveries; returns alert_id.
pub async fn insert_alert(
    c: &tokio_postgres::Client,
    market: &str,
    symbol: &str,
    rule: &str,
    minute: i64,
    price: f64,
) -> i64 {
    let id: i64 = c
        .query_one(
            "SELECT nextval(pg_get_serial_sequence('market.alert_history', 'alert_id'))",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let rule_id: i32 = c
        .query_one(
            "SELECT rule_id FROM market.alert_rules WHERE name = $1",
            &[&rule],
        )
        .await
        .unwrap_or_else(|e| panic!("rule {rule}: {e}"))
        .get(0);
    let open =
        chrono::DateTime::<chrono::Utc>::from_timestamp(1_621_387_500 + minute * 60, 0).unwrap();
    let close = open + chrono::Duration::milliseconds(59_999);
    let iso =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let payload = serde_json::json!({
        "version": 2, "alert_id": id, "market": market, "symbol": symbol, "rule": rule,
        "rule_id": rule_id, "open_time": iso(open), "close_time": iso(close), "price": price,
        "changes": {"1m": 0.41, "5m": -0.37, "15m": -1.7, "1h": -3.4776, "4h": -3.44, "8h": -4.19, "1d": -7.58},
        "volumes": {"1m": 6706216.2, "5m": 53097571.09, "15m": 192439146.01, "1h": 328283044.2,
                    "4h": 858148000.84, "8h": 1640050968.94, "1d": 5178900127.14},
        "vcp": -0.1234, "rsi_14": 36.78, "macd": -286.26
    });
    c.execute(
        "INSERT INTO market.alert_history \
             (alert_id, market, symbol, rule_id, rule, open_time, close_time, price, payload) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::text::jsonb)",
        &[
            &id,
            &market,
            &symbol,
            &rule_id,
            &rule,
            &open,
            &close,
            &price,
            &payload.to_string(),
        ],
    )
    .await
    .unwrap();
    c.execute(
        "SELECT market._enqueue_deliveries(ARRAY[$1::bigint])",
        &[&id],
    )
    .await
    .unwrap();
    id
}

/// Adds a sink and one subscription; returns sink_id.
pub async fn add_sink(
    c: &tokio_postgres::Client,
    name: &str,
    kind: &str,
    target: &str,
    chat_id: Option<&str>,
    secret: Option<&str>,
    subscription: (&str, &str, &str),
) -> i32 {
    let id: i32 = c
        .query_one(
            "INSERT INTO market.alert_sinks (name, kind, target, chat_id, signing_secret) \
             VALUES ($1, $2, $3, $4, $5) RETURNING sink_id",
            &[&name, &kind, &target, &chat_id, &secret],
        )
        .await
        .unwrap()
        .get(0);
    let (rules, markets, symbols) = subscription;
    c.execute(
        &format!(
            "INSERT INTO market.alert_subscriptions (sink_id, rules, markets, symbols) \
             VALUES ($1, {rules}, {markets}, {symbols})"
        ),
        &[&id],
    )
    .await
    .unwrap();
    id
}

/// Waits until no delivery of `sinks` is pending (or panics after `timeout`).
pub async fn wait_delivered(c: &tokio_postgres::Client, sinks: &[i32], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let pending: i64 = c
            .query_one(
                "SELECT count(*) FROM market.alert_deliveries \
                  WHERE sink_id = ANY($1) AND delivered_at IS NULL AND failed_at IS NULL",
                &[&sinks],
            )
            .await
            .unwrap()
            .get(0);
        if pending == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{pending} deliveries still pending after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- a private PostgreSQL cluster -------------------------------------------------------

/// The bin directory of the PostgreSQL named by `PG_CONFIG` (default: Debian's 15); with
/// `ssl`, of `TA_FEED_TEST_SSL_PG_CONFIG` when set (the PostgreSQL 18 of .ci/install-deps is
/// built without OpenSSL, so `make test` points this at 15). Err: why there is none.
fn pg_bindir(ssl: bool) -> Result<PathBuf, String> {
    let var = if ssl && std::env::var_os("TA_FEED_TEST_SSL_PG_CONFIG").is_some() {
        "TA_FEED_TEST_SSL_PG_CONFIG"
    } else {
        "PG_CONFIG"
    };
    let pg_config =
        std::env::var(var).unwrap_or_else(|_| "/usr/lib/postgresql/15/bin/pg_config".into());
    let run = |arg: &str| {
        Command::new(&pg_config)
            .arg(arg)
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
    };
    let dir = PathBuf::from(run("--bindir").unwrap_or_default());
    if !dir.join("initdb").is_file() {
        return Err(format!(
            "initdb not found ({var}={pg_config}; set PG_CONFIG)"
        ));
    }
    let configure = run("--configure").unwrap_or_default();
    if ssl && !configure.contains("--with-ssl=openssl") && !configure.contains("--with-openssl") {
        return Err(format!(
            "{pg_config} was built without SSL (set TA_FEED_TEST_SSL_PG_CONFIG to a PostgreSQL with SSL)"
        ));
    }
    Ok(dir)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A free TCP port on 127.0.0.1 (bound to port 0, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A throw-away cluster under /tmp, run as the `postgres` OS user when we are root; stopped
/// and removed on drop.
pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
    bindir: PathBuf,
    root: bool,
}

impl Cluster {
    /// initdb with trust authentication; `conf` is appended to postgresql.conf, `hba` (if
    /// given) replaces pg_hba.conf; `files` are written into the data directory (owned by the
    /// server, mode 0600) before the start. None (and a "skipped" line) without initdb, or
    /// when `conf` turns `ssl = on` and the server has no SSL.
    pub fn start(
        name: &str,
        conf: &str,
        hba: Option<&str>,
        files: &[(&str, &str)],
    ) -> Option<Cluster> {
        let bindir = match pg_bindir(conf.contains("ssl = on")) {
            Ok(dir) => dir,
            Err(why) => {
                println!("skipped: {why}");
                return None;
            }
        };
        let root = is_root();
        let dir = PathBuf::from(format!("/tmp/ta-feed-it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let c = Cluster {
            dir,
            port: free_port(),
            bindir,
            root,
        };
        if root {
            assert!(Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&c.dir)
                .status()
                .unwrap()
                .success());
        }
        let pgdata = c.pgdata();
        c.run(&[
            c.bindir.join("initdb").to_str().unwrap(),
            "-D",
            pgdata.to_str().unwrap(),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ]);
        let extra = format!(
            "\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nport = {}\n\
             fsync = off\nshared_buffers = 32MB\nlog_min_messages = warning\n{conf}\n",
            c.dir.display(),
            c.port
        );
        append(&pgdata.join("postgresql.conf"), &extra);
        if let Some(hba) = hba {
            std::fs::write(pgdata.join("pg_hba.conf"), hba).unwrap();
        }
        for (file, content) in files {
            let p = pgdata.join(file);
            std::fs::write(&p, content).unwrap();
            Command::new("chmod").arg("0600").arg(&p).status().unwrap();
            if root {
                Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(&p)
                    .status()
                    .unwrap();
            }
        }
        c.pg_ctl_start();
        Some(c)
    }

    pub fn pgdata(&self) -> PathBuf {
        self.dir.join("pgdata")
    }

    fn run(&self, args: &[&str]) {
        let mut cmd = if self.root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]);
            c.args(args);
            c
        } else {
            let mut c = Command::new(args[0]);
            c.args(&args[1..]);
            c
        };
        let out = cmd.current_dir(&self.dir).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn pg_ctl_start(&self) {
        let pg_ctl = self.bindir.join("pg_ctl");
        let log = self.dir.join("postgresql.log");
        self.run(&[
            pg_ctl.to_str().unwrap(),
            "-D",
            self.pgdata().to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
            "-w",
            "-t",
            "60",
            "start",
        ]);
    }

    pub fn pg_ctl_stop(&self) {
        let pg_ctl = self.bindir.join("pg_ctl");
        self.run(&[
            pg_ctl.to_str().unwrap(),
            "-D",
            self.pgdata().to_str().unwrap(),
            "-m",
            "fast",
            "-w",
            "stop",
        ]);
    }

    /// `postgres://postgres@127.0.0.1:PORT/DB` plus `extra` query parameters.
    pub fn url(&self, db: &str, extra: &str) -> String {
        let q = if extra.is_empty() {
            String::new()
        } else {
            format!("?{extra}")
        };
        format!("postgres://postgres@127.0.0.1:{}/{db}{q}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgresql.log")).unwrap_or_default()
    }
}

fn append(p: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(p).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let pg_ctl = self.bindir.join("pg_ctl");
        let mut cmd = if self.root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&pg_ctl);
            c
        } else {
            Command::new(&pg_ctl)
        };
        let _ = cmd
            .arg("-D")
            .arg(self.pgdata())
            .args(["-m", "immediate", "-w", "stop"])
            .current_dir("/tmp")
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
