//! Client certificate → identity (DESIGN.md "identity.rs"). A certificate
//! names its holder by its DNS and URI subject alternative names; only a
//! certificate without such a SAN is named by its subject CN. Exactly one
//! configured `[[identity]]` must match what the certificate names:
//! none or several, and the connection is refused.

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

pub fn resolve(identities: &[Arc<Identity>], presented: &Presented) -> Match {
    let mut found: Vec<&Arc<Identity>> = identities
        .iter()
        .filter(|i| presented.names.iter().any(|n| *n == i.subject))
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
    fn several_matches_are_refused() {
        let p = Presented::from_der(&cert("x", &["alice", "bob"]));
        match resolve(&ids(&["alice", "bob"]), &p) {
            Match::Several(n) => assert_eq!(n, ["alice", "bob"]),
            m => panic!("{m:?}"),
        }
    }
}
