-- 090: roles and privileges (applied last, over every object of the schema).
-- Group roles (NOLOGIN); grant them to login roles:
--   ta_reader      read everything in market except sink secrets; run the screener functions
--                  and backtests (BI tools: Grafana, Metabase, Superset; LISTEN needs no grant).
--   ta_writer      ta_reader + write candles, ticks (agg_trades, book_tickers) and the
--                  data-quality log (ta-feed, your loaders).
--                  Alert evaluation runs inside the candle triggers as the schema owner, so a
--                  writer needs no rights on rules, state or alert history.
--   ta_rule_admin  ta_reader + create, edit, enable/disable and delete custom alert rules,
--                  tune presets' config, edit market.settings (all but max_enabled_sinks,
--                  the owner's), manage sinks (writing secrets it cannot read back) and
--                  subscriptions.
--   ta_notifier    ta_reader + read sink secrets, record delivery outcomes (ta-feed notify:
--                  UPDATE of the outcome columns of alert_deliveries only).
-- The roles are created by 001_schema.sql (first, so every file's grants find them); when the
-- applying role lacks CREATEROLE they are skipped with a NOTICE and the grants below are
-- applied only to roles that exist.
--
-- Internal functions that feed trusted paths (state maintenance, evaluation, retention,
-- rebuild) are not executable by PUBLIC; nor are pg_ta's screener cache functions (revoked
-- in the extension).  See README "Security".

-- Functions: nothing for PUBLIC by default, then exactly what each role needs.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA market FROM PUBLIC;
REVOKE EXECUTE ON ALL PROCEDURES IN SCHEMA market FROM PUBLIC;
ALTER DEFAULT PRIVILEGES IN SCHEMA market REVOKE EXECUTE ON ROUTINES FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA market FROM PUBLIC;

DO $$
DECLARE
  -- what a reader runs: the screener and backtests (security invoker, read-only) and the
  -- read-only internals they call
  v_read text[] := ARRAY[
    'market.timescaledb_enabled()', 'market.schema_version()', 'market._timescaledb_schema()',
    'market._is_owner()', 'market.alert_channel()', 'market.alert_payload_version()',
    'market.screener_at(timestamptz, text)',
    'market.screener_range(timestamptz, timestamptz, text[], text)',
    'market.backtest(text, timestamptz, timestamptz, text[], jsonb, boolean, text)',
    'market.backtest_expression(text, timestamptz, timestamptz, text[], jsonb, interval, text)',
    'market.backtest_rules(text[], timestamptz, timestamptz, text[], jsonb, boolean, text, boolean)',
    'market._backtest(text[], text[], integer[], interval[], timestamptz, timestamptz, text[], text, boolean)',
    'market._run(text[], text[], timestamptz[], timestamptz[], timestamptz[], timestamptz[])',
    'market._start(text, text, timestamptz)', 'market._warm_before(text, text, timestamptz)',
    'market._check_range(text, timestamptz, timestamptz)',
    'market._range_instruments(timestamptz, text[], text)',
    'market._run1(text, text, timestamptz, timestamptz, timestamptz, timestamptz)',
    'market._alert_payload(ta.signal_row, bigint, integer, text)',
    'market._rollup_sql(interval, name)', 'market._rule_branch(integer, text)',
    -- pg_ta 0.3.0: tick views and features (015)
    'market._minute_close(timestamptz)', 'market._tick_bucket(name, text)',
    'market._tick_view_sql(text, name)', 'market.features_channel()',
    'market.features_range(text[], text[], timestamptz, timestamptz)',
    'market.feature_vectors(text[], text[], timestamptz, timestamptz)',
    'market._range_of_features(text, text[], text[], timestamptz, timestamptz)',
    'market._has_book(text, text)', 'market._book_at(text, text, timestamptz, boolean)',
    'market._book_from(text, text, timestamptz)',
    'market._frun1(text, text, timestamptz, timestamptz, timestamptz, timestamptz, timestamptz)',
    'market._frun(text[], text[], timestamptz[], timestamptz[], timestamptz[], timestamptz[], timestamptz[])',
    'market._srun1(text, text, timestamptz, timestamptz, timestamptz, timestamptz, timestamptz)',
    'market._frows1(text, text, timestamptz, timestamptz, timestamptz, timestamptz, timestamptz)',
    'market._frows1_composite(text, text, timestamptz, timestamptz, timestamptz, timestamptz, timestamptz)',
    'market.timescaledb_job_health()', 'market.retention_cutoffs()',
    'market._reads_features(text[])'];
  f text;
BEGIN
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'ta_reader') THEN
    -- pg_ta 0.1.0 granted every function to ta_reader: start from nothing
    REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA market FROM ta_reader;
    GRANT USAGE ON SCHEMA market, ta TO ta_reader;
    GRANT SELECT ON ALL TABLES IN SCHEMA market TO ta_reader;
    REVOKE SELECT ON market._evaluator_lock FROM ta_reader;
    -- sink secrets: column privileges
    REVOKE SELECT ON market.alert_sinks FROM ta_reader;
    GRANT SELECT (sink_id, name, kind, chat_id, enabled, created_at) ON market.alert_sinks
      TO ta_reader;
    FOREACH f IN ARRAY v_read LOOP
      EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO ta_reader', f);
    END LOOP;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'ta_writer') THEN
    GRANT ta_reader TO ta_writer;
    GRANT INSERT, UPDATE, DELETE ON market.candles_1m TO ta_writer;
    GRANT INSERT ON market.data_quality_log TO ta_writer;
    GRANT EXECUTE ON FUNCTION market.apply_retention() TO ta_writer;
    -- ticks: ta-feed inserts with ON CONFLICT DO NOTHING (INSERT is enough); retention runs
    -- as the schema owner
    GRANT INSERT ON market.agg_trades, market.book_tickers TO ta_writer;
    GRANT EXECUTE ON FUNCTION market.apply_tick_retention() TO ta_writer;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'ta_rule_admin') THEN
    GRANT ta_reader TO ta_rule_admin;
    GRANT INSERT, UPDATE, DELETE ON market.alert_rules TO ta_rule_admin;
    -- settings: every column but max_enabled_sinks (the bound on what a rule admin adds)
    REVOKE UPDATE ON market.settings FROM ta_rule_admin;
    GRANT UPDATE (alert_history_retention, candles_retention, compress_after) ON market.settings
      TO ta_rule_admin;
    GRANT INSERT, UPDATE, DELETE ON market.alert_sinks, market.alert_subscriptions
      TO ta_rule_admin;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'ta_notifier') THEN
    GRANT ta_reader TO ta_notifier;
    GRANT SELECT ON market.alert_sinks TO ta_notifier;
    -- only the outcome columns: a table-wide UPDATE would let the notifier move a delivery to
    -- another sink or alert (revoking the table privilege also drops column grants: re-grant)
    REVOKE UPDATE ON market.alert_deliveries FROM ta_notifier;
    GRANT UPDATE (attempts, next_attempt_at, delivered_at, failed_at, last_error)
      ON market.alert_deliveries TO ta_notifier;
  END IF;
END
$$;
