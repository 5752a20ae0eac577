//! Screener rule expressions: a small, safe subset of SQL boolean expressions over the
//! columns of a metrics row, compiled into SQL text that the database evaluates.
//!
//! # Input
//! A boolean expression such as `change_5m > 2 AND rsi_14 < $rsi_max` (UTF-8 text without NUL
//! bytes), the columns it may reference (name and type, from the row type's catalog entry), and
//! the rule's parameters (`$name` → a number from the rule's JSON config).
//!
//! # Grammar (keywords case-insensitive)
//! ```text
//! expr    := or
//! or      := and ( OR and )*
//! and     := not ( AND not )*
//! not     := NOT not | pred
//! pred    := sum [ cmp sum | IS [NOT] NULL | IS [NOT] TRUE|FALSE
//!                | [NOT] BETWEEN sum AND sum | [NOT] IN ( sum, ... ) ]
//! cmp     := < | <= | > | >= | = | <> | !=
//! sum     := term ( (+|-) term )*
//! term    := unary ( (*|/) unary )*
//! unary   := (+|-) unary | primary
//! primary := number | 'string' | TRUE | FALSE | NULL | $param | column
//!          | function ( expr, ... ) | ( expr )
//! ```
//! Functions: [`FUNCTIONS`]. `round(x, d)` needs a constant `d` (a number or `$param`) that is
//! an integer in -30..=30. Nothing else is part of the language: no subqueries, casts,
//! comments, `;`, quoted identifiers or other functions.
//!
//! # Strings
//! `'text'` is the text between the quotes; a quote inside is written twice (`'it''s'`). A
//! backslash is an ordinary character with no escape meaning: `'a\'` is the two characters
//! `a\` (standard SQL, i.e. PostgreSQL with `standard_conforming_strings = on`). There are no
//! other string forms: `E'...'`, `U&'...'`, `N'...'`, `B'...'`, `X'...'` and dollar quotes are
//! rejected, so the rule language has exactly one meaning for every literal, independent of
//! any server setting.
//!
//! # Numbers
//! `digits[.digits][e[+|-]digits]` or `.digits...`, at most [`MAX_NUMBER_DIGITS`] digits and an
//! exponent within ±[`MAX_NUMBER_EXPONENT`] (PostgreSQL's own bounds for numeric input); an
//! integer without `.` or exponent is an integer literal for PostgreSQL, anything else is
//! numeric. A number must not run into a name (`1e`, `0x10`, `1_000` are errors).
//!
//! # Limits
//! [`Limits::DEFAULT`]: input at most 16 KiB, nesting depth at most 100, at most 2,000 syntax
//! nodes, output at most 256 KiB. The depth counts every recursive construct: the expression
//! itself, each parenthesis, each argument list of a function call, each `NOT` and each unary
//! sign is one level (`abs(-(price))` is 4 levels deep); flat chains (`a AND b AND c`,
//! `a + b - c`, IN lists) add no depth. The sixteen presets need depth 1 and at most 45 nodes;
//! a 500-symbol `symbol IN (...)` watchlist needs about 500 nodes and 6 KiB.
//!
//! The compiler calls a hook on every recursion entry (parser and emitter) and every 256
//! tokens, so an embedding can check its stack and pending interrupts (`ta.rule_compile` calls
//! `check_stack_depth()` and `CHECK_FOR_INTERRUPTS()`). Compile time and output size are linear
//! in the input: every token is read once, every node is built once and emitted once into one
//! output buffer.
//!
//! # Output
//! SQL text, parenthesised, in which every sub-expression of the rule appears exactly once:
//!
//! | rule | SQL |
//! |---|---|
//! | column `price` | `m."price"` (double-quoted, `"` doubled) |
//! | `'it''s'` | `E'it''s'` (`\` and `'` doubled; an `E''` string means the same under every `standard_conforming_strings`) |
//! | `2`, `.5`, `-1e3`, `$p` | `2`, `0.5`, `(-1e3)`, `(1.6)` (canonical: no leading zeros, a digit on each side of `.`, negative values in parentheses) |
//! | `a + b - c`, `a * b` | `(a OPERATOR(pg_catalog.+) b OPERATOR(pg_catalog.-) c)`, `(a OPERATOR(pg_catalog.*) b)` |
//! | `a / b` | `(a OPERATOR(pg_catalog./) ta.rule_nonzero(b))` (NULL instead of division by zero) |
//! | `-x` | `(OPERATOR(pg_catalog.-) x)`; a number literal is negated in place |
//! | `a < b` | `(a OPERATOR(pg_catalog.<) b)`, same for `<= > >= = <>` (`!=` is `<>`) |
//! | `x [NOT] BETWEEN a AND b` | `ta.rule_between(x, a, b)`, `(NOT ta.rule_between(x, a, b))` |
//! | `x IN (a, b)`, `x NOT IN (a, b)` | `(x OPERATOR(pg_catalog.=) ANY (ARRAY[a, b]))`, `(x OPERATOR(pg_catalog.<>) ALL (ARRAY[a, b]))` |
//! | `ln(x)`, `sqrt(x)` | `ta.rule_ln(x)`, `ta.rule_sqrt(x)` (NULL outside the domain) |
//! | `abs sign round` | `pg_catalog.abs(x)` …; `round(x, d)` is `pg_catalog.round(CAST(x AS pg_catalog.numeric), d)` |
//! | `greatest least coalesce` | `GREATEST(…)`, `LEAST(…)`, `COALESCE(…)` |
//! | `AND OR NOT IS` | `(a AND b AND c)`, `(a OR b)`, `(NOT a)`, `(a IS NOT NULL)` … |
//!
//! An operation with a `NULL` literal operand that is NULL whatever the other operands are
//! (arithmetic, comparison, a strict function, `NULL IN (…)`, `x IN (NULL, …)` with only NULLs)
//! is emitted as `NULL`: PostgreSQL could not resolve the types of `NULL + NULL`.
//!
//! The output references the row only as `m."column"`, has no free names besides `m`,
//! `pg_catalog` and `ta`, and is meant to be embedded verbatim (never edited as text: a
//! literal may contain any text, e.g. `'p_symbols'` or `'$1'`).
//!
//! # Why the output cannot be abused
//! - **Literals** are the only place user text reaches the output. They are `E'...'` strings
//!   in which `\` and `'` are doubled: PostgreSQL reads E-strings the same way whatever
//!   `standard_conforming_strings`, `backslash_quote` or `escape_string_warning` say, and a
//!   doubled quote never ends the string, so the text can never become SQL. Identifiers are
//!   only catalog column names, double-quoted.
//! - **search_path**: every function is schema-qualified (`pg_catalog.`, `ta.`), every operator
//!   is written `OPERATOR(pg_catalog.op)`, so no schema on the caller's path (where someone may
//!   have planted an exact-type `public.>(double precision, integer)`, which would win over
//!   pg_catalog's through an implicit cast) can capture them. The remaining constructs resolve
//!   nothing by name: `AND OR NOT IS CASE` are syntax; `GREATEST/LEAST` use the type's default
//!   btree operator class and `COALESCE` no operator at all; `= ANY (ARRAY[...])` is written
//!   with a qualified operator; casts are to `pg_catalog.numeric`; implicit casts between
//!   built-in types come from `pg_cast`, which only a superuser can change; a negative number
//!   literal is folded into the constant by PostgreSQL's parser (no operator lookup). The `ta.`
//!   helpers qualify everything in their bodies. Constructs PostgreSQL resolves with unqualified
//!   operator names (`BETWEEN`, `IN (...)`, `NULLIF`, simple `CASE x WHEN`) are never emitted.
//! - **Size and cost**: no sub-expression is repeated (`ln`/`sqrt` are functions instead of
//!   `CASE WHEN x > 0 THEN ln(x) END`; `BETWEEN` is a function because PostgreSQL's parser
//!   expands `x BETWEEN a AND b` into `x >= a AND x <= b`; `IN` is `= ANY (ARRAY[...])` because
//!   PostgreSQL expands an IN list with column references into `x = a OR x = b ...`). The
//!   planner may inline `ta.rule_nonzero`/`ta.rule_between` (SQL functions), and duplicates an
//!   argument only when it costs at most ten operators, so evaluation stays linear.
//! - **Runtime errors**: division by zero and `ln`/`sqrt` outside their domain give NULL (does
//!   not fire), so a rule over a window that is not full, or a flat market, never raises.
//!
//! # Errors
//! [`RuleError`], with the byte offset of the problem where there is one.
//!
//! # Reference
//! PostgreSQL 15 documentation, 4.1.2.2 (escape string constants), 4.1.3 (operator precedence:
//! `OPERATOR()` has the precedence of "any other operator", so chains are parenthesised),
//! 10.2/10.3 (operator and function type resolution), 38.7.2 (SQL function inlining).

use std::collections::BTreeSet;

/// Value types an expression can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// Any SQL number (integer, numeric, double precision).
    Number,
    /// text
    Text,
    /// boolean
    Boolean,
    /// timestamptz and other types that rules may not use.
    Other,
}

/// A column that rule expressions may reference.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
}

/// Functions admitted in expressions: (name, minimum arity, maximum arity).
pub const FUNCTIONS: &[(&str, usize, usize)] = &[
    ("abs", 1, 1),
    ("greatest", 1, 16),
    ("least", 1, 16),
    ("coalesce", 1, 16),
    ("ln", 1, 1),
    ("sqrt", 1, 1),
    ("sign", 1, 1),
    ("round", 1, 2),
];

/// Most digits a number literal (or numeric parameter) may have; PostgreSQL's
/// `NUMERIC_MAX_PRECISION`.
pub const MAX_NUMBER_DIGITS: usize = 1000;
/// Largest absolute decimal exponent of a number literal; numeric input rejects more.
pub const MAX_NUMBER_EXPONENT: u32 = 1000;
/// `round(x, d)`: the bound of |d|.
pub const MAX_ROUND_DIGITS: u32 = 30;
/// The hook runs at least once per this many tokens.
pub const HOOK_EVERY_TOKENS: usize = 256;

/// Bounds on what one compilation may consume. Every bound gives its own [`RuleError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Input length in bytes ([`RuleError::TooLong`]).
    pub max_input_bytes: usize,
    /// Nesting depth, see the module docs ([`RuleError::TooDeep`]).
    pub max_depth: usize,
    /// Syntax nodes ([`RuleError::TooManyNodes`]).
    pub max_nodes: usize,
    /// Output length in bytes ([`RuleError::OutputTooLong`]).
    pub max_output_bytes: usize,
}

impl Limits {
    /// The limits `ta.rule_compile` uses: 16 KiB of input, depth 100, 2,000 nodes, 256 KiB of
    /// output. Far above any rule a person writes (the presets: depth 1, ≤ 45 nodes), far below
    /// what could hurt a backend (the parser's stack at depth 100 is a few hundred KiB at most,
    /// and every output byte is produced once).
    pub const DEFAULT: Limits = Limits {
        max_input_bytes: 16 * 1024,
        max_depth: 100,
        max_nodes: 2000,
        max_output_bytes: 256 * 1024,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why an expression was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("syntax error at position {pos}: {msg}")]
    Syntax { pos: usize, msg: String },
    #[error("unknown column \"{name}\" at position {pos}{hint}")]
    UnknownColumn {
        name: String,
        pos: usize,
        /// "" or " (did you mean a, b?)"
        hint: String,
    },
    #[error("column \"{name}\" at position {pos} has a type rules cannot use")]
    UnusableColumn { name: String, pos: usize },
    #[error("function {name}() at position {pos} is not allowed; allowed: {allowed}")]
    UnknownFunction {
        name: String,
        pos: usize,
        allowed: String,
    },
    #[error("function {name}() at position {pos} takes {min}..={max} arguments, got {got}")]
    Arity {
        name: String,
        pos: usize,
        min: usize,
        max: usize,
        got: usize,
    },
    #[error("{name}() at position {pos}: {msg}")]
    BadArgument {
        name: &'static str,
        pos: usize,
        msg: String,
    },
    #[error("parameter ${name} at position {pos} is not set in the rule's config")]
    MissingParameter { name: String, pos: usize },
    #[error("parameter ${name} {problem}, got {value}")]
    BadParameter {
        name: String,
        /// e.g. "must be a JSON number (or a string holding one)"
        problem: String,
        value: String,
    },
    #[error("type error at position {pos}: {msg}")]
    Type { pos: usize, msg: String },
    #[error("expression is empty")]
    Empty,
    #[error("expression must be boolean, but it is {found}")]
    NotBoolean { found: &'static str },
    #[error("number at position {pos} is out of range: {msg}")]
    NumberOutOfRange { pos: usize, msg: String },
    #[error("invalid text at byte {pos}: {msg}")]
    Encoding { pos: usize, msg: &'static str },
    #[error("expression is too long: {len} bytes, the limit is {max}")]
    TooLong { len: usize, max: usize },
    #[error("expression is nested too deeply at position {pos}: the limit is {max} levels")]
    TooDeep { pos: usize, max: usize },
    #[error("expression is too complex at position {pos}: more than {max} syntax nodes")]
    TooManyNodes { pos: usize, max: usize },
    #[error("compiled SQL would exceed {max} bytes")]
    OutputTooLong { max: usize },
}

/// A parameter value as the config holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamValue {
    /// A JSON number, as exact decimal text (e.g. `1.6`, `-15`, `5000000`).
    Number(String),
    /// A JSON string (accepted when it holds a number).
    Text(String),
    /// Anything else, as JSON text (rejected).
    Other(String),
}

/// Where `$name` parameters come from.
pub trait Params {
    /// The value of `name`, or None when the config has no such key.
    fn get(&self, name: &str) -> Option<ParamValue>;
}

impl Params for serde_json::Value {
    fn get(&self, name: &str) -> Option<ParamValue> {
        self.get(name).map(|v| match v {
            serde_json::Value::Number(n) => ParamValue::Number(n.to_string()),
            serde_json::Value::String(s) => ParamValue::Text(s.clone()),
            other => ParamValue::Other(other.to_string()),
        })
    }
}

/// At most 64 characters of `s` for an error message.
fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

// ---- numbers ------------------------------------------------------------------------------

/// Number literals are kept in canonical form: `int[.frac][e[-]exp]` with no leading zeros
/// in `int` (but at least one digit), at least one digit in `frac` when there is a `.`, no `+`
/// and no leading zeros in the exponent. That text has the type and value PostgreSQL gives the
/// input text (integers stay integers, so `int / int` keeps PostgreSQL's integer division).
///
/// Parse `digits[.digits][e[+-]digits]` / `.digits` (no sign) into canonical text.
/// Err(None): not a number; Err(Some(msg)): a number outside the bounds.
fn canonical_number(t: &str) -> Result<String, Option<String>> {
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(p) => (&t[..p], Some(&t[p + 1..])),
        None => (t, None),
    };
    let (int, frac) = match mantissa.find('.') {
        Some(p) => (&mantissa[..p], Some(&mantissa[p + 1..])),
        None => (mantissa, None),
    };
    let digits = |s: &str| s.bytes().all(|c| c.is_ascii_digit());
    if !digits(int)
        || !frac.is_none_or(digits)
        || (int.is_empty() && frac.is_none_or(str::is_empty))
    {
        return Err(None);
    }
    let exp = match exp {
        None => None,
        Some(e) => {
            let (neg, d) = match e.as_bytes().first() {
                Some(b'-') => (true, &e[1..]),
                Some(b'+') => (false, &e[1..]),
                _ => (false, e),
            };
            if d.is_empty() || !digits(d) {
                return Err(None);
            }
            let d = d.trim_start_matches('0');
            if d.len() > 4 || d.parse::<u32>().unwrap_or(u32::MAX) > MAX_NUMBER_EXPONENT {
                return Err(Some(format!(
                    "the exponent must be within -{MAX_NUMBER_EXPONENT}..{MAX_NUMBER_EXPONENT}"
                )));
            }
            Some((neg, if d.is_empty() { "0" } else { d }))
        }
    };
    if int.len() + frac.map_or(0, str::len) > MAX_NUMBER_DIGITS {
        return Err(Some(format!("more than {MAX_NUMBER_DIGITS} digits")));
    }
    let int = int.trim_start_matches('0');
    let mut s = String::with_capacity(t.len() + 2);
    s.push_str(if int.is_empty() { "0" } else { int });
    if let Some(f) = frac {
        s.push('.');
        s.push_str(if f.is_empty() { "0" } else { f });
    }
    if let Some((neg, d)) = exp {
        s.push('e');
        if neg {
            s.push('-');
        }
        s.push_str(d);
    }
    Ok(s)
}

/// Renders a parameter value as a canonical SQL number: `(digits)` or `(-digits)` text is
/// produced by the emitter; this returns (negative, canonical digits).
/// Accepts JSON numbers and strings holding a number (surrounding blanks ignored, one optional
/// leading `-`); rejects everything else with the reason.
pub fn parameter_literal(value: &ParamValue) -> Result<(bool, String), (String, String)> {
    const NOT_A_NUMBER: &str = "must be a JSON number (or a string holding one)";
    let (text, shown_value) = match value {
        ParamValue::Number(n) => (n.as_str(), shown(n)),
        ParamValue::Text(s) => (
            s.trim(),
            shown(&serde_json::Value::String(s.clone()).to_string()),
        ),
        ParamValue::Other(j) => return Err((NOT_A_NUMBER.to_string(), shown(j))),
    };
    let (neg, body) = match text.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, text),
    };
    match canonical_number(body) {
        Ok(c) => Ok((neg, c)),
        Err(None) => Err((NOT_A_NUMBER.to_string(), shown_value)),
        Err(Some(msg)) => Err((format!("is out of range ({msg})"), shown_value)),
    }
}

// ---- tokens -------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(String),
    Str(String),
    Ident(String),
    Param(String),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
}

/// Split `src` into tokens (byte offsets). Linear: every byte is looked at a bounded number of
/// times; the hook runs every [`HOOK_EVERY_TOKENS`] tokens.
fn tokenize(src: &str, hook: &mut dyn FnMut()) -> Result<Vec<(Tok, usize)>, RuleError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut since_hook = HOOK_EVERY_TOKENS;
    let syntax = |pos: usize, msg: &str| RuleError::Syntax {
        pos,
        msg: msg.to_string(),
    };
    while i < b.len() {
        since_hook += 1;
        if since_hook >= HOOK_EVERY_TOKENS {
            hook();
            since_hook = 0;
        }
        let c = b[i];
        let start = i;
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' => {
                out.push((Tok::LParen, start));
                i += 1
            }
            b')' => {
                out.push((Tok::RParen, start));
                i += 1
            }
            b',' => {
                out.push((Tok::Comma, start));
                i += 1
            }
            b'+' | b'*' => {
                out.push((Tok::Op(if c == b'+' { "+" } else { "*" }), start));
                i += 1
            }
            b'/' => {
                if b.get(i + 1) == Some(&b'*') {
                    return Err(syntax(start, "comments are not allowed"));
                }
                out.push((Tok::Op("/"), start));
                i += 1
            }
            b'-' => {
                if b.get(i + 1) == Some(&b'-') {
                    return Err(syntax(start, "comments are not allowed"));
                }
                out.push((Tok::Op("-"), start));
                i += 1
            }
            b'<' => {
                let op = match b.get(i + 1) {
                    Some(b'=') => "<=",
                    Some(b'>') => "<>",
                    _ => "<",
                };
                i += op.len();
                out.push((Tok::Op(op), start));
            }
            b'>' => {
                let op = if b.get(i + 1) == Some(&b'=') {
                    ">="
                } else {
                    ">"
                };
                i += op.len();
                out.push((Tok::Op(op), start));
            }
            b'=' => {
                out.push((Tok::Op("="), start));
                i += 1
            }
            b'!' => {
                if b.get(i + 1) == Some(&b'=') {
                    out.push((Tok::Op("<>"), start));
                    i += 2
                } else {
                    return Err(syntax(start, "unexpected '!'"));
                }
            }
            b'\'' => {
                // the text up to the next quote that is not doubled; no escapes
                let mut s = String::new();
                i += 1;
                loop {
                    let rest = &b[i..];
                    let Some(q) = rest.iter().position(|&x| x == b'\'') else {
                        return Err(syntax(start, "unterminated string literal"));
                    };
                    s.push_str(&src[i..i + q]);
                    i += q + 1;
                    if b.get(i) == Some(&b'\'') {
                        s.push('\'');
                        i += 1;
                    } else {
                        break;
                    }
                }
                out.push((Tok::Str(s), start));
            }
            b'$' => {
                i += 1;
                let s = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                if s == i || b[s].is_ascii_digit() {
                    return Err(syntax(
                        start,
                        "expected a parameter name after '$' ($name reads the rule's config; \
                         dollar quotes and $1 are not part of the rule language)",
                    ));
                }
                out.push((Tok::Param(src[s..i].to_ascii_lowercase()), start));
            }
            b'0'..=b'9' | b'.' => {
                while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                    i += 1;
                }
                if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
                    let save = i;
                    i += 1;
                    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
                        i += 1;
                    }
                    let ds = i;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                    if ds == i {
                        i = save;
                    }
                }
                let text = &src[start..i];
                let canon = match canonical_number(text) {
                    Ok(c) => c,
                    Err(None) => {
                        return Err(syntax(start, &format!("bad number {:?}", shown(text))))
                    }
                    Err(Some(msg)) => return Err(RuleError::NumberOutOfRange { pos: start, msg }),
                };
                if i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    return Err(syntax(i, "a number must not run into a name"));
                }
                out.push((Tok::Num(canon), start));
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                let prefix = src[start..i].to_ascii_lowercase();
                let quoted = b.get(i) == Some(&b'\'')
                    && matches!(prefix.as_str(), "e" | "u" | "n" | "b" | "x");
                if quoted || (prefix == "u" && b.get(i) == Some(&b'&')) {
                    return Err(syntax(
                        start,
                        &format!(
                            "{}'...' strings are not part of the rule language; write 'text' \
                             (a quote inside is doubled, a backslash is an ordinary character)",
                            &src[start..i]
                        ),
                    ));
                }
                out.push((Tok::Ident(src[start..i].to_ascii_lowercase()), start));
            }
            b'"' => return Err(syntax(start, "quoted identifiers are not allowed")),
            b';' => return Err(syntax(start, "';' is not allowed")),
            _ => {
                let ch = src[i..].chars().next().unwrap_or('\u{fffd}');
                return Err(syntax(start, &format!("unexpected character {ch:?}")));
            }
        }
    }
    Ok(out)
}

// ---- syntax tree --------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Num,
    Text,
    Bool,
    /// the NULL literal: fits anywhere
    Null,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Num => "a number",
            Ty::Text => "text",
            Ty::Bool => "boolean",
            Ty::Null => "NULL",
        }
    }
    fn fits(self, want: Ty) -> bool {
        self == want || self == Ty::Null
    }
    fn unify(a: Ty, b: Ty) -> Option<Ty> {
        match (a, b) {
            (Ty::Null, x) | (x, Ty::Null) => Some(x),
            (x, y) if x == y => Some(x),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Func {
    Abs,
    Sign,
    Round,
    Ln,
    Sqrt,
    Greatest,
    Least,
    Coalesce,
}

impl Func {
    fn from_name(name: &str) -> Option<Func> {
        Some(match name {
            "abs" => Func::Abs,
            "sign" => Func::Sign,
            "round" => Func::Round,
            "ln" => Func::Ln,
            "sqrt" => Func::Sqrt,
            "greatest" => Func::Greatest,
            "least" => Func::Least,
            "coalesce" => Func::Coalesce,
            _ => return None,
        })
    }
    fn name(self) -> &'static str {
        match self {
            Func::Abs => "abs",
            Func::Sign => "sign",
            Func::Round => "round",
            Func::Ln => "ln",
            Func::Sqrt => "sqrt",
            Func::Greatest => "greatest",
            Func::Least => "least",
            Func::Coalesce => "coalesce",
        }
    }
    /// SQL spelling: every name is schema-qualified or a grammar keyword.
    fn sql(self) -> &'static str {
        match self {
            Func::Abs => "pg_catalog.abs",
            Func::Sign => "pg_catalog.sign",
            Func::Round => "pg_catalog.round",
            Func::Ln => "ta.rule_ln",
            Func::Sqrt => "ta.rule_sqrt",
            Func::Greatest => "GREATEST",
            Func::Least => "LEAST",
            Func::Coalesce => "COALESCE",
        }
    }
    /// NULL in any argument gives NULL (strict), as opposed to GREATEST/LEAST/COALESCE, which
    /// skip NULLs.
    fn strict(self) -> bool {
        !matches!(self, Func::Greatest | Func::Least | Func::Coalesce)
    }
}

type NodeId = usize;

#[derive(Debug, Clone)]
enum Node {
    Num {
        text: String,
        neg: bool,
        param: bool,
    },
    Str(String),
    Bool(bool),
    Null,
    Col(usize),
    Neg(NodeId),
    /// `first op x op y ...`, all operators of one precedence level (+ - or * /).
    Arith {
        first: NodeId,
        rest: Vec<(&'static str, NodeId)>,
    },
    Cmp {
        op: &'static str,
        l: NodeId,
        r: NodeId,
    },
    And(Vec<NodeId>),
    Or(Vec<NodeId>),
    Not(NodeId),
    Is {
        x: NodeId,
        not: bool,
        what: &'static str,
    },
    Between {
        x: NodeId,
        lo: NodeId,
        hi: NodeId,
        not: bool,
    },
    In {
        x: NodeId,
        items: Vec<NodeId>,
        not: bool,
    },
    Call {
        f: Func,
        args: Vec<NodeId>,
    },
    /// round(x, d) with d an integer constant
    Round {
        x: NodeId,
        digits: i32,
    },
}

struct Parser<'a> {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    end: usize,
    columns: &'a [Column],
    params: &'a dyn Params,
    limits: Limits,
    hook: &'a mut dyn FnMut(),
    nodes: Vec<Node>,
    depth: usize,
    max_depth_seen: usize,
    used_columns: BTreeSet<String>,
    used_params: BTreeSet<String>,
}

const KEYWORDS: &[&str] = &[
    "and", "or", "not", "is", "null", "true", "false", "between", "in",
];

/// Internal results carry the error boxed: the parser is recursive, and a small `Result`
/// keeps every frame on the recursion path small (the stack use per nesting level is what
/// `Limits::max_depth` bounds; see `stack_per_level_is_small`).
type PResult<T> = Result<T, Box<RuleError>>;
type Parsed = PResult<(NodeId, Ty)>;

/// What a type check is about, for its message (no string is built unless it fails).
#[derive(Debug, Clone, Copy)]
enum Ctx {
    Kw(&'static str),
    Op(&'static str),
    Unary(&'static str),
    Func(Func),
}

impl std::fmt::Display for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ctx::Kw(k) => f.write_str(k),
            Ctx::Op(o) => write!(f, "'{o}'"),
            Ctx::Unary(o) => write!(f, "unary '{o}'"),
            Ctx::Func(x) => write!(f, "{}()", x.name()),
        }
    }
}

#[cold]
#[inline(never)]
fn type_error(pos: usize, msg: String) -> Box<RuleError> {
    Box::new(RuleError::Type { pos, msg })
}

#[cold]
#[inline(never)]
fn want_error(got: Ty, want: Ty, pos: usize, what: Ctx) -> Box<RuleError> {
    type_error(
        pos,
        format!("{what} needs {}, got {}", want.name(), got.name()),
    )
}

#[inline]
fn want(got: Ty, want: Ty, pos: usize, what: Ctx) -> PResult<()> {
    if got.fits(want) {
        Ok(())
    } else {
        Err(want_error(got, want, pos, what))
    }
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(t, _)| t)
    }
    fn here(&self) -> usize {
        self.toks.get(self.pos).map_or(self.end, |(_, p)| *p)
    }
    /// The current token if it is an operator (no token is cloned to look at it).
    fn peek_op(&self) -> Option<&'static str> {
        match self.peek() {
            Some(Tok::Op(op)) => Some(op),
            _ => None,
        }
    }
    fn is_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(s)) if s == kw)
    }
    fn eat_kw(&mut self, kw: &str) -> bool {
        if self.is_kw(kw) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn is_kw_at(&self, offset: usize, kw: &str) -> bool {
        matches!(self.toks.get(self.pos + offset), Some((Tok::Ident(s), _)) if s == kw)
    }
    fn expect(&mut self, t: Tok, what: &'static str) -> PResult<()> {
        if self.peek() == Some(&t) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.syntax_expected(what))
        }
    }
    /// Takes the text out of the current token (each token is consumed once).
    fn take_text(&mut self) -> String {
        match &mut self.toks[self.pos].0 {
            Tok::Num(s) | Tok::Str(s) | Tok::Ident(s) | Tok::Param(s) => std::mem::take(s),
            _ => String::new(),
        }
    }
    #[cold]
    #[inline(never)]
    fn syntax_expected(&self, what: &str) -> Box<RuleError> {
        Box::new(self.syntax(&format!("expected {what}")))
    }
    #[cold]
    #[inline(never)]
    fn syntax_boxed(&self, msg: &str) -> Box<RuleError> {
        Box::new(self.syntax(msg))
    }
    #[cold]
    #[inline(never)]
    fn syntax(&self, msg: &str) -> RuleError {
        let found = match self.peek() {
            None => "end of expression".to_string(),
            Some(Tok::Num(n)) => format!("number {}", shown(n)),
            Some(Tok::Str(_)) => "a string".to_string(),
            Some(Tok::Ident(s)) => format!("\"{}\"", shown(s)),
            Some(Tok::Param(p)) => format!("${}", shown(p)),
            Some(Tok::Op(o)) => format!("'{o}'"),
            Some(Tok::LParen) => "'('".to_string(),
            Some(Tok::RParen) => "')'".to_string(),
            Some(Tok::Comma) => "','".to_string(),
        };
        RuleError::Syntax {
            pos: self.here(),
            msg: format!("{msg}, found {found}"),
        }
    }
    fn push(&mut self, n: Node, pos: usize) -> PResult<NodeId> {
        if self.nodes.len() >= self.limits.max_nodes {
            return Err(Box::new(RuleError::TooManyNodes {
                pos,
                max: self.limits.max_nodes,
            }));
        }
        self.nodes.push(n);
        Ok(self.nodes.len() - 1)
    }
    fn null(&mut self, pos: usize) -> Parsed {
        Ok((self.push(Node::Null, pos)?, Ty::Null))
    }
    /// One nesting level deeper: checked against the limit, and the hook runs. Paired with
    /// `leave` (an error ends the whole compilation, so it needs no pairing).
    fn enter(&mut self) -> PResult<()> {
        self.depth += 1;
        if self.depth > self.limits.max_depth {
            return Err(Box::new(RuleError::TooDeep {
                pos: self.here(),
                max: self.limits.max_depth,
            }));
        }
        self.max_depth_seen = self.max_depth_seen.max(self.depth);
        (self.hook)();
        Ok(())
    }

    /// A whole (sub-)expression: the top level, a parenthesis, a function argument.
    fn expr(&mut self) -> Parsed {
        self.enter()?;
        let r = self.or();
        self.depth -= 1;
        r
    }
    fn or(&mut self) -> Parsed {
        let pos = self.here();
        let (first, ty) = self.and()?;
        if !self.is_kw("or") {
            return Ok((first, ty));
        }
        want(ty, Ty::Bool, pos, Ctx::Kw("OR"))?;
        let mut items = vec![first];
        while self.eat_kw("or") {
            let rpos = self.here();
            let (r, rt) = self.and()?;
            want(rt, Ty::Bool, rpos, Ctx::Kw("OR"))?;
            items.push(r);
        }
        Ok((self.push(Node::Or(items), pos)?, Ty::Bool))
    }
    fn and(&mut self) -> Parsed {
        let pos = self.here();
        let (first, ty) = self.not()?;
        if !self.is_kw("and") {
            return Ok((first, ty));
        }
        want(ty, Ty::Bool, pos, Ctx::Kw("AND"))?;
        let mut items = vec![first];
        while self.eat_kw("and") {
            let rpos = self.here();
            let (r, rt) = self.not()?;
            want(rt, Ty::Bool, rpos, Ctx::Kw("AND"))?;
            items.push(r);
        }
        Ok((self.push(Node::And(items), pos)?, Ty::Bool))
    }
    fn not(&mut self) -> Parsed {
        let pos = self.here();
        if !self.eat_kw("not") {
            return self.pred();
        }
        self.enter()?;
        let r = self.not();
        self.depth -= 1;
        let (e, t) = r?;
        want(t, Ty::Bool, pos, Ctx::Kw("NOT"))?;
        Ok((self.push(Node::Not(e), pos)?, Ty::Bool))
    }
    fn pred(&mut self) -> Parsed {
        let lpos = self.here();
        let (l, lt) = self.sum()?;
        if let Some(op @ ("<" | "<=" | ">" | ">=" | "=" | "<>")) = self.peek_op() {
            self.pos += 1;
            return self.comparison(op, l, lt, lpos);
        }
        if self.eat_kw("is") {
            return self.is_test(l, lt, lpos);
        }
        let not = self.is_kw("not") && (self.is_kw_at(1, "between") || self.is_kw_at(1, "in"));
        if not {
            self.pos += 1;
        }
        if self.eat_kw("between") {
            return self.between(l, lt, lpos, not);
        }
        if self.eat_kw("in") {
            return self.in_list(l, lt, lpos, not);
        }
        Ok((l, lt))
    }
    fn comparison(&mut self, op: &'static str, l: NodeId, lt: Ty, lpos: usize) -> Parsed {
        let rpos = self.here();
        let (r, rt) = self.sum()?;
        let Some(t) = Ty::unify(lt, rt) else {
            return Err(type_error(
                rpos,
                format!("cannot compare {} with {}", lt.name(), rt.name()),
            ));
        };
        if t == Ty::Bool && !matches!(op, "=" | "<>") {
            return Err(type_error(
                lpos,
                format!("'{op}' does not apply to booleans"),
            ));
        }
        if lt == Ty::Null || rt == Ty::Null {
            return self.null(lpos);
        }
        Ok((self.push(Node::Cmp { op, l, r }, lpos)?, Ty::Bool))
    }
    fn is_test(&mut self, l: NodeId, lt: Ty, lpos: usize) -> Parsed {
        let not = self.eat_kw("not");
        let what = if self.eat_kw("null") {
            "NULL"
        } else if self.eat_kw("true") {
            want(lt, Ty::Bool, lpos, Ctx::Kw("IS TRUE"))?;
            "TRUE"
        } else if self.eat_kw("false") {
            want(lt, Ty::Bool, lpos, Ctx::Kw("IS FALSE"))?;
            "FALSE"
        } else {
            return Err(self.syntax_boxed("expected NULL, TRUE or FALSE after IS"));
        };
        Ok((self.push(Node::Is { x: l, not, what }, lpos)?, Ty::Bool))
    }
    fn between(&mut self, l: NodeId, lt: Ty, lpos: usize, not: bool) -> Parsed {
        want(lt, Ty::Num, lpos, Ctx::Kw("BETWEEN"))?;
        let p1 = self.here();
        let (lo, at) = self.sum()?;
        want(at, Ty::Num, p1, Ctx::Kw("BETWEEN"))?;
        if !self.eat_kw("and") {
            return Err(self.syntax_boxed("expected AND in BETWEEN"));
        }
        let p2 = self.here();
        let (hi, bt) = self.sum()?;
        want(bt, Ty::Num, p2, Ctx::Kw("BETWEEN"))?;
        if lt == Ty::Null {
            return self.null(lpos);
        }
        let n = Node::Between { x: l, lo, hi, not };
        Ok((self.push(n, lpos)?, Ty::Bool))
    }
    fn in_list(&mut self, l: NodeId, lt: Ty, lpos: usize, not: bool) -> Parsed {
        self.expect(Tok::LParen, "'(' after IN")?;
        let mut items = Vec::new();
        let mut all_null = true;
        loop {
            let p = self.here();
            let (e, et) = self.sum()?;
            if Ty::unify(lt, et).is_none() {
                return Err(type_error(
                    p,
                    format!(
                        "IN list item is {}, but the value is {}",
                        et.name(),
                        lt.name()
                    ),
                ));
            }
            all_null &= et == Ty::Null;
            items.push(e);
            if self.peek() == Some(&Tok::Comma) {
                self.pos += 1;
            } else {
                break;
            }
        }
        self.expect(Tok::RParen, "')' closing the IN list")?;
        if lt == Ty::Null || all_null {
            return self.null(lpos);
        }
        Ok((self.push(Node::In { x: l, items, not }, lpos)?, Ty::Bool))
    }
    /// `first (op next)*` over one precedence level, as one flat node.
    fn chain(&mut self, ops: [&'static str; 2], next: fn(&mut Self) -> Parsed) -> Parsed {
        let lpos = self.here();
        let (first, ty) = next(self)?;
        let mut rest = Vec::new();
        let mut any_null = ty == Ty::Null;
        while let Some(op) = self.peek_op() {
            if !ops.contains(&op) {
                break;
            }
            self.pos += 1;
            want(ty, Ty::Num, lpos, Ctx::Op(op))?;
            let rpos = self.here();
            let (r, rt) = next(self)?;
            want(rt, Ty::Num, rpos, Ctx::Op(op))?;
            any_null |= rt == Ty::Null;
            rest.push((op, r));
        }
        if rest.is_empty() {
            return Ok((first, ty));
        }
        if any_null {
            return self.null(lpos);
        }
        Ok((self.push(Node::Arith { first, rest }, lpos)?, Ty::Num))
    }
    fn sum(&mut self) -> Parsed {
        self.chain(["+", "-"], Self::term)
    }
    fn term(&mut self) -> Parsed {
        self.chain(["*", "/"], Self::unary)
    }
    fn unary(&mut self) -> Parsed {
        let Some(op @ ("+" | "-")) = self.peek_op() else {
            return self.primary();
        };
        let pos = self.here();
        self.pos += 1;
        self.enter()?;
        let r = self.unary();
        self.depth -= 1;
        let (e, t) = r?;
        want(t, Ty::Num, pos, Ctx::Unary(op))?;
        if op == "+" || t == Ty::Null {
            return Ok((e, t));
        }
        // a number literal is negated in place, as PostgreSQL's parser does
        if let Node::Num { neg, .. } = &mut self.nodes[e] {
            *neg = !*neg;
            return Ok((e, Ty::Num));
        }
        Ok((self.push(Node::Neg(e), pos)?, Ty::Num))
    }
    fn primary(&mut self) -> Parsed {
        match self.peek() {
            Some(Tok::LParen) => {
                self.pos += 1;
                let r = self.expr()?;
                self.expect(Tok::RParen, "')'")?;
                Ok(r)
            }
            Some(Tok::Ident(name)) if !KEYWORDS.contains(&name.as_str()) => self.name(),
            _ => self.atom(),
        }
    }
    /// A column, or a function call.
    fn name(&mut self) -> Parsed {
        let pos = self.here();
        let name = self.take_text();
        self.pos += 1;
        if self.peek() == Some(&Tok::LParen) {
            return self.call(name, pos);
        }
        self.column(name, pos)
    }
    #[inline(never)]
    fn column(&mut self, name: String, pos: usize) -> Parsed {
        let Some(idx) = self.columns.iter().position(|c| c.name == name) else {
            return Err(Box::new(RuleError::UnknownColumn {
                hint: suggestions(&name, self.columns),
                name: shown(&name),
                pos,
            }));
        };
        let ty = match self.columns[idx].ty {
            ColumnType::Number => Ty::Num,
            ColumnType::Text => Ty::Text,
            ColumnType::Boolean => Ty::Bool,
            ColumnType::Other => return Err(Box::new(RuleError::UnusableColumn { name, pos })),
        };
        self.used_columns.insert(name);
        Ok((self.push(Node::Col(idx), pos)?, ty))
    }
    /// Everything that does not recurse: literals, parameters, TRUE/FALSE/NULL.
    #[inline(never)]
    fn atom(&mut self) -> Parsed {
        let pos = self.here();
        match self.peek() {
            Some(Tok::Num(_)) => {
                let text = self.take_text();
                self.pos += 1;
                let n = Node::Num {
                    text,
                    neg: false,
                    param: false,
                };
                Ok((self.push(n, pos)?, Ty::Num))
            }
            Some(Tok::Str(_)) => {
                let s = self.take_text();
                self.pos += 1;
                Ok((self.push(Node::Str(s), pos)?, Ty::Text))
            }
            Some(Tok::Param(_)) => {
                let name = self.take_text();
                self.pos += 1;
                let Some(value) = self.params.get(&name) else {
                    return Err(Box::new(RuleError::MissingParameter { name, pos }));
                };
                let (neg, text) = parameter_literal(&value).map_err(|(problem, value)| {
                    Box::new(RuleError::BadParameter {
                        name: name.clone(),
                        problem,
                        value,
                    })
                })?;
                self.used_params.insert(name);
                let n = Node::Num {
                    text,
                    neg,
                    param: true,
                };
                Ok((self.push(n, pos)?, Ty::Num))
            }
            Some(Tok::Ident(k)) if k == "true" || k == "false" => {
                let b = k == "true";
                self.pos += 1;
                Ok((self.push(Node::Bool(b), pos)?, Ty::Bool))
            }
            Some(Tok::Ident(k)) if k == "null" => {
                self.pos += 1;
                self.null(pos)
            }
            _ => Err(self.syntax_boxed("expected a value")),
        }
    }
    fn call(&mut self, name: String, pos: usize) -> Parsed {
        let Some(f) = Func::from_name(&name) else {
            return Err(Box::new(RuleError::UnknownFunction {
                name: shown(&name),
                pos,
                allowed: FUNCTIONS
                    .iter()
                    .map(|(f, _, _)| *f)
                    .collect::<Vec<_>>()
                    .join(", "),
            }));
        };
        self.expect(Tok::LParen, "'('")?;
        let mut args = Vec::new();
        if self.peek() != Some(&Tok::RParen) {
            loop {
                let p = self.here();
                let (e, t) = self.expr()?;
                args.push((e, t, p));
                if self.peek() == Some(&Tok::Comma) {
                    self.pos += 1;
                } else {
                    break;
                }
            }
        }
        self.expect(Tok::RParen, "')' closing the argument list")?;
        self.finish_call(f, pos, args)
    }
    #[inline(never)]
    fn finish_call(&mut self, f: Func, pos: usize, args: Vec<(NodeId, Ty, usize)>) -> Parsed {
        let (_, min, max) = FUNCTIONS
            .iter()
            .copied()
            .find(|(n, _, _)| *n == f.name())
            .expect("every Func is in FUNCTIONS");
        if args.len() < min || args.len() > max {
            return Err(Box::new(RuleError::Arity {
                name: f.name().to_string(),
                pos,
                min,
                max,
                got: args.len(),
            }));
        }
        let ty = if f == Func::Coalesce {
            let mut t = Ty::Null;
            for (_, at, p) in &args {
                t = Ty::unify(t, *at).ok_or_else(|| {
                    type_error(*p, "coalesce() arguments must have one type".into())
                })?;
            }
            t
        } else {
            for (_, at, p) in &args {
                want(*at, Ty::Num, *p, Ctx::Func(f))?;
            }
            Ty::Num
        };
        if f == Func::Round && args.len() == 2 {
            let (x, xt, _) = args[0];
            let (d, _, dpos) = args[1];
            let digits = match &self.nodes[d] {
                Node::Num { text, neg, .. } if text.bytes().all(|c| c.is_ascii_digit()) => text
                    .parse::<u32>()
                    .ok()
                    .filter(|v| *v <= MAX_ROUND_DIGITS)
                    .map(|v| if *neg { -(v as i32) } else { v as i32 }),
                _ => None,
            };
            let Some(digits) = digits else {
                return Err(Box::new(RuleError::BadArgument {
                    name: "round",
                    pos: dpos,
                    msg: format!(
                        "the number of decimal places must be an integer constant (a number \
                         or $param) between -{MAX_ROUND_DIGITS} and {MAX_ROUND_DIGITS}"
                    ),
                }));
            };
            if xt == Ty::Null {
                return self.null(pos);
            }
            return Ok((self.push(Node::Round { x, digits }, pos)?, Ty::Num));
        }
        let nulls = args.iter().filter(|(_, t, _)| *t == Ty::Null).count();
        if (f.strict() && nulls > 0) || nulls == args.len() {
            return self.null(pos);
        }
        let args = args.into_iter().map(|(e, _, _)| e).collect();
        Ok((self.push(Node::Call { f, args }, pos)?, ty))
    }
}

/// " (did you mean a, b?)" for the usable columns closest to `name` (edit distance <= 2, or
/// `name` is a prefix), or "". Names longer than any column get no suggestion (so the cost is
/// bounded by the column names, not by the input).
fn suggestions(name: &str, columns: &[Column]) -> String {
    if name.len() > 64 {
        return String::new();
    }
    let mut close: Vec<(usize, &str)> = columns
        .iter()
        .filter(|c| c.ty != ColumnType::Other)
        .filter(|c| c.name.len().abs_diff(name.len()) <= 2 || c.name.starts_with(name))
        .map(|c| (edit_distance(name, &c.name), c.name.as_str()))
        .filter(|(d, c)| *d <= 2 || c.starts_with(name))
        .collect();
    close.sort();
    close.truncate(3);
    if close.is_empty() {
        String::new()
    } else {
        let names: Vec<&str> = close.iter().map(|(_, c)| *c).collect();
        format!(" (did you mean {}?)", names.join(", "))
    }
}

/// Levenshtein distance (bytes; column names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

// ---- SQL emission -------------------------------------------------------------------------

struct Emitter<'a> {
    nodes: &'a [Node],
    columns: &'a [Column],
    out: String,
    max: usize,
    hook: &'a mut dyn FnMut(),
}

impl Emitter<'_> {
    fn put(&mut self, s: &str) -> PResult<()> {
        if self.out.len() + s.len() > self.max {
            return Err(Box::new(RuleError::OutputTooLong { max: self.max }));
        }
        self.out.push_str(s);
        Ok(())
    }
    /// `E'...'` with `\` and `'` doubled.
    fn string(&mut self, s: &str) -> PResult<()> {
        let extra = s.bytes().filter(|&c| c == b'\\' || c == b'\'').count();
        if self.out.len() + s.len() + extra + 3 > self.max {
            return Err(Box::new(RuleError::OutputTooLong { max: self.max }));
        }
        self.out.push_str("E'");
        for ch in s.chars() {
            match ch {
                '\\' => self.out.push_str("\\\\"),
                '\'' => self.out.push_str("''"),
                c => self.out.push(c),
            }
        }
        self.out.push('\'');
        Ok(())
    }
    fn list(&mut self, items: &[NodeId], sep: &str) -> PResult<()> {
        for (k, &e) in items.iter().enumerate() {
            if k > 0 {
                self.put(sep)?;
            }
            self.emit(e)?;
        }
        Ok(())
    }
    fn op(&mut self, op: &str) -> PResult<()> {
        self.put(" OPERATOR(pg_catalog.")?;
        self.put(op)?;
        self.put(") ")
    }
    #[inline(never)]
    fn digits(&mut self, d: i32) -> PResult<()> {
        let d = if d < 0 {
            format!("(-{})", d.unsigned_abs())
        } else {
            d.to_string()
        };
        self.put(&d)
    }
    fn emit(&mut self, id: NodeId) -> PResult<()> {
        (self.hook)();
        match &self.nodes[id] {
            Node::Num { text, neg, param } => match (neg, param) {
                (false, false) => self.put(text),
                (false, true) => {
                    self.put("(")?;
                    self.put(text)?;
                    self.put(")")
                }
                (true, _) => {
                    self.put("(-")?;
                    self.put(text)?;
                    self.put(")")
                }
            },
            Node::Str(s) => self.string(s),
            Node::Bool(b) => self.put(if *b { "TRUE" } else { "FALSE" }),
            Node::Null => self.put("NULL"),
            Node::Col(i) => {
                let name = &self.columns[*i].name;
                self.put("m.\"")?;
                self.put(&name.replace('"', "\"\""))?;
                self.put("\"")
            }
            Node::Neg(x) => {
                self.put("(OPERATOR(pg_catalog.-) ")?;
                self.emit(*x)?;
                self.put(")")
            }
            Node::Arith { first, rest } => {
                self.put("(")?;
                self.emit(*first)?;
                for (op, x) in rest {
                    self.op(op)?;
                    if *op == "/" {
                        self.put("ta.rule_nonzero(")?;
                        self.emit(*x)?;
                        self.put(")")?;
                    } else {
                        self.emit(*x)?;
                    }
                }
                self.put(")")
            }
            Node::Cmp { op, l, r } => {
                self.put("(")?;
                self.emit(*l)?;
                self.op(op)?;
                self.emit(*r)?;
                self.put(")")
            }
            Node::And(items) => {
                self.put("(")?;
                self.list(items, " AND ")?;
                self.put(")")
            }
            Node::Or(items) => {
                self.put("(")?;
                self.list(items, " OR ")?;
                self.put(")")
            }
            Node::Not(x) => {
                self.put("(NOT ")?;
                self.emit(*x)?;
                self.put(")")
            }
            Node::Is { x, not, what } => {
                self.put("(")?;
                self.emit(*x)?;
                self.put(if *not { " IS NOT " } else { " IS " })?;
                self.put(what)?;
                self.put(")")
            }
            Node::Between { x, lo, hi, not } => {
                self.put(if *not {
                    "(NOT ta.rule_between("
                } else {
                    "ta.rule_between("
                })?;
                self.list(&[*x, *lo, *hi], ", ")?;
                self.put(if *not { "))" } else { ")" })
            }
            Node::In { x, items, not } => {
                self.put("(")?;
                self.emit(*x)?;
                self.put(if *not {
                    " OPERATOR(pg_catalog.<>) ALL (ARRAY["
                } else {
                    " OPERATOR(pg_catalog.=) ANY (ARRAY["
                })?;
                self.list(items, ", ")?;
                self.put("]))")
            }
            Node::Call { f, args } => {
                self.put(f.sql())?;
                self.put("(")?;
                self.list(args, ", ")?;
                self.put(")")
            }
            Node::Round { x, digits } => {
                self.put("pg_catalog.round(CAST(")?;
                self.emit(*x)?;
                self.put(" AS pg_catalog.numeric), ")?;
                self.digits(*digits)?;
                self.put(")")
            }
        }
    }
}

// ---- entry points -------------------------------------------------------------------------

/// A compiled rule expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    /// Safe SQL text; columns read `m."name"`.
    pub sql: String,
    /// Columns the expression reads, sorted.
    pub columns: Vec<String>,
    /// `$parameters` the expression reads, sorted.
    pub parameters: Vec<String>,
    /// Syntax nodes built (bounded by [`Limits::max_nodes`]).
    pub nodes: usize,
    /// Deepest nesting level reached (bounded by [`Limits::max_depth`]).
    pub depth: usize,
}

/// Compile `expression` against `columns`, resolving `$params` in `config` (a JSON object;
/// other keys are ignored), with [`Limits::DEFAULT`] and no hook.
pub fn compile(
    expression: &str,
    columns: &[Column],
    config: &serde_json::Value,
) -> Result<Compiled, RuleError> {
    compile_with(
        expression.as_bytes(),
        columns,
        config,
        &Limits::DEFAULT,
        &mut || {},
    )
}

/// Compile raw bytes (which must be UTF-8 without NUL) with explicit limits and a hook that is
/// called on every recursion entry of the parser and the emitter and at least every
/// [`HOOK_EVERY_TOKENS`] tokens; the hook may unwind (a cancelled query) at any of those points.
pub fn compile_with(
    source: &[u8],
    columns: &[Column],
    params: &dyn Params,
    limits: &Limits,
    hook: &mut dyn FnMut(),
) -> Result<Compiled, RuleError> {
    if source.len() > limits.max_input_bytes {
        return Err(RuleError::TooLong {
            len: source.len(),
            max: limits.max_input_bytes,
        });
    }
    let src = std::str::from_utf8(source).map_err(|e| RuleError::Encoding {
        pos: e.valid_up_to(),
        msg: "not valid UTF-8",
    })?;
    if let Some(pos) = source.iter().position(|&c| c == 0) {
        return Err(RuleError::Encoding {
            pos,
            msg: "NUL bytes are not allowed",
        });
    }
    let toks = tokenize(src, hook)?;
    if toks.is_empty() {
        return Err(RuleError::Empty);
    }
    let mut p = Parser {
        toks,
        pos: 0,
        end: src.len(),
        columns,
        params,
        limits: *limits,
        hook,
        nodes: Vec::new(),
        depth: 0,
        max_depth_seen: 0,
        used_columns: BTreeSet::new(),
        used_params: BTreeSet::new(),
    };
    let (root, ty) = p.expr().map_err(|e| *e)?;
    if p.pos != p.toks.len() {
        return Err(p.syntax("unexpected input after the expression"));
    }
    if !matches!(ty, Ty::Bool | Ty::Null) {
        return Err(RuleError::NotBoolean { found: ty.name() });
    }
    let Parser {
        nodes,
        hook,
        used_columns,
        used_params,
        max_depth_seen,
        ..
    } = p;
    let mut e = Emitter {
        nodes: &nodes,
        columns,
        out: String::new(),
        max: limits.max_output_bytes,
        hook,
    };
    // the whole expression is parenthesised, whatever its top node
    let wrap = matches!(
        nodes[root],
        Node::Bool(_)
            | Node::Null
            | Node::Col(_)
            | Node::Call { .. }
            | Node::Between { not: false, .. }
    );
    let emitted = (|| {
        if wrap {
            e.put("(")?;
        }
        e.emit(root)?;
        if wrap {
            e.put(")")?;
        }
        Ok::<(), Box<RuleError>>(())
    })();
    emitted.map_err(|e| *e)?;
    let mut sql = e.out;
    sql.shrink_to_fit();
    Ok(Compiled {
        sql,
        columns: used_columns.into_iter().collect(),
        parameters: used_params.into_iter().collect(),
        nodes: nodes.len(),
        depth: max_depth_seen,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    /// Counts the bytes this thread allocates (and grows by realloc): a timing-independent
    /// measure of how much copying a compilation does.
    struct Counting;
    thread_local! {
        static ALLOCATED: Cell<usize> = const { Cell::new(0) };
    }
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            let _ = ALLOCATED.try_with(|a| a.set(a.get() + l.size()));
            unsafe { System.alloc(l) }
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            unsafe { System.dealloc(p, l) }
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
            let _ = ALLOCATED.try_with(|a| a.set(a.get() + new.saturating_sub(l.size())));
            unsafe { System.realloc(p, l, new) }
        }
    }
    #[global_allocator]
    static GLOBAL: Counting = Counting;

    fn allocated() -> usize {
        ALLOCATED.with(Cell::get)
    }

    fn cols() -> Vec<Column> {
        let mut v: Vec<Column> = [
            "change_5m",
            "change_15m",
            "change_1h",
            "vol_5m",
            "vol_15m",
            "rsi_14",
            "price",
        ]
        .iter()
        .map(|n| Column {
            name: n.to_string(),
            ty: ColumnType::Number,
        })
        .collect();
        v.push(Column {
            name: "symbol".into(),
            ty: ColumnType::Text,
        });
        v.push(Column {
            name: "open_time".into(),
            ty: ColumnType::Other,
        });
        v.push(Column {
            name: "flag".into(),
            ty: ColumnType::Boolean,
        });
        v
    }

    fn ok(expr: &str, cfg: serde_json::Value) -> String {
        compile(expr, &cols(), &cfg)
            .unwrap_or_else(|e| panic!("{expr}: {e}"))
            .sql
    }

    fn err(expr: &str) -> RuleError {
        compile(expr, &cols(), &json!({"k": 2})).expect_err(expr)
    }

    fn with_limits(expr: &str, limits: Limits) -> Result<Compiled, RuleError> {
        compile_with(
            expr.as_bytes(),
            &cols(),
            &json!({"k": 2}),
            &limits,
            &mut || {},
        )
    }

    /// A model of PostgreSQL's lexer for what the compiler emits: reads the `E'...'` string
    /// starting at `s[0]` and returns (its text, bytes consumed). Panics on anything the
    /// emitter must never produce (another escape, an unterminated string).
    fn read_e_string(s: &str) -> (String, usize) {
        let b = s.as_bytes();
        assert!(s.starts_with("E'"), "not an E-string: {s}");
        let mut i = 2;
        let mut out = String::new();
        loop {
            match b.get(i) {
                None => panic!("unterminated E-string in {s}"),
                Some(b'\\') => {
                    assert_eq!(b.get(i + 1), Some(&b'\\'), "only \\\\ is emitted: {s}");
                    out.push('\\');
                    i += 2;
                }
                Some(b'\'') if b.get(i + 1) == Some(&b'\'') => {
                    out.push('\'');
                    i += 2;
                }
                Some(b'\'') => return (out, i + 1),
                Some(_) => {
                    let ch = s[i..].chars().next().unwrap();
                    out.push(ch);
                    i += ch.len_utf8();
                }
            }
        }
    }

    /// Checks the search_path-independence of compiled SQL by scanning it: outside string
    /// literals and `m."column"` references, the only words are keywords of the grammar and
    /// qualified names, and every operator character is inside `OPERATOR(pg_catalog.<op>)` (or
    /// the minus of a negative number literal). Returns the literals' texts.
    fn scan_output(sql: &str) -> Vec<String> {
        const WORDS: &[&str] = &[
            "m",
            "pg_catalog",
            "ta",
            "OPERATOR",
            "AND",
            "OR",
            "NOT",
            "IS",
            "NULL",
            "TRUE",
            "FALSE",
            "GREATEST",
            "LEAST",
            "COALESCE",
            "ANY",
            "ALL",
            "ARRAY",
            "CAST",
            "AS",
            "abs",
            "sign",
            "round",
            "numeric",
            "rule_ln",
            "rule_sqrt",
            "rule_nonzero",
            "rule_between",
            "e",
        ];
        let b = sql.as_bytes();
        let mut literals = Vec::new();
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            if sql[i..].starts_with("E'") {
                let (text, n) = read_e_string(&sql[i..]);
                literals.push(text);
                i += n;
            } else if sql[i..].starts_with("m.\"") {
                let end = sql[i + 3..].find('"').expect("closed identifier");
                i += 3 + end + 1;
            } else if sql[i..].starts_with("OPERATOR(pg_catalog.") {
                let rest = &sql[i + 20..];
                let end = rest.find(')').expect("closed OPERATOR()");
                let op = &rest[..end];
                assert!(
                    ["+", "-", "*", "/", "<", "<=", ">", ">=", "=", "<>"].contains(&op),
                    "operator {op} in {sql}"
                );
                i += 20 + end + 1;
            } else if c.is_ascii_alphabetic() || c == b'_' {
                let end = sql[i..]
                    .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                    .map_or(sql.len(), |e| i + e);
                let w = &sql[i..end];
                assert!(
                    WORDS.contains(&w),
                    "unqualified or unknown word {w:?} in {sql}"
                );
                if !["m", "pg_catalog", "ta"].contains(&w) {
                    // a function name must be qualified or a grammar keyword
                    let prev = sql[..i].trim_end();
                    if ["abs", "sign", "round", "numeric"].contains(&w) {
                        assert!(prev.ends_with("pg_catalog."), "{w} unqualified in {sql}");
                    }
                    if w.starts_with("rule_") {
                        assert!(prev.ends_with("ta."), "{w} unqualified in {sql}");
                    }
                }
                i = end;
            } else if c.is_ascii_digit() {
                while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.' || b[i] == b'e') {
                    if b[i] == b'e' && b.get(i + 1) == Some(&b'-') {
                        i += 1;
                    }
                    i += 1;
                }
            } else if c == b'-' {
                assert!(
                    sql[..i].ends_with('(') && b.get(i + 1).is_some_and(u8::is_ascii_digit),
                    "a '-' that is not a negative literal at {i} in {sql}"
                );
                i += 1;
            } else {
                assert!(
                    b"()[], .".contains(&c),
                    "character {:?} at {i} in {sql}",
                    c as char
                );
                i += 1;
            }
        }
        literals
    }

    #[test]
    fn compiles_valid_expressions() {
        // (expression, config, expected SQL)
        let cases = [
            // TC1: comparisons and AND chains are flat, operators qualified
            (
                "change_5m > 2 AND rsi_14 < 30",
                json!({}),
                r#"((m."change_5m" OPERATOR(pg_catalog.>) 2) AND (m."rsi_14" OPERATOR(pg_catalog.<) 30))"#,
            ),
            // TC2: parameters are inlined in parentheses
            (
                "change_1h > $min AND $k * vol_5m > vol_15m",
                json!({"min": 1.6, "k": 2}),
                r#"((m."change_1h" OPERATOR(pg_catalog.>) (1.6)) AND (((2) OPERATOR(pg_catalog.*) m."vol_5m") OPERATOR(pg_catalog.>) m."vol_15m"))"#,
            ),
            // TC3: a negated parameter is folded into the literal
            (
                "change_5m < -$m",
                json!({"m": "0.6"}),
                r#"(m."change_5m" OPERATOR(pg_catalog.<) (-0.6))"#,
            ),
            // TC4: division by zero gives NULL
            (
                "vol_5m / vol_15m > 0.5",
                json!({}),
                r#"((m."vol_5m" OPERATOR(pg_catalog./) ta.rule_nonzero(m."vol_15m")) OPERATOR(pg_catalog.>) 0.5)"#,
            ),
            // TC5: IN is = ANY (ARRAY), BETWEEN a helper
            (
                "symbol IN ('BTCUSDT', 'ETHUSDT') OR NOT (price BETWEEN 1 AND 2e3)",
                json!({}),
                r#"((m."symbol" OPERATOR(pg_catalog.=) ANY (ARRAY[E'BTCUSDT', E'ETHUSDT'])) OR (NOT ta.rule_between(m."price", 1, 2e3)))"#,
            ),
            (
                "price NOT BETWEEN 1 AND 2 AND symbol NOT IN ('x')",
                json!({}),
                r#"((NOT ta.rule_between(m."price", 1, 2)) AND (m."symbol" OPERATOR(pg_catalog.<>) ALL (ARRAY[E'x'])))"#,
            ),
            // TC6: ln/sqrt are helpers, abs is qualified
            (
                "ln(price) IS NOT NULL and abs(change_5m) >= .5",
                json!({}),
                r#"((ta.rule_ln(m."price") IS NOT NULL) AND (pg_catalog.abs(m."change_5m") OPERATOR(pg_catalog.>=) 0.5))"#,
            ),
            // TC7: strings are E-strings with quotes and backslashes doubled
            (
                "change_5m != 1 AND symbol = 'it''s'",
                json!({}),
                r#"((m."change_5m" OPERATOR(pg_catalog.<>) 1) AND (m."symbol" OPERATOR(pg_catalog.=) E'it''s'))"#,
            ),
            (
                r"symbol = 'a\'",
                json!({}),
                r#"(m."symbol" OPERATOR(pg_catalog.=) E'a\\')"#,
            ),
            (
                "CHANGE_5M>1",
                json!({}),
                r#"(m."change_5m" OPERATOR(pg_catalog.>) 1)"#,
            ),
            ("rsi_14 IS NULL", json!({}), r#"(m."rsi_14" IS NULL)"#),
            (
                "coalesce(rsi_14, 50) < 30",
                json!({}),
                r#"(COALESCE(m."rsi_14", 50) OPERATOR(pg_catalog.<) 30)"#,
            ),
            // TC8: chains of one precedence level stay flat; the levels nest
            (
                "1 + price - 2 * rsi_14 / 3 > 0",
                json!({}),
                r#"((1 OPERATOR(pg_catalog.+) m."price" OPERATOR(pg_catalog.-) (2 OPERATOR(pg_catalog.*) m."rsi_14" OPERATOR(pg_catalog./) ta.rule_nonzero(3))) OPERATOR(pg_catalog.>) 0)"#,
            ),
            // TC9: unary minus of an expression, double negation of a literal
            (
                "-price < - -1",
                json!({}),
                r#"((OPERATOR(pg_catalog.-) m."price") OPERATOR(pg_catalog.<) 1)"#,
            ),
            (
                "+price > +1",
                json!({}),
                r#"(m."price" OPERATOR(pg_catalog.>) 1)"#,
            ),
            // TC10: round with decimal places, greatest/least
            (
                "round(price, 2) > round(price) AND greatest(price, 1, least(rsi_14, 2)) > 0",
                json!({}),
                r#"((pg_catalog.round(CAST(m."price" AS pg_catalog.numeric), 2) OPERATOR(pg_catalog.>) pg_catalog.round(m."price")) AND (GREATEST(m."price", 1, LEAST(m."rsi_14", 2)) OPERATOR(pg_catalog.>) 0))"#,
            ),
            (
                "round(price, -$d) > 0",
                json!({"d": 1}),
                r#"(pg_catalog.round(CAST(m."price" AS pg_catalog.numeric), (-1)) OPERATOR(pg_catalog.>) 0)"#,
            ),
            // TC11: boolean atoms are parenthesised at the top level
            ("flag", json!({}), r#"(m."flag")"#),
            ("true", json!({}), "(TRUE)"),
            (
                "coalesce(flag, false)",
                json!({}),
                r#"(COALESCE(m."flag", FALSE))"#,
            ),
            (
                "flag = (price > 1) AND flag IS NOT TRUE",
                json!({}),
                r#"((m."flag" OPERATOR(pg_catalog.=) (m."price" OPERATOR(pg_catalog.>) 1)) AND (m."flag" IS NOT TRUE))"#,
            ),
            // TC12: operations with a NULL literal that are NULL whatever the rest is
            ("price + NULL > 1", json!({}), "(NULL)"),
            ("NULL = NULL", json!({}), "(NULL)"),
            ("abs(NULL) > 1 OR flag", json!({}), r#"(NULL OR m."flag")"#),
            ("price IN (NULL, NULL)", json!({}), "(NULL)"),
            (
                "greatest(NULL, price) > 1",
                json!({}),
                r#"(GREATEST(NULL, m."price") OPERATOR(pg_catalog.>) 1)"#,
            ),
            ("NULL IS NULL", json!({}), "(NULL IS NULL)"),
            // TC13: numbers in canonical form
            (
                "price > 007 AND price > 5. AND price > 1E+05 AND price > 0001.50e-003",
                json!({}),
                r#"((m."price" OPERATOR(pg_catalog.>) 7) AND (m."price" OPERATOR(pg_catalog.>) 5.0) AND (m."price" OPERATOR(pg_catalog.>) 1e5) AND (m."price" OPERATOR(pg_catalog.>) 1.50e-3))"#,
            ),
            // TC14: OR of ANDs
            (
                "price > 1 AND rsi_14 < 2 OR NOT flag",
                json!({}),
                r#"(((m."price" OPERATOR(pg_catalog.>) 1) AND (m."rsi_14" OPERATOR(pg_catalog.<) 2)) OR (NOT m."flag"))"#,
            ),
        ];
        for (expr, cfg, want) in cases {
            let got = ok(expr, cfg);
            assert_eq!(got, want, "{expr}");
            scan_output(&got);
        }
    }

    #[test]
    fn reports_columns_parameters_nodes_and_depth() {
        let c = compile(
            "change_1h > $a and vol_5m > $b * vol_15m and change_1h < 9",
            &cols(),
            &json!({"a": 1, "b": 2, "unused": 3}),
        )
        .unwrap();
        assert_eq!(c.columns, vec!["change_1h", "vol_15m", "vol_5m"]);
        assert_eq!(c.parameters, vec!["a", "b"]);
        // 3 comparisons (3 nodes each) + 1 product + AND
        assert_eq!(c.nodes, 3 + 5 + 3 + 1);
        assert_eq!(c.depth, 1);
        assert_eq!(
            compile("((price > 1))", &cols(), &json!({})).unwrap().depth,
            3
        );
        assert_eq!(
            compile("abs(-(price)) > 1", &cols(), &json!({}))
                .unwrap()
                .depth,
            4
        );
        assert_eq!(
            compile("not not flag", &cols(), &json!({})).unwrap().depth,
            3
        );
    }

    #[test]
    fn rejects_what_is_not_a_safe_boolean_expression() {
        // TC: unknown column
        assert!(
            matches!(err("chnage_5m > 1"), RuleError::UnknownColumn { ref name, pos: 0, .. } if name == "chnage_5m")
        );
        // TC: subqueries and statements cannot even be tokenised/parsed
        assert!(
            matches!(err("(select 1) > 0"), RuleError::UnknownColumn { ref name, .. } if name == "select")
        );
        for bad in [
            "1 > 0; drop table x",
            "change_5m > 1 -- c",
            "change_5m > 1 /* c */",
            "\"change_5m\" > 1",
            "price::text = 'x'",
            "price > 1 || 2",
            "price[1] > 0",
            "`x` > 1",
            "price > @1",
        ] {
            assert!(
                matches!(err(bad), RuleError::Syntax { .. }),
                "{bad}: {:?}",
                err(bad)
            );
        }
        // TC: functions outside the list
        assert!(matches!(
            err("pg_sleep(1) IS NULL"),
            RuleError::UnknownFunction { .. }
        ));
        assert!(matches!(
            err("nullif(price, 1) > 0"),
            RuleError::UnknownFunction { .. }
        ));
        assert!(matches!(err("abs(1, 2) > 0"), RuleError::Arity { .. }));
        assert!(matches!(err("abs() > 0"), RuleError::Arity { got: 0, .. }));
        let many = format!("greatest({}) > 0", vec!["1"; 17].join(", "));
        assert!(matches!(err(&many), RuleError::Arity { got: 17, .. }));
        // TC: round's decimal places are a small integer constant
        for bad in [
            "round(price, 31) > 0",
            "round(price, -31) > 0",
            "round(price, 1.5) > 0",
            "round(price, price) > 0",
            "round(price, 1e1) > 0",
            "round(price, 99999999999999999999) > 0",
        ] {
            assert!(
                matches!(err(bad), RuleError::BadArgument { name: "round", .. }),
                "{bad}"
            );
        }
        assert!(compile(
            "round(price, -30) > 0 and round(price, 30) > 0",
            &cols(),
            &json!({})
        )
        .is_ok());
        // TC: parameters
        assert!(matches!(
            err("change_5m > $nope"),
            RuleError::MissingParameter { .. }
        ));
        for v in [
            json!("1; drop"),
            json!([1]),
            json!(null),
            json!(true),
            json!({"a": 1}),
            json!("1e1001"),
        ] {
            assert!(
                matches!(
                    compile("change_5m > $k", &cols(), &json!({"k": v})),
                    Err(RuleError::BadParameter { .. })
                ),
                "{v}"
            );
        }
        // TC: types
        assert!(matches!(err("change_5m + 1"), RuleError::NotBoolean { .. }));
        assert!(matches!(err("symbol > 1"), RuleError::Type { .. }));
        assert!(matches!(err("change_5m AND true"), RuleError::Type { .. }));
        assert!(matches!(err("flag < true"), RuleError::Type { .. }));
        assert!(matches!(err("symbol IN (1)"), RuleError::Type { .. }));
        assert!(matches!(
            err("coalesce(1, 'a') = 1"),
            RuleError::Type { .. }
        ));
        assert!(matches!(err("-symbol = 'a'"), RuleError::Type { .. }));
        assert!(matches!(
            err("open_time > 1"),
            RuleError::UnusableColumn { .. }
        ));
        // TC: syntax
        assert!(matches!(err(""), RuleError::Empty));
        assert!(matches!(err("   "), RuleError::Empty));
        for bad in [
            "change_5m >",
            "change_5m > 1 change_15m",
            "change_5m > 1.2.3",
            "change_5m > 1e",
            "change_5m > 0x10",
            "change_5m > 1_000",
            "change_5m > .",
            "'unterminated > 1",
            "change_5m > 1 and",
            "(change_5m > 1",
            "change_5m > 1)",
            "price between 1 price",
            "price not like 1",
            "price is 1",
            "and > 1",
            "price > $",
            "price > $1",
            "!price",
        ] {
            assert!(
                matches!(err(bad), RuleError::Syntax { .. }),
                "{bad}: {:?}",
                err(bad)
            );
        }
    }

    #[test]
    fn error_messages_name_the_problem() {
        let e = err("change_5m > 2 AND rsi > 3").to_string();
        assert_eq!(
            e,
            "unknown column \"rsi\" at position 18 (did you mean rsi_14?)"
        );
        let e = err("chnage_5m > 1").to_string();
        assert_eq!(
            e,
            "unknown column \"chnage_5m\" at position 0 (did you mean change_5m?)"
        );
        let e = err("open_tim > 1").to_string();
        assert!(
            !e.contains("open_time"),
            "unusable columns are not suggested: {e}"
        );
        assert_eq!(
            err("zzzzzzzzzz > 1").to_string(),
            "unknown column \"zzzzzzzzzz\" at position 0"
        );
        // long names are shortened in messages and get no suggestion
        let long = "a".repeat(10_000);
        let e = err(&format!("{long} > 1")).to_string();
        assert!(e.len() < 200, "{e}");
        assert_eq!(
            err("E'x' = symbol").to_string(),
            "syntax error at position 0: E'...' strings are not part of the rule language; \
             write 'text' (a quote inside is doubled, a backslash is an ordinary character)"
        );
        assert_eq!(
            compile("price > $k", &cols(), &json!({"k": "two"}))
                .unwrap_err()
                .to_string(),
            "parameter $k must be a JSON number (or a string holding one), got \"two\""
        );
        assert_eq!(
            err("round(price, 31) > 0").to_string(),
            "round() at position 13: the number of decimal places must be an integer constant \
             (a number or $param) between -30 and 30"
        );
        assert_eq!(
            err("price > 1e1001").to_string(),
            "number at position 8 is out of range: the exponent must be within -1000..1000"
        );
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn parameter_literals() {
        let n = |s: &str| ParamValue::Number(s.to_string());
        let t = |s: &str| ParamValue::Text(s.to_string());
        assert_eq!(parameter_literal(&n("1.6")).unwrap(), (false, "1.6".into()));
        assert_eq!(parameter_literal(&n("-15")).unwrap(), (true, "15".into()));
        assert_eq!(parameter_literal(&t("5e6")).unwrap(), (false, "5e6".into()));
        assert_eq!(
            parameter_literal(&t(" -0.5 ")).unwrap(),
            (true, "0.5".into())
        );
        assert_eq!(parameter_literal(&t(".5")).unwrap(), (false, "0.5".into()));
        // a jsonb numeric prints exactly, however many digits it has
        let big = format!("1{}", "0".repeat(400));
        assert_eq!(parameter_literal(&n(&big)).unwrap(), (false, big.clone()));
        for bad in [
            "--1",
            "1)",
            "1 OR true",
            "",
            "-",
            "NaN",
            "Infinity",
            "0x10",
            "1e1001",
        ] {
            assert!(parameter_literal(&t(bad)).is_err(), "{bad}");
        }
        assert!(parameter_literal(&ParamValue::Other("null".into())).is_err());
        assert!(parameter_literal(&ParamValue::Other("true".into())).is_err());
        // JSON numbers from serde keep their text
        assert_eq!(
            compile("price > $k", &cols(), &json!({"k": 1e300}))
                .unwrap()
                .sql,
            r#"(m."price" OPERATOR(pg_catalog.>) (1e300))"#
        );
    }

    #[test]
    fn numbers_are_canonical() {
        // (input, canonical); integers stay integers (PostgreSQL types them by their digits)
        let cases = [
            ("0", "0"),
            ("000", "0"),
            ("007", "7"),
            ("2147483648", "2147483648"),
            (".5", "0.5"),
            ("5.", "5.0"),
            ("00.000", "0.000"),
            ("1.50", "1.50"),
            ("1e5", "1e5"),
            ("1E+5", "1e5"),
            ("1e-05", "1e-5"),
            ("1.e0005", "1.0e5"),
            ("1e-1000", "1e-1000"),
            ("9e1000", "9e1000"),
        ];
        for (input, want) in cases {
            assert_eq!(canonical_number(input).unwrap(), want, "{input}");
            let sql = ok(&format!("price > {input}"), json!({}));
            assert_eq!(sql, format!(r#"(m."price" OPERATOR(pg_catalog.>) {want})"#));
        }
        assert_eq!(
            canonical_number(&"9".repeat(1000)).unwrap(),
            "9".repeat(1000)
        );
        let too_many = format!("0.{}", "1".repeat(1000));
        assert!(matches!(canonical_number(&too_many), Err(Some(_))));
        assert!(matches!(canonical_number("1e1001"), Err(Some(_))));
        assert!(matches!(
            canonical_number("1e99999999999999999999"),
            Err(Some(_))
        ));
        for bad in ["", ".", "1..2", "1e", "1e+", "e5", "1.2.3"] {
            assert_eq!(canonical_number(bad), Err(None), "{bad}");
        }
        assert!(matches!(
            err(&format!("price > {}", "9".repeat(1001))),
            RuleError::NumberOutOfRange { pos: 8, .. }
        ));
    }

    #[test]
    fn string_literals_carry_exactly_their_text() {
        // (rule-language literal, the text it means)
        let cases: &[(&str, &str)] = &[
            ("'plain'", "plain"),
            ("''", ""),
            ("'it''s'", "it's"),
            ("''''", "'"),
            ("''''''", "''"),
            (r"'a\'", r"a\"),
            (r"'\'", r"\"),
            (r"'\\'", r"\\"),
            (r"'\'''", r"\'"),
            (
                r"'a\'' OR symbol = '') OR true --'",
                r"a\' OR symbol = ') OR true --",
            ),
            (r"'\x41\u0041\n\0'", r"\x41\u0041\n\0"),
            ("'--'", "--"),
            ("'/* not a comment */'", "/* not a comment */"),
            ("'a''--'", "a'--"),
            ("'; DROP TABLE x; --'", "; DROP TABLE x; --"),
            ("'$$ $1 $q$'", "$$ $1 $q$"),
            ("'p_symbols'", "p_symbols"),
            ("'%s %L %I'", "%s %L %I"),
            ("'\"quoted\"'", "\"quoted\""),
            ("'line\nbreak\ttab'", "line\nbreak\ttab"),
            ("'币安人生USDT'", "币安人生USDT"),
            (
                "'\u{202e}rtl \u{200b}zw e\u{301} 😀'",
                "\u{202e}rtl \u{200b}zw e\u{301} 😀",
            ),
        ];
        for (lit, text) in cases {
            let sql = ok(&format!("symbol = {lit}"), json!({}));
            let literals = scan_output(&sql);
            assert_eq!(literals, vec![text.to_string()], "{lit} compiled to {sql}");
            // the literal ends exactly where the compiler's own text resumes
            assert!(sql.ends_with("')"), "{sql}");
            let start = sql.find("E'").unwrap();
            let (_, n) = read_e_string(&sql[start..]);
            assert_eq!(&sql[start + n..], ")", "{sql}");
        }
        // a quote next to a comment start outside a string is rejected, inside it is text
        assert!(matches!(err("symbol = 'a'--'"), RuleError::Syntax { .. }));
        assert!(matches!(err("symbol = 'a'/*'*/"), RuleError::Syntax { .. }));
        // no other string forms
        for bad in [
            "symbol = E'x'",
            "symbol = e'\\''",
            "symbol = U&'\\0041'",
            "symbol = u&'x'",
            "symbol = N'x'",
            "symbol = B'01'",
            "symbol = X'41'",
            "symbol = $$x$$",
            "symbol = $q$x$q$",
            "symbol = 'a' 'b'",
            "symbol = 'a'\n'b'",
        ] {
            assert!(
                matches!(err(bad), RuleError::Syntax { .. }),
                "{bad}: {:?}",
                err(bad)
            );
        }
    }

    #[test]
    fn rejects_nul_and_invalid_utf8() {
        let run = |src: &[u8]| compile_with(src, &cols(), &json!({}), &Limits::DEFAULT, &mut || {});
        assert_eq!(
            run(b"symbol = 'a\0b'"),
            Err(RuleError::Encoding {
                pos: 11,
                msg: "NUL bytes are not allowed"
            })
        );
        assert_eq!(
            run(b"symbol = '\xff'"),
            Err(RuleError::Encoding {
                pos: 10,
                msg: "not valid UTF-8"
            })
        );
        assert!(matches!(
            run(b"symbol = '\xc3'"),
            Err(RuleError::Encoding { .. })
        ));
        assert!(run("symbol = 'é'".as_bytes()).is_ok());
    }

    #[test]
    fn limits_just_below_and_above() {
        let d = Limits::DEFAULT;
        // input length
        let base = "price > 0";
        let at = format!("{base}{}", " ".repeat(d.max_input_bytes - base.len()));
        assert!(with_limits(&at, d).is_ok());
        assert_eq!(
            with_limits(&format!("{at} "), d),
            Err(RuleError::TooLong {
                len: d.max_input_bytes + 1,
                max: d.max_input_bytes
            })
        );
        // depth, for every recursive construct: (builder for n levels in total)
        type Build = fn(usize) -> String;
        let builders: &[(&str, Build)] = &[
            ("parentheses", |n| {
                format!("{}price > 0{}", "(".repeat(n - 1), ")".repeat(n - 1))
            }),
            ("NOT", |n| format!("{}flag", "not ".repeat(n - 1))),
            ("NOT (", |n| {
                format!(
                    "{}flag{}",
                    "not (".repeat((n - 1) / 2),
                    ")".repeat((n - 1) / 2)
                )
            }),
            ("unary minus", |n| {
                format!("{}price > 0", "- ".repeat(n - 1))
            }),
            ("unary plus", |n| format!("{}price > 0", "+".repeat(n - 1))),
            ("abs()", |n| {
                format!("{}price{} > 0", "abs(".repeat(n - 1), ")".repeat(n - 1))
            }),
            ("ln()", |n| {
                format!("{}price{} > 0", "ln(".repeat(n - 1), ")".repeat(n - 1))
            }),
            ("sqrt()", |n| {
                format!("{}price{} > 0", "sqrt(".repeat(n - 1), ")".repeat(n - 1))
            }),
            ("round(,2)", |n| {
                format!(
                    "{}price{} > 0",
                    "round(".repeat(n - 1),
                    ", 2)".repeat(n - 1)
                )
            }),
            ("greatest()", |n| {
                format!(
                    "{}1{} > 0",
                    "greatest(price, ".repeat(n - 1),
                    ")".repeat(n - 1)
                )
            }),
            ("coalesce(bool)", |n| {
                format!("{}flag{}", "coalesce(".repeat(n - 1), ")".repeat(n - 1))
            }),
            ("argument expressions", |n| {
                format!("{}1{} > 0", "abs(price + ".repeat(n - 1), ")".repeat(n - 1))
            }),
            ("BETWEEN operand", |n| {
                format!(
                    "price between {}1{} and 2",
                    "(".repeat(n - 1),
                    ")".repeat(n - 1)
                )
            }),
            ("IN item", |n| {
                format!("price in ({}1{})", "(".repeat(n - 1), ")".repeat(n - 1))
            }),
            ("boolean =", |n| {
                format!(
                    "{}true{}",
                    "((price > 0) = ".repeat(n - 1),
                    ")".repeat(n - 1)
                )
            }),
        ];
        for (name, b) in builders {
            // the construct's own levels: the largest n within the limit compiles, the next
            // one is rejected with TooDeep
            let mut n = d.max_depth;
            while with_limits(&b(n), d).is_err() {
                n -= 1;
                assert!(
                    n > d.max_depth - 3,
                    "{name}: depth {n} rejected: {:?}",
                    with_limits(&b(n), d)
                );
            }
            // (constructs that take two levels per repetition reach max_depth - 1)
            let depth = with_limits(&b(n), d).unwrap().depth;
            assert!(
                depth + 1 >= d.max_depth && depth <= d.max_depth,
                "{name}: {depth}"
            );
            let mut m = n + 1;
            while with_limits(&b(m), d).is_ok() {
                m += 1;
                assert!(m < d.max_depth + 4, "{name}: depth not limited");
            }
            assert!(
                matches!(
                    with_limits(&b(m), d),
                    Err(RuleError::TooDeep { max: 100, .. })
                ),
                "{name}: {:?}",
                with_limits(&b(m), d)
            );
            // the issue's sizes
            assert!(
                matches!(
                    with_limits(
                        &b(10_000),
                        Limits {
                            max_input_bytes: 10 << 20,
                            ..d
                        }
                    ),
                    Err(RuleError::TooDeep { .. })
                ),
                "{name}"
            );
        }
        assert!(matches!(
            err(&"not ".repeat(200_000)),
            RuleError::TooLong { .. }
        ));
        let deep = format!("{}price > 0{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(matches!(err(&deep), RuleError::TooLong { .. }));
        // nodes: an AND of k comparisons has 3k + 1 nodes
        let k = 600;
        let chain = vec!["price > 1"; k].join(" AND ");
        let n = with_limits(&chain, d).unwrap().nodes;
        assert_eq!(n, 3 * k + 1);
        assert!(with_limits(&chain, Limits { max_nodes: n, ..d }).is_ok());
        assert!(matches!(
            with_limits(&chain, Limits { max_nodes: n - 1, ..d }),
            Err(RuleError::TooManyNodes { max, .. }) if max == n - 1
        ));
        assert!(matches!(
            err(&vec!["price > 1"; 700].join(" AND ")),
            RuleError::TooManyNodes { max: 2000, .. }
        ));
        // output bytes
        let len = with_limits(&chain, d).unwrap().sql.len();
        assert!(with_limits(
            &chain,
            Limits {
                max_output_bytes: len,
                ..d
            }
        )
        .is_ok());
        assert_eq!(
            with_limits(
                &chain,
                Limits {
                    max_output_bytes: len - 1,
                    ..d
                }
            ),
            Err(RuleError::OutputTooLong { max: len - 1 })
        );
        let lit = format!("symbol = '{}'", "\\".repeat(100));
        let len = with_limits(&lit, d).unwrap().sql.len();
        assert!(with_limits(
            &lit,
            Limits {
                max_output_bytes: len,
                ..d
            }
        )
        .is_ok());
        assert!(with_limits(
            &lit,
            Limits {
                max_output_bytes: len - 1,
                ..d
            }
        )
        .is_err());
    }

    #[test]
    fn default_limits_admit_real_rules() {
        // a 500-symbol watchlist
        let list: Vec<String> = (0..500).map(|i| format!("'SYM{i}USDT'")).collect();
        let watch = format!("symbol IN ({}) AND change_5m > 1", list.join(", "));
        let c = compile(&watch, &cols(), &json!({})).unwrap();
        assert!(c.nodes < 520);
        // a long hand-written rule
        let rule = "(change_5m > $a OR change_15m > 2 * $a) AND NOT (rsi_14 BETWEEN 40 AND 60) \
                    AND vol_5m / greatest(vol_15m, 1) > 0.5 AND coalesce(ln(price), 0) > -2 \
                    AND round(abs(change_1h), 2) <= 10 AND symbol NOT IN ('USDCUSDT', 'FDUSDUSDT')";
        assert!(compile(rule, &cols(), &json!({"a": 1})).is_ok());
    }

    #[test]
    fn output_is_linear_in_nesting() {
        // nesting k levels adds the same number of bytes per level: no sub-expression is
        // repeated (0.1.0 doubled the output per ln/sqrt level)
        type Build = fn(usize) -> String;
        let builders: &[(&str, Build)] = &[
            ("ln", |k| {
                format!("{}price{} > 0", "ln(".repeat(k), ")".repeat(k))
            }),
            ("sqrt", |k| {
                format!("{}price{} > 0", "sqrt(".repeat(k), ")".repeat(k))
            }),
            ("ln(sqrt())", |k| {
                format!(
                    "{}price{} > 0",
                    "ln(sqrt(".repeat(k / 2),
                    "))".repeat(k / 2)
                )
            }),
            ("abs", |k| {
                format!("{}price{} > 0", "abs(".repeat(k), ")".repeat(k))
            }),
            ("greatest", |k| {
                format!("{}1{} > 0", "greatest(price, ".repeat(k), ")".repeat(k))
            }),
            ("round", |k| {
                format!("{}price{} > 0", "round(".repeat(k), ", 2)".repeat(k))
            }),
            ("division", |k| {
                format!("{}2{} > 0", "(price / ".repeat(k), ")".repeat(k))
            }),
            ("between", |k| {
                format!("{}price{} between 1 and 2", "abs(".repeat(k), ")".repeat(k))
            }),
            ("in", |k| {
                format!("{}price{} in (1, 2)", "sqrt(".repeat(k), ")".repeat(k))
            }),
            ("not", |k| format!("{}flag", "not ".repeat(k))),
        ];
        for (name, b) in builders {
            let len = |k: usize| ok(&b(k), json!({})).len();
            let step = len(4) - len(2);
            for k in (4..=90).step_by(2) {
                assert_eq!(len(k + 2) - len(k), step, "{name}: level {k}");
            }
            assert!(len(90) < 90 * 60, "{name}: {}", len(90));
        }
        // the issue's 147-byte rule: 352 MB of SQL in 0.1.0
        let rule = format!("{}price{} > 0", "sqrt(".repeat(23), ")".repeat(23));
        assert_eq!(rule.len(), 147);
        let sql = ok(&rule, json!({}));
        assert!(sql.len() < 600, "{}", sql.len());
        assert_eq!(sql.matches("m.\"price\"").count(), 1);
    }

    #[test]
    fn compile_work_is_linear() {
        // bytes allocated and hook calls per AND term stay constant as the chain grows
        // (0.1.0 re-formatted the whole prefix at every AND: quadratic)
        let big = Limits {
            max_input_bytes: usize::MAX,
            max_depth: 100,
            max_nodes: usize::MAX,
            max_output_bytes: usize::MAX,
        };
        let measure = |n: usize| {
            let expr = (0..n)
                .map(|i| format!("price > {i}"))
                .collect::<Vec<_>>()
                .join(" AND ");
            let mut calls = 0usize;
            let before = allocated();
            let c = compile_with(expr.as_bytes(), &cols(), &json!({}), &big, &mut || {
                calls += 1
            })
            .unwrap();
            let bytes = allocated() - before;
            (bytes, calls, c.sql.len(), expr.len())
        };
        let (b1, h1, o1, i1) = measure(15_000);
        let (b2, h2, o2, i2) = measure(60_000);
        let ratio = |a: usize, b: usize| b as f64 / a as f64;
        let input_ratio = ratio(i1, i2);
        assert!(input_ratio > 4.0);
        for (what, r) in [
            ("allocated bytes", ratio(b1, b2)),
            ("hook calls", ratio(h1, h2)),
            ("output", ratio(o1, o2)),
        ] {
            assert!(
                (0.8 * input_ratio..1.25 * input_ratio).contains(&r),
                "{what} grew {r:.2}x for {input_ratio:.2}x input"
            );
        }
        // every byte of output is allocated only a bounded number of times
        assert!(b2 < 40 * i2, "{b2} bytes allocated for {i2} bytes of input");
        // the hook runs on every recursion entry and at least every 256 tokens
        assert!(h2 >= 4 * 60_000 / HOOK_EVERY_TOKENS);
    }

    #[test]
    fn hook_can_abort_at_any_point() {
        // the hook is how ta.rule_compile checks the stack and interrupts: a panic in it (as
        // an ERROR becomes in pgrx) unwinds out of the compiler cleanly, at every call
        let expr = "abs(price) > 1 AND symbol IN ('a', 'b') AND NOT (rsi_14 BETWEEN 1 AND 2)";
        let mut total = 0;
        compile_with(
            expr.as_bytes(),
            &cols(),
            &json!({}),
            &Limits::DEFAULT,
            &mut || total += 1,
        )
        .unwrap();
        assert!(total > 10);
        for stop in 1..=total {
            let r = std::panic::catch_unwind(|| {
                let mut n = 0;
                let _ = compile_with(
                    expr.as_bytes(),
                    &cols(),
                    &json!({}),
                    &Limits::DEFAULT,
                    &mut || {
                        n += 1;
                        if n == stop {
                            panic!("cancel at {stop}");
                        }
                    },
                );
            });
            assert!(r.is_err(), "call {stop} of {total}");
        }
    }

    #[test]
    fn output_never_depends_on_search_path() {
        // every compiled form passes the scanner: only qualified functions and
        // OPERATOR(pg_catalog.op); fuzz it with generated expressions too
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        fn num(d: u32, r: &mut dyn FnMut(u64) -> u64) -> String {
            let atoms = [
                "price", "rsi_14", "vol_5m", "1", "2.5", "$k", "NULL", ".5", "-3",
            ];
            if d == 0 || r(3) == 0 {
                return atoms[r(atoms.len() as u64) as usize].to_string();
            }
            let (a, b) = (num(d - 1, r), num(d - 1, r));
            match r(8) {
                0 => format!("{a} + {b}"),
                1 => format!("({a} - {b}) * {b}"),
                2 => format!("{a} / {b}"),
                3 => format!("-({a})"),
                4 => format!(
                    "{}({a})",
                    ["abs", "ln", "sqrt", "sign", "round"][r(5) as usize]
                ),
                5 => format!(
                    "{}({a}, {b})",
                    ["greatest", "least", "coalesce"][r(3) as usize]
                ),
                6 => format!("round({a}, {})", r(7) as i32 - 3),
                _ => format!("({a})"),
            }
        }
        fn boolean(d: u32, r: &mut dyn FnMut(u64) -> u64) -> String {
            let cmp = ["<", "<=", ">", ">=", "=", "<>", "!="][r(7) as usize];
            if d == 0 {
                return format!("{} {cmp} {}", num(2, r), num(2, r));
            }
            match r(7) {
                0 => format!("{} AND {}", boolean(d - 1, r), boolean(d - 1, r)),
                1 => format!("({} OR {})", boolean(d - 1, r), boolean(d - 1, r)),
                2 => format!("NOT {}", boolean(d - 1, r)),
                3 => format!("{} NOT BETWEEN {} AND {}", num(2, r), num(1, r), num(1, r)),
                4 => format!("{} IN ({}, {})", num(2, r), num(1, r), num(1, r)),
                5 => format!("symbol IN ('a\\', 'it''s') OR symbol = '{}'", "x'' --"),
                _ => format!("({}) IS NOT TRUE", boolean(d - 1, r)),
            }
        }
        let mut compiled = 0;
        for _ in 0..2000 {
            let e = boolean(3, &mut next);
            if let Ok(c) = compile(&e, &cols(), &json!({"k": -1.5})) {
                scan_output(&c.sql);
                compiled += 1;
            }
        }
        assert!(compiled > 1500, "{compiled}");
    }

    #[test]
    fn presets_compile_to_equivalent_sql() {
        // 0.1.0's output with the operators and every parenthesis removed equals 0.2's
        // (both are left-to-right chains of the same comparisons and products); the
        // #[pg_test] presets_evaluate_as_before checks the values on rows
        let strip = |s: &str| {
            let s = s.replace(" OPERATOR(pg_catalog.", " ").replace(") ", " ");
            let s: String = s.chars().filter(|c| *c != '(' && *c != ')').collect();
            s.split_whitespace().collect::<Vec<_>>().join(" ")
        };
        let mut columns: Vec<Column> = cols();
        for name in [
            "change_1m",
            "change_8h",
            "change_1d",
            "vol_1m",
            "vol_1h",
            "vol_8h",
            "vol_1d",
            "low_1h",
            "high_1h",
            "min_change_1m_3",
            "max_change_1m_3",
            "min_vol_1m_3",
            "volatility_10",
            "range_8h",
        ] {
            columns.push(Column {
                name: name.into(),
                ty: ColumnType::Number,
            });
        }
        let data = include_str!("testdata/presets_v0_1_0.tsv");
        let mut n = 0;
        for line in data.lines().filter(|l| !l.starts_with('#')) {
            let f: Vec<&str> = line.split('\t').collect();
            let (name, expr, config, old) = (f[0], f[1], f[2], f[3]);
            let cfg: serde_json::Value = serde_json::from_str(config).unwrap();
            let new = compile(expr, &columns, &cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(new.depth, 1, "{name}");
            assert!(new.nodes <= 45, "{name}: {} nodes", new.nodes);
            // 0.1.0 put integer parameters in parentheses too: (15)
            let old = strip(old);
            assert_eq!(strip(&new.sql), old, "{name}:\n{}", new.sql);
            scan_output(&new.sql);
            n += 1;
        }
        assert_eq!(n, 16);
    }

    #[test]
    fn stack_per_level_is_small() {
        // ta.rule_compile runs on a backend's stack, where check_stack_depth() allows 2 MB by
        // default (max_stack_depth): the deepest admitted input, of every recursive
        // construct, must use at most half of that in any build (debug: ~5 KB per level)
        type Build = fn(usize) -> String;
        let builders: &[(&str, Build)] = &[
            ("parentheses", |n| {
                format!("{}price > 0{}", "(".repeat(n - 1), ")".repeat(n - 1))
            }),
            ("NOT", |n| format!("{}flag", "not ".repeat(n - 1))),
            ("unary minus", |n| {
                format!("{}price > 0", "- ".repeat(n - 1))
            }),
            ("abs()", |n| {
                format!("{}price{} > 0", "abs(".repeat(n - 1), ")".repeat(n - 1))
            }),
            ("round(,2)", |n| {
                format!(
                    "{}price{} > 0",
                    "round(".repeat(n - 1),
                    ", 2)".repeat(n - 1)
                )
            }),
            ("greatest()", |n| {
                format!(
                    "{}1{} > 0",
                    "greatest(price, ".repeat(n - 1),
                    ")".repeat(n - 1)
                )
            }),
            ("BETWEEN", |n| {
                format!(
                    "{}price BETWEEN 1 AND 2{}",
                    "(".repeat(n - 1),
                    ")".repeat(n - 1)
                )
            }),
            ("IN", |n| {
                format!("price IN ({}1{})", "(".repeat(n - 1), ")".repeat(n - 1))
            }),
        ];
        for (name, b) in builders {
            let expr = b(Limits::DEFAULT.max_depth);
            let used = std::thread::Builder::new()
                .stack_size(64 << 20)
                .spawn(move || {
                    let top = 0u8;
                    let top = &top as *const u8 as usize;
                    let mut low = usize::MAX;
                    let c = compile_with(
                        expr.as_bytes(),
                        &cols(),
                        &json!({}),
                        &Limits::DEFAULT,
                        &mut || {
                            let here = 0u8;
                            low = low.min(&here as *const u8 as usize);
                        },
                    )
                    .unwrap();
                    assert_eq!(c.depth, Limits::DEFAULT.max_depth);
                    top - low
                })
                .unwrap()
                .join()
                .unwrap();
            assert!(used < 1 << 20, "{name}: {used} bytes of stack at depth 100");
        }
    }
}
