//! Indicator math, free of PostgreSQL: batch functions and streaming states.
//!
//! Every indicator has the same shape (see STYLE.md):
//! - a batch function `fn name(&[f64], params) -> Result<Vec<Option<f64>>, TaError>` (or a
//!   multi-output struct per bar) that returns one entry per input bar, `None` during the
//!   lookback, exactly as TA-Lib's batch function with default settings (unstable period 0);
//! - a streaming `State` with `new(params) -> Result<Self, TaError>` and
//!   `update(&mut self, ...) -> Option<...>`; it is the SQL aggregate's transition state, and the
//!   batch function is the fold of `update` over the input.
//!
//! The arithmetic replicates TA-Lib 0.6.4's C code operation by operation (same summation
//! order, same seeding), so results agree bit for bit on ordinary data. Documented
//! differences: TA-Lib treats `|x| < 1e-14` (`TA_IS_ZERO`) and, in MFI, money flow `< 1.0` as
//! zero, which breaks indicators of very low-priced instruments; we test for exact zero
//! instead. For the variance of STDDEV/BBANDS, see [`variance_is_zero`].
//!
//! Inputs must be finite (NaN/±Inf rejected with [`TaError::NonFiniteInput`]); parameters are
//! validated by `new` ([`TaError::InvalidPeriod`], [`TaError::InvalidParameter`]).

pub mod adx;
pub mod atr;
pub mod bbands;
pub mod cci;
pub mod dema;
pub mod ema;
pub mod fib_pivots;
pub mod imbalance;
pub mod macd;
pub mod mfi;
pub mod mom;
pub mod natr;
pub mod obv;
pub mod roc;
pub mod rsi;
pub mod sma;
pub mod stddev;
pub mod stoch;
pub mod tema;
pub mod trange;
pub mod vcp;
pub mod volatility;
pub mod vwap;
pub mod willr;
pub mod wma;

#[cfg(test)]
pub(crate) mod golden;
#[cfg(test)]
pub(crate) mod testutil;

/// Largest accepted period for every indicator (TA-Lib's own upper bound).
pub const MAX_PERIOD: i32 = 100_000;

/// The one error type of the indicator math.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TaError {
    /// A period argument outside `min..=max`.
    #[error("{name} must be between {min} and {max}, got {got}")]
    InvalidPeriod {
        name: &'static str,
        got: i64,
        min: i32,
        max: i32,
    },
    /// Any other invalid parameter (e.g. `nb_dev_up < 0`, `fast_period >= slow_period`).
    #[error("{name} {reason}, got {value}")]
    InvalidParameter {
        name: &'static str,
        value: String,
        reason: &'static str,
    },
    /// A NaN or infinite input value.
    #[error("{name} must be a finite number, got {value}")]
    NonFiniteInput { name: &'static str, value: f64 },
    /// A parameter changed in the middle of a series (aggregates validate on the first row).
    #[error("{name} must be constant within a series, got {got} after {was}")]
    ParameterChanged {
        name: &'static str,
        was: String,
        got: String,
    },
    /// A serialised streaming state that does not decode (`ta.rsi_step`, `ta.macd_step`).
    #[error("invalid state: {reason}")]
    InvalidState { reason: String },
    /// Batch inputs of different lengths.
    #[error("{name} has {got} values, expected {expected}")]
    LengthMismatch {
        name: &'static str,
        got: usize,
        expected: usize,
    },
}

/// TA-Lib's `TA_EPSILON` in 0.6.4 (`TA_IS_ZERO(v)` is `-1e-14 < v < 1e-14`). Only used to
/// keep TA-Lib's variance clamp where it is harmless, see [`variance_is_zero`].
pub const TA_EPSILON: f64 = 1e-14;

/// Validates a period in `min..=MAX_PERIOD` and returns it as `usize`.
pub fn check_period(name: &'static str, got: i32, min: i32) -> Result<usize, TaError> {
    if got < min || got > MAX_PERIOD {
        return Err(TaError::InvalidPeriod {
            name,
            got: i64::from(got),
            min,
            max: MAX_PERIOD,
        });
    }
    // `got >= min >= 1` here
    Ok(got as usize)
}

/// Rejects NaN and ±Inf.
#[inline]
pub fn check_finite(name: &'static str, x: f64) -> Result<f64, TaError> {
    if x.is_finite() {
        Ok(x)
    } else {
        Err(TaError::NonFiniteInput { name, value: x })
    }
}

/// Validates a standard-deviation multiplier: finite and `>= 0`.
pub fn check_nb_dev(name: &'static str, x: f64) -> Result<f64, TaError> {
    if x.is_finite() && x >= 0.0 {
        Ok(x)
    } else {
        Err(TaError::InvalidParameter {
            name,
            value: format!("{x}"),
            reason: "must be a finite number >= 0",
        })
    }
}

/// Variance clamp of STDDEV/VAR/BBANDS. TA-Lib computes the variance as
/// `mean(x²) − mean(x)²` from running sums and returns 0 when it is `< 1e-14`
/// (`TA_IS_ZERO_OR_NEG`). An absolute threshold zeroes every variance of an instrument
/// priced below ~1e-6 (a 1e-8 coin moving 1 % per bar has variance ~1e-20). We keep the
/// same formula and running sums (bit-identical results elsewhere) and treat the variance
/// as zero when it is below `min(1e-14, 1e-12 · mean(x²))`: the relative part still
/// removes the rounding noise of the sums (a few ulps of `mean(x²)`, far below 1e-12 of it)
/// while prices above ~100 see exactly TA-Lib's threshold.
#[inline]
pub fn variance_is_zero(variance: f64, mean_of_squares: f64) -> bool {
    variance < f64::min(TA_EPSILON, 1e-12 * mean_of_squares)
}

/// Checks a serialised-state parameter against the caller's parameter.
pub(crate) fn check_same_param(name: &'static str, was: f64, got: i32) -> Result<(), TaError> {
    if was != f64::from(got) {
        return Err(TaError::ParameterChanged {
            name,
            was: format!("{was}"),
            got: format!("{got}"),
        });
    }
    Ok(())
}

/// Decodes a counter stored as f64 in a serialised state: an integer in `0..=max` (the
/// largest value the streaming state itself ever stores).
pub(crate) fn state_count(x: f64, max: usize) -> Result<usize, TaError> {
    if x.is_finite() && x >= 0.0 && x.fract() == 0.0 && x <= max as f64 {
        Ok(x as usize)
    } else {
        Err(TaError::InvalidState {
            reason: format!("counter {x} is not an integer in 0..={max}"),
        })
    }
}

/// Decodes a finite value stored in a serialised state.
pub(crate) fn state_value(x: f64) -> Result<f64, TaError> {
    if x.is_finite() {
        Ok(x)
    } else {
        Err(TaError::InvalidState {
            reason: format!("non-finite value {x}"),
        })
    }
}

/// Decodes a finite value `>= 0` stored in a serialised state (sums of gains or losses).
pub(crate) fn state_non_negative(name: &str, x: f64) -> Result<f64, TaError> {
    if x.is_finite() && x >= 0.0 {
        Ok(x)
    } else {
        Err(TaError::InvalidState {
            reason: format!("{name} must be a finite number >= 0, got {x}"),
        })
    }
}

/// Outputs of an indicator bar, checked before they become SQL values: finite inputs can
/// still overflow the intermediate arithmetic (e.g. the change between 1e308 and -1e308 is
/// +Infinity), and the SQL wrappers raise an error instead of returning Infinity or NaN.
pub trait FiniteOutput {
    /// True when every value of the output is finite.
    fn is_finite(&self) -> bool;
}

impl FiniteOutput for f64 {
    #[inline]
    fn is_finite(&self) -> bool {
        f64::is_finite(*self)
    }
}

impl FiniteOutput for () {
    #[inline]
    fn is_finite(&self) -> bool {
        true
    }
}

impl FiniteOutput for macd::MacdOutput {
    #[inline]
    fn is_finite(&self) -> bool {
        self.macd.is_finite() && self.macd_signal.is_finite() && self.macd_hist.is_finite()
    }
}

impl FiniteOutput for bbands::BbandsOutput {
    #[inline]
    fn is_finite(&self) -> bool {
        self.upper_band.is_finite() && self.middle_band.is_finite() && self.lower_band.is_finite()
    }
}

impl FiniteOutput for stoch::StochOutput {
    #[inline]
    fn is_finite(&self) -> bool {
        self.slow_k.is_finite() && self.slow_d.is_finite()
    }
}

impl FiniteOutput for fib_pivots::FibPivots {
    #[inline]
    fn is_finite(&self) -> bool {
        [
            self.r3, self.r2, self.r1, self.pivot, self.s1, self.s2, self.s3,
        ]
        .iter()
        .all(|x| x.is_finite())
    }
}

/// The batch form of a single-series indicator: every value checked finite, then fed to the
/// streaming state in order.
pub(crate) fn run_series<S, O>(
    values: &[f64],
    mut state: S,
    update: impl Fn(&mut S, f64) -> O,
) -> Result<Vec<O>, TaError> {
    values
        .iter()
        .map(|&x| Ok(update(&mut state, check_finite("value", x)?)))
        .collect()
}

/// The batch form of a high/low/close indicator: lengths checked, then every bar checked
/// finite and fed to the streaming state `make` builds, in order.
pub(crate) fn run_hlc<S, O>(
    high: &[f64],
    low: &[f64],
    close: &[f64],
    make: impl FnOnce() -> Result<S, TaError>,
    update: impl Fn(&mut S, f64, f64, f64) -> O,
) -> Result<Vec<O>, TaError> {
    check_lengths(high.len(), &[("low", low.len()), ("close", close.len())])?;
    let mut state = make()?;
    (0..high.len())
        .map(|i| {
            let (h, l, c) = trange::check_hlc(high[i], low[i], close[i])?;
            Ok(update(&mut state, h, l, c))
        })
        .collect()
}

/// Checks that all batch inputs have the length of the first.
pub(crate) fn check_lengths(
    expected: usize,
    others: &[(&'static str, usize)],
) -> Result<(), TaError> {
    for &(name, got) in others {
        if got != expected {
            return Err(TaError::LengthMismatch {
                name,
                got,
                expected,
            });
        }
    }
    Ok(())
}

/// Fixed-capacity ring buffer of the last `n` values (allocated once).
#[derive(Debug, Clone)]
pub(crate) struct Ring {
    buf: Vec<f64>,
    /// slot the next value goes to
    head: usize,
}

impl Ring {
    pub(crate) fn new(n: usize) -> Self {
        Self {
            buf: vec![0.0; n.max(1)],
            head: 0,
        }
    }
    /// Stores `x` and returns the value it replaced (`n` pushes ago, 0.0 before that).
    #[inline]
    pub(crate) fn push(&mut self, x: f64) -> f64 {
        let old = std::mem::replace(&mut self.buf[self.head], x);
        self.head += 1;
        if self.head == self.buf.len() {
            self.head = 0;
        }
        old
    }
    /// The value stored `n-1` pushes ago (the oldest of the last `n`, the newest included).
    #[inline]
    pub(crate) fn oldest(&self) -> f64 {
        self.buf[self.head]
    }
    /// Slot-ordered contents (slot 0 first), as TA-Lib's CIRCBUF sums them.
    #[inline]
    pub(crate) fn slots(&self) -> &[f64] {
        &self.buf
    }
}

#[cfg(test)]
mod extreme_inputs {
    //! Finite extreme inputs (±1e308, 1e-308): which indicators overflow. The SQL wrappers
    //! raise 22003 for exactly these (`FiniteOutput`, checked in `pg::common`); every other
    //! output must be finite. A change in this list is a change of SQL behaviour.
    use super::*;

    /// Per indicator: does any output bar of the series fail [`FiniteOutput::is_finite`]?
    fn overflows(
        close: &[f64],
        high: &[f64],
        low: &[f64],
        vol: &[f64],
    ) -> Vec<(&'static str, bool)> {
        fn any<O: FiniteOutput>(v: Vec<Option<O>>) -> bool {
            v.iter().flatten().any(|o| !o.is_finite())
        }
        let wa: Vec<f64> = close.to_vec();
        let pos: Vec<f64> = close.iter().map(|x| x.abs()).collect();
        vec![
            ("sma", any(sma::sma(close, 5).unwrap())),
            ("ema", any(ema::ema(close, 5).unwrap())),
            ("wma", any(wma::wma(close, 5).unwrap())),
            ("dema", any(dema::dema(close, 5).unwrap())),
            ("tema", any(tema::tema(close, 5).unwrap())),
            ("rsi", any(rsi::rsi(close, 14).unwrap())),
            ("roc", any(roc::roc(close, 5).unwrap())),
            ("mom", any(mom::mom(close, 5).unwrap())),
            ("stddev", any(stddev::stddev(close, 5, 1.0).unwrap())),
            ("volatility", any(volatility::volatility(&pos, 5).unwrap())),
            ("macd", any(macd::macd(close, 12, 26, 9).unwrap())),
            ("bbands", any(bbands::bbands(close, 5, 2.0, 2.0).unwrap())),
            ("atr", any(atr::atr(high, low, close, 5).unwrap())),
            ("natr", any(natr::natr(high, low, close, 5).unwrap())),
            ("adx", any(adx::adx(high, low, close, 5).unwrap())),
            ("cci", any(cci::cci(high, low, close, 5).unwrap())),
            ("willr", any(willr::willr(high, low, close, 5).unwrap())),
            ("trange", any(trange::trange(high, low, close).unwrap())),
            (
                "stoch",
                any(stoch::stoch(high, low, close, 5, 3, 3).unwrap()),
            ),
            ("obv", any(obv::obv(close, vol).unwrap())),
            ("mfi", any(mfi::mfi(high, low, close, vol, 5).unwrap())),
            ("vwap", any(vwap::vwap(close, vol, None).unwrap())),
            ("vcp", any(vec![vcp::vcp(close, &wa, high, low).unwrap()])),
            (
                "fib_pivots",
                any(vec![fib_pivots::fib_pivots(high, low, close).unwrap()]),
            ),
            ("imbalance", any(vec![imbalance::imbalance(&pos, vol)])),
        ]
    }

    fn series(a: f64, b: f64, n: usize) -> Vec<f64> {
        (0..n).map(|i| if i % 2 == 0 { a } else { b }).collect()
    }

    #[test]
    fn huge_alternating_inputs_overflow_only_where_listed() {
        // TC1: closes ±1e308 alternating, high 1e308, low -1e308, volume 1e308
        let n = 60;
        let close = series(1e308, -1e308, n);
        let got = overflows(&close, &vec![1e308; n], &vec![-1e308; n], &vec![1e308; n]);
        // e.g. RSI: the change -1e308 -> 1e308 is +Infinity; TRANGE: high - low = 2e308.
        // SMA/EMA/DEMA/TEMA/MACD/ROC/CCI/OBV/volatility stay finite on this series.
        let listed = [
            "wma",
            "rsi",
            "mom",
            "stddev",
            "bbands",
            "atr",
            "natr",
            "adx",
            "willr",
            "trange",
            "stoch",
            "mfi",
            "vwap",
            "vcp",
            "fib_pivots",
            "imbalance",
        ];
        let overflowing: Vec<&str> = got.iter().filter(|g| g.1).map(|g| g.0).collect();
        assert_eq!(overflowing, listed, "{got:?}");
    }

    #[test]
    fn tiny_inputs_never_overflow() {
        // TC2: prices 1e-308 / 2e-308 (subnormal and near the smallest normal), volume 1e-308
        let n = 60;
        let close = series(1e-308, 2e-308, n);
        let got = overflows(&close, &vec![2e-308; n], &vec![1e-308; n], &vec![1e-308; n]);
        assert!(got.iter().all(|g| !g.1), "{got:?}");
    }
}
