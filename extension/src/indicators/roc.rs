//! Rate of change in percent (TA-Lib: ROC).

use super::{check_period, run_series, Ring, TaError};

/// Rate of change (TA-Lib: ROC), streaming state.
/// # Input       one value per bar, oldest first, price units.
/// # Output      percent: `(x / x[t−N] − 1) · 100`; 0 when `x[t−N]` is 0;
///   `None` for the first `time_period` bars.
/// # Parameters  `time_period` in 1..=100_000 (TA-Lib's range; default 10).
/// # Errors      [`TaError::InvalidPeriod`].
/// # Reference   TA-Lib `ta_ROC.c`.
#[doc(alias = "ROC")]
#[derive(Debug, Clone)]
pub struct Roc {
    n: usize,
    count: usize,
    ring: Ring,
}

impl Roc {
    /// New state.
    pub fn new(time_period: i32) -> Result<Self, TaError> {
        let n = check_period("time_period", time_period, 1)?;
        Ok(Self {
            n,
            count: 0,
            ring: Ring::new(n),
        })
    }

    /// Adds one bar.
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        let old = self.ring.push(x);
        if self.count < self.n {
            self.count += 1;
            return None;
        }
        Some(if old != 0.0 {
            ((x / old) - 1.0) * 100.0
        } else {
            0.0
        })
    }
}

/// ROC over a whole series. # Errors [`TaError::InvalidPeriod`], [`TaError::NonFiniteInput`].
#[doc(alias = "ROC")]
pub fn roc(values: &[f64], time_period: i32) -> Result<Vec<Option<f64>>, TaError> {
    run_series(values, Roc::new(time_period)?, Roc::update)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicators::golden as g;
    use crate::indicators::testutil::*;

    #[test]
    fn golden_talib() {
        assert_series_exact(&roc(g::CLOSE, 10).unwrap(), g::ROC_10);
        assert_series_exact(&roc(g::CLOSE, 1).unwrap(), g::ROC_1);
    }

    #[test]
    fn edge_cases() {
        assert_eq!(
            roc(&[100.0, 110.0], 1).unwrap(),
            vec![None, Some(((110.0 / 100.0) - 1.0) * 100.0)]
        );
        assert_eq!(roc(&[0.0, 110.0], 1).unwrap(), vec![None, Some(0.0)]);
        assert!(matches!(roc(&[], 0), Err(TaError::InvalidPeriod { .. })));
    }
}
