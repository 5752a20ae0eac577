"""Moving a live pg_ta database from PostgreSQL 15 to PostgreSQL 18 with pg_upgrade, exactly as
docs/operations.md ("Upgrading PostgreSQL: 15 to 18") tells a DBA to.

A private PostgreSQL 15 cluster gets the data schema (`ta-feed migrate`), real candles
(`ta-feed import`, then minute by minute with alerts on), a custom rule, edited settings, fired
alerts and a delivery queue (a sink with a subscription and no notifier running, so every
delivery stays pending).  It is stopped and upgraded in place of a fresh PostgreSQL 18 cluster
(docs/pg_upgrade_prepare.sql in every database of the old cluster, `initdb
--no-data-checksums`, `pg_upgrade --check`, `pg_upgrade`).  Then:
  * every candle, the screener heads and day checkpoints, rules (compiled), settings, alerts and
    the delivery queue come through unchanged (compared as exact text);
  * the screener after the upgrade equals a rebuild from the candles;
  * `ta-feed migrate` on 18 changes nothing and a new candle fires alerts and queues deliveries.

Needs both majors' binaries with pg_ta installed: PG_TA_PG_CONFIG_15 and PG_TA_PG_CONFIG_18
(`make test` sets them; .ci/install-deps installs both).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import datetime, timezone

import pytest

from common import binance_data as bd
from common import pg

psycopg = pytest.importorskip("psycopg")

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CLUSTER = os.path.join(REPO, ".ci", "cluster")
OLD_PORT, NEW_PORT = 5436, 5437
PREPARE = os.path.join(REPO, "docs", "pg_upgrade_prepare.sql")


def _pg_config(major: int) -> str:
    p = os.environ.get(f"PG_TA_PG_CONFIG_{major}")
    if not p or not os.access(p, os.X_OK):
        pytest.skip(f"PG_TA_PG_CONFIG_{major} is not set to a pg_config (both majors are needed)")
    return p


def _out(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()


def _as_postgres(cmd: list[str], cwd: str) -> subprocess.CompletedProcess:
    if os.geteuid() == 0:
        cmd = ["sudo", "-u", "postgres", "--", *cmd]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def _cluster(action: str, pg_config: str, d: str, port: int | None = None, **env) -> None:
    args = [CLUSTER, action, d] + ([str(port)] if port else [])
    p = subprocess.run(args, env=dict(os.environ, PG_CONFIG=pg_config, **env),
                       capture_output=True, text=True)
    if p.returncode != 0:
        pytest.fail(f"{' '.join(args)} failed:\n{p.stdout}\n{p.stderr}")


def _url(port: int) -> str:
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


def _ta_feed(port: int, *args: str) -> str:
    p = subprocess.run([pg.ta_feed_bin(), *args], env=dict(os.environ, DATABASE_URL=_url(port)),
                       capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        pytest.fail(f"ta-feed {' '.join(args)} exited {p.returncode}\n{p.stderr[-4000:]}")
    return p.stdout


def _synthetic(n: int) -> list:
    """n BTCUSDT minutes of a deterministic random walk (when ../shared is absent)."""
    import random
    rng, t0, price, out = random.Random(15_18), 1_621_036_800_000, 50_000.0, []
    for i in range(n):
        o, c = price, round(price * (1 + rng.gauss(0, 0.001)), 2)
        h, lo = round(max(o, c) * 1.0005, 2), round(min(o, c) * 0.9995, 2)
        t = t0 + i * 60_000
        out.append(bd.Kline(t, f"{o:.2f}", f"{h:.2f}", f"{lo:.2f}", f"{c:.2f}", "12.5", t + 59_999,
                            f"{12.5 * c:.2f}", 100, "6.25", f"{6.25 * c:.4f}"))
        price = c
    return out


def _dt(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat()


def _insert(c, k) -> None:
    c.execute("INSERT INTO market.candles_1m (symbol, open_time, close_time, open, high, low,"
              " close, volume, quote_volume, trades, taker_buy_volume, taker_buy_quote_volume)"
              " VALUES ('BTCUSDT', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
              (_dt(k.open_time), _dt(k.close_time), k.open, k.high, k.low, k.close, k.volume,
               k.quote_volume, k.trades, k.taker_buy_volume, k.taker_buy_quote_volume))


# what must come through, each as exact text in a fixed order
SNAPSHOT = {
    "candles": "SELECT md5(string_agg(c::text, '|' ORDER BY market, symbol, open_time)), count(*)"
               " FROM market.candles_1m c",
    "heads": "SELECT string_agg(s::text, '|' ORDER BY market, symbol) FROM market.screener_state s",
    "checkpoints": "SELECT md5(string_agg(k::text, '|' ORDER BY k::text)), count(*)"
                   " FROM market.screener_checkpoints k",
    "rules": "SELECT string_agg(concat_ws(' ', name, kind, expression, config, enabled, cooldown,"
             " md5(compiled)), '|' ORDER BY name) FROM market.alert_rules",
    "settings": "SELECT s::text FROM market.settings s",
    "alerts": "SELECT string_agg(concat_ws(' ', alert_id, market, symbol, rule, open_time,"
              " payload), '|' ORDER BY alert_id) FROM market.alert_history",
    "deliveries": "SELECT string_agg(concat_ws(' ', alert_id, sink_id, attempts, delivered_at,"
                  " failed_at), '|' ORDER BY alert_id, sink_id) FROM market.alert_deliveries",
    "pending": "SELECT count(*) FROM market.alert_deliveries"
               " WHERE delivered_at IS NULL AND failed_at IS NULL",
    "extension": "SELECT extversion FROM pg_extension WHERE extname = 'pg_ta'",
}


def _snapshot(port: int) -> dict:
    with psycopg.connect(_url(port)) as c:
        return {k: c.execute(q).fetchone() for k, q in SNAPSHOT.items()}


def test_pg_upgrade_15_to_18_keeps_everything():
    pgc15, pgc18 = _pg_config(15), _pg_config(18)
    for pgc in (pgc15, pgc18):
        lib = os.path.join(_out(pgc, "--pkglibdir"), "pg_ta.so")
        if not os.path.exists(lib):
            pytest.skip(f"pg_ta is not installed for {pgc} ({lib})")
    path = os.path.join(bd.shared_data_dir(), "spot", "klines12",
                        "BTCUSDT-1m-2021-05-15_2021-05-22.csv.gz")
    if os.path.exists(path):
        klines = bd.read_klines12(path)
    else:
        print(f"shared data not found ({path}): synthetic klines")
        klines = _synthetic(3000)
    klines = klines[:3000]
    live = klines[-30:]                      # written one minute per statement, alerts on
    base = os.path.join(REPO, ".data", "pg-upgrade")
    old, new = os.path.join(base, "old-15"), os.path.join(base, "new-18")
    for d in (old, new):
        _cluster("stop", pgc15 if d == old else pgc18, d)
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
    try:
        # ---- a live PostgreSQL 15 database --------------------------------------------
        _cluster("start", pgc15, old, OLD_PORT)
        _ta_feed(OLD_PORT, "migrate")
        csv = os.path.join(base, "BTCUSDT-1m-upgrade.csv")
        with open(csv, "w") as f:
            for k in klines[:-len(live)]:
                f.write(",".join(str(x) for x in (
                    k.open_time, k.open, k.high, k.low, k.close, k.volume, k.close_time,
                    k.quote_volume, k.trades, k.taker_buy_volume, k.taker_buy_quote_volume, 0))
                        + "\n")
        _ta_feed(OLD_PORT, "import", "--symbol", "BTCUSDT", csv)
        with psycopg.connect(_url(OLD_PORT), autocommit=True) as c:
            c.execute("UPDATE market.settings SET alert_history_retention = '3650 days'")
            c.execute("INSERT INTO market.alert_rules (name, expression, config, cooldown,"
                      " description) VALUES ('heartbeat', 'price > $floor', '{\"floor\": 0}',"
                      " interval '0', 'fires every minute')")
            # a sink nobody delivers to while the upgrade runs: its queue must survive
            c.execute("INSERT INTO market.alert_sinks (name, kind, target)"
                      " VALUES ('desk', 'webhook', 'https://hooks.example.com/pg-ta')")
            c.execute("INSERT INTO market.alert_subscriptions (sink_id, rules)"
                      " SELECT sink_id, '{heartbeat}' FROM market.alert_sinks")
            for k in live[:-1]:
                with c.transaction():
                    _insert(c, k)
        before = _snapshot(OLD_PORT)
        assert before["candles"][1] == len(klines) - 1
        assert before["pending"][0] >= len(live) - 1, before["pending"]
        # PostgreSQL 15.20 stamps a pg_attver option on every column, which 18.6 rejects: the
        # documented preparation removes it in every database (a no-op on older 15 minors)
        with psycopg.connect(_url(OLD_PORT), autocommit=True) as c:
            dbs = [r[0] for r in c.execute("SELECT datname FROM pg_database WHERE datallowconn")]
        for db in dbs:
            p = subprocess.run([os.path.join(_out(pgc15, "--bindir"), "psql"), "-X", "-q",
                                "-v", "ON_ERROR_STOP=1", "-f", PREPARE,
                                f"postgresql://postgres@127.0.0.1:{OLD_PORT}/{db}"],
                               capture_output=True, text=True)
            assert p.returncode == 0, f"{PREPARE} on {db}: {p.stderr}"
        _cluster("stop", pgc15, old)

        # ---- pg_upgrade to PostgreSQL 18 ------------------------------------------------
        # PostgreSQL 18's initdb turns data checksums on by default; a cluster made by 15's
        # defaults has them off, and pg_upgrade needs both the same
        _cluster("start", pgc18, new, NEW_PORT, PG_TA_INITDB_OPTS="--no-data-checksums")
        _cluster("stop", pgc18, new)
        work = os.path.join(base, "pg_upgrade")
        os.makedirs(work)
        if os.geteuid() == 0:
            shutil.chown(work, "postgres", "postgres")
        cmd = [os.path.join(_out(pgc18, "--bindir"), "pg_upgrade"),
               "-b", _out(pgc15, "--bindir"), "-B", _out(pgc18, "--bindir"),
               "-d", os.path.join(old, "pgdata"), "-D", os.path.join(new, "pgdata"),
               "-U", "postgres", "-p", str(OLD_PORT), "-P", str(NEW_PORT)]
        for extra in (["--check"], []):
            p = _as_postgres(cmd + extra, work)
            if p.returncode != 0:
                logs = ""
                for root, _, files in os.walk(os.path.join(new, "pgdata")):
                    for name in sorted(files):
                        if name.endswith(".log"):
                            with open(os.path.join(root, name), errors="replace") as f:
                                lines = f.readlines()
                            errors = [x for x in lines if "error" in x.lower()]
                            logs += f"--- {name}: errors, then the last 10 lines ---\n"
                            logs += "".join(errors[-10:] + lines[-10:])
                pytest.fail(f"pg_upgrade {' '.join(extra)} failed:\n{p.stdout}\n{p.stderr}\n{logs}")
        _cluster("start", pgc18, new, NEW_PORT)

        # ---- everything came through ------------------------------------------------------
        after = _snapshot(NEW_PORT)
        with psycopg.connect(_url(NEW_PORT)) as c:
            assert c.execute("SHOW server_version_num").fetchone()[0].startswith("18")
        assert after == before, {k: (before[k], after[k]) for k in before if before[k] != after[k]}
        _ta_feed(NEW_PORT, "migrate")        # idempotent on the upgraded database
        assert _snapshot(NEW_PORT) == before
        with psycopg.connect(_url(NEW_PORT), autocommit=True) as c:
            # the screener after the upgrade equals a rebuild from the candles
            c.execute("SELECT market.rebuild_screener_state()")
        rebuilt = _snapshot(NEW_PORT)
        assert rebuilt["heads"] == before["heads"]
        assert rebuilt["checkpoints"] == before["checkpoints"]
        # and the next candle fires the rule and queues its delivery
        with psycopg.connect(_url(NEW_PORT), autocommit=True) as c:
            _insert(c, live[-1])
            fired = c.execute("SELECT a.alert_id, a.payload, d.sink_id IS NOT NULL"
                              " FROM market.alert_history a LEFT JOIN market.alert_deliveries d"
                              " USING (alert_id) WHERE a.open_time = %s AND a.rule = 'heartbeat'",
                              (_dt(live[-1].open_time),)).fetchall()
        assert len(fired) == 1 and fired[0][2], fired
        payload = fired[0][1] if isinstance(fired[0][1], dict) else json.loads(fired[0][1])
        assert payload["symbol"] == "BTCUSDT" and payload["rule"] == "heartbeat"
        assert fired[0][0] > max(int(x.split(" ")[0]) for x in before["alerts"][0].split("|"))
    finally:
        _cluster("stop", pgc15, old)
        _cluster("stop", pgc18, new)
        shutil.rmtree(base, ignore_errors=True)
