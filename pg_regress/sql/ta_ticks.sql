-- ta.kline, ta.trade_features, ta.book_features: the tick aggregates, worked examples.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_ta;
SET TIME ZONE 'UTC';

-- Five aggregate trades of one minute (Binance aggTrade fields a, p, q, f, l, T, m) and one of
-- the next minute.  m = true: the buyer was the maker, so the taker sold.
CREATE TEMP TABLE t (agg_trade_id bigint, price numeric, quantity numeric, first_trade_id bigint,
                     last_trade_id bigint, transact_time timestamptz, is_buyer_maker boolean);
INSERT INTO t VALUES
  (101, 100.10, 0.500, 1001, 1002, '2024-01-01 00:00:01.250', false),
  (102, 100.30, 0.250, 1003, 1003, '2024-01-01 00:00:07.000', true),
  (103,  99.90, 1.000, 1004, 1006, '2024-01-01 00:00:21.500', true),
  (104, 100.40, 0.125, 1007, 1007, '2024-01-01 00:00:40.000', false),
  (105, 100.20, 2.000, 1008, 1010, '2024-01-01 00:00:59.999', false),
  (106, 100.25, 1.000, 1011, 1011, '2024-01-01 00:01:00.000', false);

-- 1. The kline of each minute: open/close = price of the lowest/highest agg_trade_id,
--    volume = sum(q), quote_volume = sum(p*q) (exact), trades = sum(l - f + 1), taker-buy
--    sums over m = false.  Minute 00:00: volume 3.875, quote_volume 387.975, 10 trades.
SELECT date_bin('1 minute', transact_time, '2000-01-01') AS open_time, (k).*
  FROM (SELECT transact_time, ta.kline(agg_trade_id, price, quantity, first_trade_id,
                                       last_trade_id, is_buyer_maker) OVER w AS k
          FROM t WINDOW w AS (PARTITION BY date_bin('1 minute', transact_time, '2000-01-01')
                              ORDER BY agg_trade_id ROWS BETWEEN UNBOUNDED PRECEDING
                                                    AND UNBOUNDED FOLLOWING)) s
 WHERE transact_time IN ('2024-01-01 00:00:59.999', '2024-01-01 00:01:00')
 ORDER BY 1;

-- 2. By hand with built-ins: the same fields (order-independent: any row order, any split)
SELECT (ta.kline(agg_trade_id, price, quantity, first_trade_id, last_trade_id, is_buyer_maker
                 ORDER BY random()))::text
     = ROW((SELECT price FROM t WHERE agg_trade_id = 101), max(price), min(price),
           (SELECT price FROM t WHERE agg_trade_id = 105), sum(quantity), sum(price * quantity),
           sum(last_trade_id - first_trade_id + 1),
           sum(quantity) FILTER (WHERE NOT is_buyer_maker),
           sum(price * quantity) FILTER (WHERE NOT is_buyer_maker),
           min(first_trade_id), max(last_trade_id), 101, 105)::ta.kline::text AS same_as_sums
  FROM t WHERE transact_time < '2024-01-01 00:01';

-- 3. Running kline OVER (ORDER BY agg_trade_id): the candle so far, trade by trade
SELECT agg_trade_id, (k).open, (k).high, (k).low, (k).close, (k).volume, (k).trades
  FROM (SELECT agg_trade_id, ta.kline(agg_trade_id, price, quantity, first_trade_id,
                                      last_trade_id, is_buyer_maker) OVER (ORDER BY agg_trade_id) AS k
          FROM t) s ORDER BY 1;

-- 4. Trade-side features of the minute (vwap = quote/volume, taker-buy ratio, signed volume
--    = taker buys - taker sells), and the same from a stored kline's fields
SELECT (ta.trade_features(agg_trade_id, price, quantity, first_trade_id, last_trade_id,
                          is_buyer_maker)).*
  FROM t WHERE transact_time < '2024-01-01 00:01';
SELECT (ta.trade_features((k).volume, (k).quote_volume, (k).trades, (k).taker_buy_volume)).*
  FROM (SELECT ta.kline(agg_trade_id, price, quantity, first_trade_id, last_trade_id,
                        is_buyer_maker) AS k FROM t WHERE transact_time < '2024-01-01 00:01') s;

-- 5. NULL rules: a row with a NULL argument is skipped; no rows give NULL; zero volume gives
--    NULL ratios (never NaN)
SELECT (ta.kline(a, p, q, f, l, m)).trades AS trades_without_the_null_row
  FROM (VALUES (1, 10::numeric, 1::numeric, 1, 1, false), (2, NULL, 1, 2, 2, false),
               (3, 11, 1, 3, 3, NULL)) v(a, p, q, f, l, m);
SELECT ta.kline(agg_trade_id, price, quantity, first_trade_id, last_trade_id, is_buyer_maker)
       IS NULL AS no_rows FROM t WHERE false;
SELECT (ta.trade_features(0, 0, 0, 0)).*;

-- 6. Errors (SQLSTATE 22023)
\set VERBOSITY terse
SELECT ta.kline(1, 'NaN', 1, 1, 1, true);
SELECT ta.kline(1, 1, 1, 5, 4, true);
\set VERBOSITY default

-- 7. Book features of a minute: three best bid/ask updates (b, B, a, A).  Each quote stands
--    until the next one, the last until the end of the minute:
--    00:00:00 -> 00:00:15 (15 s): bid 99 x 3, ask 101 x 1: imbalance (3-1)/(3+1) = 0.5, spread 200 bps
--    00:00:15 -> 00:00:45 (30 s): 99.5 x 1 / 100.5 x 1:   imbalance 0,   spread 100 bps
--    00:00:45 -> 00:01:00 (15 s): 99.9 x 1 / 100.1 x 3:   imbalance -0.5, spread 20 bps
--    time-weighted: imbalance (15*0.5 + 30*0 - 15*0.5)/60 = 0, spread (3000+3000+300)/60 = 105;
--    weighted mid of the last quote (a*B + b*A)/(A+B) = (100.1*1 + 99.9*3)/4 = 99.95 (Stoikov),
--    mid 100, offset -5 bps
CREATE TEMP TABLE b (event_time timestamptz, update_id bigint, bid numeric, bid_qty numeric,
                     ask numeric, ask_qty numeric);
INSERT INTO b VALUES ('2024-01-01 00:00:00', 7, 99, 3, 101, 1),
                     ('2024-01-01 00:00:15', 8, 99.5, 1, 100.5, 1),
                     ('2024-01-01 00:00:45', 9, 99.9, 1, 100.1, 3),
                     ('2024-01-01 00:01:30', 10, 100, 2, 100.2, 2);
SELECT open_time, round((f).imbalance::numeric, 9) AS imbalance,
       round((f).spread_bps::numeric, 9) AS spread_bps,
       round((f).spread_bps_last::numeric, 9) AS spread_bps_last,
       round((f).weighted_mid::numeric, 9) AS weighted_mid, (f).mid,
       round((f).weighted_mid_offset_bps::numeric, 9) AS weighted_mid_offset_bps, (f).updates
  FROM (SELECT date_bin('1 minute', event_time, '2000-01-01') AS open_time,
               ta.book_features(event_time, update_id, bid, bid_qty, ask, ask_qty, '1 minute') AS f
          FROM b GROUP BY 1) s ORDER BY 1;
-- any input order gives the same; double precision input too
SELECT (SELECT ta.book_features(event_time, update_id, bid, bid_qty, ask, ask_qty, '1 minute'
                                ORDER BY update_id DESC)::text FROM b WHERE event_time < '2024-01-01 00:01')
     = (SELECT ta.book_features(event_time, update_id, bid::float8, bid_qty::float8, ask::float8,
                                ask_qty::float8, '1 minute')::text FROM b WHERE event_time < '2024-01-01 00:01')
       AS order_and_type_independent;
-- running, OVER (ORDER BY event_time): the minute so far
SELECT event_time, round((f).imbalance::numeric, 6) AS imbalance, round((f).spread_bps::numeric, 6) AS spread_bps, (f).updates
  FROM (SELECT event_time, ta.book_features(event_time, update_id, bid, bid_qty, ask, ask_qty,
                                            '1 minute') OVER (ORDER BY event_time) AS f
          FROM b WHERE event_time < '2024-01-01 00:01') s ORDER BY 1;
\set VERBOSITY terse
SELECT ta.book_features(now(), 1, 0, 1, 1, 1, '1 minute');
SELECT ta.book_features(now(), 1, 1, 1, 2, 1, '1 month');
\set VERBOSITY default
