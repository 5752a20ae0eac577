//! Step functions that carry RSI / MACD forward one value at a time in a `float8[]`
//! (for the data schema's per-candle columns): ta.rsi_step, ta.macd_step.

use pgrx::prelude::*;

use super::common::{finite, ok, raise, raise_msg};
use crate::indicators::macd::Macd;
use crate::indicators::rsi::Rsi;
use crate::indicators::TaError;

/// Reads the serialised part of a step state (`skip` leading output elements).
fn decode(fname: &str, state: &Array<'_, f64>, skip: usize) -> Vec<f64> {
    let mut v = Vec::with_capacity(state.len());
    for (i, x) in state.iter().enumerate() {
        if i < skip {
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
    let Some(x) = value else {
        return state.map(|s| s.iter().collect());
    };
    let x = finite(F, "value", x);
    let mut rsi = match &state {
        None => ok(F, Rsi::new(tp)),
        Some(s) => ok(F, Rsi::from_state(&decode(F, s, 1), tp)),
    };
    let out = rsi.update(x);
    let mut v = Vec::with_capacity(1 + crate::indicators::rsi::RSI_STATE_LEN);
    v.push(out);
    v.extend(rsi.to_state().into_iter().map(Some));
    Some(v)
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
    let Some(x) = value else {
        return state.map(|st| st.iter().collect());
    };
    let x = finite(F, "value", x);
    let mut m = match &state {
        None => ok(F, Macd::new(f, s, g)),
        Some(st) => ok(F, Macd::from_state(&decode(F, st, 3), f, s, g)),
    };
    let out = m.update(x);
    let mut v = Vec::with_capacity(3 + crate::indicators::macd::MACD_STATE_LEN);
    v.push(out.map(|o| o.macd));
    v.push(out.map(|o| o.macd_signal));
    v.push(out.map(|o| o.macd_hist));
    v.extend(m.to_state().into_iter().map(Some));
    Some(v)
}

extension_sql_file!("sql/step.sql", requires = [rsi_step, macd_step]);
