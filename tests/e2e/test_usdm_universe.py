"""USD-M futures at scale (issue 9): the fake exchange (`ta-feed replay --market usdm`) serving
210 perpetuals -> `ta-feed stream --market usdm --symbols all` -> PostgreSQL -> NOTIFY -> listen.

Setup: the seven recorded futures_um/klines12/*-2026-02 dumps from PG_TA_SHARED_DATA, each served
as PG_TA_USDM_CLONES (30) symbols by `--clone-symbols` (k = 0 the original, k >= 1 renamed
{BASE}{k:02}USDT with prices and quote volumes x (1000 + k) / 1000, exact), at PG_TA_USDM_SPEED
(60: one replayed minute per second). The replay forces connection rotations
(`--connection-lifetime`, 15 real seconds; the stream rotates at 10), lists one symbol and
delists another mid-run (`--list` / `--delist`, 20 and 25 replayed minutes in), and the test drops one connection abruptly
(`POST /_replay/drop-connection`). The stream shards 50 streams per connection (5 connections,
a 6th for the listing), refreshes the universe every 3 s and stops after 36 live minutes.

A custom rule `heartbeat` (`price > 0`, no cooldown) fires for every instrument at every minute
the database evaluates, so its alerts are exactly the set of evaluated (symbol, minute) pairs.

Checks:
  (1) discovery: `ta-feed symbols --market usdm` against a replay serving the recorded
      exchangeInfo (rest/binance_usdm_fapi_v1_exchangeInfo_2021-07-22.json.gz) prints the
      PERPETUAL / TRADING / USDT / USDT symbols computed here from the JSON, minus --exclude;
  (2) every stored minute of every symbol equals the replayed (scaled) kline exactly, each
      symbol's minutes are contiguous (nothing lost to rotations or the dropped connection),
      the listed symbol starts at its listing, the delisted one stops at its delisting;
  (3) rotations happened and caused no REST fill: the dropped connection reconnected, every
      live gap fill belongs to its one shard, and every such fill was recent enough for alert
      catch-up;
      no silent_connection; data_quality_log has the listing and the delisting;
  (4) alerts: the LISTEN client's lines equal alert_history; `heartbeat` fired exactly once per
      (symbol, minute) after the start-up backfill (live and caught-up minutes); every other
      rule equals market.backtest_rules over the same minutes; every payload says "usdm".

Env: PG_TA_TEST_DSN (required), TA_FEED_BIN, PG_TA_SHARED_DATA, PG_TA_USDM_CLONES (30),
PG_TA_USDM_SPEED (60), PG_TA_USDM_TIMEOUT (600 s).
"""
from __future__ import annotations

import glob
import gzip
import json
import os
import re
import subprocess
import tempfile
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from decimal import Decimal, localcontext

import pytest

from common import binance_data as bd
from common import pg
from common.procs import Child, finish, wait_listening

psycopg = pytest.importorskip("psycopg")

DB = "pg_ta_usdm"
CLONES = int(os.environ.get("PG_TA_USDM_CLONES", "30"))
SPEED = float(os.environ.get("PG_TA_USDM_SPEED", "60"))
TIMEOUT = float(os.environ.get("PG_TA_USDM_TIMEOUT", "600"))
PER_CONNECTION = 50
LIVE_MINUTES = 36
BACKFILL_MINUTES = 240
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MINUTE = 60_000


def _ms(dt: datetime) -> int:
    return (dt - EPOCH) // timedelta(milliseconds=1)


def _iso(ms: int) -> str:
    return (EPOCH + timedelta(milliseconds=ms)).strftime("%Y-%m-%dT%H:%M:%SZ")


def futures_files() -> list[str]:
    files = sorted(glob.glob(os.path.join(bd.shared_data_dir(), "futures_um", "klines12",
                                          "*-2026-02.csv.gz")))
    if len(files) < 7:
        pytest.skip(f"recorded futures_um/klines12/*-2026-02 dumps not found under "
                    f"{bd.shared_data_dir()} (PG_TA_SHARED_DATA)")
    return files


def clone_name(symbol: str, k: int) -> str:
    return symbol if k == 0 else f"{symbol[:-4]}{k:02d}USDT"


def scaled(x: str, k: int) -> Decimal:
    """The replay's clone rule, computed independently: x * (1000 + k) / 1000, exact."""
    with localcontext() as ctx:
        ctx.prec = 60
        return Decimal(x) * (1000 + k) / 1000


class Expected:
    """The replayed klines of every served symbol: each clone maps to (its file's rows, k)."""

    def __init__(self, files: list[str]):
        self.source: dict[str, tuple[dict, int]] = {}
        for f in files:
            rows = {r.open_time: r for r in bd.read_klines12(f)}
            for k in range(CLONES):
                self.source[clone_name(bd.symbol_of(f), k)] = (rows, k)

    def symbols(self) -> list[str]:
        return sorted(self.source)

    def first_open(self) -> int:
        return min(min(rows) for rows, _ in self.source.values())

    def at(self, symbol: str, t: int):
        """The 10 stored values after the key (close_time .. taker_buy_quote_volume)."""
        rows, k = self.source[symbol]
        r = rows.get(t)
        if r is None:
            return None
        return (r.close_time, scaled(r.open, k), scaled(r.high, k), scaled(r.low, k),
                scaled(r.close, k), Decimal(r.volume), scaled(r.quote_volume, k), r.trades,
                Decimal(r.taker_buy_volume), scaled(r.taker_buy_quote_volume, k))


def http(addr: str, path: str, method: str = "GET") -> dict:
    req = urllib.request.Request(f"http://{addr}{path}", method=method)
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


# --------------------------------------------------------------------------------------

def test_usdm_discovery_from_recorded_exchange_info(tmp_path):
    files = futures_files()
    info_path = os.path.join(bd.shared_data_dir(), "rest",
                             "binance_usdm_fapi_v1_exchangeInfo_2021-07-22.json.gz")
    if not os.path.isfile(info_path):
        pytest.skip(f"recorded exchangeInfo not found: {info_path}")
    with gzip.open(info_path, "rt") as f:
        info = json.load(f)
    want = sorted(s["symbol"] for s in info["symbols"]
                  if s.get("contractType") == "PERPETUAL" and s.get("status") == "TRADING"
                  and s.get("quoteAsset") == "USDT" and s.get("marginAsset") == "USDT")
    print(f"\nrecorded exchangeInfo: {len(info['symbols'])} symbols, {len(want)} USDT-M "
          "perpetuals trading")
    assert 0 < len(want) < len(info["symbols"])
    replay = Child("replay", ["replay", "--market", "usdm", "--file", files[0],
                              "--exchange-info", info_path], str(tmp_path), dict(os.environ))
    try:
        addr = wait_listening(replay, time.monotonic() + 60)
        env = dict(os.environ, NO_COLOR="1")
        got = subprocess.run([pg.ta_feed_bin(), "symbols", "--market", "usdm", "--rest-url",
                              f"http://{addr}"], env=env, capture_output=True, text=True,
                             timeout=60, check=True).stdout.split("\n")
        assert got[-1] == "", "output must end with a newline"
        assert got[:-1] == want
        excl = subprocess.run([pg.ta_feed_bin(), "symbols", "--market", "usdm", "--rest-url",
                               f"http://{addr}", "--exclude", f"{want[0].lower()},{want[1]}"],
                              env=env, capture_output=True, text=True, timeout=60,
                              check=True).stdout.split()
        assert excl == want[2:]
    finally:
        replay.interrupt()
        replay.close()


def test_delisted_symbol_keeps_its_last_minute():
    """exchangeInfo shows a delisting before the symbol's last closed kline arrives (futures
    klines close ~2 s after the minute): that minute is fetched over REST, not lost. The close
    delay is stretched to 3 real seconds and exchangeInfo read every second, so the refresh
    always sees the delisting first."""
    pg.server_dsn()
    files = [f for f in futures_files() if bd.symbol_of(f) in ("ALGOUSDT", "LTCUSDT")]
    first_open = min(bd.read_klines12(files[0])[0].open_time,
                     bd.read_klines12(files[1])[0].open_time)
    start = first_open + 1440 * MINUTE
    delist_at = start + 2 * MINUTE
    db = "pg_ta_usdm_delist"
    pg.fresh_database(db)
    pg.migrate(db)
    logdir = tempfile.mkdtemp(prefix="pg_ta_usdm_delist_")
    env = dict(os.environ, DATABASE_URL=pg.url_for(db), NO_COLOR="1", RUST_LOG="info")
    deadline = time.monotonic() + 120
    children: list[Child] = []
    ok = False
    try:
        replay = Child("replay", [
            "replay", "--market", "usdm", "--speed", "10", "--close-delay-ms", "30000",
            "--delist", f"ALGOUSDT@{delist_at}", *[a for f in files for a in ("--file", f)]],
            logdir, env)
        children.append(replay)
        addr = wait_listening(replay, deadline)
        stream = Child("stream", [
            "stream", "--market", "usdm", "--symbols", "all", "--ws-url", f"ws://{addr}",
            "--rest-url", f"http://{addr}", "--backfill-minutes", "30",
            "--universe-refresh-secs", "1", "--stop-after-minutes", "4"], logdir, env)
        children.append(stream)
        while stream.alive():
            assert time.monotonic() < deadline, "stream did not finish in time"
            time.sleep(0.2)
        assert stream.p.returncode == 0, stream.tail()
        with psycopg.connect(pg.dsn_for(db), autocommit=True) as c:
            last = c.execute("SELECT max(open_time) FROM market.candles_1m"
                             " WHERE symbol = 'ALGOUSDT'").fetchone()[0]
            assert _ms(last) == delist_at - MINUTE, f"ALGOUSDT ends at {last}"
            tail = c.execute("SELECT rows FROM market.data_quality_log WHERE kind = 'gap_filled'"
                             " AND symbol = 'ALGOUSDT' AND detail->>'trigger' = 'delisting'"
                             ).fetchall()
            assert tail == [(1,)], f"the last minute came over REST once: {tail}"
            assert c.execute("SELECT count(*) FROM market.data_quality_log"
                             " WHERE kind = 'gap_unfilled'").fetchone()[0] == 0
        assert replay.interrupt() == 0
        ok = True
    finally:
        finish(children, ok, db, logdir)


def test_usdm_universe_end_to_end():
    pg.server_dsn()
    files = futures_files()
    t0 = time.monotonic()
    deadline = t0 + TIMEOUT
    expected = Expected(files)
    symbols = expected.symbols()
    first_open = expected.first_open()
    start = first_open + 1440 * MINUTE                # the replay's default start
    listed, delisted = clone_name("LINKUSDT", CLONES - 1), clone_name("ALGOUSDT", CLONES - 1)
    list_at, delist_at = start + 20 * MINUTE, start + 25 * MINUTE
    print(f"\n{len(symbols)} symbols from {len(files)} files; replay start {_iso(start)}; "
          f"{listed} listed at {_iso(list_at)}, {delisted} delisted at {_iso(delist_at)}")

    logdir = tempfile.mkdtemp(prefix="pg_ta_usdm_")
    print(f"child logs: {logdir}")
    dsn = pg.fresh_database(DB)
    pg.migrate(DB)
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("UPDATE market.settings SET alert_history_retention = interval '30 days'")
        c.execute("INSERT INTO market.alert_rules (name, expression, cooldown, description)"
                  " VALUES ('heartbeat', 'price > 0', interval '0', 'fires at every minute')")
    env = dict(os.environ, DATABASE_URL=pg.url_for(DB), NO_COLOR="1", RUST_LOG="info")
    children: list[Child] = []
    ok = False
    try:
        replay = Child("replay", [
            "replay", "--market", "usdm", "--clone-symbols", str(CLONES), "--speed", repr(SPEED),
            "--connection-lifetime", str(int(15 * SPEED)),
            "--list", f"{listed}@{list_at}", "--delist", f"{delisted}@{delist_at}",
            *[a for f in files for a in ("--file", f)]], logdir, env)
        children.append(replay)
        addr = wait_listening(replay, deadline)
        listen = Child("listen", ["listen"], logdir, env)
        children.append(listen)
        with psycopg.connect(dsn, autocommit=True) as c:
            while not c.execute("SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = %s"
                                " AND query ILIKE 'LISTEN%%'", (DB,)).fetchone()[0]:
                assert listen.alive() and time.monotonic() < deadline, "listen did not start"
                time.sleep(0.1)
        print(f"[time] setup: {time.monotonic() - t0:.1f} s")
        stream = Child("stream", [
            "stream", "--market", "usdm", "--symbols", "all",
            "--ws-url", f"ws://{addr}", "--rest-url", f"http://{addr}",
            "--backfill-minutes", str(BACKFILL_MINUTES),
            "--streams-per-connection", str(PER_CONNECTION),
            "--max-connection-age-secs", "10", "--universe-refresh-secs", "3",
            "--silent-timeout-secs", "30", "--stop-after-minutes", str(LIVE_MINUTES)],
            logdir, env)
        children.append(stream)

        # Drop one connection in the live phase, one that is 3-5 s old: its predecessor closed
        # at the end of the rotation overlap (--rotation-overlap-ms, 2 s after the new one
        # delivered), and its own rotation (at 10 s) is at least 5 s away, so the drop is a
        # plain reconnect. (A connection dropped while its replacement is opening, or during
        # the overlap, is not a reconnect: the other connection of the pair simply goes on.)
        dropped = None
        first_round = -(-(len(symbols) - 1) // PER_CONNECTION)  # shards before the listing
        while stream.alive():
            assert time.monotonic() < deadline, "stream did not finish in time"
            log = stream.stderr_text()
            if (dropped is None and "start-up backfill finished" in log
                    and len(re.findall(r"rotated: replacement delivers", log)) >= first_round):
                st = http(addr, "/_replay/status")
                ages = {o["id"]: (st["now_ms"] - o["opened_replay_ms"]) / SPEED / 1000
                        for o in st["open"]}
                pick = [i for i, a in sorted(ages.items()) if 3.0 <= a <= 5.0]
                if pick:
                    dropped = http(addr, f"/_replay/drop-connection?id={pick[0]}", "POST")
                    print(f"dropped connection: {dropped} (age {ages[pick[0]]:.1f} s)")
            time.sleep(0.2)
        assert stream.p.returncode == 0, "stream did not exit 0:\n" + stream.tail()
        print(f"[time] stream finished: {time.monotonic() - t0:.1f} s")
        status = http(addr, "/_replay/status")
        print(f"replay status: { {k: v for k, v in status.items() if k != 'open'} }")
        with psycopg.connect(dsn, autocommit=True) as c:
            n_hist = c.execute("SELECT count(*) FROM market.alert_history").fetchone()[0]
        t_wait = time.monotonic() + 20
        while _count_lines(listen.out_path) < n_hist and time.monotonic() < t_wait:
            time.sleep(0.2)
        assert listen.interrupt() == 0 and replay.interrupt() == 0
        assert dropped is not None, "the live phase never started"
        log = stream.stderr_text()
        with psycopg.connect(dsn, autocommit=True) as conn:
            live_from = check_candles(conn, expected, symbols, log, listed, list_at, delisted,
                                      delist_at)
            check_connections(conn, status, symbols, listed, delisted, log)
            check_alerts(conn, listen, live_from, listed, delisted, delist_at)
        print(f"[time] usdm end-to-end: {time.monotonic() - t0:.1f} s")
        ok = True
    finally:
        finish(children, ok, DB, logdir, tail=40)


def _count_lines(p: str) -> int:
    with open(p, "rb") as f:
        return sum(1 for line in f if line.strip())


def _live_from(log: str) -> int:
    """First minute after the start-up backfill (the stream's 'exchange time' line)."""
    m = re.search(r"exchange time .*?last_closed=(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", log)
    assert m, "no 'exchange time ... last_closed=' line in the stream log"
    t = datetime.fromisoformat(m.group(1)).replace(tzinfo=timezone.utc)
    return _ms(t) + MINUTE


def check_candles(conn, expected, symbols, log, listed, list_at, delisted, delist_at) -> int:
    live_from = _live_from(log)
    rows = conn.execute(
        "SELECT symbol, open_time, close_time, open, high, low, close, volume, quote_volume,"
        " trades, taker_buy_volume, taker_buy_quote_volume FROM market.candles_1m"
        " WHERE market = 'usdm' ORDER BY symbol, open_time").fetchall()
    others = conn.execute("SELECT count(*) FROM market.candles_1m WHERE market <> 'usdm'"
                          ).fetchone()[0]
    by: dict[str, list] = {}
    for r in rows:
        by.setdefault(r[0], []).append(r)
    last_live = max(_ms(r[1]) for r in rows)
    print(f"(2) candles: {len(rows)} stored for {len(by)} symbols, live from {_iso(live_from)} "
          f"to {_iso(last_live)}")
    assert others == 0
    assert sorted(by) == symbols, "every served symbol is stored, and nothing else"
    bad, holes = [], []
    for sym, rs in by.items():
        times = [_ms(r[1]) for r in rs]
        if times != list(range(times[0], times[-1] + MINUTE, MINUTE)):
            holes.append(sym)
        for r, t in zip(rs, times):
            want = expected.at(sym, t)
            got = (_ms(r[2]), *r[3:9], r[9], r[10], r[11])
            if want != got:
                bad.append((sym, _iso(t), want, got))
        if sym == listed:
            assert times[0] == list_at, f"{sym} starts at {_iso(times[0])}, listed {_iso(list_at)}"
        elif sym == delisted:
            assert times[-1] == delist_at - MINUTE, f"{sym} ends at {_iso(times[-1])}"
            assert times[0] <= live_from - (BACKFILL_MINUTES - 5) * MINUTE
        else:
            assert times[0] <= live_from - (BACKFILL_MINUTES - 5) * MINUTE, f"{sym}: no backfill"
            assert times[-1] >= last_live - MINUTE, f"{sym} stops at {_iso(times[-1])}"
    assert not holes, f"minutes missing for {len(holes)} symbols, e.g. {holes[:5]}"
    assert not bad, f"{len(bad)} stored candles differ from the replay, e.g. {bad[:3]}"
    print("    every minute of every symbol stored once, contiguous, values exact")
    return live_from


def check_connections(conn, status, symbols, listed, delisted, log):
    dq = dict(conn.execute("SELECT kind, count(*) FROM market.data_quality_log GROUP BY kind"
                           ).fetchall())
    fills = conn.execute(
        "SELECT symbol, from_time, to_time, (detail->>'expected')::int,"
        " (detail->>'alert_catchup')::int FROM market.data_quality_log"
        " WHERE kind = 'gap_filled' AND detail->>'trigger' = 'live'").fetchall()
    initial = [s for s in symbols if s != listed]
    shards = [set(initial[i:i + PER_CONNECTION]) for i in range(0, len(initial), PER_CONNECTION)]
    gap_symbols = {f[0] for f in fills}
    rotations = len(re.findall(r"rotated: replacement delivers", log))
    print(f"(3) connections: {status['connections_total']} opened, {rotations} rotations, "
          f"data_quality_log {dq}; live gap fills for {len(gap_symbols)} symbols")
    assert rotations >= 2 * len(shards), "every connection should have rotated at least twice"
    assert dq.get("silent_connection", 0) == 0
    # the dropped connection reconnects after its back-off (1-1.2 s, 1-1.2 replayed minutes):
    # a gap fill when a closed minute passed meanwhile, none when the reconnect beat it
    assert re.search(r"stream (failed|closed by server), reconnecting", log), \
        "the dropped connection did not reconnect"
    assert any(gap_symbols <= s for s in shards), \
        "live gap fills outside the dropped connection's shard (rotation caused a REST fill?)"
    assert all(e == c for *_, e, c in fills), \
        f"recovered minutes not all within --alert-catchup-minutes: {fills[:3]}"
    listing = conn.execute("SELECT kind, symbol FROM market.data_quality_log WHERE kind IN"
                           " ('listed', 'delisted') ORDER BY kind").fetchall()
    assert listing == [("delisted", delisted), ("listed", listed)], listing


def check_alerts(conn, listen, live_from, listed, delisted, delist_at):
    lines = [json.loads(x) for x in open(listen.out_path, encoding="utf-8").read().splitlines()
             if x.strip()]
    got = {(p["symbol"], p["rule"], p["open_time"]) for p in lines}
    assert len(got) == len(lines), "an alert was received twice"
    assert all(p["market"] == "usdm" and p["version"] == 2 for p in lines)
    hist = {(s, r, ot.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z"))
            for s, r, ot in conn.execute("SELECT symbol, rule, open_time FROM"
                                         " market.alert_history WHERE market = 'usdm'")}
    assert got == hist, "LISTEN lines differ from alert_history"
    stored = conn.execute("SELECT symbol, open_time FROM market.candles_1m WHERE open_time >= %s",
                          (EPOCH + timedelta(milliseconds=live_from),)).fetchall()
    listed_from = conn.execute("SELECT min(open_time) FROM market.alert_history WHERE symbol = %s",
                               (listed,)).fetchone()[0]
    want_hb = {(s, "heartbeat", t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z"))
               for s, t in stored if s != listed}
    got_hb = {k for k in got if k[1] == "heartbeat" and k[0] != listed}
    print(f"(4) alerts: {len(got)} received ({len(got_hb)} heartbeat); evaluated minutes "
          f"{len(want_hb)}; {listed} alerting from {listed_from}")
    assert got_hb == want_hb, (f"evaluated minutes differ: missing {sorted(want_hb - got_hb)[:5]}"
                               f", extra {sorted(got_hb - want_hb)[:5]}")
    to = conn.execute("SELECT max(open_time) FROM market.candles_1m").fetchone()[0]
    bt = conn.execute(
        "SELECT symbol, rule, open_time FROM market.backtest_rules("
        " (SELECT array_agg(name) FROM market.alert_rules WHERE enabled AND name <> 'heartbeat'),"
        " %s, %s, p_market => 'usdm', p_payload => false) WHERE symbol <> %s",
        (EPOCH + timedelta(milliseconds=live_from), to, listed)).fetchall()
    want = {(s, r, t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z"))
            for s, r, t in bt}
    rest = {k for k in got if k[1] != "heartbeat" and k[0] != listed}
    print(f"    presets: {len(rest)} live alerts, backtest_rules {len(want)}")
    assert rest == want, f"live alerts differ from market.backtest_rules: missing " \
                         f"{sorted(want - rest)[:5]}, extra {sorted(rest - want)[:5]}"
