//! A client's sequence set (`1:4,7,9:*`) as sorted, merged, inclusive intervals.
//!
//! A command line may carry thousands of ranges (`1:*,1:*,…` fits 16,000 in 64 KiB),
//! and a mailbox may hold hundreds of thousands of messages: nothing here walks the
//! ranges once per message. Building the intervals sorts and merges them
//! (O(r log r)); membership is a binary search (O(log r)); resolving against the
//! view's sorted UIDs costs O(r log n + result).

use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

/// Sorted, disjoint, non-adjacent inclusive intervals.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Intervals(Vec<(u32, u32)>);

impl Intervals {
    /// The set with `*` standing for `star` (the last sequence number or the highest
    /// UID; RFC 3501 9: `a:*` is the same as `*:a`).
    pub fn new(set: &SequenceSet, star: u32) -> Self {
        let value = |s: &SeqOrUid| match s {
            SeqOrUid::Value(n) => n.get(),
            SeqOrUid::Asterisk => star,
        };
        let mut ranges: Vec<(u32, u32)> = set
            .0
            .as_ref()
            .iter()
            .map(|seq| match seq {
                Sequence::Single(s) => (value(s), value(s)),
                Sequence::Range(a, b) => {
                    let (a, b) = (value(a), value(b));
                    (a.min(b), a.max(b))
                }
            })
            .collect();
        Intervals::merge(&mut ranges);
        Intervals(ranges)
    }

    /// Sorts and merges overlapping or adjacent intervals, in place.
    fn merge(ranges: &mut Vec<(u32, u32)>) {
        ranges.sort_unstable();
        let mut merged = 0usize;
        for i in 0..ranges.len() {
            let (lo, hi) = ranges[i];
            if merged > 0 {
                let last = &mut ranges[merged - 1];
                if lo <= last.1.saturating_add(1) {
                    last.1 = last.1.max(hi);
                    continue;
                }
            }
            ranges[merged] = (lo, hi);
            merged += 1;
        }
        ranges.truncate(merged);
    }

    pub fn as_slice(&self) -> &[(u32, u32)] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The smallest and largest numbers in the set.
    pub fn bounds(&self) -> Option<(u32, u32)> {
        Some((self.0.first()?.0, self.0.last()?.1))
    }

    pub fn contains(&self, n: u32) -> bool {
        // The interval that could hold `n` is the last one starting at or below it.
        let i = self.0.partition_point(|&(lo, _)| lo <= n);
        i > 0 && n <= self.0[i - 1].1
    }

    /// The members of `sorted` (ascending, distinct) that the set contains, in order.
    pub fn select<'a>(&'a self, sorted: &'a [u32]) -> impl Iterator<Item = u32> + 'a {
        self.0.iter().flat_map(move |&(lo, hi)| {
            let start = sorted.partition_point(|&u| u < lo);
            let end = sorted.partition_point(|&u| u <= hi);
            sorted[start..end.max(start)].iter().copied()
        })
    }
}

/// A sequence set kept as the client wrote it (for a search program compiled before the
/// mailbox's size is known), resolved to [`Intervals`] on first use against a `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LazyIntervals {
    set: SequenceSet,
    resolved: std::sync::OnceLock<(u32, Intervals)>,
}

impl LazyIntervals {
    pub fn new(set: SequenceSet) -> Self {
        LazyIntervals {
            set,
            resolved: std::sync::OnceLock::new(),
        }
    }

    /// Whether `n` is in the set, `*` being `star` (the same for every message of one
    /// search, so the intervals are built once).
    pub fn contains(&self, n: u32, star: u32) -> bool {
        let (cached_star, intervals) = self
            .resolved
            .get_or_init(|| (star, Intervals::new(&self.set, star)));
        if *cached_star == star {
            intervals.contains(n)
        } else {
            Intervals::new(&self.set, star).contains(n)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(s: &str) -> SequenceSet {
        SequenceSet::try_from(s).unwrap()
    }

    #[test]
    fn merges_sorts_and_resolves_the_star() {
        type Row = (&'static str, u32, &'static [(u32, u32)]);
        let table: &[Row] = &[
            ("1", 10, &[(1, 1)]),
            ("3:1", 10, &[(1, 3)]),
            ("1:*", 10, &[(1, 10)]),
            ("*", 10, &[(10, 10)]),
            ("15:*", 10, &[(10, 15)]),
            ("1:*,1:*,1:*", 10, &[(1, 10)]),
            ("9,1,5:6,7,2", 10, &[(1, 2), (5, 7), (9, 9)]),
            ("4294967295,1", 3, &[(1, 1), (4294967295, 4294967295)]),
            ("1:4294967295,7", 3, &[(1, 4294967295)]),
        ];
        for (input, star, want) in table {
            assert_eq!(
                Intervals::new(&set(input), *star).as_slice(),
                *want,
                "{input}"
            );
        }
    }

    #[test]
    fn contains_and_select() {
        let i = Intervals::new(&set("2:4,8,10:12"), 100);
        let members: Vec<u32> = (0..15).filter(|n| i.contains(*n)).collect();
        assert_eq!(members, vec![2, 3, 4, 8, 10, 11, 12]);
        let uids = [1, 3, 5, 8, 9, 11, 20];
        assert_eq!(i.select(&uids).collect::<Vec<_>>(), vec![3, 8, 11]);
        assert_eq!(i.bounds(), Some((2, 12)));
        assert!(Intervals::default().select(&uids).next().is_none());
        let lazy = LazyIntervals::new(set("5:*"));
        assert!(lazy.contains(7, 7) && !lazy.contains(4, 7));
        assert!(lazy.contains(3, 3), "another star gives another answer");
    }

    #[test]
    fn sixteen_thousand_ranges_over_a_large_mailbox_are_cheap() {
        let line = vec!["1:*"; 16_000].join(",");
        let uids: Vec<u32> = (1..=200_000).collect();
        let started = std::time::Instant::now();
        let i = Intervals::new(&set(&line), 200_000);
        let n = i.select(&uids).count();
        assert_eq!(n, 200_000);
        // Generous even for a debug build on a loaded machine; the old walk took seconds.
        assert!(started.elapsed() < std::time::Duration::from_millis(500));
    }
}
