//! Key management (PKCS#11 3.0 §5.18).

use kmsp11_proto::{
    Body, DeriveKey, GenerateKey, GenerateKeyPair, Mechanism, OutBuf, Request, Template, UnwrapKey,
    WrapKey,
};

use super::{body, handle, output, Output};
use crate::client::Client;
use crate::error::{Error, Result};

/// C_GenerateKey (§5.18).
pub fn generate_key(
    c: &Client,
    session: u64,
    mechanism: Mechanism,
    template: Template,
) -> Result<u64> {
    handle(
        c,
        Request::GenerateKey(GenerateKey {
            session,
            mechanism,
            template,
        }),
    )
}

/// C_GenerateKeyPair (§5.18).
pub fn generate_key_pair(
    c: &Client,
    session: u64,
    mechanism: Mechanism,
    public: Template,
    private: Template,
) -> Result<(u64, u64)> {
    match body(
        c,
        Request::GenerateKeyPair(GenerateKeyPair {
            session,
            mechanism,
            public,
            private,
        }),
    )? {
        Body::KeyPair { public, private } => Ok((public, private)),
        _ => Err(Error::Protocol("C_GenerateKeyPair")),
    }
}

/// C_WrapKey (§5.18).
pub fn wrap_key(
    c: &Client,
    session: u64,
    mechanism: Mechanism,
    wrapping_key: u64,
    key: u64,
    out: OutBuf,
) -> Result<Output> {
    output(
        c,
        Request::WrapKey(WrapKey {
            session,
            mechanism,
            wrapping_key,
            key,
            out,
        }),
    )
}

/// C_UnwrapKey (§5.18).
pub fn unwrap_key(
    c: &Client,
    session: u64,
    mechanism: Mechanism,
    unwrapping_key: u64,
    wrapped: Option<Vec<u8>>,
    template: Template,
) -> Result<u64> {
    handle(
        c,
        Request::UnwrapKey(UnwrapKey {
            session,
            mechanism,
            unwrapping_key,
            wrapped,
            template,
        }),
    )
}

/// C_DeriveKey (§5.18).
pub fn derive_key(
    c: &Client,
    session: u64,
    mechanism: Mechanism,
    base_key: u64,
    template: Template,
) -> Result<u64> {
    handle(
        c,
        Request::DeriveKey(DeriveKey {
            session,
            mechanism,
            base_key,
            template,
        }),
    )
}
