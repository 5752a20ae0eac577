-- Composite types of the screener engine (pg_ta 0.2.0). The data schema depends on their
-- names, columns and column order: change them only with an upgrade script.
CREATE TYPE ta.screener_row AS (
    market text, symbol text, open_time timestamptz, close_time timestamptz,
    candles bigint, price double precision, change_1m double precision, vol_1m numeric,
    open_5m double precision, high_5m double precision, low_5m double precision,
    change_5m double precision, range_5m double precision, vol_5m numeric, vol_ratio_5m double precision,
    open_15m double precision, high_15m double precision, low_15m double precision,
    change_15m double precision, range_15m double precision, vol_15m numeric, vol_ratio_15m double precision,
    open_1h double precision, high_1h double precision, low_1h double precision,
    change_1h double precision, range_1h double precision, vol_1h numeric, vol_ratio_1h double precision,
    open_4h double precision, high_4h double precision, low_4h double precision,
    change_4h double precision, range_4h double precision, vol_4h numeric, vol_ratio_4h double precision,
    open_8h double precision, high_8h double precision, low_8h double precision,
    change_8h double precision, range_8h double precision, vol_8h numeric, vol_ratio_8h double precision,
    open_1d double precision, high_1d double precision, low_1d double precision,
    change_1d double precision, range_1d double precision, vol_1d numeric, vol_ratio_1d double precision,
    min_change_1m_3 double precision, max_change_1m_3 double precision, min_vol_1m_3 numeric,
    volatility_10 double precision, vcp double precision,
    fib_pivot double precision, fib_r1 double precision, fib_r2 double precision, fib_r3 double precision,
    fib_s1 double precision, fib_s2 double precision, fib_s3 double precision,
    rsi_14 double precision, macd double precision, macd_signal double precision, macd_hist double precision
);
COMMENT ON TYPE ta.screener_row IS
'Screener metrics of one instrument (market, symbol) at one closed 1m candle (open_time, close_time); what ta.screener and ta._screener_state return and what rules read. Windows W in 5m, 15m, 1h, 4h, 8h, 1d = the last 5, 15, 60, 240, 480, 1440 candles (candles, not minutes: after an exchange outage a window spans more time). candles = position of the candle in the series (1-based). price = its close; change_1m = (close - open)/open*100 and vol_1m = its quote volume. open_W/high_W/low_W = the window''s open (of its first candle), max(high), min(low), price units; change_W = (price - open_W)/open_W*100 and range_W = (high_W - low_W)/low_W*100, percent; vol_W = sum of quote_volume (quote asset, USDT), exact numeric; vol_ratio_W = vol_W / the quote volume of the W window before (NULL until 2W candles). min_change_1m_3/max_change_1m_3 = least/greatest 1m change of the last 3 candles, percent (NULL unless their opens are > 0); min_vol_1m_3 = least quote volume of the last 3. volatility_10 = population standard deviation of the last 10 1m log returns (fraction), from running sums as pg_ta 0.1.0 computed it (from candle 11; 0 when the log return 9 candles back is missing). vcp = (P/WA)*((P-L)-(H-P))/(H-L) of the candle with P = close, WA = (open+close)/2 (0 when H = L, NULL when WA = 0). fib_* = Fibonacci pivots of the 1d window: pivot = (high_1d+low_1d+price)/3, r1/r2/r3 = pivot + 0.382/0.618/1.0*(high_1d-low_1d), s1/s2/s3 = pivot - the same. rsi_14 = ta.rsi(close, 14), macd/macd_signal/macd_hist = ta.macd(close, 12, 26, 9) over all closes of the series. A metric is NULL until its window is full (and, from a checkpoint, until the engine has seen the candles it needs). Values equal pg_ta 0.1.0''s market.screener_row bit for bit.';

CREATE TYPE ta.screener_checkpoint AS (
    candles bigint, open_time timestamptz, close double precision, cum_quote_volume numeric,
    sum_log_return_sq double precision, rsi_state double precision[], macd_state double precision[]
);
COMMENT ON TYPE ta.screener_checkpoint IS
'Chain state of an instrument''s screener after a candle: what must be carried from the first candle of the series (the windows are rebuilt from the last 2879 candles). candles = candles so far; open_time and close = of the last of them; cum_quote_volume = sum of their quote volumes (numeric, exact); sum_log_return_sq = running sum of squared 1m log returns; rsi_state = the ta.rsi_step(state, close, 14) array, macd_state = the ta.macd_step(state, close, 12, 26, 9) array after the last close. A fresh series is (0, NULL, NULL, 0, 0, NULL, NULL); NULL means fresh. Checkpoints are validated (SQLSTATE 22023 for negative counts, wrong array lengths, non-finite values, states that no series produces).';

CREATE TYPE ta.screener_state AS (
    "row" ta.screener_row,
    chain ta.screener_checkpoint,
    day_checkpoint ta.screener_checkpoint
);
COMMENT ON TYPE ta.screener_state IS
'One candle of the screener engine: "row" = its ta.screener_row; chain = the ta.screener_checkpoint after it; day_checkpoint = the checkpoint before it when it is the first candle of its UTC day (its UTC date differs from the previous candle''s, or it is the first candle of the series), else NULL. Returned by ta._screener_state and ta._screener_cache_step.';
