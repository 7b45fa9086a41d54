//! The body of every chunk message: one JSON document, versioned.
//!
//! The version comes first and is checked before anything else, so a forwarder that meets a
//! body from a newer ingest-api reports "unsupported version 2" (and parks it) instead of a
//! confusing field error — and so the format can change without a flag day: deploy readers of
//! version N+1 first, then writers.

use crate::error::EnvelopeError;
use interaction_core::Event;
use serde::{Deserialize, Serialize};

/// The envelope version this build writes and the only one it reads.
pub const ENVELOPE_VERSION: u32 = 1;

/// One chunk of a tenant's accepted events, as carried by one AMQP message.
///
/// JSON, camelCase: `{"version":1,"tenant":"t","chunkId":42,"events":[...]}` where each event
/// is [`interaction_core::Event`]'s own JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// Format version; [`ENVELOPE_VERSION`] for envelopes built by [`Envelope::new`].
    pub version: u32,
    /// The tenant every event belongs to (chunks never mix tenants).
    pub tenant: String,
    /// The outbox row (`chunks.id`) these events were committed with; also the AMQP
    /// `message_id`, which lets the forwarder skip chunks it already forwarded.
    pub chunk_id: i64,
    /// The normalized events, in insertion order.
    pub events: Vec<Event>,
}

/// Just the version, read before the rest so that an unknown version gets a clear error even
/// when the remaining fields changed shape.
#[derive(Deserialize)]
struct VersionProbe {
    version: u32,
}

impl Envelope {
    /// An envelope of the current version.
    pub fn new(tenant: impl Into<String>, chunk_id: i64, events: Vec<Event>) -> Self {
        Self {
            version: ENVELOPE_VERSION,
            tenant: tenant.into(),
            chunk_id,
            events,
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
    /// `version` first ([`EnvelopeError::Malformed`]), then versions other than
    /// [`ENVELOPE_VERSION`] ([`EnvelopeError::UnsupportedVersion`]), then bodies whose other
    /// fields do not fit ([`EnvelopeError::Malformed`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let probe: VersionProbe =
            serde_json::from_slice(bytes).map_err(EnvelopeError::Malformed)?;
        if probe.version != ENVELOPE_VERSION {
            return Err(EnvelopeError::UnsupportedVersion {
                found: probe.version,
                supported: ENVELOPE_VERSION,
            });
        }
        serde_json::from_slice(bytes).map_err(EnvelopeError::Malformed)
    }
}

#[cfg(test)]
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
            assert_eq!(decoded.version, ENVELOPE_VERSION);
        }
    }

    #[test]
    fn the_wire_format_is_camel_case_json_with_the_version_first() {
        let body = Envelope::new("t", 5, vec![]).encode();
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"{"version":1,"tenant":"t","chunkId":5,"events":[]}"#
        );
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
            (br#"{"version":2,"tenant":"t","chunkId":1,"events":[]}"#, 2),
            (br#"{"version":0}"#, 0),
            (br#"{"version":99,"payload":"new shape"}"#, 99),
        ];
        for (body, found) in cases {
            let err = Envelope::decode(body).unwrap_err();
            assert!(
                matches!(err, EnvelopeError::UnsupportedVersion { found: f, supported: 1 } if f == found),
                "{err:?}"
            );
            assert!(
                err.to_string().contains(&format!("version {found}")),
                "{err}"
            );
        }
    }
}
