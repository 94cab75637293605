//! libkmsp11: a PKCS#11 module that forwards every call to kmsd over
//! mutually authenticated TLS.
//!
//! `ffi/` is the C ABI and the only place with `unsafe`; `api/` is safe Rust,
//! one function per `C_*`, files named after the spec chapters; `client/`
//! is the blocking rustls transport and connection pool. The library starts
//! no thread of its own (NSS and GnuTLS pass `CKF_LIBRARY_CANT_CREATE_OS_THREADS`).
#![deny(unsafe_code)]

pub mod api;
pub mod client;
pub mod config;
pub mod error;
pub mod ffi;

pub use error::Error;
