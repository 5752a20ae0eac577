//! A set of disjoint inclusive id ranges (`[lo, hi]`), kept merged: the aggTrade ids of a
//! symbol that are known to be missing (an id jump) and not yet received, filled or given up.

use std::collections::BTreeMap;

/// Disjoint, non-adjacent inclusive ranges, ordered by start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    /// start → end (inclusive).
    map: BTreeMap<i64, i64>,
}

impl RangeSet {
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Number of ranges.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Number of ids in all ranges.
    pub fn ids(&self) -> i64 {
        self.map.iter().map(|(lo, hi)| hi - lo + 1).sum()
    }

    /// The range holding `id`, if any.
    pub fn find(&self, id: i64) -> Option<(i64, i64)> {
        self.map
            .range(..=id)
            .next_back()
            .filter(|(_, &hi)| id <= hi)
            .map(|(&lo, &hi)| (lo, hi))
    }

    pub fn contains(&self, id: i64) -> bool {
        self.find(id).is_some()
    }

    /// Adds `[lo, hi]` (merging with overlapping or adjacent ranges).
    pub fn insert(&mut self, lo: i64, hi: i64) {
        if lo > hi {
            return;
        }
        let (mut lo, mut hi) = (lo, hi);
        // a range starting at or before hi + 1 and ending at or after lo - 1 merges
        let touching: Vec<(i64, i64)> = self
            .map
            .range(..=hi.saturating_add(1))
            .rev()
            .take_while(|(_, &h)| h >= lo.saturating_sub(1))
            .map(|(&l, &h)| (l, h))
            .collect();
        for (l, h) in touching {
            self.map.remove(&l);
            lo = lo.min(l);
            hi = hi.max(h);
        }
        self.map.insert(lo, hi);
    }

    /// Removes one id; true when it was in the set.
    pub fn remove(&mut self, id: i64) -> bool {
        let Some((lo, hi)) = self.find(id) else {
            return false;
        };
        self.map.remove(&lo);
        if lo < id {
            self.map.insert(lo, id - 1);
        }
        if id < hi {
            self.map.insert(id + 1, hi);
        }
        true
    }

    /// Removes `[lo, hi]` and returns the parts of it that were in the set, in order.
    pub fn take(&mut self, lo: i64, hi: i64) -> Vec<(i64, i64)> {
        let hits: Vec<(i64, i64)> = self
            .map
            .range(..=hi)
            .rev()
            .take_while(|(_, &h)| h >= lo)
            .map(|(&l, &h)| (l, h))
            .collect();
        let mut out = Vec::new();
        for (l, h) in hits.into_iter().rev() {
            self.map.remove(&l);
            if l < lo {
                self.map.insert(l, lo - 1);
            }
            if h > hi {
                self.map.insert(hi + 1, h);
            }
            out.push((l.max(lo), h.min(hi)));
        }
        out
    }

    /// The parts of `[lo, hi]` in the set, without removing them.
    pub fn within(&self, lo: i64, hi: i64) -> Vec<(i64, i64)> {
        let mut out: Vec<(i64, i64)> = self
            .map
            .range(..=hi)
            .rev()
            .take_while(|(_, &h)| h >= lo)
            .map(|(&l, &h)| (l.max(lo), h.min(hi)))
            .collect();
        out.reverse();
        out
    }

    /// The lowest and highest id in the set.
    pub fn span(&self) -> Option<(i64, i64)> {
        let lo = *self.map.keys().next()?;
        let hi = *self.map.values().next_back()?;
        Some((lo, hi))
    }

    /// Every range, in order.
    pub fn iter(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.map.iter().map(|(&l, &h)| (l, h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_merge_remove_take() {
        let mut s = RangeSet::default();
        s.insert(10, 12);
        s.insert(20, 25);
        s.insert(13, 13); // adjacent: merges into 10..13
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![(10, 13), (20, 25)]);
        s.insert(14, 19); // bridges both
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![(10, 25)]);
        assert!(s.remove(15));
        assert!(!s.remove(15));
        assert!(!s.remove(9));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![(10, 14), (16, 25)]);
        assert_eq!(s.ids(), 15);
        assert_eq!(s.within(12, 17), vec![(12, 14), (16, 17)]);
        assert_eq!(s.take(12, 17), vec![(12, 14), (16, 17)]);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![(10, 11), (18, 25)]);
        assert!(s.remove(10) && s.remove(11));
        assert_eq!(s.span(), Some((18, 25)));
        assert_eq!(s.find(20), Some((18, 25)));
        assert_eq!(s.take(0, 100), vec![(18, 25)]);
        assert!(s.is_empty());
        s.insert(5, 4); // empty range: nothing
        assert!(s.is_empty());
    }
}
