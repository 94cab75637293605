//! The seam between the doors and the HSM (DESIGN.md "core/"): every
//! request becomes a [`call::Call`] ([`resolve`]) and passes
//! [`pipeline::Pipeline::run`]: decide, record, act, record the outcome.
//! Sessions remember their active operation ([`active`]); keys have ids
//! and states in the [`inventory`]; a refusal is a [`refusal::Refusal`].

pub mod active;
pub mod call;
pub mod certs;
pub mod csr;
pub mod facts;
pub mod inventory;
pub mod lifecycle;
pub mod pipeline;
pub mod refusal;
pub mod resolve;
pub mod rotate;

/// Why kmsd's own work on keys and certificates (rotation, certificate
/// import, requests) was not done.
#[derive(Debug, thiserror::Error)]
pub enum WorkError {
    /// Not doable as asked: the key's class, type or state, the
    /// certificates given.
    #[error("{0}")]
    Refused(String),
    /// The HSM or the store failed; nothing was changed.
    #[error("{0}")]
    Failed(String),
}

/// A mechanism by its name (`CKM_AES_GCM`), or its number in hex.
pub fn mechanism_name(m: u64) -> String {
    match cryptoki::mechanism::MechanismType::try_from(m as pkcs11_sys::CK_MECHANISM_TYPE) {
        Ok(t) => t.to_string(),
        Err(_) => format!("{m:#x}"),
    }
}
