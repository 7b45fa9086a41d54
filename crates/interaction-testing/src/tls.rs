//! A private certificate authority for TLS tests: a CA certificate and server certificates it
//! signs, written as PEM files into a temporary directory removed with the value. Tests point
//! the real servers (a throwaway PostgreSQL, a TLS RabbitMQ node, ncanto-mock over https) at
//! the server files and our clients at the CA file, exactly as an SRE would with a private PKI.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// A CA that exists for as long as this value does, with the PEM of its certificate on disk.
pub struct TestCa {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate (PEM): what clients are given to trust (`*_CA_FILE`, `sslrootcert`).
    pub ca_file: PathBuf,
}

/// A server certificate and its key, signed by a [`TestCa`].
#[derive(Debug, Clone)]
pub struct ServerCert {
    /// The certificate (PEM).
    pub cert_file: PathBuf,
    /// Its private key (PEM, PKCS#8), readable by the owner only (PostgreSQL insists).
    pub key_file: PathBuf,
}

impl TestCa {
    /// A new CA named `name` (shown in certificate errors, so tests can tell CAs apart).
    pub fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("a self-signed CA");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, cert.pem()).expect("write the CA certificate");
        Self {
            dir,
            issuer: Issuer::new(params, key),
            ca_file,
        }
    }

    /// The directory the files live in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A server certificate valid for `names` (DNS names or IP addresses, e.g. `localhost`,
    /// `127.0.0.1`), written as `<file_stem>.crt` / `<file_stem>.key`.
    pub fn server_cert(&self, file_stem: &str, names: &[&str]) -> ServerCert {
        let key = KeyPair::generate().expect("a server key");
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("server params");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("a signed server certificate");
        let cert_file = self.dir.path().join(format!("{file_stem}.crt"));
        let key_file = self.dir.path().join(format!("{file_stem}.key"));
        std::fs::write(&cert_file, cert.pem()).expect("write the server certificate");
        std::fs::write(&key_file, key.serialize_pem()).expect("write the server key");
        restrict_to_owner(&key_file);
        ServerCert {
            cert_file,
            key_file,
        }
    }
}

/// PostgreSQL refuses a key file others may read; RabbitMQ and actix do not care.
fn restrict_to_owner(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .expect("restrict the key file");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_writes_its_certificate_and_signs_server_certificates() {
        let ca = TestCa::new("interaction-logger test CA");
        let server = ca.server_cert("server", &["localhost", "127.0.0.1"]);
        let ca_pem = std::fs::read_to_string(&ca.ca_file).unwrap();
        let cert_pem = std::fs::read_to_string(&server.cert_file).unwrap();
        let key_pem = std::fs::read_to_string(&server.key_file).unwrap();
        assert!(ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(key_pem.contains("PRIVATE KEY"));
        assert_ne!(ca_pem, cert_pem);
        let dir = ca.dir().to_owned();
        drop(ca);
        assert!(!dir.exists(), "the files go with the CA");
    }
}
