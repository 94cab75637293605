//! Identity and authentication: who the client certificate names, and the
//! identity's PIN for C_Login.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// Checks a PIN against an Argon2 PHC string. No hash configured: no login.
pub fn verify_pin(hash: Option<&str>, pin: &[u8]) -> bool {
    let Some(hash) = hash else { return false };
    match PasswordHash::new(hash) {
        Ok(h) => Argon2::default().verify_password(pin, &h).is_ok(),
        Err(_) => false,
    }
}

/// Hashes a PIN for `[[identity]] pin_hash` (`kmsd hash-pin`).
pub fn hash_pin(pin: &[u8]) -> String {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(pin, &salt)
        .map(|h| h.to_string())
        .unwrap_or_default()
}

/// The names a client certificate asserts: its DNS and URI SANs, then its subject CN.
pub fn cert_names(der: &[u8]) -> Vec<String> {
    use x509_parser::prelude::*;
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return vec![];
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
    for cn in cert.subject().iter_common_name() {
        if let Ok(s) = cn.as_str() {
            names.push(s.to_string());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_hash_round_trip() {
        let h = hash_pin(b"123456");
        assert!(verify_pin(Some(&h), b"123456"));
        assert!(!verify_pin(Some(&h), b"1234567"));
        assert!(!verify_pin(None, b"123456"));
        assert!(!verify_pin(Some("not a hash"), b"123456"));
    }
}
