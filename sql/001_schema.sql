-- 001: schemas and extensions.  Idempotent: safe to apply any number of times, on a fresh
-- database or on one created by an earlier release (every file of sql/ upgrades in place).
--
-- pg_ta (schema ta) holds the pure indicator functions and the screener engine; everything
-- here lives in schema market and only *uses* ta.*.  Candles, rules and alert history never
-- depend on an extension type, so DROP EXTENSION pg_ta cannot take market data with it (it
-- refuses; with CASCADE it drops views, functions, triggers and the derived screener head
-- column, never candles).
CREATE SCHEMA IF NOT EXISTS market;
COMMENT ON SCHEMA market IS
  'pg_ta data schema: Binance 1m candles per (market, symbol), screener state, alert rules, '
  'alert history and delivery.';

-- The group roles (NOLOGIN) every later file grants to; what each may do is 090_roles.sql's.
-- Roles are cluster-wide: created once, kept when a database is dropped.
DO $$
DECLARE
  r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['ta_reader', 'ta_writer', 'ta_rule_admin', 'ta_notifier'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
      BEGIN
        EXECUTE format('CREATE ROLE %I NOLOGIN', r);
      EXCEPTION WHEN insufficient_privilege THEN
        RAISE NOTICE 'pg_ta: cannot create role % (needs CREATEROLE); skipped', r;
      WHEN duplicate_object OR unique_violation THEN
        NULL;  -- roles are cluster-wide: a migration of another database created it meanwhile
      END;
    END IF;
  END LOOP;
END
$$;

CREATE EXTENSION IF NOT EXISTS pg_ta;

-- A database created by an earlier release keeps its pg_ta version until ALTER EXTENSION
-- UPDATE: do it here, before anything below uses the new functions.
DO $$
DECLARE
  v_installed text;
  v_default text;
BEGIN
  SELECT e.extversion INTO v_installed FROM pg_catalog.pg_extension e WHERE e.extname = 'pg_ta';
  SELECT a.default_version INTO v_default FROM pg_catalog.pg_available_extensions a
   WHERE a.name = 'pg_ta';
  IF v_installed IS DISTINCT FROM v_default THEN
    RAISE NOTICE 'pg_ta: updating extension pg_ta % -> %', v_installed, v_default;
    ALTER EXTENSION pg_ta UPDATE;
  END IF;
END
$$;

-- TimescaleDB is optional.  It is used when the server can load it (it must be in
-- shared_preload_libraries); plain PostgreSQL gets ordinary tables with the same columns.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'timescaledb')
     AND EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions WHERE name = 'timescaledb')
     AND pg_catalog.current_setting('shared_preload_libraries') ~ '(^|[ ,])timescaledb($|[ ,])'
  THEN
    CREATE EXTENSION IF NOT EXISTS timescaledb;
  END IF;
END
$$;

-- True when market tables are (or will be made) hypertables.
CREATE OR REPLACE FUNCTION market.timescaledb_enabled() RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$ SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'timescaledb') $$;
COMMENT ON FUNCTION market.timescaledb_enabled() IS
  'true when the timescaledb extension is installed in this database (candles_1m and '
  'alert_history are then hypertables, candles_5m .. candles_1d continuous aggregates).';

-- The schema TimescaleDB's functions live in (NULL without TimescaleDB), for qualified calls.
CREATE OR REPLACE FUNCTION market._timescaledb_schema() RETURNS name
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$ SELECT n.nspname FROM pg_catalog.pg_extension e
     JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'timescaledb' $$;
COMMENT ON FUNCTION market._timescaledb_schema() IS
  'Internal: the schema of the timescaledb extension''s functions (NULL when not installed).';

CREATE OR REPLACE FUNCTION market.schema_version() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$ SELECT 3 $$;
COMMENT ON FUNCTION market.schema_version() IS
  'Version of the market data schema: 3 = pg_ta 0.3.0 (ticks, feature rows, rules over features); '
  '2 = pg_ta 0.2.0 (instruments are (market, symbol), bounded screener state, alert delivery). '
  'Files of sql/ upgrade versions 1 and 2 in place.';

-- True when the current role owns schema market (or is a member of its owner, or superuser):
-- the role that applies this schema.  Used to keep preset rules owner-only.
CREATE OR REPLACE FUNCTION market._is_owner() RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
SELECT pg_catalog.pg_has_role(current_user, n.nspowner, 'MEMBER')
  FROM pg_catalog.pg_namespace n WHERE n.nspname = 'market'
$$;
COMMENT ON FUNCTION market._is_owner() IS
  'Internal: true when current_user is (a member of) the owner of schema market, or a superuser.';

-- Makes a table a hypertable partitioned by time (TimescaleDB only; a no-op otherwise), in the
-- spelling TimescaleDB 2.29 documents (by_range), which 2.28 accepts too.
CREATE OR REPLACE FUNCTION market._create_hypertable(p_table regclass, p_column name,
                                                    p_chunk interval) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
  v_ts name := market._timescaledb_schema();
BEGIN
  IF v_ts IS NOT NULL THEN
    EXECUTE format('SELECT %I.create_hypertable(%L::regclass, %I.by_range(%L, %L::interval), '
                   'if_not_exists => true, migrate_data => true)',
                   v_ts, p_table, v_ts, p_column, p_chunk);
  END IF;
END
$$;
COMMENT ON FUNCTION market._create_hypertable(regclass, name, interval) IS
  'Internal: TimescaleDB only: create_hypertable(p_table, by_range(p_column, p_chunk), '
  'if_not_exists, migrate_data); does nothing on plain PostgreSQL.';
