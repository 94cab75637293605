//! The kmsp11 wire protocol.
//!
//! One [`Request`] variant per PKCS#11 call, one [`Response`] per request. Every
//! `CK_ULONG` travels as `u64` whatever the platform. Frames are
//! `[magic "KP11"][version u16][reserved u16][payload length u32]` followed by
//! the payload encoded by [`codec`]; the payload is bounded by [`MAX_PAYLOAD`].
//!
//! An existing variant's encoding never changes: a new call is a new variant at
//! the end of the enum and a bump of [`PROTOCOL_VERSION`]'s minor part.
#![forbid(unsafe_code)]

pub mod attrs;
pub mod codec;
pub mod frame;

use serde::{Deserialize, Serialize};

pub use codec::{decode, encode, CodecError};
pub use frame::{FrameHeader, FRAME_HEADER_LEN, MAGIC, MAX_PAYLOAD, PROTOCOL_VERSION};

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
    /// An attribute array (`CKA_WRAP_TEMPLATE`, `CKA_UNWRAP_TEMPLATE`, `CKA_DERIVE_TEMPLATE`).
    Template(Vec<Attribute>),
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

/// A `CK_MECHANISM` with its parameter decoded into a typed form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mechanism {
    pub mechanism: u64,
    pub param: MechParam,
}

/// Mechanism parameters. Pointer-free parameters travel as their bytes; every
/// structure with embedded pointers has its own variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MechParam {
    /// `pParameter = NULL`, `ulParameterLen = 0`.
    None,
    /// A pointer-free parameter as raw bytes: IVs, DH public values, CTR/CMAC
    /// parameters, `CK_MAC_GENERAL_PARAMS` (a `CK_ULONG`, see [`MechParam::Ulong`]), ...
    Bytes(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A single `CK_ULONG` parameter (`CK_MAC_GENERAL_PARAMS`, `CK_EXTRACT_PARAMS`).
    Ulong(u64),
    /// A single `CK_OBJECT_HANDLE` parameter (`CKM_CONCATENATE_BASE_AND_KEY`).
    Key(Handle),
    /// A structure of the right mechanism but of a length that fits no known
    /// layout: forwarded as that many zero bytes so that the backend gives its
    /// own verdict without ever seeing a foreign pointer.
    BadLength(u64),
    RsaPkcsPss {
        hash_alg: u64,
        mgf: u64,
        salt_len: u64,
    },
    RsaPkcsOaep {
        hash_alg: u64,
        mgf: u64,
        source: u64,
        source_data: Option<Vec<u8>>,
    },
    /// `CK_GCM_PARAMS`. `iv_bits` is `Some` for the 2.40-errata layout with
    /// `ulIvBits` (48 bytes on LP64) and `None` for the layout without it
    /// (40 bytes), which Java 17 tries first.
    Gcm {
        iv: Option<Vec<u8>>,
        iv_bits: Option<u64>,
        aad: Option<Vec<u8>>,
        tag_bits: u64,
    },
    Ccm {
        data_len: u64,
        nonce: Option<Vec<u8>>,
        aad: Option<Vec<u8>>,
        mac_len: u64,
    },
    Ecdh1Derive {
        kdf: u64,
        shared_data: Option<Vec<u8>>,
        public_data: Option<Vec<u8>>,
    },
    Eddsa {
        ph_flag: bool,
        context: Option<Vec<u8>>,
    },
    /// `CK_KEY_DERIVATION_STRING_DATA` (ECB_ENCRYPT_DATA, CONCATENATE_*_DATA, XOR_BASE_AND_DATA).
    DerivationString(Option<Vec<u8>>),
    /// `CK_AES_CBC_ENCRYPT_DATA_PARAMS` (16-byte IV) and `CK_DES_CBC_ENCRYPT_DATA_PARAMS` (8-byte IV).
    CbcEncryptData { iv: Vec<u8>, data: Option<Vec<u8>> },
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
        pin: Option<Vec<u8>>,
        label: Vec<u8>,
    },
    InitPin {
        session: Handle,
        pin: Option<Vec<u8>>,
    },
    SetPin {
        session: Handle,
        old: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
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
        pin: Option<Vec<u8>>,
    },
    Logout {
        session: Handle,
    },
    // object (§5.7)
    CreateObject {
        session: Handle,
        template: Template,
    },
    CopyObject {
        session: Handle,
        object: Handle,
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
        template: Vec<AttrQuery>,
    },
    SetAttributeValue {
        session: Handle,
        object: Handle,
        template: Template,
    },
    FindObjectsInit {
        session: Handle,
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
        template: Template,
    },
    GenerateKeyPair {
        session: Handle,
        mechanism: Mechanism,
        public: Template,
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
        template: Template,
    },
    DeriveKey {
        session: Handle,
        mechanism: Mechanism,
        base_key: Handle,
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
