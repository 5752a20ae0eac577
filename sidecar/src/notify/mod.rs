//! `ta-feed notify`: delivers alerts from the durable outbox `market.alert_deliveries` to the
//! sinks of `market.alert_sinks` (Discord, Telegram, webhooks).
//!
//! # How
//! - The rule evaluator writes one `alert_deliveries` row per (alert, matching sink) in the
//!   alert's own transaction (`market._enqueue_deliveries`), so the queue exists exactly when
//!   the alert does, whether or not a notifier is running.
//! - One worker per enabled sink (at most `market.settings.max_enabled_sinks`, default 20),
//!   all sharing one bounded pool of `--db-pool-size` database connections (default 4; the
//!   notifier opens one more to LISTEN and read the sinks, so it never uses more than
//!   pool + 1 connections however many sinks there are). A worker holds a connection only
//!   for one step, the send included; with more sinks sending at once than connections, they
//!   take turns (a send lasts at most `--send-timeout-ms`). A worker repeats: `BEGIN`; claim
//!   the sink's oldest pending
//!   delivery (`ORDER BY alert_id LIMIT 1 FOR UPDATE SKIP LOCKED`, joined to
//!   `market.alert_history` for the payload — the only source of alert content); send it;
//!   record the outcome; `COMMIT`. Several notifier processes may run: `SKIP LOCKED` gives each
//!   row to one of them. Sinks are re-read every `--sinks-refresh-ms`; the claim also checks
//!   the sink's row, so a worker never sends with a target that was changed or disabled.
//! - Woken by `LISTEN ta_alerts` — a wake-up only: a notification's payload is never used (it
//!   is checked against `alert_history`, and a forged one is logged and counted as
//!   `ta_feed_forged_notifications_total`) — and by polling every `--poll-interval-ms` as a
//!   fallback (a lost connection, NOTIFYs missed while reconnecting).
//! - Outcomes: 2xx → `delivered_at`. Retryable (network errors, timeouts, 5xx) → `attempts`,
//!   `last_error`, `next_attempt_at` = now + back-off: `--retry-initial-ms` doubling per
//!   consecutive failure up to `--retry-max-ms`, with jitter (a uniform draw in
//!   [delay/2, delay]). 429 → the same back-off over consecutive 429s (not a failure). A
//!   server's `Retry-After` / `retry_after` can lengthen the wait, never shorten it
//!   ([`NotifyConfig::next_delay`]: `Retry-After: 0` does not make a tight loop). After
//!   `--unhealthy-after` consecutive failures the sink is marked unhealthy in
//!   `market.alert_sink_status` and retried every `--unhealthy-retry-ms`, whatever the server
//!   says; the next success makes it healthy. Permanent errors (4xx other than 429, an
//!   invalid target, a webhook host on a refused address: [`net`]) → `failed_at` +
//!   `last_error` and an ERROR log line; the sink goes on with its next alert.
//!   `market.retry_alert_deliveries(sink)` queues failed rows again.
//! - `last_error` and the log hold the HTTP status and, for Discord and Telegram only, their
//!   API's message on one line of at most 200 characters (control characters removed);
//!   never a webhook's answer; at most 64 KiB of any answer is read. Secrets are masked.
//! - An alert deleted by retention before it was sent → `failed_at` with that reason.
//!   `market.prune_alert_deliveries()` runs every `--prune-interval-secs`.
//!
//! # Guarantee
//! At least once per matching sink, oldest first per sink. A delivery is recorded in the same
//! transaction that holds its row lock, so a notifier that dies (`kill -9`, power loss) between
//! the sink's answer and the `COMMIT` re-sends that alert after restart: **at most one
//! duplicate per sink per crash** (one send is in flight per sink). A sink that accepted a
//! request but answered after `--send-timeout-ms` is also sent it again. Receivers that must not
//! show duplicates dedupe on `alert_id` (in the payload and the webhook `X-Alert-Id` header).

pub mod format;
pub mod net;
pub mod sink;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::Client;
use tracing::{debug, error, info, warn};
use url::Url;

use crate::backoff::Backoff;
use crate::db::{redact_database_url, DbError, DbPool, PooledClient};
use crate::health::{HealthState, NotifyHealth};
use crate::listen::{quote_ident, report_forged, verify_notification, Verdict};
use crate::shutdown::Shutdown;

pub use net::{HttpClients, NetworkPolicy, TargetRefused};
pub use sink::{Endpoints, ErrorClass, SendError, Sink, SinkRow};

/// Default Discord API base (`{base}/webhooks/{id}/{token}`).
pub const DEFAULT_DISCORD_API_URL: &str = "https://discord.com/api";
/// Default Telegram Bot API base (`{base}/bot{token}/sendMessage`).
pub const DEFAULT_TELEGRAM_API_URL: &str = "https://api.telegram.org";

/// Metric names.
pub mod metric {
    pub const DELIVERIES: &str = "ta_feed_notify_deliveries_total";
    pub const PENDING: &str = "ta_feed_notify_pending_deliveries";
    pub const UNHEALTHY_SINKS: &str = "ta_feed_notify_unhealthy_sinks";
}

/// Settings of `ta-feed notify` (flags in `config::NotifyArgs`).
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    pub database_url: String,
    pub channel: String,
    pub endpoints: Endpoints,
    pub poll_interval: Duration,
    pub sinks_refresh: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub unhealthy_after: u32,
    pub unhealthy_retry: Duration,
    pub send_timeout: Duration,
    pub prune_interval: Duration,
    pub db_retry_initial: Duration,
    pub db_retry_max: Duration,
    /// Which addresses webhooks may reach ([`net`]).
    pub network: NetworkPolicy,
    /// Database connections shared by every sink worker (the notifier uses one more, to
    /// LISTEN and read the sinks).
    pub db_pool_size: usize,
}

/// Default of `--db-pool-size`.
pub const DEFAULT_DB_POOL_SIZE: usize = 4;

impl NotifyConfig {
    /// The defaults of the command line.
    pub fn new(database_url: &str) -> NotifyConfig {
        NotifyConfig {
            database_url: database_url.to_string(),
            channel: crate::constants::ALERT_CHANNEL.to_string(),
            endpoints: Endpoints {
                discord_api: Url::parse(DEFAULT_DISCORD_API_URL).expect("valid default"),
                telegram_api: Url::parse(DEFAULT_TELEGRAM_API_URL).expect("valid default"),
            },
            poll_interval: Duration::from_secs(5),
            sinks_refresh: Duration::from_secs(10),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            unhealthy_after: 5,
            unhealthy_retry: Duration::from_secs(300),
            send_timeout: Duration::from_secs(10),
            prune_interval: Duration::from_secs(600),
            db_retry_initial: Duration::from_millis(500),
            db_retry_max: Duration::from_secs(30),
            network: NetworkPolicy::default(),
            db_pool_size: DEFAULT_DB_POOL_SIZE,
        }
    }

    /// The delay before retry number `failures` (1 = after the first failure), with jitter.
    pub fn retry_delay(&self, failures: u32) -> Duration {
        let full = if failures >= self.unhealthy_after {
            self.unhealthy_retry
        } else {
            let exp = failures.saturating_sub(1).min(30);
            self.retry_initial
                .saturating_mul(1u32 << exp)
                .min(self.retry_max)
        };
        let lo = full.as_secs_f64() / 2.0;
        let hi = full.as_secs_f64();
        if hi <= lo {
            return full;
        }
        Duration::from_secs_f64(rand::random_range(lo..=hi))
    }

    /// The wait before the next attempt after a failed send. Our own back-off is a floor that
    /// a server cannot lower: `Retry-After: 0` (or a 429's `retry_after: 0`) waits as long as
    /// the back-off says; a longer server delay (capped at [`sink::MAX_RETRY_AFTER`]) wins.
    ///
    /// # Input   `failures`: consecutive failed sends, this one included when it counts (not
    ///   for 429); `rate_limited`: consecutive 429 answers, this one included;
    ///   `server`: the server's Retry-After / retry_after.
    /// # Output  ≥ [`NotifyConfig::retry_delay`]`(rate_limited)` for a 429 of a healthy sink,
    ///   ≥ `retry_delay(failures)` otherwise — for an unhealthy sink (failures ≥
    ///   unhealthy_after) that is the `--unhealthy-retry-ms` delay (with jitter ≥
    ///   half of it), whatever the server asked.
    pub fn next_delay(
        &self,
        class: &ErrorClass,
        failures: u32,
        rate_limited: u32,
        server: Option<Duration>,
    ) -> Duration {
        let own = match class {
            ErrorClass::RateLimited { .. } if failures < self.unhealthy_after => {
                self.retry_delay(rate_limited.max(1))
            }
            _ => self.retry_delay(failures.max(1)),
        };
        own.max(server.unwrap_or_default().min(sink::MAX_RETRY_AFTER))
    }
}

/// Failures that stop `notify`.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("{0}")]
    Connect(#[from] DbError),
    #[error("HTTP client: {0}")]
    Http(String),
}

/// Counts of one run (also in the metrics).
#[derive(Debug, Default)]
pub struct NotifyCounters {
    pub delivered: AtomicU64,
    pub retried: AtomicU64,
    pub failed: AtomicU64,
    pub forged: AtomicU64,
}

/// What `run_notify` returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotifySummary {
    pub delivered: u64,
    pub retried: u64,
    pub failed: u64,
    pub forged: u64,
}

impl NotifyCounters {
    fn summary(&self) -> NotifySummary {
        NotifySummary {
            delivered: self.delivered.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            forged: self.forged.load(Ordering::Relaxed),
        }
    }
}

struct Ctx {
    cfg: NotifyConfig,
    http: HttpClients,
    /// Every sink worker's database connections (bounded: `--db-pool-size`).
    pool: DbPool,
    counters: Arc<NotifyCounters>,
}

struct Worker {
    row: SinkRow,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

const SINKS_SQL: &str = "SELECT sink_id, name, kind, target, chat_id, signing_secret \
                           FROM market.alert_sinks WHERE enabled ORDER BY sink_id";

const QUEUE_SQL: &str = "SELECT count(*), EXTRACT(epoch FROM now() - min(d.created_at))::float8 \
                           FROM market.alert_deliveries d \
                           JOIN market.alert_sinks s ON s.sink_id = d.sink_id AND s.enabled \
                          WHERE d.delivered_at IS NULL AND d.failed_at IS NULL";

const UNHEALTHY_SQL: &str = "SELECT s.name FROM market.alert_sink_status st \
                               JOIN market.alert_sinks s ON s.sink_id = st.sink_id AND s.enabled \
                              WHERE NOT st.healthy ORDER BY s.name";

const CLAIM_SQL: &str = "SELECT d.alert_id, d.attempts, \
                                EXTRACT(epoch FROM d.next_attempt_at - now())::float8, \
                                h.payload::text, \
                                (s.enabled AND s.kind = $2 AND s.target = $3 \
                                 AND s.chat_id IS NOT DISTINCT FROM $4 \
                                 AND s.signing_secret IS NOT DISTINCT FROM $5) \
                           FROM market.alert_deliveries d \
                           JOIN market.alert_sinks s ON s.sink_id = d.sink_id \
                           LEFT JOIN market.alert_history h ON h.alert_id = d.alert_id \
                          WHERE d.sink_id = $1 AND d.delivered_at IS NULL AND d.failed_at IS NULL \
                          ORDER BY d.alert_id \
                          LIMIT 1 \
                            FOR UPDATE OF d SKIP LOCKED";

const DELIVERED_SQL: &str = "UPDATE market.alert_deliveries \
                                SET delivered_at = now(), attempts = attempts + 1 \
                              WHERE alert_id = $1 AND sink_id = $2";

const RETRY_SQL: &str = "UPDATE market.alert_deliveries \
                            SET attempts = attempts + 1, last_error = $3, \
                                next_attempt_at = now() + make_interval(secs => $4) \
                          WHERE alert_id = $1 AND sink_id = $2";

const FAILED_SQL: &str = "UPDATE market.alert_deliveries \
                             SET attempts = attempts + $4, last_error = $3, failed_at = now() \
                           WHERE alert_id = $1 AND sink_id = $2";

const STATUS_SQL: &str = "INSERT INTO market.alert_sink_status AS s \
            (sink_id, healthy, consecutive_failures, last_success_at, last_failure_at, last_error, updated_at) \
     VALUES ($1, $2, $3, CASE WHEN $4 THEN now() END, CASE WHEN NOT $4 THEN now() END, $5, now()) \
     ON CONFLICT (sink_id) DO UPDATE \
        SET healthy = EXCLUDED.healthy, consecutive_failures = EXCLUDED.consecutive_failures, \
            last_success_at = COALESCE(EXCLUDED.last_success_at, s.last_success_at), \
            last_failure_at = COALESCE(EXCLUDED.last_failure_at, s.last_failure_at), \
            last_error = COALESCE(EXCLUDED.last_error, s.last_error), updated_at = now()";

/// Runs until `shutdown`; in-flight sends are finished and recorded before it returns.
pub async fn run_notify(
    cfg: NotifyConfig,
    health: Option<Arc<HealthState>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<NotifySummary, NotifyError> {
    let (_trigger, mut shutdown) = Shutdown::from_future(shutdown);
    let http = HttpClients::new(cfg.send_timeout, cfg.network.clone())
        .map_err(|e| NotifyError::Http(e.to_string()))?;
    let pool = DbPool::new(&cfg.database_url, cfg.db_pool_size.max(1))?;
    let counters = Arc::new(NotifyCounters::default());
    let ctx = Arc::new(Ctx {
        cfg: cfg.clone(),
        http,
        pool,
        counters: counters.clone(),
    });
    let (wake_tx, _) = watch::channel(0u64);
    let mut workers: HashMap<i32, Worker> = HashMap::new();
    let mut backoff = Backoff::new(cfg.db_retry_initial, 2.0, cfg.db_retry_max);
    let set_db = |up: bool| {
        if let Some(h) = &health {
            h.set_db_connected(up);
        }
    };
    'connection: loop {
        let connected = tokio::select! {
            r = crate::db::connect_listening(&cfg.database_url) => r,
            _ = shutdown.recv() => break 'connection,
        };
        let (client, mut rx, pump) = match connected {
            Ok(c) => c,
            Err(e) if e.is_retryable() => {
                set_db(false);
                let delay = backoff.next_delay();
                warn!(error = %e, ?delay, "notify: cannot connect, retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => continue,
                    _ = shutdown.recv() => break 'connection,
                }
            }
            Err(e) => {
                stop_workers(&mut workers).await;
                return Err(e.into());
            }
        };
        if let Err(e) = client
            .batch_execute(&format!("LISTEN {}", quote_ident(&cfg.channel)))
            .await
        {
            pump.abort();
            set_db(false);
            let delay = backoff.next_delay();
            warn!(error = %e, ?delay, "notify: LISTEN failed, retrying");
            tokio::select! {
                _ = tokio::time::sleep(delay) => continue,
                _ = shutdown.recv() => break 'connection,
            }
        }
        set_db(true);
        info!(channel = %cfg.channel, database = %redact_database_url(&cfg.database_url), "notify: listening");
        let mut refresh = tokio::time::interval(cfg.sinks_refresh);
        let mut prune = tokio::time::interval(cfg.prune_interval);
        prune.tick().await; // the first prune after one interval
        loop {
            tokio::select! {
                _ = shutdown.recv() => {
                    pump.abort();
                    break 'connection;
                }
                msg = rx.recv() => match msg {
                    Some(Ok(n)) => {
                        // a wake-up; the payload is checked only to report forgeries
                        wake_tx.send_modify(|v| *v = v.wrapping_add(1));
                        match verify_notification(&client, n.payload()).await {
                            Ok(Verdict::Genuine { key, .. }) => debug!(alert = %key, "notify: alert notification"),
                            Ok(Verdict::Forged(reason)) => {
                                report_forged(&cfg.channel, &reason, n.payload());
                                counters.forged.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                warn!(error = %e, "notify: database error, reconnecting");
                                break;
                            }
                        }
                    }
                    Some(Err(e)) => {
                        warn!(error = %e, "notify: connection lost, reconnecting");
                        break;
                    }
                    None => {
                        warn!("notify: connection closed, reconnecting");
                        break;
                    }
                },
                _ = refresh.tick() => {
                    if let Err(e) = reconcile(&client, &ctx, &mut workers, &wake_tx, health.as_deref()).await {
                        warn!(error = %e, "notify: cannot read sinks, reconnecting");
                        break;
                    }
                    backoff.reset();
                }
                _ = prune.tick() => {
                    match client.query_one("SELECT market.prune_alert_deliveries()", &[]).await {
                        Ok(r) => {
                            let n: i32 = r.get(0);
                            if n > 0 {
                                info!(rows = n, "notify: pruned deliveries of alerts deleted by retention");
                            }
                        }
                        Err(e) => warn!(error = %e, "notify: market.prune_alert_deliveries() failed"),
                    }
                }
            }
        }
        pump.abort();
        drop(client);
        set_db(false);
        let delay = backoff.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.recv() => break 'connection,
        }
    }
    stop_workers(&mut workers).await;
    let summary = counters.summary();
    info!(?summary, "notify stopped");
    Ok(summary)
}

async fn stop_workers(workers: &mut HashMap<i32, Worker>) {
    for w in workers.values() {
        let _ = w.stop.send(true);
    }
    for (_, w) in workers.drain() {
        let _ = w.task.await;
    }
}

/// Starts, restarts (changed row) and stops workers to match the enabled sinks; refreshes
/// the health figures.
async fn reconcile(
    client: &Client,
    ctx: &Arc<Ctx>,
    workers: &mut HashMap<i32, Worker>,
    wake: &watch::Sender<u64>,
    health: Option<&HealthState>,
) -> Result<(), tokio_postgres::Error> {
    let rows: Vec<SinkRow> = client
        .query(SINKS_SQL, &[])
        .await?
        .iter()
        .map(|r| SinkRow {
            sink_id: r.get(0),
            name: r.get(1),
            kind: r.get(2),
            target: r.get(3),
            chat_id: r.get(4),
            signing_secret: r.get(5),
        })
        .collect();
    let wanted: HashMap<i32, &SinkRow> = rows.iter().map(|r| (r.sink_id, r)).collect();
    let stale: Vec<i32> = workers
        .iter()
        .filter(|(id, w)| w.task.is_finished() || wanted.get(id).is_none_or(|r| **r != w.row))
        .map(|(id, _)| *id)
        .collect();
    for id in stale {
        if let Some(w) = workers.remove(&id) {
            info!(sink = %w.row.name, "notify: sink changed or disabled; its worker stops after its current send");
            let _ = w.stop.send(true);
            // the old worker finishes in the background
            drop(w.task);
        }
    }
    let new_rows: Vec<&SinkRow> = rows
        .iter()
        .filter(|r| !workers.contains_key(&r.sink_id))
        .collect();
    for row in new_rows {
        let sink = Arc::new(Sink::new(row.clone(), &ctx.cfg.endpoints));
        match sink.config_error() {
            Some(e) => {
                warn!(sink = %sink.name(), kind = %sink.kind(), error = %e, "notify: sink cannot send; its deliveries will fail")
            }
            None => info!(sink = %sink.name(), kind = %sink.kind(), "notify: sink worker started"),
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(sink_worker(ctx.clone(), sink, wake.subscribe(), stop_rx));
        workers.insert(
            row.sink_id,
            Worker {
                row: row.clone(),
                stop: stop_tx,
                task,
            },
        );
    }
    let q = client.query_one(QUEUE_SQL, &[]).await?;
    let pending: i64 = q.get(0);
    let oldest: Option<f64> = q.get(1);
    let unhealthy: Vec<String> = client
        .query(UNHEALTHY_SQL, &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    metrics::gauge!(metric::PENDING).set(pending as f64);
    metrics::gauge!(metric::UNHEALTHY_SINKS).set(unhealthy.len() as f64);
    if let Some(h) = health {
        h.set_notify(NotifyHealth {
            sinks_loaded: true,
            sinks_total: rows.len(),
            unhealthy_sinks: unhealthy,
            pending_deliveries: pending,
            oldest_pending: oldest
                .filter(|s| s.is_finite() && *s > 0.0)
                .map(Duration::from_secs_f64),
        });
    }
    Ok(())
}

/// What one step of a worker did.
enum Step {
    /// A delivery was recorded (sent, or failed for good): go on at once.
    Done,
    /// The send failed: wait this long before the next attempt.
    Backoff(Duration),
    /// Nothing due: wait for a wake-up, or at most this long (None = the poll interval).
    Idle(Option<Duration>),
    /// The sink's row changed: this worker ends.
    Stale,
}

async fn sink_worker(
    ctx: Arc<Ctx>,
    sink: Arc<Sink>,
    mut wake: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
) {
    let cfg = &ctx.cfg;
    let mut db_backoff = Backoff::new(cfg.db_retry_initial, 2.0, cfg.db_retry_max);
    let mut failures: Option<u32> = None;
    let mut rate_limited = 0u32;
    loop {
        if *stop.borrow() {
            return;
        }
        // a connection of the shared pool, for this step only (claim, send, record)
        let got = tokio::select! {
            c = ctx.pool.get() => c,
            _ = stop.changed() => return,
        };
        let mut c: PooledClient = match got {
            Ok(c) => {
                db_backoff.reset();
                c
            }
            Err(e) => {
                let delay = db_backoff.next_delay();
                warn!(sink = %sink.name(), error = %e, ?delay, "notify: worker cannot connect, retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        if failures.is_none() {
            match c
                .query_opt(
                    "SELECT consecutive_failures FROM market.alert_sink_status WHERE sink_id = $1",
                    &[&sink.row.sink_id],
                )
                .await
            {
                Ok(r) => failures = Some(r.map(|r| r.get::<_, i32>(0).max(0) as u32).unwrap_or(0)),
                Err(e) => {
                    warn!(sink = %sink.name(), error = %e, "notify: worker database error");
                    drop(c);
                    let delay = db_backoff.next_delay();
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => continue,
                        _ = stop.changed() => return,
                    }
                }
            }
        }
        wake.borrow_and_update();
        let step = step(
            &ctx,
            &mut c,
            &sink,
            failures.as_mut().expect("loaded above"),
            &mut rate_limited,
        )
        .await;
        drop(c); // back to the pool before any wait
        match step {
            Ok(Step::Done) => {}
            Ok(Step::Stale) => {
                debug!(sink = %sink.name(), "notify: sink row changed; worker ends");
                return;
            }
            Ok(Step::Backoff(d)) => {
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = stop.changed() => return,
                }
            }
            Ok(Step::Idle(until)) => {
                let d = until.unwrap_or(cfg.poll_interval).min(cfg.poll_interval);
                tokio::select! {
                    _ = wake.changed() => {}
                    _ = tokio::time::sleep(d) => {}
                    _ = stop.changed() => return,
                }
            }
            Err(e) => {
                let delay = db_backoff.next_delay();
                warn!(sink = %sink.name(), error = %e, ?delay, "notify: worker database error, reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }
}

/// Claim, send and record one delivery of `sink` in one transaction.
async fn step(
    ctx: &Ctx,
    client: &mut PooledClient,
    sink: &Sink,
    failures: &mut u32,
    rate_limited: &mut u32,
) -> Result<Step, tokio_postgres::Error> {
    let cfg = &ctx.cfg;
    let sink_id = sink.row.sink_id;
    let tx = client.transaction().await?;
    let r = &sink.row;
    let Some(row) = tx
        .query_opt(
            CLAIM_SQL,
            &[&sink_id, &r.kind, &r.target, &r.chat_id, &r.signing_secret],
        )
        .await?
    else {
        tx.commit().await?;
        return Ok(Step::Idle(None));
    };
    let alert_id: i64 = row.get(0);
    let attempts: i32 = row.get(1);
    let wait: Option<f64> = row.get(2);
    let payload: Option<String> = row.get(3);
    if !row.get::<_, bool>(4) {
        // the sink was changed or disabled since this worker started: never send with a
        // stale target; the supervisor starts a worker with the new row
        tx.commit().await?;
        return Ok(Step::Stale);
    }
    if let Some(w) = wait.filter(|w| *w > 0.0) {
        tx.commit().await?;
        return Ok(Step::Idle(Some(Duration::from_secs_f64(w.min(3600.0)))));
    }
    let Some(payload) = payload else {
        let reason = format!(
            "alert {alert_id} is no longer in market.alert_history (deleted by retention) — not sent"
        );
        tx.execute(FAILED_SQL, &[&alert_id, &sink_id, &reason, &0i32])
            .await?;
        tx.commit().await?;
        warn!(sink = %sink.name(), alert_id, "notify: alert deleted before delivery");
        ctx.counters.failed.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(metric::DELIVERIES, "sink" => sink.name().to_string(), "outcome" => "failed").increment(1);
        return Ok(Step::Done);
    };
    let started = std::time::Instant::now();
    let result = sink.send(&ctx.http, &payload).await;
    match result {
        Ok(()) => {
            tx.execute(DELIVERED_SQL, &[&alert_id, &sink_id]).await?;
            let recovered = *failures > 0;
            *failures = 0;
            *rate_limited = 0;
            tx.execute(
                STATUS_SQL,
                &[&sink_id, &true, &0i32, &true, &None::<String>],
            )
            .await?;
            tx.commit().await?;
            if recovered {
                info!(sink = %sink.name(), alert_id, "notify: sink recovered");
            }
            debug!(sink = %sink.name(), alert_id, attempt = attempts + 1, ms = started.elapsed().as_millis() as u64, "delivered");
            ctx.counters.delivered.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(metric::DELIVERIES, "sink" => sink.name().to_string(), "outcome" => "delivered").increment(1);
            Ok(Step::Done)
        }
        Err(SendError {
            class,
            message,
            remote,
        }) => {
            let attempt = attempts + 1;
            // every remote or error text is one capped line before it is logged or stored
            let message = crate::text::sanitize(&message, 2 * crate::text::REMOTE_TEXT_MAX_CHARS);
            let (delay, permanent) = match class {
                ErrorClass::RateLimited { retry_after } => {
                    *rate_limited = rate_limited.saturating_add(1);
                    (
                        Some(cfg.next_delay(&class, *failures, *rate_limited, Some(retry_after))),
                        false,
                    )
                }
                ErrorClass::Retryable { retry_after } => {
                    *failures = failures.saturating_add(1);
                    *rate_limited = 0;
                    (
                        Some(cfg.next_delay(&class, *failures, *rate_limited, retry_after)),
                        false,
                    )
                }
                ErrorClass::Permanent => {
                    *failures = failures.saturating_add(1);
                    *rate_limited = 0;
                    (None, true)
                }
            };
            let healthy = *failures < cfg.unhealthy_after;
            let error_text = match delay {
                Some(d) if !permanent => format!(
                    "{message} (attempt {attempt}; retry in {:.1} s)",
                    d.as_secs_f64()
                ),
                _ => format!("{message} (attempt {attempt}; permanent, not retried)"),
            };
            if permanent {
                tx.execute(FAILED_SQL, &[&alert_id, &sink_id, &error_text, &1i32])
                    .await?;
            } else {
                let secs = delay.unwrap_or_default().as_secs_f64();
                tx.execute(RETRY_SQL, &[&alert_id, &sink_id, &error_text, &secs])
                    .await?;
            }
            let fail_count = (*failures).min(i32::MAX as u32) as i32;
            tx.execute(
                STATUS_SQL,
                &[
                    &sink_id,
                    &healthy,
                    &fail_count,
                    &false,
                    &Some(error_text.clone()),
                ],
            )
            .await?;
            tx.commit().await?;
            let fields_sink = sink.name();
            if permanent {
                error!(sink = %fields_sink, kind = %sink.kind(), alert_id, attempt, error = %message, api_says = remote.as_deref().unwrap_or(""), "notify: delivery failed permanently");
                ctx.counters.failed.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(metric::DELIVERIES, "sink" => fields_sink.to_string(), "outcome" => "failed").increment(1);
                Ok(Step::Done)
            } else {
                let delay = delay.unwrap_or_default();
                if !healthy && *failures == cfg.unhealthy_after {
                    error!(sink = %fields_sink, failures = *failures, "notify: sink marked unhealthy; retrying slowly");
                }
                warn!(sink = %fields_sink, kind = %sink.kind(), alert_id, attempt, error = %message, api_says = remote.as_deref().unwrap_or(""), retry_in = ?delay, "notify: delivery failed, will retry");
                ctx.counters.retried.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(metric::DELIVERIES, "sink" => fields_sink.to_string(), "outcome" => "retry").increment(1);
                Ok(Step::Backoff(delay))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_to_the_cap_with_jitter() {
        let cfg = NotifyConfig::new("postgres://x@127.0.0.1/db");
        for (failures, full) in [
            (1u32, 1.0f64),
            (2, 2.0),
            (3, 4.0),
            (4, 8.0),
            (5, 300.0),
            (9, 300.0),
        ] {
            for _ in 0..50 {
                let d = cfg.retry_delay(failures).as_secs_f64();
                assert!(
                    d >= full / 2.0 && d <= full,
                    "failures {failures}: {d} not in [{}, {full}]",
                    full / 2.0
                );
            }
        }
        let mut cfg = cfg;
        cfg.unhealthy_after = 100;
        assert!(
            cfg.retry_delay(40).as_secs_f64() <= 60.0,
            "capped at retry_max"
        );
        assert!(cfg.retry_delay(40).as_secs_f64() >= 30.0);
    }

    /// Issue 18.5: a server's Retry-After / retry_after lengthens the wait, never shortens it;
    /// an unhealthy sink waits --unhealthy-retry-ms whatever the server says.
    #[test]
    fn server_delays_never_shorten_the_back_off() {
        let cfg = NotifyConfig::new("postgres://x@127.0.0.1/db");
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let limited = |secs: u64| ErrorClass::RateLimited {
            retry_after: s(secs),
        };
        let retryable = ErrorClass::Retryable { retry_after: None };
        // (case, class, failures, rate_limited, server, min, max)
        let cases = [
            (
                "TC1 503 Retry-After: 0",
                &retryable,
                1,
                0,
                Some(s(0)),
                ms(500),
                s(1),
            ),
            (
                "TC2 429 retry_after: 0",
                &limited(0),
                0,
                1,
                Some(s(0)),
                ms(500),
                s(1),
            ),
            (
                "TC3 fourth 429 in a row",
                &limited(0),
                0,
                4,
                Some(s(0)),
                s(4),
                s(8),
            ),
            (
                "TC4 the server asks longer",
                &retryable,
                1,
                0,
                Some(s(30)),
                s(30),
                s(30),
            ),
            (
                "TC5 capped at an hour",
                &retryable,
                1,
                0,
                Some(s(86_400)),
                s(3600),
                s(3600),
            ),
            (
                "TC6 unhealthy, 503 + 0",
                &retryable,
                5,
                0,
                Some(s(0)),
                s(150),
                s(300),
            ),
            (
                "TC7 unhealthy, 429 + 0",
                &limited(0),
                7,
                1,
                Some(s(0)),
                s(150),
                s(300),
            ),
            ("TC8 no header", &retryable, 2, 0, None, s(1), s(2)),
        ];
        for (name, class, failures, rate_limited, server, min, max) in cases {
            for _ in 0..20 {
                let d = cfg.next_delay(class, failures, rate_limited, server);
                assert!(
                    d >= min && d <= max,
                    "{name}: {d:?} not in [{min:?}, {max:?}]"
                );
            }
        }
    }
}
