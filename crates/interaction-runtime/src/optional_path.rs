//! Optional file paths in configuration, where an empty value means "none".

use std::path::PathBuf;

/// `""` (or only spaces) → `None`, anything else → that path. For optional files such as
/// `AMQP_CA_FILE`: `.env.example` lists every variable, so an unset file is written
/// `AMQP_CA_FILE=`, which clap's own `PathBuf` parser rejects as an empty value.
///
/// Use it on a field typed `std::option::Option<PathBuf>` with `default_value = ""`: spelled
/// out like that, clap takes the type as the parser's output instead of making the option
/// optional by itself (and calling the parser only for non-empty values).
pub fn parse_optional_path(text: &str) -> Result<Option<PathBuf>, String> {
    let text = text.trim();
    Ok((!text.is_empty()).then(|| PathBuf::from(text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_means_none_and_anything_else_a_path() {
        assert_eq!(parse_optional_path(""), Ok(None));
        assert_eq!(parse_optional_path("  "), Ok(None));
        assert_eq!(
            parse_optional_path("/etc/ssl/private-ca.pem"),
            Ok(Some(PathBuf::from("/etc/ssl/private-ca.pem")))
        );
    }
}
