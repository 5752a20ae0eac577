-- 006: what happens when candles are written: screener_state maintenance and alert evaluation,
-- inside the writing transaction (statement triggers on market.candles_1m).
--
-- Evaluation policy (documented in README "Alerts"):
--   * Per statement and per symbol, only the newest written candle is evaluated, and only if it
--     is the newest stored candle of that symbol.  A live writer sends one minute per symbol per
--     statement, so every live minute is evaluated; a bulk load (backfill page, import, a user's
--     INSERT ... SELECT) evaluates at most its last minute per symbol, never floods NOTIFY.
--   * SET LOCAL market.evaluate_alerts = 'off' skips evaluation for the transaction (ta-feed
--     does this for REST backfills and imports: alerts for recovered history are skipped, not
--     recorded).  screener_state is maintained either way.
--   * Alerts are written to market.alert_history and sent with pg_notify('ta_alerts', payload);
--     NOTIFY is delivered at commit, so an alert exists only if its candle does.

CREATE OR REPLACE FUNCTION market.alert_channel() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 'ta_alerts'::text $$;
COMMENT ON FUNCTION market.alert_channel() IS 'The NOTIFY channel alerts are sent on: ta_alerts.';

CREATE OR REPLACE FUNCTION market.alert_payload_version() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 1 $$;
COMMENT ON FUNCTION market.alert_payload_version() IS
  'Version of the alert JSON payload (field "version"); bumped on any incompatible change.';

CREATE OR REPLACE FUNCTION market._alert_payload(m market.screener_row, p_rule_id integer,
                                                 p_rule text)
RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE AS
$$
SELECT jsonb_build_object(
  'version', market.alert_payload_version(),
  'symbol', m.symbol,
  'rule', p_rule,
  'rule_id', p_rule_id,
  'open_time', to_char(m.open_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
  'close_time', to_char(m.close_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
  'price', m.price,
  'changes', jsonb_build_object('1m', m.change_1m, '5m', m.change_5m, '15m', m.change_15m,
                                '1h', m.change_1h, '4h', m.change_4h, '8h', m.change_8h,
                                '1d', m.change_1d),
  'volumes', jsonb_build_object('1m', m.vol_1m, '5m', m.vol_5m, '15m', m.vol_15m,
                                '1h', m.vol_1h, '4h', m.vol_4h, '8h', m.vol_8h, '1d', m.vol_1d),
  'rsi_14', m.rsi_14,
  'macd', m.macd)
$$;
COMMENT ON FUNCTION market._alert_payload(market.screener_row, integer, text) IS
  'The alert JSON (version 1): {version, symbol, rule, rule_id, open_time, close_time (ISO 8601 UTC '
  'of the candle), price (candle close), changes {1m,5m,15m,1h,4h,8h,1d} (percent), volumes '
  '{1m,...,1d} (quote asset), rsi_14, macd}. Metrics whose window is not full are null.';

-- Rule evaluation.  The enabled rules are compiled into the static SQL of a generated plpgsql
-- function, market._fire_rules(), regenerated whenever market.alert_rules changes, so the
-- evaluation plan is prepared once per session instead of at every candle close.
CREATE OR REPLACE FUNCTION market._rules_query(p_conditions text) RETURNS text
LANGUAGE sql IMMUTABLE AS
$f$
SELECT format($q$
    WITH mm AS MATERIALIZED (
      SELECT m.* FROM market._state_at(p_symbols, p_seqs) s, market._metrics(s) m
    ), fired AS (
      SELECT a.x, r.rule_id
        FROM (SELECT m::market.screener_row AS x, array_remove(ARRAY[%s]::int[], NULL) AS ids
                FROM mm m) a,
             unnest(a.ids) AS r(rule_id)
    ), ins AS (
      INSERT INTO market.alert_history AS h
             (symbol, rule_id, rule, open_time, close_time, price, payload)
      SELECT (f.x).symbol, r.rule_id, r.name, (f.x).open_time, (f.x).close_time, (f.x).price,
             market._alert_payload(f.x, r.rule_id, r.name)
        FROM fired f
        JOIN market.alert_rules r ON r.rule_id = f.rule_id
       WHERE NOT EXISTS (
               SELECT 1 FROM market.alert_history p
                WHERE p.symbol = (f.x).symbol AND p.rule_id = f.rule_id
                  AND p.open_time < (f.x).open_time
                  AND p.open_time > (f.x).open_time - r.cooldown)
      ON CONFLICT DO NOTHING
      RETURNING h.payload
    )
    SELECT count(pg_notify(market.alert_channel(), payload::text))::int FROM ins$q$, p_conditions)
$f$;

-- One rule as an element of the evaluator's array: its id when it fires, else NULL.
CREATE OR REPLACE FUNCTION market._rule_branch(p_rule_id integer, p_compiled text) RETURNS text
LANGUAGE sql IMMUTABLE AS
$$ SELECT format('CASE WHEN %s THEN %s END', p_compiled, p_rule_id) $$;

CREATE OR REPLACE FUNCTION market._regenerate_evaluator() RETURNS void
LANGUAGE plpgsql AS
$$
DECLARE
  v_branches text;
  v_body text;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtext('market._fire_rules'));
  SELECT string_agg(market._rule_branch(rule_id, compiled), E',\n        ' ORDER BY rule_id)
    INTO v_branches FROM market.alert_rules WHERE enabled;
  IF v_branches IS NULL THEN
    v_body := 'BEGIN RETURN 0; END';
  ELSE
    v_body := format(E'DECLARE n integer;\nBEGIN\n%s INTO n;\nRETURN n;\nEND',
                     market._rules_query(v_branches));
  END IF;
  EXECUTE format($ddl$
    CREATE OR REPLACE FUNCTION market._fire_rules(p_symbols text[], p_seqs bigint[])
    RETURNS integer LANGUAGE plpgsql AS %L$ddl$, v_body);
  EXECUTE 'COMMENT ON FUNCTION market._fire_rules(text[], bigint[]) IS '
          || quote_literal('Generated from market.alert_rules by market._regenerate_evaluator(); '
                           || 'do not edit.');
END
$$;

CREATE OR REPLACE FUNCTION market._alert_rules_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
  PERFORM market._regenerate_evaluator();
  RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS alert_rules_changed ON market.alert_rules;
CREATE TRIGGER alert_rules_changed
  AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON market.alert_rules
  FOR EACH STATEMENT EXECUTE FUNCTION market._alert_rules_changed();

DO $$ BEGIN PERFORM market._regenerate_evaluator(); END $$;

-- Evaluate every enabled rule on the metrics of the given (symbol, seq) candles; write
-- alert_history and NOTIFY.  Returns the number of alerts sent.  A rule that fails at run time
-- (e.g. arithmetic overflow in a custom expression) is skipped with a WARNING and a
-- data_quality_log row; it never makes the candle write fail.
CREATE OR REPLACE FUNCTION market._evaluate(p_symbols text[], p_seqs bigint[])
RETURNS integer
LANGUAGE plpgsql AS
$$
DECLARE
  v_sent integer := 0;
  v_part integer;
  v_rule record;
  v_latest timestamptz;
BEGIN
  IF p_symbols IS NULL OR cardinality(p_symbols) = 0 THEN
    RETURN 0;
  END IF;

  BEGIN
    v_sent := market._fire_rules(p_symbols, p_seqs);
  EXCEPTION WHEN OTHERS THEN
    -- find the failing rule(s); evaluate the others one by one
    v_sent := 0;
    FOR v_rule IN SELECT rule_id, name, compiled FROM market.alert_rules WHERE enabled
                   ORDER BY rule_id LOOP
      BEGIN
        EXECUTE replace(replace(market._rules_query(market._rule_branch(v_rule.rule_id, v_rule.compiled)),
                                'p_symbols', '$1'), 'p_seqs', '$2')
           INTO v_part USING p_symbols, p_seqs;
        v_sent := v_sent + v_part;
      EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'pg_ta: rule "%" failed and was skipped: %', v_rule.name, SQLERRM;
        INSERT INTO market.data_quality_log (kind, detail)
        VALUES ('rule_error', jsonb_build_object('rule', v_rule.name, 'error', SQLERRM,
                                                 'sqlstate', SQLSTATE, 'symbols', p_symbols));
      END;
    END LOOP;
  END;

  -- retention, in candle time
  SELECT max(s.open_time) INTO v_latest
    FROM unnest(p_symbols, p_seqs) AS t(symbol, seq)
    JOIN market.screener_state s ON s.symbol = t.symbol AND s.seq = t.seq;
  DELETE FROM market.alert_history
   WHERE open_time < v_latest - (SELECT alert_history_retention FROM market.settings);
  RETURN v_sent;
END
$$;
COMMENT ON FUNCTION market._evaluate(text[], bigint[]) IS
  'Internal: evaluate enabled rules at the given candles; alert_history + NOTIFY.';

-- Shared body of the candle triggers.  Per symbol: the first and last written open_time;
-- p_single holds the candles of the symbols with exactly one written row in an INSERT (the
-- live case), which are appended to the state when they follow its newest row.
CREATE OR REPLACE FUNCTION market._apply_candle_changes(p_symbols text[], p_from timestamptz[],
                                                        p_to timestamptz[],
                                                        p_single market.candles_1m[])
RETURNS void
LANGUAGE plpgsql AS
$$
DECLARE
  v_app_syms text[];
  v_app_seqs bigint[];
  v_re_syms text[];
  v_re_from timestamptz[];
  v_eval_syms text[];
  v_eval_seqs bigint[];
BEGIN
  IF p_single IS NOT NULL THEN
    SELECT array_agg(a.symbol), array_agg(a.seq) INTO v_app_syms, v_app_seqs
      FROM market._state_append(p_single) AS a;
  END IF;

  -- everything else (bulk writes, out-of-order minutes, updates, new symbols) is recomputed
  IF cardinality(v_app_syms) IS DISTINCT FROM cardinality(p_symbols) THEN
    SELECT array_agg(a.symbol), array_agg(a.from_time) INTO v_re_syms, v_re_from
      FROM unnest(p_symbols, p_from) AS a(symbol, from_time)
      LEFT JOIN unnest(v_app_syms) AS d(symbol) ON d.symbol = a.symbol
     WHERE d.symbol IS NULL;
  END IF;
  IF v_re_syms IS NOT NULL THEN
    PERFORM market._state_recompute(v_re_syms, v_re_from);
  END IF;

  IF coalesce(current_setting('market.evaluate_alerts', true), '') IN ('off', 'false', '0') THEN
    RETURN;
  END IF;

  -- the newest written candle of each symbol, if it is the symbol's newest stored candle:
  -- appended candles are, by construction; recomputed symbols are checked
  SELECT array_agg(x.symbol), array_agg(x.seq) INTO v_eval_syms, v_eval_seqs
    FROM (SELECT * FROM unnest(v_app_syms, v_app_seqs) AS d(symbol, seq)
          UNION ALL
          SELECT h.symbol, h.seq
            FROM unnest(p_symbols, p_to) AS a(symbol, to_time)
            JOIN LATERAL (SELECT s.symbol, s.seq, s.open_time FROM market.screener_state s
                           WHERE s.symbol = a.symbol ORDER BY s.seq DESC LIMIT 1) h ON true
           WHERE v_re_syms IS NOT NULL AND a.symbol = ANY (v_re_syms)
             AND h.open_time = a.to_time) x;

  PERFORM market._evaluate(v_eval_syms, v_eval_seqs);
END
$$;

CREATE OR REPLACE FUNCTION market._candles_after_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
  v_syms text[]; v_from timestamptz[]; v_to timestamptz[]; v_single market.candles_1m[];
BEGIN
  SELECT array_agg(a.symbol), array_agg(a.mn), array_agg(a.mx),
         array_agg(a.one) FILTER (WHERE a.n = 1)
    INTO v_syms, v_from, v_to, v_single
    FROM (SELECT r.symbol, min(r.open_time) AS mn, max(r.open_time) AS mx, count(*) AS n,
                 (array_agg(r))[1] AS one
            FROM new_rows r GROUP BY r.symbol) a;
  IF v_syms IS NOT NULL THEN
    PERFORM market._apply_candle_changes(v_syms, v_from, v_to, v_single);
  END IF;
  RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION market._candles_after_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
  v_syms text[]; v_from timestamptz[]; v_to timestamptz[];
BEGIN
  -- an update may move rows (new symbol or open_time): recompute from the earliest old or new
  -- position of every symbol involved
  SELECT array_agg(symbol), array_agg(mn), array_agg(mx)
    INTO v_syms, v_from, v_to
    FROM (SELECT symbol, min(open_time) AS mn, max(open_time) AS mx
            FROM (SELECT symbol, open_time FROM new_rows
                  UNION ALL SELECT symbol, open_time FROM old_rows) u
           GROUP BY symbol) a;
  IF v_syms IS NOT NULL THEN
    PERFORM market._apply_candle_changes(v_syms, v_from, v_to, NULL);
  END IF;
  RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION market._candles_after_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
  v_prefix_syms text[]; v_prefix_to timestamptz[]; v_re_syms text[]; v_re_from timestamptz[];
BEGIN
  -- Deleting the oldest candles of a symbol (retention) only drops their state rows: the later
  -- rows keep their seq and indicator states.  Any other delete recomputes from that point.
  SELECT array_agg(d.symbol) FILTER (WHERE rest.first_time IS NULL OR d.mx < rest.first_time),
         array_agg(d.mx) FILTER (WHERE rest.first_time IS NULL OR d.mx < rest.first_time),
         array_agg(d.symbol) FILTER (WHERE rest.first_time IS NOT NULL AND d.mx >= rest.first_time),
         array_agg(d.mn) FILTER (WHERE rest.first_time IS NOT NULL AND d.mx >= rest.first_time)
    INTO v_prefix_syms, v_prefix_to, v_re_syms, v_re_from
    FROM (SELECT symbol, min(open_time) AS mn, max(open_time) AS mx FROM old_rows GROUP BY symbol) d
    LEFT JOIN LATERAL (SELECT c.open_time AS first_time FROM market.candles_1m c
                        WHERE c.symbol = d.symbol ORDER BY c.open_time LIMIT 1) rest ON true;
  IF v_prefix_syms IS NOT NULL THEN
    DELETE FROM market.screener_state s
     USING unnest(v_prefix_syms, v_prefix_to) AS p(symbol, to_time)
     WHERE s.symbol = p.symbol AND s.open_time <= p.to_time;
  END IF;
  IF v_re_syms IS NOT NULL THEN
    PERFORM market._state_recompute(v_re_syms, v_re_from);
  END IF;
  RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION market._candles_after_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
  TRUNCATE market.screener_state;
  RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS candles_1m_after_insert ON market.candles_1m;
CREATE TRIGGER candles_1m_after_insert
  AFTER INSERT ON market.candles_1m
  REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION market._candles_after_insert();

DROP TRIGGER IF EXISTS candles_1m_after_update ON market.candles_1m;
CREATE TRIGGER candles_1m_after_update
  AFTER UPDATE ON market.candles_1m
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION market._candles_after_update();

DROP TRIGGER IF EXISTS candles_1m_after_delete ON market.candles_1m;
CREATE TRIGGER candles_1m_after_delete
  AFTER DELETE ON market.candles_1m
  REFERENCING OLD TABLE AS old_rows
  FOR EACH STATEMENT EXECUTE FUNCTION market._candles_after_delete();

DROP TRIGGER IF EXISTS candles_1m_after_truncate ON market.candles_1m;
CREATE TRIGGER candles_1m_after_truncate
  AFTER TRUNCATE ON market.candles_1m
  FOR EACH STATEMENT EXECUTE FUNCTION market._candles_after_truncate();

-- Candles written before this schema existed (or with triggers bypassed): build their state.
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM market.candles_1m)
     AND NOT EXISTS (SELECT 1 FROM market.screener_state) THEN
    PERFORM market.rebuild_screener_state();
  END IF;
END
$$;

COMMENT ON FUNCTION market._rules_query(text) IS
  'Internal: the SQL of the generated evaluator (rules array -> dedup, cooldown, alert_history, NOTIFY).';
COMMENT ON FUNCTION market._rule_branch(integer, text) IS
  'Internal: one compiled rule as an element of the evaluator''s array: its id when it fires, else NULL.';
COMMENT ON FUNCTION market._regenerate_evaluator() IS
  'Internal: (re)creates market._fire_rules from the enabled rules of market.alert_rules.';
COMMENT ON FUNCTION market._alert_rules_changed() IS
  'Internal: statement trigger of market.alert_rules; regenerates the evaluator.';
COMMENT ON FUNCTION market._apply_candle_changes(text[], timestamptz[], timestamptz[], market.candles_1m[]) IS
  'Internal: shared body of the candle triggers; updates market.screener_state for the written '
  'range of each symbol and evaluates the rules at the newest candle per symbol (unless '
  'market.evaluate_alerts = off).';
COMMENT ON FUNCTION market._candles_after_insert() IS
  'Internal: AFTER INSERT statement trigger of market.candles_1m (transition table new_rows).';
COMMENT ON FUNCTION market._candles_after_update() IS
  'Internal: AFTER UPDATE statement trigger of market.candles_1m (transition tables old_rows, new_rows).';
COMMENT ON FUNCTION market._candles_after_delete() IS
  'Internal: AFTER DELETE statement trigger of market.candles_1m (transition table old_rows); '
  'dropping the oldest candles of a symbol only drops their state rows, any other delete '
  'recomputes the state from the first deleted candle.';
COMMENT ON FUNCTION market._candles_after_truncate() IS
  'Internal: AFTER TRUNCATE trigger of market.candles_1m; empties market.screener_state.';
