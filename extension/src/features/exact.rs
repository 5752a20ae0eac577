//! Exact floating-point sums: Python's `math.fsum`, kept as a running state that values can be
//! added to and removed from.
//!
//! - **State**: the exact sum of every value added (minus every value removed) as a list of
//!   non-overlapping doubles in increasing magnitude (Shewchuk's "expansion"; Hettinger's
//!   `msum` partials). Adding and removing are exact, so the state holds the exact real sum
//!   of the window's values, whatever values entered and left it before.
//! - **Value**: that exact sum correctly rounded to the nearest double (ties to even): the
//!   rounding step of CPython's `math.fsum` (`Modules/mathmodule.c`). A rolling statistic
//!   built on it is a function of the window's contents only: it does not depend on where a
//!   computation started, which is what makes feature rows equal live and offline, and in a
//!   database truncated after their minute.
//! - **Cost**: O(number of partials) per add, 1–4 on market data. The partials live inline
//!   (up to [`INLINE`]; more spill to the heap), so a rolling window's sums sit in its state:
//!   the live path steps 500 instruments' states per close, and a heap pointer per sum would
//!   be a cache miss per sum.
//! - **Reference**: J. R. Shewchuk, "Adaptive Precision Floating-Point Arithmetic and Fast
//!   Robust Geometric Predicates", Discrete & Computational Geometry 18, 1997; R. Hettinger,
//!   ActiveState recipe 393090 (`msum`), as in CPython's `math.fsum`.
//!
//! Values must be finite and their sums must not overflow (callers bound them).

use smallvec::SmallVec;

/// Partials kept inline before spilling to the heap.
pub const INLINE: usize = 6;

/// An exact running sum of doubles (see the module docs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExactSum {
    partials: SmallVec<[f64; INLINE]>,
}

impl ExactSum {
    /// The empty sum (0).
    pub fn new() -> Self {
        ExactSum {
            partials: SmallVec::new(),
        }
    }

    /// Adds `x` exactly (CPython `math_fsum`'s inner loop). Each step is Knuth's branch-free
    /// TwoSum rather than CPython's magnitude swap plus Fast2Sum: both give `hi = fl(x + y)` and
    /// the exact error `lo = x + y - hi`, so the partials are the same bit for bit, without a
    /// data-dependent branch per partial.
    #[inline]
    pub fn add(&mut self, x: f64) {
        let mut x = x;
        let p = &mut self.partials;
        let s = p.as_mut_slice();
        let mut i = 0;
        for j in 0..s.len() {
            let y = s[j];
            let hi = x + y;
            let yv = hi - x;
            let lo = (x - (hi - yv)) + (y - yv);
            if lo != 0.0 {
                s[i] = lo;
                i += 1;
            }
            x = hi;
        }
        p.truncate(i);
        if x != 0.0 {
            p.push(x);
        }
    }

    /// Removes `x` exactly (adds `-x`).
    #[inline]
    pub fn sub(&mut self, x: f64) {
        self.add(-x);
    }

    /// The exact sum rounded to the nearest double, ties to even (CPython `math_fsum`'s final
    /// step, including its half-even correction across partials).
    pub fn value(&self) -> f64 {
        let p = &self.partials;
        let mut n = p.len();
        if n == 0 {
            return 0.0;
        }
        n -= 1;
        let mut hi = p[n];
        let mut lo = 0.0;
        while n > 0 {
            let x = hi;
            n -= 1;
            let y = p[n];
            hi = x + y;
            let yr = hi - x;
            lo = y - yr;
            if lo != 0.0 {
                break;
            }
        }
        if n > 0 && ((lo < 0.0 && p[n - 1] < 0.0) || (lo > 0.0 && p[n - 1] > 0.0)) {
            let y = lo * 2.0;
            let x = hi + y;
            let yr = x - hi;
            if y == yr {
                hi = x;
            }
        }
        hi
    }

    /// Number of partials (for tests and sizing).
    pub fn len(&self) -> usize {
        self.partials.len()
    }

    /// True when the sum is exactly 0.
    pub fn is_empty(&self) -> bool {
        self.partials.is_empty()
    }
}

/// `math.fsum(xs)`: the correctly rounded sum of finite values.
pub fn fsum(xs: impl IntoIterator<Item = f64>) -> f64 {
    let mut s = ExactSum::new();
    for x in xs {
        s.add(x);
    }
    s.value()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic xorshift for test data.
    pub(crate) struct Rng(u64);
    impl Rng {
        pub(crate) fn new(seed: u64) -> Self {
            Rng(seed.max(1))
        }
        pub(crate) fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        /// A double with a random sign, mantissa and an exponent in `-e..=e`.
        pub(crate) fn wild(&mut self, e: i32) -> f64 {
            let m = (self.next() >> 11) as f64 / (1u64 << 53) as f64 + 0.5;
            let ex = (self.next() % (2 * e as u64 + 1)) as i32 - e;
            let s = if self.next() & 1 == 0 { 1.0 } else { -1.0 };
            s * m * 2f64.powi(ex)
        }
    }

    #[test]
    fn known_sums() {
        // TC1: CPython's own test cases for math.fsum (test_math.py testFsum)
        assert_eq!(fsum([]), 0.0);
        assert_eq!(fsum([0.1; 10]), 1.0);
        assert_eq!(
            fsum([1e100, 1.0, -1e100, 1e-100, 1e50, -1.0, -1e50]),
            1e-100
        );
        assert_eq!(
            fsum([2.0f64.powi(53), -0.5, -2.0f64.powi(-54)]),
            2.0f64.powi(53) - 1.0
        );
        assert_eq!(
            fsum([2.0f64.powi(53), 1.0, 2.0f64.powi(-100)]),
            2.0f64.powi(53) + 2.0
        );
        assert_eq!(
            fsum([2.0f64.powi(53) + 10.0, 1.0, 2.0f64.powi(-100)]),
            2.0f64.powi(53) + 12.0
        );
        assert_eq!(
            fsum([2.0f64.powi(53) - 4.0, 0.5, 2.0f64.powi(-54)]),
            2.0f64.powi(53) - 3.0
        );
        assert_eq!(fsum([1e16, 1.0, 1e-16]), 10000000000000002.0);
        assert_eq!(fsum([-1.0, 1.0]), 0.0);
        // the naive sum differs
        assert_ne!([0.1f64; 10].iter().sum::<f64>(), 1.0);
    }

    #[test]
    fn rolling_equals_fresh_whatever_the_history() {
        // TC2: a sliding window over values of wildly different magnitudes: the rolling sum
        // (values added and removed) equals a fresh sum of the window, bit for bit, at every
        // step, and so does a second rolling sum that started half-way
        for (seed, e, w) in [(1u64, 60, 7usize), (7, 20, 60), (42, 300, 13), (9, 2, 1440)] {
            let mut rng = Rng::new(seed);
            let xs: Vec<f64> = (0..4000).map(|_| rng.wild(e)).collect();
            let mut a = ExactSum::new();
            let mut b = ExactSum::new();
            for i in 0..xs.len() {
                a.add(xs[i]);
                if i >= w {
                    a.sub(xs[i - w]);
                }
                if i >= 2000 {
                    b.add(xs[i]);
                    if i >= 2000 + w {
                        b.sub(xs[i - w]);
                    }
                }
                let lo = i.saturating_sub(w - 1);
                let fresh = fsum(xs[lo..=i].iter().copied());
                assert_eq!(a.value().to_bits(), fresh.to_bits(), "seed {seed} i {i}");
                if i >= 2000 + w - 1 {
                    assert_eq!(b.value().to_bits(), fresh.to_bits(), "seed {seed} i {i}");
                }
            }
            assert!(a.len() < 40, "{} partials", a.len());
        }
    }

    #[test]
    fn twosum_partials_equal_cpythons_swap_and_fast2sum() {
        // TC4: the branch-free TwoSum of `add` keeps the very partials of CPython's loop
        // (swap so |x| >= |y|, then Fast2Sum), bit for bit, through adds and removes
        fn cpython_add(p: &mut Vec<f64>, x: f64) {
            let mut x = x;
            let mut i = 0;
            for j in 0..p.len() {
                let mut y = p[j];
                if x.abs() < y.abs() {
                    std::mem::swap(&mut x, &mut y);
                }
                let hi = x + y;
                let lo = y - (hi - x);
                if lo != 0.0 {
                    p[i] = lo;
                    i += 1;
                }
                x = hi;
            }
            p.truncate(i);
            if x != 0.0 {
                p.push(x);
            }
        }
        for (seed, e) in [(3u64, 1), (11, 40), (23, 300)] {
            let mut rng = Rng::new(seed);
            let xs: Vec<f64> = (0..3000).map(|_| rng.wild(e)).collect();
            let (mut a, mut r) = (ExactSum::new(), Vec::new());
            for (i, &x) in xs.iter().enumerate() {
                a.add(x);
                cpython_add(&mut r, x);
                if i >= 30 {
                    a.sub(xs[i - 30]);
                    cpython_add(&mut r, -xs[i - 30]);
                }
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&a.partials), bits(&r), "seed {seed} i {i}");
            }
        }
    }

    #[test]
    fn correctly_rounded_against_integers() {
        // TC3: values m·2^e with m < 2^53 and e in -30..=30: each is k·2^-30 with k < 2^113,
        // so the exact sum of 50 of them fits an i128 and its correctly rounded double is
        // known independently (i128 -> f64 rounds to nearest, ties to even; the scaling by
        // 2^-30 is exact)
        let mut rng = Rng::new(5);
        for _ in 0..5000 {
            let ks: Vec<i128> = (0..50)
                .map(|_| {
                    let m = (rng.next() >> 11) as i128;
                    let e = (rng.next() % 61) as u32;
                    let s = if rng.next() & 1 == 0 { 1 } else { -1 };
                    s * (m << e)
                })
                .collect();
            let xs = ks.iter().map(|&k| k as f64 * 2f64.powi(-30));
            let exact: i128 = ks.iter().sum();
            let want = exact as f64 * 2f64.powi(-30);
            assert_eq!(fsum(xs).to_bits(), want.to_bits());
        }
    }
}
