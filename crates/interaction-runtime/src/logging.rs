//! Logging through `log` + env_logger, as text for people or JSON lines for log pipelines.
//! `RUST_LOG` sets levels. Nothing here logs request bodies or keys; callers keep it that way.

use std::io::Write;

/// Levels when `RUST_LOG` is unset: info, but not lapin's per-connection tracing spans.
pub const DEFAULT_FILTER: &str = "info,tracing::span=warn";

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `2026-11-24T03:00:00Z INFO ingest_api: message`
    Text,
    /// One JSON object per line: `ts`, `level`, `target`, `msg`.
    Json,
}

/// Installs the global logger; later calls are ignored (tests start many apps).
pub fn init(format: LogFormat) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(DEFAULT_FILTER));
    if format == LogFormat::Json {
        builder.format(|buf, record| writeln!(buf, "{}", json_line(record, chrono::Utc::now())));
    }
    let _ = builder.try_init();
}

/// One log record as a JSON object (one line: the message's newlines are escaped).
pub fn json_line(record: &log::Record<'_>, at: chrono::DateTime<chrono::Utc>) -> String {
    serde_json::json!({
        "ts": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "level": record.level().as_str(),
        "target": record.target(),
        "msg": record.args().to_string(),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_are_single_line_objects_with_every_field() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-24T03:00:00.5Z")
            .unwrap()
            .to_utc();
        let line = json_line(
            &log::Record::builder()
                .level(log::Level::Warn)
                .target("ingest_api::relay")
                .args(format_args!("two\nlines \"quoted\""))
                .build(),
            at,
        );
        assert!(!line.contains('\n'));
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({"ts": "2026-11-24T03:00:00.500Z", "level": "WARN",
                               "target": "ingest_api::relay", "msg": "two\nlines \"quoted\""})
        );
    }
}
