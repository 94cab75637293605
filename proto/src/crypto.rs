//! Encryption, decryption, message digesting, signing, verification,
//! dual-function operations and random numbers (PKCS#11 3.0 §5.8-§5.15):
//! the payloads of their calls. Most share one of four shapes.

use serde::{Deserialize, Serialize};

use crate::{Handle, Mechanism, OutBuf};

/// `*Init` calls that take a mechanism and a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpInit {
    pub session: Handle,
    pub mechanism: Mechanism,
    pub key: Handle,
}

/// Calls that take input data and produce output (`C_Sign`, `C_Encrypt`, `C_*Update` of ciphers, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataOut {
    pub session: Handle,
    /// `None` for a `NULL` input pointer.
    #[serde(with = "serde_bytes")]
    pub data: Option<Vec<u8>>,
    pub out: OutBuf,
}

/// Calls that take input data only (`C_SignUpdate`, `C_DigestUpdate`,
/// `C_SeedRandom`, `C_VerifyFinal` with the signature, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataIn {
    pub session: Handle,
    /// `None` for a `NULL` input pointer.
    #[serde(with = "serde_bytes")]
    pub data: Option<Vec<u8>>,
}

/// Calls that only produce output (`C_*Final`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutOnly {
    pub session: Handle,
    pub out: OutBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestInit {
    pub session: Handle,
    pub mechanism: Mechanism,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestKey {
    pub session: Handle,
    pub key: Handle,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verify {
    pub session: Handle,
    #[serde(with = "serde_bytes")]
    pub data: Option<Vec<u8>>,
    #[serde(with = "serde_bytes")]
    pub signature: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerateRandom {
    pub session: Handle,
    pub len: u64,
}
