//! One rustls crypto provider for the whole process: ring.
//!
//! reqwest is built with rustls but without a provider of its own (its default one is aws-lc,
//! a C build we do not want). A client built with reqwest's default TLS settings then takes
//! the process-wide provider, and panics when there is none. The forwarder's Ncanto client
//! brings its own configuration; every other client (tests, bench) relies on this.

/// Makes rustls with ring the process-wide crypto provider, for the rustls users that do not
/// configure their own (a `reqwest::Client` built with default TLS settings among them).
/// Idempotent; call it before building such a client.
pub fn install_tls_provider() {
    // An error only means a provider is in place already (an earlier call): nothing to do.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    #[test]
    fn installing_twice_leaves_ring_in_place() {
        super::install_tls_provider();
        super::install_tls_provider();
        let provider = rustls::crypto::CryptoProvider::get_default();
        assert!(provider.is_some());
    }
}
