"""Independent re-implementation of the pg_ta screener presets, outside the database.

Written from DESIGN.md "Screener semantics" (the ten presets and their default thresholds) and
from the documented definitions of the six extra presets (descriptions in sql/005_rules.sql,
metric columns in the COMMENT ON TYPE market.screener_row of sql/004_metrics.sql); not from
the schema's SQL.

Semantics:
  * Windows slide over the last N *stored* candles of a symbol in open_time order
    (5m = 5, 15m = 15, 1h = 60, 4h = 240, 8h = 480, 1d = 1440).  Gaps in time are skipped.
    A window metric is undefined until the symbol has N candles, and a rule that uses it does
    not fire.
  * Window candle: open = open of its first candle, close = close of its last, high = max,
    low = min, vol = sum of quote_volume.  change_W = (close - open_W) / open_W * 100.
  * Number semantics, chosen to match the database bit for bit: prices are Python floats parsed
    from the decimal text (float(text) = PostgreSQL's numeric -> float8 cast); every price
    formula is evaluated left to right in float; volumes are exact Decimal sums; thresholds on
    prices/changes compare with float(threshold literal); volume terms are exact Decimal
    comparisons, written in multiplied form (`3 * vol_5m > vol_15m` for DESIGN's
    `vol_5m > vol_15m/3`; identical for positive volumes, and exact).
  * Extra metrics: change_1m = (close - open) / open * 100 of the candle; vol_1m = its quote
    volume; min_change_1m_3 / max_change_1m_3 = min / max over the last 3 candles of
    (close - open) / open, times 100; min_vol_1m_3 = min quote volume of the last 3 candles;
    volatility_10 = population standard deviation of the last 10 log returns
    ln(close_t / close_{t-1}) (needs 11 candles); range_8h = (high_8h - low_8h) / low_8h * 100.
  * Cooldown: an alert at candle t of (symbol, rule) is suppressed while the last *fired*
    alert of that (symbol, rule) is younger than the cooldown: last_fired > t - cooldown
    (candle open_time).  A suppressed candidate does not restart the cooldown.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
import operator
from decimal import Context, Decimal, Inexact, localcontext
from typing import Callable, Iterable, Sequence

import numpy as np

# Every Decimal operation here must be exact: the context traps Inexact, so a rounding
# anywhere raises instead of silently breaking the "exact volume" premise.
EXACT = Context(prec=120, traps=[Inexact])

WINDOWS = {"5m": 5, "15m": 15, "1h": 60, "4h": 240, "8h": 480, "1d": 1440}
COOLDOWN_MS = 5 * 60_000  # default per-rule cooldown (DESIGN.md "Dedup")


# --------------------------------------------------------------------------------------
# input

@dataclass
class Series:
    """The stored candles of one symbol, oldest first (one entry per stored candle)."""

    symbol: str
    open_time: np.ndarray          # int64 epoch ms
    open: np.ndarray               # float64 = float(text)
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    quote_volume: list             # exact Decimal

    @classmethod
    def from_rows(cls, symbol: str, rows: Sequence[tuple]) -> "Series":
        """rows: (open_time_ms, open, high, low, close, quote_volume) with prices as decimal
        text (or anything float() accepts) and quote_volume as Decimal (or its text)."""
        rows = sorted(rows, key=lambda r: r[0])
        return cls(
            symbol=symbol,
            open_time=np.array([r[0] for r in rows], dtype=np.int64),
            open=np.array([float(r[1]) for r in rows], dtype=np.float64),
            high=np.array([float(r[2]) for r in rows], dtype=np.float64),
            low=np.array([float(r[3]) for r in rows], dtype=np.float64),
            close=np.array([float(r[4]) for r in rows], dtype=np.float64),
            quote_volume=[r[5] if isinstance(r[5], Decimal) else Decimal(r[5]) for r in rows],
        )

    def __len__(self) -> int:
        return len(self.open_time)


# --------------------------------------------------------------------------------------
# metrics

def _first_of_window(a: np.ndarray, n: int) -> np.ndarray:
    """a[i - n + 1] at i (the first candle of the n-candle window ending at i); NaN before."""
    out = np.full(len(a), np.nan)
    if len(a) >= n:
        out[n - 1:] = a[: len(a) - n + 1]
    return out


def _rolling(a: np.ndarray, n: int, how) -> np.ndarray:
    out = np.full(len(a), np.nan)
    if len(a) >= n:
        out[n - 1:] = how(np.lib.stride_tricks.sliding_window_view(a, n), axis=1)
    return out


@dataclass
class Metrics:
    """Screener metrics of every candle of one Series (arrays indexed like the Series).
    Float metrics are NaN where undefined; volume metrics are object arrays of Decimal
    (None where undefined).  `full[n]` says where an n-candle window exists."""

    series: Series
    n: int
    full: dict = field(default_factory=dict)
    cols: dict = field(default_factory=dict)

    def __getattr__(self, name):
        try:
            return self.__dict__["cols"][name]
        except KeyError:
            raise AttributeError(name) from None


def compute_metrics(s: Series) -> Metrics:
    n = len(s)
    m = Metrics(series=s, n=n)
    idx = np.arange(n)
    for k in (1, 3, 5, 11, 15, 60, 240, 480, 1440):
        m.full[k] = idx >= k - 1
    c = m.cols
    c["price"] = s.close
    with np.errstate(divide="ignore", invalid="ignore"):
        c["change_1m"] = np.where(s.open != 0, (s.close - s.open) / s.open * 100, np.nan)
    qv = np.empty(n, dtype=object)
    qv[:] = s.quote_volume
    c["vol_1m"] = qv

    # exact running sums of quote volume: cum[i] = sum of quote_volume[0 .. i-1]
    with localcontext(EXACT):
        cum = [Decimal(0)] * (n + 1)
        for i, v in enumerate(s.quote_volume):
            cum[i + 1] = cum[i] + v
        for name, w in WINDOWS.items():
            open_w = _first_of_window(s.open, w)
            with np.errstate(divide="ignore", invalid="ignore"):
                c[f"open_{name}"] = open_w
                c[f"change_{name}"] = np.where(open_w != 0, (s.close - open_w) / open_w * 100, np.nan)
                high_w = _rolling(s.high, w, np.max)
                low_w = _rolling(s.low, w, np.min)
                c[f"high_{name}"] = high_w
                c[f"low_{name}"] = low_w
                c[f"range_{name}"] = np.where(low_w != 0, (high_w - low_w) / low_w * 100, np.nan)
            vol = np.full(n, None, dtype=object)
            for i in range(w - 1, n):
                vol[i] = cum[i + 1] - cum[i + 1 - w]
            c[f"vol_{name}"] = vol

        # the last 3 candles
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(s.open != 0, (s.close - s.open) / s.open, np.nan)
        r3 = np.full((n, 3), np.nan)
        if n >= 3:
            r3[2:] = np.lib.stride_tricks.sliding_window_view(r, 3)
        c["min_change_1m_3"] = np.where(m.full[3], r3.min(axis=1) * 100, np.nan)
        c["max_change_1m_3"] = np.where(m.full[3], r3.max(axis=1) * 100, np.nan)
        mv = np.full(n, None, dtype=object)
        for i in range(2, n):
            mv[i] = min(s.quote_volume[i - 2: i + 1])
        c["min_vol_1m_3"] = mv

    # volatility_10: population stddev of the 10 log returns ending at each candle
    lr = np.full(n, np.nan)
    if n >= 2:
        lr[1:] = np.log(s.close[1:] / s.close[:-1])
    vol10 = np.full(n, np.nan)
    if n >= 11:
        win = np.lib.stride_tricks.sliding_window_view(lr[1:], 10)  # windows ending at 10..n-1
        vol10[10:] = win.std(axis=1, ddof=0)
    c["volatility_10"] = vol10
    return m


# --------------------------------------------------------------------------------------
# rules

Term = Callable[["_View", dict], np.ndarray]


@dataclass
class Rule:
    """A preset: the windows (candle counts) it needs and its conjunction of terms.
    Terms are evaluated in order on the candles still alive (so exact Decimal terms only
    run where the cheap float terms already hold)."""

    name: str
    needs: tuple
    terms: list
    config: dict


class _View:
    """Metric columns restricted to the candle indices `i`."""

    def __init__(self, m: Metrics, i: np.ndarray):
        self._m, self._i = m, i

    def __getattr__(self, name):
        return getattr(self._m, name)[self._i]


def _d(x) -> Decimal:
    return Decimal(str(x))


def _big(bull: bool, w: str, change_min: float, chain: tuple, vol_min: dict, vol_factor: dict,
         needs: tuple) -> Rule:
    """big_bull_W / big_bear_W (DESIGN.md's table): change_W beyond ±change_min, change_1d
    inside ±15, each longer window of `chain` moved further the same way than the one before,
    quote volume of W above each `vol_min` and above 1/factor of each longer window in
    `vol_factor` (DESIGN's `vol_W > vol_X / f` written as `f * vol_W > vol_X`)."""
    beyond = operator.gt if bull else operator.lt
    lim, cap = (f"change_{w}_min", "change_1d_max") if bull else (f"change_{w}_max", "change_1d_min")
    cfg = {lim: change_min if bull else -change_min, cap: 15.0 if bull else -15.0}
    t = [lambda v, c: beyond(getattr(v, f"change_{w}"), c[lim]),
         lambda v, c: beyond(c[cap], v.change_1d)]
    t += [lambda v, c, a=a, b=b: beyond(getattr(v, f"change_{b}"), getattr(v, f"change_{a}"))
          for a, b in zip(chain, chain[1:])]
    cfg.update({k: _d(x) for k, x in {**vol_min, **vol_factor}.items()})
    t += [lambda v, c, k=k: getattr(v, k[:-4]) > c[k] for k in vol_min]
    t += [lambda v, c, k=k: c[k] * getattr(v, f"vol_{w}") > getattr(v, k[:-7]) for k in vol_factor]
    return Rule(f"big_{'bull' if bull else 'bear'}_{needs[0]}", needs, t, cfg)


def _big_60(bull: bool) -> Rule:
    return _big(bull, "1h", 1.6, ("1h", "8h", "1d"), {"vol_1h_min": 500000, "vol_8h_min": 5000000},
                {"vol_8h_factor": 6, "vol_1d_factor": 16}, (60, 480, 1440))


def _big_5(bull: bool) -> Rule:
    return _big(bull, "5m", 0.6, ("5m", "15m", "1h"), {"vol_5m_min": 100000, "vol_1h_min": 1000000},
                {"vol_15m_factor": 3, "vol_1h_factor": 6, "vol_8h_factor": 66}, (5, 15, 60, 480, 1440))


def _big_15(bull: bool) -> Rule:
    return _big(bull, "15m", 1.0, ("15m", "1h", "8h"), {"vol_15m_min": 400000, "vol_1h_min": 1000000},
                {"vol_1h_factor": 3, "vol_8h_factor": 26}, (15, 60, 480, 1440))


def _pioneer(bull: bool) -> Rule:
    if bull:
        cfg = {"change_5m_min": 1.0, "change_15m_min": 1.0}
        t = [lambda v, c: v.change_5m > c["change_5m_min"],
             lambda v, c: v.change_15m > c["change_15m_min"],
             lambda v, c: c["change_15m_factor"] * v.change_5m > v.change_15m]
    else:
        cfg = {"change_5m_max": -1.0, "change_15m_max": -1.0}
        t = [lambda v, c: v.change_5m < c["change_5m_max"],
             lambda v, c: v.change_15m < c["change_15m_max"],
             lambda v, c: c["change_15m_factor"] * v.change_5m < v.change_15m]
    cfg.update({"change_15m_factor": 3.0, "vol_15m_factor": _d(2)})
    t += [lambda v, c: c["vol_15m_factor"] * v.vol_5m > v.vol_15m]
    return Rule("pioneer_bull" if bull else "pioneer_bear", (5, 15), t, cfg)


def _hunter(bottom: bool) -> Rule:
    if bottom:
        cfg = {"change_1h_max": -0.7, "change_15m_max": -0.6, "change_5m_min": 0.5}
        t = [lambda v, c: v.change_1h < c["change_1h_max"],
             lambda v, c: v.change_15m < c["change_15m_max"],
             lambda v, c: v.change_5m > c["change_5m_min"]]
    else:
        cfg = {"change_1h_min": 0.7, "change_15m_min": 0.6, "change_5m_max": -0.5}
        t = [lambda v, c: v.change_1h > c["change_1h_min"],
             lambda v, c: v.change_15m > c["change_15m_min"],
             lambda v, c: v.change_5m < c["change_5m_max"]]
    cfg.update({"vol_15m_factor": _d(2), "vol_1h_factor": _d(8)})
    t += [lambda v, c: c["vol_15m_factor"] * v.vol_5m > v.vol_15m,   # vol_5m > vol_15m/2
          lambda v, c: c["vol_1h_factor"] * v.vol_5m > v.vol_1h]     # vol_5m > vol_1h/8
    return Rule("bottom_hunter" if bottom else "top_hunter", (5, 15, 60), t, cfg)


def _whale(bull: bool) -> Rule:
    # volume_spike: the candle's quote volume > volume_spike x the 1h average per minute
    # (vol_1h / 60), written 60 * vol_1m > volume_spike * vol_1h (exact);
    # price_support: close within this fraction of the 1h low (bull) / high (bear).
    cfg = {"volume_spike": _d("3.0"), "price_support": 0.02}
    if bull:
        t = [lambda v, c: v.change_1m > 0,
             lambda v, c: v.price - v.low_1h <= c["price_support"] * v.low_1h]
    else:
        t = [lambda v, c: v.change_1m < 0,
             lambda v, c: v.high_1h - v.price <= c["price_support"] * v.high_1h]
    t += [lambda v, c: 60 * v.vol_1m > c["volume_spike"] * v.vol_1h]
    return Rule("bull_whale" if bull else "bear_whale", (60,), t, cfg)


def _volume(bull: bool) -> Rule:
    # 3 consecutive green (red) candles, each with quote volume > volume_ratio x vol_1h / 60
    cfg = {"volume_ratio": _d("2.5")}
    t = [(lambda v, c: v.min_change_1m_3 > 0) if bull else (lambda v, c: v.max_change_1m_3 < 0),
         lambda v, c: 60 * v.min_vol_1m_3 > c["volume_ratio"] * v.vol_1h]
    return Rule("bull_volume" if bull else "bear_volume", (3, 60), t, cfg)


def _flat_1m() -> Rule:
    return Rule("flat_1m", (11,), [lambda v, c: v.volatility_10 < c["volatility_max"]],
                {"volatility_max": 0.001})


def _flat_8h() -> Rule:
    return Rule("flat_8h", (480,), [lambda v, c: v.range_8h < c["range_8h_max"]],
                {"range_8h_max": 2.0})


TEN_PRESETS = ["big_bull_60", "big_bear_60", "pioneer_bull", "pioneer_bear", "big_bull_5",
               "big_bear_5", "big_bull_15", "big_bear_15", "bottom_hunter", "top_hunter"]
EXTRA_PRESETS = ["bull_whale", "bear_whale", "bull_volume", "bear_volume", "flat_1m", "flat_8h"]
ALL_PRESETS = TEN_PRESETS + EXTRA_PRESETS

RULES: dict[str, Rule] = {r.name: r for r in [
    _big_60(True), _big_60(False), _pioneer(True), _pioneer(False), _big_5(True), _big_5(False),
    _big_15(True), _big_15(False), _hunter(True), _hunter(False), _whale(True), _whale(False),
    _volume(True), _volume(False), _flat_1m(), _flat_8h()]}


def fire_indices(m: Metrics, rule: Rule, config: dict | None = None,
                 at: np.ndarray | None = None) -> np.ndarray:
    """Indices of the candles of m where `rule` holds (every candle, or only the boolean mask
    `at`, e.g. the minutes that were evaluated live)."""
    cfg = dict(rule.config, **(config or {}))
    alive = np.ones(m.n, dtype=bool)
    for k in rule.needs:
        alive &= m.full[k]
    if at is not None:
        alive &= at
    i = np.nonzero(alive)[0]
    with localcontext(EXACT):
        for term in rule.terms:
            if len(i) == 0:
                break
            keep = np.asarray(term(_View(m, i), cfg), dtype=bool)
            i = i[keep]
    return i


def apply_cooldown(times_ms: Iterable[int], cooldown_ms: int = COOLDOWN_MS) -> list[int]:
    """The candidates (open_time ms, one (symbol, rule)) that fire under the cooldown."""
    fired, last = [], None
    for t in sorted(times_ms):
        if last is not None and last > t - cooldown_ms:
            continue
        fired.append(t)
        last = t
    return fired


def evaluate(series: Iterable[Series], rules: Sequence[str] = ALL_PRESETS, cooldown: bool = False,
             from_ms: int | None = None, to_ms: int | None = None,
             at: dict | None = None, metrics: dict | None = None) -> dict[str, set]:
    """{rule: {(symbol, open_time_ms)}} over all candles with open_time in [from_ms, to_ms]
    (windows reach back before from_ms).  With cooldown, the cooldown history starts empty at
    from_ms.  `at`: optional {symbol: bool mask} of the candles that are evaluated at all.
    `metrics`: optional {symbol: Metrics} cache."""
    out = {r: set() for r in rules}
    for s in series:
        m = metrics[s.symbol] if metrics and s.symbol in metrics else compute_metrics(s)
        window = np.ones(m.n, dtype=bool)
        if from_ms is not None:
            window &= s.open_time >= from_ms
        if to_ms is not None:
            window &= s.open_time <= to_ms
        if at is not None:
            window &= at.get(s.symbol, np.zeros(m.n, dtype=bool))
        for r in rules:
            t = [int(x) for x in s.open_time[fire_indices(m, RULES[r], at=window)]]
            if cooldown:
                t = apply_cooldown(t)
            out[r].update((s.symbol, x) for x in t)
    return out


def boundary_flat_1m(m: Metrics, eps: float = 1e-12, threshold: float = 0.001) -> np.ndarray:
    """Indices where volatility_10 is within eps of the flat_1m threshold (the database
    computes it from running sums, which may differ in the last bits)."""
    v = m.volatility_10
    with np.errstate(invalid="ignore"):
        return np.nonzero(np.abs(v - threshold) < eps)[0]


def ms_to_iso(ms: int) -> str:
    """Epoch ms as the alert payload's time text, e.g. 2021-05-19T13:05:00.000Z."""
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
