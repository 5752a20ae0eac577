"""Independent re-implementation of pg_ta's feature rows (feature set 1), outside the database.

Written from the documented definitions (COMMENT ON TYPE ta.feature_row, docs/reference.md
"Feature rows"), not from the Rust: every window statistic is recomputed from scratch with
Python's math.fsum (correctly rounded sums) on the window's values, so a match with the
database proves the engine's rolling exact sums equal a fresh computation, bit for bit.

Number semantics: prices and volumes are Python floats parsed from the decimal text
(float(text) = PostgreSQL's numeric -> float8); formulas are evaluated in the documented order
of IEEE operations (x*x for squares, never ** which calls pow()); math.log is libm's log, as
the extension's.  RSI(14) and the MACD(12,26,9) histogram come from TA-Lib (the screener's
are TA-Lib's bit for bit).

Book features per minute come from `book_minute()` (ta.book_features' definition) over the
minute's book tickers, or from a frozen value.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

RET_LAGS = {"1m": 1, "5m": 5, "15m": 15, "1h": 60, "4h": 240, "1d": 1440}
RV_WINDOWS = {"5m": 5, "15m": 15, "1h": 60, "4h": 240, "8h": 480, "1d": 1440}
Z_WINDOW = 60
DAY = 1440
BASE = ([f"ret_{k}" for k in RET_LAGS] + [f"rv_{k}" for k in RV_WINDOWS]
        + ["rsi_14", "macd_hist", "bb_pct_b", "vwap_dist_1d", "vol_z_1d", "quote_vol_z_1d",
           "taker_buy_ratio", "imbalance_1m", "spread_bps_1m", "wmid_offset_bps_1m"])
Z_BASE = [c for c in BASE if c not in ("vol_z_1d", "quote_vol_z_1d")]
COLUMNS = BASE + [c + "_z" for c in Z_BASE]
MAX_ABS = 1e150

Value = Optional[float]


def _finite(x: float) -> Value:
    return x if math.isfinite(x) else None


def zscore(xs: Sequence[Value], squares: Sequence[float] | None = None) -> Value:
    """(x - mean) / sqrt(fsum(x^2)/n - mean^2) of the last value over all of xs; None when a
    value is missing, all are equal or the variance is <= 0.  squares: x*x of each (a speed-up
    for long windows; computed here when not given)."""
    if None in xs:
        return None
    lo, hi = min(xs), max(xs)
    if lo < -MAX_ABS or hi > MAX_ABS or lo == hi:
        return None
    x = xs[-1]
    n = float(len(xs))
    mean = math.fsum(xs) / n
    sq = squares if squares is not None else [v * v for v in xs]
    var = math.fsum(sq) / n - mean * mean
    if not var > 0:
        return None
    return _finite((x - mean) / math.sqrt(var))


def book_minute(quotes: Sequence[tuple], minute_end_us: int) -> dict | None:
    """ta.book_features of one minute: quotes = [(time_us, update_id, bid, bid_qty, ask,
    ask_qty)] (any order, floats); each stands until the next one, the last until
    minute_end_us.  Returns imbalance, spread_bps, weighted_mid_offset_bps, updates."""
    if not quotes:
        return None
    qs = sorted(quotes)
    s_imb = 0.0
    w_imb = 0
    s_spr = 0.0
    w_spr = 0
    for i, (t, _u, b, bq, a, aq) in enumerate(qs):
        end = qs[i + 1][0] if i + 1 < len(qs) else minute_end_us
        w = end - t
        mid = (a + b) / 2.0
        spread = (a - b) / mid * 1e4
        d = bq + aq
        if d != 0.0:
            w_imb += w
            s_imb += float(w) * ((bq - aq) / d)
        w_spr += w
        s_spr += float(w) * spread
    t, _u, b, bq, a, aq = qs[-1]
    mid = (a + b) / 2.0
    d = aq + bq
    wmid = (a * bq + b * aq) / d if d != 0.0 else None
    return {
        "imbalance": _finite(s_imb / float(w_imb)) if w_imb > 0 else None,
        "spread_bps": s_spr / float(w_spr),
        "wmid_offset_bps": None if wmid is None else _finite((wmid - mid) / mid * 1e4),
        "updates": len(qs),
    }


def features(close: Sequence[float], volume: Sequence[float], quote_volume: Sequence[float],
             taker_buy_volume: Sequence[float],
             book: Sequence[Optional[tuple]] | None = None,
             rsi: Sequence[float] | None = None, macd_hist: Sequence[float] | None = None
             ) -> dict[str, list[Value]]:
    """Every column of the feature rows of one instrument's candles (oldest first).
    book[i] = (imbalance, spread_bps, wmid_offset_bps) of candle i's minute or None; rsi /
    macd_hist = TA-Lib outputs (NaN in the lookback) or None to compute them with talib."""
    n = len(close)
    c = [float(x) for x in close]
    v = [float(x) for x in volume]
    q = [float(x) for x in quote_volume]
    tb = [float(x) for x in taker_buy_volume]
    if rsi is None or macd_hist is None:
        import talib
        arr = np.array(c, dtype=np.float64)
        rsi = talib.RSI(arr, timeperiod=14)
        macd_hist = talib.MACD(arr, fastperiod=12, slowperiod=26, signalperiod=9)[2]
    book = book if book is not None else [None] * n
    out: dict[str, list[Value]] = {k: [None] * n for k in COLUMNS}

    def lr(i: int) -> Value:
        if i < 1 or not (c[i] > 0 and c[i - 1] > 0):
            return None
        return math.log(c[i] / c[i - 1])

    r = [lr(i) for i in range(n)]
    r2 = [None if x is None or abs(x) > MAX_ABS else x * x for x in r]
    v2 = [x * x for x in v]
    q2 = [x * x for x in q]
    for i in range(n):
        for k, lag in RET_LAGS.items():
            if i >= lag and c[i] > 0 and c[i - lag] > 0:
                out[f"ret_{k}"][i] = _finite(math.log(c[i] / c[i - lag]))
        for k, w in RV_WINDOWS.items():
            if i >= w:
                win = r2[i - w + 1:i + 1]
                if None not in win:
                    out[f"rv_{k}"][i] = _finite(math.sqrt(math.fsum(win)))
        out["rsi_14"][i] = None if np.isnan(rsi[i]) else float(rsi[i])
        out["macd_hist"][i] = None if np.isnan(macd_hist[i]) else float(macd_hist[i])
        if i + 1 >= 20:
            w = c[i - 19:i + 1]
            mean = math.fsum(w) / 20.0
            sd = math.sqrt(math.fsum((x - mean) * (x - mean) for x in w) / 20.0)
            if min(w) != max(w) and sd > 0:
                lower = mean - 2.0 * sd
                upper = mean + 2.0 * sd
                out["bb_pct_b"][i] = _finite((c[i] - lower) / (upper - lower))
        if i + 1 >= DAY:
            lo = i - DAY + 1
            vw = v[lo:i + 1]
            qw = q[lo:i + 1]
            sv = math.fsum(vw)
            if sv > 0:
                vwap = math.fsum(qw) / sv
                if vwap > 0 and c[i] > 0:
                    out["vwap_dist_1d"][i] = _finite(math.log(c[i] / vwap))
            out["vol_z_1d"][i] = zscore(vw, v2[lo:i + 1])
            out["quote_vol_z_1d"][i] = zscore(qw, q2[lo:i + 1])
        if v[i] != 0.0:
            out["taker_buy_ratio"][i] = _finite(tb[i] / v[i])
        b = book[i]
        if b is not None:
            out["imbalance_1m"][i] = None if b[0] is None else _finite(b[0])
            out["spread_bps_1m"][i] = None if b[1] is None else _finite(b[1])
            out["wmid_offset_bps_1m"][i] = None if b[2] is None else _finite(b[2])
    for k in Z_BASE:
        col = out[k]
        z = out[k + "_z"]
        for i in range(Z_WINDOW - 1, n):
            z[i] = zscore(col[i - Z_WINDOW + 1:i + 1])
    return out


def bits(x: Value) -> Optional[int]:
    """The IEEE bits of a value (None stays None): equality of bits is bit-for-bit equality."""
    if x is None:
        return None
    return int(np.float64(x).view(np.int64))
