"""Readers for the recorded Binance data under PG_TA_SHARED_DATA (never copied into the repo).

Two layouts (see <shared>/README.md):
  * ohlcv    spot/ohlcv/*.csv.gz: header `open_time,open,high,low,close,volume`, ms.
  * klines12 spot/klines12/*.csv.gz: the 12 Binance kline columns, no header, ms.
Numbers are kept as their decimal text.
"""
from __future__ import annotations

import csv
import glob
import gzip
import os
from dataclasses import dataclass
from decimal import Decimal, localcontext

from .screener_ref import EXACT, Series

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))


def shared_data_dir() -> str:
    return os.environ.get("PG_TA_SHARED_DATA",
                          os.path.join(REPO, "..", "shared", "data", "binance"))


def _open(path: str):
    return gzip.open(path, "rt", newline="") if path.endswith(".gz") else open(path, newline="")


def symbol_of(path: str) -> str:
    return os.path.basename(path).split("-", 1)[0].upper()


# --------------------------------------------------------------------------------------
# klines12

@dataclass(frozen=True)
class Kline:
    """One klines12 row, values as text (times as int ms)."""

    open_time: int
    open: str
    high: str
    low: str
    close: str
    volume: str
    close_time: int
    quote_volume: str
    trades: int
    taker_buy_volume: str
    taker_buy_quote_volume: str


def read_klines12(path: str) -> list[Kline]:
    out = []
    with _open(path) as f:
        for r in csv.reader(f):
            if not r or not r[0].strip().isdigit():
                continue  # header row or blank line
            ot, ct = int(r[0]), int(r[6])
            if ot >= 10**15:  # µs (2025+ spot dumps)
                ot, ct = ot // 1000, ct // 1000
            out.append(Kline(ot, r[1], r[2], r[3], r[4], r[5], ct, r[7], int(r[8]), r[9], r[10]))
    out.sort(key=lambda k: k.open_time)
    return out


def klines_series(symbol: str, klines: list[Kline]) -> Series:
    return Series.from_rows(symbol, [(k.open_time, k.open, k.high, k.low, k.close,
                                      Decimal(k.quote_volume)) for k in klines])


# --------------------------------------------------------------------------------------
# ohlcv

def read_ohlcv(path: str) -> list[tuple]:
    """[(open_time_ms, open, high, low, close, volume)] with the numbers as text."""
    out = []
    with _open(path) as f:
        rd = csv.reader(f)
        header = next(rd)
        assert header[:6] == ["open_time", "open", "high", "low", "close", "volume"], header
        for r in rd:
            if r:
                out.append((int(r[0]), r[1], r[2], r[3], r[4], r[5]))
    out.sort(key=lambda r: r[0])
    return out


def derived_quote_volume(volume: str, close: str) -> Decimal:
    """quote_volume for files without it: volume x close, the exact decimal product (the
    database side stores this same value and the test checks quote_volume = volume * close
    in SQL numeric)."""
    with localcontext(EXACT):
        return Decimal(volume) * Decimal(close)


def ohlcv_series(symbol: str, rows: list[tuple]) -> Series:
    return Series.from_rows(symbol, [(t, o, h, l, c, derived_quote_volume(v, c))
                                     for (t, o, h, l, c, v) in rows])


def ohlcv_files_2023_04() -> dict[str, str]:
    """The 13 symbols of April 2023: the 8 files *-1m-2023-04-01_2023-05-01 plus the 5 files
    *-1m-2023-03-16_2023-05-01 (restricted to the same window by the caller)."""
    d = os.path.join(shared_data_dir(), "spot", "ohlcv")
    files = {}
    for f in sorted(glob.glob(os.path.join(d, "*-1m-2023-04-01_2023-05-01.csv.gz"))):
        files[symbol_of(f)] = f
    for f in sorted(glob.glob(os.path.join(d, "*-1m-2023-03-16_2023-05-01.csv.gz"))):
        files.setdefault(symbol_of(f), f)
    return files


def klines12_btc_files() -> list[str]:
    d = os.path.join(shared_data_dir(), "spot", "klines12")
    return sorted(glob.glob(os.path.join(d, "BTCUSDT-1m-*.csv.gz")))


# --------------------------------------------------------------------------------------
# ticks (aggTrades dumps, Tardis best bid/ask)

@dataclass(frozen=True)
class AggTrade:
    """One aggTrades dump row, decimals as their text, time in ms (µs dumps floored)."""

    agg_trade_id: int
    price: str
    quantity: str
    first_trade_id: int
    last_trade_id: int
    transact_time: int
    is_buyer_maker: bool
    is_best_match: bool | None


def _bool(s: str) -> bool:
    if s.lower() not in ("true", "false"):
        raise ValueError(f"not a boolean: {s!r}")
    return s.lower() == "true"


def read_agg_trades(path: str) -> list[AggTrade]:
    """Binance aggTrades dump rows (spot: no header, 8 columns; futures: header, 7 columns),
    ordered by id."""
    out = []
    with _open(path) as f:
        for r in csv.reader(f):
            if not r or not r[0].strip().isdigit():
                continue  # header
            t = int(r[5])
            if t >= 10**15:
                t //= 1000
            out.append(AggTrade(int(r[0]), r[1].strip(), r[2].strip(), int(r[3]), int(r[4]), t,
                                _bool(r[6]), _bool(r[7]) if len(r) > 7 else None))
    out.sort(key=lambda a: a.agg_trade_id)
    return out


def klines_from_agg_trades(trades: list[AggTrade]) -> dict[int, tuple]:
    """Binance's 1m kline rule, written here independently of ta-feed: per minute with trades,
    (open, high, low, close, volume, quote_volume, trades, taker_buy_volume,
    taker_buy_quote_volume) with exact Decimal sums (open/close by id)."""
    out: dict[int, list] = {}
    with localcontext() as ctx:
        ctx.prec = 80
        for t in sorted(trades, key=lambda a: a.agg_trade_id):
            m = t.transact_time // 60_000 * 60_000
            p, q = Decimal(t.price), Decimal(t.quantity)
            k = out.get(m)
            if k is None:
                k = out[m] = [p, p, p, p, Decimal(0), Decimal(0), 0, Decimal(0), Decimal(0)]
            k[1] = max(k[1], p)
            k[2] = min(k[2], p)
            k[3] = p
            k[4] += q
            k[5] += p * q
            k[6] += t.last_trade_id - t.first_trade_id + 1
            if not t.is_buyer_maker:
                k[7] += q
                k[8] += p * q
    return {m: tuple(k) for m, k in out.items()}


@dataclass(frozen=True)
class Quote:
    """One Tardis best bid/ask row as the replay serves it (update id = row number)."""

    update_id: int
    time_ms: int
    bid_price: str
    bid_qty: str
    ask_price: str
    ask_qty: str


def read_tardis_quotes(path: str) -> list[Quote]:
    """Tardis `exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,bid_price,
    bid_amount` (µs) rows; update ids 1, 2, ... in file order (what `ta-feed replay` gives)."""
    out = []
    with _open(path) as f:
        rd = csv.reader(f)
        header = next(rd)
        assert header[:3] == ["exchange", "symbol", "timestamp"], header
        for n, r in enumerate(rd, start=1):
            out.append(Quote(n, int(r[2]) // 1000, r[6], r[7], r[5], r[4]))
    return out
