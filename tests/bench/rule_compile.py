#!/usr/bin/env python3
"""Rule compiler measurements for the hostile inputs of issue 8 (a script, not a test).

For each input it prints the input size, what ta.rule_compile returned (output bytes, or the
SQLSTATE of the error, or that the server connection was lost), and the time of the call
(server execution time from EXPLAIN ANALYZE when it succeeds, else client wall time), plus a linear-scaling check on growing AND chains (time per term at each size).

Usage: tests/bench/rule_compile.py --dsn postgresql://postgres@127.0.0.1:5433/postgres
The server needs pg_ta; the row type is ta.screener_row if it exists, else market.screener_row
(override with PG_TA_RULE_ROW_TYPE), so the data schema must be applied for the latter.
"""

from __future__ import annotations

import argparse
import os
import re
import time

import psycopg


def row_type(conn: psycopg.Connection) -> str:
    env = os.environ.get("PG_TA_RULE_ROW_TYPE")
    if env:
        return env
    for t in ("ta.screener_row", "market.screener_row"):
        if conn.execute("SELECT to_regtype(%s)", (t,)).fetchone()[0] is not None:
            return t
    raise SystemExit("neither ta.screener_row nor market.screener_row exists")


def cases() -> list[tuple[str, str]]:
    and_60k = " AND ".join(f"price > {i}" for i in range(60000))
    return [
        ("sqrt() nested 23 deep (147 bytes)", "sqrt(" * 23 + "price" + ")" * 23 + " > 0"),
        ("ln(sqrt()) nested 16 deep", "ln(sqrt(" * 8 + "price" + "))" * 8 + " > 0"),
        ("repeat('(',10000) price ...", "(" * 10000 + "price" + ")" * 10000 + " > 0"),
        ("repeat('not ',200000) ...", "not " * 200000 + "price > 0"),
        ("60k-term AND", and_60k),
        ("preset big_bull_5 (realistic)",
         "change_5m > 0.6 AND change_1d < 15 AND change_15m > change_5m AND change_1h > change_15m"
         " AND vol_5m > 100000 AND vol_1h > 1000000 AND 3 * vol_5m > vol_15m"
         " AND 6 * vol_5m > vol_1h AND 66 * vol_5m > vol_8h"),
    ]


def run(dsn: str, expr: str, rt: str) -> tuple[str, float]:
    try:
        with psycopg.connect(dsn, autocommit=True) as c:
            t0 = time.monotonic()
            try:
                # the server's own execution time (EXPLAIN ANALYZE), without the round trip
                plan = c.execute("EXPLAIN (ANALYZE, COSTS OFF) SELECT length(ta.rule_compile(%s, %s, '{}'))",
                                 (expr, rt)).fetchall()
                ms = float(re.search(r"Execution Time: ([0-9.]+) ms", plan[-1][0]).group(1))
                n = c.execute("SELECT length(ta.rule_compile(%s, %s, '{}'))", (expr, rt)).fetchone()[0]
                return f"ok, {n:,} bytes of SQL", ms / 1000
            except psycopg.errors.Error as e:
                if e.sqlstate is None:
                    res = f"CONNECTION LOST ({str(e).strip().splitlines()[0]})"
                else:
                    res = f"ERROR {e.sqlstate}: {e.diag.message_primary[:90]}"
            return res, time.monotonic() - t0
    except psycopg.OperationalError as e:
        return f"CONNECTION LOST ({str(e).strip().splitlines()[0]})", 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--skip", default="", help="comma-separated case numbers to skip (1-based)")
    args = ap.parse_args()
    skip = {int(s) for s in args.skip.split(",") if s}
    with psycopg.connect(args.dsn, autocommit=True) as c:
        rt = row_type(c)
    print(f"row type {rt}")
    for i, (name, expr) in enumerate(cases(), 1):
        if i in skip:
            print(f"{i}. {name}: skipped")
            continue
        res, dt = run(args.dsn, expr, rt)
        print(f"{i}. {name}: input {len(expr.encode()):,} bytes -> {res}; {dt * 1000:.1f} ms", flush=True)
        if "CONNECTION LOST" in res:
            time.sleep(5)  # crash recovery
    # scaling: compile time per term of an AND chain that every limit admits
    print("AND chains (compile time per term):")
    for n in (100, 200, 400, 800):
        expr = " AND ".join(f"price > {i}" for i in range(n))
        best = min(run(args.dsn, expr, rt)[1] for _ in range(5))
        print(f"  {n:5d} terms, {len(expr):6d} bytes: {best * 1e6 / n:8.1f} us/term (best of 5, "
              "server execution time)")


if __name__ == "__main__":
    main()
