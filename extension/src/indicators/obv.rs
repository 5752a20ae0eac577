//! On-balance volume (TA-Lib: OBV).

use super::{check_finite, check_lengths, TaError};

/// On-balance volume (TA-Lib: OBV), streaming state.
/// # Input       close and volume per bar, oldest first.
/// # Output      volume units, cumulative; the first bar's value is its own volume
///   (lookback 0); then `+volume` on an up close, `−volume` on a down close,
///   unchanged on an equal close.
/// # Parameters  none.
/// # Errors      none.
/// # Reference   TA-Lib `ta_OBV.c`; Joseph Granville (1963).
#[doc(alias = "OBV")]
#[derive(Debug, Clone, Default)]
pub struct Obv {
    started: bool,
    prev_close: f64,
    obv: f64,
}

impl Obv {
    /// New state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one bar; always returns a value.
    #[inline]
    pub fn update(&mut self, close: f64, volume: f64) -> Option<f64> {
        if !self.started {
            self.started = true;
            self.obv = volume;
        } else if close > self.prev_close {
            self.obv += volume;
        } else if close < self.prev_close {
            self.obv -= volume;
        }
        self.prev_close = close;
        Some(self.obv)
    }
}

/// OBV over a whole series. # Errors [`TaError::LengthMismatch`], [`TaError::NonFiniteInput`].
#[doc(alias = "OBV")]
pub fn obv(close: &[f64], volume: &[f64]) -> Result<Vec<Option<f64>>, TaError> {
    check_lengths(close.len(), &[("volume", volume.len())])?;
    let mut s = Obv::new();
    close
        .iter()
        .zip(volume)
        .map(|(&c, &v)| Ok(s.update(check_finite("close", c)?, check_finite("volume", v)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicators::golden as g;
    use crate::indicators::testutil::*;

    #[test]
    fn golden_talib() {
        assert_series_exact(&obv(g::CLOSE, g::VOLUME).unwrap(), g::OBV);
    }

    #[test]
    fn edge_cases() {
        assert_eq!(
            obv(&[1.0, 2.0, 2.0, 1.0], &[10.0, 5.0, 7.0, 0.0]).unwrap(),
            vec![Some(10.0), Some(15.0), Some(15.0), Some(15.0)]
        );
    }
}
