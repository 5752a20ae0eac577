"""Point in time (issue 17 item 3): for every tested minute m of real data, the feature row of
m computed in a database truncated after m equals the full-history row of m, bit for bit; and
every full-history row equals an independent Python computation (tests/common/features_ref.py,
math.fsum, TA-Lib), bit for bit.

Data (PG_TA_SHARED_DATA, real recordings):
  A  spot BTCUSDT, the first 3,300 minutes of spot/klines12/BTCUSDT-1m-2021-10-11_2021-10-21
     (bulk insert).  Tested minutes: the last 150 (every column warmed up), the first 30
     (warm-up NULLs) and the minutes around the 1-day warm-up edges (1438..1441, 1497..1501).
  B  usdm BTCUSD_PERP: the whole-day coin-M aggTrades dump (105,280 trades) into
     market.agg_trades, candles = market.trade_candles_1m (ta.kline), bulk.  Tested: the last
     60 minutes and 20 spread over the day.
  C  usdm BTCUSDT 2020-02-22 (Tardis): 9,999 raw trades (one aggregate trade each) and 9,999
     best bid/ask quotes as book tickers (update_id = row number: Tardis has none); written like
     a live feed, minute by minute, the minute's book tickers before its candle (so the
     trigger freezes each minute's book features).  Tested: every minute.
"Truncated after m": all candles with open_time > m, book tickers and trades from m + 1 minute
on, frozen book minutes after m are deleted.  The test walks m backwards, deleting one minute
at a time (each DELETE recomputes the head by the trigger), and compares both the head
(market.features) and market.features_range(m, m) with the full-history row.

Env: PG_TA_TEST_DSN (required), TA_FEED_BIN, PG_TA_SHARED_DATA.  About 20-40 s.
"""
from __future__ import annotations

import time

import pytest

from common import features_db as fdb
from common import pg

psycopg = pytest.importorskip("psycopg")
pytest.importorskip("talib")

DB = "pg_ta_features_pit"
NAMES = ["close_time"] + fdb.FEATURE_COLS


def _full(conn, market, symbol):
    return fdb.select_features(
        conn, "SELECT * FROM market.features_range(ARRAY[%s], ARRAY[%s], '-infinity', 'infinity')",
        (market, symbol))


def _walk_back(conn, market, symbol, full, tested):
    """Delete the instrument's newest minute until the head is each tested minute (newest
    first) and compare; returns the number of minutes compared."""
    times = sorted(t for (m, s, t) in full if (m, s) == (market, symbol))
    tested = sorted(set(tested), reverse=True)
    n = 0
    for m in tested:
        cut = fdb.dt_ms(m)
        with conn.transaction():
            conn.execute("DELETE FROM market.candles_1m WHERE market = %s AND symbol = %s"
                         " AND open_time > %s", (market, symbol, cut))
            conn.execute("DELETE FROM market.book_tickers WHERE market = %s AND symbol = %s"
                         " AND event_time >= %s::timestamptz + interval '1 minute'",
                         (market, symbol, cut))
            conn.execute("DELETE FROM market.agg_trades WHERE market = %s AND symbol = %s"
                         " AND transact_time >= %s::timestamptz + interval '1 minute'",
                         (market, symbol, cut))
            conn.execute("DELETE FROM market.book_1m_frozen WHERE market = %s AND symbol = %s"
                         " AND open_time > %s", (market, symbol, cut))
        head = fdb.select_features(conn, "SELECT * FROM market.features WHERE market = %s"
                                   " AND symbol = %s", (market, symbol))
        rng = fdb.select_features(conn, "SELECT * FROM market.features_range(ARRAY[%s],"
                                  " ARRAY[%s], %s, %s)", (market, symbol, cut, cut))
        want = {(market, symbol, m): full[(market, symbol, m)]}
        for what, got in (("market.features (head)", head), ("features_range(m, m)", rng)):
            d = fdb.first_difference(got, want, NAMES)
            assert d is None, f"truncated after {fdb.dt_ms(m)}: {what} differs: {d}"
        n += 1
    assert n == len(tested) and times
    return n


def test_point_in_time(tmp_path):
    pg.server_dsn()
    if not fdb.have_shared():
        pytest.skip("PG_TA_SHARED_DATA not found: the point-in-time test needs the real recordings")
    t0 = time.monotonic()
    dsn = pg.fresh_database(DB)
    pg.migrate(DB)
    ok = False
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            # A: klines, bulk
            kl = fdb.bd.read_klines12(fdb.shared("spot", "klines12",
                                                 "BTCUSDT-1m-2021-10-11_2021-10-21.csv.gz"))[:3300]
            fdb.insert_candles(conn, fdb.kline_rows("spot", "BTCUSDT", kl))
            # B: a whole day of aggTrades, candles built from them
            tr = fdb.read_agg_trades_dump(fdb.shared("futures_cm", "aggTrades",
                                                     "BTCUSD_PERP-aggTrades-2026-05-08.csv.gz"))
            fdb.insert_agg_trades(conn, "usdm", "BTCUSD_PERP", tr)
            with conn.transaction():
                conn.execute("INSERT INTO market.candles_1m SELECT * FROM market.trade_candles_1m"
                             " WHERE market = 'usdm' AND symbol = 'BTCUSD_PERP'")
            # C: Tardis trades and quotes, minute by minute, book before candle
            ttr = fdb.read_tardis_trades(fdb.shared("futures_um", "tardis",
                                                    "BTCUSDT-trades-2020-02-22.tardis.csv.gz"))
            quotes = fdb.read_tardis_quotes(fdb.shared("futures_um", "tardis",
                                                       "BTCUSDT-quotes-2020-02-22.tardis.csv.gz"))
            fdb.insert_agg_trades(conn, "usdm", "BTCUSDT", ttr)
            minutes = [fdb.ms(r[0]) for r in conn.execute(
                "SELECT open_time FROM market.trade_candles_1m WHERE market = 'usdm'"
                " AND symbol = 'BTCUSDT' ORDER BY open_time")]
            by_min: dict[int, list] = {}
            for q in quotes:
                by_min.setdefault(q[5] // 60_000_000 * 60_000, []).append(q)
            for m in minutes:
                fdb.insert_book(conn, "usdm", "BTCUSDT", by_min.get(m, []))
                with conn.transaction():
                    conn.execute("INSERT INTO market.candles_1m SELECT * FROM market.trade_candles_1m"
                                 " WHERE market = 'usdm' AND symbol = 'BTCUSDT' AND open_time = %s",
                                 (fdb.dt_ms(m),))
            t_load = time.monotonic() - t0
            frozen = conn.execute("SELECT count(*), count(*) FILTER (WHERE updates > 0)"
                                  " FROM market.book_1m_frozen").fetchone()
            print(f"\nloaded in {t_load:.1f} s: A {len(kl)} klines, B {len(tr)} aggTrades -> "
                  f"{conn.execute('SELECT count(*) FROM market.candles_1m WHERE symbol = %s', ('BTCUSD_PERP',)).fetchone()[0]}"
                  f" candles, C {len(ttr)} trades -> {len(minutes)} candles, {len(quotes)} quotes;"
                  f" frozen book minutes {frozen[0]} ({frozen[1]} with updates)")
            assert frozen[0] == len(minutes) and frozen[1] >= 4

            # the full-history rows equal the Python reference, bit for bit, no NaN
            full = {}
            book_c = fdb.book_by_minute(quotes)
            for market, symbol, book in (("spot", "BTCUSDT", None), ("usdm", "BTCUSD_PERP", None),
                                         ("usdm", "BTCUSDT", book_c)):
                rows = _full(conn, market, symbol)
                assert fdb.no_nan(rows)
                ref = fdb.reference_rows(conn, market, symbol, book)
                got = {t: r[1:] for (_m, _s, t), r in rows.items()}
                d = fdb.first_difference(got, ref, fdb.FEATURE_COLS)
                assert d is None, f"{market} {symbol}: features_range differs from the reference: {d}"
                nonnull = sum(x is not None for r in got.values() for x in r)
                print(f"  {market} {symbol}: {len(rows)} rows equal the Python reference "
                      f"({nonnull} non-NULL values)")
                full.update(rows)
            # C's book features are there (and a z-score needs an hour: NULL in 4 minutes)
            c_rows = [r for (m, s, _t), r in full.items() if (m, s) == ("usdm", "BTCUSDT")]
            assert sum(r[1 + fdb.FEATURE_COLS.index("imbalance_1m")] is not None for r in c_rows) >= 4

            # truncate after m, recompute, compare
            ta = sorted(t for (m, s, t) in full if (m, s) == ("spot", "BTCUSDT"))
            tested_a = ta[-150:] + ta[:30] + ta[1438:1442] + ta[1497:1502]
            tb = sorted(t for (m, s, t) in full if (m, s) == ("usdm", "BTCUSD_PERP"))
            tested_b = tb[-60:] + tb[::72]
            tc = sorted(t for (m, s, t) in full if (m, s) == ("usdm", "BTCUSDT"))
            t1 = time.monotonic()
            n = (_walk_back(conn, "spot", "BTCUSDT", full, tested_a)
                 + _walk_back(conn, "usdm", "BTCUSD_PERP", full, tested_b)
                 + _walk_back(conn, "usdm", "BTCUSDT", full, tc))
            print(f"  truncated after m and recomputed for {n} minutes in "
                  f"{time.monotonic() - t1:.1f} s: head and features_range(m, m) equal the "
                  f"full-history rows bit for bit")
        print(f"[time] point-in-time test: {time.monotonic() - t0:.1f} s")
        ok = True
    finally:
        if ok:
            pg.drop_database(DB)
