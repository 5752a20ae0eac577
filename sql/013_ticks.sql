-- 013: tick data: Binance aggregate trades and book tickers (best bid/ask), one row per
-- exchange id.  Opt-in: ta-feed writes them with `stream --streams ...,agg_trade,book_ticker`
-- and `import` of aggTrades / bookTicker dumps; any loader may.
--
-- Column names are Binance's field names spelled out (the dump files' headers):
--   aggTrade   https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams#aggregate-trade-streams
--              https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams/Aggregate-Trade-Streams
--     a agg_trade_id, p price, q quantity, f first_trade_id, l last_trade_id, T transact_time,
--     m is_buyer_maker, M is_best_match (spot only)
--   bookTicker https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams#individual-symbol-book-ticker-streams
--              https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams/Individual-Symbol-Book-Ticker-Streams
--     u update_id, b best_bid_price, B best_bid_qty, a best_ask_price, A best_ask_qty,
--     T transaction_time (USD-M only), E event_time (USD-M; spot sends no time)
--
-- Keys: (market, symbol, agg_trade_id) and (market, symbol, update_id).  TimescaleDB requires
-- the partitioning column in every unique index, so on a hypertable the unique key also holds
-- the time column (an id's time never changes: the same rows are unique).  Writers use
-- INSERT ... ON CONFLICT DO NOTHING without a conflict target, which works with either key.

CREATE TABLE IF NOT EXISTS market.agg_trades (
    market          text COLLATE "C" NOT NULL,
    symbol          text COLLATE "C" NOT NULL,
    agg_trade_id    bigint      NOT NULL,
    price           numeric     NOT NULL,
    quantity        numeric     NOT NULL,
    first_trade_id  bigint      NOT NULL,
    last_trade_id   bigint      NOT NULL,
    transact_time   timestamptz NOT NULL,
    is_buyer_maker  boolean     NOT NULL,
    is_best_match   boolean,
    CONSTRAINT agg_trades_market_check CHECK (market IN ('spot', 'usdm')),
    CONSTRAINT agg_trades_symbol_check CHECK (symbol ~ '^[A-Z0-9][A-Z0-9_]{0,39}$'),
    CONSTRAINT agg_trades_ids_check
      CHECK (agg_trade_id >= 0 AND first_trade_id >= 0 AND first_trade_id <= last_trade_id),
    CONSTRAINT agg_trades_values_check
      CHECK (price > 0 AND price < 1e15 AND quantity > 0 AND quantity < 1e20
             AND scale(price) <= 20 AND scale(quantity) <= 20)
);
COMMENT ON TABLE market.agg_trades IS
  'Binance aggregate trades (aggTrade stream, REST aggTrades, aggTrades dumps), one row per '
  '(market, symbol, agg_trade_id); market = spot or usdm. price in quote units per base unit, '
  'quantity in base units (exact decimals as Binance prints them); transact_time = T (trade '
  'time, ms; µs in spot dumps from 2025); is_buyer_maker = m (true: the taker sold); '
  'is_best_match = M (spot only, NULL on usdm). agg_trade_id is contiguous per instrument, so a '
  'gap is known exactly (ta-feed fills it over REST by id). A hypertable (1-hour chunks, '
  'compressed after market.settings.ticks_compress_after) when TimescaleDB is available.';
COMMENT ON CONSTRAINT agg_trades_market_check ON market.agg_trades IS 'market is spot or usdm';
COMMENT ON CONSTRAINT agg_trades_symbol_check ON market.agg_trades IS
  'symbol: upper-case letters, digits and _, 1 to 40 characters (Binance symbols)';
COMMENT ON CONSTRAINT agg_trades_ids_check ON market.agg_trades IS
  'ids are non-negative and first_trade_id <= last_trade_id';
COMMENT ON CONSTRAINT agg_trades_values_check ON market.agg_trades IS
  'price and quantity finite and positive, below 1e15 / 1e20, at most 20 decimals';

CREATE TABLE IF NOT EXISTS market.book_tickers (
    market            text COLLATE "C" NOT NULL,
    symbol            text COLLATE "C" NOT NULL,
    update_id         bigint      NOT NULL,
    best_bid_price    numeric     NOT NULL,
    best_bid_qty      numeric     NOT NULL,
    best_ask_price    numeric     NOT NULL,
    best_ask_qty      numeric     NOT NULL,
    transaction_time  timestamptz,
    event_time        timestamptz NOT NULL,
    CONSTRAINT book_tickers_market_check CHECK (market IN ('spot', 'usdm')),
    CONSTRAINT book_tickers_symbol_check CHECK (symbol ~ '^[A-Z0-9][A-Z0-9_]{0,39}$'),
    CONSTRAINT book_tickers_values_check
      CHECK (update_id >= 0 AND best_bid_price > 0 AND best_bid_price < best_ask_price
             AND best_ask_price < 1e15 AND best_bid_qty >= 0 AND best_bid_qty < 1e20
             AND best_ask_qty >= 0 AND best_ask_qty < 1e20
             AND scale(best_bid_price) <= 20 AND scale(best_ask_price) <= 20
             AND scale(best_bid_qty) <= 20 AND scale(best_ask_qty) <= 20)
);
COMMENT ON TABLE market.book_tickers IS
  'Binance best bid/ask updates (bookTicker stream, futures bookTicker dumps), one row per '
  '(market, symbol, update_id); prices in quote units, quantities in base units, exact. '
  'event_time = E on usdm; spot bookTicker carries no time, so there it is the time ta-feed '
  'received the update (its clock). transaction_time = T (usdm only). A state stream: there is '
  'no history to fill a gap; ta-feed records disconnects as gaps in market.data_quality_log. A '
  'hypertable (1-hour chunks, compressed after market.settings.ticks_compress_after) when '
  'TimescaleDB is available.';
COMMENT ON CONSTRAINT book_tickers_market_check ON market.book_tickers IS 'market is spot or usdm';
COMMENT ON CONSTRAINT book_tickers_symbol_check ON market.book_tickers IS
  'symbol: upper-case letters, digits and _, 1 to 40 characters (Binance symbols)';
COMMENT ON CONSTRAINT book_tickers_values_check ON market.book_tickers IS
  'prices finite and positive, best_bid_price < best_ask_price, below 1e15; quantities '
  'non-negative, below 1e20; at most 20 decimals';

ALTER TABLE market.settings
  ADD COLUMN IF NOT EXISTS ticks_compress_after interval NOT NULL DEFAULT '6 hours'
      CHECK (ticks_compress_after >= interval '1 hour');
COMMENT ON COLUMN market.settings.ticks_compress_after IS
  'TimescaleDB only (default 6 hours): chunks of agg_trades and book_tickers older than this '
  'are compressed (segment by market, symbol; order by the exchange id).';

-- The key: plain PostgreSQL (market, symbol, id); TimescaleDB (market, symbol, id, time).
DO $$
DECLARE
  t record;
  v_cols text[];
  v_want text[];
BEGIN
  FOR t IN SELECT * FROM (VALUES
    ('agg_trades', 'agg_trade_id', 'transact_time'),
    ('book_tickers', 'update_id', 'event_time')) AS x(tab, id, tcol) LOOP
    v_want := ARRAY['market', 'symbol', t.id]
              || CASE WHEN market.timescaledb_enabled() THEN ARRAY[t.tcol] ELSE '{}' END;
    SELECT pg_catalog.array_agg(a.attname::text ORDER BY k.ord) INTO v_cols
      FROM pg_catalog.pg_constraint c,
           unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord),
           pg_catalog.pg_attribute a
     WHERE c.conrelid = format('market.%I', t.tab)::regclass AND c.contype = 'p'
       AND a.attrelid = c.conrelid AND a.attnum = k.attnum;
    IF v_cols IS DISTINCT FROM v_want THEN
      EXECUTE format('ALTER TABLE market.%I DROP CONSTRAINT IF EXISTS %I', t.tab, t.tab || '_pkey');
      EXECUTE format('ALTER TABLE market.%I ADD CONSTRAINT %I PRIMARY KEY (%s)', t.tab,
                     t.tab || '_pkey', array_to_string(v_want, ', '));
    END IF;
    PERFORM market._create_hypertable(format('market.%I', t.tab)::regclass, t.tcol, '1 hour');
  END LOOP;
END
$$;
-- time-range reads per instrument (minute aggregates, retention, gap checks)
CREATE INDEX IF NOT EXISTS agg_trades_instrument_time_idx
    ON market.agg_trades (market, symbol, transact_time);
CREATE INDEX IF NOT EXISTS book_tickers_instrument_time_idx
    ON market.book_tickers (market, symbol, event_time);
