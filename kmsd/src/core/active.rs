//! The operation each session has active, remembered from a successful
//! `C_*Init` until the spec ends it, so that a data call (`C_Sign`,
//! `C_EncryptUpdate`, ...) is known by the key and mechanism its `*Init`
//! armed. PKCS#11 3.0 §5.2: an operation ends with its single-part or final
//! call, or any error of an update, except that `CKR_BUFFER_TOO_SMALL` and a
//! successful length query (NULL output buffer) leave it active.

use std::collections::HashMap;

use kmsp11_proto::{CallId, Request};
use pkcs11_sys::{CKR_BUFFER_TOO_SMALL, CKR_OK, CK_RV};

/// The kinds of operation a session can have active at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Encrypt,
    Decrypt,
    Digest,
    Sign,
    SignRecover,
    Verify,
    VerifyRecover,
}

/// Where a call stands in its operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Init,
    /// A single-part call: ends the operation.
    Single,
    Update,
    /// The final part: ends the operation.
    Final,
}

/// The operation kinds a call belongs to and its stage; `None` for calls
/// outside the cryptographic chapters. Dual-function calls belong to two.
pub fn stage(call: CallId) -> Option<(&'static [Kind], Stage)> {
    use CallId as C;
    use Kind as K;
    use Stage::*;
    Some(match call {
        C::EncryptInit => (&[K::Encrypt], Init),
        C::Encrypt => (&[K::Encrypt], Single),
        C::EncryptUpdate => (&[K::Encrypt], Update),
        C::EncryptFinal => (&[K::Encrypt], Final),
        C::DecryptInit => (&[K::Decrypt], Init),
        C::Decrypt => (&[K::Decrypt], Single),
        C::DecryptUpdate => (&[K::Decrypt], Update),
        C::DecryptFinal => (&[K::Decrypt], Final),
        C::DigestInit => (&[K::Digest], Init),
        C::Digest => (&[K::Digest], Single),
        C::DigestUpdate | C::DigestKey => (&[K::Digest], Update),
        C::DigestFinal => (&[K::Digest], Final),
        C::SignInit => (&[K::Sign], Init),
        C::Sign => (&[K::Sign], Single),
        C::SignUpdate => (&[K::Sign], Update),
        C::SignFinal => (&[K::Sign], Final),
        C::SignRecoverInit => (&[K::SignRecover], Init),
        C::SignRecover => (&[K::SignRecover], Single),
        C::VerifyInit => (&[K::Verify], Init),
        C::Verify => (&[K::Verify], Single),
        C::VerifyUpdate => (&[K::Verify], Update),
        C::VerifyFinal => (&[K::Verify], Final),
        C::VerifyRecoverInit => (&[K::VerifyRecover], Init),
        C::VerifyRecover => (&[K::VerifyRecover], Single),
        C::DigestEncryptUpdate => (&[K::Digest, K::Encrypt], Update),
        C::DecryptDigestUpdate => (&[K::Decrypt, K::Digest], Update),
        C::SignEncryptUpdate => (&[K::Sign, K::Encrypt], Update),
        C::DecryptVerifyUpdate => (&[K::Decrypt, K::Verify], Update),
        _ => return None,
    })
}

/// What a successful `*Init` armed: the client's key handle (none for a
/// digest) and the mechanism.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActiveOp {
    pub key: Option<u64>,
    pub mechanism: u64,
}

/// The active operations of one client context, by session and kind.
#[derive(Default, Debug)]
pub struct Active(HashMap<(u64, Kind), ActiveOp>);

/// The session a cryptographic call names, and whether its output buffer
/// was NULL (a length query).
fn session_of(req: &Request) -> Option<(u64, bool)> {
    Some(match req {
        Request::EncryptInit(i)
        | Request::DecryptInit(i)
        | Request::SignInit(i)
        | Request::SignRecoverInit(i)
        | Request::VerifyInit(i)
        | Request::VerifyRecoverInit(i) => (i.session, false),
        Request::DigestInit(i) => (i.session, false),
        Request::DigestKey(i) => (i.session, false),
        Request::Verify(v) => (v.session, false),
        Request::Encrypt(o)
        | Request::EncryptUpdate(o)
        | Request::Decrypt(o)
        | Request::DecryptUpdate(o)
        | Request::Digest(o)
        | Request::Sign(o)
        | Request::SignRecover(o)
        | Request::VerifyRecover(o)
        | Request::DigestEncryptUpdate(o)
        | Request::DecryptDigestUpdate(o)
        | Request::SignEncryptUpdate(o)
        | Request::DecryptVerifyUpdate(o) => (o.session, o.out.is_none()),
        Request::EncryptFinal(o)
        | Request::DecryptFinal(o)
        | Request::DigestFinal(o)
        | Request::SignFinal(o) => (o.session, o.out.is_none()),
        Request::DigestUpdate(i)
        | Request::SignUpdate(i)
        | Request::VerifyUpdate(i)
        | Request::VerifyFinal(i) => (i.session, false),
        _ => return None,
    })
}

/// What an `*Init` request arms.
fn armed(req: &Request) -> Option<ActiveOp> {
    match req {
        Request::EncryptInit(i)
        | Request::DecryptInit(i)
        | Request::SignInit(i)
        | Request::SignRecoverInit(i)
        | Request::VerifyInit(i)
        | Request::VerifyRecoverInit(i) => Some(ActiveOp {
            key: Some(i.key),
            mechanism: i.mechanism.mechanism,
        }),
        Request::DigestInit(i) => Some(ActiveOp {
            key: None,
            mechanism: i.mechanism.mechanism,
        }),
        _ => None,
    }
}

/// What a cryptographic call means for its session's operations, taken
/// from the request before it runs (the request itself is consumed).
#[derive(Clone, Copy, Debug)]
pub struct Step {
    kinds: &'static [Kind],
    stage: Stage,
    session: u64,
    length_query: bool,
    armed: Option<ActiveOp>,
}

/// The [`Step`] of a request; `None` outside the cryptographic chapters.
pub fn step(req: &Request) -> Option<Step> {
    let (kinds, stage) = stage(req.call())?;
    let (session, length_query) = session_of(req)?;
    Some(Step {
        kinds,
        stage,
        session,
        length_query,
        armed: armed(req),
    })
}

impl Step {
    pub fn stage(&self) -> Stage {
        self.stage
    }

    pub fn kinds(&self) -> &'static [Kind] {
        self.kinds
    }

    /// The client's session handle.
    pub fn session(&self) -> u64 {
        self.session
    }

    /// A call that completes its operation's work (single-part or final,
    /// not a length query) if it succeeds: where a key's use is counted.
    pub fn completes(&self) -> bool {
        matches!(self.stage, Stage::Single | Stage::Final) && !self.length_query
    }
}

impl Kind {
    /// The policy action an operation of this kind is judged as.
    pub fn action(self) -> crate::authz::Action {
        use crate::authz::Action as A;
        match self {
            Kind::Encrypt => A::Encrypt,
            Kind::Decrypt => A::Decrypt,
            Kind::Digest => A::Digest,
            Kind::Sign | Kind::SignRecover => A::Sign,
            Kind::Verify | Kind::VerifyRecover => A::Verify,
        }
    }
}

impl Active {
    /// The operation a call works on: what its request arms for an
    /// `*Init`, what the session has active for a data call.
    pub fn of(&self, s: &Step) -> Option<ActiveOp> {
        if s.stage == Stage::Init {
            return s.armed;
        }
        s.kinds
            .iter()
            .find_map(|k| self.0.get(&(s.session, *k)).copied())
    }

    /// Follows a call's outcome: an `*Init` that succeeded arms its kind;
    /// a call that the spec says ends the operation ends it.
    pub fn follow(&mut self, s: &Step, rv: CK_RV) {
        let ends = match s.stage {
            Stage::Init => {
                if let (CKR_OK, Some(op)) = (rv, s.armed) {
                    self.0.insert((s.session, s.kinds[0]), op);
                }
                false
            }
            Stage::Update => rv != CKR_OK,
            Stage::Single | Stage::Final => {
                !(rv == CKR_BUFFER_TOO_SMALL || (rv == CKR_OK && s.length_query))
            }
        };
        if ends {
            for k in s.kinds {
                self.0.remove(&(s.session, *k));
            }
        }
    }

    /// Forgets every operation of these sessions (closed).
    pub fn forget(&mut self, sessions: impl IntoIterator<Item = u64>) {
        for s in sessions {
            self.0.retain(|(x, _), _| *x != s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kmsp11_proto::{DataOut, MechParam, Mechanism, OpInit, OutOnly};

    fn sign_init(key: u64) -> Request {
        Request::SignInit(OpInit {
            session: 1,
            mechanism: Mechanism {
                mechanism: 0x40,
                param: MechParam::None,
            },
            key,
        })
    }

    fn sign(out: Option<u64>) -> Request {
        Request::Sign(DataOut {
            session: 1,
            data: Some(vec![1]),
            out,
        })
    }

    fn st(r: &Request) -> Step {
        step(r).expect("a cryptographic call")
    }

    // The data call is known by the key its Init armed, through a length
    // query and a short buffer, and no longer after the real answer.
    #[test]
    fn single_part_ends_after_the_real_answer() {
        let mut a = Active::default();
        a.follow(&st(&sign_init(7)), CKR_OK);
        let armed = Some(ActiveOp {
            key: Some(7),
            mechanism: 0x40,
        });
        assert_eq!(a.of(&st(&sign(None))), armed);
        a.follow(&st(&sign(None)), CKR_OK);
        a.follow(&st(&sign(Some(4))), CKR_BUFFER_TOO_SMALL);
        assert_eq!(a.of(&st(&sign(Some(256)))), armed);
        a.follow(&st(&sign(Some(256))), CKR_OK);
        assert_eq!(a.of(&st(&sign(Some(256)))), None);
    }

    // A failed Init arms nothing; an update error ends the operation.
    #[test]
    fn failures_arm_nothing_and_end_updates() {
        let mut a = Active::default();
        a.follow(&st(&sign_init(7)), pkcs11_sys::CKR_KEY_HANDLE_INVALID);
        assert_eq!(a.of(&st(&sign(Some(1)))), None);
        a.follow(&st(&sign_init(7)), CKR_OK);
        let update = Request::SignUpdate(kmsp11_proto::DataIn {
            session: 1,
            data: None,
        });
        a.follow(&st(&update), pkcs11_sys::CKR_ARGUMENTS_BAD);
        let fin = Request::SignFinal(OutOnly {
            session: 1,
            out: Some(64),
        });
        assert_eq!(a.of(&st(&fin)), None);
    }

    // Dual-function updates end both operations on error; a closed
    // session's operations are forgotten.
    #[test]
    fn dual_functions_and_closed_sessions() {
        let mut a = Active::default();
        a.follow(&st(&sign_init(7)), CKR_OK);
        let enc = Request::EncryptInit(OpInit {
            session: 1,
            mechanism: Mechanism {
                mechanism: 0x1082,
                param: MechParam::None,
            },
            key: 9,
        });
        a.follow(&st(&enc), CKR_OK);
        let both = Request::SignEncryptUpdate(DataOut {
            session: 1,
            data: Some(vec![1]),
            out: Some(16),
        });
        assert_eq!(a.of(&st(&both)).map(|o| o.key), Some(Some(7)));
        a.follow(&st(&both), pkcs11_sys::CKR_DATA_LEN_RANGE);
        assert_eq!(a.of(&st(&both)), None);
        a.follow(&st(&sign_init(7)), CKR_OK);
        a.forget([1]);
        assert_eq!(a.of(&st(&sign(Some(1)))), None);
    }
}
