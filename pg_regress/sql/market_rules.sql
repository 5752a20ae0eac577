-- Screener rules: expression language, validation at save time, presets, editing with SQL.
-- (The data schema, sql/*.sql, is applied before this file runs.)
SET client_min_messages = warning;

-- ta.rule_compile turns a rule expression into safe SQL over a metrics row type.
SELECT ta.rule_compile('change_5m > 2 AND rsi_14 < $rsi_max', 'ta.screener_row',
                       '{"rsi_max": 30}');
SELECT ta.rule_compile('vol_5m / vol_15m > 0.5 OR symbol IN (''BTCUSDT'', ''ETHUSDT'')',
                       'ta.screener_row', '{}');
SELECT ta.rule_compile('ln(price) IS NOT NULL AND change_1h BETWEEN -1 AND $x',
                       'ta.screener_row', '{"x": "2.5"}');

-- what is rejected, with the SQLSTATE a client can test
\set VERBOSITY terse
SELECT ta.rule_compile('change_5m > 2 AND rsi > 30', 'ta.screener_row', '{}');
SELECT ta.rule_compile('change_5m >', 'ta.screener_row', '{}');
SELECT ta.rule_compile('(SELECT 1) > 0', 'ta.screener_row', '{}');
SELECT ta.rule_compile('change_5m > 1; DROP TABLE market.candles_1m', 'ta.screener_row', '{}');
SELECT ta.rule_compile('pg_sleep(1) IS NULL', 'ta.screener_row', '{}');
SELECT ta.rule_compile('change_5m + 1', 'ta.screener_row', '{}');
SELECT ta.rule_compile('open_time > 1', 'ta.screener_row', '{}');
SELECT ta.rule_compile('change_5m > $missing', 'ta.screener_row', '{}');
SELECT ta.rule_compile('change_5m > $x', 'ta.screener_row', '{"x": "1 OR true"}');
SELECT ta.rule_compile('change_5m > 1', 'no_such_type', '{}');
SELECT ta.rule_compile('symbol = E''x''', 'ta.screener_row', '{}');
SELECT ta.rule_compile('round(price, 99) > 0', 'ta.screener_row', '{}');
-- limits: nesting depth 100 (54001), 16384 bytes of input and 2000 nodes (54000)
SELECT ta.rule_compile(repeat('(', 100) || 'price' || repeat(')', 100) || ' > 0',
                       'ta.screener_row', '{}');
SELECT ta.rule_compile(repeat('not ', 200000) || 'true', 'ta.screener_row', '{}');
SELECT ta.rule_compile(repeat('price > 0 AND ', 700) || 'true', 'ta.screener_row', '{}');
\set VERBOSITY default
-- the SQLSTATE tells the kind of mistake
SET client_min_messages = notice;
DO $$
DECLARE e text;
BEGIN
  FOREACH e IN ARRAY ARRAY['chnage_5m > 1', 'change_5m >', 'pg_sleep(1) IS NULL',
                           'symbol > 1', 'change_5m > $k', 'price > 1e1001',
                           repeat('(', 100) || 'price' || repeat(')', 100) || ' > 0',
                           repeat('not ', 200000) || 'true'] LOOP
    BEGIN
      PERFORM ta.rule_compile(e, 'ta.screener_row', '{}');
    EXCEPTION WHEN OTHERS THEN
      RAISE NOTICE '% -> %', rpad(e, 20), SQLSTATE;
    END;
  END LOOP;
END
$$;
SET client_min_messages = warning;

-- strings: a quote inside is doubled, a backslash is an ordinary character ('a\' is the text
-- a\); the compiled E'' literal means that text under either standard_conforming_strings
CREATE FUNCTION pg_temp.fires(p_rule text, p_symbol text) RETURNS boolean
LANGUAGE plpgsql AS $f$
DECLARE r boolean;
BEGIN
  EXECUTE format('SELECT %s FROM pg_catalog.jsonb_populate_record(NULL::ta.screener_row, $1) m',
                 ta.rule_compile(p_rule, 'ta.screener_row', '{}'))
     INTO r USING jsonb_build_object('symbol', p_symbol);
  RETURN r;
END
$f$;
SELECT ta.rule_compile($r$symbol = 'a\' OR symbol = 'it''s'$r$, 'ta.screener_row', '{}');
SET standard_conforming_strings = on;
SELECT pg_temp.fires($r$symbol = 'a\'$r$, $s$a\$s$) AS backslash,
       pg_temp.fires($r$symbol = 'a\' OR symbol = ') OR true --'$r$, 'BTCUSDT') AS injection,
       pg_temp.fires($r$symbol = 'it''s'$r$, $s$it's$s$) AS quote;
SET standard_conforming_strings = off;
SELECT pg_temp.fires($r$symbol = 'a\'$r$, $s$a\$s$) AS backslash,
       pg_temp.fires($r$symbol = 'a\' OR symbol = ') OR true --'$r$, 'BTCUSDT') AS injection,
       pg_temp.fires($r$symbol = 'it''s'$r$, $s$it's$s$) AS quote;
RESET standard_conforming_strings;
-- output grows linearly: 23 nested sqrt() (147 bytes) compiled to 352 MB in pg_ta 0.1.0
SELECT length(ta.rule_compile(repeat('sqrt(', 23) || 'price' || repeat(')', 23) || ' > 0',
                              'ta.screener_row', '{}')) AS sql_bytes;

-- the sixteen presets
SELECT rule_id, name, kind, enabled, cooldown, config
  FROM market.alert_rules ORDER BY rule_id;

-- a custom rule is checked when saved ...
INSERT INTO market.alert_rules (name, expression, config)
VALUES ('oversold_bounce', 'change_5m > $min_change AND rsi_14 < $rsi_max',
        '{"min_change": 2, "rsi_max": 30}');
SELECT name, kind, compiled FROM market.alert_rules WHERE name = 'oversold_bounce';
\set VERBOSITY terse
INSERT INTO market.alert_rules (name, expression) VALUES ('typo', 'chnage_5m > 2');
INSERT INTO market.alert_rules (name, expression) VALUES ('no_param', 'change_5m > $k');
UPDATE market.alert_rules SET config = '{"min_change": "two", "rsi_max": 30}'
 WHERE name = 'oversold_bounce';
-- ... preset expressions are fixed, their thresholds are not
UPDATE market.alert_rules SET expression = 'change_1h > 1' WHERE name = 'big_bull_60';
\set VERBOSITY default
UPDATE market.alert_rules SET config = config || '{"change_1h_min": 2.5}'
 WHERE name = 'big_bull_60';
SELECT config->'change_1h_min' AS change_1h_min, compiled LIKE '%(2.5)%' AS recompiled
  FROM market.alert_rules WHERE name = 'big_bull_60';
UPDATE market.alert_rules SET enabled = false WHERE name = 'flat_1m';

-- the generated evaluator follows the table
SELECT count(*) AS enabled_rules FROM market.alert_rules WHERE enabled;
SELECT count(*) AS rule_branches
  FROM pg_proc, regexp_matches(prosrc, 'THEN \d+ END', 'g')
 WHERE pg_proc.oid = 'market._fire_rules(ta.signal_row[])'::regprocedure;

-- re-applying the schema keeps user edits (config values, enabled flags, custom rules)
\set ECHO none
\i sql/005_rules.sql
\set ECHO all
SELECT name, enabled, config->'change_1h_min' AS change_1h_min
  FROM market.alert_rules WHERE name IN ('big_bull_60', 'flat_1m', 'oversold_bounce')
 ORDER BY name;

DELETE FROM market.alert_rules WHERE name = 'oversold_bounce';
UPDATE market.alert_rules SET config = config || '{"change_1h_min": 1.6}', enabled = true;
