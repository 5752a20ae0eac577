#!/usr/bin/env python3
"""Serve a model from pg_ta's live feature rows: LISTEN ta_features, decode, score.

    python3 examples/live_features.py --dsn postgresql://postgres@127.0.0.1:5433/postgres \
        [--rank ret_5m_z] [--top 5] [--count 10]

At every candle close the database stores each instrument's feature row in market.features and
sends it on NOTIFY ta_features, packed (ta.feature_payloads): one notification holds about 14
rows as JSON

    {"version": 1, "rows": [{"market": "usdm", "symbol": "BTCUSDT",
                             "open_time": "2026-12-07T17:00:00.000Z", "features": "<base64>"}]}

with `features` the row's 42 feature columns as little-endian doubles in ta.feature_row order
(NULL as NaN): the layout of ta.feature_bytes, which training sets are read with
(examples/training_set.py). So the vector a model scores live is, bit for bit, the one it was
trained on (tests/e2e and tests/rules compare every live row with market.features_range).

`decode` turns a payload into (keys, X) with one numpy view per notification, no Python object
per value.  The CLI prints, per notification, its minute(s), row count and the instruments
ranked by one column: a stand-in for a model's `predict(X)`.

Any role that can connect may NOTIFY on any channel (PostgreSQL has no privilege for it):
a payload that does not decode is logged and skipped; a model that must not act on rows forged
by another role checks them against market.features (or reads market.feature_vectors) first.

A listener that falls behind loses nothing while it stays connected (PostgreSQL queues
notifications, up to max_notify_queue_pages); after a disconnect, read the missed minutes with
market.feature_vectors(markets, symbols, from, to) (the same vectors).
"""
from __future__ import annotations

import argparse
import base64
import json
import sys
from datetime import datetime

import numpy as np

VERSION = 1  # ta.feature_version() this decoder knows


def feature_columns(conn) -> list[str]:
    """The feature columns of ta.feature_row, in order (the layout of `features`)."""
    rows = conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = 'ta.feature_row'::regclass"
        " AND attnum > 4 AND NOT attisdropped ORDER BY attnum").fetchall()
    return [r[0] for r in rows]


def decode(payload: str, n_columns: int = 42):
    """A ta_features payload as (keys, X): keys = [(market, symbol, open_time datetime)], X =
    float64 array (rows, n_columns), NaN for NULL. ValueError for another feature set version
    or a malformed vector."""
    p = json.loads(payload)
    if p.get("version") != VERSION:
        raise ValueError(f"feature set version {p.get('version')!r}, this decoder knows {VERSION}")
    rows = p["rows"]
    raw = b"".join(base64.b64decode(r["features"], validate=True) for r in rows)
    if len(raw) != 8 * n_columns * len(rows):
        raise ValueError(f"{len(raw)} bytes for {len(rows)} rows of {n_columns} doubles")
    X = np.frombuffer(raw, dtype="<f8").reshape(len(rows), n_columns)
    keys = [(r["market"], r["symbol"], datetime.fromisoformat(r["open_time"].replace("Z", "+00:00")))
            for r in rows]
    return keys, X


def main(argv=None) -> int:
    import psycopg

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--rank", default="ret_5m_z", help="feature column to rank by")
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--count", type=int, default=0,
                    help="stop after this many notifications (0: run until interrupted)")
    ap.add_argument("--timeout", type=float, default=0,
                    help="stop after this many seconds without a notification (0: never)")
    a = ap.parse_args(argv)
    with psycopg.connect(a.dsn, autocommit=True) as conn:
        names = feature_columns(conn)
        k = names.index(a.rank)  # ValueError for an unknown column
        conn.execute("LISTEN ta_features")
        print(f"listening on ta_features ({len(names)} feature columns)", flush=True)
        seen = skipped = 0
        while not a.count or seen < a.count:
            got = False
            for note in conn.notifies(timeout=a.timeout or None, stop_after=1):
                got = True
                try:
                    keys, X = decode(note.payload, len(names))
                except (ValueError, KeyError, TypeError, AttributeError) as e:
                    # any role may NOTIFY on any channel: a payload that is not pg_ta's is
                    # logged and skipped (see docs/security.md)
                    skipped += 1
                    print(f"skipped a malformed ta_features notification ({skipped} so far): "
                          f"{type(e).__name__}: {str(e)[:80]}", file=sys.stderr, flush=True)
                    continue
                seen += 1
                score = X[:, k]
                order = np.argsort(np.where(np.isnan(score), -np.inf, score))[::-1][:a.top]
                minutes = sorted({t for _m, _s, t in keys})
                best = ", ".join(f"{keys[i][1]} {score[i]:.3g}" for i in order
                                 if not np.isnan(score[i]))
                print(f"{minutes[0]:%Y-%m-%d %H:%M}{'+' if len(minutes) > 1 else ''} "
                      f"{len(keys)} rows; top {a.rank}: {best or '(all NULL)'}", flush=True)
                # stop_after is a minimum: notifications that arrive in one packet come
                # together, and --count is exact
                if a.count and seen >= a.count:
                    break
            if not got:
                break
    return 0


if __name__ == "__main__":
    sys.exit(main())
