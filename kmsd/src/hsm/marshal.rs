//! Owned C structures for templates and mechanisms. Each value keeps every
//! buffer its pointers refer to, so the pointers stay valid for as long as
//! the value lives and the module never sees a pointer from the network.

use std::any::Any;
use std::ptr;

use kmsp11_proto::mechanism::{CounterFormat, PrfData, MAX_BAD_LENGTH};
use kmsp11_proto::{attrs, AttrValue, Attribute, MechParam, Mechanism, OaepParams, Secret};
use pkcs11_sys::*;
use zeroize::Zeroizing;

/// A `CK_ATTRIBUTE` array and the storage it points into.
#[derive(Default)]
pub struct CTemplate {
    null: bool,
    attrs: Vec<CK_ATTRIBUTE>,
    _bytes: Vec<Vec<u8>>,
    _ulongs: Vec<Box<[CK_ULONG]>>,
    _nested: Vec<CTemplate>,
}

impl CTemplate {
    /// `None` stays a `NULL` pointer; an empty template is a valid pointer and a count of 0.
    pub fn from_opt(template: Option<&[Attribute]>) -> CTemplate {
        match template {
            Some(t) => CTemplate::new(t),
            None => CTemplate {
                null: true,
                ..Default::default()
            },
        }
    }

    pub fn new(template: &[Attribute]) -> CTemplate {
        let mut t = CTemplate::default();
        for a in template {
            let (p, n): (CK_VOID_PTR, CK_ULONG) = match &a.value {
                AttrValue::Bytes(b) if b.is_empty() => (ptr::null_mut(), 0),
                AttrValue::Bytes(b) => {
                    let mut b = b.clone();
                    let p = b.as_mut_ptr().cast();
                    let n = b.len();
                    t._bytes.push(b);
                    (p, n as CK_ULONG)
                }
                AttrValue::Ulong(v) => {
                    let mut b: Box<[CK_ULONG]> = Box::new([*v as CK_ULONG]);
                    let p = b.as_mut_ptr().cast();
                    t._ulongs.push(b);
                    (p, std::mem::size_of::<CK_ULONG>() as CK_ULONG)
                }
                AttrValue::Ulongs(v) => {
                    let mut b: Box<[CK_ULONG]> = v.iter().map(|x| *x as CK_ULONG).collect();
                    let n = b.len() * std::mem::size_of::<CK_ULONG>();
                    let p = if n == 0 {
                        ptr::null_mut()
                    } else {
                        b.as_mut_ptr().cast()
                    };
                    t._ulongs.push(b);
                    (p, n as CK_ULONG)
                }
                AttrValue::Template(inner) => {
                    let mut inner = CTemplate::new(inner);
                    let n = inner.attrs.len() * std::mem::size_of::<CK_ATTRIBUTE>();
                    let p = inner.attrs.as_mut_ptr().cast();
                    t._nested.push(inner);
                    (p, n as CK_ULONG)
                }
            };
            t.attrs.push(CK_ATTRIBUTE {
                type_: a.kind,
                pValue: p,
                ulValueLen: n,
            });
        }
        t
    }

    pub fn as_mut_ptr(&mut self) -> CK_ATTRIBUTE_PTR {
        if self.null {
            ptr::null_mut()
        } else if self.attrs.is_empty() {
            ptr::NonNull::dangling().as_ptr()
        } else {
            self.attrs.as_mut_ptr()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.attrs.is_empty()
    }

    pub fn len(&self) -> CK_ULONG {
        self.attrs.len() as CK_ULONG
    }
}

/// Turns the bytes the module wrote for one attribute into its typed form.
pub fn attr_value_out(kind: CK_ATTRIBUTE_TYPE, bytes: Vec<u8>) -> AttrValue {
    const W: usize = std::mem::size_of::<CK_ULONG>();
    if attrs::is_ulong(kind) && bytes.len() == W {
        let mut a = [0u8; W];
        a.copy_from_slice(&bytes);
        return AttrValue::Ulong(CK_ULONG::from_ne_bytes(a) as u64);
    }
    if attrs::is_ulong_array(kind) && bytes.len().is_multiple_of(W) {
        let v = bytes
            .chunks_exact(W)
            .map(|c| {
                let mut a = [0u8; W];
                a.copy_from_slice(c);
                CK_ULONG::from_ne_bytes(a) as u64
            })
            .collect();
        return AttrValue::Ulongs(v);
    }
    // Nested templates come back as the caller's attribute array; their
    // pointers mean nothing on the other side, so only their size travels.
    if attrs::is_template(kind) {
        return AttrValue::Bytes(vec![]);
    }
    AttrValue::Bytes(bytes)
}

/// A `CK_MECHANISM` and all the storage its parameter points into. Every
/// structure is built here from typed values; object handles inside a
/// parameter are translated by the caller's map, so the module never sees a
/// pointer or a handle that came off the network.
pub struct CMechanism {
    mech: CK_MECHANISM,
    _store: Store,
}

/// Owned storage behind the pointers of one parameter. Boxed and vector
/// contents stay put while the store lives, whatever happens to the store.
#[derive(Default)]
struct Store {
    bytes: Vec<Vec<u8>>,
    secrets: Vec<Zeroizing<Vec<u8>>>,
    boxes: Vec<Box<dyn Any>>,
}

impl Store {
    /// Keeps `v` and returns a pointer to it and its size.
    fn boxed<T: 'static>(&mut self, v: T) -> (*mut T, usize) {
        let mut b = Box::new(v);
        let p: *mut T = &mut *b;
        self.boxes.push(b);
        (p, std::mem::size_of::<T>())
    }

    /// An optional byte string as a pointer and length (`None` and empty are `NULL, 0`).
    fn bytes(&mut self, b: &Option<Vec<u8>>) -> (CK_BYTE_PTR, CK_ULONG) {
        match b {
            Some(b) if !b.is_empty() => {
                let mut b = b.clone();
                let p = b.as_mut_ptr();
                let n = b.len() as CK_ULONG;
                self.bytes.push(b);
                (p, n)
            }
            _ => (ptr::null_mut(), 0),
        }
    }

    fn secret(&mut self, s: &Option<Secret>) -> (CK_BYTE_PTR, CK_ULONG) {
        match s {
            Some(s) if !s.expose().is_empty() => {
                let mut b = Zeroizing::new(s.expose().to_vec());
                let p = b.as_mut_ptr();
                let n = b.len() as CK_ULONG;
                self.secrets.push(b);
                (p, n)
            }
            _ => (ptr::null_mut(), 0),
        }
    }

    fn oaep(&mut self, o: &OaepParams) -> CK_RSA_PKCS_OAEP_PARAMS {
        let (p, n) = self.bytes(&o.source_data);
        CK_RSA_PKCS_OAEP_PARAMS {
            hashAlg: o.hash_alg as CK_ULONG,
            mgf: o.mgf as CK_ULONG,
            source: o.source as CK_ULONG,
            pSourceData: p.cast(),
            ulSourceDataLen: n,
        }
    }
}

fn bbool(b: bool) -> CK_BBOOL {
    if b {
        CK_TRUE
    } else {
        CK_FALSE
    }
}

/// `CK_GCM_PARAMS` as PKCS#11 2.40 first published it (no `ulIvBits`), the
/// layout Java 17 sends first.
#[repr(C)]
pub struct GcmParamsNoIvBits {
    pub p_iv: CK_BYTE_PTR,
    pub ul_iv_len: CK_ULONG,
    pub p_aad: CK_BYTE_PTR,
    pub ul_aad_len: CK_ULONG,
    pub ul_tag_bits: CK_ULONG,
}

impl CMechanism {
    /// Builds the C mechanism from a parameter that passed
    /// [`kmsp11_proto::mechanism::check`]. `key` maps a handle inside the
    /// parameter to the backend's handle; `v3` says the backend speaks
    /// Cryptoki 3.x (the PBKD2 structure changed layout).
    pub fn new(m: &Mechanism, v3: bool, key: impl Fn(u64) -> u64) -> CMechanism {
        let mut st = Store::default();
        let key = |h: u64| key(h) as CK_OBJECT_HANDLE;
        let (p, n): (*mut u8, usize) = match &m.param {
            // Refused by `check` before we get here; nothing is forwarded.
            MechParam::None | MechParam::Undescribed(_) => (ptr::null_mut(), 0),
            MechParam::Bytes(b) if b.is_empty() => (ptr::null_mut(), 0),
            MechParam::Bytes(b) => {
                let (p, n) = st.bytes(&Some(b.clone()));
                (p, n as usize)
            }
            MechParam::BadLength(n) => {
                let n = (*n).min(MAX_BAD_LENGTH) as usize;
                let (p, _) = st.bytes(&Some(vec![0; n]));
                (p, n)
            }
            MechParam::Ulong(v) => cast(st.boxed(*v as CK_ULONG)),
            MechParam::Key(h) => cast(st.boxed(key(*h))),
            MechParam::RsaPkcsPss {
                hash_alg,
                mgf,
                salt_len,
            } => cast(st.boxed(CK_RSA_PKCS_PSS_PARAMS {
                hashAlg: *hash_alg as CK_ULONG,
                mgf: *mgf as CK_ULONG,
                sLen: *salt_len as CK_ULONG,
            })),
            MechParam::RsaPkcsOaep(o) => {
                let s = st.oaep(o);
                cast(st.boxed(s))
            }
            MechParam::Gcm {
                iv,
                iv_bits,
                aad,
                tag_bits,
            } => {
                let (pi, ni) = st.bytes(iv);
                let (pa, na) = st.bytes(aad);
                match iv_bits {
                    Some(bits) => cast(st.boxed(CK_GCM_PARAMS {
                        pIv: pi,
                        ulIvLen: ni,
                        ulIvBits: *bits as CK_ULONG,
                        pAAD: pa,
                        ulAADLen: na,
                        ulTagBits: *tag_bits as CK_ULONG,
                    })),
                    None => cast(st.boxed(GcmParamsNoIvBits {
                        p_iv: pi,
                        ul_iv_len: ni,
                        p_aad: pa,
                        ul_aad_len: na,
                        ul_tag_bits: *tag_bits as CK_ULONG,
                    })),
                }
            }
            MechParam::Ccm {
                data_len,
                nonce,
                aad,
                mac_len,
            } => {
                let (pn, nn) = st.bytes(nonce);
                let (pa, na) = st.bytes(aad);
                cast(st.boxed(CK_CCM_PARAMS {
                    ulDataLen: *data_len as CK_ULONG,
                    pNonce: pn,
                    ulNonceLen: nn,
                    pAAD: pa,
                    ulAADLen: na,
                    ulMACLen: *mac_len as CK_ULONG,
                }))
            }
            MechParam::AeadPoly1305 { nonce, aad } => {
                let (pn, nn) = st.bytes(nonce);
                let (pa, na) = st.bytes(aad);
                cast(st.boxed(CK_SALSA20_CHACHA20_POLY1305_PARAMS {
                    pNonce: pn,
                    ulNonceLen: nn,
                    pAAD: pa,
                    ulAADLen: na,
                }))
            }
            MechParam::Ecdh1Derive {
                kdf,
                shared_data,
                public_data,
            } => {
                let (ps, ns) = st.bytes(shared_data);
                let (pp, np) = st.bytes(public_data);
                cast(st.boxed(CK_ECDH1_DERIVE_PARAMS {
                    kdf: *kdf as CK_ULONG,
                    ulSharedDataLen: ns,
                    pSharedData: ps,
                    ulPublicDataLen: np,
                    pPublicData: pp,
                }))
            }
            MechParam::Ecmqv {
                kdf,
                shared_data,
                public_data,
                private_data_len,
                private_data,
                public_data2,
                public_key,
            } => {
                let (ps, ns) = st.bytes(shared_data);
                let (pp, np) = st.bytes(public_data);
                let (p2, n2) = st.bytes(public_data2);
                cast(st.boxed(CK_ECMQV_DERIVE_PARAMS {
                    kdf: *kdf as CK_ULONG,
                    ulSharedDataLen: ns,
                    pSharedData: ps,
                    ulPublicDataLen: np,
                    pPublicData: pp,
                    ulPrivateDataLen: *private_data_len as CK_ULONG,
                    hPrivateData: key(*private_data),
                    ulPublicDataLen2: n2,
                    pPublicData2: p2,
                    publicKey: key(*public_key),
                }))
            }
            MechParam::X942Dh1 {
                kdf,
                other_info,
                public_data,
            } => {
                let (po, no) = st.bytes(other_info);
                let (pp, np) = st.bytes(public_data);
                cast(st.boxed(CK_X9_42_DH1_DERIVE_PARAMS {
                    kdf: *kdf as CK_ULONG,
                    ulOtherInfoLen: no,
                    pOtherInfo: po,
                    ulPublicDataLen: np,
                    pPublicData: pp,
                }))
            }
            MechParam::X942Dh2 {
                kdf,
                other_info,
                public_data,
                private_data_len,
                private_data,
                public_data2,
                public_key,
            } => {
                let (po, no) = st.bytes(other_info);
                let (pp, np) = st.bytes(public_data);
                let (p2, n2) = st.bytes(public_data2);
                let dh2 = CK_X9_42_DH2_DERIVE_PARAMS {
                    kdf: *kdf as CK_ULONG,
                    ulOtherInfoLen: no,
                    pOtherInfo: po,
                    ulPublicDataLen: np,
                    pPublicData: pp,
                    ulPrivateDataLen: *private_data_len as CK_ULONG,
                    hPrivateData: key(*private_data),
                    ulPublicDataLen2: n2,
                    pPublicData2: p2,
                };
                match public_key {
                    None => cast(st.boxed(dh2)),
                    Some(k) => cast(st.boxed(CK_X9_42_MQV_DERIVE_PARAMS {
                        kdf: dh2.kdf,
                        ulOtherInfoLen: dh2.ulOtherInfoLen,
                        pOtherInfo: dh2.pOtherInfo,
                        ulPublicDataLen: dh2.ulPublicDataLen,
                        pPublicData: dh2.pPublicData,
                        ulPrivateDataLen: dh2.ulPrivateDataLen,
                        hPrivateData: dh2.hPrivateData,
                        ulPublicDataLen2: dh2.ulPublicDataLen2,
                        pPublicData2: dh2.pPublicData2,
                        publicKey: key(*k),
                    })),
                }
            }
            MechParam::Eddsa { ph_flag, context } => {
                let (p, n) = st.bytes(context);
                cast(st.boxed(CK_EDDSA_PARAMS {
                    phFlag: bbool(*ph_flag),
                    ulContextDataLen: n,
                    pContextData: p,
                }))
            }
            MechParam::DerivationString(data) => {
                let (p, n) = st.bytes(data);
                cast(st.boxed(CK_KEY_DERIVATION_STRING_DATA { pData: p, ulLen: n }))
            }
            MechParam::CbcEncryptData { iv, data } => {
                let (p, n) = st.bytes(data);
                if let Ok(iv) = <[u8; 8]>::try_from(iv.as_slice()) {
                    cast(st.boxed(CK_DES_CBC_ENCRYPT_DATA_PARAMS {
                        iv,
                        pData: p,
                        length: n,
                    }))
                } else {
                    let mut a = [0u8; 16];
                    let k = iv.len().min(16);
                    a[..k].copy_from_slice(&iv[..k]);
                    cast(st.boxed(CK_AES_CBC_ENCRYPT_DATA_PARAMS {
                        iv: a,
                        pData: p,
                        length: n,
                    }))
                }
            }
            MechParam::Hkdf {
                extract,
                expand,
                prf,
                salt_type,
                salt,
                salt_key,
                info,
            } => {
                let (ps, ns) = st.bytes(salt);
                let (pi, ni) = st.bytes(info);
                cast(st.boxed(CK_HKDF_PARAMS {
                    bExtract: bbool(*extract),
                    bExpand: bbool(*expand),
                    prfHashMechanism: *prf as CK_ULONG,
                    ulSaltType: *salt_type as CK_ULONG,
                    pSalt: ps,
                    ulSaltLen: ns,
                    hSaltKey: key(*salt_key),
                    pInfo: pi,
                    ulInfoLen: ni,
                }))
            }
            MechParam::Sp800108 { prf, data, iv } => {
                let mut params: Vec<CK_PRF_DATA_PARAM> = Vec::with_capacity(data.len());
                for d in data {
                    params.push(prf_data_param(&mut st, d));
                }
                let count = params.len() as CK_ULONG;
                let pd = if params.is_empty() {
                    ptr::null_mut()
                } else {
                    params.as_mut_ptr()
                };
                st.boxes.push(Box::new(params));
                match iv {
                    None => cast(st.boxed(CK_SP800_108_KDF_PARAMS {
                        prfType: *prf as CK_ULONG,
                        ulNumberOfDataParams: count,
                        pDataParams: pd,
                        ulAdditionalDerivedKeys: 0,
                        pAdditionalDerivedKeys: ptr::null_mut(),
                    })),
                    Some(iv) => {
                        let (pi, ni) = st.bytes(iv);
                        cast(st.boxed(CK_SP800_108_FEEDBACK_KDF_PARAMS {
                            prfType: *prf as CK_ULONG,
                            ulNumberOfDataParams: count,
                            pDataParams: pd,
                            ulIVLen: ni,
                            pIV: pi,
                            ulAdditionalDerivedKeys: 0,
                            pAdditionalDerivedKeys: ptr::null_mut(),
                        }))
                    }
                }
            }
            MechParam::RsaAesKeyWrap { aes_key_bits, oaep } => {
                let po = match oaep {
                    Some(o) => {
                        let s = st.oaep(o);
                        st.boxed(s).0
                    }
                    None => ptr::null_mut(),
                };
                cast(st.boxed(CK_RSA_AES_KEY_WRAP_PARAMS {
                    ulAESKeyBits: *aes_key_bits as CK_ULONG,
                    pOAEPParams: po,
                }))
            }
            MechParam::Pbkd2 {
                salt_source,
                salt_source_data,
                iterations,
                prf,
                prf_data,
                password,
            } => {
                let (ps, ns) = st.bytes(salt_source_data);
                let (pp, np) = st.bytes(prf_data);
                let (pw, nw) = st.secret(password);
                if v3 {
                    cast(st.boxed(CK_PKCS5_PBKD2_PARAMS2 {
                        saltSource: *salt_source as CK_ULONG,
                        pSaltSourceData: ps.cast(),
                        ulSaltSourceDataLen: ns,
                        iterations: *iterations as CK_ULONG,
                        prf: *prf as CK_ULONG,
                        pPrfData: pp.cast(),
                        ulPrfDataLen: np,
                        pPassword: pw,
                        ulPasswordLen: nw,
                    }))
                } else {
                    let (plen, _) = st.boxed(nw);
                    cast(st.boxed(CK_PKCS5_PBKD2_PARAMS {
                        saltSource: *salt_source as CK_ULONG,
                        pSaltSourceData: ps.cast(),
                        ulSaltSourceDataLen: ns,
                        iterations: *iterations as CK_ULONG,
                        prf: *prf as CK_ULONG,
                        pPrfData: pp.cast(),
                        ulPrfDataLen: np,
                        pPassword: pw,
                        ulPasswordLen: plen,
                    }))
                }
            }
        };
        CMechanism {
            mech: CK_MECHANISM {
                mechanism: m.mechanism as CK_ULONG,
                pParameter: p.cast(),
                ulParameterLen: n as CK_ULONG,
            },
            _store: st,
        }
    }

    pub fn as_mut_ptr(&mut self) -> CK_MECHANISM_PTR {
        &mut self.mech
    }
}

/// One SP 800-108 data parameter, its value kept in the store.
fn prf_data_param(st: &mut Store, d: &PrfData) -> CK_PRF_DATA_PARAM {
    let counter = |st: &mut Store, c: &CounterFormat| {
        cast(st.boxed(CK_SP800_108_COUNTER_FORMAT {
            bLittleEndian: bbool(c.little_endian),
            ulWidthInBits: c.width_bits as CK_ULONG,
        }))
    };
    let (type_, (p, n)) = match d {
        PrfData::IterationVariable(None) => (CK_SP800_108_ITERATION_VARIABLE, (ptr::null_mut(), 0)),
        PrfData::IterationVariable(Some(c)) => (CK_SP800_108_ITERATION_VARIABLE, counter(st, c)),
        PrfData::OptionalCounter(c) => (CK_SP800_108_OPTIONAL_COUNTER, counter(st, c)),
        PrfData::DkmLength {
            method,
            little_endian,
            width_bits,
        } => (
            CK_SP800_108_DKM_LENGTH,
            cast(st.boxed(CK_SP800_108_DKM_LENGTH_FORMAT {
                dkmLengthMethod: *method as CK_ULONG,
                bLittleEndian: bbool(*little_endian),
                ulWidthInBits: *width_bits as CK_ULONG,
            })),
        ),
        PrfData::ByteArray(b) => {
            let (p, n) = st.bytes(&Some(b.clone()));
            (CK_SP800_108_BYTE_ARRAY, (p, n as usize))
        }
    };
    CK_PRF_DATA_PARAM {
        type_,
        pValue: p.cast(),
        ulValueLen: n as CK_ULONG,
    }
}

fn cast<T>((p, n): (*mut T, usize)) -> (*mut u8, usize) {
    (p.cast(), n)
}

/// Pointer and length of an input buffer as the client passed it: `None` is
/// `NULL`, an empty buffer is a valid non-NULL pointer with length 0.
pub fn opt_in(b: Option<&[u8]>) -> (CK_BYTE_PTR, CK_ULONG) {
    static EMPTY: [u8; 1] = [0];
    match b {
        None => (ptr::null_mut(), 0),
        Some([]) => (EMPTY.as_ptr() as CK_BYTE_PTR, 0),
        Some(b) => (b.as_ptr() as CK_BYTE_PTR, b.len() as CK_ULONG),
    }
}
