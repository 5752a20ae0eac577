#!/usr/bin/env python3
"""TimescaleDB compression benchmark: size and query speed of market.candles_1m before and
after compression, in one run (needs a server with TimescaleDB preloaded).

Data: the 13 spot/ohlcv April 2023 files (561,587 minutes, imported as in tests/bench/imports.py)
plus the four FILUSDT USD-M months.  Queries, each timed as the median of 3 runs on the
uncompressed and then the compressed hypertable:
  Q1 one instrument-month of candles (SELECT * ... ORDER BY open_time),
  Q2 ta.rsi(close, 14) OVER one instrument's whole history,
  Q3 daily OHLCV of every instrument (GROUP BY time_bucket),
  Q4 market.screener_range over one day of every instrument,
  Q5 market.backtest of one preset over a week.
Prints sizes (heap + indexes + toast, compressed chunks included), the ratio, and per query
the time uncompressed / compressed.

Usage: tests/bench/timescaledb.py --dsn postgresql://postgres@127.0.0.1:5455/postgres
       [--ta-feed target/release/ta-feed] [--data ../shared/data/binance]
"""
from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import psycopg

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "bench"))
import imports  # noqa: E402

DB = "pg_ta_bench_timescaledb"
QUERIES = {
    "Q1 one instrument-month": "SELECT * FROM market.candles_1m WHERE market = 'spot'"
                               " AND symbol = 'BTCUSDT' AND open_time >= '2023-04-01'"
                               " AND open_time < '2023-05-01' ORDER BY open_time",
    "Q2 rsi over one history": "SELECT count(r) FROM (SELECT ta.rsi(close, 14) OVER"
                               " (ORDER BY open_time) AS r FROM market.candles_1m"
                               " WHERE market = 'usdm' AND symbol = 'FILUSDT') s",
    "Q3 daily bars, all": "SELECT market, symbol, time_bucket('1 day', open_time), max(high),"
                          " min(low), sum(quote_volume) FROM market.candles_1m GROUP BY 1, 2, 3",
    "Q4 screener_range 1 day": "SELECT count(*) FROM market.screener_range('2023-04-20',"
                               " '2023-04-21')",
    "Q5 backtest 1 week": "SELECT count(*) FROM market.backtest('big_bear_5', '2023-04-10',"
                          " '2023-04-17')",
}


def timed(conn, sql: str) -> float:
    out = []
    for _ in range(3):
        t0 = time.monotonic()
        conn.execute(sql).fetchall()
        out.append(time.monotonic() - t0)
    return statistics.median(out)


def size(conn) -> int:
    return conn.execute("SELECT hypertable_size('market.candles_1m')").fetchone()[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--ta-feed", default=str(ROOT / "target" / "release" / "ta-feed"))
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "binance"))
    a = ap.parse_args()
    with psycopg.connect(a.dsn) as c:
        if "timescaledb" not in c.execute("SHOW shared_preload_libraries").fetchone()[0]:
            sys.exit("this benchmark needs a server with TimescaleDB preloaded")
    tmp = tempfile.mkdtemp(prefix="pg_ta_bench_tsdb_")
    os.chmod(tmp, 0o755)
    files = [p for p, _ in imports.ohlcv_files(tmp, a.data)]
    fil = [os.path.join(a.data, "futures_um", "klines12", f"FILUSDT-1m-2023-{m}.csv.gz")
           for m in ("08", "09", "10", "11")]
    imports.fresh(a.dsn, DB)
    env = dict(os.environ, DATABASE_URL=imports.db_url(a.dsn, DB), RUST_LOG="warn")
    subprocess.run([a.ta_feed, "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([a.ta_feed, "import", "--market", "spot", *files], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([a.ta_feed, "import", "--market", "usdm", *fil], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    with psycopg.connect(imports.db_dsn(a.dsn, DB), autocommit=True) as c:
        c.execute("VACUUM ANALYZE market.candles_1m")
        rows = c.execute("SELECT count(*) FROM market.candles_1m").fetchone()[0]
        before = size(c)
        t_before = {k: timed(c, q) for k, q in QUERIES.items()}
        t0 = time.monotonic()
        n = c.execute("SELECT count(compress_chunk(ch, if_not_compressed => true))"
                      " FROM show_chunks('market.candles_1m') ch").fetchone()[0]
        t_compress = time.monotonic() - t0
        c.execute("VACUUM ANALYZE market.candles_1m")
        after = size(c)
        t_after = {k: timed(c, q) for k, q in QUERIES.items()}
    print(f"{rows} candles in {n} chunks; compression took {t_compress:.1f} s")
    print(f"size uncompressed {before / 2**20:8.1f} MiB ({before / rows:.0f} B/candle)")
    print(f"size compressed   {after / 2**20:8.1f} MiB ({after / rows:.0f} B/candle):"
          f" ratio {before / after:.1f}x")
    print(f"{'query':28s} {'uncompressed':>13s} {'compressed':>11s} {'ratio':>6s}")
    for k in QUERIES:
        print(f"{k:28s} {t_before[k] * 1000:10.0f} ms {t_after[k] * 1000:8.0f} ms"
              f" {t_before[k] / t_after[k]:5.2f}x")
    with psycopg.connect(a.dsn, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')


if __name__ == "__main__":
    main()
