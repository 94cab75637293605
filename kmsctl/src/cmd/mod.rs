//! One subcommand per file.

pub mod approvals;
pub mod audit;
pub mod certs;
pub mod identities;
pub mod keys;
pub mod policy;
pub mod quotas;
pub mod status;
