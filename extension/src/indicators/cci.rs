//! Commodity channel index (TA-Lib: CCI).

use super::{check_period, run_hlc, Ring, TaError};

/// Commodity channel index (TA-Lib: CCI), streaming state.
/// # Input       high, low, close per bar, oldest first, price units.
/// # Output      dimensionless: `(tp − mean)/(0.015 · mean|tp − mean|)` over the last
///   `time_period` typical prices `tp = (h+l+c)/3`; 0 when either factor is 0;
///   `None` for the first `time_period−1` bars.
/// # Parameters  `time_period` in 2..=100_000. O(time_period) per bar, as TA-Lib (the mean
///   deviation has no running form); sums run over TA-Lib's circular buffer in
///   slot order so results are bit-identical.
/// # Errors      [`TaError::InvalidPeriod`].
/// # Reference   TA-Lib `ta_CCI.c`; Donald Lambert (1980).
#[doc(alias = "CCI")]
#[derive(Debug, Clone)]
pub struct Cci {
    n: usize,
    count: usize,
    ring: Ring,
}

impl Cci {
    /// New state.
    pub fn new(time_period: i32) -> Result<Self, TaError> {
        let n = check_period("time_period", time_period, 2)?;
        Ok(Self {
            n,
            count: 0,
            ring: Ring::new(n),
        })
    }

    /// Adds one bar.
    #[inline]
    pub fn update(&mut self, high: f64, low: f64, close: f64) -> Option<f64> {
        let last = (high + low + close) / 3.0;
        self.ring.push(last);
        if self.count + 1 < self.n {
            self.count += 1;
            return None;
        }
        let nf = self.n as f64;
        let mut avg = 0.0;
        for &v in self.ring.slots() {
            avg += v;
        }
        avg /= nf;
        let mut dev = 0.0;
        for &v in self.ring.slots() {
            dev += (v - avg).abs();
        }
        let t = last - avg;
        Some(if t != 0.0 && dev != 0.0 {
            t / (0.015 * (dev / nf))
        } else {
            0.0
        })
    }
}

/// CCI over a whole series.
/// # Errors [`TaError::InvalidPeriod`], [`TaError::LengthMismatch`], [`TaError::NonFiniteInput`].
#[doc(alias = "CCI")]
pub fn cci(
    high: &[f64],
    low: &[f64],
    close: &[f64],
    time_period: i32,
) -> Result<Vec<Option<f64>>, TaError> {
    run_hlc(high, low, close, || Cci::new(time_period), Cci::update)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicators::golden as g;
    use crate::indicators::testutil::*;

    #[test]
    fn golden_talib() {
        assert_series_exact(&cci(g::HIGH, g::LOW, g::CLOSE, 14).unwrap(), g::CCI_14);
        assert_series_exact(&cci(g::HIGH, g::LOW, g::CLOSE, 20).unwrap(), g::CCI_20);
    }

    #[test]
    fn edge_cases() {
        assert!(cci(&[2.0; 20], &[2.0; 20], &[2.0; 20], 14).unwrap()[13..]
            .iter()
            .all(|v| *v == Some(0.0)));
        assert!(matches!(
            cci(&[], &[], &[], 1),
            Err(TaError::InvalidPeriod { .. })
        ));
    }
}
