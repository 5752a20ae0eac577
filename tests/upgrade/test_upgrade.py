"""Upgrade of a database created by pg_ta 0.1.0 with data in it (to the current release, through
every upgrade script; tests/upgrade/test_upgrade_0_2_0.py starts from 0.2.0).

A real 0.1.0 database is built on the test server: `CREATE EXTENSION pg_ta VERSION '0.1.0'`
(the released install script, extension/sql/pg_ta--0.1.0.sql) and the 0.1.0 data schema
(tests/fixtures/schema-0.1.0, the files of `sql/` at the 0.1.0 release), then real candles are
written through its triggers (bulk COPY, then minute by minute with alerts on), a custom rule
and edited settings are saved and alerts fire.  The 0.1.0 screener is read at every candle.

Then the user's upgrade is run exactly as documented: `ta-feed migrate` (ALTER EXTENSION pg_ta
UPDATE + the current data schema, in one transaction), twice (idempotent).  It must:
  * keep every candle (market = 'spot'), alert, rule (custom rule recompiled), setting;
  * give the same screener at every candle, bit for bit (every column of 0.1.0's
    market.screener_range against 0.2.0's, float8 compared by their exact text);
  * leave a catalog identical to a fresh install: the extension's objects (functions
    with volatility, strictness, parallel safety, C symbol, ACL; types; aggregates; comments)
    and `pg_dump --schema-only` of schema market;
  * work afterwards: a new live minute fires alerts with payload version 2.
The 0.1.0 schema's window cache path needs 0.1.0's cache functions, which 0.2.0 removes, so the
old database runs with market.screener_cache = off (its lookup path; same values).
"""
from __future__ import annotations

import glob
import io
import json
import os
import subprocess
from datetime import datetime, timezone

import pytest

from common import pg
from common import binance_data as bd

psycopg = pytest.importorskip("psycopg")

HERE = os.path.dirname(os.path.abspath(__file__))
OLD_SCHEMA = os.path.join(HERE, "..", "fixtures", "schema-0.1.0")
DB_OLD = "pg_ta_upgrade_old"
CURRENT = "0.3.0"   # the library's version (pg_ta--0.1.0--0.2.0.sql, then --0.2.0--0.3.0.sql)
DB_NEW = "pg_ta_upgrade_fresh"


def _dt(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat()


def _klines(name: str) -> list:
    path = os.path.join(bd.shared_data_dir(), "spot", "klines12", name)
    if not os.path.exists(path):
        pytest.skip(f"shared data not found: {path}")
    return bd.read_klines12(path)


def _copy_rows(conn, symbol: str, klines: list) -> None:
    buf = io.StringIO()
    for k in klines:
        buf.write(f"{symbol}\t{_dt(k.open_time)}\t{_dt(k.close_time)}\t{k.open}\t{k.high}\t{k.low}"
                  f"\t{k.close}\t{k.volume}\t{k.quote_volume}\t{k.trades}\t{k.taker_buy_volume}"
                  f"\t{k.taker_buy_quote_volume}\n")
    with conn.cursor().copy(
            "COPY market.candles_1m (symbol, open_time, close_time, open, high, low, close,"
            " volume, quote_volume, trades, taker_buy_volume, taker_buy_quote_volume)"
            " FROM STDIN") as cp:
        cp.write(buf.getvalue())


def _insert_one(conn, symbol: str, k) -> None:
    conn.execute(
        "INSERT INTO market.candles_1m (symbol, open_time, close_time, open, high, low, close,"
        " volume, quote_volume, trades, taker_buy_volume, taker_buy_quote_volume)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (symbol, _dt(k.open_time), _dt(k.close_time), k.open, k.high, k.low, k.close, k.volume,
         k.quote_volume, k.trades, k.taker_buy_volume, k.taker_buy_quote_volume))


def _screener_rows(conn) -> dict:
    """(symbol, open_time) -> {column: exact text} of every candle's screener row."""
    out = {}
    for (j,) in conn.execute("SELECT row_to_json(m)::text FROM market.screener_range("
                             "'-infinity', 'infinity') m"):
        row = json.loads(j, parse_float=str, parse_int=str)
        row.pop("market", None)
        out[(row["symbol"], row["open_time"])] = row
    return out


def _ext_catalog(conn) -> list:
    """Every object of extension pg_ta, described by what a user can observe."""
    return conn.execute("""
        SELECT 'function', p.oid::regprocedure::text,
               concat_ws(' | ', pg_get_function_result(p.oid), p.prokind, p.provolatile,
                         p.proisstrict, p.proparallel, p.prosecdef,
                         CASE WHEN l.lanname = 'c' THEN p.prosrc ELSE md5(p.prosrc) END,
                         p.proacl::text, obj_description(p.oid, 'pg_proc'),
                         a.aggtransfn::text, a.aggfinalfn::text, a.aggfinalmodify, a.aggkind,
                         a.aggtranstype::regtype::text, a.aggcombinefn::text)
          FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
          LEFT JOIN pg_aggregate a ON a.aggfnoid = p.oid
         WHERE p.pronamespace = 'ta'::regnamespace
        UNION ALL
        SELECT 'type', t.oid::regtype::text,
               concat_ws(' | ', t.typtype, obj_description(t.oid, 'pg_type'),
                         obj_description(t.typrelid, 'pg_class'),
                         (SELECT string_agg(att.attname || ' ' || format_type(att.atttypid, att.atttypmod),
                                            ', ' ORDER BY att.attnum)
                            FROM pg_attribute att WHERE att.attrelid = t.typrelid AND att.attnum > 0
                             AND NOT att.attisdropped))
          FROM pg_type t
         WHERE t.typnamespace = 'ta'::regnamespace AND t.typtype IN ('c', 'b', 'd', 'e')
           AND (t.typrelid = 0 OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
        UNION ALL
        SELECT 'extension', e.extname, e.extversion FROM pg_extension e WHERE e.extname = 'pg_ta'
        ORDER BY 1, 2""").fetchall()


def _dump_market(dbname: str) -> str:
    pg_config = os.environ.get("PG_CONFIG", "/usr/lib/postgresql/15/bin/pg_config")
    bindir = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                            check=True).stdout.strip()
    p = subprocess.run([os.path.join(bindir, "pg_dump"), "--schema-only", "--schema=market",
                        "--no-owner", pg.url_for(dbname)], capture_output=True, text=True,
                       check=True)
    # one block per dumped object (pg_dump heads each with "-- Name: ..."); the dump's order
    # follows dependencies and creation history (an upgraded table predates its new sequence),
    # so the objects are compared as a set, and privileges (listed in the order they were
    # granted) as a set per object
    blocks, cur = [], []
    for line in p.stdout.splitlines() + ["-- Name: end"]:
        if line.startswith("-- Name: "):
            grants = sorted(x for x in cur if x.startswith(("GRANT ", "REVOKE ")))
            rest = [x for x in cur if not x.startswith(("GRANT ", "REVOKE "))]
            if rest or grants:
                blocks.append("\n".join(rest + grants))
            cur = []
        elif line.strip() and not line.startswith(("--", "\\restrict", "\\unrestrict")):
            cur.append(line)
    return "\n".join(sorted(blocks))


@pytest.fixture(scope="module")
def old_db():
    if not os.path.isdir(OLD_SCHEMA):
        pytest.fail(f"missing fixture {OLD_SCHEMA}")
    dsn = pg.fresh_database(DB_OLD)
    april = _klines("BTCUSDT-1m-2021-04-24_2021-04-28.csv.gz")   # outage, truncated kline
    eth = _klines("ETHUSDT-1m-2025-10-29_2025-11-01.csv.gz")
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f"ALTER DATABASE {DB_OLD} SET market.screener_cache = off")
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE EXTENSION pg_ta VERSION '0.1.0'")
        for f in sorted(glob.glob(os.path.join(OLD_SCHEMA, "*.sql"))):
            with c.transaction():
                c.execute(open(f).read())
        with c.transaction():
            c.execute("UPDATE market.settings SET alert_history_retention = '30 days'")
            c.execute("INSERT INTO market.alert_rules (name, expression, config, cooldown)"
                      " VALUES ('upgrade_probe', 'change_5m > $x OR change_5m < -$x',"
                      " '{\"x\": 0.3}', '10 minutes')")
            c.execute("UPDATE market.alert_rules SET config = config || '{\"change_1h_min\": 1.2}'"
                      " WHERE name = 'big_bull_60'")
        with c.transaction():
            c.execute("SET LOCAL market.evaluate_alerts = off")
            _copy_rows(c, "BTCUSDT", april)
            _copy_rows(c, "ETHUSDT", eth[:-240])
        for k in eth[-240:]:          # the live path of 0.1.0, alerts on
            with c.transaction():
                _insert_one(c, "ETHUSDT", k)
        info = {
            "candles": c.execute("SELECT count(*) FROM market.candles_1m").fetchone()[0],
            "alerts": c.execute("SELECT symbol, rule, open_time, payload FROM market.alert_history"
                                " ORDER BY 1, 2, 3").fetchall(),
            "rules": c.execute("SELECT name, kind, expression, config, enabled, cooldown"
                               " FROM market.alert_rules ORDER BY name").fetchall(),
            "screener": _screener_rows(c),
            "last": eth[-1],
        }
    assert info["candles"] == len(april) + len(eth)
    assert len(info["alerts"]) > 5, "the 0.1.0 database should have fired alerts"
    yield dsn, info
    pg.drop_database(DB_OLD)


def test_upgrade_keeps_data_and_values(old_db):
    dsn, info = old_db
    with psycopg.connect(dsn) as c:
        assert c.execute("SELECT extversion FROM pg_extension WHERE extname = 'pg_ta'"
                         ).fetchone()[0] == "0.1.0"
    pg.ta_feed("migrate", dbname=DB_OLD, timeout=600)
    pg.ta_feed("migrate", dbname=DB_OLD, timeout=600)   # idempotent
    with psycopg.connect(dsn, autocommit=True) as c:
        assert c.execute("SELECT extversion FROM pg_extension WHERE extname = 'pg_ta'"
                         ).fetchone()[0] == CURRENT
        assert c.execute("SELECT market.schema_version()").fetchone()[0] == 3
        n, spot = c.execute("SELECT count(*), count(*) FILTER (WHERE market = 'spot')"
                            " FROM market.candles_1m").fetchone()
        assert n == spot == info["candles"]
        # bounded state: one head per instrument, a checkpoint per UTC day
        heads, cks = c.execute("SELECT (SELECT count(*) FROM market.screener_state),"
                               " (SELECT count(*) FROM market.screener_checkpoints)").fetchone()
        days = c.execute("SELECT count(DISTINCT (symbol, date_bin('1 day', open_time,"
                         " '2000-01-01 00:00+00'))) FROM market.candles_1m").fetchone()[0]
        assert (heads, cks) == (2, days)
        # alerts, rules, settings
        alerts = c.execute("SELECT symbol, rule, open_time, payload FROM market.alert_history"
                           " WHERE market = 'spot' ORDER BY 1, 2, 3").fetchall()
        assert alerts == info["alerts"]
        assert c.execute("SELECT count(DISTINCT alert_id) FROM market.alert_history"
                         ).fetchone()[0] == len(alerts)
        rules = c.execute("SELECT name, kind, expression, config, enabled, cooldown"
                          " FROM market.alert_rules ORDER BY name").fetchall()
        assert rules == info["rules"]
        assert c.execute("SELECT compiled <> '' FROM market.alert_rules"
                         " WHERE name = 'upgrade_probe'").fetchone()[0]
        assert c.execute("SELECT alert_history_retention FROM market.settings"
                         ).fetchone()[0].days == 30
        # the screener at every candle, bit for bit
        new = _screener_rows(c)
        old = info["screener"]
        assert new.keys() == old.keys()
        diffs = [(k, col, old[k][col], new[k].get(col)) for k in old for col in old[k]
                 if new[k].get(col) != old[k][col]]
        assert not diffs, f"{len(diffs)} values differ after the upgrade, e.g. {diffs[:5]}"
        # and it works: the next live minute is evaluated with payload version 2
        last = info["last"]
        nxt = bd.Kline(last.open_time + 60_000, last.close, last.close,
                       str(float(last.close) * 0.99), str(float(last.close) * 0.99),
                       last.volume, last.close_time + 60_000, last.quote_volume, last.trades,
                       "0", "0")
        _insert_one(c, "ETHUSDT", nxt)
        fired = c.execute("SELECT payload->>'version', payload->>'market', payload ? 'alert_id'"
                          " FROM market.alert_history WHERE open_time = %s",
                          (_dt(nxt.open_time),)).fetchall()
        assert fired and all(f == ("2", "spot", True) for f in fired), fired


def test_upgraded_catalog_equals_fresh_install(old_db):
    pg.fresh_database(DB_NEW)
    try:
        pg.migrate(DB_NEW)
        with psycopg.connect(pg.dsn_for(DB_NEW), autocommit=True) as c:
            # the same rules as the old database, so the generated evaluator is the same
            c.execute("INSERT INTO market.alert_rules (name, expression, config, cooldown)"
                      " VALUES ('upgrade_probe', 'change_5m > $x OR change_5m < -$x',"
                      " '{\"x\": 0.3}', '10 minutes')")
            c.execute("UPDATE market.alert_rules SET config = config || '{\"change_1h_min\": 1.2}'"
                      " WHERE name = 'big_bull_60'")
        pg.ta_feed("migrate", dbname=DB_OLD, timeout=600)
        with psycopg.connect(pg.dsn_for(DB_OLD)) as old, psycopg.connect(pg.dsn_for(DB_NEW)) as new:
            a, b = _ext_catalog(old), _ext_catalog(new)
            only_old = sorted(set(a) - set(b))
            only_new = sorted(set(b) - set(a))
            assert not only_old and not only_new, \
                f"extension catalog differs:\n upgraded only: {only_old[:10]}\n fresh only: {only_new[:10]}"
        da, db = _dump_market(DB_OLD), _dump_market(DB_NEW)
        if da != db:
            import difflib
            diff = "\n".join(list(difflib.unified_diff(db.splitlines(), da.splitlines(),
                                                       "fresh", "upgraded", lineterm=""))[:80])
            pytest.fail(f"schema market differs between a fresh and an upgraded database:\n{diff}")
    finally:
        pg.drop_database(DB_NEW)
