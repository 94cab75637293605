//! Secrets on the wire: PINs and passwords. Wiped when dropped, never
//! printed (`Debug` shows only the length), encoded exactly as a byte string.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

/// A PIN or password. The same type carries it from the C shell through the
/// wire to kmsd's PIN check and the backend call.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<Vec<u8>>);

/// A PIN is a secret.
pub type Pin = Secret;

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(Zeroizing::new(bytes))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes, redacted)", self.0.len())
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        let bytes: serde_bytes::ByteBuf = Deserialize::deserialize(d)?;
        Ok(Secret::new(bytes.into_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let s = Secret::new(b"123456".to_vec());
        let shown = format!("{s:?} {:?}", Some(&s));
        assert!(
            !shown.contains("123456") && !shown.contains("49, 50"),
            "{shown}"
        );
    }

    #[test]
    fn encodes_as_plain_bytes() {
        let s = Secret::new(vec![1, 2, 3]);
        assert_eq!(
            crate::encode(&s).unwrap(),
            crate::encode(&serde_bytes::Bytes::new(&[1, 2, 3])).unwrap()
        );
        assert_eq!(
            crate::decode::<Secret>(&crate::encode(&s).unwrap()).unwrap(),
            s
        );
    }
}
