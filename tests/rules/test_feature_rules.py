"""Features as rule variables (issue 17 item 5): rules over feature columns (and screener
columns) fire the same (symbol, rule, minute) set live, in market.backtest_rules and in an
independent Python evaluation (tests/common/features_ref.py + screener_ref.py), the equality
tests the presets have (tests/rules/test_rule_parity.py).

Data: spot/klines12 BTCUSDT and ETHUSDT 2025-10-29 .. 2025-11-01 (4,320 minutes each, the same
minutes; real quote and taker-buy volumes).  The first 3,720 minutes are bulk-loaded with
alerts off; the last LIVE (600) are written one minute (both symbols) per statement with
evaluation on, as ta-feed writes closed klines; every 7th minute is first written in a
transaction that rolls back.  Five custom rules over feature columns (z-scores, Bollinger %b,
taker-buy ratio, VWAP distance, realized volatility) with the default 5-minute cooldown:
  * market.alert_history (live) = market.backtest_rules over the live minutes (cooldown) =
    the Python evaluation of the same expressions with the documented cooldown;
  * market.backtest_rules without cooldown over the whole series = Python without cooldown;
  * the NOTIFY ta_features payloads received = market.features_range at those minutes, bit for
    bit, once per (symbol, minute) evaluated live.

Env: PG_TA_TEST_DSN (required), TA_FEED_BIN, PG_TA_SHARED_DATA.  About 30 s.
"""
from __future__ import annotations

import json
import importlib.util
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from common import binance_data as bd
from common import features_db as fdb
from common import features_ref as fref
from common import pg
from common import screener_ref as ref

psycopg = pytest.importorskip("psycopg")
pytest.importorskip("talib")

DB = "pg_ta_feature_rules"
EXAMPLE = os.path.join(bd.REPO, "examples", "live_features.py")
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
LIVE = int(os.environ.get("PG_TA_FEATURE_RULES_LIVE_MINUTES", "600"))

# name: (expression, config, Python predicate over (features dict, screener metrics, i))
RULES = {
    "feat_burst": ("ret_5m_z > $z AND vol_z_1d > $v", {"z": 2.5, "v": 1},
                   lambda f, m, i: _gt(f["ret_5m_z"][i], 2.5) and _gt(f["vol_z_1d"][i], 1)),
    "feat_oversold": ("rsi_14_z < $z AND bb_pct_b < $b", {"z": -2, "b": 0.05},
                      lambda f, m, i: _lt(f["rsi_14_z"][i], -2) and _lt(f["bb_pct_b"][i], 0.05)),
    "feat_taker": ("taker_buy_ratio > $r AND ret_1m > 0 AND quote_vol_z_1d > $q",
                   {"r": 0.7, "q": 1.5},
                   lambda f, m, i: (_gt(f["taker_buy_ratio"][i], 0.7) and _gt(f["ret_1m"][i], 0)
                                    and _gt(f["quote_vol_z_1d"][i], 1.5))),
    "feat_vol": ("rv_15m_z > $z", {"z": 3}, lambda f, m, i: _gt(f["rv_15m_z"][i], 3)),
    "feat_mix": ("vwap_dist_1d < $d AND ret_15m_z > $z AND change_15m > 0", {"d": 0, "z": 1.5},
                 lambda f, m, i: (_lt(f["vwap_dist_1d"][i], 0) and _gt(f["ret_15m_z"][i], 1.5)
                                  and not np.isnan(m.change_15m[i]) and m.change_15m[i] > 0)),
}


def _live_example():
    spec = importlib.util.spec_from_file_location("live_features", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _gt(x, t) -> bool:
    return x is not None and x > float(t)


def _lt(x, t) -> bool:
    return x is not None and x < float(t)


def python_fires(kl: dict, lo: int, hi: int, cooldown: bool) -> dict[str, set]:
    out = {r: set() for r in RULES}
    for s, rows in kl.items():
        f = fref.features([k.close for k in rows], [k.volume for k in rows],
                          [k.quote_volume for k in rows], [k.taker_buy_volume for k in rows])
        m = ref.compute_metrics(bd.klines_series(s, rows))
        for name, (_e, _c, pred) in RULES.items():
            times = [rows[i].open_time for i in range(len(rows))
                     if lo <= rows[i].open_time <= hi and pred(f, m, i)]
            if cooldown:
                times = ref.apply_cooldown(times)
            out[name] |= {(s, t) for t in times}
    return out


def test_feature_rules_live_backtest_python():
    pg.server_dsn()
    if not fdb.have_shared():
        pytest.skip("PG_TA_SHARED_DATA not found")
    t0 = time.monotonic()
    kl = {s: bd.read_klines12(fdb.shared("spot", "klines12", f"{s}-1m-2025-10-29_2025-11-01.csv.gz"))
          for s in SYMBOLS}
    minutes = sorted({k.open_time for rows in kl.values() for k in rows})
    live = minutes[-LIVE:]
    dsn = pg.fresh_database(DB)
    pg.migrate(DB)
    ok = False
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for name, (expr, cfg, _p) in RULES.items():
                conn.execute("INSERT INTO market.alert_rules (name, expression, config)"
                             " VALUES (%s, %s, %s)", (name, expr, json.dumps(cfg)))
            conn.execute("UPDATE market.alert_rules SET enabled = (kind = 'custom')")
            with conn.transaction():
                conn.execute("SET LOCAL market.evaluate_alerts = off")
                for s, rows in kl.items():
                    fdb.copy_rows(conn, "market.candles_1m", fdb.KLINE_COLS,
                                  fdb.kline_rows("spot", s, [k for k in rows if k.open_time < live[0]]))
            listener = psycopg.connect(dsn, autocommit=True)
            listener.execute('LISTEN "ta_features"')
            # the example model listener (examples/live_features.py), for its first 5
            # notifications
            example = subprocess.Popen(
                [sys.executable, EXAMPLE, "--dsn", dsn, "--count", "5", "--timeout", "60"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            assert example.stdout.readline().startswith("listening on ta_features (42 ")
            # forged notifications (any role may NOTIFY): the example logs and skips them
            forged = ["not json", '{"version": 1, "rows": [{"features": "!!"}]}',
                      '{"version": 1, "rows": [{"market": "spot", "symbol": "X",'
                      ' "open_time": "2024-01-01T00:00:00.000Z", "features": "AAAA"}]}']
            for f in forged:
                conn.execute("SELECT pg_notify('ta_features', %s)", (f,))
            by_min = {}
            for s, rows in kl.items():
                for k in rows:
                    if k.open_time >= live[0]:
                        by_min.setdefault(k.open_time, []).append((s, k))
            sql = ("INSERT INTO market.candles_1m (" + ", ".join(fdb.KLINE_COLS) + ") VALUES "
                   + ", ".join(["(%s, %s, %s, %s, %s::numeric, %s::numeric, %s::numeric,"
                                " %s::numeric, %s::numeric, %s::numeric, %s, %s::numeric,"
                                " %s::numeric)"] * len(SYMBOLS)))
            rollbacks = 0
            t1 = time.monotonic()
            for j, t in enumerate(live):
                params = [x for s, k in by_min[t] for x in fdb.kline_rows("spot", s, [k])[0]]
                if j % 7 == 3:
                    with conn.transaction():
                        conn.execute(sql, params)
                        raise psycopg.Rollback()
                    rollbacks += 1
                with conn.transaction():
                    conn.execute(sql, params)
            t_live = time.monotonic() - t1
            notes = {}
            dup = 0
            decoder = _live_example()
            for n in listener.notifies(timeout=2.0):
                if n.payload in forged:
                    continue
                rows = fdb.payload_rows(n.payload)
                for key, row in rows:
                    dup += key in notes
                    notes[key] = row
                # the example's numpy decoder reads the same keys and bits
                keys, X = decoder.decode(n.payload)
                assert [(m, s, fdb.ms(t)) for m, s, t in keys] == [k for k, _ in rows]
                assert X.view(np.int64).tolist() == [
                    [np.float64(np.nan if v is None else v).view(np.int64) for v in r]
                    for _, r in rows]
            listener.close()
            out, err = example.communicate(timeout=60)
            print(f"examples/live_features.py:\n{out}{err}", end="")
            assert example.returncode == 0 and len(out.splitlines()) == 5 and \
                all(" 2 rows; top ret_5m_z: " in x for x in out.splitlines()), out
            assert err.count("skipped a malformed ta_features notification") == 3, err

            hist = {r: set() for r in RULES}
            for r, s, ot in conn.execute("SELECT rule, symbol, open_time FROM market.alert_history"):
                hist[r].add((s, fdb.ms(ot)))
            bt = {r: set() for r in RULES}
            for r, s, ot in conn.execute(
                    "SELECT rule, symbol, open_time FROM market.backtest_rules(%s, %s, %s,"
                    " p_payload => false)", (list(RULES), fdb.dt_ms(live[0]), fdb.dt_ms(live[-1]))):
                bt[r].add((s, fdb.ms(ot)))
            bt_all = {r: set() for r in RULES}
            for r, s, ot in conn.execute(
                    "SELECT rule, symbol, open_time FROM market.backtest_rules(%s, '-infinity',"
                    " 'infinity', p_cooldown => false, p_payload => false)", (list(RULES),)):
                bt_all[r].add((s, fdb.ms(ot)))
            py_cd = python_fires(kl, live[0], live[-1], True)
            py_all = python_fires(kl, minutes[0], minutes[-1], False)

            print(f"\nlive: {len(live)} minutes x {len(SYMBOLS)} symbols in {t_live:.1f} s "
                  f"({rollbacks} first rolled back)")
            print(f"{'rule':<14} {'history':>7} {'backtest':>8} {'Python':>6} {'all (bt)':>8} "
                  f"{'all (Py)':>8}")
            failures = []
            for r in RULES:
                good = hist[r] == bt[r] == py_cd[r] and bt_all[r] == py_all[r]
                print(f"{r:<14} {len(hist[r]):>7} {len(bt[r]):>8} {len(py_cd[r]):>6} "
                      f"{len(bt_all[r]):>8} {len(py_all[r]):>8}  {'ok' if good else 'MISMATCH'}")
                if not good:
                    failures.append(f"{r}: history^backtest {sorted(hist[r] ^ bt[r])[:4]}, "
                                    f"history^Python {sorted(hist[r] ^ py_cd[r])[:4]}, "
                                    f"all: backtest^Python {sorted(bt_all[r] ^ py_all[r])[:4]}")
            assert sum(map(len, hist.values())) >= 5, "the feature rules should fire live"
            assert sum(map(len, py_all.values())) >= 50

            # the live feature rows sent on NOTIFY = features_range at those minutes
            rng = fdb.features_only(fdb.select_features(
                conn, "SELECT * FROM market.features_range(NULL, NULL, %s, %s)",
                (fdb.dt_ms(live[0]), fdb.dt_ms(live[-1]))))
            d = fdb.first_difference(notes, rng, fdb.FEATURE_COLS)
            print(f"NOTIFY ta_features: {len(notes)} rows ({dup} duplicated) = "
                  f"features_range: {'yes' if d is None else d}")
            assert dup == 0 and len(notes) == len(live) * len(SYMBOLS)
            assert d is None, f"live feature rows differ from features_range: {d}"
            assert not failures, "\n".join(failures)
        print(f"[time] feature rules test: {time.monotonic() - t0:.1f} s")
        ok = True
    finally:
        if ok:
            pg.drop_database(DB)
