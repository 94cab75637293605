//! The protocol's own calls: Hello opens a connection and Batch carries
//! several calls (both handled by the door, never dispatched), and Goodbye
//! ends the client context (`C_Finalize`).

use kmsp11_proto::{Batch, Goodbye, Hello, Response};
use pkcs11_sys::*;

use super::done;
use crate::core::call::Call;
use crate::daemon::{Context, Daemon};
use crate::error::Error;

/// Hello after the first frame: refused.
pub fn hello(_d: &Daemon, _ctx: &Context, _c: &Call, _h: Hello) -> Result<Response, Error> {
    Err(Error::Rv(CKR_GENERAL_ERROR))
}

/// A batch inside a batch: refused (the door runs batches call by call).
pub fn batch(_d: &Daemon, _ctx: &Context, _c: &Call, _b: Batch) -> Result<Response, Error> {
    Err(Error::Rv(CKR_ARGUMENTS_BAD))
}

/// Goodbye: the context ends for all its connections.
pub fn goodbye(d: &Daemon, ctx: &Context, _c: &Call, _g: Goodbye) -> Result<Response, Error> {
    let sessions = d.end_context(ctx);
    tracing::debug!(
        context = ctx.id,
        pid = ctx.pid,
        sessions,
        "client finalized"
    );
    done()
}
