-- Feature rows (ta.feature_row, feature set 1): market.features_range, market.features (the
-- live row at every close), book features frozen at candle time, features as rule variables.
SET client_min_messages = warning;
SET TIME ZONE 'UTC';
SELECT ta.feature_version() AS feature_version, market.features_channel() AS channel;

-- 1,560 one-minute candles of FEATUSDT (spot) from 2024-02-01 00:00, exact numeric prices, a
-- few zero-volume minutes, written in one statement (the bulk path)
INSERT INTO market.candles_1m (market, symbol, open_time, close_time, open, high, low, close,
                               volume, quote_volume, trades, taker_buy_volume, taker_buy_quote_volume)
SELECT 'spot', 'FEATUSDT', t, t + interval '59.999 seconds', o, greatest(o, c) + 0.05,
       least(o, c) - 0.05, c, v, round(v * c, 8), 10 + i % 7, round(v * (i % 5) / 4, 4),
       round(v * (i % 5) / 4 * c, 8)
  FROM generate_series(0, 1559) i,
       LATERAL (SELECT timestamptz '2024-02-01 00:00' + i * interval '1 minute' AS t,
                       (100 + (i * 37 % 23) * 0.25 - (i % 7) * 0.5 + i * 0.01)::numeric AS o,
                       (100 + ((i + 1) * 37 % 23) * 0.25 - ((i + 1) % 7) * 0.5 + i * 0.01)::numeric AS c,
                       (CASE WHEN i % 13 = 0 THEN 0 ELSE 1 + (i * 7919 % 101) * 0.01 END)::numeric AS v) x;

-- 1. A row with every column warmed up (the last minute), rounded for display
SELECT open_time, close_time, round(ret_1m::numeric, 12) AS ret_1m, round(ret_1d::numeric, 12) AS ret_1d,
       round(rv_1h::numeric, 12) AS rv_1h, round(rv_1d::numeric, 12) AS rv_1d,
       round(rsi_14::numeric, 9) AS rsi_14, round(macd_hist::numeric, 9) AS macd_hist,
       round(bb_pct_b::numeric, 9) AS bb_pct_b, round(vwap_dist_1d::numeric, 12) AS vwap_dist_1d,
       round(vol_z_1d::numeric, 9) AS vol_z_1d, round(quote_vol_z_1d::numeric, 9) AS quote_vol_z_1d,
       taker_buy_ratio, imbalance_1m, round(ret_1m_z::numeric, 9) AS ret_1m_z,
       round(ret_1d_z::numeric, 9) AS ret_1d_z, round(rsi_14_z::numeric, 9) AS rsi_14_z,
       imbalance_1m_z
  FROM market.features_range(ARRAY['spot'], ARRAY['FEATUSDT'], '2024-02-02 01:59', '2024-02-02 01:59');

-- 2. Warm-up: the first candle (1-based) where each column has a value (NULL before, never 0
--    or NaN): ret_1m needs 2 candles, ret_1d 1441, rv_1d 1441, rsi_14 15, macd_hist 34,
--    bb_pct_b 20, vol_z_1d 1440, a _z column its column's start + 59
SELECT j.key AS c, min(s.n) AS first_candle_with_a_value
  FROM (SELECT row_number() OVER (ORDER BY f.open_time) AS n, f
          FROM market.features_range(NULL, ARRAY['FEATUSDT'], '-infinity', 'infinity') f) s,
       jsonb_each(to_jsonb(s.f) - 'market' - 'symbol' - 'open_time' - 'close_time') j
 WHERE j.value <> 'null'
 GROUP BY j.key ORDER BY 2, 1;
SELECT count(*) AS nan_values
  FROM market.features_range(NULL, ARRAY['FEATUSDT'], '-infinity', 'infinity') f,
       jsonb_each_text(to_jsonb(f)) j WHERE j.value IN ('NaN', 'Infinity', '-Infinity');

-- 3. The live path: five closes, one statement each; market.features (one row per
--    instrument) always equals features_range at the head, bit for bit
CREATE TEMP TABLE head_vs_range (open_time timestamptz, equal boolean);
DO $$
DECLARE
  i int;
  t timestamptz;
BEGIN
  FOR i IN 1560..1564 LOOP
    t := timestamptz '2024-02-01 00:00' + i * interval '1 minute';
    INSERT INTO market.candles_1m (market, symbol, open_time, close_time, open, high, low, close,
                                   volume, quote_volume, trades, taker_buy_volume, taker_buy_quote_volume)
    VALUES ('spot', 'FEATUSDT', t, t + interval '59.999 seconds', 115.6, 115.9, 115.5, 115.6 + (i % 3) * 0.1,
            2, 231.2, 5, 1, 115.6);
    INSERT INTO head_vs_range
    SELECT t, (SELECT f::text FROM market.features f WHERE symbol = 'FEATUSDT')
            = (SELECT r::text FROM market.features_range(NULL, ARRAY['FEATUSDT'], t, t) r);
  END LOOP;
END
$$;
SELECT * FROM head_vs_range ORDER BY 1;

-- 4. Book features: the book tickers of 02:05 arrive before its candle (as ta-feed writes
--    them), the trigger freezes the minute's book features (20 s of B = 30, A = 10: imbalance
--    0.5, then 40 s of 10/10: 0; time-weighted 1/6); a tick of 02:05 that arrives after the
--    candle changes market.book_1m but not the frozen row: the feature row (live and offline)
--    keeps what the live path saw, and market.book_1m_late lists the minute
INSERT INTO market.book_tickers (market, symbol, update_id, best_bid_price, best_bid_qty,
                                 best_ask_price, best_ask_qty, event_time)
VALUES ('spot', 'FEATUSDT', 1, 115.60, 30, 115.62, 10, '2024-02-02 02:05:00'),
       ('spot', 'FEATUSDT', 2, 115.61, 10, 115.62, 10, '2024-02-02 02:05:20');
INSERT INTO market.candles_1m (market, symbol, open_time, close_time, open, high, low, close,
                               volume, quote_volume, trades, taker_buy_volume, taker_buy_quote_volume)
VALUES ('spot', 'FEATUSDT', '2024-02-02 02:05', '2024-02-02 02:05:59.999', 115.6, 115.9, 115.5,
        115.7, 2, 231.4, 5, 1.5, 173.55);
SELECT open_time, round(imbalance::numeric, 9) AS imbalance, round(spread_bps::numeric, 9) AS spread_bps,
       round(wmid_offset_bps::numeric, 9) AS wmid_offset_bps, updates
  FROM market.book_1m_frozen WHERE symbol = 'FEATUSDT';
SELECT open_time, round(imbalance_1m::numeric, 9) AS imbalance_1m,
       round(spread_bps_1m::numeric, 9) AS spread_bps_1m,
       round(wmid_offset_bps_1m::numeric, 9) AS wmid_offset_bps_1m
  FROM market.features WHERE symbol = 'FEATUSDT';
INSERT INTO market.book_tickers (market, symbol, update_id, best_bid_price, best_bid_qty,
                                 best_ask_price, best_ask_qty, event_time)
VALUES ('spot', 'FEATUSDT', 3, 115.50, 1, 115.70, 50, '2024-02-02 02:05:50');
SELECT open_time, frozen_updates, updates_now, differs FROM market.book_1m_late WHERE symbol = 'FEATUSDT';
SELECT (SELECT f::text FROM market.features f WHERE symbol = 'FEATUSDT')
     = (SELECT r::text FROM market.features_range(NULL, ARRAY['FEATUSDT'], '2024-02-02 02:05', '2024-02-02 02:05') r)
       AS offline_equals_live_after_the_late_tick;

-- 5. Features as rule variables, live and in backtests: a rule over a book feature, a
--    screener column and a z-score fires at 02:07 (the minute's only quote has B = 20, A = 10:
--    imbalance 1/3 > 0.2, and the price is up), live and in the backtest; 02:05's 1/6 does not
INSERT INTO market.alert_rules (name, expression, config, cooldown)
VALUES ('book_push', 'imbalance_1m > $imb_min AND change_1m > 0 AND ret_1m_z IS NOT NULL',
        '{"imb_min": 0.2}', '0');
INSERT INTO market.candles_1m (market, symbol, open_time, close_time, open, high, low, close,
                               volume, quote_volume, trades, taker_buy_volume, taker_buy_quote_volume)
VALUES ('spot', 'FEATUSDT', '2024-02-02 02:06', '2024-02-02 02:06:59.999', 115.7, 115.9, 115.5,
        115.8, 2, 231.6, 5, 1, 115.8);
INSERT INTO market.book_tickers (market, symbol, update_id, best_bid_price, best_bid_qty,
                                 best_ask_price, best_ask_qty, event_time)
VALUES ('spot', 'FEATUSDT', 4, 115.79, 20, 115.81, 10, '2024-02-02 02:07:00');
INSERT INTO market.candles_1m (market, symbol, open_time, close_time, open, high, low, close,
                               volume, quote_volume, trades, taker_buy_volume, taker_buy_quote_volume)
VALUES ('spot', 'FEATUSDT', '2024-02-02 02:07', '2024-02-02 02:07:59.999', 115.8, 115.9, 115.7,
        115.85, 2, 231.7, 5, 1, 115.85);
SELECT rule, open_time, price FROM market.alert_history WHERE rule = 'book_push' ORDER BY open_time;
SELECT rule, open_time, price
  FROM market.backtest_rules(ARRAY['book_push'], '2024-02-02 00:00', '2024-02-02 03:00', ARRAY['FEATUSDT'])
 ORDER BY open_time;
SELECT open_time FROM market.backtest_expression('imbalance_1m > 0.3', '2024-02-02 00:00',
                                                 '2024-02-02 03:00') ORDER BY 1;
\set VERBOSITY terse
INSERT INTO market.alert_rules (name, expression) VALUES ('typo', 'imbalance_1n > 0.3');
\set VERBOSITY default
DELETE FROM market.alert_rules WHERE name = 'book_push';

-- 6. Features off: no feature row is stored; a rule naming a feature column still sees the
--    candle features (so the live path computes them: reads_features); with no such rule it
--    does not compute features at all, and when they are read again the next close reloads the
--    engine: its row equals features_range, bit for bit
UPDATE market.settings SET live_features = false;
INSERT INTO market.alert_rules (name, expression, cooldown)
VALUES ('z_live', 'ret_1m_z IS NOT NULL AND rsi_14 > 0', '0');
SELECT reads_features FROM market._evaluator_lock;
INSERT INTO market.candles_1m (market, symbol, open_time, close_time, open, high, low, close,
                               volume, quote_volume, trades, taker_buy_volume, taker_buy_quote_volume)
VALUES ('spot', 'FEATUSDT', '2024-02-02 02:08', '2024-02-02 02:08:59.999', 115.8, 115.9, 115.7,
        115.85, 2, 231.7, 5, 1, 115.85);
SELECT count(*) AS feature_rows FROM market.features WHERE symbol = 'FEATUSDT';
SELECT rule, open_time FROM market.alert_history WHERE rule = 'z_live' ORDER BY open_time;
DELETE FROM market.alert_rules WHERE name = 'z_live';
SELECT reads_features FROM market._evaluator_lock;
INSERT INTO market.candles_1m (market, symbol, open_time, close_time, open, high, low, close,
                               volume, quote_volume, trades, taker_buy_volume, taker_buy_quote_volume)
VALUES ('spot', 'FEATUSDT', '2024-02-02 02:09', '2024-02-02 02:09:59.999', 115.85, 115.9, 115.7,
        115.8, 2, 231.6, 5, 1, 115.8);
UPDATE market.settings SET live_features = true;
INSERT INTO market.candles_1m (market, symbol, open_time, close_time, open, high, low, close,
                               volume, quote_volume, trades, taker_buy_volume, taker_buy_quote_volume)
VALUES ('spot', 'FEATUSDT', '2024-02-02 02:10', '2024-02-02 02:10:59.999', 115.8, 115.95, 115.7,
        115.9, 2, 231.8, 5, 1, 115.9);
SELECT (SELECT f::text FROM market.features f WHERE symbol = 'FEATUSDT')
     = (SELECT r::text FROM market.features_range(NULL, ARRAY['FEATUSDT'], '2024-02-02 02:10', '2024-02-02 02:10') r)
       AS live_equals_offline_after_features_came_back;

-- 7. ta.features over your own candles (from the first row) and ta.feature_json
SELECT open_time, round((f).ret_5m::numeric, 12) AS ret_5m, round((f).bb_pct_b::numeric, 9) AS bb_pct_b
  FROM (SELECT open_time, ta.features(market, symbol, open_time, close_time, open, high, low, close,
                                      volume, quote_volume, taker_buy_volume, NULL, NULL, NULL)
                            OVER (PARTITION BY market, symbol ORDER BY open_time) AS f
          FROM market.candles_1m WHERE symbol = 'FEATUSDT') s
 WHERE open_time IN ('2024-02-01 00:19', '2024-02-01 00:20') ORDER BY 1;
SELECT left(ta.feature_json(f), 120) AS json_head
  FROM market.features_range(NULL, ARRAY['FEATUSDT'], '2024-02-01 00:19', '2024-02-01 00:19') f;

-- 8. Training sets: market.feature_vectors = features_range with the columns packed by
--    ta.feature_bytes (42 little-endian doubles, NULL as NaN); ret_1m's 8 bytes are its
--    float8send bytes reversed; the warm-up row's ret_1d is NaN
SELECT count(*) AS vector_rows,
       count(*) FILTER (WHERE v.features IS DISTINCT FROM ta.feature_bytes(f)) AS differ,
       min(length(v.features)) AS min_bytes, max(length(v.features)) AS max_bytes
  FROM market.features_range(NULL, ARRAY['FEATUSDT'], '2024-02-01 23:00', '2024-02-02 02:10') f
  FULL JOIN market.feature_vectors(NULL, ARRAY['FEATUSDT'], '2024-02-01 23:00', '2024-02-02 02:10') v
    USING (market, symbol, open_time);
SELECT (SELECT string_agg(lpad(to_hex(get_byte(ta.feature_bytes(f), 7 - k)), 2, '0'), '' ORDER BY k)
          FROM generate_series(0, 7) k) = encode(float8send(f.ret_1m), 'hex') AS ret_1m_bytes,
       f.ret_1d IS NULL AS ret_1d_null,
       encode(substring(ta.feature_bytes(f) FROM 41 FOR 8), 'hex') AS ret_1d_bytes
  FROM market.features_range(NULL, ARRAY['FEATUSDT'], '2024-02-01 00:19', '2024-02-01 00:19') f;
SELECT count(*) FROM market.feature_vectors(NULL, NULL, '2024-02-02', '2024-02-01');

-- 9. NOTIFY ta_features payloads (ta.feature_payloads): the rows in order, as many per payload
--    as fit under PostgreSQL's 8000 bytes, each vector = ta.feature_bytes in base64; NULL
--    elements and rows without open_time skipped; a row too large alone is skipped with a
--    WARNING and the rest still go out
WITH r AS (SELECT array_agg(f ORDER BY open_time) AS a
             FROM market.features_range(NULL, ARRAY['FEATUSDT'], '2024-02-01 23:00', '2024-02-02 02:10') f),
e AS (SELECT row_number() OVER (ORDER BY p.n, x.o) AS i, p.n, octet_length(p.t) AS len,
             (p.t::jsonb ->> 'version')::int AS version, x.v
        FROM r, unnest(ta.feature_payloads(r.a)) WITH ORDINALITY p(t, n),
             jsonb_array_elements(p.t::jsonb -> 'rows') WITH ORDINALITY x(v, o))
SELECT count(DISTINCT e.n) AS payloads, max(e.len) < 8000 AS all_fit, min(e.version) AS version,
       count(*) AS payload_rows, cardinality(r.a) AS rows,
       count(*) FILTER (WHERE decode(e.v ->> 'features', 'base64') IS DISTINCT FROM ta.feature_bytes(r.a[e.i])
                           OR e.v ->> 'market' IS DISTINCT FROM (r.a[e.i]).market
                           OR e.v ->> 'symbol' IS DISTINCT FROM (r.a[e.i]).symbol
                           OR (e.v ->> 'open_time')::timestamptz IS DISTINCT FROM (r.a[e.i]).open_time) AS differ
  FROM e, r GROUP BY r.a;
WITH f AS (SELECT f FROM market.features_range(NULL, ARRAY['FEATUSDT'], '2024-02-01 00:19', '2024-02-01 00:19') f)
SELECT cardinality(ta.feature_payloads(ARRAY[NULL, jsonb_populate_record(f, '{"open_time": null}')]::ta.feature_row[])) AS skipped,
       ta.feature_payloads('{}') AS none, ta.feature_payloads(NULL) IS NULL AS null_in_null_out,
       (SELECT array_agg(x ->> 'symbol') FROM unnest(ta.feature_payloads(ARRAY[f, jsonb_populate_record(f, jsonb_build_object('symbol', repeat('X', 7600))), f])) p,
                                             jsonb_array_elements(p::jsonb -> 'rows') x) AS sent
  FROM f;

DELETE FROM market.candles_1m WHERE symbol = 'FEATUSDT';
DELETE FROM market.book_tickers WHERE symbol = 'FEATUSDT';
DELETE FROM market.alert_history WHERE symbol = 'FEATUSDT';
SELECT count(*) AS frozen_left FROM market.book_1m_frozen WHERE symbol = 'FEATUSDT';
