//! Average directional movement index (TA-Lib: ADX).

use super::trange::true_range;
use super::{check_period, run_hlc, TaError};

/// Average directional index (TA-Lib: ADX), streaming state.
/// # Input       high, low, close per bar, oldest first, price units.
/// # Output      0..=100; `None` for the first `2·time_period−1` bars (27 for 14).
/// # Parameters  `time_period` in 2..=100_000. +DM/−DM and TR are summed over the first
///   N−1 changes, then Wilder-smoothed (`s = s − s/N + x`); DX = 100·|+DI−−DI|/(+DI+−DI);
///   ADX is seeded with the mean of the first N DX values, then
///   `adx = (adx·(N−1) + dx)/N`. A bar whose smoothed TR (or +DI+−DI) is 0 leaves
///   ADX unchanged (and adds nothing to the seed).
/// # Errors      [`TaError::InvalidPeriod`].
/// # Reference   TA-Lib `ta_ADX.c`; Wilder (1978). Difference: TA-Lib's zero tests are
///   `|x| < 1e-14` (`TA_IS_ZERO`), which freezes ADX of instruments priced below
///   ~1e-13; ours are exact.
#[doc(alias = "ADX")]
#[derive(Debug, Clone)]
pub struct Adx {
    n: usize,
    count: usize,
    prev_high: f64,
    prev_low: f64,
    prev_close: f64,
    plus_dm: f64,
    minus_dm: f64,
    tr: f64,
    sum_dx: f64,
    adx: f64,
}

impl Adx {
    /// New state.
    pub fn new(time_period: i32) -> Result<Self, TaError> {
        let n = check_period("time_period", time_period, 2)?;
        Ok(Self {
            n,
            count: 0,
            prev_high: 0.0,
            prev_low: 0.0,
            prev_close: 0.0,
            plus_dm: 0.0,
            minus_dm: 0.0,
            tr: 0.0,
            sum_dx: 0.0,
            adx: 0.0,
        })
    }

    /// DX of the current smoothed sums, `None` when TA-Lib skips the bar.
    #[inline]
    fn dx(&self) -> Option<f64> {
        if self.tr == 0.0 {
            return None;
        }
        let minus_di = 100.0 * (self.minus_dm / self.tr);
        let plus_di = 100.0 * (self.plus_dm / self.tr);
        let sum = minus_di + plus_di;
        if sum == 0.0 {
            return None;
        }
        Some(100.0 * ((minus_di - plus_di).abs() / sum))
    }

    /// Adds one bar.
    #[inline]
    pub fn update(&mut self, high: f64, low: f64, close: f64) -> Option<f64> {
        let n = self.n;
        let bar = self.count;
        if bar < 2 * n {
            self.count += 1;
        }
        if bar == 0 {
            self.prev_high = high;
            self.prev_low = low;
            self.prev_close = close;
            return None;
        }
        let diff_p = high - self.prev_high;
        self.prev_high = high;
        let diff_m = self.prev_low - low;
        self.prev_low = low;
        let nf = n as f64;
        if bar >= n {
            self.minus_dm -= self.minus_dm / nf;
            self.plus_dm -= self.plus_dm / nf;
        }
        if diff_m > 0.0 && diff_p < diff_m {
            self.minus_dm += diff_m;
        } else if diff_p > 0.0 && diff_p > diff_m {
            self.plus_dm += diff_p;
        }
        let tr = true_range(self.prev_high, self.prev_low, self.prev_close);
        self.prev_close = close;
        if bar < n {
            // bars 1..=N-1: plain sums
            self.tr += tr;
            return None;
        }
        self.tr = self.tr - (self.tr / nf) + tr;
        if bar < 2 * n - 1 {
            // bars N..=2N-2: accumulate DX for the seed
            if let Some(dx) = self.dx() {
                self.sum_dx += dx;
            }
            return None;
        }
        if bar == 2 * n - 1 && self.count == 2 * n {
            // bar 2N-1: last DX of the seed, first ADX
            if let Some(dx) = self.dx() {
                self.sum_dx += dx;
            }
            self.adx = self.sum_dx / nf;
            self.count = 2 * n + 1; // seeded
            return Some(self.adx);
        }
        if let Some(dx) = self.dx() {
            self.adx = ((self.adx * (nf - 1.0)) + dx) / nf;
        }
        Some(self.adx)
    }
}

/// ADX over a whole series.
/// # Errors [`TaError::InvalidPeriod`], [`TaError::LengthMismatch`], [`TaError::NonFiniteInput`].
#[doc(alias = "ADX")]
pub fn adx(
    high: &[f64],
    low: &[f64],
    close: &[f64],
    time_period: i32,
) -> Result<Vec<Option<f64>>, TaError> {
    run_hlc(high, low, close, || Adx::new(time_period), Adx::update)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicators::golden as g;
    use crate::indicators::testutil::*;

    #[test]
    fn golden_talib() {
        assert_series_exact(&adx(g::HIGH, g::LOW, g::CLOSE, 14).unwrap(), g::ADX_14);
        assert_series_exact(&adx(g::HIGH, g::LOW, g::CLOSE, 5).unwrap(), g::ADX_5);
        let a = adx(g::HIGH, g::LOW, g::CLOSE, 14).unwrap();
        assert!(a[..27].iter().all(Option::is_none) && a[27].is_some());
    }

    #[test]
    fn edge_cases() {
        // flat bars: TR 0 -> ADX stays 0 (seed of no DX)
        let f = adx(&[1.0; 40], &[1.0; 40], &[1.0; 40], 14).unwrap();
        assert!(f[27..].iter().all(|v| *v == Some(0.0)));
        for v in adx(g::HIGH, g::LOW, g::CLOSE, 14)
            .unwrap()
            .into_iter()
            .flatten()
        {
            assert!((0.0..=100.0).contains(&v));
        }
        let s = 1e-16;
        let (h, l, c): (Vec<f64>, Vec<f64>, Vec<f64>) = (
            g::HIGH.iter().map(|x| x * s).collect(),
            g::LOW.iter().map(|x| x * s).collect(),
            g::CLOSE.iter().map(|x| x * s).collect(),
        );
        assert_series_tol(&adx(&h, &l, &c, 14).unwrap(), g::ADX_14, 1e-9);
    }
}
