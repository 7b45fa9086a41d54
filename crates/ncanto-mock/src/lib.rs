//! `ncanto-mock`: a fake Ncanto recommendation API for local runs (`make run`), tests and
//! benchmarks.
//!
//! It exists to make the forwarder testable end to end without the real Ncanto: it catches
//! normalization bugs (every event must be *exactly* the canonical form, see [`validate`]),
//! counts what it received ([`Stats`]: events, duplicates from retries, per tenant and per
//! key), and fails on demand ([`Faults`]: random 500s, 429 + `Retry-After`, latency, refused
//! assets, full outages) so retry, backoff and parking can be exercised.
//!
//! # HTTP API
//! - `POST /interactions`: one canonical event object or an array of them. Checked in this
//!   order: outage `hang` (no answer until cleared, then 503) → `Authorization: Bearer <key>` when a key is
//!   configured (401) → `Content-Type: application/json` (415) → strict validation (400 with
//!   `{"error", "invalid": [{"index", "reason"}]}`, nothing recorded) → outage `error` (503) →
//!   latency → `error_rate` (500) → `rate_limit_rate` (429 + `Retry-After`) →
//!   `fail_asset_pattern` (500) → `reject_asset_pattern` (400 listing the indexes) → 200
//!   `{"accepted": n}`.
//! - `GET /stats`, `DELETE /stats` (204: counts and recorded events reset).
//! - `GET /faults`, `POST /faults` (a [`Faults`] object; unknown fields → 400),
//!   `DELETE /faults` (204).
//! - `GET /health` → `{"status": "ok"}`.
//!
//! The main address serves https instead of http when given a certificate and key
//! ([`MockConfig::tls`], `NCANTO_MOCK_TLS_CERT`/`NCANTO_MOCK_TLS_KEY`); the admin address stays
//! plain http.
//!
//! The admin routes are served on the main address and, when configured, on an admin address
//! that an outage never closes: with `refuse` the main address is closed entirely, so the
//! binary is brought back with `POST /faults` on the admin address (the library with
//! [`MockServer::set_faults`]).
//!
//! # In a test
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use ncanto_mock::{Faults, MockConfig, MockServer, Outage};
//!
//! let mock = MockServer::start(MockConfig::default()).await?; // 127.0.0.1, a free port
//! let ncanto_api_url = mock.url();
//! // ... run the forwarder against ncanto_api_url ...
//! mock.set_faults(Faults { outage: Some(Outage::Refuse), ..Faults::default() }).await;
//! mock.set_faults(Faults::default()).await; // same port again
//! assert_eq!(mock.stats().duplicates, 0);
//! mock.stop().await;
//! # Ok(())
//! # }
//! ```

pub mod config;
pub mod faults;
mod routes;
mod server;
pub mod stats;
pub mod validate;

pub use config::Config;
pub use faults::{Faults, Injected, Outage};
pub use routes::MAX_BODY_BYTES;
pub use server::{MockConfig, MockServer, TlsFiles};
pub use stats::{Stats, mask_authorization};
pub use validate::{Invalid, Rejection};
