-- 006: what happens when candles are written: screener state maintenance and alert evaluation,
-- inside the writing transaction (triggers on market.candles_1m).
--
-- Evaluation policy (documented in README "Alerts"):
--   * Per statement and per instrument, only the newest written candle is evaluated, and only
--     if it is the newest stored candle of that instrument.  A live writer sends one minute per
--     instrument per statement, so every live minute is evaluated; a bulk load (backfill page,
--     import, a user's INSERT ... SELECT) evaluates at most its last minute per instrument, never
--     floods NOTIFY.
--   * SET LOCAL market.evaluate_alerts = 'off' skips evaluation for the transaction (ta-feed
--     does this for old recovered history and imports: alerts for it are skipped, not
--     recorded).  The screener state is maintained either way.
--   * Alerts are written to market.alert_history, queued in market.alert_deliveries for the
--     sinks that subscribe to them, and sent with pg_notify('ta_alerts', payload); NOTIFY is
--     delivered at commit, so an alert exists only if its candle does.
--   * Rules read rule rows (ta.signal_row: the screener row and the feature row, pg_ta 0.3.0);
--     the feature rows of the evaluated minutes are sent on NOTIFY ta_features (sql/015).

CREATE OR REPLACE FUNCTION market.alert_channel() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS
$$ SELECT 'ta_alerts'::text $$;
COMMENT ON FUNCTION market.alert_channel() IS 'The NOTIFY channel alerts are sent on: ta_alerts.';

CREATE OR REPLACE FUNCTION market.alert_payload_version() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$ SELECT 2 $$;
COMMENT ON FUNCTION market.alert_payload_version() IS
  'Version of the alert JSON payload (field "version"): 2 since pg_ta 0.2.0 (adds market and '
  'alert_id, vcp); bumped on any incompatible change.';

-- A plain SQL function without SET, so that PostgreSQL inlines it (backtests build it for every
-- firing candle): every function in it is schema-qualified.  pg_ta 0.3.0: rules read
-- ta.signal_row (the 0.2.0 ta.screener_row version goes; the payload is unchanged).
DROP FUNCTION IF EXISTS market._alert_payload(ta.screener_row, bigint, integer, text);
CREATE OR REPLACE FUNCTION market._alert_payload(m ta.signal_row, p_alert_id bigint,
                                                 p_rule_id integer, p_rule text)
RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE AS
$$
SELECT pg_catalog.jsonb_build_object(
  'version', market.alert_payload_version(),
  'alert_id', p_alert_id,
  'market', m.market,
  'symbol', m.symbol,
  'rule', p_rule,
  'rule_id', p_rule_id,
  'open_time', pg_catalog.to_char(m.open_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
  'close_time', pg_catalog.to_char(m.close_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
  'price', m.price,
  'changes', pg_catalog.jsonb_build_object('1m', m.change_1m, '5m', m.change_5m,
                                           '15m', m.change_15m, '1h', m.change_1h,
                                           '4h', m.change_4h, '8h', m.change_8h, '1d', m.change_1d),
  'volumes', pg_catalog.jsonb_build_object('1m', m.vol_1m, '5m', m.vol_5m, '15m', m.vol_15m,
                                           '1h', m.vol_1h, '4h', m.vol_4h, '8h', m.vol_8h,
                                           '1d', m.vol_1d),
  'vcp', m.vcp,
  'rsi_14', m.rsi_14,
  'macd', m.macd)
$$;
COMMENT ON FUNCTION market._alert_payload(ta.signal_row, bigint, integer, text) IS
  'The alert JSON (version 2): {version, alert_id, market, symbol, rule, rule_id, open_time, '
  'close_time (ISO 8601 UTC of the candle), price (candle close), changes {1m,5m,15m,1h,4h,8h,1d} '
  '(percent), volumes {1m,...,1d} (quote asset), vcp, rsi_14, macd}. Metrics whose window is not '
  'full are null; alert_id is null in backtests.';

-- Rule evaluation.  The enabled rules are compiled into the static SQL of a generated plpgsql
-- function, market._fire_rules(rows), regenerated whenever market.alert_rules changes, so the
-- evaluation plan is prepared once per session instead of at every candle close.  The query
-- reads its rows as $1 both in the generated function and in the one-rule-at-a-time fallback
-- (EXECUTE ... USING), so the compiled text is never rewritten.
CREATE OR REPLACE FUNCTION market._rules_query(p_conditions text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS
$f$
SELECT format($q$
    WITH fired AS (
      -- a row is copied out of the array only when a rule fires on it (most rows fire none)
      SELECT ($1::ta.signal_row[])[a.k - 1 + array_lower($1::ta.signal_row[], 1)] AS x, r.rule_id
        FROM (SELECT m.ordinality AS k, array_remove(ARRAY[%s]::int[], NULL) AS ids
                FROM unnest($1::ta.signal_row[]) WITH ORDINALITY AS m) a,
             unnest(a.ids) AS r(rule_id)
    ), fresh AS (
      SELECT f.x, r.rule_id, r.name,
             nextval('market.alert_history_alert_id_seq'::regclass) AS alert_id
        FROM fired f
        JOIN market.alert_rules r ON r.rule_id = f.rule_id
       WHERE NOT EXISTS (
               SELECT 1 FROM market.alert_history p
                WHERE p.market = (f.x).market AND p.symbol = (f.x).symbol
                  AND p.rule_id = f.rule_id
                  AND p.open_time < (f.x).open_time
                  AND p.open_time > (f.x).open_time - r.cooldown)
    ), ins AS (
      INSERT INTO market.alert_history AS h
             (alert_id, market, symbol, rule_id, rule, open_time, close_time, price, payload)
      SELECT f.alert_id, (f.x).market, (f.x).symbol, f.rule_id, f.name, (f.x).open_time,
             (f.x).close_time, (f.x).price,
             market._alert_payload(f.x, f.alert_id, f.rule_id, f.name)
        FROM fresh f
      ON CONFLICT DO NOTHING
      RETURNING h.alert_id, h.payload
    )
    SELECT array_agg(ins.alert_id ORDER BY ins.alert_id),
           array_agg(ins.payload::text ORDER BY ins.alert_id) FROM ins$q$, p_conditions)
$f$;

-- One rule as an element of the evaluator's array: its id when it fires, else NULL.
CREATE OR REPLACE FUNCTION market._rule_branch(p_rule_id integer, p_compiled text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS
$$ SELECT format('CASE WHEN %s THEN %s END', p_compiled, p_rule_id) $$;

-- Serialises regenerations of the evaluator (a row lock nobody else can take: no role but the
-- owner has any privilege on this table, unlike an advisory lock, which any session can hold).
CREATE TABLE IF NOT EXISTS market._evaluator_lock (singleton boolean PRIMARY KEY CHECK (singleton));
INSERT INTO market._evaluator_lock VALUES (true) ON CONFLICT DO NOTHING;
REVOKE ALL ON market._evaluator_lock FROM PUBLIC;
-- pg_ta 0.3.0: whether the generated evaluator reads a feature column (the live path computes
-- feature rows only when something reads them: such a rule, or market.settings.live_features)
ALTER TABLE market._evaluator_lock ADD COLUMN IF NOT EXISTS reads_features boolean NOT NULL DEFAULT true;
COMMENT ON TABLE market._evaluator_lock IS
  'Internal: one row, locked FOR UPDATE while market._fire_rules is regenerated; reads_features = '
  'an enabled rule names a feature column of ta.signal_row (one that is not a ta.screener_row '
  'column), set with the evaluator.';

-- Whether compiled rules read a feature column (a ta.signal_row column that ta.screener_row
-- lacks): a compiled rule reads column c as m."c" (ta.rule_compile); a false positive (the
-- text inside a string literal) only costs computing features nothing needed.  The live path
-- (market._evaluator_lock.reads_features) and the backtests compute features only then.
CREATE OR REPLACE FUNCTION market._reads_features(p_compiled text[]) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
SELECT EXISTS (
  SELECT 1 FROM unnest(p_compiled) AS r(compiled), pg_catalog.pg_attribute a
   WHERE a.attrelid = (SELECT t.typrelid FROM pg_catalog.pg_type t
                        WHERE t.oid = 'ta.signal_row'::regtype)
     AND a.attnum > 0 AND NOT a.attisdropped
     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute b
                      WHERE b.attrelid = (SELECT t.typrelid FROM pg_catalog.pg_type t
                                           WHERE t.oid = 'ta.screener_row'::regtype)
                        AND b.attname = a.attname AND NOT b.attisdropped)
     AND strpos(r.compiled, 'm."' || a.attname || '"') > 0)
$$;
COMMENT ON FUNCTION market._reads_features(text[]) IS
  'Internal: true when one of the compiled rules (ta.rule_compile against ta.signal_row) reads a '
  'feature column (one that ta.screener_row lacks).';

-- pg_ta 0.3.0: the evaluator reads ta.signal_row (regenerated below with the new signature)
DROP FUNCTION IF EXISTS market._fire_rules(ta.screener_row[]);
CREATE OR REPLACE FUNCTION market._regenerate_evaluator() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
  v_branches text;
  v_body text;
BEGIN
  PERFORM 1 FROM market._evaluator_lock FOR UPDATE;
  SELECT string_agg(market._rule_branch(rule_id, compiled), E',\n        ' ORDER BY rule_id)
    INTO v_branches FROM market.alert_rules WHERE enabled;
  UPDATE market._evaluator_lock SET reads_features = market._reads_features(
    (SELECT array_agg(r.compiled) FROM market.alert_rules r WHERE r.enabled));
  IF v_branches IS NULL THEN
    v_body := E'BEGIN\n  p_alert_ids := NULL;\n  p_payloads := NULL;\nEND';
  ELSE
    v_body := format(E'BEGIN\n%s\n  INTO p_alert_ids, p_payloads;\nEND',
                     market._rules_query(v_branches));
  END IF;
  -- the settings the compiled text depends on are pinned on the function
  EXECUTE format($ddl$
    CREATE OR REPLACE FUNCTION market._fire_rules(p_rows ta.signal_row[],
                                                  OUT p_alert_ids bigint[], OUT p_payloads text[])
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    SET standard_conforming_strings = on
    SET extra_float_digits = 1
    AS %L$ddl$, v_body);
  EXECUTE 'COMMENT ON FUNCTION market._fire_rules(ta.signal_row[]) IS '
          || quote_literal('Generated from market.alert_rules by market._regenerate_evaluator(); '
                           || 'do not edit. Evaluates the enabled rules on the rows, writes '
                           || 'alert_history; returns the new alert ids and payloads.');
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

-- Evaluate every enabled rule on the given screener rows; write alert_history, queue the
-- deliveries and NOTIFY.  Returns the number of alerts sent.  A rule that fails at run time
-- (e.g. arithmetic overflow in a custom expression) is skipped with a WARNING and a
-- data_quality_log row; it never makes the candle write fail.
DROP FUNCTION IF EXISTS market._evaluate(ta.screener_row[]);
CREATE OR REPLACE FUNCTION market._evaluate(p_rows ta.signal_row[])
RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
  v_ids bigint[];
  v_payloads text[];
  v_part_ids bigint[];
  v_part_payloads text[];
  v_rule record;
  v_latest timestamptz;
BEGIN
  IF p_rows IS NULL OR cardinality(p_rows) = 0 THEN
    RETURN 0;
  END IF;

  BEGIN
    SELECT f.p_alert_ids, f.p_payloads INTO v_ids, v_payloads FROM market._fire_rules(p_rows) f;
  EXCEPTION WHEN OTHERS THEN
    -- find the failing rule(s); evaluate the others one by one
    v_ids := NULL;
    v_payloads := NULL;
    FOR v_rule IN SELECT rule_id, name, compiled FROM market.alert_rules WHERE enabled
                   ORDER BY rule_id LOOP
      BEGIN
        EXECUTE market._rules_query(market._rule_branch(v_rule.rule_id, v_rule.compiled))
           INTO v_part_ids, v_part_payloads USING p_rows;
        v_ids := v_ids || v_part_ids;
        v_payloads := v_payloads || v_part_payloads;
      EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'pg_ta: rule "%" failed and was skipped: %', v_rule.name, SQLERRM;
        INSERT INTO market.data_quality_log (kind, detail)
        VALUES ('rule_error', jsonb_build_object(
                  'rule', v_rule.name, 'error', SQLERRM, 'sqlstate', SQLSTATE,
                  'instruments', (SELECT jsonb_agg(jsonb_build_array(r.market, r.symbol))
                                    FROM unnest(p_rows) r)));
      END;
    END LOOP;
  END;

  IF v_ids IS NOT NULL THEN
    PERFORM market._enqueue_deliveries(v_ids);
    PERFORM pg_notify(market.alert_channel(), p) FROM unnest(v_payloads) AS p;
  END IF;

  -- retention, in candle time; a candle dated in the future (one stored before
  -- candles_1m_open_time_check existed) must not make everything else look old: "now" is at
  -- most the server clock plus the 2 minutes of tolerated skew (as in market.apply_retention);
  -- no rows, no candle time: nothing is old (least() would skip the NULL and fall back to the
  -- clock)
  SELECT max(r.open_time) INTO v_latest FROM unnest(p_rows) r;
  IF v_latest IS NOT NULL THEN
    DELETE FROM market.alert_history
     WHERE open_time < least(v_latest, now() + interval '2 minutes')
                       - (SELECT alert_history_retention FROM market.settings);
  END IF;
  RETURN coalesce(cardinality(v_ids), 0);
END
$$;
COMMENT ON FUNCTION market._evaluate(ta.signal_row[]) IS
  'Internal: evaluate the enabled rules on the rule rows (ta.signal_row); alert_history, delivery '
  'queue, NOTIFY.';

-- Shared body of the INSERT and UPDATE triggers.  Per instrument: the first and last written
-- open_time; p_single holds the candles of the instruments with exactly one written row in an
-- INSERT (the live case), which take the live path when they follow the instrument's head.
DROP FUNCTION IF EXISTS market._apply_candle_changes(text[], text[], timestamptz[], timestamptz[], market.candles_1m[]);
CREATE OR REPLACE FUNCTION market._apply_candle_changes(p_market text[], p_symbol text[],
                                                        p_from timestamptz[], p_to timestamptz[],
                                                        p_single market.candles_1m[],
                                                        p_at_commit boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
  v_live market.candles_1m[];
  v_heads ta.signal_row[];
  v_feats ta.feature_row[];
  v_rest market.candles_1m[];
  v_rm text[];
  v_rs text[];
  v_rf timestamptz[];
  v_rt timestamptz[];
  v_heads_found bigint;
BEGIN
  -- lock the heads of every instrument written (a placeholder row for a new one), in key
  -- order: concurrent writers of one instrument take turns, and each sees the other's candles.
  -- The placeholders are inserted (in key order, before any head is locked: no deadlock) only
  -- when a head is missing: a live close, whose heads all exist, pays a read of each, not an
  -- insert attempt.
  SELECT count(*) INTO v_heads_found
    FROM unnest(p_market, p_symbol) AS u(market, symbol)
    JOIN market.screener_state s ON s.market = u.market AND s.symbol = u.symbol;
  IF v_heads_found < cardinality(p_market) THEN
    INSERT INTO market.screener_state (market, symbol)
    SELECT DISTINCT u.market, u.symbol FROM unnest(p_market, p_symbol) AS u(market, symbol)
     ORDER BY 1, 2
    ON CONFLICT DO NOTHING;
  END IF;
  IF cardinality(p_single) = cardinality(p_market) THEN
    -- one candle per instrument (a live close): the lock also picks the live candles, one new
    -- candle that follows its instrument's head (as locked: a head updated meanwhile is read
    -- in its new version)
    SELECT array_agg(l.c) FILTER (WHERE l.follows) INTO v_live
      FROM (SELECT c, (s.chain).candles IS NOT NULL AND c.open_time > s.open_time AS follows
              FROM unnest(p_single) AS c
              JOIN market.screener_state s ON s.market = c.market AND s.symbol = c.symbol
             ORDER BY s.market, s.symbol
               FOR UPDATE OF s) l;
  ELSE
    PERFORM 1 FROM market.screener_state s
      JOIN unnest(p_market, p_symbol) AS u(market, symbol)
        ON s.market = u.market AND s.symbol = u.symbol
     ORDER BY s.market, s.symbol
       FOR UPDATE OF s;
    -- live: one new candle that follows the instrument's head
    SELECT array_agg(c) INTO v_live
      FROM unnest(p_single) AS c
      JOIN market.screener_state s ON s.market = c.market AND s.symbol = c.symbol
     WHERE (s.chain).candles IS NOT NULL AND c.open_time > s.open_time;
  END IF;
  IF v_live IS NOT NULL THEN
    SELECT a.p_heads, a.p_features, a.p_rest INTO v_heads, v_feats, v_rest
      FROM market._append(v_live) a;
  END IF;

  -- everything else (bulk writes, out-of-order minutes, updates, new instruments, and live
  -- candles the cache could not serve) is recomputed
  SELECT array_agg(u.market), array_agg(u.symbol), array_agg(u.from_time), array_agg(u.to_time)
    INTO v_rm, v_rs, v_rf, v_rt
    FROM unnest(p_market, p_symbol, p_from, p_to) AS u(market, symbol, from_time, to_time)
    LEFT JOIN (SELECT h.market, h.symbol FROM unnest(v_heads) h) h
      ON h.market = u.market AND h.symbol = u.symbol
   WHERE h.market IS NULL;
  IF v_rm IS NOT NULL AND NOT p_at_commit AND market.timescaledb_enabled() THEN
    -- TimescaleDB 2.28 marks a compressed chunk "partial" only when the INSERT that
    -- decompressed one of its batches ends, after this trigger: a query planned here would not
    -- read the decompressed rows.  So the recompute runs at commit (market._apply_deferred).
    INSERT INTO market._deferred_candle_changes (market, symbol, from_time, to_time)
    SELECT * FROM unnest(v_rm, v_rs, v_rf, v_rt);
    v_rm := NULL;
  END IF;
  IF v_rm IS NOT NULL THEN
    SELECT v_heads || array_agg(r.signal), v_feats || array_agg(r.features) INTO v_heads, v_feats
      FROM market._recompute(v_rm, v_rs, v_rf) r
      JOIN unnest(v_rm, v_rs, v_rt) AS u(market, symbol, to_time)
        ON u.market = r.market AND u.symbol = r.symbol
     WHERE r.open_time = u.to_time;   -- evaluated only when the newest written is the head
  END IF;

  IF coalesce(current_setting('market.evaluate_alerts', true), '') IN ('off', 'false', '0') THEN
    RETURN;
  END IF;
  PERFORM market._evaluate(v_heads);
  -- the evaluated minutes' feature rows, for models listening (sql/015)
  PERFORM market._notify_features(v_feats);
END
$$;
COMMENT ON FUNCTION market._apply_candle_changes(text[], text[], timestamptz[], timestamptz[], market.candles_1m[], boolean) IS
  'Internal: shared body of the candle INSERT/UPDATE triggers: locks the heads of the written '
  'instruments, steps the live path or recomputes the derived state (screener row, feature row), '
  'and evaluates the rules at each instrument''s newest written candle when it is its newest '
  'stored one, sending its feature row on NOTIFY ta_features (unless market.evaluate_alerts = '
  'off). With TimescaleDB the recompute waits for commit (market._deferred_candle_changes) unless '
  'p_at_commit.';

-- Changes whose recompute waits for commit (TimescaleDB; see market._apply_candle_changes).
CREATE TABLE IF NOT EXISTS market._deferred_candle_changes (
    market text NOT NULL, symbol text NOT NULL,
    from_time timestamptz NOT NULL, to_time timestamptz NOT NULL);
REVOKE ALL ON market._deferred_candle_changes FROM PUBLIC;
COMMENT ON TABLE market._deferred_candle_changes IS
  'Internal: candle changes of the current transaction whose recompute runs at commit '
  '(TimescaleDB only); always empty outside a transaction.';

CREATE OR REPLACE FUNCTION market._apply_deferred() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
  v_m text[]; v_s text[]; v_from timestamptz[]; v_to timestamptz[];
BEGIN
  WITH d AS (DELETE FROM market._deferred_candle_changes RETURNING *)
  SELECT array_agg(a.market), array_agg(a.symbol), array_agg(a.mn), array_agg(a.mx)
    INTO v_m, v_s, v_from, v_to
    FROM (SELECT d.market, d.symbol, min(d.from_time) AS mn, max(d.to_time) AS mx
            FROM d GROUP BY d.market, d.symbol) a;
  IF v_m IS NOT NULL THEN      -- the first of the transaction's deferred rows does all
    PERFORM market._apply_candle_changes(v_m, v_s, v_from, v_to, NULL, true);
  END IF;
  RETURN NULL;
END
$$;
COMMENT ON FUNCTION market._apply_deferred() IS
  'Internal: deferred constraint trigger of market._deferred_candle_changes: at commit, applies '
  'the transaction''s deferred candle changes (recompute and evaluation) once.';
DROP TRIGGER IF EXISTS deferred_candle_changes ON market._deferred_candle_changes;
CREATE CONSTRAINT TRIGGER deferred_candle_changes
  AFTER INSERT ON market._deferred_candle_changes DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW EXECUTE FUNCTION market._apply_deferred();

CREATE OR REPLACE FUNCTION market._candles_after_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
  v_m text[]; v_s text[]; v_from timestamptz[]; v_to timestamptz[]; v_single market.candles_1m[];
BEGIN
  SELECT array_agg(a.market), array_agg(a.symbol), array_agg(a.mn), array_agg(a.mx),
         array_agg(a.one) FILTER (WHERE a.n = 1)
    INTO v_m, v_s, v_from, v_to, v_single
    FROM (SELECT r.market, r.symbol, min(r.open_time) AS mn, max(r.open_time) AS mx,
                 -- (r is a row of the transition table, of type record: the cast builds a
                 -- market.candles_1m from its columns; an array of records assigned to
                 -- v_single would be converted element by element through text)
                 count(*) AS n, (array_agg(r::market.candles_1m))[1] AS one
            FROM new_rows r GROUP BY r.market, r.symbol) a;
  IF v_m IS NOT NULL THEN
    PERFORM market._apply_candle_changes(v_m, v_s, v_from, v_to, v_single);
  END IF;
  RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION market._candles_after_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
  v_m text[]; v_s text[]; v_from timestamptz[]; v_to timestamptz[];
BEGIN
  -- an update may move rows (another instrument or open_time): recompute every instrument
  -- involved from the earliest old or new position; evaluate at the newest new one
  SELECT array_agg(a.market), array_agg(a.symbol), array_agg(a.mn), array_agg(a.mx)
    INTO v_m, v_s, v_from, v_to
    FROM (SELECT u.market, u.symbol, min(u.open_time) AS mn,
                 max(u.open_time) FILTER (WHERE u.is_new) AS mx
            FROM (SELECT market, symbol, open_time, true AS is_new FROM new_rows
                  UNION ALL SELECT market, symbol, open_time, false FROM old_rows) u
           GROUP BY u.market, u.symbol) a;
  IF v_m IS NOT NULL THEN
    PERFORM market._apply_candle_changes(v_m, v_s, v_from, v_to, NULL);
  END IF;
  RETURN NULL;
END
$$;

-- DELETE: TimescaleDB refuses DELETE triggers with transition tables on compressed
-- hypertables, so a row trigger collects the deleted keys in a session temp table and the
-- statement trigger handles them.  Deleting the oldest candles of an instrument up to the
-- start of a UTC day (what retention and TimescaleDB's 1-day chunks do) only drops the
-- checkpoints before the first kept candle: every kept candle keeps its values.  Any other
-- delete recomputes from the first deleted candle (a delete that cuts into the first kept day
-- restarts the instrument's chain at its first kept candle).
CREATE OR REPLACE FUNCTION market._candles_before_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
  IF pg_catalog.to_regclass('pg_temp.pg_ta_deleted_candles') IS NULL THEN
    CREATE TEMP TABLE pg_ta_deleted_candles (market text, symbol text, open_time timestamptz)
      ON COMMIT DROP;
  END IF;
  RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION market._candles_deleted_row() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
  INSERT INTO pg_temp.pg_ta_deleted_candles VALUES (OLD.market, OLD.symbol, OLD.open_time);
  RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION market._candles_after_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
  v_pm text[]; v_ps text[]; v_pfirst timestamptz[];
  v_rm text[]; v_rs text[]; v_rf timestamptz[];
BEGIN
  IF pg_catalog.to_regclass('pg_temp.pg_ta_deleted_candles') IS NULL THEN
    RETURN NULL;
  END IF;
  WITH d AS (
    SELECT t.market, t.symbol, min(t.open_time) AS mn, max(t.open_time) AS mx
      FROM pg_temp.pg_ta_deleted_candles t GROUP BY t.market, t.symbol
  ), k AS (
    SELECT d.*, f.first_time,
           (f.first_time IS NOT NULL AND d.mx < f.first_time
            AND EXISTS (SELECT 1 FROM market.screener_checkpoints c
                         WHERE c.market = d.market AND c.symbol = d.symbol
                           AND c.open_time = f.first_time)) AS prefix
      FROM d
      LEFT JOIN LATERAL (SELECT c.open_time AS first_time FROM market.candles_1m c
                          WHERE c.market = d.market AND c.symbol = d.symbol
                          ORDER BY c.open_time LIMIT 1) f ON true
  )
  SELECT array_agg(k.market) FILTER (WHERE k.prefix),
         array_agg(k.symbol) FILTER (WHERE k.prefix),
         array_agg(k.first_time) FILTER (WHERE k.prefix),
         array_agg(k.market) FILTER (WHERE NOT k.prefix),
         array_agg(k.symbol) FILTER (WHERE NOT k.prefix),
         array_agg(CASE WHEN k.first_time IS NOT NULL AND k.mx < k.first_time
                        THEN '-infinity'::timestamptz ELSE k.mn END) FILTER (WHERE NOT k.prefix)
    INTO v_pm, v_ps, v_pfirst, v_rm, v_rs, v_rf
    FROM k;
  -- the frozen book minutes of deleted candles go with them
  DELETE FROM market.book_1m_frozen b
   USING pg_temp.pg_ta_deleted_candles d
   WHERE b.market = d.market AND b.symbol = d.symbol AND b.open_time = d.open_time;
  TRUNCATE pg_temp.pg_ta_deleted_candles;

  IF v_pm IS NOT NULL THEN
    DELETE FROM market.screener_checkpoints c
     USING unnest(v_pm, v_ps, v_pfirst) AS p(market, symbol, first_time)
     WHERE c.market = p.market AND c.symbol = p.symbol AND c.open_time < p.first_time;
  END IF;
  IF v_rm IS NOT NULL THEN
    PERFORM 1 FROM market.screener_state s
      JOIN unnest(v_rm, v_rs) AS u(market, symbol) ON s.market = u.market AND s.symbol = u.symbol
     ORDER BY s.market, s.symbol FOR UPDATE OF s;
    PERFORM market._recompute(v_rm, v_rs, v_rf);
  END IF;
  RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION market._candles_after_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
  TRUNCATE market.screener_state, market.screener_checkpoints, market.book_1m_frozen;
  PERFORM ta._screener_cache_reset();
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
DROP TRIGGER IF EXISTS candles_1m_before_delete ON market.candles_1m;
CREATE TRIGGER candles_1m_before_delete
  BEFORE DELETE ON market.candles_1m
  FOR EACH STATEMENT EXECUTE FUNCTION market._candles_before_delete();
DROP TRIGGER IF EXISTS candles_1m_deleted_row ON market.candles_1m;
CREATE TRIGGER candles_1m_deleted_row
  AFTER DELETE ON market.candles_1m
  FOR EACH ROW EXECUTE FUNCTION market._candles_deleted_row();
CREATE TRIGGER candles_1m_after_delete
  AFTER DELETE ON market.candles_1m
  FOR EACH STATEMENT EXECUTE FUNCTION market._candles_after_delete();

DROP TRIGGER IF EXISTS candles_1m_after_truncate ON market.candles_1m;
CREATE TRIGGER candles_1m_after_truncate
  AFTER TRUNCATE ON market.candles_1m
  FOR EACH STATEMENT EXECUTE FUNCTION market._candles_after_truncate();

-- (Candles written before this schema existed get their state at the end of sql/015, once
-- everything the recompute reads exists.)

COMMENT ON FUNCTION market._rules_query(text) IS
  'Internal: the SQL of the generated evaluator ($1 = the screener rows; rules array -> dedup, '
  'cooldown, alert_history; returns alert ids and payloads).';
COMMENT ON FUNCTION market._rule_branch(integer, text) IS
  'Internal: one compiled rule as an element of the evaluator''s array: its id when it fires, else NULL.';
COMMENT ON FUNCTION market._regenerate_evaluator() IS
  'Internal: (re)creates market._fire_rules from the enabled rules of market.alert_rules, with '
  'search_path and standard_conforming_strings pinned.';
COMMENT ON FUNCTION market._alert_rules_changed() IS
  'Internal: statement trigger of market.alert_rules; regenerates the evaluator.';
COMMENT ON FUNCTION market._candles_after_insert() IS
  'Internal: AFTER INSERT statement trigger of market.candles_1m (transition table new_rows).';
COMMENT ON FUNCTION market._candles_after_update() IS
  'Internal: AFTER UPDATE statement trigger of market.candles_1m (transition tables old_rows, new_rows).';
COMMENT ON FUNCTION market._candles_before_delete() IS
  'Internal: BEFORE DELETE statement trigger of market.candles_1m; creates the session''s '
  'pg_temp.pg_ta_deleted_candles (dropped at commit).';
COMMENT ON FUNCTION market._candles_deleted_row() IS
  'Internal: AFTER DELETE row trigger of market.candles_1m; records the deleted key (no '
  'transition table: TimescaleDB refuses those for DELETE on compressed hypertables).';
COMMENT ON FUNCTION market._candles_after_delete() IS
  'Internal: AFTER DELETE statement trigger of market.candles_1m; drops the frozen book minutes of '
  'the deleted candles; deleting the oldest candles of an instrument up to a day start only drops '
  'older checkpoints, any other delete recomputes the instrument from the first deleted candle.';
COMMENT ON FUNCTION market._candles_after_truncate() IS
  'Internal: AFTER TRUNCATE trigger of market.candles_1m; empties the screener state, checkpoints '
  'and frozen book minutes.';
