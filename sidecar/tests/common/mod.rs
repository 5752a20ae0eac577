//! Shared helpers of the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use tokio_postgres::NoTls;

/// The recorded Binance data (`shared/data/binance` beside the repository), if present.
/// `TA_FEED_DATA_DIR` overrides the location (and, pointing nowhere, simulates its absence).
pub fn data_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("TA_FEED_DATA_DIR") {
        let dir = PathBuf::from(dir);
        return dir.join("README.md").is_file().then_some(dir);
    }
    [
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/binance"),
        PathBuf::from("/work/shared/data/binance"),
    ]
    .into_iter()
    .find(|p| p.join("README.md").is_file())
}

/// A file under the data dir, or None (and a "skipped" line) when absent.
pub fn data_file(rel: &str) -> Option<PathBuf> {
    match data_dir().map(|d| d.join(rel)).filter(|p| p.is_file()) {
        Some(p) => Some(p),
        None => {
            println!("skipped: recorded data file {rel} not found (set TA_FEED_DATA_DIR)");
            None
        }
    }
}

/// `TA_FEED_TEST_DATABASE_URL`, or None (and the "skipped" line).
pub fn admin_url() -> Option<String> {
    match std::env::var("TA_FEED_TEST_DATABASE_URL") {
        Ok(u) if !u.trim().is_empty() => Some(u),
        _ => {
            println!("skipped: TA_FEED_TEST_DATABASE_URL not set");
            None
        }
    }
}

/// A throw-away database created on the test cluster.
pub struct TestDb {
    pub url: String,
    pub name: String,
    admin_url: String,
}

fn with_dbname(url: &str, db: &str) -> String {
    if url.contains("://") {
        let mut u = url::Url::parse(url).expect("TA_FEED_TEST_DATABASE_URL must be a valid URL");
        u.set_path(&format!("/{db}"));
        u.to_string()
    } else {
        format!("{url} dbname={db}")
    }
}

async fn admin_client(admin_url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(admin_url, NoTls)
        .await
        .expect("connect to TA_FEED_TEST_DATABASE_URL");
    tokio::spawn(conn);
    client
}

impl TestDb {
    /// Creates `ta_feed_it_<name>_<pid>` (dropping a leftover of the same name first).
    pub async fn create(name: &str) -> Option<TestDb> {
        let admin_url = admin_url()?;
        let db = format!("ta_feed_it_{name}_{}", std::process::id());
        let c = admin_client(&admin_url).await;
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .await
            .unwrap();
        c.batch_execute(&format!("CREATE DATABASE {db}"))
            .await
            .unwrap();
        Some(TestDb {
            url: with_dbname(&admin_url, &db),
            name: db,
            admin_url,
        })
    }

    /// Creates the database and applies the schema with `ta-feed migrate`'s code.
    /// `TA_FEED_TEST_MIGRATIONS=N` applies only the first N embedded files (for when later
    /// files depend on an extension build that is not installed yet).
    pub async fn migrated(name: &str) -> Option<TestDb> {
        let db = Self::create(name).await?;
        ta_feed::migrate::migrate_files(&db.url, migrations_under_test())
            .await
            .unwrap_or_else(|e| {
                panic!("migrate failed: {e} ({:?})", std::error::Error::source(&e))
            });
        Some(db)
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        admin_client(&self.url).await
    }

    /// Drops the database.
    pub async fn cleanup(self) {
        let c = admin_client(&self.admin_url).await;
        let _ = c
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await;
    }
}

/// The embedded migrations, or only the first `TA_FEED_TEST_MIGRATIONS` of them.
pub fn migrations_under_test() -> &'static [(&'static str, &'static str)] {
    let all = ta_feed::migrate::migrations();
    let n = std::env::var("TA_FEED_TEST_MIGRATIONS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(all.len())
        .min(all.len());
    &all[..n]
}
