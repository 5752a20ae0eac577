//! Step functions that carry RSI / MACD forward one value at a time in a `float8[]`
//! (for the data schema's per-candle columns): ta.rsi_step, ta.macd_step.

use pgrx::prelude::*;

use super::common::{finite, ok, raise, raise_msg, raise_out_of_range};
use crate::indicators::macd::Macd;
use crate::indicators::rsi::Rsi;
use crate::indicators::TaError;

/// Reads the serialised part of a step state (`skip` leading output elements, which must be
/// NULL or finite; the streaming state validates the rest).
fn decode(fname: &str, state: &Array<'_, f64>, skip: usize) -> Vec<f64> {
    let mut v = Vec::with_capacity(state.len());
    for (i, x) in state.iter().enumerate() {
        if i < skip {
            if x.is_some_and(|x| !x.is_finite()) {
                raise(
                    fname,
                    TaError::InvalidState {
                        reason: format!("output element {} is not finite", i + 1),
                    },
                );
            }
            continue;
        }
        match x {
            Some(x) => v.push(x),
            None => raise(
                fname,
                TaError::InvalidState {
                    reason: format!("element {} is NULL", i + 1),
                },
            ),
        }
    }
    v
}

/// The returned array: outputs (NULL in the lookback) then the state; every number must be
/// finite (an overflow from finite inputs raises 22003 instead of storing Infinity/NaN in a
/// state the next call would reject).
fn checked(fname: &str, v: Vec<Option<f64>>) -> Vec<Option<f64>> {
    if v.iter().flatten().any(|x| !x.is_finite()) {
        raise_out_of_range(fname);
    }
    v
}

fn param(fname: &str, name: &str, p: Option<i32>) -> i32 {
    p.unwrap_or_else(|| raise_msg(fname, &format!("{name} must not be NULL")))
}

/// `ta.rsi_step(state, value, time_period)`: element 1 of the result is the RSI after
/// `value` (NULL in the lookback), the rest is the opaque streaming state.
#[pg_extern(immutable, parallel_safe)]
fn rsi_step(
    state: Option<Array<'_, f64>>,
    value: Option<f64>,
    time_period: Option<i32>,
) -> Option<Vec<Option<f64>>> {
    const F: &str = "ta.rsi_step";
    let tp = param(F, "time_period", time_period);
    // a state is validated even when it is handed back unchanged
    let restored = state
        .as_ref()
        .map(|s| ok(F, Rsi::from_state(&decode(F, s, 1), tp)));
    let Some(x) = value else {
        return state.map(|s| s.iter().collect());
    };
    let x = finite(F, "value", x);
    let mut rsi = match restored {
        None => ok(F, Rsi::new(tp)),
        Some(r) => r,
    };
    let out = rsi.update(x);
    let mut v = Vec::with_capacity(1 + crate::indicators::rsi::RSI_STATE_LEN);
    v.push(out);
    v.extend(rsi.to_state().into_iter().map(Some));
    Some(checked(F, v))
}

/// `ta.macd_step(state, value, fast_period, slow_period, signal_period)`: elements 1..3
/// of the result are macd, macd_signal, macd_hist after `value` (NULL in the lookback),
/// the rest is the opaque streaming state.
#[pg_extern(immutable, parallel_safe)]
fn macd_step(
    state: Option<Array<'_, f64>>,
    value: Option<f64>,
    fast_period: Option<i32>,
    slow_period: Option<i32>,
    signal_period: Option<i32>,
) -> Option<Vec<Option<f64>>> {
    const F: &str = "ta.macd_step";
    let (f, s, g) = (
        param(F, "fast_period", fast_period),
        param(F, "slow_period", slow_period),
        param(F, "signal_period", signal_period),
    );
    let restored = state
        .as_ref()
        .map(|st| ok(F, Macd::from_state(&decode(F, st, 3), f, s, g)));
    let Some(x) = value else {
        return state.map(|st| st.iter().collect());
    };
    let x = finite(F, "value", x);
    let mut m = match restored {
        None => ok(F, Macd::new(f, s, g)),
        Some(m) => m,
    };
    let out = m.update(x);
    let mut v = Vec::with_capacity(3 + crate::indicators::macd::MACD_STATE_LEN);
    v.push(out.map(|o| o.macd));
    v.push(out.map(|o| o.macd_signal));
    v.push(out.map(|o| o.macd_hist));
    v.extend(m.to_state().into_iter().map(Some));
    Some(checked(F, v))
}

extension_sql_file!("sql/step.sql", requires = [rsi_step, macd_step]);
