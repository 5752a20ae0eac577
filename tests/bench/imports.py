#!/usr/bin/env python3
"""Bulk import benchmark (issue 10): `ta-feed import` into the full data schema against plain
COPY + INSERT ... ON CONFLICT into a table with the same key, in one run, on the same files.

Files: the 13 spot/ohlcv 30-day files of April 2023 (561,587 minutes), written once to a
temporary directory as Binance klines12 CSV.gz (quote_volume = volume x close, the exact
decimal product the rule-parity suite uses; trades and taker volumes 0), plus one synthetic year
of one symbol (525,600 minutes, a deterministic random walk).

  baseline  per file, in one transaction: COPY (server-side, FROM PROGRAM 'zcat FILE') into a
            temporary table, INSERT INTO bench.candles_1m SELECT ... ON CONFLICT DO NOTHING, on a
            table with the columns and primary key of market.candles_1m and no triggers;
  ta-feed   `ta-feed import --market spot FILES...` into a database with the full schema
            (triggers maintain the screener head and day checkpoints; alerts off), once with
            `--jobs 1` (one connection, like the baseline) and once with the default (one
            connection per CPU, at most 4, different symbols in parallel).
Prints rows/s of both, the ratio (target >= 0.5), the size of schema market against
candles_1m (target <= 2x), checks the screener heads right after the import against the engine
run over all candles, and the one-year figure.

Usage: tests/bench/imports.py --dsn postgresql://postgres@127.0.0.1:5433/postgres
       [--ta-feed target/release/ta-feed] [--data ../shared/data/binance]
"""
from __future__ import annotations

import argparse
import csv
import gzip
import os
import pathlib
import random
import subprocess
import sys
import tempfile
import time
from decimal import Decimal, localcontext, Context

import psycopg
from psycopg import conninfo

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from common import binance_data as bd  # noqa: E402

DB_PLAIN = "pg_ta_bench_import_plain"
DB_FULL = "pg_ta_bench_import_full"
EXACT = Context(prec=60)


def db_dsn(base: str, name: str) -> str:
    p = conninfo.conninfo_to_dict(base)
    p["dbname"] = name
    return conninfo.make_conninfo(**p)


def db_url(base: str, name: str) -> str:
    p = conninfo.conninfo_to_dict(base)
    return (f"postgresql://{p.get('user', 'postgres')}@{p.get('host', '127.0.0.1')}:"
            f"{p.get('port', '5432')}/{name}")


def fresh(base: str, name: str) -> None:
    with psycopg.connect(base, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        c.execute(f'CREATE DATABASE "{name}"')


def write_klines12(path: str, rows) -> int:
    n = 0
    with gzip.open(path, "wt", newline="", compresslevel=1) as f:
        w = csv.writer(f, lineterminator="\n")
        for (t, o, h, l, c, v, qv) in rows:
            w.writerow([t, o, h, l, c, v, t + 59_999, qv, 0, 0, 0, 0])
            n += 1
    return n


def ohlcv_files(tmp: str, data: str) -> list[tuple[str, int]]:
    os.environ["PG_TA_SHARED_DATA"] = data
    files = bd.ohlcv_files_2023_04()
    if len(files) != 13:
        sys.exit(f"need the 13 spot/ohlcv April 2023 files under {data}, found {len(files)}")
    out = []
    for sym, src in sorted(files.items()):
        rows = []
        for (t, o, h, l, c, v) in bd.read_ohlcv(src):
            if t < 1680307200000 or t >= 1682899200000 + 86_400_000:   # 2023-04-01 .. 05-01
                continue
            with localcontext(EXACT):
                qv = format(Decimal(v) * Decimal(c), "f")
            rows.append((t, o, h, l, c, v, qv))
        dst = os.path.join(tmp, f"{sym}-1m-2023-04.csv.gz")
        out.append((dst, write_klines12(dst, rows)))
    return out


def year_file(tmp: str) -> tuple[str, int]:
    rnd = random.Random(42)
    t0 = 1672531200000  # 2023-01-01
    price = 100.0
    rows = []
    for i in range(525_600):
        o = price
        price *= 1 + rnd.uniform(-0.003, 0.003)
        c = price
        h, l = max(o, c) * 1.0005, min(o, c) * 0.9995
        v = rnd.uniform(1, 300)
        rows.append((t0 + i * 60_000, f"{o:.4f}", f"{h:.4f}", f"{l:.4f}", f"{c:.4f}", f"{v:.3f}",
                     f"{v * c:.6f}"))
    dst = os.path.join(tmp, "YEARUSDT-1m-2023.csv.gz")
    return dst, write_klines12(dst, rows)


BENCH_TABLE = """
CREATE SCHEMA bench;
CREATE TABLE bench.candles_1m (
    symbol text COLLATE "C" NOT NULL, open_time timestamptz NOT NULL,
    close_time timestamptz NOT NULL, open numeric NOT NULL, high numeric NOT NULL,
    low numeric NOT NULL, close numeric NOT NULL, volume numeric NOT NULL,
    quote_volume numeric NOT NULL, trades bigint NOT NULL, taker_buy_volume numeric NOT NULL,
    taker_buy_quote_volume numeric NOT NULL, market text COLLATE "C" NOT NULL DEFAULT 'spot',
    PRIMARY KEY (market, symbol, open_time));
"""


def baseline(base: str, files: list[tuple[str, int]]) -> float:
    fresh(base, DB_PLAIN)
    with psycopg.connect(db_dsn(base, DB_PLAIN), autocommit=True) as c:
        c.execute(BENCH_TABLE)
        t0 = time.monotonic()
        for path, _ in files:
            sym = os.path.basename(path).split("-", 1)[0]
            with c.transaction():
                c.execute("CREATE TEMP TABLE raw (ot bigint, o numeric, h numeric, l numeric,"
                          " c numeric, v numeric, ct bigint, qv numeric, n bigint, tb numeric,"
                          " tq numeric, ig text) ON COMMIT DROP")
                c.execute(f"COPY raw FROM PROGRAM 'zcat {path}' (FORMAT csv)")
                c.execute("INSERT INTO bench.candles_1m SELECT %s, to_timestamp(ot / 1000.0),"
                          " to_timestamp(ct / 1000.0), o, h, l, c, v, qv, n, tb, tq, 'spot'"
                          " FROM raw ON CONFLICT DO NOTHING", (sym,))
        dt = time.monotonic() - t0
    return dt


def ta_feed_import(base: str, ta_feed: str, files: list[str], db: str,
                   jobs: int | None = None) -> float:
    env = dict(os.environ, DATABASE_URL=db_url(base, db), RUST_LOG="warn")
    extra = [] if jobs is None else ["--jobs", str(jobs)]
    t0 = time.monotonic()
    subprocess.run([ta_feed, "import", "--market", "spot", *extra, *files], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--ta-feed", default=str(ROOT / "target" / "release" / "ta-feed"))
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "binance"))
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="pg_ta_bench_import_")
    os.chmod(tmp, 0o755)
    files = ohlcv_files(tmp, a.data)
    rows = sum(n for _, n in files)
    print(f"13 files, {rows} rows (klines12 in {tmp})")

    t_plain = baseline(a.dsn, files)
    fresh(a.dsn, DB_FULL)
    subprocess.run([a.ta_feed, "migrate"], env=dict(os.environ, DATABASE_URL=db_url(a.dsn, DB_FULL),
                                                    RUST_LOG="warn"),
                   check=True, stdout=subprocess.DEVNULL)
    t_one = ta_feed_import(a.dsn, a.ta_feed, [p for p, _ in files], DB_FULL, jobs=1)
    fresh(a.dsn, DB_FULL)
    subprocess.run([a.ta_feed, "migrate"], env=dict(os.environ, DATABASE_URL=db_url(a.dsn, DB_FULL),
                                                    RUST_LOG="warn"),
                   check=True, stdout=subprocess.DEVNULL)
    t_feed = ta_feed_import(a.dsn, a.ta_feed, [p for p, _ in files], DB_FULL)
    print(f"plain COPY + INSERT ON CONFLICT : {t_plain:7.2f} s  {rows / t_plain:10.0f} rows/s"
          " (one connection)")
    print(f"ta-feed import --jobs 1         : {t_one:7.2f} s  {rows / t_one:10.0f} rows/s"
          f"  ratio {t_plain / t_one:.2f}x")
    print(f"ta-feed import (default jobs={os.cpu_count() and min(os.cpu_count(), 4)})  : "
          f"{t_feed:7.2f} s  {rows / t_feed:10.0f} rows/s  ratio {t_plain / t_feed:.2f}x"
          "   (target >= 0.5)")

    with psycopg.connect(db_dsn(a.dsn, DB_FULL), autocommit=True) as c:
        c.execute("VACUUM ANALYZE")
        candles, schema = c.execute(
            "SELECT pg_total_relation_size('market.candles_1m'),"
            " sum(pg_total_relation_size(c.oid)) FROM pg_class c"
            " WHERE c.relnamespace = 'market'::regnamespace AND c.relkind IN ('r', 'm')"
        ).fetchone()
        print(f"schema market {schema / 2**20:.1f} MiB, candles_1m {candles / 2**20:.1f} MiB:"
              f" {schema / candles:.2f}x  (target <= 2x)")
        bad = c.execute(
            "SELECT count(*) FROM market.screener_state s, LATERAL ("
            " SELECT ta.screener(c.market, c.symbol, c.open_time, c.close_time, c.open, c.high,"
            "  c.low, c.close, c.quote_volume ORDER BY c.open_time) AS r FROM market.candles_1m c"
            " WHERE c.market = s.market AND c.symbol = s.symbol) e"
            " WHERE s.\"row\"::text IS DISTINCT FROM e.r::text").fetchone()[0]
        print(f"screener heads right after the import equal a full engine run: {bad == 0}"
              f" ({bad} differ)")

    year, n = year_file(tmp)
    fresh(a.dsn, DB_FULL)
    subprocess.run([a.ta_feed, "migrate"], env=dict(os.environ, DATABASE_URL=db_url(a.dsn, DB_FULL),
                                                    RUST_LOG="warn"),
                   check=True, stdout=subprocess.DEVNULL)
    t_year = ta_feed_import(a.dsn, a.ta_feed, [year], DB_FULL)
    print(f"one year of one symbol ({n} rows): {t_year:.1f} s, {n / t_year:.0f} rows/s")
    for name in (DB_PLAIN, DB_FULL):
        with psycopg.connect(a.dsn, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
