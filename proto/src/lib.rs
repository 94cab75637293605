//! The kmsp11 wire protocol.
//!
//! One [`Request`] variant per PKCS#11 call, one [`Response`] per request. Every
//! `CK_ULONG` travels as `u64` whatever the platform. Frames are
//! `[magic "KP11"][version u16][reserved u16][payload length u32]` followed by
//! the payload encoded by [`codec`]; the payload is bounded by [`MAX_PAYLOAD`].
//!
//! Every request travels in an [`Envelope`] with a request id: a request the
//! library sends again after a lost connection carries the same id and is
//! answered from kmsd's kept answer instead of running twice.
//!
//! An existing variant's encoding never changes: a new call is a new variant at
//! the end of the enum and a bump of [`PROTOCOL_VERSION`]'s minor part.
#![forbid(unsafe_code)]

pub mod attrs;
pub mod codec;
pub mod frame;
pub mod hostile;
pub mod mechanism;
pub mod secret;

use serde::{Deserialize, Serialize};

pub use codec::{decode, encode, CodecError};
pub use frame::{FrameHeader, FRAME_HEADER_LEN, MAGIC, MAX_PAYLOAD, PROTOCOL_VERSION};
pub use mechanism::{MechParam, Mechanism, OaepParams};
pub use secret::{Pin, Secret};

/// A PKCS#11 `CK_RV`, `CK_ULONG` and handle as they travel.
pub type Rv = u64;
pub type Handle = u64;

/// Length value meaning "unavailable" (`CK_UNAVAILABLE_INFORMATION`, i.e. `(CK_ULONG)-1`).
pub const UNAVAILABLE: u64 = u64::MAX;

/// Size of an opaque context token handed out by `Hello`.
pub const CONTEXT_TOKEN_LEN: usize = 32;

/// A template as the caller passed it: `None` for a `NULL` pointer, which
/// the backend may treat differently from an empty array.
pub type Template = Option<Vec<Attribute>>;

/// Where the caller wants output: `None` for a `NULL` buffer (a length query),
/// `Some(n)` for a buffer of `n` bytes.
pub type OutBuf = Option<u64>;

/// Opens or rejoins a client context. Sent first on every connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u16,
    /// The token of a context this library instance opened earlier.
    pub rejoin: Option<Vec<u8>>,
    /// Process id, for the daemon's logs only.
    pub pid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloOk {
    pub context: Vec<u8>,
    /// `false` when a fresh context was opened (first contact, or the daemon
    /// no longer knows the old one).
    pub rejoined: bool,
    /// Vendor mechanisms whose parameter kmsd forwards as raw bytes (its
    /// configuration lists them as pointer-free). The library sends any
    /// other vendor parameter as [`MechParam::Undescribed`].
    pub raw_mechanisms: Vec<u64>,
}

/// What the library sends: one request with its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique per library instance (client context), never 0 except for
    /// `Hello`, which is not kept.
    pub id: u64,
    /// `true` when this request was sent before on a connection that failed
    /// before its answer arrived: kmsd answers from the kept answer if it ran.
    pub resend: bool,
    pub request: Request,
}

/// A template attribute (`CK_ATTRIBUTE`) with its value typed so that
/// `CK_ULONG` values and nested templates do not depend on the platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribute {
    pub kind: u64,
    pub value: AttrValue,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttrValue {
    Bytes(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A `CK_ULONG`-valued attribute (class, key type, lengths, ...).
    Ulong(u64),
    /// An array of `CK_ULONG` (`CKA_ALLOWED_MECHANISMS`).
    Ulongs(Vec<u64>),
    /// An attribute array (`CKA_WRAP_TEMPLATE`, `CKA_UNWRAP_TEMPLATE`,
    /// `CKA_DERIVE_TEMPLATE`), decoded at most [`attrs::MAX_TEMPLATE_DEPTH`] deep.
    Template(#[serde(deserialize_with = "attrs::nested")] Vec<Attribute>),
}

/// One attribute asked for by `C_GetAttributeValue`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttrQuery {
    pub kind: u64,
    /// `None` for a `NULL` `pValue` (size query), else the caller's buffer length in bytes.
    pub buf: OutBuf,
}

/// One attribute answered by `C_GetAttributeValue`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttrAnswer {
    /// `ulValueLen` as the backend set it ([`UNAVAILABLE`] for invalid or sensitive).
    pub len: u64,
    /// Present when the caller gave a buffer and the backend filled it.
    pub value: Option<AttrValue>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub major: u8,
    pub minor: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    pub cryptoki_version: Version,
    pub manufacturer_id: Vec<u8>,
    pub flags: u64,
    pub library_description: Vec<u8>,
    pub library_version: Version,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotInfo {
    pub slot_description: Vec<u8>,
    pub manufacturer_id: Vec<u8>,
    pub flags: u64,
    pub hardware_version: Version,
    pub firmware_version: Version,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub label: Vec<u8>,
    pub manufacturer_id: Vec<u8>,
    pub model: Vec<u8>,
    pub serial_number: Vec<u8>,
    pub flags: u64,
    pub max_session_count: u64,
    pub session_count: u64,
    pub max_rw_session_count: u64,
    pub rw_session_count: u64,
    pub max_pin_len: u64,
    pub min_pin_len: u64,
    pub total_public_memory: u64,
    pub free_public_memory: u64,
    pub total_private_memory: u64,
    pub free_private_memory: u64,
    pub hardware_version: Version,
    pub firmware_version: Version,
    pub utc_time: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MechanismInfo {
    pub min_key_size: u64,
    pub max_key_size: u64,
    pub flags: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub slot: u64,
    pub state: u64,
    pub flags: u64,
    pub device_error: u64,
}

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

/// Calls that take input data only (`C_SignUpdate`, `C_DigestUpdate`, `C_SeedRandom`, ...).
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

/// One variant per PKCS#11 function, named after it, grouped by spec chapter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Hello(Hello),
    /// Ends the client context at once (`C_Finalize`): sessions closed, session objects gone.
    Goodbye,

    // general (PKCS#11 2.40 §5.4)
    GetInfo,
    // slot_token (§5.5)
    GetSlotList {
        token_present: bool,
    },
    GetSlotInfo {
        slot: u64,
    },
    GetTokenInfo {
        slot: u64,
    },
    WaitForSlotEvent {
        flags: u64,
    },
    GetMechanismList {
        slot: u64,
    },
    GetMechanismInfo {
        slot: u64,
        mechanism: u64,
    },
    InitToken {
        slot: u64,
        pin: Option<Pin>,
        label: Vec<u8>,
    },
    InitPin {
        session: Handle,
        pin: Option<Pin>,
    },
    SetPin {
        session: Handle,
        old: Option<Pin>,
        new: Option<Pin>,
    },
    // session (§5.6)
    OpenSession {
        slot: u64,
        flags: u64,
    },
    CloseSession {
        session: Handle,
    },
    CloseAllSessions {
        slot: u64,
    },
    GetSessionInfo {
        session: Handle,
    },
    GetOperationState(OutOnly),
    SetOperationState {
        session: Handle,
        state: Option<Vec<u8>>,
        encryption_key: Handle,
        authentication_key: Handle,
    },
    Login {
        session: Handle,
        user_type: u64,
        pin: Option<Pin>,
    },
    Logout {
        session: Handle,
    },
    // object (§5.7)
    CreateObject {
        session: Handle,
        #[serde(deserialize_with = "attrs::template")]
        template: Template,
    },
    CopyObject {
        session: Handle,
        object: Handle,
        #[serde(deserialize_with = "attrs::template")]
        template: Template,
    },
    DestroyObject {
        session: Handle,
        object: Handle,
    },
    GetObjectSize {
        session: Handle,
        object: Handle,
    },
    GetAttributeValue {
        session: Handle,
        object: Handle,
        #[serde(deserialize_with = "attrs::queries")]
        template: Vec<AttrQuery>,
    },
    SetAttributeValue {
        session: Handle,
        object: Handle,
        #[serde(deserialize_with = "attrs::template")]
        template: Template,
    },
    FindObjectsInit {
        session: Handle,
        #[serde(deserialize_with = "attrs::template")]
        template: Template,
    },
    FindObjects {
        session: Handle,
        max: u64,
    },
    FindObjectsFinal {
        session: Handle,
    },
    // encrypt (§5.8)
    EncryptInit(OpInit),
    Encrypt(DataOut),
    EncryptUpdate(DataOut),
    EncryptFinal(OutOnly),
    // decrypt (§5.9)
    DecryptInit(OpInit),
    Decrypt(DataOut),
    DecryptUpdate(DataOut),
    DecryptFinal(OutOnly),
    // digest (§5.10)
    DigestInit {
        session: Handle,
        mechanism: Mechanism,
    },
    Digest(DataOut),
    DigestUpdate(DataIn),
    DigestKey {
        session: Handle,
        key: Handle,
    },
    DigestFinal(OutOnly),
    // sign (§5.11)
    SignInit(OpInit),
    Sign(DataOut),
    SignUpdate(DataIn),
    SignFinal(OutOnly),
    SignRecoverInit(OpInit),
    SignRecover(DataOut),
    // verify (§5.12)
    VerifyInit(OpInit),
    Verify {
        session: Handle,
        #[serde(with = "serde_bytes")]
        data: Option<Vec<u8>>,
        #[serde(with = "serde_bytes")]
        signature: Option<Vec<u8>>,
    },
    VerifyUpdate(DataIn),
    VerifyFinal {
        session: Handle,
        #[serde(with = "serde_bytes")]
        signature: Option<Vec<u8>>,
    },
    VerifyRecoverInit(OpInit),
    VerifyRecover(DataOut),
    // dual-function (§5.13)
    DigestEncryptUpdate(DataOut),
    DecryptDigestUpdate(DataOut),
    SignEncryptUpdate(DataOut),
    DecryptVerifyUpdate(DataOut),
    // keymgmt (§5.14)
    GenerateKey {
        session: Handle,
        mechanism: Mechanism,
        #[serde(deserialize_with = "attrs::template")]
        template: Template,
    },
    GenerateKeyPair {
        session: Handle,
        mechanism: Mechanism,
        #[serde(deserialize_with = "attrs::template")]
        public: Template,
        #[serde(deserialize_with = "attrs::template")]
        private: Template,
    },
    WrapKey {
        session: Handle,
        mechanism: Mechanism,
        wrapping_key: Handle,
        key: Handle,
        out: OutBuf,
    },
    UnwrapKey {
        session: Handle,
        mechanism: Mechanism,
        unwrapping_key: Handle,
        #[serde(with = "serde_bytes")]
        wrapped: Option<Vec<u8>>,
        #[serde(deserialize_with = "attrs::template")]
        template: Template,
    },
    DeriveKey {
        session: Handle,
        mechanism: Mechanism,
        base_key: Handle,
        #[serde(deserialize_with = "attrs::template")]
        template: Template,
    },
    // random (§5.15)
    SeedRandom(DataIn),
    GenerateRandom {
        session: Handle,
        len: u64,
    },
    // parallel (§5.16)
    GetFunctionStatus {
        session: Handle,
    },
    CancelFunction {
        session: Handle,
    },
}

/// What a call returns besides its `CK_RV`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    Empty,
    HelloOk(HelloOk),
    Info(Info),
    Slots(Vec<u64>),
    SlotInfo(SlotInfo),
    TokenInfo(TokenInfo),
    Slot(u64),
    Mechanisms(Vec<u64>),
    MechanismInfo(MechanismInfo),
    Handle(Handle),
    Handles(Vec<Handle>),
    KeyPair {
        public: Handle,
        private: Handle,
    },
    SessionInfo(SessionInfo),
    Size(u64),
    /// Output of a data call: the length the backend reported and, when the
    /// caller gave a large enough buffer, the bytes.
    Output {
        len: u64,
        #[serde(with = "serde_bytes")]
        data: Option<Vec<u8>>,
    },
    Attributes(Vec<AttrAnswer>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub rv: Rv,
    pub body: Body,
}

impl Response {
    pub fn rv(rv: Rv) -> Self {
        Response {
            rv,
            body: Body::Empty,
        }
    }

    pub fn ok(body: Body) -> Self {
        Response { rv: 0, body }
    }
}

impl Request {
    /// Whether this request carries a PIN or password, so that every buffer
    /// that held its encoding is wiped after use.
    pub fn carries_secret(&self) -> bool {
        match self {
            Request::Login { pin, .. } | Request::InitPin { pin, .. } => pin.is_some(),
            Request::InitToken { pin, .. } => pin.is_some(),
            Request::SetPin { old, new, .. } => old.is_some() || new.is_some(),
            Request::GenerateKey { mechanism, .. } | Request::DeriveKey { mechanism, .. } => {
                mechanism.param.carries_secret()
            }
            _ => false,
        }
    }
}

impl Request {
    /// The most output bytes this request can make kmsd produce: the
    /// client's claims (random length, buffer capacities), as far as kmsd
    /// honours them. kmsd charges large requests to a memory budget first.
    pub fn output_claim(&self) -> u64 {
        /// Beyond its input plus this, kmsd asks the module for a data
        /// call's output length before allocating.
        const SLACK: u64 = 64 << 10;
        let data = |d: &DataOut| {
            let input = d.data.as_ref().map_or(0, |b| b.len() as u64);
            d.out.unwrap_or(0).min(input.saturating_add(SLACK))
        };
        let claim = match self {
            Request::GenerateRandom { len, .. } => *len,
            Request::GetAttributeValue { template, .. } => template
                .iter()
                .filter_map(|q| q.buf)
                .fold(0u64, |a, n| a.saturating_add(n)),
            Request::FindObjects { max, .. } => max.saturating_mul(8),
            Request::WrapKey { out, .. } => out.unwrap_or(0).min(SLACK),
            Request::Encrypt(d)
            | Request::EncryptUpdate(d)
            | Request::Decrypt(d)
            | Request::DecryptUpdate(d)
            | Request::Digest(d)
            | Request::Sign(d)
            | Request::SignRecover(d)
            | Request::VerifyRecover(d)
            | Request::DigestEncryptUpdate(d)
            | Request::DecryptDigestUpdate(d)
            | Request::SignEncryptUpdate(d)
            | Request::DecryptVerifyUpdate(d) => data(d),
            Request::EncryptFinal(o)
            | Request::DecryptFinal(o)
            | Request::DigestFinal(o)
            | Request::SignFinal(o) => o.out.unwrap_or(0).min(SLACK),
            _ => 0,
        };
        claim.min(MAX_PAYLOAD as u64)
    }
}
