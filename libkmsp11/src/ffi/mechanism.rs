//! Mechanisms from their C form to the wire form (PKCS#11 3.0 §2, the
//! parameter structures). The form of each parameter comes from proto's
//! allow-list; the application's structure itself never travels.

use std::mem::size_of;

use kmsp11_proto::mechanism::{is_vendor, param_kind, CounterFormat, ParamKind, PrfData};
use kmsp11_proto::{attrs, MechParam, Mechanism, OaepParams, Secret};
use pkcs11_sys::*;

use super::ptr::{array, bytes_in};
use crate::error::{Error, Result};

const W: usize = size_of::<CK_ULONG>();

/// Reads a `CK_MECHANISM`, decoding its parameter in the form the proto
/// allow-list gives its mechanism. A parameter that fits no known form is
/// described only by its length (`MechParam::Undescribed`): the
/// application's own bytes, pointers among them, never leave the process.
/// `raw_vendor` says which vendor mechanisms kmsd takes as raw bytes.
///
/// # Safety
/// A non-NULL `p` must point to a mechanism whose parameter is readable for
/// its length, with every pointer inside it valid for the length it gives.
pub unsafe fn mechanism(
    p: *const CK_MECHANISM,
    raw_vendor: impl Fn(u64) -> bool,
) -> Result<Mechanism> {
    if p.is_null() {
        return Err(Error::ArgumentsBad("NULL mechanism"));
    }
    // SAFETY: checked non-NULL.
    let m = unsafe { &*p };
    let len = m.ulParameterLen as usize;
    let pp = m.pParameter as *const u8;
    let param = if pp.is_null() || len == 0 {
        MechParam::None
    } else {
        match param_kind(m.mechanism) {
            Some(kind) => {
                // SAFETY: forwarded caller contract.
                unsafe { structure(kind, pp, len) }?
            }
            None if is_vendor(m.mechanism) && raw_vendor(m.mechanism) => {
                // SAFETY: `len` readable bytes.
                MechParam::Bytes(unsafe { bytes_in(pp, len as CK_ULONG) }?.unwrap_or_default())
            }
            None => MechParam::Undescribed(len as u64),
        }
    };
    Ok(Mechanism {
        mechanism: m.mechanism,
        param,
    })
}

/// Reads `len` bytes at `pp` as the structure `kind` names. A length that
/// fits no layout of that structure becomes `MechParam::BadLength`.
///
/// # Safety
/// `pp` points to `len` readable bytes; the pointers inside are the caller's.
unsafe fn structure(kind: ParamKind, pp: *const u8, len: usize) -> Result<MechParam> {
    use ParamKind as K;
    /// Reads the structure unaligned when the length is exactly its size.
    macro_rules! read {
        ($t:ty) => {
            // Used inside the unsafe block below: `len` == size_of::<$t>() readable bytes.
            if len == size_of::<$t>() {
                (pp as *const $t).read_unaligned()
            } else {
                return Ok(MechParam::BadLength(len as u64));
            }
        };
    }
    /// `CK_X9_42_DH2_DERIVE_PARAMS` and the MQV structure that extends it.
    macro_rules! x942_2 {
        ($s:expr, $public_key:expr) => {
            MechParam::X942Dh2 {
                kdf: $s.kdf,
                other_info: bytes_in($s.pOtherInfo, $s.ulOtherInfoLen)?,
                public_data: bytes_in($s.pPublicData, $s.ulPublicDataLen)?,
                private_data_len: $s.ulPrivateDataLen,
                private_data: $s.hPrivateData,
                public_data2: bytes_in($s.pPublicData2, $s.ulPublicDataLen2)?,
                public_key: $public_key,
            }
        };
    }
    // SAFETY: each structure is read only at its exact size (`read!`); every
    // pointer inside it is the caller's, read by `bytes_in` for the length
    // the structure gives (NULL with a length is refused there).
    let param = unsafe {
        match kind {
            K::Bytes => MechParam::Bytes(bytes_in(pp, len as CK_ULONG)?.unwrap_or_default()),
            K::Ulong => MechParam::Ulong(read!(CK_ULONG) as u64),
            K::Key => MechParam::Key(read!(CK_OBJECT_HANDLE) as u64),
            K::RsaPkcsPss => {
                let s = read!(CK_RSA_PKCS_PSS_PARAMS);
                MechParam::RsaPkcsPss {
                    hash_alg: s.hashAlg,
                    mgf: s.mgf,
                    salt_len: s.sLen,
                }
            }
            K::RsaPkcsOaep => MechParam::RsaPkcsOaep(oaep(&read!(CK_RSA_PKCS_OAEP_PARAMS))?),
            K::Gcm if len == 5 * W => {
                // The layout without ulIvBits: pIv, ulIvLen, pAAD, ulAADLen, ulTagBits.
                let f = |i: usize| (pp as *const usize).add(i).read_unaligned();
                MechParam::Gcm {
                    iv: bytes_in(f(0) as *const u8, f(1) as CK_ULONG)?,
                    iv_bits: None,
                    aad: bytes_in(f(2) as *const u8, f(3) as CK_ULONG)?,
                    tag_bits: f(4) as u64,
                }
            }
            K::Gcm => {
                let s = read!(CK_GCM_PARAMS);
                MechParam::Gcm {
                    iv: bytes_in(s.pIv, s.ulIvLen)?,
                    iv_bits: Some(s.ulIvBits),
                    aad: bytes_in(s.pAAD, s.ulAADLen)?,
                    tag_bits: s.ulTagBits,
                }
            }
            K::Ccm => {
                let s = read!(CK_CCM_PARAMS);
                MechParam::Ccm {
                    data_len: s.ulDataLen,
                    nonce: bytes_in(s.pNonce, s.ulNonceLen)?,
                    aad: bytes_in(s.pAAD, s.ulAADLen)?,
                    mac_len: s.ulMACLen,
                }
            }
            K::AeadPoly1305 => {
                let s = read!(CK_SALSA20_CHACHA20_POLY1305_PARAMS);
                MechParam::AeadPoly1305 {
                    nonce: bytes_in(s.pNonce, s.ulNonceLen)?,
                    aad: bytes_in(s.pAAD, s.ulAADLen)?,
                }
            }
            K::Ecdh1Derive => {
                let s = read!(CK_ECDH1_DERIVE_PARAMS);
                MechParam::Ecdh1Derive {
                    kdf: s.kdf,
                    shared_data: bytes_in(s.pSharedData, s.ulSharedDataLen)?,
                    public_data: bytes_in(s.pPublicData, s.ulPublicDataLen)?,
                }
            }
            K::Ecmqv => {
                let s = read!(CK_ECMQV_DERIVE_PARAMS);
                MechParam::Ecmqv {
                    kdf: s.kdf,
                    shared_data: bytes_in(s.pSharedData, s.ulSharedDataLen)?,
                    public_data: bytes_in(s.pPublicData, s.ulPublicDataLen)?,
                    private_data_len: s.ulPrivateDataLen,
                    private_data: s.hPrivateData,
                    public_data2: bytes_in(s.pPublicData2, s.ulPublicDataLen2)?,
                    public_key: s.publicKey,
                }
            }
            K::X942Dh1 => {
                let s = read!(CK_X9_42_DH1_DERIVE_PARAMS);
                MechParam::X942Dh1 {
                    kdf: s.kdf,
                    other_info: bytes_in(s.pOtherInfo, s.ulOtherInfoLen)?,
                    public_data: bytes_in(s.pPublicData, s.ulPublicDataLen)?,
                }
            }
            K::X942Dh2 => {
                let s = read!(CK_X9_42_DH2_DERIVE_PARAMS);
                x942_2!(s, None)
            }
            K::X942Mqv => {
                let s = read!(CK_X9_42_MQV_DERIVE_PARAMS);
                x942_2!(s, Some(s.publicKey))
            }
            K::Eddsa => {
                let s = read!(CK_EDDSA_PARAMS);
                MechParam::Eddsa {
                    ph_flag: s.phFlag != 0,
                    context: bytes_in(s.pContextData, s.ulContextDataLen)?,
                }
            }
            K::DerivationString => {
                let s = read!(CK_KEY_DERIVATION_STRING_DATA);
                MechParam::DerivationString(bytes_in(s.pData, s.ulLen)?)
            }
            K::AesCbcEncryptData => {
                let s = read!(CK_AES_CBC_ENCRYPT_DATA_PARAMS);
                MechParam::CbcEncryptData {
                    iv: s.iv.to_vec(),
                    data: bytes_in(s.pData, s.length)?,
                }
            }
            K::DesCbcEncryptData => {
                let s = read!(CK_DES_CBC_ENCRYPT_DATA_PARAMS);
                MechParam::CbcEncryptData {
                    iv: s.iv.to_vec(),
                    data: bytes_in(s.pData, s.length)?,
                }
            }
            K::Hkdf => {
                let s = read!(CK_HKDF_PARAMS);
                MechParam::Hkdf {
                    extract: s.bExtract != 0,
                    expand: s.bExpand != 0,
                    prf: s.prfHashMechanism,
                    salt_type: s.ulSaltType,
                    salt: bytes_in(s.pSalt, s.ulSaltLen)?,
                    salt_key: s.hSaltKey,
                    info: bytes_in(s.pInfo, s.ulInfoLen)?,
                }
            }
            K::Sp800108 => {
                let s = read!(CK_SP800_108_KDF_PARAMS);
                no_additional_keys(s.ulAdditionalDerivedKeys)?;
                MechParam::Sp800108 {
                    prf: s.prfType,
                    data: prf_data(s.pDataParams, s.ulNumberOfDataParams)?,
                    iv: None,
                }
            }
            K::Sp800108Feedback => {
                let s = read!(CK_SP800_108_FEEDBACK_KDF_PARAMS);
                no_additional_keys(s.ulAdditionalDerivedKeys)?;
                MechParam::Sp800108 {
                    prf: s.prfType,
                    data: prf_data(s.pDataParams, s.ulNumberOfDataParams)?,
                    iv: Some(bytes_in(s.pIV, s.ulIVLen)?),
                }
            }
            K::RsaAesKeyWrap => {
                let s = read!(CK_RSA_AES_KEY_WRAP_PARAMS);
                let oaep = if s.pOAEPParams.is_null() {
                    None
                } else {
                    Some(oaep(&s.pOAEPParams.read_unaligned())?)
                };
                MechParam::RsaAesKeyWrap {
                    aes_key_bits: s.ulAESKeyBits,
                    oaep,
                }
            }
            K::Pbkd2 => {
                // The 2.40 layout this library's interface speaks: the
                // password length travels through a pointer.
                let s = read!(CK_PKCS5_PBKD2_PARAMS);
                let password = if s.pPassword.is_null() {
                    None
                } else if s.ulPasswordLen.is_null() {
                    return Err(Error::ArgumentsBad("PBKD2 password without a length"));
                } else {
                    let n = s.ulPasswordLen.read_unaligned();
                    bytes_in(s.pPassword, n)?.map(Secret::new)
                };
                MechParam::Pbkd2 {
                    salt_source: s.saltSource,
                    salt_source_data: bytes_in(
                        s.pSaltSourceData as *const u8,
                        s.ulSaltSourceDataLen,
                    )?,
                    iterations: s.iterations,
                    prf: s.prf,
                    prf_data: bytes_in(s.pPrfData as *const u8, s.ulPrfDataLen)?,
                    password,
                }
            }
        }
    };
    Ok(param)
}

/// # Safety
/// The OAEP structure's source pointer is valid for its length.
unsafe fn oaep(s: &CK_RSA_PKCS_OAEP_PARAMS) -> Result<OaepParams> {
    Ok(OaepParams {
        hash_alg: s.hashAlg,
        mgf: s.mgf,
        source: s.source,
        // SAFETY: forwarded caller contract.
        source_data: unsafe { bytes_in(s.pSourceData as *const u8, s.ulSourceDataLen) }?,
    })
}

/// SP 800-108 additional derived keys return handles through caller
/// pointers; kmsp11 does not model them.
fn no_additional_keys(n: CK_ULONG) -> Result<()> {
    if n == 0 {
        Ok(())
    } else {
        Err(Error::MechanismParam(
            "SP 800-108 additional derived keys are not supported",
        ))
    }
}

/// Reads the `CK_PRF_DATA_PARAM` array of an SP 800-108 KDF.
///
/// # Safety
/// A non-NULL `p` points to `n` entries whose values are valid for their lengths.
unsafe fn prf_data(p: *const CK_PRF_DATA_PARAM, n: CK_ULONG) -> Result<Vec<PrfData>> {
    let too_many = Error::MechanismParam("too many SP 800-108 data parameters");
    // SAFETY: `n` entries at `p`.
    let raw = unsafe { array(p, n, attrs::MAX_TEMPLATE_LEN, too_many) }?;
    raw.iter()
        .map(|d| {
            let v = d.pValue as *const u8;
            let len = d.ulValueLen as usize;
            // SAFETY: each format structure is read only at its exact size.
            let counter = || unsafe {
                (!v.is_null() && len == size_of::<CK_SP800_108_COUNTER_FORMAT>()).then(|| {
                    let c = (v as *const CK_SP800_108_COUNTER_FORMAT).read_unaligned();
                    CounterFormat {
                        little_endian: c.bLittleEndian != 0,
                        width_bits: c.ulWidthInBits,
                    }
                })
            };
            Ok(match d.type_ {
                CK_SP800_108_ITERATION_VARIABLE if v.is_null() => PrfData::IterationVariable(None),
                CK_SP800_108_ITERATION_VARIABLE => PrfData::IterationVariable(Some(
                    counter().ok_or(Error::MechanismParam("bad counter format"))?,
                )),
                CK_SP800_108_OPTIONAL_COUNTER => PrfData::OptionalCounter(
                    counter().ok_or(Error::MechanismParam("bad counter format"))?,
                ),
                CK_SP800_108_DKM_LENGTH
                    if !v.is_null() && len == size_of::<CK_SP800_108_DKM_LENGTH_FORMAT>() =>
                {
                    // SAFETY: exact size checked.
                    let f =
                        unsafe { (v as *const CK_SP800_108_DKM_LENGTH_FORMAT).read_unaligned() };
                    PrfData::DkmLength {
                        method: f.dkmLengthMethod,
                        little_endian: f.bLittleEndian != 0,
                        width_bits: f.ulWidthInBits,
                    }
                }
                CK_SP800_108_BYTE_ARRAY => PrfData::ByteArray(
                    // SAFETY: `len` readable bytes at `v`.
                    unsafe { bytes_in(v, len as CK_ULONG) }?.unwrap_or_default(),
                ),
                _ => return Err(Error::MechanismParam("unknown SP 800-108 data parameter")),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ptr;

    fn cmech<T>(mechanism: CK_MECHANISM_TYPE, p: &mut T) -> CK_MECHANISM {
        CK_MECHANISM {
            mechanism,
            pParameter: (p as *mut T).cast(),
            ulParameterLen: size_of::<T>() as CK_ULONG,
        }
    }

    fn read(m: &CK_MECHANISM, raw_vendor: bool) -> Result<MechParam> {
        // SAFETY: every mechanism below points at live, correctly sized values.
        unsafe { mechanism(m, |_| raw_vendor) }.map(|m| m.param)
    }

    #[test]
    fn modelled_structures_are_read_with_their_pointers() {
        let mut nonce = [1u8; 12];
        let mut aad = [2u8; 3];
        let mut p = CK_SALSA20_CHACHA20_POLY1305_PARAMS {
            pNonce: nonce.as_mut_ptr(),
            ulNonceLen: 12,
            pAAD: aad.as_mut_ptr(),
            ulAADLen: 3,
        };
        assert_eq!(
            read(&cmech(CKM_CHACHA20_POLY1305, &mut p), false).unwrap(),
            MechParam::AeadPoly1305 {
                nonce: Some(vec![1; 12]),
                aad: Some(vec![2; 3]),
            }
        );
        let mut info = *b"info";
        let mut h = CK_HKDF_PARAMS {
            bExtract: 1,
            bExpand: 1,
            prfHashMechanism: CKM_SHA256,
            ulSaltType: CKF_HKDF_SALT_KEY,
            pSalt: ptr::null_mut(),
            ulSaltLen: 0,
            hSaltKey: 77,
            pInfo: info.as_mut_ptr(),
            ulInfoLen: 4,
        };
        assert!(matches!(
            read(&cmech(CKM_HKDF_DERIVE, &mut h), false).unwrap(),
            MechParam::Hkdf { salt_key: 77, info: Some(ref i), .. } if i == b"info"
        ));
    }

    // The application's own bytes never leave the process for a parameter
    // the library cannot describe: only its length does.
    #[test]
    fn unlisted_parameters_are_described_by_their_length_only() {
        let mut p = CK_CHACHA20_PARAMS {
            pBlockCounter: 0x1000 as *mut u8,
            blockCounterBits: 32,
            pNonce: 0x2000 as *mut u8,
            ulNonceBits: 96,
        };
        let m = cmech(CKM_CHACHA20, &mut p);
        assert_eq!(read(&m, true).unwrap(), MechParam::Undescribed(32));
        let mut v = [5u8; 8];
        let vendor = CK_MECHANISM {
            mechanism: CKM_VENDOR_DEFINED | 7,
            pParameter: v.as_mut_ptr().cast(),
            ulParameterLen: 8,
        };
        assert_eq!(read(&vendor, false).unwrap(), MechParam::Undescribed(8));
        assert_eq!(read(&vendor, true).unwrap(), MechParam::Bytes(vec![5; 8]));
    }

    #[test]
    fn both_gcm_layouts_and_wrong_lengths() {
        let mut iv = [9u8; 12];
        let mut g48 = CK_GCM_PARAMS {
            pIv: iv.as_mut_ptr(),
            ulIvLen: 12,
            ulIvBits: 96,
            pAAD: ptr::null_mut(),
            ulAADLen: 0,
            ulTagBits: 128,
        };
        assert!(matches!(
            read(&cmech(CKM_AES_GCM, &mut g48), false).unwrap(),
            MechParam::Gcm {
                iv_bits: Some(96),
                ..
            }
        ));
        let mut g40 = [iv.as_mut_ptr() as usize, 12, 0, 0, 128];
        let m = CK_MECHANISM {
            mechanism: CKM_AES_GCM,
            pParameter: g40.as_mut_ptr().cast(),
            ulParameterLen: 40,
        };
        assert!(matches!(
            read(&m, false).unwrap(),
            MechParam::Gcm {
                iv_bits: None,
                tag_bits: 128,
                ..
            }
        ));
        let odd = CK_MECHANISM {
            ulParameterLen: 44,
            ..m
        };
        assert_eq!(read(&odd, false).unwrap(), MechParam::BadLength(44));
    }

    // Expect CKR_ARGUMENTS_BAD for a NULL pointer with a non-zero length inside a structure.
    #[test]
    fn null_with_a_length_inside_a_structure_is_arguments_bad() {
        let mut p = CK_ECDH1_DERIVE_PARAMS {
            kdf: CKD_NULL,
            ulSharedDataLen: 0,
            pSharedData: ptr::null_mut(),
            ulPublicDataLen: 65,
            pPublicData: ptr::null_mut(),
        };
        assert!(matches!(
            read(&cmech(CKM_ECDH1_DERIVE, &mut p), false),
            Err(Error::ArgumentsBad(_))
        ));
    }
}
