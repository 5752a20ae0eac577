-- 012: retention (both servers) and compression (TimescaleDB), from market.settings.
--
-- Retention counts candle time: "now" is the newest stored candle, so a replay of a past date
-- behaves like live.  Candles are dropped by whole UTC days (TimescaleDB: drop_chunks of the
-- 1-day chunks; plain PostgreSQL: DELETE per instrument), which keeps every indicator of the
-- kept candles (see sql/006, the DELETE triggers).  Applied by market.apply_retention(): a
-- TimescaleDB job every hour, or ta-feed stream every hour on plain PostgreSQL (call it from
-- cron when you write candles another way).

-- The cutoffs of retention, one definition for market.apply_retention() and
-- market.timescaledb_job_health(): candle time ("now" = the newest stored candle), but at most
-- the server clock plus the 2 minutes of skew candles_1m accepts (candles_1m_open_time_check),
-- so a candle dated in the future (stored before that check existed) cannot make every
-- instrument look old.  No candles: no candle time, so no cutoffs (nothing is old).
CREATE OR REPLACE FUNCTION market.retention_cutoffs(OUT candle_now timestamptz,
                                                    OUT candles_cutoff timestamptz,
                                                    OUT alerts_cutoff timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
  SELECT t.n,
         CASE WHEN s.candles_retention IS NOT NULL
              THEN date_bin('1 day', t.n - s.candles_retention, timestamptz '2000-01-01 00:00:00+00')
         END,
         t.n - s.alert_history_retention
    FROM (SELECT CASE WHEN max(h.open_time) IS NULL THEN NULL
                      ELSE least(max(h.open_time), now() + interval '2 minutes') END AS n
            FROM market.screener_state h) t,
         market.settings s
$$;
COMMENT ON FUNCTION market.retention_cutoffs() IS
  'Retention cutoffs in candle time: candle_now = the newest stored candle (at most the server '
  'clock + 2 minutes; NULL without candles), candles_cutoff = the UTC midnight at or before '
  'candle_now - settings.candles_retention (NULL: keep every candle), alerts_cutoff = candle_now - '
  'settings.alert_history_retention. market.apply_retention() deletes what lies before them.';

CREATE OR REPLACE FUNCTION market.apply_retention(OUT candles_cutoff timestamptz,
                                                  OUT candles_deleted bigint,
                                                  OUT alerts_cutoff timestamptz,
                                                  OUT alerts_deleted bigint,
                                                  OUT deliveries_deleted bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
  s market.settings;
  v_latest timestamptz;
  v_ts name := market._timescaledb_schema();
  v_n bigint;
  v_try integer;
  i record;
BEGIN
  SELECT * INTO s FROM market.settings;
  -- the tick tables keep their own time (sql/013_ticks.sql)
  IF to_regprocedure('market.apply_tick_retention()') IS NOT NULL THEN
    PERFORM market.apply_tick_retention();
  END IF;
  SELECT r.candle_now, r.candles_cutoff, r.alerts_cutoff
    INTO v_latest, candles_cutoff, alerts_cutoff FROM market.retention_cutoffs() r;
  candles_deleted := 0;
  alerts_deleted := 0;
  deliveries_deleted := 0;
  IF v_latest IS NULL THEN
    RETURN;
  END IF;

  IF s.candles_retention IS NOT NULL THEN
    IF v_ts IS NOT NULL THEN
      -- a compression policy job working on the same chunks can deadlock with drop_chunks:
      -- the loser of the two retries (after the job is done) instead of failing the call.  The
      -- count reads the chunks too, so it sits in the same subtransaction: rolling back releases
      -- every chunk lock this call took, and the job can finish before the next try
      FOR v_try IN 1..10 LOOP
        BEGIN
          SELECT count(*) INTO v_n FROM market.candles_1m WHERE open_time < candles_cutoff;
          EXECUTE format('SELECT count(*) FROM %I.drop_chunks(%L::regclass, older_than => %L::timestamptz)',
                         v_ts, 'market.candles_1m', candles_cutoff);
          EXIT;
        EXCEPTION WHEN deadlock_detected OR lock_not_available THEN
          IF v_try = 10 THEN
            RAISE;
          END IF;
          PERFORM pg_sleep(0.2 * v_try);
        END;
      END LOOP;
      -- drop_chunks bypasses the candle triggers: forget the checkpoints of dropped candles
      candles_deleted := v_n;
      DELETE FROM market.screener_checkpoints c
       WHERE c.open_time < candles_cutoff
         AND NOT EXISTS (SELECT 1 FROM market.candles_1m x
                          WHERE x.market = c.market AND x.symbol = c.symbol
                            AND x.open_time = c.open_time);
      -- instruments whose newest candle was dropped have no candles left
      DELETE FROM market.screener_state h WHERE h.open_time < candles_cutoff;
      -- frozen book minutes of dropped candles (pg_ta 0.3.0, sql/003)
      DELETE FROM market.book_1m_frozen b WHERE b.open_time < candles_cutoff;
    ELSE
      FOR i IN SELECT h.market, h.symbol FROM market.screener_state h ORDER BY 1, 2 LOOP
        DELETE FROM market.candles_1m c
         WHERE c.market = i.market AND c.symbol = i.symbol AND c.open_time < candles_cutoff;
        GET DIAGNOSTICS v_n = ROW_COUNT;
        candles_deleted := candles_deleted + v_n;
      END LOOP;
    END IF;
  END IF;

  DELETE FROM market.alert_history h WHERE h.open_time < alerts_cutoff;
  GET DIAGNOSTICS alerts_deleted = ROW_COUNT;
  deliveries_deleted := market.prune_alert_deliveries();
END
$$;
COMMENT ON FUNCTION market.apply_retention() IS
  'Apply market.settings retention in candle time (newest stored candle = now, but at most 2 '
  'minutes ahead of the server clock, so a future-dated candle cannot age everything else): drop whole UTC '
  'days of candles older than candles_retention (TimescaleDB drop_chunks, else DELETE; NULL '
  'retention keeps everything), delete alerts older than alert_history_retention and deliveries '
  'of deleted alerts; and the tick tables'' retention (market.apply_tick_retention(), tick '
  'time). Returns the cutoffs and counts. A TimescaleDB job runs it every hour; '
  'ta-feed stream calls it every hour (--retention-interval-secs). SECURITY DEFINER: what it '
  'deletes is decided by market.settings (owner and ta_rule_admin), so ta_writer may run it.';

CREATE OR REPLACE PROCEDURE market._retention_job(job_id integer, config jsonb)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
  PERFORM market.apply_retention();
END
$$;
COMMENT ON PROCEDURE market._retention_job(integer, jsonb) IS
  'Internal: TimescaleDB job body (every hour): market.apply_retention().';

-- TimescaleDB: compression of candles_1m (segment by instrument, order by time) after
-- settings.compress_after, and the retention job.  Re-applied when settings change.
CREATE OR REPLACE FUNCTION market._apply_policies() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
  v_ts name := market._timescaledb_schema();
  v_after interval := (SELECT compress_after FROM market.settings);
BEGIN
  IF v_ts IS NULL THEN
    RETURN;
  END IF;
  -- the columnstore spelling TimescaleDB 2.29 documents (2.28 accepts it too)
  IF NOT EXISTS (SELECT 1 FROM timescaledb_information.hypertable_columnstore_settings
                  WHERE hypertable = 'market.candles_1m'::regclass AND segmentby IS NOT NULL) THEN
    ALTER TABLE market.candles_1m SET (timescaledb.enable_columnstore = true,
                                       timescaledb.segmentby = 'market, symbol',
                                       timescaledb.orderby = 'open_time');
  END IF;
  IF NOT EXISTS (SELECT 1 FROM timescaledb_information.jobs
                  WHERE proc_name = 'policy_compression' AND hypertable_schema = 'market'
                    AND hypertable_name = 'candles_1m'
                    AND config->>'compress_after' = v_after::text) THEN
    EXECUTE format('CALL %I.remove_columnstore_policy(%L::regclass, if_exists => true)',
                   v_ts, 'market.candles_1m');
    EXECUTE format('CALL %I.add_columnstore_policy(%L::regclass, after => %L::interval)',
                   v_ts, 'market.candles_1m', v_after);
  END IF;
  IF NOT EXISTS (SELECT 1 FROM timescaledb_information.jobs
                  WHERE proc_schema = 'market' AND proc_name = '_retention_job') THEN
    EXECUTE format('SELECT %I.add_job(%L::regproc, %L::interval)', v_ts,
                   'market._retention_job', '1 hour');
  END IF;
  -- the tick hypertables (sql/013_ticks.sql, which applies them itself the first time)
  IF to_regprocedure('market._apply_tick_policies()') IS NOT NULL THEN
    PERFORM market._apply_tick_policies();
  END IF;
END
$$;
COMMENT ON FUNCTION market._apply_policies() IS
  'Internal: TimescaleDB only: compression settings and policy of market.candles_1m '
  '(segmentby market, symbol; orderby open_time; after settings.compress_after), the hourly '
  'retention job, and the tick tables'' columnstore (market._apply_tick_policies()). Called by '
  'the schema migration and when market.settings changes.';

CREATE OR REPLACE FUNCTION market._settings_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
  PERFORM market._apply_policies();
  RETURN NULL;
END
$$;
COMMENT ON FUNCTION market._settings_changed() IS
  'Internal: AFTER UPDATE trigger of market.settings; re-applies the TimescaleDB policies.';
DROP TRIGGER IF EXISTS settings_changed ON market.settings;
CREATE TRIGGER settings_changed AFTER UPDATE ON market.settings
  FOR EACH STATEMENT EXECUTE FUNCTION market._settings_changed();

DO $$ BEGIN PERFORM market._apply_policies(); END $$;
