-- 004: the screener, as SQL users read it: one ta.screener_row per instrument and candle.
--
-- ta.screener_row (pg_ta) is the row type: windows W in 5m, 15m, 1h, 4h, 8h, 1d = the last 5,
-- 15, 60, 240, 480, 1440 stored candles of the instrument; every window metric is NULL until
-- its window is full (COMMENT ON TYPE ta.screener_row lists the columns).  The rows come from
-- pg_ta's screener engine; nothing here computes a metric.

CREATE OR REPLACE VIEW market.screener AS
SELECT (s."row").* FROM market.screener_state s WHERE (s.chain).candles IS NOT NULL;
COMMENT ON VIEW market.screener IS
  'One row per instrument (market, symbol): the screener (ta.screener_row) at its newest stored '
  '1m candle. Reads one stored row per instrument.';

-- The screener as of p_time: one row per instrument at its last candle with open_time <=
-- p_time.  Instruments whose head is at or before p_time use the stored head; the others are
-- computed from a checkpoint (at most a day + 2,879 candles per instrument).
CREATE OR REPLACE FUNCTION market.screener_at(p_time timestamptz DEFAULT NULL,
                                              p_market text DEFAULT NULL)
RETURNS SETOF ta.screener_row
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
WITH h AS (
  SELECT s.market, s.symbol, s.open_time, s."row"
    FROM market.screener_state s
   WHERE (s.chain).candles IS NOT NULL AND (p_market IS NULL OR s.market = p_market)
), past AS (   -- instruments whose head is after p_time: their last candle at or before it
  SELECT h.market, h.symbol, x.open_time
    FROM h
    JOIN LATERAL (SELECT c.open_time FROM market.candles_1m c
                   WHERE c.market = h.market AND c.symbol = h.symbol AND c.open_time <= p_time
                   ORDER BY c.open_time DESC LIMIT 1) x ON true
   WHERE p_time IS NOT NULL AND h.open_time > p_time
), runs AS (
  SELECT r.st
    FROM (SELECT array_agg(p.market) AS m, array_agg(p.symbol) AS s,
                 array_agg(market._warm_before(p.market, p.symbol, p.open_time)) AS w,
                 array_agg(p.open_time) AS t
            FROM past p) a,
         market._run(a.m, a.s, a.w, a.t, a.t, a.t) r
    JOIN past p ON p.market = r.market AND p.symbol = r.symbol AND p.open_time = r.open_time
)
SELECT (x."row").*
  FROM (SELECT h."row" FROM h WHERE p_time IS NULL OR h.open_time <= p_time
        UNION ALL
        SELECT (runs.st)."row" FROM runs) x
 ORDER BY (x."row").market, (x."row").symbol
$$;
COMMENT ON FUNCTION market.screener_at(timestamptz, text) IS
  'The screener (ta.screener_row) for every instrument (of p_market, or all) at its last stored '
  '1m candle with open_time <= p_time (NULL: the newest candle, as market.screener). Windows '
  'count stored candles, so an exchange outage makes a window span more wall-clock time. One row '
  'per instrument, ordered by market, symbol.';

-- Every candle of a range (charts, backtests).  The engine's rows stream through (market._run
-- is inlined); the row of each candle is returned as is.
CREATE OR REPLACE FUNCTION market._check_range(p_fname text, p_from timestamptz, p_to timestamptz)
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
  IF p_from IS NULL OR p_to IS NULL OR p_from > p_to THEN
    RAISE EXCEPTION '%: need p_from <= p_to, got [%, %]', p_fname, p_from, p_to
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  RETURN true;
END
$$;
COMMENT ON FUNCTION market._check_range(text, timestamptz, timestamptz) IS
  'Internal: true, or ERROR 22023 naming p_fname when [p_from, p_to] is not a range.';

-- The instruments a range covers (those with a candle at or after p_from), in key order.
CREATE OR REPLACE FUNCTION market._range_instruments(p_from timestamptz, p_symbols text[],
                                                     p_market text)
RETURNS TABLE (market text, symbol text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
SELECT i.market, i.symbol FROM market.screener_state i
 WHERE i.open_time >= p_from
   AND (p_market IS NULL OR i.market = p_market)
   AND (p_symbols IS NULL OR i.symbol = ANY (p_symbols))
 ORDER BY i.market, i.symbol
$$;
COMMENT ON FUNCTION market._range_instruments(timestamptz, text[], text) IS
  'Internal: the instruments (of p_market, with one of p_symbols; NULL = all) that have a candle '
  'at or after p_from, in (market, symbol) order.';

CREATE OR REPLACE FUNCTION market.screener_range(p_from timestamptz, p_to timestamptz,
                                                 p_symbols text[] DEFAULT NULL,
                                                 p_market text DEFAULT NULL)
RETURNS SETOF ta.screener_row
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
  i record;
BEGIN
  PERFORM market._check_range('market.screener_range', p_from, p_to);
  -- one instrument at a time: each run reads its candles in index order (nothing is sorted),
  -- and the result comes out ordered by market, symbol, open_time
  FOR i IN SELECT * FROM market._range_instruments(p_from, p_symbols, p_market) LOOP
    RETURN QUERY
      SELECT m.*
        FROM market._run1(i.market, i.symbol, market._warm_before(i.market, i.symbol, p_from),
                          p_to, p_from, p_to) x,
             LATERAL unnest(ARRAY[(x.st)."row"]) AS m   -- the row's columns, deformed once
       WHERE x.open_time >= p_from AND x.open_time <= p_to;
  END LOOP;
END
$$;
COMMENT ON FUNCTION market.screener_range(timestamptz, timestamptz, text[], text) IS
  'The screener (ta.screener_row) at every stored candle with open_time in [p_from, p_to] of the '
  'instruments with one of p_symbols (all when NULL) in p_market (all when NULL), ordered by '
  'market, symbol, open_time. Same values as market.screener_at and the live evaluation at each '
  'of those candles: computed from day checkpoints, windows reach back before p_from. Error '
  '22023 when p_from > p_to.';
