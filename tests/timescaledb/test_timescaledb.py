"""The TimescaleDB path of the data schema: hypertables, compression, continuous aggregates,
retention, and the candle triggers on compressed chunks.

Runs when the test server can load TimescaleDB (it is in shared_preload_libraries; `.ci/cluster`
preloads it when it is installed for the PG_CONFIG in use) and skips with a message otherwise:
CI machines have plain PostgreSQL 15 only.  Data: the four FILUSDT USD-M months (2023-08..11,
175,680 minutes) as market 'usdm' and the spot BTCUSDT crash week as 'spot'.
"""
from __future__ import annotations

import io
import os
from datetime import datetime, timezone

import pytest

from common import pg
from common import binance_data as bd

psycopg = pytest.importorskip("psycopg")

DB = "pg_ta_timescaledb"
# continuous aggregates over the tick tables (sql/014; tests/timescaledb/test_ticks_timescaledb.py)
TICK_CAGGS = ("trade_candles_1m", "book_1m")
ROLLUPS = [("candles_5m", "5 minutes"), ("candles_15m", "15 minutes"), ("candles_1h", "1 hour"),
           ("candles_4h", "4 hours"), ("candles_1d", "1 day")]


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


def _screener(conn, frm="-infinity", to="infinity"):
    return {(r[0], r[1], r[2]): r[3] for r in conn.execute(
        "SELECT m.market, m.symbol, m.open_time, row_to_json(m)::text"
        " FROM market.screener_range(%s, %s) m", (frm, to))}


@pytest.fixture(scope="module")
def db():
    with psycopg.connect(pg.server_dsn()) as c:
        preload = c.execute("SHOW shared_preload_libraries").fetchone()[0]
        available = c.execute("SELECT count(*) FROM pg_available_extensions"
                              " WHERE name = 'timescaledb'").fetchone()[0]
    if "timescaledb" not in preload or not available:
        pytest.skip("TimescaleDB is not installed/preloaded on the test server (plain "
                    "PostgreSQL): the TimescaleDB tests do not apply here")
    pg.fresh_database(DB)
    pg.migrate(DB)
    dsn = pg.dsn_for(DB)
    d = os.path.join(bd.shared_data_dir(), "futures_um", "klines12")
    fil = []
    for month in ("2023-08", "2023-09", "2023-10", "2023-11"):
        fil += bd.read_klines12(os.path.join(d, f"FILUSDT-1m-{month}.csv.gz"))
    btc = bd.read_klines12(os.path.join(bd.shared_data_dir(), "spot", "klines12",
                                        "BTCUSDT-1m-2021-05-15_2021-05-22.csv.gz"))
    with psycopg.connect(dsn, autocommit=True) as c:
        _copy(c, "usdm", "FILUSDT", fil)
        _copy(c, "spot", "BTCUSDT", btc)
    yield dsn
    pg.drop_database(DB)


def test_hypertables_policies_and_jobs(db):
    with psycopg.connect(db) as c:
        hts = {r[0] for r in c.execute("SELECT hypertable_name FROM timescaledb_information.hypertables"
                                       " WHERE hypertable_schema = 'market'")}
        assert {"candles_1m", "alert_history"} <= hts, hts
        seg = c.execute("SELECT attname, segmentby_column_index, orderby_column_index"
                        " FROM timescaledb_information.compression_settings"
                        " WHERE hypertable_schema = 'market' AND hypertable_name = 'candles_1m'"
                        " ORDER BY attname").fetchall()
        assert ("market", 1, None) in seg and ("symbol", 2, None) in seg, seg
        assert ("open_time", None, 1) in seg, seg
        jobs = {r[0] for r in c.execute("SELECT proc_name FROM timescaledb_information.jobs"
                                        " WHERE proc_schema IN ('market', '_timescaledb_functions')"
                                        "    OR hypertable_schema = 'market'")}
        assert {"policy_compression", "_retention_job", "policy_refresh_continuous_aggregate"} <= jobs, jobs
        caggs = {r[0] for r in c.execute("SELECT view_name FROM"
                                         " timescaledb_information.continuous_aggregates"
                                         " WHERE view_schema = 'market'")}
        assert caggs == {n for n, _ in ROLLUPS} | set(TICK_CAGGS)


def _rollups_equal_reference(conn):
    for name, width in ROLLUPS:
        ref = conn.execute("SELECT market._rollup_sql(%s::interval, NULL)", (width,)).fetchone()[0]
        diff = conn.execute(f"SELECT count(*) FROM ((SELECT * FROM market.{name} EXCEPT ALL ({ref}))"
                            f" UNION ALL (({ref}) EXCEPT ALL SELECT * FROM market.{name})) d"
                            ).fetchone()[0]
        n = conn.execute(f"SELECT count(*) FROM market.{name}").fetchone()[0]
        assert n > 0 and diff == 0, f"{name}: {diff} rows differ from the plain definition ({n} rows)"


def test_continuous_aggregates_equal_the_plain_definition(db):
    with psycopg.connect(db, autocommit=True) as c:
        _rollups_equal_reference(c)            # real-time aggregation, nothing materialized
        for name, _ in ROLLUPS:
            c.execute(f"CALL refresh_continuous_aggregate('market.{name}', NULL, NULL)")
        _rollups_equal_reference(c)            # materialized
        rsi = c.execute("SELECT count(r) FROM (SELECT ta.rsi(close, 14) OVER (PARTITION BY"
                        " market, symbol ORDER BY open_time) AS r FROM market.candles_1h) x"
                        ).fetchone()[0]
        assert rsi > 2000


def test_triggers_on_compressed_chunks(db):
    with psycopg.connect(db, autocommit=True) as c:
        before = _screener(c)
        n = c.execute("SELECT count(compress_chunk(ch, if_not_compressed => true)) FROM"
                      " show_chunks('market.candles_1m', older_than => '2023-11-20'::timestamptz) ch"
                      ).fetchone()[0]
        assert n > 100
        assert _screener(c) == before, "compression changed the screener"
        # rewrite a compressed minute (the upsert ta-feed does) and delete another
        t_rw = "2023-09-10 12:00+00"
        t_del = "2023-10-05 08:00+00"
        c.execute("INSERT INTO market.candles_1m SELECT * FROM market.candles_1m"
                  " WHERE market = 'usdm' AND symbol = 'FILUSDT' AND open_time = %s"
                  " ON CONFLICT (market, symbol, open_time) DO UPDATE SET close = EXCLUDED.close + 0.001,"
                  " high = greatest(EXCLUDED.high, EXCLUDED.close + 0.001)", (t_rw,))
        c.execute("DELETE FROM market.candles_1m WHERE market = 'usdm' AND symbol = 'FILUSDT'"
                  " AND open_time = %s", (t_del,))
        live = _screener(c)
        head = c.execute("SELECT \"row\"::text FROM market.screener_state"
                         " WHERE market = 'usdm'").fetchone()[0]
        changed = sum(1 for k in live if k in before and live[k] != before[k])
        assert changed > 100, "the rewrite should change the chain (RSI) of every later minute"
        c.execute("SELECT market.rebuild_screener_state()")
        assert _screener(c) == live, "triggers on compressed chunks differ from a rebuild"
        assert c.execute("SELECT \"row\"::text FROM market.screener_state"
                         " WHERE market = 'usdm'").fetchone()[0] == head


def test_retention_drops_whole_days_and_keeps_values(db):
    with psycopg.connect(db, autocommit=True) as c:
        head = c.execute("SELECT \"row\"::text FROM market.screener_state WHERE market = 'usdm'"
                         ).fetchone()[0]
        newest = c.execute("SELECT max(open_time) FROM market.candles_1m").fetchone()[0]
        keep_from = c.execute("SELECT date_bin('1 day', %s::timestamptz - interval '40 days',"
                              " '2000-01-01 00:00+00')", (newest,)).fetchone()[0]
        probe_from = c.execute("SELECT %s::timestamptz + interval '3 days'", (keep_from,)).fetchone()[0]
        before = _screener(c, probe_from)
        c.execute("UPDATE market.settings SET candles_retention = '40 days'")
        r = c.execute("SELECT * FROM market.apply_retention()").fetchone()
        assert r[0] == keep_from and r[1] > 0, r
        first = c.execute("SELECT min(open_time) FROM market.candles_1m WHERE market = 'usdm'"
                          ).fetchone()[0]
        assert first == keep_from
        assert c.execute("SELECT count(*) FROM market.screener_checkpoints"
                         " WHERE open_time < %s", (keep_from,)).fetchone()[0] == 0
        assert _screener(c, probe_from) == before, "retention changed kept candles' values"
        assert c.execute("SELECT \"row\"::text FROM market.screener_state WHERE market = 'usdm'"
                         ).fetchone()[0] == head
        c.execute("UPDATE market.settings SET candles_retention = NULL")


def test_policy_jobs_run(db):
    """Every job migrate schedules runs to completion (in the foreground, with run_job: what the
    scheduler does in a background worker), and does its work: the compression policy
    compresses every chunk older than compress_after, the refresh policies materialize the
    rollups (equal to the plain definition), the retention job keeps what settings keep."""
    with psycopg.connect(db, autocommit=True) as c:
        jobs = c.execute("SELECT job_id, proc_name FROM timescaledb_information.jobs"
                         " WHERE proc_schema = 'market' OR hypertable_schema = 'market'"
                         " ORDER BY job_id").fetchall()
        # the candles' columnstore and the retention job, the rollups' refreshes; the tick
        # tables' columnstore and their continuous aggregates' refreshes
        assert len(jobs) == 2 + len(ROLLUPS) + 2 + len(TICK_CAGGS), jobs
        candles = c.execute("SELECT count(*) FROM market.candles_1m").fetchone()[0]
        old_chunks = ("SELECT count(*) FILTER (WHERE NOT is_compressed), count(*)"
                      " FROM timescaledb_information.chunks WHERE hypertable_schema = 'market'"
                      " AND hypertable_name = 'candles_1m'"
                      " AND range_end < now() - (SELECT compress_after FROM market.settings)")
        before = c.execute(old_chunks).fetchone()
        assert before[0] > 0, f"every chunk is compressed already: {before}"
        for job_id, proc in jobs:
            c.execute("CALL run_job(%s)", (job_id,))
        after = c.execute(old_chunks).fetchone()
        assert after[0] == 0 and after[1] > 30, f"chunks left uncompressed by the policy: {after}"
        _rollups_equal_reference(c)
        assert c.execute("SELECT count(*) FROM market.candles_1m").fetchone()[0] == candles
