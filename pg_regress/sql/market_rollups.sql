-- Rollups candles_5m .. candles_1d: the columns of candles_1m, buckets aligned to UTC.
-- (On plain PostgreSQL these are views; with TimescaleDB continuous aggregates giving the same
-- rows, tested by tests/timescaledb.)
SET client_min_messages = warning;
SET TIME ZONE 'UTC';

-- 12 minutes from 23:55 to 00:06 across midnight, two instruments with the same symbol
INSERT INTO market.candles_1m (market, symbol, open_time, close_time, open, high, low, close,
                               volume, quote_volume, trades, taker_buy_volume, taker_buy_quote_volume)
SELECT mk, 'ROLLUSDT', t, t + interval '59.999 seconds', 10 + m, 10 + m + 0.5, 10 + m - 0.5,
       10 + m + 0.25, 1, 10 + m, m, 0.5, 5
  FROM generate_series(0, 11) m,
       LATERAL (SELECT timestamptz '2024-04-01 23:55' + m * interval '1 minute' AS t) x,
       unnest(ARRAY['spot', 'usdm']) mk;

SELECT market, open_time, close_time, open, high, low, close, volume, quote_volume, trades,
       taker_buy_volume, taker_buy_quote_volume
  FROM market.candles_5m WHERE symbol = 'ROLLUSDT' ORDER BY market, open_time;
SELECT market, open_time, close_time, open, close, trades FROM market.candles_1h
 WHERE symbol = 'ROLLUSDT' ORDER BY market, open_time;
SELECT market, open_time, open, high, low, close, quote_volume FROM market.candles_1d
 WHERE symbol = 'ROLLUSDT' ORDER BY market, open_time;
SELECT count(*) AS buckets_15m FROM market.candles_15m WHERE symbol = 'ROLLUSDT';
SELECT count(*) AS buckets_4h FROM market.candles_4h WHERE symbol = 'ROLLUSDT';
-- the same columns as candles_1m
SELECT (SELECT array_agg(attname::text ORDER BY attname) FROM pg_attribute
         WHERE attrelid = 'market.candles_1m'::regclass AND attnum > 0 AND NOT attisdropped)
     = (SELECT array_agg(attname::text ORDER BY attname) FROM pg_attribute
         WHERE attrelid = 'market.candles_1d'::regclass AND attnum > 0 AND NOT attisdropped)
       AS same_columns;
-- indicators over a rollup
SELECT open_time, round((ta.sma(close, 2) OVER w)::numeric, 4) AS sma_2
  FROM market.candles_5m WHERE market = 'spot' AND symbol = 'ROLLUSDT'
WINDOW w AS (PARTITION BY market, symbol ORDER BY open_time) ORDER BY open_time;
DELETE FROM market.candles_1m WHERE symbol = 'ROLLUSDT';
