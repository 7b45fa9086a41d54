//! The states of a chunk, as one Rust type rather than strings scattered through the code.
//!
//! ```text
//! pending ──(broker confirmed)──▶ published ──(every event delivered)──────────────▶ forwarded
//!    │                                │
//!    └────────────────────────────────┴──(every event delivered or refused, some refused)──▶ failed
//!                                                       failed ──(re-drive delivers the rest)──▶ forwarded
//! ```
//!
//! A chunk leaves `pending`/`published` only when each of its events has an outcome (see
//! [`crate::Store::record_outcome`]); delivering part of it changes its recorded parts, not its
//! state. `forwarded` is final.

use std::fmt;
use std::str::FromStr;

/// Where a chunk is in the pipeline (`chunks.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChunkState {
    /// Committed; the broker has not confirmed its message yet (the relay re-publishes it).
    Pending,
    /// Confirmed by the broker; not every event has an outcome yet.
    Published,
    /// Every event delivered to Ncanto.
    Forwarded,
    /// Every event has an outcome, and some were refused (recorded in `event_failures` and
    /// parked); a re-drive that delivers them makes the chunk `forwarded`.
    Failed,
}

impl ChunkState {
    /// Every state, in pipeline order.
    pub const ALL: [ChunkState; 4] = [
        ChunkState::Pending,
        ChunkState::Published,
        ChunkState::Forwarded,
        ChunkState::Failed,
    ];

    /// The value stored in `chunks.state`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChunkState::Pending => "pending",
            ChunkState::Published => "published",
            ChunkState::Forwarded => "forwarded",
            ChunkState::Failed => "failed",
        }
    }

    /// Whether every event of the chunk has an outcome (nothing is left for the forwarder).
    pub fn is_finished(self) -> bool {
        matches!(self, ChunkState::Forwarded | ChunkState::Failed)
    }
}

impl fmt::Display for ChunkState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `chunks.state` value that is none of [`ChunkState`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown chunk state {0:?}")]
pub struct UnknownChunkState(pub String);

impl FromStr for ChunkState {
    type Err = UnknownChunkState;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ChunkState::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| UnknownChunkState(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_read_back_from_their_stored_text() {
        let table = [
            ("pending", Ok(ChunkState::Pending)),
            ("published", Ok(ChunkState::Published)),
            ("forwarded", Ok(ChunkState::Forwarded)),
            ("failed", Ok(ChunkState::Failed)),
            ("Forwarded", Err(UnknownChunkState("Forwarded".into()))),
            ("", Err(UnknownChunkState(String::new()))),
        ];
        for (text, expected) in table {
            assert_eq!(text.parse::<ChunkState>(), expected, "{text:?}");
        }
        for state in ChunkState::ALL {
            assert_eq!(state.as_str().parse::<ChunkState>(), Ok(state));
            assert_eq!(state.to_string(), state.as_str());
        }
    }

    #[test]
    fn only_forwarded_and_failed_chunks_are_finished() {
        let finished: Vec<ChunkState> = ChunkState::ALL
            .into_iter()
            .filter(|s| s.is_finished())
            .collect();
        assert_eq!(finished, [ChunkState::Forwarded, ChunkState::Failed]);
    }
}
