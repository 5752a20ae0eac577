//! SQL wrapper for `crate::rules::expr`: `ta.rule_compile`, and the helper functions that
//! compiled rules call (`ta.rule_ln`, `ta.rule_sqrt`, `ta.rule_nonzero`, `ta.rule_between`).

use pgrx::prelude::*;
use pgrx::{direct_function_call, AnyNumeric, IntoDatum, PgSqlErrorCode, PgTupleDesc};

use crate::rules::expr::{self, Column, ColumnType, Limits, ParamValue, Params, RuleError};

fn column_type(oid: pg_sys::Oid) -> ColumnType {
    match oid {
        pg_sys::INT2OID
        | pg_sys::INT4OID
        | pg_sys::INT8OID
        | pg_sys::FLOAT4OID
        | pg_sys::FLOAT8OID
        | pg_sys::NUMERICOID => ColumnType::Number,
        pg_sys::TEXTOID | pg_sys::VARCHAROID | pg_sys::BPCHAROID | pg_sys::NAMEOID => {
            ColumnType::Text
        }
        pg_sys::BOOLOID => ColumnType::Boolean,
        _ => ColumnType::Other,
    }
}

/// The SQLSTATE of each kind of rejection (documented in COMMENT ON ta.rule_compile).
fn sqlstate(e: &RuleError) -> PgSqlErrorCode {
    match e {
        RuleError::Syntax { .. } | RuleError::Empty => PgSqlErrorCode::ERRCODE_SYNTAX_ERROR,
        RuleError::UnknownColumn { .. } => PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
        RuleError::UnknownFunction { .. } | RuleError::Arity { .. } => {
            PgSqlErrorCode::ERRCODE_UNDEFINED_FUNCTION
        }
        RuleError::Type { .. }
        | RuleError::UnusableColumn { .. }
        | RuleError::NotBoolean { .. } => PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
        RuleError::MissingParameter { .. }
        | RuleError::BadParameter { .. }
        | RuleError::BadArgument { .. } => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        RuleError::NumberOutOfRange { .. } => PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
        RuleError::Encoding { .. } => PgSqlErrorCode::ERRCODE_CHARACTER_NOT_IN_REPERTOIRE,
        RuleError::TooDeep { .. } => PgSqlErrorCode::ERRCODE_STATEMENT_TOO_COMPLEX,
        RuleError::TooLong { .. }
        | RuleError::TooManyNodes { .. }
        | RuleError::OutputTooLong { .. } => PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
    }
}

/// `$name` read from the rule's jsonb config with PostgreSQL's own jsonb functions, so a number
/// keeps its exact decimal text (no detour through f64).
struct JsonbParams(pg_sys::Datum);

impl JsonbParams {
    fn typeof_(v: pg_sys::Datum) -> String {
        unsafe { direct_function_call::<String>(pg_sys::jsonb_typeof, &[Some(v)]) }
            .unwrap_or_default()
    }
    fn text(v: pg_sys::Datum) -> String {
        unsafe { direct_function_call::<&core::ffi::CStr>(pg_sys::jsonb_out, &[Some(v)]) }
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

impl Params for JsonbParams {
    fn get(&self, name: &str) -> Option<ParamValue> {
        let key = name.into_datum();
        let v = unsafe {
            pgrx::fcinfo::direct_function_call_as_datum(
                pg_sys::jsonb_object_field,
                &[Some(self.0), key],
            )
        }?;
        let scalar = || unsafe {
            direct_function_call::<String>(pg_sys::jsonb_object_field_text, &[Some(self.0), key])
                .unwrap_or_default()
        };
        Some(match Self::typeof_(v).as_str() {
            "number" => ParamValue::Number(scalar()),
            "string" => ParamValue::Text(scalar()),
            _ => ParamValue::Other(Self::text(v)),
        })
    }
}

/// No `$name` is set (config NULL).
struct NoParams;
impl Params for NoParams {
    fn get(&self, _: &str) -> Option<ParamValue> {
        None
    }
}

/// Compile `expression` against the composite type `row_type` inside the backend: the
/// compiler's hook checks the stack (`check_stack_depth()`, SQLSTATE 54001) and pending
/// interrupts (`statement_timeout`, `pg_cancel_backend()`: 57014) on every recursion entry and
/// every 256 tokens. Rejections raise ERROR with the SQLSTATE of [`sqlstate`].
fn compile_in_backend(
    expression: &[u8],
    row_type: &[u8],
    config: Option<pg_sys::Datum>,
    limits: &Limits,
) -> String {
    let Ok(row_type) = std::str::from_utf8(row_type) else {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_CHARACTER_NOT_IN_REPERTOIRE,
            "ta.rule_compile: row_type is not valid UTF-8"
        );
    };
    let Some(desc) = PgTupleDesc::for_composite_type(row_type) else {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("ta.rule_compile: row_type \"{row_type}\" is not a composite type")
        );
    };
    let columns: Vec<Column> = desc
        .iter()
        .filter(|a| !a.is_dropped())
        .map(|a| Column {
            name: a.name().to_string(),
            ty: column_type(a.type_oid().value()),
        })
        .collect();
    drop(desc);
    let jsonb;
    let params: &dyn Params = match config {
        None => &NoParams,
        Some(d) => {
            let ty = JsonbParams::typeof_(d);
            if ty != "object" {
                let shown: String = JsonbParams::text(d).chars().take(64).collect();
                ereport!(
                    ERROR,
                    PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                    format!("ta.rule_compile: config must be a JSON object, got {ty} {shown}")
                );
            }
            jsonb = JsonbParams(d);
            &jsonb
        }
    };
    let mut hook = || {
        unsafe { pg_sys::check_stack_depth() };
        pgrx::check_for_interrupts!();
    };
    match expr::compile_with(expression, &columns, params, limits, &mut hook) {
        Ok(c) => c.sql,
        Err(e) => {
            let code = sqlstate(&e);
            let msg = match &e {
                RuleError::UnknownColumn { .. } => {
                    format!("invalid rule expression: {e}; the columns of {row_type} can be used")
                }
                _ => format!("invalid rule expression: {e}"),
            };
            ereport!(ERROR, code, msg);
        }
    }
}

/// Compile a screener rule expression to safe SQL (see `crate::rules::expr`; limits
/// `Limits::DEFAULT`). NULL expression or row_type gives NULL; NULL config means `{}`.
///
/// The arguments are declared `text, text, jsonb` in SQL (see the CREATE FUNCTION below) and
/// read as raw bytes / a raw jsonb datum, so that invalid UTF-8 in a non-UTF-8 database is a
/// clean error (22021) and config numbers keep their exact text.
#[pg_extern(
    stable,
    parallel_safe,
    name = "rule_compile",
    sql = r#"
CREATE FUNCTION ta."rule_compile"("expression" text, "row_type" text, "config" jsonb)
RETURNS text STABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'rule_compile_wrapper';
"#
)]
fn rule_compile(
    expression: Option<&[u8]>,
    row_type: Option<&[u8]>,
    config: Option<pgrx::Internal>,
) -> Option<String> {
    let (expression, row_type) = (expression?, row_type?);
    let config = config.and_then(pgrx::Internal::unwrap);
    Some(compile_in_backend(
        expression,
        row_type,
        config,
        &Limits::DEFAULT,
    ))
}

/// `ln(x)` for rules: NULL where PostgreSQL's `ln` would raise (x <= 0), else exactly
/// `pg_catalog.ln(x)` (PostgreSQL's own function is called; NaN gives NaN, as NaN > 0 in SQL).
#[pg_extern(immutable, strict, parallel_safe, name = "rule_ln")]
fn rule_ln_float8(x: f64) -> Option<f64> {
    if x > 0.0 || x.is_nan() {
        unsafe { direct_function_call::<f64>(pg_sys::dlog1, &[x.into_datum()]) }
    } else {
        None
    }
}

/// `ln(x)` for rules on numeric: NULL for x <= 0, else `pg_catalog.ln(x)`.
#[pg_extern(immutable, strict, parallel_safe, name = "rule_ln")]
fn rule_ln_numeric(x: AnyNumeric) -> Option<AnyNumeric> {
    if x > AnyNumeric::from(0) {
        unsafe { direct_function_call::<AnyNumeric>(pg_sys::numeric_ln, &[x.into_datum()]) }
    } else {
        None
    }
}

/// `sqrt(x)` for rules: NULL for x < 0, else `pg_catalog.sqrt(x)` (sqrt(-0) = -0, NaN gives NaN).
#[pg_extern(immutable, strict, parallel_safe, name = "rule_sqrt")]
fn rule_sqrt_float8(x: f64) -> Option<f64> {
    if x >= 0.0 || x.is_nan() {
        unsafe { direct_function_call::<f64>(pg_sys::dsqrt, &[x.into_datum()]) }
    } else {
        None
    }
}

/// `sqrt(x)` for rules on numeric: NULL for x < 0, else `pg_catalog.sqrt(x)`.
#[pg_extern(immutable, strict, parallel_safe, name = "rule_sqrt")]
fn rule_sqrt_numeric(x: AnyNumeric) -> Option<AnyNumeric> {
    if x >= AnyNumeric::from(0) {
        unsafe { direct_function_call::<AnyNumeric>(pg_sys::numeric_sqrt, &[x.into_datum()]) }
    } else {
        None
    }
}

extension_sql!(
    r#"
-- Helpers of compiled rules written in SQL: polymorphic, so the operators resolve for the
-- argument's own type exactly as they would in the rule; every operator is qualified, so the
-- bodies (parsed at call time, or inlined by the planner) do not depend on search_path.
-- Not STRICT, so the planner may inline them; it does so only when an argument used twice
-- costs at most ten operators.
CREATE FUNCTION ta.rule_nonzero(x anycompatible) RETURNS anycompatible
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT CASE WHEN x OPERATOR(pg_catalog.=) 0 THEN NULL ELSE x END $$;

CREATE FUNCTION ta.rule_between(x anycompatible, lo anycompatible, hi anycompatible)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT x OPERATOR(pg_catalog.>=) lo AND x OPERATOR(pg_catalog.<=) hi $$;

COMMENT ON FUNCTION ta.rule_nonzero(anycompatible) IS
'Helper of compiled rules: x, or NULL when x = 0, in x''s own type (rule a / b compiles to '
'a OPERATOR(pg_catalog./) ta.rule_nonzero(b): division by zero gives NULL). NULL gives NULL.';
COMMENT ON FUNCTION ta.rule_between(anycompatible, anycompatible, anycompatible) IS
'Helper of compiled rules: x >= lo AND x <= hi (SQL three-valued logic), compared in the common '
'type of the three arguments; rule x BETWEEN lo AND hi compiles to it so x appears once (PostgreSQL '
'expands BETWEEN into two comparisons of x).';
"#,
    name = "rule_sql_helpers",
);

extension_sql!(
    r#"
COMMENT ON FUNCTION ta.rule_compile(text, text, jsonb) IS
'Validate a screener rule expression and compile it to SQL. expression: a boolean expression over '
'the columns of the composite type row_type (e.g. ''change_5m > 2 AND rsi_14 < $rsi_max''), using '
'numbers, ''strings'', TRUE/FALSE/NULL, AND/OR/NOT, comparisons (< <= > >= = <> !=), IS [NOT] '
'NULL/TRUE/FALSE, [NOT] BETWEEN, [NOT] IN (...), + - * /, parentheses and '
'abs/greatest/least/coalesce/ln/sqrt/sign/round (round(x, d): d an integer constant in -30..30); '
'$name reads the number config->name (a JSON number, or a string holding one). Strings: a quote '
'inside is doubled; a backslash is an ordinary character (''a\'' is the text a\); there are no '
'E''...'', U&''...'' or dollar-quoted strings. Limits: 16384 bytes of input, nesting depth 100 '
'(each parenthesis, function argument list, NOT and unary sign is a level), 2000 syntax nodes, '
'262144 bytes of output. Returns parenthesised SQL in which columns read m."column", strings are '
'E''...'' literals (the same text under every standard_conforming_strings), parameters are '
'numeric literals, every function is schema-qualified and every operator is '
'OPERATOR(pg_catalog.op) (independent of search_path), and no sub-expression is repeated; '
'division by zero and ln/sqrt outside their domain give NULL instead of an error (ta.rule_nonzero, '
'ta.rule_ln, ta.rule_sqrt). NULL expression or row_type gives NULL; NULL config is {}. Errors: '
'42601 syntax, 42703 unknown column, 42883 function not allowed or wrong argument count, 42804 '
'type mismatch, 22023 missing or non-numeric parameter or bad round() places, 22003 number out of '
'range, 22021 NUL or invalid UTF-8, 54001 nested too deeply (also when the stack runs short), '
'54000 input, node or output limit exceeded, 57014 cancelled (statement_timeout, '
'pg_cancel_backend).';
COMMENT ON FUNCTION ta.rule_ln(double precision) IS
'Helper of compiled rules: ln(x), or NULL when x <= 0 (where ln raises). Otherwise exactly '
'pg_catalog.ln(x); NaN gives NaN. Strict, immutable, parallel safe.';
COMMENT ON FUNCTION ta.rule_ln(numeric) IS
'Helper of compiled rules: ln(x), or NULL when x <= 0 (where ln raises). Otherwise exactly '
'pg_catalog.ln(x); NaN gives NaN. Strict, immutable, parallel safe.';
COMMENT ON FUNCTION ta.rule_sqrt(double precision) IS
'Helper of compiled rules: sqrt(x), or NULL when x < 0 (where sqrt raises). Otherwise exactly '
'pg_catalog.sqrt(x); NaN gives NaN. Strict, immutable, parallel safe.';
COMMENT ON FUNCTION ta.rule_sqrt(numeric) IS
'Helper of compiled rules: sqrt(x), or NULL when x < 0 (where sqrt raises). Otherwise exactly '
'pg_catalog.sqrt(x); NaN gives NaN. Strict, immutable, parallel safe.';
"#,
    name = "rule_compile_comment",
    requires = [
        rule_compile,
        rule_ln_float8,
        rule_ln_numeric,
        rule_sqrt_float8,
        rule_sqrt_numeric,
        "rule_sql_helpers"
    ],
);

#[cfg(feature = "pg_test")]
#[pg_schema]
mod tests {
    use super::*;

    const ROW: &str = "CREATE TYPE rule_test_row AS (symbol text, price float8, vol numeric, \
                       n bigint, flag boolean, t timestamptz)";

    fn setup() {
        Spi::run(ROW).unwrap();
        Spi::run(
            "CREATE FUNCTION sqlstate_of(q text) RETURNS text LANGUAGE plpgsql AS $$
             BEGIN EXECUTE q; RETURN '00000';
             EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE; END $$",
        )
        .unwrap();
    }

    fn compile(expr: &str) -> String {
        Spi::get_one_with_args::<String>(
            "SELECT ta.rule_compile($1, 'rule_test_row', '{}')",
            &[expr.into()],
        )
        .unwrap()
        .unwrap()
    }

    /// The compiled rule evaluated on one row given as JSON.
    fn eval(compiled: &str, row: &str) -> Option<bool> {
        Spi::get_one_with_args::<bool>(
            &format!(
                "SELECT ({compiled}) FROM jsonb_populate_record(NULL::rule_test_row, $1::jsonb) m"
            ),
            &[row.into()],
        )
        .unwrap()
    }

    fn sqlstate_of(q: &str) -> String {
        Spi::get_one_with_args::<String>("SELECT sqlstate_of($1)", &[q.into()])
            .unwrap()
            .unwrap()
    }

    fn lit(text: &str) -> String {
        format!("'{}'", text.replace('\'', "''"))
    }

    #[pg_test]
    fn hostile_literals_mean_the_same_under_both_settings() {
        setup();
        let texts = [
            "a\\",
            "\\",
            "\\\\",
            "\\'",
            "'",
            "it's",
            "a\\' OR symbol = ') OR true --",
            "--",
            "/*",
            "$$",
            "\\x41",
            "\\u0041",
            "line\nbreak",
            "币安人生USDT",
            "\u{202e}x",
        ];
        for text in texts {
            let compiled = compile(&format!("symbol = {}", lit(text)));
            for scs in ["on", "off"] {
                Spi::run(&format!("SET standard_conforming_strings = {scs}")).unwrap();
                for (sym, want) in [(text.to_string(), true), (format!("{text}x"), false)] {
                    let row = serde_json::json!({ "symbol": sym }).to_string();
                    assert_eq!(
                        eval(&compiled, &row),
                        Some(want),
                        "{text:?} with standard_conforming_strings = {scs}: {compiled}"
                    );
                }
            }
        }
        Spi::run("RESET standard_conforming_strings").unwrap();
    }

    #[pg_test]
    fn rejections_have_their_sqlstate() {
        setup();
        let deep = |n: usize| format!("{}price{} > 0", "(".repeat(n), ")".repeat(n));
        let cases: Vec<(String, &str)> = vec![
            ("price > 1".into(), "00000"),
            ("prce > 1".into(), "42703"),
            ("price >".into(), "42601"),
            ("symbol = E'x'".into(), "42601"),
            ("pg_sleep(1) IS NULL".into(), "42883"),
            ("symbol > 1".into(), "42804"),
            ("price > $k".into(), "22023"),
            ("round(price, 99) > 0".into(), "22023"),
            ("price > 1e1001".into(), "22003"),
            (deep(99), "00000"),
            (deep(100), "54001"),
            ("not ".repeat(100) + "flag", "54001"),
            (deep(10_000), "54000"),
            ("not ".repeat(200_000) + "flag", "54000"),
            (vec!["price > 1"; 700].join(" AND "), "54000"),
        ];
        for (expr, want) in cases {
            let q = format!(
                "SELECT ta.rule_compile({}, 'rule_test_row', '{{}}')",
                lit(&expr)
            );
            assert_eq!(sqlstate_of(&q), want, "{}", &expr[..expr.len().min(80)]);
        }
        // NULL arguments
        assert_eq!(
            Spi::get_one::<String>("SELECT ta.rule_compile(NULL, 'rule_test_row', '{}')").unwrap(),
            None
        );
        assert_eq!(
            Spi::get_one::<String>("SELECT ta.rule_compile('flag', 'rule_test_row', NULL)")
                .unwrap(),
            Some("(m.\"flag\")".into())
        );
        assert_eq!(
            sqlstate_of("SELECT ta.rule_compile('flag', 'rule_test_row', '[1]')"),
            "22023"
        );
        assert_eq!(
            sqlstate_of("SELECT ta.rule_compile('flag', 'no_such_type', '{}')"),
            "22023"
        );
    }

    #[pg_test]
    fn config_numbers_keep_their_exact_text() {
        setup();
        // read with jsonb's own functions: no rounding through f64, no failure on numbers f64
        // cannot hold (0.1.0 raised an internal error for 1e400)
        let c = |cfg: &str| {
            Spi::get_one_with_args::<String>(
                "SELECT ta.rule_compile('price > $p', 'rule_test_row', $1::jsonb)",
                &[cfg.into()],
            )
            .unwrap()
            .unwrap()
        };
        let want = |lit: &str| format!("(m.\"price\" OPERATOR(pg_catalog.>) {lit})");
        assert_eq!(
            c(r#"{"p": 1.23456789012345678901234567890}"#),
            want("(1.23456789012345678901234567890)")
        );
        assert_eq!(
            c(r#"{"p": 1e400}"#),
            want(&format!("(1{})", "0".repeat(400)))
        );
        assert_eq!(c(r#"{"p": -0.000001}"#), want("(-0.000001)"));
        assert_eq!(c(r#"{"p": " 5e6 "}"#), want("(5e6)"));
        for cfg in [
            r#"{"p": "1 OR true"}"#,
            r#"{"p": {"a": 1}}"#,
            r#"{"p": null}"#,
        ] {
            let q = format!("SELECT ta.rule_compile('price > $p', 'rule_test_row', '{cfg}')");
            assert_eq!(sqlstate_of(&q), "22023", "{cfg}");
        }
    }

    #[pg_test(
        error = "invalid rule expression: expression is nested too deeply at position 100: the limit is 100 levels"
    )]
    fn deep_nesting_is_an_error_not_a_crash() {
        setup();
        // issue 8: this input crashed the backend (SIGSEGV) in 0.1.0; 10,000 levels are over
        // the input limit, so use the deepest input that is not
        let n = 8000;
        let q = format!(
            "SELECT ta.rule_compile('{}price{} > 0', 'rule_test_row', '{{}}')",
            "(".repeat(n),
            ")".repeat(n)
        );
        Spi::run(&q).unwrap();
    }

    #[pg_test(error = "stack depth limit exceeded")]
    fn the_hook_checks_the_stack() {
        setup();
        // with the depth limit lifted, check_stack_depth() in the hook still stops the
        // recursion before the stack runs out
        let n = 2_000_000;
        let expr = format!("{}price{} > 0", "(".repeat(n), ")".repeat(n));
        let limits = Limits {
            max_input_bytes: usize::MAX,
            max_depth: usize::MAX,
            ..Limits::DEFAULT
        };
        compile_in_backend(expr.as_bytes(), b"rule_test_row", None, &limits);
    }

    unsafe extern "C-unwind" {
        fn enable_timeout_after(id: u32, delay_ms: i32);
    }
    /// `STATEMENT_TIMEOUT` of `enum TimeoutId` (utils/timeout.h): 3 in PostgreSQL 15 and 18 alike.
    const STATEMENT_TIMEOUT: u32 = 3;

    /// A 15 MB AND chain, admitted by raised limits (the default input limit is 16 KiB).
    fn huge_compile() {
        let expr = (0..1_000_000)
            .map(|i| format!("price > {i}"))
            .collect::<Vec<_>>()
            .join(" AND ");
        let limits = Limits {
            max_input_bytes: usize::MAX,
            max_nodes: usize::MAX,
            max_output_bytes: usize::MAX,
            ..Limits::DEFAULT
        };
        compile_in_backend(expr.as_bytes(), b"rule_test_row", None, &limits);
    }

    #[pg_test(error = "canceling statement due to statement timeout")]
    fn statement_timeout_interrupts_a_huge_compile() {
        setup();
        // what statement_timeout = 50ms arms at the start of a statement
        unsafe { enable_timeout_after(STATEMENT_TIMEOUT, 50) };
        huge_compile();
    }

    #[pg_test(error = "canceling statement due to user request")]
    fn cancel_interrupts_a_compile() {
        setup();
        // what pg_cancel_backend()'s SIGINT handler sets
        unsafe {
            pg_sys::QueryCancelPending = 1;
            pg_sys::InterruptPending = 1;
        }
        huge_compile();
    }

    #[pg_test]
    fn helpers_give_null_outside_the_domain() {
        let q = |sql: &str| Spi::get_one::<bool>(sql).unwrap();
        for (sql, want) in [
            ("SELECT ta.rule_ln(0::float8) IS NULL", true),
            ("SELECT ta.rule_ln('-0'::float8) IS NULL", true),
            ("SELECT ta.rule_ln(-1::float8) IS NULL", true),
            ("SELECT ta.rule_ln('-Infinity'::float8) IS NULL", true),
            ("SELECT ta.rule_ln(0::numeric) IS NULL", true),
            ("SELECT ta.rule_ln(-0.5::numeric) IS NULL", true),
            ("SELECT ta.rule_ln(NULL::float8) IS NULL", true),
            ("SELECT ta.rule_ln(NULL) IS NULL", true),
            ("SELECT ta.rule_sqrt(-1e-300::float8) IS NULL", true),
            ("SELECT ta.rule_sqrt(-1::numeric) IS NULL", true),
            ("SELECT ta.rule_sqrt(-1) IS NULL", true),
            // inside the domain: exactly PostgreSQL's functions
            ("SELECT ta.rule_ln(2::float8) = ln(2::float8)", true),
            ("SELECT ta.rule_ln(2) = ln(2)", true),
            ("SELECT ta.rule_ln(2.5::numeric) = ln(2.5::numeric)", true),
            (
                "SELECT pg_typeof(ta.rule_ln(2.5::numeric)) = 'numeric'::regtype",
                true,
            ),
            ("SELECT ta.rule_ln('Infinity'::float8) = 'Infinity'", true),
            ("SELECT ta.rule_ln('NaN'::float8) = 'NaN'", true),
            ("SELECT ta.rule_ln('NaN'::numeric) = 'NaN'", true),
            ("SELECT ta.rule_sqrt(0::float8) = 0", true),
            ("SELECT ta.rule_sqrt(2::float8) = sqrt(2::float8)", true),
            ("SELECT ta.rule_sqrt(2::numeric) = sqrt(2::numeric)", true),
            ("SELECT ta.rule_sqrt('NaN'::float8) = 'NaN'", true),
            // rule_nonzero keeps the type, so integer division stays integer division
            ("SELECT ta.rule_nonzero(0) IS NULL", true),
            ("SELECT ta.rule_nonzero(0.0::numeric) IS NULL", true),
            ("SELECT ta.rule_nonzero('-0'::float8) IS NULL", true),
            ("SELECT ta.rule_nonzero(NULL::int) IS NULL", true),
            ("SELECT ta.rule_nonzero(5) = 5", true),
            (
                "SELECT pg_typeof(ta.rule_nonzero(5)) = 'integer'::regtype",
                true,
            ),
            (
                "SELECT pg_typeof(ta.rule_nonzero(5::bigint)) = 'bigint'::regtype",
                true,
            ),
            ("SELECT 7 / ta.rule_nonzero(2) = 3", true),
            ("SELECT ta.rule_nonzero('NaN'::float8) = 'NaN'", true),
            // rule_between is BETWEEN's three-valued logic
            ("SELECT ta.rule_between(2, 1, 3)", true),
            ("SELECT ta.rule_between(3, 1, 3)", true),
            ("SELECT NOT ta.rule_between(5, 1, 3)", true),
            ("SELECT ta.rule_between(NULL::int, 1, 3) IS NULL", true),
            ("SELECT NOT ta.rule_between(5, NULL, 3)", true),
            ("SELECT ta.rule_between(2, NULL, 3) IS NULL", true),
            ("SELECT ta.rule_between(2.5::float8, 1, 2e3)", true),
            ("SELECT ta.rule_between(NULL, NULL, NULL) IS NULL", true),
        ] {
            assert_eq!(q(sql), Some(want), "{sql}");
        }
    }

    #[pg_test]
    fn compiled_rules_ignore_planted_operators_and_functions() {
        setup();
        // a schema on the path with exact-type operators and functions that would win
        // against pg_catalog's (implicit casts) and say "true" to everything
        Spi::run(
            "CREATE SCHEMA evil;
             CREATE FUNCTION evil.t(float8, integer) RETURNS boolean LANGUAGE sql AS 'SELECT true';
             CREATE FUNCTION evil.t(text, text) RETURNS boolean LANGUAGE sql AS 'SELECT true';
             CREATE FUNCTION evil.t(numeric, integer) RETURNS boolean LANGUAGE sql AS 'SELECT true';
             CREATE OPERATOR evil.> (LEFTARG = float8, RIGHTARG = integer, FUNCTION = evil.t);
             CREATE OPERATOR evil.< (LEFTARG = float8, RIGHTARG = integer, FUNCTION = evil.t);
             CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.t);
             CREATE OPERATOR evil.>= (LEFTARG = numeric, RIGHTARG = integer, FUNCTION = evil.t);
             CREATE FUNCTION evil.abs(float8) RETURNS float8 LANGUAGE sql AS 'SELECT 1e9::float8';
             CREATE FUNCTION evil.m(float8) RETURNS float8 LANGUAGE sql AS 'SELECT 1e9::float8';
             CREATE OPERATOR evil.- (RIGHTARG = float8, FUNCTION = evil.m);",
        )
        .unwrap();
        let rules = [
            ("price > 5", false),
            ("price < 0", false),
            ("symbol = 'x'", false),
            ("symbol IN ('x', 'y')", false),
            ("vol BETWEEN 5 AND 6", false),
            ("abs(price) > 100", false),
            ("-price > 100", false),
            ("price / 0 > 0 OR price / 0 IS NULL", true),
            ("ln(price) < 1 AND sqrt(vol) > 1", true),
        ];
        let row = r#"{"symbol": "BTCUSDT", "price": 2, "vol": 2}"#;
        let compiled: Vec<(String, bool)> =
            rules.iter().map(|(r, want)| (compile(r), *want)).collect();
        Spi::run("SET LOCAL search_path = evil, pg_catalog, public").unwrap();
        // the plain SQL is hijacked ...
        assert_eq!(
            Spi::get_one::<bool>("SELECT 2::float8 > 5").unwrap(),
            Some(true)
        );
        // ... the compiled rules are not
        for ((rule, _), (sql, want)) in rules.iter().zip(&compiled) {
            assert_eq!(eval(sql, row), Some(*want), "{rule}: {sql}");
        }
    }

    #[pg_test]
    fn presets_evaluate_as_before() {
        // the sixteen presets compiled by 0.1.0 and by this compiler give the same value on
        // rows of random metrics (NULLs included)
        let cols = [
            "price",
            "change_1m",
            "change_5m",
            "change_15m",
            "change_1h",
            "change_8h",
            "change_1d",
            "low_1h",
            "high_1h",
            "min_change_1m_3",
            "max_change_1m_3",
            "volatility_10",
            "range_8h",
        ];
        let vols = [
            "vol_1m",
            "vol_5m",
            "vol_15m",
            "vol_1h",
            "vol_8h",
            "vol_1d",
            "min_vol_1m_3",
        ];
        let fields: Vec<String> = cols
            .iter()
            .map(|c| format!("{c} float8"))
            .chain(vols.iter().map(|c| format!("{c} numeric")))
            .collect();
        Spi::run(&format!(
            "CREATE TYPE preset_row AS ({})",
            fields.join(", ")
        ))
        .unwrap();
        // 4000 rows: values near every preset's thresholds, 10% NULL
        let gen = |c: &str, scale: &str| {
            format!(
                "CASE WHEN random() < 0.1 THEN NULL ELSE (random() * 2 - 0.6) * {scale} END AS {c}"
            )
        };
        let select: Vec<String> = cols
            .iter()
            .map(|c| gen(c, if c.starts_with("change") { "20" } else { "3" }))
            .chain(vols.iter().map(|c| {
                format!(
                    "CASE WHEN random() < 0.1 THEN NULL ELSE round((random() * 1e7)::numeric, 8) END AS {c}"
                )
            }))
            .collect();
        Spi::run("SELECT setseed(0.5)").unwrap();
        Spi::run(&format!(
            "CREATE TEMP TABLE preset_rows AS SELECT {} FROM generate_series(1, 4000)",
            select.join(", ")
        ))
        .unwrap();
        let data = include_str!("../rules/testdata/presets_v0_1_0.tsv");
        let (mut checked, mut firing) = (0, 0);
        for line in data.lines().filter(|l| !l.starts_with('#')) {
            let f: Vec<&str> = line.split('\t').collect();
            let (name, expr, config, old) = (f[0], f[1], f[2], f[3]);
            let new = Spi::get_one_with_args::<String>(
                "SELECT ta.rule_compile($1, 'preset_row', $2::jsonb)",
                &[expr.into(), config.into()],
            )
            .unwrap()
            .unwrap();
            let (differ, fired) = Spi::get_two::<i64, i64>(&format!(
                "SELECT count(*) FILTER (WHERE ({old}) IS DISTINCT FROM ({new})),
                        count(*) FILTER (WHERE ({new}))
                   FROM preset_rows m"
            ))
            .unwrap();
            assert_eq!(differ, Some(0), "{name}: {new}");
            firing += usize::from(fired.unwrap_or(0) > 0);
            checked += 1;
        }
        assert_eq!(checked, 16);
        // the rows make most presets fire somewhere, so "equal" is not "both never fire"
        assert!(
            firing >= 10,
            "only {firing} presets fired on the random rows"
        );
    }
}
