//! Fibonacci pivot points of the seed project's screener (not in TA-Lib).

use super::TaError;

/// Fibonacci pivot levels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FibPivots {
    pub r3: f64,
    pub r2: f64,
    pub r1: f64,
    pub pivot: f64,
    pub s1: f64,
    pub s2: f64,
    pub s3: f64,
}

/// Fibonacci pivots over a frame of bars, streaming state.
/// # Input       high, low, close per bar, oldest first, price units.
/// # Output      price units: `pivot = (H+L+C)/3`, `R1/R2/R3 = pivot + {0.382, 0.618, 1.0}·(H−L)`,
///   `S1/S2/S3 = pivot − {0.382, 0.618, 1.0}·(H−L)` with `H = max(high)`,
///   `L = min(low)` over the bars seen and `C` the last close; `None` before the
///   first bar.
/// # Parameters  none (the frame is chosen by the caller, e.g. the last 1440 1m candles).
/// # Errors      none.
/// # Reference   seed project's screener (DESIGN.md); the common "Fibonacci pivot points".
#[derive(Debug, Clone, Default)]
pub struct FibPivotsState {
    seen: bool,
    high: f64,
    low: f64,
    close: f64,
}

impl FibPivotsState {
    /// New state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one bar.
    #[inline]
    pub fn update(&mut self, high: f64, low: f64, close: f64) {
        if self.seen {
            self.high = self.high.max(high);
            self.low = self.low.min(low);
        } else {
            self.seen = true;
            self.high = high;
            self.low = low;
        }
        self.close = close;
    }

    /// Current levels.
    pub fn value(&self) -> Option<FibPivots> {
        if !self.seen {
            return None;
        }
        let (h, l, c) = (self.high, self.low, self.close);
        let pivot = (h + l + c) / 3.0;
        let range = h - l;
        Some(FibPivots {
            r3: pivot + 1.0 * range,
            r2: pivot + 0.618 * range,
            r1: pivot + 0.382 * range,
            pivot,
            s1: pivot - 0.382 * range,
            s2: pivot - 0.618 * range,
            s3: pivot - 1.0 * range,
        })
    }
}

/// Fibonacci pivots of one frame. # Errors [`TaError::LengthMismatch`].
pub fn fib_pivots(high: &[f64], low: &[f64], close: &[f64]) -> Result<Option<FibPivots>, TaError> {
    super::check_lengths(high.len(), &[("low", low.len()), ("close", close.len())])?;
    let mut s = FibPivotsState::new();
    for i in 0..high.len() {
        s.update(high[i], low[i], close[i]);
    }
    Ok(s.value())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_checked() {
        // TC1: H=110 (max), L=90 (min), C=100 (last): pivot 100, range 20
        let f = fib_pivots(&[105.0, 110.0], &[90.0, 95.0], &[99.0, 100.0])
            .unwrap()
            .unwrap();
        assert_eq!(f.pivot, 100.0);
        assert_eq!((f.r1, f.r2, f.r3), (107.64, 112.36, 120.0));
        assert_eq!((f.s1, f.s2, f.s3), (92.36, 87.64, 80.0));
        // TC2: flat frame -> all levels equal the price
        let f = fib_pivots(&[5.0], &[5.0], &[5.0]).unwrap().unwrap();
        assert!([f.r3, f.r2, f.r1, f.pivot, f.s1, f.s2, f.s3]
            .iter()
            .all(|&x| x == 5.0));
        assert_eq!(fib_pivots(&[], &[], &[]).unwrap(), None);
    }
}
