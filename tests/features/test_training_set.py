"""The training-set path (issue 17 item 6): examples/training_set.py on real data.

market.features_range into numpy through one binary COPY must give exactly the rows of
features_range (NULL -> NaN, every other value bit for bit, instruments and times right); the
label is the forward log return over the next h candles (checked against the candles); rows
without a label are dropped; the train/test split leaves an embargo of h minutes; the CLI runs.

Data: spot/klines12 BTCUSDT and ETHUSDT 2025-10-29 .. 2025-11-01 (4,320 minutes each).
Env: PG_TA_TEST_DSN (required), TA_FEED_BIN, PG_TA_SHARED_DATA.  About 10 s.
"""
from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from common import binance_data as bd
from common import features_db as fdb
from common import pg

psycopg = pytest.importorskip("psycopg")

DB = "pg_ta_training_set"
H = 15
EXAMPLE = os.path.join(bd.REPO, "examples", "training_set.py")


def _example():
    spec = importlib.util.spec_from_file_location("training_set", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_training_set_example():
    pg.server_dsn()
    if not fdb.have_shared():
        pytest.skip("PG_TA_SHARED_DATA not found")
    ts = _example()
    dsn = pg.fresh_database(DB)
    pg.migrate(DB)
    ok = False
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            kl = {}
            for s in ("BTCUSDT", "ETHUSDT"):
                kl[s] = bd.read_klines12(fdb.shared("spot", "klines12",
                                                    f"{s}-1m-2025-10-29_2025-11-01.csv.gz"))
                with conn.transaction():
                    conn.execute("SET LOCAL market.evaluate_alerts = off")
                    fdb.copy_rows(conn, "market.candles_1m", fdb.KLINE_COLS,
                                  fdb.kline_rows("spot", s, kl[s]))
            t_from = fdb.dt_ms(kl["BTCUSDT"][1500].open_time)
            t_to = fdb.dt_ms(kl["BTCUSDT"][-1].open_time)
            instruments, inst, times, X, cols = ts.fetch_features(conn, ["spot"], None, t_from, t_to)
            assert cols == fdb.FEATURE_COLS
            assert instruments == [("spot", "BTCUSDT"), ("spot", "ETHUSDT")]
            rng = fdb.select_features(conn, "SELECT * FROM market.features_range(ARRAY['spot'],"
                                            " NULL, %s, %s)", (t_from, t_to))
            got = {}
            for i in range(len(inst)):
                m, s = instruments[inst[i]]
                t = int(times[i].astype("datetime64[ms]").astype(np.int64))
                got[(m, s, t)] = tuple(None if math.isnan(x) else float(x) for x in X[i])
            want = {k: v[1:] for k, v in rng.items()}
            d = fdb.first_difference(got, want, fdb.FEATURE_COLS)
            print(f"\nnumpy: {X.shape[0]} rows x {X.shape[1]} columns = features_range "
                  f"(NULL -> NaN, bit for bit): {'yes' if d is None else d}")
            assert d is None and X.shape == (len(rng), len(fdb.FEATURE_COLS))
            # over 3 connections (time slices, each from its day checkpoint): the same arrays
            pi, pinst, ptimes, pX, pcols = ts.fetch_features_parallel(dsn, ["spot"], None,
                                                                      t_from, t_to, jobs=3)
            assert (pi, pcols) == (instruments, cols)
            assert np.array_equal(pinst, inst) and np.array_equal(ptimes, times)
            assert np.array_equal(pX.view(np.int64), X.view(np.int64))
            print(f"fetch_features_parallel, 3 slices: the same {pX.shape[0]} rows, bit for bit")

            X2, y, t2, i2, inst2, _ = ts.build(conn, ["spot"], None, t_from, t_to, H)
            # labels: ln(close[m + H] / close[m]) of the stored candles; the last H have none
            closes = {s: {k.open_time: (j, float(k.close)) for j, k in enumerate(kl[s])}
                      for s in kl}
            worst = 0.0
            for j in range(len(y)):
                s = inst2[i2[j]][1]
                t = int(t2[j].astype("datetime64[ms]").astype(np.int64))
                pos, c = closes[s][t]
                want_y = math.log(float(kl[s][pos + H].close) / c)
                worst = max(worst, abs(y[j] - want_y))
            assert worst < 1e-12, worst
            assert len(y) == len(rng) - 2 * H and not np.isnan(y).any()
            train, test = ts.split_with_embargo(t2, H)
            gap = (t2[test].min() - t2[train].max()) / np.timedelta64(1, "m")
            print(f"labelled {len(y)} rows (the last {H} per instrument dropped), max label error "
                  f"{worst:.1e}; train {train.sum()}, test {test.sum()}, embargo {gap:.0f} min")
            assert gap > H
        p = subprocess.run([sys.executable, EXAMPLE, "--dsn", dsn, "--horizon", str(H)],
                           capture_output=True, text=True, timeout=300)
        print(p.stdout.strip())
        assert p.returncode == 0, p.stderr[-2000:]
        # --jobs 2: the same labelled set, so the same fit and score
        rng_args = ["--from", t_from.isoformat(), "--to", t_to.isoformat()]
        outs = [subprocess.run([sys.executable, EXAMPLE, "--dsn", dsn, "--horizon", str(H),
                                "--jobs", j] + rng_args, capture_output=True, text=True,
                               timeout=300) for j in ("1", "2")]
        assert [o.returncode for o in outs] == [0, 0], outs[1].stderr[-2000:]
        assert outs[0].stdout == outs[1].stdout and "labelled rows" in outs[0].stdout
        p = subprocess.run([sys.executable, EXAMPLE, "--dsn", dsn, "--jobs", "2"],
                           capture_output=True, text=True, timeout=300)
        assert p.returncode != 0 and "needs finite t_from and t_to" in p.stderr
        ok = True
    finally:
        if ok:
            pg.drop_database(DB)
