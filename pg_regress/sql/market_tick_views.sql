-- Trades and book tickers in the data schema: market.trade_candles_1m (klines built from the
-- trades), market.book_1m (book features per minute), market.kline_trade_diffs (where
-- trade-built candles and stored klines differ).  Plain PostgreSQL: views; TimescaleDB:
-- continuous aggregates with the same rows (tests/timescaledb).
SET client_min_messages = warning;
SET TIME ZONE 'UTC';

-- two minutes of aggregate trades of TICKUSDT (spot), and three stored klines
INSERT INTO market.agg_trades (market, symbol, agg_trade_id, price, quantity, first_trade_id,
                               last_trade_id, transact_time, is_buyer_maker)
VALUES ('spot', 'TICKUSDT', 11, 10.00, 1.5, 100, 100, '2024-05-01 12:00:03', false),
       ('spot', 'TICKUSDT', 12, 10.20, 0.5, 101, 103, '2024-05-01 12:00:30', true),
       ('spot', 'TICKUSDT', 13, 10.10, 2.0, 104, 104, '2024-05-01 12:00:59.999', false),
       ('spot', 'TICKUSDT', 14, 10.05, 1.0, 105, 106, '2024-05-01 12:01:10', true),
       ('spot', 'TICKUSDT', 15, 10.15, 1.0, 107, 107, '2024-05-01 12:03:00', false);

-- 1. the candles built from the trades: the columns of market.candles_1m
SELECT market, symbol, open_time, close_time, open, high, low, close, volume, quote_volume,
       trades, taker_buy_volume, taker_buy_quote_volume
  FROM market.trade_candles_1m WHERE symbol = 'TICKUSDT' ORDER BY open_time;
SELECT (SELECT array_agg(attname::text || ':' || format_type(atttypid, atttypmod) ORDER BY attnum)
          FROM pg_attribute WHERE attrelid = 'market.candles_1m'::regclass AND attnum > 0 AND NOT attisdropped)
     = (SELECT array_agg(attname::text || ':' || format_type(atttypid, atttypmod) ORDER BY attnum)
          FROM pg_attribute WHERE attrelid = 'market.trade_candles_1m'::regclass AND attnum > 0)
       AS same_columns_as_candles_1m;

-- 2. stored klines: 12:00 agrees (1.0 = 1.00: numerics compare by value); 12:01 has a
--    different volume and taker volume; 12:02 counts 3 trades but none are stored (a hole);
--    12:03 has trades but no kline
INSERT INTO market.candles_1m (market, symbol, open_time, close_time, open, high, low, close,
                               volume, quote_volume, trades, taker_buy_volume, taker_buy_quote_volume)
VALUES ('spot', 'TICKUSDT', '2024-05-01 12:00', '2024-05-01 12:00:59.999', 10.00, 10.20, 10.00,
        10.10, 4.00, 40.300, 5, 3.5, 35.200),
       ('spot', 'TICKUSDT', '2024-05-01 12:01', '2024-05-01 12:01:59.999', 10.05, 10.05, 10.05,
        10.05, 1.5, 10.05, 2, 0.5, 0),
       ('spot', 'TICKUSDT', '2024-05-01 12:02', '2024-05-01 12:02:59.999', 10.05, 10.05, 10.05,
        10.05, 0.3, 3.015, 3, 0, 0);
SELECT market, symbol, open_time, differs FROM market.kline_trade_diffs
 WHERE symbol = 'TICKUSDT' ORDER BY open_time;

-- 3. book features per minute: two quotes in 12:00, one in 12:02
INSERT INTO market.book_tickers (market, symbol, update_id, best_bid_price, best_bid_qty,
                                 best_ask_price, best_ask_qty, event_time)
VALUES ('spot', 'TICKUSDT', 500, 10.00, 4, 10.02, 1, '2024-05-01 12:00:00'),
       ('spot', 'TICKUSDT', 501, 10.01, 1, 10.02, 1, '2024-05-01 12:00:30'),
       ('spot', 'TICKUSDT', 502, 10.03, 2, 10.05, 6, '2024-05-01 12:02:15');
SELECT market, symbol, open_time, round(imbalance::numeric, 6) AS imbalance,
       round(spread_bps::numeric, 6) AS spread_bps, round(spread_bps_last::numeric, 6) AS spread_bps_last,
       round(weighted_mid::numeric, 6) AS weighted_mid, mid,
       round(weighted_mid_offset_bps::numeric, 6) AS weighted_mid_offset_bps, updates
  FROM market.book_1m WHERE symbol = 'TICKUSDT' ORDER BY open_time;

DELETE FROM market.candles_1m WHERE symbol = 'TICKUSDT';
DELETE FROM market.agg_trades WHERE symbol = 'TICKUSDT';
DELETE FROM market.book_tickers WHERE symbol = 'TICKUSDT';
DELETE FROM market.book_1m_frozen WHERE symbol = 'TICKUSDT';
