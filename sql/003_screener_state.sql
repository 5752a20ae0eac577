-- 003: incremental screener state, one row per stored candle.
--
-- Screener windows slide over the last N stored 1m candles of a symbol (5m = 5, 15m = 15,
-- 1h = 60, 4h = 240, 8h = 480, 1d = 1440; DESIGN.md "Screener semantics").  Recomputing a
-- 1-day window for 500 symbols at every close would read 720 000 rows a minute, so the
-- trigger on market.candles_1m keeps this table up to date instead: each candle gets its
-- position `seq` in the symbol's series, a running quote-volume sum, rolling highs/lows for
-- every window and the RSI(14)/MACD(12,26,9) streaming states.  Any window metric at any
-- candle is then a handful of primary-key lookups (live path) or lag() window functions
-- (backtests over ranges).
--
-- Derived data only: market.rebuild_screener_state() recreates it from the candles.
CREATE TABLE IF NOT EXISTS market.screener_state (
    symbol        text COLLATE "C" NOT NULL,
    seq           bigint      NOT NULL,
    open_time     timestamptz NOT NULL,
    close_time    timestamptz NOT NULL,
    open          float8      NOT NULL,
    high          float8      NOT NULL,
    low           float8      NOT NULL,
    close         float8      NOT NULL,
    quote_volume  numeric     NOT NULL,
    cum_before    numeric     NOT NULL,
    log_return    float8,
    sum_log_return_sq float8  NOT NULL,
    high_5 float8, low_5 float8, high_15 float8, low_15 float8, high_60 float8, low_60 float8,
    high_240 float8, low_240 float8, high_480 float8, low_480 float8,
    high_1440 float8, low_1440 float8,
    rsi_state     float8[],
    macd_state    float8[],
    open_m1 float8, close_m1 float8, quote_volume_m1 numeric,
    open_m2 float8, close_m2 float8, quote_volume_m2 numeric,
    close_m9 float8, log_return_m9 float8, sum_log_return_sq_m9 float8,
    open_5 float8, cum_before_5 numeric, cum_before_prev_5 numeric,
    open_15 float8, cum_before_15 numeric, cum_before_prev_15 numeric,
    open_60 float8, cum_before_60 numeric, cum_before_prev_60 numeric,
    open_240 float8, cum_before_240 numeric, cum_before_prev_240 numeric,
    open_480 float8, cum_before_480 numeric, cum_before_prev_480 numeric,
    open_1440 float8, cum_before_1440 numeric, cum_before_prev_1440 numeric,
    PRIMARY KEY (symbol, seq),
    UNIQUE (open_time, symbol)
);
COMMENT ON TABLE market.screener_state IS
  'Derived, one row per candle of market.candles_1m, maintained by its triggers: seq = 1-based '
  'position of the candle in the symbol''s stored series; cum_before = sum of quote_volume over '
  'seq 1..seq-1 (exact numeric); log_return = ln(close/previous close); sum_log_return_sq = '
  'running sum of log_return^2; high_N/low_N = max(high)/min(low) over the last N candles (NULL '
  'until seq >= N); rsi_state/macd_state = ta.rsi_step(.., 14) / ta.macd_step(.., 12, 26, 9) '
  'states after this candle; *_m1, *_m2, *_m9 = values of the candles 1, 2 and 9 before; '
  'open_N/cum_before_N = open and cum_before of the first candle of the N-candle window ending '
  'here, cum_before_prev_N = cum_before of the first candle of the window before it. Prices are '
  'double precision copies. Rebuild with market.rebuild_screener_state().';

-- screener_state stays a plain table under TimescaleDB too: it is keyed by (symbol, seq)
-- and a hypertable needs its time column in every unique index.

-- RSI(14) and MACD(12,26,9) carried forward one candle at a time (window aggregates whose
-- running value is the ta.*_step state).  init is the state before the first row (NULL =
-- fresh series).
CREATE OR REPLACE FUNCTION market._rsi_chain_step(state float8[], init float8[], value float8)
RETURNS float8[] LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$ SELECT ta.rsi_step(COALESCE(state, init), value, 14) $$;

CREATE OR REPLACE FUNCTION market._macd_chain_step(state float8[], init float8[], value float8)
RETURNS float8[] LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$ SELECT ta.macd_step(COALESCE(state, init), value, 12, 26, 9) $$;

DO $$
BEGIN
  IF to_regprocedure('market._rsi_chain(float8[], float8)') IS NULL THEN
    CREATE AGGREGATE market._rsi_chain(float8[], float8) (
      SFUNC = market._rsi_chain_step, STYPE = float8[]);
  END IF;
  IF to_regprocedure('market._macd_chain(float8[], float8)') IS NULL THEN
    CREATE AGGREGATE market._macd_chain(float8[], float8) (
      SFUNC = market._macd_chain_step, STYPE = float8[]);
  END IF;
END
$$;

-- Recompute the state of each symbol from its first candle at or after from_time to its last
-- candle (set-based; used for bulk loads, out-of-order inserts, updates and deletes).
-- Rolling highs/lows are built level by level from the previous level's lags:
--   high_5 = max of the last 5 highs;  high_15 = max(high_5 at s, s-5, s-10);
--   high_60 = max(high_15 at s, s-15, s-30, s-45);  high_240 = max(high_60 at s, s-60, s-120, s-180);
--   high_480 = max(high_240 at s, s-240);  high_1440 = max(high_480 at s, s-480, s-960).
-- The same decomposition, by lookups, is used for one candle at a time by market._state_append.
CREATE OR REPLACE FUNCTION market._state_recompute(p_symbols text[], p_from timestamptz[])
RETURNS bigint
LANGUAGE plpgsql AS
$$
DECLARE
  n bigint;
BEGIN
  DELETE FROM market.screener_state s
   USING unnest(p_symbols, p_from) AS f(symbol, from_time)
   WHERE s.symbol = f.symbol AND s.open_time >= f.from_time;

  INSERT INTO market.screener_state
  WITH f AS (
    SELECT symbol, min(from_time) AS from_time
      FROM unnest(p_symbols, p_from) AS f(symbol, from_time) GROUP BY symbol
  ), base AS (
    -- a symbol without state rows is computed from its first candle
    SELECT f.symbol, CASE WHEN b.seq IS NULL THEN '-infinity' ELSE f.from_time END AS from_time,
           coalesce(b.seq, 0) AS seq,
           coalesce(b.cum_before + b.quote_volume, 0) AS cum_qv,
           coalesce(b.sum_log_return_sq, 0) AS sum_lr2,
           b.rsi_state, b.macd_state
      FROM f
      LEFT JOIN LATERAL (
        SELECT * FROM market.screener_state s
         WHERE s.symbol = f.symbol ORDER BY s.seq DESC LIMIT 1) b ON true
  ), ctx AS (   -- stored rows the new rows look back to (up to 2879 candles)
    SELECT s.symbol, s.seq, false AS is_new, s.open_time, s.close_time,
           s.open, s.high, s.low, s.close, s.quote_volume, s.cum_before,
           s.log_return AS lr0, s.sum_log_return_sq AS sum_lr2_0,
           s.high_5, s.low_5, s.high_15, s.low_15, s.high_60, s.low_60,
           s.high_240, s.low_240, s.high_480, s.low_480
      FROM base
      JOIN LATERAL (SELECT * FROM market.screener_state s
                     WHERE s.symbol = base.symbol AND s.seq > base.seq - 2879
                       AND s.seq <= base.seq) s ON true
  ), fresh AS (
    SELECT c.symbol,
           base.seq + row_number() OVER wf AS seq,
           true AS is_new, c.open_time, c.close_time,
           c.open::float8 AS open, c.high::float8 AS high, c.low::float8 AS low,
           c.close::float8 AS close, c.quote_volume,
           base.cum_qv + coalesce(sum(c.quote_volume) OVER (wf ROWS BETWEEN UNBOUNDED PRECEDING
                                                              AND 1 PRECEDING), 0) AS cum_before,
           NULL::float8 AS lr0, NULL::float8 AS sum_lr2_0,
           NULL::float8 AS high_5, NULL::float8 AS low_5, NULL::float8 AS high_15,
           NULL::float8 AS low_15, NULL::float8 AS high_60, NULL::float8 AS low_60,
           NULL::float8 AS high_240, NULL::float8 AS low_240, NULL::float8 AS high_480,
           NULL::float8 AS low_480
      FROM base
      JOIN market.candles_1m c ON c.symbol = base.symbol AND c.open_time >= base.from_time
    WINDOW wf AS (PARTITION BY c.symbol ORDER BY c.open_time)
  ), r0 AS (
    SELECT * FROM ctx UNION ALL SELECT * FROM fresh
  ), r1 AS (
    SELECT r0.*,
      CASE WHEN NOT is_new THEN lr0
           WHEN close > 0 AND lag(close) OVER w > 0 THEN ln(close / lag(close) OVER w) END AS lr,
      CASE WHEN NOT is_new THEN high_5 WHEN seq >= 5 THEN greatest(high,
           lag(high, 1) OVER w, lag(high, 2) OVER w, lag(high, 3) OVER w, lag(high, 4) OVER w) END AS h5,
      CASE WHEN NOT is_new THEN low_5 WHEN seq >= 5 THEN least(low,
           lag(low, 1) OVER w, lag(low, 2) OVER w, lag(low, 3) OVER w, lag(low, 4) OVER w) END AS l5
      FROM r0 WINDOW w AS (PARTITION BY symbol ORDER BY seq)
  ), r2 AS (
    SELECT r1.*,
      CASE WHEN NOT is_new THEN sum_lr2_0
           ELSE bb.base_sum_lr2 + sum(CASE WHEN is_new THEN coalesce(lr * lr, 0) ELSE 0 END) OVER w END
        AS sum_lr2,
      CASE WHEN NOT is_new THEN high_15 WHEN seq >= 15 THEN greatest(h5, lag(h5, 5) OVER w, lag(h5, 10) OVER w) END AS h15,
      CASE WHEN NOT is_new THEN low_15 WHEN seq >= 15 THEN least(l5, lag(l5, 5) OVER w, lag(l5, 10) OVER w) END AS l15
      FROM r1 JOIN (SELECT symbol, sum_lr2 AS base_sum_lr2 FROM base) bb USING (symbol)
    WINDOW w AS (PARTITION BY symbol ORDER BY seq)
  ), r3 AS (
    SELECT r2.*,
      CASE WHEN NOT is_new THEN high_60 WHEN seq >= 60 THEN greatest(h15, lag(h15, 15) OVER w, lag(h15, 30) OVER w, lag(h15, 45) OVER w) END AS h60,
      CASE WHEN NOT is_new THEN low_60 WHEN seq >= 60 THEN least(l15, lag(l15, 15) OVER w, lag(l15, 30) OVER w, lag(l15, 45) OVER w) END AS l60
      FROM r2 WINDOW w AS (PARTITION BY symbol ORDER BY seq)
  ), r4 AS (
    SELECT r3.*,
      CASE WHEN NOT is_new THEN high_240 WHEN seq >= 240 THEN greatest(h60, lag(h60, 60) OVER w, lag(h60, 120) OVER w, lag(h60, 180) OVER w) END AS h240,
      CASE WHEN NOT is_new THEN low_240 WHEN seq >= 240 THEN least(l60, lag(l60, 60) OVER w, lag(l60, 120) OVER w, lag(l60, 180) OVER w) END AS l240
      FROM r3 WINDOW w AS (PARTITION BY symbol ORDER BY seq)
  ), r5 AS (
    SELECT r4.*,
      CASE WHEN NOT is_new THEN high_480 WHEN seq >= 480 THEN greatest(h240, lag(h240, 240) OVER w) END AS h480,
      CASE WHEN NOT is_new THEN low_480 WHEN seq >= 480 THEN least(l240, lag(l240, 240) OVER w) END AS l480
      FROM r4 WINDOW w AS (PARTITION BY symbol ORDER BY seq)
  ), r6 AS (
    SELECT r.*,
      CASE WHEN seq >= 1440 THEN greatest(h480, lag(h480, 480) OVER w, lag(h480, 960) OVER w) END AS h1440,
      CASE WHEN seq >= 1440 THEN least(l480, lag(l480, 480) OVER w, lag(l480, 960) OVER w) END AS l1440,
           lag(r.open, 1) OVER w AS open_m1, lag(r.close, 1) OVER w AS close_m1, lag(r.quote_volume, 1) OVER w AS quote_volume_m1,
           lag(r.open, 2) OVER w AS open_m2, lag(r.close, 2) OVER w AS close_m2, lag(r.quote_volume, 2) OVER w AS quote_volume_m2,
           lag(r.close, 9) OVER w AS close_m9, lag(r.lr, 9) OVER w AS log_return_m9, lag(r.sum_lr2, 9) OVER w AS sum_log_return_sq_m9,
           lag(r.open, 4) OVER w AS open_5, lag(r.cum_before, 4) OVER w AS cum_before_5, lag(r.cum_before, 9) OVER w AS cum_before_prev_5,
           lag(r.open, 14) OVER w AS open_15, lag(r.cum_before, 14) OVER w AS cum_before_15, lag(r.cum_before, 29) OVER w AS cum_before_prev_15,
           lag(r.open, 59) OVER w AS open_60, lag(r.cum_before, 59) OVER w AS cum_before_60, lag(r.cum_before, 119) OVER w AS cum_before_prev_60,
           lag(r.open, 239) OVER w AS open_240, lag(r.cum_before, 239) OVER w AS cum_before_240, lag(r.cum_before, 479) OVER w AS cum_before_prev_240,
           lag(r.open, 479) OVER w AS open_480, lag(r.cum_before, 479) OVER w AS cum_before_480, lag(r.cum_before, 959) OVER w AS cum_before_prev_480,
           lag(r.open, 1439) OVER w AS open_1440, lag(r.cum_before, 1439) OVER w AS cum_before_1440, lag(r.cum_before, 2879) OVER w AS cum_before_prev_1440
      FROM r5 r WINDOW w AS (PARTITION BY symbol ORDER BY seq)
  )
  SELECT n.symbol, n.seq, n.open_time, n.close_time, n.open, n.high, n.low, n.close,
         n.quote_volume, n.cum_before, n.lr, n.sum_lr2,
         n.h5, n.l5, n.h15, n.l15, n.h60, n.l60, n.h240, n.l240, n.h480, n.l480, n.h1440, n.l1440,
         market._rsi_chain(b.rsi_state, n.close) OVER wr,
         market._macd_chain(b.macd_state, n.close) OVER wr,
         open_m1, close_m1, quote_volume_m1, open_m2, close_m2, quote_volume_m2, close_m9, log_return_m9, sum_log_return_sq_m9, open_5, cum_before_5, cum_before_prev_5, open_15, cum_before_15, cum_before_prev_15, open_60, cum_before_60, cum_before_prev_60, open_240, cum_before_240, cum_before_prev_240, open_480, cum_before_480, cum_before_prev_480, open_1440, cum_before_1440, cum_before_prev_1440
    FROM r6 n JOIN base b USING (symbol)
   WHERE n.is_new
  WINDOW wr AS (PARTITION BY n.symbol ORDER BY n.seq ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW);
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END
$$;
COMMENT ON FUNCTION market._state_recompute(text[], timestamptz[]) IS
  'Internal: recompute market.screener_state for each (symbol, from_time) pair from that time on.';

-- Live path, by lookups: the state row of one new candle per symbol, appended right after the
-- symbol's newest state row.  Same formulas as market._state_recompute, by lookups of the 25
-- earlier state rows the new row needs.  Used when the session's window cache cannot serve a
-- symbol (see market._state_append).  plpgsql caches the plan for the session.
CREATE OR REPLACE FUNCTION market._state_append_lookup(p_candles market.candles_1m[])
RETURNS TABLE (symbol text, seq bigint)
LANGUAGE plpgsql
SET enable_mergejoin = off SET enable_sort = off AS
$$
#variable_conflict use_column
DECLARE
  -- offsets (in candles) of the earlier state rows a new row needs; i below is the position
  -- of an offset in this array
  offs constant int[] := '{1, 2, 3, 4, 5, 9, 10, 14, 15, 29, 30, 45, 59, 60, 119, 120, 180, 239, 240, 479, 480, 959, 960, 1439, 2879}';
  v_times timestamptz[];
BEGIN
  -- Rows of one minute are stored together, so the earlier rows of every symbol are fetched
  -- with one index scan on (open_time, symbol) per needed minute when the symbol has no gap
  -- in between (seq matches); otherwise by (symbol, seq).
  SELECT array_agg(DISTINCT t.open_time - o.off * interval '1 minute')
    INTO v_times
    FROM unnest(p_candles) AS t, unnest(offs) AS o(off);

  RETURN QUERY
  WITH t AS (
    SELECT c.*, h.seq + 1 AS seq
      FROM unnest(p_candles) AS c
      JOIN LATERAL (SELECT s.seq, s.open_time FROM market.screener_state s
                     WHERE s.symbol = c.symbol ORDER BY s.seq DESC LIMIT 1) h ON true
     WHERE c.open_time > h.open_time
  ), need AS (
    SELECT t.symbol, t.seq - o.off AS want, o.i
      FROM t CROSS JOIN unnest(offs) WITH ORDINALITY AS o(off, i)
     WHERE t.seq - o.off >= 1
  ), bytime AS (
    SELECT s.symbol, s.seq, s.open, s.high, s.low, s.close, s.quote_volume, s.cum_before, s.log_return, s.sum_log_return_sq, s.high_5, s.low_5, s.high_15, s.low_15, s.high_60, s.low_60, s.high_240, s.low_240, s.high_480, s.low_480, s.rsi_state, s.macd_state
      FROM market.screener_state s WHERE s.open_time = ANY (v_times)
  ), got AS (
    SELECT n.symbol, n.i, b.open, b.high, b.low, b.close, b.quote_volume, b.cum_before, b.log_return, b.sum_log_return_sq, b.high_5, b.low_5, b.high_15, b.low_15, b.high_60, b.low_60, b.high_240, b.low_240, b.high_480, b.low_480, b.rsi_state, b.macd_state
      FROM need n JOIN bytime b ON b.symbol = n.symbol AND b.seq = n.want
    UNION ALL
    SELECT n.symbol, n.i, s.*
      FROM need n
      JOIN LATERAL (SELECT s.open, s.high, s.low, s.close, s.quote_volume, s.cum_before, s.log_return, s.sum_log_return_sq, s.high_5, s.low_5, s.high_15, s.low_15, s.high_60, s.low_60, s.high_240, s.low_240, s.high_480, s.low_480, s.rsi_state, s.macd_state
                      FROM market.screener_state s
                     WHERE s.symbol = n.symbol AND s.seq = n.want) s ON true
     WHERE NOT EXISTS (SELECT 1 FROM bytime b WHERE b.symbol = n.symbol AND b.seq = n.want)
  ), p AS (
    SELECT symbol AS p_symbol,
           max(cum_before) FILTER (WHERE i = 1) AS cum_before_m1,
           max(quote_volume) FILTER (WHERE i = 1) AS quote_volume_m1,
           max(open) FILTER (WHERE i = 1) AS open_m1,
           max(close) FILTER (WHERE i = 1) AS close_m1,
           max(sum_log_return_sq) FILTER (WHERE i = 1) AS sum_lr2_m1,
           max(rsi_state) FILTER (WHERE i = 1) AS rsi_m1,
           max(macd_state) FILTER (WHERE i = 1) AS macd_m1,
           max(open) FILTER (WHERE i = 2) AS open_m2,
           max(close) FILTER (WHERE i = 2) AS close_m2,
           max(quote_volume) FILTER (WHERE i = 2) AS quote_volume_m2,
           max(close) FILTER (WHERE i = 6) AS close_m9,
           max(log_return) FILTER (WHERE i = 6) AS log_return_m9,
           max(sum_log_return_sq) FILTER (WHERE i = 6) AS sum_lr2_m9,
           max(high) FILTER (WHERE i <= 4) AS hi_raw,
           min(low) FILTER (WHERE i <= 4) AS lo_raw,
           max(high_5) FILTER (WHERE i = 5 OR i = 7) AS hi_5,
           min(low_5) FILTER (WHERE i = 5 OR i = 7) AS lo_5,
           max(high_15) FILTER (WHERE i = 9 OR i = 11 OR i = 12) AS hi_15,
           min(low_15) FILTER (WHERE i = 9 OR i = 11 OR i = 12) AS lo_15,
           max(high_60) FILTER (WHERE i = 14 OR i = 16 OR i = 17) AS hi_60,
           min(low_60) FILTER (WHERE i = 14 OR i = 16 OR i = 17) AS lo_60,
           max(high_240) FILTER (WHERE i = 19) AS hi_240,
           min(low_240) FILTER (WHERE i = 19) AS lo_240,
           max(high_480) FILTER (WHERE i = 21 OR i = 23) AS hi_480,
           min(low_480) FILTER (WHERE i = 21 OR i = 23) AS lo_480,
           max(open) FILTER (WHERE i = 4) AS open_5,
           max(cum_before) FILTER (WHERE i = 4) AS cum_before_5,
           max(cum_before) FILTER (WHERE i = 6) AS cum_before_prev_5,
           max(open) FILTER (WHERE i = 8) AS open_15,
           max(cum_before) FILTER (WHERE i = 8) AS cum_before_15,
           max(cum_before) FILTER (WHERE i = 10) AS cum_before_prev_15,
           max(open) FILTER (WHERE i = 13) AS open_60,
           max(cum_before) FILTER (WHERE i = 13) AS cum_before_60,
           max(cum_before) FILTER (WHERE i = 15) AS cum_before_prev_60,
           max(open) FILTER (WHERE i = 18) AS open_240,
           max(cum_before) FILTER (WHERE i = 18) AS cum_before_240,
           max(cum_before) FILTER (WHERE i = 20) AS cum_before_prev_240,
           max(open) FILTER (WHERE i = 20) AS open_480,
           max(cum_before) FILTER (WHERE i = 20) AS cum_before_480,
           max(cum_before) FILTER (WHERE i = 22) AS cum_before_prev_480,
           max(open) FILTER (WHERE i = 24) AS open_1440,
           max(cum_before) FILTER (WHERE i = 24) AS cum_before_1440,
           max(cum_before) FILTER (WHERE i = 25) AS cum_before_prev_1440
      FROM got GROUP BY symbol
  ), l AS (
    SELECT t.symbol, t.seq, t.open_time, t.close_time, t.open::float8 AS open,
           t.high::float8 AS high, t.low::float8 AS low, t.close::float8 AS close, t.quote_volume,
           p.*,
           CASE WHEN t.close > 0 AND p.close_m1 > 0 THEN ln(t.close::float8 / p.close_m1) END AS lr
      FROM t JOIN p ON p.p_symbol = t.symbol
  ), l5 AS (
    SELECT l.*,
           CASE WHEN seq >= 5 THEN greatest(high, hi_raw) END AS h5,
           CASE WHEN seq >= 5 THEN least(low, lo_raw) END AS l5
      FROM l
  ), l15 AS (
    SELECT l5.*,
           CASE WHEN seq >= 15 THEN greatest(h5, hi_5) END AS h15,
           CASE WHEN seq >= 15 THEN least(l5, lo_5) END AS l15
      FROM l5
  ), l60 AS (
    SELECT l15.*,
           CASE WHEN seq >= 60 THEN greatest(h15, hi_15) END AS h60,
           CASE WHEN seq >= 60 THEN least(l15, lo_15) END AS l60
      FROM l15
  ), l240 AS (
    SELECT l60.*,
           CASE WHEN seq >= 240 THEN greatest(h60, hi_60) END AS h240,
           CASE WHEN seq >= 240 THEN least(l60, lo_60) END AS l240
      FROM l60
  ), l480 AS (
    SELECT l240.*,
           CASE WHEN seq >= 480 THEN greatest(h240, hi_240) END AS h480,
           CASE WHEN seq >= 480 THEN least(l240, lo_240) END AS l480
      FROM l240
  ), ins AS (
    INSERT INTO market.screener_state
    SELECT symbol, seq, open_time, close_time, open, high, low, close, quote_volume,
           cum_before_m1 + quote_volume_m1, lr, sum_lr2_m1 + coalesce(lr * lr, 0),
           h5, l5, h15, l15, h60, l60, h240, l240, h480, l480,
           CASE WHEN seq >= 1440 THEN greatest(h480, hi_480) END,
           CASE WHEN seq >= 1440 THEN least(l480, lo_480) END,
           ta.rsi_step(rsi_m1, close, 14),
           ta.macd_step(macd_m1, close, 12, 26, 9),
           open_m1, close_m1, quote_volume_m1, open_m2, close_m2, quote_volume_m2, close_m9, log_return_m9, sum_lr2_m9, open_5, cum_before_5, cum_before_prev_5, open_15, cum_before_15, cum_before_prev_15, open_60, cum_before_60, cum_before_prev_60, open_240, cum_before_240, cum_before_prev_240, open_480, cum_before_480, cum_before_prev_480, open_1440, cum_before_1440, cum_before_prev_1440
      FROM l480
    RETURNING symbol, seq
  )
  SELECT ins.symbol::text, ins.seq FROM ins;
END
$$;
COMMENT ON FUNCTION market._state_append_lookup(market.candles_1m[]) IS
  'Internal: screener_state rows for one new candle per symbol (only candles after the '
  'symbol''s newest state row), by index lookups; returns the rows appended.';

-- Live path: the state rows of one new candle per symbol.  The session keeps each symbol's
-- sliding windows in memory (ta.screener_windows_*, pg_ta); an entry is used only when the
-- symbol's newest state row is still the one the cache ended with (same seq and xmin), otherwise
-- it is refilled from the last 2879 state rows.  Symbols the cache cannot serve (and every
-- symbol when market.screener_cache = off) take market._state_append_lookup.  Both give the
-- same rows bit for bit.
CREATE OR REPLACE FUNCTION market._state_append(p_candles market.candles_1m[])
RETURNS TABLE (symbol text, seq bigint)
LANGUAGE plpgsql AS
$$
#variable_conflict use_column
DECLARE
  v_candles market.candles_1m[] := p_candles;
  v_syms text[];
  v_done text[];
  v_done_seqs bigint[];
  v_pass int;
BEGIN
  IF coalesce(current_setting('market.screener_cache', true), '') IN ('off', 'false', '0') THEN
    RETURN QUERY SELECT * FROM market._state_append_lookup(p_candles);
    RETURN;
  END IF;

  -- pass 1 serves the symbols whose cache is current; the others are refilled from their last
  -- 2879 state rows and served by pass 2; what is still left takes the lookup path
  FOR v_pass IN 1..2 LOOP
    WITH t AS (
      -- numeric prices become double precision once (the cast goes through text)
      SELECT c.symbol, c.open_time, c.close_time, c.quote_volume,
             c.open::float8 AS open, c.high::float8 AS high, c.low::float8 AS low,
             c.close::float8 AS close, h.seq AS head_seq, h.xmin::text::bigint AS head_xmin,
             h.seq + 1 AS seq, h.cum_before + h.quote_volume AS cum_before, h.close AS prev_close,
             h.sum_log_return_sq AS prev_sum_lr2, h.rsi_state AS prev_rsi, h.macd_state AS prev_macd
        FROM unnest(v_candles) AS c
        JOIN LATERAL (SELECT s.seq, s.xmin, s.open_time, s.cum_before, s.quote_volume, s.close,
                             s.sum_log_return_sq, s.rsi_state, s.macd_state
                        FROM market.screener_state s WHERE s.symbol = c.symbol
                       ORDER BY s.seq DESC LIMIT 1) h ON true
       WHERE c.open_time > h.open_time
    ), tl AS (
      SELECT t.*, CASE WHEN t.close > 0 AND t.prev_close > 0 THEN ln(t.close / t.prev_close) END AS lr
        FROM t
    ), w AS (
      SELECT tl.*, tl.prev_sum_lr2 + coalesce(tl.lr * tl.lr, 0) AS sum_lr2,
             ta.screener_windows_step(tl.symbol, tl.head_seq, tl.head_xmin, tl.seq, tl.open,
                                      tl.high, tl.low, tl.close, tl.quote_volume, tl.cum_before,
                                      tl.lr, tl.prev_sum_lr2 + coalesce(tl.lr * tl.lr, 0)) AS win
        FROM tl
      OFFSET 0
    ), ins AS (
      INSERT INTO market.screener_state
      SELECT symbol, seq, open_time, close_time, open, high, low, close, quote_volume,
             cum_before, lr, sum_lr2,
             (win).high_5, (win).low_5, (win).high_15, (win).low_15, (win).high_60, (win).low_60, (win).high_240, (win).low_240, (win).high_480, (win).low_480, (win).high_1440, (win).low_1440,
             ta.rsi_step(prev_rsi, close, 14),
             ta.macd_step(prev_macd, close, 12, 26, 9),
             (win).open_m1, (win).close_m1, (win).quote_volume_m1, (win).open_m2, (win).close_m2, (win).quote_volume_m2, (win).close_m9, (win).log_return_m9, (win).sum_log_return_sq_m9, (win).open_5, (win).cum_before_5, (win).cum_before_prev_5, (win).open_15, (win).cum_before_15, (win).cum_before_prev_15, (win).open_60, (win).cum_before_60, (win).cum_before_prev_60, (win).open_240, (win).cum_before_240, (win).cum_before_prev_240, (win).open_480, (win).cum_before_480, (win).cum_before_prev_480, (win).open_1440, (win).cum_before_1440, (win).cum_before_prev_1440
        FROM w WHERE (win).seq IS NOT NULL
      RETURNING symbol, seq
    )
    SELECT array_agg(ins.symbol), array_agg(ins.seq) INTO v_done, v_done_seqs FROM ins;
    RETURN QUERY SELECT * FROM unnest(v_done, v_done_seqs);

    IF cardinality(v_done) = cardinality(v_candles) THEN
      v_candles := NULL;
      EXIT;
    END IF;
    SELECT array_agg(c), array_agg(c.symbol) INTO v_candles, v_syms
      FROM unnest(v_candles) AS c
      LEFT JOIN unnest(v_done) AS d(symbol) ON d.symbol = c.symbol
     WHERE d.symbol IS NULL;
    EXIT WHEN v_candles IS NULL OR v_pass = 2;

    PERFORM ta.screener_windows_load(
              l.symbol, l.head_xmin, l.seq, l.open, l.high, l.low, l.close, l.quote_volume,
              l.cum_before, l.log_return, l.sum_log_return_sq)
       FROM (SELECT r.symbol,
                    (array_agg(r.xmin::text::bigint ORDER BY r.seq DESC))[1] AS head_xmin,
                    array_agg(r.seq ORDER BY r.seq) AS seq,
                    array_agg(r.open ORDER BY r.seq) AS open,
                    array_agg(r.high ORDER BY r.seq) AS high,
                    array_agg(r.low ORDER BY r.seq) AS low,
                    array_agg(r.close ORDER BY r.seq) AS close,
                    array_agg(r.quote_volume ORDER BY r.seq) AS quote_volume,
                    array_agg(r.cum_before ORDER BY r.seq) AS cum_before,
                    array_agg(r.log_return ORDER BY r.seq) AS log_return,
                    array_agg(r.sum_log_return_sq ORDER BY r.seq) AS sum_log_return_sq
               FROM unnest(v_syms) AS v(symbol)
               JOIN LATERAL (SELECT s.xmin, s.* FROM market.screener_state s
                              WHERE s.symbol = v.symbol ORDER BY s.seq DESC LIMIT 2879) r ON true
              GROUP BY r.symbol) l;
  END LOOP;

  -- whatever the cache could not serve (or no candle at all was served)
  IF v_candles IS NOT NULL THEN
    RETURN QUERY SELECT * FROM market._state_append_lookup(v_candles);
  END IF;
END
$$;
COMMENT ON FUNCTION market._state_append(market.candles_1m[]) IS
  'Internal: screener_state rows for one new candle per symbol (only candles after the '
  'symbol''s newest state row; window cache, else lookups); returns the rows appended.';

CREATE OR REPLACE FUNCTION market.rebuild_screener_state(p_symbol text DEFAULT NULL)
RETURNS bigint
LANGUAGE sql AS
$$
  SELECT market._state_recompute(array_agg(symbol), array_agg('-infinity'::timestamptz))
    FROM (SELECT DISTINCT symbol FROM market.candles_1m
           WHERE p_symbol IS NULL OR symbol = p_symbol) s
$$;
COMMENT ON FUNCTION market.rebuild_screener_state(text) IS
  'Recreate market.screener_state from market.candles_1m for one symbol (or all when NULL). '
  'Returns the number of state rows written. Needed only after writes that bypassed the '
  'triggers (e.g. TimescaleDB drop_chunks, session_replication_role = replica).';

COMMENT ON FUNCTION market._rsi_chain_step(float8[], float8[], float8) IS
  'Internal: transition of market._rsi_chain, ta.rsi_step(COALESCE(state, init), value, 14).';
COMMENT ON FUNCTION market._macd_chain_step(float8[], float8[], float8) IS
  'Internal: transition of market._macd_chain, ta.macd_step(COALESCE(state, init), value, 12, 26, 9).';
COMMENT ON AGGREGATE market._rsi_chain(float8[], float8) IS
  'Internal: the RSI(14) streaming state after each close, used as a window aggregate when state '
  'rows are computed in bulk; the first argument is the state before the first row (NULL = fresh series).';
COMMENT ON AGGREGATE market._macd_chain(float8[], float8) IS
  'Internal: the MACD(12,26,9) streaming state after each close, used as a window aggregate when '
  'state rows are computed in bulk; the first argument is the state before the first row (NULL = fresh series).';
