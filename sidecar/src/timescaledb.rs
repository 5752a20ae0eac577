//! Watching the TimescaleDB jobs pg_ta relies on (`ta-feed stream`, every
//! `--timescaledb-check-secs`): compression of its hypertables, refresh of its continuous
//! aggregates, the retention job.
//!
//! A job is judged twice, from `market.timescaledb_job_health()` (sql/016_job_health.sql): is it
//! **failing** (its last run failed; the newest error), and is its **work overdue**: the work it
//! exists for (chunks past `compress_after` not compressed, complete buckets above a continuous
//! aggregate's watermark, rows past retention) has stayed pending, look after look, for longer
//! than the margin (`--timescaledb-overdue-margin-secs`; default two schedule intervals of the
//! job, at least 10 minutes). Pending is measured by the watcher's own clock, because data time
//! says nothing about when imported history arrived. The two are reported separately, because
//! either can happen without the other: on TimescaleDB 2.28.3 with PostgreSQL 15.20 every
//! background run fails *after* committing its work, and an unscheduled or no-op job succeeds
//! while work piles up.
//!
//! Per state change of a job (failing ↔ ok, overdue ↔ done): one log line (ERROR when it goes
//! bad, INFO when it recovers) and one `market.data_quality_log` row
//! ([`quality_kind`](crate::constants::quality_kind)`::TIMESCALEDB_*`). While a job is failing
//! or overdue, `/health` is degraded with a reason naming the job, its last error and whether
//! its work is done. Prometheus: `ta_feed_timescaledb_job_failing` and
//! `ta_feed_timescaledb_job_overdue` (0/1 per job), `ta_feed_timescaledb_job_runs_total`.
//! Overdue work is done by ta-feed itself (unless `--no-timescaledb-repair`): `CALL
//! run_job(id)`, at most once per margin per job, logged; the role needs the right to run the
//! job (its owner, a member of it, or a superuser), else the refusal is logged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::constants::{metric, quality_kind};
use crate::health::HealthState;

/// Default overdue margin: two schedule intervals of the job, at least this.
pub const MIN_MARGIN: Duration = Duration::from_secs(600);

/// One row of `market.timescaledb_job_health()`, plus the watcher's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct JobHealth {
    pub job_id: i32,
    /// `compression`, `refresh` or `retention`.
    pub job: String,
    /// The hypertable or continuous aggregate (or `market.apply_retention()`).
    pub relation: String,
    pub schedule_interval: Duration,
    pub failing: bool,
    pub last_error: Option<String>,
    /// Its work is waiting (normal until the job's next run).
    pub work_pending: bool,
    pub pending_work: Option<String>,
    /// Since when the work is due by data time (informational).
    pub due_since: Option<DateTime<Utc>>,
    /// Set by [`JobWatch::observe`]: pending for longer than the margin.
    pub work_overdue: bool,
}

impl JobHealth {
    /// "job 1000 (compression of market.candles_1m)".
    pub fn name(&self) -> String {
        let what = match self.job.as_str() {
            "compression" => "compression of",
            "refresh" => "refresh of",
            _ => "retention,",
        };
        format!("TimescaleDB job {} ({what} {})", self.job_id, self.relation)
    }

    /// The `/health` reason, None when the job is fine.
    pub fn reason(&self) -> Option<String> {
        let err = self.last_error.as_deref().unwrap_or("no error recorded");
        let work = match (&self.pending_work, self.work_overdue) {
            (Some(w), true) => format!("its work is overdue: {w}"),
            (None, true) => "its work is overdue".to_string(),
            (_, false) => "its work is done".to_string(),
        };
        match (self.failing, self.work_overdue) {
            (false, false) => None,
            (true, _) => Some(format!("{} is failing ({err}); {work}", self.name())),
            (false, true) => Some(format!("{} succeeds but {work}", self.name())),
        }
    }
}

/// A state change of one job, to log and record.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Failing(JobHealth),
    Recovered(JobHealth),
    Overdue(JobHealth),
    CaughtUp(JobHealth),
}

impl Change {
    pub fn kind(&self) -> &'static str {
        match self {
            Change::Failing(_) => quality_kind::TIMESCALEDB_JOB_FAILING,
            Change::Recovered(_) => quality_kind::TIMESCALEDB_JOB_OK,
            Change::Overdue(_) => quality_kind::TIMESCALEDB_WORK_OVERDUE,
            Change::CaughtUp(_) => quality_kind::TIMESCALEDB_WORK_DONE,
        }
    }

    pub fn job(&self) -> &JobHealth {
        match self {
            Change::Failing(j)
            | Change::Recovered(j)
            | Change::Overdue(j)
            | Change::CaughtUp(j) => j,
        }
    }
}

/// What one look at the jobs found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Observation {
    pub changes: Vec<Change>,
    /// Overdue jobs to run now.
    pub run: Vec<i32>,
    /// `/health` reasons (degraded), one per job in trouble.
    pub reasons: Vec<String>,
}

/// The states seen last time, per job (plain logic, no database: unit-tested).
#[derive(Debug, Default)]
pub struct JobWatch {
    /// job_id -> (failing, overdue)
    states: HashMap<i32, (bool, bool)>,
    /// job_id -> since when its work has been pending without a break
    pending_since: HashMap<i32, Instant>,
    /// job_id -> when ta-feed last ran it
    ran: HashMap<i32, Instant>,
}

impl JobWatch {
    /// Compares `rows` with the last look and sets each row's `work_overdue` (pending since
    /// longer than `margin`, or two schedule intervals and at least [`MIN_MARGIN`] when None).
    /// A job seen for the first time counts as a change only when it is in trouble. Overdue jobs
    /// are to be run when `repair` is on and ta-feed did not run them within their margin.
    pub fn observe(
        &mut self,
        rows: &mut [JobHealth],
        now: Instant,
        repair: bool,
        margin: Option<Duration>,
    ) -> Observation {
        let mut obs = Observation::default();
        let mut seen = HashMap::new();
        let mut pending = HashMap::new();
        for r in rows.iter_mut() {
            let margin = margin.unwrap_or_else(|| (2 * r.schedule_interval).max(MIN_MARGIN));
            if r.work_pending {
                let since = *self.pending_since.get(&r.job_id).unwrap_or(&now);
                pending.insert(r.job_id, since);
                r.work_overdue = now.duration_since(since) >= margin;
            } else {
                r.work_overdue = false;
            }
            let rerun_after = margin;
            let (was_failing, was_overdue) = self
                .states
                .get(&r.job_id)
                .copied()
                .unwrap_or((false, false));
            if r.failing && !was_failing {
                obs.changes.push(Change::Failing(r.clone()));
            } else if !r.failing && was_failing {
                obs.changes.push(Change::Recovered(r.clone()));
            }
            if r.work_overdue && !was_overdue {
                obs.changes.push(Change::Overdue(r.clone()));
            } else if !r.work_overdue && was_overdue {
                obs.changes.push(Change::CaughtUp(r.clone()));
            }
            if let Some(reason) = r.reason() {
                obs.reasons.push(reason);
            }
            if repair
                && r.work_overdue
                && self
                    .ran
                    .get(&r.job_id)
                    .is_none_or(|t| now.duration_since(*t) >= rerun_after)
            {
                obs.run.push(r.job_id);
            }
            seen.insert(r.job_id, (r.failing, r.work_overdue));
        }
        self.states = seen;
        self.pending_since = pending;
        obs
    }

    /// ta-feed ran `job_id` at `now`.
    pub fn ran(&mut self, job_id: i32, now: Instant) {
        self.ran.insert(job_id, now);
    }
}

/// How the watcher runs.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    pub database_url: String,
    /// Look this often.
    pub interval: Duration,
    /// Overdue margin (None: two schedule intervals of each job, at least [`MIN_MARGIN`]).
    pub margin: Option<Duration>,
    /// Run overdue jobs.
    pub repair: bool,
}

/// Polls the jobs until the task is dropped. Without TimescaleDB (no rows) it idles quietly;
/// database errors are logged and retried at the next tick.
pub async fn watch_jobs(cfg: WatchConfig, health: Arc<HealthState>) {
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watch = JobWatch::default();
    let mut warned = false;
    loop {
        tick.tick().await;
        match look(&cfg, &mut watch, &health).await {
            Ok(()) => warned = false,
            Err(e) if !warned => {
                warn!(error = format!("{e:#}"), "TimescaleDB job check failed");
                warned = true;
            }
            Err(_) => {}
        }
    }
}

async fn look(cfg: &WatchConfig, watch: &mut JobWatch, health: &HealthState) -> anyhow::Result<()> {
    let (client, conn) = crate::db::connect(&cfg.database_url).await?;
    let result = async {
        let mut rows = read_jobs(&client).await?;
        let obs = watch.observe(&mut rows, Instant::now(), cfg.repair, cfg.margin);
        for r in &rows {
            let labels = [
                ("job_id", r.job_id.to_string()),
                ("relation", r.relation.clone()),
            ];
            metrics::gauge!(metric::TIMESCALEDB_JOB_FAILING, &labels).set(r.failing as u8 as f64);
            metrics::gauge!(metric::TIMESCALEDB_JOB_OVERDUE, &labels)
                .set(r.work_overdue as u8 as f64);
        }
        health.set_timescaledb_reasons(obs.reasons.clone());
        for c in &obs.changes {
            record_change(&client, c).await?;
        }
        for id in obs.run {
            watch.ran(id, Instant::now());
            run_job(&client, &rows, id).await?;
        }
        anyhow::Ok(())
    }
    .await;
    drop(client);
    conn.abort();
    result
}

async fn read_jobs(client: &tokio_postgres::Client) -> anyhow::Result<Vec<JobHealth>> {
    let rows = client
        .query(
            "SELECT job_id, job, relation, \
                    extract(epoch FROM schedule_interval)::float8, failing, last_error, \
                    work_pending, pending_work, due_since \
               FROM market.timescaledb_job_health()",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| JobHealth {
            job_id: r.get(0),
            job: r.get(1),
            relation: r.get(2),
            schedule_interval: Duration::from_secs_f64(
                r.get::<_, Option<f64>>(3).unwrap_or(0.0).max(0.0),
            ),
            failing: r.get::<_, Option<bool>>(4).unwrap_or(false),
            last_error: r.get(5),
            work_pending: r.get(6),
            pending_work: r.get(7),
            due_since: r.get(8),
            work_overdue: false,
        })
        .collect())
}

async fn record_change(client: &tokio_postgres::Client, c: &Change) -> anyhow::Result<()> {
    let j = c.job();
    match c {
        Change::Failing(_) => error!(
            job_id = j.job_id,
            relation = %j.relation,
            last_error = j.last_error.as_deref().unwrap_or(""),
            work_overdue = j.work_overdue,
            "TIMESCALEDB JOB FAILING: {}",
            j.reason().unwrap_or_default()
        ),
        Change::Overdue(_) => error!(
            job_id = j.job_id,
            relation = %j.relation,
            pending_work = j.pending_work.as_deref().unwrap_or(""),
            "TIMESCALEDB WORK OVERDUE: {}",
            j.reason().unwrap_or_default()
        ),
        Change::Recovered(_) => {
            info!(job_id = j.job_id, relation = %j.relation, "TimescaleDB job succeeds again")
        }
        Change::CaughtUp(_) => {
            info!(job_id = j.job_id, relation = %j.relation, "TimescaleDB job's work is done again")
        }
    }
    let detail = json!({
        "job_id": j.job_id,
        "job": j.job,
        "relation": j.relation,
        "failing": j.failing,
        "last_error": j.last_error,
        "work_overdue": j.work_overdue,
        "pending_work": j.pending_work,
        "due_since": j.due_since.map(|t| t.to_rfc3339()),
    });
    client
        .execute(
            "INSERT INTO market.data_quality_log (kind, from_time, detail) \
             VALUES ($1, $2, $3::text::jsonb)",
            &[&c.kind(), &j.due_since, &detail.to_string()],
        )
        .await?;
    Ok(())
}

/// `CALL run_job(id)` (simple protocol: the job may commit); the outcome is logged and recorded.
async fn run_job(
    client: &tokio_postgres::Client,
    rows: &[JobHealth],
    job_id: i32,
) -> anyhow::Result<()> {
    let relation = rows
        .iter()
        .find(|r| r.job_id == job_id)
        .map(|r| r.relation.clone())
        .unwrap_or_default();
    let schema: String = client
        .query_one(
            "SELECT n.nspname::text FROM pg_catalog.pg_extension e \
               JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace \
              WHERE e.extname = 'timescaledb'",
            &[],
        )
        .await?
        .get(0);
    let sql = format!("CALL {}.run_job({job_id})", crate::db::quote_ident(&schema));
    let started = std::time::Instant::now();
    let outcome = client.batch_execute(&sql).await;
    let ms = started.elapsed().as_millis() as u64;
    let (ok, err) = match &outcome {
        Ok(()) => {
            info!(job_id, %relation, ms, "ran overdue TimescaleDB job itself");
            (true, None)
        }
        Err(e) => {
            let msg = crate::db::error_message(e);
            error!(job_id, %relation, error = %msg, "running the overdue TimescaleDB job failed");
            (false, Some(msg))
        }
    };
    metrics::counter!(metric::TIMESCALEDB_JOB_RUNS, "job_id" => job_id.to_string(),
                      "result" => if ok { "ok" } else { "error" })
    .increment(1);
    client
        .execute(
            "INSERT INTO market.data_quality_log (kind, detail) VALUES ($1, $2::text::jsonb)",
            &[
                &quality_kind::TIMESCALEDB_JOB_RUN,
                &json!({"job_id": job_id, "relation": relation, "ok": ok, "error": err, "ms": ms})
                    .to_string(),
            ],
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: i32, failing: bool, pending: bool) -> JobHealth {
        JobHealth {
            job_id: id,
            job: "compression".into(),
            relation: "market.candles_1m".into(),
            schedule_interval: Duration::from_secs(12 * 3600),
            failing,
            last_error: failing.then(|| "cannot drop portal \"\" while it is being set up".into()),
            work_pending: pending,
            pending_work: pending.then(|| "3 chunk(s) older than 7 days not compressed".into()),
            due_since: None,
            work_overdue: false,
        }
    }

    #[test]
    fn failing_and_overdue_are_reported_separately() {
        let mut w = JobWatch::default();
        let t0 = Instant::now();
        let hour = Some(Duration::from_secs(3600));
        let at = |h: u64| t0 + Duration::from_secs(h * 3600);
        // TC1: all fine: nothing to say
        let o = w.observe(&mut [job(1000, false, false)], t0, true, hour);
        assert_eq!(o, Observation::default());
        // TC2: failing after committing its work (2.28.3 / 15.20): failing, work done, no run
        let o = w.observe(&mut [job(1000, true, false)], t0, true, hour);
        assert!(
            matches!(o.changes.as_slice(), [Change::Failing(_)]),
            "{o:?}"
        );
        assert!(o.run.is_empty());
        assert_eq!(
            o.reasons,
            vec![
                "TimescaleDB job 1000 (compression of market.candles_1m) is failing \
                  (cannot drop portal \"\" while it is being set up); its work is done"
            ]
        );
        // TC3: still failing: no new change, same reason
        let o = w.observe(&mut [job(1000, true, false)], t0, true, hour);
        assert!(o.changes.is_empty() && o.reasons.len() == 1);
        // TC4: recovers; work pending (a job made to do nothing): not overdue within the margin
        let o = w.observe(&mut [job(1000, false, true)], at(1), true, hour);
        assert!(
            matches!(o.changes.as_slice(), [Change::Recovered(_)]),
            "{o:?}"
        );
        assert!(o.run.is_empty() && o.reasons.is_empty());
        // TC5: pending for the margin: overdue -> run it once
        let o = w.observe(&mut [job(1000, false, true)], at(2), true, hour);
        assert!(
            matches!(o.changes.as_slice(), [Change::Overdue(_)]),
            "{o:?}"
        );
        assert_eq!(o.run, vec![1000]);
        assert!(o.reasons[0].ends_with(
            "succeeds but its work is overdue: 3 chunk(s) older than 7 days not compressed"
        ));
        w.ran(1000, at(2));
        // TC6: still overdue within the margin after the run: not run again; after it: again
        assert!(w
            .observe(&mut [job(1000, false, true)], at(2), true, hour)
            .run
            .is_empty());
        assert_eq!(
            w.observe(&mut [job(1000, false, true)], at(3), true, hour)
                .run,
            vec![1000]
        );
        // TC7: repair off: reported, never run
        assert!(w
            .observe(&mut [job(1000, false, true)], at(5), false, hour)
            .run
            .is_empty());
        // TC8: caught up; a new pending spell starts its clock again
        let o = w.observe(&mut [job(1000, false, false)], at(5), true, hour);
        assert!(matches!(o.changes.as_slice(), [Change::CaughtUp(_)]));
        assert!(o.reasons.is_empty());
        let o = w.observe(&mut [job(1000, false, true)], at(5), true, hour);
        assert!(o.changes.is_empty() && o.run.is_empty());
        // TC9: default margin: two schedule intervals (12 h each), at least 10 minutes
        let mut d = JobWatch::default();
        d.observe(&mut [job(7, false, true)], t0, true, None);
        assert!(d
            .observe(&mut [job(7, false, true)], at(23), true, None)
            .run
            .is_empty());
        assert_eq!(
            d.observe(&mut [job(7, false, true)], at(24), true, None)
                .run,
            vec![7]
        );
    }

    #[test]
    fn first_look_reports_only_trouble_and_kinds_are_distinct() {
        let mut w = JobWatch::default();
        let o = w.observe(
            &mut [job(1, false, false), job(2, true, true)],
            Instant::now(),
            false,
            Some(Duration::ZERO),
        );
        assert_eq!(o.changes.len(), 2);
        let kinds: Vec<_> = o.changes.iter().map(|c| c.kind()).collect();
        assert_eq!(
            kinds,
            vec![
                quality_kind::TIMESCALEDB_JOB_FAILING,
                quality_kind::TIMESCALEDB_WORK_OVERDUE
            ]
        );
        assert!(o.reasons[0].contains("is failing") && o.reasons[0].contains("overdue"));
    }
}
