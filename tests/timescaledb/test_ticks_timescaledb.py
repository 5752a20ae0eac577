"""The TimescaleDB path of the tick tables (sql/013) and their views (sql/014): hypertables
with a columnstore policy, continuous aggregates equal to the plain definition (real-time,
materialized, over compressed chunks, after a late trade), tick retention by whole chunks, and
feature rows over them.

Skips with a message when the test server cannot load TimescaleDB (see test_timescaledb.py).
Data: the whole-day coin-M aggTrades dump (BTCUSD_PERP 2026-05-08, 105,280 trades) as usdm,
and the Tardis BTCUSDT best bid/ask of 2020-02-22 (4 minutes) as book tickers, twice: as
recorded and 3 hours earlier.
"""
from __future__ import annotations

import pytest

from common import pg
from common import features_db as fdb

psycopg = pytest.importorskip("psycopg")

DB = "pg_ta_timescaledb_ticks"
TICK_CAGGS = ("trade_candles_1m", "book_1m")
TRADES = ("futures_cm", "aggTrades", "BTCUSD_PERP-aggTrades-2026-05-08.csv.gz")
QUOTES = ("futures_um", "tardis", "BTCUSDT-quotes-2020-02-22.tardis.csv.gz")


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
    with psycopg.connect(dsn, autocommit=True) as c:
        fdb.insert_agg_trades(c, "usdm", "BTCUSD_PERP", fdb.read_agg_trades_dump(fdb.shared(*TRADES)))
        # the file's 4 minutes of quotes, and the same quotes 3 hours earlier (other update
        # ids) so that the book ticks span more than one 1-hour chunk
        quotes = fdb.read_tardis_quotes(fdb.shared(*QUOTES))
        fdb.insert_book(c, "usdm", "BTCUSDT", quotes)
        fdb.insert_book(c, "usdm", "BTCUSDT", [(u + 10_000_000, b, bq, a, aq, t - 3 * 3_600_000_000)
                                               for (u, b, bq, a, aq, t) in quotes])
    yield dsn
    pg.drop_database(DB)


def _differences(conn, name: str) -> tuple[int, int]:
    """(rows of the continuous aggregate, rows differing from the plain definition)."""
    ref = conn.execute("SELECT market._tick_view_sql(%s, NULL)", (name,)).fetchone()[0]
    cols = ("market, symbol, open_time, close_time, open, high, low, close, volume, quote_volume,"
            " trades, taker_buy_volume, taker_buy_quote_volume" if name == "trade_candles_1m" else
            "market, symbol, open_time, imbalance, spread_bps, spread_bps_last, weighted_mid, mid,"
            " weighted_mid_offset_bps, updates")
    diff = conn.execute(f"SELECT count(*) FROM ((SELECT {cols} FROM market.{name} EXCEPT ALL"
                        f" SELECT {cols} FROM ({ref}) r) UNION ALL (SELECT {cols} FROM ({ref}) r"
                        f" EXCEPT ALL SELECT {cols} FROM market.{name})) d").fetchone()[0]
    n = conn.execute(f"SELECT count(*) FROM market.{name}").fetchone()[0]
    return n, diff


MIN_ROWS = {"trade_candles_1m": 1000, "book_1m": 8}


def _all_equal(conn, when: str) -> None:
    for name in TICK_CAGGS:
        n, diff = _differences(conn, name)
        assert n >= MIN_ROWS[name] and diff == 0, \
            f"{name} {when}: {diff} of {n} rows differ from the plain definition"


def test_tick_hypertables_columnstore_and_caggs(db):
    with psycopg.connect(db) as c:
        hts = {r[0] for r in c.execute("SELECT hypertable_name FROM timescaledb_information.hypertables"
                                       " WHERE hypertable_schema = 'market'")}
        assert {"agg_trades", "book_tickers"} <= hts, hts
        for table, order in (("agg_trades", "agg_trade_id"), ("book_tickers", "update_id")):
            seg = c.execute("SELECT attname, segmentby_column_index, orderby_column_index"
                            " FROM timescaledb_information.compression_settings"
                            " WHERE hypertable_schema = 'market' AND hypertable_name = %s",
                            (table,)).fetchall()
            assert ("market", 1, None) in seg and ("symbol", 2, None) in seg, seg
            assert (order, None, 1) in seg, seg
            width = c.execute("SELECT time_interval FROM timescaledb_information.dimensions"
                              " WHERE hypertable_schema = 'market' AND hypertable_name = %s",
                              (table,)).fetchone()[0]
            assert width.total_seconds() == 3600, width
        policies = {r[0] for r in c.execute(
            "SELECT hypertable_name FROM timescaledb_information.jobs"
            " WHERE proc_name = 'policy_compression' AND hypertable_schema = 'market'")}
        assert {"agg_trades", "book_tickers"} <= policies, policies
        caggs = {r[0]: r[1] for r in c.execute(
            "SELECT view_name, materialized_only FROM timescaledb_information.continuous_aggregates"
            " WHERE view_schema = 'market'")}
        for name in TICK_CAGGS:
            assert caggs.get(name) is False, caggs       # real-time aggregation


def test_tick_caggs_equal_the_plain_definition(db):
    with psycopg.connect(db, autocommit=True) as c:
        _all_equal(c, "real-time (nothing materialized)")
        for name in TICK_CAGGS:
            c.execute(f"CALL refresh_continuous_aggregate('market.{name}', NULL, NULL)")
        _all_equal(c, "materialized")
        n = c.execute("SELECT count(compress_chunk(ch, if_not_compressed => true)) FROM"
                      " (SELECT show_chunks('market.agg_trades') UNION ALL"
                      "  SELECT show_chunks('market.book_tickers')) s(ch)").fetchone()[0]
        assert n > 20, n
        _all_equal(c, "over compressed chunks")
        # a late trade into a compressed, materialized minute: idempotent insert (as ta-feed
        # writes), the minute invalidated and refreshed to the new value
        minute = "2026-05-08 10:00:00+00"
        before = c.execute("SELECT volume, trades FROM market.trade_candles_1m WHERE symbol ="
                           " 'BTCUSD_PERP' AND open_time = %s", (minute,)).fetchone()
        last = c.execute("SELECT max(agg_trade_id), max(last_trade_id) FROM market.agg_trades"
                         " WHERE symbol = 'BTCUSD_PERP'").fetchone()
        for _ in range(2):
            c.execute("INSERT INTO market.agg_trades (market, symbol, agg_trade_id, price, quantity,"
                      " first_trade_id, last_trade_id, transact_time, is_buyer_maker)"
                      " VALUES ('usdm', 'BTCUSD_PERP', %s, 80000, 7, %s, %s,"
                      " %s::timestamptz + interval '30 seconds', false) ON CONFLICT DO NOTHING",
                      (last[0] + 1, last[1] + 1, last[1] + 1, minute))
        c.execute("CALL refresh_continuous_aggregate('market.trade_candles_1m', NULL, NULL)")
        after = c.execute("SELECT volume, trades FROM market.trade_candles_1m WHERE symbol ="
                          " 'BTCUSD_PERP' AND open_time = %s", (minute,)).fetchone()
        assert after == (before[0] + 7, before[1] + 1), (before, after)
        _all_equal(c, "after a late trade")
        # stored klines = the trade candles: market.kline_trade_diffs is empty
        with c.transaction():
            c.execute("SET LOCAL market.evaluate_alerts = off")
            c.execute("INSERT INTO market.candles_1m SELECT * FROM market.trade_candles_1m"
                      " WHERE symbol = 'BTCUSD_PERP'")
        assert c.execute("SELECT count(*) FROM market.kline_trade_diffs").fetchone()[0] == 0
        # feature rows over candles stored on TimescaleDB: every minute has its row
        minutes = c.execute("SELECT count(*) FROM market.candles_1m").fetchone()[0]
        feats = c.execute("SELECT count(*), count(rsi_14) FROM market.features_range("
                          "ARRAY['usdm'], ARRAY['BTCUSD_PERP'], '-infinity', 'infinity')").fetchone()
        assert minutes > 1000 and feats == (minutes, minutes - 14), (minutes, feats)


def test_tick_retention_drops_whole_hours(db):
    with psycopg.connect(db, autocommit=True) as c:
        newest = {t: c.execute(f"SELECT max({col}) FROM market.{t}").fetchone()[0]
                  for t, col in (("agg_trades", "transact_time"), ("book_tickers", "event_time"))}
        cut = {t: c.execute("SELECT date_bin('1 hour', %s::timestamptz - %s::interval,"
                            " '2000-01-01 00:00+00')", (newest[t], keep)).fetchone()[0]
               for t, keep in (("agg_trades", "6 hours"), ("book_tickers", "1 hour"))}
        older = {t: c.execute(f"SELECT count(*) FROM market.{t} WHERE {col} < %s", (cut[t],)
                              ).fetchone()[0]
                 for t, col in (("agg_trades", "transact_time"), ("book_tickers", "event_time"))}
        assert older["agg_trades"] > 50_000 and older["book_tickers"] > 5_000, older
        c.execute("UPDATE market.settings SET agg_trades_retention = '6 hours',"
                  " book_tickers_retention = '1 hour'")
        r = c.execute("SELECT agg_trades_cutoff, agg_trades_deleted, book_tickers_cutoff,"
                      " book_tickers_deleted FROM market.apply_tick_retention()").fetchone()
        assert r == (cut["agg_trades"], older["agg_trades"], cut["book_tickers"],
                     older["book_tickers"]), (r, cut, older)
        for t, col in (("agg_trades", "transact_time"), ("book_tickers", "event_time")):
            assert c.execute(f"SELECT count(*) FROM market.{t} WHERE {col} < %s", (cut[t],)
                             ).fetchone()[0] == 0
            # whole 1-hour chunks went (drop_chunks), none is left before the cutoff
            assert c.execute("SELECT count(*) FROM timescaledb_information.chunks"
                             " WHERE hypertable_schema = 'market' AND hypertable_name = %s"
                             " AND range_end <= %s", (t, cut[t])).fetchone()[0] == 0
        c.execute("UPDATE market.settings SET agg_trades_retention = NULL,"
                  " book_tickers_retention = NULL")
