//! Templates and mechanisms between their C form and the wire form.

use std::mem::size_of;

use kmsp11_proto::{attrs, AttrAnswer, AttrQuery, AttrValue, Attribute, MechParam, Mechanism};
use pkcs11_sys::*;

use super::ptr::bytes_in;
use crate::error::{Error, Result};

const W: usize = size_of::<CK_ULONG>();

/// Reads a template (`CK_ATTRIBUTE` array) with its values.
///
/// # Safety
/// A non-NULL `p` must point to `n` attributes whose values are readable for their lengths.
pub unsafe fn template(p: *const CK_ATTRIBUTE, n: CK_ULONG) -> Result<Option<Vec<Attribute>>> {
    if p.is_null() && n == 0 {
        return Ok(None);
    }
    // SAFETY: forwarded caller contract.
    unsafe { template_at(p, n, 0) }.map(Some)
}

unsafe fn template_at(p: *const CK_ATTRIBUTE, n: CK_ULONG, depth: usize) -> Result<Vec<Attribute>> {
    if p.is_null() {
        return if n == 0 {
            Ok(vec![])
        } else {
            Err(Error::ArgumentsBad("NULL template with non-zero count"))
        };
    }
    if n as usize > attrs::MAX_TEMPLATE_LEN || depth > attrs::MAX_TEMPLATE_DEPTH {
        return Err(Error::ArgumentsBad("template too large or nested too deep"));
    }
    // SAFETY: the caller guarantees `n` attributes at `p`.
    let raw = unsafe { std::slice::from_raw_parts(p, n as usize) };
    let mut out = Vec::with_capacity(raw.len());
    for a in raw {
        let len = a.ulValueLen;
        let v = a.pValue as *const u8;
        let value = if v.is_null() {
            AttrValue::Bytes(vec![])
        } else if attrs::is_ulong(a.type_) && len as usize == W {
            // SAFETY: `len` readable bytes at `v`, read unaligned.
            AttrValue::Ulong(unsafe { (v as *const CK_ULONG).read_unaligned() } as u64)
        } else if attrs::is_ulong_array(a.type_) && (len as usize).is_multiple_of(W) {
            let k = len as usize / W;
            // SAFETY: `k` CK_ULONGs readable at `v`, read unaligned.
            AttrValue::Ulongs(
                (0..k)
                    .map(|i| unsafe { (v as *const CK_ULONG).add(i).read_unaligned() } as u64)
                    .collect(),
            )
        } else if attrs::is_template(a.type_)
            && (len as usize).is_multiple_of(size_of::<CK_ATTRIBUTE>())
        {
            let k = (len as usize / size_of::<CK_ATTRIBUTE>()) as CK_ULONG;
            // SAFETY: a nested template of `k` attributes, same contract.
            AttrValue::Template(unsafe { template_at(v as *const CK_ATTRIBUTE, k, depth + 1) }?)
        } else {
            // SAFETY: `len` readable bytes at `v`.
            AttrValue::Bytes(unsafe { bytes_in(v, len) }?.unwrap_or_default())
        };
        out.push(Attribute {
            kind: a.type_,
            value,
        });
    }
    Ok(out)
}

/// Reads a C_GetAttributeValue template: the types and buffer sizes.
///
/// # Safety
/// A non-NULL `p` must point to `n` attributes.
pub unsafe fn queries(p: *const CK_ATTRIBUTE, n: CK_ULONG) -> Result<Vec<AttrQuery>> {
    if p.is_null() {
        return if n == 0 {
            Ok(vec![])
        } else {
            Err(Error::ArgumentsBad("NULL template with non-zero count"))
        };
    }
    if n as usize > attrs::MAX_TEMPLATE_LEN {
        return Err(Error::ArgumentsBad("template too large"));
    }
    // SAFETY: the caller guarantees `n` attributes at `p`.
    let raw = unsafe { std::slice::from_raw_parts(p, n as usize) };
    Ok(raw
        .iter()
        .map(|a| AttrQuery {
            kind: a.type_,
            buf: (!a.pValue.is_null()).then_some(a.ulValueLen as u64),
        })
        .collect())
}

/// Writes C_GetAttributeValue answers back into the caller's template.
///
/// # Safety
/// `p` must point to the same `answers.len()` attributes the queries came
/// from, with buffers of the lengths given then.
pub unsafe fn write_answers(p: *mut CK_ATTRIBUTE, answers: &[AttrAnswer]) {
    for (i, ans) in answers.iter().enumerate() {
        // SAFETY: `i` is within the caller's template.
        let a = unsafe { &mut *p.add(i) };
        let cap = a.ulValueLen as usize;
        let dst = a.pValue as *mut u8;
        match (&ans.value, dst.is_null()) {
            (Some(AttrValue::Ulong(v)), false) if cap >= W => {
                // SAFETY: the caller's buffer has `cap` >= W bytes.
                unsafe { (dst as *mut CK_ULONG).write_unaligned(*v as CK_ULONG) };
                a.ulValueLen = W as CK_ULONG;
            }
            (Some(AttrValue::Ulongs(v)), false) if cap >= v.len() * W => {
                for (k, x) in v.iter().enumerate() {
                    // SAFETY: within `cap` bytes.
                    unsafe {
                        (dst as *mut CK_ULONG)
                            .add(k)
                            .write_unaligned(*x as CK_ULONG)
                    };
                }
                a.ulValueLen = (v.len() * W) as CK_ULONG;
            }
            (Some(AttrValue::Bytes(b)), false)
                if cap >= b.len() && !attrs::is_template(a.type_) =>
            {
                // SAFETY: within `cap` bytes.
                unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), dst, b.len()) };
                a.ulValueLen = b.len() as CK_ULONG;
            }
            _ => a.ulValueLen = ans.len as CK_ULONG,
        }
    }
}

/// Reads a `CK_MECHANISM`, decoding its parameter by mechanism type.
///
/// # Safety
/// A non-NULL `p` must point to a mechanism whose parameter is readable for its length.
pub unsafe fn mechanism(p: *const CK_MECHANISM) -> Result<Mechanism> {
    if p.is_null() {
        return Err(Error::ArgumentsBad("NULL mechanism"));
    }
    // SAFETY: checked non-NULL.
    let m = unsafe { &*p };
    let len = m.ulParameterLen as usize;
    let pp = m.pParameter as *const u8;
    if pp.is_null() || len == 0 {
        return Ok(Mechanism {
            mechanism: m.mechanism,
            param: MechParam::None,
        });
    }
    let kind = param_kind(m.mechanism);
    // SAFETY: every structure is read only after its length was checked
    // against the layout, unaligned; every pointer inside it is the
    // caller's, read through `bytes_in` for the length it gives.
    let param = unsafe {
        match kind {
            Kind::Pss if len == size_of::<CK_RSA_PKCS_PSS_PARAMS>() => {
                let s = (pp as *const CK_RSA_PKCS_PSS_PARAMS).read_unaligned();
                MechParam::RsaPkcsPss {
                    hash_alg: s.hashAlg,
                    mgf: s.mgf,
                    salt_len: s.sLen,
                }
            }
            Kind::Oaep if len == size_of::<CK_RSA_PKCS_OAEP_PARAMS>() => {
                let s = (pp as *const CK_RSA_PKCS_OAEP_PARAMS).read_unaligned();
                let source_data = bytes_in(s.pSourceData as *const u8, s.ulSourceDataLen)?;
                MechParam::RsaPkcsOaep {
                    hash_alg: s.hashAlg,
                    mgf: s.mgf,
                    source: s.source,
                    source_data,
                }
            }
            Kind::Gcm if len == size_of::<CK_GCM_PARAMS>() => {
                let s = (pp as *const CK_GCM_PARAMS).read_unaligned();
                MechParam::Gcm {
                    iv: bytes_in(s.pIv, s.ulIvLen)?,
                    iv_bits: Some(s.ulIvBits),
                    aad: bytes_in(s.pAAD, s.ulAADLen)?,
                    tag_bits: s.ulTagBits,
                }
            }
            Kind::Gcm if len == 5 * W => {
                // The layout without ulIvBits: pIv, ulIvLen, pAAD, ulAADLen, ulTagBits.
                let f = |i: usize| (pp as *const usize).add(i).read_unaligned();
                MechParam::Gcm {
                    iv: bytes_in(f(0) as *const u8, f(1) as CK_ULONG)?,
                    iv_bits: None,
                    aad: bytes_in(f(2) as *const u8, f(3) as CK_ULONG)?,
                    tag_bits: f(4) as u64,
                }
            }
            Kind::Ccm if len == size_of::<CK_CCM_PARAMS>() => {
                let s = (pp as *const CK_CCM_PARAMS).read_unaligned();
                MechParam::Ccm {
                    data_len: s.ulDataLen,
                    nonce: bytes_in(s.pNonce, s.ulNonceLen)?,
                    aad: bytes_in(s.pAAD, s.ulAADLen)?,
                    mac_len: s.ulMACLen,
                }
            }
            Kind::Ecdh if len == size_of::<CK_ECDH1_DERIVE_PARAMS>() => {
                let s = (pp as *const CK_ECDH1_DERIVE_PARAMS).read_unaligned();
                MechParam::Ecdh1Derive {
                    kdf: s.kdf,
                    shared_data: bytes_in(s.pSharedData, s.ulSharedDataLen)?,
                    public_data: bytes_in(s.pPublicData, s.ulPublicDataLen)?,
                }
            }
            Kind::Eddsa if len == size_of::<CK_EDDSA_PARAMS>() => {
                let s = (pp as *const CK_EDDSA_PARAMS).read_unaligned();
                MechParam::Eddsa {
                    ph_flag: s.phFlag != 0,
                    context: bytes_in(s.pContextData, s.ulContextDataLen)?,
                }
            }
            Kind::DerivString if len == size_of::<CK_KEY_DERIVATION_STRING_DATA>() => {
                let s = (pp as *const CK_KEY_DERIVATION_STRING_DATA).read_unaligned();
                MechParam::DerivationString(bytes_in(s.pData, s.ulLen)?)
            }
            Kind::AesCbcData if len == size_of::<CK_AES_CBC_ENCRYPT_DATA_PARAMS>() => {
                let s = (pp as *const CK_AES_CBC_ENCRYPT_DATA_PARAMS).read_unaligned();
                MechParam::CbcEncryptData {
                    iv: s.iv.to_vec(),
                    data: bytes_in(s.pData, s.length)?,
                }
            }
            Kind::DesCbcData if len == size_of::<CK_DES_CBC_ENCRYPT_DATA_PARAMS>() => {
                let s = (pp as *const CK_DES_CBC_ENCRYPT_DATA_PARAMS).read_unaligned();
                MechParam::CbcEncryptData {
                    iv: s.iv.to_vec(),
                    data: bytes_in(s.pData, s.length)?,
                }
            }
            Kind::Handle if len == W => {
                MechParam::Key((pp as *const CK_ULONG).read_unaligned() as u64)
            }
            Kind::Ulong if len == W => {
                MechParam::Ulong((pp as *const CK_ULONG).read_unaligned() as u64)
            }
            Kind::Unsupported => {
                return Err(Error::MechanismParam(
                    "parameter structure with pointers not yet modelled",
                ))
            }
            Kind::Bytes => MechParam::Bytes(bytes_in(pp, len as CK_ULONG)?.unwrap_or_default()),
            // The right mechanism with a length no layout has: the backend judges
            // a zeroed buffer of that length (no pointer of ours reaches it).
            _ => MechParam::BadLength(len as u64),
        }
    };
    Ok(Mechanism {
        mechanism: m.mechanism,
        param,
    })
}

enum Kind {
    Bytes,
    Ulong,
    Handle,
    Pss,
    Oaep,
    Gcm,
    Ccm,
    Ecdh,
    Eddsa,
    DerivString,
    AesCbcData,
    DesCbcData,
    Unsupported,
}

/// Which parameter structure a mechanism takes. Anything not listed takes
/// a pointer-free parameter and travels as bytes.
fn param_kind(m: CK_MECHANISM_TYPE) -> Kind {
    match m {
        CKM_RSA_PKCS_PSS
        | CKM_SHA1_RSA_PKCS_PSS
        | CKM_SHA224_RSA_PKCS_PSS
        | CKM_SHA256_RSA_PKCS_PSS
        | CKM_SHA384_RSA_PKCS_PSS
        | CKM_SHA512_RSA_PKCS_PSS
        | 0x66..=0x69 => Kind::Pss,
        CKM_RSA_PKCS_OAEP => Kind::Oaep,
        CKM_AES_GCM => Kind::Gcm,
        CKM_AES_CCM => Kind::Ccm,
        CKM_ECDH1_DERIVE | CKM_ECDH1_COFACTOR_DERIVE => Kind::Ecdh,
        CKM_EDDSA => Kind::Eddsa,
        CKM_DES_ECB_ENCRYPT_DATA
        | CKM_DES3_ECB_ENCRYPT_DATA
        | CKM_AES_ECB_ENCRYPT_DATA
        | CKM_CONCATENATE_BASE_AND_DATA
        | CKM_CONCATENATE_DATA_AND_BASE
        | CKM_XOR_BASE_AND_DATA => Kind::DerivString,
        CKM_AES_CBC_ENCRYPT_DATA => Kind::AesCbcData,
        CKM_DES_CBC_ENCRYPT_DATA | CKM_DES3_CBC_ENCRYPT_DATA => Kind::DesCbcData,
        CKM_CONCATENATE_BASE_AND_KEY => Kind::Handle,
        CKM_MD5_HMAC_GENERAL
        | CKM_SHA_1_HMAC_GENERAL
        | CKM_SHA224_HMAC_GENERAL
        | CKM_SHA256_HMAC_GENERAL
        | CKM_SHA384_HMAC_GENERAL
        | CKM_SHA512_HMAC_GENERAL
        | CKM_AES_MAC_GENERAL
        | CKM_AES_CMAC_GENERAL
        | CKM_DES3_MAC_GENERAL
        | CKM_DES3_CMAC_GENERAL
        | CKM_EXTRACT_KEY_FROM_KEY => Kind::Ulong,
        // Structures with embedded pointers that are not modelled yet: refuse
        // rather than send a pointer the daemon would dereference.
        CKM_X9_42_DH_DERIVE
        | CKM_X9_42_DH_HYBRID_DERIVE
        | CKM_X9_42_MQV_DERIVE
        | CKM_ECMQV_DERIVE
        | CKM_RSA_AES_KEY_WRAP
        | CKM_PKCS5_PBKD2
        | 0x370..=0x3af
        | 0x402a
        | 0x402b => Kind::Unsupported,
        _ => Kind::Bytes,
    }
}
