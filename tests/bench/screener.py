#!/usr/bin/env python3
"""Screener close-step benchmark (issue 4).

For each symbol count N (default 100, 500, 2000): N symbols with 2 days of synthetic 1m
history; then 6 warm-up closes (reported apart) and K measured minute closes, each = one transaction that writes N closed candles the way
ta-feed does (COPY into a temp table + INSERT ... ON CONFLICT into market.candles_1m), which
fires the candle trigger: screener_state update + every enabled rule evaluated + alert_history +
NOTIFY.  The client measures the whole step (COPY → COMMIT).  Prints p50/p95/p99/max in ms,
the per-symbol cost and its growth between sizes, and the backtest speed
(candle-rule evaluations per second of market.backtest over the last day of history).

Features (pg_ta 0.3.0): with --features both (default) the measured closes alternate, in blocks
of 10, between market.settings.live_features = off and on (on: every close also stores each
instrument's feature row in market.features and sends it on NOTIFY ta_features, which the
listener consumes), so both modes are measured in the same run under the same conditions; the
ratio of their p99 is printed (target: on within 10 % of off).  --features off|on measures one.

Usage: tests/bench/screener.py --dsn postgresql://postgres@127.0.0.1:5433/postgres
       [--sizes 100,500,2000] [--steps 60] [--features both|off|on]
It creates (and drops at the start) the database pg_ta_bench_screener on that server; the
server must have pg_ta installed.
"""

from __future__ import annotations

import argparse
import io
import pathlib
import random
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone

import psycopg

ROOT = pathlib.Path(__file__).resolve().parents[2]
DB = "pg_ta_bench_screener"
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
HISTORY_MINUTES = 2880


def apply_schema(conn: psycopg.Connection) -> None:
    for f in sorted((ROOT / "sql").glob("*.sql")):
        with conn.transaction():
            conn.execute(f.read_text())


def generate_history(conn: psycopg.Connection, n: int) -> None:
    """A deterministic random walk per symbol, 2880 closed 1m candles each, bulk loaded.

    1m log returns are uniform in +-0.3 % (stddev 0.17 %, i.e. ~6.6 % a day, like a typical
    USDT altcoin) plus a +-3 % jump with probability 0.2 %; quote volume 1000..31000 x price."""
    with conn.transaction():
        conn.execute("TRUNCATE market.candles_1m")
        conn.execute("TRUNCATE market.alert_history")
        conn.execute("SET LOCAL market.evaluate_alerts = off")
        conn.execute("SELECT setseed(0.42)")
        conn.execute(
            """
            INSERT INTO market.candles_1m
            SELECT sym, t, t + interval '59.999 seconds',
                   round(o::numeric, 4), round(greatest(o, c)::numeric * 1.0004, 4),
                   round(least(o, c)::numeric * 0.9996, 4), round(c::numeric, 4),
                   round(vol::numeric, 5), round((vol * c)::numeric, 8), 100,
                   round((vol / 2)::numeric, 5), round((vol * c / 2)::numeric, 8)
              FROM (
                SELECT sym, t, vol,
                       100 * exp(sum(r) OVER w - r) AS o, 100 * exp(sum(r) OVER w) AS c
                  FROM (SELECT 'S' || lpad(s::text, 4, '0') || 'USDT' AS sym,
                               %(t0)s::timestamptz + (m || ' minutes')::interval AS t,
                               (random() - 0.5) * 0.006
                                 + CASE WHEN random() < 0.002 THEN (random() - 0.5) * 0.06 ELSE 0 END AS r,
                               1000 + random() * 30000 AS vol
                          FROM generate_series(1, %(n)s) s,
                               generate_series(0, %(m)s - 1) m) x
                WINDOW w AS (PARTITION BY sym ORDER BY t)) y
            """,
            {"n": n, "m": HISTORY_MINUTES, "t0": T0},
        )


def last_closes(conn: psycopg.Connection) -> dict[str, float]:
    rows = conn.execute(
        "SELECT DISTINCT ON (symbol) symbol, close::float8 FROM market.candles_1m "
        "ORDER BY symbol, open_time DESC"
    ).fetchall()
    return dict(rows)


def close_step(conn: psycopg.Connection, minute: datetime, prices: dict[str, float], rng: random.Random) -> float:
    buf = io.StringIO()
    for sym, o in prices.items():
        r = rng.uniform(-0.003, 0.003) + (rng.uniform(-0.03, 0.03) if rng.random() < 0.002 else 0)
        c = o * (1 + r)
        vol = 1000 + rng.random() * 30000
        hi, lo = max(o, c) * 1.0004, min(o, c) * 0.9996
        ct = minute + timedelta(seconds=59.999)
        buf.write(
            f"{sym}\t{minute.isoformat()}\t{ct.isoformat()}\t{o:.4f}\t{hi:.4f}\t{lo:.4f}\t{c:.4f}\t"
            f"{vol:.5f}\t{vol * c:.8f}\t100\t{vol / 2:.5f}\t{vol * c / 2:.8f}\tspot\n"
        )
        prices[sym] = float(f"{c:.4f}")
    data = buf.getvalue()
    t = time.perf_counter()
    with conn.transaction():
        with conn.cursor().copy("COPY candles_in FROM STDIN") as cp:
            cp.write(data)
        conn.execute(
            "INSERT INTO market.candles_1m SELECT * FROM candles_in "
            "ON CONFLICT (market, symbol, open_time) DO NOTHING"
        )
    return (time.perf_counter() - t) * 1000


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))
    return xs[k]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5433/postgres")
    ap.add_argument("--sizes", default="100,500,2000")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--features", choices=["both", "off", "on"], default="both")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]

    with psycopg.connect(args.dsn, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB}")
        admin.execute(f"CREATE DATABASE {DB}")
    dsn = psycopg.conninfo.make_conninfo(args.dsn, dbname=DB)

    results = {}
    with psycopg.connect(dsn) as conn, psycopg.connect(dsn, autocommit=True) as listener:
        apply_schema(conn)
        conn.commit()
        listener.execute("LISTEN ta_alerts")
        listener.execute("LISTEN ta_features")
        conn.execute(
            "CREATE TEMP TABLE candles_in (LIKE market.candles_1m) ON COMMIT DELETE ROWS"
        )
        conn.commit()
        conn.autocommit = True
        for n in sizes:
            t = time.perf_counter()
            generate_history(conn, n)
            load_s = time.perf_counter() - t
            # steady state: a live system is not measured in the minutes after a bulk load,
            # while autovacuum and the checkpoint it causes process it
            conn.execute("VACUUM (ANALYZE) market.candles_1m, market.screener_state")
            conn.execute("CHECKPOINT")
            prices = last_closes(conn)
            rng = random.Random(n)
            minute = T0 + timedelta(minutes=HISTORY_MINUTES)
            # warm-up: the first close of a session fills the window cache (2879 state rows per
            # symbol); plpgsql prepares generic plans after five executions
            warmup = []
            for _ in range(6):
                warmup.append(close_step(conn, minute, prices, rng))
                minute += timedelta(minutes=1)
            times = []
            by_mode = {"off": [], "on": []}
            modes = ["off", "on"] if args.features == "both" else [args.features]
            notes = {"ta_alerts": 0, "ta_features": 0}
            for k in range(args.steps):
                mode = modes[(k // 10) % len(modes)]
                if k % 10 == 0:
                    conn.execute("UPDATE market.settings SET live_features = %s", (mode == "on",))
                ms_ = close_step(conn, minute, prices, rng)
                times.append(ms_)
                by_mode[mode].append(ms_)
                minute += timedelta(minutes=1)
                for note in listener.notifies(timeout=0.0):
                    notes[note.channel] += 1
            for note in listener.notifies(timeout=0.5):
                notes[note.channel] += 1
            alerts = notes["ta_alerts"]
            # backtest speed: every rule over the last day of all symbols
            rules = conn.execute("SELECT name FROM market.alert_rules WHERE enabled ORDER BY name").fetchall()
            frm, to = minute - timedelta(days=1), minute
            candles = conn.execute(
                "SELECT count(*) FROM market.candles_1m WHERE open_time BETWEEN %s AND %s", (frm, to)
            ).fetchone()[0]
            t = time.perf_counter()
            fired = 0
            for (rule,) in rules:
                fired += conn.execute(
                    "SELECT count(*) FROM market.backtest(%s, %s, %s)", (rule, frm, to)
                ).fetchone()[0]
            bt_s = time.perf_counter() - t
            modes_r = {m: dict(p50=statistics.median(v), p95=pct(v, 95), p99=pct(v, 99), max=max(v),
                               steps=len(v)) for m, v in by_mode.items() if v}
            results[n] = dict(
                modes=modes_r, features_notified=notes["ta_features"],
                p50=statistics.median(times), p95=pct(times, 95), p99=pct(times, 99), max=max(times),
                alerts=alerts, load_s=load_s, evals_per_s=candles * len(rules) / bt_s, warmup=warmup,
                bt_s=bt_s, fired=fired, candles=candles, rules=len(rules),
            )
            r = results[n]
            print(
                f"N={n:5d} symbols: close step p50 {r['p50']:7.1f} ms  p95 {r['p95']:7.1f}  p99 {r['p99']:7.1f}  "
                f"max {r['max']:7.1f}  ({args.steps} steps, {alerts} alerts notified = "
                f"{alerts / args.steps:.1f} per close; history load {load_s:.1f} s)",
                flush=True,
            )
            for m, mr in r["modes"].items():
                print(f"          live_features {m:>3}: p50 {mr['p50']:7.1f} ms  p95 {mr['p95']:7.1f}  "
                      f"p99 {mr['p99']:7.1f}  max {mr['max']:7.1f}  ({mr['steps']} steps)", flush=True)
            if len(r["modes"]) == 2:
                off, on = r["modes"]["off"], r["modes"]["on"]
                print(f"          features on / off: p50 x{on['p50'] / off['p50']:.3f}, p99 "
                      f"x{on['p99'] / off['p99']:.3f} ({r['features_notified']} feature rows "
                      f"notified)", flush=True)
            print(
                f"          first close of the session {warmup[0]:.0f} ms (fills the window cache), "
                f"closes 2-6: {', '.join(f'{w:.0f}' for w in warmup[1:])} ms",
                flush=True,
            )
            print(
                f"          backtest: {r['rules']} rules x {candles} candles in {bt_s:.2f} s = "
                f"{r['evals_per_s']:,.0f} candle-rule evaluations/s ({fired} alerts)",
                flush=True,
            )

    print()
    print("Per-symbol cost of a close step (p50 / N) and growth:")
    base = None
    for n in sizes:
        per = results[n]["p50"] / n * 1000
        if base is None:
            base = (n, results[n]["p50"])
            print(f"  N={n:5d}: {per:6.1f} us/symbol")
        else:
            growth = results[n]["p50"] / base[1]
            print(f"  N={n:5d}: {per:6.1f} us/symbol; p50 x{growth:.2f} for x{n / base[0]:.0f} symbols (linear = x{n / base[0]:.0f})")
    if 500 in results:
        ok = results[500]["p99"] < 50
        print(f"\nTarget p99 < 50 ms at 500 symbols: {results[500]['p99']:.1f} ms -> {'MET' if ok else 'MISSED'}")
        md = results[500]["modes"]
        if len(md) == 2:
            ratio = md["on"]["p99"] / md["off"]["p99"]
            print(f"Target features on within 10 % of off (p99) at 500 symbols: x{ratio:.3f} -> "
                  f"{'MET' if ratio <= 1.10 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
