//! Mechanisms and their parameters (PKCS#11 3.0 §2 "mechanisms" and the
//! parameter structures each mechanism defines).
//!
//! A parameter never travels as the application's raw structure: every
//! structure with an embedded pointer or object handle has its own typed
//! [`MechParam`] variant, and [`param_kind`] is the **allow-list** of which
//! variant each mechanism takes. Both ends use it: the library describes a
//! parameter only in the form its mechanism takes, and kmsd refuses anything
//! else ([`check`]) before it builds a C structure of its own for the HSM.
//! Raw bytes are accepted only for mechanisms whose parameter holds no
//! pointer and no handle, and for vendor mechanisms that kmsd's
//! configuration lists as pointer-free.

use pkcs11_sys::*;
use serde::{Deserialize, Serialize};

use crate::secret::Secret;
use crate::Handle;

/// The longest zero-filled stand-in kmsd forwards for a parameter whose
/// length fits no layout of its structure ([`MechParam::BadLength`]).
pub const MAX_BAD_LENGTH: u64 = 1024;

/// A `CK_MECHANISM` with its parameter decoded into a typed form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mechanism {
    pub mechanism: u64,
    pub param: MechParam,
}

impl MechParam {
    /// The object handles the parameter names (keys a derivation uses
    /// besides its base key); zero (`CK_INVALID_HANDLE`) is not one.
    pub fn handles(&self) -> Vec<Handle> {
        let v = match self {
            MechParam::Key(h) => vec![*h],
            MechParam::Ecmqv {
                private_data,
                public_key,
                ..
            } => vec![*private_data, *public_key],
            MechParam::X942Dh2 {
                private_data,
                public_key,
                ..
            } => vec![*private_data, public_key.unwrap_or(0)],
            MechParam::Hkdf { salt_key, .. } => vec![*salt_key],
            _ => vec![],
        };
        v.into_iter().filter(|h| *h != 0).collect()
    }
}

/// Mechanism parameters. Pointer-free parameters travel as their bytes;
/// every structure with embedded pointers or handles has its own variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MechParam {
    /// `pParameter = NULL` or `ulParameterLen = 0`.
    None,
    /// A pointer-free parameter as raw bytes: IVs, `CK_AES_CTR_PARAMS`, DH
    /// public values, ... (see [`ParamKind::Bytes`]).
    Bytes(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A single `CK_ULONG` (`CK_MAC_GENERAL_PARAMS`, `CK_EXTRACT_PARAMS`).
    Ulong(u64),
    /// A single `CK_OBJECT_HANDLE` (`CKM_CONCATENATE_BASE_AND_KEY`).
    Key(Handle),
    /// The right structure for the mechanism but of a length no layout has:
    /// kmsd forwards that many zero bytes (at most [`MAX_BAD_LENGTH`]) so the
    /// backend gives its own verdict without ever seeing a foreign pointer.
    BadLength(u64),
    /// A parameter of this many bytes that the library cannot describe (a
    /// mechanism missing from the allow-list). Never forwarded: kmsd answers
    /// `CKR_MECHANISM_INVALID` or `CKR_MECHANISM_PARAM_INVALID`.
    Undescribed(u64),
    RsaPkcsPss {
        hash_alg: u64,
        mgf: u64,
        salt_len: u64,
    },
    RsaPkcsOaep(OaepParams),
    /// `CK_GCM_PARAMS`. `iv_bits` is `Some` for the 2.40-errata layout with
    /// `ulIvBits` (48 bytes on LP64) and `None` for the layout without it
    /// (40 bytes), which Java 17 tries first.
    Gcm {
        iv: Option<Vec<u8>>,
        iv_bits: Option<u64>,
        aad: Option<Vec<u8>>,
        tag_bits: u64,
    },
    Ccm {
        data_len: u64,
        nonce: Option<Vec<u8>>,
        aad: Option<Vec<u8>>,
        mac_len: u64,
    },
    /// `CK_SALSA20_CHACHA20_POLY1305_PARAMS`.
    AeadPoly1305 {
        nonce: Option<Vec<u8>>,
        aad: Option<Vec<u8>>,
    },
    Ecdh1Derive {
        kdf: u64,
        shared_data: Option<Vec<u8>>,
        public_data: Option<Vec<u8>>,
    },
    /// `CK_ECMQV_DERIVE_PARAMS`.
    Ecmqv {
        kdf: u64,
        shared_data: Option<Vec<u8>>,
        public_data: Option<Vec<u8>>,
        private_data_len: u64,
        private_data: Handle,
        public_data2: Option<Vec<u8>>,
        public_key: Handle,
    },
    /// `CK_X9_42_DH1_DERIVE_PARAMS`.
    X942Dh1 {
        kdf: u64,
        other_info: Option<Vec<u8>>,
        public_data: Option<Vec<u8>>,
    },
    /// `CK_X9_42_DH2_DERIVE_PARAMS` (`public_key: None`) and
    /// `CK_X9_42_MQV_DERIVE_PARAMS` (`public_key: Some`).
    X942Dh2 {
        kdf: u64,
        other_info: Option<Vec<u8>>,
        public_data: Option<Vec<u8>>,
        private_data_len: u64,
        private_data: Handle,
        public_data2: Option<Vec<u8>>,
        public_key: Option<Handle>,
    },
    Eddsa {
        ph_flag: bool,
        context: Option<Vec<u8>>,
    },
    /// `CK_KEY_DERIVATION_STRING_DATA` (ECB_ENCRYPT_DATA, CONCATENATE_*_DATA, XOR_BASE_AND_DATA).
    DerivationString(Option<Vec<u8>>),
    /// `CK_AES_CBC_ENCRYPT_DATA_PARAMS` (16-byte IV) and `CK_DES_CBC_ENCRYPT_DATA_PARAMS` (8-byte IV).
    CbcEncryptData {
        iv: Vec<u8>,
        data: Option<Vec<u8>>,
    },
    /// `CK_HKDF_PARAMS`.
    Hkdf {
        extract: bool,
        expand: bool,
        prf: u64,
        salt_type: u64,
        salt: Option<Vec<u8>>,
        salt_key: Handle,
        info: Option<Vec<u8>>,
    },
    /// `CK_SP800_108_KDF_PARAMS` (counter and double-pipeline modes; `iv:
    /// None`) and `CK_SP800_108_FEEDBACK_KDF_PARAMS` (`iv: Some`). Additional
    /// derived keys are not modelled: the library refuses them.
    Sp800108 {
        prf: u64,
        data: Vec<PrfData>,
        iv: Option<Option<Vec<u8>>>,
    },
    /// `CK_RSA_AES_KEY_WRAP_PARAMS`.
    RsaAesKeyWrap {
        aes_key_bits: u64,
        oaep: Option<OaepParams>,
    },
    /// `CK_PKCS5_PBKD2_PARAMS` (2.40) / `CK_PKCS5_PBKD2_PARAMS2` (3.0): kmsd
    /// builds the layout its backend's Cryptoki version expects.
    Pbkd2 {
        salt_source: u64,
        salt_source_data: Option<Vec<u8>>,
        iterations: u64,
        prf: u64,
        prf_data: Option<Vec<u8>>,
        password: Option<Secret>,
    },
}

/// `CK_RSA_PKCS_OAEP_PARAMS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OaepParams {
    pub hash_alg: u64,
    pub mgf: u64,
    pub source: u64,
    pub source_data: Option<Vec<u8>>,
}

/// One `CK_PRF_DATA_PARAM` of an SP 800-108 KDF.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PrfData {
    /// `CK_SP800_108_ITERATION_VARIABLE`: a counter format in counter mode, none otherwise.
    IterationVariable(Option<CounterFormat>),
    /// `CK_SP800_108_OPTIONAL_COUNTER`.
    OptionalCounter(CounterFormat),
    /// `CK_SP800_108_DKM_LENGTH`.
    DkmLength {
        method: u64,
        little_endian: bool,
        width_bits: u64,
    },
    /// `CK_SP800_108_BYTE_ARRAY`.
    ByteArray(Vec<u8>),
}

/// `CK_SP800_108_COUNTER_FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterFormat {
    pub little_endian: bool,
    pub width_bits: u64,
}

/// Which parameter form a mechanism takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// Pointer-free bytes of any length.
    Bytes,
    Ulong,
    Key,
    RsaPkcsPss,
    RsaPkcsOaep,
    Gcm,
    Ccm,
    AeadPoly1305,
    Ecdh1Derive,
    Ecmqv,
    X942Dh1,
    X942Dh2,
    X942Mqv,
    Eddsa,
    DerivationString,
    AesCbcEncryptData,
    DesCbcEncryptData,
    Hkdf,
    Sp800108,
    Sp800108Feedback,
    RsaAesKeyWrap,
    Pbkd2,
}

/// The allow-list: the parameter form of every standard mechanism that takes
/// a parameter. A mechanism missing here takes no parameter as far as
/// kmsp11 is concerned: only `MechParam::None` is forwarded for it.
pub fn param_kind(m: u64) -> Option<ParamKind> {
    use ParamKind as K;
    Some(match m {
        CKM_RSA_PKCS_PSS
        | CKM_SHA1_RSA_PKCS_PSS
        | CKM_SHA224_RSA_PKCS_PSS
        | CKM_SHA256_RSA_PKCS_PSS
        | CKM_SHA384_RSA_PKCS_PSS
        | CKM_SHA512_RSA_PKCS_PSS
        | CKM_SHA3_224_RSA_PKCS_PSS
        | CKM_SHA3_256_RSA_PKCS_PSS
        | CKM_SHA3_384_RSA_PKCS_PSS
        | CKM_SHA3_512_RSA_PKCS_PSS => K::RsaPkcsPss,
        CKM_RSA_PKCS_OAEP => K::RsaPkcsOaep,
        CKM_AES_GCM => K::Gcm,
        CKM_AES_CCM => K::Ccm,
        CKM_CHACHA20_POLY1305 | CKM_SALSA20_POLY1305 => K::AeadPoly1305,
        CKM_ECDH1_DERIVE | CKM_ECDH1_COFACTOR_DERIVE => K::Ecdh1Derive,
        CKM_ECMQV_DERIVE => K::Ecmqv,
        CKM_X9_42_DH_DERIVE => K::X942Dh1,
        CKM_X9_42_DH_HYBRID_DERIVE => K::X942Dh2,
        CKM_X9_42_MQV_DERIVE => K::X942Mqv,
        CKM_EDDSA => K::Eddsa,
        CKM_DES_ECB_ENCRYPT_DATA
        | CKM_DES3_ECB_ENCRYPT_DATA
        | CKM_AES_ECB_ENCRYPT_DATA
        | CKM_CONCATENATE_BASE_AND_DATA
        | CKM_CONCATENATE_DATA_AND_BASE
        | CKM_XOR_BASE_AND_DATA => K::DerivationString,
        CKM_AES_CBC_ENCRYPT_DATA => K::AesCbcEncryptData,
        CKM_DES_CBC_ENCRYPT_DATA | CKM_DES3_CBC_ENCRYPT_DATA => K::DesCbcEncryptData,
        CKM_CONCATENATE_BASE_AND_KEY => K::Key,
        CKM_HKDF_DERIVE | CKM_HKDF_DATA => K::Hkdf,
        CKM_SP800_108_COUNTER_KDF | CKM_SP800_108_DOUBLE_PIPELINE_KDF => K::Sp800108,
        CKM_SP800_108_FEEDBACK_KDF => K::Sp800108Feedback,
        CKM_RSA_AES_KEY_WRAP => K::RsaAesKeyWrap,
        CKM_PKCS5_PBKD2 => K::Pbkd2,
        CKM_MD5_HMAC_GENERAL
        | CKM_SHA_1_HMAC_GENERAL
        | CKM_SHA224_HMAC_GENERAL
        | CKM_SHA256_HMAC_GENERAL
        | CKM_SHA384_HMAC_GENERAL
        | CKM_SHA512_HMAC_GENERAL
        | CKM_SHA512_224_HMAC_GENERAL
        | CKM_SHA512_256_HMAC_GENERAL
        | CKM_SHA3_224_HMAC_GENERAL
        | CKM_SHA3_256_HMAC_GENERAL
        | CKM_SHA3_384_HMAC_GENERAL
        | CKM_SHA3_512_HMAC_GENERAL
        | CKM_AES_MAC_GENERAL
        | CKM_AES_CMAC_GENERAL
        | CKM_DES_MAC_GENERAL
        | CKM_DES3_MAC_GENERAL
        | CKM_DES3_CMAC_GENERAL
        | CKM_EXTRACT_KEY_FROM_KEY => K::Ulong,
        // Pointer-free parameters: IVs and nonces, CK_AES_CTR_PARAMS (a
        // CK_ULONG and 16 bytes), DH public values, the optional IV of the
        // AES key-wrap family.
        CKM_AES_CBC | CKM_AES_CBC_PAD | CKM_AES_CTR | CKM_AES_CTS | CKM_AES_OFB | CKM_AES_CFB1
        | CKM_AES_CFB8 | CKM_AES_CFB64 | CKM_AES_CFB128 | CKM_AES_XTS | CKM_AES_GMAC
        | CKM_AES_KEY_WRAP | CKM_AES_KEY_WRAP_PAD | CKM_AES_KEY_WRAP_KWP | CKM_DES_CBC
        | CKM_DES_CBC_PAD | CKM_DES3_CBC | CKM_DES3_CBC_PAD | CKM_DH_PKCS_DERIVE => K::Bytes,
        _ => return None,
    })
}

impl ParamKind {
    /// Kinds whose wire form is a structure, so that a wrong length can be
    /// told apart from the right one.
    fn is_structure(self) -> bool {
        !matches!(self, ParamKind::Bytes)
    }
}

impl MechParam {
    /// The form this parameter is in; `None` for the forms that describe no
    /// structure (`None`, `BadLength`, `Undescribed`).
    pub fn kind(&self) -> Option<ParamKind> {
        use ParamKind as K;
        Some(match self {
            MechParam::None | MechParam::BadLength(_) | MechParam::Undescribed(_) => return None,
            MechParam::Bytes(_) => K::Bytes,
            MechParam::Ulong(_) => K::Ulong,
            MechParam::Key(_) => K::Key,
            MechParam::RsaPkcsPss { .. } => K::RsaPkcsPss,
            MechParam::RsaPkcsOaep(_) => K::RsaPkcsOaep,
            MechParam::Gcm { .. } => K::Gcm,
            MechParam::Ccm { .. } => K::Ccm,
            MechParam::AeadPoly1305 { .. } => K::AeadPoly1305,
            MechParam::Ecdh1Derive { .. } => K::Ecdh1Derive,
            MechParam::Ecmqv { .. } => K::Ecmqv,
            MechParam::X942Dh1 { .. } => K::X942Dh1,
            MechParam::X942Dh2 {
                public_key: None, ..
            } => K::X942Dh2,
            MechParam::X942Dh2 {
                public_key: Some(_),
                ..
            } => K::X942Mqv,
            MechParam::Eddsa { .. } => K::Eddsa,
            MechParam::DerivationString(_) => K::DerivationString,
            MechParam::CbcEncryptData { iv, .. } if iv.len() == 16 => K::AesCbcEncryptData,
            MechParam::CbcEncryptData { iv, .. } if iv.len() == 8 => K::DesCbcEncryptData,
            // Any other IV length fits neither structure.
            MechParam::CbcEncryptData { .. } => return None,
            MechParam::Hkdf { .. } => K::Hkdf,
            MechParam::Sp800108 { iv: None, .. } => K::Sp800108,
            MechParam::Sp800108 { iv: Some(_), .. } => K::Sp800108Feedback,
            MechParam::RsaAesKeyWrap { .. } => K::RsaAesKeyWrap,
            MechParam::Pbkd2 { .. } => K::Pbkd2,
        })
    }

    /// Whether this parameter carries a secret (a password).
    pub fn carries_secret(&self) -> bool {
        matches!(
            self,
            MechParam::Pbkd2 {
                password: Some(_),
                ..
            }
        )
    }
}

/// Why a parameter may not be forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParamRefusal {
    #[error("mechanism {0:#x} does not take this form of parameter")]
    WrongForm(u64),
    #[error("mechanism {0:#x} has a parameter kmsp11 cannot describe")]
    Undescribed(u64),
}

/// Whether `m`'s parameter may be turned into a C structure for the HSM.
/// `raw_vendor` says which vendor mechanisms the configuration lists as
/// taking pointer-free bytes.
pub fn check(m: &Mechanism, raw_vendor: impl Fn(u64) -> bool) -> Result<(), ParamRefusal> {
    let allowed = param_kind(m.mechanism);
    let ok = match &m.param {
        MechParam::None => true,
        MechParam::Undescribed(_) => return Err(ParamRefusal::Undescribed(m.mechanism)),
        MechParam::BadLength(n) => {
            allowed.is_some_and(ParamKind::is_structure) && *n <= MAX_BAD_LENGTH
        }
        MechParam::Bytes(_) if is_vendor(m.mechanism) => raw_vendor(m.mechanism),
        p => p.kind().is_some() && p.kind() == allowed,
    };
    if ok {
        Ok(())
    } else {
        Err(ParamRefusal::WrongForm(m.mechanism))
    }
}

pub fn is_vendor(m: u64) -> bool {
    m >= CKM_VENDOR_DEFINED
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(mechanism: u64, param: MechParam) -> Mechanism {
        Mechanism { mechanism, param }
    }

    // The attack of the security review: 48 raw bytes whose pIv is 0x10.
    #[test]
    fn raw_bytes_for_a_structure_mechanism_are_refused() {
        let mut raw = vec![0u8; 48];
        raw[0] = 0x10;
        assert_eq!(
            check(&m(CKM_AES_GCM, MechParam::Bytes(raw)), |_| true),
            Err(ParamRefusal::WrongForm(CKM_AES_GCM))
        );
        assert!(check(
            &m(CKM_AES_ECB_ENCRYPT_DATA, MechParam::Bytes(vec![1; 16])),
            |_| true
        )
        .is_err());
    }

    #[test]
    fn a_ulong_or_handle_for_a_structure_mechanism_is_refused() {
        assert!(check(&m(CKM_AES_GCM, MechParam::Ulong(0x10)), |_| true).is_err());
        assert!(check(&m(CKM_RSA_PKCS_OAEP, MechParam::Key(1)), |_| true).is_err());
        assert!(check(&m(CKM_SHA256_HMAC_GENERAL, MechParam::Ulong(16)), |_| false).is_ok());
    }

    #[test]
    fn unlisted_mechanisms_take_no_parameter() {
        assert!(check(&m(CKM_SHA256, MechParam::None), |_| false).is_ok());
        assert!(check(&m(CKM_SHA256, MechParam::Bytes(vec![1])), |_| true).is_err());
        assert!(check(&m(CKM_TLS_PRF, MechParam::BadLength(8)), |_| true).is_err());
        assert_eq!(
            check(&m(CKM_CHACHA20, MechParam::Undescribed(32)), |_| true),
            Err(ParamRefusal::Undescribed(CKM_CHACHA20))
        );
    }

    #[test]
    fn vendor_bytes_only_when_configured() {
        let v = CKM_VENDOR_DEFINED | 0x42;
        assert!(check(&m(v, MechParam::Bytes(vec![1, 2])), |x| x == v).is_ok());
        assert!(check(&m(v, MechParam::Bytes(vec![1, 2])), |_| false).is_err());
        assert!(check(&m(v, MechParam::None), |_| false).is_ok());
    }

    #[test]
    fn bad_length_is_bounded_and_only_for_structures() {
        assert!(check(&m(CKM_AES_GCM, MechParam::BadLength(44)), |_| false).is_ok());
        assert!(check(&m(CKM_AES_GCM, MechParam::BadLength(1 << 20)), |_| false).is_err());
        assert!(check(&m(CKM_AES_CBC, MechParam::BadLength(4)), |_| false).is_err());
    }

    #[test]
    fn each_variant_matches_its_mechanisms_only() {
        let dh2 = MechParam::X942Dh2 {
            kdf: 1,
            other_info: None,
            public_data: None,
            private_data_len: 0,
            private_data: 0,
            public_data2: None,
            public_key: None,
        };
        assert!(check(&m(CKM_X9_42_DH_HYBRID_DERIVE, dh2.clone()), |_| false).is_ok());
        assert!(check(&m(CKM_X9_42_MQV_DERIVE, dh2), |_| false).is_err());
        let feedback = MechParam::Sp800108 {
            prf: CKM_SHA256_HMAC,
            data: vec![],
            iv: Some(None),
        };
        assert!(check(&m(CKM_SP800_108_FEEDBACK_KDF, feedback.clone()), |_| false).is_ok());
        assert!(check(&m(CKM_SP800_108_COUNTER_KDF, feedback), |_| false).is_err());
        let cbc = |n: usize| MechParam::CbcEncryptData {
            iv: vec![0; n],
            data: None,
        };
        assert!(check(&m(CKM_AES_CBC_ENCRYPT_DATA, cbc(16)), |_| false).is_ok());
        assert!(check(&m(CKM_AES_CBC_ENCRYPT_DATA, cbc(8)), |_| false).is_err());
        assert!(check(&m(CKM_DES3_CBC_ENCRYPT_DATA, cbc(8)), |_| false).is_ok());
        assert!(check(&m(CKM_DES3_CBC_ENCRYPT_DATA, cbc(12)), |_| false).is_err());
    }
}
