//! Weighted moving average (TA-Lib: WMA).

use super::{check_period, run_series, Ring, TaError};

/// Linearly weighted moving average (TA-Lib: WMA), streaming state.
/// # Input       one value per bar, oldest first, price units.
/// # Output      same units; `None` for the first `time_period-1` bars.
/// # Parameters  `time_period` in 2..=100_000; weights 1..N, newest heaviest,
///   divided by N(N+1)/2.
/// # Errors      [`TaError::InvalidPeriod`].
/// # Reference   TA-Lib `ta_WMA.c` (running weighted sum and running plain sum).
#[doc(alias = "WMA")]
#[derive(Debug, Clone)]
pub struct Wma {
    n: usize,
    count: usize,
    period_sum: f64,
    period_sub: f64,
    trailing_value: f64,
    divider: f64,
    ring: Ring,
}

impl Wma {
    /// New state; `time_period` in 2..=100_000.
    pub fn new(time_period: i32) -> Result<Self, TaError> {
        let n = check_period("time_period", time_period, 2)?;
        Ok(Self {
            n,
            count: 0,
            period_sum: 0.0,
            period_sub: 0.0,
            trailing_value: 0.0,
            divider: ((n * (n + 1)) >> 1) as f64,
            ring: Ring::new(n),
        })
    }

    /// Adds one bar; returns the WMA once `time_period` values have been seen.
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        self.ring.push(x);
        if self.count + 1 < self.n {
            self.count += 1;
            self.period_sub += x;
            self.period_sum += x * self.count as f64;
            return None;
        }
        self.period_sub += x;
        self.period_sub -= self.trailing_value;
        self.period_sum += x * self.n as f64;
        self.trailing_value = self.ring.oldest();
        let out = self.period_sum / self.divider;
        self.period_sum -= self.period_sub;
        Some(out)
    }
}

/// Weighted moving average (TA-Lib: WMA) over a whole series.
/// # Errors [`TaError::InvalidPeriod`], [`TaError::NonFiniteInput`].
#[doc(alias = "WMA")]
pub fn wma(values: &[f64], time_period: i32) -> Result<Vec<Option<f64>>, TaError> {
    run_series(values, Wma::new(time_period)?, Wma::update)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicators::golden as g;
    use crate::indicators::testutil::*;

    #[test]
    fn golden_talib() {
        assert_series_exact(&wma(g::CLOSE, 12).unwrap(), g::WMA_12);
        assert_series_exact(&wma(g::CLOSE, 30).unwrap(), g::WMA_30);
    }

    #[test]
    fn edge_cases() {
        // (1*1 + 2*2 + 3*3)/6 = 14/6
        assert_eq!(wma(&[1.0, 2.0, 3.0], 3).unwrap()[2], Some(14.0 / 6.0));
        assert!(wma(&[], 3).unwrap().is_empty());
        assert!(wma(&[4.0; 20], 5).unwrap()[4..]
            .iter()
            .all(|v| *v == Some(4.0)));
        assert!(matches!(wma(&[1.0], 1), Err(TaError::InvalidPeriod { .. })));
    }
}
