//! PostgreSQL over TLS against real servers: the machine's (SSL on with Debian's self-signed
//! "snakeoil" certificate) and a throwaway server whose certificate a test CA issued. Every
//! case reads back, on the server, whether the session really is encrypted (`pg_stat_ssl`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use interaction_store::testing::{TestDatabase, admin_url};
use interaction_store::{Store, StoreConfig};
use interaction_testing::postgres::TestPostgres;
use interaction_testing::tls::TestCa;

fn store(url: &str) -> Store {
    let mut config = StoreConfig::new(url);
    config.acquire_timeout = Duration::from_secs(5);
    Store::new(&config).expect("a valid configuration")
}

fn with_query(url: &str, query: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{query}")
}

#[tokio::test]
async fn sslmode_require_encrypts_the_sessions_to_the_machines_postgresql() {
    let (db, _) = TestDatabase::migrated().await;
    let encrypted = store(&with_query(&db.url, "sslmode=require"));
    assert!(encrypted.connection_is_encrypted().await.unwrap());
    // The whole store works over it: a migration check and a query.
    assert!(encrypted.migrate().await.unwrap().is_empty());
    assert_eq!(encrypted.pending_event_count().await.unwrap(), 0);
    let plain = store(&with_query(&db.url, "sslmode=disable"));
    assert!(!plain.connection_is_encrypted().await.unwrap());
}

#[tokio::test]
async fn verify_full_refuses_the_machines_self_signed_certificate() {
    // Debian's snakeoil certificate is self-signed: no system root vouches for it.
    let url = with_query(&admin_url(), "sslmode=verify-full&sslrootcert=system");
    let error = store(&url).ping().await.unwrap_err().to_string();
    assert!(error.contains("certificate"), "{error}");
}

#[tokio::test]
async fn a_private_ca_is_trusted_through_sslrootcert_and_host_names_are_checked() {
    let ca = TestCa::new("ilog test PostgreSQL CA");
    let Some(server) = TestPostgres::start_tls(&ca, &["localhost"]) else {
        panic!("no PostgreSQL server binaries on this machine (apt-get install postgresql)");
    };
    let root = format!("sslrootcert={}", ca.ca_file.display());

    // verify-full with the CA and the certificate's host name: encrypted and working.
    let good = store(&server.url("localhost", &format!("sslmode=verify-full&{root}")));
    assert!(
        good.connection_is_encrypted().await.unwrap(),
        "{}",
        server.log()
    );
    assert!(
        !good.migrate().await.unwrap().is_empty(),
        "migrations ran over TLS"
    );

    // The same server reached by an address the certificate does not name: refused.
    let error = store(&server.url("127.0.0.1", &format!("sslmode=verify-full&{root}")))
        .ping()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("not valid for name \"127.0.0.1\""),
        "{error}"
    );

    // verify-ca checks the chain only, as in libpq: that address is fine there.
    let chain_only = store(&server.url("127.0.0.1", &format!("sslmode=verify-ca&{root}")));
    assert!(chain_only.connection_is_encrypted().await.unwrap());

    // A CA that did not issue the certificate: refused, whatever the mode that verifies.
    let other = TestCa::new("some other CA");
    let other_root = format!("sslrootcert={}", other.ca_file.display());
    for mode in ["verify-full", "verify-ca", "require"] {
        let url = server.url("localhost", &format!("sslmode={mode}&{other_root}"));
        let error = store(&url).ping().await.unwrap_err().to_string();
        assert!(error.contains("UnknownIssuer"), "{mode}: {error}");
    }

    // require without a root certificate encrypts without verifying (libpq's meaning).
    let encrypt_only = store(&server.url("127.0.0.1", "sslmode=require"));
    assert!(encrypt_only.connection_is_encrypted().await.unwrap());
}
