//! Frames an attacker would send, built without recursing, for kmsd's
//! regression tests and the fuzz seeds. Derived from the encoder itself, so
//! they follow any change of encoding.

use crate::{encode, AttrValue, Attribute, Request};

/// A `C_CreateObject` whose template nests `depth` levels of
/// `CKA_WRAP_TEMPLATE`: the frame that overflowed kmsd's stack.
pub fn deeply_nested_create_object(depth: usize) -> Vec<u8> {
    let create = |template| {
        Request::CreateObject(crate::CreateObject {
            session: 1,
            template: Some(template),
        })
    };
    let leaf = vec![Attribute {
        kind: 0x100,
        value: AttrValue::Ulong(0x1f),
    }];
    let wrap = |t| {
        vec![Attribute {
            kind: 0x4000_0211,
            value: AttrValue::Template(t),
        }]
    };
    let flat = encode(&create(leaf.clone())).expect("encodes");
    let one = encode(&create(wrap(leaf))).expect("encodes");
    // The two encodings differ by one nesting unit inserted where the leaf starts.
    let at = flat
        .iter()
        .zip(&one)
        .position(|(a, b)| a != b)
        .expect("encodings differ");
    let unit = &one[at..at + (one.len() - flat.len())];
    let mut out = Vec::with_capacity(flat.len() + unit.len() * depth);
    out.extend_from_slice(&flat[..at]);
    for _ in 0..depth {
        out.extend_from_slice(unit);
    }
    out.extend_from_slice(&flat[at..]);
    out
}

/// Puts an encoded request into an [`crate::Envelope`] (id 1, first send).
pub fn in_envelope(request: &[u8]) -> Vec<u8> {
    let probe = Request::GetInfo(crate::GetInfo);
    let whole = encode(&crate::Envelope {
        id: 1,
        resend: false,
        request: probe.clone(),
    })
    .expect("encodes");
    let tail = encode(&probe).expect("encodes");
    let mut out = whole[..whole.len() - tail.len()].to_vec();
    out.extend_from_slice(request);
    out
}

/// The fuzz seeds, by target: `(target, name, bytes)`. The crash inputs of
/// the security review are among them. `fuzz/seeds/<target>/<name>` holds
/// each (written by `cargo run -p kmsp11-proto --example fuzz-seeds`), and a
/// test checks the files are current.
pub fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    use crate::mechanism::MechParam;
    use crate::{AttrQuery, Body, Envelope, Mechanism, OpInit, Pin, Response};
    // kmsd under cfg(fuzzing) numbers sessions and objects from 0x10001.
    const SESSION: u64 = 0x10001;
    const KEY: u64 = 0x10001;
    let env = |request| {
        encode(&Envelope {
            id: 1,
            resend: false,
            request,
        })
        .expect("encodes")
    };
    let mut gcm_raw = vec![0u8; 48];
    gcm_raw[0] = 0x10;
    gcm_raw[8] = 12;
    let gcm = Request::EncryptInit(OpInit {
        session: SESSION,
        mechanism: Mechanism {
            mechanism: 0x1087,
            param: MechParam::Bytes(gcm_raw),
        },
        key: KEY,
    });
    let mut addr = 0x5555_5555_0000u64.to_le_bytes().to_vec();
    addr.extend_from_slice(&16u64.to_le_bytes());
    let derive = Request::DeriveKey(crate::DeriveKey {
        session: SESSION,
        mechanism: Mechanism {
            mechanism: 0x1104,
            param: MechParam::Bytes(addr),
        },
        base_key: KEY,
        template: Some(vec![Attribute {
            kind: 0x161,
            value: AttrValue::Ulong(16),
        }]),
    });
    let amplify = Request::GetAttributeValue(crate::GetAttributeValue {
        session: SESSION,
        object: 0x7fff_0001,
        template: (0..4096)
            .map(|_| AttrQuery {
                kind: 0x11,
                buf: Some(16 << 20),
            })
            .collect(),
    });
    let open = Request::OpenSession(crate::OpenSession { slot: 0, flags: 6 });
    let login = Request::Login(crate::Login {
        session: SESSION,
        user_type: 1,
        pin: Some(Pin::new(b"123456".to_vec())),
    });
    let aes = Request::GenerateKey(crate::GenerateKey {
        session: SESSION,
        mechanism: Mechanism {
            mechanism: 0x1080,
            param: MechParam::None,
        },
        template: Some(vec![
            Attribute {
                kind: 0x161,
                value: AttrValue::Ulong(32),
            },
            Attribute {
                kind: 0x104,
                value: AttrValue::Bytes(vec![1]),
            },
            Attribute {
                kind: 0x10c,
                value: AttrValue::Bytes(vec![1]),
            },
        ]),
    });
    let seq = |v: Vec<Request>| encode(&v).expect("encodes");
    let nested = deeply_nested_create_object(20_000);
    let batch = |calls| Request::Batch(crate::Batch { calls });
    let batched = batch(vec![
        gcm.clone(),
        Request::Encrypt(crate::DataOut {
            session: SESSION,
            data: Some(vec![0; 16]),
            out: Some(64),
        }),
    ]);
    vec![
        ("request_decode", "nested-20000", in_envelope(&nested)),
        ("request_decode", "gcm-raw-pointer", env(gcm.clone())),
        ("request_decode", "batch", env(batched.clone())),
        ("request_decode", "derive-raw-pointer", env(derive.clone())),
        (
            "request_decode",
            "attribute-amplification",
            env(amplify.clone()),
        ),
        (
            "response_decode",
            "attributes",
            encode(&Response::ok(Body::Attributes(vec![crate::AttrAnswer {
                len: 3,
                value: Some(AttrValue::Template(vec![])),
            }])))
            .expect("encodes"),
        ),
        (
            "response_decode",
            "batch",
            encode(&Response::ok(Body::Batch(vec![
                Response::rv(0),
                Response::ok(Body::Output {
                    len: 2,
                    data: Some(vec![1, 2]),
                }),
            ])))
            .expect("encodes"),
        ),
        (
            "dispatch",
            "batch",
            seq(vec![open.clone(), login.clone(), batched]),
        ),
        (
            "dispatch",
            "gcm-raw-pointer",
            seq(vec![open.clone(), login.clone(), aes.clone(), gcm]),
        ),
        (
            "dispatch",
            "derive-raw-pointer",
            seq(vec![open.clone(), login.clone(), aes, derive]),
        ),
        (
            "dispatch",
            "attribute-amplification",
            seq(vec![open, login, amplify]),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    // The checked-in seeds are exactly what the current encoding produces.
    #[test]
    fn fuzz_seeds_are_current() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
        for (target, name, bytes) in super::seeds() {
            let p = root.join(target).join(name);
            let on_disk = std::fs::read(&p).unwrap_or_default();
            assert!(
                on_disk == bytes,
                "{} is stale: run `cargo run -p kmsp11-proto --example fuzz-seeds`",
                p.display()
            );
        }
    }
}
