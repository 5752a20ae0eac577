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
