//! Volume-weighted average price (not in TA-Lib).

use super::{check_finite, check_period, TaError};

/// Sum over the last `n` values with an exact "all zero" test: a running sum, recomputed
/// from the buffer every `n` pushes so subtraction residue cannot accumulate, plus a count
/// of non-zero values in the window (a window of zeros sums to exactly 0).
#[derive(Debug, Clone)]
pub(crate) struct WindowSum {
    buf: Vec<f64>,
    head: usize,
    len: usize,
    sum: f64,
    nonzero: usize,
}

impl WindowSum {
    pub(crate) fn new(n: usize) -> Self {
        Self {
            buf: vec![0.0; n.max(1)],
            head: 0,
            len: 0,
            sum: 0.0,
            nonzero: 0,
        }
    }
    #[inline]
    pub(crate) fn push(&mut self, x: f64) {
        let n = self.buf.len();
        if self.len == n {
            let old = self.buf[self.head];
            self.sum -= old;
            if old != 0.0 {
                self.nonzero -= 1;
            }
        } else {
            self.len += 1;
        }
        self.buf[self.head] = x;
        self.sum += x;
        if x != 0.0 {
            self.nonzero += 1;
        }
        self.head += 1;
        if self.head == n {
            self.head = 0;
            // refresh: oldest to newest
            self.sum = self.buf.iter().take(self.len).sum();
        }
    }
    #[inline]
    pub(crate) fn sum(&self) -> f64 {
        if self.nonzero == 0 {
            0.0
        } else {
            self.sum
        }
    }
    pub(crate) fn is_full(&self) -> bool {
        self.len == self.buf.len()
    }
}

/// Volume-weighted average price, streaming state.
/// # Input       price (e.g. close or typical price) and volume per bar, oldest first.
/// # Output      price units: `Σ(price·volume)/Σvolume` over all bars so far (running) or over
///   the last `time_period` bars (windowed; `None` until `time_period` bars);
///   `None` while `Σvolume` is 0.
/// # Parameters  optional `time_period` in 1..=100_000.
/// # Errors      [`TaError::InvalidPeriod`].
/// # Reference   seed documents (no TA-Lib function); Berkowitz et al., "The Total Cost of
///   Transactions on the NYSE", J. Finance 1988.
#[doc(alias = "VWAP")]
#[derive(Debug, Clone)]
pub struct Vwap {
    window: Option<(WindowSum, WindowSum)>,
    pv: f64,
    v: f64,
}

impl Vwap {
    /// Running VWAP over all bars.
    pub fn running() -> Self {
        Self {
            window: None,
            pv: 0.0,
            v: 0.0,
        }
    }

    /// VWAP over the last `time_period` bars.
    pub fn windowed(time_period: i32) -> Result<Self, TaError> {
        let n = check_period("time_period", time_period, 1)?;
        Ok(Self {
            window: Some((WindowSum::new(n), WindowSum::new(n))),
            pv: 0.0,
            v: 0.0,
        })
    }

    /// Adds one bar.
    #[inline]
    pub fn update(&mut self, price: f64, volume: f64) -> Option<f64> {
        let (pv, v) = match &mut self.window {
            None => {
                self.pv += price * volume;
                self.v += volume;
                (self.pv, self.v)
            }
            Some((spv, sv)) => {
                spv.push(price * volume);
                sv.push(volume);
                if !sv.is_full() {
                    return None;
                }
                (spv.sum(), sv.sum())
            }
        };
        if v == 0.0 {
            None
        } else {
            Some(pv / v)
        }
    }
}

/// Running (`time_period = None`) or windowed VWAP over a whole series.
/// # Errors [`TaError::InvalidPeriod`], [`TaError::LengthMismatch`], [`TaError::NonFiniteInput`].
#[doc(alias = "VWAP")]
pub fn vwap(
    price: &[f64],
    volume: &[f64],
    time_period: Option<i32>,
) -> Result<Vec<Option<f64>>, TaError> {
    super::check_lengths(price.len(), &[("volume", volume.len())])?;
    let mut s = match time_period {
        None => Vwap::running(),
        Some(p) => Vwap::windowed(p)?,
    };
    price
        .iter()
        .zip(volume)
        .map(|(&p, &v)| Ok(s.update(check_finite("price", p)?, check_finite("volume", v)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_checked() {
        // TC1: running: (10*1)/1, (10+40)/3, (10+40+0)/3, ... by hand
        let p = [10.0, 20.0, 30.0, 40.0];
        let v = [1.0, 2.0, 0.0, 1.0];
        assert_eq!(
            vwap(&p, &v, None).unwrap(),
            vec![
                Some(10.0),
                Some(50.0 / 3.0),
                Some(50.0 / 3.0),
                Some(90.0 / 4.0)
            ]
        );
        // TC2: window 2: None, (10+40)/3, (40+0)/2, (0+40)/1
        assert_eq!(
            vwap(&p, &v, Some(2)).unwrap(),
            vec![None, Some(50.0 / 3.0), Some(20.0), Some(40.0)]
        );
        // TC3: zero volume -> NULL (also after non-zero volume left the window)
        assert_eq!(
            vwap(&[1.0, 2.0], &[0.0, 0.0], None).unwrap(),
            vec![None, None]
        );
        let w = vwap(&[1.0, 2.0, 3.0, 4.0], &[0.1, 0.7, 0.0, 0.0], Some(2)).unwrap();
        assert!((w[1].unwrap() - 1.875).abs() < 1e-15);
        assert_eq!((w[0], w[2], w[3]), (None, Some(2.0), None));
        // TC4: extreme prices
        assert!((vwap(&[1e-8, 1e-8], &[5.0, 7.0], None).unwrap()[1].unwrap() - 1e-8).abs() < 1e-23);
        assert_eq!(
            vwap(&[1e8, 1e8], &[5.0, 7.0], Some(2)).unwrap()[1],
            Some(1e8)
        );
        assert!(matches!(
            vwap(&[], &[], Some(0)),
            Err(TaError::InvalidPeriod { .. })
        ));
    }

    #[test]
    fn window_sum_matches_naive() {
        let mut w = WindowSum::new(3);
        let xs = [1e6, 0.1, 0.2, 0.3, 0.0, 0.0, 0.0, 5.0];
        for (i, &x) in xs.iter().enumerate() {
            w.push(x);
            let lo = i.saturating_sub(2);
            let naive: f64 = xs[lo..=i].iter().sum();
            assert!(
                (w.sum() - naive).abs() <= 1e-9 * naive.abs().max(1.0),
                "{i}"
            );
            if i == 6 {
                assert_eq!(w.sum(), 0.0);
            }
        }
    }
}
