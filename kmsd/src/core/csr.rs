//! Certificate requests and self-signed certificates for HSM keys: the
//! HSM key signs (kmsd's own backend session), the key never leaves it.
//! `kmsctl keys csr KEY --subject "CN=web,O=Example"` prints a PKCS#10
//! request for a CA; `kmsctl keys self-sign KEY --subject ... --days N`
//! puts a self-signed certificate on the token beside the key (imported
//! as [`certs::import`] does, with its checks). EC P-256 keys sign
//! with ECDSA-SHA256, RSA keys with SHA256-RSA-PKCS.

use std::sync::Arc;

use kmsp11_proto::{CallId, MechParam, Mechanism};
use pkcs11_sys::*;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, RemoteKeyPair};
use sha2::{Digest, Sha256};

use super::certs::{self, Listed};
use super::WorkError::{self, Failed, Refused};
use crate::daemon::Daemon;
use crate::handles::{BObject, BSession};
use crate::hsm::CMechanism;
use crate::store::KeyRecord;

/// A subject such as `CN=web.example,O=Example,C=DE`.
pub fn subject(text: &str) -> Result<DistinguishedName, WorkError> {
    let mut dn = DistinguishedName::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| Refused(format!("subject: {part:?} is not NAME=value")))?;
        let kind = match k.trim().to_ascii_uppercase().as_str() {
            "CN" => DnType::CommonName,
            "O" => DnType::OrganizationName,
            "OU" => DnType::OrganizationalUnitName,
            "C" => DnType::CountryName,
            "ST" => DnType::StateOrProvinceName,
            "L" => DnType::LocalityName,
            other => {
                return Err(Refused(format!(
                    "subject: unknown attribute {other} (CN, O, OU, C, ST, L)"
                )))
            }
        };
        dn.push(kind, v.trim());
    }
    if dn.iter().next().is_none() {
        return Err(Refused("subject: empty".into()));
    }
    Ok(dn)
}

/// The HSM key as rcgen's signer.
struct HsmKey {
    d: Arc<Daemon>,
    session: BSession,
    key: BObject,
    rsa: bool,
    public: Vec<u8>,
}

impl RemoteKeyPair for HsmKey {
    fn public_key(&self) -> &[u8] {
        &self.public
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let (m, data) = if self.rsa {
            (CKM_SHA256_RSA_PKCS, msg.to_vec())
        } else {
            // SoftHSM 2.6 has no CKM_ECDSA_SHA256: hash here, sign the digest.
            (CKM_ECDSA, Sha256::digest(msg).to_vec())
        };
        let b = &self.d.backend;
        let mut mech = CMechanism::new(
            &Mechanism {
                mechanism: m,
                param: MechParam::None,
            },
            false,
            |h| h,
        );
        b.op_init(CallId::SignInit, self.session, &mut mech, self.key)
            .map_err(|_| rcgen::Error::RemoteKeyError)?;
        let (rv, _, sig) = b.data_out(CallId::Sign, self.session, Some(&data), Some(1024));
        match (rv, sig) {
            (CKR_OK, Some(sig)) if self.rsa => Ok(sig),
            (CKR_OK, Some(sig)) => Ok(ecdsa_der(&sig)),
            _ => Err(rcgen::Error::RemoteKeyError),
        }
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        if self.rsa {
            &rcgen::PKCS_RSA_SHA256
        } else {
            &rcgen::PKCS_ECDSA_P256_SHA256
        }
    }
}

/// A DER TLV (lengths up to 65535).
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let n = content.len();
    let mut out = vec![tag];
    match n {
        0..=127 => out.push(n as u8),
        128..=255 => out.extend([0x81, n as u8]),
        _ => out.extend([0x82, (n >> 8) as u8, n as u8]),
    }
    out.extend_from_slice(content);
    out
}

/// An unsigned big-endian number as a DER INTEGER.
fn der_uint(b: &[u8]) -> Vec<u8> {
    let i = b
        .iter()
        .position(|x| *x != 0)
        .unwrap_or(b.len().saturating_sub(1));
    let mut v = b[i..].to_vec();
    if v.first().is_none_or(|x| x & 0x80 != 0) {
        v.insert(0, 0);
    }
    tlv(0x02, &v)
}

/// r || s as X.509 carries an ECDSA signature (a DER SEQUENCE of two INTEGERs).
pub(crate) fn ecdsa_der(raw: &[u8]) -> Vec<u8> {
    let (r, s) = raw.split_at(raw.len() / 2);
    tlv(0x30, &[der_uint(r), der_uint(s)].concat())
}

/// The DER form of an ECDSA signature back to r || s, each `size` bytes
/// (the curve's; when unknown, the smallest of P-256, P-384 and P-521
/// that holds both). `None` for anything else, trailing bytes included.
pub(crate) fn ecdsa_raw(der: &[u8], size: Option<usize>) -> Option<Vec<u8>> {
    use x509_parser::der_parser::der::{parse_der_integer, parse_der_sequence_defined_g};
    let (rest, (r, s)) = parse_der_sequence_defined_g(|i, _| {
        let (i, r) = parse_der_integer(i)?;
        let (i, s) = parse_der_integer(i)?;
        Ok((i, (r, s)))
    })(der)
    .ok()?;
    if !rest.is_empty() {
        return None;
    }
    let unsigned = |o: &x509_parser::der_parser::ber::BerObject| -> Option<Vec<u8>> {
        let b = o.as_slice().ok()?;
        if b.first().is_some_and(|x| x & 0x80 != 0) {
            return None;
        }
        let i = b.iter().position(|x| *x != 0).unwrap_or(b.len());
        Some(b[i..].to_vec())
    };
    let (r, s) = (unsigned(&r)?, unsigned(&s)?);
    let longest = r.len().max(s.len());
    let size = size.unwrap_or(match longest {
        0..=32 => 32,
        33..=48 => 48,
        _ => 66,
    });
    if longest > size {
        return None;
    }
    let mut out = vec![0u8; 2 * size];
    out[size - r.len()..size].copy_from_slice(&r);
    out[2 * size - s.len()..].copy_from_slice(&s);
    Some(out)
}

/// Runs `f` with the key's signer on a backend session of its token.
fn with_signer<T>(
    d: &Arc<Daemon>,
    k: &KeyRecord,
    f: impl FnOnce(KeyPair, &crate::daemon::VToken) -> Result<T, WorkError>,
) -> Result<T, WorkError> {
    if k.class != CKO_PRIVATE_KEY {
        return Err(Refused(format!("{}: give the private key", k.id)));
    }
    let rsa = match k.key_type {
        CKK_RSA => true,
        CKK_EC => false,
        _ => {
            return Err(Refused(format!(
                "{}: requests and certificates are made for RSA and EC P-256 keys",
                k.id
            )))
        }
    };
    let t = d
        .token_named(&k.token)
        .ok_or_else(|| Failed(format!("token {:?} is not served", k.token)))?;
    let b = &d.backend;
    let s = b
        .open_session(t.backend_slot, CKF_SERIAL_SESSION | CKF_RW_SESSION)
        .map_err(|e| Failed(e.to_string()))?;
    let r = (|| {
        let key = certs::object_of(b, s, k)?;
        let material = certs::public_material(b, s, k)?;
        let public = if rsa {
            let e = certs::attribute_bytes(b, s, key, CKA_PUBLIC_EXPONENT);
            rsa_public_der(&material, &e)
        } else {
            if material.len() != 65 {
                return Err(Refused(format!("{}: not a P-256 key", k.id)));
            }
            material
        };
        let signer = HsmKey {
            d: d.clone(),
            session: s,
            key,
            rsa,
            public,
        };
        let kp = KeyPair::from_remote(Box::new(signer)).map_err(|e| Failed(e.to_string()))?;
        f(kp, &t)
    })();
    let _ = b.close_session(s);
    r
}

/// PKCS#1 RSAPublicKey: SEQUENCE { modulus INTEGER, exponent INTEGER }.
pub(crate) fn rsa_public_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    tlv(0x30, &[der_uint(n), der_uint(e)].concat())
}

/// A PKCS#10 request for the key, PEM.
pub fn csr(d: &Arc<Daemon>, k: &KeyRecord, subject_text: &str) -> Result<String, WorkError> {
    let dn = subject(subject_text)?;
    with_signer(d, k, |kp, _| {
        let mut p = CertificateParams::default();
        p.distinguished_name = dn;
        let req = p
            .serialize_request(&kp)
            .map_err(|e| Failed(format!("request: {e}")))?;
        req.pem().map_err(|e| Failed(format!("request: {e}")))
    })
}

/// A self-signed certificate for the key, valid `days` from now, put on
/// the token beside the key.
pub fn self_sign(
    d: &Arc<Daemon>,
    k: &KeyRecord,
    subject_text: &str,
    days: u32,
) -> Result<Vec<Listed>, WorkError> {
    if days == 0 || days > 36_500 {
        return Err(Refused("days: 1 to 36500".into()));
    }
    let dn = subject(subject_text)?;
    let der = with_signer(d, k, |kp, _| {
        let mut p = CertificateParams::default();
        p.distinguished_name = dn;
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::minutes(5);
        p.not_after = now + time::Duration::days(days.into());
        let cert = p
            .self_signed(&kp)
            .map_err(|e| Failed(format!("certificate: {e}")))?;
        Ok(cert.der().to_vec())
    })?;
    let t = d
        .token_named(&k.token)
        .ok_or_else(|| Failed(format!("token {:?} is not served", k.token)))?;
    certs::import(d, &t, &[der], Some(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_parse_or_are_refused_with_the_reason() {
        let dn = subject("CN=web.example, O=Example,C=DE").unwrap();
        assert_eq!(dn.iter().count(), 3);
        for (bad, why) in [
            ("", "empty"),
            ("CN", "is not NAME=value"),
            ("XX=1", "unknown attribute XX"),
        ] {
            let e = subject(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn ecdsa_signatures_become_der() {
        let mut raw = vec![0u8; 64];
        raw[0] = 0x80; // r needs a leading zero
        raw[63] = 1;
        let der = ecdsa_der(&raw);
        assert_eq!(&der[..4], &[0x30, 0x26, 0x02, 0x21]);
        assert_eq!(&der[der.len() - 3..], &[0x02, 0x01, 0x01]);
    }
}
