//! The body of every chunk message: one JSON document, versioned.
//!
//! The version comes first and is checked before anything else, so a forwarder that meets a
//! body from a newer ingest-api reports "unsupported version 3" (and parks it) instead of a
//! confusing field error — and so the format can change without a flag day: deploy readers of
//! version N+1 first, then writers.
//!
//! Versions:
//! - **1**: a whole chunk — every event of it, in `events.id` order. What ingest-api and the
//!   relay publish, unchanged since the first release.
//! - **2**: adds `part`, the positions within the chunk of the events carried (see
//!   [`Positions`]). What the forwarder writes when a chunk's events part ways: the events to
//!   retry, the events refused and parked. Only forwarders read those, so ingest-api's output
//!   stays version 1 and needs no deploy order; during a forwarder rollout an old replica
//!   parks a version-2 message it cannot read (with its reason), and `forwarder redrive`
//!   brings it back.
//!
//! A version-1 body reads as the whole chunk: positions `0..events.len()`.

use crate::error::EnvelopeError;
use crate::part::Positions;
use interaction_core::Event;
use serde::de::Error as _;
use serde::{Deserialize, Serialize};

/// The newest envelope version: this build reads it and every older one, and writes it for
/// parts of chunks ([`Envelope::part`]).
pub const ENVELOPE_VERSION: u32 = 2;
/// The version of whole-chunk envelopes ([`Envelope::new`]): no `part` field.
pub const WHOLE_CHUNK_VERSION: u32 = 1;

/// A tenant's accepted events from one chunk (all of them, or a part), as carried by one AMQP
/// message.
///
/// JSON, camelCase: `{"version":1,"tenant":"t","chunkId":42,"events":[...]}` where each event
/// is [`interaction_core::Event`]'s own JSON; a part adds `"part":[[0,3],[5,6]]` (version 2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// Format version: [`WHOLE_CHUNK_VERSION`] for [`Envelope::new`], [`ENVELOPE_VERSION`]
    /// for [`Envelope::part`].
    pub version: u32,
    /// The tenant every event belongs to (chunks never mix tenants).
    pub tenant: String,
    /// The outbox row (`chunks.id`) these events were committed with; also the AMQP
    /// `message_id`.
    pub chunk_id: i64,
    /// The positions in the chunk of `events`, one per event, in order; `None` for the whole
    /// chunk. See [`Envelope::positions`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<Positions>,
    /// The normalized events, in chunk order.
    pub events: Vec<Event>,
}

/// Just the version, read before the rest so that an unknown version gets a clear error even
/// when the remaining fields changed shape.
#[derive(Deserialize)]
struct VersionProbe {
    version: u32,
}

impl Envelope {
    /// An envelope of a whole chunk: `events` are every event of chunk `chunk_id`, in
    /// `events.id` order.
    pub fn new(tenant: impl Into<String>, chunk_id: i64, events: Vec<Event>) -> Self {
        Self {
            version: WHOLE_CHUNK_VERSION,
            tenant: tenant.into(),
            chunk_id,
            part: None,
            events,
        }
    }

    /// An envelope of part of a chunk: `events` are the chunk's events at `part`, in order
    /// (as many events as positions).
    pub fn part(
        tenant: impl Into<String>,
        chunk_id: i64,
        part: Positions,
        events: Vec<Event>,
    ) -> Self {
        debug_assert_eq!(part.len(), events.len(), "one position per event");
        Self {
            version: ENVELOPE_VERSION,
            tenant: tenant.into(),
            chunk_id,
            part: Some(part),
            events,
        }
    }

    /// The positions in the chunk of [`Envelope::events`], in the same order: the part, or
    /// `0..events.len()` for a whole chunk.
    pub fn positions(&self) -> Positions {
        match &self.part {
            Some(part) => part.clone(),
            None => Positions::whole(u32::try_from(self.events.len()).unwrap_or(u32::MAX)),
        }
    }

    /// The JSON body. Infallible in practice (see [`Envelope::try_encode`]); should serde ever
    /// fail, the error is logged and the body is empty, which a reader rejects as malformed.
    pub fn encode(&self) -> Vec<u8> {
        self.try_encode().unwrap_or_else(|e| {
            log::error!("cannot encode envelope of chunk {}: {e}", self.chunk_id);
            Vec::new()
        })
    }

    /// The JSON body, or serde's error. Every field serializes as strings, numbers and
    /// objects with string keys, so this cannot fail for envelopes built from normalized
    /// events; it exists so callers that must not publish an empty body can check.
    pub fn try_encode(&self) -> Result<Vec<u8>, EnvelopeError> {
        serde_json::to_vec(self).map_err(EnvelopeError::Malformed)
    }

    /// Reads a body written by [`Envelope::encode`]. Rejects anything that is not JSON with a
    /// `version` first ([`EnvelopeError::Malformed`]), then versions above
    /// [`ENVELOPE_VERSION`] or below 1 ([`EnvelopeError::UnsupportedVersion`]), then bodies
    /// whose other fields do not fit, including a part that does not hold one position per
    /// event or a version-1 body with a part ([`EnvelopeError::Malformed`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let probe: VersionProbe =
            serde_json::from_slice(bytes).map_err(EnvelopeError::Malformed)?;
        if !(WHOLE_CHUNK_VERSION..=ENVELOPE_VERSION).contains(&probe.version) {
            return Err(EnvelopeError::UnsupportedVersion {
                found: probe.version,
                supported: ENVELOPE_VERSION,
            });
        }
        let envelope: Self = serde_json::from_slice(bytes).map_err(EnvelopeError::Malformed)?;
        let mismatch = match &envelope.part {
            Some(_) if envelope.version == WHOLE_CHUNK_VERSION => {
                Some("a version 1 envelope has no part".to_owned())
            }
            Some(part) if part.len() != envelope.events.len() => Some(format!(
                "the part holds {} positions for {} events",
                part.len(),
                envelope.events.len()
            )),
            _ => None,
        };
        match mismatch {
            Some(reason) => Err(EnvelopeError::Malformed(serde_json::Error::custom(reason))),
            None => Ok(envelope),
        }
    }
}

#[cfg(test)]
// Lists of position ranges, where one range is as normal as several.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    fn event(subscriber: &str, event_id: Option<&str>) -> Event {
        let mut json = serde_json::json!({
            "timestamp": "2025-07-09T10:15:00Z",
            "subscriber": subscriber,
            "assetId": "ep9",
            "interaction": "play",
            "ratingEquivalent": 0.25,
            "comment": "ok",
            "setting": {"device": "web"}
        });
        if let Some(id) = event_id {
            json["eventId"] = id.into();
        }
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn envelopes_survive_an_encode_decode_round_trip() {
        let cases = [
            Envelope::new("t", 0, vec![]),
            Envelope::new("tenant-a", 42, vec![event("u1", None)]),
            Envelope::new(
                "ü-tenant",
                i64::MAX,
                vec![event("u1", Some("e1")), event("u2", None)],
            ),
            Envelope::new("neg", -7, vec![event("u\"quoted\"", Some("e\n2"))]),
        ];
        for envelope in cases {
            let decoded = Envelope::decode(&envelope.encode()).unwrap();
            assert_eq!(decoded, envelope);
            assert_eq!(decoded.version, WHOLE_CHUNK_VERSION);
            assert_eq!(
                decoded.positions().iter().collect::<Vec<_>>(),
                (0..envelope.events.len() as u32).collect::<Vec<_>>(),
                "a whole chunk"
            );
        }
        let parts = [
            Envelope::part(
                "t",
                7,
                Positions::from_positions([3]),
                vec![event("u3", None)],
            ),
            Envelope::part(
                "t",
                7,
                Positions::from_positions([0, 4, 5]),
                vec![
                    event("u0", None),
                    event("u4", Some("e4")),
                    event("u5", None),
                ],
            ),
        ];
        for envelope in parts {
            let decoded = Envelope::decode(&envelope.encode()).unwrap();
            assert_eq!(decoded, envelope);
            assert_eq!(decoded.version, ENVELOPE_VERSION);
            assert_eq!(decoded.positions(), *envelope.part.as_ref().unwrap());
        }
    }

    #[test]
    fn the_wire_format_is_camel_case_json_with_the_version_first() {
        let body = Envelope::new("t", 5, vec![]).encode();
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"{"version":1,"tenant":"t","chunkId":5,"events":[]}"#,
            "whole chunks are written exactly as before parts existed"
        );
        let body = Envelope::part("t", 5, Positions::default(), vec![]).encode();
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"{"version":2,"tenant":"t","chunkId":5,"part":[],"events":[]}"#
        );
    }

    #[test]
    fn a_part_must_hold_one_position_per_event() {
        let one = serde_json::to_string(&event("u", None)).unwrap();
        let table = [
            (
                format!(
                    r#"{{"version":2,"tenant":"t","chunkId":1,"part":[[3,4]],"events":[{one}]}}"#
                ),
                true,
            ),
            (
                format!(r#"{{"version":2,"tenant":"t","chunkId":1,"events":[{one}]}}"#),
                true,
            ),
            (
                format!(
                    r#"{{"version":2,"tenant":"t","chunkId":1,"part":[[3,5]],"events":[{one}]}}"#
                ),
                false,
            ),
            (
                format!(r#"{{"version":2,"tenant":"t","chunkId":1,"part":[],"events":[{one}]}}"#),
                false,
            ),
            (
                format!(
                    r#"{{"version":2,"tenant":"t","chunkId":1,"part":[[4,5],[1,2]],"events":[{one},{one}]}}"#
                ),
                false,
            ),
            (
                format!(
                    r#"{{"version":1,"tenant":"t","chunkId":1,"part":[[0,1]],"events":[{one}]}}"#
                ),
                false,
            ),
        ];
        for (body, ok) in table {
            match Envelope::decode(body.as_bytes()) {
                Ok(envelope) => assert!(ok, "{body}: {envelope:?}"),
                Err(error) => {
                    assert!(!ok, "{body}: {error}");
                    assert!(matches!(error, EnvelopeError::Malformed(_)), "{error:?}");
                }
            }
        }
    }

    #[test]
    fn decode_rejects_garbage_as_malformed() {
        let cases: [&[u8]; 8] = [
            b"",
            b"not json",
            b"[]",
            b"{}",
            br#"{"version":"1","tenant":"t","chunkId":1,"events":[]}"#,
            br#"{"version":1,"tenant":"t","events":[]}"#,
            br#"{"version":1,"tenant":"t","chunkId":1,"events":[{"subscriber":"u"}]}"#,
            b"\xff\xfe",
        ];
        for body in cases {
            let err = Envelope::decode(body).unwrap_err();
            assert!(
                matches!(err, EnvelopeError::Malformed(_)),
                "{:?}: {err}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn decode_rejects_other_versions_with_a_clear_error() {
        let cases: [(&[u8], u32); 3] = [
            (br#"{"version":3,"tenant":"t","chunkId":1,"events":[]}"#, 3),
            (br#"{"version":0}"#, 0),
            (br#"{"version":99,"payload":"new shape"}"#, 99),
        ];
        for (body, found) in cases {
            let err = Envelope::decode(body).unwrap_err();
            assert!(
                matches!(err, EnvelopeError::UnsupportedVersion { found: f, supported: 2 } if f == found),
                "{err:?}"
            );
            assert!(
                err.to_string().contains(&format!("version {found}")),
                "{err}"
            );
        }
    }
}
