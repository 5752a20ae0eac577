//! SQL wrapper for `crate::screener`: a per-backend cache of each symbol's sliding windows,
//! used by the data schema's live path (`market._state_append`) instead of ~25 index lookups
//! per symbol and candle.
//!
//! The cache is only an accelerator and never trusted blindly: an entry is used only when the
//! caller shows that the table still ends where the cache ends — same `seq` and same `xmin`
//! (the writing transaction) of the symbol's newest state row. A rolled-back write, a write by
//! another session, a recompute of older candles or a restart all change that, and the caller
//! then refills the entry from the table (`ta.screener_windows_load`) or takes the SQL path.

use std::cell::RefCell;
use std::collections::HashMap;

use pgrx::prelude::*;

use super::common::{composite_return, form_tuple, raise_msg, RawNumeric};
use crate::screener::{Candle, SlidingWindows, WINDOWS};

composite_return!(ScreenerWindows, "ta.screener_windows");

/// A numeric value kept as PostgreSQL's own bytes (no conversion, so exact by construction):
/// the varlena payload without its header. Numerics of up to 30 payload bytes (about 50
/// decimal digits) are cached; larger ones make the symbol take the SQL path.
#[derive(Debug, Clone, Copy)]
struct NumBytes {
    len: u8,
    data: [u8; 30],
}

/// The payload of a numeric datum (detoasted if needed), or None when it is too long.
unsafe fn numeric_bytes(d: pg_sys::Datum) -> Option<NumBytes> {
    unsafe {
        let p = pg_sys::pg_detoast_datum_packed(d.cast_mut_ptr());
        let len = pgrx::varlena::varsize_any_exhdr(p);
        if len > 30 {
            return None;
        }
        let mut b = NumBytes {
            len: len as u8,
            data: [0; 30],
        };
        std::ptr::copy_nonoverlapping(
            pgrx::varlena::vardata_any(p).cast::<u8>(),
            b.data.as_mut_ptr(),
            len,
        );
        Some(b)
    }
}

/// A freshly palloc'd numeric datum (4-byte header) with the cached payload.
fn numeric_datum(b: &NumBytes) -> pg_sys::Datum {
    unsafe {
        let total = b.len as usize + pg_sys::VARHDRSZ;
        let p = pg_sys::palloc(total).cast::<pg_sys::varlena>();
        pgrx::varlena::set_varsize_4b(p, total as i32);
        std::ptr::copy_nonoverlapping(
            b.data.as_ptr(),
            p.cast::<u8>().add(pg_sys::VARHDRSZ),
            b.len as usize,
        );
        pg_sys::Datum::from(p)
    }
}

// Elements of a `numeric[]` argument as raw datums (pointers into the array; copied by
// `numeric_bytes`).
unsafe impl pgrx::datum::UnboxDatum for RawNumeric {
    type As<'src> = RawNumeric;
    unsafe fn unbox<'src>(datum: pgrx::datum::Datum<'src>) -> Self::As<'src>
    where
        Self: 'src,
    {
        RawNumeric(unsafe { pg_sys::Datum::unbox(datum) })
    }
}

struct Entry {
    /// xmin of the state row of `windows.last_seq()`.
    token: u32,
    windows: SlidingWindows<NumBytes>,
}

thread_local! {
    static CACHE: RefCell<HashMap<String, Entry>> = RefCell::new(HashMap::new());
}

/// True when the cache holds `symbol`'s windows up to the state row (`head_seq`, `head_xmin`).
#[pg_extern(volatile, parallel_unsafe)]
fn screener_windows_ready(symbol: &str, head_seq: i64, head_xmin: i64) -> bool {
    CACHE.with(|c| {
        c.borrow()
            .get(symbol)
            .is_some_and(|e| e.windows.last_seq() == head_seq && i64::from(e.token) == head_xmin)
    })
}

/// (Re)fill the cache of `symbol` from its newest state rows (oldest first; the last one has
/// xmin `head_xmin`). Returns false, and leaves no entry, when a quote volume does not fit the
/// cache's exact decimal type (then the caller keeps using the SQL path for this symbol).
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::too_many_arguments)]
fn screener_windows_load(
    symbol: &str,
    head_xmin: i64,
    seq: Vec<i64>,
    open: Vec<f64>,
    high: Vec<f64>,
    low: Vec<f64>,
    close: Vec<f64>,
    quote_volume: pgrx::Array<RawNumeric>,
    cum_before: pgrx::Array<RawNumeric>,
    log_return: Vec<Option<f64>>,
    sum_log_return_sq: Vec<f64>,
) -> bool {
    let n = seq.len();
    if [
        open.len(),
        high.len(),
        low.len(),
        close.len(),
        quote_volume.len(),
        cum_before.len(),
        log_return.len(),
        sum_log_return_sq.len(),
    ]
    .iter()
    .any(|&l| l != n)
    {
        raise_msg(
            "ta.screener_windows_load",
            "all arrays must have the same length",
        );
    }
    let Ok(token) = u32::try_from(head_xmin) else {
        raise_msg(
            "ta.screener_windows_load",
            "head_xmin is not a transaction id",
        );
    };
    let bytes = |n: Option<RawNumeric>| n.and_then(|n| unsafe { numeric_bytes(n.0) });
    let mut windows = SlidingWindows::new();
    for (i, (qv, cum)) in quote_volume.iter().zip(cum_before.iter()).enumerate() {
        let (Some(qv), Some(cum)) = (bytes(qv), bytes(cum)) else {
            CACHE.with(|c| c.borrow_mut().remove(symbol));
            return false;
        };
        let candle = Candle {
            seq: seq[i],
            open: open[i],
            high: high[i],
            low: low[i],
            close: close[i],
            quote_volume: qv,
            cum_before: cum,
            log_return: log_return[i],
            sum_log_return_sq: sum_log_return_sq[i],
        };
        if let Err(e) = windows.push(&candle) {
            raise_msg("ta.screener_windows_load", &e.to_string());
        }
    }
    CACHE.with(|c| {
        c.borrow_mut()
            .insert(symbol.to_string(), Entry { token, windows })
    });
    true
}

/// Push the next candle of `symbol` into its cached windows and return the window values its
/// state row needs (composite `ta.screener_windows`). The cache must end at the symbol's newest
/// state row (`head_seq`, written by transaction `head_xmin`) and `seq` must be `head_seq + 1`;
/// otherwise the entry is dropped and the result is NULL (refill with ta.screener_windows_load).
/// The row the caller inserts in this (sub)transaction gets xmin = the current transaction id,
/// which becomes the entry's new token.
#[pg_extern(volatile, parallel_unsafe, requires = ["screener_windows_type"])]
#[allow(clippy::too_many_arguments)]
fn screener_windows_step(
    symbol: &str,
    head_seq: i64,
    head_xmin: i64,
    seq: i64,
    open: f64,
    high: f64,
    low: f64,
    close: f64,
    quote_volume: RawNumeric,
    cum_before: RawNumeric,
    log_return: Option<f64>,
    sum_log_return_sq: f64,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Option<ScreenerWindows> {
    let values = CACHE.with(|c| {
        let mut cache = c.borrow_mut();
        let entry = cache.get_mut(symbol)?;
        let ready = entry.windows.last_seq() == head_seq
            && i64::from(entry.token) == head_xmin
            && seq == head_seq + 1;
        let candle = unsafe {
            match (numeric_bytes(quote_volume.0), numeric_bytes(cum_before.0)) {
                (Some(qv), Some(cum)) if ready => Some(Candle {
                    seq,
                    open,
                    high,
                    low,
                    close,
                    quote_volume: qv,
                    cum_before: cum,
                    log_return,
                    sum_log_return_sq,
                }),
                _ => None,
            }
        };
        match candle {
            Some(candle) if entry.windows.push(&candle).is_ok() => {
                entry.token = u32::from(unsafe { pg_sys::GetCurrentTransactionId() });
                Some(entry.windows.values())
            }
            _ => {
                cache.remove(symbol);
                None
            }
        }
    })?;

    let f = |x: Option<f64>| x.map(|v| pg_sys::Datum::from(v.to_bits() as usize));
    let n = |x: Option<NumBytes>| x.as_ref().map(numeric_datum);
    let mut cols: Vec<Option<pg_sys::Datum>> = Vec::with_capacity(40);
    cols.push(Some(pg_sys::Datum::from(seq)));
    for i in 0..WINDOWS.len() {
        cols.push(f(values.high[i]));
        cols.push(f(values.low[i]));
    }
    for m in [&values.m1, &values.m2] {
        cols.push(f(m.as_ref().map(|r| r.0)));
        cols.push(f(m.as_ref().map(|r| r.1)));
        cols.push(n(m.as_ref().map(|r| r.2)));
    }
    cols.push(f(values.m9.map(|r| r.0)));
    cols.push(f(values.m9.and_then(|r| r.1)));
    cols.push(f(values.m9.map(|r| r.2)));
    for s in &values.starts {
        cols.push(f(s.open));
        cols.push(n(s.cum_before));
        cols.push(n(s.cum_before_prev));
    }
    let mut datums: Vec<pg_sys::Datum> = cols
        .iter()
        .map(|c| c.unwrap_or(pg_sys::Datum::from(0usize)))
        .collect();
    let mut nulls: Vec<bool> = cols.iter().map(Option::is_none).collect();
    unsafe {
        let td = result_tupdesc(fcinfo);
        if (*td).natts as usize != datums.len() {
            raise_msg(
                "ta.screener_windows_step",
                "ta.screener_windows has an unexpected shape",
            );
        }
        Some(ScreenerWindows(form_tuple(td, &mut datums, &mut nulls)))
    }
}

thread_local! {
    /// The blessed TupleDesc of ta.screener_windows (copied into TopMemoryContext), by type oid.
    static RESULT_TUPDESC: RefCell<Option<(pg_sys::Oid, pg_sys::TupleDesc)>> =
        const { RefCell::new(None) };
}

/// The function's composite result TupleDesc, looked up once per session (and again if the
/// type was recreated, i.e. has another oid).
unsafe fn result_tupdesc(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::TupleDesc {
    unsafe {
        let expr_type = pg_sys::get_fn_expr_rettype((*fcinfo).flinfo);
        if let Some((oid, td)) = RESULT_TUPDESC.with(|c| *c.borrow()) {
            if oid == expr_type {
                return td;
            }
        }
        let mut td: pg_sys::TupleDesc = std::ptr::null_mut();
        let class = pg_sys::get_call_result_type(fcinfo, std::ptr::null_mut(), &mut td);
        if class != pg_sys::TypeFuncClass::TYPEFUNC_COMPOSITE || td.is_null() {
            raise_msg(
                "ta.screener_windows_step",
                "result type is not a composite type",
            );
        }
        let old = pg_sys::MemoryContextSwitchTo(pg_sys::TopMemoryContext);
        let copy = pg_sys::BlessTupleDesc(pg_sys::CreateTupleDescCopy(td));
        pg_sys::MemoryContextSwitchTo(old);
        RESULT_TUPDESC.with(|c| *c.borrow_mut() = Some((expr_type, copy)));
        copy
    }
}

/// Drop the cache of one symbol (NULL: all); returns how many entries were dropped.
#[pg_extern(volatile, parallel_unsafe)]
fn screener_windows_reset(symbol: Option<&str>) -> i64 {
    CACHE.with(|c| {
        let mut cache = c.borrow_mut();
        match symbol {
            Some(s) => i64::from(cache.remove(s).is_some()),
            None => {
                let n = cache.len() as i64;
                cache.clear();
                n
            }
        }
    })
}

extension_sql!(
    r#"
CREATE TYPE ta.screener_windows AS (
    seq bigint,
    high_5 double precision, low_5 double precision, high_15 double precision,
    low_15 double precision, high_60 double precision, low_60 double precision,
    high_240 double precision, low_240 double precision, high_480 double precision,
    low_480 double precision, high_1440 double precision, low_1440 double precision,
    open_m1 double precision, close_m1 double precision, quote_volume_m1 numeric,
    open_m2 double precision, close_m2 double precision, quote_volume_m2 numeric,
    close_m9 double precision, log_return_m9 double precision,
    sum_log_return_sq_m9 double precision,
    open_5 double precision, cum_before_5 numeric, cum_before_prev_5 numeric,
    open_15 double precision, cum_before_15 numeric, cum_before_prev_15 numeric,
    open_60 double precision, cum_before_60 numeric, cum_before_prev_60 numeric,
    open_240 double precision, cum_before_240 numeric, cum_before_prev_240 numeric,
    open_480 double precision, cum_before_480 numeric, cum_before_prev_480 numeric,
    open_1440 double precision, cum_before_1440 numeric, cum_before_prev_1440 numeric
);
COMMENT ON TYPE ta.screener_windows IS
'Sliding-window values of one candle of the screener (DESIGN.md windows of 5, 15, 60, 240, 480, 1440 candles): seq = the candle; high_N/low_N = max(high)/min(low) of the last N candles (NULL until N candles); *_m1, *_m2, *_m9 = values of the candles 1, 2 and 9 before; open_N/cum_before_N = open and running quote volume before the first candle of the N window, cum_before_prev_N = the same for the window before it.';
"#,
    name = "screener_windows_type",
);

extension_sql!(
    r#"
COMMENT ON FUNCTION ta.screener_windows_ready(text, bigint, bigint) IS
'Screener window cache (per session): true when it holds the windows of symbol up to the state row with seq head_seq written by transaction head_xmin. Used by the data schema''s live path.';
COMMENT ON FUNCTION ta.screener_windows_load(text, bigint, bigint[], double precision[], double precision[], double precision[], double precision[], numeric[], numeric[], double precision[], double precision[]) IS
'Screener window cache (per session): refill symbol from its newest state rows (seq, open, high, low, close, quote_volume, cum_before, log_return, sum_log_return_sq, oldest first, at least the last 2879 or all); head_xmin = xmin of the last row. Numerics are kept as PostgreSQL''s own bytes (exact); false (and no entry) when one is longer than 30 bytes (about 50 digits). Errors: arrays of different lengths, seqs with gaps.';
COMMENT ON FUNCTION ta.screener_windows_step(text, bigint, bigint, bigint, double precision, double precision, double precision, double precision, numeric, numeric, double precision, double precision) IS
'Screener window cache (per session): push candle seq of symbol, whose newest state row is (head_seq, written by transaction head_xmin), and return its ta.screener_windows; NULL (and the entry dropped) when the cache does not end at that row. Exact: equal to the SQL lookup path bit for bit. Reference: sliding maxima with monotonic deques.';
COMMENT ON FUNCTION ta.screener_windows_reset(text) IS
'Screener window cache (per session): drop one symbol (NULL: all); returns the number of entries dropped.';
"#,
    name = "screener_windows_comments",
    requires = [
        screener_windows_ready,
        screener_windows_load,
        screener_windows_step,
        screener_windows_reset
    ],
);
