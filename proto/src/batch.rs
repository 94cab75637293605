//! Several calls in one exchange. The library holds some calls back (an
//! `*Init` it accepted on its own, the start of a search) and sends them
//! with the call that needs them, so that a single-part operation costs one
//! round trip (DESIGN.md decision 4). kmsd runs the calls in order, each as
//! if it had come alone (resolved, decided, audited), and stops at the first
//! that does not answer `CKR_OK`: a data call never runs on an operation
//! whose `*Init` failed.
//!
//! Bounded where it is decoded: at most [`MAX_BATCH`] calls, no batch inside
//! a batch (nor an answer list inside an answer list), refused before
//! anything is allocated.

use std::cell::Cell;

use serde::{Deserialize, Deserializer, Serialize};

use crate::{Request, Response};

/// The most calls one batch carries.
pub const MAX_BATCH: usize = 4;

/// Calls run in order in one exchange; answered with
/// [`crate::Body::Batch`], one answer per call run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    #[serde(deserialize_with = "calls")]
    pub calls: Vec<Request>,
}

impl Batch {
    /// Why kmsd does not run this batch, if it does not: an empty batch,
    /// or a protocol call (Hello, Goodbye) inside one.
    pub fn refusal(&self) -> Option<&'static str> {
        if self.calls.is_empty() {
            return Some("empty batch");
        }
        if self
            .calls
            .iter()
            .any(|c| c.call().chapter() == crate::Chapter::Control)
        {
            return Some("protocol call inside a batch");
        }
        None
    }
}

thread_local! {
    /// Whether the decoder on this thread is inside a batch or an answer list.
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

/// Marks the decoder as inside a batch for as long as it lives.
struct Inside;

impl Inside {
    fn enter<E: serde::de::Error>() -> Result<Inside, E> {
        INSIDE.with(|i| {
            if i.replace(true) {
                Err(E::custom("a batch inside a batch"))
            } else {
                Ok(Inside)
            }
        })
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        INSIDE.with(|i| i.set(false));
    }
}

fn calls<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Request>, D::Error> {
    let _inside = Inside::enter::<D::Error>()?;
    bounded(d)
}

/// Decodes the answers of [`crate::Body::Batch`].
pub(crate) fn answers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Response>, D::Error> {
    let _inside = Inside::enter::<D::Error>()?;
    bounded(d)
}

fn bounded<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    crate::attrs::at_most(d, MAX_BATCH, "batch", "calls")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, encode, Body, DataOut, GetInfo, MechParam, Mechanism, OpInit};

    fn sign_pair() -> Vec<Request> {
        vec![
            Request::SignInit(OpInit {
                session: 1,
                mechanism: Mechanism {
                    mechanism: 0x1041,
                    param: MechParam::None,
                },
                key: 2,
            }),
            Request::Sign(DataOut {
                session: 1,
                data: Some(vec![1, 2, 3]),
                out: Some(64),
            }),
        ]
    }

    #[test]
    fn a_batch_and_its_answers_round_trip() {
        let b = Request::Batch(Batch { calls: sign_pair() });
        assert_eq!(decode::<Request>(&encode(&b).unwrap()).unwrap(), b);
        let r = Response::ok(Body::Batch(vec![
            Response::rv(0),
            Response::ok(Body::Output {
                len: 2,
                data: Some(vec![9, 9]),
            }),
        ]));
        assert_eq!(decode::<Response>(&encode(&r).unwrap()).unwrap(), r);
    }

    #[test]
    fn a_batch_inside_a_batch_does_not_decode() {
        let inner = Request::Batch(Batch { calls: sign_pair() });
        let outer = Request::Batch(Batch { calls: vec![inner] });
        let e = decode::<Request>(&encode(&outer).unwrap()).unwrap_err();
        assert!(e.to_string().contains("batch inside a batch"), "{e}");
        // The flag is down again after the error.
        let ok = Request::Batch(Batch { calls: sign_pair() });
        assert_eq!(decode::<Request>(&encode(&ok).unwrap()).unwrap(), ok);
        let nested = Response::ok(Body::Batch(vec![Response::ok(Body::Batch(vec![]))]));
        let e = decode::<Response>(&encode(&nested).unwrap()).unwrap_err();
        assert!(e.to_string().contains("batch inside a batch"), "{e}");
    }

    #[test]
    fn a_long_batch_is_refused_from_its_length() {
        let b = Request::Batch(Batch {
            calls: vec![Request::GetInfo(GetInfo); MAX_BATCH + 1],
        });
        let e = decode::<Request>(&encode(&b).unwrap()).unwrap_err();
        assert!(e.to_string().contains("limit 4"), "{e}");
        // A length prefix claiming billions of calls allocates nothing.
        let mut bytes = encode(&Request::Batch(Batch { calls: vec![] })).unwrap();
        let n = bytes.len();
        bytes[n - 8..].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode::<Request>(&bytes).is_err());
    }

    #[test]
    fn protocol_calls_and_empty_batches_are_refused() {
        assert_eq!(Batch { calls: sign_pair() }.refusal(), None);
        assert!(Batch { calls: vec![] }.refusal().is_some());
        let hello = Request::Goodbye(crate::Goodbye);
        assert!(Batch { calls: vec![hello] }.refusal().is_some());
    }
}
