//! Shared glue for the SQL aggregates: state allocation in the aggregate memory context,
//! parameter validation, error reporting, fast numeric → float8 conversion, composite results.

use core::ptr;

use pgrx::callconv::{Arg, ArgAbi};
use pgrx::pg_sys;
use pgrx::pgrx_sql_entity_graph::metadata::{
    ArgumentError, ReturnsError, ReturnsRef, SqlMappingRef, SqlTranslatable, TypeOrigin,
};
use pgrx::prelude::*;
use pgrx::{FromDatum, Internal, PgMemoryContexts};

use crate::indicators::{FiniteOutput, TaError};

/// Raises `ERROR: <fname>: <e>` with SQLSTATE 22023 (invalid_parameter_value).
#[cold]
pub(crate) fn raise(fname: &str, e: TaError) -> ! {
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        format!("{fname}: {e}")
    );
}

/// Raises `ERROR: <fname>: <msg>` with SQLSTATE 22023.
#[cold]
pub(crate) fn raise_msg(fname: &str, msg: &str) -> ! {
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        format!("{fname}: {msg}")
    );
}

/// Raises `ERROR: <fname>: result out of range ...` with SQLSTATE 22003
/// (numeric_value_out_of_range): finite inputs whose arithmetic overflowed.
#[cold]
pub(crate) fn raise_out_of_range(fname: &str) -> ! {
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
        format!(
            "{fname}: result is out of range for double precision (the inputs overflow the \
             indicator's arithmetic)"
        )
    );
}

/// The one check of every indicator output before it becomes a SQL value: Infinity or NaN
/// (from finite inputs that overflow, e.g. ta.rsi of ±1e308 alternating) raise 22003.
#[inline]
pub(crate) fn finite_output<O: FiniteOutput>(fname: &str, out: Option<O>) -> Option<O> {
    if let Some(o) = &out {
        if !o.is_finite() {
            raise_out_of_range(fname);
        }
    }
    out
}

/// Unwraps a math result or raises it as a 22023 error.
#[inline]
pub(crate) fn ok<T>(fname: &str, r: Result<T, TaError>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => raise(fname, e),
    }
}

/// Checks an input value is finite (NaN/±Inf raise 22023).
#[inline]
pub(crate) fn finite(fname: &str, arg: &'static str, x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        raise(
            fname,
            TaError::NonFiniteInput {
                name: arg,
                value: x,
            },
        )
    }
}

/// Up to four scalar parameters of an aggregate, fixed by the first row of a group.
pub(crate) type Params = [f64; 4];

/// Aggregate transition state: the streaming indicator state, the parameters it was built
/// with, the output of the last non-NULL row, and a cached result TupleDesc (composites).
pub(crate) struct AggState<S, O> {
    pub(crate) s: S,
    pub(crate) params: Params,
    pub(crate) last: Option<O>,
    pub(crate) tupdesc: pg_sys::TupleDesc,
    /// the aggregate memory context the state lives in
    pub(crate) ctx: pg_sys::MemoryContext,
}

/// Returns the aggregate memory context, or raises when not called as an aggregate.
#[inline]
pub(crate) unsafe fn agg_context(
    fcinfo: pg_sys::FunctionCallInfo,
    fname: &str,
) -> pg_sys::MemoryContext {
    let mut ctx: pg_sys::MemoryContext = ptr::null_mut();
    if unsafe { pg_sys::AggCheckCallContext(fcinfo, &mut ctx) } == 0 || ctx.is_null() {
        raise_msg(
            fname,
            "transition function called in a non-aggregate context",
        );
    }
    ctx
}

/// Gets the state behind `internal`, creating it on the first row of a group: the
/// parameters are validated (not NULL; `create` checks ranges) and the state is allocated
/// in the aggregate memory context (dropped when that context is reset or deleted). On later
/// rows the parameters must equal the first row's.
#[inline]
pub(crate) unsafe fn state<'a, S, O>(
    internal: &mut Internal,
    fcinfo: pg_sys::FunctionCallInfo,
    fname: &str,
    names: &[&'static str],
    values: &[Option<f64>],
    create: impl FnOnce(&Params) -> Result<S, TaError>,
) -> &'a mut AggState<S, O> {
    if let Some(st) = unsafe { internal.get_mut::<AggState<S, O>>() } {
        let st: &'a mut AggState<S, O> = unsafe { &mut *(st as *mut AggState<S, O>) };
        for (i, v) in values.iter().enumerate() {
            match v {
                Some(v) if v.to_bits() == st.params[i].to_bits() => {}
                Some(v) => raise(
                    fname,
                    TaError::ParameterChanged {
                        name: names[i],
                        was: fmt_param(st.params[i]),
                        got: fmt_param(*v),
                    },
                ),
                None => raise_msg(fname, &format!("{} must not be NULL", names[i])),
            }
        }
        return st;
    }
    let mut params: Params = [0.0; 4];
    for (i, v) in values.iter().enumerate() {
        match v {
            Some(v) => params[i] = *v,
            None => raise_msg(fname, &format!("{} must not be NULL", names[i])),
        }
    }
    let s = ok(fname, create(&params));
    let ctx = unsafe { agg_context(fcinfo, fname) };
    let p = PgMemoryContexts::For(ctx).leak_and_drop_on_delete(AggState::<S, O> {
        s,
        params,
        last: None,
        tupdesc: ptr::null_mut(),
        ctx,
    });
    *internal = Internal::from(Some(pg_sys::Datum::from(p)));
    unsafe { &mut *p }
}

fn fmt_param(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// The state of a finished group (None when no row was seen).
#[inline]
pub(crate) unsafe fn final_state<S, O>(internal: &Internal) -> Option<&AggState<S, O>> {
    unsafe { internal.get::<AggState<S, O>>() }
}

// ---------------------------------------------------------------------------------------
// numeric input without per-row allocation

/// A `numeric` argument taken as its raw datum (no detoast copy, no `AnyNumeric`
/// conversion); converted to f64 by [`RawNumeric::to_f64`].
#[derive(Clone, Copy)]
pub(crate) struct RawNumeric(pub(crate) pg_sys::Datum);

impl FromDatum for RawNumeric {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _: pg_sys::Oid,
    ) -> Option<Self> {
        if is_null {
            None
        } else {
            Some(RawNumeric(datum))
        }
    }
}

unsafe impl<'fcx> ArgAbi<'fcx> for RawNumeric {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        unsafe { arg.unbox_arg_using_from_datum() }
            .unwrap_or_else(|| panic!("argument {index} must not be null"))
    }
}

unsafe impl SqlTranslatable for RawNumeric {
    const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!(RawNumeric);
    const TYPE_ORIGIN: TypeOrigin = TypeOrigin::External;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> =
        Ok(SqlMappingRef::literal("numeric"));
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> =
        Ok(ReturnsRef::One(SqlMappingRef::literal("numeric")));
}

// PostgreSQL's own C entry points, for DirectFunctionCall (pgrx's pg_sys wrappers are Rust fns).
unsafe extern "C-unwind" {
    #[link_name = "numeric_float8_no_overflow"]
    pub(crate) fn c_numeric_float8_no_overflow(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum;
    #[link_name = "numeric_cmp"]
    pub(crate) fn c_numeric_cmp(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum;
    #[link_name = "numeric_add"]
    pub(crate) fn c_numeric_add(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum;
    #[link_name = "numeric_sub"]
    pub(crate) fn c_numeric_sub(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum;
    #[link_name = "numeric_mul"]
    pub(crate) fn c_numeric_mul(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum;
    #[link_name = "numeric_float8"]
    pub(crate) fn c_numeric_float8(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum;
}

/// Exact powers of ten representable in f64.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// A numeric's payload (the bytes after the varlena header) taken apart, as PostgreSQL's
/// `numeric.c` lays it out: a short header (`NUMERIC_SHORT`: sign, display scale and weight
/// in one word) or a long one (sign and display scale word, then the weight word), then the
/// base-`NBASE` (10,000) digits, most significant first (native-endian `int16`s).
#[derive(Debug, Clone, Copy)]
pub(crate) enum NumericParts<'a> {
    /// NaN, Infinity or -Infinity: the header word (`NUMERIC_NAN`, `NUMERIC_PINF`, `NUMERIC_NINF`)
    Special(u16),
    Finite {
        neg: bool,
        /// the first digit's power of 10,000
        weight: i16,
        /// digits after the decimal point (`dscale`)
        dscale: u16,
        /// the digits' bytes (2 per digit)
        digits: &'a [u8],
    },
}

/// [`NumericParts`] of a numeric payload; None when it is too short to be one.
#[inline]
pub(crate) fn numeric_parts(data: &[u8]) -> Option<NumericParts<'_>> {
    if data.len() < 2 {
        return None;
    }
    let header = u16::from_ne_bytes([data[0], data[1]]);
    Some(match header & 0xC000 {
        0x8000 => NumericParts::Finite {
            neg: header & 0x2000 != 0,
            weight: if header & 0x0040 != 0 {
                (!0x003F_u16 | (header & 0x003F)) as i16
            } else {
                (header & 0x003F) as i16
            },
            dscale: (header & 0x1F80) >> 7,
            digits: &data[2..],
        },
        0xC000 => NumericParts::Special(header),
        flags => {
            if data.len() < 4 {
                return None;
            }
            NumericParts::Finite {
                neg: flags == 0x4000,
                weight: i16::from_ne_bytes([data[2], data[3]]),
                dscale: header & 0x3FFF,
                digits: &data[4..],
            }
        }
    })
}

/// Decodes a numeric's digits into `M · 10^e` and converts with one correctly rounded IEEE
/// operation when `M < 2^53` and `|e| <= 22` (both operands exact, so the result equals
/// PostgreSQL's own correctly rounded `numeric::float8`). `None` when the fast path does not
/// apply. `data` points at the numeric's header word (after the varlena header).
#[inline]
pub(crate) fn numeric_fast(data: &[u8]) -> Option<f64> {
    let (neg, weight, digits) = match numeric_parts(data)? {
        NumericParts::Finite {
            neg,
            weight,
            digits,
            ..
        } => (neg, weight, digits),
        // NaN / ±Infinity
        NumericParts::Special(h) => {
            return Some(match h {
                0xD000 => f64::INFINITY,
                0xF000 => f64::NEG_INFINITY,
                _ => f64::NAN,
            });
        }
    };
    let nd = digits.len() / 2;
    if nd == 0 {
        return Some(if neg { -0.0 } else { 0.0 });
    }
    if nd > 4 {
        return None;
    }
    let mut m: u64 = 0;
    for i in 0..nd {
        let d = u16::from_ne_bytes([digits[2 * i], digits[2 * i + 1]]);
        m = m * 10_000 + u64::from(d);
    }
    if m > (1u64 << 53) {
        return None;
    }
    let e = 4 * (i32::from(weight) - (nd as i32 - 1));
    let mf = m as f64;
    let v = if e >= 0 {
        if e > 22 {
            return None;
        }
        mf * POW10[e as usize]
    } else {
        if -e > 22 {
            return None;
        }
        mf / POW10[(-e) as usize]
    };
    Some(if neg { -v } else { v })
}

/// `numeric::float8` for ordinary values of up to 36 significant digits without calling
/// PostgreSQL: [`numeric_fast`] when it applies, else the decimal `M · 10^e` (M < 10^36) is
/// rounded in integer arithmetic ([`decimal_to_f64`]) or, where that does not apply, by Rust's
/// correctly rounded decimal parser — either way the same result as PostgreSQL's
/// `numeric_float8` (`numeric_out` then `strtod`, also correctly rounded). `None` for longer
/// numerics, special values and results out of the finite range (callers fall back to
/// PostgreSQL's function, which also raises its own errors).
pub(crate) fn numeric_to_f64(data: &[u8]) -> Option<f64> {
    if let Some(v) = numeric_fast(data) {
        return v.is_finite().then_some(v);
    }
    let NumericParts::Finite {
        neg,
        weight,
        digits,
        ..
    } = numeric_parts(data)?
    else {
        return None;
    };
    let nd = digits.len() / 2;
    if nd == 0 || nd > 9 {
        return None;
    }
    let mut m: u128 = 0;
    for i in 0..nd {
        let d = u16::from_ne_bytes([digits[2 * i], digits[2 * i + 1]]);
        m = m * 10_000 + u128::from(d);
    }
    let e = 4 * (i32::from(weight) - (nd as i32 - 1));
    if let Some(v) = decimal_to_f64(m, e) {
        return Some(if neg { -v } else { v });
    }
    let mut buf = [0u8; 64];
    let text = {
        use std::io::Write as _;
        let mut w = &mut buf[..];
        write!(w, "{}{m}e{e}", if neg { "-" } else { "" }).ok()?;
        let used = 64 - w.len();
        std::str::from_utf8(&buf[..used]).ok()?
    };
    let v: f64 = text.parse().ok()?;
    v.is_finite().then_some(v)
}

/// `M · 10^e` correctly rounded to the nearest double (ties to even), in integer arithmetic:
/// `M · 10^e` itself when it fits a `u128` (Rust's `as f64` rounds to nearest, ties to even);
/// for `e < 0`, the quotient `M · 2^s / 10^-e` with at least 56 bits, its remainder as a
/// sticky bit, rounded once to 53 bits. None outside that (`10^-e` beyond 2^72, a result out
/// of the normal range): the caller parses the decimal text instead.
#[inline]
fn decimal_to_f64(m: u128, e: i32) -> Option<f64> {
    if m == 0 {
        return Some(0.0);
    }
    if e >= 0 {
        return Some(m.checked_mul(10u128.checked_pow(e as u32)?)? as f64);
    }
    let d = 10u128.checked_pow(e.unsigned_abs())?;
    let (bm, bd) = (
        128 - m.leading_zeros() as i32,
        128 - d.leading_zeros() as i32,
    );
    // q = floor(m · 2^s / d) > 2^55 when m · 2^s fits 128 bits
    let s = (56 + bd - bm).max(0);
    if bm + s > 128 {
        return None;
    }
    let x = m << s;
    let q = x / d;
    let sticky = q * d != x;
    let n = 128 - q.leading_zeros() as i32;
    let shift = n - 53;
    let mut mant = (q >> shift) as u64;
    let rest = q & ((1u128 << shift) - 1);
    let half = 1u128 << (shift - 1);
    if rest > half || (rest == half && (sticky || mant & 1 == 1)) {
        mant += 1;
    }
    // value = mant · 2^(shift - s); mant ≤ 2^53 is exact as a double
    let k = shift - s;
    if !(-1000..=1000).contains(&k) {
        return None;
    }
    Some(mant as f64 * crate::features::exact::pow2(k))
}

/// Base-10,000 digits a [`numeric_add_fast`] operand or result may span (integer and
/// fraction digits, aligned to the common scale): 10,000^9 = 10^36, so both operands and
/// their sum fit an `i128` with room to spare.
const FIXED_GROUPS: i32 = 9;

/// A finite numeric as an integer number of 10,000^-k units (k ≥ 0: fraction digit groups),
/// with its sign folded in; None when `k` is too small for its digits or the value spans
/// more than [`FIXED_GROUPS`] digits.
#[inline]
fn numeric_fixed(weight: i16, digits: &[u8], k: i32) -> Option<i128> {
    let nd = (digits.len() / 2) as i32;
    let weight = i32::from(weight);
    if nd == 0 {
        return Some(0);
    }
    // exponent (of 10,000, after scaling by 10,000^k) of the first and the last digit
    let (top, last) = (weight + k, weight + k - (nd - 1));
    if last < 0 || top >= FIXED_GROUPS {
        return None;
    }
    let mut m: i128 = 0;
    for i in 0..nd as usize {
        m = m * 10_000 + i128::from(u16::from_ne_bytes([digits[2 * i], digits[2 * i + 1]]));
    }
    Some(m * 10_000i128.pow(last as u32))
}

/// The operands of a fixed-point operation: both finite, as integers at their common scale
/// (10,000^-k), and the larger display scale; None when either is special or too long.
#[inline]
fn numeric_fixed_pair(a: &[u8], b: &[u8]) -> Option<(i128, i128, i32, u16)> {
    let (
        NumericParts::Finite {
            neg: na,
            weight: wa,
            dscale: sa,
            digits: da,
        },
        NumericParts::Finite {
            neg: nb,
            weight: wb,
            dscale: sb,
            digits: db,
        },
    ) = (numeric_parts(a)?, numeric_parts(b)?)
    else {
        return None;
    };
    // fraction digit groups each needs: its last digit's position below the point
    let frac = |w: i16, d: &[u8]| ((d.len() / 2) as i32 - 1 - i32::from(w)).max(0);
    let k = frac(wa, da).max(frac(wb, db));
    let x = numeric_fixed(wa, da, k)?;
    let y = numeric_fixed(wb, db, k)?;
    Some((
        if na { -x } else { x },
        if nb { -y } else { y },
        k,
        sa.max(sb),
    ))
}

/// Payload bytes of a numeric from [`numeric_add_fast`]: header words and up to 10 digits.
pub(crate) type NumericPayload = ([u8; 24], usize);

/// `a + b` (`b` negated when `sub`) of two numeric payloads, as the payload PostgreSQL's
/// `numeric_add` / `numeric_sub` return, byte for byte: the exact sum at display scale
/// max(dscale), leading and trailing zero digits stripped, zero positive with weight 0, and
/// the short header whenever `NUMERIC_CAN_BE_SHORT` (`make_result`). None when an operand is
/// NaN/±Infinity or either spans more than [`FIXED_GROUPS`] digits at their common scale
/// (callers fall back to PostgreSQL's function).
#[inline]
pub(crate) fn numeric_add_fast(a: &[u8], b: &[u8], sub: bool) -> Option<NumericPayload> {
    let (x, y, k, dscale) = numeric_fixed_pair(a, b)?;
    let r = if sub { x - y } else { x + y };
    let neg = r < 0;
    // digits, least significant first: groups[j] is the digit of 10,000^(j - k)
    let mut groups = [0u16; 11];
    let n = base10000(r.unsigned_abs(), &mut groups);
    let lo = groups[..n].iter().take_while(|&&g| g == 0).count();
    // make_result: no digits = zero, positive, weight 0
    let (neg, weight) = if n == 0 {
        (false, 0)
    } else {
        (neg, n as i32 - 1 - k)
    };
    let mut out = [0u8; 24];
    let mut len;
    if dscale <= 0x3F && (-64..=63).contains(&weight) {
        // NUMERIC_SHORT | sign | dscale << 7 | weight sign | weight
        let h: u16 = 0x8000
            | (if neg { 0x2000 } else { 0 })
            | (dscale << 7)
            | (if weight < 0 { 0x0040 } else { 0 })
            | (weight as u16 & 0x003F);
        out[..2].copy_from_slice(&h.to_ne_bytes());
        len = 2;
    } else {
        // NUMERIC_POS / NUMERIC_NEG | dscale, then the weight
        let h: u16 = (if neg { 0x4000 } else { 0 }) | (dscale & 0x3FFF);
        out[..2].copy_from_slice(&h.to_ne_bytes());
        out[2..4].copy_from_slice(&(weight as i16).to_ne_bytes());
        len = 4;
    }
    for j in (lo..n).rev() {
        out[len..len + 2].copy_from_slice(&groups[j].to_ne_bytes());
        len += 2;
    }
    Some((out, len))
}

/// The base-10,000 digits of `u` into `groups`, least significant first; how many (0 for 0).
/// 64-bit divisions by constants (multiplications) but for at most two 128-bit ones that
/// split off 16 decimal digits each.
#[inline]
fn base10000(mut u: u128, groups: &mut [u16; 11]) -> usize {
    const P16: u128 = 10_000_000_000_000_000;
    let mut n = 0;
    while u > u128::from(u64::MAX) {
        let q = u / P16;
        let mut lo = (u - q * P16) as u64;
        for _ in 0..4 {
            groups[n] = (lo % 10_000) as u16;
            lo /= 10_000;
            n += 1;
        }
        u = q;
    }
    let mut v = u as u64;
    while v > 0 {
        groups[n] = (v % 10_000) as u16;
        v /= 10_000;
        n += 1;
    }
    n
}

/// PostgreSQL's `numeric_cmp` of two numeric payloads in fixed point; None where
/// [`numeric_add_fast`] does not apply.
#[inline]
pub(crate) fn numeric_cmp_fast(a: &[u8], b: &[u8]) -> Option<std::cmp::Ordering> {
    let (x, y, _, _) = numeric_fixed_pair(a, b)?;
    Some(x.cmp(&y))
}

impl RawNumeric {
    /// The value as the nearest f64 (NaN/±Inf for numeric's special values and for values out
    /// of double precision's range).
    #[inline]
    pub(crate) fn to_f64(self) -> f64 {
        self.fast()
            .unwrap_or_else(|| self.call(c_numeric_float8_no_overflow))
    }

    /// The value as PostgreSQL's `numeric::float8` gives it: the same fast path, and
    /// `numeric_float8` (which raises for values out of double precision's range) otherwise.
    #[inline]
    pub(crate) fn to_float8(self) -> f64 {
        self.fast().unwrap_or_else(|| self.call(c_numeric_float8))
    }

    /// [`numeric_fast`] on the datum's bytes, without detoasting (inline datums only).
    #[inline]
    fn fast(self) -> Option<f64> {
        unsafe {
            let p = self.0.cast_mut_ptr::<u8>();
            let h = *p;
            #[cfg(target_endian = "little")]
            {
                if h & 0x01 == 0x01 && h != 0x01 {
                    // 1-byte varlena header (short, inline)
                    let len = ((h >> 1) & 0x7F) as usize;
                    return numeric_fast(core::slice::from_raw_parts(
                        p.add(1),
                        len.saturating_sub(1),
                    ));
                } else if h & 0x03 == 0x00 {
                    // 4-byte header, uncompressed
                    let len = ((p as *const u32).read_unaligned() >> 2) as usize;
                    return numeric_fast(core::slice::from_raw_parts(
                        p.add(4),
                        len.saturating_sub(4),
                    ));
                }
            }
            let _ = h;
            None
        }
    }

    #[cold]
    fn call(
        self,
        f: unsafe extern "C-unwind" fn(pg_sys::FunctionCallInfo) -> pg_sys::Datum,
    ) -> f64 {
        let d = unsafe { pg_sys::DirectFunctionCall1Coll(Some(f), pg_sys::InvalidOid, self.0) };
        f64::from_bits(d.value() as u64)
    }
}

// ---------------------------------------------------------------------------------------
// composite results built from a TupleDesc cached in the aggregate state

/// The `SqlTranslatable` of a raw-datum newtype: SQL type `$sql` as a return type, and as an
/// argument type when `$argument` is `Ok` (shared by `raw_datum_arg!` and `composite_return!`).
macro_rules! sql_translatable {
    ($name:ident, $sql:literal, $argument:expr) => {
        unsafe impl pgrx::pgrx_sql_entity_graph::metadata::SqlTranslatable for $name {
            const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!($name);
            const TYPE_ORIGIN: pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin =
                pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin::External;
            const ARGUMENT_SQL: Result<
                pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef,
                pgrx::pgrx_sql_entity_graph::metadata::ArgumentError,
            > = $argument;
            const RETURN_SQL: Result<
                pgrx::pgrx_sql_entity_graph::metadata::ReturnsRef,
                pgrx::pgrx_sql_entity_graph::metadata::ReturnsError,
            > = Ok(pgrx::pgrx_sql_entity_graph::metadata::ReturnsRef::One(
                pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef::literal($sql),
            ));
        }
    };
}
pub(crate) use sql_translatable;

/// A struct holding an argument of SQL type `$sql` (a composite or an array of one) as its raw
/// datum, with the pgrx glue: the function deforms it itself (once, with the checks it needs).
/// A NULL argument is `None` for an `Option` parameter; `strict` functions never see one.
macro_rules! raw_datum_arg {
    ($(#[$meta:meta])* $name:ident, $sql:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy)]
        pub(crate) struct $name(pub(crate) pgrx::pg_sys::Datum);

        impl pgrx::FromDatum for $name {
            unsafe fn from_polymorphic_datum(
                datum: pgrx::pg_sys::Datum,
                is_null: bool,
                _: pgrx::pg_sys::Oid,
            ) -> Option<Self> {
                (!is_null).then_some($name(datum))
            }
        }

        unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for $name {
            unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
                let index = arg.index();
                unsafe { arg.unbox_arg_using_from_datum() }
                    .unwrap_or_else(|| panic!("argument {index} must not be null"))
            }
        }

        $crate::pg::common::sql_translatable!(
            $name,
            $sql,
            Ok(pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef::literal($sql))
        );
    };
}
pub(crate) use raw_datum_arg;

/// Declares a newtype around a composite datum whose SQL return type is `$sql`.
macro_rules! composite_return {
    ($name:ident, $sql:literal) => {
        pub(crate) struct $name(pub(crate) pgrx::pg_sys::Datum);

        unsafe impl pgrx::callconv::BoxRet for $name {
            unsafe fn box_into<'fcx>(
                self,
                fcinfo: &mut pgrx::callconv::FcInfo<'fcx>,
            ) -> pgrx::datum::Datum<'fcx> {
                unsafe { fcinfo.return_raw_datum(self.0) }
            }
        }

        $crate::pg::common::sql_translatable!(
            $name,
            $sql,
            Err(
                pgrx::pgrx_sql_entity_graph::metadata::ArgumentError::NotValidAsArgument(
                    stringify!($name),
                )
            )
        );
    };
}
pub(crate) use composite_return;

/// The (cached) blessed result TupleDesc of a final function, copied into the aggregate
/// memory context on first use so it lives as long as the state.
#[inline]
pub(crate) unsafe fn result_tupdesc(
    fcinfo: pg_sys::FunctionCallInfo,
    cache: &mut pg_sys::TupleDesc,
    ctx: pg_sys::MemoryContext,
    fname: &str,
) -> pg_sys::TupleDesc {
    if cache.is_null() {
        unsafe {
            let mut td: pg_sys::TupleDesc = ptr::null_mut();
            let class = pg_sys::get_call_result_type(fcinfo, ptr::null_mut(), &mut td);
            if class != pg_sys::TypeFuncClass::TYPEFUNC_COMPOSITE || td.is_null() {
                raise_msg(fname, "result type is not a composite type");
            }
            let old = pg_sys::MemoryContextSwitchTo(ctx);
            let copy = pg_sys::CreateTupleDescCopy(td);
            let blessed = pg_sys::BlessTupleDesc(copy);
            pg_sys::MemoryContextSwitchTo(old);
            *cache = blessed;
        }
    }
    *cache
}

/// Forms a composite datum of float8 columns (None = NULL column) with a cached TupleDesc.
#[inline]
pub(crate) unsafe fn form_float8_tuple(
    tupdesc: pg_sys::TupleDesc,
    cols: &[Option<f64>],
) -> pg_sys::Datum {
    let mut values = [pg_sys::Datum::from(0usize); 8];
    let mut nulls = [true; 8];
    for (i, c) in cols.iter().enumerate() {
        if let Some(v) = c {
            values[i] = pg_sys::Datum::from(v.to_bits() as usize);
            nulls[i] = false;
        }
    }
    unsafe { form_tuple(tupdesc, &mut values, &mut nulls) }
}

/// Forms a composite datum from raw datums.
#[inline]
pub(crate) unsafe fn form_tuple(
    tupdesc: pg_sys::TupleDesc,
    values: &mut [pg_sys::Datum],
    nulls: &mut [bool],
) -> pg_sys::Datum {
    unsafe {
        let tuple = pg_sys::heap_form_tuple(tupdesc, values.as_mut_ptr(), nulls.as_mut_ptr());
        pg_sys::HeapTupleHeaderGetDatum((*tuple).t_data)
    }
}

/// Transition step shared by the single-value indicators: get/create the state, skip a
/// NULL value (state unchanged), reject NaN/±Inf, remember the output.
#[inline]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn trans_value<S>(
    mut internal: Internal,
    fcinfo: pg_sys::FunctionCallInfo,
    fname: &str,
    names: &[&'static str],
    params: &[Option<f64>],
    input_name: &'static str,
    value: Option<f64>,
    create: impl FnOnce(&Params) -> Result<S, TaError>,
    update: impl FnOnce(&mut S, f64) -> Option<f64>,
) -> Internal {
    let st = unsafe { state::<S, f64>(&mut internal, fcinfo, fname, names, params, create) };
    if let Some(x) = value {
        let x = finite(fname, input_name, x);
        st.last = finite_output(fname, update(&mut st.s, x));
    }
    internal
}

/// Transition step for indicators with several inputs (high, low, close, volume ...): a row
/// with any NULL input is skipped (state unchanged); NaN/±Inf raise.
#[inline]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn trans_inputs<S, O: FiniteOutput, const K: usize>(
    mut internal: Internal,
    fcinfo: pg_sys::FunctionCallInfo,
    fname: &str,
    names: &[&'static str],
    params: &[Option<f64>],
    input_names: [&'static str; K],
    inputs: [Option<f64>; K],
    create: impl FnOnce(&Params) -> Result<S, TaError>,
    update: impl FnOnce(&mut S, [f64; K]) -> Option<O>,
) -> Internal {
    let st = unsafe { state::<S, O>(&mut internal, fcinfo, fname, names, params, create) };
    let mut xs = [0.0; K];
    for i in 0..K {
        match inputs[i] {
            Some(x) => xs[i] = finite(fname, input_names[i], x),
            None => return internal,
        }
    }
    st.last = finite_output(fname, update(&mut st.s, xs));
    internal
}

// Indicator hardening at the SQL boundary: finite extreme inputs never return Infinity/NaN,
// forged step states are rejected. `cargo pgrx test` enables the pg_test feature.
#[cfg(feature = "pg_test")]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// 60 rows: x alternates `a`, `b`; h = `hi`, l = `lo`, v = `vol`.
    fn data(a: &str, b: &str, hi: &str, lo: &str, vol: &str) -> String {
        format!(
            "(SELECT i, (CASE WHEN i % 2 = 1 THEN {a} ELSE {b} END)::float8 AS x,
                     {hi}::float8 AS h, {lo}::float8 AS l, {vol}::float8 AS v
              FROM generate_series(1, 60) i) d"
        )
    }

    /// Every indicator family over `d`, as (name, query returning one value column).
    fn queries(d: &str) -> Vec<(&'static str, String)> {
        let w = "OVER (ORDER BY i)";
        [
            ("sma", "ta.sma(x, 5)"),
            ("ema", "ta.ema(x, 5)"),
            ("wma", "ta.wma(x, 5)"),
            ("dema", "ta.dema(x, 5)"),
            ("tema", "ta.tema(x, 5)"),
            ("rsi", "ta.rsi(x, 14)"),
            ("roc", "ta.roc(x, 5)"),
            ("mom", "ta.mom(x, 5)"),
            ("stddev", "ta.stddev(x, 5, 1)"),
            ("volatility", "ta.volatility(abs(x), 5)"),
            ("macd", "ta.macd(x, 12, 26, 9)"),
            ("bbands", "ta.bbands(x, 5, 2, 2)"),
            ("atr", "ta.atr(h, l, x, 5)"),
            ("natr", "ta.natr(h, l, x, 5)"),
            ("adx", "ta.adx(h, l, x, 5)"),
            ("cci", "ta.cci(h, l, x, 5)"),
            ("willr", "ta.willr(h, l, x, 5)"),
            ("trange", "ta.trange(h, l, x)"),
            ("stoch", "ta.stoch(h, l, x, 5, 3, 3)"),
            ("obv", "ta.obv(x, v)"),
            ("mfi", "ta.mfi(h, l, x, v, 5)"),
            ("vwap", "ta.vwap(x, v)"),
            ("vcp", "ta.vcp(x, x, h, l)"),
            ("fib_pivots", "ta.fib_pivots(h, l, x)"),
            ("imbalance", "ta.imbalance(abs(x), v)"),
        ]
        .into_iter()
        .map(|(n, e)| (n, format!("SELECT {e} {w} FROM {d}")))
        .collect()
    }

    /// 'finite', '22003', or 'NOT FINITE' (an Infinity/NaN got out) for a query.
    fn probe(q: &str) -> String {
        Spi::get_one_with_args::<String>("SELECT pg_temp.probe($1)", &[q.into()])
            .expect("probe")
            .expect("not null")
    }

    fn setup() {
        Spi::run(
            "CREATE FUNCTION pg_temp.probe(q text) RETURNS text LANGUAGE plpgsql AS $f$
             DECLARE bad bigint;
             BEGIN
               EXECUTE format('SELECT count(*) FROM (%s) s(v) WHERE v::text ~* ''nan|inf''', q) INTO bad;
               RETURN CASE WHEN bad = 0 THEN 'finite' ELSE 'NOT FINITE' END;
             EXCEPTION WHEN numeric_value_out_of_range THEN RETURN '22003';
             END $f$",
        )
        .unwrap();
    }

    #[pg_test]
    fn extreme_inputs_never_return_infinity_or_nan() {
        setup();
        // the families that overflow on ±1e308 (the same list as the unit test
        // indicators::extreme_inputs) raise 22003, the others return finite values
        let overflowing = [
            "wma",
            "rsi",
            "mom",
            "stddev",
            "bbands",
            "atr",
            "natr",
            "adx",
            "willr",
            "trange",
            "stoch",
            "mfi",
            "vwap",
            "vcp",
            "fib_pivots",
            "imbalance",
        ];
        for (name, q) in queries(&data("1e308", "-1e308", "1e308", "-1e308", "1e308")) {
            let want = if overflowing.contains(&name) {
                "22003"
            } else {
                "finite"
            };
            assert_eq!(probe(&q), want, "{name}: {q}");
        }
        // tiny values (1e-308 is subnormal) stay finite everywhere
        for (name, q) in queries(&data("1e-308", "2e-308", "2e-308", "1e-308", "1e-308")) {
            assert_eq!(probe(&q), "finite", "{name}: {q}");
        }
        // numeric input takes the same path
        assert_eq!(
            probe("SELECT ta.rsi(x::numeric, 14) OVER (ORDER BY i) FROM (SELECT i, (CASE WHEN i % 2 = 0 THEN 1e308 ELSE -1e308 END)::numeric AS x FROM generate_series(1, 40) i) d"),
            "22003"
        );
        // the step functions: the output and the returned state
        assert_eq!(
            probe("SELECT ta.rsi_step(ta.rsi_step(NULL, 1e308, 2), -1e308, 2)"),
            "22003"
        );
        assert_eq!(
            probe("SELECT ta.macd_step(ta.macd_step(NULL, 1e308, 2, 3, 2), 1e308, 2, 3, 2)"),
            "22003"
        );
        let e = Spi::get_one::<String>(
            "SELECT pg_temp.probe('SELECT ta.rsi(x, 2) OVER (ORDER BY i) FROM (VALUES (1, 1e308::float8), (2, -1e308), (3, 1e308)) v(i, x)')",
        );
        assert_eq!(e, Ok(Some("22003".into())));
    }

    #[pg_test(
        error = "ta.rsi: result is out of range for double precision (the inputs overflow the indicator's arithmetic)"
    )]
    fn overflow_error_names_the_function() {
        Spi::run("SELECT ta.rsi(x, 2) OVER (ORDER BY i) FROM (VALUES (1, 1e308::float8), (2, -1e308), (3, 1e308), (4, -1e308)) v(i, x)").unwrap();
    }

    #[pg_test]
    fn forged_step_states_are_rejected() {
        Spi::run(
            "CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $f$
             BEGIN EXECUTE q; RETURN 'ok';
             EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE || ' ' || SQLERRM; END $f$",
        )
        .unwrap();
        let err = |q: &str| {
            Spi::get_one_with_args::<String>("SELECT pg_temp.err($1)", &[q.into()])
                .unwrap()
                .unwrap()
        };
        // [output, marker, period, count, prev_value, avg_gain, avg_loss]: a negative
        // average loss made 0.1.0 return RSI 125
        for (state, why) in [
            (
                "ARRAY[NULL, 7101, 14, 16, 100, 5, -1]",
                "average loss must be a finite number >= 0",
            ),
            (
                "ARRAY[NULL, 7101, 14, 16, 100, -5, 1]",
                "average gain must be a finite number >= 0",
            ),
            (
                "ARRAY[NULL, 7101, 14, 17, 100, 5, 1]",
                "counter 17 is not an integer in 0..=16",
            ),
            (
                "ARRAY[NULL, 7101, 14, 2.5, 100, 5, 1]",
                "counter 2.5 is not an integer",
            ),
            (
                "ARRAY[NULL, 7101, 14, 16, 'Infinity', 5, 1]",
                "non-finite value",
            ),
            (
                "ARRAY['NaN', 7101, 14, 16, 100, 5, 1]",
                "output element 1 is not finite",
            ),
            (
                "ARRAY[NULL, 7101, 14, 1, 100, 5, 0]",
                "must be 0 before the first change",
            ),
        ] {
            for value in ["101", "NULL"] {
                let e = err(&format!(
                    "SELECT ta.rsi_step({state}::float8[], {value}, 14)"
                ));
                assert!(
                    e.starts_with("22023 ta.rsi_step: invalid state") && e.contains(why),
                    "{state} {value}: {e}"
                );
            }
        }
        // MACD: counters consistent with each other
        let good = "ta.macd_step(NULL, 1, 12, 26, 9)";
        assert_eq!(
            err(&format!("SELECT ta.macd_step({good}, 2, 12, 26, 9)")),
            "ok"
        );
        for (i, v, why) in [
            (8, "-1", "counter -1"),
            (8, "28", "counter 28 is not an integer in 0..=27"),
            (9, "5", "EMA counters"),
            (12, "3", "EMA counters"),
            (10, "'NaN'", "non-finite value"),
        ] {
            let e = err(&format!(
                "SELECT ta.macd_step((SELECT s[:{}] || ARRAY[{v}]::float8[] || s[{}:] FROM (SELECT {good} AS s) q), 2, 12, 26, 9)",
                i - 1,
                i + 1
            ));
            assert!(
                e.starts_with("22023 ta.macd_step: invalid state") && e.contains(why),
                "element {i} = {v}: {e}"
            );
        }
        // what update() produced is still accepted, bit for bit (fold = aggregate)
        let mismatches = Spi::get_one::<i64>(
            "WITH RECURSIVE s(i, st) AS (
               SELECT 1, ta.rsi_step(NULL, 100, 14)
               UNION ALL SELECT i + 1, ta.rsi_step(st, 100 + (i * 37 % 23) - (i % 7), 14) FROM s WHERE i < 60)
             SELECT count(*) FILTER (WHERE st[1] IS DISTINCT FROM w) FROM s
             JOIN (SELECT i, ta.rsi(CASE WHEN i = 1 THEN 100 ELSE 100 + ((i - 1) * 37 % 23) - ((i - 1) % 7) END::float8, 14)
                          OVER (ORDER BY i) AS w FROM generate_series(1, 60) i) a USING (i)",
        );
        assert_eq!(mismatches, Ok(Some(0)));
    }
}
