//! Double exponential moving average (TA-Lib: DEMA).

use super::ema::Ema;
use super::{check_period, run_series, TaError};

/// Double exponential moving average (TA-Lib: DEMA), streaming state.
/// # Input       one value per bar, oldest first, price units.
/// # Output      `2·EMA − EMA(EMA)`, same units; `None` for the first `2·(time_period−1)` bars.
/// # Parameters  `time_period` in 2..=100_000; both EMAs seeded with an SMA (TA-Lib EMA).
/// # Errors      [`TaError::InvalidPeriod`].
/// # Reference   TA-Lib `ta_DEMA.c`; Patrick Mulloy, TASC 1994.
#[doc(alias = "DEMA")]
#[derive(Debug, Clone)]
pub struct Dema {
    e1: Ema,
    e2: Ema,
}

impl Dema {
    /// New state; `time_period` in 2..=100_000.
    pub fn new(time_period: i32) -> Result<Self, TaError> {
        let n = check_period("time_period", time_period, 2)?;
        Ok(Self {
            e1: Ema::with_period(n),
            e2: Ema::with_period(n),
        })
    }

    /// Adds one bar.
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        let e1 = self.e1.update(x)?;
        let e2 = self.e2.update(e1)?;
        Some((2.0 * e1) - e2)
    }
}

/// DEMA over a whole series. # Errors [`TaError::InvalidPeriod`], [`TaError::NonFiniteInput`].
#[doc(alias = "DEMA")]
pub fn dema(values: &[f64], time_period: i32) -> Result<Vec<Option<f64>>, TaError> {
    run_series(values, Dema::new(time_period)?, Dema::update)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicators::golden as g;
    use crate::indicators::testutil::*;

    #[test]
    fn golden_talib() {
        assert_series_exact(&dema(g::CLOSE, 12).unwrap(), g::DEMA_12);
        assert_series_exact(&dema(g::CLOSE, 5).unwrap(), g::DEMA_5);
        let d = dema(g::CLOSE, 12).unwrap();
        assert!(d[..22].iter().all(Option::is_none) && d[22].is_some());
    }

    #[test]
    fn edge_cases() {
        assert!(dema(&[2.5; 40], 5).unwrap()[8..]
            .iter()
            .all(|v| *v == Some(2.5)));
        assert!(matches!(dema(&[], 1), Err(TaError::InvalidPeriod { .. })));
    }
}
