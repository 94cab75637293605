//! Slot and token management (PKCS#11 3.0 §5.5): the payloads of its calls.

use serde::{Deserialize, Serialize};

use crate::{Handle, Pin};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetSlotList {
    pub token_present: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetSlotInfo {
    pub slot: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetTokenInfo {
    pub slot: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitForSlotEvent {
    pub flags: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetMechanismList {
    pub slot: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetMechanismInfo {
    pub slot: u64,
    pub mechanism: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitToken {
    pub slot: u64,
    pub pin: Option<Pin>,
    pub label: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitPin {
    pub session: Handle,
    pub pin: Option<Pin>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetPin {
    pub session: Handle,
    pub old: Option<Pin>,
    pub new: Option<Pin>,
}
