-- Composite result types of the multi-output aggregates (TA-Lib output names).
CREATE TYPE ta.macd_result AS (macd double precision, macd_signal double precision, macd_hist double precision);
COMMENT ON TYPE ta.macd_result IS 'Result of ta.macd: macd = EMA(fast) - EMA(slow), macd_signal = EMA(signal) of macd, macd_hist = macd - macd_signal (TA-Lib MACD outputs), price units.';
CREATE TYPE ta.bbands_result AS (upper_band double precision, middle_band double precision, lower_band double precision);
COMMENT ON TYPE ta.bbands_result IS 'Result of ta.bbands (TA-Lib BBANDS outputs), price units.';
CREATE TYPE ta.stoch_result AS (slow_k double precision, slow_d double precision);
COMMENT ON TYPE ta.stoch_result IS 'Result of ta.stoch (TA-Lib STOCH outputs slowk, slowd), percent 0..100.';
CREATE TYPE ta.fib_pivots_result AS (r3 double precision, r2 double precision, r1 double precision, pivot double precision,
                                     s1 double precision, s2 double precision, s3 double precision);
COMMENT ON TYPE ta.fib_pivots_result IS 'Result of ta.fib_pivots: pivot = (H+L+C)/3, R/S levels at 0.382, 0.618 and 1.0 times (H-L), price units.';
CREATE TYPE ta.ohlcv_result AS (open numeric, high numeric, low numeric, close numeric, volume numeric);
COMMENT ON TYPE ta.ohlcv_result IS 'Result of ta.ohlcv: a rolled-up candle, numeric (exact).';
