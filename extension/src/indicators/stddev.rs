//! Population standard deviation (TA-Lib: STDDEV).

use super::{check_nb_dev, check_period, run_series, variance_is_zero, Ring, TaError};

/// Rolling population standard deviation (TA-Lib: STDDEV), streaming state.
/// # Input       one value per bar, oldest first, price units.
/// # Output      same units, `sqrt(mean(x²) − mean(x)²) · nb_dev` over the last
///   `time_period` bars; `None` for the first `time_period−1` bars.
/// # Parameters  `time_period` in 2..=100_000; `nb_dev` finite, `>= 0` (TA-Lib default 1).
/// # Errors      [`TaError::InvalidPeriod`], [`TaError::InvalidParameter`].
/// # Reference   TA-Lib `ta_STDDEV.c` / `ta_VAR.c` (`TA_INT_VAR`: running sums of x and
///   x², divided by N, the trailing value removed after the division).
///   Difference: the zero clamp, see [`super::variance_is_zero`].
#[doc(alias = "STDDEV")]
#[derive(Debug, Clone)]
pub struct StdDev {
    n: usize,
    nb_dev: f64,
    count: usize,
    total1: f64,
    total2: f64,
    ring: Ring,
}

impl StdDev {
    /// New state.
    pub fn new(time_period: i32, nb_dev: f64) -> Result<Self, TaError> {
        let n = check_period("time_period", time_period, 2)?;
        let nb_dev = check_nb_dev("nb_dev", nb_dev)?;
        Ok(Self {
            n,
            nb_dev,
            count: 0,
            total1: 0.0,
            total2: 0.0,
            ring: Ring::new(n),
        })
    }

    /// Adds one bar.
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        self.ring.push(x);
        self.total1 += x;
        self.total2 += x * x;
        if self.count + 1 < self.n {
            self.count += 1;
            return None;
        }
        let n = self.n as f64;
        let mean1 = self.total1 / n;
        let mean2 = self.total2 / n;
        let t = self.ring.oldest();
        self.total1 -= t;
        self.total2 -= t * t;
        let var = mean2 - mean1 * mean1;
        Some(if variance_is_zero(var, mean2) {
            0.0
        } else {
            var.sqrt() * self.nb_dev
        })
    }
}

/// STDDEV over a whole series.
/// # Errors see [`StdDev::new`], and [`TaError::NonFiniteInput`].
#[doc(alias = "STDDEV")]
pub fn stddev(values: &[f64], time_period: i32, nb_dev: f64) -> Result<Vec<Option<f64>>, TaError> {
    run_series(values, StdDev::new(time_period, nb_dev)?, StdDev::update)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicators::golden as g;
    use crate::indicators::testutil::*;

    #[test]
    fn golden_talib() {
        assert_series_exact(&stddev(g::CLOSE, 20, 1.0).unwrap(), g::STDDEV_20);
        assert_series_exact(&stddev(g::CLOSE, 5, 2.0).unwrap(), g::STDDEV_5_2);
    }

    #[test]
    fn edge_cases() {
        // population stddev of 1,2,3,4 = sqrt(1.25)
        assert_eq!(
            stddev(&[1.0, 2.0, 3.0, 4.0], 4, 1.0).unwrap()[3],
            Some(1.25f64.sqrt())
        );
        // constant series -> exactly 0, at every scale
        for p in [1e-8, 3.0, 1e8] {
            assert!(stddev(&[p; 30], 20, 1.0).unwrap()[19..]
                .iter()
                .all(|v| *v == Some(0.0)));
        }
        // a 1e-8 coin moving 1 %: TA-Lib returns 0 (absolute 1e-14 clamp), we do not
        let tiny: Vec<f64> = g::CLOSE.iter().map(|x| x * 1e-10).collect();
        let s = stddev(&tiny, 20, 1.0).unwrap();
        let base = stddev(g::CLOSE, 20, 1.0).unwrap();
        for (a, b) in s.iter().zip(&base) {
            if let (Some(a), Some(b)) = (a, b) {
                assert!((a / 1e-10 - b).abs() <= 1e-6 * b, "{a} {b}");
            }
        }
        assert!(matches!(
            stddev(&[], 20, -1.0),
            Err(TaError::InvalidParameter { .. })
        ));
        assert!(matches!(
            stddev(&[], 1, 1.0),
            Err(TaError::InvalidPeriod { .. })
        ));
    }
}
