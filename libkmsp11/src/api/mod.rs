//! Safe Rust, one function per `C_*` that needs more than its shape, files
//! named after the spec chapters. Each builds one request, sends it on the
//! client the C shell looked up, and turns the answer into values; a backend
//! `CK_RV` comes back unchanged as [`Error::Rv`].

pub mod crypto;
pub mod general;
pub mod keymgmt;
pub mod object;
pub mod session;
pub mod slot_token;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use kmsp11_proto::{Body, Request};
use parking_lot::RwLock;
use pkcs11_sys::*;

use crate::client::Client;
use crate::error::{Error, Result};

/// The initialised library: the process it was initialised in and its client.
pub(crate) struct Global {
    pub pid: u32,
    pub client: Arc<Client>,
}

pub(crate) static STATE: RwLock<Option<Arc<Global>>> = RwLock::new(None);
/// Bumped by every C_Initialize and C_Finalize, so that a blocking
/// C_WaitForSlotEvent notices a C_Finalize from another thread.
pub(crate) static GENERATION: AtomicU64 = AtomicU64::new(0);

pub(crate) fn pid() -> u32 {
    std::process::id()
}

/// The client of an initialised library in this process. A forked child
/// sees `CKR_CRYPTOKI_NOT_INITIALIZED` until it calls C_Initialize itself.
pub fn client() -> Result<Arc<Client>> {
    match &*STATE.read() {
        Some(g) if g.pid == pid() => Ok(g.client.clone()),
        _ => Err(Error::NotInitialized),
    }
}

pub(crate) fn generation() -> u64 {
    GENERATION.load(Ordering::SeqCst)
}

/// For calls whose only answer is a `CK_RV`.
pub fn rv_only(c: &Client, req: Request) -> Result<()> {
    let r = c.call(req)?;
    if r.rv == CKR_OK {
        Ok(())
    } else {
        Err(Error::Rv(r.rv))
    }
}

/// For calls that answer a body on success.
pub fn body(c: &Client, req: Request) -> Result<Body> {
    let r = c.call(req)?;
    if r.rv == CKR_OK {
        Ok(r.body)
    } else {
        Err(Error::Rv(r.rv))
    }
}

/// What a call that writes a caller buffer answers: `(rv, length, bytes)`.
pub type Output = (CK_RV, u64, Option<Vec<u8>>);

pub fn output(c: &Client, req: Request) -> Result<Output> {
    let name = req.call().c_name();
    let r = c.call(req)?;
    match r.body {
        Body::Output { len, data } => Ok((r.rv, len, data)),
        Body::Empty => Ok((r.rv, 0, None)),
        _ => Err(Error::Protocol(name)),
    }
}

/// For calls that answer one object or session handle.
pub fn handle(c: &Client, req: Request) -> Result<u64> {
    let name = req.call().c_name();
    match body(c, req)? {
        Body::Handle(h) => Ok(h),
        _ => Err(Error::Protocol(name)),
    }
}
