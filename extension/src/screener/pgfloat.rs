//! PostgreSQL's `double precision` operators, operation for operation, so the engine's
//! results equal what pg_ta 0.1.0's SQL computed bit for bit, including when SQL raises.
//!
//! - **Semantics**: IEEE 754 binary64 in round-to-nearest, the same single operation as
//!   PostgreSQL's C code, followed by PostgreSQL's checks: an infinite result from finite
//!   operands is an overflow error, a zero result from non-zero operands an underflow error
//!   (`float8pl`, `float8mi`, `float8mul`, `float8div`, `dlog1`, `dsqrt`, `dpow`).
//! - **Comparison**: `greatest`/`least` skip NULL arguments and keep the first of equal
//!   arguments (`ExecEvalMinMax`), ordering with `float8_cmp_internal` (NaN above everything,
//!   -0 = +0).
//! - **Libm**: `ln` is libm's `log` (Rust's `f64::ln`), `pow` is libm's `pow` called through
//!   `extern "C"` with an opaque exponent, so LLVM cannot replace `pow(x, 2)` by `x * x` (not
//!   always the same double as glibc's `pow`). Inside PostgreSQL both resolve to the server's
//!   libm.
//! - **Errors**: [`FloatError`], one variant per PostgreSQL error (the SQL wrapper raises it with
//!   PostgreSQL's SQLSTATE).
//! - **Reference**: PostgreSQL 15 `src/include/utils/float.h` (`float8_pl`, `float8_mi`,
//!   `float8_mul`, `float8_div`), `src/backend/utils/adt/float.c` (`dlog1`, `dsqrt`, `dpow`,
//!   `float8_cmp_internal`), `src/backend/executor/execExprInterp.c` (`ExecEvalMinMax`).

use std::cmp::Ordering;

/// A PostgreSQL float8 error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FloatError {
    /// `value out of range: overflow` (SQLSTATE 22003).
    #[error("value out of range: overflow")]
    Overflow,
    /// `value out of range: underflow` (SQLSTATE 22003).
    #[error("value out of range: underflow")]
    Underflow,
    /// `division by zero` (SQLSTATE 22012).
    #[error("division by zero")]
    DivisionByZero,
    /// `cannot take logarithm of zero` / `of a negative number` (SQLSTATE 2201E).
    #[error("cannot take logarithm of a number <= 0")]
    Logarithm,
    /// `cannot take square root of a negative number` (SQLSTATE 2201F).
    #[error("cannot take square root of a negative number")]
    SquareRoot,
    /// `zero raised to a negative power is undefined` / `a negative number raised to a
    /// non-integer power yields a complex result` (SQLSTATE 2201F).
    #[error("invalid argument for power function")]
    Power,
}

/// Result of one float8 operation.
pub type F8 = Result<f64, FloatError>;

/// `a + b` (`float8pl`).
#[inline]
pub fn add(a: f64, b: f64) -> F8 {
    let r = a + b;
    if r.is_infinite() && !a.is_infinite() && !b.is_infinite() {
        return Err(FloatError::Overflow);
    }
    Ok(r)
}

/// `a - b` (`float8mi`).
#[inline]
pub fn sub(a: f64, b: f64) -> F8 {
    let r = a - b;
    if r.is_infinite() && !a.is_infinite() && !b.is_infinite() {
        return Err(FloatError::Overflow);
    }
    Ok(r)
}

/// `a * b` (`float8mul`).
#[inline]
pub fn mul(a: f64, b: f64) -> F8 {
    let r = a * b;
    if r.is_infinite() && !a.is_infinite() && !b.is_infinite() {
        return Err(FloatError::Overflow);
    }
    if r == 0.0 && a != 0.0 && b != 0.0 {
        return Err(FloatError::Underflow);
    }
    Ok(r)
}

/// `a / b` (`float8div`).
#[inline]
pub fn div(a: f64, b: f64) -> F8 {
    if b == 0.0 && !a.is_nan() {
        return Err(FloatError::DivisionByZero);
    }
    let r = a / b;
    if r.is_infinite() && !a.is_infinite() {
        return Err(FloatError::Overflow);
    }
    if r == 0.0 && a != 0.0 && !b.is_infinite() {
        return Err(FloatError::Underflow);
    }
    Ok(r)
}

/// `ln(a)` (`dlog1`).
#[inline]
pub fn ln(a: f64) -> F8 {
    if a.is_nan() {
        return Ok(a);
    }
    if a <= 0.0 {
        return Err(FloatError::Logarithm);
    }
    let r = a.ln();
    if r.is_infinite() && !a.is_infinite() {
        return Err(FloatError::Overflow);
    }
    if r == 0.0 && a != 1.0 {
        return Err(FloatError::Underflow);
    }
    Ok(r)
}

/// `sqrt(a)` (`dsqrt`).
#[inline]
pub fn sqrt(a: f64) -> F8 {
    if a < 0.0 {
        return Err(FloatError::SquareRoot);
    }
    let r = a.sqrt();
    if r.is_infinite() && !a.is_infinite() {
        return Err(FloatError::Overflow);
    }
    if r == 0.0 && a != 0.0 {
        return Err(FloatError::Underflow);
    }
    Ok(r)
}

unsafe extern "C" {
    /// libm's `pow` (the symbol PostgreSQL's `dpow` calls).
    #[link_name = "pow"]
    fn libm_pow(x: f64, y: f64) -> f64;
}

/// `x ^ y` (`dpow`): PostgreSQL's explicit NaN, infinity and domain cases, then libm's `pow`.
/// glibc sets `errno = ERANGE` only for results that overflow to infinity or underflow to
/// zero, which the result checks below reproduce without reading `errno`.
pub fn pow(x: f64, y: f64) -> F8 {
    if x.is_nan() {
        return Ok(if y.is_nan() || y != 0.0 {
            f64::NAN
        } else {
            1.0
        });
    }
    if y.is_nan() {
        return Ok(if x != 1.0 { f64::NAN } else { 1.0 });
    }
    if x == 0.0 && y < 0.0 {
        return Err(FloatError::Power);
    }
    if x < 0.0 && y.floor() != y {
        return Err(FloatError::Power);
    }
    if y.is_infinite() {
        let ax = x.abs();
        return Ok(if ax == 1.0 {
            1.0
        } else if y > 0.0 {
            if ax > 1.0 {
                y
            } else {
                0.0
            }
        } else if ax > 1.0 {
            0.0
        } else {
            -y
        });
    }
    if x.is_infinite() {
        if y == 0.0 {
            return Ok(1.0);
        }
        if x > 0.0 {
            return Ok(if y > 0.0 { x } else { 0.0 });
        }
        let half = y / 2.0;
        let odd = half.floor() != half;
        return Ok(if y > 0.0 {
            if odd {
                x
            } else {
                -x
            }
        } else if odd {
            -0.0
        } else {
            0.0
        });
    }
    // SAFETY: libm's pow is a pure function of two doubles. black_box keeps the exponent
    // opaque so the call is not folded into a multiplication.
    let r = unsafe { libm_pow(x, std::hint::black_box(y)) };
    if r.is_nan() {
        // unreachable after the domain checks except for old glibc bugs (dpow's fallback)
        if x == 0.0 {
            return Ok(0.0);
        }
        let ax = x.abs();
        if ax == 1.0 {
            return Ok(1.0);
        }
        let overflow = if y >= 0.0 { ax > 1.0 } else { ax < 1.0 };
        return Err(if overflow {
            FloatError::Overflow
        } else {
            FloatError::Underflow
        });
    }
    if r.is_infinite() {
        return Err(FloatError::Overflow);
    }
    if r == 0.0 && x != 0.0 {
        return Err(FloatError::Underflow);
    }
    Ok(r)
}

/// `nullif(a, 0)`.
#[inline]
pub fn nullif_zero(a: f64) -> Option<f64> {
    if a == 0.0 {
        None
    } else {
        Some(a)
    }
}

/// `float8_cmp_internal`: NaN sorts above every other value and equals NaN; -0 = +0.
#[inline]
pub fn cmp(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

/// `greatest(...)` / `least(...)` over values of any type with the given order: NULL
/// arguments are skipped; an argument replaces the running result only when strictly
/// greater (least: smaller), so the first of equal arguments is returned.
#[inline]
pub fn min_max<T>(
    args: impl IntoIterator<Item = Option<T>>,
    greatest: bool,
    cmp: impl Fn(&T, &T) -> Ordering,
) -> Option<T> {
    let mut out: Option<T> = None;
    for v in args.into_iter().flatten() {
        out = Some(match out {
            None => v,
            Some(r) => {
                let c = cmp(&r, &v);
                if (greatest && c == Ordering::Less) || (!greatest && c == Ordering::Greater) {
                    v
                } else {
                    r
                }
            }
        });
    }
    out
}

/// `greatest(...)` of float8 arguments.
#[inline]
pub fn greatest(args: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    min_max(args, true, |a, b| cmp(*a, *b))
}

/// `least(...)` of float8 arguments.
#[inline]
pub fn least(args: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    min_max(args, false, |a, b| cmp(*a, *b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_checks_like_postgresql() {
        // TC1: overflow from finite operands; infinite operands pass through
        assert_eq!(add(1e308, 1e308), Err(FloatError::Overflow));
        assert_eq!(sub(-1e308, 1e308), Err(FloatError::Overflow));
        assert_eq!(mul(1e200, 1e200), Err(FloatError::Overflow));
        assert_eq!(div(1e300, 1e-10), Err(FloatError::Overflow));
        assert_eq!(add(f64::INFINITY, 1.0), Ok(f64::INFINITY));
        // TC2: underflow to zero from non-zero operands; subnormal results are fine
        assert_eq!(mul(1e-200, 1e-200), Err(FloatError::Underflow));
        assert_eq!(div(1e-300, 1e300), Err(FloatError::Underflow));
        assert_eq!(mul(1e-160, 1e-160), Ok(1e-160 * 1e-160));
        assert_eq!(mul(0.0, 1e-300), Ok(0.0));
        assert_eq!(div(0.0, 5.0), Ok(0.0));
        // TC3: division by zero, logarithm and square root domains
        assert_eq!(div(1.0, 0.0), Err(FloatError::DivisionByZero));
        assert_eq!(div(1.0, -0.0), Err(FloatError::DivisionByZero));
        assert_eq!(ln(0.0), Err(FloatError::Logarithm));
        assert_eq!(ln(-1.0), Err(FloatError::Logarithm));
        assert_eq!(ln(1.0), Ok(0.0));
        assert_eq!(ln(std::f64::consts::E), Ok(1.0));
        assert_eq!(sqrt(-1e-300), Err(FloatError::SquareRoot));
        assert_eq!(sqrt(-0.0).map(f64::to_bits), Ok((-0.0f64).to_bits()));
        assert_eq!(sqrt(16.0), Ok(4.0));
    }

    #[test]
    fn pow_follows_dpow() {
        // TC4: PostgreSQL's special cases
        assert!(pow(f64::NAN, 2.0).unwrap().is_nan());
        assert_eq!(pow(f64::NAN, 0.0), Ok(1.0));
        assert_eq!(pow(1.0, f64::NAN), Ok(1.0));
        assert_eq!(pow(0.0, -1.0), Err(FloatError::Power));
        assert_eq!(pow(-8.0, 1.0 / 3.0), Err(FloatError::Power));
        assert_eq!(pow(0.5, f64::INFINITY), Ok(0.0));
        assert_eq!(pow(-2.0, f64::INFINITY), Ok(f64::INFINITY));
        assert_eq!(pow(f64::NEG_INFINITY, 3.0), Ok(f64::NEG_INFINITY));
        assert_eq!(
            pow(f64::NEG_INFINITY, -3.0).map(f64::to_bits),
            Ok((-0.0f64).to_bits())
        );
        assert_eq!(pow(1e200, 2.0), Err(FloatError::Overflow));
        assert_eq!(pow(1e-200, 2.0), Err(FloatError::Underflow));
        assert_eq!(pow(0.0, 2.0), Ok(0.0));
        // TC5: squares are libm's pow, computed at run time
        for x in [0.1, -0.3, 1.000_000_1, 12345.678, 3e-12] {
            assert_eq!(
                pow(x, 2.0),
                Ok(unsafe { libm_pow(x, std::hint::black_box(2.0)) })
            );
        }
    }

    #[test]
    fn greatest_and_least_skip_null_and_keep_the_first_tie() {
        // TC6: NULL skipped; all NULL gives NULL; NaN is the greatest; ties keep the first
        assert_eq!(greatest([None, Some(1.0), None, Some(3.0)]), Some(3.0));
        assert_eq!(least([None, Some(1.0), Some(-2.0)]), Some(-2.0));
        assert_eq!(greatest([None, None]), None);
        assert!(greatest([Some(1.0), Some(f64::NAN)]).unwrap().is_nan());
        assert_eq!(least([Some(1.0), Some(f64::NAN)]), Some(1.0));
        let g = greatest([Some(-0.0), Some(0.0)]).unwrap();
        assert_eq!(g.to_bits(), (-0.0f64).to_bits());
        let l = least([Some(0.0), Some(-0.0)]).unwrap();
        assert_eq!(l.to_bits(), 0.0f64.to_bits());
        // any order: the first of equal values by the comparison
        let firsts = min_max([Some((1, 'a')), Some((1, 'b'))], false, |x, y| {
            x.0.cmp(&y.0)
        });
        assert_eq!(firsts, Some((1, 'a')));
        assert_eq!(nullif_zero(-0.0), None);
        assert_eq!(nullif_zero(2.0), Some(2.0));
    }
}
