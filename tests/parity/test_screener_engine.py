"""Screener engine parity: pg_ta 0.2.0's engine (ta._screener_state) against pg_ta 0.1.0's SQL.

The reference is the 0.1.0 data schema itself, applied from tests/fixtures/schema-0.1.0 (the
files of sql/ at commit 5dea118) to a fresh database on the 0.2.0 extension, with
`market.screener_cache = off` (0.1.0's live path then takes its lookup path, which calls only
ta.rsi_step/ta.macd_step; the removed ta.screener_windows_* are never reached) and
`market.evaluate_alerts = off`.

Data (real Binance candles from PG_TA_SHARED_DATA; never copied into the repository):
  * spot BTCUSDT 2021-04-24 .. 04-28 (klines12): the 284-minute outage of 2021-04-25 and the
    truncated kline at the halt;
  * spot BTCUSDT 2021-05-15 .. 05-22 (klines12): the crash week;
  * USD-M FILUSDT 2023-09 (klines12 dump): a month with 41 zero-volume minutes.
Each series is loaded into 0.1.0's market.candles_1m with one COPY (0.1.0's set-based
_state_recompute from a fresh base) except its last TAIL candles, which are then inserted one
candle per instrument per statement (0.1.0's per-candle _state_append_lookup path).

Checks:
  1. every column of every row of 0.1.0's market.screener_range(-infinity, infinity) equals
     the engine's row over the same candles: floats bit for bit (float8send), numerics by value
     and scale(), the rest by value; every metric column has non-NULL values in the data;
  2. the engine's chain after each candle equals 0.1.0's stored state (seq, open_time, close,
     cum_before + quote_volume, sum_log_return_sq, rsi_state, macd_state);
  3. an engine started from a day checkpoint of the full run, with 2879 candles of warm-up,
     gives the full run's ta.screener_state on every later row;
  4. a 0.1.0 catalog (CREATE EXTENSION pg_ta VERSION '0.1.0') works on the 0.2.0 library and
     the removed entry points raise a clear error.

The comparison catches a single changed operation in the engine. Measured while writing it:
(close/wa) * (spread/range) instead of ((close/wa) * spread) / range changes vcp in 13,596 rows;
S - (S9 - lr9*lr9) instead of (S - S9) + lr9*lr9 changes volatility_10 in 48,659 rows;
(close - open) * 100 / open instead of (close - open) / open * 100 changes every change_* and
range_* column in ~14,000-16,000 rows each; x * x instead of libm's pow(x, 2) (what LLVM would
fold pow into) changes volatility_10 in 3 rows.

Run:  PG_TA_TEST_DSN=postgresql://postgres@127.0.0.1:5441/postgres \
      .venv/bin/python -m pytest tests/parity/test_screener_engine.py -q -s
"""
from __future__ import annotations

import io
import os
import time
from datetime import datetime, timedelta, timezone

import pytest

from common import binance_data as bd
from common import pg

psycopg = pytest.importorskip("psycopg")

DB = "pg_ta_engine_parity"
HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA_010 = os.path.join(HERE, "..", "fixtures", "schema-0.1.0")
TAIL = int(os.environ.get("PG_TA_ENGINE_TAIL", "150"))
HISTORY = 2879
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

SERIES = [
    # (symbol in the 0.1.0 database, file under the shared data directory)
    ("BTCUSDT-2021-04", "spot/klines12/BTCUSDT-1m-2021-04-24_2021-04-28.csv.gz"),
    ("BTCUSDT-2021-05", "spot/klines12/BTCUSDT-1m-2021-05-15_2021-05-22.csv.gz"),
    ("FILUSDT-2023-09", "futures_um/klines12/FILUSDT-1m-2023-09.csv.gz"),
]

ENGINE = """ta._screener_state('spot', c.symbol, c.open_time, c.close_time, c.open, c.high, c.low,
                              c.close, c.quote_volume, {start}, {emit_from}, NULL)
            OVER (PARTITION BY c.symbol ORDER BY c.open_time
                  ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"""


def _ts(ms: int) -> str:
    return (EPOCH + timedelta(milliseconds=ms)).isoformat()


def _copy_rows(klines) -> str:
    buf = io.StringIO()
    for k in klines:
        buf.write("\t".join([k.open, k.high, k.low, k.close, k.volume, k.quote_volume,
                             str(k.trades), k.taker_buy_volume, k.taker_buy_quote_volume,
                             _ts(k.open_time), _ts(k.close_time)]) + "\n")
    return buf.getvalue()


@pytest.fixture(scope="module")
def db():
    pg.server_dsn()
    data_dir = bd.shared_data_dir()
    if not os.path.isdir(data_dir):
        pytest.skip(f"shared data not found at {data_dir}: the engine parity suite needs the "
                    "recorded Binance files (set PG_TA_SHARED_DATA)")
    t0 = time.monotonic()
    dsn = pg.fresh_database(DB)
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f"ALTER DATABASE {DB} SET market.screener_cache = off")
        c.execute(f"ALTER DATABASE {DB} SET market.evaluate_alerts = off")
    with psycopg.connect(dsn, autocommit=True) as c:
        for f in sorted(os.listdir(SCHEMA_010)):
            if f.endswith(".sql"):
                with c.transaction():
                    c.execute(open(os.path.join(SCHEMA_010, f)).read())
        # the 0.1.0 schema files create the library's current version of the extension
        assert c.execute("SELECT e.extversion = a.default_version FROM pg_extension e"
                         " JOIN pg_available_extensions a ON a.name = e.extname"
                         " WHERE e.extname = 'pg_ta'").fetchone()[0]
        tails = {}
        for symbol, rel in SERIES:
            klines = bd.read_klines12(os.path.join(data_dir, rel))
            assert len(klines) > HISTORY + TAIL + 1500, rel
            bulk, tails[symbol] = klines[:-TAIL], klines[-TAIL:]
            with c.transaction():
                with c.cursor().copy(
                        "COPY market.candles_1m (open, high, low, close, volume, quote_volume, trades,"
                        " taker_buy_volume, taker_buy_quote_volume, open_time, close_time, symbol)"
                        " FROM STDIN") as cp:
                    cp.write(_copy_rows(bulk).replace("\n", f"\t{symbol}\n"))
        # the tails: one candle of every instrument per statement (0.1.0's live path)
        for i in range(TAIL):
            rows = [(s, tails[s][i]) for s, _ in SERIES]
            values = ", ".join(["(%s, %s::timestamptz, %s::timestamptz, %s, %s, %s, %s, %s, %s, %s, %s, %s)"] * len(rows))
            args = []
            for s, k in rows:
                args += [s, _ts(k.open_time), _ts(k.close_time), k.open, k.high, k.low, k.close,
                         k.volume, k.quote_volume, k.trades, k.taker_buy_volume, k.taker_buy_quote_volume]
            c.execute("INSERT INTO market.candles_1m (symbol, open_time, close_time, open, high, low,"
                      " close, volume, quote_volume, trades, taker_buy_volume, taker_buy_quote_volume)"
                      f" VALUES {values}", args)
        n_state = c.execute("SELECT count(*) FROM market.screener_state").fetchone()[0]
        n_candles = c.execute("SELECT count(*) FROM market.candles_1m").fetchone()[0]
        assert n_state == n_candles
        # the truncated kline and the outage are in the data
        assert c.execute("SELECT count(*) FROM market.candles_1m WHERE close_time - open_time"
                         " <> interval '59.999 seconds'").fetchone()[0] >= 1
        assert c.execute("SELECT max(open_time - lag) FROM (SELECT open_time, lag(open_time) OVER"
                         " (PARTITION BY symbol ORDER BY open_time) FROM market.candles_1m) q"
                         ).fetchone()[0] == timedelta(minutes=285)
        assert c.execute("SELECT count(*) FROM market.candles_1m WHERE quote_volume = 0").fetchone()[0] >= 41
        print(f"\n[time] 0.1.0 schema + {n_candles} candles ({TAIL} per instrument one by one):"
              f" {time.monotonic() - t0:.1f} s")
        t1 = time.monotonic()
        c.execute("CREATE TABLE engine AS SELECT c.symbol, c.open_time, "
                  + ENGINE.format(start="NULL", emit_from="NULL") + " AS st FROM market.candles_1m c")
        c.execute("CREATE UNIQUE INDEX ON engine (symbol, open_time)")
        c.execute("CREATE TABLE old AS SELECT * FROM market.screener_range('-infinity', 'infinity')")
        c.execute("CREATE UNIQUE INDEX ON old (symbol, open_time)")
        c.execute("ANALYZE engine; ANALYZE old")
        print(f"[time] engine over all candles + 0.1.0 screener_range: {time.monotonic() - t1:.1f} s")
    yield dsn
    pg.drop_database(DB)


def _columns(c) -> list[tuple[str, str]]:
    return c.execute("""SELECT a.attname, format_type(a.atttypid, a.atttypmod)
                          FROM pg_attribute a JOIN pg_type t ON t.typrelid = a.attrelid
                         WHERE t.oid = 'market.screener_row'::regtype AND a.attnum > 0
                           AND NOT a.attisdropped ORDER BY a.attnum""").fetchall()


def test_every_column_equals_0_1_0(db):
    with psycopg.connect(db) as c:
        cols = _columns(c)
        assert len(cols) == 65 and cols[0] == ("symbol", "text")
        # the 0.2.0 row has the same columns after `market`
        new_cols = c.execute("""SELECT a.attname, format_type(a.atttypid, a.atttypmod)
                                  FROM pg_attribute a JOIN pg_type t ON t.typrelid = a.attrelid
                                 WHERE t.oid = 'ta.screener_row'::regtype AND a.attnum > 0
                                 ORDER BY a.attnum""").fetchall()
        assert new_cols[0] == ("market", "text") and new_cols[1:] == cols

        def differs(name: str, typ: str) -> str:
            o, n = f"o.{name}", f"((e.st).\"row\").{name}"
            if typ == "double precision":
                return (f"NOT ({o} IS NOT DISTINCT FROM {n}"
                        f" AND float8send({o}) IS NOT DISTINCT FROM float8send({n}))")
            if typ == "numeric":
                return (f"NOT ({o} IS NOT DISTINCT FROM {n}"
                        f" AND scale({o}) IS NOT DISTINCT FROM scale({n}))")
            return f"{o} IS DISTINCT FROM {n}"

        mism = ", ".join(f"count(*) FILTER (WHERE {differs(n, t)})" for n, t in cols)
        nonnull = ", ".join(f"count(o.{n})" for n, _ in cols)
        row = c.execute(f"SELECT count(*), count(e.symbol), {mism}, {nonnull}"
                        " FROM old o LEFT JOIN engine e USING (symbol, open_time)").fetchone()
        total, joined = row[0], row[1]
        mismatches = dict(zip([n for n, _ in cols], row[2:2 + len(cols)]))
        filled = dict(zip([n for n, _ in cols], row[2 + len(cols):]))
        assert total == c.execute("SELECT count(*) FROM market.candles_1m").fetchone()[0]
        assert joined == total == c.execute("SELECT count(*) FROM engine").fetchone()[0]
        bad = {k: v for k, v in mismatches.items() if v}
        print(f"\n{total} rows x {len(cols)} columns compared; mismatches: {bad or 'none'}")
        assert not bad
        # the data exercises every metric (and its NULL warm-up)
        empty = [k for k, v in filled.items() if v == 0]
        assert not empty, empty
        assert filled["vol_ratio_1d"] < total and filled["fib_pivot"] < total


def test_chain_equals_0_1_0_state(db):
    with psycopg.connect(db) as c:
        row = c.execute("""
            SELECT count(*),
                   count(*) FILTER (WHERE ((e.st).chain).candles <> s.seq),
                   count(*) FILTER (WHERE ((e.st).chain).open_time <> s.open_time),
                   count(*) FILTER (WHERE float8send(((e.st).chain).close) <> float8send(s.close)),
                   count(*) FILTER (WHERE NOT (((e.st).chain).cum_quote_volume = s.cum_before + s.quote_volume
                                    AND scale(((e.st).chain).cum_quote_volume) = scale(s.cum_before + s.quote_volume))),
                   count(*) FILTER (WHERE float8send(((e.st).chain).sum_log_return_sq)
                                          <> float8send(s.sum_log_return_sq)),
                   count(*) FILTER (WHERE ((e.st).chain).rsi_state::text IS DISTINCT FROM s.rsi_state::text),
                   count(*) FILTER (WHERE ((e.st).chain).macd_state::text IS DISTINCT FROM s.macd_state::text)
              FROM engine e JOIN market.screener_state s USING (symbol, open_time)""").fetchone()
        print(f"\nchains compared: {row[0]}; mismatches (candles, open_time, close, cum, sum, rsi, macd): {row[1:]}")
        assert row[0] > 0 and row[1:] == (0,) * 7


def test_day_checkpoint_start_with_warm_up_equals_full_run(db):
    with psycopg.connect(db) as c:
        c.execute("""
            CREATE TEMP TABLE pick AS
            WITH d AS (SELECT symbol, open_time, (st).day_checkpoint AS cp,
                              row_number() OVER (PARTITION BY symbol ORDER BY open_time) AS n
                         FROM engine)
            SELECT p.symbol, p.open_time AS t0, p.cp, p.n,
                   (SELECT d.open_time FROM d WHERE d.symbol = p.symbol AND d.n = p.n + %s) AS emit_from
              FROM (SELECT DISTINCT ON (symbol) * FROM d
                     WHERE n > 1 AND (cp).candles IS NOT NULL ORDER BY symbol, open_time) p""",
                  (HISTORY,))
        picks = c.execute("SELECT symbol, n, emit_from FROM pick ORDER BY symbol").fetchall()
        assert len(picks) == len(SERIES) and all(p[2] is not None for p in picks), picks
        c.execute("CREATE TEMP TABLE resumed AS SELECT c.symbol, c.open_time, p.emit_from, "
                  + ENGINE.format(start="p.cp", emit_from="p.emit_from")
                  + " AS st FROM market.candles_1m c JOIN pick p ON p.symbol = c.symbol AND c.open_time >= p.t0")
        row = c.execute("""
            SELECT count(*), count(*) FILTER (WHERE r.st::text = e.st::text),
                   (SELECT count(*) FROM market.candles_1m c JOIN pick p USING (symbol)
                     WHERE c.open_time >= p.emit_from)
              FROM resumed r JOIN engine e USING (symbol, open_time)
             WHERE r.open_time >= r.emit_from""").fetchone()
        print(f"\nresumed from day checkpoints {picks}: {row[1]} of {row[0]} rows equal the full run")
        assert row[0] == row[2] > 1000 and row[1] == row[0]
        # before emit_from only first-of-day rows are emitted
        extra = c.execute("""SELECT count(*) FILTER (WHERE (st).day_checkpoint IS NULL)
                               FROM resumed WHERE open_time < emit_from AND ((st).chain).candles IS NOT NULL"""
                          ).fetchone()[0]
        assert extra == 0


def test_0_1_0_catalog_on_the_new_library():
    """CREATE EXTENSION pg_ta VERSION '0.1.0' (extension/sql/pg_ta--0.1.0.sql, installed by
    .ci/install-ext) resolves every C symbol; the removed functions raise a clear error."""
    dsn = pg.fresh_database("pg_ta_catalog_010")
    try:
        with psycopg.connect(dsn, autocommit=True) as c:
            versions = [r[0] for r in c.execute(
                "SELECT version FROM pg_available_extension_versions WHERE name = 'pg_ta'")]
            assert "0.1.0" in versions, (
                f"pg_ta--0.1.0.sql is not installed (versions {versions}); install with .ci/install-ext")
            c.execute("CREATE EXTENSION pg_ta VERSION '0.1.0'")
            assert c.execute("SELECT (ta.rsi_step(NULL, 1, 14))[2]").fetchone()[0] == 7101.0
            with pytest.raises(psycopg.errors.FeatureNotSupported) as e:
                c.execute("SELECT ta.screener_windows_ready('BTCUSDT', 1, 1)")
            assert ("ta.screener_windows_ready was removed in pg_ta 0.2.0; run ALTER EXTENSION "
                    "pg_ta UPDATE (ta-feed migrate does it)") in str(e.value)
    finally:
        pg.drop_database("pg_ta_catalog_010")
