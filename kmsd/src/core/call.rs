//! A request as the core judges it: who asks, on which token, for which
//! operation, on which key, with which mechanism.

use std::sync::Arc;

use kmsp11_proto::CallId;

use super::inventory::{Known, Status};
use crate::authz::policy::{KeyView, Principal};
use crate::authz::Action;
use crate::context::Sess;
use crate::daemon::{Identity, VToken};
use crate::error::Error;
use crate::handles::{BObject, VSession};

/// An existing object a call works on.
#[derive(Debug, Clone)]
pub struct Target {
    /// The client's handle.
    pub handle: u64,
    pub backend: BObject,
    pub known: Arc<Known>,
    /// Its inventory state, for token keys.
    pub status: Option<Status>,
}

impl Target {
    /// What policy sees of it.
    pub fn view(&self, token: &str) -> KeyView {
        let f = &self.known.facts;
        let (state, owner, tags) = match &self.status {
            Some(s) => (
                s.record.state.as_str(),
                s.record.owner.clone(),
                s.record.tags.clone(),
            ),
            None => ("active", String::new(), vec![]),
        };
        KeyView {
            id: self.key_id(),
            label: f.label.clone(),
            token: token.to_string(),
            class: f.class_name().to_string(),
            key_type: f.key_type_name(),
            size: f.size.unwrap_or(0) as i64,
            owner,
            state: state.to_string(),
            tags,
            session_object: !f.token,
            sensitive: f.sensitive,
            extractable: f.extractable,
        }
    }

    pub fn key_id(&self) -> String {
        self.known
            .key
            .as_ref()
            .map(|k| k.0.clone())
            .unwrap_or_default()
    }
}

/// A request resolved against its context.
#[derive(Debug, Clone)]
pub struct Call {
    pub request_id: u64,
    pub op: CallId,
    pub principal: Arc<Identity>,
    /// The client's session handle, when the call has one...
    pub session: Option<u64>,
    /// ...and that session, when this context has it.
    pub sess: Option<Sess>,
    /// Every object handle the request names (its key, the key it wraps,
    /// keys in its mechanism parameter) with its backend handle, for the
    /// ones this context may use.
    pub named: Vec<(u64, BObject)>,
    /// Keys named in the mechanism parameter (judged as the key is).
    pub params: Vec<Target>,
    /// What policy judges, if anything: session and information calls are
    /// not judged (they reach no key).
    pub action: Option<Action>,
    pub token: Option<Arc<VToken>>,
    pub mechanism: Option<u64>,
    /// The key or object the call works on (for a data call, the key its
    /// `*Init` armed).
    pub key: Option<Target>,
    /// `C_WrapKey`: the key being wrapped (judged for `export`).
    pub wrapped: Option<Target>,
    /// A key the call creates, as policy sees it from the template.
    pub creates: Option<KeyView>,
}

impl Call {
    pub fn principal(&self) -> Principal<'_> {
        Principal {
            name: &self.principal.name,
            roles: &self.principal.roles,
        }
    }

    /// The call's session, or the error for an unknown one.
    pub fn session(&self) -> Result<Sess, Error> {
        self.sess
            .ok_or(Error::UnknownSession(VSession(self.session.unwrap_or(0))))
    }

    /// The backend handle of an object the request names; an unknown
    /// handle, or a private object while the context is not logged in, is
    /// `CK_INVALID_HANDLE`, so that the backend answers with its own error
    /// code for an invalid handle in that position.
    pub fn backend(&self, h: u64) -> BObject {
        self.named
            .iter()
            .find(|(v, _)| *v == h)
            .map_or(BObject::INVALID, |(_, b)| *b)
    }

    pub fn token_name(&self) -> &str {
        self.token.as_ref().map_or("", |t| t.name.as_str())
    }

    /// Calls whose decision record is written durably before the HSM acts.
    pub fn lifecycle(&self) -> bool {
        matches!(
            self.op,
            CallId::GenerateKey
                | CallId::GenerateKeyPair
                | CallId::CreateObject
                | CallId::CopyObject
                | CallId::DestroyObject
                | CallId::UnwrapKey
                | CallId::DeriveKey
                | CallId::SetAttributeValue
        )
    }

    /// Whether the answer waits until the call's outcome record is on
    /// disk (`[audit] fsync = "batch"`). It does unless the call changed
    /// nothing and gave out nothing of a key: information and session
    /// calls, finds, public attributes, random numbers, digests without a
    /// key, the `*Init` calls (nothing is produced until the data call),
    /// length queries and calls that failed. Those records are in the
    /// chain at once and reach the disk with the next record that waits,
    /// or within kmsd's 5-second tick. Everything else (key uses that
    /// answered data, lifecycle, login, PIN and token changes, sensitive
    /// attributes, new calls) waits.
    pub fn outcome_waits(&self, resp: &kmsp11_proto::Response) -> bool {
        use kmsp11_proto::Body;
        if resp.rv != pkcs11_sys::CKR_OK {
            return false;
        }
        match self.op {
            CallId::GetInfo
            | CallId::GetFunctionStatus
            | CallId::CancelFunction
            | CallId::GetSlotList
            | CallId::GetSlotInfo
            | CallId::GetTokenInfo
            | CallId::WaitForSlotEvent
            | CallId::GetMechanismList
            | CallId::GetMechanismInfo
            | CallId::OpenSession
            | CallId::CloseSession
            | CallId::CloseAllSessions
            | CallId::GetSessionInfo
            | CallId::FindObjectsInit
            | CallId::FindObjects
            | CallId::FindObjectsFinal
            | CallId::GetObjectSize
            | CallId::EncryptInit
            | CallId::DecryptInit
            | CallId::DigestInit
            | CallId::SignInit
            | CallId::SignRecoverInit
            | CallId::VerifyInit
            | CallId::VerifyRecoverInit
            | CallId::Digest
            | CallId::DigestUpdate
            | CallId::DigestFinal
            | CallId::SeedRandom
            | CallId::GenerateRandom => false,
            CallId::GetAttributeValue => self.action == Some(Action::ReadSensitiveAttribute),
            // A length query (no output buffer) produced nothing yet.
            _ => !matches!(resp.body, Body::Output { data: None, .. }),
        }
    }
}
