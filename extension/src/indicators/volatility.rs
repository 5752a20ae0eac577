//! Volatility: population standard deviation of log returns (not in TA-Lib).

use super::vwap::WindowSum;
use super::{check_finite, check_period, TaError};

/// Rolling volatility, streaming state.
/// # Input       one close per bar, oldest first, must be > 0.
/// # Output      fraction per bar (not annualised, not percent): the population standard
///   deviation of the last `time_period` log returns `ln(c_t/c_{t−1})`; needs
///   `time_period+1` closes, `None` before.
/// # Parameters  `time_period` in 2..=100_000.
/// # Errors      [`TaError::InvalidPeriod`]; a close `<= 0` is [`TaError::InvalidParameter`].
/// # Reference   seed documents; the usual close-to-close estimator (e.g. Hull, *Options,
///   Futures and Other Derivatives*, "Estimating volatility from historical data"),
///   with the population (1/N) normalisation.
#[derive(Debug, Clone)]
pub struct Volatility {
    n: usize,
    prev: Option<f64>,
    sum: WindowSum,
    sum_sq: WindowSum,
}

impl Volatility {
    /// New state.
    pub fn new(time_period: i32) -> Result<Self, TaError> {
        let n = check_period("time_period", time_period, 2)?;
        Ok(Self {
            n,
            prev: None,
            sum: WindowSum::new(n),
            sum_sq: WindowSum::new(n),
        })
    }

    /// Validates a close for this indicator (finite and > 0).
    pub fn check_close(close: f64) -> Result<f64, TaError> {
        let c = check_finite("close", close)?;
        if c > 0.0 {
            Ok(c)
        } else {
            Err(TaError::InvalidParameter {
                name: "close",
                value: format!("{c}"),
                reason: "must be > 0 (log returns)",
            })
        }
    }

    /// Adds one close (> 0, see [`Volatility::check_close`]).
    #[inline]
    pub fn update(&mut self, close: f64) -> Option<f64> {
        let prev = self.prev.replace(close)?;
        let r = (close / prev).ln();
        self.sum.push(r);
        self.sum_sq.push(r * r);
        if !self.sum.is_full() {
            return None;
        }
        let n = self.n as f64;
        let mean = self.sum.sum() / n;
        let var = self.sum_sq.sum() / n - mean * mean;
        Some(if var > 0.0 { var.sqrt() } else { 0.0 })
    }
}

/// Volatility over a whole series. # Errors see [`Volatility`].
pub fn volatility(close: &[f64], time_period: i32) -> Result<Vec<Option<f64>>, TaError> {
    let mut s = Volatility::new(time_period)?;
    close
        .iter()
        .map(|&c| Ok(s.update(Volatility::check_close(c)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_checked() {
        // TC1: closes 100, 110, 99 -> returns ln(1.1), ln(0.9); period 2:
        // mean = (ln1.1+ln0.9)/2, sd = |ln1.1 - ln0.9|/2
        let v = volatility(&[100.0, 110.0, 99.0], 2).unwrap();
        let expected = ((1.1f64).ln() - (0.9f64).ln()).abs() / 2.0;
        assert_eq!(v[..2], [None, None]);
        assert!((v[2].unwrap() - expected).abs() < 1e-15, "{v:?} {expected}");
        // TC2: hand value: ln(1.1)=0.0953101798, ln(0.9)=-0.1053605157 -> sd 0.1003353477
        assert!((v[2].unwrap() - 0.100_335_347_731_075_6).abs() < 1e-12);
        // TC3: constant growth -> 0; flat -> exactly 0 at any price level
        let g: Vec<f64> = (0..20).map(|i| 2f64.powi(i)).collect();
        assert!(volatility(&g, 5).unwrap()[5..]
            .iter()
            .all(|x| *x == Some(0.0)));
        for p in [1e-8, 1e8] {
            assert!(volatility(&[p; 10], 3).unwrap()[3..]
                .iter()
                .all(|x| *x == Some(0.0)));
        }
        // TC4: scale invariance
        let a = volatility(&[1.0, 1.01, 0.99, 1.02], 3).unwrap()[3].unwrap();
        let b = volatility(&[1e-8, 1.01e-8, 0.99e-8, 1.02e-8], 3).unwrap()[3].unwrap();
        assert!((a - b).abs() < 1e-12 * a);
        assert!(matches!(
            volatility(&[1.0, 0.0], 2),
            Err(TaError::InvalidParameter { .. })
        ));
        assert!(matches!(
            volatility(&[], 1),
            Err(TaError::InvalidPeriod { .. })
        ));
    }
}
