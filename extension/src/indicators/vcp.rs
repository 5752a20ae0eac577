//! VCP score of the seed project's screener (not in TA-Lib).

use super::TaError;

/// VCP over a frame of bars, streaming state.
/// # Input       per bar: price `P` (the close), a weighted average `WA` (the seed uses
///   `(open+close)/2`), high, low.
/// # Output      `(P/WA) · ((P−L) − (H−P)) / (H−L)` with `P`, `WA` of the last bar and
///   `H = max(high)`, `L = min(low)` over the bars seen; 0 when `H = L`;
///   `None` before the first bar or when `WA = 0`. Dimensionless, in −P/WA..=P/WA.
/// # Parameters  none (the frame is chosen by the caller, e.g. one candle).
/// # Errors      none.
/// # Reference   seed project's screener (DESIGN.md, "Seed indicators on the screener row").
#[derive(Debug, Clone, Default)]
pub struct Vcp {
    seen: bool,
    price: f64,
    weighted_average: f64,
    high: f64,
    low: f64,
}

impl Vcp {
    /// New state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one bar.
    #[inline]
    pub fn update(&mut self, price: f64, weighted_average: f64, high: f64, low: f64) {
        if self.seen {
            self.high = self.high.max(high);
            self.low = self.low.min(low);
        } else {
            self.seen = true;
            self.high = high;
            self.low = low;
        }
        self.price = price;
        self.weighted_average = weighted_average;
    }

    /// Current value.
    pub fn value(&self) -> Option<f64> {
        if !self.seen || self.weighted_average == 0.0 {
            return None;
        }
        let (p, h, l) = (self.price, self.high, self.low);
        if h == l {
            return Some(0.0);
        }
        Some((p / self.weighted_average) * ((p - l) - (h - p)) / (h - l))
    }
}

/// VCP of one frame. # Errors [`TaError::LengthMismatch`].
pub fn vcp(
    price: &[f64],
    weighted_average: &[f64],
    high: &[f64],
    low: &[f64],
) -> Result<Option<f64>, TaError> {
    super::check_lengths(
        price.len(),
        &[
            ("weighted_average", weighted_average.len()),
            ("high", high.len()),
            ("low", low.len()),
        ],
    )?;
    let mut s = Vcp::new();
    for i in 0..price.len() {
        s.update(price[i], weighted_average[i], high[i], low[i]);
    }
    Ok(s.value())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_checked() {
        // TC1: one candle o=100 h=110 l=90 c=105: WA=102.5,
        // (105/102.5)*((105-90)-(110-105))/(110-90) = 1.024390.. * 10/20 = 0.512195..
        let v = vcp(&[105.0], &[102.5], &[110.0], &[90.0]).unwrap().unwrap();
        assert!((v - 0.512_195_121_951_219_5).abs() < 1e-15, "{v}");
        // TC2: close at the high -> P/WA, at the low -> -P/WA
        assert_eq!(
            vcp(&[110.0], &[110.0], &[110.0], &[90.0]).unwrap(),
            Some(1.0)
        );
        assert_eq!(
            vcp(&[90.0], &[90.0], &[110.0], &[90.0]).unwrap(),
            Some(-1.0)
        );
        // TC3: H = L -> 0; empty -> None; WA = 0 -> None
        assert_eq!(vcp(&[5.0], &[5.0], &[5.0], &[5.0]).unwrap(), Some(0.0));
        assert_eq!(vcp(&[], &[], &[], &[]).unwrap(), None);
        assert_eq!(vcp(&[1.0], &[0.0], &[2.0], &[0.5]).unwrap(), None);
        // TC4: frame of 3 bars: H=12, L=8, P=11, WA=10 -> 1.1*((3)-(1))/4 = 0.55
        let v = vcp(
            &[9.0, 10.0, 11.0],
            &[9.5, 9.0, 10.0],
            &[10.0, 12.0, 11.5],
            &[8.0, 9.0, 10.0],
        )
        .unwrap()
        .unwrap();
        assert!((v - 0.55).abs() < 1e-15, "{v}");
    }
}
