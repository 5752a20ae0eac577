//! Health endpoints of `ta-feed stream` and `ta-feed notify` (`--health-addr ADDR`), on one
//! listener: `GET /health`, `/ready`, `/live` and `/metrics` (Prometheus text from the
//! process-wide `metrics` recorder).
//!
//! The running subcommand reports into a shared [`HealthState`] with one-line calls. For
//! `stream` (`StreamConfig::health`):
//! ```text
//! cfg.health.set_db_connected(true);            // after a (re)connect; false on loss
//! cfg.health.set_connections(up, total);        // WebSocket connections open / expected
//! cfg.health.add_candles_written(rows);         // after each committed batch
//! cfg.health.set_last_closed_open_time(k.open_time);
//! cfg.health.observe_exchange_time(event_time); // a message's E, or /api/v3/time
//! ```
//! `notify` calls `set_db_connected` and `set_notify`. A value never reported is `null` in
//! `/health` and is not used for the status.
//!
//! # `/health`
//! JSON, HTTP 200 when healthy or degraded, 503 when unhealthy:
//! ```json
//! {"status": "degraded", "reasons": ["database not connected for 12 s"], "component": "stream",
//!  "uptime_seconds": 3600, "database_connected": false, "connections_up": 2,
//!  "connections_total": 2, "candles_written": 28800, "last_closed_open_time":
//!  "2026-05-01T12:00:00Z", "lag_seconds": 2.4, "rss_mb": 41.2}
//! ```
//! `notify` adds `pending_deliveries`, `oldest_pending_seconds`, `sinks_total` and
//! `unhealthy_sinks` (names). `lag_seconds` is how far the close of the last closed candle
//! (`last_closed_open_time` + 60 s) is behind exchange time (the last exchange time observed,
//! advanced by the local clock since); about 2 s when all is well.
//!
//! # Thresholds
//! | component | degraded when | unhealthy when |
//! |---|---|---|
//! | both | the database is not connected | the database has not been connected for ≥ 300 s |
//! | stream | some (not all) stream connections are down; lag ≥ 180 s | every stream connection has been down for ≥ 120 s; lag ≥ 900 s |
//! | notify | a sink is unhealthy (`market.alert_sink_status`); the oldest pending delivery is ≥ 300 s old | every sink is unhealthy |
//! | stream | a TimescaleDB job pg_ta relies on is failing or its work is overdue (one reason per job: [`crate::timescaledb`]) | — |
//!
//! # `/ready` and `/live`
//! `/ready` is 200 when the subcommand can do its work now: the database is connected and (stream)
//! at least one stream connection is up, or (notify) the sinks were loaded; 503 with the reason
//! otherwise. `/live` is 200 whenever the process answers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// Database not connected for this long: unhealthy.
pub const DB_DOWN_UNHEALTHY: Duration = Duration::from_secs(300);
/// Lag at or above this: degraded.
pub const LAG_DEGRADED: Duration = Duration::from_secs(180);
/// Lag at or above this: unhealthy.
pub const LAG_UNHEALTHY: Duration = Duration::from_secs(900);
/// Every stream connection down for this long: unhealthy.
pub const CONNECTIONS_DOWN_UNHEALTHY: Duration = Duration::from_secs(120);
/// Oldest pending delivery at least this old: degraded.
pub const PENDING_AGE_DEGRADED: Duration = Duration::from_secs(300);

/// Which subcommand reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Component {
    Stream,
    Notify,
}

/// Overall status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Healthy,
    Degraded,
    Unhealthy,
}

/// What `notify` reports (refreshed with every sink pass).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NotifyHealth {
    /// Sinks loaded from `market.alert_sinks` at least once.
    pub sinks_loaded: bool,
    pub sinks_total: usize,
    pub unhealthy_sinks: Vec<String>,
    pub pending_deliveries: i64,
    pub oldest_pending: Option<Duration>,
}

const UNKNOWN: i64 = i64::MIN;
const DB_UNKNOWN: u8 = 0;
const DB_UP: u8 = 1;
const DB_DOWN: u8 = 2;

/// Shared health state; cheap to update from any task.
#[derive(Debug)]
pub struct HealthState {
    component: Component,
    started: Instant,
    db: AtomicU8,
    /// ms since `started` when the database went down
    db_down_since: AtomicU64,
    connections_up: AtomicI64,
    connections_total: AtomicI64,
    /// ms since `started` when the last connection went down (all down)
    connections_down_since: AtomicU64,
    candles_written: AtomicU64,
    last_closed_open_time_ms: AtomicI64,
    exchange_time_ms: AtomicI64,
    /// ms since `started` when exchange_time_ms was observed
    exchange_observed_at: AtomicU64,
    notify: Mutex<Option<NotifyHealth>>,
    /// Reasons from the TimescaleDB job watcher (stream; empty: all jobs fine).
    timescaledb: Mutex<Vec<String>>,
}

/// The `/health` document.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HealthReport {
    pub status: Status,
    pub reasons: Vec<String>,
    pub component: Component,
    pub uptime_seconds: u64,
    pub database_connected: Option<bool>,
    pub connections_up: Option<i64>,
    pub connections_total: Option<i64>,
    pub candles_written: u64,
    pub last_closed_open_time: Option<String>,
    pub lag_seconds: Option<f64>,
    pub rss_mb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_deliveries: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_pending_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sinks_total: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unhealthy_sinks: Option<Vec<String>>,
    #[serde(skip)]
    pub ready: Result<(), String>,
}

impl HealthState {
    pub fn new(component: Component) -> Arc<HealthState> {
        Arc::new(HealthState {
            component,
            started: Instant::now(),
            db: AtomicU8::new(DB_UNKNOWN),
            db_down_since: AtomicU64::new(0),
            connections_up: AtomicI64::new(UNKNOWN),
            connections_total: AtomicI64::new(UNKNOWN),
            connections_down_since: AtomicU64::new(0),
            candles_written: AtomicU64::new(0),
            last_closed_open_time_ms: AtomicI64::new(UNKNOWN),
            exchange_time_ms: AtomicI64::new(UNKNOWN),
            exchange_observed_at: AtomicU64::new(0),
            notify: Mutex::new(None),
            timescaledb: Mutex::new(Vec::new()),
        })
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn component(&self) -> Component {
        self.component
    }

    /// The database connection is up (`true`) or lost (`false`).
    pub fn set_db_connected(&self, connected: bool) {
        let new = if connected { DB_UP } else { DB_DOWN };
        let old = self.db.swap(new, Ordering::AcqRel);
        if new == DB_DOWN && old != DB_DOWN {
            self.db_down_since.store(self.now_ms(), Ordering::Release);
        }
    }

    /// `up` of `total` stream connections are open.
    pub fn set_connections(&self, up: usize, total: usize) {
        let old = self.connections_up.swap(up as i64, Ordering::AcqRel);
        self.connections_total
            .store(total as i64, Ordering::Release);
        if up == 0 && old != 0 {
            self.connections_down_since
                .store(self.now_ms(), Ordering::Release);
        }
    }

    /// `n` more candles were written to the database.
    pub fn add_candles_written(&self, n: u64) {
        self.candles_written.fetch_add(n, Ordering::Relaxed);
    }

    /// A closed candle with this open_time was written (the newest one is kept).
    pub fn set_last_closed_open_time(&self, open_time: DateTime<Utc>) {
        self.last_closed_open_time_ms
            .fetch_max(open_time.timestamp_millis(), Ordering::AcqRel);
    }

    /// The exchange's clock read `t` now (event time of a message, `/time` answer).
    pub fn observe_exchange_time(&self, t: DateTime<Utc>) {
        self.exchange_time_ms
            .store(t.timestamp_millis(), Ordering::Release);
        self.exchange_observed_at
            .store(self.now_ms(), Ordering::Release);
    }

    /// `notify`'s sink and queue figures.
    pub fn set_notify(&self, n: NotifyHealth) {
        *self.notify.lock().unwrap_or_else(|p| p.into_inner()) = Some(n);
    }

    /// The TimescaleDB jobs in trouble (`crate::timescaledb`): each reason makes `/health`
    /// degraded; an empty list clears them.
    pub fn set_timescaledb_reasons(&self, reasons: Vec<String>) {
        *self.timescaledb.lock().unwrap_or_else(|p| p.into_inner()) = reasons;
    }

    /// The current report (status and reasons per the module's thresholds).
    pub fn report(&self) -> HealthReport {
        let now = self.now_ms();
        let mut degraded = Vec::new();
        let mut unhealthy = Vec::new();
        let db = match self.db.load(Ordering::Acquire) {
            DB_UP => Some(true),
            DB_DOWN => Some(false),
            _ => None,
        };
        if db == Some(false) {
            let down = Duration::from_millis(
                now.saturating_sub(self.db_down_since.load(Ordering::Acquire)),
            );
            let msg = format!("database not connected for {} s", down.as_secs());
            if down >= DB_DOWN_UNHEALTHY {
                unhealthy.push(msg);
            } else {
                degraded.push(msg);
            }
        }
        let up = self.connections_up.load(Ordering::Acquire);
        let total = self.connections_total.load(Ordering::Acquire);
        let (up, total) = if up == UNKNOWN {
            (None, None)
        } else {
            (Some(up), Some(total))
        };
        if let (Some(u), Some(t)) = (up, total) {
            if u == 0 && t > 0 {
                let down = Duration::from_millis(
                    now.saturating_sub(self.connections_down_since.load(Ordering::Acquire)),
                );
                let msg = format!(
                    "no stream connection up ({t} expected) for {} s",
                    down.as_secs()
                );
                if down >= CONNECTIONS_DOWN_UNHEALTHY {
                    unhealthy.push(msg);
                } else {
                    degraded.push(msg);
                }
            } else if u < t {
                degraded.push(format!("{} of {t} stream connections down", t - u));
            }
        }
        let last = self.last_closed_open_time_ms.load(Ordering::Acquire);
        let exchange = self.exchange_time_ms.load(Ordering::Acquire);
        let lag = (last != UNKNOWN && exchange != UNKNOWN).then(|| {
            let since = now.saturating_sub(self.exchange_observed_at.load(Ordering::Acquire));
            let exchange_now = exchange + since as i64;
            ((exchange_now - (last + crate::constants::MINUTE_MS)) as f64 / 1000.0).max(0.0)
        });
        if let Some(l) = lag {
            let msg = format!("last closed candle {l:.0} s behind exchange time");
            if l >= LAG_UNHEALTHY.as_secs_f64() {
                unhealthy.push(msg);
            } else if l >= LAG_DEGRADED.as_secs_f64() {
                degraded.push(msg);
            }
        }
        let notify = self
            .notify
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(n) = &notify {
            if !n.unhealthy_sinks.is_empty() {
                let msg = format!("unhealthy sinks: {}", n.unhealthy_sinks.join(", "));
                if n.unhealthy_sinks.len() >= n.sinks_total && n.sinks_total > 0 {
                    unhealthy.push(msg);
                } else {
                    degraded.push(msg);
                }
            }
            if let Some(age) = n.oldest_pending.filter(|a| *a >= PENDING_AGE_DEGRADED) {
                degraded.push(format!(
                    "oldest pending delivery is {} s old",
                    age.as_secs()
                ));
            }
        }
        degraded.extend(
            self.timescaledb
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned(),
        );
        let status = if !unhealthy.is_empty() {
            Status::Unhealthy
        } else if !degraded.is_empty() {
            Status::Degraded
        } else {
            Status::Healthy
        };
        let ready = if db == Some(false) {
            Err("database not connected".to_string())
        } else if self.component == Component::Stream && up == Some(0) {
            Err("no stream connection up".to_string())
        } else if self.component == Component::Notify
            && !notify.as_ref().is_some_and(|n| n.sinks_loaded)
        {
            Err("sinks not loaded yet".to_string())
        } else {
            Ok(())
        };
        let mut reasons = unhealthy;
        reasons.extend(degraded);
        HealthReport {
            status,
            reasons,
            component: self.component,
            uptime_seconds: self.started.elapsed().as_secs(),
            database_connected: db,
            connections_up: up,
            connections_total: total,
            candles_written: self.candles_written.load(Ordering::Relaxed),
            last_closed_open_time: (last != UNKNOWN)
                .then(|| DateTime::<Utc>::from_timestamp_millis(last))
                .flatten()
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            lag_seconds: lag,
            rss_mb: rss_mb(),
            pending_deliveries: notify.as_ref().map(|n| n.pending_deliveries),
            oldest_pending_seconds: notify
                .as_ref()
                .map(|n| n.oldest_pending.map(|d| d.as_secs_f64()).unwrap_or(0.0)),
            sinks_total: notify.as_ref().map(|n| n.sinks_total),
            unhealthy_sinks: notify.map(|n| n.unhealthy_sinks),
            ready,
        }
    }
}

/// Resident set size of this process in MiB (Linux `/proc/self/status`), None elsewhere.
pub fn rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((kb / 1024.0 * 10.0).round() / 10.0)
}

/// The process-wide Prometheus recorder (installed on first use; `None` if another recorder
/// was installed first).
pub fn prometheus() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(h) => {
                let upkeep = h.clone();
                // histograms and summaries need periodic upkeep without the exporter's listener
                std::thread::Builder::new()
                    .name("metrics-upkeep".into())
                    .spawn(move || loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    })
                    .ok();
                Some(h)
            }
            Err(e) => {
                warn!(error = %e, "metrics recorder not installed; /metrics is empty");
                None
            }
        })
        .clone()
}

#[derive(Clone)]
struct AppState {
    health: Arc<HealthState>,
    metrics: Option<PrometheusHandle>,
}

/// The router of the health endpoints (for embedding or tests).
pub fn router(health: Arc<HealthState>) -> Router {
    let state = AppState {
        health,
        metrics: prometheus(),
    };
    Router::new()
        .route("/health", get(health_handler))
        .route("/ready", get(ready_handler))
        .route("/live", get(|| async { (StatusCode::OK, "live\n") }))
        .route("/metrics", get(metrics_handler))
        .with_state(state)
}

async fn health_handler(State(s): State<AppState>) -> Response {
    let report = s.health.report();
    let code = if report.status == Status::Unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(report)).into_response()
}

async fn ready_handler(State(s): State<AppState>) -> Response {
    match s.health.report().ready {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        )
            .into_response(),
    }
}

async fn metrics_handler(State(s): State<AppState>) -> Response {
    let body = s.metrics.as_ref().map(|h| h.render()).unwrap_or_default();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        body,
    )
        .into_response()
}

/// Binds `addr` and serves the endpoints until the process ends; returns the bound address
/// (port 0 picks one) and the server task.
pub async fn serve(
    addr: SocketAddr,
    health: Arc<HealthState>,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = router(health);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!(error = %e, "health server stopped");
        }
    });
    info!(addr = %local, "health endpoints at /health /ready /live /metrics");
    Ok((local, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_values_do_not_count() {
        let h = HealthState::new(Component::Stream);
        let r = h.report();
        assert_eq!(r.status, Status::Healthy, "{r:?}");
        assert_eq!(r.database_connected, None);
        assert_eq!(r.lag_seconds, None);
        assert!(r.ready.is_ok());
        let json = serde_json::to_value(&r).unwrap();
        assert!(json.get("pending_deliveries").is_none(), "{json}");
        assert_eq!(json["status"], "healthy");
    }

    #[test]
    fn database_and_connections() {
        let h = HealthState::new(Component::Stream);
        h.set_db_connected(true);
        h.set_connections(2, 2);
        assert_eq!(h.report().status, Status::Healthy);
        // TC1: database down -> degraded, not ready
        h.set_db_connected(false);
        let r = h.report();
        assert_eq!(r.status, Status::Degraded);
        assert!(r.reasons[0].starts_with("database not connected"), "{r:?}");
        assert!(r.ready.is_err());
        // TC2: down for longer than the threshold -> unhealthy
        h.db_down_since.store(0, Ordering::Release);
        let h2 = HealthState {
            started: Instant::now() - DB_DOWN_UNHEALTHY - Duration::from_secs(1),
            ..Arc::try_unwrap(HealthState::new(Component::Stream)).unwrap()
        };
        h2.set_db_connected(false);
        h2.db_down_since.store(0, Ordering::Release);
        assert_eq!(h2.report().status, Status::Unhealthy);
        // TC3: back up -> healthy; one of two connections down -> degraded
        h.set_db_connected(true);
        h.set_connections(1, 2);
        let r = h.report();
        assert_eq!(r.status, Status::Degraded);
        assert_eq!(r.reasons, vec!["1 of 2 stream connections down"]);
        h.set_connections(0, 2);
        assert!(h.report().ready.is_err());
    }

    #[test]
    fn lag_thresholds() {
        let h = HealthState::new(Component::Stream);
        let t0 = DateTime::<Utc>::from_timestamp_millis(1_700_000_000_000).unwrap();
        h.set_last_closed_open_time(t0);
        // older candles never move it back
        h.set_last_closed_open_time(t0 - chrono::Duration::minutes(5));
        h.observe_exchange_time(t0 + chrono::Duration::seconds(62));
        let r = h.report();
        assert!((r.lag_seconds.unwrap() - 2.0).abs() < 0.5, "{r:?}");
        assert_eq!(r.status, Status::Healthy);
        assert_eq!(
            r.last_closed_open_time.as_deref(),
            Some("2023-11-14T22:13:20.000Z")
        );
        h.observe_exchange_time(t0 + chrono::Duration::seconds(60 + 200));
        assert_eq!(h.report().status, Status::Degraded);
        h.observe_exchange_time(t0 + chrono::Duration::seconds(60 + 1000));
        assert_eq!(h.report().status, Status::Unhealthy);
    }

    #[test]
    fn timescaledb_jobs_degrade() {
        let h = HealthState::new(Component::Stream);
        h.set_db_connected(true);
        h.set_timescaledb_reasons(vec!["TimescaleDB job 1000 (...) is failing".into()]);
        let r = h.report();
        assert_eq!(r.status, Status::Degraded);
        assert_eq!(r.reasons, vec!["TimescaleDB job 1000 (...) is failing"]);
        assert!(r.ready.is_ok(), "a failing job does not stop the feed");
        h.set_timescaledb_reasons(Vec::new());
        assert_eq!(h.report().status, Status::Healthy);
    }

    #[test]
    fn notify_sinks() {
        let h = HealthState::new(Component::Notify);
        h.set_db_connected(true);
        assert!(h.report().ready.is_err(), "sinks not loaded yet");
        h.set_notify(NotifyHealth {
            sinks_loaded: true,
            sinks_total: 2,
            unhealthy_sinks: vec!["discord-main".into()],
            pending_deliveries: 7,
            oldest_pending: Some(Duration::from_secs(3)),
        });
        let r = h.report();
        assert_eq!(r.status, Status::Degraded);
        assert!(r.ready.is_ok());
        assert_eq!(r.pending_deliveries, Some(7));
        h.set_notify(NotifyHealth {
            sinks_loaded: true,
            sinks_total: 1,
            unhealthy_sinks: vec!["discord-main".into()],
            pending_deliveries: 7,
            oldest_pending: None,
        });
        assert_eq!(h.report().status, Status::Unhealthy);
    }
}
