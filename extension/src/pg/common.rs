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

use crate::indicators::TaError;

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
}

/// Exact powers of ten representable in f64.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Decodes a numeric's digits into `M · 10^e` and converts with one correctly rounded IEEE
/// operation when `M < 2^53` and `|e| <= 22` (both operands exact, so the result equals
/// PostgreSQL's own correctly rounded `numeric::float8`). `None` when the fast path does not
/// apply. `data` points at the numeric's header word (after the varlena header).
#[inline]
fn numeric_fast(data: &[u8]) -> Option<f64> {
    if data.len() < 2 {
        return None;
    }
    let header = u16::from_ne_bytes([data[0], data[1]]);
    let flags = header & 0xC000;
    let (neg, weight, digits) = match flags {
        0x8000 => {
            // short format
            let neg = header & 0x2000 != 0;
            let w = if header & 0x0040 != 0 {
                (!0x003F_u16 | (header & 0x003F)) as i16
            } else {
                (header & 0x003F) as i16
            };
            (neg, w, &data[2..])
        }
        0xC000 => {
            // NaN / ±Infinity
            return Some(match header {
                0xD000 => f64::INFINITY,
                0xF000 => f64::NEG_INFINITY,
                _ => f64::NAN,
            });
        }
        _ => {
            if data.len() < 4 {
                return None;
            }
            let w = i16::from_ne_bytes([data[2], data[3]]);
            (flags == 0x4000, w, &data[4..])
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

impl RawNumeric {
    /// The value as the nearest f64 (NaN/±Inf for numeric's special values).
    #[inline]
    pub(crate) fn to_f64(self) -> f64 {
        unsafe {
            let p = self.0.cast_mut_ptr::<u8>();
            let h = *p;
            #[cfg(target_endian = "little")]
            {
                if h & 0x01 == 0x01 && h != 0x01 {
                    // 1-byte varlena header (short, inline)
                    let len = ((h >> 1) & 0x7F) as usize;
                    if let Some(v) =
                        numeric_fast(core::slice::from_raw_parts(p.add(1), len.saturating_sub(1)))
                    {
                        return v;
                    }
                } else if h & 0x03 == 0x00 {
                    // 4-byte header, uncompressed
                    let len = ((p as *const u32).read_unaligned() >> 2) as usize;
                    if let Some(v) =
                        numeric_fast(core::slice::from_raw_parts(p.add(4), len.saturating_sub(4)))
                    {
                        return v;
                    }
                }
            }
            let _ = h;
            let d = pg_sys::DirectFunctionCall1Coll(
                Some(c_numeric_float8_no_overflow),
                pg_sys::InvalidOid,
                self.0,
            );
            f64::from_bits(d.value() as u64)
        }
    }
}

// ---------------------------------------------------------------------------------------
// composite results built from a TupleDesc cached in the aggregate state

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

        unsafe impl pgrx::pgrx_sql_entity_graph::metadata::SqlTranslatable for $name {
            const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!($name);
            const TYPE_ORIGIN: pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin =
                pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin::External;
            const ARGUMENT_SQL: Result<
                pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef,
                pgrx::pgrx_sql_entity_graph::metadata::ArgumentError,
            > = Err(
                pgrx::pgrx_sql_entity_graph::metadata::ArgumentError::NotValidAsArgument(
                    stringify!($name),
                ),
            );
            const RETURN_SQL: Result<
                pgrx::pgrx_sql_entity_graph::metadata::ReturnsRef,
                pgrx::pgrx_sql_entity_graph::metadata::ReturnsError,
            > = Ok(pgrx::pgrx_sql_entity_graph::metadata::ReturnsRef::One(
                pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef::literal($sql),
            ));
        }
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
        st.last = update(&mut st.s, x);
    }
    internal
}

/// Transition step for indicators with several inputs (high, low, close, volume ...): a row
/// with any NULL input is skipped (state unchanged); NaN/±Inf raise.
#[inline]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn trans_inputs<S, O, const K: usize>(
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
    st.last = update(&mut st.s, xs);
    internal
}
