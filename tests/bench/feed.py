#!/usr/bin/env python3
"""Feed benchmark (issue 9): 500+ USD-M perpetuals from the fake exchange through `ta-feed stream`
into PostgreSQL, measured at a LISTEN client.

Setup: `ta-feed replay --market usdm --clone-symbols N` over the seven recorded
futures_um/klines12/*-2026-02 dumps (7 x 72 = 504 symbols by default) at --speed S (default 10:
a replayed minute every 6 s), the replay's 2400/min request-weight limit per wall-clock minute
enforced (429 past it), closed klines sent 2 s after the minute, and `--sent-log` recording when
the last closed kline of every minute left the replay on each connection.
`ta-feed stream --market usdm --symbols all --backfill-minutes 1440` into a fresh database with
the full schema; a custom rule `bench_heartbeat` (`symbol = 'ALGOUSDT'`, no cooldown) fires
once a minute so every minute has a NOTIFY to time.

Prints:
  cold start   seconds from `stream` start until every symbol has 1440 minutes stored and the
               start-up backfill finished (the screener's 1d windows are full), REST requests,
               429s and the highest used weight of a wall-clock minute;
  latency      per live minute that closed after the start-up backfill, LISTEN receipt of its
               NOTIFY minus the moment the replay sent the minute's last closed kline (max over
               connections): p50 / p99 / max, ms (minutes that closed during the backfill
               waited for it and are reported apart);
  resources    ta-feed peak RSS (VmHWM) and CPU (user + system over the run), connections.

Usage: tests/bench/feed.py --dsn postgresql://postgres@127.0.0.1:5433/postgres
       [--ta-feed target/release/ta-feed] [--clones 72] [--speed 10] [--live-minutes 30]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import pathlib
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime, timezone

import psycopg

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from common import binance_data as bd  # noqa: E402
from common import pg  # noqa: E402

DB = "pg_ta_bench_feed"


def http(addr: str, path: str) -> dict:
    with urllib.request.urlopen(f"http://{addr}{path}", timeout=10) as r:
        return json.loads(r.read())


def proc_stats(pid: int) -> tuple[int, float]:
    """(VmHWM bytes, user+system CPU seconds) of a live process."""
    hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return hwm, (int(fields[11]) + int(fields[12])) / ticks


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--ta-feed", default=str(ROOT / "target" / "release" / "ta-feed"))
    ap.add_argument("--data", default=bd.shared_data_dir())
    ap.add_argument("--clones", type=int, default=72)
    ap.add_argument("--speed", type=float, default=10.0)
    ap.add_argument("--live-minutes", type=int, default=30)
    args = ap.parse_args()
    files = sorted(glob.glob(os.path.join(args.data, "futures_um", "klines12", "*-2026-02.csv.gz")))
    if len(files) < 7:
        sys.exit(f"recorded futures_um/klines12/*-2026-02 dumps not found under {args.data}")
    with psycopg.connect(args.dsn, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
        c.execute(f'CREATE DATABASE "{DB}"')
    env = dict(os.environ, DATABASE_URL=pg.url_for(DB, args.dsn), NO_COLOR="1", RUST_LOG="info")
    subprocess.run([args.ta_feed, "migrate"], env=env, check=True, capture_output=True)
    dsn = pg.dsn_for(DB, args.dsn)
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("INSERT INTO market.alert_rules (name, expression, cooldown) VALUES"
                  " ('bench_heartbeat', 'symbol = ''ALGOUSDT''', interval '0')")
        channel = c.execute("SELECT market.alert_channel()").fetchone()[0]

    tmp = tempfile.mkdtemp(prefix="pg_ta_bench_feed_")
    sent_log = os.path.join(tmp, "sent.jsonl")
    replay_out = open(os.path.join(tmp, "replay.out"), "wb")
    replay_err = open(os.path.join(tmp, "replay.log"), "wb")
    replay = subprocess.Popen(
        [args.ta_feed, "replay", "--market", "usdm", "--clone-symbols", str(args.clones),
         "--speed", repr(args.speed), "--sent-log", sent_log,
         *[a for f in files for a in ("--file", f)]],
        stdout=replay_out, stderr=replay_err, env=env)
    addr = None
    while addr is None:
        time.sleep(0.05)
        first = open(os.path.join(tmp, "replay.out")).readline()
        m = re.match(r"listening on (\S+)\n", first)
        addr = m.group(1) if m else None
        if replay.poll() is not None:
            sys.exit("replay exited: " + open(os.path.join(tmp, "replay.log")).read()[-2000:])

    received: dict[str, float] = {}
    stop = threading.Event()

    def listener():
        with psycopg.connect(dsn, autocommit=True) as lc:
            lc.execute(f'LISTEN "{channel}"')
            while not stop.is_set():
                for n in lc.notifies(timeout=0.5):
                    at = time.time() * 1000
                    p = json.loads(n.payload)
                    if p.get("rule") == "bench_heartbeat":
                        received.setdefault(p["open_time"], at)
    th = threading.Thread(target=listener, daemon=True)
    th.start()
    time.sleep(0.5)

    stream_err = open(os.path.join(tmp, "stream.log"), "wb")
    t0 = time.monotonic()
    stream = subprocess.Popen(
        [args.ta_feed, "stream", "--market", "usdm", "--symbols", "all",
         "--ws-url", f"ws://{addr}", "--rest-url", f"http://{addr}", "--backfill-minutes", "1440",
         "--stop-after-minutes", str(args.live_minutes)],
        stdout=subprocess.DEVNULL, stderr=stream_err, env=env)
    cold = None
    cold_done_ms = float("inf")
    hwm, cpu = 0, 0.0
    with psycopg.connect(dsn, autocommit=True) as c:
        while stream.poll() is None:
            try:
                hwm, cpu = proc_stats(stream.pid)
            except OSError:
                pass
            if cold is None and "start-up backfill finished" in open(
                    os.path.join(tmp, "stream.log"), errors="replace").read():
                full = c.execute(
                    "SELECT count(*) FILTER (WHERE n >= 1440), count(*) FROM (SELECT symbol,"
                    " count(*) AS n FROM market.candles_1m GROUP BY symbol) s").fetchone()
                cold = time.monotonic() - t0
                cold_done_ms = time.time() * 1000
                print(f"cold start: {cold:.1f} s to {full[0]} of {full[1]} symbols with "
                      f">= 1440 minutes stored", flush=True)
            time.sleep(0.25)
    wall = time.monotonic() - t0
    status = http(addr, "/_replay/status")
    time.sleep(1)
    stop.set()
    th.join(timeout=5)
    replay.send_signal(signal.SIGINT)
    replay.wait(timeout=30)
    log = open(os.path.join(tmp, "stream.log"), errors="replace").read()
    if stream.returncode != 0:
        sys.exit("stream failed:\n" + log[-3000:])

    sent: dict[int, float] = {}
    for line in open(sent_log):
        e = json.loads(line)
        sent[e["open_time"]] = max(sent.get(e["open_time"], 0), e["sent_at_ms"])
    lat, queued = [], []
    for ot, at in received.items():
        t = int(datetime.strptime(ot, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=timezone.utc).timestamp() * 1000)
        if t in sent:
            # minutes that closed during the start-up backfill wait for it: reported apart
            (lat if sent[t] > cold_done_ms else queued).append(at - sent[t])
    with psycopg.connect(dsn, autocommit=True) as c:
        n_sym = c.execute("SELECT count(DISTINCT symbol) FROM market.candles_1m").fetchone()[0]
        rows = c.execute("SELECT count(*) FROM market.candles_1m").fetchone()[0]
    m = re.findall(r"stream stopped summary=StreamSummary \{([^}]*)\}", log)
    summary = dict(re.findall(r"(\w+): (\d+)", m[-1])) if m else {}
    print(f"symbols: {n_sym}; candles stored: {rows}; replay speed {args.speed:g}x")
    print(f"REST: {status.get('klines_requests')} klines requests, "
          f"{status.get('rate_limited')} answered 429, {status.get('banned')} answered 418")
    print(f"connections: {status.get('connections_open')} open at the end "
          f"({status.get('connections_total')} opened in all)")
    if cold is not None:
        print(f"cold start to full 1d windows: {cold:.1f} s (target < 180 s)")
    if lat:
        print(f"close -> NOTIFY at a LISTEN client over {len(lat)} live minutes: p50 "
              f"{statistics.median(lat):.1f} ms, p99 {pct(lat, 0.99):.1f} ms, max {max(lat):.1f} ms "
              "(target p99 < 100 ms)")
    if queued:
        print(f"{len(queued)} minute(s) closed during the start-up backfill and waited for it "
              f"(written {min(queued) / 1000:.1f}-{max(queued) / 1000:.1f} s after their close)")
    print(f"ta-feed peak RSS {hwm / 2**20:.1f} MiB (target < 50 MB); CPU {cpu:.1f} s over "
          f"{wall:.0f} s wall ({100 * cpu / wall:.1f} % of one core)")
    print(f"stream summary: {summary}")
    print(f"logs: {tmp}")
    with psycopg.connect(args.dsn, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')


if __name__ == "__main__":
    main()
