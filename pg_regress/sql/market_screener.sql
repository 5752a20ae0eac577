-- Screener metrics and alerts on a small, hand-checkable series.
-- (The data schema, sql/*.sql, is applied before this file runs.)
SET client_min_messages = warning;
SET TIME ZONE 'UTC';
SET extra_float_digits = 0;

-- 20 quiet minutes: price 100, quote volume 1000 per minute; then 5 minutes rising 0.4 per
-- minute on 5000 per minute.
CREATE TEMP TABLE series AS
SELECT m, timestamptz '2024-01-01 00:00' + (m || ' minutes')::interval AS open_time,
       CASE WHEN m < 20 THEN 100 ELSE 100 + 0.4 * (m - 19) END::numeric AS close,
       CASE WHEN m < 20 THEN 1000 ELSE 5000 END::numeric AS quote_volume
  FROM generate_series(0, 24) m;

-- one statement and one transaction per minute, as a live feed writes
DO $$
DECLARE r record;
BEGIN
  FOR r IN SELECT * FROM series ORDER BY m LOOP
    INSERT INTO market.candles_1m
    VALUES ('TESTUSDT', r.open_time, r.open_time + interval '59.999 seconds',
            CASE WHEN r.m < 20 THEN 100 ELSE r.close - 0.4 END, r.close + 0.1,
            CASE WHEN r.m < 20 THEN 100 ELSE r.close - 0.4 END - 0.1, r.close,
            r.quote_volume / r.close, r.quote_volume, 10, 0, 0);
    COMMIT;
  END LOOP;
END
$$;

-- windows count stored candles: at the last minute the 5m window is minutes 20..24
SELECT symbol, open_time, candles, price, open_5m, high_5m, low_5m,
       round(change_5m::numeric, 6) AS change_5m, vol_5m, vol_15m,
       round(change_15m::numeric, 6) AS change_15m, round(vol_ratio_5m::numeric, 6) AS vol_ratio_5m,
       change_1h, vol_1h, rsi_14
  FROM market.screener;

-- by hand: change_5m = (102 - 100) / 100 * 100 = 2; vol_5m = 5 x 5000; vol_15m = 25000 + 10 x 1000
-- pioneer_bull: change_5m > 1, change_15m > 1, 3 x change_5m > change_15m, 2 x vol_5m > vol_15m.
-- It first holds at 00:22 (5m window 18..22: 100 -> 101.2 = +1.2 %); cooldown 5 min keeps
-- 00:23 and 00:24 silent.
SELECT symbol, rule, open_time, price, payload->'version' AS version,
       round((payload->'changes'->>'5m')::numeric, 6) AS change_5m,
       payload->'volumes'->'5m' AS vol_5m
  FROM market.alert_history ORDER BY open_time, rule;

-- the backtest replays the same evaluation without writing; without cooldown every firing
-- candle is listed
SELECT symbol, rule, open_time FROM market.backtest('pioneer_bull', '2024-01-01', '2024-01-02');
SELECT symbol, rule, open_time
  FROM market.backtest('pioneer_bull', '2024-01-01', '2024-01-02', p_cooldown => false);
-- tuning a threshold without saving it
SELECT count(*) AS fires_with_change_5m_min_1_5
  FROM market.backtest('pioneer_bull', '2024-01-01', '2024-01-02', NULL,
                       '{"change_5m_min": 1.5}', false);
SELECT symbol, open_time
  FROM market.backtest_expression('change_5m > $x AND vol_5m > 20000', '2024-01-01', '2024-01-02',
                                  p_config => '{"x": 1.9}');
\set VERBOSITY terse
SELECT * FROM market.backtest('no_such_rule', '2024-01-01', '2024-01-02');
\set VERBOSITY default

-- screener_at: the screener as of a past minute
SELECT open_time, candles, price, change_5m FROM market.screener_at('2024-01-01 00:10');

-- VCP and Fibonacci pivots are ta.vcp / ta.fib_pivots
SELECT abs(s.vcp - v.vcp) < 1e-12 AS vcp_matches
  FROM market.screener s,
       (SELECT ta.vcp(close, (open + close) / 2, high, low) AS vcp
          FROM market.candles_1m WHERE open_time = '2024-01-01 00:24') v
 WHERE s.market = 'spot' AND s.symbol = 'TESTUSDT';

-- rewriting a stored minute with identical values changes nothing and fires nothing
INSERT INTO market.candles_1m SELECT * FROM market.candles_1m WHERE open_time = '2024-01-01 00:22'
ON CONFLICT (market, symbol, open_time) DO UPDATE SET close = EXCLUDED.close
WHERE market.candles_1m.close IS DISTINCT FROM EXCLUDED.close;
SELECT count(*) AS alerts FROM market.alert_history;

-- a bulk load evaluates only its newest minute per symbol, and nothing with evaluate_alerts off
BEGIN;
SET LOCAL market.evaluate_alerts = off;
INSERT INTO market.candles_1m
SELECT 'OTHERUSDT', open_time, close_time, open, high, low, close, volume, quote_volume, trades,
       taker_buy_volume, taker_buy_quote_volume
  FROM market.candles_1m WHERE symbol = 'TESTUSDT';
COMMIT;
SELECT symbol, count(*) AS alerts FROM market.alert_history GROUP BY symbol ORDER BY symbol;
-- without the switch the same bulk load is evaluated at its newest minute only (00:24)
INSERT INTO market.candles_1m
SELECT 'THIRDUSDT', open_time, close_time, open, high, low, close, volume, quote_volume, trades,
       taker_buy_volume, taker_buy_quote_volume
  FROM market.candles_1m WHERE symbol = 'TESTUSDT';
SELECT symbol, rule, open_time FROM market.alert_history WHERE symbol = 'THIRDUSDT';

-- the state kept: one head per instrument (and a checkpoint per UTC day), equal to a rebuild
SELECT market, symbol, open_time, ("row").candles FROM market.screener_state ORDER BY 1, 2;
SELECT market, symbol, open_time, candles, last_open_time FROM market.screener_checkpoints
 ORDER BY 1, 2, 3;
CREATE TEMP TABLE live AS SELECT market, symbol, open_time, "row"::text AS r, chain::text AS c
  FROM market.screener_state;
SELECT market.rebuild_screener_state();
SELECT count(*) AS heads,
       count(*) FILTER (WHERE (l.open_time, l.r, l.c) IS DISTINCT FROM (b.open_time, b."row"::text, b.chain::text))
         AS heads_differing
  FROM live l FULL JOIN market.screener_state b USING (market, symbol);

-- the same symbol on USD-M futures is another instrument
INSERT INTO market.candles_1m (market, symbol, open_time, close_time, open, high, low, close,
                               volume, quote_volume, trades, taker_buy_volume, taker_buy_quote_volume)
SELECT 'usdm', symbol, open_time, close_time, open * 2, high * 2, low * 2, close * 2, volume,
       quote_volume * 3, trades, taker_buy_volume, taker_buy_quote_volume
  FROM market.candles_1m WHERE market = 'spot' AND symbol = 'TESTUSDT';
SELECT market, symbol, candles, price, vol_5m FROM market.screener WHERE symbol = 'TESTUSDT'
 ORDER BY market;
SELECT market, symbol, count(*) FROM market.screener_range('2024-01-01', '2024-01-02', ARRAY['TESTUSDT'])
 GROUP BY 1, 2 ORDER BY 1, 2;
SELECT market, count(*) FROM market.screener_range('2024-01-01', '2024-01-02', NULL, 'usdm')
 GROUP BY 1;

-- deleting the oldest candles from the middle of a UTC day restarts the chain at the first
-- kept candle (candles counts from 1 again); out-of-order writes are recomputed
DELETE FROM market.candles_1m WHERE market = 'spot' AND symbol = 'TESTUSDT'
   AND open_time < '2024-01-01 00:05';
SELECT market, symbol, open_time, ("row").candles FROM market.screener_state
 WHERE symbol = 'TESTUSDT' ORDER BY 1;
SELECT open_time, candles FROM market.screener_checkpoints WHERE symbol = 'TESTUSDT'
 ORDER BY market, open_time;

-- three and a half days of a deterministic wave: the 1d-window metrics against the ta.* aggregates
-- over the same 1440 candles
INSERT INTO market.candles_1m
SELECT 'WAVEUSDT', t, t + interval '59.999 seconds', o, greatest(o, c) + 0.25, least(o, c) - 0.25, c,
       10, 10 * c, 5, 4, 4 * c
  FROM (SELECT timestamptz '2024-02-01' + (m || ' minutes')::interval AS t,
               round((100 + 10 * sin(m / 50.0))::numeric, 2) AS o,
               round((100 + 10 * sin((m + 1) / 50.0))::numeric, 2) AS c
          FROM generate_series(0, 4999) m) w;
WITH s AS (SELECT * FROM market.screener WHERE symbol = 'WAVEUSDT'),
     ref AS (
       SELECT ta.fib_pivots(high, low, close ORDER BY open_time) AS f,
              max(high)::float8 AS h, min(low)::float8 AS l,
              (array_agg(open ORDER BY open_time))[1]::float8 AS o
         FROM (SELECT * FROM market.candles_1m WHERE symbol = 'WAVEUSDT'
                ORDER BY open_time DESC LIMIT 1440) d)
SELECT s.candles, s.high_1d = ref.h AS high_1d_ok, s.low_1d = ref.l AS low_1d_ok,
       s.open_1d = ref.o AS open_1d_ok,
       s.fib_pivot = (ref.f).pivot AND s.fib_r1 = (ref.f).r1 AND s.fib_r2 = (ref.f).r2
         AND s.fib_r3 = (ref.f).r3 AND s.fib_s1 = (ref.f).s1 AND s.fib_s2 = (ref.f).s2
         AND s.fib_s3 = (ref.f).s3 AS fib_pivots_ok,
       s.rsi_14 = (SELECT ta.rsi(close, 14 ORDER BY open_time) FROM market.candles_1m
                    WHERE symbol = 'WAVEUSDT') AS rsi_ok,
       s.macd_hist = (SELECT (ta.macd(close, 12, 26, 9 ORDER BY open_time)).macd_hist
                        FROM market.candles_1m WHERE symbol = 'WAVEUSDT') AS macd_ok
  FROM s, ref;

-- the data schema's checkpoint machinery gives what the engine gives from a fresh start over
-- the whole series (ta.screener over the candles), at every candle
SELECT count(*) AS rows_checked,
       count(*) FILTER (WHERE r::text IS DISTINCT FROM e::text) AS rows_differing
  FROM (SELECT m AS r FROM market.screener_range('2024-02-01', '2024-02-05', ARRAY['WAVEUSDT']) m) x
  FULL JOIN (SELECT ta.screener(market, symbol, open_time, close_time, open, high, low, close,
                                quote_volume) OVER (ORDER BY open_time) AS e
               FROM market.candles_1m WHERE symbol = 'WAVEUSDT') y
    ON (x.r).open_time = (y.e).open_time;
-- and from any start inside the series (windows reach back, the chain comes from checkpoints)
SELECT count(*) AS rows_checked,
       count(*) FILTER (WHERE r::text IS DISTINCT FROM e::text) AS rows_differing
  FROM (SELECT m AS r FROM market.screener_range('2024-02-04 01:00', '2024-02-04 03:00',
                                                 ARRAY['WAVEUSDT']) m) x
  JOIN (SELECT ta.screener(market, symbol, open_time, close_time, open, high, low, close,
                           quote_volume) OVER (ORDER BY open_time) AS e
          FROM market.candles_1m WHERE symbol = 'WAVEUSDT') y
    ON (x.r).open_time = (y.e).open_time;
SELECT open_time, candles FROM market.screener_checkpoints WHERE symbol = 'WAVEUSDT' ORDER BY 1;

-- retention: deleting whole UTC days from the start keeps every kept candle's values
CREATE TEMP TABLE wave_before AS
SELECT m::text AS r, m.open_time FROM market.screener_range('2024-02-02', '2024-02-05', ARRAY['WAVEUSDT']) m;
CREATE TEMP TABLE wave_head AS SELECT "row"::text AS r FROM market.screener_state WHERE symbol = 'WAVEUSDT';
DELETE FROM market.candles_1m WHERE symbol = 'WAVEUSDT' AND open_time < '2024-02-02';
SELECT open_time, candles FROM market.screener_checkpoints WHERE symbol = 'WAVEUSDT' ORDER BY 1;
SELECT count(*) AS kept_rows,
       count(*) FILTER (WHERE b.r IS DISTINCT FROM a.r) AS rows_differing
  FROM wave_before b
  JOIN (SELECT m::text AS r, m.open_time
          FROM market.screener_range('2024-02-02', '2024-02-05', ARRAY['WAVEUSDT']) m) a
    USING (open_time)
 WHERE b.open_time >= '2024-02-02 00:00'::timestamptz + interval '2879 minutes';
SELECT s."row"::text = h.r AS head_unchanged
  FROM market.screener_state s, wave_head h WHERE s.symbol = 'WAVEUSDT';
