-- 015: feature rows for models and rules (pg_ta 0.3.0, feature set 1: ta.feature_row).
--
-- A feature row belongs to an instrument and a minute m and uses only candles with open_time
-- <= m and book updates before m + 1 minute.  One engine computes it (pg_ta's feature engine:
-- the screener engine plus the features' exact rolling sums), so
--   market.features_range(...)  the rows of stored history (training sets, research),
--   market.features             the newest row per instrument, written by the candle trigger
--                               at every close (sql/003, 006), and
--   NOTIFY ta_features          those rows for models listening (ta.feature_payloads: about
--                               14 rows per notification, each as its 42 doubles in base64),
-- are equal bit for bit.  Feature columns are rule variables (ta.signal_row, sql/005, 006,
-- 008), live and in backtests.
--
-- Book features and late ticks.  ta-feed writes minute m's book tickers before minute m's
-- candle; the candle trigger computes that minute's book features from what is stored at that
-- moment and freezes them in market.book_1m_frozen (one small row per instrument with book
-- data and minute it evaluated).  Every later computation of minute m (features_range,
-- backtests, recomputes after bulk writes, a session's cache reload) reads the frozen row, so
-- it sees exactly what the live row saw even when more book tickers of minute m arrive after
-- its candle (market.book_1m_late lists those minutes).  Minutes without a frozen row
-- (imported history, instruments without book data at candle time) are computed from the
-- stored book tickers.

ALTER TABLE market.settings
  ADD COLUMN IF NOT EXISTS live_features boolean NOT NULL DEFAULT true;
COMMENT ON COLUMN market.settings.live_features IS
  'true (default): at every candle close the trigger stores the instrument''s feature row in '
  'market.features, freezes the minute''s book features (market.book_1m_frozen, instruments with '
  'book tickers only) and sends NOTIFY ta_features (for evaluated minutes). false: none of that '
  '(market.features is empty); rules still see the candle features, but book features are NULL '
  'for them live.';

CREATE OR REPLACE FUNCTION market.features_channel() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS
$$ SELECT 'ta_features'::text $$;
COMMENT ON FUNCTION market.features_channel() IS
  'The NOTIFY channel feature rows are sent on: ta_features, at every evaluated close. Payload '
  '(ta.feature_payloads): JSON {"version": ta.feature_version(), "rows": [{"market", "symbol", '
  '"open_time" (ISO 8601 UTC, milliseconds), "features"}, ...]}, about 14 rows per notification, '
  'features = base64 of ta.feature_bytes(row): the 42 feature columns as little-endian doubles '
  'in ta.feature_row order from ret_1m, NULL as NaN (numpy.frombuffer(base64.b64decode(f), '
  '''<f8'')). The values are market.features'' and features_range''s, bit for bit.';

-- ---------------------------------------------------------------------------------------
-- The book of a minute, as the engine reads it.  Plain SQL functions without SET, inlined into
-- their callers: written search_path-proof (everything qualified).

CREATE OR REPLACE FUNCTION market._has_book(p_market text, p_symbol text) RETURNS boolean
LANGUAGE sql STABLE AS
$$
SELECT EXISTS (SELECT 1 FROM market.book_tickers t
                WHERE t.market OPERATOR(pg_catalog.=) p_market
                  AND t.symbol OPERATOR(pg_catalog.=) p_symbol)
    OR EXISTS (SELECT 1 FROM market.book_1m_frozen f
                WHERE f.market OPERATOR(pg_catalog.=) p_market
                  AND f.symbol OPERATOR(pg_catalog.=) p_symbol)
$$;
COMMENT ON FUNCTION market._has_book(text, text) IS
  'Internal: true when the instrument has book tickers or frozen book minutes.';

-- p_gate false: no row, and nothing is read (callers pass "this candle needs its book and the
-- instrument has book data"; a condition on the result would be applied after the LIMIT, i.e.
-- after both lookups)
CREATE OR REPLACE FUNCTION market._book_at(p_market text, p_symbol text, p_open_time timestamptz,
                                           p_gate boolean DEFAULT true)
RETURNS TABLE (imbalance double precision, spread_bps double precision,
               wmid_offset_bps double precision, updates bigint, frozen boolean)
LANGUAGE sql STABLE AS
$$
(SELECT f.imbalance, f.spread_bps, f.wmid_offset_bps, f.updates, true
   FROM market.book_1m_frozen f
  WHERE p_gate
    AND f.market OPERATOR(pg_catalog.=) p_market AND f.symbol OPERATOR(pg_catalog.=) p_symbol
    AND f.open_time OPERATOR(pg_catalog.=) p_open_time)
UNION ALL
(SELECT (r.b).imbalance, (r.b).spread_bps, (r.b).weighted_mid_offset_bps,
        coalesce((r.b).updates, 0::bigint), false
   FROM (SELECT ta.book_features(t.event_time, t.update_id, t.best_bid_price, t.best_bid_qty,
                                 t.best_ask_price, t.best_ask_qty, '00:01:00'::interval) AS b
           FROM market.book_tickers t
          WHERE t.market OPERATOR(pg_catalog.=) p_market AND t.symbol OPERATOR(pg_catalog.=) p_symbol
            AND t.event_time OPERATOR(pg_catalog.>=) p_open_time
            AND t.event_time OPERATOR(pg_catalog.<) (p_open_time OPERATOR(pg_catalog.+) '00:01:00'::interval)) r
  WHERE p_gate)
LIMIT 1
$$;
COMMENT ON FUNCTION market._book_at(text, text, timestamptz, boolean) IS
  'Internal: the book features of the minute opening at p_open_time as the feature engine reads '
  'them: the frozen row of market.book_1m_frozen when there is one (frozen = true), else '
  'ta.book_features over the stored book tickers of the minute (updates 0 and NULL values when '
  'there are none). Exactly one row when p_gate, none (and no read) otherwise.';

-- open_time of the (Z_WINDOW - 1) = 59th stored candle before p_time (-infinity when there are
-- fewer): the book features of the candles from there on enter the _z columns of p_time's row.
CREATE OR REPLACE FUNCTION market._book_from(p_market text, p_symbol text, p_time timestamptz)
RETURNS timestamptz
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
SELECT coalesce((SELECT c.open_time FROM market.candles_1m c
                  WHERE c.market = p_market AND c.symbol = p_symbol AND c.open_time < p_time
                  ORDER BY c.open_time DESC OFFSET 58 LIMIT 1), '-infinity')
$$;
COMMENT ON FUNCTION market._book_from(text, text, timestamptz) IS
  'Internal: open_time of the 59th stored candle of the instrument before p_time (-infinity when '
  'fewer): the first candle whose book features a row at p_time needs (its _z columns use 60).';

-- ---------------------------------------------------------------------------------------
-- The set-based runs (as market._run1 in sql/003): the feature engine over one instrument's
-- candles from its start checkpoint up to p_run_to, each candle with its minute's book
-- features from p_book_from on.  Three results: the full state (recompute), the rule rows
-- (backtests), the feature rows (features_range, training sets).

CREATE OR REPLACE FUNCTION market._frun1(p_market text, p_symbol text, p_start_before timestamptz,
                                         p_run_to timestamptz, p_emit_from timestamptz,
                                         p_emit_to timestamptz, p_book_from timestamptz)
RETURNS TABLE (market text, symbol text, open_time timestamptz, st ta.feature_state)
LANGUAGE sql STABLE AS
$$
SELECT x.market, x.symbol, x.open_time, x.st
  FROM (SELECT c.market, c.symbol, c.open_time,
               ta._features_state(c.market, c.symbol, c.open_time, c.close_time, c.open, c.high,
                                  c.low, c.close, c.volume, c.quote_volume, c.taker_buy_volume,
                                  b.imbalance, b.spread_bps, b.wmid_offset_bps,
                                  (SELECT s.ck FROM market._start(p_market, p_symbol, p_start_before) s),
                                  p_emit_from, p_emit_to)
                 OVER (ORDER BY c.open_time ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS st
          FROM market.candles_1m c
          -- (has_book as a column, not a sub-select in the arguments: that would keep
          -- PostgreSQL from inlining _book_at, which then runs as a function per candle)
          -- (has_book and book_from computed once: OFFSET 0 keeps the planner from copying
          -- the expressions into the per-candle filter)
          CROSS JOIN (SELECT market._has_book(p_market, p_symbol) AS has_book,
                             p_book_from AS book_from OFFSET 0) g
          LEFT JOIN LATERAL market._book_at(c.market, c.symbol, c.open_time,
                                            g.has_book AND c.open_time OPERATOR(pg_catalog.>=) g.book_from) b ON true
         WHERE c.market OPERATOR(pg_catalog.=) p_market
           AND c.symbol OPERATOR(pg_catalog.=) p_symbol
           AND c.open_time OPERATOR(pg_catalog.>=)
               coalesce((SELECT s.ck_time FROM market._start(p_market, p_symbol, p_start_before) s),
                        '-infinity'::timestamptz)
           AND c.open_time OPERATOR(pg_catalog.<=) p_run_to) x
 WHERE ((x.st).chain).candles IS NOT NULL
$$;
COMMENT ON FUNCTION market._frun1(text, text, timestamptz, timestamptz, timestamptz, timestamptz, timestamptz) IS
  'Internal: market._run1 with the feature engine (ta._features_state): the ta.feature_state of '
  'the candles in [p_emit_from, p_emit_to] and of every first candle of a UTC day; book features '
  '(market._book_at) for the candles from p_book_from on. Inlined into its callers.';

CREATE OR REPLACE FUNCTION market._frun(p_market text[], p_symbol text[],
                                        p_start_before timestamptz[], p_run_to timestamptz[],
                                        p_emit_from timestamptz[], p_emit_to timestamptz[],
                                        p_book_from timestamptz[])
RETURNS TABLE (market text, symbol text, open_time timestamptz, st ta.feature_state)
LANGUAGE sql STABLE AS
$$
SELECT x.market, x.symbol, x.open_time, x.st
  FROM ROWS FROM (pg_catalog.unnest(p_market), pg_catalog.unnest(p_symbol),
                  pg_catalog.unnest(p_start_before), pg_catalog.unnest(p_run_to),
                  pg_catalog.unnest(p_emit_from), pg_catalog.unnest(p_emit_to),
                  pg_catalog.unnest(p_book_from))
         AS r(market, symbol, start_before, run_to, emit_from, emit_to, book_from),
       LATERAL market._frun1(r.market, r.symbol, r.start_before, r.run_to, r.emit_from,
                             r.emit_to, r.book_from) x
$$;
COMMENT ON FUNCTION market._frun(text[], text[], timestamptz[], timestamptz[], timestamptz[], timestamptz[], timestamptz[]) IS
  'Internal: market._frun1 for each element of the arrays, instrument after instrument. Inlined '
  'into its callers.';

CREATE OR REPLACE FUNCTION market._srun1(p_market text, p_symbol text, p_start_before timestamptz,
                                         p_run_to timestamptz, p_emit_from timestamptz,
                                         p_emit_to timestamptz, p_book_from timestamptz)
RETURNS TABLE (open_time timestamptz, sig ta.signal_row)
LANGUAGE sql STABLE AS
$$
SELECT x.open_time, x.sig
  FROM (SELECT c.open_time,
               ta._signal_rows(c.market, c.symbol, c.open_time, c.close_time, c.open, c.high,
                               c.low, c.close, c.volume, c.quote_volume, c.taker_buy_volume,
                               b.imbalance, b.spread_bps, b.wmid_offset_bps,
                               (SELECT s.ck FROM market._start(p_market, p_symbol, p_start_before) s),
                               p_emit_from, p_emit_to)
                 OVER (ORDER BY c.open_time ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS sig
          FROM market.candles_1m c
          -- (has_book as a column, not a sub-select in the arguments: that would keep
          -- PostgreSQL from inlining _book_at, which then runs as a function per candle)
          -- (has_book and book_from computed once: OFFSET 0 keeps the planner from copying
          -- the expressions into the per-candle filter)
          CROSS JOIN (SELECT market._has_book(p_market, p_symbol) AS has_book,
                             p_book_from AS book_from OFFSET 0) g
          LEFT JOIN LATERAL market._book_at(c.market, c.symbol, c.open_time,
                                            g.has_book AND c.open_time OPERATOR(pg_catalog.>=) g.book_from) b ON true
         WHERE c.market OPERATOR(pg_catalog.=) p_market
           AND c.symbol OPERATOR(pg_catalog.=) p_symbol
           AND c.open_time OPERATOR(pg_catalog.>=)
               coalesce((SELECT s.ck_time FROM market._start(p_market, p_symbol, p_start_before) s),
                        '-infinity'::timestamptz)
           AND c.open_time OPERATOR(pg_catalog.<=) p_run_to) x
 WHERE (x.sig).open_time IS NOT NULL
$$;
COMMENT ON FUNCTION market._srun1(text, text, timestamptz, timestamptz, timestamptz, timestamptz, timestamptz) IS
  'Internal (backtests): the feature engine over one instrument (ta._signal_rows): the '
  'ta.signal_row (what rules read) of each candle in [p_emit_from, p_emit_to], in open_time order. '
  'Inlined into its callers.';

CREATE OR REPLACE FUNCTION market._frows1_composite(p_market text, p_symbol text,
                                                    p_start_before timestamptz,
                                                    p_run_to timestamptz, p_emit_from timestamptz,
                                                    p_emit_to timestamptz, p_book_from timestamptz)
RETURNS TABLE (open_time timestamptz, f ta.feature_row)
LANGUAGE sql STABLE AS
$$
SELECT (x.f).open_time, x.f
  FROM (SELECT ta._feature_rows(c.market, c.symbol, c.open_time, c.close_time, c.open, c.high,
                                c.low, c.close, c.volume, c.quote_volume, c.taker_buy_volume,
                                b.imbalance, b.spread_bps, b.wmid_offset_bps,
                                (SELECT s.ck FROM market._start(p_market, p_symbol, p_start_before) s),
                                p_emit_from, p_emit_to)
                 OVER (ORDER BY c.open_time ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS f
          FROM market.candles_1m c
          -- (has_book as a column, not a sub-select in the arguments: that would keep
          -- PostgreSQL from inlining _book_at, which then runs as a function per candle)
          -- (has_book and book_from computed once: OFFSET 0 keeps the planner from copying
          -- the expressions into the per-candle filter)
          CROSS JOIN (SELECT market._has_book(p_market, p_symbol) AS has_book,
                             p_book_from AS book_from OFFSET 0) g
          LEFT JOIN LATERAL market._book_at(c.market, c.symbol, c.open_time,
                                            g.has_book AND c.open_time OPERATOR(pg_catalog.>=) g.book_from) b ON true
         WHERE c.market OPERATOR(pg_catalog.=) p_market
           AND c.symbol OPERATOR(pg_catalog.=) p_symbol
           AND c.open_time OPERATOR(pg_catalog.>=)
               coalesce((SELECT s.ck_time FROM market._start(p_market, p_symbol, p_start_before) s),
                        '-infinity'::timestamptz)
           AND c.open_time OPERATOR(pg_catalog.<=) p_run_to) x
 WHERE (x.f).open_time IS NOT NULL
$$;
COMMENT ON FUNCTION market._frows1_composite(text, text, timestamptz, timestamptz, timestamptz, timestamptz, timestamptz) IS
  'Internal (features_range, feature_vectors): the feature engine over one instrument without '
  'screener rows or numeric arithmetic (ta._feature_rows): the ta.feature_row of each candle in '
  '[p_emit_from, p_emit_to], in open_time order, as one composite column (f) beside its '
  'open_time (a lone composite column would be expanded). Inlined into its callers.';

CREATE OR REPLACE FUNCTION market._frows1(p_market text, p_symbol text, p_start_before timestamptz,
                                          p_run_to timestamptz, p_emit_from timestamptz,
                                          p_emit_to timestamptz, p_book_from timestamptz)
RETURNS SETOF ta.feature_row
LANGUAGE sql STABLE AS
$$
SELECT m.*
  FROM market._frows1_composite(p_market, p_symbol, p_start_before, p_run_to, p_emit_from,
                                p_emit_to, p_book_from) x,
       LATERAL pg_catalog.unnest(ARRAY[x.f]) AS m   -- the row's columns, deformed once
$$;
COMMENT ON FUNCTION market._frows1(text, text, timestamptz, timestamptz, timestamptz, timestamptz, timestamptz) IS
  'Internal (features_range, training sets): market._frows1_composite with the row''s columns '
  'expanded. Inlined into its callers.';

-- ---------------------------------------------------------------------------------------
-- Public: rows of history, and the newest row per instrument.

-- The instruments a range of feature rows reads (features_range, feature_vectors).
CREATE OR REPLACE FUNCTION market._range_of_features(p_fname text, p_markets text[],
                                                    p_symbols text[], p_from timestamptz,
                                                    p_to timestamptz)
RETURNS TABLE (market text, symbol text)
LANGUAGE sql STABLE AS
$$
SELECT s.market, s.symbol FROM market.screener_state s
 WHERE (SELECT market._check_range(p_fname, p_from, p_to))
   AND s.open_time OPERATOR(pg_catalog.>=) p_from
   AND (p_markets IS NULL OR s.market OPERATOR(pg_catalog.=) ANY (p_markets))
   AND (p_symbols IS NULL OR s.symbol OPERATOR(pg_catalog.=) ANY (p_symbols))
 ORDER BY s.market, s.symbol
$$;
COMMENT ON FUNCTION market._range_of_features(text, text[], text[], timestamptz, timestamptz) IS
  'Internal (features_range, feature_vectors): the instruments of p_markets with one of '
  'p_symbols (NULL = all) whose newest candle is at or after p_from, by market and symbol; '
  'error 22023 (naming p_fname) when p_from > p_to. Inlined into its callers.';

-- A plain SQL function without SET, so that PostgreSQL inlines it: rows stream to the caller
-- (COPY ... TO STDOUT of a year of features holds nothing in memory); written search_path-proof.
CREATE OR REPLACE FUNCTION market.features_range(p_markets text[], p_symbols text[],
                                                 p_from timestamptz, p_to timestamptz)
RETURNS SETOF ta.feature_row
LANGUAGE sql STABLE AS
$$
SELECT f.*
  FROM market._range_of_features('market.features_range', p_markets, p_symbols, p_from, p_to) i,
       LATERAL market._frows1(i.market, i.symbol, market._warm_before(i.market, i.symbol, p_from),
                              p_to, p_from, p_to, market._book_from(i.market, i.symbol, p_from)) f
$$;
COMMENT ON FUNCTION market.features_range(text[], text[], timestamptz, timestamptz) IS
  'Feature rows (ta.feature_row, feature set ta.feature_version()) of every stored candle with '
  'open_time in [p_from, p_to] of the instruments of p_markets with one of p_symbols (NULL = all), '
  'ordered by market, symbol, open_time. Point in time: the row of minute m uses only candles with '
  'open_time <= m and book updates before m + 1 minute (frozen ones where the live path froze '
  'them: market.book_1m_frozen); windows reach back before p_from (from a day checkpoint), so '
  'every row equals the live row of its minute (market.features, NOTIFY ta_features) and the row '
  'computed in a database truncated after m, bit for bit. NULL during warm-up and where inputs are '
  'missing (COMMENT ON TYPE ta.feature_row). Into numpy without a Python object per value: '
  'market.feature_vectors (the same rows, columns packed) and examples/training_set.py '
  '(binary COPY). Error 22023 when p_from > p_to.';

-- The same rows with the feature columns packed (ta.feature_bytes of the unexpanded row): the
-- training-set path, where expanding and re-sending 42 columns per row cost more than the
-- engine (docs/performance.md).
CREATE OR REPLACE FUNCTION market.feature_vectors(p_markets text[], p_symbols text[],
                                                  p_from timestamptz, p_to timestamptz)
RETURNS TABLE (market text, symbol text, open_time timestamptz, features bytea)
LANGUAGE sql STABLE AS
$$
SELECT i.market, i.symbol, x.open_time, ta.feature_bytes(x.f)
  FROM market._range_of_features('market.feature_vectors', p_markets, p_symbols, p_from, p_to) i,
       LATERAL market._frows1_composite(i.market, i.symbol,
                                        market._warm_before(i.market, i.symbol, p_from), p_to,
                                        p_from, p_to,
                                        market._book_from(i.market, i.symbol, p_from)) x
$$;
COMMENT ON FUNCTION market.feature_vectors(text[], text[], timestamptz, timestamptz) IS
  'The rows of market.features_range(p_markets, p_symbols, p_from, p_to), same order, with the '
  '42 feature columns packed: features = ta.feature_bytes(row), 336 bytes of little-endian '
  'double precision in column order (ta.feature_row from ret_1m; NULL as NaN). For training '
  'sets: one binary COPY reads into a numpy matrix with no per-value object '
  '(examples/training_set.fetch_features); the values are features_range''s, bit for bit. '
  'Error 22023 when p_from > p_to.';

CREATE OR REPLACE VIEW market.features AS
SELECT (s.features).* FROM market.screener_state s
 WHERE (s.chain).candles IS NOT NULL AND (s.features).open_time = s.open_time;
COMMENT ON VIEW market.features IS
  'The newest feature row (ta.feature_row) of every instrument: the one the candle trigger '
  'computed at its newest stored candle (equal to market.features_range at that minute, bit for '
  'bit). One stored row per instrument (market.screener_state.features). Empty while '
  'market.settings.live_features is off.';

-- ---------------------------------------------------------------------------------------
-- The live path's helpers (called by sql/003 and 006).

CREATE OR REPLACE FUNCTION market._notify_features(p_rows ta.feature_row[]) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
  n integer;
BEGIN
  IF p_rows IS NULL OR NOT coalesce((SELECT s.live_features FROM market.settings s), true) THEN
    RETURN 0;
  END IF;
  SELECT count(pg_notify(market.features_channel(), p))::integer INTO n
    FROM unnest(ta.feature_payloads(p_rows)) p;
  RETURN n;
END
$$;
COMMENT ON FUNCTION market._notify_features(ta.feature_row[]) IS
  'Internal: NOTIFY ta_features with the rows (ta.feature_payloads, delivered at commit); '
  'nothing when market.settings.live_features is off. Returns the number of notifications.';

-- Data quality: minutes whose frozen book features differ from what the stored book tickers
-- give now (ticks of the minute arrived after its candle, or were deleted).
CREATE OR REPLACE VIEW market.book_1m_late AS
SELECT f.market, f.symbol, f.open_time, f.frozen_at, f.updates AS frozen_updates,
       n.updates AS updates_now,
       array_remove(ARRAY[
         CASE WHEN f.updates IS DISTINCT FROM n.updates THEN 'updates' END,
         CASE WHEN f.imbalance IS DISTINCT FROM n.imbalance THEN 'imbalance' END,
         CASE WHEN f.spread_bps IS DISTINCT FROM n.spread_bps THEN 'spread_bps' END,
         CASE WHEN f.wmid_offset_bps IS DISTINCT FROM n.wmid_offset_bps THEN 'wmid_offset_bps' END],
         NULL) AS differs
  FROM market.book_1m_frozen f
  CROSS JOIN LATERAL (
    SELECT (r.b).imbalance, (r.b).spread_bps, (r.b).weighted_mid_offset_bps AS wmid_offset_bps,
           coalesce((r.b).updates, 0) AS updates
      FROM (SELECT ta.book_features(t.event_time, t.update_id, t.best_bid_price, t.best_bid_qty,
                                    t.best_ask_price, t.best_ask_qty, interval '1 minute') AS b
              FROM market.book_tickers t
             WHERE t.market = f.market AND t.symbol = f.symbol
               AND t.event_time >= f.open_time AND t.event_time < f.open_time + interval '1 minute') r) n
 WHERE (f.updates, f.imbalance, f.spread_bps, f.wmid_offset_bps)
       IS DISTINCT FROM (n.updates, n.imbalance, n.spread_bps, n.wmid_offset_bps);
COMMENT ON VIEW market.book_1m_late IS
  'Data quality: minutes whose book features as the live path froze them (market.book_1m_frozen) '
  'differ from what the stored book tickers of the minute give now: ticks that arrived after the '
  'minute''s candle was written (or were deleted). differs names the fields; frozen_updates / '
  'updates_now count the ticks then and now. Feature rows, rules and backtests keep using the '
  'frozen values (what the live row saw). Filter by market, symbol and open_time.';

-- Feature rows of the heads that do not have one yet (a database upgraded from 0.2.0, or
-- candles written while live_features was off and turned on since).
DO $$
DECLARE
  i record;
BEGIN
  IF NOT coalesce((SELECT live_features FROM market.settings), true) THEN
    RETURN;
  END IF;
  FOR i IN SELECT s.market, s.symbol, s.open_time FROM market.screener_state s
            WHERE (s.chain).candles IS NOT NULL
              AND (s.features).open_time IS DISTINCT FROM s.open_time
            ORDER BY 1, 2 LOOP
    UPDATE market.screener_state s
       SET features = (SELECT f FROM market._frows1(i.market, i.symbol,
                                                    market._warm_before(i.market, i.symbol, i.open_time),
                                                    i.open_time, i.open_time, i.open_time,
                                                    market._book_from(i.market, i.symbol, i.open_time)) f)
     WHERE s.market = i.market AND s.symbol = i.symbol;
  END LOOP;
END
$$;

-- Candles written before this schema existed (a database created by pg_ta 0.1.0, or candles
-- written with the triggers bypassed): build their state (here, after every file the
-- recompute reads from exists).
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM market.candles_1m)
     AND NOT EXISTS (SELECT 1 FROM market.screener_state) THEN
    RAISE NOTICE 'pg_ta: building the screener state of % instruments from their candles',
      (SELECT count(*) FROM (SELECT DISTINCT market, symbol FROM market.candles_1m) i);
    PERFORM market.rebuild_screener_state();
  END IF;
END
$$;
