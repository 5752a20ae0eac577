//! Type-preserving time-ordered aggregates: ta.first, ta.last (any value type, as
//! TimescaleDB's first/last) and ta.ohlcv (numeric candle rollup).

use core::ptr;

use pgrx::callconv::{Arg, ArgAbi, BoxRet, FcInfo};
use pgrx::pg_sys;
use pgrx::pgrx_sql_entity_graph::metadata::{
    ArgumentError, ReturnsError, ReturnsRef, SqlMappingRef, SqlTranslatable, TypeOrigin,
};
use pgrx::prelude::*;
use pgrx::{FromDatum, Internal, PgMemoryContexts};

use super::common::{agg_context, composite_return, form_tuple, raise_msg, result_tupdesc};

composite_return!(OhlcvResult, "ta.ohlcv_result");

/// An `anyelement` argument/result taken as its raw datum.
#[derive(Clone, Copy)]
pub(crate) struct RawAny(pg_sys::Datum);

impl FromDatum for RawAny {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _: pg_sys::Oid,
    ) -> Option<Self> {
        if is_null {
            None
        } else {
            Some(RawAny(datum))
        }
    }
}

unsafe impl<'fcx> ArgAbi<'fcx> for RawAny {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        unsafe { arg.unbox_arg_using_from_datum() }
            .unwrap_or_else(|| panic!("argument {index} must not be null"))
    }
}

unsafe impl BoxRet for RawAny {
    unsafe fn box_into<'fcx>(self, fcinfo: &mut FcInfo<'fcx>) -> pgrx::datum::Datum<'fcx> {
        unsafe { fcinfo.return_raw_datum(self.0) }
    }
}

unsafe impl SqlTranslatable for RawAny {
    const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!(RawAny);
    const TYPE_ORIGIN: TypeOrigin = TypeOrigin::External;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> =
        Ok(SqlMappingRef::literal("anyelement"));
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> =
        Ok(ReturnsRef::One(SqlMappingRef::literal("anyelement")));
}

/// Copies a datum of the given type into `ctx` (varlenas are detoasted first).
unsafe fn copy_datum(
    d: pg_sys::Datum,
    typlen: i16,
    byval: bool,
    ctx: pg_sys::MemoryContext,
) -> pg_sys::Datum {
    if byval {
        return d;
    }
    unsafe {
        let (src, len): (*const u8, usize) = if typlen == -1 {
            let p =
                pg_sys::pg_detoast_datum_packed(d.cast_mut_ptr::<pg_sys::varlena>()) as *const u8;
            let h = *p;
            let len = if h & 0x01 == 0x01 {
                ((h >> 1) & 0x7F) as usize
            } else {
                ((p as *const u32).read_unaligned() >> 2) as usize
            };
            (p, len)
        } else if typlen == -2 {
            let p = d.cast_mut_ptr::<core::ffi::c_char>();
            (
                p as *const u8,
                core::ffi::CStr::from_ptr(p).to_bytes_with_nul().len(),
            )
        } else {
            (d.cast_mut_ptr::<u8>() as *const u8, typlen as usize)
        };
        let dst = pg_sys::MemoryContextAlloc(ctx, len.max(1)) as *mut u8;
        ptr::copy_nonoverlapping(src, dst, len);
        pg_sys::Datum::from(dst)
    }
}

/// State of ta.first / ta.last.
struct Bookend {
    typlen: i16,
    byval: bool,
    ctx: pg_sys::MemoryContext,
    seen: bool,
    time: i64,
    value: Option<pg_sys::Datum>,
}

unsafe fn bookend_trans(
    mut internal: Internal,
    value: Option<RawAny>,
    time: Option<i64>,
    fcinfo: pg_sys::FunctionCallInfo,
    first: bool,
    fname: &str,
) -> Internal {
    let Some(t) = time else {
        return internal; // rows without a time are ignored
    };
    unsafe {
        let st: &mut Bookend = match internal.get_mut::<Bookend>() {
            Some(s) => &mut *(s as *mut Bookend),
            None => {
                let ctx = agg_context(fcinfo, fname);
                let typ = pg_sys::get_fn_expr_argtype((*fcinfo).flinfo, 1);
                if typ == pg_sys::InvalidOid {
                    raise_msg(fname, "could not determine the value type");
                }
                let (mut typlen, mut byval) = (0i16, false);
                pg_sys::get_typlenbyval(typ, &mut typlen, &mut byval);
                let p = PgMemoryContexts::For(ctx).leak_and_drop_on_delete(Bookend {
                    typlen,
                    byval,
                    ctx,
                    seen: false,
                    time: 0,
                    value: None,
                });
                internal = Internal::from(Some(pg_sys::Datum::from(p)));
                &mut *p
            }
        };
        let replace = !st.seen || if first { t < st.time } else { t > st.time };
        if replace {
            if let (Some(old), false) = (st.value, st.byval) {
                pg_sys::pfree(old.cast_mut_ptr());
            }
            st.value = value.map(|v| copy_datum(v.0, st.typlen, st.byval, st.ctx));
            st.time = t;
            st.seen = true;
        }
    }
    internal
}

unsafe fn bookend_final(internal: &Internal) -> Option<RawAny> {
    unsafe { internal.get::<Bookend>() }
        .and_then(|s| s.value)
        .map(RawAny)
}

#[pg_extern(immutable, parallel_safe, name = "first_trans")]
fn first_trans_timestamptz(
    state: Internal,
    value: Option<RawAny>,
    time: Option<TimestampWithTimeZone>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    unsafe {
        bookend_trans(
            state,
            value,
            time.map(pg_sys::TimestampTz::from),
            fcinfo,
            true,
            "ta.first",
        )
    }
}

#[pg_extern(immutable, parallel_safe, name = "first_trans")]
fn first_trans_bigint(
    state: Internal,
    value: Option<RawAny>,
    time: Option<i64>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    unsafe { bookend_trans(state, value, time, fcinfo, true, "ta.first") }
}

#[pg_extern(immutable, parallel_safe, name = "last_trans")]
fn last_trans_timestamptz(
    state: Internal,
    value: Option<RawAny>,
    time: Option<TimestampWithTimeZone>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    unsafe {
        bookend_trans(
            state,
            value,
            time.map(pg_sys::TimestampTz::from),
            fcinfo,
            false,
            "ta.last",
        )
    }
}

#[pg_extern(immutable, parallel_safe, name = "last_trans")]
fn last_trans_bigint(
    state: Internal,
    value: Option<RawAny>,
    time: Option<i64>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    unsafe { bookend_trans(state, value, time, fcinfo, false, "ta.last") }
}

#[pg_extern(immutable, parallel_safe, name = "bookend_final")]
fn bookend_final_timestamptz(
    state: Internal,
    _value: Option<RawAny>,
    _time: Option<TimestampWithTimeZone>,
) -> Option<RawAny> {
    unsafe { bookend_final(&state) }
}

#[pg_extern(immutable, parallel_safe, name = "bookend_final")]
fn bookend_final_bigint(
    state: Internal,
    _value: Option<RawAny>,
    _time: Option<i64>,
) -> Option<RawAny> {
    unsafe { bookend_final(&state) }
}

// ---- OHLCV rollup --------------------------------------------------------------------

/// State of ta.ohlcv: numeric datums copied into the aggregate context.
struct Ohlcv {
    ctx: pg_sys::MemoryContext,
    tupdesc: pg_sys::TupleDesc,
    first_t: i64,
    last_t: i64,
    open: Option<pg_sys::Datum>,
    high: Option<pg_sys::Datum>,
    low: Option<pg_sys::Datum>,
    close: Option<pg_sys::Datum>,
    volume: Option<pg_sys::Datum>,
}

unsafe fn num_cmp(a: pg_sys::Datum, b: pg_sys::Datum) -> i32 {
    unsafe {
        pg_sys::DirectFunctionCall2Coll(
            Some(super::common::c_numeric_cmp),
            pg_sys::InvalidOid,
            a,
            b,
        )
        .value() as i32
    }
}

unsafe fn set(slot: &mut Option<pg_sys::Datum>, v: pg_sys::Datum, ctx: pg_sys::MemoryContext) {
    unsafe {
        if let Some(old) = slot.take() {
            pg_sys::pfree(old.cast_mut_ptr());
        }
        *slot = Some(copy_datum(v, -1, false, ctx));
    }
}

#[pg_extern(immutable, parallel_safe, name = "ohlcv_trans")]
#[allow(clippy::too_many_arguments)]
fn ohlcv_trans(
    mut state: Internal,
    open_time: Option<TimestampWithTimeZone>,
    open: Option<super::common::RawNumeric>,
    high: Option<super::common::RawNumeric>,
    low: Option<super::common::RawNumeric>,
    close: Option<super::common::RawNumeric>,
    volume: Option<super::common::RawNumeric>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    const F: &str = "ta.ohlcv";
    let Some(t) = open_time.map(pg_sys::TimestampTz::from) else {
        return state;
    };
    unsafe {
        let st: &mut Ohlcv = match state.get_mut::<Ohlcv>() {
            Some(s) => &mut *(s as *mut Ohlcv),
            None => {
                let ctx = agg_context(fcinfo, F);
                let p = PgMemoryContexts::For(ctx).leak_and_drop_on_delete(Ohlcv {
                    ctx,
                    tupdesc: ptr::null_mut(),
                    first_t: i64::MAX,
                    last_t: i64::MIN,
                    open: None,
                    high: None,
                    low: None,
                    close: None,
                    volume: None,
                });
                state = Internal::from(Some(pg_sys::Datum::from(p)));
                &mut *p
            }
        };
        let ctx = st.ctx;
        if let Some(o) = open {
            if st.open.is_none() || t < st.first_t {
                set(&mut st.open, o.0, ctx);
                st.first_t = t;
            }
        }
        if let Some(c) = close {
            if st.close.is_none() || t > st.last_t {
                set(&mut st.close, c.0, ctx);
                st.last_t = t;
            }
        }
        if let Some(h) = high {
            if st.high.is_none_or(|cur| num_cmp(h.0, cur) > 0) {
                set(&mut st.high, h.0, ctx);
            }
        }
        if let Some(l) = low {
            if st.low.is_none_or(|cur| num_cmp(l.0, cur) < 0) {
                set(&mut st.low, l.0, ctx);
            }
        }
        if let Some(v) = volume {
            match st.volume {
                None => set(&mut st.volume, v.0, ctx),
                Some(cur) => {
                    let sum = pg_sys::DirectFunctionCall2Coll(
                        Some(super::common::c_numeric_add),
                        pg_sys::InvalidOid,
                        cur,
                        v.0,
                    );
                    set(&mut st.volume, sum, ctx);
                }
            }
        }
    }
    state
}

#[pg_extern(immutable, parallel_safe, name = "ohlcv_final", requires = ["composite_types"])]
fn ohlcv_final(mut state: Internal, fcinfo: pg_sys::FunctionCallInfo) -> Option<OhlcvResult> {
    let st = unsafe { state.get_mut::<Ohlcv>() }?;
    let cols = [st.open, st.high, st.low, st.close, st.volume];
    let mut values = [pg_sys::Datum::from(0usize); 5];
    let mut nulls = [true; 5];
    for (i, c) in cols.iter().enumerate() {
        if let Some(d) = c {
            values[i] = *d;
            nulls[i] = false;
        }
    }
    unsafe {
        let td = result_tupdesc(fcinfo, &mut st.tupdesc, st.ctx, "ta.ohlcv");
        Some(OhlcvResult(form_tuple(td, &mut values, &mut nulls)))
    }
}

extension_sql_file!(
    "sql/first_last.sql",
    requires = [
        first_trans_timestamptz,
        first_trans_bigint,
        last_trans_timestamptz,
        last_trans_bigint,
        bookend_final_timestamptz,
        bookend_final_bigint
    ]
);
extension_sql_file!("sql/ohlcv.sql", requires = [ohlcv_trans, ohlcv_final]);
