-- ta.screener(market, symbol, open_time, close_time, open, high, low, close, quote_volume):
-- the screener row (ta.screener_row) of every candle of your own 1m candle table.
-- Worked example (hand-checkable numbers), plus the internal ta._screener_state.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_ta;
SET TIME ZONE 'UTC';

-- 12 candles of one instrument starting 23:55 UTC (a UTC midnight after the 5th); each
-- opens at the previous close; quote volumes with different scales and a zero.
CREATE TEMP TABLE c (symbol text, i int, open_time timestamptz, close_time timestamptz,
                     open numeric, high numeric, low numeric, close numeric, quote_volume numeric);
INSERT INTO c
SELECT 'BTCUSDT', i, t, t + interval '59.999 seconds', o, greatest(o, cl) + 1, least(o, cl) - 1, cl, qv
FROM (VALUES (1, 100, 100, 1000.00), (2, 100, 101, 2000), (3, 101, 102, 0), (4, 102, 101, 1500.5),
             (5, 101, 103, 1000), (6, 103, 104, 3000), (7, 104, 103, 1000.25), (8, 103, 105, 2000),
             (9, 105, 106, 500), (10, 106, 104, 1000), (11, 104, 107, 4000), (12, 107, 108, 1000))
     v(i, o, cl, qv),
     LATERAL (SELECT timestamptz '2024-01-01 23:55' + (i - 1) * interval '1 minute' AS t) tt;

CREATE TEMP TABLE s AS
SELECT i, ta.screener('spot', symbol, open_time, close_time, open, high, low, close, quote_volume)
            OVER (PARTITION BY symbol ORDER BY open_time) AS r
FROM c;

-- 1. the 1m and 5m columns: change = (price - open)/open*100; the 5m window is the last 5
--    candles (NULL before the 5th); vol_5m is their exact quote volume sum; vol_ratio_5m
--    divides it by the 5 candles before (NULL before the 10th).
--    Candle 5: open_5m = 100 (candle 1), change_5m = (103-100)/100*100 = 3, high_5m = 104,
--    low_5m = 99, range_5m = 5/99*100, vol_5m = 1000.00+2000+0+1500.5+1000 = 5500.50.
--    Candle 10: vol_5m = 3000+1000.25+2000+500+1000 = 7500.25, vol_ratio_5m = 7500.25/5500.50.
SELECT i, (r).candles, (r).price, round((r).change_1m::numeric, 6) AS change_1m, (r).vol_1m,
       (r).open_5m, (r).high_5m, (r).low_5m, round((r).change_5m::numeric, 6) AS change_5m,
       round((r).range_5m::numeric, 6) AS range_5m, (r).vol_5m,
       round((r).vol_ratio_5m::numeric, 6) AS vol_ratio_5m
FROM s ORDER BY i;

-- 2. the last 3 candles: least/greatest 1m change in percent, least quote volume; VCP of the
--    candle: (P/WA)*((P-L)-(H-P))/(H-L) with P = close, WA = (open+close)/2. Candle 3:
--    changes 0, 1, 0.990099 -> min 0, max 1; volumes 1000.00, 2000, 0 -> 0; VCP
--    (102/101.5)*((102-100)-(103-102))/(103-100) = 0.334975.
SELECT i, round((r).min_change_1m_3::numeric, 6) AS min_change_1m_3,
       round((r).max_change_1m_3::numeric, 6) AS max_change_1m_3, (r).min_vol_1m_3,
       round((r).vcp::numeric, 6) AS vcp
FROM s WHERE i <= 6 ORDER BY i;

-- 3. volatility_10 from candle 11: the population standard deviation of the last 10 log
--    returns (running sums, as pg_ta 0.1.0), next to stddev_pop over the same returns
SELECT s.i, round((s.r).volatility_10::numeric, 10) AS volatility_10,
       round(stddev_pop(ln(x.close::float8 / x.prev::float8))::numeric, 10) AS by_hand
FROM s JOIN (SELECT i, close, lag(close) OVER (ORDER BY i) AS prev FROM c) x
  ON x.i BETWEEN s.i - 9 AND s.i
WHERE s.i >= 10
GROUP BY s.i, s.r ORDER BY s.i;

-- 4. the longer windows, Fibonacci pivots (1d window), RSI(14) and MACD(12,26,9) on 3000
--    candles of two instruments: the same values as the single ta.* aggregates
CREATE TEMP TABLE long AS
SELECT m.symbol, n, t AS open_time, t + interval '59.999 seconds' AS close_time,
       (m.k * (100 + (n * 37 % 23) * 0.25 - (n % 7) * 0.5))::numeric AS open,
       (m.k * (101 + (n * 37 % 23) * 0.25 + (n % 3) * 0.25))::numeric AS high,
       (m.k * (99 - (n % 7) * 0.5 - (n % 4) * 0.25))::numeric AS low,
       (m.k * (100 + ((n + 1) * 37 % 23) * 0.25 - ((n + 1) % 7) * 0.5))::numeric AS close,
       (n % 13 * 10)::numeric AS quote_volume
FROM (VALUES ('AAA', 1), ('BBB', 7)) m(symbol, k), generate_series(1, 3000) n,
     LATERAL (SELECT timestamptz '2024-03-01' + n * interval '1 minute' AS t) tt;
CREATE TEMP TABLE long_s AS
SELECT symbol, n, open_time,
       ta.screener('spot', symbol, open_time, close_time, open, high, low, close, quote_volume) OVER w AS r,
       ta.rsi(close, 14) OVER w AS rsi, ta.macd(close, 12, 26, 9) OVER w AS macd
FROM long WINDOW w AS (PARTITION BY symbol ORDER BY open_time);
SELECT symbol,
       count(*) FILTER (WHERE (r).rsi_14 IS DISTINCT FROM rsi) AS rsi_differs,
       count(*) FILTER (WHERE (r).macd IS DISTINCT FROM (macd).macd
                           OR (r).macd_signal IS DISTINCT FROM (macd).macd_signal
                           OR (r).macd_hist IS DISTINCT FROM (macd).macd_hist) AS macd_differs,
       min(n) FILTER (WHERE (r).change_1d IS NOT NULL) AS first_change_1d,
       min(n) FILTER (WHERE (r).vol_ratio_1d IS NOT NULL) AS first_vol_ratio_1d
FROM long_s GROUP BY symbol ORDER BY symbol;
-- the 1d window and its pivots at three candles, against aggregates over the last 1440 rows
SELECT s.symbol, s.n, (s.r).high_1d = a.h AS high_1d_ok, (s.r).low_1d = a.l AS low_1d_ok,
       (s.r).vol_1d = a.v AS vol_1d_ok,
       (s.r).fib_pivot = (a.fib).pivot AND (s.r).fib_r1 = (a.fib).r1 AND (s.r).fib_r2 = (a.fib).r2
         AND (s.r).fib_r3 = (a.fib).r3 AND (s.r).fib_s1 = (a.fib).s1 AND (s.r).fib_s2 = (a.fib).s2
         AND (s.r).fib_s3 = (a.fib).s3 AS fib_ok,
       round((s.r).fib_pivot::numeric, 6) AS fib_pivot, round((s.r).fib_r1::numeric, 6) AS fib_r1
FROM long_s s,
     LATERAL (SELECT max(high)::float8 AS h, min(low)::float8 AS l, sum(quote_volume) AS v,
                     ta.fib_pivots(high, low, close ORDER BY open_time) AS fib
              FROM long WHERE long.symbol = s.symbol AND long.n BETWEEN s.n - 1439 AND s.n) a
WHERE s.n IN (1440, 2222, 3000)
ORDER BY s.symbol, s.n;

-- 5. as a plain aggregate: the row of the last candle (write ORDER BY inside the call)
SELECT (r).symbol, (r).candles, (r).price, round((r).change_5m::numeric, 6) AS change_5m, (r).vol_5m
FROM (SELECT ta.screener('spot', symbol, open_time, close_time, open, high, low, close,
                         quote_volume ORDER BY open_time) AS r FROM c) q;

-- 6. ta._screener_state (internal, the data schema's set-based path): a state for the rows
--    inside [emit_from, emit_to] and for the first candle of each UTC day (with the
--    checkpoint before it); NULL otherwise. A fresh series starts at (0,,,0,0,,).
SELECT i, ((st)."row").candles, ((st).day_checkpoint).candles IS NOT NULL AS day_first,
       ((st).day_checkpoint).candles AS day_checkpoint_candles,
       ((st).day_checkpoint).cum_quote_volume AS day_checkpoint_volume,
       ((st).chain).candles AS chain_candles, ((st).chain).cum_quote_volume AS chain_volume
FROM (SELECT i, ta._screener_state('spot', symbol, open_time, close_time, open, high, low, close,
                                   quote_volume, NULL, '2024-01-02 00:04', '2024-01-02 00:05')
                  OVER (ORDER BY open_time) AS st FROM c) q
ORDER BY i;
-- starting from the checkpoint before candle 6 (the first of 2024-01-02): the same chain and
-- 5m window after candle 12; what needs a candle before the checkpoint (vol_ratio_5m needs 10
-- candles, volatility_10 the log return 9 candles back) is NULL, never a partial value
WITH f AS (SELECT i, ta._screener_state('spot', symbol, open_time, close_time, open, high, low,
                                        close, quote_volume, NULL, NULL, NULL)
                       OVER (ORDER BY open_time) AS st FROM c),
     cp AS (SELECT (st).day_checkpoint AS cp FROM f WHERE i = 6),
     resumed AS (SELECT c.i, ta._screener_state('spot', c.symbol, c.open_time, c.close_time, c.open,
                                                c.high, c.low, c.close, c.quote_volume, cp.cp, NULL, NULL)
                               OVER (ORDER BY c.open_time) AS st
                 FROM c, cp WHERE c.i >= 6)
SELECT r.i, (cp).candles AS start_candles, (r.st).chain::text = (f.st).chain::text AS same_chain,
       ((r.st)."row").vol_5m = ((f.st)."row").vol_5m AS same_vol_5m,
       ((r.st)."row").vol_ratio_5m AS resumed_vol_ratio_5m,
       round(((f.st)."row").vol_ratio_5m::numeric, 6) AS full_vol_ratio_5m,
       ((r.st)."row").volatility_10 AS resumed_volatility_10
FROM resumed r JOIN f USING (i), cp WHERE r.i = 12;

-- errors: rows not strictly increasing in open_time (duplicates included)
SELECT ta.screener('spot', symbol, open_time, close_time, open, high, low, close, quote_volume
                   ORDER BY open_time DESC) FROM c;
-- error: a NULL candle value
SELECT ta.screener('spot', 'X', now(), now(), 1, 1, 1, NULL, 1);
-- error: two instruments in one partition
SELECT ta.screener('spot', symbol, open_time, close_time, open, high, low, close, quote_volume
                   ORDER BY open_time) FROM long;
-- error: a malformed checkpoint
SELECT ta._screener_state('spot', 'X', now(), now(), 1, 1, 1, 1, 1,
                          ROW(3, now(), 1, 0, 0, ARRAY[1, 2], NULL)::ta.screener_checkpoint, NULL, NULL);
