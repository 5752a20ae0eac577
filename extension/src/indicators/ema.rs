//! Exponential moving average (TA-Lib: EMA).

use super::{check_period, run_series, state_count, state_value, TaError};

/// Exponential moving average (TA-Lib: EMA), streaming state.
/// # Input       one value per bar, oldest first, price units.
/// # Output      same units; `None` for the first `time_period-1` bars (lookback).
/// # Parameters  `time_period` in 2..=100_000; `k = 2/(time_period+1)`; seeded with the SMA of
///   the first `time_period` values (summed in order, then divided), then
///   `ema = (x − ema)·k + ema` (TA-Lib default compatibility).
/// # Errors      [`TaError::InvalidPeriod`].
/// # Reference   TA-Lib `ta_EMA.c` (`TA_INT_EMA`).
#[doc(alias = "EMA")]
#[derive(Debug, Clone, PartialEq)]
pub struct Ema {
    n: usize,
    k: f64,
    count: usize,
    sum: f64,
    prev: f64,
}

impl Ema {
    /// New state; `time_period` in 2..=100_000.
    pub fn new(time_period: i32) -> Result<Self, TaError> {
        Ok(Self::with_period(check_period(
            "time_period",
            time_period,
            2,
        )?))
    }

    /// Internal constructor without validation (period >= 1), used by MACD's signal line.
    pub(crate) fn with_period(n: usize) -> Self {
        Self {
            n,
            k: 2.0 / ((n + 1) as f64),
            count: 0,
            sum: 0.0,
            prev: 0.0,
        }
    }

    /// Adds one bar; returns the EMA once `time_period` values have been seen.
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        if self.count < self.n {
            self.sum += x;
            self.count += 1;
            if self.count < self.n {
                return None;
            }
            self.prev = self.sum / self.n as f64;
            return Some(self.prev);
        }
        self.prev = ((x - self.prev) * self.k) + self.prev;
        Some(self.prev)
    }

    /// Serialises the mutable part (count, warm-up sum, current value).
    pub(crate) fn to_state(&self) -> [f64; 3] {
        [self.count as f64, self.sum, self.prev]
    }

    /// Restores what [`Ema::to_state`] wrote: count in `0..=time_period`, finite values.
    pub(crate) fn from_state(n: usize, s: &[f64]) -> Result<Self, TaError> {
        let mut e = Self::with_period(n);
        e.count = state_count(s[0], n)?;
        e.sum = state_value(s[1])?;
        e.prev = state_value(s[2])?;
        Ok(e)
    }

    /// Values seen so far, saturating at `time_period` (seeded).
    pub(crate) fn seen(&self) -> usize {
        self.count
    }

    /// True when the state holds only finite numbers.
    pub(crate) fn is_finite(&self) -> bool {
        self.sum.is_finite() && self.prev.is_finite()
    }
}

/// Exponential moving average (TA-Lib: EMA) over a whole series.
/// # Errors [`TaError::InvalidPeriod`], [`TaError::NonFiniteInput`].
#[doc(alias = "EMA")]
pub fn ema(values: &[f64], time_period: i32) -> Result<Vec<Option<f64>>, TaError> {
    run_series(values, Ema::new(time_period)?, Ema::update)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicators::golden as g;
    use crate::indicators::testutil::*;

    #[test]
    fn golden_talib() {
        // TC1: TA-Lib golden values, bit for bit
        assert_series_exact(&ema(g::CLOSE, 12).unwrap(), g::EMA_12);
        assert_series_exact(&ema(g::CLOSE, 30).unwrap(), g::EMA_30);
        assert_series_exact(&ema(g::CLOSE, 2).unwrap(), g::EMA_2);
    }

    #[test]
    fn edge_cases() {
        // TC2: empty, shorter than the period
        assert!(ema(&[], 3).unwrap().is_empty());
        assert_eq!(ema(&[1.0, 2.0], 3).unwrap(), vec![None, None]);
        // TC3: seed is the SMA of the first N values: (1+2+3)/3 = 2, then (4-2)*0.5+2 = 3
        assert_eq!(
            ema(&[1.0, 2.0, 3.0, 4.0], 3).unwrap(),
            vec![None, None, Some(2.0), Some(3.0)]
        );
        // TC4: constant series stays constant, also at extreme prices
        for p in [1e-8, 1.0, 1e8] {
            assert!(ema(&[p; 50], 12).unwrap()[11..]
                .iter()
                .all(|v| (v.unwrap() - p).abs() <= 1e-15 * p));
        }
        // TC5: errors
        assert!(matches!(
            ema(&[1.0], 1),
            Err(TaError::InvalidPeriod { got: 1, .. })
        ));
        assert!(matches!(
            ema(&[f64::INFINITY], 2),
            Err(TaError::NonFiniteInput { .. })
        ));
    }

    #[test]
    fn state_round_trip() {
        let mut a = Ema::new(5).unwrap();
        for (i, &x) in g::CLOSE.iter().enumerate() {
            let b = Ema::from_state(5, &a.to_state()).unwrap();
            assert_eq!(a, b, "bar {i}");
            a.update(x);
        }
    }
}
