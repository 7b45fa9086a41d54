//! API keys: which tenant a request belongs to.
//!
//! Keys are compared in constant time on their SHA-256 digests, so neither the content nor
//! the length of a stored key leaks through response timing; every stored key is compared on
//! every lookup for the same reason.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A tenant's name, shared cheaply between requests.
pub type Tenant = Arc<str>;

/// The configured keys.
#[derive(Clone)]
pub struct ApiKeys {
    keys: Vec<([u8; 32], Tenant)>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tenants only: keys are secrets.
        let tenants: Vec<&str> = self.keys.iter().map(|(_, t)| t.as_ref()).collect();
        f.debug_struct("ApiKeys")
            .field("tenants", &tenants)
            .finish()
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl ApiKeys {
    /// Parses `tenant:key,tenant:key`. A tenant may have several keys (for rotation); a key
    /// may belong to one tenant only.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut keys: Vec<([u8; 32], Tenant)> = Vec::new();
        for (n, pair) in text.split(',').map(str::trim).enumerate() {
            if pair.is_empty() {
                continue;
            }
            let Some((tenant, key)) = pair.split_once(':') else {
                return Err(format!(
                    "API_KEYS entry {} is not tenant:key (the key is not shown)",
                    n + 1
                ));
            };
            let (tenant, key) = (tenant.trim(), key.trim());
            if tenant.is_empty() || key.is_empty() {
                return Err(format!(
                    "API_KEYS entry {} has an empty tenant or key",
                    n + 1
                ));
            }
            if !tenant
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
            {
                return Err(format!(
                    "API_KEYS tenant {tenant:?} may contain only ASCII letters, digits, '_', '-' and '.'"
                ));
            }
            let hash = digest(key);
            if keys.iter().any(|(h, _)| *h == hash) {
                return Err(format!(
                    "API_KEYS entry {} repeats a key already given; each key must be unique",
                    n + 1
                ));
            }
            keys.push((hash, Arc::from(tenant)));
        }
        if keys.is_empty() {
            return Err("API_KEYS is empty: configure at least one tenant:key pair".to_owned());
        }
        Ok(Self { keys })
    }

    /// The position and tenant of `key`, if it is one of ours. The position identifies the
    /// key (for its rate limit) without keeping the key itself around.
    pub fn lookup(&self, key: &str) -> Option<(usize, Tenant)> {
        let presented = digest(key);
        let mut found = None;
        for (index, (hash, tenant)) in self.keys.iter().enumerate() {
            if bool::from(hash.ct_eq(&presented)) {
                found = Some((index, tenant.clone()));
            }
        }
        found
    }

    /// Every configured tenant, once each.
    pub fn tenants(&self) -> Vec<Tenant> {
        let mut tenants: Vec<Tenant> = self.keys.iter().map(|(_, t)| t.clone()).collect();
        tenants.sort();
        tenants.dedup();
        tenants
    }
}

/// The key a request presents: `X-API-Key`, or `Authorization: Bearer <key>`.
pub fn presented_key(req: &actix_web::HttpRequest) -> Option<&str> {
    let headers = req.headers();
    if let Some(key) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(key.trim());
    }
    let auth = headers
        .get(actix_web::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = auth.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_their_tenants() {
        let keys = ApiKeys::parse(" acme:k1 , globex:k2,acme:k3,").unwrap();
        let tenant = |key| keys.lookup(key).map(|(_, t)| t.to_string());
        assert_eq!(tenant("k1").as_deref(), Some("acme"));
        assert_eq!(tenant("k3").as_deref(), Some("acme"));
        assert_eq!(tenant("k2").as_deref(), Some("globex"));
        assert_eq!(tenant("k4"), None);
        assert_eq!(tenant(""), None);
        assert_eq!(tenant("k1 "), None);
        assert_eq!(
            keys.lookup("k3").map(|(i, _)| i),
            Some(2),
            "keys are told apart"
        );
        assert_eq!(keys.tenants().len(), 2);
        assert!(!format!("{keys:?}").contains("k1"));
    }

    #[test]
    fn bad_key_lists_are_refused_without_echoing_keys() {
        for (text, message) in [
            ("", "API_KEYS is empty"),
            (" , ", "API_KEYS is empty"),
            ("acme", "entry 1 is not tenant:key"),
            ("acme:", "empty tenant or key"),
            (":secret", "empty tenant or key"),
            ("a b:secret", "may contain only"),
            ("a:secret,b:secret", "entry 2 repeats a key"),
        ] {
            let error = ApiKeys::parse(text).unwrap_err();
            assert!(error.contains(message), "{text:?}: {error}");
            assert!(!error.contains("secret"), "{error}");
        }
    }

    #[test]
    fn keys_come_from_either_header() {
        use actix_web::test::TestRequest;
        let cases = [
            (vec![("X-API-Key", "k1")], Some("k1")),
            (vec![("Authorization", "Bearer k2")], Some("k2")),
            (vec![("Authorization", "bearer  k3 ")], Some("k3")),
            (vec![("Authorization", "Basic abc")], None),
            (
                vec![("X-API-Key", "k1"), ("Authorization", "Bearer k2")],
                Some("k1"),
            ),
            (vec![], None),
        ];
        for (headers, expected) in cases {
            let mut req = TestRequest::default();
            for header in &headers {
                req = req.insert_header(*header);
            }
            let req = req.to_http_request();
            assert_eq!(presented_key(&req), expected, "{headers:?}");
        }
    }
}
