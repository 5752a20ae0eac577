-- What a SQL user can and cannot do to the data schema (README "Security"; issue #8).
-- Every statement below either succeeds harmlessly or fails with its SQLSTATE; none of them
-- may change what the owner's code does.
SET client_min_messages = warning;
SET TIME ZONE 'UTC';
\set VERBOSITY terse

CREATE TEMP TABLE t0 AS SELECT timestamptz '2024-03-01 00:00' AS t;
-- a small live series to write into
CREATE FUNCTION pg_temp.candle(p_symbol text, p_minute int, p_close numeric,
                               p_qv numeric DEFAULT 1000)
RETURNS void LANGUAGE sql AS $$
  INSERT INTO market.candles_1m (symbol, open_time, close_time, open, high, low, close, volume,
                                 quote_volume, trades, taker_buy_volume, taker_buy_quote_volume)
  VALUES (p_symbol, timestamptz '2024-03-01 00:00' + p_minute * interval '1 minute',
          timestamptz '2024-03-01 00:00' + p_minute * interval '1 minute' + interval '59.999 s',
          p_close, p_close + 1, p_close - 1, p_close, 1, p_qv, 1, 0, 0)
$$;
GRANT EXECUTE ON FUNCTION pg_temp.candle(text, int, numeric, numeric) TO ta_writer;
SELECT pg_temp.candle('SECUSDT', m, 100 + m) FROM generate_series(0, 19) m;

-- 1. Quoting: a literal ending in a backslash.  Under standard_conforming_strings = off the
-- 0.1.0 evaluator read  'a\') OR (m."symbol" = '  as one literal and ran the rest as SQL, so
-- this rule fired on every candle, as the schema owner.  Now literals are E'' strings and the
-- evaluator pins the setting: the rule compares symbol with two odd strings and never fires.
INSERT INTO market.alert_rules (name, expression, cooldown)
VALUES ('quote_probe', 'symbol = ''a\'' OR symbol = '' OR change_5m > -1000000 --''', '0');
SET ROLE ta_writer;
SET standard_conforming_strings = off;
SELECT pg_temp.candle('SECUSDT', 20, 121);
RESET standard_conforming_strings;
RESET ROLE;
SELECT count(*) AS quote_probe_alerts FROM market.alert_history WHERE rule = 'quote_probe';
DELETE FROM market.alert_rules WHERE name = 'quote_probe';

-- 2, 3. Deep nesting and exponential growth are refused at save time (no crash, no 352 MB rule)
INSERT INTO market.alert_rules (name, expression) VALUES ('deep', repeat('not ', 200000) || 'true');
INSERT INTO market.alert_rules (name, expression)
VALUES ('deep2', repeat('(', 10000) || 'price' || repeat(')', 10000) || ' > 0');
INSERT INTO market.alert_rules (name, expression) VALUES ('deep3', repeat('not ', 3000) || 'true');
SELECT ta.rule_compile(repeat('(', 5000) || 'price' || repeat(')', 5000) || ' > 0',
                       'ta.screener_row', '{}');
SELECT * FROM market.backtest_expression(repeat('- ', 4000) || 'price > 0', '2024-03-01', '2024-03-02');
SELECT length(ta.rule_compile(repeat('sqrt(ln(', 12) || 'price' || repeat('))', 12) || ' > 0',
                              'ta.screener_row', '{}')) < 2000 AS linear_output;

-- 4. A writer cannot fill or step the owner's screener cache, nor call the internals
SET ROLE ta_writer;
SELECT ta._screener_cache_reset();
SELECT ta._screener_cache_step(0, 0, 'spot', 'SECUSDT', now(), now(), 1, 1, 1, 1, 1);
SELECT ta._screener_cache_load(0, 0, 'spot', 'SECUSDT', NULL, '{}', '{}', '{}', '{}', '{}', '{}', '{}');
SELECT market._recompute(ARRAY['spot'], ARRAY['SECUSDT'], ARRAY['-infinity'::timestamptz]);
SELECT market._evaluate(NULL);
SELECT market.rebuild_screener_state();
UPDATE market.screener_state SET open_time = NULL;
INSERT INTO market.alert_history (symbol, rule_id, rule, open_time, close_time, price, payload)
VALUES ('X', 1, 'x', now(), now(), 1, '{}');
RESET ROLE;
-- the pure engine is for everyone: a reader screens his own numbers
SET ROLE ta_reader;
SELECT (ta.screener('spot', 'X', timestamptz '2024-01-01', timestamptz '2024-01-01 00:00:59.999',
                    1, 2, 1, 2, 10)).candles;
-- the row lock that serialises rule changes is the owner's alone
SELECT 1 FROM market._evaluator_lock FOR UPDATE;
RESET ROLE;

-- 5. search_path: operators and functions planted in a schema on the caller's path are
-- never used by the schema's functions (each pins search_path = pg_catalog, pg_temp)
CREATE SCHEMA evil;
CREATE TABLE evil.calls (what text);
GRANT ALL ON SCHEMA evil TO PUBLIC;
GRANT ALL ON evil.calls TO PUBLIC;
CREATE FUNCTION evil.gt(float8, float8) RETURNS boolean LANGUAGE sql AS
$$ INSERT INTO evil.calls VALUES ('float8 > float8 as ' || current_user) RETURNING true $$;
CREATE OPERATOR evil.> (LEFTARG = float8, RIGHTARG = float8, FUNCTION = evil.gt);
CREATE FUNCTION evil.ln(float8) RETURNS float8 LANGUAGE sql AS
$$ INSERT INTO evil.calls VALUES ('ln as ' || current_user) RETURNING 0::float8 $$;
SET search_path = evil, pg_catalog, public;
SELECT count(*) >= 0 AS ran FROM market.screener_at('2024-03-01 00:10');
SELECT count(*) >= 0 AS ran FROM market.screener_range('2024-03-01', '2024-03-02');
SELECT count(*) >= 0 AS ran FROM market.backtest('pioneer_bull', '2024-03-01', '2024-03-02');
SELECT count(*) >= 0 AS ran FROM market.backtest_expression('ln(price) > 0 AND change_5m > 0',
                                                           '2024-03-01', '2024-03-02');
SELECT pg_temp.candle('SECUSDT', 21, 122);
RESET search_path;
SELECT count(*) AS planted_calls FROM evil.calls;
DROP SCHEMA evil CASCADE;

-- 6. Values that would break every reader are refused at the door (23514, constraint named;
-- printed as SQLSTATE and constraint, because TimescaleDB names the chunk, not the table)
CREATE FUNCTION pg_temp.refused(p_sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE v_state text; v_constraint text;
BEGIN
  EXECUTE p_sql;
  RETURN 'stored';
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_constraint = CONSTRAINT_NAME;
  RETURN v_state || ' ' || v_constraint;
END
$$;
GRANT EXECUTE ON FUNCTION pg_temp.refused(text) TO ta_writer;
SELECT pg_temp.refused(q) AS refused FROM (VALUES
  (1, $q$SELECT pg_temp.candle('SECUSDT', 22, 100, 'NaN')$q$),
  (2, $q$SELECT pg_temp.candle('SECUSDT', 22, 100, 1e1000)$q$),
  (3, $q$SELECT pg_temp.candle('SECUSDT', 22, 100, repeat('9', 1000)::numeric)$q$),
  (4, $q$SELECT pg_temp.candle('SECUSDT', 22, 100, -1)$q$),
  (5, $q$SELECT pg_temp.candle('SECUSDT', 22, 'Infinity')$q$),
  (6, $q$SELECT pg_temp.candle('SECUSDT', 22, 0)$q$),
  (7, $q$INSERT INTO market.candles_1m (symbol, open_time, close_time, open, high, low, close,
        volume, quote_volume, trades, taker_buy_volume, taker_buy_quote_volume)
      VALUES ('SECUSDT', '2024-03-01 00:22:30', '2024-03-01 00:23:29.999', 1, 2, 1, 2, 1, 1, 1, 0, 0)$q$),
  (8, $q$INSERT INTO market.candles_1m (symbol, open_time, close_time, open, high, low, close,
        volume, quote_volume, trades, taker_buy_volume, taker_buy_quote_volume)
      VALUES ('SECUSDT', '2024-03-01 00:22', '2024-03-01 00:22:59.999', 5, 2, 1, 2, 1, 1, 1, 0, 0)$q$),
  (9, $q$INSERT INTO market.candles_1m (market, symbol, open_time, close_time, open, high, low,
        close, volume, quote_volume, trades, taker_buy_volume, taker_buy_quote_volume)
      VALUES ('coinm', 'SECUSDT', '2024-03-01 00:22', '2024-03-01 00:22:59.999', 1, 2, 1, 2, 1, 1, 1, 0, 0)$q$),
  (10, $q$INSERT INTO market.candles_1m (symbol, open_time, close_time, open, high, low, close,
        volume, quote_volume, trades, taker_buy_volume, taker_buy_quote_volume)
      VALUES ('sec usdt''; --', '2024-03-01 00:22', '2024-03-01 00:22:59.999', 1, 2, 1, 2, 1, 1, 1, 0, 0)$q$)
) AS t(n, q) ORDER BY n;
-- nothing of it was stored, the screener reads fine
SELECT count(*) AS candles, max(open_time) AS newest FROM market.candles_1m WHERE symbol = 'SECUSDT';
SELECT symbol, candles, price FROM market.screener WHERE symbol = 'SECUSDT';

-- 7. Presets are the owner's: a rule admin can tune their config, not forge or rewrite them;
-- created_by is who inserted the rule
SET ROLE ta_rule_admin;
SET market.updating_presets = on;
UPDATE market.alert_rules SET expression = 'true' WHERE name = 'big_bull_60';
INSERT INTO market.alert_rules (name, kind, expression) VALUES ('fake_preset', 'preset', 'true');
INSERT INTO market.alert_rules (name, expression, created_by) VALUES ('mine', 'change_5m > 5', 'postgres');
UPDATE market.alert_rules SET kind = 'preset' WHERE name = 'mine';
UPDATE market.alert_rules SET config = config || '{"change_1h_min": 1.7}' WHERE name = 'big_bull_60';
RESET market.updating_presets;
RESET ROLE;
SELECT name, kind, created_by, expression FROM market.alert_rules WHERE name IN ('mine', 'fake_preset');
SELECT config->'change_1h_min' AS change_1h_min, expression LIKE 'change_1h > $change_1h_min%' AS unchanged
  FROM market.alert_rules WHERE name = 'big_bull_60';
UPDATE market.alert_rules SET config = config || '{"change_1h_min": 1.6}' WHERE name = 'big_bull_60';
DELETE FROM market.alert_rules WHERE name = 'mine';

-- a reader sees sinks but not their secrets
INSERT INTO market.alert_sinks (name, kind, target) VALUES ('ops', 'webhook', 'https://example.invalid/secret-token');
SET ROLE ta_reader;
SELECT name, kind FROM market.alert_sinks;
SELECT target FROM market.alert_sinks;
RESET ROLE;
DELETE FROM market.alert_sinks;

-- 8. A candle in the future (issue 18.4): refused at the door for every writer
-- (candles_1m_open_time_check: open_time <= statement_timestamp() + 2 minutes); a kline that
-- closed is never in the future.  999999999960000 is the importer's ms-just-under-the-us-
-- threshold case (year 33658).
CREATE FUNCTION pg_temp.candle_at(p_symbol text, p_open timestamptz) RETURNS void
LANGUAGE sql AS $$
  INSERT INTO market.candles_1m (symbol, open_time, close_time, open, high, low, close, volume,
                                 quote_volume, trades, taker_buy_volume, taker_buy_quote_volume)
  VALUES (p_symbol, date_bin('1 minute', p_open, timestamptz '2000-01-01'),
          date_bin('1 minute', p_open, timestamptz '2000-01-01') + interval '59.999 s',
          1, 2, 1, 2, 1, 1, 1, 0, 0)
$$;
GRANT EXECUTE ON FUNCTION pg_temp.candle_at(text, timestamptz) TO ta_writer;
SET ROLE ta_writer;
SELECT n, pg_temp.refused(q) AS future_candle FROM (VALUES
  (1, $q$SELECT pg_temp.candle_at('FUTUSDT', now() + interval '1 day')$q$),
  (2, $q$SELECT pg_temp.candle_at('FUTUSDT', now() + interval '3 minutes')$q$),
  (3, $q$SELECT pg_temp.candle_at('FUTUSDT', to_timestamp(999999999960000 / 1000.0))$q$),
  (4, $q$SELECT pg_temp.candle_at('FUTUSDT', now() + interval '1 minute')$q$),
  (5, $q$SELECT pg_temp.candle_at('FUTUSDT', now() - interval '1 minute')$q$)
) AS t(n, q) ORDER BY n;
RESET ROLE;
SELECT count(*) AS stored_now_candles FROM market.candles_1m WHERE symbol = 'FUTUSDT';
DELETE FROM market.candles_1m WHERE symbol = 'FUTUSDT';

-- 9. Retention's "now" holds against a future candle that a database kept from before that
-- check existed: alerts 30 h and 47 h old stay (alert_history_retention is 48 h), at the
-- candle's own evaluation and in apply_retention() (0.2.0 allowed one day ahead and deleted
-- both).
INSERT INTO market.alert_history (symbol, rule_id, rule, open_time, close_time, price, payload)
SELECT 'OLDUSDT', r.rule_id, r.name,
       date_bin('1 minute', now() - h * interval '1 hour', timestamptz '2000-01-01'),
       date_bin('1 minute', now() - h * interval '1 hour', timestamptz '2000-01-01')
         + interval '59.999 s', 1, '{}'
  FROM market.alert_rules r, (VALUES (30), (47)) AS v(h) WHERE r.name = 'big_bull_60';
ALTER TABLE market.candles_1m DROP CONSTRAINT candles_1m_open_time_check;
SELECT pg_temp.candle_at('FUTUSDT', now() + interval '1 day');
ALTER TABLE market.candles_1m ADD CONSTRAINT candles_1m_open_time_check
  CHECK (open_time <= statement_timestamp() + interval '2 minutes') NOT VALID;
SELECT count(*) AS alerts_kept_at_evaluation FROM market.alert_history WHERE symbol = 'OLDUSDT';
SELECT alerts_cutoff < now() - interval '47 hours' AS cutoff_before_both FROM market.apply_retention();
SELECT count(*) AS alerts_kept_by_retention FROM market.alert_history WHERE symbol = 'OLDUSDT';
DELETE FROM market.candles_1m WHERE symbol = 'FUTUSDT';
DELETE FROM market.alert_history WHERE symbol = 'OLDUSDT';
ALTER TABLE market.candles_1m VALIDATE CONSTRAINT candles_1m_open_time_check;

-- 10. The notifier records outcomes and nothing else (issue 18.8): it may not move a delivery
-- to another sink or alert
INSERT INTO market.alert_sinks (name, kind, target)
VALUES ('hook_a', 'webhook', 'https://example.invalid/a'),
       ('hook_b', 'webhook', 'https://example.invalid/b');
INSERT INTO market.alert_deliveries (alert_id, sink_id)
SELECT 424242, sink_id FROM market.alert_sinks WHERE name = 'hook_a';
SET ROLE ta_notifier;
UPDATE market.alert_deliveries SET sink_id = (SELECT sink_id FROM market.alert_sinks WHERE name = 'hook_b');
UPDATE market.alert_deliveries SET alert_id = 1;
UPDATE market.alert_deliveries SET created_at = now();
UPDATE market.alert_deliveries
   SET attempts = attempts + 1, last_error = 'HTTP 503 Service Unavailable', next_attempt_at = now(),
       failed_at = NULL, delivered_at = NULL
 WHERE alert_id = 424242;
RESET ROLE;
SELECT d.alert_id, s.name, d.attempts, d.last_error
  FROM market.alert_deliveries d JOIN market.alert_sinks s USING (sink_id);
DELETE FROM market.alert_sinks;

-- 11. At most market.settings.max_enabled_sinks enabled sinks (issue 18.3; 23514
-- alert_sinks_enabled_limit); the bound is the owner's, not the rule admin's
UPDATE market.settings SET max_enabled_sinks = 2;
GRANT EXECUTE ON FUNCTION pg_temp.refused(text) TO ta_rule_admin;
SET ROLE ta_rule_admin;
SELECT n, pg_temp.refused(q) AS sinks FROM (VALUES
  (1, $q$INSERT INTO market.alert_sinks (name, kind, target)
         VALUES ('s1', 'webhook', 'https://example.invalid/1'),
                ('s2', 'webhook', 'https://example.invalid/2')$q$),
  (2, $q$INSERT INTO market.alert_sinks (name, kind, target)
         VALUES ('s3', 'webhook', 'https://example.invalid/3')$q$),
  (3, $q$INSERT INTO market.alert_sinks (name, kind, target, enabled)
         VALUES ('s3', 'webhook', 'https://example.invalid/3', false)$q$),
  (4, $q$UPDATE market.alert_sinks SET enabled = true WHERE name = 's3'$q$),
  (5, $q$UPDATE market.alert_sinks SET enabled = NOT enabled$q$),
  (6, $q$UPDATE market.alert_sinks SET enabled = true$q$),
  (7, $q$UPDATE market.settings SET max_enabled_sinks = 1000$q$),
  (8, $q$UPDATE market.settings SET alert_history_retention = '48 hours'$q$)
) AS t(n, q) ORDER BY n;
RESET ROLE;
SELECT name, enabled FROM market.alert_sinks ORDER BY name;
SELECT pg_temp.refused($q$UPDATE market.settings SET max_enabled_sinks = 1001$q$) AS owner_bound;
DELETE FROM market.alert_sinks;
UPDATE market.settings SET max_enabled_sinks = DEFAULT;
SELECT max_enabled_sinks FROM market.settings;

-- cleanup
DELETE FROM market.candles_1m WHERE symbol = 'SECUSDT';
DELETE FROM market.alert_history WHERE symbol = 'SECUSDT';
\set VERBOSITY default
