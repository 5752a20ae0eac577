-- 002: closed 1-minute klines, one row per instrument (market, symbol) and open_time.
--
-- Column names are the domain names of Binance's kline fields
-- (https://developers.binance.com/docs/binance-spot-api-docs/rest-api/market-data-endpoints#klinecandlestick-data,
--  https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/rest-api/Kline-Candlestick-Data):
--   open_time t, close_time T, open o, high h, low l, close c, volume v (base asset),
--   quote_volume q (quote asset, USDT for *USDT pairs), trades n,
--   taker_buy_volume V, taker_buy_quote_volume Q.
-- market is 'spot' or 'usdm' (USD-M futures).  It is the last column so that loaders written
-- for pg_ta 0.1.0 (twelve positional values, spot) keep working: its default is 'spot'.
CREATE TABLE IF NOT EXISTS market.candles_1m (
    symbol                 text COLLATE "C" NOT NULL,
    open_time              timestamptz NOT NULL,
    close_time             timestamptz NOT NULL,
    open                   numeric     NOT NULL,
    high                   numeric     NOT NULL,
    low                    numeric     NOT NULL,
    close                  numeric     NOT NULL,
    volume                 numeric     NOT NULL,
    quote_volume           numeric     NOT NULL,
    trades                 bigint      NOT NULL,
    taker_buy_volume       numeric     NOT NULL,
    taker_buy_quote_volume numeric     NOT NULL,
    market                 text COLLATE "C" NOT NULL DEFAULT 'spot',
    CONSTRAINT candles_1m_pkey PRIMARY KEY (market, symbol, open_time)
);

-- pg_ta 0.1.0 -> 0.2.0: add the market column (existing rows are spot) and re-key.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                  WHERE attrelid = 'market.candles_1m'::regclass AND attname = 'market'
                    AND NOT attisdropped) THEN
    RAISE NOTICE 'pg_ta: adding column market to market.candles_1m (existing rows: spot)';
    ALTER TABLE market.candles_1m ADD COLUMN market text COLLATE "C" NOT NULL DEFAULT 'spot';
  END IF;
  IF (SELECT pg_catalog.array_agg(a.attname::text ORDER BY k.ord)
        FROM pg_catalog.pg_constraint c,
             unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord),
             pg_catalog.pg_attribute a
       WHERE c.conrelid = 'market.candles_1m'::regclass AND c.contype = 'p'
         AND a.attrelid = c.conrelid AND a.attnum = k.attnum)
     IS DISTINCT FROM ARRAY['market', 'symbol', 'open_time'] THEN
    RAISE NOTICE 'pg_ta: re-keying market.candles_1m on (market, symbol, open_time)';
    ALTER TABLE market.candles_1m DROP CONSTRAINT IF EXISTS candles_1m_pkey;
    ALTER TABLE market.candles_1m ADD CONSTRAINT candles_1m_pkey
      PRIMARY KEY (market, symbol, open_time);
  END IF;
END
$$;

COMMENT ON TABLE market.candles_1m IS
  'Closed Binance 1m klines (k.x = true), one row per (market, symbol, open_time); market = spot '
  'or usdm (USD-M futures; default spot). Prices in quote units, volume in base units, '
  'quote_volume in quote units (USDT). Writes are idempotent upserts on the key. CHECK '
  'constraints reject non-finite, non-positive or inconsistent prices (low <= open, close <= '
  'high), negative volumes, magnitudes >= 1e15 (prices) / 1e20 (volumes), more than 20 decimals, '
  'open_time not on a minute and open_time more than 2 minutes after the server clock. A hypertable (1-day chunks, compressed after '
  'market.settings.compress_after) when TimescaleDB is available.';
COMMENT ON COLUMN market.candles_1m.market IS
  'spot (Binance spot) or usdm (Binance USD-M futures). Spot BTCUSDT and the BTCUSDT perpetual '
  'are different instruments.';

-- Values that would break every reader (NaN compares greater than any number, a 1000-digit
-- volume overflows float8) are refused at the door, with the constraint name in the error.
-- On a database created by an earlier release the constraints are added NOT VALID and then
-- validated; rows that violate them are reported with a WARNING and kept.
DO $$
DECLARE
  c record;
  v_bad bigint;
  v_violated boolean;
BEGIN
  FOR c IN SELECT * FROM (VALUES
    ('candles_1m_market_check',
     $c$market IN ('spot', 'usdm')$c$,
     'market is spot or usdm'),
    -- (a length bound rather than {0,39}: PostgreSQL's regex engine builds the automaton of a
    -- bounded repetition anew for every row it checks, ≈ 1.9 µs a row against ≈ 0.2 µs)
    ('candles_1m_symbol_check',
     $c$symbol ~ '^[A-Z0-9][A-Z0-9_]*$' AND length(symbol) <= 40$c$,
     'symbol: upper-case letters, digits and _, 1 to 40 characters (Binance symbols)'),
    ('candles_1m_time_check',
     $c$open_time = date_bin('1 minute', open_time, timestamptz '2000-01-01 00:00:00+00')
        AND close_time - open_time > interval '0' AND close_time - open_time < interval '1 minute'$c$,
     'open_time on a whole minute; open_time < close_time < open_time + 1 minute'),
    ('candles_1m_prices_check',
     $c$low > 0 AND high < 1e15 AND low <= open AND low <= close AND open <= high AND close <= high
        AND scale(open) <= 20 AND scale(high) <= 20 AND scale(low) <= 20 AND scale(close) <= 20$c$,
     'prices finite and positive, below 1e15, at most 20 decimals, low <= open, close <= high'),
    ('candles_1m_volumes_check',
     $c$volume >= 0 AND volume < 1e20 AND quote_volume >= 0 AND quote_volume < 1e20
        AND taker_buy_volume >= 0 AND taker_buy_volume < 1e20
        AND taker_buy_quote_volume >= 0 AND taker_buy_quote_volume < 1e20 AND trades >= 0
        AND scale(volume) <= 20 AND scale(quote_volume) <= 20
        AND scale(taker_buy_volume) <= 20 AND scale(taker_buy_quote_volume) <= 20$c$,
     'volumes finite, non-negative, below 1e20, at most 20 decimals; trades >= 0'),
    -- a closed kline is never in the future: one candle dated ahead (a loader's ms/us mistake,
    -- or a hostile writer) would become its instrument's head and the retention's "now".
    -- statement_timestamp() only grows, so a row that passed once passes for good (and a
    -- dump restores); the 2 minutes are the clock skew tolerated between writer and server
    ('candles_1m_open_time_check',
     $c$open_time <= statement_timestamp() + interval '2 minutes'$c$,
     'open_time at most 2 minutes after the server clock (statement_timestamp()): a closed kline '
     'is never in the future; the 2 minutes are the clock skew tolerated between writer and server')
  ) AS t(name, expr, doc) LOOP
    -- pg_ta 0.2.0's symbol check ({0,39}: the same rule, slower) is replaced, and the new one
    -- validated below (one scan of the stored candles, once)
    IF c.name = 'candles_1m_symbol_check'
       AND EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                    WHERE conrelid = 'market.candles_1m'::regclass AND conname = c.name
                      AND pg_catalog.pg_get_constraintdef(oid) LIKE '%{0,39}%') THEN
      BEGIN
        EXECUTE format('ALTER TABLE market.candles_1m DROP CONSTRAINT %I, '
                       'ADD CONSTRAINT %I CHECK (%s) NOT VALID', c.name, c.name, c.expr);
      EXCEPTION WHEN feature_not_supported THEN
        RAISE WARNING 'pg_ta: constraint % of market.candles_1m kept in its 0.2.0 form (the '
                      'same rule, slower to check): %', c.name, SQLERRM;
      END;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                    WHERE conrelid = 'market.candles_1m'::regclass AND conname = c.name) THEN
      BEGIN
        EXECUTE format('ALTER TABLE market.candles_1m ADD CONSTRAINT %I CHECK (%s) NOT VALID',
                       c.name, c.expr);
      EXCEPTION WHEN feature_not_supported THEN
        -- TimescaleDB before 2.19 adds no CHECK to a hypertable with compressed chunks: the
        -- schema is still applied (ta-feed checks the same rules; retention stays capped)
        RAISE WARNING 'pg_ta: constraint % (%) not added to market.candles_1m: %; upgrade '
                      'TimescaleDB (2.19 or later) or decompress its chunks, then run migrate again',
                      c.name, c.doc, SQLERRM;
        CONTINUE;
      END;
    END IF;
    IF NOT (SELECT convalidated FROM pg_catalog.pg_constraint
             WHERE conrelid = 'market.candles_1m'::regclass AND conname = c.name) THEN
      v_violated := false;
      BEGIN
        EXECUTE format('ALTER TABLE market.candles_1m VALIDATE CONSTRAINT %I', c.name);
      EXCEPTION
        WHEN feature_not_supported THEN
          -- TimescaleDB refuses VALIDATE on a hypertable with the columnstore enabled; an ADD
          -- of the constraint checks every chunk itself, compressed ones included
          BEGIN
            EXECUTE format('ALTER TABLE market.candles_1m DROP CONSTRAINT %I, '
                           'ADD CONSTRAINT %I CHECK (%s)', c.name, c.name, c.expr);
          EXCEPTION WHEN check_violation THEN
            v_violated := true;
          END;
        WHEN check_violation THEN
          v_violated := true;
      END;
      IF v_violated THEN
        EXECUTE format('SELECT count(*) FROM market.candles_1m WHERE NOT (%s)', c.expr) INTO v_bad;
        RAISE WARNING 'pg_ta: % existing candle rows violate % (%); they are kept, the constraint '
                      'applies to new writes (find them with: SELECT * FROM market.candles_1m '
                      'WHERE NOT (%))', v_bad, c.name, c.doc, c.expr;
      END IF;
    END IF;
    EXECUTE format('COMMENT ON CONSTRAINT %I ON market.candles_1m IS %L', c.name, c.doc);
  END LOOP;
END
$$;

DO $$ BEGIN PERFORM market._create_hypertable('market.candles_1m', 'open_time', '1 day'); END $$;

-- What the feed saw that was not a clean, contiguous candle stream: gaps it found and
-- filled (or could not fill), klines it rejected, truncated klines at exchange halts,
-- universe changes, silent connections, rules that failed at run time.
CREATE TABLE IF NOT EXISTS market.data_quality_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    logged_at   timestamptz NOT NULL DEFAULT now(),
    symbol      text,
    kind        text        NOT NULL,
    from_time   timestamptz,
    to_time     timestamptz,
    rows        bigint,
    detail      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    market      text
);
ALTER TABLE market.data_quality_log ADD COLUMN IF NOT EXISTS market text;
DROP INDEX IF EXISTS market.data_quality_log_symbol_idx;
CREATE INDEX IF NOT EXISTS data_quality_log_instrument_idx
    ON market.data_quality_log (market, symbol, logged_at);
COMMENT ON TABLE market.data_quality_log IS
  'One row per data-quality event seen by a writer or the database; market/symbol name the '
  'instrument (NULL when not about one). kind: gap_filled (a missing range of minutes was '
  'backfilled over REST; rows = candles written), gap_unfilled (REST had no candles for the '
  'range, e.g. an exchange outage), rejected (a kline that failed validation; detail holds the '
  'reason and raw text), truncated (close_time <> open_time + 59.999 s, seen at exchange halts), '
  'listed / delisted (the streamed universe changed), silent_connection (a WebSocket connection '
  'that delivered no kline for 2 minutes of exchange time), rule_error (a rule failed at run time '
  'and was skipped for that evaluation).';
