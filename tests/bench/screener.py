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
instrument's feature row in market.features and sends the rows on NOTIFY ta_features, about 14
per notification, which a listener process decodes as they arrive), so both modes are measured
in the same run under the same conditions; the ratio of their p99 is printed.  --features off|on measures one.

Turning live_features on (with no enabled rule reading a feature column) makes the next close
reload every instrument's engine (features are not stepped while nothing reads them): the first
close after each switch is reported apart ("switch closes"), not in the modes' percentiles.

Baseline (--baseline-dsn, --baseline-root): a second server with another pg_ta build (e.g. the
previous release) and that checkout's sql/; every measured close runs on both, interleaved (the
order alternates), so both see the same machine at the same moment, and the ratios of each mode
to the baseline are printed (target: features on within 10 % of the baseline's p99).

Usage: tests/bench/screener.py --dsn postgresql://postgres@127.0.0.1:5433/postgres
       [--sizes 100,500,2000] [--steps 60] [--features both|off|on] [--no-backtest]
       [--baseline-dsn DSN --baseline-root CHECKOUT]
It creates (and drops at the start) the database pg_ta_bench_screener on that server (and on
the baseline's); the servers must have pg_ta installed.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
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


def apply_schema(conn: psycopg.Connection, root: pathlib.Path = ROOT) -> None:
    for f in sorted((root / "sql").glob("*.sql")):
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


class Listener:
    """LISTEN ta_alerts and ta_features in a process of its own (as a model service or alert
    sink runs), consuming and decoding as they arrive: a listener that reads only between
    closes lets the server's notification queue back up, and every close pays for it; one in a
    thread of the bench's process would take the GIL from the timed loop."""

    def __init__(self, dsn: str):
        ctx = multiprocessing.get_context("spawn")
        self._stop = ctx.Event()
        self._ready = ctx.Event()
        self._out = ctx.Queue()
        self._proc = ctx.Process(target=_listen, args=(dsn, self._stop, self._ready, self._out),
                                 daemon=True)

    def start(self) -> None:
        self._proc.start()
        if not self._ready.wait(30):
            raise RuntimeError("the listener process did not start")

    def stop(self) -> dict[str, int]:
        time.sleep(0.5)
        self._stop.set()
        counts = self._out.get(timeout=30)
        self._proc.join(timeout=10)
        return counts


def _listen(dsn: str, stop, ready, out) -> None:
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute("LISTEN ta_alerts")
    conn.execute("LISTEN ta_features")
    counts = {"ta_alerts": 0, "ta_features": 0}
    ready.set()
    while not stop.is_set():
        for note in conn.notifies(timeout=0.2):
            # ta_features: count the rows (about 14 per notification), decoded as a model
            # service would
            n = len(json.loads(note.payload)["rows"]) if note.channel == "ta_features" else 1
            counts[note.channel] = counts.get(note.channel, 0) + n
    conn.close()
    out.put(counts)


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
    ap.add_argument("--no-backtest", action="store_true", help="skip the backtest speed")
    ap.add_argument("--baseline-dsn", help="a server with the baseline pg_ta build")
    ap.add_argument("--baseline-root", type=pathlib.Path,
                    help="the baseline's checkout (its sql/ is applied on the baseline server)")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    if bool(args.baseline_dsn) != bool(args.baseline_root):
        ap.error("--baseline-dsn and --baseline-root go together")

    def fresh_db(server_dsn: str) -> str:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {DB}")
            admin.execute(f"CREATE DATABASE {DB}")
        return psycopg.conninfo.make_conninfo(server_dsn, dbname=DB)

    def open_bench(dsn: str, root: pathlib.Path) -> psycopg.Connection:
        conn = psycopg.connect(dsn)
        apply_schema(conn, root)
        conn.commit()
        conn.execute("CREATE TEMP TABLE candles_in (LIKE market.candles_1m) ON COMMIT DELETE ROWS")
        conn.commit()
        conn.autocommit = True
        return conn

    dsn = fresh_db(args.dsn)
    base_conn = None
    if args.baseline_dsn:
        base_conn = open_bench(fresh_db(args.baseline_dsn), args.baseline_root)

    results = {}
    with open_bench(dsn, ROOT) as conn:
        for n in sizes:
            t = time.perf_counter()
            for c in [conn] + ([base_conn] if base_conn else []):
                generate_history(c, n)
                # steady state: a live system is not measured in the minutes after a bulk
                # load, while autovacuum and the checkpoint it causes process it
                c.execute("VACUUM (ANALYZE) market.candles_1m, market.screener_state")
                c.execute("CHECKPOINT")
            load_s = time.perf_counter() - t
            prices = last_closes(conn)
            rng = random.Random(n)
            minute = T0 + timedelta(minutes=HISTORY_MINUTES)
            base = None
            if base_conn:
                # the same candles on the baseline (its own price state and generator)
                base = dict(prices=last_closes(base_conn), rng=random.Random(n), minute=minute)

            def base_close() -> float:
                t = close_step(base_conn, base["minute"], base["prices"], base["rng"])
                base["minute"] += timedelta(minutes=1)
                return t

            # warm-up: the first close of a session fills the window cache (2879 state rows per
            # symbol); plpgsql prepares generic plans after five executions
            warmup = []
            for _ in range(6):
                warmup.append(close_step(conn, minute, prices, rng))
                minute += timedelta(minutes=1)
                if base:
                    base_close()
            times = []
            by_mode = {"off": [], "on": []}
            switches = []
            base_times = []
            modes = ["off", "on"] if args.features == "both" else [args.features]
            listeners = [Listener(dsn)] + ([Listener(base_conn.info.dsn)] if base else [])
            for li in listeners:
                li.start()
            for k in range(args.steps):
                mode = modes[(k // 10) % len(modes)]
                switch = k % 10 == 0 and len(modes) == 2
                if k % 10 == 0:
                    conn.execute("UPDATE market.settings SET live_features = %s", (mode == "on",))
                if base and k % 2:
                    bt = base_close()
                ms_ = close_step(conn, minute, prices, rng)
                if base and not k % 2:
                    bt = base_close()
                minute += timedelta(minutes=1)
                if switch:
                    switches.append((mode, ms_))
                else:
                    times.append(ms_)
                    by_mode[mode].append(ms_)
                    if base:
                        base_times.append(bt)
            notes = [li.stop() for li in listeners][0]
            alerts = notes["ta_alerts"]
            # backtest speed: every rule over the last day of all symbols
            rules = conn.execute("SELECT name FROM market.alert_rules WHERE enabled ORDER BY name").fetchall()
            frm, to = minute - timedelta(days=1), minute
            candles = conn.execute(
                "SELECT count(*) FROM market.candles_1m WHERE open_time BETWEEN %s AND %s", (frm, to)
            ).fetchone()[0]
            t = time.perf_counter()
            fired = 0
            for (rule,) in [] if args.no_backtest else rules:
                fired += conn.execute(
                    "SELECT count(*) FROM market.backtest(%s, %s, %s)", (rule, frm, to)
                ).fetchone()[0]
            bt_s = time.perf_counter() - t
            stats = lambda v: dict(p50=statistics.median(v), p95=pct(v, 95), p99=pct(v, 99),
                                   max=max(v), steps=len(v))
            modes_r = {m: stats(v) for m, v in by_mode.items() if v}
            results[n] = dict(
                modes=modes_r, features_notified=notes["ta_features"], switches=switches,
                baseline=stats(base_times) if base_times else None,
                p50=statistics.median(times), p95=pct(times, 95), p99=pct(times, 99), max=max(times),
                alerts=alerts, load_s=load_s,
                evals_per_s=candles * len(rules) / bt_s if bt_s > 0 and not args.no_backtest else None,
                warmup=warmup, bt_s=bt_s, fired=fired, candles=candles, rules=len(rules),
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
            if r["switches"]:
                print("          switch closes (first after turning live_features off/on): "
                      + ", ".join(f"{m} {t:.0f} ms" for m, t in r["switches"]), flush=True)
            if r["baseline"]:
                b = r["baseline"]
                print(f"          baseline (interleaved, {b['steps']} steps): p50 {b['p50']:7.1f} ms  "
                      f"p95 {b['p95']:7.1f}  p99 {b['p99']:7.1f}  max {b['max']:7.1f}", flush=True)
                for m, mr in r["modes"].items():
                    print(f"          live_features {m:>3} / baseline: p50 x{mr['p50'] / b['p50']:.3f}, "
                          f"p99 x{mr['p99'] / b['p99']:.3f}", flush=True)
            print(
                f"          first close of the session {warmup[0]:.0f} ms (fills the window cache), "
                f"closes 2-6: {', '.join(f'{w:.0f}' for w in warmup[1:])} ms",
                flush=True,
            )
            if r["evals_per_s"] is not None:
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
            print(f"Features on / off (p99) at 500 symbols: x{ratio:.3f}")
        b = results[500]["baseline"]
        if b and "on" in md:
            ratio = md["on"]["p99"] / b["p99"]
            print(f"Target features on within 10 % of the baseline (p99) at 500 symbols: "
                  f"x{ratio:.3f} -> {'MET' if ratio <= 1.10 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
