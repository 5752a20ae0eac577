"""Trades and top of book end to end (issue 19): real recorded aggTrades and book tickers go
`ta-feed replay` -> `ta-feed stream --streams ...` -> PostgreSQL, with a dropped connection
and a restart of the stream mid-run, and `ta-feed import` of the same dumps.

Data (PG_TA_SHARED_DATA, never copied into the repo; see its README "Trades and top of book"):
  * futures_cm/aggTrades/BTCUSD_PERP-aggTrades-2026-05-08.csv.gz: a whole day of coin-M
    aggTrades, served as the USD-M series BTCUSDT (a symlink renames it; its quantity counts
    contracts and is treated as base units, as the README suggests), at 1440x (a day a minute);
  * spot/aggTrades/XRPETH-aggTrades-2019-10-11_2019-10-13.csv.gz: 2.5 days of spot aggTrades at
    3600x;
  * futures_um/tardis/BTCUSDT-quotes-2020-02-22.tardis.csv.gz: Tardis best bid/ask, served as
    USD-M bookTicker updates (update id = row number, moved to 2026-05-08 00:00:05 with
    --book-tickers-from) at 5x.
Each runs as its own replay and stream, concurrently, into one database; the replays start
well before the first trade, so the stream's connections (opened 250 ms apart) are up when the
trades begin (a symbol without stored trades starts at the first trade it sees live). Mid-run each stream
loses a connection (`POST /_replay/drop-connection?channel=...`) and is restarted (SIGINT,
a pause, the same command again).

Checks:
  (1) every aggTrade id of both files is stored exactly once, every field equal to the file
      (decimal text included); the gaps were filled over REST and logged (`trade_gap` with
      trigger reconnect and restart, `trade_gap_filled`), none given up;
  (2) trade candles (the stored trades aggregated in plain SQL with numeric sums) equal the
      replay's klines as stored in market.candles_1m, and an independent Python aggregation
      of the file's trades, for every minute with trades;
  (3) book tickers: every stored update equals the served one; every served update that is
      missing lies inside a recorded `book_ticker_gap` (the disconnect and the restart);
  (4) `ta-feed import` of each dump into a fresh database stores exactly the file.

Env: PG_TA_TEST_DSN (required), TA_FEED_BIN, PG_TA_SHARED_DATA, PG_TA_TICKS_TIMEOUT (300 s).
"""
from __future__ import annotations

import json
import os
import tempfile
import time
import urllib.request
from datetime import datetime, timezone

import pytest

from common import binance_data as bd
from common import pg
from common.procs import Child, finish, wait_listening

psycopg = pytest.importorskip("psycopg")

DB = "pg_ta_ticks"
TIMEOUT = float(os.environ.get("PG_TA_TICKS_TIMEOUT", "300"))
MINUTE = 60_000
CM = "futures_cm/aggTrades/BTCUSD_PERP-aggTrades-2026-05-08.csv.gz"
SPOT = "spot/aggTrades/XRPETH-aggTrades-2019-10-11_2019-10-13.csv.gz"
QUOTES = "futures_um/tardis/BTCUSDT-quotes-2020-02-22.tardis.csv.gz"
QUOTES_FROM = "2026-05-08T00:00:05Z"


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def _data(rel: str) -> str:
    p = os.path.join(bd.shared_data_dir(), rel)
    if not os.path.isfile(p):
        pytest.skip(f"recorded data {rel} not found under {bd.shared_data_dir()} (PG_TA_SHARED_DATA)")
    return p


def http(addr: str, path: str, method: str = "GET") -> dict:
    req = urllib.request.Request(f"http://{addr}{path}", method=method)
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


class Pair:
    """One replay and its stream (restartable)."""

    def __init__(self, name, replay_args, stream_args, logdir, env, deadline):
        self.name, self.logdir, self.env = name, logdir, env
        self.replay = Child(f"{name}-replay", ["replay", *replay_args], logdir, env)
        self.addr = wait_listening(self.replay, deadline)
        self.stream_args = ["stream", "--ws-url", f"ws://{self.addr}",
                            "--rest-url", f"http://{self.addr}", "--retention-interval-secs", "0",
                            *stream_args]
        self.streams: list[Child] = []
        self.start_stream()

    def start_stream(self):
        self.streams.append(Child(f"{self.name}-stream-{len(self.streams) + 1}", self.stream_args,
                                  self.logdir, self.env))

    @property
    def stream(self) -> Child:
        return self.streams[-1]

    def children(self) -> list[Child]:
        return [self.replay, *self.streams]

    def restart(self, pause: float):
        assert self.stream.interrupt() == 0, self.stream.tail()
        time.sleep(pause)
        self.start_stream()

    def drop(self, channel: str) -> dict:
        return http(self.addr, f"/_replay/drop-connection?channel={channel}", "POST")


def _count(c, sql, *args) -> int:
    return c.execute(sql, args).fetchone()[0]


def test_ticks_end_to_end(tmp_path):
    pg.server_dsn()
    cm, spot, quotes = _data(CM), _data(SPOT), _data(QUOTES)
    t0 = time.monotonic()
    deadline = t0 + TIMEOUT
    cm_trades, spot_trades = bd.read_agg_trades(cm), bd.read_agg_trades(spot)
    served_quotes = bd.read_tardis_quotes(quotes)
    # the coin-M day as a USD-M series named BTCUSDT (the replay takes the symbol from the name)
    files = tmp_path / "files"
    files.mkdir()
    (files / "BTCUSDT-aggTrades-2026-05-08.csv.gz").symlink_to(cm)
    (files / "BTCUSDT-quotes-2020-02-22.tardis.csv.gz").symlink_to(quotes)
    print(f"\n{len(cm_trades)} + {len(spot_trades)} aggTrades, {len(served_quotes)} quotes")

    logdir = tempfile.mkdtemp(prefix="pg_ta_ticks_")
    print(f"child logs: {logdir}")
    dsn = pg.fresh_database(DB)
    pg.migrate(DB)
    env = dict(os.environ, DATABASE_URL=pg.url_for(DB), NO_COLOR="1", RUST_LOG="info")
    pairs: list[Pair] = []
    ok = False
    try:
        usdm = Pair("usdm", [
            "--market", "usdm", "--speed", "1440", "--start", "2026-05-07T23:30:00Z",
            "--close-delay-ms", "2000", "--file", str(files / "BTCUSDT-aggTrades-2026-05-08.csv.gz")],
            ["--market", "usdm", "--symbols", "BTCUSDT", "--streams", "kline,agg_trade",
             "--backfill-minutes", "10", "--alert-catchup-minutes", "0"],
            logdir, env, deadline)
        pairs.append(usdm)
        spotp = Pair("spot", [
            "--market", "spot", "--speed", "3600", "--start", "2019-10-10T23:00:00Z",
            "--file", spot],
            ["--market", "spot", "--symbols", "XRPETH", "--streams", "kline,agg_trade",
             "--backfill-minutes", "10", "--alert-catchup-minutes", "0"],
            logdir, env, deadline)
        pairs.append(spotp)
        book = Pair("book", [
            "--market", "usdm", "--speed", "5", "--start", "2026-05-08T00:00:00Z",
            "--book-tickers-from", QUOTES_FROM,
            "--file", str(files / "BTCUSDT-quotes-2020-02-22.tardis.csv.gz")],
            ["--market", "usdm", "--symbols", "BTCUSDT", "--streams", "book_ticker"],
            logdir, env, deadline)
        pairs.append(book)

        quotes_span = (served_quotes[-1].time_ms - served_quotes[0].time_ms) / 1000 / 5
        steps = [  # (seconds after start, what)
            (15, "drop usdm"), (18, "drop spot"), (0.3 * quotes_span, "drop book"),
            (25, "restart usdm"), (32, "restart spot"), (0.6 * quotes_span, "restart book"),
        ]
        steps.sort()
        started = time.monotonic()
        last_cm = cm_trades[-1].agg_trade_id
        last_spot = spot_trades[-1].agg_trade_id
        last_quote_ms = served_quotes[-1].time_ms - served_quotes[0].time_ms + _ms(
            datetime.fromisoformat(QUOTES_FROM.replace("Z", "+00:00")))
        with psycopg.connect(dsn, autocommit=True) as c:
            while True:
                assert time.monotonic() < deadline, "the replays were not stored in time:\n" + \
                    "\n".join(p.stream.tail() for p in pairs)
                for p in pairs:
                    assert p.stream.alive(), f"{p.name} stream exited:\n{p.stream.tail()}"
                elapsed = time.monotonic() - started
                while steps and elapsed >= steps[0][0]:
                    _, what = steps.pop(0)
                    verb, who = what.split()
                    pair = {"usdm": usdm, "spot": spotp, "book": book}[who]
                    if verb == "drop":
                        channel = "bookTicker" if who == "book" else "aggTrade"
                        print(f"[{elapsed:5.1f} s] drop {who}: {pair.drop(channel)}")
                    else:
                        pair.restart(2.0)
                        print(f"[{elapsed:5.1f} s] restarted {who}")
                done_usdm = _count(c, "SELECT count(*) FROM market.agg_trades WHERE market = 'usdm'"
                                      " AND symbol = 'BTCUSDT' AND agg_trade_id = %s", last_cm)
                done_spot = _count(c, "SELECT count(*) FROM market.agg_trades WHERE market = 'spot'"
                                      " AND agg_trade_id = %s", last_spot)
                done_book = _count(c, "SELECT count(*) FROM market.book_tickers"
                                      " WHERE event_time >= to_timestamp(%s / 1000.0)",
                                   last_quote_ms - 1000)
                # the candle of the last trade's minute is written too (at these speeds the
                # candle writer, which waits for each minute's ticks, may lag the trades)
                done_candles = _count(
                    c, "SELECT count(*) FROM market.candles_1m WHERE (market, open_time) IN"
                       " (('usdm', to_timestamp(%s / 1000.0)), ('spot', to_timestamp(%s / 1000.0)))",
                    cm_trades[-1].transact_time // MINUTE * MINUTE,
                    spot_trades[-1].transact_time // MINUTE * MINUTE) == 2
                if not steps and done_usdm and done_spot and done_book and done_candles:
                    break
                time.sleep(0.5)
            # the last minutes' candles (closed 2 s after the minute) and any fill still going
            time.sleep(3)
        print(f"[time] streamed: {time.monotonic() - t0:.1f} s")
        for p in pairs:
            assert p.stream.interrupt() == 0, p.stream.tail()
        with psycopg.connect(dsn, autocommit=True) as c:
            check_trades(c, "usdm", "BTCUSDT", cm_trades)
            check_trades(c, "spot", "XRPETH", spot_trades)
            check_candles(c, "usdm", "BTCUSDT", cm_trades)
            check_candles(c, "spot", "XRPETH", spot_trades)
            check_books(c, served_quotes)
        check_import(cm, spot)
        print(f"[time] ticks end-to-end: {time.monotonic() - t0:.1f} s")
        ok = True
    finally:
        finish([ch for p in pairs for ch in p.children()], ok, DB, logdir, tail=40)


def check_trades(c, market, symbol, trades):
    rows = c.execute(
        "SELECT agg_trade_id, price::text, quantity::text, first_trade_id, last_trade_id,"
        " (extract(epoch FROM transact_time) * 1000)::bigint, is_buyer_maker, is_best_match"
        " FROM market.agg_trades t WHERE market = %s AND symbol = %s ORDER BY t.agg_trade_id",
        (market, symbol)).fetchall()
    want = [(t.agg_trade_id, t.price, t.quantity, t.first_trade_id, t.last_trade_id,
             t.transact_time, t.is_buyer_maker, t.is_best_match if market == "spot" else None)
            for t in trades]
    print(f"(1) {market} {symbol}: {len(rows)} stored of {len(want)} in the file")
    assert len(rows) == len(want), "every id once"
    bad = [(w, tuple(r)) for w, r in zip(want, rows) if w != tuple(r)]
    assert not bad, f"{len(bad)} trades differ from the file, e.g. {bad[:3]}"
    dq = c.execute(
        "SELECT kind, detail->>'trigger', count(*), sum(rows) FROM market.data_quality_log"
        " WHERE market = %s AND symbol = %s AND kind LIKE 'trade_gap%%' GROUP BY 1, 2 ORDER BY 1, 2",
        (market, symbol)).fetchall()
    print(f"    gaps: {dq}")
    kinds = {(k, trig) for k, trig, _, _ in dq}
    assert ("trade_gap", "reconnect") in kinds or ("trade_gap", "jump") in kinds, dq
    assert ("trade_gap", "restart") in kinds, dq
    assert any(k == "trade_gap_filled" for k, *_ in dq), dq
    assert not any(k == "trade_gap_unfilled" for k, *_ in dq), dq
    filled = c.execute(
        "SELECT (detail->>'first_id')::bigint, (detail->>'last_id')::bigint, rows"
        " FROM market.data_quality_log WHERE market = %s AND symbol = %s"
        " AND kind = 'trade_gap_filled'", (market, symbol)).fetchall()
    for lo, hi, n in filled:
        assert 0 < n <= hi - lo + 1, (lo, hi, n)


def check_candles(c, market, symbol, trades):
    """Stored trades aggregated by market.trade_candles_1m = stored klines (the replay's, derived from the same
    trades) = Python's aggregation of the file, for every minute with trades."""
    if c.execute("SELECT market.timescaledb_enabled()").fetchone()[0]:
        # a continuous aggregate shows trades stored below its watermark (fills, replayed old
        # days) after its next refresh (every minute): refresh now instead of waiting
        c.execute("CALL refresh_continuous_aggregate('market.trade_candles_1m', NULL, NULL)")
    sql_rows = c.execute(
        "SELECT (extract(epoch FROM open_time) * 1000)::bigint, open, high, low, close, volume,"
        " quote_volume, trades, taker_buy_volume, taker_buy_quote_volume"
        " FROM market.trade_candles_1m WHERE market = %s AND symbol = %s ORDER BY open_time",
        (market, symbol)).fetchall()
    from_sql = {r[0]: tuple(r[1:]) for r in sql_rows}
    klines = {
        _ms(r[0]): tuple(r[1:])
        for r in c.execute(
            "SELECT open_time, open, high, low, close, volume, quote_volume, trades,"
            " taker_buy_volume, taker_buy_quote_volume FROM market.candles_1m"
            " WHERE market = %s AND symbol = %s ORDER BY open_time", (market, symbol))}
    from_py = bd.klines_from_agg_trades(trades)
    print(f"(2) {market} {symbol}: {len(from_py)} minutes with trades, {len(klines)} candles")
    assert set(from_sql) == set(from_py)
    missing = sorted(set(from_py) - set(klines))
    assert not missing, f"{len(missing)} minutes with trades have no candle, e.g. {missing[:3]}"
    diff_sql = [m for m in from_py if from_sql[m] != from_py[m]]
    diff_kl = [m for m in from_py if klines[m] != from_py[m]]
    assert not diff_sql, f"SQL aggregation differs from Python at {diff_sql[:3]}"
    assert not diff_kl, f"stored klines differ from the trades at {diff_kl[:3]}: " \
                        f"{[(klines[m], from_py[m]) for m in diff_kl[:2]]}"
    # minutes without trades are flat at the previous close, zero volume (Binance)
    flat = [k for m, k in klines.items() if m not in from_py]
    assert all(k[0] == k[1] == k[2] == k[3] and k[4] == 0 and k[6] == 0 for k in flat)


def check_books(c, served):
    shift = _ms(datetime.fromisoformat(QUOTES_FROM.replace("Z", "+00:00"))) - served[0].time_ms
    rows = c.execute(
        "SELECT update_id, (extract(epoch FROM event_time) * 1000)::bigint,"
        " (extract(epoch FROM transaction_time) * 1000)::bigint, best_bid_price::text,"
        " best_bid_qty::text, best_ask_price::text, best_ask_qty::text"
        " FROM market.book_tickers WHERE market = 'usdm' AND symbol = 'BTCUSDT' ORDER BY update_id"
    ).fetchall()
    by_id = {q.update_id: q for q in served}
    for u, e, t, b, bq, a, aq in rows:
        q = by_id[u]
        assert (e, t, b, bq, a, aq) == (q.time_ms + shift, q.time_ms + shift, q.bid_price,
                                        q.bid_qty, q.ask_price, q.ask_qty), u
    gaps = c.execute(
        "SELECT detail->>'reason', (extract(epoch FROM from_time) * 1000)::bigint,"
        " (extract(epoch FROM to_time) * 1000)::bigint FROM market.data_quality_log"
        " WHERE kind = 'book_ticker_gap' ORDER BY from_time").fetchall()
    stored = {r[0] for r in rows}
    missing = [q for q in served if q.update_id not in stored]
    print(f"(3) book tickers: {len(rows)} stored of {len(served)} served, {len(missing)} missing,"
          f" gaps {gaps}")
    reasons = {g[0] for g in gaps}
    assert {"disconnect", "restart"} <= reasons, gaps
    outside = [q.update_id for q in missing
               if not any(lo <= q.time_ms + shift <= hi for _, lo, hi in gaps)]
    assert not outside, f"{len(outside)} updates missing outside a recorded gap: {outside[:5]}"
    assert len(rows) > len(served) // 2


def check_import(cm, spot):
    db = "pg_ta_ticks_import"
    dsn = pg.fresh_database(db)
    try:
        pg.migrate(db)
        pg.ta_feed("import", "--market", "usdm", cm, dbname=db)
        pg.ta_feed("import", spot, dbname=db)
        with psycopg.connect(dsn, autocommit=True) as c:
            for market, symbol, path in (("usdm", "BTCUSD_PERP", cm), ("spot", "XRPETH", spot)):
                check_trades_exact(c, market, symbol, bd.read_agg_trades(path))
        again = pg.ta_feed("import", "--market", "usdm", cm, dbname=db)
        assert "rows_written=0" in again.stdout, again.stdout
    finally:
        pg.drop_database(db)


def check_trades_exact(c, market, symbol, trades):
    rows = c.execute(
        "SELECT agg_trade_id, price::text, quantity::text, first_trade_id, last_trade_id,"
        " (extract(epoch FROM transact_time) * 1000)::bigint, is_buyer_maker, is_best_match"
        " FROM market.agg_trades t WHERE market = %s AND symbol = %s ORDER BY t.agg_trade_id",
        (market, symbol)).fetchall()
    want = [(t.agg_trade_id, t.price, t.quantity, t.first_trade_id, t.last_trade_id,
             t.transact_time, t.is_buyer_maker, t.is_best_match) for t in trades]
    assert [tuple(r) for r in rows] == want
    print(f"(4) import {market} {symbol}: {len(rows)} rows, exact")
