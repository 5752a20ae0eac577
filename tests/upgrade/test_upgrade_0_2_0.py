"""Upgrade of a database created by pg_ta 0.2.0 with data in it, to 0.3.0.

A 0.2.0 database is built on the test server: `CREATE EXTENSION pg_ta VERSION '0.2.0'` (the
kept install script extension/sql/pg_ta--0.2.0.sql) and the 0.2.0 data schema
(tests/fixtures/schema-0.2.0, `sql/` at commit bc7a557).  Its 001 file updates the extension
to the library's version (pg_ta--0.2.0--0.3.0.sql), as it would on any newer library: the 0.2.0
data schema then runs on the 0.3.0 extension, which is a user's state between installing the
new package and running `ta-feed migrate`.  Real candles are written through its triggers (bulk,
then minute by minute with alerts on), a custom rule and settings are saved, alerts fire, and
the screener of every candle is read.

Then `ta-feed migrate` (twice: idempotent).  It must:
  * keep every candle, alert, rule (recompiled against ta.signal_row) and setting, and give the
    same screener at every candle, bit for bit;
  * give every instrument its feature row (market.features = market.features_range at the
    head, bit for bit);
  * leave a catalog identical to a fresh 0.3.0 database (the extension's objects with comments
    and ACLs; pg_dump --schema-only of schema market);
  * work afterwards: a live minute fires a rule over feature columns and a preset, and sends
    its feature row on NOTIFY ta_features.
"""
from __future__ import annotations

import glob
import os

import pytest

from common import binance_data as bd
from common import features_db as fdb
from common import pg

from test_upgrade import (_copy_rows, _dump_market, _dt, _ext_catalog, _insert_one, _klines,
                           _screener_rows)

psycopg = pytest.importorskip("psycopg")

HERE = os.path.dirname(os.path.abspath(__file__))
OLD_SCHEMA = os.path.join(HERE, "..", "fixtures", "schema-0.2.0")
DB_OLD = "pg_ta_upgrade_020"
DB_NEW = "pg_ta_upgrade_020_fresh"


@pytest.fixture(scope="module")
def old_db():
    if not os.path.isdir(OLD_SCHEMA):
        pytest.fail(f"missing fixture {OLD_SCHEMA}")
    dsn = pg.fresh_database(DB_OLD)
    btc = _klines("BTCUSDT-1m-2021-04-24_2021-04-28.csv.gz")   # outage, truncated kline
    eth = _klines("ETHUSDT-1m-2025-10-29_2025-11-01.csv.gz")
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE EXTENSION pg_ta VERSION '0.2.0'")
        for f in sorted(glob.glob(os.path.join(OLD_SCHEMA, "*.sql"))):
            with c.transaction():
                c.execute(open(f).read())
        assert c.execute("SELECT market.schema_version()").fetchone()[0] == 2
        with c.transaction():
            c.execute("UPDATE market.settings SET alert_history_retention = '30 days'")
            c.execute("INSERT INTO market.alert_rules (name, expression, config, cooldown)"
                      " VALUES ('upgrade_probe', 'change_5m > $x OR change_5m < -$x',"
                      " '{\"x\": 0.3}', '10 minutes')")
        with c.transaction():
            c.execute("SET LOCAL market.evaluate_alerts = off")
            _copy_rows(c, "BTCUSDT", btc)
            _copy_rows(c, "ETHUSDT", eth[:-120])
        for k in eth[-120:-1]:            # the live path of the 0.2.0 schema, alerts on
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
    assert len(info["alerts"]) > 3, "the 0.2.0 database should have fired alerts"
    yield dsn, info
    pg.drop_database(DB_OLD)


def test_upgrade_from_0_2_0(old_db):
    dsn, info = old_db
    pg.ta_feed("migrate", dbname=DB_OLD, timeout=600)
    pg.ta_feed("migrate", dbname=DB_OLD, timeout=600)   # idempotent
    with psycopg.connect(dsn, autocommit=True) as c:
        assert c.execute("SELECT extversion FROM pg_extension WHERE extname = 'pg_ta'"
                         ).fetchone()[0] == "0.3.0"
        assert c.execute("SELECT market.schema_version()").fetchone()[0] == 3
        assert c.execute("SELECT count(*) FROM market.candles_1m").fetchone()[0] == info["candles"]
        assert c.execute("SELECT symbol, rule, open_time, payload FROM market.alert_history"
                         " ORDER BY 1, 2, 3").fetchall() == info["alerts"]
        assert c.execute("SELECT name, kind, expression, config, enabled, cooldown"
                         " FROM market.alert_rules ORDER BY name").fetchall() == info["rules"]
        new = _screener_rows(c)
        old = info["screener"]
        assert new.keys() == old.keys()
        diffs = [(k, col) for k in old for col in old[k] if new[k].get(col) != old[k][col]]
        assert not diffs, f"{len(diffs)} screener values differ after the upgrade: {diffs[:5]}"
        # every head got its feature row, equal to features_range there
        heads = fdb.select_features(c, "SELECT * FROM market.features")
        assert len(heads) == 2
        for (m, s, t), row in heads.items():
            rng = fdb.select_features(c, "SELECT * FROM market.features_range(ARRAY[%s],"
                                         " ARRAY[%s], %s, %s)", (m, s, fdb.dt_ms(t), fdb.dt_ms(t)))
            assert fdb.first_difference({(m, s, t): row}, rng) is None
        # and it works: a rule over features fires live, the feature row is notified
        c.execute("INSERT INTO market.alert_rules (name, expression, cooldown)"
                  " VALUES ('feature_probe', 'ret_1m IS NOT NULL AND rv_1d > 0', '0')")
        listener = psycopg.connect(dsn, autocommit=True)
        listener.execute('LISTEN "ta_features"')
        last = info["last"]
        with c.transaction():
            _insert_one(c, "ETHUSDT", last)
        fired = c.execute("SELECT rule, payload->>'version' FROM market.alert_history"
                          " WHERE open_time = %s ORDER BY 1", (_dt(last.open_time),)).fetchall()
        assert ("feature_probe", "2") in fired, fired
        notes = [k for n in listener.notifies(timeout=2.0) for k, _ in fdb.payload_rows(n.payload)]
        listener.close()
        assert [(s, t) for _m, s, t in notes] == [("ETHUSDT", last.open_time)]


def test_upgraded_0_2_0_catalog_equals_fresh_install(old_db):
    pg.fresh_database(DB_NEW)
    try:
        pg.migrate(DB_NEW)
        # the same custom rules with the same ids (re-applied presets consume identity values,
        # so ids differ between the two histories), so the generated evaluator is the same
        with psycopg.connect(pg.dsn_for(DB_OLD), autocommit=True) as o:
            custom = o.execute("SELECT rule_id, name, expression, config::text, cooldown"
                               " FROM market.alert_rules WHERE kind = 'custom' ORDER BY 1").fetchall()
        with psycopg.connect(pg.dsn_for(DB_NEW), autocommit=True) as c:
            for r in custom:
                c.execute("INSERT INTO market.alert_rules (rule_id, name, expression, config, cooldown)"
                          " VALUES (%s, %s, %s, %s::jsonb, %s)", r)
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
