-- Composite types of the feature engine (pg_ta 0.3.0, feature set 1). The data schema depends
-- on their names, columns and column order: change them only with an upgrade script (and a
-- new feature set version, ta.feature_version()).
CREATE TYPE ta.feature_row AS (
    market text, symbol text, open_time timestamptz, close_time timestamptz,
    ret_1m double precision, ret_5m double precision, ret_15m double precision,
    ret_1h double precision, ret_4h double precision, ret_1d double precision,
    rv_5m double precision, rv_15m double precision, rv_1h double precision, rv_4h double precision,
    rv_8h double precision, rv_1d double precision, rsi_14 double precision,
    macd_hist double precision, bb_pct_b double precision, vwap_dist_1d double precision,
    vol_z_1d double precision, quote_vol_z_1d double precision, taker_buy_ratio double precision,
    imbalance_1m double precision, spread_bps_1m double precision,
    wmid_offset_bps_1m double precision, ret_1m_z double precision, ret_5m_z double precision,
    ret_15m_z double precision, ret_1h_z double precision, ret_4h_z double precision,
    ret_1d_z double precision, rv_5m_z double precision, rv_15m_z double precision,
    rv_1h_z double precision, rv_4h_z double precision, rv_8h_z double precision,
    rv_1d_z double precision, rsi_14_z double precision, macd_hist_z double precision,
    bb_pct_b_z double precision, vwap_dist_1d_z double precision,
    taker_buy_ratio_z double precision, imbalance_1m_z double precision,
    spread_bps_1m_z double precision, wmid_offset_bps_1m_z double precision
);
COMMENT ON TYPE ta.feature_row IS
'Feature row (feature set 1, ta.feature_version()) of one instrument (market, symbol) at one closed 1m candle (open_time, close_time), computed only from candles with open_time <= its open_time and book updates before open_time + 1 minute. Windows count candles (as the screener''s). c = close, v = volume, q = quote volume, r = ln(c/previous c). ret_1m/5m/15m/1h/4h/1d = ln(c / c of 1, 5, 15, 60, 240, 1440 candles before) (NULL until that many + 1 candles); rv_5m/15m/1h/4h/8h/1d = sqrt(sum of r^2 over the last 5, 15, 60, 240, 480, 1440 candles), log-return units, not annualised (NULL until N + 1 candles); rsi_14, macd_hist = the screener''s RSI(14) and MACD(12,26,9) histogram (TA-Lib); bb_pct_b = Bollinger %b of the last 20 closes, mean +- 2 population standard deviations: (c - lower)/(upper - lower) (NULL until 20 candles or when the 20 closes are equal); vwap_dist_1d = ln(c / (sum q / sum v over the last 1440 candles)) (NULL until 1440 candles or sum v = 0); vol_z_1d, quote_vol_z_1d = z-score of v (q) over the last 1440 candles including this one, (x - mean)/population sd (NULL until 1440 candles, for a flat day or variance <= 0); taker_buy_ratio = taker_buy_volume / v (NULL when v = 0); imbalance_1m, spread_bps_1m, wmid_offset_bps_1m = the minute''s book features (ta.book_features over market.book_tickers of the minute: time-weighted (B-A)/(B+A), time-weighted spread in basis points, (weighted mid - mid)/mid*10^4 of the last quote; NULL when the minute has no book update, and as the live path saw them: see market.book_1m_frozen); <column>_z = z-score of <column> over the last 60 candles including this one (NULL unless <column> is non-NULL at all 60, for 60 equal values or variance <= 0). Sums are exact (math.fsum, correctly rounded), so a value is a function of its window: the same live, offline and after truncating the data after its minute. Never NaN; NULL where a value is unknown.';

CREATE TYPE ta.signal_row AS (
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
,
    ret_1m double precision, ret_5m double precision, ret_15m double precision,
    ret_1h double precision, ret_4h double precision, ret_1d double precision,
    rv_5m double precision, rv_15m double precision, rv_1h double precision, rv_4h double precision,
    rv_8h double precision, rv_1d double precision, bb_pct_b double precision,
    vwap_dist_1d double precision, vol_z_1d double precision, quote_vol_z_1d double precision,
    taker_buy_ratio double precision, imbalance_1m double precision, spread_bps_1m double precision,
    wmid_offset_bps_1m double precision, ret_1m_z double precision, ret_5m_z double precision,
    ret_15m_z double precision, ret_1h_z double precision, ret_4h_z double precision,
    ret_1d_z double precision, rv_5m_z double precision, rv_15m_z double precision,
    rv_1h_z double precision, rv_4h_z double precision, rv_8h_z double precision,
    rv_1d_z double precision, rsi_14_z double precision, macd_hist_z double precision,
    bb_pct_b_z double precision, vwap_dist_1d_z double precision,
    taker_buy_ratio_z double precision, imbalance_1m_z double precision,
    spread_bps_1m_z double precision, wmid_offset_bps_1m_z double precision
);
COMMENT ON TYPE ta.signal_row IS
'What rules read (market.alert_rules, backtests): the columns of ta.screener_row followed by the feature columns of ta.feature_row (rsi_14 and macd_hist, in both, appear once), e.g. imbalance_1m > 0.3 AND change_5m > 1. Feature columns follow ta.feature_row''s definitions (feature set 1).';

CREATE TYPE ta.feature_state AS (
    "row" ta.screener_row,
    chain ta.screener_checkpoint,
    day_checkpoint ta.screener_checkpoint,
    features ta.feature_row,
    signal ta.signal_row
);
COMMENT ON TYPE ta.feature_state IS
'One candle of the feature engine: "row", chain and day_checkpoint as ta.screener_state; features = its ta.feature_row; signal = its ta.signal_row (what rules read). Returned by ta._features_state and ta._features_cache_step.';
