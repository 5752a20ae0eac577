"""End to end (issue 2 item 6): fake Binance -> ta-feed stream -> PostgreSQL -> NOTIFY -> listen.

Path: a fresh database pg_ta_e2e on PG_TA_TEST_DSN's server, `ta-feed migrate`;
`ta-feed replay --file F --speed S --drop-after M` (the fake Binance, replaying the recorded
week of the 2021-05-19 crash, spot/klines12/BTCUSDT-1m-2021-05-15_2021-05-22.csv.gz, from
PG_TA_SHARED_DATA); `ta-feed listen` (the LISTEN client, one JSON line per alert);
`ta-feed stream --symbols BTCUSDT` against the fake until every minute of the file is stored;
then SIGINT to stream, listen and replay, each of which must exit 0.

The replay clock starts at the file's first open_time + 1440 min and runs S times real time
(default S = 3600, 60 replayed minutes per second: the ~8,600 live minutes take ~2.5 min; the
stream path sustains ~110 min/s with alert evaluation on).  Start-up takes a second or two of
wall time, i.e. 60-120 replayed minutes, so the stream is started with --backfill-minutes 2880
(not 1440): its REST start-up backfill then reaches back to the file's first minute and no
minute is lost to the start-up latency.  `--drop-after M` (default 2000) makes the fake close
the WebSocket after every M live minutes (serverShutdown + close frame); ta-feed reconnects
after its 1 s back-off, during which the replay clock runs on, and fills the missed minutes over
REST (market.data_quality_log kind gap_filled).

Alert policy checked (which minutes can alert):
  * ta-feed writes the start-up backfill and every gap fill with market.evaluate_alerts = off
    (alerts for recovered history are skipped, not recorded), and every live closed kline in
    its own transaction with evaluation on.  So the evaluated minutes are: every stored minute
    after the start-up backfill's last minute (read from the stream's log line "start-up
    backfill done ... to=..."), minus the minutes inside the gap_filled ranges of
    market.data_quality_log.  The count of those minutes must equal the stream's own
    live_rows_written.
  * At those minutes the expected alerts are the Python re-implementation of the presets
    (tests/common/screener_ref.py, independent of the SQL) with windows over all stored
    candles and the 5-minute per-(symbol, rule) cooldown over the alerts actually fired.
  * alert_history keeps alerts for market.settings.alert_history_retention in candle time
    (default 48 h, which would delete most of a replayed week as the replay advances); the
    test sets it to 30 days after migrate so alert_history holds the whole week.

Checks: (1) stored candles equal the CSV rows (all 12 fields, every minute exactly once);
(2) ta.ema(close, 12) / ta.rsi(close, 14) OVER (ORDER BY open_time) over the stored candles
equal TA-Lib on the CSV closes (relative 1e-9, NULL exactly where TA-Lib gives NaN);
(3) the alerts received by `listen` for big_bull_60/big_bear_60 equal the Python reference;
the LISTEN lines equal market.alert_history (same set, same payloads); every alert of every
preset in alert_history equals the Python reference; payload numbers (price, changes, volumes,
times) equal the reference values exactly; (4) dedup: re-running `ta-feed import` of the same
file writes 0 rows and adds no alert; re-writing already-stored minutes with identical values
(ta-feed's conditional upsert, ON CONFLICT DO NOTHING, and an unconditional upsert) fires no
alert and sends no NOTIFY; (5) live = offline for features (issue 17 item 4): a LISTEN
ta_features connection, started before the stream, receives exactly one feature row per evaluated
minute (the minutes of (3), including those recovered after each disconnect and written with
alerts), and every row equals market.features_range over the same minutes, bit for bit (0 skew).

When the shared data is absent the same path runs on a synthetic klines12 file (3 days of
BTCUSDT with a crash-like drop that fires big_bear_60) written to a temp directory.

Env: PG_TA_TEST_DSN (required), TA_FEED_BIN, PG_TA_SHARED_DATA, PG_TA_E2E_SPEED (3600),
PG_TA_E2E_DROP_AFTER (2000), PG_TA_E2E_TIMEOUT (900 s).
Run:  PG_TA_TEST_DSN=postgresql://postgres@127.0.0.1:5443/postgres \
      .venv/bin/python -m pytest tests/e2e -q -s
"""
from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import numpy as np
import pytest

from common import binance_data as bd
from common import features_db as fdb
from common import pg
from common import screener_ref as ref
from common.procs import Child, finish

psycopg = pytest.importorskip("psycopg")
talib = pytest.importorskip("talib")

DB = "pg_ta_e2e"
SYMBOL = "BTCUSDT"
CRASH_WEEK = os.path.join("spot", "klines12", "BTCUSDT-1m-2021-05-15_2021-05-22.csv.gz")
SPEED = float(os.environ.get("PG_TA_E2E_SPEED", "3600"))
DROP_AFTER = int(os.environ.get("PG_TA_E2E_DROP_AFTER", "2000"))
TIMEOUT = float(os.environ.get("PG_TA_E2E_TIMEOUT", "900"))
BACKFILL_MINUTES = 2880
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
REL = 1e-9


def _ms(dt: datetime) -> int:
    return (dt - EPOCH) // timedelta(milliseconds=1)


def _dt(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=int(ms))


# --------------------------------------------------------------------------------------
# synthetic data (when ../shared is absent)

def write_synthetic(dirpath: str) -> str:
    """3 days of BTCUSDT 1m klines12 (no header, ms): a quiet random walk drifting down, an
    8-hour slide and a one-hour crash on 5x volume (fires big_bear_60), then a rebound."""
    rng = np.random.default_rng(20210519)
    n, t0 = 3 * 1440, 1_621_036_800_000  # 2021-05-15 00:00 UTC
    crash_start, crash_end = 2880 + 600, 2880 + 660
    path = os.path.join(dirpath, "BTCUSDT-1m-synthetic.csv")
    price = 50_000.0
    with open(path, "w") as f:
        for i in range(n):
            if i < crash_start - 480:
                drift = -0.00001          # -1.4 % a day
            elif i < crash_start:
                drift = -0.00008          # the 8 h slide: about -3.8 %
            elif i < crash_end:
                drift = -0.0006           # the crash hour: about -3.5 %
            else:
                drift = 0.0002            # rebound
            o = price
            c = o * math.exp(drift + rng.normal(0, 0.0002))
            h = max(o, c) * (1 + abs(rng.normal(0, 0.0001)))
            lo = min(o, c) * (1 - abs(rng.normal(0, 0.0001)))
            vol = float(rng.lognormal(3.0, 0.3)) * (5 if crash_start <= i < crash_end else 1)
            o_s, h_s, l_s, c_s = (f"{x:.2f}" for x in (o, h, lo, c))
            v_s = f"{vol:.8f}"
            q_s = f"{Decimal(v_s) * Decimal(c_s):.8f}"
            tb_s = f"{vol / 2:.8f}"
            tq_s = f"{Decimal(tb_s) * Decimal(c_s):.8f}"
            t = t0 + i * 60_000
            f.write(f"{t},{o_s},{h_s},{l_s},{c_s},{v_s},{t + 59_999},{q_s},{100 + i % 50},"
                    f"{tb_s},{tq_s},0\n")
            price = float(c_s)
    return path


# --------------------------------------------------------------------------------------
# child processes

def _deadline_check(deadline: float, what: str):
    if time.monotonic() > deadline:
        raise TimeoutError(f"end-to-end test timed out ({TIMEOUT:.0f} s) while {what}")


# --------------------------------------------------------------------------------------
# the test

def test_end_to_end(tmp_path):
    pg.server_dsn()
    shared = bd.shared_data_dir()
    path = os.path.join(shared, CRASH_WEEK)
    synthetic = not os.path.isfile(path)
    if synthetic:
        print(f"\nshared data not found at {shared}; running the end-to-end path on a "
              "synthetic dataset")
        path = write_synthetic(str(tmp_path))
    kl = bd.read_klines12(path)
    print(f"\ndata: {path} ({len(kl)} klines, {ref.ms_to_iso(kl[0].open_time)} .. "
          f"{ref.ms_to_iso(kl[-1].open_time)})")

    logdir = tempfile.mkdtemp(prefix="pg_ta_e2e_")
    print(f"child logs: {logdir}")
    deadline = time.monotonic() + TIMEOUT
    t_start = time.monotonic()

    dsn = pg.fresh_database(DB)
    pg.migrate(DB)
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("UPDATE market.settings SET alert_history_retention = interval '30 days'")
    env = dict(os.environ, DATABASE_URL=pg.url_for(DB), NO_COLOR="1", RUST_LOG="info")

    children: list[Child] = []
    ok = False
    features = fdb.NotifyCollector(dsn, "ta_features")
    try:
        # fake Binance
        replay = Child("replay", ["replay", "--file", path, "--listen", "127.0.0.1:0",
                                  "--speed", repr(SPEED), "--drop-after", str(DROP_AFTER)],
                       logdir, env)
        children.append(replay)
        addr = None
        while addr is None:
            _deadline_check(deadline, "waiting for the replay's address")
            with open(replay.out_path, "rb") as f:
                first = f.readline().decode()
            m = re.match(r"listening on (\S+)\n", first)
            if m:
                addr = m.group(1)
            elif not replay.alive():
                pytest.fail("ta-feed replay exited before listening")
            else:
                time.sleep(0.05)
        print(f"replay listening on {addr} (speed {SPEED:g}, drop after {DROP_AFTER})")

        # LISTEN client, ready before the stream starts
        listen = Child("listen", ["listen"], logdir, env)
        children.append(listen)
        with psycopg.connect(dsn, autocommit=True) as c:
            while not c.execute("SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = %s"
                                " AND query ILIKE 'LISTEN%%'", (DB,)).fetchone()[0]:
                _deadline_check(deadline, "waiting for ta-feed listen")
                if not listen.alive():
                    pytest.fail("ta-feed listen exited early")
                time.sleep(0.1)

        # the feed
        stream = Child("stream", ["stream", "--symbols", SYMBOL, "--ws-url", f"ws://{addr}",
                                  "--rest-url", f"http://{addr}",
                                  "--backfill-minutes", str(BACKFILL_MINUTES)], logdir, env)
        children.append(stream)
        t_stream = time.monotonic()
        with psycopg.connect(dsn, autocommit=True) as c:
            last_report = 0.0
            while True:
                n = c.execute("SELECT count(*) FROM market.candles_1m").fetchone()[0]
                if n >= len(kl):
                    break
                for ch in (stream, replay, listen):
                    if not ch.alive():
                        pytest.fail(f"ta-feed {ch.name} exited early (code {ch.p.returncode}) "
                                    f"with {n} of {len(kl)} candles stored")
                _deadline_check(deadline, f"streaming ({n} of {len(kl)} candles stored)")
                if time.monotonic() - last_report > 30:
                    print(f"  {time.monotonic() - t_stream:5.0f} s: {n} candles stored")
                    last_report = time.monotonic()
                time.sleep(0.5)
            stream_secs = time.monotonic() - t_stream
        rc_stream = stream.interrupt()
        with psycopg.connect(dsn, autocommit=True) as c:
            n_hist = c.execute("SELECT count(*) FROM market.alert_history").fetchone()[0]
        t_wait = time.monotonic() + 20  # let listen print every NOTIFY already committed
        while _count_lines(listen.out_path) < n_hist and time.monotonic() < t_wait:
            time.sleep(0.2)
        rc_listen = listen.interrupt()
        rc_replay = replay.interrupt()
        feature_payloads = features.stop()
        print(f"stream ran {stream_secs:.0f} s; exit codes: stream {rc_stream}, "
              f"listen {rc_listen}, replay {rc_replay}")
        assert (rc_stream, rc_listen, rc_replay) == (0, 0, 0), "a child did not exit 0 on SIGINT"

        check_all(dsn, path, kl, stream, listen, synthetic, feature_payloads)
        print(f"[time] end-to-end test total: {time.monotonic() - t_start:.1f} s")
        ok = True
    finally:
        finish(children, ok, DB, logdir)


def _count_lines(p: str) -> int:
    with open(p, "rb") as f:
        return sum(1 for line in f if line.strip())


# --------------------------------------------------------------------------------------
# checks

def check_all(dsn: str, path: str, kl: list, stream: Child, listen: Child, synthetic: bool,
              feature_payloads: list):
    with psycopg.connect(dsn, autocommit=True) as conn:
        check_candles(conn, kl)
        check_indicators(conn, kl)
        evaluated = check_alerts(conn, kl, stream, listen, synthetic)
        check_features(conn, kl, evaluated, feature_payloads)
        check_dedup(conn, path, kl, evaluated)


def check_features(conn, kl, evaluated, payloads):
    t = np.array([k.open_time for k in kl], dtype=np.int64)
    want_minutes = {int(x) for x in t[evaluated]}
    live = {}
    dup = 0
    for text in payloads:
        for key, row in fdb.payload_rows(text):
            dup += key in live
            live[key] = row
    got_minutes = {k[2] for k in live}
    rng = fdb.select_features(conn, "SELECT * FROM market.features_range(NULL, NULL, %s, %s)",
                              (fdb.dt_ms(int(t[0])), fdb.dt_ms(int(t[-1]))))
    values = fdb.features_only(rng)
    d = fdb.first_difference(live, {k: values[k] for k in live if k in values}, fdb.FEATURE_COLS)
    gaps = conn.execute("SELECT from_time, to_time FROM market.data_quality_log"
                        " WHERE kind = 'gap_filled'").fetchall()
    recovered = sum(1 for (_m, _s, x) in live
                    if any(fdb.ms(a) <= x <= fdb.ms(b) for a, b in gaps))
    nonnull = sum(v is not None for r in live.values() for v in r)
    print(f"(5) features: {len(live)} live rows on NOTIFY ta_features ({dup} duplicated; "
          f"{recovered} of them recovered after a disconnect), {nonnull} non-NULL values; "
          f"equal to features_range bit for bit: {'yes' if d is None else d}")
    assert dup == 0, "a feature row was sent twice"
    assert got_minutes == want_minutes, \
        (f"feature NOTIFYs at other minutes than the evaluated ones: only notified "
         f"{sorted(got_minutes - want_minutes)[:5]}, not notified {sorted(want_minutes - got_minutes)[:5]}")
    assert d is None, f"live feature rows differ from features_range: {d}"
    assert recovered > 0, "no feature row of a minute recovered after a disconnect"
    # market.features is the newest one
    head = fdb.select_features(conn, "SELECT * FROM market.features")
    assert len(head) == 1 and head.items() <= rng.items()


def check_candles(conn, kl):
    rows = conn.execute(
        "SELECT symbol, open_time, close_time, open::text, high::text, low::text, close::text,"
        " volume::text, quote_volume::text, trades, taker_buy_volume::text,"
        " taker_buy_quote_volume::text FROM market.candles_1m ORDER BY symbol, open_time"
    ).fetchall()
    print(f"\n(1) candles: replayed {len(kl)}, stored {len(rows)}")
    assert len(rows) == len(kl), "stored candle count differs from the file's row count"
    assert all(r[0] == SYMBOL for r in rows)
    assert len({r[1] for r in rows}) == len(rows)
    bad, same_text = [], 0
    for k, r in zip(kl, rows):
        want = (k.open_time, k.close_time, Decimal(k.open), Decimal(k.high), Decimal(k.low),
                Decimal(k.close), Decimal(k.volume), Decimal(k.quote_volume), k.trades,
                Decimal(k.taker_buy_volume), Decimal(k.taker_buy_quote_volume))
        got = (_ms(r[1]), _ms(r[2]), *(Decimal(x) for x in r[3:9]), r[9],
               Decimal(r[10]), Decimal(r[11]))
        if want != got:
            bad.append((ref.ms_to_iso(k.open_time), want, got))
        texts = (k.open, k.high, k.low, k.close, k.volume, k.quote_volume,
                 k.taker_buy_volume, k.taker_buy_quote_volume)
        same_text += texts == (r[3], r[4], r[5], r[6], r[7], r[8], r[10], r[11])
    print(f"    rows equal to the CSV (values): {len(kl) - len(bad)}; of them with identical "
          f"decimal text: {same_text}")
    assert not bad, f"{len(bad)} stored candles differ from the CSV, e.g. {bad[:3]}"


def check_indicators(conn, kl):
    rows = conn.execute(
        "SELECT ta.ema(close, 12) OVER w, ta.rsi(close, 14) OVER w FROM market.candles_1m"
        " WHERE symbol = %s WINDOW w AS (ORDER BY open_time) ORDER BY open_time",
        (SYMBOL,)).fetchall()
    closes = np.array([float(k.close) for k in kl])
    for name, col, want in (("ema(close, 12)", 0, talib.EMA(closes, timeperiod=12)),
                            ("rsi(close, 14)", 1, talib.RSI(closes, timeperiod=14))):
        got = [r[col] for r in rows]
        null_mismatch = [i for i, (g, w) in enumerate(zip(got, want)) if (g is None) != np.isnan(w)]
        rel = [abs(g - w) / max(abs(g), abs(w)) for g, w in zip(got, want)
               if g is not None and not np.isnan(w) and max(abs(g), abs(w)) > 0]
        exact_zero_bad = [i for i, (g, w) in enumerate(zip(got, want))
                          if g is not None and not np.isnan(w) and max(abs(g), abs(w)) == 0
                          and g != w]
        worst = max(rel) if rel else 0.0
        print(f"(2) ta.{name}: {len(got)} rows, {sum(g is None for g in got)} NULL, "
              f"max relative difference to TA-Lib {worst:.3g}")
        assert not null_mismatch, f"ta.{name}: NULL/NaN positions differ at rows {null_mismatch[:5]}"
        assert worst <= REL and not exact_zero_bad, f"ta.{name}: differs from TA-Lib (max rel {worst})"


def _parse_backfill_to(stream_log: str) -> int:
    m = re.search(r"start-up backfill done .*?\bto=(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC",
                  stream_log)
    assert m, "no 'start-up backfill done ... to=...' line in the stream log"
    t = datetime.fromisoformat(m.group(1)).replace(tzinfo=timezone.utc)
    return _ms(t)


def _parse_summary(stream_log: str) -> dict:
    m = re.findall(r"stream stopped summary=StreamSummary \{([^}]*)\}", stream_log)
    assert m, "no 'stream stopped summary=...' line in the stream log"
    return {k: int(v) for k, v in re.findall(r"(\w+): (\d+)", m[-1])}


def _loads(text: str):
    return json.loads(text, parse_float=Decimal)


def check_alerts(conn, kl, stream: Child, listen: Child, synthetic: bool) -> np.ndarray:
    log = stream.stderr_text()
    backfill_to = _parse_backfill_to(log)
    summary = _parse_summary(log)
    gaps = conn.execute(
        "SELECT from_time, to_time, rows, coalesce((detail->>'alert_catchup')::int, 0)"
        " FROM market.data_quality_log WHERE kind = 'gap_filled'"
        " ORDER BY from_time").fetchall()
    other = conn.execute("SELECT kind, count(*) FROM market.data_quality_log"
                         " WHERE kind <> 'gap_filled' GROUP BY kind").fetchall()
    series = bd.klines_series(SYMBOL, kl)
    m = ref.compute_metrics(series)
    t = series.open_time
    # a gap's last `alert_catchup` minutes (within --alert-catchup-minutes of exchange time)
    # are written one minute per statement with alerts; the older ones with alerts off
    evaluated = t > backfill_to
    for a, b, _, catchup in gaps:
        evaluated &= ~((t >= _ms(a)) & (t <= _ms(b) - catchup * 60_000))
    n_backfill = int((t <= backfill_to).sum())
    n_gap = sum(int(r) for _, _, r, _ in gaps)
    n_catchup = sum(int(c) for _, _, _, c in gaps)
    print(f"(3) minutes: start-up backfill {n_backfill} (to {ref.ms_to_iso(backfill_to)}), "
          f"{len(gaps)} gap fill(s) after reconnects ({n_gap} minutes: "
          + ", ".join(f"{ref.ms_to_iso(_ms(a))[:16]}..{ref.ms_to_iso(_ms(b))[11:16]}"
                      for a, b, _, _ in gaps)
          + f", {n_catchup} of them recent enough for alerts), evaluated {int(evaluated.sum())};"
          f" other data_quality_log rows: {other}")
    print(f"    stream summary: {summary}")
    assert gaps, "no gap_filled reconnect happened (expected with --drop-after)"
    assert n_catchup > 0, "no recovered minute was recent enough for alert catch-up"
    assert int(evaluated.sum()) == summary["live_rows_written"] + n_catchup, \
        "evaluated-minute policy does not match the stream's live_rows_written + catch-up"

    # what arrived
    lines = [line for line in open(listen.out_path, encoding="utf-8").read().splitlines()
             if line.strip()]
    received = {}
    for line in lines:
        p = _loads(line)
        key = (p["symbol"], p["rule"], p["open_time"])
        assert key not in received, f"alert received twice: {key}"
        received[key] = p
    hist = {}
    for s, r, ot, payload in conn.execute(
            "SELECT symbol, rule, open_time, payload::text FROM market.alert_history"):
        hist[(s, r, ref.ms_to_iso(_ms(ot)))] = _loads(payload)

    # expected: the Python reference at the evaluated minutes, with cooldown
    at = {SYMBOL: evaluated}
    exp_cd = ref.evaluate([series], cooldown=True, at=at, metrics={SYMBOL: m})
    exp_all = ref.evaluate([series], cooldown=False, at=at, metrics={SYMBOL: m})
    cand_any = ref.evaluate([series], cooldown=False, metrics={SYMBOL: m})

    def keyset(d, rule):
        return {k for k in d if k[1] == rule}

    print(f"    {'rule':<14} {'cand.(all)':>10} {'cand.(live)':>11} {'expected':>8} "
          f"{'LISTEN':>7} {'history':>7}")
    failures = []
    for r in ref.ALL_PRESETS:
        exp = {(s, r, ref.ms_to_iso(x)) for s, x in exp_cd[r]}
        got_l, got_h = keyset(received, r), keyset(hist, r)
        okr = exp == got_l == got_h
        print(f"    {r:<14} {len(cand_any[r]):>10} {len(exp_all[r]):>11} {len(exp):>8} "
              f"{len(got_l):>7} {len(got_h):>7}  {'ok' if okr else 'MISMATCH'}")
        if not okr:
            failures.append(f"{r}: expected-only {sorted(exp - got_l)[:5]}, "
                            f"LISTEN-only {sorted(got_l - exp)[:5]}, "
                            f"history vs LISTEN {sorted(got_h ^ got_l)[:5]}")
    bear = "big_bear_60"
    print(f"    {bear}: {len(cand_any[bear])} candidate minutes in the file, "
          f"{len(exp_all[bear])} at live-evaluated minutes, {len(exp_cd[bear])} fired; the "
          f"5-minute cooldown suppressed {len(exp_all[bear]) - len(exp_cd[bear])}, "
          f"{len(cand_any[bear]) - len(exp_all[bear])} fell on backfilled minutes (not evaluated)")
    print(f"    alerts received by listen: {len(received)} ({dict(Counter(k[1] for k in received))})")
    assert len(exp_cd[bear]) > 0, \
        f"the {'synthetic crash' if synthetic else 'crash week'} should fire big_bear_60"
    assert received.keys() == hist.keys(), "LISTEN lines differ from alert_history"
    assert all(received[k] == hist[k] for k in hist), "LISTEN payloads differ from alert_history"
    assert not failures, "\n".join(failures)

    # payload values against the reference metrics
    idx = {int(x): i for i, x in enumerate(t)}
    wins = {"1m": None, "5m": "5m", "15m": "15m", "1h": "1h", "4h": "4h", "8h": "8h", "1d": "1d"}
    kl_by = {k.open_time: k for k in kl}
    bad = []
    for (s, r, ot), p in received.items():
        tm = _ms(datetime.strptime(ot, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc))
        i = idx[tm]
        k = kl_by[tm]
        checks = [("version", p["version"], 2), ("market", p["market"], "spot"), ("price", float(p["price"]), float(k.close)),
                  ("close_time", p["close_time"], ref.ms_to_iso(k.close_time))]
        for w, name in wins.items():
            ch = m.change_1m[i] if name is None else getattr(m, f"change_{name}")[i]
            vol = m.vol_1m[i] if name is None else getattr(m, f"vol_{name}")[i]
            pc, pv = p["changes"][w], p["volumes"][w]
            checks.append((f"changes.{w}", None if pc is None else float(pc),
                           None if np.isnan(ch) else float(ch)))
            checks.append((f"volumes.{w}", pv, vol))
        for what, got, want in checks:
            if got != want:
                bad.append((s, r, ot, what, got, want))
    print(f"    payload fields checked against the reference: {len(received)} alerts, "
          f"{len(bad)} differences")
    assert not bad, f"payload values differ from the reference, e.g. {bad[:5]}"
    return evaluated


def check_dedup(conn, path: str, kl, evaluated):
    before = conn.execute("SELECT count(*), max(fired_at) FROM market.alert_history").fetchone()
    p = pg.ta_feed("import", path, dbname=DB)
    m = re.search(r"total: .*rows_written=(\d+)", p.stdout)
    assert m, f"unexpected ta-feed import output: {p.stdout[-500:]}"
    after = conn.execute("SELECT count(*), max(fired_at) FROM market.alert_history").fetchone()
    print(f"(4) dedup: ta-feed import of the same file again: rows_written={m.group(1)}, "
          f"alerts {before[0]} -> {after[0]}")
    assert int(m.group(1)) == 0 and after == before

    # re-write stored minutes with identical values, evaluation on, while LISTENing
    newest = conn.execute("SELECT max(open_time) FROM market.candles_1m").fetchone()[0]
    alerted = conn.execute("SELECT open_time FROM market.alert_history WHERE open_time < %s"
                           " ORDER BY rule = 'big_bear_60' DESC, open_time DESC LIMIT 1",
                           (newest,)).fetchone()
    minutes = [newest] + ([alerted[0]] if alerted else [])
    cols = ["close_time", "open", "high", "low", "close", "volume", "quote_volume", "trades",
            "taker_buy_volume", "taker_buy_quote_volume"]
    same = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols)
    old = ", ".join(f"candles_1m.{c}" for c in cols)
    new = ", ".join(f"EXCLUDED.{c}" for c in cols)
    variants = {
        "conditional upsert (as ta-feed)":
            f"ON CONFLICT (market, symbol, open_time) DO UPDATE SET {same} WHERE ({old}) IS DISTINCT FROM ({new})",
        "ON CONFLICT DO NOTHING": "ON CONFLICT DO NOTHING",
        "unconditional upsert": f"ON CONFLICT (market, symbol, open_time) DO UPDATE SET {same}",
    }
    hist_before = conn.execute("SELECT symbol, rule_id, open_time, fired_at, payload::text"
                               " FROM market.alert_history ORDER BY 1, 2, 3").fetchall()
    with psycopg.connect(conn.info.dsn, autocommit=True) as lc:
        channel = lc.execute("SELECT market.alert_channel()").fetchone()[0]
        lc.execute(f'LISTEN "{channel}"')
        for label, conflict in variants.items():
            for t in minutes:
                k = next(k for k in kl if k.open_time == _ms(t))
                with conn.transaction():
                    conn.execute(
                        "INSERT INTO market.candles_1m (symbol, open_time, close_time, open, high,"
                        " low, close, volume, quote_volume, trades, taker_buy_volume,"
                        " taker_buy_quote_volume) VALUES (%s, %s, %s, %s::numeric, %s::numeric,"
                        " %s::numeric, %s::numeric, %s::numeric, %s::numeric, %s, %s::numeric,"
                        " %s::numeric) " + conflict,
                        (SYMBOL, _dt(k.open_time), _dt(k.close_time), k.open, k.high, k.low,
                         k.close, k.volume, k.quote_volume, k.trades, k.taker_buy_volume,
                         k.taker_buy_quote_volume))
        notes = list(lc.notifies(timeout=2.0))
    hist_after = conn.execute("SELECT symbol, rule_id, open_time, fired_at, payload::text"
                              " FROM market.alert_history ORDER BY 1, 2, 3").fetchall()
    print(f"    re-writing {len(minutes)} stored minute(s) (the newest"
          f"{' and the last big_bear_60 alert' if len(minutes) > 1 else ''}) with identical "
          "values, "
          f"3 ways, evaluation on: {len(notes)} NOTIFY, alert_history "
          f"{len(hist_before)} -> {len(hist_after)} rows")
    assert not notes, f"identical re-writes sent NOTIFY: {[n.payload[:200] for n in notes]}"
    assert hist_after == hist_before, "identical re-writes changed alert_history"
    n = conn.execute("SELECT count(*) FROM market.candles_1m").fetchone()[0]
    assert n == len(kl)
