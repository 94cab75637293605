//! Owned C structures for templates and mechanisms. Each value keeps every
//! buffer its pointers refer to, so the pointers stay valid for as long as
//! the value lives and the module never sees a pointer from the network.

use std::ptr;

use kmsp11_proto::{attrs, AttrValue, Attribute, MechParam, Mechanism};
use pkcs11_sys::*;

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

/// A `CK_MECHANISM` and the parameter storage it points into.
pub struct CMechanism {
    mech: CK_MECHANISM,
    _param: Param,
    _bufs: Vec<Vec<u8>>,
}

/// The parameter structures, kept in a box so the address stays put.
#[allow(dead_code)]
enum Param {
    None,
    Bytes(Vec<u8>),
    Ulong(Box<CK_ULONG>),
    Pss(Box<CK_RSA_PKCS_PSS_PARAMS>),
    Oaep(Box<CK_RSA_PKCS_OAEP_PARAMS>),
    Gcm(Box<CK_GCM_PARAMS>),
    Gcm40(Box<GcmParamsNoIvBits>),
    Ccm(Box<CK_CCM_PARAMS>),
    Ecdh(Box<CK_ECDH1_DERIVE_PARAMS>),
    Eddsa(Box<CK_EDDSA_PARAMS>),
    DerivString(Box<CK_KEY_DERIVATION_STRING_DATA>),
    AesCbcData(Box<CK_AES_CBC_ENCRYPT_DATA_PARAMS>),
    DesCbcData(Box<CK_DES_CBC_ENCRYPT_DATA_PARAMS>),
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
    /// Builds the C mechanism. `key` maps a handle inside the parameter
    /// (`MechParam::Key`) to the backend's handle.
    pub fn new(m: &Mechanism, key: impl Fn(u64) -> u64) -> CMechanism {
        let mut bufs: Vec<Vec<u8>> = Vec::new();
        let mut keep = |b: &Option<Vec<u8>>| -> (CK_BYTE_PTR, CK_ULONG) {
            match b {
                Some(b) if !b.is_empty() => {
                    let mut b = b.clone();
                    let p = b.as_mut_ptr();
                    let n = b.len() as CK_ULONG;
                    bufs.push(b);
                    (p, n)
                }
                _ => (ptr::null_mut(), 0),
            }
        };
        let param = match &m.param {
            MechParam::None => Param::None,
            MechParam::Bytes(b) => Param::Bytes(b.clone()),
            MechParam::BadLength(n) => Param::Bytes(vec![0; (*n).min(1 << 16) as usize]),
            MechParam::Ulong(v) => Param::Ulong(Box::new(*v as CK_ULONG)),
            MechParam::Key(h) => Param::Ulong(Box::new(key(*h) as CK_ULONG)),
            MechParam::RsaPkcsPss {
                hash_alg,
                mgf,
                salt_len,
            } => Param::Pss(Box::new(CK_RSA_PKCS_PSS_PARAMS {
                hashAlg: *hash_alg as CK_ULONG,
                mgf: *mgf as CK_ULONG,
                sLen: *salt_len as CK_ULONG,
            })),
            MechParam::RsaPkcsOaep {
                hash_alg,
                mgf,
                source,
                source_data,
            } => {
                let (p, n) = keep(source_data);
                Param::Oaep(Box::new(CK_RSA_PKCS_OAEP_PARAMS {
                    hashAlg: *hash_alg as CK_ULONG,
                    mgf: *mgf as CK_ULONG,
                    source: *source as CK_ULONG,
                    pSourceData: p.cast(),
                    ulSourceDataLen: n,
                }))
            }
            MechParam::Gcm {
                iv,
                iv_bits,
                aad,
                tag_bits,
            } => {
                let (pi, ni) = keep(iv);
                let (pa, na) = keep(aad);
                match iv_bits {
                    Some(bits) => Param::Gcm(Box::new(CK_GCM_PARAMS {
                        pIv: pi,
                        ulIvLen: ni,
                        ulIvBits: *bits as CK_ULONG,
                        pAAD: pa,
                        ulAADLen: na,
                        ulTagBits: *tag_bits as CK_ULONG,
                    })),
                    None => Param::Gcm40(Box::new(GcmParamsNoIvBits {
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
                let (pn, nn) = keep(nonce);
                let (pa, na) = keep(aad);
                Param::Ccm(Box::new(CK_CCM_PARAMS {
                    ulDataLen: *data_len as CK_ULONG,
                    pNonce: pn,
                    ulNonceLen: nn,
                    pAAD: pa,
                    ulAADLen: na,
                    ulMACLen: *mac_len as CK_ULONG,
                }))
            }
            MechParam::Ecdh1Derive {
                kdf,
                shared_data,
                public_data,
            } => {
                let (ps, ns) = keep(shared_data);
                let (pp, np) = keep(public_data);
                Param::Ecdh(Box::new(CK_ECDH1_DERIVE_PARAMS {
                    kdf: *kdf as CK_ULONG,
                    ulSharedDataLen: ns,
                    pSharedData: ps,
                    ulPublicDataLen: np,
                    pPublicData: pp,
                }))
            }
            MechParam::Eddsa { ph_flag, context } => {
                let (p, n) = keep(context);
                Param::Eddsa(Box::new(CK_EDDSA_PARAMS {
                    phFlag: if *ph_flag { CK_TRUE } else { CK_FALSE },
                    ulContextDataLen: n,
                    pContextData: p,
                }))
            }
            MechParam::DerivationString(data) => {
                let (p, n) = keep(data);
                Param::DerivString(Box::new(CK_KEY_DERIVATION_STRING_DATA {
                    pData: p,
                    ulLen: n,
                }))
            }
            MechParam::CbcEncryptData { iv, data } => {
                let (p, n) = keep(data);
                if iv.len() == 8 {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(iv);
                    Param::DesCbcData(Box::new(CK_DES_CBC_ENCRYPT_DATA_PARAMS {
                        iv: a,
                        pData: p,
                        length: n,
                    }))
                } else {
                    let mut a = [0u8; 16];
                    let k = iv.len().min(16);
                    a[..k].copy_from_slice(&iv[..k]);
                    Param::AesCbcData(Box::new(CK_AES_CBC_ENCRYPT_DATA_PARAMS {
                        iv: a,
                        pData: p,
                        length: n,
                    }))
                }
            }
        };
        let mut c = CMechanism {
            mech: CK_MECHANISM {
                mechanism: m.mechanism as CK_ULONG,
                pParameter: ptr::null_mut(),
                ulParameterLen: 0,
            },
            _param: param,
            _bufs: bufs,
        };
        let (p, n): (CK_VOID_PTR, usize) = match &mut c._param {
            Param::None => (ptr::null_mut(), 0),
            Param::Bytes(b) if b.is_empty() => (ptr::null_mut(), 0),
            Param::Bytes(b) => (b.as_mut_ptr().cast(), b.len()),
            Param::Ulong(b) => struct_ptr(b),
            Param::Pss(b) => struct_ptr(b),
            Param::Oaep(b) => struct_ptr(b),
            Param::Gcm(b) => struct_ptr(b),
            Param::Gcm40(b) => struct_ptr(b),
            Param::Ccm(b) => struct_ptr(b),
            Param::Ecdh(b) => struct_ptr(b),
            Param::Eddsa(b) => struct_ptr(b),
            Param::DerivString(b) => struct_ptr(b),
            Param::AesCbcData(b) => struct_ptr(b),
            Param::DesCbcData(b) => struct_ptr(b),
        };
        c.mech.pParameter = p;
        c.mech.ulParameterLen = n as CK_ULONG;
        c
    }

    pub fn as_mut_ptr(&mut self) -> CK_MECHANISM_PTR {
        &mut self.mech
    }
}

fn struct_ptr<T>(b: &mut Box<T>) -> (CK_VOID_PTR, usize) {
    ((&mut **b as *mut T).cast(), std::mem::size_of::<T>())
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
