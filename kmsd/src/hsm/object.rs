//! Object management (PKCS#11 3.0 §5.7) on the backend.

use std::ptr;

use kmsp11_proto as proto;
use pkcs11_sys::*;

use super::{made, marshal, per_attribute, Backend, CTemplate, ATTR_CLAIM, MAX_OUT};
use crate::error::Error;
use crate::handles::{BObject, BSession};

impl Backend {
    pub fn create_object(&self, s: BSession, t: &mut CTemplate) -> Result<BObject, Error> {
        made(|h| checked!(self, C_CreateObject, s.0, t.as_mut_ptr(), t.len(), h))
    }

    pub fn copy_object(
        &self,
        s: BSession,
        o: BObject,
        t: &mut CTemplate,
    ) -> Result<BObject, Error> {
        made(|h| checked!(self, C_CopyObject, s.0, o.0, t.as_mut_ptr(), t.len(), h))
    }

    pub fn destroy_object(&self, s: BSession, o: BObject) -> Result<(), Error> {
        checked!(self, C_DestroyObject, s.0, o.0)
    }

    pub fn object_size(&self, s: BSession, o: BObject) -> Result<u64, Error> {
        let mut n: CK_ULONG = 0;
        checked!(self, C_GetObjectSize, s.0, o.0, &mut n)?;
        Ok(n)
    }

    /// `C_GetAttributeValue` with the caller's buffer sizes; answers one
    /// entry per query, with a value only where the module filled one. When
    /// the claimed buffers are large, the module is asked for the lengths
    /// first and buffers follow what the object holds (a claim the object
    /// cannot fill costs nothing); an answer that would not fit a frame is
    /// `CKR_DEVICE_MEMORY`. When the call fails as a whole, no answer comes
    /// back at all: the module filled nothing.
    pub fn attribute_value(
        &self,
        s: BSession,
        o: BObject,
        q: &[proto::AttrQuery],
    ) -> (CK_RV, Vec<proto::AttrAnswer>) {
        let mut caps: Vec<Option<usize>> = q
            .iter()
            .map(|a| a.buf.map(|n| n.min(MAX_OUT) as usize))
            .collect();
        let claimed: u64 = caps.iter().flatten().map(|n| *n as u64).sum();
        if claimed > ATTR_CLAIM {
            let mut t: Vec<CK_ATTRIBUTE> = q.iter().map(|a| attribute(a.kind, None)).collect();
            let rv = self.fill_attributes(s, o, &mut t);
            if !per_attribute(rv) {
                return (rv, vec![]);
            }
            let mut total: u64 = 0;
            for (cap, a) in caps.iter_mut().zip(&t) {
                if let Some(c) = cap {
                    // A buffer shorter than the value stays as claimed: the
                    // module answers CKR_BUFFER_TOO_SMALL for it, as it would.
                    if a.ulValueLen == CK_UNAVAILABLE_INFORMATION {
                        *c = 0;
                    } else if (a.ulValueLen as u64) < *c as u64 {
                        *c = a.ulValueLen as usize;
                    }
                    total += *c as u64;
                }
            }
            if total > MAX_OUT {
                return (CKR_DEVICE_MEMORY, vec![]);
            }
        }
        let mut bufs: Vec<Option<Vec<u8>>> = caps.iter().map(|c| c.map(|n| vec![0u8; n])).collect();
        let mut t: Vec<CK_ATTRIBUTE> = q
            .iter()
            .zip(bufs.iter_mut())
            .map(|(a, b)| attribute(a.kind, b.as_mut()))
            .collect();
        let rv = self.fill_attributes(s, o, &mut t);
        if !per_attribute(rv) {
            return (rv, vec![]);
        }
        let answers = t
            .iter()
            .zip(bufs)
            .map(|(a, b)| {
                let len = a.ulValueLen;
                let value = match b {
                    Some(mut b)
                        if len != CK_UNAVAILABLE_INFORMATION && (len as usize) <= b.len() =>
                    {
                        b.truncate(len as usize);
                        Some(marshal::attr_value_out(a.type_, b))
                    }
                    _ => None,
                };
                proto::AttrAnswer { len, value }
            })
            .collect();
        (rv, answers)
    }

    /// One `C_GetAttributeValue` over a template whose buffers the caller owns.
    fn fill_attributes(&self, s: BSession, o: BObject, t: &mut [CK_ATTRIBUTE]) -> CK_RV {
        call!(
            self,
            C_GetAttributeValue,
            s.0,
            o.0,
            t.as_mut_ptr(),
            t.len() as CK_ULONG
        )
    }

    pub fn set_attribute_value(
        &self,
        s: BSession,
        o: BObject,
        t: &mut CTemplate,
    ) -> Result<(), Error> {
        checked!(self, C_SetAttributeValue, s.0, o.0, t.as_mut_ptr(), t.len())
    }

    pub fn find_objects_init(&self, s: BSession, t: &mut CTemplate) -> Result<(), Error> {
        checked!(self, C_FindObjectsInit, s.0, t.as_mut_ptr(), t.len())
    }

    /// Up to `max` (at most 65536) objects of the active search.
    pub fn find_objects(&self, s: BSession, max: u64) -> Result<Vec<BObject>, Error> {
        let mut out = vec![0; max.min(1 << 16) as usize];
        let mut n: CK_ULONG = 0;
        checked!(
            self,
            C_FindObjects,
            s.0,
            out.as_mut_ptr(),
            out.len() as CK_ULONG,
            &mut n
        )?;
        out.truncate((n as usize).min(out.len()));
        Ok(out.into_iter().map(BObject).collect())
    }

    pub fn find_objects_final(&self, s: BSession) -> Result<(), Error> {
        checked!(self, C_FindObjectsFinal, s.0)
    }

    /// kmsd's own search: the objects `template` matches (at most 65536),
    /// in one search from init to final.
    pub fn find(&self, s: BSession, template: &[proto::Attribute]) -> Result<Vec<BObject>, Error> {
        self.find_objects_init(s, &mut CTemplate::new(template))?;
        let found = self.find_objects(s, 1 << 16);
        let _ = self.find_objects_final(s);
        found
    }

    /// kmsd's own read: the attributes of `kinds` the object has (values
    /// up to 1 MiB), as a template; one it lacks or hides is left out.
    pub fn attributes(
        &self,
        s: BSession,
        o: BObject,
        kinds: &[CK_ATTRIBUTE_TYPE],
    ) -> Vec<proto::Attribute> {
        let q: Vec<proto::AttrQuery> = kinds
            .iter()
            .map(|&kind| proto::AttrQuery {
                kind,
                buf: Some(1 << 20),
            })
            .collect();
        let (_, answers) = self.attribute_value(s, o, &q);
        kinds
            .iter()
            .zip(answers)
            .filter_map(|(&kind, a)| a.value.map(|value| proto::Attribute { kind, value }))
            .collect()
    }
}

/// A `CK_ATTRIBUTE` asking for `kind`, into `buf` or (`None`) for its length.
fn attribute(kind: CK_ATTRIBUTE_TYPE, buf: Option<&mut Vec<u8>>) -> CK_ATTRIBUTE {
    match buf {
        Some(b) => CK_ATTRIBUTE {
            type_: kind,
            pValue: b.as_mut_ptr().cast(),
            ulValueLen: b.len() as CK_ULONG,
        },
        None => CK_ATTRIBUTE {
            type_: kind,
            pValue: ptr::null_mut(),
            ulValueLen: 0,
        },
    }
}
