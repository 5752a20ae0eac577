//! Normalized average true range (TA-Lib: NATR).

use super::atr::Atr;
use super::{run_hlc, TaError};

/// Normalized ATR (TA-Lib: NATR), streaming state.
/// # Input       high, low, close per bar, oldest first, price units.
/// # Output      percent of the close: `ATR / close · 100`; 0 when the close is 0;
///   `None` for the first `time_period` bars.
/// # Parameters  `time_period` in 1..=100_000.
/// # Errors      [`TaError::InvalidPeriod`].
/// # Reference   TA-Lib `ta_NATR.c`. Difference: TA-Lib returns 0 when `|close| < 1e-14`
///   (`TA_IS_ZERO`); we only when the close is exactly 0.
#[doc(alias = "NATR")]
#[derive(Debug, Clone)]
pub struct Natr {
    atr: Atr,
}

impl Natr {
    /// New state.
    pub fn new(time_period: i32) -> Result<Self, TaError> {
        Ok(Self {
            atr: Atr::new(time_period)?,
        })
    }

    /// Adds one bar.
    #[inline]
    pub fn update(&mut self, high: f64, low: f64, close: f64) -> Option<f64> {
        let a = self.atr.update(high, low, close)?;
        Some(if close != 0.0 {
            (a / close) * 100.0
        } else {
            0.0
        })
    }
}

/// NATR over a whole series.
/// # Errors [`TaError::InvalidPeriod`], [`TaError::LengthMismatch`], [`TaError::NonFiniteInput`].
#[doc(alias = "NATR")]
pub fn natr(
    high: &[f64],
    low: &[f64],
    close: &[f64],
    time_period: i32,
) -> Result<Vec<Option<f64>>, TaError> {
    run_hlc(high, low, close, || Natr::new(time_period), Natr::update)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicators::golden as g;
    use crate::indicators::testutil::*;

    #[test]
    fn golden_talib() {
        assert_series_exact(&natr(g::HIGH, g::LOW, g::CLOSE, 14).unwrap(), g::NATR_14);
    }

    #[test]
    fn edge_cases() {
        // scale invariant: TA-Lib gives 0 below 1e-14 prices, we do not
        let s = 1e-16;
        let (h, l, c): (Vec<f64>, Vec<f64>, Vec<f64>) = (
            g::HIGH.iter().map(|x| x * s).collect(),
            g::LOW.iter().map(|x| x * s).collect(),
            g::CLOSE.iter().map(|x| x * s).collect(),
        );
        assert_series_tol(&natr(&h, &l, &c, 14).unwrap(), g::NATR_14, 1e-9);
        assert_eq!(
            natr(&[1.0, 1.0], &[0.0, 0.0], &[0.0, 0.0], 1).unwrap()[1],
            Some(0.0)
        );
    }
}
