-- Retention on plain PostgreSQL: market.apply_retention() applies market.settings in candle
-- time (newest stored candle = now): whole UTC days of candles older than candles_retention,
-- alerts older than alert_history_retention.  ta-feed stream calls it every hour.
SET client_min_messages = warning;
SET TIME ZONE 'UTC';
SET market.evaluate_alerts = off;  -- this test's candles fire nothing

-- no candles, no candle time: nothing is old (an alert of 2021 stays; the server clock is
-- not a fallback "now").  In a transaction that hides every instrument's head.
BEGIN;
DELETE FROM market.screener_state;
INSERT INTO market.alert_history (market, symbol, rule_id, rule, open_time, close_time, price, payload)
SELECT 'spot', 'OLDUSDT', rule_id, name, '2021-05-19 01:25', '2021-05-19 01:25:59.999', 1, '{}'
  FROM market.alert_rules ORDER BY rule_id LIMIT 1;
SELECT candles_cutoff, alerts_cutoff, alerts_deleted FROM market.apply_retention();
SELECT count(*) AS old_alert_kept FROM market.alert_history WHERE symbol = 'OLDUSDT';
ROLLBACK;

-- 6 days of one candle per hour for one instrument (other tests' data is left alone: it is
-- older than nothing here, and candles_retention stays NULL for them afterwards)
INSERT INTO market.candles_1m (market, symbol, open_time, close_time, open, high, low, close,
                               volume, quote_volume, trades, taker_buy_volume, taker_buy_quote_volume)
SELECT 'usdm', 'RETNUSDT', t, t + interval '59.999 seconds', 10, 11, 9, 10, 1, 10, 1, 0.5, 5
  FROM generate_series(timestamptz '2024-03-01', timestamptz '2024-03-06 23:00', interval '1 hour') t;

-- default: keep every candle
SELECT candles_cutoff IS NULL AS keeps_candles, candles_deleted
  FROM market.apply_retention();
SELECT count(*) FROM market.candles_1m WHERE symbol = 'RETNUSDT';

-- at least 3 days, so the live windows stay complete (terse: the settings row grows columns)
\set VERBOSITY terse
UPDATE market.settings SET candles_retention = '1 day';
\set VERBOSITY default
UPDATE market.settings SET candles_retention = '3 days';
-- newest candle 2024-03-06 23:00: whole days before 2024-03-03 00:00 go (2024-03-01, -02)
SELECT candles_cutoff, candles_deleted FROM market.apply_retention();
SELECT min(open_time), max(open_time), count(*) FROM market.candles_1m WHERE symbol = 'RETNUSDT';
-- the head keeps its values (a prefix of whole days went: candles counts from the series start)
SELECT (s."row").candles, (s."row").open_time FROM market.screener_state s
 WHERE s.market = 'usdm' AND s.symbol = 'RETNUSDT';
-- idempotent
SELECT candles_deleted FROM market.apply_retention();

-- hostile: a writer stores one candle dated 2999.  It is refused (candles_1m_open_time_check:
-- at most 2 minutes after the server clock), and retention's "now" stays at most 2 minutes
-- ahead of the server clock anyway (a database may hold such a candle from before the check:
-- market_security), so the cutoff is not in the future and no instrument looks old because of
-- it (before the first fix the cutoff was 2998-12-29: every candle and alert would have gone)
SET ROLE ta_writer;
INSERT INTO market.candles_1m (market, symbol, open_time, close_time, open, high, low, close,
                               volume, quote_volume, trades, taker_buy_volume, taker_buy_quote_volume)
VALUES ('usdm', 'FUTRUSDT', '2999-01-01', '2999-01-01 00:00:59.999', 1, 1, 1, 1, 1, 1, 1, 1, 1);
SELECT candles_cutoff <= now() - interval '1 day' AS cutoff_not_in_the_future
  FROM market.apply_retention();
RESET ROLE;
SELECT count(*) AS future_candle_kept FROM market.candles_1m WHERE symbol = 'FUTRUSDT';
DELETE FROM market.candles_1m WHERE symbol = 'FUTRUSDT';

-- a writer may run it (SECURITY DEFINER; what it deletes is the settings' decision)
SELECT has_function_privilege('ta_writer', 'market.apply_retention()', 'EXECUTE') AS writer_may,
       has_function_privilege('ta_reader', 'market.apply_retention()', 'EXECUTE') AS reader_may;

UPDATE market.settings SET candles_retention = NULL;
DELETE FROM market.candles_1m WHERE symbol = 'RETNUSDT';
