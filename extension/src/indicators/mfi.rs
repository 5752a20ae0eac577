//! Money flow index (TA-Lib: MFI).

use super::trange::check_hlc;
use super::{check_finite, check_lengths, check_period, TaError};

/// Money flow index (TA-Lib: MFI), streaming state.
/// # Input       high, low, close, volume per bar, oldest first.
/// # Output      0..=100; `None` for the first `time_period` bars (lookback = time_period).
/// # Parameters  `time_period` in 2..=100_000. Typical price `(h+l+c)/3`; its money flow
///   `tp·volume` counts as positive when `tp` rose, negative when it fell,
///   neither when unchanged; `MFI = 100·pos/(pos+neg)` over the last N bars,
///   0 when `pos+neg` is 0 (e.g. zero volume). A side without any non-zero
///   flow in the window counts as exactly 0 (TA-Lib's running sums leave a
///   rounding residue there).
/// # Errors      [`TaError::InvalidPeriod`].
/// # Reference   TA-Lib `ta_MFI.c`; Gene Quong and Avrum Soudack. Difference: TA-Lib returns 0
///   whenever `pos+neg < 1.0` (in price×volume units), which zeroes MFI for
///   cheap instruments or small volumes; we return 0 only when it is exactly 0.
#[doc(alias = "MFI")]
#[derive(Debug, Clone)]
pub struct Mfi {
    n: usize,
    count: usize,
    prev_tp: f64,
    pos_sum: f64,
    neg_sum: f64,
    /// number of non-zero positive / negative flows in the window
    pos_count: usize,
    neg_count: usize,
    /// (positive, negative) money flow per bar, TA-Lib's circular buffer
    flows: Vec<(f64, f64)>,
    idx: usize,
}

impl Mfi {
    /// New state.
    pub fn new(time_period: i32) -> Result<Self, TaError> {
        let n = check_period("time_period", time_period, 2)?;
        Ok(Self {
            n,
            count: 0,
            prev_tp: 0.0,
            pos_sum: 0.0,
            neg_sum: 0.0,
            pos_count: 0,
            neg_count: 0,
            flows: vec![(0.0, 0.0); n],
            idx: 0,
        })
    }

    /// Adds one bar.
    #[inline]
    pub fn update(&mut self, high: f64, low: f64, close: f64, volume: f64) -> Option<f64> {
        let tp = (high + low + close) / 3.0;
        self.count += 1;
        if self.count == 1 {
            self.prev_tp = tp;
            return None;
        }
        let seeded = self.count > self.n + 1;
        if seeded {
            let (p, m) = self.flows[self.idx];
            self.pos_sum -= p;
            self.neg_sum -= m;
            self.pos_count -= usize::from(p != 0.0);
            self.neg_count -= usize::from(m != 0.0);
            self.count = self.n + 2;
        }
        let diff = tp - self.prev_tp;
        self.prev_tp = tp;
        let flow = tp * volume;
        self.flows[self.idx] = if diff < 0.0 {
            self.neg_sum += flow;
            self.neg_count += usize::from(flow != 0.0);
            (0.0, flow)
        } else if diff > 0.0 {
            self.pos_sum += flow;
            self.pos_count += usize::from(flow != 0.0);
            (flow, 0.0)
        } else {
            (0.0, 0.0)
        };
        self.idx += 1;
        if self.idx == self.n {
            self.idx = 0;
        }
        if self.count < self.n + 1 {
            return None;
        }
        // The running sums keep TA-Lib's arithmetic (bit-identical values), but a side with no
        // non-zero flow in the window is exactly 0, not the sums' subtraction residue.
        let pos = if self.pos_count == 0 {
            0.0
        } else {
            self.pos_sum
        };
        let neg = if self.neg_count == 0 {
            0.0
        } else {
            self.neg_sum
        };
        let total = pos + neg;
        Some(if total != 0.0 {
            100.0 * (pos / total)
        } else {
            0.0
        })
    }
}

/// MFI over a whole series.
/// # Errors [`TaError::InvalidPeriod`], [`TaError::LengthMismatch`], [`TaError::NonFiniteInput`].
#[doc(alias = "MFI")]
pub fn mfi(
    high: &[f64],
    low: &[f64],
    close: &[f64],
    volume: &[f64],
    time_period: i32,
) -> Result<Vec<Option<f64>>, TaError> {
    check_lengths(
        high.len(),
        &[
            ("low", low.len()),
            ("close", close.len()),
            ("volume", volume.len()),
        ],
    )?;
    let mut s = Mfi::new(time_period)?;
    (0..high.len())
        .map(|i| {
            let (h, l, c) = check_hlc(high[i], low[i], close[i])?;
            Ok(s.update(h, l, c, check_finite("volume", volume[i])?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicators::golden as g;
    use crate::indicators::testutil::*;

    /// TA-Lib's value, except where its running sums leave a residue on a side that has no
    /// flow in the window: TA-Lib then returns e.g. -2.5e-14 (bar 15 of the golden MFI 5) or
    /// 99.99999999999997, we return exactly 0 or 100.
    fn expected(talib: &[f64]) -> Vec<f64> {
        talib
            .iter()
            .map(|&x| {
                if x.abs() < 1e-9 {
                    0.0
                } else if (x - 100.0).abs() < 1e-9 {
                    100.0
                } else {
                    x
                }
            })
            .collect()
    }

    #[test]
    fn golden_talib() {
        assert_series_exact(
            &mfi(g::HIGH, g::LOW, g::CLOSE, g::VOLUME, 14).unwrap(),
            &expected(g::MFI_14),
        );
        assert_series_exact(
            &mfi(g::HIGH, g::LOW, g::CLOSE, g::VOLUME, 5).unwrap(),
            &expected(g::MFI_5),
        );
        // the documented difference is really there: TA-Lib returns a negative MFI
        assert!(g::MFI_5[15] < 0.0);
    }

    #[test]
    fn edge_cases() {
        // zero volume -> 0, not NaN
        let z = mfi(g::HIGH, g::LOW, g::CLOSE, &vec![0.0; g::HIGH.len()], 14).unwrap();
        assert!(z[14..].iter().all(|v| *v == Some(0.0)));
        // in range
        for v in mfi(g::HIGH, g::LOW, g::CLOSE, g::VOLUME, 14)
            .unwrap()
            .into_iter()
            .flatten()
        {
            assert!((0.0..=100.0).contains(&v));
        }
        // tiny money flow (TA-Lib: 0 below 1.0), ours stays scale invariant
        let s = 1e-8;
        let (h, l, c): (Vec<f64>, Vec<f64>, Vec<f64>) = (
            g::HIGH.iter().map(|x| x * s).collect(),
            g::LOW.iter().map(|x| x * s).collect(),
            g::CLOSE.iter().map(|x| x * s).collect(),
        );
        assert_series_tol(
            &mfi(&h, &l, &c, g::VOLUME, 14).unwrap(),
            &expected(g::MFI_14),
            1e-9,
        );
    }
}
