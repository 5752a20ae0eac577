#!/usr/bin/env python3
"""Screener engine throughput (a script, not a test): prints rows/s and ratios measured in one run.

    PG_TA_BENCH_DSN=postgresql://postgres@127.0.0.1:5441/postgres \\
        .venv/bin/python tests/bench/engine.py [--instruments 4] [--candles 250000] [--repeat 3]

(`.ci/bench engine` / `make bench-engine` install a release build and run it.)

Creates (once) pg_ta_bench_engine: I instruments (market 'usdm', symbols S000..) x N one-minute
candles of a deterministic random walk (setseed(0.42)), prices numeric(.., 2), quote volumes
numeric with 4 decimals (5 % zero), primary key (market, symbol, open_time) so the windows
are fed by an index scan.

Timing: server-side wall time of `SELECT count(x) FROM (SELECT <expr> OVER w AS x FROM
pg_ta_bench_engine WINDOW w AS (PARTITION BY market, symbol ORDER BY open_time ROWS BETWEEN
UNBOUNDED PRECEDING AND CURRENT ROW)) s` (one row goes back to the client), median of --repeat
runs after a warm-up (the queries interleaved round-robin, so load on a shared machine hits
all of them alike), max_parallel_workers_per_gather = 0. Baseline: `count(*) OVER w` (scan +
WindowAgg, what every window aggregate pays); `ta.ema(close, 12)` is shown for scale.

  * ta._screener_state, nothing to emit (emit_from = 'infinity'): the engine steps every candle
    and returns NULL except for the first candle of each UTC day (the data schema's bulk
    recompute emits this way plus the rows it stores);
  * ta._screener_state, every row emitted (emit bounds NULL): row, chain and checkpoint tuples;
  * ta.screener: every row (the row tuple only).
"""
import argparse
import statistics
import time

import psycopg

W = ("WINDOW w AS (PARTITION BY market, symbol ORDER BY open_time "
     "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)")
ARGS = "market, symbol, open_time, close_time, open, high, low, close, quote_volume"


def setup(conn, instruments, candles):
    rows = instruments * candles
    have = conn.execute("SELECT to_regclass('pg_ta_bench_engine') IS NOT NULL").fetchone()[0]
    if have and conn.execute("SELECT count(*) FROM pg_ta_bench_engine").fetchone()[0] == rows:
        return
    print(f"creating pg_ta_bench_engine: {instruments} x {candles} candles ...", flush=True)
    conn.execute("DROP TABLE IF EXISTS pg_ta_bench_engine")
    conn.execute("SELECT setseed(0.42)")
    conn.execute(f"""
        CREATE TABLE pg_ta_bench_engine AS
        WITH r AS (SELECT s, i, (random() - 0.5) * 0.003 AS ret, random() AS u, random() AS v,
                          random() AS q
                   FROM generate_series(0, {instruments - 1}) s, generate_series(1, {candles}) i),
             p AS (SELECT s, i, u, v, q, 100 * (s + 1) * exp(sum(ret) OVER (PARTITION BY s ORDER BY i)) AS px
                   FROM r)
        SELECT 'usdm'::text AS market, 'S' || lpad(s::text, 3, '0') AS symbol,
               timestamptz '2024-01-01' + (i - 1) * interval '1 minute' AS open_time,
               timestamptz '2024-01-01' + (i - 1) * interval '1 minute' + interval '59.999 s' AS close_time,
               round((px * (1 + (u - 0.5) * 0.001))::numeric, 2) AS open,
               round((px * (1 + u * 0.002))::numeric, 2) AS high,
               round((px * (1 - v * 0.002))::numeric, 2) AS low,
               round(px::numeric, 2) AS close,
               CASE WHEN q < 0.05 THEN 0 ELSE round((q * 250000)::numeric, 4) END AS quote_volume
        FROM p""")
    conn.execute("ALTER TABLE pg_ta_bench_engine ADD PRIMARY KEY (market, symbol, open_time)")
    conn.execute("VACUUM ANALYZE pg_ta_bench_engine")


def query(expr):
    return f"SELECT count(x) FROM (SELECT {expr} OVER w AS x FROM pg_ta_bench_engine {W}) s"


def run_all(conn, cases, repeat):
    """Median time per case; the cases run interleaved (round-robin), so a burst of load on a
    shared machine hits every case alike and the ratios stay comparable."""
    for _, expr in cases:
        conn.execute(query(expr)).fetchone()  # warm-up
    times = {label: [] for label, _ in cases}
    counts = {}
    for _ in range(repeat):
        for label, expr in cases:
            t0 = time.perf_counter()
            counts[label] = conn.execute(query(expr)).fetchone()[0]
            times[label].append(time.perf_counter() - t0)
    return {label: (statistics.median(ts), min(ts), max(ts), counts[label]) for label, ts in times.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn", default=None)
    ap.add_argument("--instruments", type=int, default=4)
    ap.add_argument("--candles", type=int, default=250_000)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    import os
    dsn = a.dsn or os.environ["PG_TA_BENCH_DSN"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_ta")
        conn.execute("SET max_parallel_workers_per_gather = 0")
        conn.execute("SET work_mem = '256MB'")
        setup(conn, a.instruments, a.candles)
        rows = a.instruments * a.candles
        cases = [
            ("count(*) OVER w (baseline)", "count(*)"),
            ("ta.ema(close, 12)", "ta.ema(close, 12)"),
            ("ta._screener_state, nothing to emit",
             f"ta._screener_state({ARGS}, NULL, 'infinity', NULL)"),
            ("ta._screener_state, every row emitted", f"ta._screener_state({ARGS}, NULL, NULL, NULL)"),
            ("ta.screener, every row", f"ta.screener({ARGS})"),
        ]
        print(f"{rows} rows ({a.instruments} instruments x {a.candles}), median of {a.repeat} interleaved runs:")
        print(f"{'query':<40} {'median':>8} {'min..max':>15} {'rows/s':>11} {'x base':>7} {'net us/row':>10} {'non-NULL':>9}")
        res = run_all(conn, cases, a.repeat)
        base = res[cases[0][0]][0]
        for label, _ in cases:
            t, lo, hi, n = res[label]
            print(f"{label:<40} {t * 1000:6.0f}ms {lo * 1000:6.0f}..{hi * 1000:6.0f}ms {rows / t:11,.0f}"
                  f" {t / base:7.2f} {(t - base) / rows * 1e6:10.2f} {n:9}", flush=True)


if __name__ == "__main__":
    main()
