"""Rule parity (issue 4 item 6): the database fires exactly the (symbol, rule, minute) set that
an independent Python re-implementation of the presets fires.

The reference (tests/common/screener_ref.py) is written from DESIGN.md "Screener semantics" and
the documented definitions of the extra presets, not from the schema's SQL; see its module
docstring for the exact number semantics (float prices, exact Decimal volumes).

Data (from PG_TA_SHARED_DATA, default <repo>/../shared/data/binance; never copied):
  1. spot/ohlcv, 13 USDT pairs of April 2023: the 8 files *-1m-2023-04-01_2023-05-01 and
     ADA/BTC/DOGE/ETH/SOL from *-1m-2023-03-16_2023-05-01, all restricted to the same window
     [min start, max end] of the 8 files (2023-04-01 21:03 .. 2023-05-01 21:02 UTC; 43,199
     or 43,200 minutes per symbol, no gaps).
     These files have no quote volume.  Both sides derive it the same way:
         quote_volume = volume x close, the exact decimal product
     (Python Decimal with an exact context on the reference side; the same text is stored in
     market.candles_1m.quote_volume and the test checks in SQL numeric that
     quote_volume = volume * close holds for every stored row).  The other columns:
     close_time = open_time + 59.999 s, trades = 0, taker volumes = 0.
     Loaded with one COPY statement per symbol into market.candles_1m under
     SET LOCAL market.evaluate_alerts = off (the schema's triggers build the screener heads
     and day checkpoints).
  2. spot/klines12/BTCUSDT-1m-*.csv.gz (real quote volumes), each file imported with
     `ta-feed import FILE` into its own fresh database (one of them has a real 284-minute
     outage and a truncated kline: windows count stored candles, so the gap is skipped).

Database side: all 16 presets in one market.backtest_rules(rules, from, to, p_cooldown => false,
p_payload => false) call (every firing candle) and one with p_cooldown => true (each rule's
5-minute cooldown); the live slice checks market.backtest (one rule, with payloads).  Python side:
the same rule with no cooldown, and with the documented cooldown (suppressed while the last
*fired* alert of (symbol, rule) is younger than 5 minutes, in candle open_time; history starts
empty at `from`).  The ten DESIGN.md presets must match exactly; so must the six extras, except
flat_1m candidates whose volatility_10 is within 1e-12 of its 0.001 threshold (the database
computes it from running sums, the reference directly): those are excluded and counted.

3. The live path on a slice: 3 symbols bulk-loaded except the last LIVE_MINUTES (600) minutes,
   which are then inserted one minute (all symbols) per statement and transaction with
   evaluation on, as the feed does.  market.alert_history must equal market.backtest with
   cooldown over the slice and the Python reference with cooldown started at the slice start
   (live evaluation happens only for those minutes).  Every 5th minute is first written in a
   transaction that rolls back (its alerts and NOTIFYs must vanish); the NOTIFYs received by a
   LISTEN connection must equal alert_history (once each, same payloads); the second half
   alternates market.screener_cache off/on every 10 minutes (engine cache vs a reload from a
   checkpoint at every minute); the screener row the live path evaluated at each minute must
   equal market.screener_range's (the set-based path from day checkpoints), and the heads must
   survive market.rebuild_screener_state().

Runtime (2 cores): printed per phase ([time] lines); the two backtest_rules passes run the
screener engine once per instrument each.

Run:  PG_TA_TEST_DSN=postgresql://postgres@127.0.0.1:5443/postgres \
      .venv/bin/python -m pytest tests/rules -q -s
"""
from __future__ import annotations

import io
import json
import os
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import numpy as np
import pytest

from common import binance_data as bd
from common import pg
from common import screener_ref as ref

psycopg = pytest.importorskip("psycopg")

DB = "pg_ta_rules"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
FLAT_EPS = 1e-12
LIVE_SYMBOLS = ["BTCUSDT", "DOGEUSDT", "SOLUSDT"]
LIVE_MINUTES = int(os.environ.get("PG_TA_RULES_LIVE_MINUTES", "600"))
TIMINGS: list = []


def _ms(dt: datetime) -> int:
    return (dt - EPOCH) // timedelta(milliseconds=1)


def _dt(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=int(ms))


@pytest.fixture(scope="module", autouse=True)
def _need_data():
    pg.server_dsn()
    d = bd.shared_data_dir()
    if not os.path.isdir(d):
        pytest.skip(f"shared data not found at {d}: the rule parity suite needs the recorded "
                    "Binance files (set PG_TA_SHARED_DATA)")
    yield
    print("\n[time] rules suite steps:")
    for label, dt in TIMINGS:
        print(f"  {label:<60} {dt:7.1f} s")


# --------------------------------------------------------------------------------------
# data

def ohlcv_window() -> tuple[dict[str, list], int, int]:
    files = bd.ohlcv_files_2023_04()
    assert len(files) == 13, sorted(files)
    data = {s: bd.read_ohlcv(f) for s, f in files.items()}
    eight = [s for s, f in files.items() if "2023-04-01_2023-05-01" in f]
    assert len(eight) == 8, eight
    lo = min(data[s][0][0] for s in eight)
    hi = max(data[s][-1][0] for s in eight)
    return {s: [r for r in rows if lo <= r[0] <= hi] for s, rows in data.items()}, lo, hi


def copy_ohlcv(conn, symbol: str, rows: list) -> None:
    """One COPY statement into market.candles_1m, alerts off, in its own transaction."""
    buf = io.StringIO()
    for (t, o, h, l, c, v) in rows:
        qv = format(bd.derived_quote_volume(v, c), "f")
        ot = _dt(t).isoformat()
        ct = _dt(t + 59_999).isoformat()
        buf.write(f"{symbol}\t{ot}\t{ct}\t{o}\t{h}\t{l}\t{c}\t{v}\t{qv}\t0\t0\t0\n")
    with conn.transaction():
        conn.execute("SET LOCAL market.evaluate_alerts = off")
        with conn.cursor().copy(
                "COPY market.candles_1m (symbol, open_time, close_time, open, high, low, close,"
                " volume, quote_volume, trades, taker_buy_volume, taker_buy_quote_volume)"
                " FROM STDIN") as cp:
            cp.write(buf.getvalue())


# --------------------------------------------------------------------------------------
# database side

def db_backtest(conn, rule: str, lo: int, hi: int, cooldown: bool) -> set:
    if cooldown:  # the defaults: the rule's own config and cooldown
        rows = conn.execute("SELECT symbol, open_time FROM market.backtest(%s, %s, %s)",
                            (rule, _dt(lo), _dt(hi))).fetchall()
    else:
        rows = conn.execute(
            "SELECT symbol, open_time FROM market.backtest(%s, %s, %s, NULL, NULL, false)",
            (rule, _dt(lo), _dt(hi))).fetchall()
    out = {(s, _ms(t)) for s, t in rows}
    assert len(out) == len(rows), f"{rule}: backtest returned duplicate (symbol, minute) rows"
    return out


def db_all(conn, lo: int, hi: int, label: str) -> tuple[dict, dict]:
    """Every preset through one market.backtest_rules call (one screener-engine pass per
    instrument evaluates all 16 rules), without and with cooldown; payloads are not built
    (p_payload => false): only which candles fire is compared here."""
    rules = list(ref.ALL_PRESETS)
    out = []
    t0 = time.monotonic()
    for cooldown in (False, True):
        t1 = time.monotonic()
        rows = conn.execute(
            "SELECT rule, symbol, open_time FROM market.backtest_rules(%s, %s, %s,"
            " p_cooldown => %s, p_payload => false)",
            (rules, _dt(lo), _dt(hi), cooldown)).fetchall()
        got = {r: set() for r in rules}
        for r, s, t in rows:
            got[r].add((s, _ms(t)))
        assert sum(map(len, got.values())) == len(rows), \
            f"{label}: backtest_rules returned duplicate (rule, symbol, minute) rows"
        out.append(got)
        print(f"[time] {label}: backtest_rules of 16 rules, cooldown={cooldown}: "
              f"{time.monotonic() - t1:.1f} s, {len(rows)} alerts")
    TIMINGS.append((f"{label}: 16 rules x 2 backtest_rules passes", time.monotonic() - t0))
    return out[0], out[1]


# --------------------------------------------------------------------------------------
# comparison

def compare(label: str, series: list, metrics: dict, lo: int, hi: int,
            db_nocd: dict, db_cd: dict, conn) -> list[str]:
    """Returns the list of failures (empty = parity); prints the summary tables."""
    py_nocd = ref.evaluate(series, cooldown=False, from_ms=lo, to_ms=hi, metrics=metrics)
    py_cd = ref.evaluate(series, cooldown=True, from_ms=lo, to_ms=hi, metrics=metrics)

    # flat_1m boundary candidates (|volatility_10 - 0.001| < 1e-12)
    boundary = set()
    for s in series:
        m = metrics[s.symbol]
        i = ref.boundary_flat_1m(m, FLAT_EPS)
        boundary |= {(s.symbol, int(s.open_time[k])) for k in i if lo <= s.open_time[k] <= hi}

    failures = []
    print(f"\n=== rule parity: {label} ===")
    print(f"{'rule':<14} {'DB':>7} {'Python':>7} {'DB cd':>7} {'Py cd':>7}  result")
    for r in ref.ALL_PRESETS:
        d, p, dc, pc = db_nocd[r], py_nocd[r], db_cd[r], py_cd[r]
        note = ""
        if r == "flat_1m" and boundary:
            d, p = d - boundary, p - boundary
            note = f" ({len(boundary)} boundary candidates excluded; cooldown comparison skipped)"
            dc = pc = set()
        ok = d == p and dc == pc
        print(f"{r:<14} {len(db_nocd[r]):>7} {len(py_nocd[r]):>7} {len(db_cd[r]):>7} "
              f"{len(py_cd[r]):>7}  {'ok' if ok else 'MISMATCH'}{note}")
        if not ok:
            failures.append(describe_mismatch(label, r, d, p, dc, pc, metrics, conn))
    print(f"flat_1m boundary cases (|volatility_10 - 0.001| < {FLAT_EPS}): {len(boundary)}")

    # per rule and symbol (no cooldown, DB); '*' marks cells where Python differs
    syms = [s.symbol for s in series]
    if len(syms) > 1:
        short = [s.replace("USDT", "") for s in syms]
        print(f"\nper rule and symbol, DB without cooldown ('*' = Python differs):")
        print(f"{'rule':<14}" + "".join(f"{s:>8}" for s in short))
        for r in ref.ALL_PRESETS:
            cd_ = Counter(s for s, _ in db_nocd[r])
            cp_ = Counter(s for s, _ in py_nocd[r])
            print(f"{r:<14}" + "".join(
                f"{cd_[s]:>7}{'*' if cd_[s] != cp_[s] else ' '}" for s in syms))
    return failures


def describe_mismatch(label, rule, d, p, dc, pc, metrics, conn) -> str:
    lines = [f"{label}: {rule}: DB-only {len(d - p)}, Python-only {len(p - d)} (no cooldown); "
             f"with cooldown DB-only {len(dc - pc)}, Python-only {len(pc - dc)}"]
    examples = sorted((d - p) | (p - d))[:6] or sorted((dc - pc) | (pc - dc))[:6]
    cols = ["price", "change_1m", "change_5m", "change_15m", "change_1h", "change_8h",
            "change_1d", "vol_1m", "vol_5m", "vol_15m", "vol_1h", "vol_8h", "vol_1d",
            "low_1h", "high_1h", "range_8h", "min_change_1m_3", "max_change_1m_3",
            "min_vol_1m_3", "volatility_10"]
    for sym, t in examples:
        side = "DB-only" if (sym, t) in (d | dc) else "Python-only"
        m = metrics[sym]
        k = int(np.searchsorted(m.series.open_time, t))
        row = conn.execute(
            "SELECT row_to_json(m)::text FROM market.screener_range(%s, %s, ARRAY[%s]) m",
            (_dt(t), _dt(t), sym)).fetchone()
        dbv = json.loads(row[0], parse_float=Decimal) if row else {}
        parts = []
        for c in cols:
            pv, dv = getattr(m, c)[k], dbv.get(c)
            if isinstance(pv, float) and np.isnan(pv):
                pv = None
            if isinstance(pv, float) and dv is not None:
                dv = float(dv)
            parts.append(f"{c}={pv!s}" + ("" if pv == dv else f" (db {dv!s})"))
        lines.append(f"  {side} {sym} {ref.ms_to_iso(t)}: " + ", ".join(parts))
    msg = "\n".join(lines)
    print(msg)
    return msg


# --------------------------------------------------------------------------------------
# 1. April 2023, 13 symbols

def test_ohlcv_13_symbols_april_2023():
    t_all = time.monotonic()
    data, lo, hi = ohlcv_window()
    print(f"\nwindow {ref.ms_to_iso(lo)} .. {ref.ms_to_iso(hi)}; rows per symbol: "
          + ", ".join(f"{s}={len(r)}" for s, r in sorted(data.items())))
    with pg.timed("ohlcv: fresh database + migrate", TIMINGS):
        dsn = pg.fresh_database(DB)
        pg.migrate(DB)
    with psycopg.connect(dsn, autocommit=True) as conn:
        with pg.timed("ohlcv: COPY 13 symbols (screener head + checkpoints by triggers)", TIMINGS):
            for s, rows in sorted(data.items()):
                copy_ohlcv(conn, s, rows)
        n, bad, heads, checkpoints, days, alerts = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE quote_volume <> volume * close),"
            " (SELECT count(*) FROM market.screener_state),"
            " (SELECT count(*) FROM market.screener_checkpoints),"
            " count(DISTINCT (symbol, date_bin('1 day', open_time, '2000-01-01 00:00+00'))),"
            " (SELECT count(*) FROM market.alert_history) FROM market.candles_1m").fetchone()
        assert n == sum(len(r) for r in data.values())
        assert bad == 0, f"{bad} rows where quote_volume <> volume * close in SQL numeric"
        # bounded derived state: a head per instrument, a checkpoint per instrument-day
        assert (heads, checkpoints) == (len(data), days), (heads, checkpoints, days)
        assert alerts == 0, "bulk load with evaluate_alerts = off wrote alerts"

        with pg.timed("ohlcv: Python reference metrics", TIMINGS):
            series = [bd.ohlcv_series(s, rows) for s, rows in sorted(data.items())]
            metrics = {s.symbol: ref.compute_metrics(s) for s in series}
        db_nocd, db_cd = db_all(conn, lo, hi, "ohlcv 13 symbols x 30 days")
        failures = compare("ohlcv 2023-04, 13 symbols", series, metrics, lo, hi,
                           db_nocd, db_cd, conn)
    pg.drop_database(DB)
    print(f"[time] ohlcv test total: {time.monotonic() - t_all:.1f} s")
    assert not failures, "\n".join(failures)


# --------------------------------------------------------------------------------------
# 2. klines12 BTCUSDT files, one database each

def _klines_files():
    return bd.klines12_btc_files() or [None]


@pytest.mark.parametrize("path", _klines_files(),
                         ids=lambda p: os.path.basename(p).replace(".csv.gz", "") if p else "none")
def test_klines12_btcusdt(path):
    if path is None:
        pytest.skip("no spot/klines12/BTCUSDT-1m-*.csv.gz under the shared data")
    kl = bd.read_klines12(path)
    lo, hi = kl[0].open_time, kl[-1].open_time
    label = os.path.basename(path).replace(".csv.gz", "")
    pg.fresh_database(DB)
    pg.migrate(DB)
    with pg.timed(f"{label}: ta-feed import", TIMINGS):
        pg.ta_feed("import", path, dbname=DB)
    with psycopg.connect(pg.dsn_for(DB), autocommit=True) as conn:
        n, alerts = conn.execute("SELECT count(*), (SELECT count(*) FROM market.alert_history)"
                                 " FROM market.candles_1m").fetchone()
        assert n == len(kl), f"{label}: {n} stored candles for {len(kl)} file rows"
        assert alerts == 0, "ta-feed import wrote alerts"
        gaps = sum(1 for a, b in zip(kl, kl[1:]) if b.open_time - a.open_time != 60_000)
        print(f"\n{label}: {len(kl)} candles, {gaps} gap(s) in time "
              f"({ref.ms_to_iso(lo)} .. {ref.ms_to_iso(hi)})")
        series = [bd.klines_series("BTCUSDT", kl)]
        metrics = {"BTCUSDT": ref.compute_metrics(series[0])}
        db_nocd, db_cd = db_all(conn, lo, hi, label)
        failures = compare(label, series, metrics, lo, hi, db_nocd, db_cd, conn)
    pg.drop_database(DB)
    assert not failures, "\n".join(failures)


# --------------------------------------------------------------------------------------
# 3. the live path on a slice

def test_live_path_slice():
    data, lo, hi = ohlcv_window()
    data = {s: data[s] for s in LIVE_SYMBOLS}
    minutes = sorted({r[0] for rows in data.values() for r in rows})
    live = minutes[-LIVE_MINUTES:]
    slice_lo, slice_hi = live[0], live[-1]
    dsn = pg.fresh_database(DB)
    pg.migrate(DB)
    with psycopg.connect(dsn, autocommit=True) as conn:
        with pg.timed(f"live slice: bulk COPY of {len(LIVE_SYMBOLS)} symbols", TIMINGS):
            for s, rows in data.items():
                copy_ohlcv(conn, s, [r for r in rows if r[0] < slice_lo])
        by_minute = {}
        for s, rows in data.items():
            for r in rows:
                if r[0] >= slice_lo:
                    by_minute.setdefault(r[0], []).append((s, r))
        listener = psycopg.connect(dsn, autocommit=True)
        channel = listener.execute("SELECT market.alert_channel()").fetchone()[0]
        listener.execute(f'LISTEN "{channel}"')
        t0 = time.monotonic()
        lookups = rollbacks = 0
        heads = {}   # the screener rows the live path evaluated, minute by minute
        for j, t in enumerate(live):
            # The schema serves the live append from a per-session engine cache and reloads it
            # from a checkpoint when it is stale (market.screener_cache = off forces a reload
            # at every minute).  The second half of
            # the slice alternates the two every 10 minutes, so both paths and the cache's
            # invalidation are exercised.
            lookup = j >= len(live) // 2 and (j // 10) % 2 == 0
            lookups += lookup
            params = []
            for s, (tt, o, h, l, c, v) in by_minute[t]:
                qv = format(bd.derived_quote_volume(v, c), "f")
                params += [s, _dt(tt), _dt(tt + 59_999), o, h, l, c, v, qv]
            values = ", ".join(["(%s, %s, %s, %s::numeric, %s::numeric, %s::numeric, %s::numeric,"
                                " %s::numeric, %s::numeric, 0, 0, 0)"] * len(by_minute[t]))
            insert = ("INSERT INTO market.candles_1m (symbol, open_time, close_time, open, high,"
                      " low, close, volume, quote_volume, trades, taker_buy_volume,"
                      " taker_buy_quote_volume) VALUES " + values)
            if j % 5 == 2:
                # Every 5th minute is first written in a transaction that rolls back: its
                # alerts must not exist and its NOTIFYs must not be delivered (DESIGN: "an
                # alert exists only if its candle does"), and the state/cache must recover.
                with conn.transaction():
                    conn.execute(insert, params)
                    raise psycopg.Rollback()
                rollbacks += 1
            with conn.transaction():  # one minute, all symbols, one statement, alerts on
                if lookup:
                    conn.execute("SET LOCAL market.screener_cache = off")
                conn.execute(insert, params)
            for sym, ot, row in conn.execute("SELECT symbol, open_time, row_to_json(s)::text"
                                             " FROM market.screener s"):
                heads[(sym, ot)] = row
        dt = time.monotonic() - t0
        TIMINGS.append((f"live slice: {len(live)} minutes x {len(LIVE_SYMBOLS)} symbols, one "
                        "statement per minute", dt))
        print(f"\nlive slice {ref.ms_to_iso(slice_lo)} .. {ref.ms_to_iso(slice_hi)}: "
              f"{len(live)} minutes in {dt:.1f} s ({len(live) / dt:.0f} min/s; {lookups} of them "
              f"with market.screener_cache = off; {rollbacks} first written and rolled back)")
        notified = Counter()
        payloads = {}
        for n in listener.notifies(timeout=2.0):
            p = json.loads(n.payload, parse_float=Decimal)
            key = (p["symbol"], p["rule"], p["open_time"])
            notified[key] += 1
            payloads[key] = p
        listener.close()
        hist_payloads = {
            (s, r, ref.ms_to_iso(_ms(t))): json.loads(p, parse_float=Decimal)
            for s, r, t, p in conn.execute(
                "SELECT symbol, rule, open_time, payload::text FROM market.alert_history")}
        dup = [k for k, c in notified.items() if c > 1]
        print(f"NOTIFYs received: {sum(notified.values())} ({len(dup)} duplicated), "
              f"alert_history rows: {len(hist_payloads)}")

        hist = {}
        for s, r, t in conn.execute("SELECT symbol, rule, open_time FROM market.alert_history"):
            hist.setdefault(r, set()).add((s, _ms(t)))
        retained = conn.execute("SELECT alert_history_retention >= interval '48 hours'"
                                " FROM market.settings").fetchone()[0]
        assert retained, "alert_history retention shorter than the slice"
        series = [bd.ohlcv_series(s, rows) for s, rows in data.items()]
        metrics = {s.symbol: ref.compute_metrics(s) for s in series}
        py_cd = ref.evaluate(series, cooldown=True, from_ms=slice_lo, to_ms=slice_hi,
                             metrics=metrics)
        failures = []
        print(f"{'rule':<14} {'alert_history':>13} {'backtest cd':>11} {'Python cd':>9}")
        for r in ref.ALL_PRESETS:
            bt = db_backtest(conn, r, slice_lo, slice_hi, True)
            h = hist.get(r, set())
            ok = h == bt == py_cd[r]
            print(f"{r:<14} {len(h):>13} {len(bt):>11} {len(py_cd[r]):>9}  "
                  f"{'ok' if ok else 'MISMATCH'}")
            if not ok:
                failures.append(f"live slice {r}: history-only {sorted(h - bt)[:5]}, "
                                f"backtest-only {sorted(bt - h)[:5]}, "
                                f"Python-only {sorted(py_cd[r] - h)[:5]}, "
                                f"not in Python {sorted(h - py_cd[r])[:5]}")
        total = sum(len(v) for v in hist.values())
        print(f"alerts in alert_history: {total}")
        if dup or payloads != hist_payloads:
            failures.append(f"NOTIFY vs alert_history: duplicated {dup[:5]}, notified only "
                            f"{sorted(payloads.keys() - hist_payloads.keys())[:5]}, history only "
                            f"{sorted(hist_payloads.keys() - payloads.keys())[:5]}, payloads differ "
                            f"{[k for k in payloads.keys() & hist_payloads.keys() if payloads[k] != hist_payloads[k]][:5]}")

        # the live path (engine cache, reloads) must give, at every live minute, exactly the
        # row the set-based path computes from checkpoints (market.screener_range)
        q = ("SELECT m.symbol, m.open_time, row_to_json(m)::text"
             " FROM market.screener_range(%s, %s) m ORDER BY 1, 2")
        ranged = {(a, b): c for a, b, c in conn.execute(q, (_dt(slice_lo), _dt(slice_hi)))}
        diff = [k for k in heads if ranged.get(k) != heads[k]]
        print(f"screener rows of the {len(heads)} live-evaluated candles vs screener_range: "
              f"{len(diff)} differ")
        if len(heads) != sum(len(by_minute[t]) for t in live) or diff:
            failures.append(f"live screener rows differ from screener_range at {diff[:5]}")
        # and the heads survive a rebuild
        before = conn.execute("SELECT \"row\"::text, chain::text FROM market.screener_state"
                              " ORDER BY market, symbol").fetchall()
        conn.execute("SELECT market.rebuild_screener_state()")
        after = conn.execute("SELECT \"row\"::text, chain::text FROM market.screener_state"
                             " ORDER BY market, symbol").fetchall()
        if before != after:
            failures.append("screener heads differ after market.rebuild_screener_state()")
    pg.drop_database(DB)
    assert not failures, "\n".join(failures)
