//! The REST crypto API (DESIGN.md "front/rest"): JSON under `/kms/v1/` on
//! the admin listener (HTTPS, a client certificate naming one identity).
//! A request is carried out as the PKCS#11 calls a client would make, each
//! through the pipeline in a context of the caller's own ([`door`]): the
//! same policy, quotas, dual control and audit as every PKCS#11 call. A
//! key is addressed by its label (`name` is the current version,
//! `name@vN` an older one); ciphertexts carry their key's version
//! (`kmsp11:vN:<base64>`), so decrypt picks it.
//!
//! Every answer that used a key carries a receipt: the sequence number
//! and line hash of the call's audit record and kmsd's Ed25519 signature
//! over them ([`crate::audit::receipt_message`]), checked offline with
//! the key `GET /kms/v1/receipt-key` publishes. Errors are JSON with a
//! stable `error` code. The OpenAPI document (`/kms/v1/openapi.json`) is
//! built from the handlers' annotations.

mod door;

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use kmsp11_proto::{
    AttrValue, Attribute, Body, DeriveKey, GenerateKey, GenerateKeyPair, GenerateRandom, MechParam,
    Mechanism, OaepParams, OpInit, Request, Verify,
};
use pkcs11_sys::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::door::{Door, Single};
use super::admin::{ApiError, Caller, KeyChange};
use crate::audit::log::Entry;
use crate::core::csr::tlv;
use crate::core::rotate::{current_version, old_version, split_version, version_label, versions};
use crate::daemon::{Daemon, VToken};
use crate::store::{KeyRecord, KeyState};

/// Bytes of data (message, plaintext, ciphertext) one call takes.
pub const MAX_DATA: usize = 1 << 20;
/// A request body's bytes (base64 of [`MAX_DATA`] and the rest).
const MAX_BODY: usize = 2 << 20;
/// Random bytes one call gives.
const MAX_RANDOM: u32 = 1024;
/// A key name's bytes.
const MAX_NAME: usize = 128;
/// AES-GCM: the IV kmsd makes (96 bits) and the tag (128 bits).
const GCM_IV: usize = 12;
const GCM_TAG: usize = 16;

/// The prefix of a ciphertext this API made, before its version.
const CIPHERTEXT_PREFIX: &str = "kmsp11:v";

/// RFC 3526 group 14 (2048-bit MODP): the domain of `dh-2048` keys.
const MODP_2048: &str = "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3BE39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "kmsd crypto API",
        description = "Keys on kmsd's HSM tokens through the same policy, quotas, dual control and audit as PKCS#11. HTTPS with a client certificate that names one kmsd identity. Binary values are base64 (standard alphabet, padded)."
    ),
    tags((name = "kms", description = "kmsd crypto API, version 1"))
)]
struct ApiDoc;

type D = State<Arc<Daemon>>;
type C = Extension<Caller>;
type Answer<T> = Result<Json<T>, Problem>;
type JsonBody<T> = Result<Json<T>, JsonRejection>;

/// The API's routes and its OpenAPI document, built from the same
/// handler annotations.
pub fn routes() -> Router<Arc<Daemon>> {
    let (router, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(receipt_key))
        .routes(routes!(metrics))
        .routes(routes!(list_keys, create_key))
        .routes(routes!(get_key))
        .routes(routes!(key_versions))
        .routes(routes!(rotate_key))
        .routes(routes!(revoke_key))
        .routes(routes!(sign))
        .routes(routes!(verify))
        .routes(routes!(encrypt))
        .routes(routes!(decrypt))
        .routes(routes!(derive))
        .routes(routes!(random))
        .routes(routes!(trust_anchors, add_trust_anchor))
        .split_for_parts();
    let api = Arc::new(api);
    router
        .route(
            "/kms/v1/openapi.json",
            axum::routing::get(move || {
                let api = api.clone();
                async move { Json(api.as_ref().clone()) }
            }),
        )
        .route("/kms/v1/{*rest}", axum::routing::any(no_such_path))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

async fn no_such_path() -> Problem {
    Problem::not_found("no such API path: see /kms/v1/openapi.json")
}

// ---- answers ----

/// An error: a stable `error` code, a message for people, and, when a
/// call reached the pipeline, its CK_RV and the receipt of its record.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    #[serde(skip)]
    status: StatusCode,
    /// `bad_request`, `not_found`, `exists`, `ambiguous`, `forbidden`,
    /// `policy_denied`, `constraint`, `key_disabled`, `key_revoked`,
    /// `key_expired`, `key_unsuitable`, `quota_exceeded`, `limit`,
    /// `approval_pending`, `approval_denied`, `approval_required`,
    /// `invalid_ciphertext`, `token_not_served`, `unavailable`,
    /// `hsm_error`, or an admin API code (`state`, `invalid`, `audit`, ...).
    error: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    rv: Option<String>,
    /// The dual-control request approvers act on.
    #[serde(skip_serializing_if = "Option::is_none")]
    approval: Option<String>,
    /// The receipt of the refusal's audit record.
    #[serde(skip_serializing_if = "Option::is_none")]
    receipt: Option<Box<Receipt>>,
    #[serde(skip)]
    receipt_entry: Option<Box<Entry>>,
}

impl Problem {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Problem {
        Problem {
            status,
            error: code,
            message: message.into(),
            rv: None,
            approval: None,
            receipt: None,
            receipt_entry: None,
        }
    }

    fn bad(message: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// A key that does not exist and one policy hides answer alike: the
    /// answer tells nothing of keys the caller may not see.
    pub(super) fn unseen() -> Problem {
        Problem::not_found("no such key that this identity may see")
    }

    fn not_found(message: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    fn hsm(message: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_GATEWAY, "hsm_error", message)
    }

    fn unsuitable(message: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "key_unsuitable", message)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        (self.status, Json(&self)).into_response()
    }
}

impl From<ApiError> for Problem {
    fn from(e: ApiError) -> Problem {
        let (status, code, message) = e.parts();
        Problem::new(status, code, message)
    }
}

impl From<JsonRejection> for Problem {
    fn from(e: JsonRejection) -> Problem {
        let status = match e.status() {
            StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _ => StatusCode::BAD_REQUEST,
        };
        Problem::new(status, "bad_request", e.body_text())
    }
}

/// An audit record's receipt: check `signature` (Ed25519, base64) over
/// the bytes `kmsp11-audit-receipt\n<seq>\n<record_hash>` with the key of
/// `/kms/v1/receipt-key`; `record_hash` is the SHA-256 (hex) of the
/// record's line in the audit log (`kmsctl audit show <seq>`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Receipt {
    seq: u64,
    record_hash: String,
    /// Absent when kmsd has no `audit.signing_key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    signature: Option<String>,
}

fn receipt(d: &Daemon, e: Option<Entry>) -> Option<Receipt> {
    let e = e?;
    let signature = d.audit.sign_receipt(&e).map(|s| B64.encode(s));
    Some(Receipt {
        seq: e.seq,
        record_hash: e.hash,
        signature,
    })
}

/// Runs `f` (HSM work) off the runtime's workers, in one of the caller's
/// execution slots, the ones its PKCS#11 calls take
/// (`limits.max_in_flight_per_identity`, waiting at most
/// `limits.queue_timeout_secs`); an error's record gets its receipt.
fn work<T>(d: &Daemon, c: &Caller, f: impl FnOnce() -> Result<T, Problem>) -> Result<T, Problem> {
    tokio::task::block_in_place(|| {
        let queue = std::time::Duration::from_secs(d.limits.queue_timeout_secs);
        let slot = tokio::runtime::Handle::current().block_on(tokio::time::timeout(
            queue,
            c.identity.in_flight.clone().acquire_owned(),
        ));
        let Ok(Ok(_slot)) = slot else {
            return Err(Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "limit",
                "no execution slot within limits.queue_timeout_secs",
            ));
        };
        f()
    })
    .map_err(|mut p| {
        p.receipt = receipt(d, p.receipt_entry.take().map(|e| *e)).map(Box::new);
        p
    })
}

fn unavailable(e: crate::store::StoreError) -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        e.to_string(),
    )
}

fn parsed<T>(body: JsonBody<T>) -> Result<T, Problem> {
    body.map(|Json(b)| b).map_err(Problem::from)
}

fn base64_field(v: &str, field: &str, max: usize) -> Result<Vec<u8>, Problem> {
    if v.len() > max.div_ceil(3) * 4 + 4 {
        return Err(Problem::bad(format!("{field}: more than {max} bytes")));
    }
    let b = B64
        .decode(v.trim())
        .map_err(|e| Problem::bad(format!("{field}: not base64: {e}")))?;
    if b.len() > max {
        return Err(Problem::bad(format!("{field}: more than {max} bytes")));
    }
    Ok(b)
}

fn output(body: Body, what: &str) -> Result<Vec<u8>, Problem> {
    match body {
        Body::Output { data: Some(d), .. } => Ok(d),
        _ => Err(Problem::hsm(format!("{what} answered no data"))),
    }
}

// ---- keys and names ----

/// A key as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyInfo {
    /// kmsd's key id (`k-...`).
    id: String,
    /// The label; the key's name with `@vN` for an older version.
    name: String,
    version: u64,
    token: String,
    /// `private-key` or `secret-key`.
    class: String,
    key_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    state: String,
    owner: String,
    created: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires: Option<String>,
    tags: Vec<String>,
    /// The public key: SubjectPublicKeyInfo DER for RSA, EC and Ed25519,
    /// the public value for DH; base64. `GET /kms/v1/keys/{name}` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    public_key: Option<String>,
}

fn key_info(k: &KeyRecord, version: u64, size: Option<u64>) -> KeyInfo {
    KeyInfo {
        id: k.id.0.clone(),
        name: k.label.clone(),
        version,
        token: k.token.clone(),
        class: crate::core::facts::class_name(k.class).into(),
        key_type: crate::core::facts::key_type_name(k.key_type),
        size,
        state: k.state.as_str().into(),
        owner: k.owner.clone(),
        created: crate::keys_cli::rfc3339(k.created),
        expires: k.expires.map(crate::keys_cli::rfc3339),
        tags: k.tags.clone(),
        public_key: None,
    }
}

/// What a key name (`name` or `name@vN`) refers to: its token, the label
/// of the version meant and that version's record.
struct Located {
    token: Arc<VToken>,
    base: String,
    version: u64,
    label: String,
    record: KeyRecord,
}

/// `name` into its base and version (`name@vN`).
fn split_name(name: &str) -> Result<(String, Option<u64>), Problem> {
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(Problem::bad(format!(
            "key name: 1 to {MAX_NAME} bytes without control characters"
        )));
    }
    let (base, version) = split_version(name);
    Ok((base.to_string(), version))
}

/// The private or secret key `name` names on the tokens the caller sees
/// (`token` when given); `version` overrides a version in the name.
fn locate(
    d: &Daemon,
    c: &Caller,
    name: &str,
    token: Option<&str>,
    version: Option<u64>,
) -> Result<Located, Problem> {
    let (base, named) = split_name(name)?;
    let tokens: Vec<Arc<VToken>> = d
        .tokens_for(&c.identity)
        .into_iter()
        .filter(|t| token.is_none_or(|n| t.name == n))
        .collect();
    let keys: Vec<KeyRecord> = d
        .inventory
        .store
        .keys(None)
        .map_err(unavailable)?
        .into_iter()
        .filter(|k| {
            matches!(k.class, CKO_PRIVATE_KEY | CKO_SECRET_KEY)
                && k.state != KeyState::Destroyed
                && tokens.iter().any(|t| t.name == k.token)
                && (k.label == base || old_version(&base, &k.label).is_some())
        })
        .collect();
    let mut on: Vec<&str> = keys.iter().map(|k| k.token.as_str()).collect();
    on.sort_unstable();
    on.dedup();
    let t = match on.as_slice() {
        [] => return Err(Problem::unseen()),
        [t] => *t,
        _ => {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "ambiguous",
                format!(
                    "keys named {base:?} are on tokens {}: give \"token\"",
                    on.join(", ")
                ),
            ))
        }
    };
    let keys: Vec<&KeyRecord> = keys.iter().filter(|k| k.token == t).collect();
    let current = current_version(&base, keys.iter().copied());
    let version = version.or(named).unwrap_or(current);
    let label = if version == current {
        base.clone()
    } else {
        version_label(&base, version)
    };
    let record = keys
        .iter()
        .find(|k| k.label == label)
        .map(|k| (*k).clone())
        .ok_or_else(Problem::unseen)?;
    let token = tokens
        .into_iter()
        .find(|x| x.name == t)
        .ok_or_else(|| Problem::not_found(format!("token {t} is not served")))?;
    Ok(Located {
        token,
        base,
        version,
        label,
        record,
    })
}

/// The token for a call that names no key: the one given, else the first
/// the caller sees whose PIN kmsd holds.
fn token_for(d: &Daemon, c: &Caller, token: Option<&str>) -> Result<Arc<VToken>, Problem> {
    let tokens = d.tokens_for(&c.identity);
    match token {
        Some(n) => tokens.into_iter().find(|t| t.name == n),
        None => tokens.into_iter().find(|t| t.anchored()),
    }
    .ok_or_else(|| Problem::not_found("no such token for this identity"))
}

/// A name a new key may take on `t`: not the name of a key there.
fn unused_name(d: &Daemon, t: &VToken, name: &str) -> Result<(), Problem> {
    let (base, version) = split_name(name)?;
    if version.is_some() || name.contains('@') {
        return Err(Problem::bad("a new key's name has no '@'"));
    }
    let taken = d
        .inventory
        .store
        .keys(Some(&t.name))
        .map_err(unavailable)?
        .iter()
        .any(|k| {
            k.state != KeyState::Destroyed
                && (k.label == base || old_version(&base, &k.label).is_some())
        });
    if taken {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "exists",
            format!("a key named {base:?} exists on token {}", t.name),
        ));
    }
    Ok(())
}

// ---- attribute templates ----

fn attr(kind: u64, value: AttrValue) -> Attribute {
    Attribute { kind, value }
}

fn flag(kind: u64, on: bool) -> Attribute {
    attr(kind, AttrValue::Bytes(vec![on as u8]))
}

fn bytes(kind: u64, v: &[u8]) -> Attribute {
    attr(kind, AttrValue::Bytes(v.to_vec()))
}

/// What every key this API makes is: a token object, private, sensitive,
/// never extractable, with its name and a fresh `CKA_ID`.
fn kept_secret(name: &str, id: &[u8]) -> Vec<Attribute> {
    vec![
        flag(CKA_TOKEN, true),
        flag(CKA_PRIVATE, true),
        flag(CKA_SENSITIVE, true),
        flag(CKA_EXTRACTABLE, false),
        bytes(CKA_LABEL, name.as_bytes()),
        bytes(CKA_ID, id),
    ]
}

fn public_half(name: &str, id: &[u8]) -> Vec<Attribute> {
    vec![
        flag(CKA_TOKEN, true),
        flag(CKA_PRIVATE, false),
        bytes(CKA_LABEL, name.as_bytes()),
        bytes(CKA_ID, id),
    ]
}

fn aes_256(name: &str, id: &[u8]) -> Vec<Attribute> {
    let mut t = kept_secret(name, id);
    t.extend([
        attr(CKA_CLASS, AttrValue::Ulong(CKO_SECRET_KEY)),
        attr(CKA_KEY_TYPE, AttrValue::Ulong(CKK_AES)),
        attr(CKA_VALUE_LEN, AttrValue::Ulong(32)),
        flag(CKA_ENCRYPT, true),
        flag(CKA_DECRYPT, true),
    ]);
    t
}

fn mech(mechanism: u64, param: MechParam) -> Mechanism {
    Mechanism { mechanism, param }
}

/// DER of the curve OIDs this API makes keys on.
const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
const ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

/// Key kinds `POST /kms/v1/keys` makes.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
pub enum KeyKind {
    #[serde(rename = "aes-256")]
    Aes256,
    #[serde(rename = "rsa-2048")]
    Rsa2048,
    #[serde(rename = "rsa-3072")]
    Rsa3072,
    #[serde(rename = "rsa-4096")]
    Rsa4096,
    #[serde(rename = "ec-p256")]
    EcP256,
    #[serde(rename = "ec-p384")]
    EcP384,
    #[serde(rename = "ed25519")]
    Ed25519,
    #[serde(rename = "dh-2048")]
    Dh2048,
}

/// The call that makes a key of `kind`.
fn generation(kind: KeyKind, session: u64, name: &str, id: &[u8]) -> Request {
    let (mechanism, mut public, mut private) = match kind {
        KeyKind::Aes256 => {
            return Request::GenerateKey(GenerateKey {
                session,
                mechanism: mech(CKM_AES_KEY_GEN, MechParam::None),
                template: Some(aes_256(name, id)),
            })
        }
        KeyKind::Rsa2048 | KeyKind::Rsa3072 | KeyKind::Rsa4096 => {
            let bits = match kind {
                KeyKind::Rsa2048 => 2048,
                KeyKind::Rsa3072 => 3072,
                _ => 4096,
            };
            (
                CKM_RSA_PKCS_KEY_PAIR_GEN,
                vec![
                    attr(CKA_MODULUS_BITS, AttrValue::Ulong(bits)),
                    bytes(CKA_PUBLIC_EXPONENT, &[1, 0, 1]),
                    flag(CKA_VERIFY, true),
                    flag(CKA_ENCRYPT, true),
                ],
                vec![flag(CKA_SIGN, true), flag(CKA_DECRYPT, true)],
            )
        }
        KeyKind::EcP256 | KeyKind::EcP384 => (
            CKM_EC_KEY_PAIR_GEN,
            vec![
                bytes(
                    CKA_EC_PARAMS,
                    if kind == KeyKind::EcP256 { P256 } else { P384 },
                ),
                flag(CKA_VERIFY, true),
            ],
            vec![flag(CKA_SIGN, true), flag(CKA_DERIVE, true)],
        ),
        KeyKind::Ed25519 => (
            CKM_EC_EDWARDS_KEY_PAIR_GEN,
            vec![bytes(CKA_EC_PARAMS, ED25519), flag(CKA_VERIFY, true)],
            vec![flag(CKA_SIGN, true)],
        ),
        KeyKind::Dh2048 => (
            CKM_DH_PKCS_KEY_PAIR_GEN,
            vec![
                bytes(CKA_PRIME, &hex::decode(MODP_2048).expect("constant")),
                bytes(CKA_BASE, &[2]),
            ],
            vec![flag(CKA_DERIVE, true)],
        ),
    };
    public.extend(public_half(name, id));
    private.extend(kept_secret(name, id));
    Request::GenerateKeyPair(GenerateKeyPair {
        session,
        mechanism: mech(mechanism, MechParam::None),
        public: Some(public),
        private: Some(private),
    })
}

// ---- DER helpers ----

fn spki(algorithm: &[u8], key: &[u8]) -> Vec<u8> {
    let bits = [&[0u8][..], key].concat();
    tlv(0x30, &[tlv(0x30, algorithm), tlv(0x03, &bits)].concat())
}

fn pem(spki: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new("PUBLIC KEY", spki),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// The public key of pair `label` as the API shows it.
fn public_key(door: &mut Door, k: &KeyRecord, label: &str) -> Result<Option<Vec<u8>>, Problem> {
    if k.class != CKO_PRIVATE_KEY {
        return Ok(None);
    }
    let Ok(public) = door.find_one(CKO_PUBLIC_KEY, label) else {
        return Ok(None);
    };
    const EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    const RSA_ENCRYPTION: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    Ok(match k.key_type {
        CKK_RSA => {
            let a = door.attributes(public, &[CKA_MODULUS, CKA_PUBLIC_EXPONENT])?;
            match (&a[0], &a[1]) {
                (Some(n), Some(e)) => Some(spki(
                    RSA_ENCRYPTION,
                    &crate::core::csr::rsa_public_der(n, e),
                )),
                _ => None,
            }
        }
        CKK_EC => {
            let a = door.attributes(public, &[CKA_EC_PARAMS, CKA_EC_POINT])?;
            match (&a[0], &a[1]) {
                (Some(params), Some(point)) => Some(spki(
                    &[EC_PUBLIC_KEY, params.as_slice()].concat(),
                    &crate::core::certs::ec_point(point),
                )),
                _ => None,
            }
        }
        CKK_EC_EDWARDS => {
            let a = door.attributes(public, &[CKA_EC_POINT])?;
            a[0].as_ref()
                .map(|p| spki(ED25519, &crate::core::certs::ec_point(p)))
        }
        CKK_DH => door.attributes(public, &[CKA_VALUE])?.remove(0),
        _ => None,
    })
}

/// A peer's public key for a derivation: for EC the point, given bare or
/// in a SubjectPublicKeyInfo; for DH the value.
fn peer_public(key_type: u64, given: &[u8]) -> Vec<u8> {
    use x509_parser::prelude::FromDer;
    use x509_parser::x509::SubjectPublicKeyInfo;
    if key_type == CKK_EC {
        if let Ok((rest, spki)) = SubjectPublicKeyInfo::from_der(given) {
            if rest.is_empty() {
                return spki.subject_public_key.data.to_vec();
            }
        }
    }
    given.to_vec()
}

// ---- signatures ----

/// Signature algorithms; the default follows the key type.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SignAlgorithm {
    /// ECDSA over the SHA-256 digest (kmsd hashes); the signature is DER
    /// (`SEQUENCE { r, s }`) as X.509 and OpenSSL carry it.
    EcdsaSha256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RsaPkcs1Sha256,
    /// RSASSA-PSS with SHA-256, MGF1-SHA-256 and a 32-byte salt.
    RsaPssSha256,
    /// Ed25519 (PureEdDSA) over the message.
    Ed25519,
}

impl SignAlgorithm {
    fn for_key(key_type: u64, asked: Option<SignAlgorithm>) -> Result<SignAlgorithm, Problem> {
        use SignAlgorithm::*;
        let fits = |a: SignAlgorithm| match a {
            EcdsaSha256 => key_type == CKK_EC,
            RsaPkcs1Sha256 | RsaPssSha256 => key_type == CKK_RSA,
            Ed25519 => key_type == CKK_EC_EDWARDS,
        };
        let a = match asked {
            Some(a) => a,
            None => match key_type {
                CKK_EC => EcdsaSha256,
                CKK_RSA => RsaPkcs1Sha256,
                CKK_EC_EDWARDS => Ed25519,
                t => {
                    return Err(Problem::unsuitable(format!(
                        "{} keys do not sign",
                        crate::core::facts::key_type_name(t)
                    )))
                }
            },
        };
        if !fits(a) {
            return Err(Problem::unsuitable(format!(
                "{a:?} does not fit a {} key",
                crate::core::facts::key_type_name(key_type)
            )));
        }
        Ok(a)
    }

    /// The mechanism and the bytes it signs.
    fn mechanism(self, message: &[u8]) -> (Mechanism, Vec<u8>) {
        match self {
            SignAlgorithm::EcdsaSha256 => (
                mech(CKM_ECDSA, MechParam::None),
                Sha256::digest(message).to_vec(),
            ),
            SignAlgorithm::RsaPkcs1Sha256 => {
                (mech(CKM_SHA256_RSA_PKCS, MechParam::None), message.to_vec())
            }
            SignAlgorithm::RsaPssSha256 => (
                mech(
                    CKM_SHA256_RSA_PKCS_PSS,
                    MechParam::RsaPkcsPss {
                        hash_alg: CKM_SHA256,
                        mgf: CKG_MGF1_SHA256,
                        salt_len: 32,
                    },
                ),
                message.to_vec(),
            ),
            SignAlgorithm::Ed25519 => (mech(CKM_EDDSA, MechParam::None), message.to_vec()),
        }
    }
}

/// Encryption algorithms for RSA keys (AES keys: AES-256-GCM).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
pub enum RsaOaep {
    /// RSA-OAEP with SHA-256 and MGF1-SHA-256 (the default).
    #[serde(rename = "rsa-oaep-sha256")]
    Sha256,
    /// RSA-OAEP with SHA-1 and MGF1-SHA-1 (what SoftHSM 2.6 offers).
    #[serde(rename = "rsa-oaep-sha1")]
    Sha1,
}

fn oaep(asked: Option<RsaOaep>) -> Mechanism {
    let (hash_alg, mgf) = match asked.unwrap_or(RsaOaep::Sha256) {
        RsaOaep::Sha256 => (CKM_SHA256, CKG_MGF1_SHA256),
        RsaOaep::Sha1 => (CKM_SHA_1, CKG_MGF1_SHA1),
    };
    mech(
        CKM_RSA_PKCS_OAEP,
        MechParam::RsaPkcsOaep(OaepParams {
            hash_alg,
            mgf,
            source: CKZ_DATA_SPECIFIED,
            source_data: None,
        }),
    )
}

fn gcm(iv: &[u8], aad: Option<Vec<u8>>) -> Mechanism {
    mech(
        CKM_AES_GCM,
        MechParam::Gcm {
            iv: Some(iv.to_vec()),
            iv_bits: Some(GCM_IV as u64 * 8),
            aad,
            tag_bits: GCM_TAG as u64 * 8,
        },
    )
}

// ---- handlers: service ----

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    status: String,
    version: String,
}

/// Whether kmsd answers (any identity).
#[utoipa::path(get, path = "/kms/v1/health", tag = "kms",
    responses((status = 200, body = Health)))]
async fn health(Extension(_c): C) -> Json<Health> {
    Json(Health {
        status: "alive".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReceiptKey {
    algorithm: String,
    /// The raw 32-byte Ed25519 public key, base64.
    public_key: String,
    /// The same, hex (as audit checkpoints name it).
    public_key_hex: String,
    /// The same as a PEM SubjectPublicKeyInfo (`openssl pkeyutl -verify
    /// -pubin -inkey KEY.pem -rawin ...`).
    public_key_pem: String,
    /// What a receipt's signature covers.
    message: String,
}

/// The key receipts are signed with (any identity).
#[utoipa::path(get, path = "/kms/v1/receipt-key", tag = "kms",
    responses((status = 200, body = ReceiptKey), (status = 404, body = Problem)))]
async fn receipt_key(State(d): D, Extension(_c): C) -> Answer<ReceiptKey> {
    let k = d
        .audit
        .public_key()
        .ok_or_else(|| Problem::not_found("kmsd signs no receipts: set audit.signing_key"))?;
    Ok(Json(ReceiptKey {
        algorithm: "Ed25519".into(),
        public_key: B64.encode(&k),
        public_key_hex: hex::encode(&k),
        public_key_pem: pem(&spki(ED25519, &k)),
        message: "kmsp11-audit-receipt\\n<seq>\\n<record_hash>".into(),
    }))
}

/// kmsd's metrics, Prometheus text (roles admin, auditor).
#[utoipa::path(get, path = "/kms/v1/metrics", tag = "kms",
    responses((status = 200, body = String, content_type = "text/plain"), (status = 403, body = Problem)))]
async fn metrics(State(d): D, Extension(c): C) -> Result<String, Problem> {
    super::admin::metrics(State(d), Extension(c))
        .await
        .map_err(Problem::from)
}

// ---- handlers: keys ----

/// The keys (private and secret; `name@vN` for older versions) this
/// identity may see.
#[utoipa::path(get, path = "/kms/v1/keys", tag = "kms",
    responses((status = 200, body = Vec<KeyInfo>), (status = 403, body = Problem)))]
async fn list_keys(State(d): D, Extension(c): C) -> Answer<Vec<KeyInfo>> {
    work(&d, &c, || {
        let mut door = Door::open(&d, &c.identity, c.peer)?;
        // Each key's newest replaced version, by token and name.
        let mut replaced: std::collections::HashMap<(String, String), u64> = Default::default();
        for k in d.inventory.store.keys(None).map_err(unavailable)? {
            if let (base, Some(n)) = split_version(&k.label) {
                let v = replaced
                    .entry((k.token.clone(), base.to_string()))
                    .or_default();
                *v = (*v).max(n);
            }
        }
        let mut out = Vec::new();
        for t in d.tokens_for(&c.identity).iter().filter(|t| t.anchored()) {
            door.session_on(t)?;
            for class in [CKO_PRIVATE_KEY, CKO_SECRET_KEY] {
                for h in door.find(class, None)? {
                    let Some(k) = door.record_of(h) else { continue };
                    let (base, named) = split_name(&k.label).unwrap_or_default();
                    let version = named.unwrap_or_else(|| {
                        replaced.get(&(k.token.clone(), base)).copied().unwrap_or(0) + 1
                    });
                    out.push(key_info(&k, version, door.size_of(h)));
                }
            }
        }
        out.sort_by(|a, b| a.token.cmp(&b.token).then(a.name.cmp(&b.name)));
        Ok(Json(out))
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// The key's name (its label); no '@'.
    name: String,
    #[serde(rename = "type")]
    kind: KeyKind,
    /// The token (default: the first this identity sees).
    token: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Created {
    key: KeyInfo,
    receipt: Option<Receipt>,
}

/// The answer for a key this request made (handle `h`, the first version).
fn created(
    d: &Daemon,
    door: &Door,
    h: u64,
    entry: Option<Entry>,
) -> Result<(StatusCode, Json<Created>), Problem> {
    let k = door
        .record_of(h)
        .ok_or_else(|| Problem::hsm("the new key is not in kmsd's inventory"))?;
    Ok((
        StatusCode::CREATED,
        Json(Created {
            key: key_info(&k, 1, door.size_of(h)),
            receipt: receipt(d, entry),
        }),
    ))
}

/// Makes a key on the HSM (policy `generate`; dual control when the
/// policy or `[dual_control] guarded` says so). Keys made here are
/// sensitive and never extractable.
#[utoipa::path(post, path = "/kms/v1/keys", tag = "kms", request_body = CreateKey,
    responses((status = 201, body = Created), (status = 400, body = Problem),
        (status = 403, body = Problem), (status = 409, body = Problem)))]
async fn create_key(
    State(d): D,
    Extension(c): C,
    body: JsonBody<CreateKey>,
) -> Result<(StatusCode, Json<Created>), Problem> {
    let q = parsed(body)?;
    work(&d, &c, || {
        let t = token_for(&d, &c, q.token.as_deref())?;
        unused_name(&d, &t, &q.name)?;
        let mut door = Door::open(&d, &c.identity, c.peer)?;
        let s = door.session_on(&t)?;
        let id = rand::random::<[u8; 16]>();
        let done = door.ok(generation(q.kind, s, &q.name, &id), "key generation")?;
        let h = match done.body {
            Body::Handle(h) => h,
            Body::KeyPair { private, .. } => private,
            _ => return Err(Problem::hsm("key generation answered no handle")),
        };
        created(&d, &door, h, done.entry)
    })
}

/// One key (or one version, `name@vN`) with its public key.
#[utoipa::path(get, path = "/kms/v1/keys/{name}", tag = "kms",
    params(("name" = String, Path, description = "key name, or name@vN")),
    responses((status = 200, body = KeyInfo), (status = 404, body = Problem)))]
async fn get_key(State(d): D, Extension(c): C, Path(name): Path<String>) -> Answer<KeyInfo> {
    work(&d, &c, || {
        let at = locate(&d, &c, &name, None, None)?;
        let mut door = Door::open(&d, &c.identity, c.peer)?;
        door.session_on(&at.token)?;
        let h = door.find_one(at.record.class, &at.label)?;
        let mut info = key_info(&at.record, at.version, door.size_of(h));
        info.public_key = public_key(&mut door, &at.record, &at.label)?.map(|p| B64.encode(p));
        Ok(Json(info))
    })
}

/// A key's versions, newest first.
#[utoipa::path(get, path = "/kms/v1/keys/{name}/versions", tag = "kms",
    params(("name" = String, Path, description = "key name")),
    responses((status = 200, body = Vec<KeyInfo>), (status = 404, body = Problem)))]
async fn key_versions(
    State(d): D,
    Extension(c): C,
    Path(name): Path<String>,
) -> Answer<Vec<KeyInfo>> {
    work(&d, &c, || {
        let at = locate(&d, &c, &name, None, None)?;
        let mut door = Door::open(&d, &c.identity, c.peer)?;
        door.session_on(&at.token)?;
        // Seeing the key is what policy says; its versions go with it.
        door.find_one(at.record.class, &at.base)?;
        let keys = d
            .inventory
            .store
            .keys(Some(&at.token.name))
            .map_err(unavailable)?;
        Ok(Json(
            versions(&at.base, &keys)
                .into_iter()
                .filter(|(_, k)| k.class == at.record.class && k.state != KeyState::Destroyed)
                .map(|(n, k)| key_info(k, n, None))
                .collect(),
        ))
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Changed {
    /// The key's record after the change (rotate: the new version, with
    /// `previous`).
    #[schema(value_type = Object)]
    key: serde_json::Value,
    receipt: Option<Receipt>,
}

fn key_change(
    d: &Arc<Daemon>,
    c: &Caller,
    name: &str,
    action: &str,
    body: KeyChange,
) -> Answer<Changed> {
    let (base, _) = split_name(name)?;
    let at = locate(d, c, &base, None, None)?;
    if action == "revoke" {
        // A key pair is revoked whole: its public half verifies no more.
        let halves = d
            .inventory
            .store
            .keys(Some(&at.token.name))
            .map_err(unavailable)?;
        for k in halves.iter().filter(|k| {
            k.class == CKO_PUBLIC_KEY && k.label == at.label && k.state != KeyState::Destroyed
        }) {
            super::admin::key_change(d, c, &k.id.0, action, body.clone())?;
        }
    }
    let (v, entry) = super::admin::key_change(d, c, &at.record.id.0, action, body)?;
    Ok(Json(Changed {
        key: v,
        receipt: receipt(d, Some(entry)),
    }))
}

/// Rotates a key: its next version becomes current, older ones verify
/// and decrypt only (role admin; dual control when `[dual_control]
/// guarded` names `rotate`).
#[utoipa::path(post, path = "/kms/v1/keys/{name}/rotate", tag = "kms",
    params(("name" = String, Path, description = "key name")),
    responses((status = 200, body = Changed), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn rotate_key(State(d): D, Extension(c): C, Path(name): Path<String>) -> Answer<Changed> {
    work(&d, &c, || {
        key_change(&d, &c, &name, "rotate", KeyChange::default())
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Revoke {
    reason: String,
}

/// Revokes a key for good (role admin): every use is refused from then on.
#[utoipa::path(post, path = "/kms/v1/keys/{name}/revoke", tag = "kms", request_body = Revoke,
    params(("name" = String, Path, description = "key name")),
    responses((status = 200, body = Changed), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn revoke_key(
    State(d): D,
    Extension(c): C,
    Path(name): Path<String>,
    body: JsonBody<Revoke>,
) -> Answer<Changed> {
    let q = parsed(body)?;
    work(&d, &c, || {
        let change = KeyChange {
            reason: Some(q.reason),
            ..Default::default()
        };
        key_change(&d, &c, &name, "revoke", change)
    })
}

// ---- handlers: crypto ----

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignRequest {
    /// Key name (the current version signs).
    key: String,
    /// The message, base64.
    input: String,
    algorithm: Option<SignAlgorithm>,
    token: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Signed {
    key: String,
    version: u64,
    algorithm: SignAlgorithm,
    /// base64.
    signature: String,
    receipt: Option<Receipt>,
}

/// Signs a message with the key's current version.
#[utoipa::path(post, path = "/kms/v1/sign", tag = "kms", request_body = SignRequest,
    responses((status = 200, body = Signed), (status = 400, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 429, body = Problem)))]
async fn sign(State(d): D, Extension(c): C, body: JsonBody<SignRequest>) -> Answer<Signed> {
    let q = parsed(body)?;
    work(&d, &c, || {
        let input = base64_field(&q.input, "input", MAX_DATA)?;
        let at = locate(&d, &c, &q.key, q.token.as_deref(), None)?;
        let alg = SignAlgorithm::for_key(at.record.key_type, q.algorithm)?;
        let mut door = Door::open(&d, &c.identity, c.peer)?;
        door.session_on(&at.token)?;
        let key = door.find_one(CKO_PRIVATE_KEY, &at.label)?;
        let (mechanism, data) = alg.mechanism(&input);
        let (mut signature, entry) = door.single(Single::Sign, key, mechanism, data, 2048)?;
        if alg == SignAlgorithm::EcdsaSha256 {
            signature = crate::core::csr::ecdsa_der(&signature);
        }
        Ok(Json(Signed {
            key: at.base,
            version: at.version,
            algorithm: alg,
            signature: B64.encode(signature),
            receipt: receipt(&d, entry),
        }))
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    key: String,
    /// The version that signed (default: the current one, or the one the
    /// name gives, `name@vN`).
    version: Option<u64>,
    input: String,
    signature: String,
    algorithm: Option<SignAlgorithm>,
    token: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Verified {
    valid: bool,
    key: String,
    version: u64,
    receipt: Option<Receipt>,
}

/// Checks a signature with the key's public half (any version).
#[utoipa::path(post, path = "/kms/v1/verify", tag = "kms", request_body = VerifyRequest,
    responses((status = 200, body = Verified), (status = 400, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn verify(State(d): D, Extension(c): C, body: JsonBody<VerifyRequest>) -> Answer<Verified> {
    let q = parsed(body)?;
    work(&d, &c, || {
        let input = base64_field(&q.input, "input", MAX_DATA)?;
        let mut signature = base64_field(&q.signature, "signature", 4096)?;
        let at = locate(&d, &c, &q.key, q.token.as_deref(), q.version)?;
        let alg = SignAlgorithm::for_key(at.record.key_type, q.algorithm)?;
        let mut door = Door::open(&d, &c.identity, c.peer)?;
        let session = door.session_on(&at.token)?;
        let key = door.find_one(CKO_PUBLIC_KEY, &at.label)?;
        let answer = |valid, entry| {
            Ok(Json(Verified {
                valid,
                key: at.base.clone(),
                version: at.version,
                receipt: receipt(&d, entry),
            }))
        };
        let (mechanism, data) = alg.mechanism(&input);
        // Judged (policy, key state, quotas) before the signature is read.
        let init = door.ok(
            Request::VerifyInit(OpInit {
                session,
                mechanism,
                key,
            }),
            "C_VerifyInit",
        )?;
        if alg == SignAlgorithm::EcdsaSha256 {
            let size = door.size_of(key).map(|bits| bits.div_ceil(8) as usize);
            match crate::core::csr::ecdsa_raw(&signature, size) {
                Some(raw) => signature = raw,
                // Not an ECDSA signature at all: invalid, as the record
                // of the verification's start says it was asked.
                None => return answer(false, init.entry),
            }
        }
        let done = door.any(
            Request::Verify(Verify {
                session,
                data: Some(data),
                signature: Some(signature),
            }),
            "C_Verify",
        )?;
        match done.rv {
            CKR_OK => answer(true, done.entry),
            CKR_SIGNATURE_INVALID | CKR_SIGNATURE_LEN_RANGE => answer(false, done.entry),
            rv => Err(Problem::hsm(format!(
                "C_Verify: {}",
                crate::error::rv_name(rv)
            ))),
        }
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EncryptRequest {
    /// An AES key (AES-256-GCM) or an RSA key pair (RSA-OAEP).
    key: String,
    plaintext: String,
    /// Additional authenticated data for AES-GCM, base64.
    aad: Option<String>,
    /// For RSA keys; the decrypt call names the same.
    algorithm: Option<RsaOaep>,
    token: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Encrypted {
    key: String,
    version: u64,
    /// `kmsp11:v<version>:<base64>`; for AES-GCM the base64 holds the
    /// 12-byte IV, the ciphertext and the 16-byte tag.
    ciphertext: String,
    receipt: Option<Receipt>,
}

/// Encrypts with the key's current version.
#[utoipa::path(post, path = "/kms/v1/encrypt", tag = "kms", request_body = EncryptRequest,
    responses((status = 200, body = Encrypted), (status = 400, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn encrypt(
    State(d): D,
    Extension(c): C,
    body: JsonBody<EncryptRequest>,
) -> Answer<Encrypted> {
    let q = parsed(body)?;
    work(&d, &c, || {
        let plaintext = base64_field(&q.plaintext, "plaintext", MAX_DATA)?;
        let aad = q
            .aad
            .as_deref()
            .map(|a| base64_field(a, "aad", MAX_DATA))
            .transpose()?;
        let at = locate(&d, &c, &q.key, q.token.as_deref(), None)?;
        let mut door = Door::open(&d, &c.identity, c.peer)?;
        door.session_on(&at.token)?;
        if q.algorithm.is_some() && at.record.key_type != CKK_RSA {
            return Err(Problem::unsuitable("algorithm: for RSA keys only"));
        }
        let (key, mechanism, iv, out) = match at.record.key_type {
            CKK_AES => {
                let iv = rand::random::<[u8; GCM_IV]>().to_vec();
                let key = door.find_one(CKO_SECRET_KEY, &at.label)?;
                (key, gcm(&iv, aad), iv, plaintext.len() + GCM_TAG)
            }
            CKK_RSA if aad.is_none() => {
                let key = door.find_one(CKO_PUBLIC_KEY, &at.label)?;
                (key, oaep(q.algorithm), Vec::new(), 1024)
            }
            CKK_RSA => return Err(Problem::bad("aad: RSA-OAEP takes none")),
            t => {
                return Err(Problem::unsuitable(format!(
                    "{} keys do not encrypt here (AES and RSA do)",
                    crate::core::facts::key_type_name(t)
                )))
            }
        };
        let (ct, entry) = door.single(Single::Encrypt, key, mechanism, plaintext, out as u64)?;
        let ct = [iv, ct].concat();
        Ok(Json(Encrypted {
            key: at.base,
            version: at.version,
            ciphertext: format!("{CIPHERTEXT_PREFIX}{}:{}", at.version, B64.encode(ct)),
            receipt: receipt(&d, entry),
        }))
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecryptRequest {
    key: String,
    /// As `encrypt` gave it (`kmsp11:v<version>:<base64>`).
    ciphertext: String,
    aad: Option<String>,
    /// For RSA keys: as encrypt was told.
    algorithm: Option<RsaOaep>,
    token: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Decrypted {
    key: String,
    version: u64,
    plaintext: String,
    receipt: Option<Receipt>,
}

/// `kmsp11:vN:<base64>` into N and the bytes.
fn split_ciphertext(c: &str) -> Result<(u64, Vec<u8>), Problem> {
    let bad =
        || Problem::bad("ciphertext: expected kmsp11:v<version>:<base64>, as encrypt gives it");
    let rest = c.strip_prefix(CIPHERTEXT_PREFIX).ok_or_else(bad)?;
    let (v, b) = rest.split_once(':').ok_or_else(bad)?;
    let v = v.parse::<u64>().ok().filter(|v| *v > 0).ok_or_else(bad)?;
    Ok((
        v,
        base64_field(b, "ciphertext", MAX_DATA + GCM_IV + GCM_TAG)?,
    ))
}

/// Decrypts with the version the ciphertext names.
#[utoipa::path(post, path = "/kms/v1/decrypt", tag = "kms", request_body = DecryptRequest,
    responses((status = 200, body = Decrypted), (status = 400, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn decrypt(
    State(d): D,
    Extension(c): C,
    body: JsonBody<DecryptRequest>,
) -> Answer<Decrypted> {
    let q = parsed(body)?;
    work(&d, &c, || {
        let (version, ct) = split_ciphertext(&q.ciphertext)?;
        let aad = q
            .aad
            .as_deref()
            .map(|a| base64_field(a, "aad", MAX_DATA))
            .transpose()?;
        let (base, _) = split_name(&q.key)?;
        let at = locate(&d, &c, &base, q.token.as_deref(), Some(version))?;
        let mut door = Door::open(&d, &c.identity, c.peer)?;
        door.session_on(&at.token)?;
        if q.algorithm.is_some() && at.record.key_type != CKK_RSA {
            return Err(Problem::unsuitable("algorithm: for RSA keys only"));
        }
        let gcm_used = at.record.key_type == CKK_AES;
        let (key, mechanism, data) = match at.record.key_type {
            CKK_AES => {
                if ct.len() < GCM_IV + GCM_TAG {
                    return Err(Problem::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_ciphertext",
                        "ciphertext: shorter than an IV and a tag",
                    ));
                }
                let (iv, body) = ct.split_at(GCM_IV);
                let key = door.find_one(CKO_SECRET_KEY, &at.label)?;
                (key, gcm(iv, aad), body.to_vec())
            }
            CKK_RSA if aad.is_none() => (
                door.find_one(CKO_PRIVATE_KEY, &at.label)?,
                oaep(q.algorithm),
                ct,
            ),
            CKK_RSA => return Err(Problem::bad("aad: RSA-OAEP takes none")),
            t => {
                return Err(Problem::unsuitable(format!(
                    "{} keys do not decrypt here",
                    crate::core::facts::key_type_name(t)
                )))
            }
        };
        let out = data.len().max(1024) as u64;
        let (plaintext, entry) = door
            .single(Single::Decrypt, key, mechanism, data, out)
            .map_err(|p| match p.rv.as_deref() {
                // SoftHSM answers a GCM tag that does not match so.
                Some("CKR_GENERAL_ERROR") if gcm_used => Problem {
                    status: StatusCode::BAD_REQUEST,
                    error: "invalid_ciphertext",
                    message: "C_Decrypt: CKR_GENERAL_ERROR (the tag does not match the ciphertext, the AAD and this key)".into(),
                    ..p
                },
                _ => p,
            })?;
        let plaintext = zeroize::Zeroizing::new(plaintext);
        Ok(Json(Decrypted {
            key: at.base,
            version: at.version,
            plaintext: B64.encode(&*plaintext),
            receipt: receipt(&d, entry),
        }))
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeriveRequest {
    /// An EC (ECDH) or DH (PKCS #3) key pair.
    key: String,
    /// The peer's public key, base64: for EC the uncompressed point or a
    /// SubjectPublicKeyInfo, for DH the public value.
    public_key: String,
    /// The name of the AES-256 key the agreement makes (on the key's token).
    name: String,
    token: Option<String>,
}

/// Key agreement: the shared secret becomes a new AES-256 key on the HSM
/// (sensitive, never extractable), usable here and through PKCS#11.
#[utoipa::path(post, path = "/kms/v1/derive", tag = "kms", request_body = DeriveRequest,
    responses((status = 201, body = Created), (status = 400, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn derive(
    State(d): D,
    Extension(c): C,
    body: JsonBody<DeriveRequest>,
) -> Result<(StatusCode, Json<Created>), Problem> {
    let q = parsed(body)?;
    work(&d, &c, || {
        let peer = base64_field(&q.public_key, "public_key", 4096)?;
        let at = locate(&d, &c, &q.key, q.token.as_deref(), None)?;
        let peer = peer_public(at.record.key_type, &peer);
        let mechanism = match at.record.key_type {
            CKK_EC => mech(
                CKM_ECDH1_DERIVE,
                MechParam::Ecdh1Derive {
                    kdf: CKD_NULL,
                    shared_data: None,
                    public_data: Some(peer),
                },
            ),
            CKK_DH => mech(CKM_DH_PKCS_DERIVE, MechParam::Bytes(peer)),
            t => {
                return Err(Problem::unsuitable(format!(
                    "{} keys do not agree keys (EC and DH do)",
                    crate::core::facts::key_type_name(t)
                )))
            }
        };
        unused_name(&d, &at.token, &q.name)?;
        let mut door = Door::open(&d, &c.identity, c.peer)?;
        let session = door.session_on(&at.token)?;
        let base_key = door.find_one(CKO_PRIVATE_KEY, &at.label)?;
        let id = rand::random::<[u8; 16]>();
        let done = door.ok(
            Request::DeriveKey(DeriveKey {
                session,
                mechanism,
                base_key,
                template: Some(aes_256(&q.name, &id)),
            }),
            "C_DeriveKey",
        )?;
        let Body::Handle(h) = done.body else {
            return Err(Problem::hsm("C_DeriveKey answered no handle"));
        };
        created(&d, &door, h, done.entry)
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RandomRequest {
    /// 1 to 1024.
    bytes: u32,
    token: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RandomBytes {
    random: String,
    receipt: Option<Receipt>,
}

/// Random bytes from the HSM.
#[utoipa::path(post, path = "/kms/v1/random", tag = "kms", request_body = RandomRequest,
    responses((status = 200, body = RandomBytes), (status = 400, body = Problem), (status = 429, body = Problem)))]
async fn random(
    State(d): D,
    Extension(c): C,
    body: JsonBody<RandomRequest>,
) -> Answer<RandomBytes> {
    let q = parsed(body)?;
    if q.bytes == 0 || q.bytes > MAX_RANDOM {
        return Err(Problem::bad(format!("bytes: 1 to {MAX_RANDOM}")));
    }
    work(&d, &c, || {
        let t = token_for(&d, &c, q.token.as_deref())?;
        let mut door = Door::open(&d, &c.identity, c.peer)?;
        let session = door.session_on(&t)?;
        let done = door.ok(
            Request::GenerateRandom(GenerateRandom {
                session,
                len: q.bytes as u64,
            }),
            "C_GenerateRandom",
        )?;
        Ok(Json(RandomBytes {
            random: B64.encode(output(done.body, "C_GenerateRandom")?),
            receipt: receipt(&d, done.entry),
        }))
    })
}

// ---- handlers: trust anchors ----

#[derive(Debug, Serialize, ToSchema)]
pub struct TrustAnchor {
    token: String,
    /// SHA-256 of the DER, hex.
    sha256: String,
    label: String,
    subject: String,
    issuer: String,
    serial: String,
    not_after: String,
    days_left: i64,
    /// `CKA_TRUSTED`, where the HSM lets kmsd set it (SoftHSM: only its SO may).
    trusted: bool,
}

fn anchor(l: crate::core::certs::Listed) -> TrustAnchor {
    TrustAnchor {
        token: l.token,
        sha256: l.sha256,
        label: l.label,
        subject: l.subject,
        issuer: l.issuer,
        serial: l.serial,
        not_after: l.not_after,
        days_left: l.days_left,
        trusted: l.trusted,
    }
}

/// The authority certificates (CAs, trust anchors) on the tokens this
/// identity sees.
#[utoipa::path(get, path = "/kms/v1/trust-anchors", tag = "kms",
    responses((status = 200, body = Vec<TrustAnchor>), (status = 502, body = Problem)))]
async fn trust_anchors(State(d): D, Extension(c): C) -> Answer<Vec<TrustAnchor>> {
    work(&d, &c, || {
        let seen: Vec<String> = d
            .tokens_for(&c.identity)
            .iter()
            .map(|t| t.name.clone())
            .collect();
        let all = crate::core::certs::list(&d).map_err(|e| Problem::hsm(e.to_string()))?;
        Ok(Json(
            all.into_iter()
                .filter(|l| l.category == "authority" && seen.contains(&l.token))
                .map(anchor)
                .collect(),
        ))
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddTrustAnchor {
    /// One or more PEM certificates.
    pem: String,
    token: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AnchorsAdded {
    added: Vec<TrustAnchor>,
    receipt: Option<Receipt>,
}

/// Puts CA certificates on a token as trust anchors (role admin).
#[utoipa::path(post, path = "/kms/v1/trust-anchors", tag = "kms", request_body = AddTrustAnchor,
    responses((status = 201, body = AnchorsAdded), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn add_trust_anchor(
    State(d): D,
    Extension(c): C,
    body: JsonBody<AddTrustAnchor>,
) -> Result<(StatusCode, Json<AnchorsAdded>), Problem> {
    let q = parsed(body)?;
    work(&d, &c, || {
        let import = super::admin::CertImport {
            pem: Some(q.pem),
            token: q.token,
            ..Default::default()
        };
        let (made, entry) = super::admin::certs_import(&d, &c, import)?;
        Ok((
            StatusCode::CREATED,
            Json(AnchorsAdded {
                added: made.into_iter().map(anchor).collect(),
                receipt: receipt(&d, Some(entry)),
            }),
        ))
    })
}

/// What a REST caller's bytes meet before any call runs, for the fuzz
/// target `rest_inputs`: the request bodies, names, ciphertexts, base64
/// fields, peer public keys and ECDSA signatures. Panics on a broken
/// invariant (a parsed value that does not read back the same).
#[doc(hidden)]
pub fn fuzz_inputs(data: &[u8]) {
    let _ = serde_json::from_slice::<SignRequest>(data);
    let _ = serde_json::from_slice::<VerifyRequest>(data);
    let _ = serde_json::from_slice::<EncryptRequest>(data);
    let _ = serde_json::from_slice::<DecryptRequest>(data);
    let _ = serde_json::from_slice::<DeriveRequest>(data);
    let _ = serde_json::from_slice::<CreateKey>(data);
    let _ = peer_public(CKK_EC, data);
    if let Some(raw) = crate::core::csr::ecdsa_raw(data, None) {
        assert!(matches!(raw.len(), 64 | 96 | 132), "{}", raw.len());
        let again =
            crate::core::csr::ecdsa_raw(&crate::core::csr::ecdsa_der(&raw), Some(raw.len() / 2));
        assert_eq!(again.as_deref(), Some(&raw[..]), "DER and back");
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok((base, version)) = split_name(text) {
        assert!(!base.is_empty() && version.is_none_or(|v| v > 0));
    }
    if let Ok((v, bytes)) = split_ciphertext(text) {
        let again = format!("{CIPHERTEXT_PREFIX}{v}:{}", B64.encode(&bytes));
        assert_eq!(split_ciphertext(&again).ok(), Some((v, bytes)));
    }
    let _ = base64_field(text, "fuzz", 64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_into_base_and_version() {
        assert_eq!(split_name("k").unwrap(), ("k".into(), None));
        assert_eq!(split_name("k@v2").unwrap(), ("k".into(), Some(2)));
        assert_eq!(split_name("k@v0").unwrap(), ("k@v0".into(), None));
        assert_eq!(split_name("a@vb").unwrap(), ("a@vb".into(), None));
        assert_eq!(split_name("@v3").unwrap(), ("@v3".into(), None));
        for bad in ["", "a\nb", &"x".repeat(MAX_NAME + 1)] {
            assert_eq!(split_name(bad).unwrap_err().error, "bad_request", "{bad:?}");
        }
    }

    #[test]
    fn ciphertexts_name_their_version() {
        let (v, b) = split_ciphertext("kmsp11:v3:AAEC").unwrap();
        assert_eq!((v, b), (3, vec![0, 1, 2]));
        for bad in [
            "",
            "kmsp11:v0:AA==",
            "kmsp11:vx:AA==",
            "vault:v1:AA==",
            "kmsp11:v1",
            "kmsp11:v1:!!",
        ] {
            assert_eq!(
                split_ciphertext(bad).unwrap_err().error,
                "bad_request",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn oversized_base64_is_refused_before_decoding() {
        let big = "A".repeat(4 * 1024);
        assert!(base64_field(&big, "x", 100).is_err());
        assert_eq!(base64_field("AAEC", "x", 3).unwrap(), vec![0, 1, 2]);
        assert!(base64_field("AAECAw==", "x", 3).is_err());
    }

    #[test]
    fn ecdsa_signatures_read_back_from_der_and_junk_is_refused() {
        use crate::core::csr::{ecdsa_der, ecdsa_raw};
        for size in [32, 48, 66] {
            let mut raw = vec![0u8; 2 * size];
            raw[1] = 0x80; // a leading zero byte and a high bit after it
            raw[size..].fill(0xff);
            assert_eq!(ecdsa_raw(&ecdsa_der(&raw), Some(size)), Some(raw.clone()));
            assert_eq!(ecdsa_raw(&ecdsa_der(&raw), None), Some(raw));
        }
        let good = ecdsa_der(&[1u8; 64]);
        let junk: [&[u8]; 6] = [
            b"",
            &[0x30, 0x00],
            &[0x30, 0x03, 0x02, 0x01, 0x01],
            &[good.as_slice(), &[0]].concat(),
            // a negative r
            &[0x30, 0x06, 0x02, 0x01, 0x80, 0x02, 0x01, 0x01],
            &good[..good.len() - 1],
        ];
        for j in junk {
            assert_eq!(ecdsa_raw(j, Some(32)), None, "{j:02x?}");
        }
        assert_eq!(
            ecdsa_raw(&ecdsa_der(&[1u8; 96]), Some(32)),
            None,
            "too long for the curve"
        );
    }

    #[test]
    fn fuzz_seeds_hold_the_invariants() {
        let seeds =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/rest_inputs");
        for e in std::fs::read_dir(seeds).unwrap() {
            fuzz_inputs(&std::fs::read(e.unwrap().path()).unwrap());
        }
    }

    #[test]
    fn spki_of_an_ed25519_key_parses() {
        use x509_parser::prelude::FromDer;
        let der = spki(ED25519, &[7u8; 32]);
        let (rest, s) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&der).unwrap();
        assert!(rest.is_empty());
        assert_eq!(s.algorithm.algorithm.to_id_string(), "1.3.101.112");
        assert_eq!(s.subject_public_key.data.as_ref(), &[7u8; 32]);
    }
}
