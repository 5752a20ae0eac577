-- The screener engine's SQL surface (pg_ta 0.2.0): ta._screener_state (window aggregate of
-- the data schema), ta.screener (public aggregate) and the per-session cache functions.
CREATE AGGREGATE ta._screener_state(
    market text, symbol text, open_time timestamptz, close_time timestamptz,
    open numeric, high numeric, low numeric, close numeric, quote_volume numeric,
    start ta.screener_checkpoint, emit_from timestamptz, emit_to timestamptz) (
    SFUNC = ta._screener_state_trans, STYPE = internal, FINALFUNC = ta._screener_state_final,
    FINALFUNC_MODIFY = READ_ONLY, PARALLEL = SAFE);
COMMENT ON AGGREGATE ta._screener_state(text, text, timestamptz, timestamptz, numeric, numeric, numeric, numeric, numeric, ta.screener_checkpoint, timestamptz, timestamptz) IS
'Internal (the data schema''s set-based path: bulk writes, past screener rows, screener_range, backtests). The screener engine over the 1m candles of one instrument, as a window aggregate: ta._screener_state(market, symbol, open_time, close_time, open, high, low, close, quote_volume, start, emit_from, emit_to) OVER (PARTITION BY market, symbol ORDER BY open_time ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW). start (read on the first row; NULL = a fresh series) is the ta.screener_checkpoint before the first row. Returns a ta.screener_state for every row with emit_from <= open_time <= emit_to (a NULL bound is open) and for every row that is the first candle of its UTC day (its day_checkpoint is set); NULL for the other rows (cheap: no numeric arithmetic, no tuple). Values that need a candle before start are NULL, so start from a checkpoint at least 2879 candles before the first row to emit. Errors: SQLSTATE 22023 when open_time is not strictly increasing within the partition, market/symbol change within it, a price is NaN/Infinity, or start is malformed; 22004 for a NULL candle value; 22003 where the 0.1.0 SQL formulas overflow. Source: pg_ta 0.1.0 sql/003_screener_state.sql and sql/004_metrics.sql (bit-identical).';
COMMENT ON FUNCTION ta._screener_state_trans(internal, text, text, timestamptz, timestamptz, numeric, numeric, numeric, numeric, numeric, ta.screener_checkpoint, timestamptz, timestamptz) IS
'Transition function of ta._screener_state; internal, not for direct use.';
COMMENT ON FUNCTION ta._screener_state_final(internal) IS
'Final function of ta._screener_state (returns ta.screener_state or NULL); internal, not for direct use.';

CREATE AGGREGATE ta.screener(
    market text, symbol text, open_time timestamptz, close_time timestamptz,
    open numeric, high numeric, low numeric, close numeric, quote_volume numeric) (
    SFUNC = ta.screener_trans, STYPE = internal, FINALFUNC = ta.screener_final,
    FINALFUNC_MODIFY = READ_ONLY, PARALLEL = SAFE);
COMMENT ON AGGREGATE ta.screener(text, text, timestamptz, timestamptz, numeric, numeric, numeric, numeric, numeric) IS
'The screener over your own 1m candles: every metric of ta.screener_row (windows of 5, 15, 60, 240, 480 and 1440 candles, 1m change and volume, last-3 extremes, volatility_10, VCP, Fibonacci pivots of the 1d window, RSI(14), MACD(12,26,9)) for each candle of an instrument, computed by the same engine as the data schema (market.screener_state). Use as a window function, one partition per instrument: SELECT (s).symbol, (s).open_time, (s).change_5m, (s).vol_1h FROM (SELECT ta.screener(''spot'', symbol, open_time, close_time, open, high, low, close, quote_volume) OVER (PARTITION BY symbol ORDER BY open_time) AS s FROM my_candles) q; as a plain aggregate it returns the row of the last candle: SELECT (r).* FROM (SELECT ta.screener(''spot'', symbol, open_time, close_time, open, high, low, close, quote_volume ORDER BY open_time) AS r FROM my_candles WHERE symbol = ''BTCUSDT'') q. The series starts at the first row of the partition (windows count rows, NULL until full). Input: numeric prices and quote volume (quote asset), timestamptz times. Errors: SQLSTATE 22023 when open_time is not strictly increasing (use ORDER BY open_time; duplicate open_times are rejected) or market/symbol change within a partition or group, or a price is NaN/Infinity; 22004 for a NULL argument; 22003 when the formulas overflow double precision. Source: pg_ta 0.1.0''s screener (sql/003, sql/004 at commit 5dea118), bit-identical; DESIGN.md screener semantics.';
COMMENT ON FUNCTION ta.screener_trans(internal, text, text, timestamptz, timestamptz, numeric, numeric, numeric, numeric, numeric) IS
'Transition function of ta.screener; internal, not for direct use.';
COMMENT ON FUNCTION ta.screener_final(internal) IS
'Final function of ta.screener (returns ta.screener_row); internal, not for direct use.';

COMMENT ON FUNCTION ta._screener_cache_step(bigint, bigint, text, text, timestamptz, timestamptz, numeric, numeric, numeric, numeric, numeric) IS
'Internal (the data schema''s live path; EXECUTE revoked from PUBLIC). Per-session screener cache: when this session holds the engine of (market, symbol) and it ends at the instrument''s head row (head_candles candles, head row written by transaction head_xmin), pushes the candle and returns its ta.screener_state; the entry''s token becomes the current (sub)transaction id, which is the xmin of the head row the caller updates in the same (sub)transaction. Otherwise drops any entry and returns NULL (reload with ta._screener_cache_load). Same values as ta._screener_state bit for bit. Errors as ta._screener_state (the entry is dropped).';
COMMENT ON FUNCTION ta._screener_cache_load(bigint, bigint, text, text, ta.screener_checkpoint, timestamptz[], timestamptz[], numeric[], numeric[], numeric[], numeric[], numeric[]) IS
'Internal (the data schema''s live path; EXECUTE revoked from PUBLIC). Per-session screener cache: builds the engine of (market, symbol) from start (NULL = fresh) and the candles given as arrays, oldest first, and keeps it with token head_xmin when its candle count equals head_candles (otherwise no entry is kept); returns the candle count. For exact 1d windows give at least the 2879 candles before the next one. Errors: SQLSTATE 22023 for arrays of different lengths, unordered times, NaN/Infinity, a malformed start; 22004 for NULL arguments or elements.';
COMMENT ON FUNCTION ta._screener_cache_reset(text, text) IS
'Internal (EXECUTE revoked from PUBLIC). Per-session screener and feature engine caches (ta._screener_cache_*, ta._features_cache_*): drops the engines of market and symbol (NULL matches any; no arguments: all); returns the number dropped.';

-- Only the extension owner and superusers (the data schema's SECURITY DEFINER triggers) may
-- fill, step or reset a cache: no other role can plant window values (issue 8).
REVOKE EXECUTE ON FUNCTION ta._screener_cache_step(bigint, bigint, text, text, timestamptz, timestamptz, numeric, numeric, numeric, numeric, numeric) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION ta._screener_cache_load(bigint, bigint, text, text, ta.screener_checkpoint, timestamptz[], timestamptz[], numeric[], numeric[], numeric[], numeric[], numeric[]) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION ta._screener_cache_reset(text, text) FROM PUBLIC;
