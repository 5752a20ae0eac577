//! Triple exponential moving average (TA-Lib: TEMA).

use super::ema::Ema;
use super::{check_period, run_series, TaError};

/// Triple exponential moving average (TA-Lib: TEMA), streaming state.
/// # Input       one value per bar, oldest first, price units.
/// # Output      `EMA3 + (3·EMA1 − 3·EMA2)` (TA-Lib's evaluation order), same units;
///   `None` for the first `3·(time_period−1)` bars.
/// # Parameters  `time_period` in 2..=100_000.
/// # Errors      [`TaError::InvalidPeriod`].
/// # Reference   TA-Lib `ta_TEMA.c`; Patrick Mulloy, TASC 1994.
#[doc(alias = "TEMA")]
#[derive(Debug, Clone)]
pub struct Tema {
    e1: Ema,
    e2: Ema,
    e3: Ema,
}

impl Tema {
    /// New state; `time_period` in 2..=100_000.
    pub fn new(time_period: i32) -> Result<Self, TaError> {
        let n = check_period("time_period", time_period, 2)?;
        Ok(Self {
            e1: Ema::with_period(n),
            e2: Ema::with_period(n),
            e3: Ema::with_period(n),
        })
    }

    /// Adds one bar.
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        let e1 = self.e1.update(x)?;
        let e2 = self.e2.update(e1)?;
        let e3 = self.e3.update(e2)?;
        Some(e3 + ((3.0 * e1) - (3.0 * e2)))
    }
}

/// TEMA over a whole series. # Errors [`TaError::InvalidPeriod`], [`TaError::NonFiniteInput`].
#[doc(alias = "TEMA")]
pub fn tema(values: &[f64], time_period: i32) -> Result<Vec<Option<f64>>, TaError> {
    run_series(values, Tema::new(time_period)?, Tema::update)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicators::golden as g;
    use crate::indicators::testutil::*;

    #[test]
    fn golden_talib() {
        assert_series_exact(&tema(g::CLOSE, 12).unwrap(), g::TEMA_12);
        assert_series_exact(&tema(g::CLOSE, 5).unwrap(), g::TEMA_5);
    }

    #[test]
    fn edge_cases() {
        assert!(tema(&[2.5; 40], 5).unwrap()[12..]
            .iter()
            .all(|v| *v == Some(2.5)));
        assert!(tema(&[2.5; 12], 5).unwrap().iter().all(Option::is_none));
        assert!(matches!(
            tema(&[], 100_001),
            Err(TaError::InvalidPeriod { .. })
        ));
    }
}
