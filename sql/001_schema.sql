-- 001: schemas and extensions.  Idempotent: safe to apply any number of times.
--
-- pg_ta (schema ta) holds the pure indicator functions; everything here lives in schema
-- market and only *uses* ta.*.  Market data never depends on an extension type, so
-- DROP EXTENSION pg_ta cannot take a table with it (it refuses, or with CASCADE drops only
-- views and functions, never candles).
CREATE SCHEMA IF NOT EXISTS market;
COMMENT ON SCHEMA market IS
  'pg_ta data schema: Binance 1m candles, screener state, alert rules and alert history.';

CREATE EXTENSION IF NOT EXISTS pg_ta;

-- TimescaleDB is optional.  It is used when the server can load it (it must be in
-- shared_preload_libraries); plain PostgreSQL gets ordinary tables with the same columns.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')
     AND EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')
     AND current_setting('shared_preload_libraries') ~ '(^|[ ,])timescaledb($|[ ,])'
  THEN
    CREATE EXTENSION IF NOT EXISTS timescaledb;
  END IF;
END
$$;

-- True when market tables are (or will be made) hypertables.
CREATE OR REPLACE FUNCTION market.timescaledb_enabled() RETURNS boolean
LANGUAGE sql STABLE AS
$$ SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') $$;
COMMENT ON FUNCTION market.timescaledb_enabled() IS
  'true when the timescaledb extension is installed in this database (candles are then a hypertable).';
