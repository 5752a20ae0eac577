"""Live = offline with book features, and what a live rule sees when ticks come late (issue 17
items 4 and 5).

As ta-feed writes them, minute m's book tickers are stored before minute m's candle; the candle
trigger computes the minute's book features from what is stored then and freezes them
(market.book_1m_frozen).  Here some of each minute's book tickers arrive *after* its candle
(late), which changes market.book_1m but must change nothing of what the live path produced:

  * every feature row sent on NOTIFY ta_features equals market.features_range at the end (with
    the late ticks stored), bit for bit;
  * rules over book features fire the same minutes live (market.alert_history) and in
    market.backtest_rules over the live-evaluated minutes;
  * market.book_1m_late lists exactly the live minutes that got late ticks, and there the
    stored ticks now give other book features (so a backtest from the raw ticks would have
    differed);
  * every row of features_range equals the Python reference (tests/common/features_ref.py) fed
    with the ticks each minute had when its candle was written (frozen minutes) or all of them
    (minutes written in bulk, never live).

Data: (1) usdm BTCUSDT 2020-02-22 (Tardis, real): 9,999 trades -> candles (ta.kline), 9,999
best bid/ask quotes (update_id = row number): of every minute, the quotes of its last 15 s come
after its candle.  (2) usdm SYNTHUSDT (synthetic, deterministic): 1,600 candles of warm-up in
bulk, then 150 live minutes with ~30 book tickers each; every 4th minute gets a third of its
ticks late, one minute all of them; 5 minutes in the middle are written in one statement (a
recovery after a disconnect: only its newest minute is evaluated live).

Env: PG_TA_TEST_DSN (required), TA_FEED_BIN, PG_TA_SHARED_DATA (the real part is skipped
without it).  About 15 s.
"""
from __future__ import annotations

import math
import random
import time

import pytest

from common import features_db as fdb
from common import features_ref as fref
from common import pg

psycopg = pytest.importorskip("psycopg")
pytest.importorskip("talib")

DB = "pg_ta_features_ticks"
T0 = 1_717_200_000_000  # 2024-06-01 00:00 UTC, ms


def synthetic(n_warm: int = 1600, n_live: int = 150, seed: int = 17):
    """Candles (kline rows) and per-minute quotes [(update_id, b, B, a, A, time_us)] of
    SYNTHUSDT; quotes only for the live minutes."""
    rng = random.Random(seed)
    price = 100.0
    candles, quotes = [], {}
    uid = 1
    for i in range(n_warm + n_live):
        t = T0 + i * 60_000
        o = price
        c = round(o * math.exp(rng.gauss(0, 0.002)), 4)
        h = round(max(o, c) * 1.0005, 4)
        lo = round(min(o, c) * 0.9995, 4)
        v = round(rng.uniform(1, 50), 3)
        tb = round(v * rng.uniform(0.2, 0.8), 3)
        candles.append(("usdm", "SYNTHUSDT", fdb.dt_ms(t), fdb.dt_ms(t + 59_999), f"{o:.4f}",
                        f"{h:.4f}", f"{lo:.4f}", f"{c:.4f}", f"{v:.3f}", f"{v * c:.7f}", 10,
                        f"{tb:.3f}", f"{tb * c:.7f}"))
        price = c
        if i >= n_warm:
            qs = []
            mid = o
            for k in range(rng.randint(20, 40)):
                mid = round(mid * math.exp(rng.gauss(0, 0.0002)), 4)
                spread = round(rng.choice([0.01, 0.01, 0.02, 0.05]), 2)
                b, a = round(mid - spread / 2, 4), round(mid + spread / 2, 4)
                qs.append((uid, f"{b:.4f}", f"{rng.uniform(0, 20):.3f}", f"{a:.4f}",
                           f"{rng.uniform(0, 20):.3f}", t * 1000 + k * 1_500_000 + rng.randrange(1000)))
                uid += 1
            quotes[t] = qs
    return candles, quotes


def run_minutes(conn, market, symbol, minutes, candle_of, quotes_of, late_of, bulk=()):
    """For each minute: its on-time book tickers, its candle (one statement, alerts on), then
    its late ones.  Minutes of `bulk` are written together in one statement when the last of
    them comes.  Returns the minutes that got late ticks and the ticks each minute had when
    its candle was written."""
    seen_at_candle = {}
    late_minutes = set()
    pending = []
    for m in minutes:
        qs = quotes_of(m)
        late = late_of(m, qs)
        early = [q for q in qs if q not in late]
        fdb.insert_book(conn, market, symbol, early)
        seen_at_candle[m] = early
        if m in bulk:
            pending.append(m)
            if m != max(bulk):
                if late:
                    fdb.insert_book(conn, market, symbol, late)
                    seen_at_candle[m] = qs
                continue
            rows, pending = [candle_of(x) for x in pending], []
            fdb.insert_candles(conn, rows)
        else:
            fdb.insert_candles(conn, [candle_of(m)], one_per_statement=True)
        if late:
            fdb.insert_book(conn, market, symbol, late)
            late_minutes.add(m)
    return late_minutes, seen_at_candle


def test_live_offline_with_late_ticks():
    pg.server_dsn()
    t0 = time.monotonic()
    dsn = pg.fresh_database(DB)
    pg.migrate(DB)
    ok = False
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO market.alert_rules (name, expression, config, cooldown) VALUES"
                         " ('book_lean', 'imbalance_1m > $i AND imbalance_1m_z > $z', "
                         "  '{\"i\": 0.2, \"z\": 1}', '0'),"
                         " ('book_wide', 'spread_bps_1m_z > $z AND wmid_offset_bps_1m IS NOT NULL',"
                         "  '{\"z\": 1.5}', '0')")
            conn.execute("UPDATE market.alert_rules SET enabled = (kind = 'custom')")
            collector = fdb.NotifyCollector(dsn, "ta_features")
            instruments = []

            # (1) real: Tardis BTCUSDT trades and quotes
            if fdb.have_shared():
                ttr = fdb.read_tardis_trades(fdb.shared("futures_um", "tardis",
                                                        "BTCUSDT-trades-2020-02-22.tardis.csv.gz"))
                quotes = fdb.read_tardis_quotes(fdb.shared("futures_um", "tardis",
                                                           "BTCUSDT-quotes-2020-02-22.tardis.csv.gz"))
                fdb.insert_agg_trades(conn, "usdm", "BTCUSDT", ttr)
                kl = {fdb.ms(r[2]): r for r in conn.execute(
                    "SELECT market, symbol, open_time, close_time, open::text, high::text,"
                    " low::text, close::text, volume::text, quote_volume::text, trades,"
                    " taker_buy_volume::text, taker_buy_quote_volume::text"
                    " FROM market.trade_candles_1m WHERE symbol = 'BTCUSDT' ORDER BY open_time")}
                byq: dict[int, list] = {}
                for q in quotes:
                    byq.setdefault(q[5] // 60_000_000 * 60_000, []).append(q)
                late_r, seen_r = run_minutes(
                    conn, "usdm", "BTCUSDT", sorted(kl), lambda m: kl[m],
                    lambda m: byq.get(m, []),
                    lambda m, qs: [q for q in qs if q[5] >= (m + 45_000) * 1000])
                instruments.append(("usdm", "BTCUSDT", late_r, seen_r, byq, set()))

            # (2) synthetic: warm-up in bulk, then live minutes with late ticks and a recovery
            candles, squotes = synthetic()
            warm = [c for c in candles if fdb.ms(c[2]) not in squotes]
            with conn.transaction():
                conn.execute("SET LOCAL market.evaluate_alerts = off")
                fdb.copy_rows(conn, "market.candles_1m", fdb.KLINE_COLS, warm)
            live_min = sorted(squotes)
            cmap = {fdb.ms(c[2]): c for c in candles}
            bulk = set(live_min[100:105])
            all_late = live_min[41]

            def late_of(m, qs):
                if m == all_late:
                    return list(qs)
                return qs[-len(qs) // 3:] if (m - live_min[0]) // 60_000 % 4 == 1 else []
            late_s, seen_s = run_minutes(conn, "usdm", "SYNTHUSDT", live_min, lambda m: cmap[m],
                                         lambda m: squotes[m], late_of, bulk)
            instruments.append(("usdm", "SYNTHUSDT", late_s, seen_s, squotes, bulk))
            payloads = collector.stop()
            t_run = time.monotonic() - t0

            # live rows = features_range now (with the late ticks stored), bit for bit
            live = {}
            for text in payloads:
                live.update(fdb.payload_rows(text))
            rng = fdb.select_features(conn, "SELECT * FROM market.features_range(NULL, NULL,"
                                            " '-infinity', 'infinity')")
            values = fdb.features_only(rng)
            d = fdb.first_difference(live, {k: values[k] for k in live if k in values},
                                     fdb.FEATURE_COLS)
            book_live = sum(v is not None for k, r in live.items()
                            for v in r[fdb.FEATURE_COLS.index("imbalance_1m"):])
            print(f"\n{len(live)} live feature rows in {t_run:.1f} s ({book_live} non-NULL book "
                  f"values and their z-scores) = features_range after the late ticks: "
                  f"{'yes' if d is None else d}")
            assert d is None
            assert all(k in rng for k in live)

            for market, symbol, late, seen, allq, bulk_min in instruments:
                # the late minutes, and only they, are listed; their raw book now differs
                listed = {fdb.ms(r[0]): r[1] for r in conn.execute(
                    "SELECT open_time, differs FROM market.book_1m_late WHERE market = %s"
                    " AND symbol = %s", (market, symbol))}
                evaluated_late = {m for m in late if m not in bulk_min or m == max(bulk_min, default=0)}
                print(f"  {symbol}: {len(late)} minutes got late ticks, book_1m_late lists "
                      f"{len(listed)}: {'equal' if set(listed) == evaluated_late else 'DIFFERENT'}")
                assert set(listed) == evaluated_late
                # the reference with the ticks each minute had at its candle (frozen) or all
                frozen = {fdb.ms(r[0]) for r in conn.execute(
                    "SELECT open_time FROM market.book_1m_frozen WHERE market = %s AND symbol = %s",
                    (market, symbol))}
                book = {}
                for m, qs in allq.items():
                    use = seen.get(m, qs) if m in frozen else qs
                    if use or m in frozen:
                        b = fref.book_minute([(q[5], q[0], float(q[1]), float(q[2]), float(q[3]),
                                               float(q[4])) for q in use], (m + 60_000) * 1000)
                        book[m] = b or {"imbalance": None, "spread_bps": None,
                                        "wmid_offset_bps": None}
                ref_rows = fdb.reference_rows(conn, market, symbol, book)
                got = {t: r[1:] for (mk, s, t), r in rng.items() if (mk, s) == (market, symbol)}
                d = fdb.first_difference(got, ref_rows, fdb.FEATURE_COLS)
                print(f"  {symbol}: {len(got)} rows of features_range = the Python reference with "
                      f"the ticks seen at each candle: {'yes' if d is None else d}")
                assert d is None

            # rules over book features: live = backtest over the live-evaluated minutes
            evaluated = {k for k in live}
            hist = {(r, s, fdb.ms(t)) for r, s, t in conn.execute(
                "SELECT rule, symbol, open_time FROM market.alert_history")}
            bt = {(r, s, fdb.ms(t)) for r, s, t in conn.execute(
                "SELECT rule, symbol, open_time FROM market.backtest_rules("
                "ARRAY['book_lean', 'book_wide'], '-infinity', 'infinity', p_payload => false)")
                if ("usdm", s, fdb.ms(t)) in evaluated}
            print(f"  rules over book features: alert_history {len(hist)}, backtest at the live "
                  f"minutes {len(bt)}: {'equal' if hist == bt else 'DIFFERENT'}")
            assert hist == bt and len(hist) >= 3
        print(f"[time] live = offline with late ticks: {time.monotonic() - t0:.1f} s")
        ok = True
    finally:
        if ok:
            pg.drop_database(DB)
