//! Client certificates issued by kmsd for an identity (`kmsctl identities
//! issue-cert`): the requester keeps its private key and sends a CSR; kmsd
//! checks the CSR's signature, keeps only its public key, and signs a
//! certificate of its own making (the identity's name as CN and SAN,
//! client authentication only, a bounded lifetime) with `[tls]
//! issuing_ca_cert` / `issuing_ca_key`.

use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// The longest lifetime kmsd issues, in days.
pub const MAX_DAYS: u32 = 825;

/// A certificate kmsd issued.
#[derive(Debug)]
pub struct Issued {
    pub pem: String,
    /// SHA-256 of its SubjectPublicKeyInfo, hex (what `spki_sha256` pins).
    pub spki_sha256: String,
    /// Unix seconds.
    pub not_after: u64,
    pub serial: String,
}

/// The SHA-256 (hex) of the public key a PEM CSR carries, its signature checked.
pub fn csr_spki_sha256(csr_pem: &str) -> Result<String, String> {
    use x509_parser::prelude::*;
    let der = pem_block(csr_pem, "CERTIFICATE REQUEST")?;
    let (_, csr) = X509CertificationRequest::from_der(&der).map_err(|e| format!("CSR: {e}"))?;
    csr.verify_signature()
        .map_err(|_| "CSR: its signature does not verify".to_string())?;
    Ok(crate::identity::spki_sha256(
        csr.certification_request_info.subject_pki.raw,
    ))
}

/// The SHA-256 (hex) of the public key of a PEM certificate.
pub fn cert_spki_sha256(cert_pem: &str) -> Result<String, String> {
    use x509_parser::prelude::*;
    let der = pem_block(cert_pem, "CERTIFICATE")?;
    let (_, cert) = X509Certificate::from_der(&der).map_err(|e| format!("certificate: {e}"))?;
    Ok(crate::identity::spki_sha256(cert.public_key().raw))
}

fn pem_block(text: &str, label: &str) -> Result<Vec<u8>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer};
    let der = match label {
        "CERTIFICATE" => CertificateDer::from_pem_slice(text.as_bytes()).map(|d| d.to_vec()),
        _ => CertificateSigningRequestDer::from_pem_slice(text.as_bytes())
            .map(|d| d.as_ref().to_vec()),
    };
    der.map_err(|e| format!("expected a PEM {label}: {e}"))
}

/// Signs a certificate for identity subject `subject` with the public key
/// of `csr_pem`, valid `days` days.
pub fn issue(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    csr_pem: &str,
    subject: &str,
    days: u32,
) -> Result<Issued, String> {
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(format!("days: 1 to {MAX_DAYS}"));
    }
    let spki = csr_spki_sha256(csr_pem)?;
    let mut csr =
        CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| format!("CSR: {e}"))?;
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(|e| format!("issuing CA key: {e}"))?;
    let ca = CertificateParams::from_ca_cert_pem(ca_cert_pem)
        .and_then(|p| p.self_signed(&ca_key))
        .map_err(|e| format!("issuing CA certificate: {e}"))?;

    // Nothing of the CSR but its key: the certificate is kmsd's own.
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    p.distinguished_name.push(DnType::CommonName, subject);
    let name = subject
        .to_string()
        .try_into()
        .map_err(|_| format!("identity subject {subject:?} is not an ASCII name"))?;
    p.subject_alt_names = vec![if subject.contains("://") {
        SanType::URI(name)
    } else {
        SanType::DnsName(name)
    }];
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.use_authority_key_identifier_extension = true;
    let now = SystemTime::now();
    let not_after = now + Duration::from_secs(u64::from(days) * 86_400);
    p.not_before = (now - Duration::from_secs(300)).into();
    p.not_after = not_after.into();
    let mut serial = rand::random::<[u8; 16]>();
    serial[0] &= 0x7f;
    p.serial_number = Some(serial.to_vec().into());
    csr.params = p;
    let cert = csr
        .signed_by(&ca, &ca_key)
        .map_err(|e| format!("signing: {e}"))?;
    Ok(Issued {
        pem: cert.pem(),
        spki_sha256: spki,
        not_after: not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default(),
        serial: hex::encode(serial),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::BasicConstraints;

    fn ca() -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, "test CA");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        (p.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    fn csr(cn: &str) -> (String, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["admin".to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        (p.serialize_request(&key).unwrap().pem().unwrap(), key)
    }

    #[test]
    fn issues_for_the_identity_not_for_the_csr_names() {
        let (ca_pem, ca_key) = ca();
        let (req, _) = csr("admin");
        let i = issue(&ca_pem, &ca_key, &req, "ci-bot", 30).unwrap();
        let p = crate::identity::Presented::from_der(&pem_block(&i.pem, "CERTIFICATE").unwrap());
        assert_eq!(p.names, ["ci-bot"], "the CSR asked for admin");
        assert_eq!(p.spki_sha256, i.spki_sha256);
        assert_eq!(cert_spki_sha256(&i.pem).unwrap(), i.spki_sha256);
    }

    #[test]
    fn refuses_bad_input() {
        let (ca_pem, ca_key) = ca();
        let (req, _) = csr("x");
        assert!(issue(&ca_pem, &ca_key, &req, "x", 0).is_err());
        assert!(issue(&ca_pem, &ca_key, &req, "x", MAX_DAYS + 1).is_err());
        assert!(issue(&ca_pem, &ca_key, "not a csr", "x", 30).is_err());
        assert!(issue(&ca_pem, &ca_key, &ca_pem, "x", 30).is_err());
        // A CSR whose signature does not verify.
        let mut lines: Vec<String> = req.lines().map(str::to_string).collect();
        // The last body line holds the end of the signature: change a character.
        let last = lines.len() - 2;
        let flipped: String = lines[last]
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if i == 2 {
                    if c == 'A' {
                        'B'
                    } else {
                        'A'
                    }
                } else {
                    c
                }
            })
            .collect();
        lines[last] = flipped;
        let bad = lines.join("\n") + "\n";
        assert!(csr_spki_sha256(&req).is_ok());
        assert!(
            csr_spki_sha256(&bad).is_err(),
            "a CSR whose signature does not verify"
        );
    }
}
