//! TLS to the database (libpq sslmode semantics, a self-signed CA made in the test) and the
//! health endpoints, each against a private cluster started by the test on a free port.
//!
//! Run only when `TA_FEED_TEST_DATABASE_URL` is set (the environment has PostgreSQL and
//! pg_ta installed; `PG_CONFIG` names the installation, `TA_FEED_TEST_SSL_PG_CONFIG` one with
//! SSL for the TLS cases: `make test` uses PostgreSQL 15 there, the 18 of PyPI has no OpenSSL).

mod common;
mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use support::Cluster;
use ta_feed::db::DbError;
use tokio::io::AsyncBufReadExt;

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(p, key),
    }
}

/// (certificate PEM, key PEM) signed by `ca`.
fn leaf(ca: &Ca, cn: &str, dns: &[&str], server: bool) -> (String, String) {
    let mut p =
        CertificateParams::new(dns.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    p.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

async fn ssl_in_use(url: &str) -> Result<bool, DbError> {
    let (c, _h) = ta_feed::db::connect(url).await?;
    Ok(c.query_one(
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        &[],
    )
    .await
    .unwrap()
    .get(0))
}

fn err_text(r: Result<bool, DbError>) -> (DbError, String) {
    let e = r.expect_err("connection must fail");
    let mut text = e.to_string();
    let mut s = std::error::Error::source(&e);
    while let Some(x) = s {
        text.push_str(": ");
        text.push_str(&x.to_string());
        s = x.source();
    }
    (e, text)
}

/// sslmode disable/prefer/require/verify-ca/verify-full + sslrootcert (+ sslcert/sslkey)
/// against a cluster with `ssl = on` and a certificate from a CA made here; the wrong CA and
/// the wrong host name fail with clear errors; migrate, import and listen work over TLS.
#[tokio::test]
async fn tls_modes_against_a_self_signed_ca() {
    let Some(plain_url) = common::admin_url() else {
        return;
    };
    ta_feed::install_crypto_provider();
    let good = ca("pg_ta test CA");
    let wrong = ca("some other CA");
    let (server_crt, server_key) = leaf(&good, "localhost", &["localhost"], true);
    let (client_crt, client_key) = leaf(&good, "certuser", &[], false);
    let hba = "local all all trust\n\
               hostssl all certuser 127.0.0.1/32 cert\n\
               hostssl all all 127.0.0.1/32 trust\n\
               hostnossl all all 127.0.0.1/32 reject\n";
    let conf = "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nssl_ca_file = 'ca.crt'\n";
    let Some(cluster) = Cluster::start(
        "tls",
        conf,
        Some(hba),
        &[
            ("server.crt", &server_crt),
            ("server.key", &server_key),
            ("ca.crt", &good.pem),
        ],
    ) else {
        return;
    };
    let files = tempdir("tls-client");
    let path = |name: &str, content: &str| {
        let p = files.join(name);
        std::fs::write(&p, content).unwrap();
        p.display().to_string()
    };
    let ca_pem = path("ca.pem", &good.pem);
    let wrong_pem = path("wrong-ca.pem", &wrong.pem);
    let client_crt = path("client.crt", &client_crt);
    let client_key = path("client.key", &client_key);
    let port = cluster.port;
    // host name "localhost" (in the certificate), address 127.0.0.1
    let by_name =
        |q: &str| format!("postgres://postgres@localhost:{port}/postgres?hostaddr=127.0.0.1&{q}");
    // host 127.0.0.1 (not in the certificate)
    let by_ip = |q: &str| format!("postgres://postgres@127.0.0.1:{port}/postgres?{q}");

    // TC1: verify-full with the right CA and host name: encrypted
    assert!(ssl_in_use(&by_name(&format!(
        "sslmode=verify-full&sslrootcert={ca_pem}"
    )))
    .await
    .unwrap());
    // TC2: ... the same in key=value form, quoted path
    let kv = format!("host=localhost hostaddr=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=verify-full sslrootcert='{ca_pem}'");
    assert!(ssl_in_use(&kv).await.unwrap());
    // TC3: verify-full, wrong host name: refused, and the message says why
    let (e, text) =
        err_text(ssl_in_use(&by_ip(&format!("sslmode=verify-full&sslrootcert={ca_pem}"))).await);
    assert!(
        matches!(e, DbError::Tls { .. }) && !e.is_retryable(),
        "{text}"
    );
    assert!(
        text.contains("sslmode=verify-full")
            && text.contains("does not match the host name")
            && text.contains("127.0.0.1"),
        "{text}"
    );
    // TC4: verify-ca checks the chain only: the IP host is fine
    assert!(
        ssl_in_use(&by_ip(&format!("sslmode=verify-ca&sslrootcert={ca_pem}")))
            .await
            .unwrap()
    );
    // TC5: the wrong CA: refused in verify-ca and verify-full
    for mode in ["verify-ca", "verify-full"] {
        let (e, text) = err_text(
            ssl_in_use(&by_name(&format!("sslmode={mode}&sslrootcert={wrong_pem}"))).await,
        );
        assert!(matches!(e, DbError::Tls { .. }), "{text}");
        assert!(
            text.contains("server certificate not trusted")
                && text.contains(&wrong_pem)
                && text.contains("UnknownIssuer"),
            "{mode}: {text}"
        );
    }
    // TC6: require encrypts without checking; with a root certificate it checks like verify-ca
    assert!(ssl_in_use(&by_ip("sslmode=require")).await.unwrap());
    assert!(
        ssl_in_use(&by_ip(&format!("sslmode=require&sslrootcert={ca_pem}")))
            .await
            .unwrap()
    );
    let (_, text) =
        err_text(ssl_in_use(&by_ip(&format!("sslmode=require&sslrootcert={wrong_pem}"))).await);
    assert!(text.contains("server certificate not trusted"), "{text}");
    // TC7: prefer uses TLS when offered; disable does not (and this server refuses plain TCP)
    assert!(ssl_in_use(&by_ip("sslmode=prefer")).await.unwrap());
    assert!(ssl_in_use(&by_ip("")).await.unwrap(), "default is prefer");
    let (e, text) = err_text(ssl_in_use(&by_ip("sslmode=disable")).await);
    assert!(
        matches!(e, DbError::Connect(_)) && text.contains("no encryption"),
        "{text}"
    );
    // TC8: client certificate authentication (sslcert + sslkey)
    let cert_user =
        |q: &str| format!("postgres://certuser@localhost:{port}/postgres?hostaddr=127.0.0.1&{q}");
    let admin = ta_feed::db::connect(&by_name(&format!(
        "sslmode=verify-full&sslrootcert={ca_pem}"
    )))
    .await
    .unwrap()
    .0;
    admin
        .batch_execute("DROP ROLE IF EXISTS certuser; CREATE ROLE certuser LOGIN")
        .await
        .unwrap();
    assert!(ssl_in_use(&cert_user(&format!(
        "sslmode=verify-full&sslrootcert={ca_pem}&sslcert={client_crt}&sslkey={client_key}"
    )))
    .await
    .unwrap());
    let (_, text) = err_text(
        ssl_in_use(&cert_user(&format!(
            "sslmode=verify-full&sslrootcert={ca_pem}"
        )))
        .await,
    );
    assert!(
        text.contains("certificate"),
        "no client certificate: {text}"
    );
    // TC9: require against a server without TLS (the shared test cluster has ssl = off)
    let sep = if plain_url.contains('?') { '&' } else { '?' };
    let (e, text) = err_text(ssl_in_use(&format!("{plain_url}{sep}sslmode=require")).await);
    assert!(
        matches!(e, DbError::Tls { .. }) && text.contains("does not support TLS"),
        "{text}"
    );
    // TC10: a missing root certificate file
    let (e, text) = err_text(
        ssl_in_use(&by_name(
            "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
        ))
        .await,
    );
    assert!(
        matches!(e, DbError::TlsSetup(_)) && text.contains("/nonexistent/ca.pem"),
        "{text}"
    );

    // every subcommand goes through db::connect: migrate, import, listen over verify-full
    admin.batch_execute("CREATE DATABASE tls_it").await.unwrap();
    let url = format!("postgres://postgres@localhost:{port}/tls_it?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={ca_pem}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ta-feed"))
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "migrate over TLS: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = path("BTCUSDT-1m-2021-05-19.csv", "1621382400000,43000.1,43100,42900,43050.5,12.5,1621382459999,538131.25,420,6.1,262608.05,0\n\
                                                 1621382460000,43050.5,43060,43000,43010,3.25,1621382519999,139813.6,120,1.5,64528.2,0\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ta-feed"))
        .args(["import", &csv])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "import over TLS: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (c, _h) = ta_feed::db::connect(&url).await.unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM market.candles_1m", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    let mut listen = tokio::process::Command::new(env!("CARGO_BIN_EXE_ta-feed"))
        .arg("listen")
        .env("DATABASE_URL", &url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let encrypted: Option<bool> = c
            .query_opt(
                "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
                        WHERE a.datname = 'tls_it' AND a.query ILIKE 'LISTEN%'",
                &[],
            )
            .await
            .unwrap()
            .map(|r| r.get(0));
        if let Some(e) = encrypted {
            assert!(e, "listen's connection is encrypted");
            break;
        }
        assert!(Instant::now() < deadline, "listen never connected over TLS");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    listen.start_kill().unwrap();
    let _ = listen.wait().await;
    // notify's bounded pool makes its connections like db::connect: encrypted, and a wrong
    // CA is the same clear DbError::Tls
    let pool = ta_feed::db::DbPool::new(&url, 2).unwrap();
    let pooled = pool.get().await.unwrap();
    let ssl: bool = pooled
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "a pooled connection is encrypted");
    drop(pooled);
    let bad = ta_feed::db::DbPool::new(
        &by_name(&format!("sslmode=verify-full&sslrootcert={wrong_pem}")),
        1,
    )
    .unwrap();
    let e = bad.get().await.unwrap_err();
    assert!(matches!(e, DbError::Tls { .. }), "{e:?}");
    assert!(!e.is_retryable());
    drop(c);
    drop(admin);
    let _ = std::fs::remove_dir_all(&files);
    drop(cluster);
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("ta-feed-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, String) {
    match client.get(url).send().await {
        Ok(r) => {
            let s = r.status().as_u16();
            (s, r.text().await.unwrap_or_default())
        }
        Err(e) => (0, e.to_string()),
    }
}

/// Polls /health until `pred` holds (or panics after `timeout`); returns the document.
async fn health_until(
    client: &reqwest::Client,
    base: &str,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    let mut last = serde_json::Value::Null;
    loop {
        let (code, body) = get(client, &format!("{base}/health")).await;
        if code != 0 {
            last = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("/health is not JSON ({e}): {body}"));
            if pred(&last) {
                return last;
            }
        }
        assert!(
            Instant::now() < deadline,
            "/health never became {what}: {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `notify --health-addr`: healthy, degraded while its database is stopped (with the
/// reason; /ready 503, /live 200), healthy again after the restart; /metrics on the same
/// listener. `stream --health-addr` serves the same endpoints.
#[tokio::test]
async fn health_turns_degraded_when_the_database_stops() {
    if common::admin_url().is_none() {
        return;
    }
    let Some(cluster) = Cluster::start("health", "", None, &[]) else {
        return;
    };
    let url = cluster.url("postgres", "");
    ta_feed::migrate::migrate_files(&url, common::migrations_under_test())
        .await
        .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ta-feed"))
        .args([
            "notify",
            "--health-addr",
            "127.0.0.1:0",
            "--sinks-refresh-ms",
            "200",
            "--poll-interval-ms",
            "200",
        ])
        .env("DATABASE_URL", &url)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://{}", health_addr(child.stdout.take().unwrap()).await);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    let h = health_until(&http, &base, Duration::from_secs(20), "healthy", |h| {
        h["status"] == "healthy" && h["database_connected"] == true
    })
    .await;
    assert_eq!(h["component"], "notify");
    assert_eq!(h["pending_deliveries"], 0);
    assert!(
        h["uptime_seconds"].is_u64() && h["rss_mb"].as_f64().unwrap() > 0.0,
        "{h}"
    );
    assert_eq!(get(&http, &format!("{base}/ready")).await.0, 200);
    assert_eq!(get(&http, &format!("{base}/live")).await.0, 200);
    let (code, metrics) = get(&http, &format!("{base}/metrics")).await;
    assert_eq!(code, 200);
    assert!(
        metrics.contains("ta_feed_notify_pending_deliveries"),
        "{metrics}"
    );

    cluster.pg_ctl_stop();
    let h = health_until(&http, &base, Duration::from_secs(30), "degraded", |h| {
        h["status"] == "degraded"
    })
    .await;
    assert_eq!(h["database_connected"], false);
    assert!(
        h["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("database not connected for"),
        "{h}"
    );
    let (code, body) = get(&http, &format!("{base}/ready")).await;
    assert_eq!(
        (code, body.as_str()),
        (503, "not ready: database not connected\n")
    );
    assert_eq!(get(&http, &format!("{base}/live")).await.0, 200);

    cluster.pg_ctl_start();
    let h = health_until(
        &http,
        &base,
        Duration::from_secs(60),
        "healthy again",
        |h| h["status"] == "healthy",
    )
    .await;
    assert_eq!(h["database_connected"], true);
    assert_eq!(h["reasons"], serde_json::json!([]));
    assert_eq!(get(&http, &format!("{base}/ready")).await.0, 200);
    child.start_kill().unwrap();
    let _ = child.wait().await;

    // stream: the same listener, --metrics-addr kept as an alias
    let mut stream = tokio::process::Command::new(env!("CARGO_BIN_EXE_ta-feed"))
        .args([
            "stream",
            "--symbols",
            "BTCUSDT",
            "--ws-url",
            "ws://127.0.0.1:1",
            "--rest-url",
            "http://127.0.0.1:1",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .env("DATABASE_URL", &url)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!(
        "http://{}",
        health_addr(stream.stdout.take().unwrap()).await
    );
    let h = health_until(&http, &base, Duration::from_secs(10), "served", |_| true).await;
    assert_eq!(h["component"], "stream");
    assert!(h.get("pending_deliveries").is_none());
    assert_eq!(get(&http, &format!("{base}/live")).await.0, 200);
    assert_eq!(get(&http, &format!("{base}/metrics")).await.0, 200);
    stream.start_kill().unwrap();
    let _ = stream.wait().await;
    drop(cluster);
}

/// Reads the `health on ADDR` line a subcommand prints first.
async fn health_addr(stdout: tokio::process::ChildStdout) -> String {
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("no health line")
        .unwrap()
        .expect("stdout closed");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    line.strip_prefix("health on ").expect(&line).to_string()
}
