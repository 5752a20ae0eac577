-- Tick tables (sql/013_ticks.sql): market.agg_trades and market.book_tickers.  Their CHECK
-- constraints refuse what no reader can use, writes are idempotent (INSERT ... ON CONFLICT DO
-- NOTHING, without a conflict target, as ta-feed writes them), and retention applies
-- market.settings in tick time (the newest stored row of each table), whole hours.
SET client_min_messages = warning;
SET TIME ZONE 'UTC';

-- two real aggTrades of the coin-M dump (BTCUSD_PERP 2026-05-08) and one of the spot XRPETH
-- dump (with is_best_match), as ta-feed stores them
INSERT INTO market.agg_trades VALUES
  ('usdm', 'BTCUSD_PERP', 480537903, 79972.8, 542.0, 1123474160, 1123474164, '2026-05-08 00:00:00.020', false, NULL),
  ('usdm', 'BTCUSD_PERP', 480537904, 79972.9, 1.0, 1123474165, 1123474165, '2026-05-08 00:00:00.024', false, NULL),
  ('spot', 'XRPETH', 13519807, 0.00141342, 23.00000000, 15373518, 15373518, '2019-10-11 00:00:11.620', true, true);
-- idempotent: the same rows again (a rotation overlap, a replay, a REST fill) insert nothing
INSERT INTO market.agg_trades VALUES
  ('usdm', 'BTCUSD_PERP', 480537903, 79972.8, 542.0, 1123474160, 1123474164, '2026-05-08 00:00:00.020', false, NULL),
  ('usdm', 'BTCUSD_PERP', 480537905, 79973.0, 2.0, 1123474166, 1123474167, '2026-05-08 00:00:00.030', true, NULL)
ON CONFLICT DO NOTHING;
-- the same id in the other market is another instrument
INSERT INTO market.agg_trades VALUES
  ('spot', 'BTCUSD_PERP', 480537903, 1, 1, 1, 1, '2026-05-08 00:00:00.020', false, false)
ON CONFLICT DO NOTHING;
SELECT market, symbol, agg_trade_id, price, quantity, last_trade_id - first_trade_id + 1 AS trades,
       transact_time, is_buyer_maker, is_best_match
  FROM market.agg_trades ORDER BY market, symbol, agg_trade_id;
-- decimals are kept as printed (scale included)
SELECT price::text, quantity::text FROM market.agg_trades
 WHERE symbol = 'XRPETH' AND agg_trade_id = 13519807;

-- refused, each naming its constraint (23514)
\set VERBOSITY terse
INSERT INTO market.agg_trades VALUES ('coinm', 'BTCUSD_PERP', 1, 1, 1, 1, 1, '2026-05-08', false, NULL);
INSERT INTO market.agg_trades VALUES ('usdm', 'btcusdt', 1, 1, 1, 1, 1, '2026-05-08', false, NULL);
INSERT INTO market.agg_trades VALUES ('usdm', 'BTCUSDT', 1, 0, 1, 1, 1, '2026-05-08', false, NULL);
INSERT INTO market.agg_trades VALUES ('usdm', 'BTCUSDT', 1, 1, -1, 1, 1, '2026-05-08', false, NULL);
INSERT INTO market.agg_trades VALUES ('usdm', 'BTCUSDT', 1, 1, 0, 1, 1, '2026-05-08', false, NULL);
INSERT INTO market.agg_trades VALUES ('usdm', 'BTCUSDT', 1, 'NaN', 1, 1, 1, '2026-05-08', false, NULL);
INSERT INTO market.agg_trades VALUES ('usdm', 'BTCUSDT', 1, 123456789012345678901234567890, 1, 1, 1, '2026-05-08', false, NULL);
INSERT INTO market.agg_trades VALUES ('usdm', 'BTCUSDT', 1, 0.123456789012345678901234567890, 1, 1, 1, '2026-05-08', false, NULL);
INSERT INTO market.agg_trades VALUES ('usdm', 'BTCUSDT', 1, 1, 1, 5, 4, '2026-05-08', false, NULL);
INSERT INTO market.agg_trades VALUES ('usdm', 'BTCUSDT', -1, 1, 1, 1, 1, '2026-05-08', false, NULL);
-- a ms/us mix-up: 1970 (ms read as us) and the year 3026 (ms read as 10 x ms)
INSERT INTO market.agg_trades VALUES ('usdm', 'BTCUSDT', 1, 1, 1, 1, 1, to_timestamp(1778198400020 / 1e6), false, NULL);
INSERT INTO market.agg_trades VALUES ('usdm', 'BTCUSDT', 1, 1, 1, 1, 1, '2026-05-08'::timestamptz + interval '1000 years', false, NULL);
\set VERBOSITY default

-- book tickers: a USD-M update (T, E) and a spot one (no exchange time: the receive time)
INSERT INTO market.book_tickers VALUES
  ('usdm', 'SUSHIUSDT', 600859600576, 7.6110, 2, 7.6120, 297, '2021-07-22 22:25:41.012', '2021-07-22 22:25:41.017'),
  ('spot', 'NKNUSDT', 499869768, 0.35210000, 672.00000000, 0.35260000, 3199.00000000, NULL, '2021-10-12 00:28:33.100');
INSERT INTO market.book_tickers VALUES
  ('usdm', 'SUSHIUSDT', 600859600576, 7.6110, 2, 7.6120, 297, '2021-07-22 22:25:41.012', '2021-07-22 22:25:41.017')
ON CONFLICT DO NOTHING;
-- an empty side (quantity 0) is a valid state
INSERT INTO market.book_tickers VALUES
  ('usdm', 'SUSHIUSDT', 600859600577, 7.6110, 0, 7.6120, 297, '2021-07-22 22:25:41.100', '2021-07-22 22:25:41.105');
SELECT market, symbol, update_id, best_bid_price, best_bid_qty, best_ask_price, best_ask_qty,
       transaction_time, event_time
  FROM market.book_tickers ORDER BY market, symbol, update_id;
\set VERBOSITY terse
-- bid > ask, bid = ask (a crossed or locked book), a zero price, a negative quantity
INSERT INTO market.book_tickers VALUES ('usdm', 'SUSHIUSDT', 1, 7.7, 1, 7.6, 1, NULL, '2021-07-22');
INSERT INTO market.book_tickers VALUES ('usdm', 'SUSHIUSDT', 1, 7.6, 1, 7.6, 1, NULL, '2021-07-22');
INSERT INTO market.book_tickers VALUES ('usdm', 'SUSHIUSDT', 1, 0, 1, 7.6, 1, NULL, '2021-07-22');
INSERT INTO market.book_tickers VALUES ('usdm', 'SUSHIUSDT', 1, 7.5, -1, 7.6, 1, NULL, '2021-07-22');
INSERT INTO market.book_tickers VALUES ('usdm', 'SUSHIUSDT', 1, 7.5, 1, 7.6, 1, '1970-01-21', '2021-07-22');
\set VERBOSITY default

-- retention: defaults 7 days (trades) and 2 days (book tickers); an hour at least
DELETE FROM market.agg_trades;
DELETE FROM market.book_tickers;
SELECT agg_trades_retention, book_tickers_retention, ticks_compress_after FROM market.settings;
\set VERBOSITY terse
UPDATE market.settings SET agg_trades_retention = '10 minutes';
\set VERBOSITY default
-- empty tables: no tick time, nothing is old
SELECT * FROM market.apply_tick_retention();
-- 3 days of one trade per hour for one instrument (newest 2026-05-10 23:00), one trade of
-- 2019 for another, and book tickers every 6 hours of 2021-07-20 .. 22
INSERT INTO market.agg_trades
SELECT 'usdm', 'RETNUSDT', n, 100, 1, n, n, timestamptz '2026-05-08' + n * interval '1 hour', false, NULL
  FROM generate_series(0, 71) n;
INSERT INTO market.agg_trades VALUES
  ('spot', 'XRPETH', 13519807, 0.00141342, 23.00000000, 15373518, 15373518, '2019-10-11 00:00:11.620', true, true);
INSERT INTO market.book_tickers
SELECT 'usdm', 'SUSHIUSDT', n, 7.6110, 2, 7.6120, 297, NULL,
       timestamptz '2021-07-20 00:30' + n * interval '6 hours'
  FROM generate_series(0, 11) n;
-- each table counts from its own newest row, whole hours: trades 2026-05-10 23:00 - 7 days
-- (the 2019 trade goes), book tickers 2021-07-22 18:30 - 2 days = 2021-07-20 18:00 (3 go)
SELECT agg_trades_cutoff, agg_trades_deleted, book_tickers_cutoff, book_tickers_deleted
  FROM market.apply_tick_retention();
SELECT market, symbol, count(*) FROM market.agg_trades GROUP BY 1, 2 ORDER BY 1, 2;
SELECT min(event_time), count(*) FROM market.book_tickers;
UPDATE market.settings SET agg_trades_retention = '1 day';
-- 2026-05-10 23:00 - 1 day = 2026-05-09 23:00: 47 of the 72 hours go
SELECT agg_trades_cutoff, agg_trades_deleted FROM market.apply_tick_retention();
SELECT min(transact_time), max(transact_time), count(*) FROM market.agg_trades WHERE symbol = 'RETNUSDT';
-- market.apply_retention() applies it too (idempotent: nothing more to delete)
SELECT count(*) FROM market.apply_retention();
SELECT count(*) FROM market.agg_trades WHERE symbol = 'RETNUSDT';
-- NULL keeps everything
UPDATE market.settings SET agg_trades_retention = NULL, book_tickers_retention = NULL;
SELECT agg_trades_cutoff IS NULL AS keeps, agg_trades_deleted FROM market.apply_tick_retention();
-- a writer's trade dated 2099: "now" stays at most 2 minutes ahead of the server clock, so the
-- cutoff is never in the future (older rows are then judged against the server clock)
UPDATE market.settings SET agg_trades_retention = '1 day';
INSERT INTO market.agg_trades VALUES ('usdm', 'FUTRUSDT', 1, 1, 1, 1, 1, '2099-01-01', false, NULL);
SELECT agg_trades_cutoff <= now() AS cutoff_not_in_the_future FROM market.apply_tick_retention();
SELECT count(*) AS future_trade_kept FROM market.agg_trades WHERE symbol = 'FUTRUSDT';
DELETE FROM market.agg_trades;
DELETE FROM market.book_tickers;
UPDATE market.settings SET agg_trades_retention = '7 days', book_tickers_retention = '2 days';

-- roles: a writer inserts ticks and runs the retention, a reader reads
SELECT has_table_privilege('ta_writer', 'market.agg_trades', 'INSERT') AS writer_inserts_trades,
       has_table_privilege('ta_writer', 'market.book_tickers', 'INSERT') AS writer_inserts_books,
       has_table_privilege('ta_writer', 'market.agg_trades', 'UPDATE') AS writer_updates,
       has_table_privilege('ta_reader', 'market.agg_trades', 'SELECT') AS reader_reads,
       has_table_privilege('ta_reader', 'market.book_tickers', 'INSERT') AS reader_inserts,
       has_function_privilege('ta_writer', 'market.apply_tick_retention()', 'EXECUTE') AS writer_retention;
SET ROLE ta_writer;
INSERT INTO market.agg_trades VALUES ('usdm', 'ROLEUSDT', 1, 1, 1, 1, 1, '2026-05-08', false, NULL)
ON CONFLICT DO NOTHING;
RESET ROLE;
DELETE FROM market.agg_trades WHERE symbol = 'ROLEUSDT';
