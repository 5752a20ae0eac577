-- 008: backtests: evaluate rules over stored history without writing or notifying anything.
--
-- The feature engine (the screener engine plus the features, pg_ta 0.3.0) runs once per
-- instrument over the range (from a day checkpoint, windows reaching back before p_from) and
-- every rule of the backtest is evaluated on each rule row (ta.signal_row) in the same pass, as
-- the live evaluator does (market._rule_branch); the live cooldown is applied per
-- (instrument, rule).  Book features are read as the live path froze them
-- (market.book_1m_frozen), so a backtest sees what the live rule saw.  When no rule of the
-- backtest reads a feature column, the screener engine runs alone (market._run1, as in
-- pg_ta 0.2.0): the same rows but for the feature columns, which no rule reads.

DROP FUNCTION IF EXISTS market._backtest(text, text, integer, interval, timestamptz, timestamptz, text[], text);
DROP FUNCTION IF EXISTS market._backtest(text[], text[], integer[], interval[], timestamptz, timestamptz, text[], text);
CREATE OR REPLACE FUNCTION market._backtest(p_compiled text[], p_rules text[], p_rule_ids integer[],
                                            p_cooldowns interval[], p_from timestamptz,
                                            p_to timestamptz, p_symbols text[], p_market text,
                                            p_payload boolean)
RETURNS TABLE (market text, symbol text, rule text, open_time timestamptz,
               close_time timestamptz, price float8, payload jsonb)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp SET standard_conforming_strings = on AS
$$
DECLARE
  i record;
  c record;
  k integer;
  v_branches text;
  v_signal text;
  v_query text;
  v_no_cooldown boolean;
  v_last timestamptz[];
BEGIN
  PERFORM market._check_range('market.backtest', p_from, p_to);
  IF coalesce(cardinality(p_compiled), 0) = 0 THEN
    RETURN;
  END IF;
  -- rule k fires as element k (1-based position in the arrays)
  SELECT string_agg(market._rule_branch(o.k::integer, o.compiled), ', ' ORDER BY o.k)
    INTO v_branches FROM unnest(p_compiled) WITH ORDINALITY AS o(compiled, k);
  IF market._reads_features(p_compiled) THEN
    v_query := format(
      'SELECT f.x, f.ks FROM (SELECT m AS x, array_remove(ARRAY[%s]::int[], NULL) AS ks'
      '  FROM market._srun1($1, $2, market._warm_before($1, $2, $3), $4, $3, $4,'
      '                     market._book_from($1, $2, $3)) r,'
      '       LATERAL unnest(ARRAY[r.sig]) AS m'
      ' WHERE r.open_time >= $3 AND r.open_time <= $4) f WHERE cardinality(f.ks) > 0',
      v_branches);
  ELSE
    -- no rule reads a feature column: the screener engine alone (as pg_ta 0.2.0), m = its
    -- ta.screener_row; a firing row becomes a ta.signal_row with NULL feature columns
    SELECT 'ROW(' || string_agg(CASE WHEN b.attname IS NOT NULL THEN 'm.' || quote_ident(a.attname)
                                     ELSE 'NULL::' || format_type(a.atttypid, a.atttypmod) END,
                                ', ' ORDER BY a.attnum) || ')::ta.signal_row'
      INTO v_signal
      FROM pg_catalog.pg_attribute a
      LEFT JOIN pg_catalog.pg_attribute b
             ON b.attrelid = (SELECT t.typrelid FROM pg_catalog.pg_type t
                               WHERE t.oid = 'ta.screener_row'::regtype)
            AND b.attname = a.attname AND NOT b.attisdropped
     WHERE a.attrelid = (SELECT t.typrelid FROM pg_catalog.pg_type t
                          WHERE t.oid = 'ta.signal_row'::regtype)
       AND a.attnum > 0 AND NOT a.attisdropped;
    v_query := format(
      'SELECT f.x, f.ks FROM (SELECT %s AS x, array_remove(ARRAY[%s]::int[], NULL) AS ks'
      '  FROM market._run1($1, $2, market._warm_before($1, $2, $3), $4, $3, $4) r,'
      '       LATERAL unnest(ARRAY[(r.st)."row"]) AS m'
      ' WHERE r.open_time >= $3 AND r.open_time <= $4) f WHERE cardinality(f.ks) > 0',
      v_signal, v_branches);
  END IF;
  v_no_cooldown := (SELECT bool_and(d IS NULL) FROM unnest(p_cooldowns) d);
  FOR i IN SELECT * FROM market._range_instruments(p_from, p_symbols, p_market) LOOP
    IF v_no_cooldown THEN
      -- no cooldown: every firing candle, set-based
      RETURN QUERY EXECUTE format(
        'SELECT (q.x).market, (q.x).symbol, $5[k], (q.x).open_time, (q.x).close_time,'
        '       (q.x).price, CASE WHEN $7 THEN market._alert_payload(q.x, NULL, $6[k], $5[k]) END'
        '  FROM (%s) q, unnest(q.ks) AS k ORDER BY (q.x).open_time, k', v_query)
        USING i.market, i.symbol, p_from, p_to, p_rules, p_rule_ids, p_payload;
      CONTINUE;
    END IF;
    v_last := array_fill(NULL::timestamptz, ARRAY[cardinality(p_compiled)]);
    -- the compiled rules read m."column": m is the engine's rule row of each candle, streamed
    -- in open_time order
    FOR c IN EXECUTE v_query USING i.market, i.symbol, p_from, p_to LOOP
      FOREACH k IN ARRAY c.ks LOOP
        -- the live cooldown: silent while a previous alert of this (instrument, rule) is
        -- younger than the cooldown
        CONTINUE WHEN v_last[k] IS NOT NULL AND p_cooldowns[k] IS NOT NULL
                      AND v_last[k] > (c.x).open_time - p_cooldowns[k];
        v_last[k] := (c.x).open_time;
        market := (c.x).market;
        symbol := (c.x).symbol;
        rule := p_rules[k];
        open_time := (c.x).open_time;
        close_time := (c.x).close_time;
        price := (c.x).price;
        payload := CASE WHEN p_payload THEN market._alert_payload(c.x, NULL, p_rule_ids[k], p_rules[k]) END;
        RETURN NEXT;
      END LOOP;
    END LOOP;
  END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION market.backtest_rules(p_rules text[], p_from timestamptz,
                                                 p_to timestamptz,
                                                 p_symbols text[] DEFAULT NULL,
                                                 p_config jsonb DEFAULT NULL,
                                                 p_cooldown boolean DEFAULT true,
                                                 p_market text DEFAULT NULL,
                                                 p_payload boolean DEFAULT true)
RETURNS TABLE (market text, symbol text, rule text, open_time timestamptz,
               close_time timestamptz, price float8, payload jsonb)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
  v_unknown text;
  v_compiled text[];
  v_names text[];
  v_ids integer[];
  v_cooldowns interval[];
BEGIN
  SELECT string_agg(n, ', ') INTO v_unknown
    FROM unnest(p_rules) AS n
   WHERE n IS NULL OR NOT EXISTS (SELECT 1 FROM market.alert_rules a WHERE a.name = n);
  IF v_unknown IS NOT NULL OR p_rules IS NULL THEN
    RAISE EXCEPTION 'market.backtest: unknown rule "%"', coalesce(v_unknown, 'NULL')
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'SELECT name FROM market.alert_rules lists the rules.';
  END IF;
  PERFORM market._check_range('market.backtest', p_from, p_to);
  SELECT array_agg(ta.rule_compile(a.expression, 'ta.signal_row',
                                   a.config || coalesce(p_config, '{}')) ORDER BY a.rule_id),
         array_agg(a.name ORDER BY a.rule_id), array_agg(a.rule_id ORDER BY a.rule_id),
         array_agg(CASE WHEN p_cooldown THEN a.cooldown END ORDER BY a.rule_id)
    INTO v_compiled, v_names, v_ids, v_cooldowns
    FROM market.alert_rules a WHERE a.name = ANY (p_rules);
  RETURN QUERY SELECT * FROM market._backtest(v_compiled, v_names, v_ids, v_cooldowns, p_from,
                                              p_to, p_symbols, p_market, p_payload);
END
$$;
COMMENT ON FUNCTION market.backtest_rules(text[], timestamptz, timestamptz, text[], jsonb, boolean, text, boolean) IS
  'The alerts the rules p_rules would have fired on stored candles with open_time in [p_from, '
  'p_to] (instruments with one of p_symbols, all when NULL; of p_market, all when NULL), in one '
  'pass of the screener engine per instrument, without writing alert_history or sending NOTIFY. '
  'p_config overrides keys of every rule''s config (tune thresholds: ''{"change_1h_min": 2}''). '
  'p_cooldown = true applies each rule''s cooldown as the live evaluation does; false lists every '
  'firing candle. Unlike live evaluation (one candle per instrument and write), every candle in '
  'the range is evaluated. payload is the alert JSON (alert_id null), or NULL with p_payload = '
  'false (much faster when only the firing candles matter). Rows come per instrument (market, '
  'symbol order), then by open_time. Errors 22023: an unknown rule, p_from > p_to.';

CREATE OR REPLACE FUNCTION market.backtest(p_rule text, p_from timestamptz, p_to timestamptz,
                                           p_symbols text[] DEFAULT NULL,
                                           p_config jsonb DEFAULT NULL,
                                           p_cooldown boolean DEFAULT true,
                                           p_market text DEFAULT NULL)
RETURNS TABLE (market text, symbol text, rule text, open_time timestamptz,
               close_time timestamptz, price float8, payload jsonb)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
SELECT * FROM market.backtest_rules(ARRAY[p_rule], p_from, p_to, p_symbols, p_config,
                                    p_cooldown, p_market)
$$;
COMMENT ON FUNCTION market.backtest(text, timestamptz, timestamptz, text[], jsonb, boolean, text) IS
  'market.backtest_rules for one rule: the alerts rule p_rule would have fired on stored candles '
  'with open_time in [p_from, p_to] (instruments with one of p_symbols, all when NULL; of '
  'p_market, all when NULL), without writing alert_history or sending NOTIFY. p_config overrides '
  'keys of the rule''s config; p_cooldown = true applies the rule''s cooldown as the live '
  'evaluation does, false lists every firing candle. Windows reach back before p_from. payload is '
  'the alert JSON (alert_id null). Errors 22023: unknown rule, p_from > p_to.';

CREATE OR REPLACE FUNCTION market.backtest_expression(p_expression text, p_from timestamptz,
                                                      p_to timestamptz,
                                                      p_symbols text[] DEFAULT NULL,
                                                      p_config jsonb DEFAULT '{}',
                                                      p_cooldown interval DEFAULT NULL,
                                                      p_market text DEFAULT NULL)
RETURNS TABLE (market text, symbol text, rule text, open_time timestamptz,
               close_time timestamptz, price float8, payload jsonb)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
  PERFORM market._check_range('market.backtest_expression', p_from, p_to);
  RETURN QUERY SELECT * FROM market._backtest(
    ARRAY[ta.rule_compile(p_expression, 'ta.signal_row', coalesce(p_config, '{}'))],
    ARRAY['expression'], ARRAY[NULL::integer], ARRAY[p_cooldown], p_from, p_to, p_symbols,
    p_market, true);
END
$$;
COMMENT ON FUNCTION market.backtest_expression(text, timestamptz, timestamptz, text[], jsonb, interval, text) IS
  'Backtest an unsaved rule expression (same language as market.alert_rules.expression, $params '
  'from p_config) over stored candles with open_time in [p_from, p_to]; p_cooldown NULL = no '
  'cooldown. Nothing is written or notified. Errors: those of ta.rule_compile, 22023 p_from > p_to.';

COMMENT ON FUNCTION market._backtest(text[], text[], integer[], interval[], timestamptz, timestamptz, text[], text, boolean) IS
  'Internal: shared body of the backtests: compiled rules (element k fires as rule p_rules[k]) '
  'over the feature engine''s rule rows (ta.signal_row) of [p_from, p_to] (the screener engine''s '
  'alone when no rule reads a feature column), one pass per '
  'instrument, book features as frozen by the live path, each rule''s '
  'cooldown applied when p_cooldowns[k] is not NULL; payload built when p_payload.';
