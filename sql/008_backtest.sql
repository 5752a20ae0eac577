-- 008: backtests: evaluate a rule over stored history without writing or notifying anything.

CREATE OR REPLACE FUNCTION market._backtest(p_compiled text, p_rule text, p_rule_id integer,
                                            p_cooldown interval, p_from timestamptz,
                                            p_to timestamptz, p_symbols text[])
RETURNS TABLE (symbol text, rule text, open_time timestamptz, close_time timestamptz,
               price float8, payload jsonb)
LANGUAGE plpgsql STABLE AS
$$
DECLARE
  c record;
  v_symbol text;
  v_last timestamptz;
BEGIN
  FOR c IN EXECUTE format(
      'SELECT m.symbol, m.open_time, m.close_time, m.price, m AS x'
      ' FROM market.screener_range($1, $2, $3) m WHERE %s ORDER BY m.symbol, m.open_time',
      p_compiled) USING p_from, p_to, p_symbols
  LOOP
    IF v_symbol IS DISTINCT FROM c.symbol THEN
      v_symbol := c.symbol;
      v_last := NULL;
    END IF;
    -- the live cooldown: silent while a previous alert of this (symbol, rule) is younger
    -- than the cooldown
    CONTINUE WHEN v_last IS NOT NULL AND p_cooldown IS NOT NULL
                  AND v_last > c.open_time - p_cooldown;
    v_last := c.open_time;
    symbol := c.symbol;
    rule := p_rule;
    open_time := c.open_time;
    close_time := c.close_time;
    price := c.price;
    payload := market._alert_payload(c.x, p_rule_id, p_rule);
    RETURN NEXT;
  END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION market.backtest(p_rule text, p_from timestamptz, p_to timestamptz,
                                           p_symbols text[] DEFAULT NULL,
                                           p_config jsonb DEFAULT NULL,
                                           p_cooldown boolean DEFAULT true)
RETURNS TABLE (symbol text, rule text, open_time timestamptz, close_time timestamptz,
               price float8, payload jsonb)
LANGUAGE plpgsql STABLE AS
$$
DECLARE
  r market.alert_rules;
BEGIN
  SELECT * INTO r FROM market.alert_rules a WHERE a.name = p_rule;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'market.backtest: unknown rule "%"', p_rule
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'SELECT name FROM market.alert_rules lists the rules.';
  END IF;
  IF p_from IS NULL OR p_to IS NULL OR p_from > p_to THEN
    RAISE EXCEPTION 'market.backtest: need p_from <= p_to, got [%, %]', p_from, p_to
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  RETURN QUERY SELECT * FROM market._backtest(
    ta.rule_compile(r.expression, 'market.screener_row', r.config || coalesce(p_config, '{}')),
    r.name, r.rule_id, CASE WHEN p_cooldown THEN r.cooldown END, p_from, p_to, p_symbols);
END
$$;
COMMENT ON FUNCTION market.backtest(text, timestamptz, timestamptz, text[], jsonb, boolean) IS
  'The alerts rule p_rule would have fired on stored candles with open_time in [p_from, p_to] '
  '(all symbols, or p_symbols), without writing alert_history or sending NOTIFY. p_config '
  'overrides keys of the rule''s config (tune thresholds: ''{"change_1h_min": 2}''). p_cooldown = '
  'true applies the rule''s cooldown as the live evaluation does; false lists every firing candle. '
  'Unlike live evaluation (one candle per symbol and write), every candle in the range is '
  'evaluated. Windows reach back before p_from (up to 2879 candles). payload is the alert JSON.';

CREATE OR REPLACE FUNCTION market.backtest_expression(p_expression text, p_from timestamptz,
                                                      p_to timestamptz,
                                                      p_symbols text[] DEFAULT NULL,
                                                      p_config jsonb DEFAULT '{}',
                                                      p_cooldown interval DEFAULT NULL)
RETURNS TABLE (symbol text, rule text, open_time timestamptz, close_time timestamptz,
               price float8, payload jsonb)
LANGUAGE sql STABLE AS
$$
SELECT * FROM market._backtest(
  ta.rule_compile(p_expression, 'market.screener_row', coalesce(p_config, '{}')),
  'expression', NULL, p_cooldown, p_from, p_to, p_symbols)
$$;
COMMENT ON FUNCTION market.backtest_expression(text, timestamptz, timestamptz, text[], jsonb, interval) IS
  'Backtest an unsaved rule expression (same language as market.alert_rules.expression, $params '
  'from p_config) over stored candles with open_time in [p_from, p_to]; p_cooldown NULL = no '
  'cooldown. Nothing is written or notified.';

COMMENT ON FUNCTION market._backtest(text, text, integer, interval, timestamptz, timestamptz, text[]) IS
  'Internal: shared body of market.backtest and market.backtest_expression (a compiled rule over '
  'the stored candles in [p_from, p_to], cooldown applied when p_cooldown is not NULL).';
