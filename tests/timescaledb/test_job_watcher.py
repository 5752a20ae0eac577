"""`ta-feed stream` watching the TimescaleDB jobs pg_ta relies on (sidecar/src/timescaledb.rs,
sql/016_job_health.sql), on a real TimescaleDB:

  (A) failing jobs: the compression policy runs in the background scheduler.  On TimescaleDB
      2.28.3 with PostgreSQL 15.20 every background run fails after committing its work
      ("cannot drop portal ... while it is being set up"); there `/health` must be degraded,
      name the job and its error, and say that its work is done; the change is logged once in
      market.data_quality_log.  On TimescaleDB 2.29 with PostgreSQL 18 the run succeeds and no
      job is reported.
  (B) overdue work: the compression job is unscheduled (a job made to do nothing) while chunks
      older than compress_after arrive; with a 1 s margin the watcher reports the work overdue,
      runs the job itself (`CALL run_job`), logs it, and reports the work done afterwards.

Skips with a message when the test server cannot load TimescaleDB (CI runs plain PostgreSQL;
run it by hand on a TimescaleDB build: docs/testing.md).
"""
from __future__ import annotations

import io
import json
import os
import re
import tempfile
import time
import urllib.request
from datetime import datetime, timezone

import pytest

from common import binance_data as bd
from common import pg
from common.procs import Child, finish, wait_listening

psycopg = pytest.importorskip("psycopg")

DB = "pg_ta_tsdb_jobs"


def _dt(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat()


def _copy(conn, market: str, symbol: str, klines) -> None:
    buf = io.StringIO()
    for k in klines:
        buf.write(f"{market}\t{symbol}\t{_dt(k.open_time)}\t{_dt(k.close_time)}\t{k.open}\t{k.high}"
                  f"\t{k.low}\t{k.close}\t{k.volume}\t{k.quote_volume}\t{k.trades}"
                  f"\t{k.taker_buy_volume}\t{k.taker_buy_quote_volume}\n")
    with conn.transaction():
        conn.execute("SET LOCAL market.evaluate_alerts = off")
        with conn.cursor().copy(
                "COPY market.candles_1m (market, symbol, open_time, close_time, open, high, low,"
                " close, volume, quote_volume, trades, taker_buy_volume, taker_buy_quote_volume)"
                " FROM STDIN") as cp:
            cp.write(buf.getvalue())


def _health(addr: str) -> dict:
    try:
        with urllib.request.urlopen(f"http://{addr}/health", timeout=5) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:       # 503 still carries the document
        return json.loads(e.read())


def _wait(what: str, pred, deadline: float, every: float = 0.5):
    while True:
        v = pred()
        if v:
            return v
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def _kinds(c, after: int = 0) -> list[tuple]:
    return c.execute("SELECT kind, detail FROM market.data_quality_log"
                     " WHERE kind LIKE 'timescaledb%%' AND id > %s ORDER BY id", (after,)).fetchall()


def _uncompressed_old(c) -> int:
    """Uncompressed chunks of the FILUSDT months (2023), all older than compress_after."""
    return c.execute("SELECT count(*) FROM timescaledb_information.chunks"
                     " WHERE hypertable_schema = 'market' AND hypertable_name = 'candles_1m'"
                     "   AND NOT is_compressed AND range_start >= '2023-01-01'"
                     "   AND range_end <= now() - interval '7 days'").fetchone()[0]


def test_failing_jobs_and_overdue_work_are_reported_and_repaired():
    with psycopg.connect(pg.server_dsn()) as c:
        preload = c.execute("SHOW shared_preload_libraries").fetchone()[0]
        available = c.execute("SELECT count(*) FROM pg_available_extensions"
                              " WHERE name = 'timescaledb'").fetchone()[0]
    if "timescaledb" not in preload or not available:
        pytest.skip("TimescaleDB is not installed/preloaded on the test server (plain "
                    "PostgreSQL): the job watcher's TimescaleDB test does not apply here")
    d = os.path.join(bd.shared_data_dir(), "futures_um", "klines12")
    aug = os.path.join(d, "FILUSDT-1m-2023-08.csv.gz")
    sep = os.path.join(d, "FILUSDT-1m-2023-09.csv.gz")
    btc = os.path.join(bd.shared_data_dir(), "spot", "klines12",
                       "BTCUSDT-1m-2021-10-11_2021-10-21.csv.gz")
    for f in (aug, sep, btc):
        if not os.path.exists(f):
            pytest.skip(f"shared data not found: {f}")
    pg.fresh_database(DB)
    pg.migrate(DB)
    dsn = pg.dsn_for(DB)
    logdir = tempfile.mkdtemp(prefix="pg_ta_tsdb_jobs_")
    children: list[Child] = []
    ok = False
    try:
        with psycopg.connect(dsn, autocommit=True) as c:
            versions = c.execute("SELECT current_setting('server_version'), extversion"
                                 " FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
            print(f"\nPostgreSQL {versions[0]}, TimescaleDB {versions[1]}")
            _copy(c, "usdm", "FILUSDT", bd.read_klines12(aug))
            job = c.execute("SELECT job_id FROM timescaledb_information.jobs"
                            " WHERE proc_name = 'policy_compression' AND hypertable_schema = 'market'"
                            "   AND hypertable_name = 'candles_1m'").fetchone()[0]
            # (A) the scheduler runs the compression policy now, in the background
            runs = c.execute("SELECT coalesce(total_runs, 0) FROM timescaledb_information.job_stats"
                             " WHERE job_id = %s", (job,)).fetchone()[0]
            c.execute("SELECT alter_job(%s, next_start => now())", (job,))
            deadline = time.monotonic() + 120
            status = _wait("the background compression run", lambda: c.execute(
                "SELECT last_run_status FROM timescaledb_information.job_stats WHERE job_id = %s"
                "   AND total_runs > %s AND last_run_status IS NOT NULL",
                (job, runs)).fetchone(), deadline)[0]
            print(f"background run of job {job}: {status}, old uncompressed chunks left:"
                  f" {_uncompressed_old(c)}")
            if versions[0].startswith("15.20") and versions[1] == "2.28.3":
                assert status == "Failed", "2.28.3 on 15.20: background runs fail (known)"
            assert _uncompressed_old(c) == 0, "the run committed its work either way"
            # stop the scheduler from doing (B)'s work: a job made to do nothing
            c.execute("SELECT alter_job(%s, scheduled => false)", (job,))

        env = dict(os.environ, DATABASE_URL=pg.url_for(DB), NO_COLOR="1", RUST_LOG="info")
        replay = Child("replay", ["replay", "--speed", "60", "--file", btc], logdir, env)
        children.append(replay)
        addr = wait_listening(replay, time.monotonic() + 60)
        stream = Child("stream", [
            "stream", "--symbols", "BTCUSDT", "--ws-url", f"ws://{addr}", "--rest-url",
            f"http://{addr}", "--backfill-minutes", "60", "--health-addr", "127.0.0.1:0",
            "--timescaledb-check-secs", "1", "--timescaledb-overdue-margin-secs", "1"],
            logdir, env)
        children.append(stream)
        health = _wait("health address", lambda: re.search(
            r"health on (\S+)", open(stream.out_path).read()), time.monotonic() + 60)[1]
        deadline = time.monotonic() + 120
        with psycopg.connect(dsn, autocommit=True) as c:
            if status == "Failed":
                name = f"TimescaleDB job {job} (compression of market.candles_1m)"
                doc = _wait("the compression job's failing reason in /health", lambda: (
                    lambda h: h if any(name in r and "is failing" in r for r in h["reasons"])
                    else None)(_health(health)), deadline)
                reason = next(r for r in doc["reasons"] if name in r)
                print(f"/health: {doc['status']}: {reason}")
                assert doc["status"] == "degraded"
                assert "cannot drop portal" in reason and reason.endswith("its work is done")
                failing = [dt for k, dt in _kinds(c) if k == "timescaledb_job_failing"
                           and dt["job_id"] == job]
                assert len(failing) == 1, failing
            else:
                time.sleep(3)
                doc = _health(health)
                assert not any(f"TimescaleDB job {job} " in r and "is failing" in r
                               for r in doc["reasons"]), doc["reasons"]

            # (B) older chunks arrive while the job does nothing: overdue, then repaired (the
            # streamed 2021 candles may have made the job overdue already: count from here)
            mark = c.execute("SELECT coalesce(max(id), 0) FROM market.data_quality_log").fetchone()[0]
            _copy(c, "usdm", "FILUSDT", bd.read_klines12(sep))
            assert _uncompressed_old(c) > 0
            mine = lambda kind: [dt for k, dt in _kinds(c, mark)
                                 if k == kind and dt["job_id"] == job]

            def repaired():
                """This job's rows since the copy, in order: overdue, then a run by ta-feed,
                then done (a 'done' of the streamed candles' own round may come first)."""
                seq = [k for k, dt in _kinds(c, mark) if dt["job_id"] == job]
                if "timescaledb_work_overdue" not in seq:
                    return False
                after = seq[seq.index("timescaledb_work_overdue"):]
                if "timescaledb_job_run" not in after:
                    return False
                return "timescaledb_work_done" in after[after.index("timescaledb_job_run"):]
            _wait("ta-feed to run the overdue job and report its work done", repaired, deadline)
            print("data_quality_log since the copy:",
                  [(k, dt["job_id"]) for k, dt in _kinds(c, mark)])
            runs = mine("timescaledb_job_run")
            assert runs[0]["ok"] is True, runs
            overdue = mine("timescaledb_work_overdue")
            assert overdue and "not compressed" in overdue[0]["pending_work"], overdue
            assert _uncompressed_old(c) == 0
            # /health clears the reason once the work is done (the streamed candles can make a
            # new day's chunk overdue again meanwhile, so wait for a clear moment)
            _wait("/health without the job's overdue reason", lambda: not any(
                f"TimescaleDB job {job} " in r and "overdue" in r
                for r in _health(health)["reasons"]), deadline)
            metrics = urllib.request.urlopen(f"http://{health}/metrics", timeout=5).read().decode()
            assert "ta_feed_timescaledb_job_runs_total" in metrics
        err = stream.stderr_text()
        assert "TIMESCALEDB WORK OVERDUE" in err and "ran overdue TimescaleDB job itself" in err
        assert stream.interrupt() == 0
        assert replay.interrupt() == 0
        ok = True
    finally:
        finish(children, ok, DB, logdir)
