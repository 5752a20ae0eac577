-- 004: screener metrics: one row per symbol at one candle, over sliding windows of the last
-- N stored candles (5m = 5, 15m = 15, 1h = 60, 4h = 240, 8h = 480, 1d = 1440).
--
-- A window's candle: open = open of its first candle, close = close of its last, high = max,
-- low = min, volume = sum of quote_volume.  change_W = (close - open) / open * 100 (percent).
-- A metric whose window is not full yet is NULL, so a rule that uses it does not fire.

DO $$
BEGIN
  IF to_regtype('market.screener_row') IS NULL THEN
    CREATE TYPE market.screener_row AS (
      symbol          text,
      open_time       timestamptz,
      close_time      timestamptz,
      candles         bigint,
      price           float8,
      change_1m       float8,
      vol_1m          numeric,
      open_5m float8, high_5m float8, low_5m float8, change_5m float8, range_5m float8,
      vol_5m numeric, vol_ratio_5m float8,
      open_15m float8, high_15m float8, low_15m float8, change_15m float8, range_15m float8,
      vol_15m numeric, vol_ratio_15m float8,
      open_1h float8, high_1h float8, low_1h float8, change_1h float8, range_1h float8,
      vol_1h numeric, vol_ratio_1h float8,
      open_4h float8, high_4h float8, low_4h float8, change_4h float8, range_4h float8,
      vol_4h numeric, vol_ratio_4h float8,
      open_8h float8, high_8h float8, low_8h float8, change_8h float8, range_8h float8,
      vol_8h numeric, vol_ratio_8h float8,
      open_1d float8, high_1d float8, low_1d float8, change_1d float8, range_1d float8,
      vol_1d numeric, vol_ratio_1d float8,
      min_change_1m_3 float8,
      max_change_1m_3 float8,
      min_vol_1m_3    numeric,
      volatility_10   float8,
      vcp             float8,
      fib_pivot float8, fib_r1 float8, fib_r2 float8, fib_r3 float8,
      fib_s1 float8, fib_s2 float8, fib_s3 float8,
      rsi_14          float8,
      macd            float8,
      macd_signal     float8,
      macd_hist       float8
    );
  END IF;
END
$$;
COMMENT ON TYPE market.screener_row IS
  'Screener metrics of one symbol at one closed 1m candle; the columns custom rules may use. '
  'Windows W in 5m, 15m, 1h, 4h, 8h, 1d = the last 5, 15, 60, 240, 480, 1440 stored candles. '
  'price = close of the candle; change_1m/vol_1m = that candle''s percent change and quote volume; '
  'open_W/high_W/low_W = window open/high/low (price units); change_W = (price - open_W)/open_W*100 '
  '(percent); range_W = (high_W - low_W)/low_W*100 (percent); vol_W = sum of quote_volume '
  '(quote asset, USDT); vol_ratio_W = vol_W / quote volume of the previous W window '
  '(NULL until 2W candles). min_change_1m_3/max_change_1m_3/min_vol_1m_3 = over the last 3 candles. '
  'volatility_10 = population stddev of the last 10 1m log returns (fraction, as ta.volatility). '
  'vcp = ta.vcp(close, (open+close)/2, high, low) of the last candle. fib_* = ta.fib_pivots over '
  'the 1d window. rsi_14 = ta.rsi(close, 14), macd* = ta.macd(close, 12, 26, 9) over all stored '
  'closes. Every window metric is NULL until its window is full.';

-- The one definition of every metric, shared by the live path, market.screener_at() and
-- market.screener_range().  A single-SELECT SQL function used in FROM, so PostgreSQL inlines
-- it into the calling query (and plpgsql caches that plan): no per-row function call.
-- VCP and Fibonacci pivots are the formulas of ta.vcp and ta.fib_pivots over one candle / the
-- 1d window (pg_regress/sql/screener.sql checks them against those aggregates).
CREATE OR REPLACE FUNCTION market._metrics(i market.screener_state)
RETURNS SETOF market.screener_row
LANGUAGE sql IMMUTABLE PARALLEL SAFE ROWS 1 AS
$$
SELECT

  i.symbol, i.open_time, i.close_time, i.seq, i.close,
  (i.close - i.open) / nullif(i.open, 0) * 100, i.quote_volume,
  -- 5m
  i.open_5, i.high_5, i.low_5, (i.close - i.open_5) / nullif(i.open_5, 0) * 100,
  (i.high_5 - i.low_5) / nullif(i.low_5, 0) * 100,
  i.cum_before + i.quote_volume - i.cum_before_5,
  (i.cum_before + i.quote_volume - i.cum_before_5)::float8
    / nullif((i.cum_before_5 - i.cum_before_prev_5)::float8, 0),
  -- 15m
  i.open_15, i.high_15, i.low_15, (i.close - i.open_15) / nullif(i.open_15, 0) * 100,
  (i.high_15 - i.low_15) / nullif(i.low_15, 0) * 100,
  i.cum_before + i.quote_volume - i.cum_before_15,
  (i.cum_before + i.quote_volume - i.cum_before_15)::float8
    / nullif((i.cum_before_15 - i.cum_before_prev_15)::float8, 0),
  -- 1h
  i.open_60, i.high_60, i.low_60, (i.close - i.open_60) / nullif(i.open_60, 0) * 100,
  (i.high_60 - i.low_60) / nullif(i.low_60, 0) * 100,
  i.cum_before + i.quote_volume - i.cum_before_60,
  (i.cum_before + i.quote_volume - i.cum_before_60)::float8
    / nullif((i.cum_before_60 - i.cum_before_prev_60)::float8, 0),
  -- 4h
  i.open_240, i.high_240, i.low_240, (i.close - i.open_240) / nullif(i.open_240, 0) * 100,
  (i.high_240 - i.low_240) / nullif(i.low_240, 0) * 100,
  i.cum_before + i.quote_volume - i.cum_before_240,
  (i.cum_before + i.quote_volume - i.cum_before_240)::float8
    / nullif((i.cum_before_240 - i.cum_before_prev_240)::float8, 0),
  -- 8h
  i.open_480, i.high_480, i.low_480, (i.close - i.open_480) / nullif(i.open_480, 0) * 100,
  (i.high_480 - i.low_480) / nullif(i.low_480, 0) * 100,
  i.cum_before + i.quote_volume - i.cum_before_480,
  (i.cum_before + i.quote_volume - i.cum_before_480)::float8
    / nullif((i.cum_before_480 - i.cum_before_prev_480)::float8, 0),
  -- 1d
  i.open_1440, i.high_1440, i.low_1440, (i.close - i.open_1440) / nullif(i.open_1440, 0) * 100,
  (i.high_1440 - i.low_1440) / nullif(i.low_1440, 0) * 100,
  i.cum_before + i.quote_volume - i.cum_before_1440,
  (i.cum_before + i.quote_volume - i.cum_before_1440)::float8
    / nullif((i.cum_before_1440 - i.cum_before_prev_1440)::float8, 0),
  -- the last 3 candles
  CASE WHEN i.seq >= 3 AND i.open > 0 AND i.open_m1 > 0 AND i.open_m2 > 0 THEN
                           least((i.close - i.open) / nullif(i.open, 0),
                                  (i.close_m1 - i.open_m1) / nullif(i.open_m1, 0),
                                  (i.close_m2 - i.open_m2) / nullif(i.open_m2, 0)) * 100 END,
  CASE WHEN i.seq >= 3 AND i.open > 0 AND i.open_m1 > 0 AND i.open_m2 > 0 THEN
                           greatest((i.close - i.open) / nullif(i.open, 0),
                                     (i.close_m1 - i.open_m1) / nullif(i.open_m1, 0),
                                     (i.close_m2 - i.open_m2) / nullif(i.open_m2, 0)) * 100 END,
  CASE WHEN i.seq >= 3 THEN least(i.quote_volume, i.quote_volume_m1, i.quote_volume_m2) END,
  -- volatility_10: the 10 log returns of candles s-9..s, from the running sums
  CASE WHEN i.seq >= 11 AND i.close > 0 AND i.close_m9 > 0 THEN
    sqrt(greatest((i.sum_log_return_sq - i.sum_log_return_sq_m9 + i.log_return_m9 * i.log_return_m9) / 10
                  - ((ln(i.close / i.close_m9) + i.log_return_m9) / 10) ^ 2, 0)) END,
  -- vcp of the last candle: P = close, WA = (open + close) / 2
  CASE WHEN i.high = i.low THEN 0
       ELSE (i.close / nullif((i.open + i.close) / 2, 0)) * ((i.close - i.low) - (i.high - i.close))
            / (i.high - i.low) END,
  -- Fibonacci pivots of the 1d window
  (i.high_1440 + i.low_1440 + i.close) / 3,
  (i.high_1440 + i.low_1440 + i.close) / 3 + 0.382 * (i.high_1440 - i.low_1440),
  (i.high_1440 + i.low_1440 + i.close) / 3 + 0.618 * (i.high_1440 - i.low_1440),
  (i.high_1440 + i.low_1440 + i.close) / 3 + 1.0 * (i.high_1440 - i.low_1440),
  (i.high_1440 + i.low_1440 + i.close) / 3 - 0.382 * (i.high_1440 - i.low_1440),
  (i.high_1440 + i.low_1440 + i.close) / 3 - 0.618 * (i.high_1440 - i.low_1440),
  (i.high_1440 + i.low_1440 + i.close) / 3 - 1.0 * (i.high_1440 - i.low_1440),
  i.rsi_state[1], i.macd_state[1], i.macd_state[2], i.macd_state[3]
$$;
COMMENT ON FUNCTION market._metrics(market.screener_state) IS
  'Internal: the screener metrics formulas (see COMMENT ON TYPE market.screener_row).';

-- State rows at given (symbol, seq) pairs (primary-key lookups).
CREATE OR REPLACE FUNCTION market._state_at(p_symbols text[], p_seqs bigint[])
RETURNS SETOF market.screener_state
LANGUAGE sql STABLE AS
$$
SELECT s.*
  FROM unnest(p_symbols, p_seqs) AS t(symbol, seq)
  JOIN LATERAL (SELECT * FROM market.screener_state s
                 WHERE s.symbol = t.symbol AND s.seq = t.seq) s ON true
$$;

-- The screener: one row per symbol at its last candle with open_time <= p_time
-- (the latest candle when p_time is NULL).
CREATE OR REPLACE FUNCTION market.screener_at(p_time timestamptz DEFAULT NULL)
RETURNS SETOF market.screener_row
LANGUAGE sql STABLE AS
$$
WITH RECURSIVE syms AS (   -- distinct symbols by skipping through the primary key
  (SELECT symbol FROM market.screener_state ORDER BY symbol LIMIT 1)
  UNION ALL
  SELECT (SELECT s.symbol FROM market.screener_state s WHERE s.symbol > syms.symbol
           ORDER BY s.symbol LIMIT 1)
    FROM syms WHERE syms.symbol IS NOT NULL
), heads AS (
  SELECT syms.symbol, h.seq
    FROM syms
    JOIN LATERAL (SELECT seq FROM market.screener_state s
                   WHERE s.symbol = syms.symbol
                     AND (p_time IS NULL OR s.open_time <= p_time)
                   ORDER BY s.open_time DESC LIMIT 1) h ON true
   WHERE syms.symbol IS NOT NULL
)
SELECT m.*
  FROM (SELECT array_agg(symbol) AS syms, array_agg(seq) AS seqs FROM heads) h,
       market._state_at(h.syms, h.seqs) s,
       LATERAL market._metrics(s) m
 ORDER BY m.symbol
$$;
COMMENT ON FUNCTION market.screener_at(timestamptz) IS
  'Screener metrics (market.screener_row) for every symbol at its last stored 1m candle whose '
  'open_time <= p_time (NULL: the latest candle). Windows count stored candles, so an exchange '
  'outage makes a window span more wall-clock time. One row per symbol, ordered by symbol.';

CREATE OR REPLACE VIEW market.screener AS SELECT * FROM market.screener_at(NULL);
COMMENT ON VIEW market.screener IS
  'One row per symbol: screener metrics at its latest closed 1m candle (see market.screener_row).';

-- Metrics for every candle of a range (backtests, charts).
CREATE OR REPLACE FUNCTION market.screener_range(p_from timestamptz, p_to timestamptz,
                                                 p_symbols text[] DEFAULT NULL)
RETURNS SETOF market.screener_row
LANGUAGE sql STABLE AS
$$
SELECT m.*
  FROM market.screener_state s, LATERAL market._metrics(s) m
 WHERE s.open_time BETWEEN p_from AND p_to
   AND (p_symbols IS NULL OR s.symbol = ANY (p_symbols))
 ORDER BY s.symbol, s.seq
$$;
COMMENT ON FUNCTION market.screener_range(timestamptz, timestamptz, text[]) IS
  'Screener metrics (market.screener_row) for every stored candle with open_time in '
  '[p_from, p_to] of the given symbols (all symbols when NULL). Same values as market.screener_at '
  'at each of those candles.';

COMMENT ON FUNCTION market._state_at(text[], bigint[]) IS
  'Internal: the market.screener_state rows at the given (symbol, seq) pairs (primary-key lookups).';
