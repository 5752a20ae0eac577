//! Average true range (TA-Lib: ATR).

use super::trange::true_range;
use super::{check_period, run_hlc, TaError};

/// Average true range (TA-Lib: ATR), streaming state.
/// # Input       high, low, close per bar, oldest first, price units.
/// # Output      price units; `None` for the first `time_period` bars (lookback = time_period).
/// # Parameters  `time_period` in 1..=100_000 (TA-Lib's range; 1 gives TRANGE). Seeded with
///   the SMA of the first `time_period` true ranges (bars 1..=N), then Wilder:
///   `atr = (atr·(N−1) + tr)/N`.
/// # Errors      [`TaError::InvalidPeriod`].
/// # Reference   TA-Lib `ta_ATR.c`; Wilder (1978).
#[doc(alias = "ATR")]
#[derive(Debug, Clone)]
pub struct Atr {
    n: usize,
    count: usize,
    prev_close: f64,
    sum: f64,
    atr: f64,
}

impl Atr {
    /// New state.
    pub fn new(time_period: i32) -> Result<Self, TaError> {
        let n = check_period("time_period", time_period, 1)?;
        Ok(Self {
            n,
            count: 0,
            prev_close: 0.0,
            sum: 0.0,
            atr: 0.0,
        })
    }

    /// Adds one bar.
    #[inline]
    pub fn update(&mut self, high: f64, low: f64, close: f64) -> Option<f64> {
        let first = self.count == 0;
        let tr = true_range(high, low, self.prev_close);
        self.prev_close = close;
        if first {
            self.count = 1;
            return None;
        }
        if self.count <= self.n {
            self.count += 1;
            self.sum += tr;
            if self.count <= self.n {
                return None;
            }
            self.atr = self.sum / self.n as f64;
            return Some(self.atr);
        }
        self.atr *= (self.n - 1) as f64;
        self.atr += tr;
        self.atr /= self.n as f64;
        Some(self.atr)
    }
}

/// ATR over a whole series.
/// # Errors [`TaError::InvalidPeriod`], [`TaError::LengthMismatch`], [`TaError::NonFiniteInput`].
#[doc(alias = "ATR")]
pub fn atr(
    high: &[f64],
    low: &[f64],
    close: &[f64],
    time_period: i32,
) -> Result<Vec<Option<f64>>, TaError> {
    run_hlc(high, low, close, || Atr::new(time_period), Atr::update)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicators::golden as g;
    use crate::indicators::testutil::*;

    #[test]
    fn golden_talib() {
        assert_series_exact(&atr(g::HIGH, g::LOW, g::CLOSE, 14).unwrap(), g::ATR_14);
        assert_series_exact(&atr(g::HIGH, g::LOW, g::CLOSE, 5).unwrap(), g::ATR_5);
        // period 1 is TRANGE
        assert_series_exact(&atr(g::HIGH, g::LOW, g::CLOSE, 1).unwrap(), g::TRANGE);
    }

    #[test]
    fn edge_cases() {
        let a = atr(&[2.0; 20], &[1.0; 20], &[1.5; 20], 14).unwrap();
        assert!(a[..14].iter().all(Option::is_none));
        assert!(a[14..].iter().all(|v| *v == Some(1.0)));
        assert!(matches!(
            atr(&[], &[], &[], 0),
            Err(TaError::InvalidPeriod { .. })
        ));
    }
}
