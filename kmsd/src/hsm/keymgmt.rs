//! Key management (PKCS#11 3.0 §5.18) on the backend.

use kmsp11_proto::OutBuf;
use pkcs11_sys::*;

use super::{made, marshal, with_out, Backend, CMechanism, CTemplate, Output};
use crate::error::Error;
use crate::handles::{BObject, BSession};

impl Backend {
    pub fn generate_key(
        &self,
        s: BSession,
        m: &mut CMechanism,
        t: &mut CTemplate,
    ) -> Result<BObject, Error> {
        made(|h| {
            checked!(
                self,
                C_GenerateKey,
                s.0,
                m.as_mut_ptr(),
                t.as_mut_ptr(),
                t.len(),
                h
            )
        })
    }

    pub fn generate_key_pair(
        &self,
        s: BSession,
        m: &mut CMechanism,
        public: &mut CTemplate,
        private: &mut CTemplate,
    ) -> Result<(BObject, BObject), Error> {
        let (mut hp, mut hq): (CK_OBJECT_HANDLE, CK_OBJECT_HANDLE) = (0, 0);
        checked!(
            self,
            C_GenerateKeyPair,
            s.0,
            m.as_mut_ptr(),
            public.as_mut_ptr(),
            public.len(),
            private.as_mut_ptr(),
            private.len(),
            &mut hp,
            &mut hq
        )?;
        Ok((BObject(hp), BObject(hq)))
    }

    pub fn wrap_key(
        &self,
        s: BSession,
        m: &mut CMechanism,
        wrapping: BObject,
        key: BObject,
        out: OutBuf,
    ) -> Output {
        let mp = m.as_mut_ptr();
        // SAFETY: reading a function pointer out of the module's list.
        let Some(fp) = (unsafe { (*self.fns).C_WrapKey }) else {
            return (CKR_FUNCTION_NOT_SUPPORTED, 0, None);
        };
        // SAFETY: `m` owns the mechanism; output as built by `with_out`.
        with_out(out, 0, |p, n| unsafe {
            fp(s.0, mp, wrapping.0, key.0, p, n)
        })
    }

    pub fn unwrap_key(
        &self,
        s: BSession,
        m: &mut CMechanism,
        unwrapping: BObject,
        wrapped: Option<&[u8]>,
        t: &mut CTemplate,
    ) -> Result<BObject, Error> {
        let (pw, nw) = marshal::opt_in(wrapped);
        let (m, u) = (m.as_mut_ptr(), unwrapping.0);
        made(|h| {
            checked!(
                self,
                C_UnwrapKey,
                s.0,
                m,
                u,
                pw,
                nw,
                t.as_mut_ptr(),
                t.len(),
                h
            )
        })
    }

    pub fn derive_key(
        &self,
        s: BSession,
        m: &mut CMechanism,
        base: BObject,
        t: &mut CTemplate,
    ) -> Result<BObject, Error> {
        let m = m.as_mut_ptr();
        made(|h| {
            checked!(
                self,
                C_DeriveKey,
                s.0,
                m,
                base.0,
                t.as_mut_ptr(),
                t.len(),
                h
            )
        })
    }
}
