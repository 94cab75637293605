//! General-purpose functions (PKCS#11 3.0 §5.4) and the legacy parallel
//! function management (§5.20).

use kmsp11_proto::{Body, GetInfo, Info, Response, SessionOnly, Version};

use super::{answer, done};
use kmsp11_proto::pad;

use crate::core::call::Call;
use crate::daemon::{Context, Daemon};
use crate::error::Error;

/// C_GetInfo (§5.4): the library's own identity, not the backend's.
pub fn info(_d: &Daemon, _ctx: &Context, _c: &Call, _q: GetInfo) -> Result<Response, Error> {
    answer(Body::Info(Info {
        cryptoki_version: Version {
            major: 2,
            minor: 40,
        },
        manufacturer_id: pad::<32>(b"kmsp11").to_vec(),
        flags: 0,
        library_description: pad::<32>(b"kmsp11 remote PKCS#11").to_vec(),
        library_version: Version { major: 0, minor: 1 },
    }))
}

/// C_GetFunctionStatus (§5.20).
pub fn function_status(
    d: &Daemon,
    _ctx: &Context,
    c: &Call,
    _q: SessionOnly,
) -> Result<Response, Error> {
    d.backend.function_status(c.session()?.backend)?;
    done()
}

/// C_CancelFunction (§5.20).
pub fn cancel_function(
    d: &Daemon,
    _ctx: &Context,
    c: &Call,
    _q: SessionOnly,
) -> Result<Response, Error> {
    d.backend.cancel_function(c.session()?.backend)?;
    done()
}
