//! Order-book / taker-flow imbalance (not in TA-Lib).

/// Imbalance over a frame, streaming state.
/// # Input       bid quantity and ask quantity per row (e.g. book sizes, or taker buy vs
///   taker sell volume).
/// # Output      `(Σbid − Σask)/(Σbid + Σask)` in −1..=1 for non-negative inputs; `None` when
///   the denominator is 0.
/// # Parameters  none.
/// # Errors      none.
/// # Reference   seed documents; the usual order-book imbalance ratio.
#[derive(Debug, Clone, Default)]
pub struct Imbalance {
    bid: f64,
    ask: f64,
}

impl Imbalance {
    /// New state.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds one row.
    #[inline]
    pub fn update(&mut self, bid_qty: f64, ask_qty: f64) {
        self.bid += bid_qty;
        self.ask += ask_qty;
    }
    /// Current value.
    pub fn value(&self) -> Option<f64> {
        let d = self.bid + self.ask;
        if d == 0.0 {
            None
        } else {
            Some((self.bid - self.ask) / d)
        }
    }
}

/// Imbalance of one frame.
pub fn imbalance(bid_qty: &[f64], ask_qty: &[f64]) -> Option<f64> {
    let mut s = Imbalance::new();
    for (&b, &a) in bid_qty.iter().zip(ask_qty) {
        s.update(b, a);
    }
    s.value()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_checked() {
        // TC1: (3-1)/(3+1) = 0.5; frame of two rows (3+1, 1+3) -> 0
        assert_eq!(imbalance(&[3.0], &[1.0]), Some(0.5));
        assert_eq!(imbalance(&[3.0, 1.0], &[1.0, 3.0]), Some(0.0));
        // TC2: one-sided -> ±1; empty / zero -> None
        assert_eq!(imbalance(&[2.0], &[0.0]), Some(1.0));
        assert_eq!(imbalance(&[0.0], &[2.0]), Some(-1.0));
        assert_eq!(imbalance(&[0.0], &[0.0]), None);
        assert_eq!(imbalance(&[], &[]), None);
        // TC3: 1e-8 quantities
        assert!((imbalance(&[3e-8], &[1e-8]).unwrap() - 0.5).abs() < 1e-15);
    }
}
