//! Multi-output indicators returning composite types: ta.macd, ta.bbands, ta.stoch.

use pgrx::prelude::*;
use pgrx::Internal;

use super::common::{
    composite_return, form_float8_tuple, result_tupdesc, trans_inputs, AggState, RawNumeric,
};
use crate::indicators::bbands::{Bbands, BbandsOutput};
use crate::indicators::macd::{Macd, MacdOutput};
use crate::indicators::stoch::{Stoch, StochOutput};

composite_return!(MacdResult, "ta.macd_result");
composite_return!(BbandsResult, "ta.bbands_result");
composite_return!(StochResult, "ta.stoch_result");

extension_sql_file!("sql/types.sql", name = "composite_types");

fn num(x: Option<RawNumeric>) -> Option<f64> {
    x.map(RawNumeric::to_f64)
}

// ---- MACD ----------------------------------------------------------------------------

const MACD_PARAMS: [&str; 3] = ["fast_period", "slow_period", "signal_period"];

#[pg_extern(immutable, parallel_safe, name = "macd_trans")]
fn macd_trans_float8(
    state: Internal,
    value: Option<f64>,
    fast_period: Option<i32>,
    slow_period: Option<i32>,
    signal_period: Option<i32>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    unsafe {
        trans_inputs::<Macd, MacdOutput, 1>(
            state,
            fcinfo,
            "ta.macd",
            &MACD_PARAMS,
            &[
                fast_period.map(f64::from),
                slow_period.map(f64::from),
                signal_period.map(f64::from),
            ],
            ["value"],
            [value],
            |p| Macd::new(p[0] as i32, p[1] as i32, p[2] as i32),
            |s: &mut Macd, [x]| s.update(x),
        )
    }
}

#[pg_extern(immutable, parallel_safe, name = "macd_trans")]
fn macd_trans_numeric(
    state: Internal,
    value: Option<RawNumeric>,
    fast_period: Option<i32>,
    slow_period: Option<i32>,
    signal_period: Option<i32>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    unsafe {
        trans_inputs::<Macd, MacdOutput, 1>(
            state,
            fcinfo,
            "ta.macd",
            &MACD_PARAMS,
            &[
                fast_period.map(f64::from),
                slow_period.map(f64::from),
                signal_period.map(f64::from),
            ],
            ["value"],
            [num(value)],
            |p| Macd::new(p[0] as i32, p[1] as i32, p[2] as i32),
            |s: &mut Macd, [x]| s.update(x),
        )
    }
}

#[pg_extern(immutable, parallel_safe, name = "macd_final", requires = ["composite_types"])]
fn macd_final(mut state: Internal, fcinfo: pg_sys::FunctionCallInfo) -> Option<MacdResult> {
    let st = unsafe { state.get_mut::<AggState<Macd, MacdOutput>>() }?;
    let o = st.last?;
    unsafe {
        let td = result_tupdesc(fcinfo, &mut st.tupdesc, st.ctx, "ta.macd");
        Some(MacdResult(form_float8_tuple(
            td,
            &[Some(o.macd), Some(o.macd_signal), Some(o.macd_hist)],
        )))
    }
}

// ---- BBANDS --------------------------------------------------------------------------

const BBANDS_PARAMS: [&str; 3] = ["time_period", "nb_dev_up", "nb_dev_dn"];

#[pg_extern(immutable, parallel_safe, name = "bbands_trans")]
fn bbands_trans_float8(
    state: Internal,
    value: Option<f64>,
    time_period: Option<i32>,
    nb_dev_up: Option<f64>,
    nb_dev_dn: Option<f64>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    unsafe {
        trans_inputs::<Bbands, BbandsOutput, 1>(
            state,
            fcinfo,
            "ta.bbands",
            &BBANDS_PARAMS,
            &[time_period.map(f64::from), nb_dev_up, nb_dev_dn],
            ["value"],
            [value],
            |p| Bbands::new(p[0] as i32, p[1], p[2]),
            |s: &mut Bbands, [x]| s.update(x),
        )
    }
}

#[pg_extern(immutable, parallel_safe, name = "bbands_trans")]
fn bbands_trans_numeric(
    state: Internal,
    value: Option<RawNumeric>,
    time_period: Option<i32>,
    nb_dev_up: Option<f64>,
    nb_dev_dn: Option<f64>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    unsafe {
        trans_inputs::<Bbands, BbandsOutput, 1>(
            state,
            fcinfo,
            "ta.bbands",
            &BBANDS_PARAMS,
            &[time_period.map(f64::from), nb_dev_up, nb_dev_dn],
            ["value"],
            [num(value)],
            |p| Bbands::new(p[0] as i32, p[1], p[2]),
            |s: &mut Bbands, [x]| s.update(x),
        )
    }
}

#[pg_extern(immutable, parallel_safe, name = "bbands_final", requires = ["composite_types"])]
fn bbands_final(mut state: Internal, fcinfo: pg_sys::FunctionCallInfo) -> Option<BbandsResult> {
    let st = unsafe { state.get_mut::<AggState<Bbands, BbandsOutput>>() }?;
    let o = st.last?;
    unsafe {
        let td = result_tupdesc(fcinfo, &mut st.tupdesc, st.ctx, "ta.bbands");
        Some(BbandsResult(form_float8_tuple(
            td,
            &[Some(o.upper_band), Some(o.middle_band), Some(o.lower_band)],
        )))
    }
}

// ---- STOCH ---------------------------------------------------------------------------

const STOCH_PARAMS: [&str; 3] = ["fastk_period", "slowk_period", "slowd_period"];

#[pg_extern(immutable, parallel_safe, name = "stoch_trans")]
#[allow(clippy::too_many_arguments)]
fn stoch_trans_float8(
    state: Internal,
    high: Option<f64>,
    low: Option<f64>,
    close: Option<f64>,
    fastk_period: Option<i32>,
    slowk_period: Option<i32>,
    slowd_period: Option<i32>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    unsafe {
        trans_inputs::<Stoch, StochOutput, 3>(
            state,
            fcinfo,
            "ta.stoch",
            &STOCH_PARAMS,
            &[
                fastk_period.map(f64::from),
                slowk_period.map(f64::from),
                slowd_period.map(f64::from),
            ],
            ["high", "low", "close"],
            [high, low, close],
            |p| Stoch::new(p[0] as i32, p[1] as i32, p[2] as i32),
            |s: &mut Stoch, [h, l, c]| s.update(h, l, c),
        )
    }
}

#[pg_extern(immutable, parallel_safe, name = "stoch_trans")]
#[allow(clippy::too_many_arguments)]
fn stoch_trans_numeric(
    state: Internal,
    high: Option<RawNumeric>,
    low: Option<RawNumeric>,
    close: Option<RawNumeric>,
    fastk_period: Option<i32>,
    slowk_period: Option<i32>,
    slowd_period: Option<i32>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    unsafe {
        trans_inputs::<Stoch, StochOutput, 3>(
            state,
            fcinfo,
            "ta.stoch",
            &STOCH_PARAMS,
            &[
                fastk_period.map(f64::from),
                slowk_period.map(f64::from),
                slowd_period.map(f64::from),
            ],
            ["high", "low", "close"],
            [num(high), num(low), num(close)],
            |p| Stoch::new(p[0] as i32, p[1] as i32, p[2] as i32),
            |s: &mut Stoch, [h, l, c]| s.update(h, l, c),
        )
    }
}

#[pg_extern(immutable, parallel_safe, name = "stoch_final", requires = ["composite_types"])]
fn stoch_final(mut state: Internal, fcinfo: pg_sys::FunctionCallInfo) -> Option<StochResult> {
    let st = unsafe { state.get_mut::<AggState<Stoch, StochOutput>>() }?;
    let o = st.last?;
    unsafe {
        let td = result_tupdesc(fcinfo, &mut st.tupdesc, st.ctx, "ta.stoch");
        Some(StochResult(form_float8_tuple(
            td,
            &[Some(o.slow_k), Some(o.slow_d)],
        )))
    }
}

extension_sql_file!(
    "sql/macd.sql",
    requires = [macd_trans_float8, macd_trans_numeric, macd_final]
);
extension_sql_file!(
    "sql/bbands.sql",
    requires = [bbands_trans_float8, bbands_trans_numeric, bbands_final]
);
extension_sql_file!(
    "sql/stoch.sql",
    requires = [stoch_trans_float8, stoch_trans_numeric, stoch_final]
);
