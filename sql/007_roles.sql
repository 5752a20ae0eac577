-- 007: roles.  Three group roles (NOLOGIN); grant them to login roles:
--   ta_reader      read everything in market (BI tools: Grafana, Metabase, Superset; LISTEN
--                  clients need no grant to LISTEN).
--   ta_writer      ta_reader + write candles and the data-quality log (ta-feed, your loaders).
--                  Alert evaluation runs inside the candle triggers as the schema owner, so a
--                  writer needs no rights on rules, state or alert history.
--   ta_rule_admin  ta_reader + create, edit, enable/disable and delete alert rules (custom rule
--                  expressions are checked by ta.rule_compile when saved) and edit
--                  market.settings.  Only this role (and the schema owner) can add rules.
-- Creating roles needs CREATEROLE; when the applying role lacks it, the roles are skipped
-- with a NOTICE and the grants below are applied only to roles that exist.
DO $$
DECLARE
  r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['ta_reader', 'ta_writer', 'ta_rule_admin'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
      BEGIN
        EXECUTE format('CREATE ROLE %I NOLOGIN', r);
      EXCEPTION WHEN insufficient_privilege THEN
        RAISE NOTICE 'pg_ta: cannot create role % (needs CREATEROLE); skipped', r;
      END;
    END IF;
  END LOOP;

  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ta_reader') THEN
    GRANT USAGE ON SCHEMA market, ta TO ta_reader;
    GRANT SELECT ON ALL TABLES IN SCHEMA market TO ta_reader;
    GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA market TO ta_reader;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ta_writer') THEN
    GRANT ta_reader TO ta_writer;
    GRANT INSERT, UPDATE, DELETE ON market.candles_1m TO ta_writer;
    GRANT INSERT ON market.data_quality_log TO ta_writer;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ta_rule_admin') THEN
    GRANT ta_reader TO ta_rule_admin;
    GRANT INSERT, UPDATE, DELETE ON market.alert_rules TO ta_rule_admin;
    GRANT UPDATE ON market.settings TO ta_rule_admin;
  END IF;
END
$$;

-- Nobody but the owner and ta_rule_admin may change rules; nobody but the triggers writes
-- state and alert history.
REVOKE ALL ON market.alert_rules, market.screener_state, market.alert_history, market.settings
  FROM PUBLIC;
