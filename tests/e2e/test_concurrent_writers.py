"""Concurrent candle writers: the head locks of market._apply_candle_changes (sql/006).

A live close locks every written instrument's head row (market.screener_state) in key order,
and inserts placeholder heads first only when one is missing (a new instrument).  This suite
runs writers that overlap on purpose, as a live stream, a backfill and a second stream do when
an instrument is listed:

  * rounds of three transactions started together, each writing one minute of a brand-new
    instrument (the same one in the three) and of a different pair of existing instruments,
    held open a moment so that they wait on each other's placeholders and heads;
  * every transaction commits: none fails (a deadlock would fail one), none is lost;
  * afterwards the stored heads (screener row and chain) equal those of
    market.rebuild_screener_state() over the same candles: each writer saw the others'
    candles.

Env: PG_TA_TEST_DSN (required), TA_FEED_BIN.  About 10 s.
"""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest

from common import pg

psycopg = pytest.importorskip("psycopg")

DB = "pg_ta_concurrent_writers"
T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
HISTORY = 120
EXISTING = ["AAAUSDT", "BBBUSDT", "CCCUSDT"]
# each writer's existing instruments (key order differs from writer to writer's new one)
WRITERS = [["AAAUSDT", "CCCUSDT"], ["BBBUSDT", "CCCUSDT"], ["AAAUSDT", "BBBUSDT"]]
ROUNDS = 6


def candle(symbol: str, minute: int, k: int) -> tuple:
    o = 100 + (minute * 7 + k * 3) % 17 + len(symbol)
    c = o + ((minute + k) % 5 - 2) * 0.25
    ot = T0 + timedelta(minutes=minute)
    return ("usdm", symbol, ot, ot + timedelta(seconds=59.999), o, max(o, c) + 0.5,
            min(o, c) - 0.5, c, 10 + k, (10 + k) * c, 5 + k, 4 + k, (4 + k) * c)


INSERT = ("INSERT INTO market.candles_1m (market, symbol, open_time, close_time, open, high, low, "
          "close, volume, quote_volume, trades, taker_buy_volume, taker_buy_quote_volume) "
          "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")


def insert_one_statement(conn, rows: list[tuple]) -> None:
    """The rows in one INSERT (one trigger run: a close of several instruments)."""
    values = ", ".join(["(" + ", ".join(["%s"] * 13) + ")"] * len(rows))
    conn.execute(INSERT.split(" VALUES ")[0] + " VALUES " + values, [x for r in rows for x in r])


@pytest.fixture(scope="module")
def dsn():
    d = pg.fresh_database(DB)
    pg.migrate(DB)
    with psycopg.connect(d, autocommit=True) as c:
        with c.cursor() as cur:
            cur.executemany(INSERT, [candle(s, m, 0) for s in EXISTING for m in range(HISTORY)])
    yield d
    pg.drop_database(DB)


def heads(conn) -> dict:
    return {(m, s): (t, r, ch) for m, s, t, r, ch in conn.execute(
        'SELECT market, symbol, open_time, "row"::text, chain::text FROM market.screener_state')}


def test_overlapping_writers_of_a_new_instrument(dsn):
    errors: list[BaseException] = []
    committed = []
    for r in range(ROUNDS):
        new = f"NEW{r}USDT"
        barrier = threading.Barrier(len(WRITERS))

        def write(w: int) -> None:
            try:
                with psycopg.connect(dsn) as c:
                    barrier.wait(timeout=30)
                    # each writer its own minute of each instrument, after the history
                    minute = HISTORY + r * len(WRITERS) + w
                    rows = [candle(s, minute, w + 1) for s in [new] + WRITERS[w]]
                    with c.transaction():
                        c.execute("SET LOCAL lock_timeout = '20s'")
                        c.cursor().executemany(INSERT, rows[:1])
                        c.execute("SELECT pg_sleep(0.05 * %s)", (w,))
                        c.cursor().executemany(INSERT, rows[1:])
                        c.execute("SELECT pg_sleep(0.05)")
                    committed.append((r, w))
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=write, args=(w,)) for w in range(len(WRITERS))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not [t for t in threads if t.is_alive()], "a writer hung"
    assert not errors, f"writers failed: {errors!r}"
    assert len(committed) == ROUNDS * len(WRITERS)

    with psycopg.connect(dsn, autocommit=True) as c:
        n = c.execute("SELECT count(*) FROM market.candles_1m").fetchone()[0]
        assert n == len(EXISTING) * HISTORY + ROUNDS * len(WRITERS) * 3
        live = heads(c)
        assert len(live) == len(EXISTING) + ROUNDS
        c.execute("SELECT market.rebuild_screener_state()")
        rebuilt = heads(c)
    assert live == rebuilt


def test_a_live_close_with_some_engines_stale(dsn):
    """A writer session's cached engines go stale for the instruments another session wrote
    in between: its next close steps the others and reloads those (the live step's partial
    miss), and every head still equals a rebuild."""
    with psycopg.connect(dsn, autocommit=True) as a, psycopg.connect(dsn, autocommit=True) as b:
        start = a.execute("SELECT max(open_time) FROM market.candles_1m").fetchone()[0]
        minute0 = int((start - T0).total_seconds() // 60) + 1
        for j in range(12):
            minute = minute0 + 3 * j
            insert_one_statement(a, [candle(s, minute, 1) for s in EXISTING])
            # the other session writes the next minute of one instrument
            b.execute(INSERT, candle(EXISTING[j % len(EXISTING)], minute + 1, 2))
            insert_one_statement(a, [candle(s, minute + 1, 1) for s in EXISTING
                                     if s != EXISTING[j % len(EXISTING)]])
            # and the minute after in one statement: that instrument's engine is stale in
            # this session (reloaded), the others are stepped
            insert_one_statement(a, [candle(s, minute + 2, 1) for s in EXISTING])
        live = heads(a)
        a.execute("SELECT market.rebuild_screener_state()")
        assert live == heads(a)
