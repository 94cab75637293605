//! Templates between their C form and the wire form, and the answers of
//! `C_GetAttributeValue` back into the caller's template.

use std::mem::size_of;

use kmsp11_proto::{attrs, AttrAnswer, AttrQuery, AttrValue, Attribute};
use pkcs11_sys::*;

use super::ptr::{array, bytes_in};
use crate::error::{Error, Result};

const W: usize = size_of::<CK_ULONG>();
const TOO_LARGE: Error = Error::ArgumentsBad("template too large");

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
    if depth > attrs::MAX_TEMPLATE_DEPTH {
        return Err(Error::ArgumentsBad("template nested too deep"));
    }
    // SAFETY: the caller guarantees `n` attributes at `p`.
    let raw = unsafe { array(p, n, attrs::MAX_TEMPLATE_LEN, TOO_LARGE) }?;
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
        } else if attrs::is_template(a.type_) {
            // Not an attribute array: sending these bytes would ship the
            // application's pointers.
            return Err(Error::Rv(CKR_ATTRIBUTE_VALUE_INVALID));
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
    // SAFETY: the caller guarantees `n` attributes at `p`.
    let raw = unsafe { array(p, n, attrs::MAX_TEMPLATE_LEN, TOO_LARGE) }?;
    Ok(raw
        .iter()
        .map(|a| AttrQuery {
            kind: a.type_,
            buf: (!a.pValue.is_null()).then_some(a.ulValueLen as u64),
        })
        .collect())
}

/// Writes C_GetAttributeValue answers back into the caller's template.
/// Every answer is checked against the capacity the caller declared when
/// the queries were read (never against what the template says now): a
/// server answer that would not fit is a protocol error and nothing is
/// written. When the call failed as a whole (anything but `CKR_OK` and the
/// three per-attribute codes) the template is left untouched, as a module
/// leaves it.
///
/// # Safety
/// `p` must point to the same `queries.len()` attributes the queries were
/// read from, with buffers of the capacities given then.
pub unsafe fn write_answers(
    p: *mut CK_ATTRIBUTE,
    queries: &[AttrQuery],
    rv: CK_RV,
    answers: &[AttrAnswer],
) -> Result<()> {
    if !matches!(
        rv,
        CKR_OK | CKR_ATTRIBUTE_SENSITIVE | CKR_ATTRIBUTE_TYPE_INVALID | CKR_BUFFER_TOO_SMALL
    ) {
        return Ok(());
    }
    if answers.len() != queries.len() {
        return Err(Error::Protocol("C_GetAttributeValue answer count"));
    }
    for (q, ans) in queries.iter().zip(answers) {
        let need = match &ans.value {
            None => continue,
            Some(AttrValue::Ulong(_)) => W,
            Some(AttrValue::Ulongs(v)) => v.len().saturating_mul(W),
            Some(AttrValue::Bytes(b)) => b.len(),
            Some(AttrValue::Template(_)) => usize::MAX,
        };
        if q.buf.is_none_or(|cap| need as u64 > cap) {
            return Err(Error::Protocol(
                "C_GetAttributeValue value larger than the buffer",
            ));
        }
    }
    for (i, ans) in answers.iter().enumerate() {
        // SAFETY: `i` is within the caller's template.
        let a = unsafe { &mut *p.add(i) };
        let dst = a.pValue as *mut u8;
        match &ans.value {
            Some(AttrValue::Ulong(v)) => {
                // SAFETY: the caller's buffer has room for W bytes (checked above).
                unsafe { (dst as *mut CK_ULONG).write_unaligned(*v as CK_ULONG) };
                a.ulValueLen = W as CK_ULONG;
            }
            Some(AttrValue::Ulongs(v)) => {
                for (k, x) in v.iter().enumerate() {
                    // SAFETY: within the capacity checked above.
                    unsafe {
                        (dst as *mut CK_ULONG)
                            .add(k)
                            .write_unaligned(*x as CK_ULONG)
                    };
                }
                a.ulValueLen = (v.len() * W) as CK_ULONG;
            }
            Some(AttrValue::Bytes(b)) => {
                // SAFETY: within the capacity checked above.
                unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), dst, b.len()) };
                a.ulValueLen = b.len() as CK_ULONG;
            }
            Some(AttrValue::Template(_)) | None => a.ulValueLen = ans.len as CK_ULONG,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ptr;

    fn attr<T>(type_: CK_ATTRIBUTE_TYPE, v: &mut T) -> CK_ATTRIBUTE {
        CK_ATTRIBUTE {
            type_,
            pValue: (v as *mut T).cast(),
            ulValueLen: size_of::<T>() as CK_ULONG,
        }
    }

    // Expect a NULL template with a count of 0 to stay NULL (not empty), an
    // empty one to stay empty, and NULL with a count to be CKR_ARGUMENTS_BAD.
    #[test]
    fn null_and_empty_templates() {
        let mut label = *b"k";
        let mut one = [attr(CKA_LABEL, &mut label)];
        // SAFETY: NULL or live templates.
        unsafe {
            assert_eq!(template(ptr::null(), 0).unwrap(), None);
            assert_eq!(template(one.as_mut_ptr(), 0).unwrap(), Some(vec![]));
            assert!(matches!(
                template(ptr::null(), 2),
                Err(Error::ArgumentsBad(_))
            ));
        }
    }

    #[test]
    fn values_are_typed_by_attribute() {
        let mut class: CK_ULONG = CKO_SECRET_KEY;
        let mut mechs: [CK_ULONG; 2] = [CKM_AES_GCM, CKM_AES_CBC];
        let mut label = *b"k";
        let t = [
            attr(CKA_CLASS, &mut class),
            attr(CKA_ALLOWED_MECHANISMS, &mut mechs),
            attr(CKA_LABEL, &mut label),
        ];
        // SAFETY: a live template.
        let got = unsafe { template(t.as_ptr(), 3) }.unwrap().unwrap();
        assert_eq!(got[0].value, AttrValue::Ulong(CKO_SECRET_KEY));
        assert_eq!(
            got[1].value,
            AttrValue::Ulongs(vec![CKM_AES_GCM, CKM_AES_CBC])
        );
        assert_eq!(got[2].value, AttrValue::Bytes(b"k".to_vec()));
    }

    // A nested template is read as attributes, up to the depth proto accepts.
    #[test]
    fn nested_templates_and_their_depth() {
        let mut yes: CK_BBOOL = 1;
        let mut inner = [attr(CKA_ENCRYPT, &mut yes)];
        let mut outer = [attr(CKA_WRAP_TEMPLATE, &mut inner)];
        // SAFETY: live templates.
        let got = unsafe { template(outer.as_ptr(), 1) }.unwrap().unwrap();
        assert_eq!(
            got[0].value,
            AttrValue::Template(vec![Attribute {
                kind: CKA_ENCRYPT,
                value: AttrValue::Bytes(vec![1]),
            }])
        );
        // Nested three deep: more than proto accepts.
        let mut l2 = [attr(CKA_UNWRAP_TEMPLATE, &mut outer)];
        let l3 = [attr(CKA_DERIVE_TEMPLATE, &mut l2)];
        // SAFETY: live templates.
        let deep = unsafe { template(l3.as_ptr(), 1) };
        assert!(matches!(deep, Err(Error::ArgumentsBad(_))));
    }

    // A C_GetAttributeValue query keeps NULL pValues as size queries.
    #[test]
    fn queries_keep_size_queries() {
        let mut buf = [0u8; 4];
        let size_query = CK_ATTRIBUTE {
            type_: CKA_VALUE,
            pValue: ptr::null_mut(),
            ulValueLen: 99,
        };
        let t = [size_query, attr(CKA_ID, &mut buf)];
        // SAFETY: a live template.
        let q = unsafe { queries(t.as_ptr(), 2) }.unwrap();
        assert_eq!(q[0].buf, None);
        assert_eq!(q[1].buf, Some(4));
    }

    // A rogue server's answer larger than the buffer the caller declared
    // at query time is a protocol error, and nothing is written.
    #[test]
    fn answers_beyond_the_declared_capacity_write_nothing() {
        let mut buf = [0xAAu8; 32];
        let mut t = [CK_ATTRIBUTE {
            ulValueLen: 16,
            ..attr(CKA_VALUE, &mut buf)
        }];
        // SAFETY: one attribute.
        let q = unsafe { queries(t.as_ptr(), 1) }.unwrap();
        // The caller changes its mind after the query: ignored.
        t[0].ulValueLen = 32;
        let big = [AttrAnswer {
            len: 32,
            value: Some(AttrValue::Bytes(vec![1; 32])),
        }];
        // SAFETY: the template the queries came from.
        let r = unsafe { write_answers(t.as_mut_ptr(), &q, CKR_OK, &big) };
        assert!(matches!(r, Err(Error::Protocol(_))));
        assert!(buf.iter().all(|b| *b == 0xAA));
        assert_eq!(t[0].ulValueLen, 32);
    }

    // Expect the template untouched when the call failed as a whole.
    #[test]
    fn a_failed_call_leaves_the_template_alone() {
        let mut buf = [0xAAu8; 8];
        let mut t = [attr(CKA_VALUE, &mut buf)];
        // SAFETY: one attribute.
        let q = unsafe { queries(t.as_ptr(), 1) }.unwrap();
        let a = [AttrAnswer {
            len: 4,
            value: Some(AttrValue::Bytes(vec![1; 4])),
        }];
        // SAFETY: the template the queries came from.
        unsafe { write_answers(t.as_mut_ptr(), &q, CKR_OBJECT_HANDLE_INVALID, &a) }.unwrap();
        assert_eq!(t[0].ulValueLen, 8);
        assert!(buf.iter().all(|b| *b == 0xAA));
    }
}
