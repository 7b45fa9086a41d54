//! Which events of a chunk a message carries: their positions in the chunk, as sorted disjoint
//! ranges.
//!
//! Position `i` is the chunk's `i`-th event in `events.id` order — the order ingest-api
//! publishes a chunk's events in and the relay loads them in — so a whole-chunk message carries
//! positions `0..n` without saying so. Messages the forwarder derives from a chunk (the events
//! to retry, the events refused and parked) carry only some positions, and say which; the
//! store records outcomes by position (see `interaction_store::Store::record_outcome`), so a
//! retry and a re-drive of the same chunk never mistake each other's events for their own.
//!
//! On the wire a part is a JSON array of `[start, end)` pairs: `[[0,3],[4,10]]`.

use std::ops::Range;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A set of positions within a chunk: sorted, disjoint, non-adjacent, non-empty ranges.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Positions(Vec<Range<u32>>);

impl Positions {
    /// Positions `0..n`: a whole chunk of `n` events.
    pub fn whole(n: u32) -> Self {
        Self::from_ranges(std::iter::once(0..n))
    }

    /// The positions in `ranges`, in any order, overlapping or not.
    pub fn from_ranges(ranges: impl IntoIterator<Item = Range<u32>>) -> Self {
        let mut ranges: Vec<Range<u32>> = ranges.into_iter().filter(|r| !r.is_empty()).collect();
        ranges.sort_by_key(|r| r.start);
        let mut merged: Vec<Range<u32>> = Vec::with_capacity(ranges.len());
        for range in ranges {
            match merged.last_mut() {
                Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
                _ => merged.push(range),
            }
        }
        Self(merged)
    }

    /// The given positions, in any order, repeated or not.
    pub fn from_positions(positions: impl IntoIterator<Item = u32>) -> Self {
        Self::from_ranges(
            positions
                .into_iter()
                .map(|p| p..p.saturating_add(1))
                .collect::<Vec<_>>(),
        )
    }

    /// The ranges, sorted and disjoint.
    pub fn ranges(&self) -> &[Range<u32>] {
        &self.0
    }

    /// How many positions.
    pub fn len(&self) -> usize {
        self.0.iter().map(|r| r.len()).sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `position` is one of them.
    pub fn contains(&self, position: u32) -> bool {
        // The ranges are sorted: the candidate is the last one starting at or before it.
        let after = self.0.partition_point(|r| r.start <= position);
        after > 0 && self.0[after - 1].contains(&position)
    }

    /// Every position, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().flat_map(|r| r.clone())
    }
}

impl Serialize for Positions {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let pairs: Vec<[u32; 2]> = self.0.iter().map(|r| [r.start, r.end]).collect();
        pairs.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Positions {
    /// Reads `[[start, end], …]`, refusing empty, unsorted or overlapping ranges: the events
    /// of a message follow its positions in order, so a part that is not already in order
    /// could only be pairing events with the wrong positions.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let pairs = Vec::<[u32; 2]>::deserialize(deserializer)?;
        let mut ranges: Vec<Range<u32>> = Vec::with_capacity(pairs.len());
        for [start, end] in pairs {
            if start >= end {
                return Err(D::Error::custom(format!(
                    "part range [{start}, {end}) is empty"
                )));
            }
            if ranges.last().is_some_and(|last| start < last.end) {
                return Err(D::Error::custom(format!(
                    "part range [{start}, {end}) is out of order or overlaps the one before"
                )));
            }
            ranges.push(start..end);
        }
        Ok(Self::from_ranges(ranges))
    }
}

#[cfg(test)]
// Lists of position ranges, where one range is as normal as several.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_sorted_merged_and_counted() {
        // ranges given → ranges kept, positions counted
        type Ranges = Vec<Range<u32>>;
        let table: [(Ranges, Ranges, usize); 6] = [
            (vec![], vec![], 0),
            (vec![3..3], vec![], 0),
            (vec![0..10], vec![0..10], 10),
            (vec![5..7, 0..2], vec![0..2, 5..7], 4),
            (vec![0..3, 3..5, 4..6], vec![0..6], 6),
            (vec![8..9, 1..2, 0..1, 9..12], vec![0..2, 8..12], 6),
        ];
        for (input, ranges, len) in table {
            let positions = Positions::from_ranges(input.clone());
            assert_eq!(positions.ranges(), ranges, "{input:?}");
            assert_eq!(positions.len(), len, "{input:?}");
            assert_eq!(positions.iter().count(), len, "{input:?}");
            assert_eq!(positions.is_empty(), len == 0, "{input:?}");
        }
    }

    #[test]
    fn positions_are_collected_into_ranges_and_looked_up() {
        let positions = Positions::from_positions([9, 3, 4, 7, 3, 5]);
        assert_eq!(positions.ranges(), [3..6, 7..8, 9..10]);
        assert_eq!(positions.iter().collect::<Vec<_>>(), [3, 4, 5, 7, 9]);
        let table = [
            (0, false),
            (2, false),
            (3, true),
            (5, true),
            (6, false),
            (7, true),
            (8, false),
            (9, true),
            (10, false),
            (u32::MAX, false),
        ];
        for (position, expected) in table {
            assert_eq!(positions.contains(position), expected, "{position}");
        }
        assert_eq!(Positions::whole(4).ranges(), [0..4]);
        assert!(Positions::whole(0).is_empty());
    }

    #[test]
    fn the_wire_form_is_an_array_of_pairs_and_bad_pairs_are_refused() {
        let positions = Positions::from_ranges([0..3, 4..10]);
        let json = serde_json::to_string(&positions).unwrap();
        assert_eq!(json, "[[0,3],[4,10]]");
        assert_eq!(serde_json::from_str::<Positions>(&json).unwrap(), positions);
        // Adjacent ranges are in order: merged.
        assert_eq!(
            serde_json::from_str::<Positions>("[[0,2],[2,4]]").unwrap(),
            Positions::whole(4)
        );
        for bad in [
            "[[3,3]]",
            "[[4,2]]",
            "[[4,6],[0,2]]",
            "[[0,5],[3,8]]",
            "[[1]]",
            "[1,2]",
        ] {
            assert!(serde_json::from_str::<Positions>(bad).is_err(), "{bad}");
        }
    }
}
