//! Williams' %R (TA-Lib: WILLR).

use super::stoch::MinMax;
use super::{check_period, run_hlc, TaError};

/// Williams' %R (TA-Lib: WILLR), streaming state.
/// # Input       high, low, close per bar, oldest first, price units.
/// # Output      −100..=0: `(highest − close)/((highest − lowest)/−100)` over the last
///   `time_period` bars, 0 when the range is 0; `None` for the first
///   `time_period−1` bars.
/// # Parameters  `time_period` in 2..=100_000.
/// # Errors      [`TaError::InvalidPeriod`].
/// # Reference   TA-Lib `ta_WILLR.c`; Larry Williams.
#[doc(alias = "WILLR")]
#[derive(Debug, Clone)]
pub struct Willr {
    window: MinMax,
}

impl Willr {
    /// New state.
    pub fn new(time_period: i32) -> Result<Self, TaError> {
        Ok(Self {
            window: MinMax::new(check_period("time_period", time_period, 2)?),
        })
    }

    /// Adds one bar.
    #[inline]
    pub fn update(&mut self, high: f64, low: f64, close: f64) -> Option<f64> {
        if !self.window.push(high, low) {
            return None;
        }
        let diff = (self.window.highest - self.window.lowest) / (-100.0);
        Some(if diff != 0.0 {
            (self.window.highest - close) / diff
        } else {
            0.0
        })
    }
}

/// WILLR over a whole series.
/// # Errors [`TaError::InvalidPeriod`], [`TaError::LengthMismatch`], [`TaError::NonFiniteInput`].
#[doc(alias = "WILLR")]
pub fn willr(
    high: &[f64],
    low: &[f64],
    close: &[f64],
    time_period: i32,
) -> Result<Vec<Option<f64>>, TaError> {
    run_hlc(high, low, close, || Willr::new(time_period), Willr::update)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicators::golden as g;
    use crate::indicators::testutil::*;

    #[test]
    fn golden_talib() {
        assert_series_exact(&willr(g::HIGH, g::LOW, g::CLOSE, 14).unwrap(), g::WILLR_14);
        assert_series_exact(&willr(g::HIGH, g::LOW, g::CLOSE, 5).unwrap(), g::WILLR_5);
    }

    #[test]
    fn edge_cases() {
        assert!(willr(&[2.0; 20], &[2.0; 20], &[2.0; 20], 14).unwrap()[13..]
            .iter()
            .all(|v| *v == Some(0.0)));
        for v in willr(g::HIGH, g::LOW, g::CLOSE, 14)
            .unwrap()
            .into_iter()
            .flatten()
        {
            assert!((-100.0..=0.0).contains(&v));
        }
        assert!(matches!(
            willr(&[], &[], &[], 1),
            Err(TaError::InvalidPeriod { .. })
        ));
    }
}
