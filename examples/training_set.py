#!/usr/bin/env python3
"""Build a labelled training set from pg_ta feature rows, with no look-ahead.

    python3 examples/training_set.py --dsn postgresql://postgres@127.0.0.1:5433/postgres \
        [--market spot] [--symbols BTCUSDT,ETHUSDT] [--from 2025-10-30] [--to 2025-11-01] \
        [--horizon 15] [--out training.npz]

What it does
  1. Feature rows come from market.features_range(markets, symbols, from, to): the row of
     minute m uses only candles with open_time <= m and book updates before m + 1 minute (the
     database proves it: tests/features/test_point_in_time.py), and equals the row the live
     path sent at m (NOTIFY ta_features) bit for bit.
  2. They travel as one binary COPY straight into a numpy array (`fetch_features` below, over
     market.feature_vectors: the same rows, the columns packed as doubles): no Python object
     per value.  NULL (warm-up, missing inputs) becomes NaN on the numpy side
     only; the database never stores NaN.  A long range of few instruments can be fetched as
     time slices over several connections (`fetch_features_parallel`, `--jobs`): each slice
     starts from a day checkpoint, so the rows are the same bits.
  3. The label of minute m is the forward log return ln(close[m + h] / close[m]) over the next
     h stored candles of the same instrument: it starts where the features end (close of m),
     so no feature row sees any of its label's candles.  Rows whose label is unknown (the last
     h candles) are dropped, never filled.
  4. A time-ordered split with an embargo: the test part starts h candles after the training
     part ends, so no training label overlaps a test feature window's future (purging, López de
     Prado, Advances in Financial Machine Learning, 2018, ch. 7).
  5. A least-squares fit (numpy only) on the training part, scored on the test part: a
     smoke test of the pipeline, not a strategy.

Why binary COPY and not Parquet: the numpy array is what models take; binary COPY of fixed-width
rows reads into it as a strided view (one copy, no per-value objects) using psycopg,
which every Python user of pg_ta already has.  Parquet would need arrow/parquet crates in ta-feed
(minutes of extra compile time on every CI run) for a file format that pyarrow can write from
this array in one call (`pyarrow.Table.from_arrays(...)`, if you need a file).
"""
from __future__ import annotations

import argparse
import sys
from datetime import datetime, timedelta, timezone

import numpy as np

PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in µs since 1970 (binary timestamptz origin)


def feature_columns(conn) -> list[str]:
    """The feature columns of ta.feature_row, in order (the set of ta.feature_version())."""
    rows = conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = 'ta.feature_row'::regclass"
        " AND attnum > 4 AND NOT attisdropped ORDER BY attnum").fetchall()
    return [r[0] for r in rows]


def fetch_features(conn, markets=None, symbols=None, t_from="-infinity", t_to="infinity",
                   columns: list[str] | None = None):
    """market.features_range(...) as numpy arrays: (instruments, inst, open_time, X, names).

    instruments: [(market, symbol)] in key order; inst: int64 index into it per row;
    open_time: datetime64[us] per row; X: float64 (rows, columns) with NaN for NULL, the
    columns of `columns` (default: all, in ta.feature_row order).
    One binary COPY of market.feature_vectors (the same rows with the feature columns packed
    as 336 bytes of little-endian doubles, NULL as NaN): every row has the same size, so the
    whole result is read as strided numpy views, with one copy."""
    names = feature_columns(conn)
    cols = columns or names
    pick = [names.index(c) for c in cols]  # ValueError for an unknown column
    instruments = [tuple(r) for r in conn.execute(
        "SELECT market, symbol FROM market.screener_state WHERE (chain).candles IS NOT NULL"
        " AND (%(m)s::text[] IS NULL OR market = ANY (%(m)s)) AND (%(s)s::text[] IS NULL OR"
        " symbol = ANY (%(s)s)) ORDER BY 1, 2", {"m": markets, "s": symbols}).fetchall()]
    # the instrument's position in `instruments` (same order: market, symbol)
    query = ("SELECT i.n, v.open_time, v.features"
             " FROM market.feature_vectors(%(m)s, %(s)s, %(f)s, %(t)s) v"
             " JOIN (SELECT market, symbol, (row_number() OVER (ORDER BY market, symbol) - 1)::int8 AS n"
             "       FROM market.screener_state WHERE (chain).candles IS NOT NULL"
             "         AND (%(m)s::text[] IS NULL OR market = ANY (%(m)s))"
             "         AND (%(s)s::text[] IS NULL OR symbol = ANY (%(s)s))) i"
             "   USING (market, symbol)")
    params = {"m": markets, "s": symbols, "f": t_from, "t": t_to}
    buf = bytearray()
    with conn.cursor() as cur:
        with cur.copy(f"COPY ({query}) TO STDOUT (FORMAT binary)", params) as cp:
            for block in cp:
                buf += block  # appended while the server computes the next rows
    # each row: int16 field count 3; int32 length 8 + int8; int32 length 8 + timestamptz
    # (µs since 2000-01-01); int32 length + the packed features
    width = 8 * len(names)
    row = 2 + 12 + 12 + 4 + width
    ext = int.from_bytes(buf[15:19], "big")
    start = 19 + ext
    n = (len(buf) - start - 2) // row
    view = lambda off, dt: np.ndarray((n,), dt, buf, start + off, (row,))
    if n and not ((view(0, ">i2") == 3).all() and (view(26, ">i4") == width).all()):
        raise ValueError("unexpected binary COPY layout")
    inst = view(6, ">i8").astype(np.int64)
    times = (view(18, ">i8").astype(np.int64) + PG_EPOCH_US).astype("datetime64[us]")
    X = np.ndarray((n, len(names)), "<f8", buf, start + 30, (row, 8))
    X = X[:, pick] if pick != list(range(len(names))) else X.copy()
    return instruments, inst, times, X, cols


def fetch_features_parallel(dsn: str, markets=None, symbols=None, t_from=None, t_to=None,
                            jobs: int = 2, columns: list[str] | None = None):
    """fetch_features over `jobs` connections at once, each fetching a slice of [t_from, t_to]
    (finite datetimes); the same arrays as fetch_features, bit for bit.

    Each slice is computed from the day checkpoint before its start (features_range's windows
    reach back before p_from), so a slice's rows equal those of one long fetch: the database
    proves it (point-in-time tests).  Costs up to a day of warm-up per instrument and slice:
    worth it for few instruments over a long range, on a server with cores to spare."""
    import threading

    import psycopg
    def finite(t):
        try:
            return datetime.fromisoformat(t) if isinstance(t, str) else t
        except ValueError:
            return None
    t_from, t_to = finite(t_from), finite(t_to)
    if t_from is None or t_to is None or jobs < 1:
        raise ValueError("fetch_features_parallel needs finite t_from and t_to (ISO 8601) and "
                         "jobs >= 1")
    minutes = max(1, int((t_to - t_from).total_seconds() // 60) + 1)
    step = timedelta(minutes=-(-minutes // jobs))
    bounds = []
    lo = t_from
    while lo <= t_to:
        bounds.append((lo, min(t_to, lo + step - timedelta(microseconds=1))))
        lo += step
    parts: list = [None] * len(bounds)
    errors: list = []

    def work(k, lo, hi):
        try:
            with psycopg.connect(dsn) as conn:
                parts[k] = fetch_features(conn, markets, symbols, lo, hi, columns)
        except BaseException as e:  # re-raised below, in the caller's thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k, lo, hi)) for k, (lo, hi) in enumerate(bounds)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    instruments, cols = parts[0][0], parts[0][4]
    if any(p[0] != instruments for p in parts):
        raise RuntimeError("the instruments changed while fetching; fetch again")
    inst = np.concatenate([p[1] for p in parts])
    times = np.concatenate([p[2] for p in parts])
    X = np.concatenate([p[3] for p in parts])
    if len(inst) > 1 and (np.diff(inst) < 0).any():
        # slices are in time order: a stable sort by instrument gives (instrument, open_time)
        order = np.argsort(inst, kind="stable")
        inst, times, X = inst[order], times[order], X[order]
    return instruments, inst, times, X, cols


def forward_log_returns(conn, instruments, inst, times, horizon: int) -> np.ndarray:
    """ln(close[m + h] / close[m]) over the next h stored candles of the instrument, per row
    (NaN where the instrument has fewer than h candles after m).  Computed in SQL with lead()
    over the candles: the label of m reads candles m+1 .. m+h only."""
    y = np.full(len(inst), np.nan)
    for k, (market, symbol) in enumerate(instruments):
        idx = np.nonzero(inst == k)[0]
        if not len(idx):
            continue
        t0 = times[idx].min().astype(datetime).replace(tzinfo=timezone.utc)
        rows = conn.execute(
            "SELECT (extract(epoch FROM open_time) * 1000000)::int8,"
            " ln(lead(close, %(h)s) OVER w / close)::float8 FROM market.candles_1m"
            " WHERE market = %(m)s AND symbol = %(s)s AND open_time >= %(f)s"
            " WINDOW w AS (ORDER BY open_time) ORDER BY open_time",
            {"h": horizon, "m": market, "s": symbol, "f": t0}).fetchall()
        lt = np.array([r[0] for r in rows], dtype="datetime64[us]")
        lv = np.array([np.nan if r[1] is None else r[1] for r in rows], dtype=np.float64)
        pos = np.searchsorted(lt, times[idx])
        found = (pos < len(lt)) & (lt[np.minimum(pos, len(lt) - 1)] == times[idx])
        y[idx[found]] = lv[pos[found]]
    return y


def build(conn, markets, symbols, t_from, t_to, horizon: int, jobs: int = 1, dsn: str = ""):
    """The labelled set: (X, y, times, inst, instruments, columns), rows with an unknown label
    dropped (features over `jobs` connections to `dsn` when jobs > 1)."""
    if jobs > 1:
        instruments, inst, times, X, cols = fetch_features_parallel(dsn, markets, symbols, t_from,
                                                                    t_to, jobs)
    else:
        instruments, inst, times, X, cols = fetch_features(conn, markets, symbols, t_from, t_to)
    y = forward_log_returns(conn, instruments, inst, times, horizon)
    keep = ~np.isnan(y)
    return X[keep], y[keep], times[keep], inst[keep], instruments, cols


def split_with_embargo(times: np.ndarray, horizon: int, test_fraction: float = 0.3):
    """Boolean masks (train, test) by time: test = the last test_fraction of the minutes;
    training rows end `horizon` minutes before the first test row (their labels must not reach
    into the test period)."""
    order = np.sort(np.unique(times))
    cut = order[int(len(order) * (1 - test_fraction))]
    embargo = cut - np.timedelta64(horizon, "m")
    return times < embargo, times >= cut


def fit_and_score(X, y, train, test, columns, use=("ret_5m_z", "ret_15m_z", "rv_1h_z",
                                                   "vol_z_1d", "rsi_14_z", "bb_pct_b")):
    """Least squares of y on a few columns (rows with NaN features left out); returns the
    test-set correlation of prediction and label."""
    k = [columns.index(c) for c in use]
    A = X[:, k]
    ok = ~np.isnan(A).any(axis=1)
    tr, te = train & ok, test & ok
    A1 = np.column_stack([A, np.ones(len(A))])
    coef, *_ = np.linalg.lstsq(A1[tr], y[tr], rcond=None)
    pred = A1[te] @ coef
    corr = float(np.corrcoef(pred, y[te])[0, 1]) if te.sum() > 2 else float("nan")
    return coef, int(tr.sum()), int(te.sum()), corr


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--market", action="append")
    ap.add_argument("--symbols")
    ap.add_argument("--from", dest="t_from", default="-infinity")
    ap.add_argument("--to", dest="t_to", default="infinity")
    ap.add_argument("--horizon", type=int, default=15, help="label horizon in candles")
    ap.add_argument("--out", help="write X, y, times, inst to this .npz")
    ap.add_argument("--jobs", type=int, default=1,
                    help="fetch over this many connections, as time slices (needs --from/--to)")
    a = ap.parse_args(argv)
    import psycopg
    symbols = a.symbols.split(",") if a.symbols else None
    with psycopg.connect(a.dsn) as conn:
        X, y, times, inst, instruments, cols = build(conn, a.market, symbols, a.t_from, a.t_to,
                                                     a.horizon, a.jobs, a.dsn)
    train, test = split_with_embargo(times, a.horizon)
    coef, ntr, nte, corr = fit_and_score(X, y, train, test, cols)
    print(f"{len(y)} labelled rows x {X.shape[1]} features from {len(instruments)} instruments; "
          f"label = {a.horizon}-candle forward log return; train {ntr}, test {nte} "
          f"(embargo {a.horizon} min); test correlation of a least-squares fit: {corr:.4f}")
    if a.out:
        np.savez(a.out, X=X, y=y, times=times, inst=inst, columns=np.array(cols),
                 instruments=np.array([f"{m}:{s}" for m, s in instruments]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
