-- 009: candles of 5 minutes, 15 minutes, 1 hour, 4 hours and 1 day, with the columns of
-- market.candles_1m: open_time = start of the bucket (aligned to UTC midnight, as Binance's
-- klines of these intervals), close_time = close_time of its last 1m candle, open = first open,
-- close = last close, high = max, low = min, volume / quote_volume / trades / taker volumes =
-- sums.  A bucket exists when it has at least one 1m candle.
--
-- TimescaleDB: continuous aggregates (time_bucket, first/last) with a refresh policy and
-- real-time aggregation (materialized_only = false), so the newest bucket is always current.
-- Plain PostgreSQL: views computing the same rows (date_bin, ta.first/ta.last).
-- ta.* indicators work over any of them, e.g.
--   SELECT open_time, ta.rsi(close, 14) OVER (PARTITION BY market, symbol ORDER BY open_time)
--     FROM market.candles_1h WHERE market = 'usdm' AND symbol = 'LINKUSDT';

-- The plain-PostgreSQL definition of one rollup: the reference both implementations are
-- tested against (pg_regress market_rollups).
CREATE OR REPLACE FUNCTION market._rollup_sql(p_width interval, p_timescaledb name)
RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS
$f$
SELECT format($q$
SELECT c.market, c.symbol,
       %1$s AS open_time,
       max(c.close_time) AS close_time,
       %2$s(c.open, c.open_time) AS open,
       max(c.high) AS high,
       min(c.low) AS low,
       %3$s(c.close, c.open_time) AS close,
       sum(c.volume) AS volume,
       sum(c.quote_volume) AS quote_volume,
       sum(c.trades)::bigint AS trades,
       sum(c.taker_buy_volume) AS taker_buy_volume,
       sum(c.taker_buy_quote_volume) AS taker_buy_quote_volume
  FROM market.candles_1m c
 GROUP BY c.market, c.symbol, %1$s$q$,
  CASE WHEN p_timescaledb IS NOT NULL
       THEN format('%I.time_bucket(%L::interval, c.open_time)', p_timescaledb, p_width)
       ELSE format('pg_catalog.date_bin(%L::interval, c.open_time, timestamptz %L)', p_width,
                   '2000-01-01 00:00:00+00') END,
  CASE WHEN p_timescaledb IS NOT NULL THEN format('%I.first', p_timescaledb) ELSE 'ta.first' END,
  CASE WHEN p_timescaledb IS NOT NULL THEN format('%I.last', p_timescaledb) ELSE 'ta.last' END)
$f$;
COMMENT ON FUNCTION market._rollup_sql(interval, name) IS
  'Internal: the SELECT of a rollup of market.candles_1m into buckets of p_width (TimescaleDB''s '
  'time_bucket/first/last from schema p_timescaledb, else date_bin/ta.first/ta.last; same rows).';

DO $$
DECLARE
  r record;
  v_tsdb boolean := market.timescaledb_enabled();
  v_ts name := market._timescaledb_schema();
  v_kind "char";
BEGIN
  FOR r IN SELECT * FROM (VALUES
      ('candles_5m', interval '5 minutes', interval '1 minute'),
      ('candles_15m', interval '15 minutes', interval '5 minutes'),
      ('candles_1h', interval '1 hour', interval '15 minutes'),
      ('candles_4h', interval '4 hours', interval '1 hour'),
      ('candles_1d', interval '1 day', interval '1 hour'))
    AS t(name, width, schedule) LOOP
    SELECT c.relkind INTO v_kind FROM pg_catalog.pg_class c
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = 'market' AND c.relname = r.name;
    IF v_tsdb THEN
      -- a continuous aggregate shows up as a view over its materialization hypertable
      IF v_kind = 'v' AND NOT EXISTS (
           SELECT 1 FROM timescaledb_information.continuous_aggregates
            WHERE view_schema = 'market' AND view_name = r.name) THEN
        EXECUTE format('DROP VIEW market.%I', r.name);
        v_kind := NULL;
      END IF;
      IF v_kind IS NULL THEN
        -- WITH NO DATA: migrations run in one transaction, where a refresh cannot; real-time
        -- aggregation serves what is not materialized yet, the policy materializes it
        EXECUTE format('CREATE MATERIALIZED VIEW market.%I WITH (timescaledb.continuous, '
                       'timescaledb.materialized_only = false) AS %s WITH NO DATA',
                       r.name, market._rollup_sql(r.width, v_ts));
        -- start_offset NULL: every invalidated bucket is refreshed (imports of old history
        -- too); the open bucket is left to real-time aggregation
        EXECUTE format('SELECT %I.add_continuous_aggregate_policy(%L::regclass, '
                       'start_offset => NULL, end_offset => %L::interval, '
                       'schedule_interval => %L::interval, if_not_exists => true)',
                       v_ts, format('market.%I', r.name), r.width, r.schedule);
      END IF;
    ELSE
      EXECUTE format('CREATE OR REPLACE VIEW market.%I AS %s', r.name,
                     market._rollup_sql(r.width, NULL));
    END IF;
    -- (a continuous aggregate is a view over its materialization hypertable)
    EXECUTE format('COMMENT ON VIEW market.%I IS %L', r.name,
                   format('Candles of %s per (market, symbol) rolled up from market.candles_1m, '
                          'same columns: open_time = bucket start (UTC-aligned), close_time = '
                          'last 1m close_time, open = first open, close = last close, high = max, '
                          'low = min, volumes/trades = sums. %s', r.width,
                          CASE WHEN v_tsdb
                               THEN 'A TimescaleDB continuous aggregate with real-time '
                                    'aggregation (refreshed every ' || r.schedule || ').'
                               ELSE 'A view (always current).' END));
  END LOOP;
END
$$;
