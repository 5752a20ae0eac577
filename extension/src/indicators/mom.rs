//! Momentum (TA-Lib: MOM).

use super::{check_period, run_series, Ring, TaError};

/// Momentum (TA-Lib: MOM), streaming state.
/// # Input       one value per bar, oldest first, price units.
/// # Output      `x − x[t−N]`, price units; `None` for the first `time_period` bars.
/// # Parameters  `time_period` in 1..=100_000 (TA-Lib's range; default 10).
/// # Errors      [`TaError::InvalidPeriod`].
/// # Reference   TA-Lib `ta_MOM.c`.
#[doc(alias = "MOM")]
#[derive(Debug, Clone)]
pub struct Mom {
    n: usize,
    count: usize,
    ring: Ring,
}

impl Mom {
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
        Some(x - old)
    }
}

/// MOM over a whole series. # Errors [`TaError::InvalidPeriod`], [`TaError::NonFiniteInput`].
#[doc(alias = "MOM")]
pub fn mom(values: &[f64], time_period: i32) -> Result<Vec<Option<f64>>, TaError> {
    run_series(values, Mom::new(time_period)?, Mom::update)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicators::golden as g;
    use crate::indicators::testutil::*;

    #[test]
    fn golden_talib() {
        assert_series_exact(&mom(g::CLOSE, 10).unwrap(), g::MOM_10);
    }

    #[test]
    fn edge_cases() {
        assert_eq!(
            mom(&[1.0, 4.0, 9.0], 2).unwrap(),
            vec![None, None, Some(8.0)]
        );
        assert!(matches!(mom(&[], 0), Err(TaError::InvalidPeriod { .. })));
    }
}
