//! Process plumbing every Interaction Logger binary needs the same way: logging (text or
//! JSON lines), durations in configuration, stop signals, the Prometheus recorder, the
//! process-wide TLS crypto provider, and the backoff of every retry loop. Kept
//! apart from the domain crates so none of them grows a dependency on process concerns.

mod backoff;
mod connections;
mod duration;
mod env_file;
mod logging;
mod metrics;
mod optional_path;
mod signals;
mod tls;

pub use backoff::{
    equal_jitter, exponential_delay, honor_retry_after, random_fraction, reconnect_delay,
};
pub use connections::Connections;
pub use duration::parse_duration;
pub use env_file::{EnvFileArgs, env_file_args};
pub use logging::{DEFAULT_FILTER, LogFormat, init as init_logging, json_line};
pub use metrics::metrics_handle;
pub use metrics_exporter_prometheus::PrometheusHandle;
pub use optional_path::parse_optional_path;
pub use signals::termination;
pub use tls::install_tls_provider;
