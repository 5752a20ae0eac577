"""Database helpers for the Python suites: server from PG_TA_TEST_DSN, one fresh database per
test, schema applied with `ta-feed migrate`."""
from __future__ import annotations

import os
import subprocess
import time
from contextlib import contextmanager

import pytest

psycopg = pytest.importorskip("psycopg")
from psycopg import conninfo  # noqa: E402

from .binance_data import REPO  # noqa: E402


def server_dsn() -> str:
    dsn = os.environ.get("PG_TA_TEST_DSN")
    if not dsn:
        pytest.skip("PG_TA_TEST_DSN is not set (e.g. postgresql://postgres@127.0.0.1:5443/postgres): "
                    "these tests need a PostgreSQL 15 server with pg_ta installed")
    return dsn


def ta_feed_bin() -> str:
    path = os.environ.get("TA_FEED_BIN", os.path.join(REPO, "target", "release", "ta-feed"))
    if not os.access(path, os.X_OK):
        pytest.fail(f"ta-feed binary not found at {path} (build it with "
                    "`cargo build --release -p ta-feed` or set TA_FEED_BIN)")
    return path


def dsn_for(dbname: str, base: str | None = None) -> str:
    params = conninfo.conninfo_to_dict(base or server_dsn())
    params["dbname"] = dbname
    return conninfo.make_conninfo(**params)


def url_for(dbname: str, base: str | None = None) -> str:
    """The same connection as a postgresql:// URL (ta-feed's DATABASE_URL)."""
    p = conninfo.conninfo_to_dict(base or server_dsn())
    auth = p.get("user", "postgres")
    if p.get("password"):
        auth += ":" + p["password"]
    host = p.get("host", "127.0.0.1")
    port = p.get("port", "5432")
    return f"postgresql://{auth}@{host}:{port}/{dbname}"


def fresh_database(dbname: str) -> str:
    """DROP (FORCE) and CREATE dbname on the test server; returns its DSN."""
    with psycopg.connect(server_dsn(), autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        c.execute(f'CREATE DATABASE "{dbname}"')
    return dsn_for(dbname)


def drop_database(dbname: str) -> None:
    with psycopg.connect(server_dsn(), autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def ta_feed(*args: str, dbname: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, DATABASE_URL=url_for(dbname), NO_COLOR="1")
    p = subprocess.run([ta_feed_bin(), *args], env=env, capture_output=True, text=True,
                       timeout=timeout)
    if check and p.returncode != 0:
        pytest.fail(f"ta-feed {' '.join(args)} exited {p.returncode}\n--- stderr ---\n{p.stderr[-4000:]}")
    return p


def migrate(dbname: str) -> None:
    ta_feed("migrate", dbname=dbname, timeout=300)


@contextmanager
def timed(label: str, sink: list | None = None):
    t0 = time.monotonic()
    yield
    dt = time.monotonic() - t0
    if sink is not None:
        sink.append((label, dt))
    print(f"[time] {label}: {dt:.1f} s", flush=True)
