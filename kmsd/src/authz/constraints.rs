//! Creation constraints: what kmsd requires of every key created through
//! it, whatever the policy permits. Private and secret keys are sensitive
//! and not extractable unless policy permits `export` of the new key
//! (missing attributes are added; a template asking for the opposite is
//! refused with `CKR_ATTRIBUTE_VALUE_INVALID`); keys below the configured
//! minimum size are refused with `CKR_KEY_SIZE_RANGE`.

use kmsp11_proto::{attrs, AttrValue, Attribute};
use pkcs11_sys::*;
use serde::Deserialize;

/// `[policy]` minimum key sizes, in bits.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MinSizes {
    pub min_rsa_bits: u64,
    pub min_ec_bits: u64,
    pub min_aes_bits: u64,
}

impl Default for MinSizes {
    fn default() -> MinSizes {
        MinSizes {
            min_rsa_bits: 2048,
            min_ec_bits: 256,
            min_aes_bits: 128,
        }
    }
}

/// Why a template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("{what} is {bits} bits, below the minimum of {min} ([policy] {setting})")]
    TooSmall {
        what: &'static str,
        bits: u64,
        min: u64,
        setting: &'static str,
    },
    #[error("{0} may not be set this way unless policy permits \"export\" of the key")]
    Exportable(&'static str),
}

impl Violation {
    pub fn rv(&self) -> CK_RV {
        match self {
            Violation::TooSmall { .. } => CKR_KEY_SIZE_RANGE,
            Violation::Exportable(_) => CKR_ATTRIBUTE_VALUE_INVALID,
        }
    }

    /// The rule's name for audit records.
    pub fn rule(&self) -> &'static str {
        match self {
            Violation::TooSmall { setting, .. } => setting,
            Violation::Exportable(_) => "non-exportable",
        }
    }
}

fn ulong(t: &[Attribute], kind: u64) -> Option<u64> {
    t.iter()
        .find(|a| a.kind == kind)
        .and_then(|a| match &a.value {
            AttrValue::Ulong(v) => Some(*v),
            // A CK_ULONG sent as bytes (little-endian, the library's platform).
            AttrValue::Bytes(b) if b.len() == 8 => {
                Some(u64::from_le_bytes(b[..8].try_into().ok()?))
            }
            _ => None,
        })
}

fn bytes(t: &[Attribute], kind: u64) -> Option<&[u8]> {
    t.iter()
        .find(|a| a.kind == kind)
        .and_then(|a| match &a.value {
            AttrValue::Bytes(b) => Some(b.as_slice()),
            _ => None,
        })
}

/// The field size in bits of the curve in `CKA_EC_PARAMS` (a named
/// curve's OID, or a printable curve name as PKCS#11 3.0 allows for
/// Edwards and Montgomery curves); 0 when unknown. Ed25519 and X25519
/// count as 256, as their security equals P-256's.
pub fn curve_bits(params: &[u8]) -> u64 {
    const CURVES: &[(&[u8], u64)] = &[
        (
            &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x01],
            192,
        ),
        (&[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x21], 224),
        (
            &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
            256,
        ),
        (&[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a], 256),
        (&[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22], 384),
        (&[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23], 521),
        (
            &[
                0x06, 0x09, 0x2b, 0x24, 0x03, 0x03, 0x02, 0x08, 0x01, 0x01, 0x07,
            ],
            256,
        ),
        (
            &[
                0x06, 0x09, 0x2b, 0x24, 0x03, 0x03, 0x02, 0x08, 0x01, 0x01, 0x0b,
            ],
            384,
        ),
        (
            &[
                0x06, 0x09, 0x2b, 0x24, 0x03, 0x03, 0x02, 0x08, 0x01, 0x01, 0x0d,
            ],
            512,
        ),
        (&[0x06, 0x03, 0x2b, 0x65, 0x6e], 256),
        (&[0x06, 0x03, 0x2b, 0x65, 0x70], 256),
        (&[0x06, 0x03, 0x2b, 0x65, 0x6f], 448),
        (&[0x06, 0x03, 0x2b, 0x65, 0x71], 448),
    ];
    if let Some((_, bits)) = CURVES.iter().find(|(oid, _)| *oid == params) {
        return *bits;
    }
    // PrintableString curve names.
    match params.get(2..) {
        Some(b"edwards25519" | b"curve25519") if params[0] == 0x13 => 256,
        Some(b"edwards448" | b"curve448") if params[0] == 0x13 => 448,
        _ => 0,
    }
}

/// A key's size in bits from what a template (or an object) says: RSA
/// from `CKA_MODULUS_BITS` or the modulus, EC from the curve, secret keys
/// from `CKA_VALUE_LEN` or the value. `None` when the template does not say.
pub fn size_of(key_type: u64, t: &[Attribute]) -> Option<u64> {
    match key_type {
        CKK_RSA => ulong(t, CKA_MODULUS_BITS).or_else(|| {
            bytes(t, CKA_MODULUS).map(|m| {
                let lead = m.iter().take_while(|b| **b == 0).count();
                ((m.len() - lead) * 8) as u64
            })
        }),
        CKK_EC | CKK_EC_EDWARDS | CKK_EC_MONTGOMERY => bytes(t, CKA_EC_PARAMS).map(curve_bits),
        // CKA_VALUE_LEN is the client's: at most u64::MAX bits, never a
        // product that wraps to a small size.
        _ => ulong(t, CKA_VALUE_LEN)
            .map(|n| n.saturating_mul(8))
            .or_else(|| bytes(t, CKA_VALUE).map(|v| (v.len() * 8) as u64)),
    }
}

/// The key type a generation mechanism makes, if it names one.
pub fn generated_type(mechanism: u64) -> Option<u64> {
    Some(match mechanism {
        CKM_RSA_PKCS_KEY_PAIR_GEN | CKM_RSA_X9_31_KEY_PAIR_GEN => CKK_RSA,
        CKM_EC_KEY_PAIR_GEN => CKK_EC,
        CKM_EC_EDWARDS_KEY_PAIR_GEN => CKK_EC_EDWARDS,
        CKM_EC_MONTGOMERY_KEY_PAIR_GEN => CKK_EC_MONTGOMERY,
        CKM_AES_KEY_GEN => CKK_AES,
        CKM_DES3_KEY_GEN => CKK_DES3,
        CKM_GENERIC_SECRET_KEY_GEN => CKK_GENERIC_SECRET,
        CKM_DH_PKCS_KEY_PAIR_GEN => CKK_DH,
        _ => return None,
    })
}

impl MinSizes {
    /// Refuses a key of `key_type` and `bits` below its minimum. Key types
    /// without a minimum pass.
    pub fn check(&self, key_type: u64, bits: Option<u64>) -> Result<(), Violation> {
        let (what, min, setting) = match key_type {
            CKK_RSA => ("RSA modulus", self.min_rsa_bits, "min_rsa_bits"),
            CKK_EC | CKK_EC_EDWARDS | CKK_EC_MONTGOMERY => {
                ("EC curve", self.min_ec_bits, "min_ec_bits")
            }
            CKK_AES => ("AES key", self.min_aes_bits, "min_aes_bits"),
            _ => return Ok(()),
        };
        // A size the template does not state is the HSM's default: the
        // HSM refuses a template it cannot complete.
        let Some(bits) = bits else { return Ok(()) };
        if bits < min {
            return Err(Violation::TooSmall {
                what,
                bits,
                min,
                setting,
            });
        }
        Ok(())
    }
}

/// Makes a private or secret key's template sensitive and not extractable
/// (adding what is missing), or refuses one that asks otherwise.
/// `exportable`: policy permits `export` of this key, and the template
/// passes unchanged.
pub fn non_exportable(t: &mut Vec<Attribute>, exportable: bool) -> Result<(), Violation> {
    if exportable {
        return Ok(());
    }
    if attrs::flag(t, CKA_SENSITIVE) == Some(false) {
        return Err(Violation::Exportable("CKA_SENSITIVE=false"));
    }
    if attrs::flag(t, CKA_EXTRACTABLE) == Some(true) {
        return Err(Violation::Exportable("CKA_EXTRACTABLE=true"));
    }
    for (kind, value) in [(CKA_SENSITIVE, 1u8), (CKA_EXTRACTABLE, 0u8)] {
        if !t.iter().any(|a| a.kind == kind) {
            t.push(Attribute {
                kind,
                value: AttrValue::Bytes(vec![value]),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(kind: u64, value: AttrValue) -> Attribute {
        Attribute { kind, value }
    }

    #[test]
    fn sizes_from_templates() {
        let m = MinSizes::default();
        let rsa1024 = [a(CKA_MODULUS_BITS, AttrValue::Ulong(1024))];
        assert_eq!(
            m.check(CKK_RSA, size_of(CKK_RSA, &rsa1024))
                .unwrap_err()
                .rv(),
            CKR_KEY_SIZE_RANGE
        );
        let rsa2048 = [a(CKA_MODULUS, AttrValue::Bytes(vec![0xc1; 256]))];
        assert!(m.check(CKK_RSA, size_of(CKK_RSA, &rsa2048)).is_ok());
        let p256 = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
        let ec = [a(CKA_EC_PARAMS, AttrValue::Bytes(p256.to_vec()))];
        assert!(m.check(CKK_EC, size_of(CKK_EC, &ec)).is_ok());
        let p192 = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x01];
        let ec = [a(CKA_EC_PARAMS, AttrValue::Bytes(p192.to_vec()))];
        assert!(m.check(CKK_EC, size_of(CKK_EC, &ec)).is_err());
        let aes64 = [a(CKA_VALUE_LEN, AttrValue::Ulong(8))];
        assert!(m.check(CKK_AES, size_of(CKK_AES, &aes64)).is_err());
        assert!(m.check(CKK_AES, None).is_ok());
        let mut ed = b"\x13\x0cedwards25519".to_vec();
        assert_eq!(curve_bits(&ed), 256);
        ed[0] = 0x04;
        assert_eq!(curve_bits(&ed), 0);
    }

    // Regression (found by the dispatch fuzz target): a client's
    // CKA_VALUE_LEN near u64::MAX overflowed the size in bits (a panic in
    // debug builds, a small wrapped size in release).
    #[test]
    fn huge_value_len_is_a_huge_size() {
        let m = MinSizes::default();
        for n in [u64::MAX, u64::MAX / 8 + 1, 0x2000_0000_0000_0020] {
            let t = [a(CKA_VALUE_LEN, AttrValue::Ulong(n))];
            assert_eq!(size_of(CKK_AES, &t), Some(u64::MAX), "{n:#x}");
            assert!(m.check(CKK_AES, size_of(CKK_AES, &t)).is_ok());
        }
    }

    #[test]
    fn keys_made_non_exportable() {
        let mut t = vec![];
        non_exportable(&mut t, false).unwrap();
        assert_eq!(attrs::flag(&t, CKA_SENSITIVE), Some(true));
        assert_eq!(attrs::flag(&t, CKA_EXTRACTABLE), Some(false));
        let mut t = vec![a(CKA_EXTRACTABLE, AttrValue::Bytes(vec![1]))];
        assert_eq!(
            non_exportable(&mut t, false).unwrap_err().rv(),
            CKR_ATTRIBUTE_VALUE_INVALID
        );
        assert!(non_exportable(&mut t, true).is_ok());
        assert_eq!(t.len(), 1);
    }
}
