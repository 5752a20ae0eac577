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
//! - **Cost**: O(1) per add while the window's values fit one 128-bit fixed-point integer:
//!   the sum is kept as `acc · 2^q` (`acc: i128`), each value split into its integer mantissa
//!   and exponent and added exactly; the value is `acc` rounded to a double (Rust's `as f64`:
//!   nearest, ties to even) scaled by `2^q` (exact in the range `q` is kept in). When a value
//!   does not fit (magnitudes more than ~2^70 apart in one window, subnormals, values beyond
//!   2^850), the sum moves, exactly, to Shewchuk's expansion (O(number of partials) per add,
//!   1–4 on market data) and stays there. Both give the correctly rounded exact sum, so the
//!   value does not depend on the mode: fixed-point is only the fast path.
//! - **Reference**: J. R. Shewchuk, "Adaptive Precision Floating-Point Arithmetic and Fast
//!   Robust Geometric Predicates", Discrete & Computational Geometry 18, 1997; R. Hettinger,
//!   ActiveState recipe 393090 (`msum`), as in CPython's `math.fsum`; the fixed-point fast path
//!   is a one-word case of U. Kulisch's long accumulator ("Computer Arithmetic and Validity",
//!   2008).
//!
//! Values must be finite and their sums must not overflow (callers bound them).

use smallvec::SmallVec;

/// Partials kept inline before spilling to the heap.
const INLINE: usize = 6;

/// An exact running sum as Shewchuk's expansion (CPython's `math.fsum` state): the slow path
/// of [`ExactSum`].
#[derive(Debug, Clone, Default, PartialEq)]
struct Expansion {
    partials: SmallVec<[f64; INLINE]>,
}

impl Expansion {
    /// The empty sum (0).
    fn new() -> Self {
        Expansion {
            partials: SmallVec::new(),
        }
    }

    /// Adds `x` exactly (CPython `math_fsum`'s inner loop). Each step is Knuth's branch-free
    /// TwoSum rather than CPython's magnitude swap plus Fast2Sum: both give `hi = fl(x + y)` and
    /// the exact error `lo = x + y - hi`, so the partials are the same bit for bit, without a
    /// data-dependent branch per partial.
    #[inline]
    fn add(&mut self, x: f64) {
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

    /// The exact sum rounded to the nearest double, ties to even (CPython `math_fsum`'s final
    /// step, including its half-even correction across partials).
    fn value(&self) -> f64 {
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
}

/// Lowest and highest `q` of the fixed-point mode: every partial it hands to the expansion
/// (`c · 2^(q + 53k)`, `c < 2^53`) and the rounded value stay normal doubles, so scaling by a
/// power of two is exact.
const Q_MIN: i32 = -960;
const Q_MAX: i32 = 850;
/// Headroom kept in `acc`: both terms of an add below 2^125, so their sum cannot overflow.
const ACC_BITS: u32 = 125;

/// An exact running sum of doubles (see the module docs): `acc · 2^q` while `spill` is None,
/// else the expansion in `spill` (and `acc` = 0).
#[derive(Debug, Clone, Default)]
pub struct ExactSum {
    acc: i128,
    q: i32,
    spill: Option<Box<Expansion>>,
}

/// `x` as `(m, e)` with `x = m · 2^e`, `m` odd (or None for 0, subnormals, Inf and NaN).
#[inline]
fn split(x: f64) -> Option<(i64, i32)> {
    let b = x.to_bits();
    let ef = ((b >> 52) & 0x7ff) as i32;
    if ef == 0 || ef == 0x7ff {
        return None;
    }
    let m = (b & ((1u64 << 52) - 1)) | (1u64 << 52);
    let tz = m.trailing_zeros();
    let m = (m >> tz) as i64;
    Some((if b >> 63 == 1 { -m } else { m }, ef - 1075 + tz as i32))
}

/// `2^k` for `k` in the normal range.
#[inline]
pub(crate) fn pow2(k: i32) -> f64 {
    debug_assert!((-1022..=1023).contains(&k));
    f64::from_bits(((k + 1023) as u64) << 52)
}

/// Bits of `|v|` (0 for 0).
#[inline]
fn bits(v: i128) -> u32 {
    128 - v.unsigned_abs().leading_zeros()
}

impl ExactSum {
    /// The empty sum (0).
    pub fn new() -> Self {
        ExactSum::default()
    }

    /// Adds `x` exactly.
    #[inline]
    pub fn add(&mut self, x: f64) {
        if self.spill.is_none() {
            if x == 0.0 {
                return;
            }
            if let Some((m, e)) = split(x) {
                // fast path: x at or above the scale, within the headroom
                let s = e - self.q;
                if self.acc != 0 && (0..=(ACC_BITS - 53) as i32).contains(&s) {
                    if let Some(a) = self.acc.checked_add((m as i128) << s) {
                        self.acc = a;
                        return;
                    }
                }
                if self.add_rescaled(m, e) {
                    return;
                }
            }
            self.spill_acc();
        }
        if let Some(sp) = self.spill.as_mut() {
            sp.add(x);
        }
    }

    /// The add of `m · 2^e` that needs a new scale: `acc` is first stripped of its trailing
    /// zero bits, then both terms go to the lower of the two scales. False when they would
    /// not fit (the caller spills).
    #[cold]
    fn add_rescaled(&mut self, m: i64, e: i32) -> bool {
        if !(Q_MIN..=Q_MAX).contains(&e) {
            return false;
        }
        if self.acc == 0 {
            self.acc = m as i128;
            self.q = e;
            return true;
        }
        let tz = self.acc.trailing_zeros();
        let (acc, q) = (self.acc >> tz, self.q + tz as i32);
        let qn = q.min(e);
        let (sa, sm) = ((q - qn) as u32, (e - qn) as u32);
        if bits(acc) + sa > ACC_BITS || bits(m as i128) + sm > ACC_BITS {
            return false;
        }
        self.acc = (acc << sa) + ((m as i128) << sm);
        self.q = qn;
        true
    }

    /// Moves the fixed-point sum into an expansion, exactly: `acc = c2·2^106 + c1·2^53 + c0`
    /// with `0 <= c0, c1 < 2^53`, each `c · 2^(q + 53k)` a double.
    #[cold]
    fn spill_acc(&mut self) {
        let mut sp = Box::new(Expansion::new());
        if self.acc != 0 {
            let mask = (1i128 << 53) - 1;
            let (a, q) = (self.acc, self.q);
            for (c, k) in [
                (a & mask, q),
                ((a >> 53) & mask, q + 53),
                (a >> 106, q + 106),
            ] {
                if c != 0 {
                    sp.add(c as f64 * pow2(k));
                }
            }
        }
        self.acc = 0;
        self.spill = Some(sp);
    }

    /// Removes `x` exactly (adds `-x`).
    #[inline]
    pub fn sub(&mut self, x: f64) {
        self.add(-x);
    }

    /// The exact sum rounded to the nearest double, ties to even (CPython `math_fsum`'s
    /// result).
    #[inline]
    pub fn value(&self) -> f64 {
        match &self.spill {
            None if self.acc == 0 => 0.0,
            // |acc| >= 1 and q >= Q_MIN: the scaled value is normal, the scaling exact
            None => (self.acc as f64) * pow2(self.q),
            Some(sp) => sp.value(),
        }
    }

    /// The sum left the fixed-point fast path (for tests).
    pub fn spilled(&self) -> bool {
        self.spill.is_some()
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
            // magnitudes within 2^±20 stay on the fixed-point path; wider ones spill
            assert_eq!(a.spilled(), e > 20, "seed {seed}");
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
            let (mut a, mut r) = (Expansion::new(), Vec::new());
            for (i, &x) in xs.iter().enumerate() {
                a.add(x);
                cpython_add(&mut r, x);
                if i >= 30 {
                    a.add(-xs[i - 30]);
                    cpython_add(&mut r, -xs[i - 30]);
                }
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&a.partials), bits(&r), "seed {seed} i {i}");
            }
        }
    }

    #[test]
    fn fixed_point_equals_the_expansion() {
        // TC5: the fixed-point path and the expansion give the same value, bit for bit, at
        // every step of rolling windows over market-like values, over values that force a new
        // scale (both ways) and a spill mid-stream, and around exact zeros
        let mut rng = Rng::new(77);
        let mut series: Vec<Vec<f64>> = vec![
            // log-return-like values and their squares
            (0..5000).map(|_| rng.wild(12) * 1e-3).collect(),
            (0..5000)
                .map(|_| {
                    let r = rng.wild(12) * 1e-3;
                    r * r
                })
                .collect(),
            // volumes with 5 decimals, prices with 4
            (0..5000)
                .map(|_| (rng.next() % 3_000_000_000) as f64 / 1e5)
                .collect(),
            (0..5000)
                .map(|_| 100.0 + (rng.next() % 20_000) as f64 / 1e4)
                .collect(),
            // a range that widens beyond 2^70 half-way (spill), then calm values again
            (0..5000)
                .map(|i| if i == 2500 { 1e-40 } else { rng.wild(3) })
                .collect(),
            // values that cancel to exact zeros now and then
            (0..5000)
                .map(|i| if i % 7 < 3 { 0.5 } else { -0.5 } * (1 + i % 3) as f64)
                .collect(),
        ];
        series.push((0..5000).map(|_| rng.wild(400)).collect());
        for (k, xs) in series.iter().enumerate() {
            for w in [1usize, 5, 60, 1440] {
                let (mut a, mut b) = (ExactSum::new(), Expansion::new());
                for i in 0..xs.len() {
                    a.add(xs[i]);
                    b.add(xs[i]);
                    if i >= w {
                        a.sub(xs[i - w]);
                        b.add(-xs[i - w]);
                    }
                    assert_eq!(
                        a.value().to_bits(),
                        b.value().to_bits(),
                        "series {k} w {w} i {i}"
                    );
                }
                if k < 4 {
                    assert!(!a.spilled(), "series {k} w {w} left the fast path");
                }
                if k == 4 && w > 1 || k == 6 {
                    assert!(a.spilled(), "series {k} w {w} stayed on the fast path");
                }
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
