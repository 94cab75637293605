//! Encryption, decryption, digesting, signing, verification and random
//! numbers (PKCS#11 3.0 §5.8-§5.15) on the backend. Calls of a shared shape
//! find their entry of the module's list by their id (`Backend::*_fn`,
//! generated from proto's call table).

use kmsp11_proto::{CallId, OutBuf};
use pkcs11_sys::*;

use super::{marshal, with_out, Backend, CMechanism, Output, MAX_OUT};
use crate::error::Error;
use crate::handles::{BObject, BSession};

impl Backend {
    /// A call of the `*Init` shape.
    pub fn op_init(
        &self,
        call: CallId,
        s: BSession,
        m: &mut CMechanism,
        key: BObject,
    ) -> Result<(), Error> {
        let rv = match self.op_init_fn(call) {
            // SAFETY: `m` owns the mechanism and every buffer it points to.
            Some(fp) => unsafe { fp(s.0, m.as_mut_ptr(), key.0) },
            None => CKR_FUNCTION_NOT_SUPPORTED,
        };
        Error::check(call.c_name(), rv)
    }

    /// A call of the `C_Sign` shape (input, output buffer).
    pub fn data_out(&self, call: CallId, s: BSession, data: Option<&[u8]>, out: OutBuf) -> Output {
        let Some(fp) = self.data_out_fn(call) else {
            return (CKR_FUNCTION_NOT_SUPPORTED, 0, None);
        };
        let (pin, nin) = marshal::opt_in(data);
        // SAFETY: input points into `data`; output as built by `with_out`.
        with_out(out, nin as usize, |p, n| unsafe { fp(s.0, pin, nin, p, n) })
    }

    /// A call of the `C_*Final` shape (output buffer only).
    pub fn out_only(&self, call: CallId, s: BSession, out: OutBuf) -> Output {
        let Some(fp) = self.out_only_fn(call) else {
            return (CKR_FUNCTION_NOT_SUPPORTED, 0, None);
        };
        // SAFETY: output as built by `with_out`.
        with_out(out, 0, |p, n| unsafe { fp(s.0, p, n) })
    }

    /// A call of the `C_SignUpdate` shape (input only).
    pub fn data_in(&self, call: CallId, s: BSession, data: Option<&[u8]>) -> Result<(), Error> {
        let rv = match self.data_in_fn(call) {
            Some(fp) => {
                let (p, n) = marshal::opt_in(data);
                // SAFETY: `p`/`n` describe `data`.
                unsafe { fp(s.0, p, n) }
            }
            None => CKR_FUNCTION_NOT_SUPPORTED,
        };
        Error::check(call.c_name(), rv)
    }

    pub fn digest_init(&self, s: BSession, m: &mut CMechanism) -> Result<(), Error> {
        checked!(self, C_DigestInit, s.0, m.as_mut_ptr())
    }

    pub fn digest_key(&self, s: BSession, key: BObject) -> Result<(), Error> {
        checked!(self, C_DigestKey, s.0, key.0)
    }

    pub fn verify(
        &self,
        s: BSession,
        data: Option<&[u8]>,
        sig: Option<&[u8]>,
    ) -> Result<(), Error> {
        let (pd, nd) = marshal::opt_in(data);
        let (ps, ns) = marshal::opt_in(sig);
        checked!(self, C_Verify, s.0, pd, nd, ps, ns)
    }

    pub fn generate_random(&self, s: BSession, len: u64) -> Result<Vec<u8>, Error> {
        let mut out = vec![0u8; len.min(MAX_OUT) as usize];
        checked!(
            self,
            C_GenerateRandom,
            s.0,
            out.as_mut_ptr(),
            out.len() as CK_ULONG
        )?;
        Ok(out)
    }
}
