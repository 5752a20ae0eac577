#!/usr/bin/env python3
"""pg_ta indicator benchmark (a script, not a test): prints ratios measured in one run.

    PG_TA_BENCH_DSN=postgresql://postgres@127.0.0.1:5441/bench \
        .venv/bin/python tests/bench/indicators.py [--rows 1000000] [--repeat 3]

Install the extension with `cargo pgrx install --release` first. The script creates (once) the
table pg_ta_bench: one symbol, N one-minute candles of a deterministic random walk
(setseed(0.42)), prices numeric(.., 2) like market data plus a double precision copy.

Timing: server-side work only, as wall time of `SELECT count(x) FROM (SELECT <expr> OVER w AS x
FROM pg_ta_bench WINDOW w AS (ORDER BY open_time)) s` (one row goes back to the client), each
query run --repeat times after one warm-up run, median reported. The end-to-end comparison
fetches every row to this Python process (psycopg 3) and is timed the same way.
"""
import argparse
import os
import statistics
import time

import numpy as np
import psycopg
import talib

W = "WINDOW w AS (ORDER BY open_time)"


def setup(conn, rows):
    have = conn.execute("SELECT to_regclass('pg_ta_bench') IS NOT NULL").fetchone()[0]
    if have and conn.execute("SELECT count(*) FROM pg_ta_bench").fetchone()[0] == rows:
        return
    print(f"creating pg_ta_bench with {rows} candles ...", flush=True)
    conn.execute("DROP TABLE IF EXISTS pg_ta_bench")
    conn.execute("SELECT setseed(0.42)")
    conn.execute(f"""
        CREATE TABLE pg_ta_bench AS
        WITH r AS (SELECT i, (random() - 0.5) * 0.002 AS ret, random() AS u, random() AS v
                   FROM generate_series(1, {rows}) i),
             p AS (SELECT i, u, v, 30000 * exp(sum(ret) OVER (ORDER BY i)) AS px FROM r)
        SELECT timestamptz '2020-01-01' + (i - 1) * interval '1 minute' AS open_time,
               round(px::numeric, 2) AS close,
               round((px * (1 + u * 0.001))::numeric, 2) AS high,
               round((px * (1 - v * 0.001))::numeric, 2) AS low,
               round((u * 10)::numeric, 5) AS volume
        FROM p""")
    conn.execute("ALTER TABLE pg_ta_bench ADD COLUMN close_f double precision")
    conn.execute("UPDATE pg_ta_bench SET close_f = close::float8")
    conn.execute("ALTER TABLE pg_ta_bench ADD PRIMARY KEY (open_time)")
    conn.execute("VACUUM ANALYZE pg_ta_bench")


PLPGSQL = """
CREATE OR REPLACE FUNCTION pg_ta_bench_ema_sfunc(state float8[], x float8, n integer)
RETURNS float8[] LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  -- state = {count, warm-up sum, ema}; seeded with the SMA of the first n values (as TA-Lib)
  IF x IS NULL THEN RETURN state; END IF;
  IF state IS NULL THEN state := ARRAY[0, 0, NULL]; END IF;
  IF state[1] < n THEN
    state[1] := state[1] + 1;
    state[2] := state[2] + x;
    IF state[1] = n THEN state[3] := state[2] / n; END IF;
    RETURN state;
  END IF;
  state[3] := (x - state[3]) * (2.0 / (n + 1)) + state[3];
  RETURN state;
END $$;
CREATE OR REPLACE FUNCTION pg_ta_bench_ema_final(state float8[]) RETURNS float8
LANGUAGE sql IMMUTABLE AS $$ SELECT state[3] $$;
DROP AGGREGATE IF EXISTS pg_ta_bench_plpgsql_ema(float8, integer);
CREATE AGGREGATE pg_ta_bench_plpgsql_ema(float8, integer) (
  SFUNC = pg_ta_bench_ema_sfunc, STYPE = float8[], FINALFUNC = pg_ta_bench_ema_final);
"""


def timed(fn, repeat):
    fn()  # warm-up
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def server(conn, expr, repeat):
    q = f"SELECT count(x) FROM (SELECT {expr} OVER w AS x FROM pg_ta_bench {W}) s"
    return timed(lambda: conn.execute(q).fetchone(), repeat)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dsn", default=os.environ.get("PG_TA_BENCH_DSN", "postgresql://postgres@127.0.0.1:5441/postgres"))
    a = ap.parse_args()
    conn = psycopg.connect(a.dsn, autocommit=True)
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_ta")
    conn.execute("SET max_parallel_workers_per_gather = 0")
    conn.execute("SET work_mem = '256MB'")
    setup(conn, a.rows)
    conn.execute(PLPGSQL)
    ver = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'pg_ta'").fetchone()[0]
    print(f"pg_ta {ver}, {a.rows} candles, median of {a.repeat} runs (after one warm-up), "
          f"server-side timing via SELECT count(x) FROM (... OVER w) s\n")

    res = {}
    for col, label in (("close", "numeric"), ("close_f", "double precision")):
        base = server(conn, f"avg({col})", a.repeat)
        res[label] = {"avg": base}
        for name, expr in (("ema", f"ta.ema({col}, 12)"), ("rsi", f"ta.rsi({col}, 14)"),
                           ("macd", f"ta.macd({col}, 12, 26, 9)"), ("bbands", f"ta.bbands({col}, 20, 2, 2)")):
            res[label][name] = server(conn, expr, a.repeat)
    cast = server(conn, "ta.ema(close::float8, 12)", a.repeat)
    plsql = server(conn, "pg_ta_bench_plpgsql_ema(close_f, 12)", a.repeat)
    plsql_num = server(conn, "pg_ta_bench_plpgsql_ema(close::float8, 12)", a.repeat)
    ema_f = res["double precision"]["ema"]
    ema_n = res["numeric"]["ema"]
    # the part every window query pays (index scan + WindowAgg machinery)
    floor = server(conn, "count(*)", a.repeat)

    print(f"{'query (w = ORDER BY open_time)':<44}{'numeric':>12}{'float8':>12}{'ratio num':>11}{'ratio f8':>10}{'target':>8}")
    for name, target in (("avg", None), ("ema", 1.2), ("rsi", 1.5), ("macd", 1.5), ("bbands", 1.5)):
        tn, tf = res["numeric"][name], res["double precision"][name]
        rn, rf = tn / res["numeric"]["avg"], tf / res["double precision"]["avg"]
        shown = "avg(close) OVER w (baseline)" if name == "avg" else f"ta.{name}(close, ...) OVER w / avg"
        print(f"{shown:<44}{tn * 1000:>10.0f}ms{tf * 1000:>10.0f}ms{rn:>10.2f}x{rf:>9.2f}x"
              f"{('<= ' + str(target) + 'x') if target else '':>8}")
    print(f"\nnumeric input: ta.ema(close, 12) {res['numeric']['ema'] * 1000:.0f} ms (digits read in place) vs "
          f"ta.ema(close::float8, 12) {cast * 1000:.0f} ms (PostgreSQL's numeric -> float8 cast)")
    print(f"\nPL/pgSQL EMA aggregate (float8[] state) OVER w, target: ta.ema >= 8x faster")
    print(f"  on close_f (double precision): {plsql * 1000:6.0f} ms vs ta.ema {ema_f * 1000:4.0f} ms: "
          f"{plsql / ema_f:.1f}x")
    print(f"  on close (numeric, cast to float8 for PL/pgSQL): {plsql_num * 1000:6.0f} ms vs ta.ema {ema_n * 1000:4.0f} ms: "
          f"{plsql_num / ema_n:.1f}x")
    print(f"  count(*) OVER w alone (scan + WindowAgg, paid by both): {floor * 1000:.0f} ms; net of it: "
          f"{(plsql - floor) / (ema_f - floor):.1f}x (float8), {(plsql_num - floor) / (ema_n - floor):.1f}x (numeric)")

    # ---- end to end: everything to a Python client --------------------------------------
    def in_db_all_rows():
        cur = conn.execute(
            f"SELECT open_time, close, ta.ema(close, 12) OVER w AS ema, ta.rsi(close, 14) OVER w AS rsi, "
            f"(ta.macd(close, 12, 26, 9) OVER w).* FROM pg_ta_bench {W} ORDER BY open_time")
        return cur.fetchall()

    def client_talib():
        rows = conn.execute("SELECT open_time, close FROM pg_ta_bench ORDER BY open_time").fetchall()
        close = np.array([float(r[1]) for r in rows])
        return talib.EMA(close, 12), talib.RSI(close, 14), talib.MACD(close, 12, 26, 9)

    def client_talib_fast():
        # the client's best case: float8 in binary format straight into numpy
        with conn.cursor(binary=True) as cur:
            cur.execute("SELECT close::float8 FROM pg_ta_bench ORDER BY open_time")
            close = np.fromiter((r[0] for r in cur), dtype=np.float64, count=a.rows)
        return talib.EMA(close, 12), talib.RSI(close, 14), talib.MACD(close, 12, 26, 9)

    def in_db_all_rows_binary():
        with conn.cursor(binary=True) as cur:
            cur.execute(
                f"SELECT open_time, close, ta.ema(close, 12) OVER w AS ema, ta.rsi(close, 14) OVER w AS rsi, "
                f"(ta.macd(close, 12, 26, 9) OVER w).* FROM pg_ta_bench {W} ORDER BY open_time")
            return cur.fetchall()

    def client_talib_binary():
        with conn.cursor(binary=True) as cur:
            cur.execute("SELECT open_time, close FROM pg_ta_bench ORDER BY open_time")
            rows = cur.fetchall()
        close = np.array([float(r[1]) for r in rows])
        return talib.EMA(close, 12), talib.RSI(close, 14), talib.MACD(close, 12, 26, 9)

    def in_db_latest():
        # what a screener needs: the current values, computed where the data is
        return conn.execute(
            "SELECT ta.ema(close, 12 ORDER BY open_time), ta.rsi(close, 14 ORDER BY open_time), "
            "ta.macd(close, 12, 26, 9 ORDER BY open_time) FROM pg_ta_bench").fetchone()

    t_db = timed(in_db_all_rows, a.repeat)
    t_cl = timed(client_talib, a.repeat)
    t_clf = timed(client_talib_fast, a.repeat)
    t_last = timed(in_db_latest, a.repeat)
    t_dbb = timed(in_db_all_rows_binary, a.repeat)
    t_clb = timed(client_talib_binary, a.repeat)
    print("\nend to end, psycopg 3 client in this process:")
    print(f"  in-database, all rows (time, close, ema, rsi, macd x3) to the client: {t_db * 1000:8.0f} ms")
    print(f"  closes to the client (numeric -> float) + TA-Lib EMA/RSI/MACD:       {t_cl * 1000:8.0f} ms"
          f"   in-database is {t_cl / t_db:.2f}x faster (target >= 2x)")
    print(f"  the same two, binary protocol: in-database {t_dbb * 1000:.0f} ms, client {t_clb * 1000:.0f} ms"
          f"   in-database is {t_clb / t_dbb:.2f}x faster")
    print(f"  closes as binary float8 + TA-Lib (client's best case):                {t_clf * 1000:8.0f} ms"
          f"   in-database is {t_clf / t_db:.2f}x faster")
    print(f"  in-database, current values only (plain aggregates):                  {t_last * 1000:8.0f} ms"
          f"   {t_cl / t_last:.1f}x faster than the client path")


if __name__ == "__main__":
    main()
