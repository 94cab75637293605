//! Frames an attacker would send, built without recursing, for kmsd's
//! regression tests and the fuzz seeds. Derived from the encoder itself, so
//! they follow any change of encoding.

use crate::{encode, AttrValue, Attribute, Request};

/// A `C_CreateObject` whose template nests `depth` levels of
/// `CKA_WRAP_TEMPLATE`: the frame that overflowed kmsd's stack.
pub fn deeply_nested_create_object(depth: usize) -> Vec<u8> {
    let create = |template| Request::CreateObject {
        session: 1,
        template: Some(template),
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
    let probe = Request::GetInfo;
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
