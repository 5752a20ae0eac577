#!/usr/bin/env python3
"""Training-set benchmark (issue 17): feature rows into a numpy array, pg_ta vs the client path.

Two cases, each measured in one run:
  A. 500 instruments x 1 day   (720,000 rows)
  B. 1 instrument x 1 year     (525,600 rows)
of synthetic 1m candles (a random walk with jumps, volumes and taker volumes), with the warm-up
the 1-day windows need stored before the range.

pg_ta path: market.feature_vectors(...) (features_range's rows, columns packed) through one
binary COPY into numpy (examples/training_set.fetch_features): the 42 feature columns (feature set 1), NULL -> NaN.
Client path: fetch the candles (open_time, close, volume, quote_volume, taker_buy_volume as
double precision, with the warm-up) with psycopg, then compute the same columns per instrument
with pandas rolling windows and TA-Lib (RSI, MACD), the way a research notebook would; the book
columns are NaN on both sides (no book data).  Both end with a float64 array of the same shape;
a sample of values is compared (the client path's rolling sums are not exact, so equality is
approximate there).

Case B is also fetched over --jobs connections (examples/training_set.fetch_features_parallel:
time slices, each from the day checkpoint before it; asserted equal to the one fetch, bit for
bit).  The client path cannot split a series that way: TA-Lib's RSI and MACD depend on the
whole series before a slice.

Printed: seconds, rows/s, bytes received per row, and the ratio client / pg_ta (goal >= 1.5x,
moonshot 3x).

Usage: tests/bench/features.py --dsn postgresql://postgres@127.0.0.1:5433/postgres
       [--symbols 500] [--days 1] [--year-days 365] [--repeat 3]
It creates (drops first) the database pg_ta_bench_features; the server must have pg_ta.
"""
from __future__ import annotations

import argparse
import importlib.util
import pathlib
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import psycopg
import talib

ROOT = pathlib.Path(__file__).resolve().parents[2]
DB = "pg_ta_bench_features"
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
WARM = 1500  # candles before the range that the 1-day windows and their z-scores need

spec = importlib.util.spec_from_file_location("training_set", ROOT / "examples" / "training_set.py")
ts = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ts)


def apply_schema(conn) -> None:
    for f in sorted((ROOT / "sql").glob("*.sql")):
        with conn.transaction():
            conn.execute(f.read_text())


def generate(conn, prefix: str, n_symbols: int, minutes: int) -> None:
    """n_symbols x minutes candles from T0, one INSERT per 50 symbols (the bulk path builds
    the screener heads, day checkpoints and feature rows), alerts off."""
    for lo in range(1, n_symbols + 1, 50):
        hi = min(n_symbols, lo + 49)
        with conn.transaction():
            conn.execute("SET LOCAL market.evaluate_alerts = off")
            conn.execute("SELECT setseed(%s)", (lo / (n_symbols + 1),))
            conn.execute(
                """
                INSERT INTO market.candles_1m
                SELECT sym, t, t + interval '59.999 seconds',
                       round(o::numeric, 4), round(greatest(o, c)::numeric * 1.0004, 4),
                       round(least(o, c)::numeric * 0.9996, 4), round(c::numeric, 4),
                       round(vol::numeric, 5), round((vol * c)::numeric, 8), 100,
                       round((vol * tb)::numeric, 5), round((vol * tb * c)::numeric, 8), 'spot'
                  FROM (SELECT sym, t, vol, tb,
                               100 * exp(sum(r) OVER w - r) AS o, 100 * exp(sum(r) OVER w) AS c
                          FROM (SELECT %(p)s || lpad(s::text, 4, '0') || 'USDT' AS sym,
                                       %(t0)s::timestamptz + m * interval '1 minute' AS t,
                                       (random() - 0.5) * 0.006
                                         + CASE WHEN random() < 0.002 THEN (random() - 0.5) * 0.06 ELSE 0 END AS r,
                                       1000 + random() * 30000 AS vol, 0.2 + random() * 0.6 AS tb
                                  FROM generate_series(%(lo)s::int, %(hi)s::int) s,
                                       generate_series(0, %(m)s::int - 1) m) x
                        WINDOW w AS (PARTITION BY sym ORDER BY t)) y
                """, {"p": prefix, "lo": lo, "hi": hi, "m": minutes, "t0": T0})


# --------------------------------------------------------------------------------------
# the client path

def client_columns(c: pd.Series, v: pd.Series, q: pd.Series, tb: pd.Series) -> dict:
    """The feature columns of one instrument with pandas and TA-Lib (definitions of
    ta.feature_row; pandas' rolling sums are running sums, not exact ones)."""
    out = {}
    lr = np.log(c / c.shift(1))
    for name, k in (("1m", 1), ("5m", 5), ("15m", 15), ("1h", 60), ("4h", 240), ("1d", 1440)):
        out[f"ret_{name}"] = np.log(c / c.shift(k))
    lr2 = lr * lr
    for name, w in (("5m", 5), ("15m", 15), ("1h", 60), ("4h", 240), ("8h", 480), ("1d", 1440)):
        out[f"rv_{name}"] = np.sqrt(lr2.rolling(w).sum())
    out["rsi_14"] = pd.Series(talib.RSI(c.to_numpy(), timeperiod=14), index=c.index)
    out["macd_hist"] = pd.Series(talib.MACD(c.to_numpy(), 12, 26, 9)[2], index=c.index)
    m20, s20 = c.rolling(20).mean(), c.rolling(20).std(ddof=0)
    out["bb_pct_b"] = (c - (m20 - 2 * s20)) / (4 * s20)
    out["vwap_dist_1d"] = np.log(c / (q.rolling(1440).sum() / v.rolling(1440).sum()))

    def z(x, w):
        return (x - x.rolling(w).mean()) / x.rolling(w).std(ddof=0)
    out["vol_z_1d"] = z(v, 1440)
    out["quote_vol_z_1d"] = z(q, 1440)
    out["taker_buy_ratio"] = tb / v
    nan = pd.Series(np.nan, index=c.index)
    for k in ("imbalance_1m", "spread_bps_1m", "wmid_offset_bps_1m"):
        out[k] = nan
    for k in list(out):
        if k not in ("vol_z_1d", "quote_vol_z_1d"):
            out[k + "_z"] = z(out[k], 60)
    return out


def client_path(dsn: str, symbols: list[str] | None, t_from: datetime, t_to: datetime,
                columns: list[str]):
    """(X, candles fetched): candles with psycopg, features with pandas."""
    with psycopg.connect(dsn) as conn:
        cur = conn.execute(
            "WITH w AS (SELECT market, symbol, market._warm_before(market, symbol, %(f)s) AS w"
            "             FROM market.screener_state WHERE %(s)s::text[] IS NULL OR symbol = ANY (%(s)s))"
            " SELECT c.symbol, c.open_time, c.close::float8, c.volume::float8,"
            "        c.quote_volume::float8, c.taker_buy_volume::float8"
            "   FROM market.candles_1m c JOIN w USING (market, symbol)"
            "  WHERE c.open_time >= coalesce(w.w, '-infinity') AND c.open_time <= %(t)s"
            "  ORDER BY c.market, c.symbol, c.open_time", {"f": t_from, "t": t_to, "s": symbols})
        rows = cur.fetchall()
    df = pd.DataFrame(rows, columns=["symbol", "open_time", "close", "volume", "quote_volume",
                                     "taker_buy_volume"])
    parts = []
    for _sym, g in df.groupby("symbol", sort=True):
        cols = client_columns(g["close"], g["volume"], g["quote_volume"], g["taker_buy_volume"])
        keep = (g["open_time"] >= t_from).to_numpy()
        parts.append(np.column_stack([cols[k].to_numpy()[keep] for k in columns]))
    return np.concatenate(parts), len(rows)


# --------------------------------------------------------------------------------------

def pg_path(dsn: str, symbols, t_from, t_to, jobs: int = 1):
    if jobs > 1:
        instruments, inst, times, X, cols = ts.fetch_features_parallel(dsn, None, symbols, t_from,
                                                                       t_to, jobs)
        return X, cols
    with psycopg.connect(dsn) as conn:
        instruments, inst, times, X, cols = ts.fetch_features(conn, None, symbols, t_from, t_to)
    return X, cols


def measure(label: str, dsn: str, symbols, t_from, t_to, repeat: int, jobs: int = 1) -> dict:
    with psycopg.connect(dsn) as conn:
        cols = ts.feature_columns(conn)
        # the bytes of one binary COPY of what fetch_features reads (payload size)
        t = time.perf_counter()
        n_bytes = 0
        with conn.cursor().copy(
                "COPY (SELECT 0::int8, open_time, features FROM"
                " market.feature_vectors(NULL, %s, %s, %s)) TO STDOUT (FORMAT binary)",
                (symbols, t_from, t_to)) as cp:
            for block in cp:
                n_bytes += len(block)
        first = time.perf_counter() - t
    pg_t, pj_t, cl_t = [], [], []
    X = Xc = None
    for _ in range(repeat):
        t = time.perf_counter()
        X, _ = pg_path(dsn, symbols, t_from, t_to)
        pg_t.append(time.perf_counter() - t)
        if jobs > 1:
            t = time.perf_counter()
            Xj, _ = pg_path(dsn, symbols, t_from, t_to, jobs)
            pj_t.append(time.perf_counter() - t)
            # the slices' rows are the one fetch's rows, bit for bit
            assert np.array_equal(Xj.view(np.int64), X.view(np.int64))
        t = time.perf_counter()
        Xc, n_candles = client_path(dsn, symbols, t_from, t_to, cols)
        cl_t.append(time.perf_counter() - t)
    rows = X.shape[0]
    assert Xc.shape == X.shape, (Xc.shape, X.shape)
    # the same columns: compare where both have a value (relative difference)
    both = ~np.isnan(X) & ~np.isnan(Xc)
    rel = np.abs(X[both] - Xc[both]) / np.maximum(np.abs(X[both]), 1e-300)
    big = np.abs(X[both]) > 1e-9
    worst = float(np.max(rel[big])) if big.any() else 0.0
    nan_only_one = int((np.isnan(X) != np.isnan(Xc)).sum())
    pg_s, cl_s = statistics.median(pg_t), statistics.median(cl_t)
    r = dict(rows=rows, pg_s=pg_s, cl_s=cl_s, ratio=cl_s / pg_s, bytes_row=n_bytes / rows,
             rows_s=rows / pg_s, cl_rows_s=rows / cl_s, worst=worst, nan_diff=nan_only_one,
             candles=n_candles, first=first, jobs=jobs)
    if jobs > 1:
        r["pj_s"] = statistics.median(pj_t)
        r["ratio_jobs"] = cl_s / r["pj_s"]
    print(f"{label}: {rows:,} rows x {X.shape[1]} columns")
    print(f"  pg_ta  (feature_vectors -> binary COPY -> numpy): {pg_s:6.2f} s  {r['rows_s']:>10,.0f} rows/s"
          f"  {r['bytes_row']:.0f} bytes/row received")
    if jobs > 1:
        print(f"  pg_ta, {jobs} connections (fetch_features_parallel): {r['pj_s']:6.2f} s"
              f"  {rows / r['pj_s']:>10,.0f} rows/s  (same array, bit for bit)")
    print(f"  client (candles -> psycopg -> pandas/TA-Lib)   : {cl_s:6.2f} s  {r['cl_rows_s']:>10,.0f} rows/s"
          f"  ({n_candles:,} candles fetched with the warm-up)")
    print(f"  ratio client / pg_ta: x{r['ratio']:.2f} (median of {repeat}; goal >= 1.5x, moonshot 3x);"
          f" same columns: max relative difference {worst:.1e} where both have a value,"
          f" {nan_only_one} values NULL on one side only (pandas' rolling std of a flat window is"
          f" ~1e-9, not 0)", flush=True)
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5433/postgres")
    ap.add_argument("--symbols", type=int, default=500)
    ap.add_argument("--days", type=int, default=1)
    ap.add_argument("--year-days", type=int, default=365)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2,
                    help="case B is also fetched over this many connections (time slices)")
    args = ap.parse_args()
    with psycopg.connect(args.dsn, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB}")
        admin.execute(f"CREATE DATABASE {DB}")
    dsn = psycopg.conninfo.make_conninfo(args.dsn, dbname=DB)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET client_min_messages = warning")
        apply_schema(conn)
        t = time.perf_counter()
        generate(conn, "M", args.symbols, WARM + args.days * 1440)
        print(f"history A: {args.symbols} symbols x {WARM + args.days * 1440} candles in "
              f"{time.perf_counter() - t:.0f} s", flush=True)
        t = time.perf_counter()
        generate(conn, "Y", 1, WARM + args.year_days * 1440)
        print(f"history B: 1 symbol x {WARM + args.year_days * 1440} candles in "
              f"{time.perf_counter() - t:.0f} s", flush=True)
        conn.execute("VACUUM (ANALYZE)")
        conn.execute("CHECKPOINT")
    a_from = T0 + timedelta(minutes=WARM)
    a_to = a_from + timedelta(days=args.days, minutes=-1)
    ra = measure(f"A: {args.symbols} instruments x {args.days} day", dsn,
                 [f"M{i:04d}USDT" for i in range(1, args.symbols + 1)], a_from, a_to, args.repeat)
    b_to = a_from + timedelta(days=args.year_days, minutes=-1)
    rb = measure(f"B: 1 instrument x {args.year_days} days", dsn, ["Y0001USDT"], a_from, b_to,
                 args.repeat, args.jobs)
    verdicts = [("A", ra["ratio"]), ("B", rb["ratio"])]
    if args.jobs > 1:
        verdicts.append((f"B, {args.jobs} connections", rb["ratio_jobs"]))
    for label, ratio in verdicts:
        print(f"{label}: x{ratio:.2f} -> {'MET' if ratio >= 1.5 else 'MISSED'} (goal 1.5x), "
              f"{'MET' if ratio >= 3 else 'missed'} (moonshot 3x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
