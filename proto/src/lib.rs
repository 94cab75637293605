//! The kmsp11 wire protocol.
//!
//! One [`Request`] per call of the call table ([`calls`]), one [`Response`]
//! per request; payloads live in modules named after the spec chapters. Every
//! `CK_ULONG` travels as `u64` whatever the platform. Frames are
//! `[magic "KP11"][version u16][reserved u16][payload length u32]` followed by
//! the payload encoded by [`codec`]; the payload is bounded by [`MAX_PAYLOAD`].
//!
//! Every request travels in an [`Envelope`] with a request id: a request the
//! library sends again after a lost connection carries the same id and is
//! answered from kmsd's kept answer instead of running twice.
//!
//! An existing call's encoding never changes: a new call is a new row of the
//! call table with a new id, and a bump of [`PROTOCOL_VERSION`]'s minor part.
//! The other enums (answers, parameters, attribute values) only ever grow at
//! their end; golden-byte tests pin their encodings.
#![forbid(unsafe_code)]

pub mod attrs;
pub mod batch;
pub mod calls;
pub mod codec;
pub mod crypto;
pub mod frame;
pub mod general;
pub mod hostile;
pub mod keymgmt;
pub mod mechanism;
pub mod object;
pub mod pem;
pub mod secret;
pub mod session;
pub mod slot_token;
pub mod tls;

use serde::{Deserialize, Serialize};

pub use batch::{Batch, MAX_BATCH};
pub use calls::{CallId, Chapter, Request};
pub use codec::{decode, encode, encode_framed, CodecError};
pub use crypto::*;
pub use frame::{FrameHeader, FRAME_HEADER_LEN, MAGIC, MAX_PAYLOAD, PROTOCOL_VERSION};
pub use general::*;
pub use keymgmt::*;
pub use mechanism::{MechParam, Mechanism, OaepParams};
pub use object::*;
pub use pem::pad;
pub use secret::{Pin, Secret};
pub use session::*;
pub use slot_token::*;

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

/// Ends the client context at once (`C_Finalize`): sessions closed, session objects gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Goodbye;

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
    /// The answers of a [`Batch`], one per call run, in order; the last one
    /// not `CKR_OK` when kmsd stopped early.
    Batch(#[serde(deserialize_with = "batch::answers")] Vec<Response>),
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
            Request::Login(Login { pin, .. }) | Request::InitPin(InitPin { pin, .. }) => {
                pin.is_some()
            }
            Request::InitToken(InitToken { pin, .. }) => pin.is_some(),
            Request::SetPin(SetPin { old, new, .. }) => old.is_some() || new.is_some(),
            Request::Batch(b) => b.calls.iter().any(Request::carries_secret),
            Request::GenerateKey(GenerateKey { mechanism, .. })
            | Request::DeriveKey(DeriveKey { mechanism, .. }) => mechanism.param.carries_secret(),
            _ => false,
        }
    }

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
            Request::GenerateRandom(r) => r.len,
            Request::GetAttributeValue(q) => q
                .template
                .iter()
                .filter_map(|q| q.buf)
                .fold(0u64, |a, n| a.saturating_add(n)),
            Request::FindObjects(f) => f.max.saturating_mul(8),
            Request::WrapKey(w) => w.out.unwrap_or(0).min(SLACK),
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
            Request::Batch(b) => b
                .calls
                .iter()
                .fold(0u64, |a, c| a.saturating_add(c.output_claim())),
            _ => 0,
        };
        claim.min(MAX_PAYLOAD as u64)
    }
}
