//! Indicators over high/low/close (and volume): ta.atr, ta.natr, ta.adx, ta.cci, ta.willr,
//! ta.trange, ta.obv, ta.mfi.

use pgrx::prelude::*;
use pgrx::Internal;

use super::common::{final_state, trans_inputs, RawNumeric};
use crate::indicators::{
    adx::Adx, atr::Atr, cci::Cci, mfi::Mfi, natr::Natr, obv::Obv, trange::TRange, willr::Willr,
};

fn num(x: Option<RawNumeric>) -> Option<f64> {
    x.map(RawNumeric::to_f64)
}

/// `<name>_trans(internal, high, low, close, time_period)` for both input types + final.
macro_rules! hlc_agg {
    (
        fname = $fname:literal, trans = $trans:literal, fin = $fin_sql:literal,
        f8 = $f8:ident, num = $num:ident, fin_fn = $fin:ident, state = $S:ty,
        params = [$($p:ident),*], new = $new:expr $(,)?
    ) => {
        #[pg_extern(immutable, parallel_safe, name = $trans)]
        fn $f8(state: Internal, high: Option<f64>, low: Option<f64>, close: Option<f64>, $($p: Option<i32>,)* fcinfo: pg_sys::FunctionCallInfo) -> Internal {
            unsafe {
                trans_inputs::<$S, f64, 3>(
                    state, fcinfo, $fname, &[$(stringify!($p)),*], &[$($p.map(f64::from)),*],
                    ["high", "low", "close"], [high, low, close], $new,
                    |s: &mut $S, [h, l, c]| s.update(h, l, c),
                )
            }
        }

        #[pg_extern(immutable, parallel_safe, name = $trans)]
        fn $num(state: Internal, high: Option<RawNumeric>, low: Option<RawNumeric>, close: Option<RawNumeric>, $($p: Option<i32>,)* fcinfo: pg_sys::FunctionCallInfo) -> Internal {
            unsafe {
                trans_inputs::<$S, f64, 3>(
                    state, fcinfo, $fname, &[$(stringify!($p)),*], &[$($p.map(f64::from)),*],
                    ["high", "low", "close"], [num(high), num(low), num(close)], $new,
                    |s: &mut $S, [h, l, c]| s.update(h, l, c),
                )
            }
        }

        #[pg_extern(immutable, parallel_safe, name = $fin_sql)]
        fn $fin(state: Internal) -> Option<f64> {
            unsafe { final_state::<$S, f64>(&state) }.and_then(|s| s.last)
        }
    };
}

hlc_agg!(
    fname = "ta.atr",
    trans = "atr_trans",
    fin = "atr_final",
    f8 = atr_trans_float8,
    num = atr_trans_numeric,
    fin_fn = atr_final,
    state = Atr,
    params = [time_period],
    new = |p| Atr::new(p[0] as i32)
);
hlc_agg!(
    fname = "ta.natr",
    trans = "natr_trans",
    fin = "natr_final",
    f8 = natr_trans_float8,
    num = natr_trans_numeric,
    fin_fn = natr_final,
    state = Natr,
    params = [time_period],
    new = |p| Natr::new(p[0] as i32)
);
hlc_agg!(
    fname = "ta.adx",
    trans = "adx_trans",
    fin = "adx_final",
    f8 = adx_trans_float8,
    num = adx_trans_numeric,
    fin_fn = adx_final,
    state = Adx,
    params = [time_period],
    new = |p| Adx::new(p[0] as i32)
);
hlc_agg!(
    fname = "ta.cci",
    trans = "cci_trans",
    fin = "cci_final",
    f8 = cci_trans_float8,
    num = cci_trans_numeric,
    fin_fn = cci_final,
    state = Cci,
    params = [time_period],
    new = |p| Cci::new(p[0] as i32)
);
hlc_agg!(
    fname = "ta.willr",
    trans = "willr_trans",
    fin = "willr_final",
    f8 = willr_trans_float8,
    num = willr_trans_numeric,
    fin_fn = willr_final,
    state = Willr,
    params = [time_period],
    new = |p| Willr::new(p[0] as i32)
);
hlc_agg!(
    fname = "ta.trange",
    trans = "trange_trans",
    fin = "trange_final",
    f8 = trange_trans_float8,
    num = trange_trans_numeric,
    fin_fn = trange_final,
    state = TRange,
    params = [],
    new = |_| Ok(TRange::new())
);

#[pg_extern(immutable, parallel_safe, name = "obv_trans")]
fn obv_trans_float8(
    state: Internal,
    close: Option<f64>,
    volume: Option<f64>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    unsafe {
        trans_inputs::<Obv, f64, 2>(
            state,
            fcinfo,
            "ta.obv",
            &[],
            &[],
            ["close", "volume"],
            [close, volume],
            |_| Ok(Obv::new()),
            |s: &mut Obv, [c, v]| s.update(c, v),
        )
    }
}

#[pg_extern(immutable, parallel_safe, name = "obv_trans")]
fn obv_trans_numeric(
    state: Internal,
    close: Option<RawNumeric>,
    volume: Option<RawNumeric>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    unsafe {
        trans_inputs::<Obv, f64, 2>(
            state,
            fcinfo,
            "ta.obv",
            &[],
            &[],
            ["close", "volume"],
            [num(close), num(volume)],
            |_| Ok(Obv::new()),
            |s: &mut Obv, [c, v]| s.update(c, v),
        )
    }
}

#[pg_extern(immutable, parallel_safe, name = "obv_final")]
fn obv_final(state: Internal) -> Option<f64> {
    unsafe { final_state::<Obv, f64>(&state) }.and_then(|s| s.last)
}

#[pg_extern(immutable, parallel_safe, name = "mfi_trans")]
#[allow(clippy::too_many_arguments)]
fn mfi_trans_float8(
    state: Internal,
    high: Option<f64>,
    low: Option<f64>,
    close: Option<f64>,
    volume: Option<f64>,
    time_period: Option<i32>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    unsafe {
        trans_inputs::<Mfi, f64, 4>(
            state,
            fcinfo,
            "ta.mfi",
            &["time_period"],
            &[time_period.map(f64::from)],
            ["high", "low", "close", "volume"],
            [high, low, close, volume],
            |p| Mfi::new(p[0] as i32),
            |s: &mut Mfi, [h, l, c, v]| s.update(h, l, c, v),
        )
    }
}

#[pg_extern(immutable, parallel_safe, name = "mfi_trans")]
#[allow(clippy::too_many_arguments)]
fn mfi_trans_numeric(
    state: Internal,
    high: Option<RawNumeric>,
    low: Option<RawNumeric>,
    close: Option<RawNumeric>,
    volume: Option<RawNumeric>,
    time_period: Option<i32>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    unsafe {
        trans_inputs::<Mfi, f64, 4>(
            state,
            fcinfo,
            "ta.mfi",
            &["time_period"],
            &[time_period.map(f64::from)],
            ["high", "low", "close", "volume"],
            [num(high), num(low), num(close), num(volume)],
            |p| Mfi::new(p[0] as i32),
            |s: &mut Mfi, [h, l, c, v]| s.update(h, l, c, v),
        )
    }
}

#[pg_extern(immutable, parallel_safe, name = "mfi_final")]
fn mfi_final(state: Internal) -> Option<f64> {
    unsafe { final_state::<Mfi, f64>(&state) }.and_then(|s| s.last)
}

extension_sql_file!(
    "sql/atr.sql",
    requires = [atr_trans_float8, atr_trans_numeric, atr_final]
);
extension_sql_file!(
    "sql/natr.sql",
    requires = [natr_trans_float8, natr_trans_numeric, natr_final]
);
extension_sql_file!(
    "sql/adx.sql",
    requires = [adx_trans_float8, adx_trans_numeric, adx_final]
);
extension_sql_file!(
    "sql/cci.sql",
    requires = [cci_trans_float8, cci_trans_numeric, cci_final]
);
extension_sql_file!(
    "sql/willr.sql",
    requires = [willr_trans_float8, willr_trans_numeric, willr_final]
);
extension_sql_file!(
    "sql/trange.sql",
    requires = [trange_trans_float8, trange_trans_numeric, trange_final]
);
extension_sql_file!(
    "sql/obv.sql",
    requires = [obv_trans_float8, obv_trans_numeric, obv_final]
);
extension_sql_file!(
    "sql/mfi.sql",
    requires = [mfi_trans_float8, mfi_trans_numeric, mfi_final]
);
