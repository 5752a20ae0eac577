//! Screener rule expressions: a small, safe subset of SQL boolean expressions over the
//! columns of a metrics row, compiled into SQL text that the database evaluates.
//!
//! # Input
//! A boolean expression such as `change_5m > 2 AND rsi_14 < $rsi_max`, the columns it may
//! reference (name and type), and the rule's parameters (`$name` → JSON number).
//!
//! # Output
//! SQL text, fully parenthesised, in which every column reads `m."name"` and every `$param`
//! is replaced by its numeric literal. Only what the grammar below admits can appear in the
//! output: no subqueries, no function outside [`FUNCTIONS`], no identifiers outside the
//! given columns. That is what makes it safe to run inside the candle-insert trigger.
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
//!
//! # Runtime safety
//! Evaluation must never raise inside the trigger that writes candles, so the compiler emits
//! error-free forms: `a / b` becomes `a / NULLIF(b, 0)`; `ln(x)` and `sqrt(x)` return NULL
//! outside their domain. A NULL result means "does not fire" (a window that is not full yet
//! yields NULL metrics).
//!
//! # Errors
//! [`RuleError`] with the byte offset of the problem.

use std::collections::BTreeSet;
use std::fmt::Write as _;

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
    #[error("parameter ${name} at position {pos} is not set in the rule's config")]
    MissingParameter { name: String, pos: usize },
    #[error("parameter ${name} must be a JSON number, got {value}")]
    BadParameter { name: String, value: String },
    #[error("type error at position {pos}: {msg}")]
    Type { pos: usize, msg: String },
    #[error("expression is empty")]
    Empty,
    #[error("expression must be boolean, but it is {found}")]
    NotBoolean { found: &'static str },
}

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

fn tokenize(src: &str) -> Result<Vec<(Tok, usize)>, RuleError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let syntax = |pos: usize, msg: &str| RuleError::Syntax {
        pos,
        msg: msg.to_string(),
    };
    while i < b.len() {
        let c = b[i];
        let start = i;
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
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
            b'+' | b'*' | b'/' => {
                out.push((
                    Tok::Op(match c {
                        b'+' => "+",
                        b'*' => "*",
                        _ => "/",
                    }),
                    start,
                ));
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
                let mut s = String::new();
                i += 1;
                loop {
                    match b.get(i) {
                        None => return Err(syntax(start, "unterminated string literal")),
                        Some(b'\'') if b.get(i + 1) == Some(&b'\'') => {
                            s.push('\'');
                            i += 2
                        }
                        Some(b'\'') => {
                            i += 1;
                            break;
                        }
                        Some(_) => {
                            // copy one UTF-8 character
                            let ch = src[i..].chars().next().expect("in bounds");
                            s.push(ch);
                            i += ch.len_utf8();
                        }
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
                    return Err(syntax(start, "expected a parameter name after '$'"));
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
                if !is_number(text) {
                    return Err(syntax(start, &format!("bad number {text:?}")));
                }
                if i < b.len() && (b[i].is_ascii_alphabetic() || b[i] == b'_') {
                    return Err(syntax(i, "a number must not run into a name"));
                }
                out.push((Tok::Num(text.to_string()), start));
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                out.push((Tok::Ident(src[start..i].to_ascii_lowercase()), start));
            }
            b'"' => return Err(syntax(start, "quoted identifiers are not allowed")),
            b';' => return Err(syntax(start, "';' is not allowed")),
            _ => {
                let ch = src[i..].chars().next().expect("in bounds");
                return Err(syntax(start, &format!("unexpected character {ch:?}")));
            }
        }
    }
    Ok(out)
}

/// `digits[.digits][e[+-]digits]` or `.digits...` — a literal PostgreSQL reads as numeric.
fn is_number(t: &str) -> bool {
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(p) => (&t[..p], Some(&t[p + 1..])),
        None => (t, None),
    };
    let mut parts = mantissa.splitn(2, '.');
    let int = parts.next().unwrap_or("");
    let frac = parts.next();
    let digits = |s: &str| s.bytes().all(|c| c.is_ascii_digit());
    let ok_mantissa = digits(int)
        && frac.is_none_or(digits)
        && (!int.is_empty() || frac.is_some_and(|f| !f.is_empty()));
    let ok_exp = exp.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    ok_mantissa && ok_exp
}

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

struct Parser<'a> {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    end: usize,
    columns: &'a [Column],
    params: &'a dyn Fn(&str) -> Option<Result<String, String>>,
    used_columns: BTreeSet<String>,
    used_params: BTreeSet<String>,
}

const KEYWORDS: &[&str] = &[
    "and", "or", "not", "is", "null", "true", "false", "between", "in",
];

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(t, _)| t)
    }
    fn here(&self) -> usize {
        self.toks.get(self.pos).map_or(self.end, |(_, p)| *p)
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
    fn expect(&mut self, t: Tok, what: &str) -> Result<(), RuleError> {
        if self.peek() == Some(&t) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.syntax(&format!("expected {what}")))
        }
    }
    fn syntax(&self, msg: &str) -> RuleError {
        let found = match self.peek() {
            None => "end of expression".to_string(),
            Some(Tok::Num(n)) => format!("number {n}"),
            Some(Tok::Str(_)) => "a string".to_string(),
            Some(Tok::Ident(s)) => format!("\"{s}\""),
            Some(Tok::Param(p)) => format!("${p}"),
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
    fn want(&self, got: Ty, want: Ty, pos: usize, what: &str) -> Result<(), RuleError> {
        if got.fits(want) {
            Ok(())
        } else {
            Err(RuleError::Type {
                pos,
                msg: format!("{what} needs {}, got {}", want.name(), got.name()),
            })
        }
    }

    fn or(&mut self) -> Result<(String, Ty), RuleError> {
        let pos = self.here();
        let (mut sql, mut ty) = self.and()?;
        while self.eat_kw("or") {
            self.want(ty, Ty::Bool, pos, "OR")?;
            let rpos = self.here();
            let (r, rt) = self.and()?;
            self.want(rt, Ty::Bool, rpos, "OR")?;
            sql = format!("({sql} OR {r})");
            ty = Ty::Bool;
        }
        Ok((sql, ty))
    }
    fn and(&mut self) -> Result<(String, Ty), RuleError> {
        let pos = self.here();
        let (mut sql, mut ty) = self.not()?;
        while self.eat_kw("and") {
            self.want(ty, Ty::Bool, pos, "AND")?;
            let rpos = self.here();
            let (r, rt) = self.not()?;
            self.want(rt, Ty::Bool, rpos, "AND")?;
            sql = format!("({sql} AND {r})");
            ty = Ty::Bool;
        }
        Ok((sql, ty))
    }
    fn not(&mut self) -> Result<(String, Ty), RuleError> {
        let pos = self.here();
        if self.eat_kw("not") {
            let (e, t) = self.not()?;
            self.want(t, Ty::Bool, pos, "NOT")?;
            return Ok((format!("(NOT {e})"), Ty::Bool));
        }
        self.pred()
    }
    fn pred(&mut self) -> Result<(String, Ty), RuleError> {
        let lpos = self.here();
        let (l, lt) = self.sum()?;
        if let Some(Tok::Op(op)) = self.peek().cloned() {
            if matches!(op, "<" | "<=" | ">" | ">=" | "=" | "<>") {
                self.pos += 1;
                let rpos = self.here();
                let (r, rt) = self.sum()?;
                let t = Ty::unify(lt, rt).ok_or_else(|| RuleError::Type {
                    pos: rpos,
                    msg: format!("cannot compare {} with {}", lt.name(), rt.name()),
                })?;
                if t == Ty::Bool && !matches!(op, "=" | "<>") {
                    return Err(RuleError::Type {
                        pos: lpos,
                        msg: format!("'{op}' does not apply to booleans"),
                    });
                }
                return Ok((format!("({l} {op} {r})"), Ty::Bool));
            }
        }
        if self.eat_kw("is") {
            let neg = self.eat_kw("not");
            let what = if self.eat_kw("null") {
                "NULL"
            } else if self.eat_kw("true") {
                self.want(lt, Ty::Bool, lpos, "IS TRUE")?;
                "TRUE"
            } else if self.eat_kw("false") {
                self.want(lt, Ty::Bool, lpos, "IS FALSE")?;
                "FALSE"
            } else {
                return Err(self.syntax("expected NULL, TRUE or FALSE after IS"));
            };
            let not = if neg { "NOT " } else { "" };
            return Ok((format!("({l} IS {not}{what})"), Ty::Bool));
        }
        let neg = if self.is_kw("not") && (self.is_kw_at(1, "between") || self.is_kw_at(1, "in")) {
            self.pos += 1;
            true
        } else {
            false
        };
        let not = if neg { "NOT " } else { "" };
        if self.eat_kw("between") {
            self.want(lt, Ty::Num, lpos, "BETWEEN")?;
            let p1 = self.here();
            let (a, at) = self.sum()?;
            self.want(at, Ty::Num, p1, "BETWEEN")?;
            if !self.eat_kw("and") {
                return Err(self.syntax("expected AND in BETWEEN"));
            }
            let p2 = self.here();
            let (b, bt) = self.sum()?;
            self.want(bt, Ty::Num, p2, "BETWEEN")?;
            return Ok((format!("({l} {not}BETWEEN {a} AND {b})"), Ty::Bool));
        }
        if self.eat_kw("in") {
            self.expect(Tok::LParen, "'(' after IN")?;
            let mut items = Vec::new();
            loop {
                let p = self.here();
                let (e, et) = self.sum()?;
                if Ty::unify(lt, et).is_none() {
                    return Err(RuleError::Type {
                        pos: p,
                        msg: format!(
                            "IN list item is {}, but the value is {}",
                            et.name(),
                            lt.name()
                        ),
                    });
                }
                items.push(e);
                if self.peek() == Some(&Tok::Comma) {
                    self.pos += 1;
                } else {
                    break;
                }
            }
            self.expect(Tok::RParen, "')' closing the IN list")?;
            return Ok((format!("({l} {not}IN ({}))", items.join(", ")), Ty::Bool));
        }
        if neg {
            return Err(self.syntax("expected BETWEEN or IN after NOT"));
        }
        Ok((l, lt))
    }
    fn sum(&mut self) -> Result<(String, Ty), RuleError> {
        let lpos = self.here();
        let (mut sql, mut ty) = self.term()?;
        while let Some(Tok::Op(op @ ("+" | "-"))) = self.peek().cloned() {
            self.pos += 1;
            self.want(ty, Ty::Num, lpos, &format!("'{op}'"))?;
            let rpos = self.here();
            let (r, rt) = self.term()?;
            self.want(rt, Ty::Num, rpos, &format!("'{op}'"))?;
            sql = format!("({sql} {op} {r})");
            ty = Ty::Num;
        }
        Ok((sql, ty))
    }
    fn term(&mut self) -> Result<(String, Ty), RuleError> {
        let lpos = self.here();
        let (mut sql, mut ty) = self.unary()?;
        while let Some(Tok::Op(op @ ("*" | "/"))) = self.peek().cloned() {
            self.pos += 1;
            self.want(ty, Ty::Num, lpos, &format!("'{op}'"))?;
            let rpos = self.here();
            let (r, rt) = self.unary()?;
            self.want(rt, Ty::Num, rpos, &format!("'{op}'"))?;
            sql = if op == "/" {
                format!("({sql} / NULLIF({r}, 0))")
            } else {
                format!("({sql} * {r})")
            };
            ty = Ty::Num;
        }
        Ok((sql, ty))
    }
    fn unary(&mut self) -> Result<(String, Ty), RuleError> {
        if let Some(Tok::Op(op @ ("+" | "-"))) = self.peek().cloned() {
            let pos = self.here();
            self.pos += 1;
            let (e, t) = self.unary()?;
            self.want(t, Ty::Num, pos, &format!("unary '{op}'"))?;
            return Ok((format!("({op}{e})"), Ty::Num));
        }
        self.primary()
    }
    fn primary(&mut self) -> Result<(String, Ty), RuleError> {
        let pos = self.here();
        let Some(tok) = self.peek().cloned() else {
            return Err(self.syntax("expected a value"));
        };
        match tok {
            Tok::Num(n) => {
                self.pos += 1;
                Ok((n, Ty::Num))
            }
            Tok::Str(s) => {
                self.pos += 1;
                Ok((format!("'{}'", s.replace('\'', "''")), Ty::Text))
            }
            Tok::Param(name) => {
                self.pos += 1;
                match (self.params)(&name) {
                    None => Err(RuleError::MissingParameter { name, pos }),
                    Some(Err(value)) => Err(RuleError::BadParameter { name, value }),
                    Some(Ok(lit)) => {
                        self.used_params.insert(name);
                        Ok((format!("({lit})"), Ty::Num))
                    }
                }
            }
            Tok::LParen => {
                self.pos += 1;
                let (e, t) = self.or()?;
                self.expect(Tok::RParen, "')'")?;
                Ok((e, t))
            }
            Tok::Ident(name) => {
                self.pos += 1;
                match name.as_str() {
                    "true" => return Ok(("TRUE".into(), Ty::Bool)),
                    "false" => return Ok(("FALSE".into(), Ty::Bool)),
                    "null" => return Ok(("NULL".into(), Ty::Null)),
                    _ if KEYWORDS.contains(&name.as_str()) => {
                        self.pos -= 1;
                        return Err(self.syntax("expected a value"));
                    }
                    _ => {}
                }
                if self.peek() == Some(&Tok::LParen) {
                    return self.call(name, pos);
                }
                let col = self
                    .columns
                    .iter()
                    .find(|c| c.name == name)
                    .ok_or_else(|| RuleError::UnknownColumn {
                        hint: suggestions(&name, self.columns),
                        name: name.clone(),
                        pos,
                    })?;
                let ty = match col.ty {
                    ColumnType::Number => Ty::Num,
                    ColumnType::Text => Ty::Text,
                    ColumnType::Boolean => Ty::Bool,
                    ColumnType::Other => return Err(RuleError::UnusableColumn { name, pos }),
                };
                self.used_columns.insert(name.clone());
                Ok((format!("m.\"{name}\""), ty))
            }
            _ => Err(self.syntax("expected a value")),
        }
    }
    fn call(&mut self, name: String, pos: usize) -> Result<(String, Ty), RuleError> {
        let Some(&(_, min, max)) = FUNCTIONS.iter().find(|(f, _, _)| *f == name) else {
            return Err(RuleError::UnknownFunction {
                name,
                pos,
                allowed: FUNCTIONS
                    .iter()
                    .map(|(f, _, _)| *f)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        self.expect(Tok::LParen, "'('")?;
        let mut args = Vec::new();
        if self.peek() != Some(&Tok::RParen) {
            loop {
                let p = self.here();
                let (e, t) = self.or()?;
                args.push((e, t, p));
                if self.peek() == Some(&Tok::Comma) {
                    self.pos += 1;
                } else {
                    break;
                }
            }
        }
        self.expect(Tok::RParen, "')' closing the argument list")?;
        if args.len() < min || args.len() > max {
            return Err(RuleError::Arity {
                name,
                pos,
                min,
                max,
                got: args.len(),
            });
        }
        let ty = if name == "coalesce" {
            let mut t = Ty::Null;
            for (_, at, p) in &args {
                t = Ty::unify(t, *at).ok_or_else(|| RuleError::Type {
                    pos: *p,
                    msg: "coalesce() arguments must have one type".into(),
                })?;
            }
            t
        } else {
            for (_, at, p) in &args {
                self.want(*at, Ty::Num, *p, &format!("{name}()"))?;
            }
            Ty::Num
        };
        let list = args
            .iter()
            .map(|(e, _, _)| e.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let sql = match name.as_str() {
            // NULL outside the domain instead of an error inside the trigger
            "ln" => format!("(CASE WHEN {list} > 0 THEN ln({list}) END)"),
            "sqrt" => format!("(CASE WHEN {list} >= 0 THEN sqrt({list}) END)"),
            "round" if args.len() == 2 => {
                // round(x, n) exists for numeric only
                let (x, n) = (&args[0].0, &args[1].0);
                format!("round(({x})::numeric, ({n})::int)")
            }
            _ => format!("{name}({list})"),
        };
        Ok((sql, ty))
    }
}

/// " (did you mean a, b?)" for the usable columns closest to `name` (edit distance <= 2, or
/// `name` is a prefix), or "".
fn suggestions(name: &str, columns: &[Column]) -> String {
    let mut close: Vec<(usize, &str)> = columns
        .iter()
        .filter(|c| c.ty != ColumnType::Other)
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

/// A compiled rule expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    /// Safe SQL text; columns read `m."name"`.
    pub sql: String,
    /// Columns the expression reads, sorted.
    pub columns: Vec<String>,
    /// `$parameters` the expression reads, sorted.
    pub parameters: Vec<String>,
}

/// Renders a JSON number from a rule config as a SQL numeric literal.
/// Accepts numbers and strings holding a number; rejects everything else.
pub fn parameter_literal(value: &serde_json::Value) -> Result<String, String> {
    let text = match value {
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::String(s) => s.trim().to_string(),
        other => return Err(other.to_string()),
    };
    let (neg, body) = match text.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, text.as_str()),
    };
    if !is_number(body) {
        return Err(value.to_string());
    }
    Ok(if neg {
        format!("-{body}")
    } else {
        body.to_string()
    })
}

/// Compile `expression` against `columns`, resolving `$params` in `config`
/// (a JSON object; other keys are ignored).
pub fn compile(
    expression: &str,
    columns: &[Column],
    config: &serde_json::Value,
) -> Result<Compiled, RuleError> {
    let toks = tokenize(expression)?;
    if toks.is_empty() {
        return Err(RuleError::Empty);
    }
    let lookup = |name: &str| config.get(name).map(parameter_literal);
    let mut p = Parser {
        toks,
        pos: 0,
        end: expression.len(),
        columns,
        params: &lookup,
        used_columns: BTreeSet::new(),
        used_params: BTreeSet::new(),
    };
    let (sql, ty) = p.or()?;
    if p.pos != p.toks.len() {
        return Err(p.syntax("unexpected input after the expression"));
    }
    if !matches!(ty, Ty::Bool | Ty::Null) {
        return Err(RuleError::NotBoolean { found: ty.name() });
    }
    let mut out = String::new();
    let _ = write!(out, "{sql}");
    Ok(Compiled {
        sql: out,
        columns: p.used_columns.into_iter().collect(),
        parameters: p.used_params.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    #[test]
    fn compiles_valid_expressions() {
        // (expression, config, expected SQL)
        let cases = [
            (
                "change_5m > 2 AND rsi_14 < 30",
                json!({}),
                r#"((m."change_5m" > 2) AND (m."rsi_14" < 30))"#,
            ),
            (
                "change_1h > $min AND $k * vol_5m > vol_15m",
                json!({"min": 1.6, "k": 2}),
                r#"((m."change_1h" > (1.6)) AND (((2) * m."vol_5m") > m."vol_15m"))"#,
            ),
            (
                "change_5m < -$m",
                json!({"m": "0.6"}),
                r#"(m."change_5m" < (-(0.6)))"#,
            ),
            (
                "vol_5m / vol_15m > 0.5",
                json!({}),
                r#"((m."vol_5m" / NULLIF(m."vol_15m", 0)) > 0.5)"#,
            ),
            (
                "symbol IN ('BTCUSDT', 'ETHUSDT') OR NOT (price BETWEEN 1 AND 2e3)",
                json!({}),
                r#"((m."symbol" IN ('BTCUSDT', 'ETHUSDT')) OR (NOT (m."price" BETWEEN 1 AND 2e3)))"#,
            ),
            (
                "ln(price) IS NOT NULL and abs(change_5m) >= .5",
                json!({}),
                r#"(((CASE WHEN m."price" > 0 THEN ln(m."price") END) IS NOT NULL) AND (abs(m."change_5m") >= .5))"#,
            ),
            (
                "change_5m != 1 AND symbol = 'it''s'",
                json!({}),
                r#"((m."change_5m" <> 1) AND (m."symbol" = 'it''s'))"#,
            ),
            ("CHANGE_5M>1", json!({}), r#"(m."change_5m" > 1)"#),
            ("rsi_14 IS NULL", json!({}), r#"(m."rsi_14" IS NULL)"#),
            (
                "coalesce(rsi_14, 50) < 30",
                json!({}),
                r#"(coalesce(m."rsi_14", 50) < 30)"#,
            ),
        ];
        for (expr, cfg, want) in cases {
            assert_eq!(ok(expr, cfg), want, "{expr}");
        }
    }

    #[test]
    fn reports_columns_and_parameters() {
        let c = compile(
            "change_1h > $a and vol_5m > $b * vol_15m and change_1h < 9",
            &cols(),
            &json!({"a": 1, "b": 2, "unused": 3}),
        )
        .unwrap();
        assert_eq!(c.columns, vec!["change_1h", "vol_15m", "vol_5m"]);
        assert_eq!(c.parameters, vec!["a", "b"]);
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
        assert!(matches!(
            err("1 > 0; drop table x"),
            RuleError::Syntax { .. }
        ));
        assert!(matches!(
            err("change_5m > 1 -- c"),
            RuleError::Syntax { .. }
        ));
        assert!(matches!(err("\"change_5m\" > 1"), RuleError::Syntax { .. }));
        // TC: functions outside the list
        assert!(matches!(
            err("pg_sleep(1) IS NULL"),
            RuleError::UnknownFunction { .. }
        ));
        assert!(matches!(err("abs(1, 2) > 0"), RuleError::Arity { .. }));
        // TC: parameters
        assert!(matches!(
            err("change_5m > $nope"),
            RuleError::MissingParameter { .. }
        ));
        assert!(matches!(
            compile("change_5m > $k", &cols(), &json!({"k": "1; drop"})),
            Err(RuleError::BadParameter { .. })
        ));
        assert!(matches!(
            compile("change_5m > $k", &cols(), &json!({"k": [1]})),
            Err(RuleError::BadParameter { .. })
        ));
        // TC: types
        assert!(matches!(err("change_5m + 1"), RuleError::NotBoolean { .. }));
        assert!(matches!(err("symbol > 1"), RuleError::Type { .. }));
        assert!(matches!(err("change_5m AND true"), RuleError::Type { .. }));
        assert!(matches!(
            err("open_time > 1"),
            RuleError::UnusableColumn { .. }
        ));
        // TC: syntax
        assert!(matches!(err(""), RuleError::Empty));
        assert!(matches!(err("   "), RuleError::Empty));
        assert!(matches!(err("change_5m >"), RuleError::Syntax { .. }));
        assert!(matches!(
            err("change_5m > 1 change_15m"),
            RuleError::Syntax { .. }
        ));
        assert!(matches!(err("change_5m > 1.2.3"), RuleError::Syntax { .. }));
        assert!(matches!(err("change_5m > 1e"), RuleError::Syntax { .. }));
        assert!(matches!(err("'unterminated > 1"), RuleError::Syntax { .. }));
        assert!(matches!(err("change_5m > 1 and"), RuleError::Syntax { .. }));
        assert!(matches!(err("(change_5m > 1"), RuleError::Syntax { .. }));
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
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn parameter_literals() {
        assert_eq!(parameter_literal(&json!(1.6)).unwrap(), "1.6");
        assert_eq!(parameter_literal(&json!(-15)).unwrap(), "-15");
        assert_eq!(parameter_literal(&json!("5e6")).unwrap(), "5e6");
        assert_eq!(parameter_literal(&json!(" -0.5 ")).unwrap(), "-0.5");
        assert!(parameter_literal(&json!("--1")).is_err());
        assert!(parameter_literal(&json!("1)")).is_err());
        assert!(parameter_literal(&json!(null)).is_err());
        assert!(parameter_literal(&json!(true)).is_err());
    }
}
