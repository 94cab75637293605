//! Session management (PKCS#11 3.0 §5.6): the payloads of its calls.

use serde::{Deserialize, Serialize};

use crate::{Handle, OutBuf, Pin};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenSession {
    pub slot: u64,
    pub flags: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseAllSessions {
    pub slot: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetSessionInfo {
    pub session: Handle,
}

/// `C_GetOperationState` (kmsd refuses it: an operation state is module memory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetOperationState {
    pub session: Handle,
    pub out: OutBuf,
}

/// `C_SetOperationState` (kmsd refuses it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetOperationState {
    pub session: Handle,
    pub state: Option<Vec<u8>>,
    pub encryption_key: Handle,
    pub authentication_key: Handle,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Login {
    pub session: Handle,
    pub user_type: u64,
    pub pin: Option<Pin>,
}
