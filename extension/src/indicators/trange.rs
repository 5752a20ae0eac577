//! True range (TA-Lib: TRANGE).

use super::{check_finite, run_hlc, TaError};

/// TA-Lib's `TRUE_RANGE` macro: `max(h−l, |h−prev_close|, |l−prev_close|)`, compared in
/// that order.
#[inline]
pub(crate) fn true_range(high: f64, low: f64, prev_close: f64) -> f64 {
    let mut out = high - low;
    let t = (high - prev_close).abs();
    if t > out {
        out = t;
    }
    let t = (low - prev_close).abs();
    if t > out {
        out = t;
    }
    out
}

/// True range (TA-Lib: TRANGE), streaming state.
/// # Input       high, low, close per bar, oldest first, price units.
/// # Output      price units; `None` on the first bar (lookback 1: needs the previous close).
/// # Parameters  none.
/// # Errors      none.
/// # Reference   TA-Lib `ta_TRANGE.c`; Wilder (1978).
#[doc(alias = "TRANGE")]
#[derive(Debug, Clone, Default)]
pub struct TRange {
    prev_close: Option<f64>,
}

impl TRange {
    /// New state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one bar.
    #[inline]
    pub fn update(&mut self, high: f64, low: f64, close: f64) -> Option<f64> {
        let out = self.prev_close.map(|pc| true_range(high, low, pc));
        self.prev_close = Some(close);
        out
    }
}

/// Validates one HLC bar (finite values).
pub(crate) fn check_hlc(high: f64, low: f64, close: f64) -> Result<(f64, f64, f64), TaError> {
    Ok((
        check_finite("high", high)?,
        check_finite("low", low)?,
        check_finite("close", close)?,
    ))
}

/// TRANGE over a whole series. # Errors [`TaError::LengthMismatch`], [`TaError::NonFiniteInput`].
#[doc(alias = "TRANGE")]
pub fn trange(high: &[f64], low: &[f64], close: &[f64]) -> Result<Vec<Option<f64>>, TaError> {
    run_hlc(high, low, close, || Ok(TRange::new()), TRange::update)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicators::golden as g;
    use crate::indicators::testutil::*;

    #[test]
    fn golden_talib() {
        assert_series_exact(&trange(g::HIGH, g::LOW, g::CLOSE).unwrap(), g::TRANGE);
    }

    #[test]
    fn edge_cases() {
        // gap up: |h - prev_close| wins
        assert_eq!(
            trange(&[10.0, 20.0], &[9.0, 19.0], &[9.5, 19.5]).unwrap(),
            vec![None, Some(10.5)]
        );
        assert!(matches!(
            trange(&[1.0], &[], &[1.0]),
            Err(TaError::LengthMismatch { .. })
        ));
        assert!(trange(&[], &[], &[]).unwrap().is_empty());
    }
}
