//! Client certificate → identity (DESIGN.md "identity.rs"). A certificate
//! names its holder by its DNS and URI subject alternative names; only a
//! certificate without such a SAN is named by its subject CN. Exactly one
//! configured `[[identity]]` must match what the certificate names:
//! none or several, and the connection is refused. An identity pinned to
//! one key (`spki_sha256`) is matched by the certificate's public key
//! alone: its names do not count, and another key with its name is not it.

use std::sync::Arc;

use crate::daemon::Identity;

/// What a client certificate asserts about its holder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presented {
    /// The DNS and URI SANs, or the subject CNs when there is no such SAN.
    pub names: Vec<String>,
    /// The certificate's serial number and issuer (DER), for revocation checks.
    pub serial: Vec<u8>,
    pub issuer: Vec<u8>,
    /// SHA-256 of the SubjectPublicKeyInfo, hex.
    pub spki_sha256: String,
}

impl Presented {
    pub fn from_der(der: &[u8]) -> Presented {
        use x509_parser::prelude::*;
        let Ok((_, cert)) = X509Certificate::from_der(der) else {
            return Presented::default();
        };
        let mut names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    GeneralName::DNSName(s) | GeneralName::URI(s) => names.push(s.to_string()),
                    _ => {}
                }
            }
        }
        if names.is_empty() {
            for cn in cert.subject().iter_common_name() {
                if let Ok(s) = cn.as_str() {
                    names.push(s.to_string());
                }
            }
        }
        Presented {
            names,
            serial: cert.raw_serial().to_vec(),
            issuer: cert.issuer().as_raw().to_vec(),
            spki_sha256: spki_sha256(cert.public_key().raw),
        }
    }
}

/// The outcome of matching a certificate against the configured identities.
#[derive(Debug)]
pub enum Match {
    One(Arc<Identity>),
    None,
    /// Several identities match: refused, naming them.
    Several(Vec<String>),
}

/// SHA-256 of a DER SubjectPublicKeyInfo, hex: what `spki_sha256` pins.
pub fn spki_sha256(spki_der: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(spki_der))
}

pub fn resolve(identities: &[Arc<Identity>], presented: &Presented) -> Match {
    let mut found: Vec<&Arc<Identity>> = identities
        .iter()
        .filter(|i| match &i.spki_sha256 {
            Some(pin) => !presented.spki_sha256.is_empty() && *pin == presented.spki_sha256,
            None => presented.names.iter().any(|n| *n == i.subject),
        })
        .collect();
    match found.len() {
        0 => Match::None,
        1 => Match::One(found.remove(0).clone()),
        _ => Match::Several(found.iter().map(|i| i.name.clone()).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};

    fn cert(cn: &str, sans: &[&str]) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let mut p =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.self_signed(&key).unwrap().der().to_vec()
    }

    fn ids(names: &[&str]) -> Vec<Arc<Identity>> {
        names.iter().map(|n| Arc::new(Identity::named(n))).collect()
    }

    // The review's case: SAN bob and CN alice was alice, because alice came first.
    #[test]
    fn san_wins_over_cn() {
        let p = Presented::from_der(&cert("alice", &["bob"]));
        assert_eq!(p.names, ["bob"]);
        match resolve(&ids(&["alice", "bob"]), &p) {
            Match::One(i) => assert_eq!(i.name, "bob"),
            m => panic!("{m:?}"),
        }
    }

    #[test]
    fn cn_only_without_san() {
        let p = Presented::from_der(&cert("alice", &[]));
        assert_eq!(p.names, ["alice"]);
        assert!(matches!(resolve(&ids(&["alice"]), &p), Match::One(_)));
        assert!(matches!(resolve(&ids(&["bob"]), &p), Match::None));
    }

    #[test]
    fn pinned_identity_is_its_key_alone() {
        let der = cert("someone", &[]);
        let p = Presented::from_der(&der);
        assert_eq!(p.spki_sha256.len(), 64);
        let mut pinned = Identity::named("pinned");
        pinned.spki_sha256 = Some(p.spki_sha256.clone());
        let mut squatter = Identity::named("someone");
        squatter.spki_sha256 = Some("00".repeat(32));
        let all = vec![Arc::new(pinned), Arc::new(squatter)];
        match resolve(&all, &p) {
            Match::One(i) => assert_eq!(i.name, "pinned"),
            m => panic!("{m:?}"),
        }
        // Another key naming "pinned" is not it.
        let other = Presented::from_der(&cert("pinned", &[]));
        assert!(matches!(resolve(&all, &other), Match::None));
    }

    #[test]
    fn several_matches_are_refused() {
        let p = Presented::from_der(&cert("x", &["alice", "bob"]));
        match resolve(&ids(&["alice", "bob"]), &p) {
            Match::Several(n) => assert_eq!(n, ["alice", "bob"]),
            m => panic!("{m:?}"),
        }
    }
}
