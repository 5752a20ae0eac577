//! Single-input series indicators: ta.sma, ta.ema, ta.wma, ta.dema, ta.tema, ta.rsi,
//! ta.roc, ta.mom, ta.stddev, ta.volatility.

use pgrx::prelude::*;
use pgrx::Internal;

use super::common::{final_state, ok, trans_value, RawNumeric};
use crate::indicators::{
    dema::Dema, ema::Ema, mom::Mom, roc::Roc, rsi::Rsi, sma::Sma, stddev::StdDev,
};
use crate::indicators::{tema::Tema, volatility::Volatility, wma::Wma};

/// Generates `<name>_trans(internal, float8, int...)`, `<name>_trans(internal, numeric,
/// int...)` and `<name>_final(internal) -> float8` for an indicator with i32 parameters.
macro_rules! value_agg {
    (
        fname = $fname:literal, trans = $trans:literal, fin = $fin_sql:literal,
        f8 = $f8:ident, num = $num:ident, fin_fn = $fin:ident, state = $S:ty,
        params = [$($p:ident),*], input = $input:literal,
        new = $new:expr, update = $upd:expr $(,)?
    ) => {
        #[pg_extern(immutable, parallel_safe, name = $trans)]
        fn $f8(state: Internal, value: Option<f64>, $($p: Option<i32>,)* fcinfo: pg_sys::FunctionCallInfo) -> Internal {
            unsafe {
                trans_value::<$S>(
                    state, fcinfo, $fname, &[$(stringify!($p)),*], &[$($p.map(f64::from)),*],
                    $input, value, $new, $upd,
                )
            }
        }

        #[pg_extern(immutable, parallel_safe, name = $trans)]
        fn $num(state: Internal, value: Option<RawNumeric>, $($p: Option<i32>,)* fcinfo: pg_sys::FunctionCallInfo) -> Internal {
            unsafe {
                trans_value::<$S>(
                    state, fcinfo, $fname, &[$(stringify!($p)),*], &[$($p.map(f64::from)),*],
                    $input, value.map(RawNumeric::to_f64), $new, $upd,
                )
            }
        }

        #[pg_extern(immutable, parallel_safe, name = $fin_sql)]
        fn $fin(state: Internal) -> Option<f64> {
            unsafe { final_state::<$S, f64>(&state) }.and_then(|s| s.last)
        }
    };
}

value_agg!(
    fname = "ta.sma",
    trans = "sma_trans",
    fin = "sma_final",
    f8 = sma_trans_float8,
    num = sma_trans_numeric,
    fin_fn = sma_final,
    state = Sma,
    params = [time_period],
    input = "value",
    new = |p| Sma::new(p[0] as i32),
    update = |s: &mut Sma, x| s.update(x)
);
value_agg!(
    fname = "ta.ema",
    trans = "ema_trans",
    fin = "ema_final",
    f8 = ema_trans_float8,
    num = ema_trans_numeric,
    fin_fn = ema_final,
    state = Ema,
    params = [time_period],
    input = "value",
    new = |p| Ema::new(p[0] as i32),
    update = |s: &mut Ema, x| s.update(x)
);
value_agg!(
    fname = "ta.wma",
    trans = "wma_trans",
    fin = "wma_final",
    f8 = wma_trans_float8,
    num = wma_trans_numeric,
    fin_fn = wma_final,
    state = Wma,
    params = [time_period],
    input = "value",
    new = |p| Wma::new(p[0] as i32),
    update = |s: &mut Wma, x| s.update(x)
);
value_agg!(
    fname = "ta.dema",
    trans = "dema_trans",
    fin = "dema_final",
    f8 = dema_trans_float8,
    num = dema_trans_numeric,
    fin_fn = dema_final,
    state = Dema,
    params = [time_period],
    input = "value",
    new = |p| Dema::new(p[0] as i32),
    update = |s: &mut Dema, x| s.update(x)
);
value_agg!(
    fname = "ta.tema",
    trans = "tema_trans",
    fin = "tema_final",
    f8 = tema_trans_float8,
    num = tema_trans_numeric,
    fin_fn = tema_final,
    state = Tema,
    params = [time_period],
    input = "value",
    new = |p| Tema::new(p[0] as i32),
    update = |s: &mut Tema, x| s.update(x)
);
value_agg!(
    fname = "ta.rsi",
    trans = "rsi_trans",
    fin = "rsi_final",
    f8 = rsi_trans_float8,
    num = rsi_trans_numeric,
    fin_fn = rsi_final,
    state = Rsi,
    params = [time_period],
    input = "value",
    new = |p| Rsi::new(p[0] as i32),
    update = |s: &mut Rsi, x| s.update(x)
);
value_agg!(
    fname = "ta.roc",
    trans = "roc_trans",
    fin = "roc_final",
    f8 = roc_trans_float8,
    num = roc_trans_numeric,
    fin_fn = roc_final,
    state = Roc,
    params = [time_period],
    input = "value",
    new = |p| Roc::new(p[0] as i32),
    update = |s: &mut Roc, x| s.update(x)
);
value_agg!(
    fname = "ta.mom",
    trans = "mom_trans",
    fin = "mom_final",
    f8 = mom_trans_float8,
    num = mom_trans_numeric,
    fin_fn = mom_final,
    state = Mom,
    params = [time_period],
    input = "value",
    new = |p| Mom::new(p[0] as i32),
    update = |s: &mut Mom, x| s.update(x)
);
value_agg!(
    fname = "ta.stddev",
    trans = "stddev_trans",
    fin = "stddev_final",
    f8 = stddev_trans_float8,
    num = stddev_trans_numeric,
    fin_fn = stddev_final,
    state = StdDev,
    params = [time_period],
    input = "value",
    new = |p| StdDev::new(p[0] as i32, 1.0),
    update = |s: &mut StdDev, x| s.update(x)
);
value_agg!(
    fname = "ta.volatility",
    trans = "volatility_trans",
    fin = "volatility_final",
    f8 = volatility_trans_float8,
    num = volatility_trans_numeric,
    fin_fn = volatility_final,
    state = Volatility,
    params = [time_period],
    input = "close",
    new = |p| Volatility::new(p[0] as i32),
    update = |s: &mut Volatility, x| s.update(ok("ta.volatility", Volatility::check_close(x)))
);

extension_sql_file!(
    "sql/sma.sql",
    requires = [sma_trans_float8, sma_trans_numeric, sma_final]
);
extension_sql_file!(
    "sql/ema.sql",
    requires = [ema_trans_float8, ema_trans_numeric, ema_final]
);
extension_sql_file!(
    "sql/wma.sql",
    requires = [wma_trans_float8, wma_trans_numeric, wma_final]
);
extension_sql_file!(
    "sql/dema.sql",
    requires = [dema_trans_float8, dema_trans_numeric, dema_final]
);
extension_sql_file!(
    "sql/tema.sql",
    requires = [tema_trans_float8, tema_trans_numeric, tema_final]
);
extension_sql_file!(
    "sql/rsi.sql",
    requires = [rsi_trans_float8, rsi_trans_numeric, rsi_final]
);
extension_sql_file!(
    "sql/roc.sql",
    requires = [roc_trans_float8, roc_trans_numeric, roc_final]
);
extension_sql_file!(
    "sql/mom.sql",
    requires = [mom_trans_float8, mom_trans_numeric, mom_final]
);
extension_sql_file!(
    "sql/stddev.sql",
    requires = [
        stddev_trans_float8,
        stddev_trans_numeric,
        stddev_nbdev_trans_float8,
        stddev_nbdev_trans_numeric,
        stddev_final
    ]
);
extension_sql_file!(
    "sql/volatility.sql",
    requires = [
        volatility_trans_float8,
        volatility_trans_numeric,
        volatility_final
    ]
);

// ta.stddev(value, time_period, nb_dev): TA-Lib's STDDEV with its optInNbDev multiplier.
const STDDEV_PARAMS: [&str; 2] = ["time_period", "nb_dev"];

#[pg_extern(immutable, parallel_safe, name = "stddev_trans")]
fn stddev_nbdev_trans_float8(
    state: Internal,
    value: Option<f64>,
    time_period: Option<i32>,
    nb_dev: Option<f64>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    unsafe {
        trans_value::<StdDev>(
            state,
            fcinfo,
            "ta.stddev",
            &STDDEV_PARAMS,
            &[time_period.map(f64::from), nb_dev],
            "value",
            value,
            |p| StdDev::new(p[0] as i32, p[1]),
            |s: &mut StdDev, x| s.update(x),
        )
    }
}

#[pg_extern(immutable, parallel_safe, name = "stddev_trans")]
fn stddev_nbdev_trans_numeric(
    state: Internal,
    value: Option<RawNumeric>,
    time_period: Option<i32>,
    nb_dev: Option<f64>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    unsafe {
        trans_value::<StdDev>(
            state,
            fcinfo,
            "ta.stddev",
            &STDDEV_PARAMS,
            &[time_period.map(f64::from), nb_dev],
            "value",
            value.map(RawNumeric::to_f64),
            |p| StdDev::new(p[0] as i32, p[1]),
            |s: &mut StdDev, x| s.update(x),
        )
    }
}
