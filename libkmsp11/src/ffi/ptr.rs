//! Checked conversions between caller pointers and values. Each accepts
//! `NULL, 0`, rejects `NULL, n > 0` with `CKR_ARGUMENTS_BAD`, and never
//! reads past the length the caller gave.

use std::ptr;

use kmsp11_proto::Pin;
use pkcs11_sys::*;

use crate::error::{Error, Result};

/// The most bytes a single input may carry (the wire frame limit).
pub const MAX_INPUT: CK_ULONG = kmsp11_proto::MAX_PAYLOAD as CK_ULONG - 4096;

/// An input buffer: `None` for `NULL`, else a copy of the bytes.
///
/// # Safety
/// A non-NULL `p` must point to `n` readable bytes.
pub unsafe fn bytes_in(p: *const u8, n: CK_ULONG) -> Result<Option<Vec<u8>>> {
    if p.is_null() {
        return if n == 0 {
            Ok(None)
        } else {
            Err(Error::ArgumentsBad("NULL buffer with non-zero length"))
        };
    }
    if n > MAX_INPUT {
        return Err(Error::ArgumentsBad("input longer than the frame limit"));
    }
    // SAFETY: the caller guarantees `n` readable bytes at `p`.
    Ok(Some(
        unsafe { std::slice::from_raw_parts(p, n as usize) }.to_vec(),
    ))
}

/// An output buffer's description: `None` for a `NULL` buffer (length query).
///
/// # Safety
/// `pn` must be NULL or point to a readable `CK_ULONG`.
pub unsafe fn out_buf(p: *const u8, pn: *const CK_ULONG) -> Result<Option<u64>> {
    if pn.is_null() {
        return Err(Error::ArgumentsBad("NULL length pointer"));
    }
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: checked non-NULL; the caller guarantees it is readable.
    Ok(Some(unsafe { *pn } as u64))
}

/// Writes an answer into the caller's buffer and length and returns the `CK_RV`.
///
/// # Safety
/// `pn` must be writable; a non-NULL `p` must have room for the `*pn` bytes
/// the caller declared when the request was made.
pub unsafe fn write_out(
    p: *mut u8,
    pn: *mut CK_ULONG,
    cap: Option<u64>,
    out: (CK_RV, u64, Option<Vec<u8>>),
) -> CK_RV {
    let (rv, len, data) = out;
    match (cap, data) {
        (Some(cap), Some(d)) if !p.is_null() && d.len() as u64 <= cap => {
            // SAFETY: the caller's buffer has `cap` >= d.len() bytes.
            unsafe {
                ptr::copy_nonoverlapping(d.as_ptr(), p, d.len());
                *pn = d.len() as CK_ULONG;
            }
            rv
        }
        (Some(_), Some(_)) => CKR_DEVICE_ERROR,
        _ => {
            // SAFETY: `pn` is writable by the caller's contract.
            unsafe { *pn = len as CK_ULONG };
            rv
        }
    }
}

/// Writes a value through an out-pointer, `CKR_ARGUMENTS_BAD` if it is NULL.
///
/// # Safety
/// A non-NULL `p` must be writable.
pub unsafe fn put<T>(p: *mut T, v: T) -> Result<()> {
    if p.is_null() {
        return Err(Error::ArgumentsBad("NULL out-pointer"));
    }
    // SAFETY: checked non-NULL; writable by the caller's contract.
    unsafe { p.write(v) };
    Ok(())
}

/// Writes a list the PKCS#11 way: `NULL` asks for the count, a short buffer
/// is `CKR_BUFFER_TOO_SMALL` with the count set.
///
/// # Safety
/// `pn` must be NULL or writable; a non-NULL `p` must have room for `*pn` items.
pub unsafe fn write_list<T>(
    p: *mut T,
    pn: *mut CK_ULONG,
    items: impl ExactSizeIterator<Item = T>,
) -> Result<CK_RV> {
    if pn.is_null() {
        return Err(Error::ArgumentsBad("NULL count pointer"));
    }
    let n = items.len();
    // SAFETY: checked non-NULL; the caller's contract.
    unsafe {
        if !p.is_null() && (*pn as usize) < n {
            *pn = n as CK_ULONG;
            return Ok(CKR_BUFFER_TOO_SMALL);
        }
        if !p.is_null() {
            for (i, v) in items.enumerate() {
                p.add(i).write(v);
            }
        }
        *pn = n as CK_ULONG;
    }
    Ok(CKR_OK)
}

/// A C array of `n` items, at most `max`: `NULL` with `n == 0` is empty,
/// `NULL` with a count is `CKR_ARGUMENTS_BAD`, more than `max` is `too_many`.
///
/// # Safety
/// A non-NULL `p` must point to `n` readable items that outlive `'a`.
pub unsafe fn array<'a, T>(
    p: *const T,
    n: CK_ULONG,
    max: usize,
    too_many: Error,
) -> Result<&'a [T]> {
    if p.is_null() {
        return match n {
            0 => Ok(&[]),
            _ => Err(Error::ArgumentsBad("NULL array with a non-zero count")),
        };
    }
    if n as usize > max {
        return Err(too_many);
    }
    // SAFETY: the caller guarantees `n` items at `p`.
    Ok(unsafe { std::slice::from_raw_parts(p, n as usize) })
}

/// A PIN: `None` for `NULL`, else its bytes in a [`Pin`] that wipes them.
///
/// # Safety
/// A non-NULL `p` must point to `n` readable bytes.
pub unsafe fn pin_in(p: *const u8, n: CK_ULONG) -> Result<Option<Pin>> {
    // SAFETY: forwarded caller contract.
    Ok(unsafe { bytes_in(p, n) }?.map(Pin::new))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expect NULL with a length of 0 to be "no buffer", and NULL with a
    // non-zero length to be CKR_ARGUMENTS_BAD.
    #[test]
    fn null_and_lengths() {
        // SAFETY: NULL pointers and a live 3-byte buffer.
        unsafe {
            assert_eq!(bytes_in(ptr::null(), 0).unwrap(), None);
            assert!(matches!(
                bytes_in(ptr::null(), 3),
                Err(Error::ArgumentsBad(_))
            ));
            let b = [1u8, 2, 3];
            assert_eq!(bytes_in(b.as_ptr(), 3).unwrap(), Some(vec![1, 2, 3]));
            assert_eq!(bytes_in(b.as_ptr(), 0).unwrap(), Some(vec![]));
            assert!(matches!(
                bytes_in(b.as_ptr(), MAX_INPUT + 1),
                Err(Error::ArgumentsBad(_))
            ));
        }
    }

    // Expect CKR_ARGUMENTS_BAD for a NULL length pointer, and a NULL buffer
    // to be a length query.
    #[test]
    fn output_buffers() {
        let mut n: CK_ULONG = 8;
        let mut buf = [0u8; 8];
        // SAFETY: live buffer and length.
        unsafe {
            assert!(matches!(
                out_buf(buf.as_ptr(), ptr::null()),
                Err(Error::ArgumentsBad(_))
            ));
            assert_eq!(out_buf(ptr::null(), &n).unwrap(), None);
            assert_eq!(out_buf(buf.as_ptr(), &n).unwrap(), Some(8));
            let rv = write_out(
                buf.as_mut_ptr(),
                &mut n,
                Some(8),
                (CKR_OK, 2, Some(vec![7, 7])),
            );
            assert_eq!((rv, n, buf[..3].to_vec()), (CKR_OK, 2, vec![7, 7, 0]));
            // An answer larger than the capacity given is a device error, not an overrun.
            let rv = write_out(
                buf.as_mut_ptr(),
                &mut n,
                Some(1),
                (CKR_OK, 2, Some(vec![9, 9])),
            );
            assert_eq!(rv, CKR_DEVICE_ERROR);
            assert_eq!(buf[1], 7);
        }
    }

    // Expect a NULL list to give the count, a short one CKR_BUFFER_TOO_SMALL
    // with the count, and CKR_ARGUMENTS_BAD for a NULL count pointer.
    #[test]
    fn lists() {
        let items = [5 as CK_ULONG, 6, 7];
        let mut n: CK_ULONG = 0;
        let mut out = [0 as CK_ULONG; 3];
        // SAFETY: live buffers.
        unsafe {
            assert_eq!(
                write_list(ptr::null_mut(), &mut n, items.into_iter()).unwrap(),
                CKR_OK
            );
            assert_eq!(n, 3);
            n = 2;
            assert_eq!(
                write_list(out.as_mut_ptr(), &mut n, items.into_iter()).unwrap(),
                CKR_BUFFER_TOO_SMALL
            );
            assert_eq!((n, out[0]), (3, 0));
            assert_eq!(
                write_list(out.as_mut_ptr(), &mut n, items.into_iter()).unwrap(),
                CKR_OK
            );
            assert_eq!(out, [5, 6, 7]);
            assert!(write_list(out.as_mut_ptr(), ptr::null_mut(), items.into_iter()).is_err());
        }
    }
}
