"""Rule-compiler fuzz test (issue 8): nothing a SQL user types into a rule crashes the server,
runs as someone else, or means different things under different settings.

Generated hostile expressions (fixed seed, PG_TA_FUZZ_SEED overrides it) go, as login roles
created here, to the three entry points of the rule language:

  * ``ta.rule_compile(expr, ROW_TYPE, config)`` as a ``ta_reader`` login;
  * ``market.backtest_expression(expr, ...)`` as the same ``ta_reader`` login (compiles and
    EXECUTEs the compiled SQL over stored candles);
  * ``INSERT INTO market.alert_rules`` as a ``ta_rule_admin`` login, inside a transaction that
    is rolled back (the compile trigger, then the regeneration of the owner's evaluator
    ``market._fire_rules``); that login is also a ``ta_writer``, so for the literal cases the
    same transaction writes a candle and the owner's trigger evaluates the hostile rule.

Families: deep nesting of every construct (parentheses, NOT, unary signs, every function,
arguments, BETWEEN and IN operands, boolean comparisons; 23 to 100,000 levels), long inputs
(60,000-term AND/OR chains, 1 MB literals, identifiers and numbers, 50,000-item IN lists, big
configs), every quoting form (``'a\\'``, ``'it''s'``, E/U&/dollar quotes, backslashes, quotes
next to comment starts, unicode, injection payloads from the security review), numbers in every
spelling, hostile config values, and random token soup.

Pass criteria:
  1. every call ends with a result or an ERROR whose SQLSTATE is one the rule language
     documents (compile: 42601 42703 42883 42804 22023 22003 22021 54000 54001; running an accepted rule:
     22003 numeric overflow, 54000/54001), within the per-call statement_timeout (10 s);
  2. a rule that compiles also runs: its SQL never fails to parse (no 42xxx at run time);
  3. literals mean the same text under ``standard_conforming_strings`` on and off: the
     compiled ``symbol = <literal>`` is true exactly for that text, evaluated both ways, in a
     backtest and in the owner's live evaluation; the payloads that tried to break out of a
     literal never ran (the session setting they would set stays unset);
  4. **the server never restarted**: the server log (PG_TA_TEST_SERVER_LOG, exported by
     .ci/test) gets no crash line during the test (``server process (PID ...) was terminated by
     signal``, ``terminating any other active server processes``, ``database system was
     interrupted``, ``all server processes terminated``), and no connection is lost.

Row type: PG_TA_RULE_ROW_TYPE, else ``ta.screener_row`` if it exists, else
``market.screener_row`` (the data schema is moving from the latter to the former).
Runtime: about a minute (PG_TA_FUZZ_SOUP sets the number of random-soup cases, default 1500).
Run:  PG_TA_TEST_DSN=postgresql://postgres@127.0.0.1:5434/postgres \\
      PG_TA_TEST_SERVER_LOG=.data/test/postgresql.log \\
      .venv/bin/python -m pytest tests/security/test_rule_fuzz.py -q -s
"""
from __future__ import annotations

import json
import os
import random
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pytest

from common import pg

psycopg = pytest.importorskip("psycopg")
from psycopg import conninfo, sql  # noqa: E402

DB = "pg_ta_rule_fuzz"
READER = "ta_fuzz_reader"
ADMIN = "ta_fuzz_admin"
SEED = int(os.environ.get("PG_TA_FUZZ_SEED", "20260801"))
SOUP = int(os.environ.get("PG_TA_FUZZ_SOUP", "1500"))
STATEMENT_TIMEOUT_MS = 10_000
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
MINUTES = 20
# the marker an escaped payload would set; it must stay unset
PWNED = "pg_ta_fuzz.pwned"

COMPILE_SQLSTATES = {"42601", "42703", "42883", "42804", "22023", "22003", "22021", "54000", "54001"}
RUN_SQLSTATES = {"22003", "54000", "54001"}
CRASH = re.compile(r"server process \(PID \d+\) was terminated by signal"
                   r"|terminating any other active server processes"
                   r"|database system was interrupted"
                   r"|all server processes terminated")

COLUMNS_NUM = ["price", "change_5m", "change_1h", "vol_5m", "vol_1h", "rsi_14", "candles"]
FUNCS1 = ["abs", "ln", "sqrt", "sign", "round"]
HOSTILE_TEXT = [
    "a\\", "\\", "\\\\", "\\'", "'", "''", "it's", "a\\'b", "\\x41", "\\u0041", "\\n", "\n", "\t",
    "--", "x--y", "/*", "*/", "/* x */", ";", "$$", "$1", "$q$", "p_symbols", "p_seqs", "E'x'",
    "%s", "%L", "\"", "m.\"price\"", "é", "币安人生USDT", "\u202eRTL", "zero\u200bwidth", "😀",
    "e\u0301", "\\' OR true --", "a\\' OR symbol = ') OR true --",
]


def rule_literal(text: str) -> str:
    """The rule language's spelling of a string: quotes doubled, backslash an ordinary character."""
    return "'" + text.replace("'", "''") + "'"


def injection_payloads() -> list[str]:
    """Rules that try to leave a string literal (issue 8 item 1) and set PWNED as the owner."""
    call = f"pg_catalog.set_config($p${PWNED}$p$, current_user, false) IS NOT NULL"
    return [
        f"symbol = 'a\\' OR symbol = ')) OR {call} OR ((true --'",
        f"symbol = 'a\\' OR symbol = ') OR {call} OR (true' OR symbol = '\\'",
        f"symbol = '\\' OR symbol = ' OR {call} --'",
        f"symbol IN ('a\\', ') OR {call} OR (''x'' = ''x')",
        f"symbol = 'x\\\\' OR symbol = ')) OR {call} OR ((true --'",
        f"symbol = E'\\'' OR {call} --'",
        f"symbol = $$x$$ OR {call}",
        f"symbol = U&'\\0027' OR {call} --'",
        f"symbol = 'a'/*' OR {call} --*/",
        f"symbol = 'a' -- ' OR {call}",
        f"symbol = 'a\\'; SELECT {call}; --'",
        f"coalesce(symbol, 'a\\') = ') OR {call} OR (''' ",
    ]


# --- generated inputs --------------------------------------------------------------------------

def nesting_cases() -> list[tuple[str, str]]:
    """(family, expression): every recursive construct of the grammar, nested d levels deep."""
    builders = {
        "parens": lambda d: "(" * d + "price" + ")" * d + " > 0",
        "not": lambda d: "not " * d + "price > 0",
        "not_parens": lambda d: "not (" * d + "true" + ")" * d,
        "unary_minus": lambda d: "- " * d + "price > 0",
        "unary_minus_parens": lambda d: "-(" * d + "price" + ")" * d + " > 0",
        "unary_plus": lambda d: "+" * d + "price > 0",
        "greatest": lambda d: "greatest(price, " * d + "1" + ")" * d + " > 0",
        "least": lambda d: "least(1, " * d + "price" + ")" * d + " > 0",
        "coalesce_num": lambda d: "coalesce(" * d + "price" + ", 1)" * d + " > 0",
        "coalesce_bool": lambda d: "coalesce(" * d + "true" + ")" * d,
        "round2": lambda d: "round(" * d + "price" + ", 2)" * d + " > 0",
        "arg_expr": lambda d: "abs(price + " * d + "1" + ")" * d + " > 0",
        "div": lambda d: "(price / " * d + "2" + ")" * d + " > 0",
        "bool_eq": lambda d: "((price > 0) = " * d + "true" + ")" * d,
        "between": lambda d: "price between " + "(" * d + "1" + ")" * d + " and 2",
        "in_item": lambda d: "price in (" + "(" * d + "1" + ")" * d + ", 2)",
        "is_null": lambda d: "(" * d + "price is null" + ")" * d,
    }
    for f in FUNCS1:
        builders[f] = lambda d, f=f: f"{f}(" * d + "price" + ")" * d + " > 0"
    builders["ln_sqrt"] = lambda d: "ln(sqrt(" * (d // 2) + "price" + "))" * (d // 2) + " > 0"
    out = []
    for name, b in builders.items():
        for d in (23, 50, 101, 1000, 10_000, 100_000):
            out.append((f"nest:{name}:{d}", b(d)))
    return out


def long_cases() -> list[tuple[str, str, dict]]:
    """(family, expression, config): inputs far beyond anything a person types."""
    big_cfg = {f"k{i}": i for i in range(20_000)}
    return [
        ("long:and_60k", " AND ".join(f"price > {i}" for i in range(60_000)), {}),
        ("long:or_100k", " OR ".join("rsi_14 < 30" for _ in range(100_000)), {}),
        ("long:sum_100k", "1" + " + 1" * 100_000 + " > 0", {}),
        ("long:product_20k", "vol_5m" + " * vol_5m" * 20_000 + " > 0", {}),
        ("long:literal_1mb", "symbol = '" + "x" * 1_000_000 + "'", {}),
        ("long:literal_quotes", "symbol = '" + "''" * 300_000 + "'", {}),
        ("long:literal_backslashes", "symbol = '" + "\\" * 300_000 + "'", {}),
        ("long:identifier", "a" * 100_000 + " > 0", {}),
        ("long:number", "price > " + "9" * 100_000, {}),
        ("long:fraction", "price > 0." + "0" * 100_000 + "1", {}),
        ("long:in_list", "symbol IN (" + ", ".join(f"'S{i}'" for i in range(50_000)) + ")", {}),
        ("long:whitespace", " " * 1_000_000 + "price > 0", {}),
        ("long:params", " AND ".join(f"price > $k{i}" for i in range(20_000)), big_cfg),
        ("long:small_ok", " AND ".join(f"price > {i}" for i in range(50)), {}),
    ]


def number_cases() -> list[tuple[str, str, dict]]:
    nums = ["0", "007", ".5", "5.", "1.e5", "1e5", "1E+5", "1e-5", "1e1000", "1e-1000", "1e1001",
            "1e99999999999", "0x10", "1_000", "1..2", "1e", "1e+", "9" * 400, "0." + "1" * 400,
            "2147483648", "9223372036854775808", "-0", "- 0", "1 .5", "1.5.5", ".", "..5"]
    out = [(f"num:{n}", f"price > {n}", {}) for n in nums]
    cfgs = [1e308, -1e308, 5e-324, 1.6, -15, 12345678901234567890, "1e1000", "1); DROP TABLE x",
            "1 OR true", "--1", "0x10", " -0.5 ", "1e99999", "NaN", "Infinity", "", None, True,
            [1], {"a": 1}, "1'", "1\\", "½"]
    out += [(f"param:{json.dumps(v)[:20]}", "price > $p AND price < -$p", {"p": v}) for v in cfgs]
    return out


def quoting_cases() -> list[tuple[str, str, dict]]:
    forms = [
        "symbol = 'a\\'", "symbol = 'it''s'", "symbol = E'a\\'b'", "symbol = e'x'",
        "symbol = U&'\\0041'", "symbol = u&'x'", "symbol = $$x$$", "symbol = $q$x$q$",
        "symbol = 'a' 'b'", "symbol = 'a'\n'b'", "symbol = N'x'", "symbol = B'01'",
        "symbol = X'41'", "symbol = 'a'--'", "symbol = 'a'/*'*/", "symbol = '--'",
        "symbol = '/*'", "symbol = '\\\\'", "symbol = ''''", "symbol = '''", "symbol = '",
        "symbol = 'x' || 'y'", "symbol = 'x'::text", "symbol = \"symbol\"", "symbol = `x`",
        "symbol = 'abc\u0000def'".replace("\u0000", "\\0"), "symbol = '\u202e'",
    ]
    out = [(f"quote:{i}", f, {}) for i, f in enumerate(forms)]
    out += [(f"inject:{i}", p, {}) for i, p in enumerate(injection_payloads())]
    return out


SOUP_TOKENS = (
    COLUMNS_NUM + ["symbol", "open_time", "true", "false", "null", "and", "or", "not", "is",
                   "between", "in", "select", "from", "pg_sleep", "e", "u", "x", "case", "when",
                   "then", "end", "cast", "as", "operator", "pg_catalog", "ta"]
    + FUNCS1 + ["greatest", "least", "coalesce", "nullif", "power", "exp"]
    + ["0", "1", "2.5", ".5", "1e5", "1e999", "-1", "$p", "$", "$1", "$$", "$q$"]
    + [rule_literal(t) for t in HOSTILE_TEXT[:12]] + ["'", "''", "'a\\'", "E'", "U&'"]
    + list("()(),,+-*/<>=!;:.[]\"'`\\@#%^&|~?{}") + ["<=", ">=", "<>", "!=", "::", "||", "--",
                                                     "/*", "*/", "=>", ":=", "\n", "\t", "é"]
)


def soup_cases(rng: random.Random) -> list[tuple[str, str, dict]]:
    out = []
    for i in range(SOUP):
        n = rng.choice([1, 2, 3, 5, 8, 13, 30, 100, 400])
        toks = [rng.choice(SOUP_TOKENS) for _ in range(n)]
        sep = rng.choice([" ", "", "  "])
        out.append((f"soup:{i}", sep.join(toks), {"p": rng.choice([1, -2.5, "3", "x"])}))
    # syntactically valid random trees, to get past the parser into type checking and emission
    for i in range(SOUP // 4):
        out.append((f"tree:{i}", random_bool(rng, 6), {"p": 1.5}))
    return out


def random_num(rng: random.Random, d: int) -> str:
    if d <= 0 or rng.random() < 0.3:
        return rng.choice(COLUMNS_NUM + ["1", "0", "2.5", "$p", "null", "1e3"])
    k = rng.randrange(7)
    a, b = random_num(rng, d - 1), random_num(rng, d - 1)
    if k == 0:
        return f"({a} {rng.choice('+-*/')} {b})"
    if k == 1:
        return f"-{a}" if not a.startswith("-") else f"- {a}"
    if k == 2:
        return f"{rng.choice(FUNCS1)}({a})"
    if k == 3:
        return f"{rng.choice(['greatest', 'least', 'coalesce'])}({a}, {b})"
    if k == 4:
        return f"round({a}, {rng.choice(['0', '2', '-1', '$p', '40', a])})"
    return f"({a})"


def random_bool(rng: random.Random, d: int) -> str:
    k = rng.randrange(8)
    if d <= 0 or k == 0:
        return f"{random_num(rng, 2)} {rng.choice(['<', '<=', '>', '>=', '=', '<>', '!='])} {random_num(rng, 2)}"
    if k == 1:
        return f"({random_bool(rng, d - 1)} {rng.choice(['AND', 'OR'])} {random_bool(rng, d - 1)})"
    if k == 2:
        return f"NOT {random_bool(rng, d - 1)}"
    if k == 3:
        return f"{random_num(rng, 2)} {rng.choice(['', 'NOT '])}BETWEEN {random_num(rng, 1)} AND {random_num(rng, 1)}"
    if k == 4:
        items = ", ".join(random_num(rng, 1) for _ in range(rng.randrange(1, 5)))
        return f"{random_num(rng, 2)} {rng.choice(['', 'NOT '])}IN ({items})"
    if k == 5:
        lit = rule_literal(rng.choice(HOSTILE_TEXT))
        return rng.choice([f"symbol = {lit}", f"symbol <> {lit}", f"symbol IN ({lit}, 'BTCUSDT')"])
    if k == 6:
        return f"({random_bool(rng, d - 1)}) IS {rng.choice(['', 'NOT '])}{rng.choice(['TRUE', 'FALSE', 'NULL'])}"
    return f"coalesce({random_bool(rng, d - 1)}, false)"


# --- harness -----------------------------------------------------------------------------------

@dataclass
class Report:
    calls: int = 0
    outcomes: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)
    lost: list = field(default_factory=list)

    def fail(self, case: str, what: str) -> None:
        self.failures.append(f"{case}: {what}")

    def count(self, key: str) -> None:
        self.outcomes[key] = self.outcomes.get(key, 0) + 1

    def summary(self) -> str:
        """Outcome counts, then the failures grouped by family (the case name up to its first
        ':' or ' '), with the first example of each."""
        lines = [f"{self.calls} calls; outcomes: " +
                 ", ".join(f"{k} x{v}" for k, v in sorted(self.outcomes.items()))]
        if self.lost:
            lines.append(f"{len(self.lost)} connections lost")
        groups: dict[str, list[str]] = {}
        for f in self.failures:
            fam = re.split(r"[: ]", f, maxsplit=2)
            key = ":".join(fam[:2]) if fam[0] in ("nest", "long", "num", "param", "quote", "inject") else fam[0]
            groups.setdefault(key, []).append(f)
        for key, fs in sorted(groups.items()):
            lines.append(f"  {key}: {len(fs)} failures, e.g. {fs[0][:300]}")
        return "\n".join(lines)


def row_type() -> str:
    env = os.environ.get("PG_TA_RULE_ROW_TYPE")
    if env:
        return env
    with psycopg.connect(pg.dsn_for(DB), autocommit=True) as c:
        for t in ("ta.screener_row", "market.screener_row"):
            if c.execute("SELECT to_regtype(%s)", (t,)).fetchone()[0] is not None:
                return t
    pytest.fail("neither ta.screener_row nor market.screener_row exists after migrate")


def server_log() -> str:
    path = os.environ.get("PG_TA_TEST_SERVER_LOG")
    if not path:
        pytest.skip("PG_TA_TEST_SERVER_LOG is not set (the test server's log file; .ci/test sets "
                    "it): crashes are counted in the server log")
    if not os.access(path, os.R_OK):
        pytest.fail(f"PG_TA_TEST_SERVER_LOG={path} is not readable")
    return path


def new_crash_lines(path: str, offset: int) -> list[str]:
    with open(path, "rb") as f:
        f.seek(offset)
        text = f.read().decode("utf-8", "replace")
    return [line for line in text.splitlines() if CRASH.search(line)]


class Session:
    """One login connection that survives server restarts (it reconnects and records them)."""

    def __init__(self, user: str, report: Report):
        self.user, self.report = user, report
        self.conn = None
        self.connect()

    def connect(self) -> None:
        dsn = conninfo.make_conninfo(pg.dsn_for(DB), user=self.user,
                                     options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}")
        deadline = time.monotonic() + 120
        while True:
            try:
                self.conn = psycopg.connect(dsn, autocommit=True)
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)  # crash recovery in progress

    def run(self, case: str, statements: list[tuple[str, tuple]]):
        """Run statements in order; returns ("ok", rows of the last) or ("error", sqlstate,
        message) or ("lost", message).  A lost connection is recorded and reopened."""
        self.report.calls += 1
        try:
            rows = None
            for q, params in statements:
                cur = self.conn.execute(q, params)
                if cur.description:
                    rows = cur.fetchall()
            return ("ok", rows)
        except psycopg.Error as e:
            if not self.conn.closed and not self.conn.broken:
                if self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    self.conn.execute("ROLLBACK")
                if e.sqlstate is None:  # a client-side error: a bug of this test
                    return ("client", f"{type(e).__name__}: {e}"[:200])
                return ("error", e.sqlstate, (e.diag.message_primary or "")[:200])
            self.report.lost.append(case)
            try:
                self.conn.close()
            except Exception:
                pass
            time.sleep(1)
            self.connect()
            return ("lost", str(e).strip().splitlines()[0] if str(e).strip() else repr(e))

    def close(self) -> None:
        self.conn.close()


@pytest.fixture(scope="module")
def fuzz_db():
    log = server_log()
    pg.fresh_database(DB)
    pg.migrate(DB)
    with psycopg.connect(pg.dsn_for(DB), autocommit=True) as c:
        for role, groups in ((READER, "ta_reader"), (ADMIN, "ta_rule_admin, ta_writer")):
            c.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
            c.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE " + groups).format(sql.Identifier(role)))
        symbols = ["BTCUSDT"] + HOSTILE_TEXT
        loaded = load_candles(c, symbols)
    yield {"log": log, "row_type": row_type(), "symbols": loaded}
    pg.drop_database(DB)
    with psycopg.connect(pg.server_dsn(), autocommit=True) as c:
        for role in (READER, ADMIN):
            c.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def load_candles(c, symbols: list[str]) -> set[str]:
    """MINUTES flat candles per symbol (as the owner); returns the symbols that could be stored
    (the data schema may constrain symbol names)."""
    loaded = set()
    for s in symbols:
        try:
            with c.transaction():
                c.execute("SET LOCAL market.evaluate_alerts = off")
                c.execute(
                    """INSERT INTO market.candles_1m (symbol, open_time, close_time, open, high, low,
                                                      close, volume, quote_volume, trades,
                                                      taker_buy_volume, taker_buy_quote_volume)
                       SELECT %s, t, t + interval '59.999 seconds', 100, 101, 99, 100.5, 10, 1005, 3, 5, 502
                         FROM generate_series(%s::timestamptz, %s::timestamptz, interval '1 minute') t""",
                    (s, T0, T0 + timedelta(minutes=MINUTES - 1)))
            loaded.add(s)
        except psycopg.errors.Error as e:
            print(f"candles for {s!r} not stored ({e.sqlstate}: {e.diag.message_primary}); "
                  "literal backtests for it check only on/off agreement")
    return loaded


def check_outcome(rep: Report, case: str, where: str, res, allowed: set[str]) -> None:
    if res[0] == "ok":
        rep.count(f"{where}:ok")
    elif res[0] == "error":
        rep.count(f"{where}:{res[1]}")
        if res[1] not in allowed:
            rep.fail(case, f"{where}: unexpected SQLSTATE {res[1]}: {res[2]}")
    elif res[0] == "client":
        rep.fail(case, f"{where}: client error {res[1]}")
    else:
        rep.count(f"{where}:LOST")
        rep.fail(case, f"{where}: connection lost ({res[1]})")


def pwned(s: Session) -> str | None:
    res = s.run("pwned?", [("SELECT current_setting(%s, true)", (PWNED,))])
    return res[1][0][0] if res[0] == "ok" else None


def throw(rep: Report, reader: Session, admin: Session, rt: str, case: str, expr: str,
          cfg: dict, deep: bool) -> None:
    """compile (reader); if deep: backtest_expression (reader) and INSERT INTO alert_rules
    (admin, rolled back)."""
    cfg_json = json.dumps(cfg)
    res = reader.run(case, [("SELECT ta.rule_compile(%s, %s, %s::jsonb)", (expr, rt, cfg_json))])
    check_outcome(rep, case, "compile", res, COMPILE_SQLSTATES)
    compiled_ok = res[0] == "ok"
    if not deep:
        return
    res = reader.run(case, [("SELECT count(*) FROM market.backtest_expression(%s, %s, %s, NULL, %s::jsonb)",
                             (expr, T0, T0 + timedelta(minutes=MINUTES), cfg_json))])
    check_outcome(rep, case, "backtest", res,
                  RUN_SQLSTATES if compiled_ok else COMPILE_SQLSTATES | RUN_SQLSTATES)
    res = admin.run(case, [
        ("BEGIN", ()),
        ("INSERT INTO market.alert_rules (name, expression, config) VALUES (%s, %s, %s::jsonb)",
         (f"fuzz_{rep.calls}", expr, cfg_json)),
        ("ROLLBACK", ()),
    ])
    check_outcome(rep, case, "alert_rules", res,
                  RUN_SQLSTATES if compiled_ok else COMPILE_SQLSTATES)
    for s in (reader, admin):
        if pwned(s) is not None:
            rep.fail(case, f"payload escaped a literal: {PWNED} = {pwned(s)!r} in {s.user}'s session")


def test_rule_fuzz(fuzz_db):
    log, rt = fuzz_db["log"], fuzz_db["row_type"]
    offset = os.path.getsize(log)
    rng = random.Random(SEED)
    rep = Report()
    reader, admin = Session(READER, rep), Session(ADMIN, rep)
    t0 = time.monotonic()
    cases = [(n, e, {}) for n, e in nesting_cases()] + long_cases() + number_cases() + quoting_cases()
    for scs in ("on", "off"):
        for s in (reader, admin):
            s.run("set", [(f"SET standard_conforming_strings = {scs}", ())])
        for name, expr, cfg in cases:
            throw(rep, reader, admin, rt, f"{name} [scs={scs}]", expr, cfg, deep=True)
    for name, expr, cfg in soup_cases(rng):
        throw(rep, reader, admin, rt, name, expr, cfg, deep=name.startswith("tree:") or len(expr) < 60)
    reader.close()
    admin.close()
    crashes = new_crash_lines(log, offset)
    print(f"\nrule fuzz: seed {SEED}, {time.monotonic() - t0:.1f} s\n{rep.summary()}")
    assert not crashes, (f"the server crashed {len(crashes)} times:\n" + "\n".join(crashes[:20])
                         + "\n" + rep.summary())
    assert not rep.lost and not rep.failures, rep.summary()


def test_literals_mean_the_same_under_both_settings(fuzz_db):
    """symbol = <literal of T> holds exactly for symbol T, with standard_conforming_strings on
    and off: evaluated directly on a row, in a backtest, and in the owner's live evaluation."""
    log, rt, stored = fuzz_db["log"], fuzz_db["row_type"], fuzz_db["symbols"]
    offset = os.path.getsize(log)
    rep = Report()
    reader, admin = Session(READER, rep), Session(ADMIN, rep)
    texts = HOSTILE_TEXT + ["plain"]
    for i, text in enumerate(texts):
        case = f"literal {text!r}"
        expr = f"symbol = {rule_literal(text)}"
        res = reader.run(case, [("SELECT ta.rule_compile(%s, %s, '{}')", (expr, rt))])
        if res[0] != "ok":
            rep.fail(case, f"a valid literal was rejected: {res}")
            continue
        compiled = res[1][0][0]
        seen = {}
        for scs in ("on", "off"):
            # 1. directly, on rows of the row type
            q = (f"SET standard_conforming_strings = {scs}",
                 f"SELECT (\n{compiled.replace('%', '%%')}\n) FROM pg_catalog.jsonb_populate_record(NULL::{rt}, %s::jsonb) m")
            got = []
            for sym in (text, text + "x", "BTCUSDT"):
                r = reader.run(case, [(q[0], ()), (q[1], (json.dumps({"symbol": sym, "price": 1}),))])
                got.append(r[1][0][0] if r[0] == "ok" else f"ERROR {r[1:]}")
            if got != [True, False, False]:
                rep.fail(case, f"scs={scs}: compiled {compiled!r} on rows (T, T+'x', BTCUSDT) gave {got}")
            # 2. backtest over stored candles
            r = reader.run(case, [(q[0], ()), (
                "SELECT array_agg(DISTINCT symbol) FROM market.backtest_expression(%s, %s, %s)",
                (expr, T0, T0 + timedelta(minutes=MINUTES)))])
            seen[scs] = r[1][0][0] if r[0] == "ok" else f"ERROR {r[1:]}"
            want = [text] if text in stored else None
            if seen[scs] != want:
                rep.fail(case, f"scs={scs}: backtest fired for {seen[scs]!r}, want {want!r}")
            # 3. live: save the rule and write the next candle of T (owner's trigger), rolled back
            if text in stored:
                r = admin.run(case, [
                    ("BEGIN", ()),
                    (f"SET LOCAL standard_conforming_strings = {scs}", ()),
                    ("INSERT INTO market.alert_rules (name, expression) VALUES (%s, %s)",
                     (f"lit_{i}_{scs}", expr)),
                    ("""INSERT INTO market.candles_1m (symbol, open_time, close_time, open, high, low,
                                                       close, volume, quote_volume, trades,
                                                       taker_buy_volume, taker_buy_quote_volume)
                        VALUES (%s, %s, %s, 100, 101, 99, 100.5, 10, 1005, 3, 5, 502)""",
                     (text, T0 + timedelta(minutes=MINUTES), T0 + timedelta(minutes=MINUTES, seconds=59.999))),
                    ("SELECT count(*) FROM market.alert_history WHERE rule = %s", (f"lit_{i}_{scs}",)),
                    ("ROLLBACK", ()),
                ])
                if r[0] != "ok" or r[1][0][0] != 1:
                    rep.fail(case, f"scs={scs}: live evaluation of the saved rule gave {r}, "
                                   "want one alert")
            for s in (reader, admin):
                if pwned(s) is not None:
                    rep.fail(case, f"scs={scs}: payload escaped: {PWNED} set in {s.user}'s session")
    # the injection payloads must never run, whatever they compile to
    for i, expr in enumerate(injection_payloads()):
        for scs in ("on", "off"):
            case = f"inject:{i} [scs={scs}]"
            r = reader.run(case, [(f"SET standard_conforming_strings = {scs}", ()), (
                "SELECT count(*) FROM market.backtest_expression(%s, %s, %s)",
                (expr, T0, T0 + timedelta(minutes=MINUTES)))])
            check_outcome(rep, case, "backtest", r, COMPILE_SQLSTATES)
            if pwned(reader) is not None:
                rep.fail(case, f"payload ran: {PWNED} = {pwned(reader)!r}")
    reader.close()
    admin.close()
    crashes = new_crash_lines(log, offset)
    print(f"\nliterals: {rep.summary()}")
    assert not crashes, "the server crashed:\n" + "\n".join(crashes[:20])
    assert not rep.lost and not rep.failures, rep.summary()
