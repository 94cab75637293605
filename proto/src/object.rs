//! Object management (PKCS#11 3.0 §5.7): the payloads of its calls.

use serde::{Deserialize, Serialize};

use crate::{attrs, AttrQuery, Handle, Template};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateObject {
    pub session: Handle,
    #[serde(deserialize_with = "attrs::template")]
    pub template: Template,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyObject {
    pub session: Handle,
    pub object: Handle,
    #[serde(deserialize_with = "attrs::template")]
    pub template: Template,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestroyObject {
    pub session: Handle,
    pub object: Handle,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetObjectSize {
    pub session: Handle,
    pub object: Handle,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetAttributeValue {
    pub session: Handle,
    pub object: Handle,
    #[serde(deserialize_with = "attrs::queries")]
    pub template: Vec<AttrQuery>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetAttributeValue {
    pub session: Handle,
    pub object: Handle,
    #[serde(deserialize_with = "attrs::template")]
    pub template: Template,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindObjectsInit {
    pub session: Handle,
    #[serde(deserialize_with = "attrs::template")]
    pub template: Template,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindObjects {
    pub session: Handle,
    pub max: u64,
}
