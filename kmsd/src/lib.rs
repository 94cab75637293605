//! kmsd as a library: the binary in `main.rs`, the tests and the fuzz
//! targets use the same modules.

#![deny(unsafe_code)]

pub mod audit;
pub mod authz;
pub mod config;
pub mod context;
pub mod core;
pub mod daemon;
pub mod dev;
pub mod error;
pub mod front;
pub mod handles;
pub mod hsm;
pub mod identities_cli;
pub mod identity;
pub mod issue;
pub mod keys_cli;
pub mod metrics;
pub mod ops;
pub mod pin;
pub mod store;
