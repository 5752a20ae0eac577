-- ta.first / ta.last: the value at the earliest / latest time, for any value type (the
-- result has the input type, numeric stays exact). Same answers as TimescaleDB's first/last.
CREATE AGGREGATE ta.first(value anyelement, "time" timestamptz) (
    SFUNC = ta.first_trans, STYPE = internal, FINALFUNC = ta.bookend_final, FINALFUNC_EXTRA,
    FINALFUNC_MODIFY = READ_ONLY, PARALLEL = SAFE);
CREATE AGGREGATE ta.first(value anyelement, "time" bigint) (
    SFUNC = ta.first_trans, STYPE = internal, FINALFUNC = ta.bookend_final, FINALFUNC_EXTRA,
    FINALFUNC_MODIFY = READ_ONLY, PARALLEL = SAFE);
CREATE AGGREGATE ta.last(value anyelement, "time" timestamptz) (
    SFUNC = ta.last_trans, STYPE = internal, FINALFUNC = ta.bookend_final, FINALFUNC_EXTRA,
    FINALFUNC_MODIFY = READ_ONLY, PARALLEL = SAFE);
CREATE AGGREGATE ta.last(value anyelement, "time" bigint) (
    SFUNC = ta.last_trans, STYPE = internal, FINALFUNC = ta.bookend_final, FINALFUNC_EXTRA,
    FINALFUNC_MODIFY = READ_ONLY, PARALLEL = SAFE);
COMMENT ON AGGREGATE ta.first(anyelement, timestamptz) IS 'ta.first(value, time): the value of the row with the earliest time in the group (ties: the first row seen), returned in the input type unchanged (numeric stays exact). Rows with a NULL time are ignored; a NULL value at the earliest time is returned as NULL. Same answers as TimescaleDB first(value, time). Example: SELECT symbol, ta.first(open, open_time) FROM market.candles_1m GROUP BY symbol.';
COMMENT ON AGGREGATE ta.first(anyelement, bigint) IS 'ta.first(value, time) with a bigint time (e.g. epoch milliseconds): the value at the smallest time (ties: first row seen), in the input type. NULL times ignored.';
COMMENT ON AGGREGATE ta.last(anyelement, timestamptz) IS 'ta.last(value, time): the value of the row with the latest time in the group (ties: the first row seen), returned in the input type unchanged (numeric stays exact). Rows with a NULL time are ignored; a NULL value at the latest time is returned as NULL. Same answers as TimescaleDB last(value, time). Example: SELECT symbol, ta.last(close, open_time) FROM market.candles_1m GROUP BY symbol.';
COMMENT ON AGGREGATE ta.last(anyelement, bigint) IS 'ta.last(value, time) with a bigint time (e.g. epoch milliseconds): the value at the largest time (ties: first row seen), in the input type. NULL times ignored.';
COMMENT ON FUNCTION ta.first_trans(internal, anyelement, timestamptz) IS 'Transition function of ta.first(anyelement, timestamptz); internal, not for direct use.';
COMMENT ON FUNCTION ta.first_trans(internal, anyelement, bigint) IS 'Transition function of ta.first(anyelement, bigint); internal, not for direct use.';
COMMENT ON FUNCTION ta.last_trans(internal, anyelement, timestamptz) IS 'Transition function of ta.last(anyelement, timestamptz); internal, not for direct use.';
COMMENT ON FUNCTION ta.last_trans(internal, anyelement, bigint) IS 'Transition function of ta.last(anyelement, bigint); internal, not for direct use.';
COMMENT ON FUNCTION ta.bookend_final(internal, anyelement, timestamptz) IS 'Final function of ta.first/ta.last (timestamptz time); internal, not for direct use.';
COMMENT ON FUNCTION ta.bookend_final(internal, anyelement, bigint) IS 'Final function of ta.first/ta.last (bigint time); internal, not for direct use.';
