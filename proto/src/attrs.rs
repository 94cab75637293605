//! Attributes (PKCS#11 3.0 §4): which types hold a `CK_ULONG`, an array of
//! them or a nested template, and the decoding bounds for templates. Both
//! ends use these tables, so a value's encoding never depends on the
//! platform's `CK_ULONG` width, and neither end can be made to recurse or
//! allocate without bound by the other.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{Error as _, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::{AttrQuery, AttrValue, Attribute};

/// Nested templates deeper than this are refused while decoding. The spec
/// nests one level (`CKA_WRAP_TEMPLATE` inside a key template); one more is
/// tolerated.
pub const MAX_TEMPLATE_DEPTH: usize = 2;
/// The most attributes one template may carry.
pub const MAX_TEMPLATE_LEN: usize = 4096;

/// Attribute types whose value is one `CK_ULONG`.
pub fn is_ulong(kind: u64) -> bool {
    matches!(
        kind,
        0x000 // CKA_CLASS
            | 0x080 // CKA_CERTIFICATE_TYPE
            | 0x087 // CKA_CERTIFICATE_CATEGORY
            | 0x088 // CKA_JAVA_MIDP_SECURITY_DOMAIN
            | 0x08c // CKA_NAME_HASH_ALGORITHM
            | 0x100 // CKA_KEY_TYPE
            | 0x121 // CKA_MODULUS_BITS
            | 0x133 // CKA_PRIME_BITS
            | 0x134 // CKA_SUBPRIME_BITS
            | 0x160 // CKA_VALUE_BITS
            | 0x161 // CKA_VALUE_LEN
            | 0x166 // CKA_KEY_GEN_MECHANISM
            | 0x300 // CKA_HW_FEATURE_TYPE
            | 0x500 // CKA_MECHANISM_TYPE
            | 0x601 // CKA_PROFILE_ID
    )
}

/// `CKA_ALLOWED_MECHANISMS`: an array of `CK_MECHANISM_TYPE`.
pub fn is_ulong_array(kind: u64) -> bool {
    kind == 0x4000_0600
}

/// `CKA_WRAP_TEMPLATE`, `CKA_UNWRAP_TEMPLATE`, `CKA_DERIVE_TEMPLATE`: arrays of `CK_ATTRIBUTE`.
pub fn is_template(kind: u64) -> bool {
    matches!(kind, 0x4000_0211..=0x4000_0213)
}

/// The value of a `CK_BBOOL` attribute in a template, if present (a
/// non-zero first byte is true, as PKCS#11 reads a `CK_BBOOL`).
pub fn flag(t: &[Attribute], kind: u64) -> Option<bool> {
    t.iter()
        .find(|a| a.kind == kind)
        .and_then(|a| a.value.as_bool())
}

impl AttrValue {
    /// The value as a `CK_BBOOL`; `None` when it is no byte string or empty.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            AttrValue::Bytes(b) => b.first().map(|x| *x != 0),
            _ => None,
        }
    }
}

/// A value whose form contradicts its attribute type: forwarding it would
/// hand the HSM a pointer (a template in a byte attribute) or raw bytes where
/// it expects an array of `CK_ATTRIBUTE` (whose pointers it would follow).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("attribute {0:#x} has a value of the wrong form")]
pub struct WrongForm(pub u64);

/// Checks that every value has the form its type takes, nested templates included.
pub fn check_template(t: &[Attribute]) -> Result<(), WrongForm> {
    for a in t {
        let ok = match &a.value {
            // Raw bytes are never an attribute array (an empty value is a NULL pValue).
            AttrValue::Bytes(b) => b.is_empty() || !is_template(a.kind),
            AttrValue::Ulong(_) => is_ulong(a.kind),
            AttrValue::Ulongs(_) => is_ulong_array(a.kind),
            AttrValue::Template(inner) => is_template(a.kind) && check_template(inner).is_ok(),
        };
        if !ok {
            return Err(WrongForm(a.kind));
        }
    }
    Ok(())
}

thread_local! {
    /// How deep the decoder on this thread is inside nested templates.
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Marks one level of template nesting for as long as it lives.
struct Nesting;

impl Nesting {
    fn enter() -> Option<Nesting> {
        DEPTH.with(|d| {
            if d.get() >= MAX_TEMPLATE_DEPTH {
                None
            } else {
                d.set(d.get() + 1);
                Some(Nesting)
            }
        })
    }
}

impl Drop for Nesting {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get() - 1));
    }
}

/// Decodes the attribute array inside `AttrValue::Template`, one level deeper.
pub(crate) fn nested<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Attribute>, D::Error> {
    let _level = Nesting::enter().ok_or_else(|| {
        D::Error::custom(format!(
            "templates nested deeper than {MAX_TEMPLATE_DEPTH} levels"
        ))
    })?;
    bounded(d)
}

/// Decodes a top-level template (`NULL` or an array).
pub(crate) fn template<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<Attribute>>, D::Error> {
    struct Opt;
    impl<'de> Visitor<'de> for Opt {
        type Value = Option<Vec<Attribute>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an optional template")
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            bounded(d).map(Some)
        }
    }
    d.deserialize_option(Opt)
}

/// Decodes the queries of `C_GetAttributeValue`.
pub(crate) fn queries<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<AttrQuery>, D::Error> {
    bounded(d)
}

/// A sequence of at most [`MAX_TEMPLATE_LEN`] items, refused from its
/// announced length before anything is allocated.
fn bounded<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    at_most(d, MAX_TEMPLATE_LEN, "template", "attributes")
}

/// A sequence of at most `limit` items (`what` of `items`), refused from
/// its announced length before anything is allocated.
pub(crate) fn at_most<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
    limit: usize,
    what: &'static str,
    items: &'static str,
) -> Result<Vec<T>, D::Error> {
    struct Seq<T> {
        limit: usize,
        what: &'static str,
        items: &'static str,
        t: PhantomData<T>,
    }
    impl<'de, T: Deserialize<'de>> Visitor<'de> for Seq<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "at most {} {}", self.limit, self.items)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let n = seq.size_hint().unwrap_or(0);
            if n > self.limit {
                return Err(A::Error::custom(format!(
                    "{} of {n} {} (limit {})",
                    self.what, self.items, self.limit
                )));
            }
            let mut out = Vec::with_capacity(n);
            while let Some(x) = seq.next_element()? {
                if out.len() == self.limit {
                    return Err(A::Error::custom(format!("{} too long", self.what)));
                }
                out.push(x);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Seq {
        limit,
        what,
        items,
        t: PhantomData,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, encode, Request};

    fn nest(depth: usize) -> Vec<Attribute> {
        let mut t = vec![Attribute {
            kind: 0x100,
            value: AttrValue::Ulong(0x1f),
        }];
        for _ in 0..depth {
            t = vec![Attribute {
                kind: 0x4000_0211,
                value: AttrValue::Template(t),
            }];
        }
        t
    }

    fn create(template: Vec<Attribute>) -> Request {
        Request::CreateObject(crate::CreateObject {
            session: 1,
            template: Some(template),
        })
    }

    #[test]
    fn nesting_up_to_the_limit_decodes() {
        let r = create(nest(MAX_TEMPLATE_DEPTH));
        assert_eq!(decode::<Request>(&encode(&r).unwrap()).unwrap(), r);
    }

    #[test]
    fn nesting_beyond_the_limit_is_refused() {
        let r = create(nest(MAX_TEMPLATE_DEPTH + 1));
        let e = decode::<Request>(&encode(&r).unwrap()).unwrap_err();
        assert!(e.to_string().contains("nested deeper"), "{e}");
        // The depth counter is back at zero after the error.
        let ok = create(nest(1));
        assert_eq!(decode::<Request>(&encode(&ok).unwrap()).unwrap(), ok);
    }

    // The attack of the security review: 20,000 levels in one frame. Built by
    // hand, because encoding it would recurse as deep.
    #[test]
    fn twenty_thousand_levels_are_refused_without_recursion() {
        let bytes = crate::hostile::deeply_nested_create_object(20_000);
        assert!(bytes.len() > 300_000);
        let e = decode::<Request>(&bytes).unwrap_err();
        assert!(e.to_string().contains("nested deeper"), "{e}");
    }

    #[test]
    fn overlong_templates_are_refused_from_their_length() {
        let mut bytes = encode(&create(vec![])).unwrap();
        let n = bytes.len();
        // The template's length prefix is the last field: claim 2^40 attributes.
        bytes[n - 8..].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let e = decode::<Request>(&bytes).unwrap_err();
        assert!(e.to_string().contains("limit"), "{e}");
    }

    #[test]
    fn value_forms_must_match_their_types() {
        let a = |kind, value| Attribute { kind, value };
        assert!(check_template(&nest(2)).is_ok());
        // Raw bytes where an attribute array belongs.
        assert_eq!(
            check_template(&[a(0x4000_0211, AttrValue::Bytes(vec![0; 24]))]),
            Err(WrongForm(0x4000_0211))
        );
        assert!(check_template(&[a(0x4000_0211, AttrValue::Bytes(vec![]))]).is_ok());
        // A template where bytes belong (the HSM would store our pointer).
        assert!(check_template(&[a(0x11, AttrValue::Template(vec![]))]).is_err());
        assert!(check_template(&[a(0x11, AttrValue::Ulong(1))]).is_err());
        assert!(check_template(&[a(0x11, AttrValue::Ulongs(vec![1]))]).is_err());
        // Inside a nested template too.
        assert!(check_template(&[a(
            0x4000_0212,
            AttrValue::Template(vec![a(0x4000_0211, AttrValue::Bytes(vec![1]))])
        )])
        .is_err());
    }
}
