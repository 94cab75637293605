//! The doors through which requests arrive (DESIGN.md "front/"). A door
//! turns what arrives into a call and hands it on; it decides nothing.

pub mod admin;
pub mod pkcs11;
pub mod rest;
pub mod tls;
