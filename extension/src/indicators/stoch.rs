//! Stochastic oscillator, slow %K and %D (TA-Lib: STOCH with SMA smoothing).

use super::sma::Sma;
use super::{check_period, run_hlc, TaError};

/// One STOCH output bar, TA-Lib's output names.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StochOutput {
    /// SMA(slowk_period) of the fast %K
    pub slow_k: f64,
    /// SMA(slowd_period) of `slow_k`
    pub slow_d: f64,
}

/// Highest high / lowest low of the last `n` bars, tracked as TA-Lib does (rescan only when
/// the extreme leaves the window). Shared by STOCH and WILLR.
#[derive(Debug, Clone)]
pub(crate) struct MinMax {
    n: usize,
    highs: Vec<f64>,
    lows: Vec<f64>,
    /// bars seen
    today: usize,
    highest_idx: Option<usize>,
    lowest_idx: Option<usize>,
    pub(crate) highest: f64,
    pub(crate) lowest: f64,
}

impl MinMax {
    pub(crate) fn new(n: usize) -> Self {
        Self {
            n,
            highs: vec![0.0; n],
            lows: vec![0.0; n],
            today: 0,
            highest_idx: None,
            lowest_idx: None,
            highest: 0.0,
            lowest: 0.0,
        }
    }

    /// Adds a bar; returns true once the window holds `n` bars.
    #[inline]
    pub(crate) fn push(&mut self, high: f64, low: f64) -> bool {
        let n = self.n;
        let today = self.today;
        self.highs[today % n] = high;
        self.lows[today % n] = low;
        self.today += 1;
        let trailing = (today + 1).saturating_sub(n);
        match self.lowest_idx {
            Some(i) if i >= trailing => {
                if low <= self.lowest {
                    self.lowest_idx = Some(today);
                    self.lowest = low;
                }
            }
            _ => {
                let mut idx = trailing;
                let mut v = self.lows[idx % n];
                for i in trailing + 1..=today {
                    let t = self.lows[i % n];
                    if t < v {
                        idx = i;
                        v = t;
                    }
                }
                self.lowest_idx = Some(idx);
                self.lowest = v;
            }
        }
        match self.highest_idx {
            Some(i) if i >= trailing => {
                if high >= self.highest {
                    self.highest_idx = Some(today);
                    self.highest = high;
                }
            }
            _ => {
                let mut idx = trailing;
                let mut v = self.highs[idx % n];
                for i in trailing + 1..=today {
                    let t = self.highs[i % n];
                    if t > v {
                        idx = i;
                        v = t;
                    }
                }
                self.highest_idx = Some(idx);
                self.highest = v;
            }
        }
        today + 1 >= n
    }
}

/// Stochastic oscillator (TA-Lib: STOCH, slowk/slowd MA type SMA = TA-Lib's default),
/// streaming state.
/// # Input       high, low, close per bar, oldest first, price units.
/// # Output      `slow_k`, `slow_d` in percent (0..=100); `None` for the first
///   `fastk_period−1 + slowk_period−1 + slowd_period−1` bars (8 for 5,3,3).
/// # Parameters  `fastk_period` 1..=100_000, `slowk_period` 1..=100_000, `slowd_period`
///   1..=100_000. Fast %K = `(close − lowest low)/((highest high − lowest low)/100)`
///   over `fastk_period` bars (0 when the range is 0).
/// # Errors      [`TaError::InvalidPeriod`].
/// # Reference   TA-Lib `ta_STOCH.c`; George Lane.
#[doc(alias = "STOCH")]
#[derive(Debug, Clone)]
pub struct Stoch {
    window: MinMax,
    slow_k: Sma,
    slow_d: Sma,
}

impl Stoch {
    /// New state.
    pub fn new(fastk_period: i32, slowk_period: i32, slowd_period: i32) -> Result<Self, TaError> {
        let fk = check_period("fastk_period", fastk_period, 1)?;
        let sk = check_period("slowk_period", slowk_period, 1)?;
        let sd = check_period("slowd_period", slowd_period, 1)?;
        Ok(Self {
            window: MinMax::new(fk),
            slow_k: Sma::with_period(sk),
            slow_d: Sma::with_period(sd),
        })
    }

    /// Adds one bar.
    #[inline]
    pub fn update(&mut self, high: f64, low: f64, close: f64) -> Option<StochOutput> {
        if !self.window.push(high, low) {
            return None;
        }
        let diff = (self.window.highest - self.window.lowest) / 100.0;
        let fast_k = if diff != 0.0 {
            (close - self.window.lowest) / diff
        } else {
            0.0
        };
        let slow_k = self.slow_k.update(fast_k)?;
        let slow_d = self.slow_d.update(slow_k)?;
        Some(StochOutput { slow_k, slow_d })
    }
}

/// STOCH over a whole series.
/// # Errors [`TaError::InvalidPeriod`], [`TaError::LengthMismatch`], [`TaError::NonFiniteInput`].
#[doc(alias = "STOCH")]
pub fn stoch(
    high: &[f64],
    low: &[f64],
    close: &[f64],
    fastk_period: i32,
    slowk_period: i32,
    slowd_period: i32,
) -> Result<Vec<Option<StochOutput>>, TaError> {
    run_hlc(
        high,
        low,
        close,
        || Stoch::new(fastk_period, slowk_period, slowd_period),
        Stoch::update,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicators::golden as g;
    use crate::indicators::testutil::*;

    #[test]
    fn golden_talib() {
        for (p, exp) in [
            ((5, 3, 3), g::STOCH_5_3_3),
            ((14, 3, 5), g::STOCH_14_3_5),
            ((3, 1, 1), g::STOCH_3_1_1),
        ] {
            let s = stoch(g::HIGH, g::LOW, g::CLOSE, p.0, p.1, p.2).unwrap();
            let k: Vec<_> = s.iter().map(|o| o.map(|o| o.slow_k)).collect();
            let d: Vec<_> = s.iter().map(|o| o.map(|o| o.slow_d)).collect();
            assert_series_exact(&k, exp[0]);
            assert_series_exact(&d, exp[1]);
        }
    }

    #[test]
    fn edge_cases() {
        let f = stoch(&[1.0; 20], &[1.0; 20], &[1.0; 20], 5, 3, 3).unwrap();
        assert!(f[..8].iter().all(Option::is_none));
        assert!(f[8..].iter().all(|o| *o
            == Some(StochOutput {
                slow_k: 0.0,
                slow_d: 0.0
            })));
        assert!(matches!(
            stoch(&[], &[], &[], 0, 3, 3),
            Err(TaError::InvalidPeriod {
                name: "fastk_period",
                ..
            })
        ));
    }
}
