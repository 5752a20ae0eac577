#!/usr/bin/env python3
"""Tick benchmarks (issue 19): aggTrades import, storage, streaming 500 USD-M symbols, and a
60 s database outage. Each section prints figures measured in one run.

  import   `ta-feed import` of aggTrades dumps against plain COPY + INSERT ... ON CONFLICT DO
           NOTHING into a bare table with the same key (market, symbol, agg_trade_id) and no
           other index or check, same files, same server (target >= 0.8x). Files: the recorded
           coin-M day (futures layout) written 10 times under 10 symbols (1,052,800 rows).
  storage  bytes per row of market.agg_trades and market.book_tickers on plain PostgreSQL
           (heap + indexes + TOAST, after VACUUM): the coin-M day, and the Tardis quotes as a
           futures bookTicker dump (update id = row number).
  stream   `ta-feed replay --market usdm --clone-symbols 500` of the coin-M day (as BTCUSDT)
           at --speed S -> `ta-feed stream --market usdm --symbols all --streams agg_trade`
           for --seconds: trades stored per second, every trade stored once (each symbol's
           ids contiguous from its first to its last stored), receive -> commit latency
           p50 / p99 (ta-feed's own histogram), ta-feed peak RSS and CPU, and the CPU of the
           replay and of PostgreSQL (what saturates first).
  outage   the same at --outage-speed on a private cluster (port --outage-port): after a
           minute, the cluster is stopped for --outage-seconds and started again; ta-feed's
           buffer (100,000 rows) fills, refuses the rest, and REST fills every missing id
           afterwards. Prints the trades/s, the peak RSS, and whether every trade is stored once.
           (REST limits are raised on both sides so the refill is not throttled: with Binance's
           2,400/min USD-M budget the refill of a 60 s outage takes minutes, the live stream
           meanwhile unaffected.)

Usage: tests/bench/ticks.py --dsn postgresql://postgres@127.0.0.1:5433/postgres
       [--ta-feed target/release/ta-feed] [--only import,storage,stream,outage]
       [--speed 40] [--seconds 300] [--outage-speed 50] [--outage-seconds 60]
"""
from __future__ import annotations

import argparse
import csv
import gzip
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import psycopg

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from common import binance_data as bd  # noqa: E402
from common import pg  # noqa: E402

CM = "futures_cm/aggTrades/BTCUSD_PERP-aggTrades-2026-05-08.csv.gz"
START_MS = 1_778_198_400_000  # 2026-05-08T00:00:00Z, the replays' start
_TIMES: list[int] = []


def offered_times(a) -> list[int]:
    if not _TIMES:
        _TIMES.extend(t.transact_time for t in bd.read_agg_trades(os.path.join(a.data, CM)))
    return _TIMES
QUOTES = "futures_um/tardis/BTCUSDT-quotes-2020-02-22.tardis.csv.gz"


def fresh(base: str, name: str) -> str:
    with psycopg.connect(base, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        c.execute(f'CREATE DATABASE "{name}"')
    return pg.dsn_for(name, base)


def drop(base: str, name: str) -> None:
    with psycopg.connect(base, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def migrate(ta_feed: str, url: str) -> None:
    subprocess.run([ta_feed, "migrate"], env=dict(os.environ, DATABASE_URL=url, RUST_LOG="warn"),
                   check=True, capture_output=True)


def proc_stats(pid: int) -> tuple[int, float]:
    """(VmHWM bytes, user+system CPU seconds) of a live process."""
    hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    return hwm, cpu_of(pid)


def cpu_of(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu(postmaster: int) -> float:
    """CPU seconds of a cluster's postmaster and its children (backends, walwriter...)."""
    total = 0.0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(d) == postmaster or int(fields[1]) == postmaster:
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            pass
    return total


def postmaster_pid(dsn: str) -> int | None:
    with psycopg.connect(dsn, autocommit=True) as c:
        d = c.execute("SHOW data_directory").fetchone()[0]
    try:
        return int(open(os.path.join(d, "postmaster.pid")).readline())
    except OSError:
        return None


def start_replay(ta_feed: str, args: list[str], tmp: str, name: str) -> tuple[subprocess.Popen, str]:
    out = os.path.join(tmp, f"{name}.out")
    p = subprocess.Popen([ta_feed, "replay", *args], stdout=open(out, "wb"),
                         stderr=open(os.path.join(tmp, f"{name}.log"), "wb"),
                         env=dict(os.environ, RUST_LOG="warn"))
    for _ in range(600):
        m = re.match(r"listening on (\S+)\n", open(out).readline())
        if m:
            return p, m.group(1)
        if p.poll() is not None:
            sys.exit(f"{name} exited: " + open(os.path.join(tmp, f"{name}.log")).read()[-2000:])
        time.sleep(0.1)
    sys.exit(f"{name} did not listen")


def tick_summary(log: str) -> dict:
    m = re.findall(r"agg_trades: Some\(TickSummary \{([^}]*)\}", log)
    if not m:
        return {}
    return {k: v for k, v in re.findall(r"(\w+): (?:Some\()?(\d+)", m[-1])}


# ---- import ------------------------------------------------------------------------------

BARE = """
CREATE TABLE bare_agg_trades (
    market text COLLATE "C" NOT NULL, symbol text COLLATE "C" NOT NULL,
    agg_trade_id bigint NOT NULL, price numeric NOT NULL, quantity numeric NOT NULL,
    first_trade_id bigint NOT NULL, last_trade_id bigint NOT NULL,
    transact_time timestamptz NOT NULL, is_buyer_maker boolean NOT NULL, is_best_match boolean,
    PRIMARY KEY (market, symbol, agg_trade_id));
"""


def bench_import(a, tmp: str) -> None:
    src = os.path.join(a.data, CM)
    text = gzip.open(src, "rt").read()
    files = []
    for k in range(10):
        sym = "BTCUSDT" if k == 0 else f"BTC{k:02d}USDT"
        p = os.path.join(tmp, f"{sym}-aggTrades-2026-05-08.csv")
        open(p, "w").write(text)
        files.append((p, sym))
    rows = 10 * (text.count("\n") - 1)
    print(f"import: {len(files)} files x {rows // 10} rows = {rows} aggTrades (plain CSV)")
    # plain: COPY each file into a temporary table, INSERT ... ON CONFLICT DO NOTHING
    dsn = fresh(a.dsn, "pg_ta_bench_ticks_plain")
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(BARE)
        t0 = time.monotonic()
        for path, sym in files:
            with c.transaction():
                c.execute("CREATE TEMP TABLE raw (a bigint, p numeric, q numeric, f bigint,"
                          " l bigint, t bigint, m boolean) ON COMMIT DROP")
                c.execute(f"COPY raw FROM '{path}' (FORMAT csv, HEADER true)")
                c.execute("INSERT INTO bare_agg_trades SELECT 'usdm', %s, a, p, q, f, l,"
                          " to_timestamp(t / 1000.0), m, NULL FROM raw ON CONFLICT DO NOTHING",
                          (sym,))
        t_plain = time.monotonic() - t0
    drop(a.dsn, "pg_ta_bench_ticks_plain")
    url = pg.url_for("pg_ta_bench_ticks_import", a.dsn)
    results = []
    for jobs in ("1", None):
        fresh(a.dsn, "pg_ta_bench_ticks_import")
        migrate(a.ta_feed, url)
        extra = ["--jobs", jobs] if jobs else []
        t0 = time.monotonic()
        subprocess.run([a.ta_feed, "import", "--market", "usdm", *extra, *[p for p, _ in files]],
                       env=dict(os.environ, DATABASE_URL=url, RUST_LOG="warn"), check=True,
                       stdout=subprocess.DEVNULL)
        results.append((jobs, time.monotonic() - t0))
    print(f"  plain COPY + INSERT ON CONFLICT DO NOTHING (bare table, one connection):"
          f" {t_plain:6.2f} s {rows / t_plain:9.0f} rows/s")
    for jobs, t in results:
        label = f"--jobs {jobs}" if jobs else f"default jobs ({min(os.cpu_count() or 1, 4)})"
        print(f"  ta-feed import {label:<27}: {t:6.2f} s {rows / t:9.0f} rows/s"
              f"  ratio {t_plain / t:.2f}x (target >= 0.8x)")
    drop(a.dsn, "pg_ta_bench_ticks_import")


# ---- storage -----------------------------------------------------------------------------

def bench_storage(a, tmp: str) -> None:
    url = pg.url_for("pg_ta_bench_ticks_storage", a.dsn)
    dsn = fresh(a.dsn, "pg_ta_bench_ticks_storage")
    migrate(a.ta_feed, url)
    book = os.path.join(tmp, "BTCUSDT-bookTicker-2020-02-22.csv")
    with open(book, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["update_id", "best_bid_price", "best_bid_qty", "best_ask_price",
                    "best_ask_qty", "transaction_time", "event_time"])
        for q in bd.read_tardis_quotes(os.path.join(a.data, QUOTES)):
            w.writerow([q.update_id, q.bid_price, q.bid_qty, q.ask_price, q.ask_qty, q.time_ms,
                        q.time_ms])
    env = dict(os.environ, DATABASE_URL=url, RUST_LOG="warn")
    subprocess.run([a.ta_feed, "import", "--market", "usdm", os.path.join(a.data, CM), book],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("VACUUM ANALYZE market.agg_trades, market.book_tickers")
        tsdb = c.execute("SELECT market.timescaledb_enabled()").fetchone()[0]
        for table in ("agg_trades", "book_tickers"):
            n = c.execute(f"SELECT count(*) FROM market.{table}").fetchone()[0]
            total, heap, idx = c.execute(
                f"SELECT pg_total_relation_size('market.{table}'),"
                f" pg_relation_size('market.{table}'), pg_indexes_size('market.{table}')"
            ).fetchone()
            if tsdb:
                # a hypertable's rows live in its chunks: sizes from TimescaleDB, before and
                # after compressing every chunk (segment by market, symbol; order by the id)
                size = (f"SELECT total_bytes, table_bytes, index_bytes"
                        f" FROM hypertable_detailed_size('market.{table}')")
                total, heap, idx = c.execute(size).fetchone()
                print(f"storage: market.{table}: {n} rows, {total / n:.1f} B/row"
                      f" (heap {heap / n:.1f}, indexes {idx / n:.1f}) uncompressed on TimescaleDB")
                c.execute(f"SELECT count(compress_chunk(ch, if_not_compressed => true))"
                          f" FROM show_chunks('market.{table}') ch")
                c.execute(f"VACUUM ANALYZE market.{table}")
                total = c.execute(size).fetchone()[0]
                print(f"storage: market.{table}: {total / n:.1f} B/row compressed (TimescaleDB"
                      f" columnstore; every chunk compressed)")
                continue
            print(f"storage: market.{table}: {n} rows, {total / n:.1f} B/row"
                  f" (heap {heap / n:.1f}, indexes {idx / n:.1f}) on plain PostgreSQL")
    drop(a.dsn, "pg_ta_bench_ticks_storage")


# ---- stream ------------------------------------------------------------------------------

def run_stream(a, tmp: str, dsn_base: str, db: str, speed: float, clones: int, seconds: float,
               outage: tuple[float, float] | None = None, cluster=None) -> None:
    files = os.path.join(tmp, "files")
    os.makedirs(files, exist_ok=True)
    link = os.path.join(files, "BTCUSDT-aggTrades-2026-05-08.csv.gz")
    if not os.path.exists(link):
        os.symlink(os.path.join(a.data, CM), link)
    dsn = fresh(dsn_base, db)
    url = pg.url_for(db, dsn_base)
    migrate(a.ta_feed, url)
    replay, addr = start_replay(a.ta_feed, [
        "--market", "usdm", "--clone-symbols", str(clones), "--speed", repr(speed),
        "--start", "2026-05-08T00:00:00Z", "--weight-limit-1m", "1000000", "--file", link],
        tmp, f"{db}-replay")
    err = os.path.join(tmp, f"{db}-stream.log")
    t_start = time.monotonic()
    stream = subprocess.Popen(
        [a.ta_feed, "stream", "--market", "usdm", "--symbols", "all", "--streams", "agg_trade",
         "--ws-url", f"ws://{addr}", "--rest-url", f"http://{addr}", "--retention-interval-secs",
         "0", "--rest-weight-soft-limit", "100000", "--trade-fill-weight-share", "1"],
        stdout=subprocess.DEVNULL, stderr=open(err, "wb"),
        env=dict(os.environ, DATABASE_URL=url, RUST_LOG="info"))
    pm = postmaster_pid(dsn)
    try:
        time.sleep(10)  # connect, first batches
        with psycopg.connect(dsn, autocommit=True) as c:
            n0 = c.execute("SELECT count(*) FROM market.agg_trades").fetchone()[0]
        t0 = time.monotonic()
        cpu0 = (cpu_of(stream.pid), cpu_of(replay.pid), postgres_cpu(pm) if pm else 0.0)
        if outage:
            before, down = outage
            time.sleep(before)
            print(f"  stopping the cluster for {down:.0f} s", flush=True)
            cluster.stop()
            time.sleep(down)
            cluster.start()
            print("  cluster started again", flush=True)
            time.sleep(max(0.0, seconds - before - down))
        else:
            time.sleep(seconds)
        dt = time.monotonic() - t0
        hwm, cpu_feed = proc_stats(stream.pid)
        cpu1 = (cpu_feed, cpu_of(replay.pid), postgres_cpu(pm) if pm and not outage else 0.0)
        with psycopg.connect(dsn, autocommit=True) as c:
            n1 = c.execute("SELECT count(*) FROM market.agg_trades").fetchone()[0]
            # let the REST fills of the last gaps finish (the live stream goes on meanwhile)
            t_settle = time.monotonic()
            holes = None
            while time.monotonic() - t_settle < 300:
                holes = c.execute(
                    "SELECT count(*) FROM (SELECT symbol FROM market.agg_trades GROUP BY symbol"
                    " HAVING count(*) <> max(agg_trade_id) - min(agg_trade_id) + 1) h").fetchone()[0]
                if holes == 0:
                    break
                time.sleep(2)
            print(f"  settled: {holes} symbols with missing ids"
                  f" {time.monotonic() - t_settle:.0f} s after the window", flush=True)
        hwm, _ = proc_stats(stream.pid)
        stream.send_signal(signal.SIGINT)
        stream.wait(timeout=120)
        log = open(err, errors="replace").read()
        if stream.returncode != 0:
            sys.exit("stream failed:\n" + log[-3000:])
        with psycopg.connect(dsn, autocommit=True) as c:
            per = c.execute(
                "SELECT symbol, count(*), max(agg_trade_id) - min(agg_trade_id) + 1"
                " FROM market.agg_trades GROUP BY symbol").fetchall()
            dq = dict(c.execute("SELECT kind, count(*) FROM market.data_quality_log"
                                " GROUP BY kind").fetchall())
        broken = [s for s, n, span in per if n != span]
        s = tick_summary(log)
        rate = (n1 - n0) / dt
        # what the replay offered in the measured window (its clock starts with the stream)
        times = offered_times(a)
        lo = START_MS + (t0 - t_start) * 1000 * speed
        hi = lo + dt * 1000 * speed
        offered = sum(1 for t in times if lo <= t < hi) * clones / dt
        print(f"  {len(per)} symbols, {n1} trades stored; {rate:,.0f} trades/s stored over"
              f" {dt:.0f} s (replay {speed:g}x offered {offered:,.0f}/s in that window)")
        print(f"  every trade stored once (ids contiguous per symbol): {not broken}"
              f" ({len(broken)} symbols with holes)")
        print(f"  receive -> commit latency p50 {s.get('latency_p50_ms')} ms, p99"
              f" {s.get('latency_p99_ms')} ms, max {s.get('latency_max_ms')} ms")
        print(f"  ta-feed peak RSS {hwm / 2**20:.1f} MiB; max buffered {s.get('max_buffered')}"
              f" rows; dropped (buffer full) {s.get('dropped')}; filled over REST"
              f" {s.get('filled')}; unfilled {s.get('unfilled')}")
        cores = [(cpu1[i] - cpu0[i]) / dt for i in range(3)]
        print(f"  CPU (cores): ta-feed {cores[0]:.2f}, replay {cores[1]:.2f}"
              + (f", PostgreSQL {cores[2]:.2f}" if not outage else "")
              + f" (of {os.cpu_count()})")
        print(f"  data_quality_log: {dq}")
    finally:
        for p in (stream, replay):
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
    drop(dsn_base, db)


class Cluster:
    """A private cluster (initdb, pg_ctl) on 127.0.0.1:PORT, run as postgres when root."""

    def __init__(self, port: int):
        pgc = os.environ.get("PG_CONFIG") or subprocess.run(
            [str(ROOT / ".ci" / "pg-config")], capture_output=True, text=True).stdout.strip()
        self.bindir = subprocess.run([pgc, "--bindir"], capture_output=True,
                                     text=True).stdout.strip()
        self.dir = tempfile.mkdtemp(prefix="pg_ta_bench_outage_")
        self.port = port
        self.root = os.geteuid() == 0
        if self.root:
            shutil.chown(self.dir, "postgres", "postgres")
        self.run("initdb", "-D", f"{self.dir}/pgdata", "-U", "postgres", "-A", "trust",
                 "-E", "UTF8", "--locale=C.UTF-8")
        with open(f"{self.dir}/pgdata/postgresql.conf", "a") as f:
            f.write(f"\nlisten_addresses = '127.0.0.1'\nport = {port}\n"
                    f"unix_socket_directories = '{self.dir}'\nshared_buffers = 256MB\n"
                    "max_wal_size = 4GB\n")
        self.start()

    def run(self, tool, *args):
        cmd = [os.path.join(self.bindir, tool), *args]
        if self.root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, cwd=self.dir)

    def start(self):
        self.run("pg_ctl", "-D", f"{self.dir}/pgdata", "-l", f"{self.dir}/log", "-w", "start")

    def stop(self):
        self.run("pg_ctl", "-D", f"{self.dir}/pgdata", "-m", "fast", "-w", "stop")

    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def remove(self):
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--ta-feed", default=str(ROOT / "target" / "release" / "ta-feed"))
    ap.add_argument("--data", default=bd.shared_data_dir())
    ap.add_argument("--only", default="import,storage,stream,outage")
    ap.add_argument("--symbols", type=int, default=500)
    ap.add_argument("--speed", type=float, default=40.0)
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--outage-symbols", type=int, default=100)
    ap.add_argument("--outage-speed", type=float, default=50.0)
    ap.add_argument("--outage-seconds", type=float, default=60.0)
    ap.add_argument("--outage-port", type=int, default=5455)
    ap.add_argument("--outage-before", type=float, default=60.0)
    ap.add_argument("--outage-after", type=float, default=120.0)
    a = ap.parse_args()
    for rel in (CM, QUOTES):
        if not os.path.isfile(os.path.join(a.data, rel)):
            sys.exit(f"recorded {rel} not found under {a.data}")
    only = set(a.only.split(","))
    tmp = tempfile.mkdtemp(prefix="pg_ta_bench_ticks_")
    os.chmod(tmp, 0o755)
    if "import" in only:
        bench_import(a, tmp)
    if "storage" in only:
        bench_storage(a, tmp)
    if "stream" in only:
        avg = 105_280 / 86_400
        print(f"stream: {a.symbols} USD-M symbols at {a.speed:g}x (about"
              f" {a.symbols * avg * a.speed:,.0f} aggTrades/s on average) for {a.seconds:.0f} s")
        run_stream(a, tmp, a.dsn, "pg_ta_bench_ticks_stream", a.speed, a.symbols, a.seconds)
    if "outage" in only:
        avg = 105_280 / 86_400
        total = a.outage_before + a.outage_seconds + a.outage_after
        print(f"outage: {a.outage_symbols} symbols at {a.outage_speed:g}x (about"
              f" {a.outage_symbols * avg * a.outage_speed:,.0f} aggTrades/s), the cluster stopped"
              f" for {a.outage_seconds:.0f} s after {a.outage_before:.0f} s, {total:.0f} s in all")
        cluster = Cluster(a.outage_port)
        try:
            run_stream(a, tmp, cluster.dsn(), "pg_ta_bench_ticks_outage", a.outage_speed,
                       a.outage_symbols, total, outage=(a.outage_before, a.outage_seconds),
                       cluster=cluster)
        finally:
            cluster.remove()
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
