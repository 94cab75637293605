//! General-purpose functions (PKCS#11 3.0 §5.4) and the legacy parallel
//! function management (§5.20): their payloads.

use serde::{Deserialize, Serialize};

use crate::Handle;

/// `C_GetInfo` (the library answers it itself; kmsd answers too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetInfo;

/// Calls that take a session only: `C_CloseSession`, `C_Logout`,
/// `C_FindObjectsFinal`, `C_GetFunctionStatus`, `C_CancelFunction`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionOnly {
    pub session: Handle,
}
