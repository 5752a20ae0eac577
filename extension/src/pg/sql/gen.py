#!/usr/bin/env python3
"""Single source of the indicator aggregates' SQL (CREATE AGGREGATE + COMMENT ON) and of the
SQL reference (docs/reference.md, between the gen.py markers).

    python3 extension/src/pg/sql/gen.py      # rewrites extension/src/pg/sql/*.sql and the docs

The Rust side (`extension/src/pg/*.rs`) defines the transition/final functions these files
reference; `extension_sql_file!` pulls each file into the extension script.
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", "..", ".."))

NULLS = "NULL inputs: the row is skipped (state unchanged; in window mode that row shows the current value)."
PLAIN = ("As a plain aggregate it returns the value after the last row; rows reach a plain aggregate in no defined "
         "order, so write the ORDER BY inside the call, e.g. {ex}.")
WINDOW = "Use as a window function: {ex} OVER (PARTITION BY symbol ORDER BY open_time)."
PARAMS_CONST = "Parameters must be constant within a partition/group (checked; a change raises)."
NUMERIC = "Overloads for double precision and numeric input (numeric is converted to the nearest double precision)."
OVERFLOW = ("SQLSTATE 22003 (numeric_value_out_of_range) when finite inputs overflow the arithmetic "
            "(e.g. values near ±1e308): no Infinity or NaN is returned.")

# name, kind, inputs (name list; type substituted), params [(name, type)], result, doc fields
A = []

def agg(name, inputs, params, result, title, output, lookback, prange, errors, source, example, extra=None, ex_plain=None,
        talib=True, frame=False):
    A.append(dict(name=name, inputs=inputs, params=params, result=result, title=title, output=output,
                  lookback=lookback, prange=prange, errors=errors, source=source, example=example,
                  extra=extra, ex_plain=ex_plain, talib=talib, frame=frame))

TP = [("time_period", "integer")]
ERR_TP = "NaN/Infinity input, NULL or out-of-range time_period ({r})"

agg("sma", ["value"], TP, "double precision", "Simple moving average (TA-Lib SMA)",
    "mean of the last time_period values, price units", "time_period-1 rows are NULL", "time_period 2..100000",
    ERR_TP.format(r="2..100000"), "TA-Lib ta_SMA.c (running total, identical arithmetic)", "ta.sma(close, 30)")
agg("ema", ["value"], TP, "double precision", "Exponential moving average (TA-Lib EMA)",
    "price units; seeded with the SMA of the first time_period values, then ema = (x-ema)*k + ema, k = 2/(time_period+1)",
    "time_period-1 rows are NULL", "time_period 2..100000",
    ERR_TP.format(r="2..100000"), "TA-Lib ta_EMA.c (bit-identical)", "ta.ema(close, 12)")
agg("wma", ["value"], TP, "double precision", "Weighted moving average (TA-Lib WMA)",
    "weights 1..N, newest heaviest, divided by N(N+1)/2; price units", "time_period-1 rows are NULL",
    "time_period 2..100000", ERR_TP.format(r="2..100000"), "TA-Lib ta_WMA.c", "ta.wma(close, 30)")
agg("dema", ["value"], TP, "double precision", "Double exponential moving average (TA-Lib DEMA)",
    "2*EMA - EMA(EMA), price units", "2*(time_period-1) rows are NULL", "time_period 2..100000",
    ERR_TP.format(r="2..100000"), "TA-Lib ta_DEMA.c; P. Mulloy, TASC 1994", "ta.dema(close, 30)")
agg("tema", ["value"], TP, "double precision", "Triple exponential moving average (TA-Lib TEMA)",
    "EMA3 + (3*EMA1 - 3*EMA2), price units", "3*(time_period-1) rows are NULL", "time_period 2..100000",
    ERR_TP.format(r="2..100000"), "TA-Lib ta_TEMA.c; P. Mulloy, TASC 1994", "ta.tema(close, 30)")
agg("rsi", ["value"], TP, "double precision", "Relative strength index, Wilder smoothing (TA-Lib RSI)",
    "0..100; average gain/loss seeded with the simple means of the first time_period changes, then "
    "avg = (avg*(N-1) + x)/N; 0 on a flat series (TA-Lib convention)",
    "time_period rows are NULL (14 for RSI 14)", "time_period 2..100000", ERR_TP.format(r="2..100000"),
    "TA-Lib ta_RSI.c; J. W. Wilder, New Concepts in Technical Trading Systems (1978). Difference: TA-Lib returns 0 when "
    "avg_gain+avg_loss < 1e-14 (prices below ~1e-12); ours only when it is exactly 0",
    "ta.rsi(close, 14)", extra="ta.rsi_step carries RSI forward one value at a time in a double precision[] state.")
agg("roc", ["value"], TP, "double precision", "Rate of change (TA-Lib ROC)",
    "percent: (x/x[t-N] - 1)*100; 0 when x[t-N] = 0", "time_period rows are NULL", "time_period 1..100000",
    ERR_TP.format(r="1..100000"), "TA-Lib ta_ROC.c", "ta.roc(close, 10)")
agg("mom", ["value"], TP, "double precision", "Momentum (TA-Lib MOM)", "x - x[t-N], price units",
    "time_period rows are NULL", "time_period 1..100000", ERR_TP.format(r="1..100000"), "TA-Lib ta_MOM.c",
    "ta.mom(close, 10)")
agg("stddev", ["value"], TP, "double precision", "Rolling population standard deviation (TA-Lib STDDEV, nb_dev 1)",
    "price units; sqrt(mean(x^2) - mean(x)^2) over the last time_period values (not the built-in stddev, which is the "
    "sample deviation of a whole group)", "time_period-1 rows are NULL", "time_period 2..100000",
    ERR_TP.format(r="2..100000"),
    "TA-Lib ta_STDDEV.c/ta_VAR.c (same running sums). Difference: a variance below min(1e-14, 1e-12*mean(x^2)) is 0; "
    "TA-Lib zeroes every variance below 1e-14, i.e. every price series below ~1e-6", "ta.stddev(close, 20)")
agg("stddev", ["value"], TP + [("nb_dev", "double precision")], "double precision",
    "Rolling population standard deviation times nb_dev (TA-Lib STDDEV with optInNbDev)",
    "price units; sqrt(mean(x^2) - mean(x)^2) * nb_dev over the last time_period values", "time_period-1 rows are NULL",
    "time_period 2..100000; nb_dev finite and >= 0 (TA-Lib default 1)",
    "NaN/Infinity input, NULL or out-of-range time_period (2..100000), nb_dev < 0 or not finite",
    "TA-Lib ta_STDDEV.c; same variance clamp difference as the two-argument form", "ta.stddev(close, 20, 2)")
agg("volatility", ["close"], TP, "double precision", "Volatility: population standard deviation of log returns (not in TA-Lib)",
    "fraction per bar (not annualised, not percent): stddev of the last time_period values of ln(c_t/c_{t-1}), 1/N",
    "time_period rows are NULL (needs time_period+1 closes)", "time_period 2..100000; closes > 0",
    "NaN/Infinity or close <= 0, NULL or out-of-range time_period (2..100000)",
    "seed documents; close-to-close estimator (e.g. Hull, Options, Futures and Other Derivatives)",
    "ta.volatility(close, 60)", talib=False)

HLC = ["high", "low", "close"]
agg("atr", HLC, TP, "double precision", "Average true range (TA-Lib ATR)",
    "price units; seeded with the mean of the first time_period true ranges, then Wilder smoothing",
    "time_period rows are NULL", "time_period 1..100000 (1 = TRANGE)", ERR_TP.format(r="1..100000"),
    "TA-Lib ta_ATR.c; Wilder (1978)", "ta.atr(high, low, close, 14)")
agg("natr", HLC, TP, "double precision", "Normalized average true range (TA-Lib NATR)",
    "percent of the close: ATR/close*100; 0 when the close is 0", "time_period rows are NULL",
    "time_period 1..100000", ERR_TP.format(r="1..100000"),
    "TA-Lib ta_NATR.c. Difference: TA-Lib returns 0 when |close| < 1e-14; ours only when close = 0",
    "ta.natr(high, low, close, 14)")
agg("adx", HLC, TP, "double precision", "Average directional movement index (TA-Lib ADX)",
    "0..100; Wilder-smoothed +DM/-DM/TR, DX averaged with Wilder smoothing", "2*time_period-1 rows are NULL (27 for 14)",
    "time_period 2..100000", ERR_TP.format(r="2..100000"),
    "TA-Lib ta_ADX.c; Wilder (1978). Difference: TA-Lib zero tests are |x| < 1e-14 (freezes ADX below ~1e-13 prices); ours exact",
    "ta.adx(high, low, close, 14)")
agg("cci", HLC, TP, "double precision", "Commodity channel index (TA-Lib CCI)",
    "dimensionless: (tp - mean)/(0.015*mean deviation) of typical prices tp = (h+l+c)/3; 0 when either is 0",
    "time_period-1 rows are NULL", "time_period 2..100000", ERR_TP.format(r="2..100000"),
    "TA-Lib ta_CCI.c; D. Lambert (1980)", "ta.cci(high, low, close, 14)")
agg("willr", HLC, TP, "double precision", "Williams' %R (TA-Lib WILLR)",
    "-100..0: (highest high - close)/((highest high - lowest low)/-100); 0 when the range is 0",
    "time_period-1 rows are NULL", "time_period 2..100000", ERR_TP.format(r="2..100000"),
    "TA-Lib ta_WILLR.c; L. Williams", "ta.willr(high, low, close, 14)")
agg("trange", HLC, [], "double precision", "True range (TA-Lib TRANGE)",
    "price units: max(high-low, |high-prev close|, |low-prev close|)", "the first row is NULL",
    "none", "NaN/Infinity input", "TA-Lib ta_TRANGE.c; Wilder (1978)", "ta.trange(high, low, close)")
agg("obv", ["close", "volume"], [], "double precision", "On-balance volume (TA-Lib OBV)",
    "volume units, cumulative: starts at the first row's volume, +volume on an up close, -volume on a down close",
    "none (the first row has a value)", "none", "NaN/Infinity input", "TA-Lib ta_OBV.c; J. Granville (1963)",
    "ta.obv(close, volume)")
agg("mfi", ["high", "low", "close", "volume"], TP, "double precision", "Money flow index (TA-Lib MFI)",
    "0..100: 100*positive/(positive+negative) money flow (typical price * volume) over the last time_period rows; "
    "0 when both are 0 (e.g. zero volume)", "time_period rows are NULL", "time_period 2..100000",
    ERR_TP.format(r="2..100000"),
    "TA-Lib ta_MFI.c. Difference: TA-Lib returns 0 whenever positive+negative < 1.0 (price*volume units), which zeroes "
    "cheap coins and small volumes; ours only when it is exactly 0", "ta.mfi(high, low, close, volume, 14)")

agg("macd", ["value"], [("fast_period", "integer"), ("slow_period", "integer"), ("signal_period", "integer")],
    "ta.macd_result", "Moving average convergence/divergence (TA-Lib MACD)",
    "ta.macd_result(macd, macd_signal, macd_hist), price units: macd = EMA(fast) - EMA(slow) with both EMA seed windows "
    "ending on bar slow_period-1; macd_signal = EMA(signal_period) of macd seeded with the SMA of its first signal_period "
    "values; macd_hist = macd - macd_signal. Select fields with (ta.macd(...) OVER w).macd",
    "slow_period-1 + signal_period-1 rows are NULL (33 for 12/26/9)",
    "fast_period 2..100000, slow_period 2..100000, fast_period < slow_period (TA-Lib swaps them; we reject), "
    "signal_period 1..100000",
    "NaN/Infinity input, NULL/out-of-range periods, fast_period >= slow_period",
    "TA-Lib ta_MACD.c (bit-identical); G. Appel (1979)", "ta.macd(close, 12, 26, 9)",
    extra="ta.macd_step carries MACD forward one value at a time in a double precision[] state.")
agg("bbands", ["value"], [("time_period", "integer"), ("nb_dev_up", "double precision"), ("nb_dev_dn", "double precision")],
    "ta.bbands_result", "Bollinger bands (TA-Lib BBANDS, MA type SMA)",
    "ta.bbands_result(upper_band, middle_band, lower_band), price units: SMA +/- nb_dev * population standard deviation",
    "time_period-1 rows are NULL", "time_period 2..100000; nb_dev_up, nb_dev_dn finite and >= 0",
    "NaN/Infinity input, NULL/out-of-range time_period, nb_dev < 0 or not finite",
    "TA-Lib ta_BBANDS.c; J. Bollinger. Same variance clamp difference as ta.stddev",
    "ta.bbands(close, 20, 2, 2)")
agg("stoch", HLC, [("fastk_period", "integer"), ("slowk_period", "integer"), ("slowd_period", "integer")],
    "ta.stoch_result", "Stochastic oscillator (TA-Lib STOCH, slow %K and %D smoothed with SMA, TA-Lib's default MA type)",
    "ta.stoch_result(slow_k, slow_d), percent 0..100: fast %K = (close - lowest low)/((highest high - lowest low)/100) "
    "over fastk_period rows (0 when the range is 0), slow_k = SMA(slowk_period) of it, slow_d = SMA(slowd_period) of slow_k",
    "fastk_period-1 + slowk_period-1 + slowd_period-1 rows are NULL (8 for 5,3,3)",
    "fastk_period, slowk_period, slowd_period 1..100000 (TA-Lib defaults 5, 3, 3)",
    "NaN/Infinity input, NULL/out-of-range periods", "TA-Lib ta_STOCH.c; G. Lane", "ta.stoch(high, low, close, 5, 3, 3)")

agg("vwap", ["price", "volume"], [], "double precision", "Volume-weighted average price, running (not in TA-Lib)",
    "price units: sum(price*volume)/sum(volume) over all rows so far (the window frame); NULL while sum(volume) = 0",
    "none (NULL only while the volume sum is 0)", "none", "NaN/Infinity input",
    "seed documents; Berkowitz, Logue and Noser, J. Finance 1988", "ta.vwap(close, volume)", talib=False)
agg("vwap", ["price", "volume"], TP, "double precision", "Volume-weighted average price over the last time_period rows (not in TA-Lib)",
    "price units: sum(price*volume)/sum(volume) over the last time_period rows; NULL while that volume sum is 0",
    "time_period-1 rows are NULL", "time_period 1..100000", ERR_TP.format(r="1..100000"),
    "seed documents", "ta.vwap(close, volume, 60)", talib=False)
agg("vcp", ["price", "weighted_average", "high", "low"], [], "double precision",
    "VCP score of the seed screener (not in TA-Lib)",
    "(P/WA)*((P-L)-(H-P))/(H-L) with P = last price, WA = last weighted_average, H = max(high), L = min(low) over the "
    "rows of the frame; 0 when H = L; NULL when WA = 0 or no row. Per candle: "
    "ta.vcp(close, (open+close)/2, high, low) OVER (ORDER BY open_time ROWS CURRENT ROW)",
    "none (the frame chooses the rows)", "none", "NaN/Infinity input", "seed project's screener (DESIGN.md)",
    "ta.vcp(close, (open+close)/2, high, low)", talib=False, frame=True)
agg("fib_pivots", HLC, [], "ta.fib_pivots_result", "Fibonacci pivot points of the seed screener (not in TA-Lib)",
    "ta.fib_pivots_result(r3, r2, r1, pivot, s1, s2, s3), price units: pivot = (H+L+C)/3 with H = max(high), "
    "L = min(low) over the frame and C = the last close; R1/R2/R3 = pivot + {0.382, 0.618, 1.0}*(H-L), "
    "S1/S2/S3 = pivot - the same. Rolling 1-day pivots on 1m candles: "
    "ta.fib_pivots(high, low, close) OVER (PARTITION BY symbol ORDER BY open_time ROWS BETWEEN 1439 PRECEDING AND CURRENT ROW)",
    "none (the frame chooses the rows)", "none", "NaN/Infinity input", "seed project's screener (DESIGN.md)",
    "ta.fib_pivots(high, low, close)", talib=False, frame=True)
agg("imbalance", ["bid_qty", "ask_qty"], [], "double precision", "Order-book / taker-flow imbalance (not in TA-Lib)",
    "(sum(bid_qty) - sum(ask_qty))/(sum(bid_qty) + sum(ask_qty)) over the frame, -1..1 for non-negative inputs; NULL when "
    "the denominator is 0", "none", "none", "NaN/Infinity input", "seed documents",
    "ta.imbalance(taker_buy_volume, volume - taker_buy_volume)", talib=False, frame=True)


def sql_type(t, numeric):
    return "numeric" if (numeric and t == "double precision") else t


def comment_text(a):
    ex = a["example"]
    ex_ord = ex[:-1] + " ORDER BY open_time)"
    parts = [a["title"] + "."]
    if a["frame"]:
        parts.append(f"Aggregate over the rows of a group or window frame: {ex} OVER (... ROWS ...) chooses the bars.")
    else:
        parts.append(WINDOW.format(ex=ex))
    parts.append("Output: " + a["output"] + ".")
    parts.append("Lookback: " + a["lookback"] + ".")
    if a["prange"] != "none":
        parts.append("Parameters: " + a["prange"] + ". " + PARAMS_CONST)
    parts.append(NULLS)
    parts.append("Errors (SQLSTATE 22023): " + a["errors"] + ".")
    parts.append(OVERFLOW)
    if not a["frame"]:
        parts.append(PLAIN.format(ex=ex_ord))
    if a["extra"]:
        parts.append(a["extra"])
    parts.append(NUMERIC)
    parts.append("Source: " + a["source"] + ".")
    return " ".join(parts)


def q(s):
    return "'" + s.replace("'", "''") + "'"


def write_sql():
    by_file = {}
    for a in A:
        by_file.setdefault(a["name"], []).append(a)
    for name, aggs in by_file.items():
        out = [f"-- GENERATED by extension/src/pg/sql/gen.py: ta.{name}"]
        finals_done = False
        for a in aggs:
            for numeric in (False, True):
                ins = ", ".join(f"{n} {sql_type('double precision', numeric)}" for n in a["inputs"])
                ps = "".join(f", {n} {t}" for n, t in a["params"])
                types = ", ".join([sql_type("double precision", numeric)] * len(a["inputs"]) + [t for _, t in a["params"]])
                out.append(f"CREATE AGGREGATE ta.{name}({ins}{ps}) (\n"
                           f"    SFUNC = ta.{name}_trans, STYPE = internal, FINALFUNC = ta.{name}_final,\n"
                           f"    FINALFUNC_MODIFY = READ_ONLY, PARALLEL = SAFE);")
                out.append(f"COMMENT ON AGGREGATE ta.{name}({types}) IS {q(comment_text(a))};")
                out.append(f"COMMENT ON FUNCTION ta.{name}_trans(internal, {types}) IS "
                           f"{q(f'Transition function of ta.{name}({types}); internal, not for direct use.')};")
            if not finals_done:
                result = a["result"]
                text = f"Final function of ta.{name} (returns {result}); internal, not for direct use."
                out.append(f"COMMENT ON FUNCTION ta.{name}_final(internal) IS {q(text)};")
                finals_done = True
        with open(os.path.join(HERE, f"{name}.sql"), "w") as f:
            f.write("\n".join(out) + "\n")


def doc_entry(a):
    ins = ", ".join(f"{n}" for n in a["inputs"])
    ps = "".join(f", {n} {t}" for n, t in a["params"])
    sig = f"ta.{a['name']}({', '.join(n + ' T' for n in a['inputs'])}{ps}) → {a['result']}"
    ex = a["example"]
    lines = [f"#### `{sig}`", "", a["title"] + ". Aggregate, usable as a window function; "
             "`T` is `double precision` or `numeric` (one overload each; numeric is converted to the nearest double).", ""]
    lines.append(f"- **Output**: {a['output']}.")
    lines.append(f"- **Lookback / warm-up**: {a['lookback']}.")
    if a["prange"] != "none":
        lines.append(f"- **Parameters**: {a['prange']}; constant within a partition (checked).")
    lines.append("- **NULL inputs**: the row is skipped (state unchanged; in window mode that row shows the current value).")
    lines.append(f"- **Errors** (SQLSTATE 22023, message `ta.{a['name']}: <argument> ...`): {a['errors']}. {OVERFLOW}")
    if not a["frame"]:
        ex_ord = ex[:-1] + " ORDER BY open_time)"
        lines.append(f"- **Plain aggregate**: returns the value after the last row; write `{ex_ord}`.")
    if a["extra"]:
        lines.append(f"- **See also**: {a['extra']}")
    lines.append(f"- **Source**: {a['source']}.")
    lines.append(f"- **Worked example**: `pg_regress/sql/ta_{a['name']}.sql`.")
    lines.append("")
    if a["frame"]:
        lines.append("```sql")
        lines.append(f"SELECT open_time, {ex} OVER (PARTITION BY symbol ORDER BY open_time ROWS CURRENT ROW)")
        lines.append("FROM market.candles_1m WHERE symbol = 'BTCUSDT' ORDER BY open_time;")
        lines.append("```")
    else:
        lines.append("```sql")
        lines.append(f"SELECT open_time, close, {ex} OVER w")
        lines.append("FROM market.candles_1m WHERE symbol = 'BTCUSDT'")
        lines.append("WINDOW w AS (PARTITION BY symbol ORDER BY open_time) ORDER BY open_time;")
        lines.append("```")
    lines.append("")
    return "\n".join(lines)


def write_docs():
    path = os.path.join(ROOT, "docs", "reference.md")
    begin, end = "<!-- BEGIN GENERATED: gen.py -->", "<!-- END GENERATED: gen.py -->"
    text = open(path).read()
    i, j = text.index(begin) + len(begin), text.index(end)
    body = "\n\n" + "\n".join(doc_entry(a) for a in A) + "\n"
    with open(path, "w") as f:
        f.write(text[:i] + body + text[j:])


if __name__ == "__main__":
    write_sql()
    write_docs()
