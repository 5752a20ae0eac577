//! SQL surface of the screener engine (`crate::screener`), used three ways:
//!
//! - `ta._screener_state(...) OVER (PARTITION BY market, symbol ORDER BY open_time ...)`: the
//!   window aggregate the data schema uses for bulk writes, past screener rows and backtests;
//!   seeded with a `ta.screener_checkpoint`, it returns a `ta.screener_state` (row, chain after,
//!   day checkpoint) for the rows it is asked to emit and NULL for the others.
//! - `ta.screener(...)`: the same engine from the start of a series, for any candle relation.
//! - `ta._screener_cache_step/_load/_reset`: a per-session cache of each instrument's engine,
//!   so a live close costs one engine step. EXECUTE is revoked from PUBLIC: only the extension
//!   owner and superusers (the data schema's SECURITY DEFINER triggers) can fill or step it.
//!
//! Quote volumes stay PostgreSQL numerics (their bytes), added and subtracted with
//! PostgreSQL's own `numeric_add`/`numeric_sub` and converted with `numeric_float8`, so the
//! volumes equal SQL numeric arithmetic in value and display scale. Prices are converted with
//! the exact fast path of `pg::common` (equal to `numeric::float8`, else `numeric_float8`).

use std::cell::RefCell;
use std::collections::HashMap;

use pgrx::callconv::{Arg, ArgAbi};
use pgrx::datum::TimestampWithTimeZone;
use pgrx::pgrx_sql_entity_graph::metadata::{
    ArgumentError, ReturnsError, ReturnsRef, SqlMappingRef, SqlTranslatable, TypeOrigin,
};
use pgrx::prelude::*;
use pgrx::{FromDatum, Internal, PgMemoryContexts, PgTupleDesc};

use super::common::{
    agg_context, c_numeric_add, c_numeric_cmp, c_numeric_float8, c_numeric_sub, composite_return,
    form_tuple, numeric_add_fast, numeric_cmp_fast, numeric_to_f64, raise_msg, raw_datum_arg,
    RawNumeric,
};
use crate::screener::{Candle, Checkpoint, Engine, EngineError, FloatError, ScreenerRow, Volume};

composite_return!(ScreenerStateResult, "ta.screener_state");
composite_return!(ScreenerRowResult, "ta.screener_row");

// ---------------------------------------------------------------------------------------
// numerics as PostgreSQL's own bytes

/// Payload bytes kept inline (a numeric of up to 40 decimal digits); longer ones go to the heap.
const INLINE: usize = 22;

/// A numeric value as PostgreSQL's bytes: the varlena payload without its header.
#[derive(Debug, Clone)]
pub(crate) enum NumBytes {
    Inline { len: u8, data: [u8; INLINE] },
    Heap(Box<[u8]>),
}

/// An aligned stack buffer for building a numeric datum from [`NumBytes`].
#[repr(C, align(8))]
struct DatumBuf([u8; 64]);

impl NumBytes {
    pub(crate) fn from_payload(p: &[u8]) -> Self {
        if p.len() <= INLINE {
            let mut data = [0u8; INLINE];
            data[..p.len()].copy_from_slice(p);
            NumBytes::Inline {
                len: p.len() as u8,
                data,
            }
        } else {
            NumBytes::Heap(p.into())
        }
    }

    pub(crate) fn payload(&self) -> &[u8] {
        match self {
            NumBytes::Inline { len, data } => &data[..*len as usize],
            NumBytes::Heap(b) => b,
        }
    }

    /// The bytes of a numeric datum (detoasted if needed; the datum is not kept).
    pub(crate) unsafe fn from_datum(d: pg_sys::Datum) -> Self {
        unsafe {
            let raw = d.cast_mut_ptr::<pg_sys::varlena>();
            let p = pg_sys::pg_detoast_datum_packed(raw);
            let len = pgrx::varlena::varsize_any_exhdr(p);
            let out = Self::from_payload(std::slice::from_raw_parts(
                pgrx::varlena::vardata_any(p).cast::<u8>(),
                len,
            ));
            if p != raw {
                pg_sys::pfree(p.cast());
            }
            out
        }
    }

    /// NaN, Infinity or -Infinity (numeric's special values).
    pub(crate) fn is_special(&self) -> bool {
        let p = self.payload();
        p.len() >= 2 && u16::from_ne_bytes([p[0], p[1]]) & 0xC000 == 0xC000
    }

    /// A freshly palloc'd numeric datum (4-byte header) with these bytes.
    pub(crate) fn to_datum(&self) -> pg_sys::Datum {
        let p = self.payload();
        unsafe {
            let total = p.len() + pg_sys::VARHDRSZ;
            let v = pg_sys::palloc(total).cast::<pg_sys::varlena>();
            pgrx::varlena::set_varsize_4b(v, total as i32);
            std::ptr::copy_nonoverlapping(
                p.as_ptr(),
                v.cast::<u8>().add(pg_sys::VARHDRSZ),
                p.len(),
            );
            pg_sys::Datum::from(v)
        }
    }

    /// Calls `f` with a numeric datum of these bytes that lives only during the call (no
    /// allocation for ordinary values).
    pub(crate) fn with_datum<R>(&self, f: impl FnOnce(pg_sys::Datum) -> R) -> R {
        let p = self.payload();
        let total = p.len() + pg_sys::VARHDRSZ;
        let mut stack = DatumBuf([0; 64]);
        let mut heap: Vec<u64>;
        let base: *mut u8 = if total <= stack.0.len() {
            stack.0.as_mut_ptr()
        } else {
            heap = vec![0u64; total.div_ceil(8)];
            heap.as_mut_ptr().cast()
        };
        unsafe {
            pgrx::varlena::set_varsize_4b(base.cast(), total as i32);
            std::ptr::copy_nonoverlapping(p.as_ptr(), base.add(pg_sys::VARHDRSZ), p.len());
        }
        f(pg_sys::Datum::from(base))
    }

    /// `f(self, other)` for a PostgreSQL numeric function returning numeric.
    pub(crate) fn binary(
        &self,
        other: &Self,
        f: unsafe extern "C-unwind" fn(pg_sys::FunctionCallInfo) -> pg_sys::Datum,
    ) -> Self {
        self.with_datum(|a| {
            other.with_datum(|b| unsafe {
                let r = pg_sys::DirectFunctionCall2Coll(Some(f), pg_sys::InvalidOid, a, b);
                let out = Self::from_datum(r);
                pg_sys::pfree(r.cast_mut_ptr());
                out
            })
        })
    }
}

impl Volume for NumBytes {
    fn zero() -> Self {
        // make_result() of zero: NUMERIC_SHORT, weight 0, dscale 0, no digits (= '0'::numeric)
        Self::from_payload(&0x8000u16.to_ne_bytes())
    }
    fn add(&self, other: &Self) -> Self {
        match numeric_add_fast(self.payload(), other.payload(), false) {
            Some((b, n)) => Self::from_payload(&b[..n]),
            None => self.binary(other, c_numeric_add),
        }
    }
    fn sub(&self, other: &Self) -> Self {
        match numeric_add_fast(self.payload(), other.payload(), true) {
            Some((b, n)) => Self::from_payload(&b[..n]),
            None => self.binary(other, c_numeric_sub),
        }
    }
    fn to_f64(&self) -> f64 {
        if let Some(v) = numeric_to_f64(self.payload()) {
            return v;
        }
        self.with_datum(|d| unsafe {
            let r = pg_sys::DirectFunctionCall1Coll(Some(c_numeric_float8), pg_sys::InvalidOid, d);
            f64::from_bits(r.value() as u64)
        })
    }
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if let Some(o) = numeric_cmp_fast(self.payload(), other.payload()) {
            return o;
        }
        self.with_datum(|a| {
            other.with_datum(|b| unsafe {
                let r =
                    pg_sys::DirectFunctionCall2Coll(Some(c_numeric_cmp), pg_sys::InvalidOid, a, b);
                (r.value() as i32).cmp(&0)
            })
        })
    }
}

/// A price argument as PostgreSQL's `numeric::float8` (NaN/±Infinity are rejected by the
/// engine).
pub(crate) fn price(n: RawNumeric) -> f64 {
    n.to_float8()
}

// Elements of a `numeric[]` argument as raw datums.
unsafe impl pgrx::datum::UnboxDatum for RawNumeric {
    type As<'src> = RawNumeric;
    unsafe fn unbox<'src>(datum: pgrx::datum::Datum<'src>) -> Self::As<'src>
    where
        Self: 'src,
    {
        RawNumeric(unsafe { pg_sys::Datum::unbox(datum) })
    }
}

// ---------------------------------------------------------------------------------------
// ta.screener_checkpoint arguments

raw_datum_arg!(
    /// A `ta.screener_checkpoint` argument taken as its raw composite datum.
    CheckpointArg,
    "ta.screener_checkpoint"
);

/// A `text` argument as its raw datum: compared and copied as bytes (no conversion per row).
#[derive(Clone, Copy)]
pub(crate) struct RawText(pg_sys::Datum);

impl RawText {
    /// The text's bytes (detoasted into the current memory context if needed).
    pub(crate) fn bytes<'a>(self) -> &'a [u8] {
        unsafe {
            let p = pg_sys::pg_detoast_datum_packed(self.0.cast_mut_ptr());
            std::slice::from_raw_parts(
                pgrx::varlena::vardata_any(p).cast::<u8>(),
                pgrx::varlena::varsize_any_exhdr(p),
            )
        }
    }
}

impl FromDatum for RawText {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _: pg_sys::Oid,
    ) -> Option<Self> {
        (!is_null).then_some(RawText(datum))
    }
}

unsafe impl<'fcx> ArgAbi<'fcx> for RawText {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        unsafe { arg.unbox_arg_using_from_datum() }
            .unwrap_or_else(|| panic!("argument {index} must not be null"))
    }
}

unsafe impl SqlTranslatable for RawText {
    const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!(RawText);
    const TYPE_ORIGIN: TypeOrigin = TypeOrigin::External;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> = Ok(SqlMappingRef::literal("text"));
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> =
        Ok(ReturnsRef::One(SqlMappingRef::literal("text")));
}

/// Column types of the composite types, in order (checked against the catalog before any
/// tuple is formed or read, so an altered type raises instead of misreading memory).
pub(crate) const CHECKPOINT_TYPES: [pg_sys::Oid; 7] = [
    pg_sys::INT8OID,
    pg_sys::TIMESTAMPTZOID,
    pg_sys::FLOAT8OID,
    pg_sys::NUMERICOID,
    pg_sys::FLOAT8OID,
    pg_sys::FLOAT8ARRAYOID,
    pg_sys::FLOAT8ARRAYOID,
];
pub(crate) const ROW_COLUMNS: usize = 66;

pub(crate) fn row_types() -> [pg_sys::Oid; ROW_COLUMNS] {
    use pg_sys::{FLOAT8OID as F, INT8OID, NUMERICOID as N, TEXTOID, TIMESTAMPTZOID};
    let mut t = [F; ROW_COLUMNS];
    t[..5].copy_from_slice(&[TEXTOID, TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT8OID]);
    t[7] = N; // vol_1m
    for w in 0..6 {
        t[8 + 7 * w + 5] = N; // vol_W
    }
    t[52] = N; // min_vol_1m_3
    t
}

/// Raises unless `td` has exactly the columns `types` (no dropped columns).
pub(crate) unsafe fn check_shape(
    fname: &str,
    td: pg_sys::TupleDesc,
    types: &[pg_sys::Oid],
    name: &str,
) {
    unsafe {
        // PgTupleDesc reads attributes the way each PostgreSQL major lays them out (18 replaced
        // the `attrs` array by TupleDescAttr()): no version switch here
        let desc = PgTupleDesc::from_pg_unchecked(td);
        let ok = desc.len() == types.len()
            && desc
                .iter()
                .zip(types)
                .all(|(a, &t)| !a.attisdropped && a.atttypid == t);
        if !ok {
            raise_msg(
                fname,
                &format!("{name} does not have the columns pg_ta expects (was the type altered?)"),
            );
        }
    }
}

/// Decodes a `ta.screener_checkpoint` value (the engine validates it).
pub(crate) unsafe fn decode_checkpoint(
    fname: &str,
    arg: &str,
    d: pg_sys::Datum,
) -> Checkpoint<NumBytes> {
    unsafe {
        let th = pg_sys::pg_detoast_datum(d.cast_mut_ptr()).cast::<pg_sys::HeapTupleHeaderData>();
        let typid = (*th).t_choice.t_datum.datum_typeid;
        let typmod = (*th).t_choice.t_datum.datum_typmod;
        let td = pg_sys::lookup_rowtype_tupdesc(typid, typmod);
        check_shape(fname, td, &CHECKPOINT_TYPES, "ta.screener_checkpoint");
        pg_sys::DecrTupleDescRefCount(td);
        let get = |i: i16| {
            let mut is_null = false;
            let v = pg_sys::GetAttributeByNum(th, i, &mut is_null);
            (!is_null).then_some(v)
        };
        let array = |v: Option<pg_sys::Datum>| {
            v.and_then(|v| {
                Vec::<Option<f64>>::from_polymorphic_datum(v, false, pg_sys::FLOAT8ARRAYOID)
            })
        };
        let cum = get(4).map(|v| NumBytes::from_datum(v));
        if cum.as_ref().is_some_and(NumBytes::is_special) {
            raise_msg(
                fname,
                &format!("{arg}: cum_quote_volume must be a finite number"),
            );
        }
        Checkpoint {
            candles: get(1).map(|v| v.value() as i64),
            open_time: get(2).map(|v| v.value() as i64),
            close: get(3).map(|v| f64::from_bits(v.value() as u64)),
            cum_quote_volume: cum,
            sum_log_return_sq: get(5).map(|v| f64::from_bits(v.value() as u64)),
            rsi_state: array(get(6)),
            macd_state: array(get(7)),
        }
    }
}

// ---------------------------------------------------------------------------------------
// errors

#[cold]
pub(crate) fn raise_null(fname: &str, arg: &str) -> ! {
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
        format!("{fname}: {arg} must not be NULL")
    );
}

fn fmt_time(t: i64) -> String {
    TimestampWithTimeZone::try_from(t).map_or_else(|_| t.to_string(), |ts| ts.to_string())
}

/// Raises an engine error with PostgreSQL's SQLSTATE for it.
#[cold]
pub(crate) fn raise_engine(fname: &str, e: EngineError) -> ! {
    use PgSqlErrorCode::*;
    let (code, msg) = match &e {
        EngineError::NotIncreasing { last, got } => (
            ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "rows must be in strictly increasing open_time: {} follows {} (ORDER BY open_time, one row per open_time)",
                fmt_time(*got),
                fmt_time(*last)
            ),
        ),
        EngineError::NonFinite { .. } => (ERRCODE_INVALID_PARAMETER_VALUE, e.to_string()),
        EngineError::InvalidCheckpoint { .. } => {
            (ERRCODE_INVALID_PARAMETER_VALUE, format!("start: {e}"))
        }
        EngineError::Float { err, .. } => (
            match err {
                FloatError::Overflow | FloatError::Underflow => ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
                FloatError::DivisionByZero => ERRCODE_DIVISION_BY_ZERO,
                FloatError::Logarithm => ERRCODE_INVALID_ARGUMENT_FOR_LOG,
                FloatError::SquareRoot | FloatError::Power => {
                    ERRCODE_INVALID_ARGUMENT_FOR_POWER_FUNCTION
                }
            },
            e.to_string(),
        ),
    };
    ereport!(ERROR, code, format!("{fname}: {msg}"));
}

pub(crate) fn ok<T>(fname: &str, r: Result<T, EngineError>) -> T {
    r.unwrap_or_else(|e| raise_engine(fname, e))
}

// ---------------------------------------------------------------------------------------
// candle arguments

/// Instant of a timestamptz argument; NULL and ±infinity raise.
pub(crate) fn time(fname: &str, arg: &str, t: Option<TimestampWithTimeZone>) -> i64 {
    let Some(t) = t else { raise_null(fname, arg) };
    if !t.is_finite() {
        raise_msg(fname, &format!("{arg} must be a finite timestamp"));
    }
    t.into_inner()
}

pub(crate) fn bound(t: Option<TimestampWithTimeZone>) -> Option<i64> {
    t.map(TimestampWithTimeZone::into_inner)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn candle(
    fname: &str,
    open_time: Option<TimestampWithTimeZone>,
    close_time: Option<TimestampWithTimeZone>,
    open: Option<RawNumeric>,
    high: Option<RawNumeric>,
    low: Option<RawNumeric>,
    close: Option<RawNumeric>,
    quote_volume: Option<RawNumeric>,
) -> Candle<NumBytes> {
    let p = |arg: &str, v: Option<RawNumeric>| price(v.unwrap_or_else(|| raise_null(fname, arg)));
    let qv = unsafe {
        NumBytes::from_datum(
            quote_volume
                .unwrap_or_else(|| raise_null(fname, "quote_volume"))
                .0,
        )
    };
    if qv.is_special() {
        raise_msg(fname, "quote_volume must be a finite number");
    }
    Candle {
        open_time: time(fname, "open_time", open_time),
        close_time: time(fname, "close_time", close_time),
        open: p("open", open),
        high: p("high", high),
        low: p("low", low),
        close: p("close", close),
        quote_volume: qv,
    }
}

pub(crate) fn text<'a>(fname: &str, arg: &str, v: Option<&'a str>) -> &'a str {
    v.unwrap_or_else(|| raise_null(fname, arg))
}

// ---------------------------------------------------------------------------------------
// results

/// Blessed TupleDescs of ta.screener_state, ta.screener_row, ta.screener_checkpoint.
#[derive(Clone, Copy)]
struct TupleDescs {
    state: pg_sys::TupleDesc,
    row: pg_sys::TupleDesc,
    checkpoint: pg_sys::TupleDesc,
}

/// The TupleDescs for a function returning `ta.screener_state` (or `ta.screener_row` when
/// `row_only`), copied into `ctx`; shapes checked.
unsafe fn lookup_tupdescs(
    fcinfo: pg_sys::FunctionCallInfo,
    fname: &str,
    ctx: pg_sys::MemoryContext,
    row_only: bool,
) -> TupleDescs {
    unsafe {
        let mut td: pg_sys::TupleDesc = std::ptr::null_mut();
        let class = pg_sys::get_call_result_type(fcinfo, std::ptr::null_mut(), &mut td);
        if class != pg_sys::TypeFuncClass::TYPEFUNC_COMPOSITE || td.is_null() {
            raise_msg(fname, "result type is not a composite type");
        }
        let old = pg_sys::MemoryContextSwitchTo(ctx);
        let outer = pg_sys::BlessTupleDesc(pg_sys::CreateTupleDescCopy(td));
        let nested = |i: usize| {
            let desc = PgTupleDesc::from_pg_unchecked(outer);
            let typid = desc.get(i).map_or(pg_sys::InvalidOid, |a| a.atttypid);
            pg_sys::BlessTupleDesc(pg_sys::lookup_rowtype_tupdesc_copy(typid, -1))
        };
        let tds = if row_only {
            TupleDescs {
                state: std::ptr::null_mut(),
                row: outer,
                checkpoint: std::ptr::null_mut(),
            }
        } else {
            let n = (*outer).natts as usize;
            if n != 3 {
                raise_msg(
                    fname,
                    "ta.screener_state does not have the columns pg_ta expects",
                );
            }
            TupleDescs {
                state: outer,
                row: nested(0),
                checkpoint: nested(1),
            }
        };
        pg_sys::MemoryContextSwitchTo(old);
        check_shape(fname, tds.row, &row_types(), "ta.screener_row");
        if !row_only {
            check_shape(
                fname,
                tds.checkpoint,
                &CHECKPOINT_TYPES,
                "ta.screener_checkpoint",
            );
            let desc = PgTupleDesc::from_pg_unchecked(tds.state);
            let attrs: Vec<&pg_sys::FormData_pg_attribute> = desc.iter().take(3).collect();
            if attrs.len() != 3
                || attrs[2].atttypid != attrs[1].atttypid
                || attrs.iter().any(|a| a.attisdropped)
            {
                raise_msg(
                    fname,
                    "ta.screener_state does not have the columns pg_ta expects",
                );
            }
        }
        tds
    }
}

/// Datums of one composite's columns, NULLs included.
pub(crate) struct Cols {
    values: Vec<pg_sys::Datum>,
    nulls: Vec<bool>,
}

impl Cols {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Cols {
            values: Vec::with_capacity(n),
            nulls: Vec::with_capacity(n),
        }
    }
    pub(crate) fn push(&mut self, d: Option<pg_sys::Datum>) {
        self.nulls.push(d.is_none());
        self.values.push(d.unwrap_or(pg_sys::Datum::from(0usize)));
    }
    pub(crate) fn f(&mut self, x: Option<f64>) {
        self.push(x.map(|v| pg_sys::Datum::from(v.to_bits() as usize)));
    }
    pub(crate) fn n(&mut self, x: Option<&NumBytes>) {
        self.push(x.map(NumBytes::to_datum));
    }
    pub(crate) fn i(&mut self, x: Option<i64>) {
        self.push(x.map(pg_sys::Datum::from));
    }
    pub(crate) fn t(&mut self, s: &[u8]) {
        let d = unsafe { pg_sys::cstring_to_text_with_len(s.as_ptr().cast(), s.len() as i32) };
        self.push(Some(pg_sys::Datum::from(d)));
    }
    /// A copy of the columns so far (the same datums: forming a tuple copies them), with room
    /// for `n` columns in all.
    pub(crate) fn copy_with_capacity(&self, n: usize) -> Self {
        let mut c = Cols::with_capacity(n);
        c.values.extend_from_slice(&self.values);
        c.nulls.extend_from_slice(&self.nulls);
        c
    }
    pub(crate) unsafe fn form(mut self, td: pg_sys::TupleDesc) -> pg_sys::Datum {
        unsafe { form_tuple(td, &mut self.values, &mut self.nulls) }
    }
}

unsafe fn row_datum(
    td: pg_sys::TupleDesc,
    market: &[u8],
    symbol: &[u8],
    r: &ScreenerRow<NumBytes>,
) -> pg_sys::Datum {
    let mut c = Cols::with_capacity(ROW_COLUMNS);
    push_row_cols(&mut c, market, symbol, r);
    unsafe { c.form(td) }
}

/// The columns of a ta.screener_row, in order (the first 66 of a ta.signal_row too).
pub(crate) fn push_row_cols(c: &mut Cols, market: &[u8], symbol: &[u8], r: &ScreenerRow<NumBytes>) {
    c.t(market);
    c.t(symbol);
    c.i(Some(r.open_time));
    c.i(Some(r.close_time));
    c.i(Some(r.candles));
    c.f(Some(r.price));
    c.f(r.change_1m);
    c.n(Some(&r.vol_1m));
    for w in &r.windows {
        c.f(w.open);
        c.f(w.high);
        c.f(w.low);
        c.f(w.change);
        c.f(w.range);
        c.n(w.vol.as_ref());
        c.f(w.vol_ratio);
    }
    c.f(r.min_change_1m_3);
    c.f(r.max_change_1m_3);
    c.n(r.min_vol_1m_3.as_ref());
    c.f(r.volatility_10);
    c.f(r.vcp);
    for x in r.fib {
        c.f(x);
    }
    c.f(r.rsi_14);
    for x in r.macd {
        c.f(x);
    }
}

/// A `double precision[]` datum (NULL elements allowed), built in one call.
unsafe fn float8_array(v: &[Option<f64>]) -> pg_sys::Datum {
    let mut elems: Vec<pg_sys::Datum> = v
        .iter()
        .map(|x| pg_sys::Datum::from(x.unwrap_or(0.0).to_bits() as usize))
        .collect();
    let mut nulls: Vec<bool> = v.iter().map(Option::is_none).collect();
    let mut dims = [v.len() as i32];
    let mut lbs = [1i32];
    let a = unsafe {
        pg_sys::construct_md_array(
            elems.as_mut_ptr(),
            nulls.as_mut_ptr(),
            1,
            dims.as_mut_ptr(),
            lbs.as_mut_ptr(),
            pg_sys::FLOAT8OID,
            8,
            true,
            b'd' as std::ffi::c_char,
        )
    };
    pg_sys::Datum::from(a)
}

pub(crate) unsafe fn checkpoint_datum(
    td: pg_sys::TupleDesc,
    cp: Checkpoint<NumBytes>,
) -> pg_sys::Datum {
    let mut c = Cols::with_capacity(7);
    c.i(cp.candles);
    c.i(cp.open_time);
    c.f(cp.close);
    c.n(cp.cum_quote_volume.as_ref());
    c.f(cp.sum_log_return_sq);
    c.push(cp.rsi_state.as_deref().map(|a| unsafe { float8_array(a) }));
    c.push(cp.macd_state.as_deref().map(|a| unsafe { float8_array(a) }));
    unsafe { c.form(td) }
}

/// The ta.screener_state of the engine's newest candle.
unsafe fn state_datum(
    fname: &str,
    tds: &TupleDescs,
    market: &[u8],
    symbol: &[u8],
    e: &Engine<NumBytes>,
) -> pg_sys::Datum {
    let row = ok(fname, e.row()).unwrap_or_else(|| raise_msg(fname, "no candle"));
    unsafe {
        let mut c = Cols::with_capacity(3);
        c.push(Some(row_datum(tds.row, market, symbol, &row)));
        c.push(Some(checkpoint_datum(tds.checkpoint, e.chain())));
        c.push(
            e.day_checkpoint()
                .map(|cp| checkpoint_datum(tds.checkpoint, cp)),
        );
        c.form(tds.state)
    }
}

// ---------------------------------------------------------------------------------------
// the aggregates

/// Transition state of ta._screener_state and ta.screener.
struct ScreenerAgg {
    engine: Engine<NumBytes>,
    market: Vec<u8>,
    symbol: Vec<u8>,
    /// emit bounds of the current row (NULL: open)
    emit_from: Option<i64>,
    emit_to: Option<i64>,
    tds: Option<TupleDescs>,
    ctx: pg_sys::MemoryContext,
}

#[allow(clippy::too_many_arguments)]
unsafe fn screener_trans(
    mut internal: Internal,
    fcinfo: pg_sys::FunctionCallInfo,
    fname: &str,
    market: Option<RawText>,
    symbol: Option<RawText>,
    c: Candle<NumBytes>,
    start: Option<CheckpointArg>,
    emit: (Option<i64>, Option<i64>),
) -> Internal {
    let market = market
        .unwrap_or_else(|| raise_null(fname, "market"))
        .bytes();
    let symbol = symbol
        .unwrap_or_else(|| raise_null(fname, "symbol"))
        .bytes();
    let st = match unsafe { internal.get_mut::<ScreenerAgg>() } {
        Some(st) => {
            if st.market != market || st.symbol != symbol {
                let (market, symbol) = (
                    String::from_utf8_lossy(market),
                    String::from_utf8_lossy(symbol),
                );
                let (was_m, was_s) = (
                    String::from_utf8_lossy(&st.market),
                    String::from_utf8_lossy(&st.symbol),
                );
                raise_msg(
                    fname,
                    &format!(
                        "market and symbol must be constant within a partition (PARTITION BY market, symbol): got ({market}, {symbol}) after ({was_m}, {was_s})"
                    ),
                );
            }
            st
        }
        None => {
            let engine = match start {
                None => Engine::new(),
                Some(cp) => ok(
                    fname,
                    Engine::from_checkpoint(unsafe { decode_checkpoint(fname, "start", cp.0) }),
                ),
            };
            let ctx = unsafe { agg_context(fcinfo, fname) };
            let p = PgMemoryContexts::For(ctx).leak_and_drop_on_delete(ScreenerAgg {
                engine,
                market: market.to_vec(),
                symbol: symbol.to_vec(),
                emit_from: None,
                emit_to: None,
                tds: None,
                ctx,
            });
            internal = Internal::from(Some(pg_sys::Datum::from(p)));
            unsafe { &mut *p }
        }
    };
    ok(fname, st.engine.push(c));
    (st.emit_from, st.emit_to) = emit;
    internal
}

/// Transition function of ta._screener_state.
#[pg_extern(immutable, parallel_safe, name = "_screener_state_trans", requires = ["screener_types"])]
#[allow(clippy::too_many_arguments)]
fn screener_state_trans(
    state: Internal,
    market: Option<RawText>,
    symbol: Option<RawText>,
    open_time: Option<TimestampWithTimeZone>,
    close_time: Option<TimestampWithTimeZone>,
    open: Option<RawNumeric>,
    high: Option<RawNumeric>,
    low: Option<RawNumeric>,
    close: Option<RawNumeric>,
    quote_volume: Option<RawNumeric>,
    start: Option<CheckpointArg>,
    emit_from: Option<TimestampWithTimeZone>,
    emit_to: Option<TimestampWithTimeZone>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    const F: &str = "ta._screener_state";
    let c = candle(
        F,
        open_time,
        close_time,
        open,
        high,
        low,
        close,
        quote_volume,
    );
    unsafe {
        screener_trans(
            state,
            fcinfo,
            F,
            market,
            symbol,
            c,
            start,
            (bound(emit_from), bound(emit_to)),
        )
    }
}

/// Final function of ta._screener_state: the state of the current row when it is to be
/// emitted (open_time within the emit bounds, or the first candle of its UTC day), else NULL.
#[pg_extern(immutable, parallel_safe, name = "_screener_state_final", requires = ["screener_types"])]
fn screener_state_final(
    mut state: Internal,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Option<ScreenerStateResult> {
    const F: &str = "ta._screener_state";
    let st = unsafe { state.get_mut::<ScreenerAgg>() }?;
    let t = st.engine.last_open_time()?;
    let inside = st.emit_from.is_none_or(|f| f <= t) && st.emit_to.is_none_or(|e| t <= e);
    if !inside && !st.engine.is_day_first() {
        return None;
    }
    let tds = *st
        .tds
        .get_or_insert_with(|| unsafe { lookup_tupdescs(fcinfo, F, st.ctx, false) });
    Some(ScreenerStateResult(unsafe {
        state_datum(F, &tds, &st.market, &st.symbol, &st.engine)
    }))
}

/// Transition function of ta.screener.
#[pg_extern(immutable, parallel_safe, name = "screener_trans")]
#[allow(clippy::too_many_arguments)]
fn screener_row_trans(
    state: Internal,
    market: Option<RawText>,
    symbol: Option<RawText>,
    open_time: Option<TimestampWithTimeZone>,
    close_time: Option<TimestampWithTimeZone>,
    open: Option<RawNumeric>,
    high: Option<RawNumeric>,
    low: Option<RawNumeric>,
    close: Option<RawNumeric>,
    quote_volume: Option<RawNumeric>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    const F: &str = "ta.screener";
    let c = candle(
        F,
        open_time,
        close_time,
        open,
        high,
        low,
        close,
        quote_volume,
    );
    unsafe { screener_trans(state, fcinfo, F, market, symbol, c, None, (None, None)) }
}

/// Final function of ta.screener: the row of the current (window) or last (plain) candle.
#[pg_extern(immutable, parallel_safe, name = "screener_final", requires = ["screener_types"])]
fn screener_row_final(
    mut state: Internal,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Option<ScreenerRowResult> {
    const F: &str = "ta.screener";
    let st = unsafe { state.get_mut::<ScreenerAgg>() }?;
    let row = ok(F, st.engine.row())?;
    let tds = *st
        .tds
        .get_or_insert_with(|| unsafe { lookup_tupdescs(fcinfo, F, st.ctx, true) });
    Some(ScreenerRowResult(unsafe {
        row_datum(tds.row, &st.market, &st.symbol, &row)
    }))
}

// ---------------------------------------------------------------------------------------
// the per-session cache

struct CacheEntry {
    /// xmin of the instrument's head row when the engine was last stepped or loaded
    token: u32,
    engine: Engine<NumBytes>,
}

thread_local! {
    static CACHE: RefCell<HashMap<(String, String), CacheEntry>> = RefCell::new(HashMap::new());
    /// TupleDescs of ta.screener_state (TopMemoryContext), by result type oid
    static CACHE_TUPDESCS: RefCell<Option<(pg_sys::Oid, TupleDescs)>> = const { RefCell::new(None) };
}

fn take_entry(market: &str, symbol: &str) -> Option<CacheEntry> {
    CACHE.with(|c| {
        c.borrow_mut()
            .remove(&(market.to_owned(), symbol.to_owned()))
    })
}

fn put_entry(market: &str, symbol: &str, e: CacheEntry) {
    CACHE.with(|c| {
        c.borrow_mut()
            .insert((market.to_owned(), symbol.to_owned()), e)
    });
}

fn token(fname: &str, head_xmin: Option<i64>) -> u32 {
    let x = head_xmin.unwrap_or_else(|| raise_null(fname, "head_xmin"));
    u32::try_from(x).unwrap_or_else(|_| raise_msg(fname, "head_xmin is not a transaction id"))
}

/// Step the cached engine of (market, symbol) by one candle, when the cache ends where the
/// instrument's head row is (`head_candles`, written by transaction `head_xmin`); else drop
/// any entry and return NULL.
#[pg_extern(volatile, parallel_unsafe, name = "_screener_cache_step", requires = ["screener_types"])]
#[allow(clippy::too_many_arguments)]
fn screener_cache_step(
    head_candles: Option<i64>,
    head_xmin: Option<i64>,
    market: Option<&str>,
    symbol: Option<&str>,
    open_time: Option<TimestampWithTimeZone>,
    close_time: Option<TimestampWithTimeZone>,
    open: Option<RawNumeric>,
    high: Option<RawNumeric>,
    low: Option<RawNumeric>,
    close: Option<RawNumeric>,
    quote_volume: Option<RawNumeric>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Option<ScreenerStateResult> {
    const F: &str = "ta._screener_cache_step";
    let head = head_candles.unwrap_or_else(|| raise_null(F, "head_candles"));
    let tok = token(F, head_xmin);
    let market = text(F, "market", market);
    let symbol = text(F, "symbol", symbol);
    let c = candle(
        F,
        open_time,
        close_time,
        open,
        high,
        low,
        close,
        quote_volume,
    );
    // the entry is out of the map while it is used: an error drops it
    let mut entry = take_entry(market, symbol)?;
    if entry.engine.candles() != head || entry.token != tok {
        return None;
    }
    ok(F, entry.engine.push(c));
    entry.token = u32::from(unsafe { pg_sys::GetCurrentTransactionId() });
    let tds = unsafe { cache_tupdescs(fcinfo) };
    let d = unsafe { state_datum(F, &tds, market.as_bytes(), symbol.as_bytes(), &entry.engine) };
    put_entry(market, symbol, entry);
    Some(ScreenerStateResult(d))
}

/// TupleDescs for the cache's result, looked up once per session (again if the type was
/// recreated, i.e. has another oid).
unsafe fn cache_tupdescs(fcinfo: pg_sys::FunctionCallInfo) -> TupleDescs {
    unsafe {
        let oid = pg_sys::get_fn_expr_rettype((*fcinfo).flinfo);
        if let Some((o, tds)) = CACHE_TUPDESCS.with(|c| *c.borrow()) {
            if o == oid {
                return tds;
            }
        }
        let tds = lookup_tupdescs(
            fcinfo,
            "ta._screener_cache_step",
            pg_sys::TopMemoryContext,
            false,
        );
        CACHE_TUPDESCS.with(|c| *c.borrow_mut() = Some((oid, tds)));
        tds
    }
}

/// Build the engine of (market, symbol) from `start` and the candles (oldest first) and
/// cache it with token `head_xmin` when it ends at `head_candles`; returns its candle count.
#[pg_extern(volatile, parallel_unsafe, name = "_screener_cache_load", requires = ["screener_types"])]
#[allow(clippy::too_many_arguments)]
fn screener_cache_load(
    head_candles: Option<i64>,
    head_xmin: Option<i64>,
    market: Option<&str>,
    symbol: Option<&str>,
    start: Option<CheckpointArg>,
    open_time: Option<Array<'_, TimestampWithTimeZone>>,
    close_time: Option<Array<'_, TimestampWithTimeZone>>,
    open: Option<Array<'_, RawNumeric>>,
    high: Option<Array<'_, RawNumeric>>,
    low: Option<Array<'_, RawNumeric>>,
    close: Option<Array<'_, RawNumeric>>,
    quote_volume: Option<Array<'_, RawNumeric>>,
) -> i64 {
    const F: &str = "ta._screener_cache_load";
    let head = head_candles.unwrap_or_else(|| raise_null(F, "head_candles"));
    let tok = token(F, head_xmin);
    let market = text(F, "market", market);
    let symbol = text(F, "symbol", symbol);
    drop(take_entry(market, symbol));
    let arr = |name: &str, a: Option<Array<'_, RawNumeric>>| {
        let a = a.unwrap_or_else(|| raise_null(F, name));
        a.iter().collect::<Vec<Option<RawNumeric>>>()
    };
    let times = |name: &str, a: Option<Array<'_, TimestampWithTimeZone>>| {
        let a = a.unwrap_or_else(|| raise_null(F, name));
        a.iter().collect::<Vec<Option<TimestampWithTimeZone>>>()
    };
    let (ot, ct) = (
        times("open_time", open_time),
        times("close_time", close_time),
    );
    let prices = [
        arr("open", open),
        arr("high", high),
        arr("low", low),
        arr("close", close),
        arr("quote_volume", quote_volume),
    ];
    let n = ot.len();
    if ct.len() != n || prices.iter().any(|p| p.len() != n) {
        raise_msg(
            F,
            "open_time, close_time, open, high, low, close and quote_volume must have the same length",
        );
    }
    let mut engine = match start {
        None => Engine::new(),
        Some(cp) => ok(
            F,
            Engine::from_checkpoint(unsafe { decode_checkpoint(F, "start", cp.0) }),
        ),
    };
    for i in 0..n {
        let el = |name: &str| format!("{name}[{}]", i + 1);
        let null = |name: &str| -> ! { raise_null(F, &el(name)) };
        let c = Candle {
            open_time: time(F, &el("open_time"), ot[i]),
            close_time: time(F, &el("close_time"), ct[i]),
            open: price(prices[0][i].unwrap_or_else(|| null("open"))),
            high: price(prices[1][i].unwrap_or_else(|| null("high"))),
            low: price(prices[2][i].unwrap_or_else(|| null("low"))),
            close: price(prices[3][i].unwrap_or_else(|| null("close"))),
            quote_volume: unsafe {
                NumBytes::from_datum(prices[4][i].unwrap_or_else(|| null("quote_volume")).0)
            },
        };
        if c.quote_volume.is_special() {
            raise_msg(
                F,
                &format!("{} must be a finite number", el("quote_volume")),
            );
        }
        if let Err(e) = engine.push(c) {
            raise_engine(&format!("{F}: candle {}", i + 1), e);
        }
    }
    let count = engine.candles();
    if count == head {
        put_entry(market, symbol, CacheEntry { token: tok, engine });
    }
    count
}

/// Drop the cached engines (screener and feature engines) of (market, symbol); NULL matches
/// any. Returns how many.
#[pg_extern(volatile, parallel_unsafe, name = "_screener_cache_reset")]
fn screener_cache_reset(
    market: default!(Option<&str>, "NULL"),
    symbol: default!(Option<&str>, "NULL"),
) -> i64 {
    let screener = CACHE.with(|c| {
        let mut cache = c.borrow_mut();
        let before = cache.len();
        cache.retain(|(m, s), _| !(market.is_none_or(|x| x == m) && symbol.is_none_or(|x| x == s)));
        (before - cache.len()) as i64
    });
    // the feature engines (which hold their own screener engines) go with them
    screener + super::features::reset_cache(market, symbol)
}

// ---------------------------------------------------------------------------------------
// 0.1.0 entry points: C symbols without SQL, so a 0.1.0 catalog on this library fails loudly

#[cold]
fn removed(name: &str) -> ! {
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
        format!(
            "{name} was removed in pg_ta 0.2.0; run ALTER EXTENSION pg_ta UPDATE (ta-feed migrate does it)"
        )
    );
}

#[pg_extern(sql = false)]
fn screener_windows_ready() -> bool {
    removed("ta.screener_windows_ready")
}

#[pg_extern(sql = false)]
fn screener_windows_load() -> bool {
    removed("ta.screener_windows_load")
}

#[pg_extern(sql = false)]
fn screener_windows_step() -> bool {
    removed("ta.screener_windows_step")
}

#[pg_extern(sql = false)]
fn screener_windows_reset() -> i64 {
    removed("ta.screener_windows_reset")
}

// ---------------------------------------------------------------------------------------
// SQL

extension_sql_file!("sql/screener_types.sql", name = "screener_types");

extension_sql_file!(
    "sql/screener.sql",
    name = "screener_sql",
    requires = [
        "screener_types",
        screener_state_trans,
        screener_state_final,
        screener_row_trans,
        screener_row_final,
        screener_cache_step,
        screener_cache_load,
        screener_cache_reset
    ]
);

// The SQL glue of the screener: window and plain use, emit filtering, checkpoints, errors and
// their SQLSTATEs, the per-session cache and its privileges. `cargo pgrx test` enables the
// pg_test feature; plain `cargo test --lib` runs the math only.
#[cfg(feature = "pg_test")]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// 4 instruments (spot/usdm × AAA/BBB), 4400 one-minute candles each from 2024-01-01
    /// 20:00 UTC with a 284-minute gap, exact numeric prices, zero and equal volumes.
    fn setup() {
        Spi::run(
            "CREATE TEMP TABLE c AS
             SELECT m.market, s.symbol, t AS open_time, t + interval '59.999 seconds' AS close_time,
                    (s.k * (100 + (i * 37 % 23) * 0.25 - (i % 7) * 0.5))::numeric(20, 8) AS open,
                    (s.k * (101 + (i * 37 % 23) * 0.25 + (i % 3) * 0.25))::numeric(20, 8) AS high,
                    (s.k * (99 - (i % 7) * 0.5 - (i % 4) * 0.25))::numeric(20, 8) AS low,
                    (s.k * (100 + ((i + 1) * 37 % 23) * 0.25 - ((i + 1) % 7) * 0.5))::numeric(20, 8) AS close,
                    (CASE WHEN i % 11 = 0 THEN 0 ELSE 1000 + (i * 7919 % 10007) * 0.01 END)::numeric AS quote_volume
             FROM (VALUES ('spot'), ('usdm')) m(market), (VALUES ('AAA', 1), ('BBB', 3)) s(symbol, k),
                  generate_series(0, 4683) i,
                  LATERAL (SELECT timestamptz '2024-01-01 20:00+00' + i * interval '1 minute' AS t) tt
             WHERE i NOT BETWEEN 1000 AND 1283;
             CREATE TEMP TABLE full_run AS
             SELECT market, symbol, open_time,
                    ta._screener_state(market, symbol, open_time, close_time, open, high, low, close,
                                       quote_volume, NULL, NULL, NULL) OVER w AS st,
                    ta.screener(market, symbol, open_time, close_time, open, high, low, close,
                                quote_volume) OVER w AS r,
                    row_number() OVER w AS n
             FROM c
             WINDOW w AS (PARTITION BY market, symbol ORDER BY open_time
                          ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW);
             CREATE INDEX ON full_run (market, symbol, open_time);
             ANALYZE c;
             ANALYZE full_run;
             CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $f$
             BEGIN EXECUTE q; RETURN 'ok';
             EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE || ' ' || SQLERRM; END $f$;",
        )
        .expect("setup");
    }

    fn i64_of(q: &str) -> i64 {
        Spi::get_one::<i64>(q).expect("query").expect("not null")
    }

    fn text_of(q: &str) -> String {
        Spi::get_one::<String>(q)
            .expect("query")
            .unwrap_or_default()
    }

    fn err(q: &str) -> String {
        text_of(&format!("SELECT pg_temp.err($q${q}$q$)"))
    }

    #[pg_test]
    fn window_and_plain_use() {
        setup();
        // a row for every candle; candles = position; the state's row = ta.screener's row
        assert_eq!(
            i64_of("SELECT count(*) FROM full_run WHERE (r).candles = n"),
            4 * 4400
        );
        assert_eq!(
            i64_of(
                "SELECT count(*) FROM full_run WHERE (st).\"row\"::text IS DISTINCT FROM r::text"
            ),
            0
        );
        assert_eq!(
            i64_of(
                "SELECT count(*) FROM full_run WHERE (r).market = market AND (r).symbol = symbol
                    AND (r).open_time = open_time AND (r).price IS NOT NULL"
            ),
            4 * 4400
        );
        // windows fill up: change_5m from candle 5, vol_ratio_1d from candle 2880
        assert_eq!(
            i64_of("SELECT min(n) FROM full_run WHERE (r).change_5m IS NOT NULL"),
            5
        );
        assert_eq!(
            i64_of("SELECT min(n) FROM full_run WHERE (r).fib_pivot IS NOT NULL"),
            1440
        );
        assert_eq!(
            i64_of("SELECT min(n) FROM full_run WHERE (r).vol_ratio_1d IS NOT NULL"),
            2880
        );
        assert_eq!(
            i64_of("SELECT min(n) FROM full_run WHERE (r).rsi_14 IS NOT NULL"),
            15
        );
        assert_eq!(
            i64_of("SELECT min(n) FROM full_run WHERE (r).macd_hist IS NOT NULL"),
            34
        );
        // numerics keep their scale: vol_1m is the input value as stored
        assert_eq!(
            i64_of(
                "SELECT count(*) FROM full_run f JOIN c USING (market, symbol, open_time)
                    WHERE (f.r).vol_1m::text = c.quote_volume::text"
            ),
            4 * 4400
        );
        // vol_5m = sum of the last 5 quote volumes, exactly (value and scale)
        assert_eq!(
            i64_of("SELECT count(*) FROM (SELECT (f.r).vol_5m AS v,
                           sum(c.quote_volume) OVER (PARTITION BY c.market, c.symbol ORDER BY c.open_time
                                                     ROWS 4 PRECEDING) AS s, f.n
                    FROM full_run f JOIN c USING (market, symbol, open_time)) q
                    WHERE n >= 5 AND v::text IS DISTINCT FROM s::text"),
            0
        );
        // the plain aggregate gives the last window row
        assert_eq!(
            i64_of("SELECT count(*) FROM (
                      SELECT market, symbol, ta.screener(market, symbol, open_time, close_time, open,
                             high, low, close, quote_volume ORDER BY open_time) AS p
                      FROM c GROUP BY market, symbol) a
                    JOIN (SELECT DISTINCT ON (market, symbol) market, symbol, r FROM full_run
                          ORDER BY market, symbol, open_time DESC) b USING (market, symbol)
                    WHERE p::text = r::text"),
            4
        );
        // no rows: NULL
        assert_eq!(
            text_of(
                "SELECT ta.screener('spot', 'X', now(), now(), 1, 1, 1, 1, 1)::text FROM c WHERE false"
            ),
            ""
        );
    }

    #[pg_test]
    fn emit_bounds_and_day_checkpoints() {
        setup();
        Spi::run(
            "CREATE TEMP TABLE part AS
             SELECT open_time, n,
                    ta._screener_state(market, symbol, open_time, close_time, open, high, low, close,
                                       quote_volume, NULL, '2024-01-03 10:00+00', '2024-01-03 11:00+00') OVER w AS st,
                    (lag(open_time) OVER w AT TIME ZONE 'UTC')::date
                      IS DISTINCT FROM (open_time AT TIME ZONE 'UTC')::date AS day_first
             FROM (SELECT c.*, row_number() OVER (ORDER BY open_time) AS n FROM c
                   WHERE market = 'usdm' AND symbol = 'BBB') c
             WINDOW w AS (ORDER BY open_time ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)",
        )
        .unwrap();
        // emitted: the 61 rows inside the bounds and the first candle of every UTC day
        let emitted = i64_of("SELECT count(*) FROM part WHERE ((st).chain).candles IS NOT NULL");
        let inside = i64_of(
            "SELECT count(*) FROM part WHERE open_time BETWEEN '2024-01-03 10:00+00' AND '2024-01-03 11:00+00'",
        );
        let firsts = i64_of("SELECT count(*) FROM part WHERE day_first");
        assert_eq!(inside, 61);
        assert_eq!(firsts, 5); // 01-01 20:00, 01-02 .. 01-05 00:00
        assert_eq!(emitted, inside + firsts);
        assert_eq!(
            i64_of("SELECT count(*) FROM part WHERE ((st).day_checkpoint).candles IS NOT NULL"),
            firsts
        );
        assert_eq!(
            i64_of(
                "SELECT count(*) FROM part WHERE day_first AND ((st).chain).candles IS NOT NULL"
            ),
            firsts
        );
        // the first candle of the series: the fresh checkpoint (0, NULL, NULL, 0, 0, NULL, NULL)
        assert_eq!(
            text_of("SELECT (st).day_checkpoint::text FROM part WHERE n = 1"),
            "(0,,,0,0,,)"
        );
        // a day checkpoint is the chain of the candle before, and emitted rows equal the full run
        assert_eq!(
            i64_of("SELECT count(*) FROM (SELECT st, lag((f.st).chain) OVER (ORDER BY f.open_time) AS prev
                                          FROM full_run f WHERE market = 'usdm' AND symbol = 'BBB') q
                    WHERE (st).day_checkpoint IS NOT NULL AND (st).day_checkpoint::text <> prev::text"),
            0
        );
        assert_eq!(
            i64_of("SELECT count(*) FROM part p JOIN full_run f ON f.market = 'usdm' AND f.symbol = 'BBB'
                    AND f.open_time = p.open_time
                    WHERE ((p.st).chain).candles IS NOT NULL AND p.st::text <> f.st::text"),
            0
        );
        // a bound only on one side
        assert_eq!(
            i64_of("SELECT count(*) FROM (SELECT ta._screener_state(market, symbol, open_time, close_time,
                        open, high, low, close, quote_volume, NULL, '2024-01-04 00:00+00', NULL)
                        OVER (ORDER BY open_time) AS st FROM c WHERE market = 'spot' AND symbol = 'AAA') q
                    WHERE ((st).chain).candles IS NOT NULL"),
            i64_of("SELECT count(*) FROM c WHERE market = 'spot' AND symbol = 'AAA'
                    AND open_time >= '2024-01-04 00:00+00'") + 3
        );
    }

    #[pg_test]
    fn start_from_a_day_checkpoint() {
        setup();
        // the checkpoint before 2024-01-02 00:00 (candle 241), then 2879 candles of warm-up
        Spi::run(
            "CREATE TEMP TABLE resumed AS
             SELECT c.open_time,
                    ta._screener_state(market, symbol, open_time, close_time, open, high, low, close,
                        quote_volume, cp.day, w.t, NULL) OVER (ORDER BY c.open_time) AS st
             FROM c,
                  (SELECT (st).day_checkpoint AS day FROM full_run
                    WHERE market = 'spot' AND symbol = 'BBB' AND open_time = '2024-01-02 00:00+00') cp,
                  (SELECT open_time AS t FROM full_run WHERE market = 'spot' AND symbol = 'BBB' AND n = 241 + 2879) w
             WHERE market = 'spot' AND symbol = 'BBB' AND c.open_time >= '2024-01-02 00:00+00'",
        )
        .unwrap();
        let compared = i64_of(
            "SELECT count(*) FROM resumed r JOIN full_run f ON f.market = 'spot' AND f.symbol = 'BBB'
              AND f.open_time = r.open_time WHERE f.n >= 241 + 2879",
        );
        assert_eq!(compared, 4400 - 240 - 2879);
        assert_eq!(
            i64_of("SELECT count(*) FROM resumed r JOIN full_run f ON f.market = 'spot' AND f.symbol = 'BBB'
                    AND f.open_time = r.open_time WHERE f.n >= 241 + 2879 AND r.st::text = f.st::text"),
            compared
        );
        // before the warm-up is complete only the day-first rows are emitted (candles 241,
        // 1397, 2837 of the series); their chains are exact; a row equals the full run's when
        // the engine has seen every candle its values need: at 1397 (1157 seen) and 2837 (2597
        // seen) yes (the full run has no 1d window / 1d ratio there either), at 241 (1 seen) no
        let pre = "FROM resumed r JOIN full_run f ON f.market = 'spot' AND f.symbol = 'BBB'
                   AND f.open_time = r.open_time WHERE f.n < 241 + 2879 AND ((r.st).chain).candles IS NOT NULL";
        assert_eq!(i64_of(&format!("SELECT count(*) {pre}")), 3);
        assert_eq!(
            i64_of(&format!(
                "SELECT count(*) {pre} AND (r.st).chain::text = (f.st).chain::text"
            )),
            3
        );
        assert_eq!(
            text_of(&format!(
                "SELECT string_agg(f.n::text, ',') {pre} AND (r.st).\"row\"::text = (f.st).\"row\"::text"
            )),
            "1397,2837"
        );
    }

    #[pg_test]
    fn errors_name_the_function_and_argument() {
        setup();
        let v = "(VALUES (1, timestamptz '2024-01-01 00:00+00'), (2, '2024-01-01 00:01+00'), (3, '2024-01-01 00:01+00')) v(i, t)";
        let e = err(&format!(
            "SELECT ta.screener('spot', 'X', t, t, 1, 1, 1, 1, 1) OVER (ORDER BY i) FROM {v}"
        ));
        assert!(
            e.starts_with("22023 ta.screener: rows must be in strictly increasing open_time"),
            "{e}"
        );
        let e = err(&format!(
            "SELECT ta.screener('spot', 'X', t, t, 1, 1, 1, 1, 1 ORDER BY t DESC) FROM {v} WHERE i < 3"
        ));
        assert!(
            e.starts_with("22023 ta.screener: rows must be in strictly increasing"),
            "{e}"
        );
        let e = err("SELECT ta.screener('spot', 'X', now(), now(), 1, 1, 1, NULL, 1)");
        assert_eq!(e, "22004 ta.screener: close must not be NULL");
        let e = err("SELECT ta.screener('spot', NULL, now(), now(), 1, 1, 1, 1, 1)");
        assert_eq!(e, "22004 ta.screener: symbol must not be NULL");
        let e = err(
            "SELECT ta._screener_state('spot', 'X', now(), NULL, 1, 1, 1, 1, 1, NULL, NULL, NULL)",
        );
        assert_eq!(e, "22004 ta._screener_state: close_time must not be NULL");
        let e = err("SELECT ta.screener('spot', 'X', 'infinity', now(), 1, 1, 1, 1, 1)");
        assert_eq!(e, "22023 ta.screener: open_time must be a finite timestamp");
        let e = err("SELECT ta.screener('spot', 'X', now(), now(), 'NaN', 1, 1, 1, 1)");
        assert!(
            e.starts_with("22023 ta.screener: open must be a finite number"),
            "{e}"
        );
        let e = err("SELECT ta.screener('spot', 'X', now(), now(), 1, 1, 1, 1, 'Infinity')");
        assert_eq!(e, "22023 ta.screener: quote_volume must be a finite number");
        let e = err(
            "SELECT ta.screener('spot', s, t, t, 1, 1, 1, 1, 1) OVER (ORDER BY t)
             FROM (VALUES ('A', now()), ('B', now() + interval '1 minute')) v(s, t)",
        );
        assert!(
            e.starts_with("22023 ta.screener: market and symbol must be constant"),
            "{e}"
        );
        // malformed checkpoints
        let start = |cp: &str| {
            err(&format!(
                "SELECT ta._screener_state('spot', 'X', now(), now(), 1, 1, 1, 1, 1, {cp}, NULL, NULL)"
            ))
        };
        let good = "(SELECT (st).chain FROM full_run WHERE market = 'spot' AND symbol = 'AAA' AND n = 100)";
        assert_eq!(start(good), "ok");
        for (cp, why) in [
            (
                "ROW(-1, NULL, NULL, 0, 0, NULL, NULL)",
                "candles must be >= 0",
            ),
            (
                "ROW(0, NULL, NULL, 5, 0, NULL, NULL)",
                "a checkpoint with candles = 0 must be",
            ),
            (
                "ROW(3, now(), 1, 0, 0, ARRAY[1, 2]::float8[], NULL)",
                "rsi_state must have 7 elements",
            ),
            ("ROW(NULL, NULL, NULL, 0, 0, NULL, NULL)", "candles is NULL"),
            (
                "ROW(5, now(), 1, 'NaN', 0, NULL, NULL)",
                "cum_quote_volume must be a finite number",
            ),
            (
                "ROW(5, now(), 1, 0, 'Infinity', NULL, NULL)",
                "sum_log_return_sq must be a finite number",
            ),
        ] {
            let e = start(&format!("{cp}::ta.screener_checkpoint"));
            assert!(
                e.starts_with("22023 ta._screener_state: start") && e.contains(why),
                "{cp}: {e}"
            );
        }
        // a forged RSI state (negative average loss, which would give RSI > 100)
        let e = start(
            "(SELECT ROW(c.candles, c.open_time, c.close, c.cum_quote_volume, c.sum_log_return_sq,
                         c.rsi_state[1:6] || ARRAY[-1]::float8[], c.macd_state)::ta.screener_checkpoint
              FROM (SELECT ((st).chain).* FROM full_run
                    WHERE market = 'spot' AND symbol = 'AAA' AND n = 100) c)",
        );
        assert!(
            e.contains("invalid checkpoint: rsi_state: invalid state"),
            "{e}"
        );
        // a start that later rows must continue after
        let e = err(&format!(
            "SELECT ta._screener_state('spot', 'X', '2024-01-01', '2024-01-01', 1, 1, 1, 1, 1, {good}, NULL, NULL)"
        ));
        assert!(
            e.starts_with("22023 ta._screener_state: rows must be in strictly increasing"),
            "{e}"
        );
    }

    #[pg_test]
    fn cache_step_load_reset() {
        setup();
        let arrays = |from: i64, to: i64| {
            format!(
                "(SELECT array_agg(open_time ORDER BY open_time) AS ot, array_agg(close_time ORDER BY open_time) AS ct,
                         array_agg(open ORDER BY open_time) AS o, array_agg(high ORDER BY open_time) AS h,
                         array_agg(low ORDER BY open_time) AS l, array_agg(close ORDER BY open_time) AS cl,
                         array_agg(quote_volume ORDER BY open_time) AS qv
                  FROM (SELECT c.*, row_number() OVER (ORDER BY open_time) AS n FROM c
                        WHERE market = 'spot' AND symbol = 'AAA') x WHERE n BETWEEN {from} AND {to}) a"
            )
        };
        let load = |head: i64, xmin: i64, start: &str, from: i64, to: i64| {
            i64_of(&format!(
                "SELECT ta._screener_cache_load({head}, {xmin}, 'spot', 'AAA', {start}, ot, ct, o, h, l, cl, qv)
                 FROM {}",
                arrays(from, to)
            ))
        };
        // step candle n with the head (head, xmin); true when it returned the full run's state
        let step = |head: i64, xmin: &str, n: i64| {
            text_of(&format!(
                "SELECT (s::text = f.st::text)::text FROM full_run f,
                        LATERAL (SELECT ta._screener_cache_step({head}, {xmin}, 'spot', 'AAA', c.open_time,
                                 c.close_time, c.open, c.high, c.low, c.close, c.quote_volume) AS s
                                 FROM c WHERE c.market = 'spot' AND c.symbol = 'AAA'
                                  AND c.open_time = f.open_time) x
                 WHERE f.market = 'spot' AND f.symbol = 'AAA' AND f.n = {n}"
            ))
        };
        let xid = "(pg_current_xact_id()::text::bigint % 4294967296)";
        assert!(i64_of("SELECT ta._screener_cache_reset()") >= 0);
        // fresh start, 3000 candles: the cache holds them with token 4242
        assert_eq!(load(3000, 4242, "NULL", 1, 3000), 3000);
        assert_eq!(step(3000, "4242", 3001), "true");
        assert_eq!(step(3001, xid, 3002), "true");
        // a token or count mismatch drops the entry: NULL now and afterwards
        assert_eq!(step(3002, "4242", 3003), "");
        assert_eq!(step(3002, xid, 3003), "");
        // from a day checkpoint plus 2879 candles: exact; a count mismatch keeps nothing
        let cp =
            "(SELECT (st).day_checkpoint FROM full_run WHERE market = 'spot' AND symbol = 'AAA'
                   AND open_time = '2024-01-02 00:00+00')";
        assert_eq!(load(9999, 7, cp, 241, 3500), 3500);
        assert_eq!(step(3500, "7", 3501), "");
        assert_eq!(load(3500, 7, cp, 241, 3500), 3500);
        assert_eq!(step(3500, "7", 3501), "true");
        assert_eq!(step(3501, xid, 3502), "true");
        // reset: by market and symbol, NULL matches any
        assert_eq!(load(10, 1, "NULL", 1, 10), 10);
        assert_eq!(i64_of("SELECT ta._screener_cache_reset('usdm')"), 0);
        assert_eq!(i64_of("SELECT ta._screener_cache_reset('spot', 'BBB')"), 0);
        assert_eq!(i64_of("SELECT ta._screener_cache_reset(NULL, 'AAA')"), 1);
        assert_eq!(i64_of("SELECT ta._screener_cache_reset()"), 0);
        // bad arrays
        let e = err(
            "SELECT ta._screener_cache_load(1, 1, 'spot', 'AAA', NULL, ARRAY[now()], ARRAY[now()],
                     ARRAY[1], ARRAY[1, 2], ARRAY[1], ARRAY[1], ARRAY[1])",
        );
        assert!(e.starts_with("22023 ta._screener_cache_load: open_time, close_time, open, high, low, close and quote_volume must have the same length"), "{e}");
        let e = err(
            "SELECT ta._screener_cache_load(1, 1, 'spot', 'AAA', NULL, ARRAY[now()], ARRAY[now()],
                     ARRAY[1], ARRAY[NULL::numeric], ARRAY[1], ARRAY[1], ARRAY[1])",
        );
        assert_eq!(e, "22004 ta._screener_cache_load: high[1] must not be NULL");
        let e = err("SELECT ta._screener_cache_load(2, 1, 'spot', 'AAA', NULL, ARRAY[now(), now()],
                     ARRAY[now(), now()], ARRAY[1, 1], ARRAY[1, 1], ARRAY[1, 1], ARRAY[1, 1], ARRAY[1, 1])");
        assert!(
            e.starts_with(
                "22023 ta._screener_cache_load: candle 2: rows must be in strictly increasing"
            ),
            "{e}"
        );
        let e = err(
            "SELECT ta._screener_cache_load(1, -1, 'spot', 'AAA', NULL, ARRAY[now()], ARRAY[now()],
                     ARRAY[1], ARRAY[1], ARRAY[1], ARRAY[1], ARRAY[1])",
        );
        assert_eq!(
            e,
            "22023 ta._screener_cache_load: head_xmin is not a transaction id"
        );
    }

    #[pg_test]
    fn only_the_owner_may_use_the_cache() {
        Spi::run(
            "DO $$ BEGIN CREATE ROLE ta_plain_tester NOLOGIN;
                  EXCEPTION WHEN duplicate_object THEN NULL; END $$;
             GRANT USAGE ON SCHEMA ta TO ta_plain_tester;
             CREATE FUNCTION public.ta_plain_tester_err(q text) RETURNS text LANGUAGE plpgsql AS $f$
             BEGIN EXECUTE q; RETURN 'ok';
             EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE || ' ' || SQLERRM; END $f$;
             SET LOCAL ROLE ta_plain_tester",
        )
        .unwrap();
        let e = |q: &str| text_of(&format!("SELECT public.ta_plain_tester_err($q${q}$q$)"));
        for (q, f) in [
            ("SELECT ta._screener_cache_reset()", "_screener_cache_reset"),
            (
                "SELECT ta._screener_cache_step(0, 1, 'spot', 'X', now(), now(), 1, 1, 1, 1, 1)",
                "_screener_cache_step",
            ),
            (
                "SELECT ta._screener_cache_load(0, 1, 'spot', 'X', NULL, ARRAY[now()], ARRAY[now()],
                 ARRAY[1], ARRAY[1], ARRAY[1], ARRAY[1], ARRAY[1])",
                "_screener_cache_load",
            ),
        ] {
            assert_eq!(e(q), format!("42501 permission denied for function {f}"));
        }
        assert_eq!(
            e("SELECT ta.screener('spot', 'X', now(), now(), 1, 1, 1, 1, 1)"),
            "ok"
        );
        assert_eq!(
            e("SELECT ta._screener_state('spot', 'X', now(), now(), 1, 1, 1, 1, 1, NULL, NULL, NULL)"),
            "ok"
        );
        Spi::run("RESET ROLE").unwrap();
        // the owner (superuser) may
        assert_eq!(e("SELECT ta._screener_cache_reset()"), "ok");
    }

    #[pg_test]
    fn removed_entry_points_fail_loudly() {
        // what a 0.1.0 catalog points at: the C symbols still exist and raise
        Spi::run(
            "CREATE FUNCTION pg_temp.w_ready(text, bigint, bigint) RETURNS bool LANGUAGE c
             AS '$libdir/pg_ta', 'screener_windows_ready_wrapper';
             CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $f$
             BEGIN EXECUTE q; RETURN 'ok';
             EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE || ' ' || SQLERRM; END $f$;",
        )
        .unwrap();
        assert_eq!(
            err("SELECT pg_temp.w_ready('BTCUSDT', 1, 1)"),
            "0A000 ta.screener_windows_ready was removed in pg_ta 0.2.0; run ALTER EXTENSION pg_ta UPDATE (ta-feed migrate does it)"
        );
        assert_eq!(
            i64_of("SELECT count(*) FROM pg_proc WHERE proname LIKE 'screener_windows%'"),
            0
        );
    }
}
