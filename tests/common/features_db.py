"""Loading real recordings into a test database for the feature suites, and reading feature
rows back exactly (PostgreSQL prints float8 in the shortest form that reads back as the same
double, so float(text) is bit-exact)."""
from __future__ import annotations

import csv
import gzip
import os
from datetime import datetime, timedelta, timezone

from . import binance_data as bd
from . import features_ref as fref

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
FEATURE_COLS = fref.COLUMNS


def shared(*parts: str) -> str:
    return os.path.join(bd.shared_data_dir(), *parts)


def have_shared() -> bool:
    return os.path.isdir(bd.shared_data_dir())


def ms(dt: datetime) -> int:
    return (dt - EPOCH) // timedelta(milliseconds=1)


def dt_ms(x: int) -> datetime:
    return EPOCH + timedelta(milliseconds=int(x))


def dt_us(x: int) -> datetime:
    return EPOCH + timedelta(microseconds=int(x))


def copy_rows(conn, table: str, cols: list[str], rows) -> int:
    """COPY rows (tuples of text/None) into table."""
    n = 0
    with conn.cursor().copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as cp:
        for r in rows:
            cp.write_row(r)
            n += 1
    return n


# --------------------------------------------------------------------------------------
# candles

KLINE_COLS = ["market", "symbol", "open_time", "close_time", "open", "high", "low", "close",
              "volume", "quote_volume", "trades", "taker_buy_volume", "taker_buy_quote_volume"]


def kline_rows(market: str, symbol: str, klines) -> list[tuple]:
    return [(market, symbol, dt_ms(k.open_time), dt_ms(k.close_time), k.open, k.high, k.low,
             k.close, k.volume, k.quote_volume, k.trades, k.taker_buy_volume,
             k.taker_buy_quote_volume) for k in klines]


def insert_candles(conn, rows: list[tuple], one_per_statement: bool = False) -> None:
    """Candle rows (KLINE_COLS order): one COPY of all (the bulk path), or one INSERT per row
    in its own transaction (the live path, as ta-feed writes closed klines)."""
    sql = (f"INSERT INTO market.candles_1m ({', '.join(KLINE_COLS)}) VALUES "
           "(%s, %s, %s, %s, %s::numeric, %s::numeric, %s::numeric, %s::numeric, %s::numeric,"
           " %s::numeric, %s, %s::numeric, %s::numeric)")
    if one_per_statement:
        for r in rows:
            with conn.transaction():
                conn.execute(sql, r)
    else:
        with conn.transaction():
            copy_rows(conn, "market.candles_1m", KLINE_COLS, rows)


# --------------------------------------------------------------------------------------
# ticks

AGG_COLS = ["market", "symbol", "agg_trade_id", "price", "quantity", "first_trade_id",
            "last_trade_id", "transact_time", "is_buyer_maker"]
BOOK_COLS = ["market", "symbol", "update_id", "best_bid_price", "best_bid_qty",
             "best_ask_price", "best_ask_qty", "event_time"]


def read_agg_trades_dump(path: str) -> list[tuple]:
    """Futures aggTrades dump (header, ms): [(a, p, q, f, l, T_ms, m)] as text/int/bool."""
    out = []
    with gzip.open(path, "rt", newline="") as f:
        for r in csv.reader(f):
            if not r or not r[0].isdigit():
                continue
            out.append((int(r[0]), r[1], r[2], int(r[3]), int(r[4]), int(r[5]),
                        r[6].strip().lower() == "true"))
    return out


def read_tardis_trades(path: str) -> list[tuple]:
    """Tardis trades (µs): raw trades as aggregate trades of one trade each:
    [(a = id, p, q, f = id, l = id, T_ms, m = side is sell)]."""
    out = []
    with gzip.open(path, "rt", newline="") as f:
        rd = csv.DictReader(f)
        for r in rd:
            i = int(r["id"])
            out.append((i, r["price"], r["amount"], i, i, int(r["timestamp"]) // 1000,
                        r["side"] == "sell"))
    return out


def read_tardis_quotes(path: str) -> list[tuple]:
    """Tardis best bid/ask (µs) as book tickers: [(update_id, bid, bid_qty, ask, ask_qty,
    time_us)]; Tardis has no update ids, so update_id is the row number (a key only); quotes
    with an empty side or bid >= ask are left out (market.book_tickers refuses them)."""
    out = []
    with gzip.open(path, "rt", newline="") as f:
        rd = csv.DictReader(f)
        for n, r in enumerate(rd, start=1):
            bid, ask = r["bid_price"], r["ask_price"]
            if not bid or not ask or float(bid) >= float(ask):
                continue
            out.append((n, bid, r["bid_amount"], ask, r["ask_amount"], int(r["timestamp"])))
    return out


def insert_agg_trades(conn, market: str, symbol: str, trades: list[tuple]) -> int:
    rows = ((market, symbol, a, p, q, f, l, dt_ms(t), m) for (a, p, q, f, l, t, m) in trades)
    with conn.transaction():
        return copy_rows(conn, "market.agg_trades", AGG_COLS, rows)


def insert_book(conn, market: str, symbol: str, quotes: list[tuple]) -> int:
    rows = ((market, symbol, u, b, bq, a, aq, dt_us(t)) for (u, b, bq, a, aq, t) in quotes)
    with conn.transaction():
        return copy_rows(conn, "market.book_tickers", BOOK_COLS, rows)


def book_by_minute(quotes: list[tuple]) -> dict[int, dict]:
    """The reference book features (features_ref.book_minute) of each minute (key: minute
    start, ms) of book ticker rows [(update_id, bid, bq, ask, aq, time_us)]. Times are µs since
    1970; minutes are UTC minutes either way."""
    by: dict[int, list] = {}
    for (u, b, bq, a, aq, t) in quotes:
        m = t // 60_000_000 * 60_000
        by.setdefault(m, []).append((t, u, float(b), float(bq), float(a), float(aq)))
    return {m: fref.book_minute(qs, (m + 60_000) * 1000) for m, qs in by.items()}


# --------------------------------------------------------------------------------------
# feature rows

def select_features(conn, sql: str, params=()) -> dict[tuple, tuple]:
    """{(market, symbol, open_time_ms): (close_time_ms, value per feature column)} of a query
    returning ta.feature_row columns."""
    cols = ", ".join(["market", "symbol", "open_time", "close_time"] + FEATURE_COLS)
    out = {}
    for r in conn.execute(f"SELECT {cols} FROM ({sql}) f", params):
        out[(r[0], r[1], ms(r[2]))] = (ms(r[3]),) + tuple(r[4:])
    return out


def row_bits(row: tuple) -> tuple:
    return (row[0],) + tuple(fref.bits(x) for x in row[1:])


def candle_inputs(conn, market: str, symbol: str):
    """(open_time_ms list, close, volume, quote_volume, taker_buy_volume) as floats of the
    stored candles, oldest first."""
    rows = conn.execute(
        "SELECT open_time, close::text, volume::text, quote_volume::text, taker_buy_volume::text"
        " FROM market.candles_1m WHERE market = %s AND symbol = %s ORDER BY open_time",
        (market, symbol)).fetchall()
    return ([ms(r[0]) for r in rows], [float(r[1]) for r in rows], [float(r[2]) for r in rows],
            [float(r[3]) for r in rows], [float(r[4]) for r in rows])


def reference_rows(conn, market: str, symbol: str, book: dict[int, dict] | None = None
                   ) -> dict[int, tuple]:
    """{open_time_ms: values per feature column} from features_ref over the stored candles."""
    t, c, v, q, tb = candle_inputs(conn, market, symbol)
    bk = None
    if book is not None:
        bk = [(lambda b: None if b is None else (b["imbalance"], b["spread_bps"],
                                                 b["wmid_offset_bps"]))(book.get(x))
              for x in t]
    ref = fref.features(c, v, q, tb, bk)
    return {x: tuple(ref[k][i] for k in FEATURE_COLS) for i, x in enumerate(t)}


def first_difference(got: dict, want: dict, names: list[str] | None = None) -> str | None:
    """The first key and column whose values differ bit for bit, described; None when equal.
    Rows are tuples of values (floats compared by their IEEE bits, None = NULL)."""
    def norm(x):
        return fref.bits(x) if isinstance(x, float) else x
    if got.keys() != want.keys():
        return (f"keys differ: only got {sorted(got.keys() - want.keys())[:3]}, "
                f"only want {sorted(want.keys() - got.keys())[:3]}")
    for k in sorted(got):
        for j, (a, b) in enumerate(zip(got[k], want[k])):
            if norm(a) != norm(b):
                name = names[j] if names else str(j)
                return f"{k} {name}: got {a!r} want {b!r}"
    return None


def iso_ms(text: str) -> int:
    """ms of an ISO 8601 UTC time as the payloads print it (2024-01-01T00:00:00.000Z)."""
    return ms(datetime.fromisoformat(text.replace("Z", "+00:00")))


def payload_rows(text: str) -> list[tuple[tuple, tuple]]:
    """The rows of a ta_features payload (ta.feature_payloads) as (key, values): key =
    (market, symbol, open_time ms), values = the feature columns decoded from base64
    little-endian doubles, NaN as None (NULL). Checks the payload's version and size."""
    import base64
    import json
    import struct
    assert len(text.encode()) < 8000, len(text)
    p = json.loads(text)
    assert p["version"] == 1 and p["rows"], p
    out = []
    for r in p["rows"]:
        raw = base64.b64decode(r["features"], validate=True)
        assert len(raw) == 8 * len(FEATURE_COLS), len(raw)
        vals = tuple(None if x != x else x for x in struct.unpack(f"<{len(FEATURE_COLS)}d", raw))
        out.append(((r["market"], r["symbol"], iso_ms(r["open_time"])), vals))
    return out


def features_only(rows: dict) -> dict:
    """Rows of select_features (close_time, features...) without close_time: what a payload
    row carries."""
    return {k: v[1:] for k, v in rows.items()}


def no_nan(rows: dict) -> bool:
    return all(not (isinstance(x, float) and x != x) for r in rows.values() for x in r)


class NotifyCollector:
    """LISTEN on a channel in a background thread and keep every payload received, in order,
    until stop()."""

    def __init__(self, dsn: str, channel: str):
        import threading

        import psycopg
        self.payloads: list[str] = []
        self._stop = threading.Event()
        self._conn = psycopg.connect(dsn, autocommit=True)
        self._conn.execute(f'LISTEN "{channel}"')
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for n in self._conn.notifies(timeout=0.5):
                self.payloads.append(n.payload)

    def stop(self, drain: float = 2.0) -> list[str]:
        import time as _t
        _t.sleep(drain)
        self._stop.set()
        self._thread.join(timeout=10)
        self._conn.close()
        return self.payloads
