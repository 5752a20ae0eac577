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
