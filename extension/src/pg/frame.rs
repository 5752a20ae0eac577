//! Frame aggregates (not in TA-Lib): ta.vwap, ta.vcp, ta.fib_pivots, ta.imbalance.
//! Their result is a formula over the rows of the frame, so the window frame clause chooses
//! the bars (`ROWS CURRENT ROW` = one candle, `ROWS BETWEEN 1439 PRECEDING AND CURRENT ROW`
//! = the last day of 1m candles).

use pgrx::prelude::*;
use pgrx::Internal;

use super::common::{
    composite_return, final_state, finite_output, form_float8_tuple, result_tupdesc, trans_inputs,
    AggState, RawNumeric,
};
use crate::indicators::fib_pivots::FibPivotsState;
use crate::indicators::imbalance::Imbalance;
use crate::indicators::vcp::Vcp;
use crate::indicators::vwap::Vwap;

composite_return!(FibPivotsResult, "ta.fib_pivots_result");

fn num(x: Option<RawNumeric>) -> Option<f64> {
    x.map(RawNumeric::to_f64)
}

// ---- VWAP ----------------------------------------------------------------------------

#[pg_extern(immutable, parallel_safe, name = "vwap_trans")]
fn vwap_trans_float8(
    state: Internal,
    price: Option<f64>,
    volume: Option<f64>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    unsafe {
        trans_inputs::<Vwap, f64, 2>(
            state,
            fcinfo,
            "ta.vwap",
            &[],
            &[],
            ["price", "volume"],
            [price, volume],
            |_| Ok(Vwap::running()),
            |s: &mut Vwap, [p, v]| s.update(p, v),
        )
    }
}

#[pg_extern(immutable, parallel_safe, name = "vwap_trans")]
fn vwap_trans_numeric(
    state: Internal,
    price: Option<RawNumeric>,
    volume: Option<RawNumeric>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    unsafe {
        trans_inputs::<Vwap, f64, 2>(
            state,
            fcinfo,
            "ta.vwap",
            &[],
            &[],
            ["price", "volume"],
            [num(price), num(volume)],
            |_| Ok(Vwap::running()),
            |s: &mut Vwap, [p, v]| s.update(p, v),
        )
    }
}

#[pg_extern(immutable, parallel_safe, name = "vwap_trans")]
fn vwap_window_trans_float8(
    state: Internal,
    price: Option<f64>,
    volume: Option<f64>,
    time_period: Option<i32>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    unsafe {
        trans_inputs::<Vwap, f64, 2>(
            state,
            fcinfo,
            "ta.vwap",
            &["time_period"],
            &[time_period.map(f64::from)],
            ["price", "volume"],
            [price, volume],
            |p| Vwap::windowed(p[0] as i32),
            |s: &mut Vwap, [p, v]| s.update(p, v),
        )
    }
}

#[pg_extern(immutable, parallel_safe, name = "vwap_trans")]
fn vwap_window_trans_numeric(
    state: Internal,
    price: Option<RawNumeric>,
    volume: Option<RawNumeric>,
    time_period: Option<i32>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    unsafe {
        trans_inputs::<Vwap, f64, 2>(
            state,
            fcinfo,
            "ta.vwap",
            &["time_period"],
            &[time_period.map(f64::from)],
            ["price", "volume"],
            [num(price), num(volume)],
            |p| Vwap::windowed(p[0] as i32),
            |s: &mut Vwap, [p, v]| s.update(p, v),
        )
    }
}

#[pg_extern(immutable, parallel_safe, name = "vwap_final")]
fn vwap_final(state: Internal) -> Option<f64> {
    unsafe { final_state::<Vwap, f64>(&state) }.and_then(|s| s.last)
}

// ---- VCP -----------------------------------------------------------------------------

const VCP_INPUTS: [&str; 4] = ["price", "weighted_average", "high", "low"];

#[pg_extern(immutable, parallel_safe, name = "vcp_trans")]
fn vcp_trans_float8(
    state: Internal,
    price: Option<f64>,
    weighted_average: Option<f64>,
    high: Option<f64>,
    low: Option<f64>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    unsafe {
        trans_inputs::<Vcp, (), 4>(
            state,
            fcinfo,
            "ta.vcp",
            &[],
            &[],
            VCP_INPUTS,
            [price, weighted_average, high, low],
            |_| Ok(Vcp::new()),
            |s: &mut Vcp, [p, w, h, l]| {
                s.update(p, w, h, l);
                None
            },
        )
    }
}

#[pg_extern(immutable, parallel_safe, name = "vcp_trans")]
fn vcp_trans_numeric(
    state: Internal,
    price: Option<RawNumeric>,
    weighted_average: Option<RawNumeric>,
    high: Option<RawNumeric>,
    low: Option<RawNumeric>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    unsafe {
        trans_inputs::<Vcp, (), 4>(
            state,
            fcinfo,
            "ta.vcp",
            &[],
            &[],
            VCP_INPUTS,
            [num(price), num(weighted_average), num(high), num(low)],
            |_| Ok(Vcp::new()),
            |s: &mut Vcp, [p, w, h, l]| {
                s.update(p, w, h, l);
                None
            },
        )
    }
}

#[pg_extern(immutable, parallel_safe, name = "vcp_final")]
fn vcp_final(state: Internal) -> Option<f64> {
    // VCP and the pivots are formulas over the whole frame, computed here, not per row
    finite_output(
        "ta.vcp",
        unsafe { final_state::<Vcp, ()>(&state) }.and_then(|s| s.s.value()),
    )
}

// ---- Fibonacci pivots ----------------------------------------------------------------

#[pg_extern(immutable, parallel_safe, name = "fib_pivots_trans")]
fn fib_pivots_trans_float8(
    state: Internal,
    high: Option<f64>,
    low: Option<f64>,
    close: Option<f64>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    unsafe {
        trans_inputs::<FibPivotsState, (), 3>(
            state,
            fcinfo,
            "ta.fib_pivots",
            &[],
            &[],
            ["high", "low", "close"],
            [high, low, close],
            |_| Ok(FibPivotsState::new()),
            |s: &mut FibPivotsState, [h, l, c]| {
                s.update(h, l, c);
                None
            },
        )
    }
}

#[pg_extern(immutable, parallel_safe, name = "fib_pivots_trans")]
fn fib_pivots_trans_numeric(
    state: Internal,
    high: Option<RawNumeric>,
    low: Option<RawNumeric>,
    close: Option<RawNumeric>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    unsafe {
        trans_inputs::<FibPivotsState, (), 3>(
            state,
            fcinfo,
            "ta.fib_pivots",
            &[],
            &[],
            ["high", "low", "close"],
            [num(high), num(low), num(close)],
            |_| Ok(FibPivotsState::new()),
            |s: &mut FibPivotsState, [h, l, c]| {
                s.update(h, l, c);
                None
            },
        )
    }
}

#[pg_extern(immutable, parallel_safe, name = "fib_pivots_final", requires = ["composite_types"])]
fn fib_pivots_final(
    mut state: Internal,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Option<FibPivotsResult> {
    let st = unsafe { state.get_mut::<AggState<FibPivotsState, ()>>() }?;
    let f = finite_output("ta.fib_pivots", st.s.value())?;
    unsafe {
        let td = result_tupdesc(fcinfo, &mut st.tupdesc, st.ctx, "ta.fib_pivots");
        Some(FibPivotsResult(form_float8_tuple(
            td,
            &[
                Some(f.r3),
                Some(f.r2),
                Some(f.r1),
                Some(f.pivot),
                Some(f.s1),
                Some(f.s2),
                Some(f.s3),
            ],
        )))
    }
}

// ---- imbalance -----------------------------------------------------------------------

#[pg_extern(immutable, parallel_safe, name = "imbalance_trans")]
fn imbalance_trans_float8(
    state: Internal,
    bid_qty: Option<f64>,
    ask_qty: Option<f64>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    unsafe {
        trans_inputs::<Imbalance, (), 2>(
            state,
            fcinfo,
            "ta.imbalance",
            &[],
            &[],
            ["bid_qty", "ask_qty"],
            [bid_qty, ask_qty],
            |_| Ok(Imbalance::new()),
            |s: &mut Imbalance, [b, a]| {
                s.update(b, a);
                None
            },
        )
    }
}

#[pg_extern(immutable, parallel_safe, name = "imbalance_trans")]
fn imbalance_trans_numeric(
    state: Internal,
    bid_qty: Option<RawNumeric>,
    ask_qty: Option<RawNumeric>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    unsafe {
        trans_inputs::<Imbalance, (), 2>(
            state,
            fcinfo,
            "ta.imbalance",
            &[],
            &[],
            ["bid_qty", "ask_qty"],
            [num(bid_qty), num(ask_qty)],
            |_| Ok(Imbalance::new()),
            |s: &mut Imbalance, [b, a]| {
                s.update(b, a);
                None
            },
        )
    }
}

#[pg_extern(immutable, parallel_safe, name = "imbalance_final")]
fn imbalance_final(state: Internal) -> Option<f64> {
    finite_output(
        "ta.imbalance",
        unsafe { final_state::<Imbalance, ()>(&state) }.and_then(|s| s.s.value()),
    )
}

extension_sql_file!(
    "sql/vwap.sql",
    requires = [
        vwap_trans_float8,
        vwap_trans_numeric,
        vwap_window_trans_float8,
        vwap_window_trans_numeric,
        vwap_final
    ]
);
extension_sql_file!(
    "sql/vcp.sql",
    requires = [vcp_trans_float8, vcp_trans_numeric, vcp_final]
);
extension_sql_file!(
    "sql/fib_pivots.sql",
    requires = [
        fib_pivots_trans_float8,
        fib_pivots_trans_numeric,
        fib_pivots_final
    ]
);
extension_sql_file!(
    "sql/imbalance.sql",
    requires = [
        imbalance_trans_float8,
        imbalance_trans_numeric,
        imbalance_final
    ]
);
