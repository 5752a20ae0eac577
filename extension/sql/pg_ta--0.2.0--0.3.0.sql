-- pg_ta 0.2.0 -> 0.3.0: the tick aggregates (types ta.kline, ta.trade_features,
-- ta.book_features; aggregates ta.kline and ta.trade_features with combine/serialize/deserialize
-- functions, ta.book_features; the function ta.trade_features of a stored kline) and the feature
-- engine (types ta.feature_row, ta.signal_row, ta.feature_state; aggregates ta._features_state,
-- ta._signal_rows, ta._feature_rows, ta.features; the per-session feature cache revoked from
-- PUBLIC; ta.feature_bytes, ta.feature_payloads, ta.feature_json, ta.feature_version), and the
-- comment of ta._screener_cache_reset (it resets the feature engines too).  Nothing is removed or changed in signature.
-- Applied by ALTER EXTENSION pg_ta UPDATE (ta-feed migrate runs it).  The CREATE statements are
-- the blocks of the generated 0.3.0 install script (cargo pgrx schema) that the 0.2.0 script
-- lacks, in its order; tests/upgrade compares the upgraded catalog with a fresh 0.3.0 install.
\echo Use "ALTER EXTENSION pg_ta UPDATE TO '0.3.0'" to load this file. \quit

-- requires:
--   screener_types

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

-- Composite results of the tick aggregates (Binance field names; see ticks.sql).
CREATE TYPE ta.kline AS (
    open numeric, high numeric, low numeric, close numeric, volume numeric, quote_volume numeric,
    trades bigint, taker_buy_volume numeric, taker_buy_quote_volume numeric,
    first_trade_id bigint, last_trade_id bigint, first_agg_trade_id bigint, last_agg_trade_id bigint);
COMMENT ON TYPE ta.kline IS 'Result of ta.kline: the fields of a Binance kline built from its trades (kline stream o, h, l, c, v, q, n, V, Q, f, L), numeric (exact): open/close = price of the lowest/highest agg_trade_id, high/low = max/min price, volume = sum of quantity (base units), quote_volume = sum of price*quantity (quote units), trades = sum of (last_trade_id - first_trade_id + 1), taker_buy_volume/taker_buy_quote_volume = the same sums over trades with is_buyer_maker = false; first_trade_id/last_trade_id = min f/max l; first_agg_trade_id/last_agg_trade_id = the aggregate trade ids of open and close.';
CREATE TYPE ta.trade_features AS (
    vwap double precision, trades bigint, taker_buy_ratio double precision, signed_volume numeric);
COMMENT ON TYPE ta.trade_features IS 'Result of ta.trade_features: vwap = quote_volume / volume (price units; NULL when volume = 0), trades = trade count, taker_buy_ratio = taker_buy_volume / volume (0..1; NULL when volume = 0), signed_volume = taker buys minus taker sells = 2*taker_buy_volume - volume (base units, exact numeric). The quotients divide the sums converted to the nearest double precision.';
CREATE TYPE ta.book_features AS (
    imbalance double precision, spread_bps double precision, spread_bps_last double precision,
    weighted_mid double precision, mid double precision, weighted_mid_offset_bps double precision,
    updates bigint);
COMMENT ON TYPE ta.book_features IS 'Result of ta.book_features (one bucket of best bid/ask updates): imbalance = time-weighted mean of (B - A)/(B + A) (-1..1; NULL when no quote has B + A > 0), spread_bps = time-weighted mean of (a - b)/mid * 10^4 (basis points), spread_bps_last = that of the last quote, weighted_mid = (a*B + b*A)/(A + B) of the last quote (price units; Stoikov 2018; NULL when A + B = 0), mid = (a + b)/2 of the last quote, weighted_mid_offset_bps = (weighted_mid - mid)/mid * 10^4, updates = number of quotes. b/B = best bid price/quantity, a/A = best ask price/quantity.';

-- pg_ta::pg::features::_feature_rows_final
-- requires:
--   feature_types
CREATE  FUNCTION "_feature_rows_final"(
	"state" internal /* Internal */
) RETURNS ta.feature_row /* Option < FeatureRowResult > */
IMMUTABLE PARALLEL SAFE  
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'feature_rows_final_wrapper';

-- pg_ta::pg::features::_feature_rows_trans
-- requires:
--   feature_types
CREATE  FUNCTION "_feature_rows_trans"(
	"state" internal, /* Internal */
	"market" text, /* Option < RawText > */
	"symbol" text, /* Option < RawText > */
	"open_time" timestamp with time zone, /* Option < TimestampWithTimeZone > */
	"close_time" timestamp with time zone, /* Option < TimestampWithTimeZone > */
	"open" numeric, /* Option < RawNumeric > */
	"high" numeric, /* Option < RawNumeric > */
	"low" numeric, /* Option < RawNumeric > */
	"close" numeric, /* Option < RawNumeric > */
	"volume" numeric, /* Option < RawNumeric > */
	"quote_volume" numeric, /* Option < RawNumeric > */
	"taker_buy_volume" numeric, /* Option < RawNumeric > */
	"imbalance" double precision, /* Option < f64 > */
	"spread_bps" double precision, /* Option < f64 > */
	"wmid_offset_bps" double precision, /* Option < f64 > */
	"start" ta.screener_checkpoint, /* Option < CheckpointArg > */
	"emit_from" timestamp with time zone, /* Option < TimestampWithTimeZone > */
	"emit_to" timestamp with time zone /* Option < TimestampWithTimeZone > */
) RETURNS internal /* Internal */
IMMUTABLE PARALLEL SAFE  
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'feature_rows_trans_wrapper';

-- pg_ta::pg::features::_features_cache_load
-- requires:
--   feature_types
CREATE  FUNCTION "_features_cache_load"(
	"head_candles" bigint, /* Option < i64 > */
	"head_xmin" bigint, /* Option < i64 > */
	"market" TEXT, /* Option < & str > */
	"symbol" TEXT, /* Option < & str > */
	"start" ta.screener_checkpoint, /* Option < CheckpointArg > */
	"open_time" timestamp with time zone[], /* :: std :: option :: Option < Array < '_, TimestampWithTimeZone > > */
	"close_time" timestamp with time zone[], /* :: std :: option :: Option < Array < '_, TimestampWithTimeZone > > */
	"open" numeric[], /* :: std :: option :: Option < Array < '_, RawNumeric > > */
	"high" numeric[], /* :: std :: option :: Option < Array < '_, RawNumeric > > */
	"low" numeric[], /* :: std :: option :: Option < Array < '_, RawNumeric > > */
	"close" numeric[], /* :: std :: option :: Option < Array < '_, RawNumeric > > */
	"volume" numeric[], /* :: std :: option :: Option < Array < '_, RawNumeric > > */
	"quote_volume" numeric[], /* :: std :: option :: Option < Array < '_, RawNumeric > > */
	"taker_buy_volume" numeric[], /* :: std :: option :: Option < Array < '_, RawNumeric > > */
	"imbalance" double precision[], /* :: std :: option :: Option < Array < '_, f64 > > */
	"spread_bps" double precision[], /* :: std :: option :: Option < Array < '_, f64 > > */
	"wmid_offset_bps" double precision[] /* :: std :: option :: Option < Array < '_, f64 > > */
) RETURNS bigint /* i64 */
VOLATILE PARALLEL UNSAFE  
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'features_cache_load_wrapper';

-- pg_ta::pg::features::_features_cache_step
-- requires:
--   feature_types
CREATE  FUNCTION "_features_cache_step"(
	"head_candles" bigint, /* Option < i64 > */
	"head_xmin" bigint, /* Option < i64 > */
	"market" TEXT, /* Option < & str > */
	"symbol" TEXT, /* Option < & str > */
	"open_time" timestamp with time zone, /* Option < TimestampWithTimeZone > */
	"close_time" timestamp with time zone, /* Option < TimestampWithTimeZone > */
	"open" numeric, /* Option < RawNumeric > */
	"high" numeric, /* Option < RawNumeric > */
	"low" numeric, /* Option < RawNumeric > */
	"close" numeric, /* Option < RawNumeric > */
	"volume" numeric, /* Option < RawNumeric > */
	"quote_volume" numeric, /* Option < RawNumeric > */
	"taker_buy_volume" numeric, /* Option < RawNumeric > */
	"imbalance" double precision, /* Option < f64 > */
	"spread_bps" double precision, /* Option < f64 > */
	"wmid_offset_bps" double precision, /* Option < f64 > */
	"with_features" bool /* Option < bool > */
) RETURNS ta.feature_state /* Option < FeatureStateResult > */
VOLATILE PARALLEL UNSAFE  
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'features_cache_step_wrapper';

-- pg_ta::pg::features::_features_state_final
-- requires:
--   feature_types
CREATE  FUNCTION "_features_state_final"(
	"state" internal /* Internal */
) RETURNS ta.feature_state /* Option < FeatureStateResult > */
IMMUTABLE PARALLEL SAFE  
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'features_state_final_wrapper';

-- pg_ta::pg::features::_features_trans
-- requires:
--   feature_types
CREATE  FUNCTION "_features_trans"(
	"state" internal, /* Internal */
	"market" text, /* Option < RawText > */
	"symbol" text, /* Option < RawText > */
	"open_time" timestamp with time zone, /* Option < TimestampWithTimeZone > */
	"close_time" timestamp with time zone, /* Option < TimestampWithTimeZone > */
	"open" numeric, /* Option < RawNumeric > */
	"high" numeric, /* Option < RawNumeric > */
	"low" numeric, /* Option < RawNumeric > */
	"close" numeric, /* Option < RawNumeric > */
	"volume" numeric, /* Option < RawNumeric > */
	"quote_volume" numeric, /* Option < RawNumeric > */
	"taker_buy_volume" numeric, /* Option < RawNumeric > */
	"imbalance" double precision, /* Option < f64 > */
	"spread_bps" double precision, /* Option < f64 > */
	"wmid_offset_bps" double precision, /* Option < f64 > */
	"start" ta.screener_checkpoint, /* Option < CheckpointArg > */
	"emit_from" timestamp with time zone, /* Option < TimestampWithTimeZone > */
	"emit_to" timestamp with time zone /* Option < TimestampWithTimeZone > */
) RETURNS internal /* Internal */
IMMUTABLE PARALLEL SAFE  
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'features_state_trans_wrapper';

-- pg_ta::pg::features::_signal_rows_final
-- requires:
--   feature_types
CREATE  FUNCTION "_signal_rows_final"(
	"state" internal /* Internal */
) RETURNS ta.signal_row /* Option < SignalRowResult > */
IMMUTABLE PARALLEL SAFE  
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'signal_rows_final_wrapper';

-- pg_ta::pg::ticks::book_features_final
-- requires:
--   tick_types
CREATE  FUNCTION "book_features_final"(
	"state" internal /* Internal */
) RETURNS ta.book_features /* Option < BookFeaturesResult > */
IMMUTABLE PARALLEL SAFE  
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'book_features_final_wrapper';

-- pg_ta::pg::ticks::book_features_trans
CREATE  FUNCTION "book_features_trans"(
	"state" internal, /* Internal */
	"event_time" timestamp with time zone, /* Option < TimestampWithTimeZone > */
	"update_id" bigint, /* Option < i64 > */
	"best_bid_price" double precision, /* Option < f64 > */
	"best_bid_qty" double precision, /* Option < f64 > */
	"best_ask_price" double precision, /* Option < f64 > */
	"best_ask_qty" double precision, /* Option < f64 > */
	"bucket_width" interval /* Option < Interval > */
) RETURNS internal /* Internal */
IMMUTABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'book_features_trans_float8_wrapper';

-- pg_ta::pg::ticks::book_features_trans
CREATE  FUNCTION "book_features_trans"(
	"state" internal, /* Internal */
	"event_time" timestamp with time zone, /* Option < TimestampWithTimeZone > */
	"update_id" bigint, /* Option < i64 > */
	"best_bid_price" numeric, /* Option < RawNumeric > */
	"best_bid_qty" numeric, /* Option < RawNumeric > */
	"best_ask_price" numeric, /* Option < RawNumeric > */
	"best_ask_qty" numeric, /* Option < RawNumeric > */
	"bucket_width" interval /* Option < Interval > */
) RETURNS internal /* Internal */
IMMUTABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'book_features_trans_numeric_wrapper';

-- pg_ta::pg::features::feature_bytes
-- requires:
--   feature_types
CREATE  FUNCTION "feature_bytes"(
	"row" ta.feature_row /* FeatureRowArg */
) RETURNS bytea /* Vec < u8 > */
IMMUTABLE STRICT PARALLEL SAFE  
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'feature_bytes_wrapper';

-- pg_ta::pg::features::feature_json
-- requires:
--   feature_types
CREATE  FUNCTION "feature_json"(
	"row" ta.feature_row /* :: pgrx :: heap_tuple :: PgHeapTuple < '_, :: pgrx :: pgbox :: AllocatedByRust
> */
) RETURNS TEXT /* String */
IMMUTABLE STRICT PARALLEL SAFE  
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'feature_json_wrapper';

-- pg_ta::pg::features::feature_payloads
-- requires:
--   feature_types
CREATE  FUNCTION "feature_payloads"(
	"rows" ta.feature_row[] /* FeatureRowsArg */
) RETURNS TEXT[] /* Vec < String > */
IMMUTABLE STRICT PARALLEL SAFE  
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'feature_payloads_wrapper';

-- pg_ta::pg::features::feature_version
CREATE  FUNCTION "feature_version"() RETURNS INT /* i32 */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'feature_version_wrapper';

-- pg_ta::pg::features::features_trans
-- requires:
--   feature_types
CREATE  FUNCTION "features_trans"(
	"state" internal, /* Internal */
	"market" text, /* Option < RawText > */
	"symbol" text, /* Option < RawText > */
	"open_time" timestamp with time zone, /* Option < TimestampWithTimeZone > */
	"close_time" timestamp with time zone, /* Option < TimestampWithTimeZone > */
	"open" numeric, /* Option < RawNumeric > */
	"high" numeric, /* Option < RawNumeric > */
	"low" numeric, /* Option < RawNumeric > */
	"close" numeric, /* Option < RawNumeric > */
	"volume" numeric, /* Option < RawNumeric > */
	"quote_volume" numeric, /* Option < RawNumeric > */
	"taker_buy_volume" numeric, /* Option < RawNumeric > */
	"imbalance" double precision, /* Option < f64 > */
	"spread_bps" double precision, /* Option < f64 > */
	"wmid_offset_bps" double precision /* Option < f64 > */
) RETURNS internal /* Internal */
IMMUTABLE PARALLEL SAFE  
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'features_public_trans_wrapper';

-- requires:
--   feature_types
--   features_state_trans
--   feature_rows_trans
--   features_public_trans
--   features_state_final
--   signal_rows_final
--   feature_rows_final
--   features_cache_step
--   features_cache_load
--   feature_bytes
--   feature_json
--   feature_payloads
--   feature_version

-- The feature engine's SQL surface (pg_ta 0.3.0): ta._features_state, ta._signal_rows and
-- ta._feature_rows (window aggregates of the data schema), ta.features (public aggregate), the
-- per-session cache functions, ta.feature_bytes, ta.feature_payloads, ta.feature_json and
-- ta.feature_version.
CREATE AGGREGATE ta._features_state(
    market text, symbol text, open_time timestamptz, close_time timestamptz,
    open numeric, high numeric, low numeric, close numeric, volume numeric, quote_volume numeric,
    taker_buy_volume numeric, imbalance double precision, spread_bps double precision,
    wmid_offset_bps double precision, start ta.screener_checkpoint, emit_from timestamptz, emit_to timestamptz) (
    SFUNC = ta._features_trans, STYPE = internal, FINALFUNC = ta._features_state_final,
    FINALFUNC_MODIFY = READ_ONLY, PARALLEL = SAFE);
COMMENT ON AGGREGATE ta._features_state(text, text, timestamptz, timestamptz, numeric, numeric, numeric, numeric, numeric, numeric, numeric, double precision, double precision, double precision, ta.screener_checkpoint, timestamptz, timestamptz) IS
'Internal (the data schema''s recompute path). The feature engine (the screener engine plus the features of ta.feature_row) over the 1m candles of one instrument, as a window aggregate OVER (PARTITION BY market, symbol ORDER BY open_time ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW), started from start (NULL = a fresh series). Returns a ta.feature_state for every row with emit_from <= open_time <= emit_to (NULL bound = open) and for every first candle of a UTC day; NULL otherwise. Inputs per row: market, symbol, open_time, close_time, open, high, low, close, volume (base), quote_volume, taker_buy_volume (numeric, as in market.candles_1m), and the minute''s book features imbalance, spread_bps, wmid_offset_bps (double precision; NULL where there are no book rows: ta.book_features'' imbalance, spread_bps and weighted_mid_offset_bps). Start at least 2879 candles before the first row to emit. Errors: SQLSTATE 22023 when open_time is not strictly increasing within the partition, market/symbol change within it, a price or volume is NaN/Infinity, or start is malformed; 22004 for a NULL candle value.';
COMMENT ON FUNCTION ta._features_trans(internal, text, text, timestamptz, timestamptz, numeric, numeric, numeric, numeric, numeric, numeric, numeric, double precision, double precision, double precision, ta.screener_checkpoint, timestamptz, timestamptz) IS
'Transition function of ta._features_state and ta._signal_rows; internal, not for direct use.';
COMMENT ON FUNCTION ta._features_state_final(internal) IS
'Final function of ta._features_state (returns ta.feature_state or NULL); internal, not for direct use.';

CREATE AGGREGATE ta._signal_rows(
    market text, symbol text, open_time timestamptz, close_time timestamptz,
    open numeric, high numeric, low numeric, close numeric, volume numeric, quote_volume numeric,
    taker_buy_volume numeric, imbalance double precision, spread_bps double precision,
    wmid_offset_bps double precision, start ta.screener_checkpoint, emit_from timestamptz, emit_to timestamptz) (
    SFUNC = ta._features_trans, STYPE = internal, FINALFUNC = ta._signal_rows_final,
    FINALFUNC_MODIFY = READ_ONLY, PARALLEL = SAFE);
COMMENT ON AGGREGATE ta._signal_rows(text, text, timestamptz, timestamptz, numeric, numeric, numeric, numeric, numeric, numeric, numeric, double precision, double precision, double precision, ta.screener_checkpoint, timestamptz, timestamptz) IS
'Internal (backtests). As ta._features_state, but returns the ta.signal_row (what rules read) of the rows with emit_from <= open_time <= emit_to, NULL for the others.';
COMMENT ON FUNCTION ta._signal_rows_final(internal) IS
'Final function of ta._signal_rows (returns ta.signal_row or NULL); internal, not for direct use.';

CREATE AGGREGATE ta._feature_rows(
    market text, symbol text, open_time timestamptz, close_time timestamptz,
    open numeric, high numeric, low numeric, close numeric, volume numeric, quote_volume numeric,
    taker_buy_volume numeric, imbalance double precision, spread_bps double precision,
    wmid_offset_bps double precision, start ta.screener_checkpoint, emit_from timestamptz, emit_to timestamptz) (
    SFUNC = ta._feature_rows_trans, STYPE = internal, FINALFUNC = ta._feature_rows_final,
    FINALFUNC_MODIFY = READ_ONLY, PARALLEL = SAFE);
COMMENT ON AGGREGATE ta._feature_rows(text, text, timestamptz, timestamptz, numeric, numeric, numeric, numeric, numeric, numeric, numeric, double precision, double precision, double precision, ta.screener_checkpoint, timestamptz, timestamptz) IS
'Internal (market.features_range, training sets). As ta._features_state, but returns only the ta.feature_row of the rows with emit_from <= open_time <= emit_to (NULL for the others), without building screener rows or doing numeric arithmetic. Same values as ta._features_state bit for bit.';
COMMENT ON FUNCTION ta._feature_rows_trans(internal, text, text, timestamptz, timestamptz, numeric, numeric, numeric, numeric, numeric, numeric, numeric, double precision, double precision, double precision, ta.screener_checkpoint, timestamptz, timestamptz) IS
'Transition function of ta._feature_rows; internal, not for direct use.';
COMMENT ON FUNCTION ta._feature_rows_final(internal) IS
'Final function of ta._feature_rows and ta.features (returns ta.feature_row or NULL); internal, not for direct use.';

CREATE AGGREGATE ta.features(
    market text, symbol text, open_time timestamptz, close_time timestamptz,
    open numeric, high numeric, low numeric, close numeric, volume numeric, quote_volume numeric,
    taker_buy_volume numeric, imbalance double precision, spread_bps double precision,
    wmid_offset_bps double precision) (
    SFUNC = ta.features_trans, STYPE = internal, FINALFUNC = ta._feature_rows_final,
    FINALFUNC_MODIFY = READ_ONLY, PARALLEL = SAFE);
COMMENT ON AGGREGATE ta.features(text, text, timestamptz, timestamptz, numeric, numeric, numeric, numeric, numeric, numeric, numeric, double precision, double precision, double precision) IS
'Feature rows (ta.feature_row, feature set 1) over your own 1m candles, by the engine of market.features_range: use as a window function, one partition per instrument: SELECT (f).* FROM (SELECT ta.features(market, symbol, open_time, close_time, open, high, low, close, volume, quote_volume, taker_buy_volume, NULL, NULL, NULL) OVER (PARTITION BY market, symbol ORDER BY open_time) AS f FROM market.candles_1m WHERE symbol = ''BTCUSDT'') q. The series starts at the partition''s first row (windows count rows; NULL during warm-up); as a plain aggregate (with ORDER BY open_time inside the call) it returns the row of the last candle. Inputs per row: market, symbol, open_time, close_time, open, high, low, close, volume (base), quote_volume, taker_buy_volume (numeric, as in market.candles_1m), and the minute''s book features imbalance, spread_bps, wmid_offset_bps (double precision; NULL where there are no book rows: ta.book_features'' imbalance, spread_bps and weighted_mid_offset_bps). Errors: SQLSTATE 22023 when open_time is not strictly increasing within the partition, market/symbol change within it, a price or volume is NaN/Infinity, or start is malformed; 22004 for a NULL candle value. Source: the definitions of COMMENT ON TYPE ta.feature_row; exact sums after J. R. Shewchuk (1997) / Python math.fsum.';
COMMENT ON FUNCTION ta.features_trans(internal, text, text, timestamptz, timestamptz, numeric, numeric, numeric, numeric, numeric, numeric, numeric, double precision, double precision, double precision) IS
'Transition function of ta.features; internal, not for direct use.';

COMMENT ON FUNCTION ta._features_cache_step(bigint, bigint, text, text, timestamptz, timestamptz, numeric, numeric, numeric, numeric, numeric, numeric, numeric, double precision, double precision, double precision, boolean) IS
'Internal (the data schema''s live path; EXECUTE revoked from PUBLIC). Per-session feature engine cache, as ta._screener_cache_step: when this session holds the engine of (market, symbol) and it ends at the head row (head_candles, head_xmin), pushes the candle (with volume, taker_buy_volume and the minute''s book features) and returns its ta.feature_state; otherwise drops any entry and returns NULL. Same values as ta._features_state bit for bit. with_features = false (the live path when no enabled rule reads a feature column and market.settings.live_features is off) steps the screener engine only: features is NULL and so are the feature columns of signal, and the cached engine has no features from then on (a later step with with_features = true returns NULL and drops it; the caller reloads it). NULL counts as true.';
COMMENT ON FUNCTION ta._features_cache_load(bigint, bigint, text, text, ta.screener_checkpoint, timestamptz[], timestamptz[], numeric[], numeric[], numeric[], numeric[], numeric[], numeric[], numeric[], double precision[], double precision[], double precision[]) IS
'Internal (the data schema''s live path; EXECUTE revoked from PUBLIC). Builds the feature engine of (market, symbol) from start and the candles given as arrays (oldest first) and keeps it with token head_xmin when its candle count equals head_candles; returns the candle count. The three book arrays (which may hold NULLs) belong to the last candles, aligned at the end (they may be shorter: the next row needs the book features of the last 59 candles only). Errors: SQLSTATE 22023 for candle arrays of different lengths, book arrays longer than the candles'', unordered times, NaN/Infinity, a malformed start; 22004 for NULL arguments or candle elements.';
COMMENT ON FUNCTION ta.feature_bytes(ta.feature_row) IS
'The 42 feature columns of a ta.feature_row (feature set ta.feature_version(), in column order, from ret_1m) as 42 little-endian IEEE 754 double precision values, 336 bytes, NULL as NaN: one row of a training-set matrix, read without a per-value object by numpy.frombuffer(b, ''<f8'') (examples/training_set.py). Market, symbol, open_time and close_time are not included. NULL for a NULL row. Error 22023 when the row type does not have the columns pg_ta expects.';
COMMENT ON FUNCTION ta.feature_payloads(ta.feature_row[]) IS
'The payloads of NOTIFY ta_features for some feature rows, in order: JSON texts {"version": ta.feature_version(), "rows": [{"market", "symbol", "open_time" (ISO 8601 UTC, milliseconds), "features"}, ...]}, each holding as many consecutive rows as fit in one NOTIFY payload (under 8000 bytes: about 14 rows); features is ta.feature_bytes(row) in standard base64 (RFC 4648, padded): 42 little-endian doubles in ta.feature_row order from ret_1m, NULL as NaN, read with numpy.frombuffer(base64.b64decode(features), ''<f8''). NULL elements and rows without a finite open_time are skipped; a row whose market and symbol alone do not fit (over ~7,300 bytes) is skipped with a WARNING. An empty array for no rows; NULL for NULL. Error 22023 when the row type does not have the columns pg_ta expects.';
COMMENT ON FUNCTION ta.feature_json(ta.feature_row) IS
'A ta.feature_row as JSON text, for clients that want the columns by name (SELECT ta.feature_json(f) FROM market.features f): {"version": ta.feature_version(), "market", "symbol", "open_time", "close_time" (ISO 8601 UTC, milliseconds), and every feature column by name}; numbers in the shortest decimal form that reads back as the same double precision value (bit for bit), NULL as null. NULL for a NULL row. NOTIFY ta_features sends the rows packed (ta.feature_payloads).';
COMMENT ON FUNCTION ta.feature_version() IS
'Version of the feature column set of ta.feature_row (1 in pg_ta 0.3.0): the "version" of ta.feature_json and of the ta_features NOTIFY payloads (ta.feature_payloads); bumped on any change of a feature''s name, formula or NULL rule.';

-- Only the extension owner and superusers (the data schema's SECURITY DEFINER triggers) may
-- fill or step the feature cache (ta._screener_cache_reset, already revoked, resets it).
REVOKE EXECUTE ON FUNCTION ta._features_cache_step(bigint, bigint, text, text, timestamptz, timestamptz, numeric, numeric, numeric, numeric, numeric, numeric, numeric, double precision, double precision, double precision, boolean) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION ta._features_cache_load(bigint, bigint, text, text, ta.screener_checkpoint, timestamptz[], timestamptz[], numeric[], numeric[], numeric[], numeric[], numeric[], numeric[], numeric[], double precision[], double precision[], double precision[]) FROM PUBLIC;

-- pg_ta::pg::ticks::kline_combine
CREATE  FUNCTION "kline_combine"(
	"a" internal, /* Internal */
	"b" internal /* Internal */
) RETURNS internal /* Internal */
IMMUTABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'kline_combine_wrapper';

-- pg_ta::pg::ticks::kline_deserialize
CREATE  FUNCTION "kline_deserialize"(
	"bytes" bytea, /* & [u8] */
	"_internal" internal /* Internal */
) RETURNS internal /* Internal */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'kline_deserialize_wrapper';

-- pg_ta::pg::ticks::kline_final
-- requires:
--   tick_types
CREATE  FUNCTION "kline_final"(
	"state" internal /* Internal */
) RETURNS ta.kline /* Option < KlineResult > */
IMMUTABLE PARALLEL SAFE  
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'kline_final_wrapper';

-- pg_ta::pg::ticks::kline_serialize
CREATE  FUNCTION "kline_serialize"(
	"state" internal /* Internal */
) RETURNS bytea /* Vec < u8 > */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'kline_serialize_wrapper';

-- pg_ta::pg::ticks::kline_trans
-- requires:
--   tick_types
CREATE  FUNCTION "kline_trans"(
	"state" internal, /* Internal */
	"agg_trade_id" bigint, /* Option < i64 > */
	"price" numeric, /* Option < RawNumeric > */
	"quantity" numeric, /* Option < RawNumeric > */
	"first_trade_id" bigint, /* Option < i64 > */
	"last_trade_id" bigint, /* Option < i64 > */
	"is_buyer_maker" bool /* Option < bool > */
) RETURNS internal /* Internal */
IMMUTABLE PARALLEL SAFE  
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'kline_trans_wrapper';

-- pg_ta::pg::ticks::trade_features
-- requires:
--   tick_types
CREATE  FUNCTION "trade_features"(
	"volume" numeric, /* Option < RawNumeric > */
	"quote_volume" numeric, /* Option < RawNumeric > */
	"trades" bigint, /* Option < i64 > */
	"taker_buy_volume" numeric /* Option < RawNumeric > */
) RETURNS ta.trade_features /* Option < TradeFeaturesResult > */
IMMUTABLE PARALLEL SAFE  
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'trade_features_of_kline_wrapper';

-- pg_ta::pg::ticks::trade_features_final
-- requires:
--   tick_types
CREATE  FUNCTION "trade_features_final"(
	"state" internal /* Internal */
) RETURNS ta.trade_features /* Option < TradeFeaturesResult > */
IMMUTABLE PARALLEL SAFE  
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'trade_features_final_wrapper';

-- requires:
--   tick_types
--   kline_trans
--   kline_combine
--   kline_serialize
--   kline_deserialize
--   kline_final
--   trade_features_final
--   trade_features_of_kline
--   book_features_trans_numeric
--   book_features_trans_float8
--   book_features_final

-- Tick aggregates (extension/src/pg/ticks.rs, math in extension/src/ticks/).
CREATE AGGREGATE ta.kline(agg_trade_id bigint, price numeric, quantity numeric,
                          first_trade_id bigint, last_trade_id bigint, is_buyer_maker boolean) (
    SFUNC = ta.kline_trans, STYPE = internal, FINALFUNC = ta.kline_final,
    FINALFUNC_MODIFY = READ_ONLY, COMBINEFUNC = ta.kline_combine,
    SERIALFUNC = ta.kline_serialize, DESERIALFUNC = ta.kline_deserialize, PARALLEL = SAFE);
COMMENT ON AGGREGATE ta.kline(bigint, numeric, numeric, bigint, bigint, boolean) IS 'Binance kline from its trades: ta.kline(agg_trade_id, price, quantity, first_trade_id, last_trade_id, is_buyer_maker) over the aggregate trades of a bucket returns ta.kline (open, high, low, close, volume, quote_volume, trades, taker_buy_volume, taker_buy_quote_volume, first/last trade and aggregate trade ids), numeric and exact: the fields Binance reports for the kline of those trades. Example: SELECT market, symbol, date_bin(''1 minute'', transact_time, ''2000-01-01'') AS open_time, (ta.kline(agg_trade_id, price, quantity, first_trade_id, last_trade_id, is_buyer_maker)).* FROM market.agg_trades GROUP BY 1, 2, 3 (market.trade_candles_1m does this). Output: open/close = price of the lowest/highest agg_trade_id (equal ids: the lower/higher price), high/low = max/min price, volume = sum(quantity), quote_volume = sum(price*quantity), trades = sum(last_trade_id - first_trade_id + 1), taker buy sums over is_buyer_maker = false. Order-independent (a function of the set of rows): works OVER any frame, in parallel plans (combine, serialize, deserialize functions) and in TimescaleDB continuous aggregates. NULL inputs: a row with any NULL argument is skipped; no rows give NULL. Errors (SQLSTATE 22023): NaN/Infinity price or quantity, first_trade_id < 0 or > last_trade_id; 22003 when the trade count overflows bigint. Source: Binance API docs, Kline/Candlestick Data and Aggregate Trade Streams (spot and USD-M).';
COMMENT ON FUNCTION ta.kline_trans(internal, bigint, numeric, numeric, bigint, bigint, boolean) IS 'Transition function of ta.kline and ta.trade_features; internal, not for direct use.';
COMMENT ON FUNCTION ta.kline_combine(internal, internal) IS 'Combine function of ta.kline and ta.trade_features; internal, not for direct use.';
COMMENT ON FUNCTION ta.kline_serialize(internal) IS 'Serialize function of ta.kline and ta.trade_features (parallel workers); internal, not for direct use.';
COMMENT ON FUNCTION ta.kline_deserialize(bytea, internal) IS 'Deserialize function of ta.kline and ta.trade_features (parallel workers); internal, not for direct use.';
COMMENT ON FUNCTION ta.kline_final(internal) IS 'Final function of ta.kline (returns ta.kline); internal, not for direct use.';

CREATE AGGREGATE ta.trade_features(agg_trade_id bigint, price numeric, quantity numeric,
                                   first_trade_id bigint, last_trade_id bigint, is_buyer_maker boolean) (
    SFUNC = ta.kline_trans, STYPE = internal, FINALFUNC = ta.trade_features_final,
    FINALFUNC_MODIFY = READ_ONLY, COMBINEFUNC = ta.kline_combine,
    SERIALFUNC = ta.kline_serialize, DESERIALFUNC = ta.kline_deserialize, PARALLEL = SAFE);
COMMENT ON AGGREGATE ta.trade_features(bigint, numeric, numeric, bigint, bigint, boolean) IS 'Trade-side features of a bucket of aggregate trades (same arguments and rules as ta.kline): returns ta.trade_features (vwap = quote_volume/volume, price units; trades = trade count; taker_buy_ratio = taker_buy_volume/volume, 0..1; signed_volume = taker buys - taker sells, base units, exact). vwap and taker_buy_ratio are NULL when the volume is 0; no rows give NULL. Order-independent, combine/serialize/deserialize as ta.kline. Example: SELECT date_bin(''1 minute'', transact_time, ''2000-01-01''), (ta.trade_features(agg_trade_id, price, quantity, first_trade_id, last_trade_id, is_buyer_maker)).* FROM market.agg_trades WHERE symbol = ''BTCUSDT'' GROUP BY 1. Where there are no trades, ta.trade_features(volume, quote_volume, trades, taker_buy_volume) gives the same columns from a stored kline. Errors: those of ta.kline. Source: Binance aggTrade m field (m = true: the buyer is the maker, the taker sold).';
COMMENT ON FUNCTION ta.trade_features_final(internal) IS 'Final function of ta.trade_features (returns ta.trade_features); internal, not for direct use.';
COMMENT ON FUNCTION ta.trade_features(numeric, numeric, bigint, numeric) IS 'ta.trade_features(volume, quote_volume, trades, taker_buy_volume): the trade-side features of a stored kline from its taker fields, the same columns and formulas as the aggregate over its trades (vwap = quote_volume/volume, taker_buy_ratio = taker_buy_volume/volume, signed_volume = 2*taker_buy_volume - volume exact). NULL when volume, quote_volume or taker_buy_volume is NULL; vwap and taker_buy_ratio NULL when volume = 0. Example: SELECT (ta.trade_features(volume, quote_volume, trades, taker_buy_volume)).* FROM market.candles_1m. Errors (22023): NaN/Infinity input.';

CREATE AGGREGATE ta.book_features(event_time timestamptz, update_id bigint, best_bid_price numeric,
                                  best_bid_qty numeric, best_ask_price numeric, best_ask_qty numeric,
                                  bucket_width interval) (
    SFUNC = ta.book_features_trans, STYPE = internal, FINALFUNC = ta.book_features_final,
    FINALFUNC_MODIFY = READ_ONLY, PARALLEL = SAFE);
CREATE AGGREGATE ta.book_features(event_time timestamptz, update_id bigint, best_bid_price double precision,
                                  best_bid_qty double precision, best_ask_price double precision,
                                  best_ask_qty double precision, bucket_width interval) (
    SFUNC = ta.book_features_trans, STYPE = internal, FINALFUNC = ta.book_features_final,
    FINALFUNC_MODIFY = READ_ONLY, PARALLEL = SAFE);
COMMENT ON AGGREGATE ta.book_features(timestamptz, bigint, numeric, numeric, numeric, numeric, interval) IS 'Book features of a bucket of best bid/ask updates (Binance bookTicker): ta.book_features(event_time, update_id, best_bid_price, best_bid_qty, best_ask_price, best_ask_qty, bucket_width) returns ta.book_features (imbalance, spread_bps, spread_bps_last, weighted_mid, mid, weighted_mid_offset_bps, updates). The updates are sorted by (event_time, update_id); each quote stands from its event_time until the next one, the last until the end of its bucket (date_bin(bucket_width, event_time, ''2000-01-01'') + bucket_width, so ''1 minute'' gives UTC minutes); the time before the bucket''s first update is not covered (a bucket is a function of its own rows). imbalance = mean of (B - A)/(B + A) and spread_bps = mean of (a - b)/mid*10^4 weighted by those durations (in microseconds); weighted_mid = (a*B + b*A)/(A + B), mid and weighted_mid_offset_bps = (weighted_mid - mid)/mid*10^4 of the last quote. Example: SELECT date_bin(''1 minute'', event_time, ''2000-01-01'') AS open_time, (ta.book_features(event_time, update_id, best_bid_price, best_bid_qty, best_ask_price, best_ask_qty, ''1 minute'')).* FROM market.book_tickers WHERE symbol = ''BTCUSDT'' GROUP BY 1 (market.book_1m does this). Order-independent (works OVER any frame; in-order input costs O(1) per row). NULL inputs: a row with a NULL event_time, update_id, price or quantity is skipped; no rows give NULL; imbalance NULL when no quote has B + A > 0, weighted_mid and its offset NULL when the last quote has A + B = 0 (never NaN). Errors (SQLSTATE 22023): prices not finite and > 0, quantities not finite and >= 0, infinite event_time, bucket_width NULL, not positive, with months, or changing within a group. Overloads for numeric (converted to the nearest double precision) and double precision input. Source: S. Stoikov, The micro-price, Quantitative Finance 18(12), 2018 (weighted mid); hftbacktest / nautilus_trader conventions (imbalance, spread in bps).';
COMMENT ON AGGREGATE ta.book_features(timestamptz, bigint, double precision, double precision, double precision, double precision, interval) IS 'ta.book_features for double precision prices and quantities: see ta.book_features(timestamptz, bigint, numeric, numeric, numeric, numeric, interval).';
COMMENT ON FUNCTION ta.book_features_trans(internal, timestamptz, bigint, numeric, numeric, numeric, numeric, interval) IS 'Transition function of ta.book_features (numeric); internal, not for direct use.';
COMMENT ON FUNCTION ta.book_features_trans(internal, timestamptz, bigint, double precision, double precision, double precision, double precision, interval) IS 'Transition function of ta.book_features (double precision); internal, not for direct use.';
COMMENT ON FUNCTION ta.book_features_final(internal) IS 'Final function of ta.book_features (returns ta.book_features); internal, not for direct use.';

COMMENT ON FUNCTION ta._screener_cache_reset(text, text) IS
'Internal (EXECUTE revoked from PUBLIC). Per-session screener and feature engine caches (ta._screener_cache_*, ta._features_cache_*): drops the engines of market and symbol (NULL matches any; no arguments: all); returns the number dropped.';
