//! Key management (PKCS#11 2.40 §5.14).

use kmsp11_proto::{Body, Mechanism, OutBuf, Request, Template};

use super::{body, handle, output, Output};
use crate::error::{Error, Result};

/// C_GenerateKey (§5.14).
pub fn generate_key(session: u64, mechanism: Mechanism, template: Template) -> Result<u64> {
    handle(
        Request::GenerateKey {
            session,
            mechanism,
            template,
        },
        "C_GenerateKey",
    )
}

/// C_GenerateKeyPair (§5.14).
pub fn generate_key_pair(
    session: u64,
    mechanism: Mechanism,
    public: Template,
    private: Template,
) -> Result<(u64, u64)> {
    match body(Request::GenerateKeyPair {
        session,
        mechanism,
        public,
        private,
    })? {
        Body::KeyPair { public, private } => Ok((public, private)),
        _ => Err(Error::Protocol("C_GenerateKeyPair")),
    }
}

/// C_WrapKey (§5.14).
pub fn wrap_key(
    session: u64,
    mechanism: Mechanism,
    wrapping_key: u64,
    key: u64,
    out: OutBuf,
) -> Result<Output> {
    output(
        Request::WrapKey {
            session,
            mechanism,
            wrapping_key,
            key,
            out,
        },
        "C_WrapKey",
    )
}

/// C_UnwrapKey (§5.14).
pub fn unwrap_key(
    session: u64,
    mechanism: Mechanism,
    unwrapping_key: u64,
    wrapped: Option<Vec<u8>>,
    template: Template,
) -> Result<u64> {
    handle(
        Request::UnwrapKey {
            session,
            mechanism,
            unwrapping_key,
            wrapped,
            template,
        },
        "C_UnwrapKey",
    )
}

/// C_DeriveKey (§5.14).
pub fn derive_key(
    session: u64,
    mechanism: Mechanism,
    base_key: u64,
    template: Template,
) -> Result<u64> {
    handle(
        Request::DeriveKey {
            session,
            mechanism,
            base_key,
            template,
        },
        "C_DeriveKey",
    )
}
