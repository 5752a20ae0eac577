-- 002: closed 1-minute klines, one row per (symbol, open_time).
--
-- Column names are the domain names of Binance's kline fields
-- (https://developers.binance.com/docs/binance-spot-api-docs/rest-api/market-data-endpoints#klinecandlestick-data):
--   open_time t, close_time T, open o, high h, low l, close c, volume v (base asset),
--   quote_volume q (quote asset, USDT for *USDT pairs), trades n,
--   taker_buy_volume V, taker_buy_quote_volume Q.
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
    PRIMARY KEY (symbol, open_time)
);
COMMENT ON TABLE market.candles_1m IS
  'Closed Binance 1m klines (k.x = true), one row per (symbol, open_time); prices in quote units, '
  'volume in base units, quote_volume in quote units (USDT). Writes are idempotent upserts on '
  '(symbol, open_time). A hypertable when TimescaleDB is available.';

DO $$
BEGIN
  IF market.timescaledb_enabled() THEN
    PERFORM create_hypertable('market.candles_1m', 'open_time',
                              chunk_time_interval => INTERVAL '1 day',
                              if_not_exists => TRUE, migrate_data => TRUE);
  END IF;
END
$$;

-- What the feed saw that was not a clean, contiguous candle stream: gaps it found and
-- filled (or could not fill), klines it rejected, truncated klines at exchange halts.
CREATE TABLE IF NOT EXISTS market.data_quality_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    logged_at   timestamptz NOT NULL DEFAULT now(),
    symbol      text,
    kind        text        NOT NULL,
    from_time   timestamptz,
    to_time     timestamptz,
    rows        bigint,
    detail      jsonb       NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS data_quality_log_symbol_idx
    ON market.data_quality_log (symbol, logged_at);
COMMENT ON TABLE market.data_quality_log IS
  'One row per data-quality event seen by a writer. kind: gap_filled (a missing range of minutes '
  'was backfilled over REST; rows = candles written), gap_unfilled (REST had no candles for the '
  'range, e.g. an exchange outage), rejected (a kline that failed validation; detail holds the '
  'reason and raw text), truncated (close_time <> open_time + 59.999 s, seen at exchange halts).';
