//! `ta-feed migrate`: applies the embedded `sql/*.sql` files (file-name order) in one
//! transaction under `pg_advisory_xact_lock`. Every file is idempotent, so running it again
//! is harmless.

use tracing::info;

use crate::constants::MIGRATE_LOCK_KEY;
use crate::sink::copy::connect;
use crate::sink::SinkError;

include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

/// Migration failures.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("database: {0}")]
    Connect(#[from] SinkError),
    #[error("applying {file}: {source}")]
    Apply {
        file: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("{during}: {source}")]
    Db {
        during: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
}

impl MigrateError {
    pub fn is_retryable(&self) -> bool {
        match self {
            MigrateError::Connect(e) => e.is_retryable(),
            MigrateError::Apply { source, .. } | MigrateError::Db { source, .. } => {
                crate::db::is_retryable_pg(source)
            }
        }
    }
}

/// The embedded files, in order.
pub fn migrations() -> &'static [(&'static str, &'static str)] {
    MIGRATIONS
}

/// Applies every embedded file; returns the names applied, in order.
pub async fn migrate(database_url: &str) -> Result<Vec<&'static str>, MigrateError> {
    migrate_files(database_url, MIGRATIONS).await
}

/// Applies `files` (name, SQL) in order in one transaction under the advisory lock.
pub async fn migrate_files(
    database_url: &str,
    files: &'static [(&'static str, &'static str)],
) -> Result<Vec<&'static str>, MigrateError> {
    let (mut client, conn) = connect(database_url).await?;
    let result = async {
        let tx = client
            .transaction()
            .await
            .map_err(|source| MigrateError::Db {
                during: "begin",
                source,
            })?;
        // the files are idempotent: their "already exists, skipping" notices are noise
        tx.batch_execute("SET LOCAL client_min_messages = warning")
            .await
            .map_err(|source| MigrateError::Db {
                during: "set client_min_messages",
                source,
            })?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK_KEY])
            .await
            .map_err(|source| MigrateError::Db {
                during: "pg_advisory_xact_lock",
                source,
            })?;
        let mut applied = Vec::new();
        for (file, sql) in files {
            tx.batch_execute(sql)
                .await
                .map_err(|source| MigrateError::Apply { file, source })?;
            info!(file, bytes = sql.len(), "applied");
            applied.push(*file);
        }
        tx.commit().await.map_err(|source| MigrateError::Db {
            during: "commit",
            source,
        })?;
        Ok(applied)
    }
    .await;
    drop(client);
    conn.abort();
    result
}

#[cfg(test)]
mod tests {
    #[test]
    fn embedded_in_file_name_order() {
        let names: Vec<&str> = super::migrations().iter().map(|(n, _)| *n).collect();
        assert!(
            names.contains(&"001_schema.sql") && names.contains(&"002_candles.sql"),
            "{names:?}"
        );
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert!(super::migrations()
            .iter()
            .all(|(_, sql)| !sql.trim().is_empty()));
    }
}
