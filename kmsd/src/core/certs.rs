//! Certificates and trust anchors as token objects, so that Java's
//! keystore finds a key with its chain and NSS and GnuTLS list them.
//!
//! An import is checked before anything reaches the HSM: every
//! certificate parses and is within its validity period, each one was
//! issued by the next (a chain in order, leaf first), and a leaf imported
//! for a key carries that key's public key. The leaf of a key becomes a
//! certificate object with the key's label and `CKA_ID`
//! (`CKA_CERTIFICATE_CATEGORY` 1, token user); the others, and trust
//! anchors, are authority certificates (category 2) labelled with their
//! subject's common name, marked `CKA_TRUSTED` where the HSM lets kmsd's
//! user session do so (not SoftHSM: only its SO may). A certificate
//! already on the token is not made twice.

use kmsp11_proto::{AttrQuery, AttrValue, Attribute};
use pkcs11_sys::*;
use sha2::{Digest, Sha256};
use x509_parser::prelude::*;

use super::inventory;
use super::WorkError::{self, Failed, Refused};
use crate::daemon::{Daemon, VToken};
use crate::handles::{BObject, BSession};
use crate::hsm::{Backend, CTemplate};
use crate::store::KeyRecord;

/// A certificate object on a token, as listed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listed {
    pub token: String,
    /// SHA-256 of the DER, hex: what names it for removal.
    pub sha256: String,
    pub label: String,
    /// `CKA_ID`, hex.
    pub id: String,
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    /// RFC 3339.
    pub not_after: String,
    pub days_left: i64,
    /// `user`, `authority` or `unspecified`.
    pub category: String,
    /// `CKA_TRUSTED`.
    pub trusted: bool,
}

/// The DER certificates of a PEM or DER file.
pub fn parse_file(bytes: &[u8]) -> Result<Vec<Vec<u8>>, WorkError> {
    if !bytes.starts_with(b"-----BEGIN") {
        return Ok(vec![bytes.to_vec()]);
    }
    let mut out = Vec::new();
    for pem in Pem::iter_from_buffer(bytes) {
        let pem = pem.map_err(|e| Refused(format!("PEM: {e}")))?;
        if pem.label == "CERTIFICATE" {
            out.push(pem.contents);
        }
    }
    if out.is_empty() {
        return Err(Refused("no CERTIFICATE block in the PEM".into()));
    }
    Ok(out)
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, WorkError> {
    let (rest, c) = X509Certificate::from_der(der)
        .map_err(|e| Refused(format!("not an X.509 certificate: {e}")))?;
    if !rest.is_empty() {
        return Err(Refused("bytes after the certificate".into()));
    }
    Ok(c)
}

/// Checks a chain (leaf first) and, with `key`, that the leaf is that key's.
fn check(
    d: &Daemon,
    s: BSession,
    ders: &[Vec<u8>],
    key: Option<&KeyRecord>,
) -> Result<(), WorkError> {
    let now = ASN1Time::now();
    let certs = ders
        .iter()
        .map(|d| parse(d))
        .collect::<Result<Vec<_>, _>>()?;
    for c in &certs {
        let v = c.validity();
        if v.not_after < now {
            return Err(Refused(format!(
                "{} expired on {}",
                c.subject(),
                v.not_after
            )));
        }
        if v.not_before > now {
            return Err(Refused(format!(
                "{} is not valid before {}",
                c.subject(),
                v.not_before
            )));
        }
    }
    for w in certs.windows(2) {
        if w[0].issuer() != w[1].subject() {
            return Err(Refused(format!(
                "not a chain: {} was issued by {}, not by the next certificate ({})",
                w[0].subject(),
                w[0].issuer(),
                w[1].subject()
            )));
        }
    }
    if let (Some(k), Some(leaf)) = (key, certs.first()) {
        let material = public_material(&d.backend, s, k)?;
        if leaf.public_key().subject_public_key.data.as_ref() != material.as_slice()
            && !rsa_matches(leaf, &material)
        {
            return Err(Refused(format!(
                "{} does not carry the public key of {} ({})",
                leaf.subject(),
                k.id,
                k.label
            )));
        }
    }
    Ok(())
}

/// The key's public key as a certificate carries it: the EC point, or
/// the RSA modulus (compared by [`rsa_matches`]).
pub(crate) fn public_material(
    b: &Backend,
    s: BSession,
    k: &KeyRecord,
) -> Result<Vec<u8>, WorkError> {
    let o = object_of(b, s, k)?;
    let want = match k.key_type {
        CKK_EC | CKK_EC_EDWARDS => CKA_EC_POINT,
        CKK_RSA => CKA_MODULUS,
        _ => {
            return Err(Refused(format!(
                "{}: certificates are for RSA and EC keys",
                k.id
            )))
        }
    };
    // The point is on the public key; find it by the private key's CKA_ID.
    let candidates = if want == CKA_EC_POINT && k.class == CKO_PRIVATE_KEY {
        let id = attribute_bytes(b, s, o, CKA_ID);
        find(
            b,
            s,
            &[
                (CKA_CLASS, AttrValue::Ulong(CKO_PUBLIC_KEY)),
                (CKA_ID, AttrValue::Bytes(id)),
            ],
        )
        .map_err(|e| Failed(format!("HSM: {e}")))?
    } else {
        vec![o]
    };
    for c in candidates {
        let v = attribute_bytes(b, s, c, want);
        if v.is_empty() {
            continue;
        }
        if want == CKA_EC_POINT {
            return Ok(ec_point(&v));
        }
        return Ok(v);
    }
    Err(Refused(format!(
        "{}: its public key is not on the token",
        k.id
    )))
}

/// `CKA_EC_POINT` is a DER OCTET STRING holding the point; some HSMs
/// give the bare point.
pub(crate) fn ec_point(v: &[u8]) -> Vec<u8> {
    use x509_parser::der_parser::der::parse_der_octetstring;
    match parse_der_octetstring(v) {
        Ok(([], o)) => o.as_slice().map(<[u8]>::to_vec).unwrap_or_default(),
        _ => v.to_vec(),
    }
}

fn rsa_matches(leaf: &X509Certificate<'_>, modulus: &[u8]) -> bool {
    let trim = |b: &[u8]| {
        let i = b.iter().position(|x| *x != 0).unwrap_or(b.len());
        b[i..].to_vec()
    };
    matches!(leaf.public_key().parsed(), Ok(x509_parser::public_key::PublicKey::RSA(r))
        if trim(r.modulus) == trim(modulus))
}

/// The HSM object of a key record (found by its fingerprint).
pub(crate) fn object_of(b: &Backend, s: BSession, k: &KeyRecord) -> Result<BObject, WorkError> {
    let found = find(b, s, &[(CKA_CLASS, AttrValue::Ulong(k.class))])
        .map_err(|e| Failed(format!("HSM: {e}")))?;
    found
        .into_iter()
        .find(|o| {
            super::facts::read(b, s, *o)
                .and_then(|f| f.fingerprint)
                .is_some_and(|f| f.as_slice() == k.fingerprint.as_slice())
        })
        .ok_or_else(|| Failed(format!("{}: not on the HSM", k.id)))
}

/// Imports certificates (leaf first, or trust anchors) to token `t`,
/// the leaf for `key` when one is given. Answers the certificates made
/// (those already on the token are left as they are).
pub fn import(
    d: &Daemon,
    t: &VToken,
    ders: &[Vec<u8>],
    key: Option<&KeyRecord>,
) -> Result<Vec<Listed>, WorkError> {
    if ders.is_empty() {
        return Err(Refused("no certificate".into()));
    }
    let b = &d.backend;
    let s = b
        .open_session(t.backend_slot, CKF_SERIAL_SESSION | CKF_RW_SESSION)
        .map_err(|e| Failed(e.to_string()))?;
    let r = (|| {
        check(d, s, ders, key)?;
        let key_names = match key {
            Some(k) => {
                let o = object_of(b, s, k)?;
                Some((k.label.clone(), attribute_bytes(b, s, o, CKA_ID)))
            }
            None => None,
        };
        let mut made = Vec::new();
        for (i, der) in ders.iter().enumerate() {
            let present = find(
                b,
                s,
                &[
                    (CKA_CLASS, AttrValue::Ulong(CKO_CERTIFICATE)),
                    (CKA_VALUE, AttrValue::Bytes(der.clone())),
                ],
            )
            .map_err(|e| Failed(format!("HSM: {e}")))?;
            if !present.is_empty() {
                continue;
            }
            let c = parse(der)?;
            let leaf = i == 0 && key_names.is_some();
            let (label, id, category) = match (&key_names, leaf) {
                (Some((label, id)), true) => (label.clone(), id.clone(), 1),
                _ => (
                    common_name(&c),
                    Sha256::digest(c.public_key().raw)[..20].to_vec(),
                    2,
                ),
            };
            let attr = |kind, value| Attribute { kind, value };
            let yes = AttrValue::Bytes(vec![1]);
            let attrs = vec![
                attr(CKA_CLASS, AttrValue::Ulong(CKO_CERTIFICATE)),
                attr(CKA_CERTIFICATE_TYPE, AttrValue::Ulong(CKC_X_509)),
                attr(CKA_TOKEN, yes.clone()),
                attr(CKA_LABEL, AttrValue::Bytes(label.into_bytes())),
                attr(CKA_ID, AttrValue::Bytes(id)),
                attr(CKA_SUBJECT, AttrValue::Bytes(c.subject().as_raw().to_vec())),
                attr(CKA_ISSUER, AttrValue::Bytes(c.issuer().as_raw().to_vec())),
                attr(CKA_SERIAL_NUMBER, AttrValue::Bytes(serial_der(&c))),
                attr(CKA_VALUE, AttrValue::Bytes(der.clone())),
                attr(CKA_CERTIFICATE_CATEGORY, AttrValue::Ulong(category)),
            ];
            let o = b
                .create_object(s, &mut CTemplate::new(&attrs))
                .map_err(|e| Failed(format!("HSM: {e}")))?;
            // An authority certificate is marked CKA_TRUSTED where the HSM
            // lets a user session do so (SoftHSM: the SO only). Set after
            // the object is made: a create SoftHSM refuses for it leaves a
            // half-made object behind.
            if category == 2 {
                let _ = b.set_attribute_value(s, o, &mut CTemplate::new(&[attr(CKA_TRUSTED, yes)]));
            }
            // Into the inventory, as kmsd's own.
            d.inventory
                .known(b, s, t.backend_slot, &t.name, o, "kmsd")
                .map_err(|e| Failed(format!("store: {e}")))?;
            made.push(listed(b, s, t, o).ok_or_else(|| Failed("made but unreadable".into()))?);
        }
        Ok(made)
    })();
    let _ = b.close_session(s);
    r
}

/// The certificate objects on every served token, soonest to expire first.
pub fn list(d: &Daemon) -> Result<Vec<Listed>, WorkError> {
    let b = &d.backend;
    let mut out = Vec::new();
    for t in d.all_tokens() {
        let s = b
            .open_session(t.backend_slot, CKF_SERIAL_SESSION)
            .map_err(|e| Failed(e.to_string()))?;
        let found = find(b, s, &[(CKA_CLASS, AttrValue::Ulong(CKO_CERTIFICATE))]);
        if let Ok(found) = &found {
            out.extend(found.iter().filter_map(|o| listed(b, s, &t, *o)));
        }
        let _ = b.close_session(s);
        found.map_err(|e| Failed(format!("HSM: {e}")))?;
    }
    out.sort_by_key(|c| c.days_left);
    Ok(out)
}

/// Removes the certificate object whose DER has this SHA-256 (hex).
pub fn remove(d: &Daemon, sha256: &str) -> Result<Listed, WorkError> {
    let b = &d.backend;
    for t in d.all_tokens() {
        let s = b
            .open_session(t.backend_slot, CKF_SERIAL_SESSION | CKF_RW_SESSION)
            .map_err(|e| Failed(e.to_string()))?;
        let r = (|| {
            let found = find(b, s, &[(CKA_CLASS, AttrValue::Ulong(CKO_CERTIFICATE))])
                .map_err(|e| Failed(format!("HSM: {e}")))?;
            for o in found {
                let Some(l) = listed(b, s, &t, o) else {
                    continue;
                };
                if l.sha256.eq_ignore_ascii_case(sha256) {
                    b.destroy_object(s, o)
                        .map_err(|e| Failed(format!("HSM: {e}")))?;
                    d.inventory.forget(t.backend_slot, o);
                    return Ok(Some(l));
                }
            }
            Ok(None)
        })();
        let _ = b.close_session(s);
        if let Some(l) = r? {
            return Ok(l);
        }
    }
    Err(Refused(format!("no certificate with SHA-256 {sha256}")))
}

/// Within how many days a certificate counts as expiring soon (status,
/// metrics).
pub const SOON_DAYS: i64 = 30;

/// Certificates expiring within `days` (expired ones included).
pub fn expiring(d: &Daemon, days: i64) -> Vec<Listed> {
    list(d)
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.days_left <= days)
        .collect()
}

fn listed(b: &Backend, s: BSession, t: &VToken, o: BObject) -> Option<Listed> {
    let der = attribute_bytes(b, s, o, CKA_VALUE);
    let c = parse(&der).ok()?;
    let not_after = c.validity().not_after.timestamp();
    let now = inventory::now() as i64;
    let (_, cat) = b.attribute_value(
        s,
        o,
        &[
            AttrQuery {
                kind: CKA_CERTIFICATE_CATEGORY,
                buf: Some(8),
            },
            AttrQuery {
                kind: CKA_TRUSTED,
                buf: Some(1),
            },
        ],
    );
    let trusted =
        matches!(cat.get(1).and_then(|a| a.value.clone()), Some(AttrValue::Bytes(b)) if b == [1]);
    let category = match cat.first().and_then(|a| a.value.clone()) {
        Some(AttrValue::Ulong(1)) => "user",
        Some(AttrValue::Ulong(2)) => "authority",
        _ => "unspecified",
    };
    Some(Listed {
        token: t.name.clone(),
        sha256: hex::encode(Sha256::digest(&der)),
        label: String::from_utf8_lossy(&attribute_bytes(b, s, o, CKA_LABEL)).into_owned(),
        id: hex::encode(attribute_bytes(b, s, o, CKA_ID)),
        subject: c.subject().to_string(),
        issuer: c.issuer().to_string(),
        serial: c.raw_serial_as_string(),
        not_after: crate::keys_cli::rfc3339(not_after.max(0) as u64),
        days_left: (not_after - now).div_euclid(86_400),
        category: category.into(),
        trusted,
    })
}

fn common_name(c: &X509Certificate<'_>) -> String {
    c.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| c.subject().to_string())
}

/// The serial number as CKA_SERIAL_NUMBER holds it: a DER INTEGER.
fn serial_der(c: &X509Certificate<'_>) -> Vec<u8> {
    let raw = c.raw_serial();
    let mut v = vec![0x02];
    if raw.len() < 128 {
        v.push(raw.len() as u8);
    } else {
        v.push(0x81);
        v.push(raw.len() as u8);
    }
    v.extend_from_slice(raw);
    v
}

/// One attribute's bytes (empty when the object has none).
pub(crate) fn attribute_bytes(
    b: &Backend,
    s: BSession,
    o: BObject,
    kind: CK_ATTRIBUTE_TYPE,
) -> Vec<u8> {
    match b.attributes(s, o, &[kind]).pop().map(|a| a.value) {
        Some(AttrValue::Bytes(v)) => v,
        _ => vec![],
    }
}

fn find(
    b: &Backend,
    s: BSession,
    template: &[(CK_ATTRIBUTE_TYPE, AttrValue)],
) -> Result<Vec<BObject>, crate::error::Error> {
    let t: Vec<Attribute> = template
        .iter()
        .map(|(kind, value)| Attribute {
            kind: *kind,
            value: value.clone(),
        })
        .collect();
    b.find(s, &t)
}
