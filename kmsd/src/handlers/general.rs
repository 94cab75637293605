//! General-purpose functions (PKCS#11 2.40 §5.4).

use kmsp11_proto::{Body, Info, Response, Version};

use crate::daemon::{pad, Daemon};

/// C_GetInfo (§5.4): the library's own identity, not the backend's.
pub fn info(_d: &Daemon) -> Response {
    Response::ok(Body::Info(Info {
        cryptoki_version: Version {
            major: 2,
            minor: 40,
        },
        manufacturer_id: pad::<32>("kmsp11").to_vec(),
        flags: 0,
        library_description: pad::<32>("kmsp11 remote PKCS#11").to_vec(),
        library_version: Version { major: 0, minor: 1 },
    }))
}
