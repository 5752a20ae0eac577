//! Test helpers: compare an indicator's output with TA-Lib golden arrays (NaN = no value).

/// NaN for `None`, as TA-Lib writes its lookback.
pub(crate) fn to_nan(v: &[Option<f64>]) -> Vec<f64> {
    v.iter().map(|x| x.unwrap_or(f64::NAN)).collect()
}

/// Same NULL positions; values equal within `rel` relative (absolute `rel` when the
/// expected value is exactly 0).
#[track_caller]
pub(crate) fn assert_series_tol(actual: &[Option<f64>], expected: &[f64], rel: f64) {
    assert_eq!(actual.len(), expected.len(), "length");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        match a {
            None => assert!(e.is_nan(), "bar {i}: got None, expected {e}"),
            Some(a) => {
                assert!(!e.is_nan(), "bar {i}: got {a}, expected no value");
                let tol = rel * a.abs().max(e.abs()).max(if *e == 0.0 { 1.0 } else { 0.0 });
                assert!((a - e).abs() <= tol, "bar {i}: got {a}, expected {e}");
            }
        }
    }
}

/// Within 1e-12 relative.
#[track_caller]
pub(crate) fn assert_series(actual: &[Option<f64>], expected: &[f64]) {
    assert_series_tol(actual, expected, 1e-12);
}

/// Bit for bit.
#[track_caller]
pub(crate) fn assert_series_exact(actual: &[Option<f64>], expected: &[f64]) {
    assert_eq!(actual.len(), expected.len(), "length");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        match a {
            None => assert!(e.is_nan(), "bar {i}: got None, expected {e}"),
            Some(a) => assert!(
                a.to_bits() == e.to_bits(),
                "bar {i}: got {a:?}, expected {e:?}"
            ),
        }
    }
}
