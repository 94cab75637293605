//! Key management (PKCS#11 3.0 §5.18): the payloads of its calls.

use serde::{Deserialize, Serialize};

use crate::{attrs, Handle, Mechanism, OutBuf, Template};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerateKey {
    pub session: Handle,
    pub mechanism: Mechanism,
    #[serde(deserialize_with = "attrs::template")]
    pub template: Template,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerateKeyPair {
    pub session: Handle,
    pub mechanism: Mechanism,
    #[serde(deserialize_with = "attrs::template")]
    pub public: Template,
    #[serde(deserialize_with = "attrs::template")]
    pub private: Template,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrapKey {
    pub session: Handle,
    pub mechanism: Mechanism,
    pub wrapping_key: Handle,
    pub key: Handle,
    pub out: OutBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnwrapKey {
    pub session: Handle,
    pub mechanism: Mechanism,
    pub unwrapping_key: Handle,
    #[serde(with = "serde_bytes")]
    pub wrapped: Option<Vec<u8>>,
    #[serde(deserialize_with = "attrs::template")]
    pub template: Template,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeriveKey {
    pub session: Handle,
    pub mechanism: Mechanism,
    pub base_key: Handle,
    #[serde(deserialize_with = "attrs::template")]
    pub template: Template,
}
