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
--
-- Times: transact_time = T (ms from the API, µs in spot dumps from 2025); book tickers'
-- event_time = E on USD-M.  Spot bookTicker messages carry no time at all: there event_time
-- is the time ta-feed received the update (its own clock, not the exchange's), and
-- transaction_time is NULL.
--
-- Retention: market.settings.agg_trades_retention (default 7 days) and
-- book_tickers_retention (default 2 days), in tick time (the newest stored tick of the
-- table, at most 2 minutes ahead of the server clock), whole hours; applied by
-- market.apply_tick_retention(), which market.apply_retention() calls.  TimescaleDB: both
-- tables are hypertables of 1-hour chunks with a columnstore (compression) policy after
-- settings.ticks_compress_after (default 6 hours), segment by (market, symbol), order by the
-- exchange id (market._apply_tick_policies(), called by market._apply_policies()).

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
    CONSTRAINT agg_trades_symbol_check CHECK (symbol ~ '^[A-Z0-9][A-Z0-9_]*$' AND length(symbol) <= 40),
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
    CONSTRAINT book_tickers_symbol_check CHECK (symbol ~ '^[A-Z0-9][A-Z0-9_]*$' AND length(symbol) <= 40),
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

-- Times inside [2010, 2100): a ms/µs mix-up (1970, or the year 50000) is refused.  Constants,
-- so the constraint is immutable (dump and restore keep it valid).
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                  WHERE conrelid = 'market.agg_trades'::regclass
                    AND conname = 'agg_trades_time_check') THEN
    ALTER TABLE market.agg_trades ADD CONSTRAINT agg_trades_time_check
      CHECK (transact_time >= timestamptz '2010-01-01 00:00:00+00'
             AND transact_time < timestamptz '2100-01-01 00:00:00+00');
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                  WHERE conrelid = 'market.book_tickers'::regclass
                    AND conname = 'book_tickers_time_check') THEN
    ALTER TABLE market.book_tickers ADD CONSTRAINT book_tickers_time_check
      CHECK (event_time >= timestamptz '2010-01-01 00:00:00+00'
             AND event_time < timestamptz '2100-01-01 00:00:00+00'
             AND (transaction_time IS NULL
                  OR (transaction_time >= timestamptz '2010-01-01 00:00:00+00'
                      AND transaction_time < timestamptz '2100-01-01 00:00:00+00')));
  END IF;
END
$$;
COMMENT ON CONSTRAINT agg_trades_time_check ON market.agg_trades IS
  'transact_time in [2010-01-01, 2100-01-01) UTC (refuses ms/us mix-ups)';
COMMENT ON CONSTRAINT book_tickers_time_check ON market.book_tickers IS
  'event_time and transaction_time in [2010-01-01, 2100-01-01) UTC (refuses ms/us mix-ups)';

ALTER TABLE market.settings
  ADD COLUMN IF NOT EXISTS ticks_compress_after interval NOT NULL DEFAULT '6 hours'
      CHECK (ticks_compress_after >= interval '1 hour'),
  ADD COLUMN IF NOT EXISTS agg_trades_retention interval DEFAULT '7 days'
      CHECK (agg_trades_retention IS NULL OR agg_trades_retention >= interval '1 hour'),
  ADD COLUMN IF NOT EXISTS book_tickers_retention interval DEFAULT '2 days'
      CHECK (book_tickers_retention IS NULL OR book_tickers_retention >= interval '1 hour');
COMMENT ON COLUMN market.settings.agg_trades_retention IS
  'Keep aggregate trades this long (default 7 days; NULL keeps everything; at least 1 hour): '
  'whole hours of market.agg_trades older than the newest stored trade minus this are deleted '
  'by market.apply_tick_retention() (called by market.apply_retention()). Ticks are big: about '
  '100 bytes per trade on plain PostgreSQL.';
COMMENT ON COLUMN market.settings.book_tickers_retention IS
  'Keep best bid/ask updates this long (default 2 days; NULL keeps everything; at least 1 '
  'hour): whole hours of market.book_tickers older than the newest stored update minus this '
  'are deleted by market.apply_tick_retention().';
COMMENT ON COLUMN market.settings.ticks_compress_after IS
  'TimescaleDB only (default 6 hours): chunks of agg_trades and book_tickers older than this '
  'are moved to the columnstore (compressed; segment by market, symbol; order by the exchange '
  'id).';

COMMENT ON COLUMN market.data_quality_log.kind IS
  'What happened (see the table comment for klines). Ticks (ta-feed stream --streams ...): '
  'trade_gap (an aggTrade id jump on the live stream: detail first_id, last_id, trigger = jump, '
  'reconnect, restart, overflow, rejected; written with the trade that revealed it), '
  'trade_gap_filled (ids recovered over REST aggTrades?fromId=; rows = trades written), '
  'trade_gap_unfilled (ids REST could not give: delisted, refused, skipped, or more than '
  '--trade-gap-max-ids; detail.reason), book_ticker_gap (no best bid/ask received in '
  '[from_time, to_time]: a disconnect, a restart or a full buffer; detail.reason), '
  'tick_rejected (ticks that failed validation, with samples), tick_overflow (the tick buffer '
  'was full: live ticks refused in [from_time, to_time] wall clock; rows = how many).';

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

-- The newest tick time of a tick table (NULL when empty), found per instrument through the
-- (market, symbol, time) index: a loose scan, no sequential scan of the table.
CREATE OR REPLACE FUNCTION market._newest_tick(p_table regclass) RETURNS timestamptz
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
  v_time name := CASE p_table WHEN 'market.agg_trades'::regclass THEN 'transact_time'
                              WHEN 'market.book_tickers'::regclass THEN 'event_time' END;
  v timestamptz;
BEGIN
  IF v_time IS NULL THEN
    RAISE EXCEPTION 'not a tick table: %', p_table USING ERRCODE = 'invalid_parameter_value';
  END IF;
  EXECUTE format(
    'WITH RECURSIVE inst AS ( '
    '  (SELECT market, symbol FROM %1$s ORDER BY market, symbol LIMIT 1) '
    '  UNION ALL '
    '  SELECT n.market, n.symbol FROM inst i, LATERAL ( '
    '    SELECT t.market, t.symbol FROM %1$s t WHERE (t.market, t.symbol) > (i.market, i.symbol) '
    '     ORDER BY t.market, t.symbol LIMIT 1) n) '
    'SELECT max((SELECT max(t.%2$I) FROM %1$s t '
    '             WHERE t.market = i.market AND t.symbol = i.symbol)) FROM inst i',
    p_table, v_time) INTO v;
  RETURN v;
END
$$;
COMMENT ON FUNCTION market._newest_tick(regclass) IS
  'Internal: the newest transact_time of market.agg_trades or event_time of market.book_tickers '
  '(NULL when empty), by a loose index scan over the instruments.';

-- Retention of the tick tables in tick time (their own newest row = now, at most 2 minutes
-- ahead of the server clock, as candles: market.retention_cutoffs()), whole hours: TimescaleDB drop_chunks of the 1-hour chunks, plain
-- PostgreSQL DELETE per instrument.  NULL retention, or an empty table, deletes nothing.
CREATE OR REPLACE FUNCTION market.apply_tick_retention(OUT agg_trades_cutoff timestamptz,
                                                       OUT agg_trades_deleted bigint,
                                                       OUT book_tickers_cutoff timestamptz,
                                                       OUT book_tickers_deleted bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
  s market.settings;
  v_ts name := market._timescaledb_schema();
  t record;
  i record;
  v_newest timestamptz;
  v_cutoff timestamptz;
  v_n bigint;
  v_total bigint;
  v_try integer;
BEGIN
  SELECT * INTO s FROM market.settings;
  agg_trades_deleted := 0;
  book_tickers_deleted := 0;
  FOR t IN SELECT * FROM (VALUES
      ('market.agg_trades'::regclass, 'transact_time', s.agg_trades_retention),
      ('market.book_tickers'::regclass, 'event_time', s.book_tickers_retention))
      AS x(tab, tcol, keep) LOOP
    CONTINUE WHEN t.keep IS NULL;
    v_newest := market._newest_tick(t.tab);
    CONTINUE WHEN v_newest IS NULL;
    v_cutoff := date_bin('1 hour', least(v_newest, now() + interval '2 minutes') - t.keep,
                         timestamptz '2000-01-01 00:00:00+00');
    v_total := 0;
    IF v_ts IS NOT NULL THEN
      -- the columnstore job can deadlock with drop_chunks on the same chunks: the loser
      -- retries (the count sits in the same subtransaction, so its locks go too)
      FOR v_try IN 1..10 LOOP
        BEGIN
          EXECUTE format('SELECT count(*) FROM %s WHERE %I < $1', t.tab, t.tcol)
            INTO v_total USING v_cutoff;
          EXECUTE format('SELECT count(*) FROM %I.drop_chunks(%L::regclass, older_than => %L::timestamptz)',
                         v_ts, t.tab, v_cutoff);
          EXIT;
        EXCEPTION WHEN deadlock_detected OR lock_not_available THEN
          IF v_try = 10 THEN
            RAISE;
          END IF;
          PERFORM pg_sleep(0.2 * v_try);
        END;
      END LOOP;
    ELSE
      FOR i IN EXECUTE format(
          'WITH RECURSIVE inst AS ( '
          '  (SELECT market, symbol FROM %1$s ORDER BY market, symbol LIMIT 1) '
          '  UNION ALL '
          '  SELECT n.market, n.symbol FROM inst i, LATERAL ( '
          '    SELECT t.market, t.symbol FROM %1$s t WHERE (t.market, t.symbol) > (i.market, i.symbol) '
          '     ORDER BY t.market, t.symbol LIMIT 1) n) '
          'SELECT market, symbol FROM inst', t.tab) LOOP
        EXECUTE format('DELETE FROM %s WHERE market = $1 AND symbol = $2 AND %I < $3',
                       t.tab, t.tcol) USING i.market, i.symbol, v_cutoff;
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_total := v_total + v_n;
      END LOOP;
    END IF;
    IF t.tab = 'market.agg_trades'::regclass THEN
      agg_trades_cutoff := v_cutoff;
      agg_trades_deleted := v_total;
    ELSE
      book_tickers_cutoff := v_cutoff;
      book_tickers_deleted := v_total;
    END IF;
  END LOOP;
END
$$;
COMMENT ON FUNCTION market.apply_tick_retention() IS
  'Apply market.settings.agg_trades_retention and book_tickers_retention in tick time (the '
  'newest stored row of each table = now, at most 2 minutes ahead of the server clock): whole '
  'hours older than now minus the retention are deleted (TimescaleDB drop_chunks of the 1-hour '
  'chunks, else DELETE per instrument); NULL retention or an empty table deletes nothing. '
  'Returns each table''s cutoff and deleted count. Called by market.apply_retention(); '
  'SECURITY DEFINER (the settings decide what goes), so ta_writer may run it.';

-- TimescaleDB: columnstore (compression) of the tick hypertables, segment by instrument, order
-- by the exchange id, after settings.ticks_compress_after.  TimescaleDB 2.18+ spelling
-- (enable_columnstore, add_columnstore_policy: documented in 2.29, present in 2.28).
CREATE OR REPLACE FUNCTION market._apply_tick_policies() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
  v_ts name := market._timescaledb_schema();
  v_after interval := (SELECT ticks_compress_after FROM market.settings);
  t record;
BEGIN
  IF v_ts IS NULL THEN
    RETURN;
  END IF;
  FOR t IN SELECT * FROM (VALUES ('agg_trades', 'agg_trade_id'), ('book_tickers', 'update_id'))
             AS x(tab, id) LOOP
    IF NOT EXISTS (SELECT 1 FROM timescaledb_information.hypertable_columnstore_settings c
                    WHERE c.hypertable = format('market.%I', t.tab)::regclass
                      AND c.segmentby IS NOT NULL AND c.segmentby LIKE '%market%symbol%'
                      AND c.orderby IS NOT NULL AND c.orderby LIKE '%' || t.id || '%') THEN
      EXECUTE format('ALTER TABLE market.%I SET (timescaledb.enable_columnstore = true, '
                     'timescaledb.segmentby = %L, timescaledb.orderby = %L)',
                     t.tab, 'market, symbol', t.id);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM timescaledb_information.jobs j
                    WHERE j.proc_name = 'policy_compression' AND j.hypertable_schema = 'market'
                      AND j.hypertable_name = t.tab
                      AND j.config->>'compress_after' = v_after::text) THEN
      EXECUTE format('CALL %I.remove_columnstore_policy(%L::regclass, if_exists => true)',
                     v_ts, 'market.' || t.tab);
      EXECUTE format('CALL %I.add_columnstore_policy(%L::regclass, after => %L::interval)',
                     v_ts, 'market.' || t.tab, v_after);
    END IF;
  END LOOP;
END
$$;
COMMENT ON FUNCTION market._apply_tick_policies() IS
  'Internal: TimescaleDB only: columnstore settings (segmentby market, symbol; orderby the '
  'exchange id) and policy (after settings.ticks_compress_after) of market.agg_trades and '
  'market.book_tickers. Called by market._apply_policies() (migration, settings changes).';

DO $$ BEGIN PERFORM market._apply_tick_policies(); END $$;
