-- 016: TimescaleDB jobs pg_ta relies on, judged by their outcome and not only their status.
--
-- A TimescaleDB job can fail after its work is committed (TimescaleDB 2.28.3 on PostgreSQL
-- 15.20: every background run ends with "cannot drop portal" after compressing its chunks), and
-- a job can succeed while its work piles up (unscheduled, or a policy that does nothing).  So
-- each job is reported twice: `failing` (its last run's status and error) and `work_pending`
-- (the work it exists for is waiting: chunks past compress_after still uncompressed, complete
-- buckets above a continuous aggregate's materialization watermark, rows past retention).
-- Pending work is normal for a while (until the job's next run); `ta-feed stream` polls this
-- function and calls work *overdue* once it has stayed pending for longer than a margin
-- (docs/operations.md), then runs the job itself.  On plain PostgreSQL: no rows.

DROP FUNCTION IF EXISTS market.timescaledb_job_health(interval);
CREATE OR REPLACE FUNCTION market.timescaledb_job_health()
RETURNS TABLE (job_id integer, job text, relation text, scheduled boolean,
               schedule_interval interval, last_run_status text,
               last_run_started_at timestamptz, last_successful_finish timestamptz,
               total_runs bigint, total_failures bigint, failing boolean, last_error text,
               work_pending boolean, pending_work text, due_since timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
  j record;
  v_n bigint;
  v_t timestamptz;
  v_watermark timestamptz;
  v_width interval;
  v_latest timestamptz;
  v_due timestamptz;
  v_sql text;
BEGIN
  IF NOT market.timescaledb_enabled() THEN
    RETURN;
  END IF;
  FOR j IN
    SELECT jb.job_id, jb.proc_name, jb.hypertable_schema, jb.hypertable_name, jb.scheduled,
           jb.schedule_interval, jb.config, st.last_run_status, st.last_run_started_at,
           st.last_successful_finish, st.total_runs, st.total_failures
      FROM timescaledb_information.jobs jb
      LEFT JOIN timescaledb_information.job_stats st ON st.job_id = jb.job_id
     WHERE (jb.hypertable_schema = 'market'
            AND jb.proc_name IN ('policy_compression', 'policy_refresh_continuous_aggregate'))
        OR (jb.proc_schema = 'market' AND jb.proc_name = '_retention_job')
     ORDER BY jb.job_id
  LOOP
    job_id := j.job_id;
    job := CASE j.proc_name WHEN 'policy_compression' THEN 'compression'
                            WHEN 'policy_refresh_continuous_aggregate' THEN 'refresh'
                            ELSE 'retention' END;
    relation := CASE WHEN j.hypertable_name IS NOT NULL
                     THEN format('%I.%I', j.hypertable_schema, j.hypertable_name)
                     ELSE 'market.apply_retention()' END;
    scheduled := j.scheduled;
    schedule_interval := j.schedule_interval;
    last_run_status := j.last_run_status;
    last_run_started_at := j.last_run_started_at;
    last_successful_finish := j.last_successful_finish;
    total_runs := j.total_runs;
    total_failures := j.total_failures;
    failing := j.last_run_status = 'Failed';
    last_error := NULL;
    IF failing THEN
      SELECT left(regexp_replace(e.err_message, '[[:cntrl:]]+', ' ', 'g'), 300) INTO last_error
        FROM timescaledb_information.job_errors e
       WHERE e.job_id = j.job_id ORDER BY e.finish_time DESC NULLS LAST LIMIT 1;
    END IF;
    work_pending := false;
    pending_work := NULL;
    due_since := NULL;
    IF j.proc_name = 'policy_compression' THEN
      -- chunks whose whole range is older than compress_after (wall clock, as the policy)
      SELECT count(*), min(c.range_end) INTO v_n, v_t
        FROM timescaledb_information.chunks c
       WHERE c.hypertable_schema = j.hypertable_schema AND c.hypertable_name = j.hypertable_name
         AND NOT c.is_compressed
         AND c.range_end <= now() - (j.config->>'compress_after')::interval;
      IF v_n > 0 THEN
        work_pending := true;
        due_since := v_t + (j.config->>'compress_after')::interval;
        pending_work := format('%s chunk(s) older than %s not compressed', v_n,
                               j.config->>'compress_after');
      END IF;
    ELSIF j.proc_name = 'policy_refresh_continuous_aggregate' THEN
      -- buckets that are complete and older than end_offset but above the materialization
      -- watermark: real-time aggregation still answers them, the refresh is behind
      SELECT _timescaledb_functions.to_timestamp(_timescaledb_functions.cagg_watermark(h.id))
        INTO v_watermark
        FROM timescaledb_information.continuous_aggregates ca
        JOIN _timescaledb_catalog.hypertable h
          ON h.schema_name = ca.materialization_hypertable_schema
         AND h.table_name = ca.materialization_hypertable_name
       WHERE ca.view_schema = j.hypertable_schema AND ca.view_name = j.hypertable_name;
      -- the newest row of the raw hypertable (by its time dimension)
      SELECT format('SELECT max(%I) FROM %I.%I', d.column_name, ca.hypertable_schema,
                    ca.hypertable_name)
        INTO v_sql
        FROM timescaledb_information.continuous_aggregates ca
        JOIN timescaledb_information.dimensions d
          ON d.hypertable_schema = ca.hypertable_schema AND d.hypertable_name = ca.hypertable_name
         AND d.dimension_number = 1
       WHERE ca.view_schema = j.hypertable_schema AND ca.view_name = j.hypertable_name;
      EXECUTE v_sql INTO v_latest;
      v_width := (j.config->>'end_offset')::interval;
      -- the newest raw row older than now - end_offset, bucketed: what the policy would have
      -- materialized by now
      v_due := least(v_latest, now() - v_width);
      IF v_watermark IS NOT NULL AND v_due IS NOT NULL AND v_due > v_watermark + v_width THEN
        work_pending := true;
        due_since := v_watermark + 2 * v_width;
        pending_work := CASE WHEN v_watermark < timestamptz '1970-01-01 00:00:00+00'
                             THEN format('nothing materialized, raw data up to %s', v_latest)
                             ELSE format('materialized up to %s, raw data up to %s', v_watermark,
                                         v_latest) END;
      END IF;
    ELSE
      -- retention: rows older than the cutoffs market.apply_retention() uses
      SELECT r.candles_cutoff, r.alerts_cutoff INTO v_due, v_watermark
        FROM market.retention_cutoffs() r;
      IF v_due IS NOT NULL THEN
        SELECT min(c.open_time) INTO v_t FROM market.candles_1m c WHERE c.open_time < v_due;
        IF v_t IS NOT NULL THEN
          work_pending := true;
          due_since := v_due;
          pending_work := format('candles older than the retention cutoff %s are kept (oldest %s)',
                                 v_due, v_t);
        END IF;
      END IF;
      IF v_watermark IS NOT NULL THEN
        SELECT min(a.open_time) INTO v_t FROM market.alert_history a WHERE a.open_time < v_watermark;
        IF v_t IS NOT NULL THEN
          work_pending := true;
          due_since := least(due_since, v_watermark);
          pending_work := concat_ws('; ', pending_work,
                                    format('alerts older than the retention cutoff %s are kept (oldest %s)',
                                           v_watermark, v_t));
        END IF;
      END IF;
    END IF;
    RETURN NEXT;
  END LOOP;
END
$$;
COMMENT ON FUNCTION market.timescaledb_job_health() IS
  'The TimescaleDB jobs pg_ta relies on (compression of its hypertables, refresh of its '
  'continuous aggregates, the retention job), one row each, judged by status AND outcome: failing '
  '= its last run failed (last_error: the newest error from timescaledb_information.job_errors, '
  'control characters removed, at most 300 characters); work_pending = the work it exists for is '
  'waiting: compression — chunks whose range ended more than compress_after ago are not '
  'compressed (wall clock, as the policy); refresh — complete buckets older than end_offset lie '
  'above the materialization watermark; retention — candles or alerts older than the cutoffs of '
  'market.retention_cutoffs() are kept. pending_work says what; due_since estimates since when '
  'by data time (imported history is due at once). Pending work is normal until the job runs; '
  'ta-feed stream calls it overdue after a margin (docs/operations.md). No rows without '
  'TimescaleDB. SECURITY DEFINER: it reads the jobs of the schema owner.';
