//! What kmsd knows of an HSM object: read once when a handle is first
//! given out, kept per backend object, dropped when kmsd destroys or
//! changes it.
//!
//! The **fingerprint** recognises a token object again after a restart, for
//! every client (DESIGN.md decision 13): SHA-256 over the object's class,
//! key type and the material it shows without revealing a secret, in this
//! order, each length-prefixed:
//! - public material when it has some: RSA modulus and public exponent;
//!   EC/Edwards `CKA_EC_PARAMS` and `CKA_EC_POINT`, or `CKA_PUBLIC_KEY_INFO`
//!   on a private key; a certificate's `CKA_VALUE`;
//! - otherwise (EC private keys of a backend that keeps no public key
//!   info, secret keys): `CKA_EC_PARAMS`, `CKA_CHECK_VALUE`,
//!   `CKA_VALUE_LEN` and `CKA_ID`.
//!
//! A backend with `CKA_UNIQUE_ID` (PKCS#11 3.0) would make this exact;
//! SoftHSM 2.6 has none. Objects that show the same material are one key
//! to kmsd. A change of `CKA_ID` through kmsd moves the key's record to the
//! new fingerprint; made outside kmsd, it makes the object a new key.

use kmsp11_proto::{AttrQuery, AttrValue};
use pkcs11_sys::*;
use sha2::{Digest, Sha256};

use crate::authz::constraints;
use crate::handles::{BObject, BSession};
use crate::hsm::Backend;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    pub token: bool,
    pub private: bool,
    pub class: u64,
    pub key_type: Option<u64>,
    pub label: String,
    pub sensitive: bool,
    pub extractable: bool,
    /// Bits, when kmsd can tell.
    pub size: Option<u64>,
    /// For keys and certificates.
    pub fingerprint: Option<[u8; 32]>,
}

impl Facts {
    /// Keys: what C_DestroyObject puts in pending-destroy, and what the
    /// key lifecycle applies to.
    pub fn is_key(&self) -> bool {
        matches!(
            self.class,
            CKO_PRIVATE_KEY | CKO_SECRET_KEY | CKO_PUBLIC_KEY
        )
    }

    /// The class's name in policy (`Kms::Key.class`).
    pub fn class_name(&self) -> &'static str {
        class_name(self.class)
    }

    /// The key type's name in policy (`Kms::Key.key_type`).
    pub fn key_type_name(&self) -> String {
        self.key_type.map(key_type_name).unwrap_or_default()
    }
}

pub fn class_name(class: u64) -> &'static str {
    match class {
        CKO_PRIVATE_KEY => "private-key",
        CKO_PUBLIC_KEY => "public-key",
        CKO_SECRET_KEY => "secret-key",
        CKO_CERTIFICATE => "certificate",
        CKO_DATA => "data",
        _ => "other",
    }
}

/// `RSA`, `EC`, `AES`, ... (cryptoki's names without `CKK_`).
pub fn key_type_name(t: u64) -> String {
    if t == u64::MAX {
        return String::new();
    }
    match cryptoki::object::KeyType::try_from(t as CK_KEY_TYPE) {
        Ok(k) => k.to_string().trim_start_matches("CKK_").to_string(),
        Err(_) => format!("{t:#x}"),
    }
}

const ASKED: [CK_ATTRIBUTE_TYPE; 15] = [
    CKA_TOKEN,
    CKA_PRIVATE,
    CKA_CLASS,
    CKA_KEY_TYPE,
    CKA_LABEL,
    CKA_ID,
    CKA_SENSITIVE,
    CKA_EXTRACTABLE,
    CKA_MODULUS,
    CKA_PUBLIC_EXPONENT,
    CKA_EC_PARAMS,
    CKA_EC_POINT,
    CKA_PUBLIC_KEY_INFO,
    CKA_CHECK_VALUE,
    CKA_VALUE_LEN,
];

/// Reads an object's facts through backend session `s`; `None` when the
/// object cannot be read (gone, or not visible to that session).
pub fn read(b: &Backend, s: BSession, o: BObject) -> Option<Facts> {
    let q: Vec<AttrQuery> = ASKED
        .iter()
        .map(|&kind| AttrQuery {
            kind,
            buf: Some(64 << 10),
        })
        .collect();
    let (rv, a) = b.attribute_value(s, o, &q);
    if a.len() != ASKED.len()
        || !matches!(
            rv,
            CKR_OK | CKR_ATTRIBUTE_SENSITIVE | CKR_ATTRIBUTE_TYPE_INVALID
        )
    {
        return None;
    }
    let get = |kind: CK_ATTRIBUTE_TYPE| {
        let i = ASKED.iter().position(|k| *k == kind)?;
        a[i].value.as_ref()
    };
    let bytes = |kind| match get(kind) {
        Some(AttrValue::Bytes(b)) => b.as_slice(),
        _ => &[][..],
    };
    let ulong = |kind| match get(kind) {
        Some(AttrValue::Ulong(v)) => Some(*v),
        _ => None,
    };
    let flag = |kind| get(kind).and_then(|v| v.as_bool()) == Some(true);
    let class = ulong(CKA_CLASS)?;
    let key_type = ulong(CKA_KEY_TYPE);
    let cert_value = if class == CKO_CERTIFICATE {
        let (_, v) = b.attribute_value(
            s,
            o,
            &[AttrQuery {
                kind: CKA_VALUE,
                buf: Some(1 << 20),
            }],
        );
        match v.into_iter().next().and_then(|a| a.value) {
            Some(AttrValue::Bytes(b)) => b,
            _ => vec![],
        }
    } else {
        vec![]
    };
    let size = key_type.and_then(|t| {
        let mut t_attrs = Vec::new();
        for kind in [CKA_MODULUS, CKA_EC_PARAMS, CKA_VALUE_LEN] {
            if let Some(v) = get(kind) {
                t_attrs.push(kmsp11_proto::Attribute {
                    kind,
                    value: v.clone(),
                });
            }
        }
        constraints::size_of(t, &t_attrs)
    });
    let fingerprint = {
        let public: &[&[u8]] = &[
            bytes(CKA_MODULUS),
            bytes(CKA_PUBLIC_EXPONENT),
            bytes(CKA_EC_POINT),
            bytes(CKA_PUBLIC_KEY_INFO),
            &cert_value,
        ];
        let has_public = public.iter().any(|b| !b.is_empty());
        let keyish = matches!(
            class,
            CKO_PRIVATE_KEY | CKO_SECRET_KEY | CKO_PUBLIC_KEY | CKO_CERTIFICATE
        );
        keyish.then(|| {
            let mut h = Sha256::new();
            h.update(b"kmsp11 key fingerprint v1");
            h.update(class.to_be_bytes());
            h.update(key_type.unwrap_or(u64::MAX).to_be_bytes());
            let mut part = |b: &[u8]| {
                h.update((b.len() as u64).to_be_bytes());
                h.update(b);
            };
            if has_public {
                part(bytes(CKA_EC_PARAMS));
                for p in public {
                    part(p);
                }
            } else {
                part(bytes(CKA_EC_PARAMS));
                part(bytes(CKA_CHECK_VALUE));
                part(&ulong(CKA_VALUE_LEN).unwrap_or(0).to_be_bytes());
                part(bytes(CKA_ID));
            }
            h.finalize().into()
        })
    };
    Some(Facts {
        token: flag(CKA_TOKEN),
        private: flag(CKA_PRIVATE),
        class,
        key_type,
        label: String::from_utf8_lossy(bytes(CKA_LABEL)).into_owned(),
        sensitive: flag(CKA_SENSITIVE),
        extractable: flag(CKA_EXTRACTABLE),
        size,
        fingerprint,
    })
}
