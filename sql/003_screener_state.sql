-- 003: bounded screener state.
--
-- The screener of an instrument at a candle is computed by pg_ta's screener engine from the
-- candles (README "Architecture"): windows of the last 5, 15, 60, 240, 480 and 1440 stored
-- candles, plus a chain that runs from the instrument's first candle (candle count, running
-- quote volume, running sum of squared log returns, RSI(14) and MACD(12,26,9) states).
-- Nothing is stored per candle.  Kept:
--   market.screener_state        one row per instrument: the newest candle's ta.screener_row
--                                and the chain after it (what the live screener shows and
--                                continues from);
--   market.screener_checkpoints  the chain before the first candle of every UTC day of every
--                                instrument, so the screener row of any past candle is
--                                computed from a checkpoint and at most a day + 2,879 candles.
-- Both are derived: market.rebuild_screener_state() recreates them from the candles.

-- pg_ta 0.1.0 kept a ~1 KB state row per candle (market.screener_state keyed by (symbol, seq))
-- and computed metrics in SQL.  Those objects go (in dependency order); the new state is
-- rebuilt from the candles at the end of the migration (sql/006).
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
              WHERE attrelid = pg_catalog.to_regclass('market.screener_state')
                AND attname = 'seq' AND NOT attisdropped) THEN
    RAISE NOTICE 'pg_ta: replacing the 0.1.0 per-candle market.screener_state (derived data)';
    DROP VIEW IF EXISTS market.screener;
    DROP FUNCTION IF EXISTS market.screener_at(timestamptz);
    DROP FUNCTION IF EXISTS market.screener_range(timestamptz, timestamptz, text[]);
    DROP FUNCTION IF EXISTS market.backtest(text, timestamptz, timestamptz, text[], jsonb, boolean);
    DROP FUNCTION IF EXISTS market.backtest_expression(text, timestamptz, timestamptz, text[], jsonb, interval);
    DROP FUNCTION IF EXISTS market._backtest(text, text, integer, interval, timestamptz, timestamptz, text[]);
    DROP FUNCTION IF EXISTS market._fire_rules(text[], bigint[]);
    DROP FUNCTION IF EXISTS market._evaluate(text[], bigint[]);
    DROP FUNCTION IF EXISTS market._rules_query(text);
    DROP FUNCTION IF EXISTS market._rule_branch(integer, text);
    DROP FUNCTION IF EXISTS market._alert_payload(market.screener_row, integer, text);
    DROP FUNCTION IF EXISTS market._metrics(market.screener_state);
    DROP FUNCTION IF EXISTS market._state_at(text[], bigint[]);
    DROP TRIGGER IF EXISTS alert_rules_changed ON market.alert_rules;   -- recreated by 006
    DROP TRIGGER IF EXISTS candles_1m_after_insert ON market.candles_1m;
    DROP TRIGGER IF EXISTS candles_1m_after_update ON market.candles_1m;
    DROP TRIGGER IF EXISTS candles_1m_after_delete ON market.candles_1m;
    DROP TRIGGER IF EXISTS candles_1m_after_truncate ON market.candles_1m;
    DROP FUNCTION IF EXISTS market._apply_candle_changes(text[], timestamptz[], timestamptz[], market.candles_1m[]);
    DROP FUNCTION IF EXISTS market._state_append(market.candles_1m[]);
    DROP FUNCTION IF EXISTS market._state_append_lookup(market.candles_1m[]);
    DROP FUNCTION IF EXISTS market._state_recompute(text[], timestamptz[]);
    DROP FUNCTION IF EXISTS market.rebuild_screener_state(text);
    DROP AGGREGATE IF EXISTS market._rsi_chain(float8[], float8);
    DROP AGGREGATE IF EXISTS market._macd_chain(float8[], float8);
    DROP FUNCTION IF EXISTS market._rsi_chain_step(float8[], float8[], float8);
    DROP FUNCTION IF EXISTS market._macd_chain_step(float8[], float8[], float8);
    DROP TABLE market.screener_state;
    DROP TYPE IF EXISTS market.screener_row;
  END IF;
END
$$;

CREATE TABLE IF NOT EXISTS market.screener_state (
    market     text COLLATE "C" NOT NULL,
    symbol     text COLLATE "C" NOT NULL,
    open_time  timestamptz,
    "row"      ta.screener_row,
    chain      ta.screener_checkpoint,
    CONSTRAINT screener_state_pkey PRIMARY KEY (market, symbol)
) WITH (fillfactor = 50);
-- pg_ta 0.3.0: the feature row of the newest candle (market.features, sql/015)
ALTER TABLE market.screener_state ADD COLUMN IF NOT EXISTS features ta.feature_row;
COMMENT ON TABLE market.screener_state IS
  'Derived, one row per instrument, maintained by the candle triggers: open_time = its newest '
  'stored candle; "row" = the screener at that candle (ta.screener_row, what market.screener '
  'shows); chain = the engine''s chain state after it (ta.screener_checkpoint: candle count, '
  'running quote volume, running sum of squared log returns, last close, RSI/MACD states); '
  'features = the feature row of that candle (ta.feature_row, what market.features shows; NULL '
  'while market.settings.live_features is off). A row with NULL chain is a placeholder taken to '
  'lock a new instrument. Rebuild with market.rebuild_screener_state(). fillfactor 50 keeps the '
  'per-minute update HOT.';

-- pg_ta 0.3.0: the book features a feature row of the head used (see sql/015)
CREATE TABLE IF NOT EXISTS market.book_1m_frozen (
    market          text COLLATE "C" NOT NULL,
    symbol          text COLLATE "C" NOT NULL,
    open_time       timestamptz NOT NULL,
    imbalance       double precision,
    spread_bps      double precision,
    wmid_offset_bps double precision,
    updates         bigint NOT NULL,
    frozen_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT book_1m_frozen_pkey PRIMARY KEY (market, symbol, open_time)
);
COMMENT ON TABLE market.book_1m_frozen IS
  'The book features of minute open_time as the candle trigger saw them when it computed the '
  'instrument''s feature row of that minute (live close, or the newest candle of a bulk write): '
  'imbalance, spread_bps and wmid_offset_bps = ta.book_features(...).imbalance, .spread_bps and '
  '.weighted_mid_offset_bps over the book tickers of the minute stored at that moment, updates = '
  'how many (0: none had arrived). Written once (never updated); features_range, backtests and '
  'recomputes read it instead of the ticks, so they reproduce the live row. Only for instruments '
  'with book tickers. market.book_1m_late lists minutes whose ticks changed afterwards. A row is '
  'deleted with its candle (and by retention with the candles).';

CREATE TABLE IF NOT EXISTS market.screener_checkpoints (
    market            text COLLATE "C" NOT NULL,
    symbol            text COLLATE "C" NOT NULL,
    open_time         timestamptz NOT NULL,
    candles           bigint      NOT NULL,
    last_open_time    timestamptz,
    close             float8,
    cum_quote_volume  numeric     NOT NULL,
    sum_log_return_sq float8      NOT NULL,
    rsi_state         float8[],
    macd_state        float8[],
    CONSTRAINT screener_checkpoints_pkey PRIMARY KEY (market, symbol, open_time)
);
COMMENT ON TABLE market.screener_checkpoints IS
  'Derived: the screener engine''s chain state just before the first stored candle of each UTC '
  'day of each instrument (open_time = that candle; candles, last_open_time, close, '
  'cum_quote_volume, sum_log_return_sq, rsi_state, macd_state = the ta.screener_checkpoint '
  'fields after the previous candle; the first candle of a series has the fresh state). A '
  'checkpoint is valid while its candle exists; any write at or before a checkpoint''s candle '
  'replaces it. Deleting whole UTC days from the start of a series (retention) keeps the '
  'checkpoints of the kept days, so every kept candle keeps its values.';

-- The checkpoint an engine run starts from, to produce rows from a candle whose 2,879
-- predecessors start at or after p_before: the newest valid checkpoint at or before p_before,
-- else (a series shorter than that) the oldest valid one; NULL ck_time = no valid checkpoint,
-- start fresh at the instrument's first candle.
CREATE OR REPLACE FUNCTION market._start(p_market text, p_symbol text, p_before timestamptz,
                                         OUT ck_time timestamptz, OUT ck ta.screener_checkpoint)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
(SELECT c.open_time,
        ROW(c.candles, c.last_open_time, c.close, c.cum_quote_volume, c.sum_log_return_sq,
            c.rsi_state, c.macd_state)::ta.screener_checkpoint
   FROM market.screener_checkpoints c
  WHERE c.market = p_market AND c.symbol = p_symbol AND c.open_time <= p_before
    AND EXISTS (SELECT 1 FROM market.candles_1m x
                 WHERE x.market = c.market AND x.symbol = c.symbol AND x.open_time = c.open_time)
  ORDER BY c.open_time DESC LIMIT 1)
UNION ALL
(SELECT c.open_time,
        ROW(c.candles, c.last_open_time, c.close, c.cum_quote_volume, c.sum_log_return_sq,
            c.rsi_state, c.macd_state)::ta.screener_checkpoint
   FROM market.screener_checkpoints c
  WHERE c.market = p_market AND c.symbol = p_symbol
    AND EXISTS (SELECT 1 FROM market.candles_1m x
                 WHERE x.market = c.market AND x.symbol = c.symbol AND x.open_time = c.open_time)
  ORDER BY c.open_time LIMIT 1)
LIMIT 1
$$;
COMMENT ON FUNCTION market._start(text, text, timestamptz) IS
  'Internal: the checkpoint (candle open_time, chain state) an engine run for the instrument '
  'starts from so that rows after p_before have complete windows: the newest valid checkpoint '
  'at or before p_before, else the oldest valid one; no row = start fresh at the first candle.';

-- open_time of the 2,879th stored candle before p_time (NULL when there are fewer): an engine
-- that has seen every candle from there on computes the 1-day windows of the candle at p_time
-- and of the window before it (2 x 1440 - 1 candles back).
CREATE OR REPLACE FUNCTION market._warm_before(p_market text, p_symbol text, p_time timestamptz)
RETURNS timestamptz
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
SELECT c.open_time FROM market.candles_1m c
 WHERE c.market = p_market AND c.symbol = p_symbol AND c.open_time < p_time
 ORDER BY c.open_time DESC OFFSET 2878 LIMIT 1
$$;
COMMENT ON FUNCTION market._warm_before(text, text, timestamptz) IS
  'Internal: open_time of the 2,879th stored candle of the instrument before p_time (NULL when '
  'fewer): where an engine run must start to compute exact windows at p_time.';

-- The set-based path.  market._run1 runs the engine (window aggregate ta._screener_state) for
-- one instrument from its start checkpoint over its candles up to p_run_to and returns the
-- state of every candle in [p_emit_from, p_emit_to] and of every first candle of a UTC day
-- (the caller keeps what it needs).  The window has no PARTITION BY and the primary-key index
-- delivers the candles in order, so nothing is sorted; these are plain SQL functions without
-- SET so that PostgreSQL inlines them into the caller's query (rows stream through): their
-- bodies are therefore written search_path-proof, every function and operator qualified.
CREATE OR REPLACE FUNCTION market._run1(p_market text, p_symbol text, p_start_before timestamptz,
                                        p_run_to timestamptz, p_emit_from timestamptz,
                                        p_emit_to timestamptz)
RETURNS TABLE (market text, symbol text, open_time timestamptz, st ta.screener_state)
LANGUAGE sql STABLE AS
$$
SELECT x.market, x.symbol, x.open_time, x.st
  FROM (SELECT c.market, c.symbol, c.open_time,
               ta._screener_state(c.market, c.symbol, c.open_time, c.close_time, c.open, c.high,
                                  c.low, c.close, c.quote_volume,
                                  (SELECT s.ck FROM market._start(p_market, p_symbol, p_start_before) s),
                                  p_emit_from, p_emit_to)
                 OVER (ORDER BY c.open_time ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS st
          FROM market.candles_1m c
         WHERE c.market OPERATOR(pg_catalog.=) p_market
           AND c.symbol OPERATOR(pg_catalog.=) p_symbol
           AND c.open_time OPERATOR(pg_catalog.>=)
               coalesce((SELECT s.ck_time FROM market._start(p_market, p_symbol, p_start_before) s),
                        '-infinity'::timestamptz)
           AND c.open_time OPERATOR(pg_catalog.<=) p_run_to) x
 WHERE ((x.st).chain).candles IS NOT NULL   -- (a composite IS NOT NULL only when no field is NULL)
$$;
COMMENT ON FUNCTION market._run1(text, text, timestamptz, timestamptz, timestamptz, timestamptz) IS
  'Internal: runs the screener engine (ta._screener_state) for one instrument from the checkpoint '
  'market._start(market, symbol, p_start_before) over its candles up to p_run_to; returns the '
  'ta.screener_state of the candles in [p_emit_from, p_emit_to] and of every first candle of a '
  'UTC day, in open_time order. Inlined into its callers.';

CREATE OR REPLACE FUNCTION market._run(p_market text[], p_symbol text[],
                                       p_start_before timestamptz[], p_run_to timestamptz[],
                                       p_emit_from timestamptz[], p_emit_to timestamptz[])
RETURNS TABLE (market text, symbol text, open_time timestamptz, st ta.screener_state)
LANGUAGE sql STABLE AS
$$
SELECT x.market, x.symbol, x.open_time, x.st
  FROM ROWS FROM (pg_catalog.unnest(p_market), pg_catalog.unnest(p_symbol),
                  pg_catalog.unnest(p_start_before), pg_catalog.unnest(p_run_to),
                  pg_catalog.unnest(p_emit_from), pg_catalog.unnest(p_emit_to))
         AS r(market, symbol, start_before, run_to, emit_from, emit_to),
       LATERAL market._run1(r.market, r.symbol, r.start_before, r.run_to, r.emit_from,
                            r.emit_to) x
$$;
COMMENT ON FUNCTION market._run(text[], text[], timestamptz[], timestamptz[], timestamptz[], timestamptz[]) IS
  'Internal: market._run1 for each (market, symbol, start_before, run_to, emit_from, emit_to) of '
  'the arrays, instrument after instrument. Inlined into its callers.';
-- Recompute the derived state of instruments after writes that are not a live append: every
-- checkpoint at or after the first changed candle goes, and the feature engine runs again from
-- the newest valid checkpoint early enough for the head's 1-day windows to the newest candle,
-- writing the day checkpoints, the head (screener row, chain, feature row) and the head
-- minute's frozen book features (sql/015).  Instruments without candles lose their state.
-- Returns the new heads: their rule rows (ta.signal_row) and feature rows.
DROP FUNCTION IF EXISTS market._recompute(text[], text[], timestamptz[]);
CREATE OR REPLACE FUNCTION market._recompute(p_market text[], p_symbol text[], p_from timestamptz[])
RETURNS TABLE (market text, symbol text, open_time timestamptz, signal ta.signal_row,
               features ta.feature_row)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
#variable_conflict use_column
DECLARE
  v_m text[]; v_s text[]; v_from timestamptz[]; v_head timestamptz[]; v_warm timestamptz[];
  v_book timestamptz[];
  v_live boolean := coalesce((SELECT x.live_features FROM market.settings x), true);
BEGIN
  SELECT array_agg(f.market), array_agg(f.symbol), array_agg(f.from_time), array_agg(h.head),
         array_agg(market._warm_before(f.market, f.symbol, h.head)),
         array_agg(market._book_from(f.market, f.symbol, h.head))
    INTO v_m, v_s, v_from, v_head, v_warm, v_book
    FROM (SELECT u.market, u.symbol, min(u.from_time) AS from_time
            FROM unnest(p_market, p_symbol, p_from) AS u(market, symbol, from_time)
           GROUP BY u.market, u.symbol) f
    LEFT JOIN LATERAL (SELECT max(c.open_time) AS head FROM market.candles_1m c
                        WHERE c.market = f.market AND c.symbol = f.symbol) h ON true;
  IF v_m IS NULL THEN
    RETURN;
  END IF;

  DELETE FROM market.screener_checkpoints c
   USING unnest(v_m, v_s, v_from, v_head) AS f(market, symbol, from_time, head)
   WHERE c.market = f.market AND c.symbol = f.symbol
     AND (c.open_time >= f.from_time OR f.head IS NULL);
  DELETE FROM market.screener_state s
   USING unnest(v_m, v_s, v_head) AS f(market, symbol, head)
   WHERE s.market = f.market AND s.symbol = f.symbol AND f.head IS NULL;

  RETURN QUERY
  WITH f AS (
    SELECT * FROM unnest(v_m, v_s, v_from, v_head, v_warm, v_book)
                  AS f(market, symbol, from_time, head, warm, book_from)
     WHERE f.head IS NOT NULL
  ), run AS MATERIALIZED (
    SELECT r.* FROM (SELECT array_agg(f.market) AS m, array_agg(f.symbol) AS s,
                            array_agg(f.warm) AS w, array_agg(f.head) AS h,
                            array_agg(f.book_from) AS b FROM f) a,
           market._frun(a.m, a.s, a.w, a.h, a.h, a.h, a.b) r
  ), ck AS (
    INSERT INTO market.screener_checkpoints AS c
    SELECT r.market, r.symbol, r.open_time, (d).candles, (d).open_time, (d).close,
           (d).cum_quote_volume, (d).sum_log_return_sq, (d).rsi_state, (d).macd_state
      FROM (SELECT r.*, (r.st).day_checkpoint AS d FROM run r) r
      JOIN f ON f.market = r.market AND f.symbol = r.symbol
     WHERE (r.d).candles IS NOT NULL
    -- those before from_time are unchanged (and kept); a missing one is restored
    ON CONFLICT (market, symbol, open_time) DO NOTHING
  ), hd AS (
    INSERT INTO market.screener_state AS s (market, symbol, open_time, "row", chain, features)
    SELECT r.market, r.symbol, r.open_time, (r.st)."row", (r.st).chain,
           CASE WHEN v_live THEN (r.st).features END
      FROM run r JOIN f ON f.market = r.market AND f.symbol = r.symbol AND r.open_time = f.head
    ON CONFLICT (market, symbol) DO UPDATE
       SET open_time = EXCLUDED.open_time, "row" = EXCLUDED."row", chain = EXCLUDED.chain,
           features = EXCLUDED.features
    RETURNING s.market, s.symbol, s.open_time
  ), fz AS (
    -- what the head's feature row used of its minute's book, frozen (instruments with book data)
    INSERT INTO market.book_1m_frozen (market, symbol, open_time, imbalance, spread_bps,
                                       wmid_offset_bps, updates)
    SELECT f.market, f.symbol, f.head, b.imbalance, b.spread_bps, b.wmid_offset_bps, b.updates
      FROM f CROSS JOIN LATERAL market._book_at(f.market, f.symbol, f.head) b
     WHERE v_live AND NOT b.frozen AND market._has_book(f.market, f.symbol)
    ON CONFLICT DO NOTHING
  )
  SELECT hd.market::text, hd.symbol::text, hd.open_time, (r.st).signal, (r.st).features
    FROM hd JOIN run r ON r.market = hd.market AND r.symbol = hd.symbol
                      AND r.open_time = hd.open_time;
END
$$;
COMMENT ON FUNCTION market._recompute(text[], text[], timestamptz[]) IS
  'Internal: recompute checkpoints (from the first changed candle p_from on), the head and its '
  'feature row of the given instruments with the set-based feature engine run, freezing the '
  'head minute''s book features; drops the state of instruments without candles; returns the new '
  'heads (rule rows and feature rows).';

-- Live path: one new candle per instrument, after its head.  The session's feature engine
-- cache (ta._features_cache_step: the screener engine plus the features) is used when it ends
-- at the head row (its candle count and xmin); otherwise it is loaded from a checkpoint and the
-- candles since (at most a day + 2,879, with the book features of the last 59), and stepped.
-- Each candle comes with its minute's book features as stored now (frozen for later readers,
-- sql/015).  Features are computed only when read (live_features on, or an enabled rule names
-- a feature column): otherwise only the screener engine is stepped and the rule rows' feature
-- columns are NULL, which no rule reads; when features are read again, the first close
-- reloads each engine (as the first close of a session does).  Returns the new heads (rule rows and feature rows); candles the cache could not
-- serve are left to the caller (p_rest).  The caller holds the head rows locked (FOR UPDATE).
DROP FUNCTION IF EXISTS market._append(market.candles_1m[]);
CREATE OR REPLACE FUNCTION market._append(p_candles market.candles_1m[],
                                          OUT p_heads ta.signal_row[],
                                          OUT p_features ta.feature_row[],
                                          OUT p_rest market.candles_1m[])
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
  v_cache_off boolean := coalesce(current_setting('market.screener_cache', true), '')
                           IN ('off', 'false', '0');
  v_live boolean := coalesce((SELECT s.live_features FROM market.settings s), true);
  -- features are computed only when something reads them: market.features and NOTIFY
  -- ta_features, or an enabled rule
  v_need boolean := v_live OR coalesce((SELECT e.reads_features FROM market._evaluator_lock e), true);
  v_books market.book_1m_frozen[];
  v_miss market.candles_1m[];
  v_pass int;
  v_heads ta.signal_row[];
  v_feats ta.feature_row[];
  v_done bigint[];
BEGIN
  p_heads := '{}';
  p_features := '{}';
  v_miss := p_candles;
  -- the book features of each candle's minute, as stored now (instruments with book data)
  IF v_live AND EXISTS (SELECT 1 FROM market.book_tickers) THEN
    SELECT array_agg(ROW(c.market, c.symbol, c.open_time, b.imbalance, b.spread_bps,
                         b.wmid_offset_bps, b.updates, now())::market.book_1m_frozen)
      INTO v_books
      FROM unnest(p_candles) AS c
      CROSS JOIN LATERAL market._book_at(c.market, c.symbol, c.open_time) b
     WHERE market._has_book(c.market, c.symbol);
  END IF;
  FOR v_pass IN 1..2 LOOP
    EXIT WHEN v_miss IS NULL OR cardinality(v_miss) = 0;
    IF v_pass = 2 OR v_cache_off THEN
      -- (re)load the engines of the candles the cache could not step
      -- (the candles in index order: the aggregates keep that order without sorting; the
      -- book features only for the last 59 candles, the ones the new row's _z columns read)
      PERFORM ta._features_cache_load((h.chain).candles, h.xmin::text::bigint, c.market, c.symbol,
                                      st.ck, a.open_time, a.close_time, a.open, a.high, a.low,
                                      a.close, a.volume, a.quote_volume, a.taker_buy_volume,
                                      coalesce(bb.imbalance, '{}'), coalesce(bb.spread_bps, '{}'),
                                      coalesce(bb.wmid_offset_bps, '{}'))
         FROM unnest(v_miss) AS c
         JOIN market.screener_state h ON h.market = c.market AND h.symbol = c.symbol
         LEFT JOIN LATERAL market._start(c.market, c.symbol,
                                         market._warm_before(c.market, c.symbol, c.open_time)) st ON true
         CROSS JOIN LATERAL (
           SELECT array_agg(x.open_time) AS open_time, array_agg(x.close_time) AS close_time,
                  array_agg(x.open) AS open, array_agg(x.high) AS high, array_agg(x.low) AS low,
                  array_agg(x.close) AS close, array_agg(x.volume) AS volume,
                  array_agg(x.quote_volume) AS quote_volume,
                  array_agg(x.taker_buy_volume) AS taker_buy_volume
             FROM (SELECT y.* FROM market.candles_1m y
                    WHERE y.market = c.market AND y.symbol = c.symbol
                      AND y.open_time >= coalesce(st.ck_time, '-infinity') AND y.open_time < c.open_time
                    ORDER BY y.open_time OFFSET 0) x) a
         LEFT JOIN LATERAL (
           SELECT array_agg(b.imbalance) AS imbalance, array_agg(b.spread_bps) AS spread_bps,
                  array_agg(b.wmid_offset_bps) AS wmid_offset_bps
             FROM (SELECT y.market, y.symbol, y.open_time FROM market.candles_1m y
                    WHERE y.market = c.market AND y.symbol = c.symbol
                      AND y.open_time >= market._book_from(c.market, c.symbol, c.open_time)
                      AND y.open_time < c.open_time
                    ORDER BY y.open_time OFFSET 0) x
             CROSS JOIN LATERAL market._book_at(x.market, x.symbol, x.open_time) b
            WHERE market._has_book(c.market, c.symbol)) bb ON true;
    END IF;
    WITH stepped AS (
      SELECT c.market, c.symbol, c.open_time, c.ordinality AS i, h.ctid AS tid,
             CASE WHEN h.market IS NOT NULL THEN
               ta._features_cache_step((h.chain).candles, h.xmin::text::bigint, c.market, c.symbol,
                                       c.open_time, c.close_time, c.open, c.high, c.low, c.close,
                                       c.volume, c.quote_volume, c.taker_buy_volume,
                                       b.imbalance, b.spread_bps, b.wmid_offset_bps, v_need) END AS st
        FROM unnest(v_miss) WITH ORDINALITY AS c
        LEFT JOIN market.screener_state h ON h.market = c.market AND h.symbol = c.symbol
        LEFT JOIN unnest(v_books) AS b ON b.market = c.market AND b.symbol = c.symbol
      OFFSET 0
    ), hd AS (
      -- (stepped is read here only: its rows, with every composite of a step, are wide)
      UPDATE market.screener_state h
         SET open_time = s.open_time, "row" = (s.st)."row", chain = (s.st).chain,
             features = CASE WHEN v_live THEN (s.st).features END
        FROM stepped s
       -- the head row as read above (locked by the caller: it has not moved), by its ctid
       WHERE ((s.st).chain).candles IS NOT NULL AND h.ctid = s.tid
         AND h.market = s.market AND h.symbol = s.symbol
      RETURNING s.market, s.symbol, s.open_time, s.i, (s.st).signal AS signal,
                (s.st).features AS features, (s.st).day_checkpoint AS d
    ), ck AS (
      INSERT INTO market.screener_checkpoints
      SELECT s.market, s.symbol, s.open_time, (d).candles, (d).open_time, (d).close,
             (d).cum_quote_volume, (d).sum_log_return_sq, (d).rsi_state, (d).macd_state
        FROM hd s
       WHERE (s.d).candles IS NOT NULL
      ON CONFLICT (market, symbol, open_time) DO NOTHING
    ), fz AS (
      INSERT INTO market.book_1m_frozen
      SELECT b.* FROM unnest(v_books) AS b
        JOIN hd s ON s.market = b.market AND s.symbol = b.symbol
       WHERE v_books IS NOT NULL
      ON CONFLICT DO NOTHING
    )
    -- the new heads, and the positions of the candles stepped
    SELECT array_agg(hd.signal), array_agg(hd.features), array_agg(hd.i)
      INTO v_heads, v_feats, v_done
      FROM hd;
    -- the candles the cache could not step (rare: misses are looked up by position)
    IF cardinality(v_done) = cardinality(v_miss) THEN
      v_miss := NULL;
    ELSIF v_done IS NOT NULL THEN   -- (none stepped: all missed, v_miss unchanged)
      SELECT array_agg(v_miss[k] ORDER BY k) INTO v_miss
        FROM generate_subscripts(v_miss, 1) AS k
       WHERE NOT EXISTS (SELECT 1 FROM unnest(v_done) AS d WHERE d = k);
    END IF;
    p_heads := p_heads || coalesce(v_heads, '{}');
    p_features := p_features || coalesce(v_feats, '{}');
  END LOOP;
  p_rest := v_miss;
END
$$;
COMMENT ON FUNCTION market._append(market.candles_1m[]) IS
  'Internal: live path. Steps the session''s feature engine cache (loading it from a checkpoint '
  'and the candles since when it does not end at the head row) for one new candle per '
  'instrument, with the book features of its minute as stored now; updates the heads (screener '
  'row, chain, feature row), writes day checkpoints and freezes the book features used; returns '
  'the new heads (rule rows, feature rows) and the candles it could not serve (those are '
  'recomputed by the caller). Features are computed only while something reads them '
  '(market.settings.live_features, or an enabled rule naming a feature column; '
  'market._evaluator_lock.reads_features); otherwise the screener engine alone is stepped.';

CREATE OR REPLACE FUNCTION market.rebuild_screener_state(p_market text DEFAULT NULL,
                                                         p_symbol text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
  v_m text[]; v_s text[]; n bigint;
BEGIN
  SELECT array_agg(i.market), array_agg(i.symbol) INTO v_m, v_s
    FROM (SELECT DISTINCT c.market, c.symbol FROM market.candles_1m c
           WHERE (p_market IS NULL OR c.market = p_market)
             AND (p_symbol IS NULL OR c.symbol = p_symbol)
          UNION
          SELECT s.market, s.symbol FROM market.screener_state s
           WHERE (p_market IS NULL OR s.market = p_market)
             AND (p_symbol IS NULL OR s.symbol = p_symbol)) i;
  IF v_m IS NULL THEN
    RETURN 0;
  END IF;
  SELECT count(*) INTO n
    FROM market._recompute(v_m, v_s, array_fill('-infinity'::timestamptz, ARRAY[cardinality(v_m)]));
  PERFORM ta._screener_cache_reset();
  RETURN n;
END
$$;
COMMENT ON FUNCTION market.rebuild_screener_state(text, text) IS
  'Recreate market.screener_state and market.screener_checkpoints from market.candles_1m for '
  'one market and/or symbol (all when NULL); returns the number of instruments. Needed only '
  'after writes that bypassed the triggers (session_replication_role = replica, TimescaleDB '
  'drop_chunks of recent data); O(candles of those instruments).';
