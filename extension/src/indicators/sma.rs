//! Simple moving average (TA-Lib: SMA).

use super::{check_period, run_series, Ring, TaError};

/// Simple moving average (TA-Lib: SMA), streaming state.
/// # Input       one value per bar, oldest first, price units.
/// # Output      same units; `None` for the first `time_period-1` bars (lookback).
/// # Parameters  `time_period` in 2..=100_000.
/// # Errors      [`TaError::InvalidPeriod`].
/// # Reference   TA-Lib `ta_SMA.c` (`TA_INT_SMA`): a running total, the new value added
///   before the division and the trailing value subtracted after it.
#[doc(alias = "SMA")]
#[derive(Debug, Clone)]
pub struct Sma {
    n: usize,
    count: usize,
    total: f64,
    ring: Ring,
}

impl Sma {
    /// New state; `time_period` in 2..=100_000.
    pub fn new(time_period: i32) -> Result<Self, TaError> {
        Ok(Self::with_period(check_period(
            "time_period",
            time_period,
            2,
        )?))
    }

    /// Internal constructor without validation (period >= 1), used by STOCH's smoothing.
    pub(crate) fn with_period(n: usize) -> Self {
        Self {
            n,
            count: 0,
            total: 0.0,
            ring: Ring::new(n),
        }
    }

    /// Adds one bar; returns the SMA of the last `time_period` values once there are enough.
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        self.ring.push(x);
        self.total += x;
        if self.count + 1 < self.n {
            self.count += 1;
            return None;
        }
        let out = self.total / self.n as f64;
        self.total -= self.ring.oldest();
        Some(out)
    }
}

/// Simple moving average (TA-Lib: SMA) over a whole series.
/// # Input       `values`, oldest first. # Output one entry per input, `None` in the lookback.
/// # Errors      [`TaError::InvalidPeriod`], [`TaError::NonFiniteInput`].
#[doc(alias = "SMA")]
pub fn sma(values: &[f64], time_period: i32) -> Result<Vec<Option<f64>>, TaError> {
    run_series(values, Sma::new(time_period)?, Sma::update)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicators::golden as g;
    use crate::indicators::testutil::*;

    #[test]
    fn golden_talib() {
        // TC1: TA-Lib golden values (see golden.rs for how they were generated)
        assert_series(&sma(g::CLOSE, 12).unwrap(), g::SMA_12);
        assert_series(&sma(g::CLOSE, 30).unwrap(), g::SMA_30);
    }

    #[test]
    fn edge_cases() {
        // TC2: empty input, shorter than the period
        assert!(sma(&[], 5).unwrap().is_empty());
        assert_eq!(sma(&[1.0, 2.0], 5).unwrap(), vec![None, None]);
        // TC3: constant series
        let c = sma(&[7.5; 10], 3).unwrap();
        assert!(c[2..].iter().all(|v| *v == Some(7.5)));
        // TC4: bad parameters and inputs
        assert!(matches!(sma(&[1.0], 1), Err(TaError::InvalidPeriod { .. })));
        assert!(matches!(
            sma(&[1.0], 100_001),
            Err(TaError::InvalidPeriod { .. })
        ));
        assert!(matches!(
            sma(&[f64::NAN], 2),
            Err(TaError::NonFiniteInput { .. })
        ));
        // TC5: extreme prices stay finite and exact for constant input
        assert!(sma(&[1e-8; 5], 2).unwrap()[1..]
            .iter()
            .all(|v| *v == Some(1e-8)));
        assert!(sma(&[1e8; 5], 2).unwrap()[1..]
            .iter()
            .all(|v| *v == Some(1e8)));
    }
}
