-- 014: views over the tick tables (013): candles built from the trades, the book per minute,
-- and where trade-built candles and stored klines disagree.
--
--   market.trade_candles_1m   ta.kline over market.agg_trades per UTC minute: the columns of
--                             market.candles_1m (a Binance 1m kline is its minute's trades)
--   market.book_1m            ta.book_features over market.book_tickers per UTC minute
--   market.kline_trade_diffs  minutes where trade_candles_1m and candles_1m differ, with the
--                             fields that differ
--
-- TimescaleDB: trade_candles_1m and book_1m are continuous aggregates with real-time
-- aggregation (materialized_only = false) and refresh policies, like the candle rollups (009).
-- Plain PostgreSQL: views computing the same rows.  Their SELECT is written once per
-- implementation by market._tick_view_sql (the reference both are tested against).

-- close_time of a 1m kline whose open_time is p (Binance: open_time + 59.999 s).  IMMUTABLE:
-- a sub-day interval added to a timestamptz does not depend on the time zone, and continuous
-- aggregates accept only immutable functions (timestamptz + interval is STABLE in general).
CREATE OR REPLACE FUNCTION market._minute_close(p timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS
$$ SELECT p + interval '59.999 seconds' $$;
COMMENT ON FUNCTION market._minute_close(timestamptz) IS
  'Internal: the close_time of the 1m kline opening at p (p + 59.999 s, as Binance reports it); '
  'IMMUTABLE so that continuous aggregates may use it.';

-- The 1-minute bucket of a time column: time_bucket on TimescaleDB (what continuous aggregates
-- require), date_bin otherwise; both align minutes to UTC.
CREATE OR REPLACE FUNCTION market._tick_bucket(p_timescaledb name, p_column text)
RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS
$$
SELECT CASE WHEN p_timescaledb IS NOT NULL
            THEN format('%I.time_bucket(interval %L, %s)', p_timescaledb, '1 minute', p_column)
            ELSE format('pg_catalog.date_bin(interval %L, %s, timestamptz %L)', '1 minute', p_column,
                        '2000-01-01 00:00:00+00') END
$$;
COMMENT ON FUNCTION market._tick_bucket(name, text) IS
  'Internal: SQL of the UTC-minute bucket of time column p_column (TimescaleDB time_bucket from '
  'schema p_timescaledb, else date_bin).';

CREATE OR REPLACE FUNCTION market._tick_view_sql(p_view text, p_timescaledb name)
RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS
$f$
SELECT CASE p_view
WHEN 'trade_candles_1m' THEN format($q$
SELECT t.symbol,
       %1$s AS open_time,
       market._minute_close(%1$s) AS close_time,
       (ta.kline(t.agg_trade_id, t.price, t.quantity, t.first_trade_id, t.last_trade_id, t.is_buyer_maker)).open AS open,
       (ta.kline(t.agg_trade_id, t.price, t.quantity, t.first_trade_id, t.last_trade_id, t.is_buyer_maker)).high AS high,
       (ta.kline(t.agg_trade_id, t.price, t.quantity, t.first_trade_id, t.last_trade_id, t.is_buyer_maker)).low AS low,
       (ta.kline(t.agg_trade_id, t.price, t.quantity, t.first_trade_id, t.last_trade_id, t.is_buyer_maker)).close AS close,
       (ta.kline(t.agg_trade_id, t.price, t.quantity, t.first_trade_id, t.last_trade_id, t.is_buyer_maker)).volume AS volume,
       (ta.kline(t.agg_trade_id, t.price, t.quantity, t.first_trade_id, t.last_trade_id, t.is_buyer_maker)).quote_volume AS quote_volume,
       (ta.kline(t.agg_trade_id, t.price, t.quantity, t.first_trade_id, t.last_trade_id, t.is_buyer_maker)).trades AS trades,
       (ta.kline(t.agg_trade_id, t.price, t.quantity, t.first_trade_id, t.last_trade_id, t.is_buyer_maker)).taker_buy_volume AS taker_buy_volume,
       (ta.kline(t.agg_trade_id, t.price, t.quantity, t.first_trade_id, t.last_trade_id, t.is_buyer_maker)).taker_buy_quote_volume AS taker_buy_quote_volume,
       t.market
  FROM market.agg_trades t
 GROUP BY t.market, t.symbol, %1$s$q$, market._tick_bucket(p_timescaledb, 't.transact_time'))
WHEN 'book_1m' THEN format($q$
SELECT b.market, b.symbol,
       %1$s AS open_time,
       (ta.book_features(b.event_time, b.update_id, b.best_bid_price, b.best_bid_qty, b.best_ask_price, b.best_ask_qty, interval '1 minute')).imbalance AS imbalance,
       (ta.book_features(b.event_time, b.update_id, b.best_bid_price, b.best_bid_qty, b.best_ask_price, b.best_ask_qty, interval '1 minute')).spread_bps AS spread_bps,
       (ta.book_features(b.event_time, b.update_id, b.best_bid_price, b.best_bid_qty, b.best_ask_price, b.best_ask_qty, interval '1 minute')).spread_bps_last AS spread_bps_last,
       (ta.book_features(b.event_time, b.update_id, b.best_bid_price, b.best_bid_qty, b.best_ask_price, b.best_ask_qty, interval '1 minute')).weighted_mid AS weighted_mid,
       (ta.book_features(b.event_time, b.update_id, b.best_bid_price, b.best_bid_qty, b.best_ask_price, b.best_ask_qty, interval '1 minute')).mid AS mid,
       (ta.book_features(b.event_time, b.update_id, b.best_bid_price, b.best_bid_qty, b.best_ask_price, b.best_ask_qty, interval '1 minute')).weighted_mid_offset_bps AS weighted_mid_offset_bps,
       (ta.book_features(b.event_time, b.update_id, b.best_bid_price, b.best_bid_qty, b.best_ask_price, b.best_ask_qty, interval '1 minute')).updates AS updates
  FROM market.book_tickers b
 GROUP BY b.market, b.symbol, %1$s$q$, market._tick_bucket(p_timescaledb, 'b.event_time'))
END
$f$;

COMMENT ON FUNCTION market._tick_view_sql(text, name) IS
  'Internal: the SELECT of market.trade_candles_1m (p_view = trade_candles_1m) or market.book_1m '
  '(book_1m), with TimescaleDB''s time_bucket from schema p_timescaledb or date_bin (same rows). '
  'ta.kline / ta.book_features appear once per output column; PostgreSQL computes identical '
  'aggregate calls once per group.';

DO $$
DECLARE
  r record;
  v_tsdb boolean := market.timescaledb_enabled();
  v_ts name := market._timescaledb_schema();
  v_kind "char";
BEGIN
  FOR r IN SELECT * FROM (VALUES
      ('trade_candles_1m',
       'Candles built from the trades of market.agg_trades, one row per (market, symbol, UTC minute) '
       'that has trades, with the columns of market.candles_1m: open_time = the minute, close_time = '
       'open_time + 59.999 s, the other fields = ta.kline over the minute''s aggregate trades (open/close '
       '= price of the lowest/highest agg_trade_id, high/low, volume = sum quantity, quote_volume = sum '
       'price*quantity, trades = sum(last_trade_id - first_trade_id + 1), taker buy sums over '
       'is_buyer_maker = false; exact numerics). Equal to Binance''s 1m kline when every trade of the '
       'minute is stored; market.kline_trade_diffs lists the minutes where they differ.'),
      ('book_1m',
       'Book features per (market, symbol, UTC minute) that has best bid/ask updates in '
       'market.book_tickers: ta.book_features(event_time, update_id, best_bid_price, best_bid_qty, '
       'best_ask_price, best_ask_qty, ''1 minute'') expanded (imbalance = time-weighted (B-A)/(B+A), '
       'spread_bps = time-weighted spread in basis points, spread_bps_last, weighted_mid = '
       '(a*B + b*A)/(A+B) of the last quote (Stoikov 2018), mid, weighted_mid_offset_bps, updates). '
       'Each quote stands until the next one, the last until the end of the minute; the time before '
       'the first update of the minute is not covered. What a live feature row used is frozen in '
       'market.book_1m_frozen (see market.book_1m_late for minutes whose ticks arrived later).'))
    AS t(name, doc) LOOP
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
        EXECUTE format('CREATE MATERIALIZED VIEW market.%I WITH (timescaledb.continuous, '
                       'timescaledb.materialized_only = false) AS %s WITH NO DATA',
                       r.name, market._tick_view_sql(r.name, v_ts));
        -- every invalidated bucket is refreshed (late and imported ticks too); the open minute
        -- is left to real-time aggregation
        EXECUTE format('SELECT %I.add_continuous_aggregate_policy(%L::regclass, '
                       'start_offset => NULL, end_offset => %L::interval, '
                       'schedule_interval => %L::interval, if_not_exists => true)',
                       v_ts, format('market.%I', r.name), '1 minute', '1 minute');
      END IF;
    ELSE
      EXECUTE format('CREATE OR REPLACE VIEW market.%I AS %s', r.name,
                     market._tick_view_sql(r.name, NULL));
    END IF;
    EXECUTE format('COMMENT ON VIEW market.%I IS %L', r.name,
                   r.doc || CASE WHEN v_tsdb
                                 THEN ' A TimescaleDB continuous aggregate with real-time '
                                      'aggregation (refreshed every minute).'
                                 ELSE ' A view (always current).' END);
  END LOOP;
END
$$;

-- Data quality: the minutes where the candle built from stored trades and the stored kline
-- differ.  Compared: minutes with a stored kline and trades, minutes with trades but no kline,
-- and minutes whose kline counts trades but that have none stored while the instrument has
-- stored trades before and after them (a hole in the trades); minutes before an instrument's
-- first or after its last stored trade are not compared (trades are kept for less time than
-- klines).
CREATE OR REPLACE VIEW market.kline_trade_diffs AS
WITH spans AS (
  SELECT t.market, t.symbol, min(t.transact_time) AS first_trade, max(t.transact_time) AS last_trade
    FROM market.agg_trades t GROUP BY t.market, t.symbol
), klines AS (
  SELECT k.market, k.symbol, k.open_time, k AS kline FROM market.candles_1m k
    JOIN spans s ON s.market = k.market AND s.symbol = k.symbol
   WHERE k.open_time >= pg_catalog.date_bin('1 minute', s.first_trade, timestamptz '2000-01-01 00:00:00+00')
     AND k.open_time <= s.last_trade
), pairs AS (
  SELECT coalesce(k.market, c.market) AS market, coalesce(k.symbol, c.symbol) AS symbol,
         coalesce(k.open_time, c.open_time) AS open_time, k.kline, c AS built
    FROM klines k
    FULL JOIN market.trade_candles_1m c
      ON c.market = k.market AND c.symbol = k.symbol AND c.open_time = k.open_time
)
SELECT p.market, p.symbol, p.open_time,
       CASE WHEN (p.kline).open_time IS NULL THEN ARRAY['kline']
            WHEN (p.built).open_time IS NULL THEN ARRAY['trades']
            ELSE array_remove(ARRAY[
              CASE WHEN (p.kline).close_time <> (p.built).close_time THEN 'close_time' END,
              CASE WHEN (p.kline).open <> (p.built).open THEN 'open' END,
              CASE WHEN (p.kline).high <> (p.built).high THEN 'high' END,
              CASE WHEN (p.kline).low <> (p.built).low THEN 'low' END,
              CASE WHEN (p.kline).close <> (p.built).close THEN 'close' END,
              CASE WHEN (p.kline).volume <> (p.built).volume THEN 'volume' END,
              CASE WHEN (p.kline).quote_volume <> (p.built).quote_volume THEN 'quote_volume' END,
              CASE WHEN (p.kline).trades <> (p.built).trades THEN 'trades' END,
              CASE WHEN (p.kline).taker_buy_volume <> (p.built).taker_buy_volume THEN 'taker_buy_volume' END,
              CASE WHEN (p.kline).taker_buy_quote_volume <> (p.built).taker_buy_quote_volume
                   THEN 'taker_buy_quote_volume' END], NULL)
       END AS differs,
       p.kline, p.built
  FROM pairs p
  JOIN spans s ON s.market = p.market AND s.symbol = p.symbol
 WHERE p.open_time >= pg_catalog.date_bin('1 minute', s.first_trade, timestamptz '2000-01-01 00:00:00+00')
   AND p.open_time <= s.last_trade
   AND ((p.kline).open_time IS NULL
        OR ((p.built).open_time IS NULL AND (p.kline).trades > 0)
        OR ((p.built).open_time IS NOT NULL AND (p.kline).open_time IS NOT NULL
            AND ((p.kline).close_time, (p.kline).open, (p.kline).high, (p.kline).low,
                 (p.kline).close, (p.kline).volume, (p.kline).quote_volume, (p.kline).trades,
                 (p.kline).taker_buy_volume, (p.kline).taker_buy_quote_volume)
                IS DISTINCT FROM
                ((p.built).close_time, (p.built).open, (p.built).high, (p.built).low,
                 (p.built).close, (p.built).volume, (p.built).quote_volume, (p.built).trades,
                 (p.built).taker_buy_volume, (p.built).taker_buy_quote_volume)));
COMMENT ON VIEW market.kline_trade_diffs IS
  'Data quality: one row per (market, symbol, open_time) where the candle built from the stored '
  'trades (market.trade_candles_1m) and the stored kline (market.candles_1m) differ, within the '
  'span of the instrument''s stored trades (its first trade''s minute to its last trade). differs '
  'names the fields that differ by value (numerics compared as numbers: 1.0 = 1.00): close_time, '
  'open, high, low, close, volume, quote_volume, trades, taker_buy_volume, taker_buy_quote_volume; '
  '{kline} when there is no stored kline for a minute with trades, {trades} when the kline counts '
  'trades but none are stored (a hole in the trades). kline and built hold both rows. The first '
  'and last minute of the span are often partial (trades kept from mid-minute) and then listed. '
  'Filter by market, symbol and open_time: the view reads both tables.';
