//! The call table: every call of the protocol, declared once.
//!
//! Each row is `[id Variant handler C_function chapter Payload]`:
//!
//! * `id`: the call's number on the wire, explicit and never reused, so that
//!   reordering rows can never change an encoding (golden-byte tests pin it);
//! * `Variant`: its [`Request`] variant and [`CallId`];
//! * `handler`: the name of the function that answers it, in kmsd's
//!   `ops::<chapter>` and the library's `api::<chapter>`;
//! * `C_function`: the PKCS#11 function (`none` for protocol calls);
//! * `chapter`: the file it lives in, the same name in `proto`,
//!   `libkmsp11/src/ffi`, `libkmsp11/src/api` and `kmsd/src/ops`;
//! * `Payload`: the request's type. The shapes `OpInit`, `DataOut`,
//!   `OutOnly`, `DataIn` and `SessionOnly` are shared by many calls; for them
//!   the library's C shells, kmsd's dispatch and the backend's function
//!   lookup are all generated from this table, so adding such a call is one
//!   row. Any other payload names a call with its own shell and handler.
//!
//! Consumers expand the table with a macro of their own:
//! `kmsp11_proto::calls!(my_macro, args...)` calls
//! `my_macro! { (args...) [row] [row] ... }`.
//!
//! A new call is a new row with a new id and a bump of the protocol's minor
//! version; an existing row never changes.

/// Expands `$then! { (args) [id Variant handler C_function chapter Payload] ... }`.
#[macro_export]
macro_rules! calls {
    ($then:ident $(, $($arg:tt)*)?) => {
        $then! {
            ($($($arg)*)?)
            // id  Variant               handler              C function              chapter     Payload
            [   1  Hello                 hello                none                    control     Hello ]
            [   2  Goodbye               goodbye              none                    control     Goodbye ]
            [   3  Batch                 batch                none                    control     Batch ]
            [  10  GetInfo               info                 C_GetInfo               general     GetInfo ]
            [  11  GetFunctionStatus     function_status      C_GetFunctionStatus     general     SessionOnly ]
            [  12  CancelFunction        cancel_function      C_CancelFunction        general     SessionOnly ]
            [  20  GetSlotList           slot_list            C_GetSlotList           slot_token  GetSlotList ]
            [  21  GetSlotInfo           slot_info            C_GetSlotInfo           slot_token  GetSlotInfo ]
            [  22  GetTokenInfo          token_info           C_GetTokenInfo          slot_token  GetTokenInfo ]
            [  23  WaitForSlotEvent      wait_for_slot_event  C_WaitForSlotEvent      slot_token  WaitForSlotEvent ]
            [  24  GetMechanismList      mechanism_list       C_GetMechanismList      slot_token  GetMechanismList ]
            [  25  GetMechanismInfo      mechanism_info       C_GetMechanismInfo      slot_token  GetMechanismInfo ]
            [  26  InitToken             init_token           C_InitToken             slot_token  InitToken ]
            [  27  InitPin               init_pin             C_InitPIN               slot_token  InitPin ]
            [  28  SetPin                set_pin              C_SetPIN                slot_token  SetPin ]
            [  40  OpenSession           open_session         C_OpenSession           session     OpenSession ]
            [  41  CloseSession          close_session        C_CloseSession          session     SessionOnly ]
            [  42  CloseAllSessions      close_all_sessions   C_CloseAllSessions      session     CloseAllSessions ]
            [  43  GetSessionInfo        session_info         C_GetSessionInfo        session     GetSessionInfo ]
            [  44  GetOperationState     operation_state      C_GetOperationState     session     GetOperationState ]
            [  45  SetOperationState     operation_state      C_SetOperationState     session     SetOperationState ]
            [  46  Login                 login                C_Login                 session     Login ]
            [  47  Logout                logout               C_Logout                session     SessionOnly ]
            [  60  CreateObject          create_object        C_CreateObject          object      CreateObject ]
            [  61  CopyObject            copy_object          C_CopyObject            object      CopyObject ]
            [  62  DestroyObject         destroy_object       C_DestroyObject         object      DestroyObject ]
            [  63  GetObjectSize         object_size          C_GetObjectSize         object      GetObjectSize ]
            [  64  GetAttributeValue     attribute_value      C_GetAttributeValue     object      GetAttributeValue ]
            [  65  SetAttributeValue     set_attribute_value  C_SetAttributeValue     object      SetAttributeValue ]
            [  66  FindObjectsInit       find_objects_init    C_FindObjectsInit       object      FindObjectsInit ]
            [  67  FindObjects           find_objects         C_FindObjects           object      FindObjects ]
            [  68  FindObjectsFinal      find_objects_final   C_FindObjectsFinal      object      SessionOnly ]
            [  80  EncryptInit           encrypt_init         C_EncryptInit           crypto      OpInit ]
            [  81  Encrypt               encrypt              C_Encrypt               crypto      DataOut ]
            [  82  EncryptUpdate         encrypt_update       C_EncryptUpdate         crypto      DataOut ]
            [  83  EncryptFinal          encrypt_final        C_EncryptFinal          crypto      OutOnly ]
            [  84  DecryptInit           decrypt_init         C_DecryptInit           crypto      OpInit ]
            [  85  Decrypt               decrypt              C_Decrypt               crypto      DataOut ]
            [  86  DecryptUpdate         decrypt_update       C_DecryptUpdate         crypto      DataOut ]
            [  87  DecryptFinal          decrypt_final        C_DecryptFinal          crypto      OutOnly ]
            [  88  DigestInit            digest_init          C_DigestInit            crypto      DigestInit ]
            [  89  Digest                digest               C_Digest                crypto      DataOut ]
            [  90  DigestUpdate          digest_update        C_DigestUpdate          crypto      DataIn ]
            [  91  DigestKey             digest_key           C_DigestKey             crypto      DigestKey ]
            [  92  DigestFinal           digest_final         C_DigestFinal           crypto      OutOnly ]
            [  93  SignInit              sign_init            C_SignInit              crypto      OpInit ]
            [  94  Sign                  sign                 C_Sign                  crypto      DataOut ]
            [  95  SignUpdate            sign_update          C_SignUpdate            crypto      DataIn ]
            [  96  SignFinal             sign_final           C_SignFinal             crypto      OutOnly ]
            [  97  SignRecoverInit       sign_recover_init    C_SignRecoverInit       crypto      OpInit ]
            [  98  SignRecover           sign_recover         C_SignRecover           crypto      DataOut ]
            [  99  VerifyInit            verify_init          C_VerifyInit            crypto      OpInit ]
            [ 100  Verify                verify               C_Verify                crypto      Verify ]
            [ 101  VerifyUpdate          verify_update        C_VerifyUpdate          crypto      DataIn ]
            [ 102  VerifyFinal           verify_final         C_VerifyFinal           crypto      DataIn ]
            [ 103  VerifyRecoverInit     verify_recover_init  C_VerifyRecoverInit     crypto      OpInit ]
            [ 104  VerifyRecover         verify_recover       C_VerifyRecover         crypto      DataOut ]
            [ 105  DigestEncryptUpdate   digest_encrypt       C_DigestEncryptUpdate   crypto      DataOut ]
            [ 106  DecryptDigestUpdate   decrypt_digest       C_DecryptDigestUpdate   crypto      DataOut ]
            [ 107  SignEncryptUpdate     sign_encrypt         C_SignEncryptUpdate     crypto      DataOut ]
            [ 108  DecryptVerifyUpdate   decrypt_verify       C_DecryptVerifyUpdate   crypto      DataOut ]
            [ 109  SeedRandom            seed_random          C_SeedRandom            crypto      DataIn ]
            [ 110  GenerateRandom        generate_random      C_GenerateRandom        crypto      GenerateRandom ]
            [ 120  GenerateKey           generate_key         C_GenerateKey           keymgmt     GenerateKey ]
            [ 121  GenerateKeyPair       generate_key_pair    C_GenerateKeyPair       keymgmt     GenerateKeyPair ]
            [ 122  WrapKey               wrap_key             C_WrapKey               keymgmt     WrapKey ]
            [ 123  UnwrapKey             unwrap_key           C_UnwrapKey             keymgmt     UnwrapKey ]
            [ 124  DeriveKey             derive_key           C_DeriveKey             keymgmt     DeriveKey ]
        }
    };
}

/// Keeps `$($t)*` when the first two idents are equal, from a fixed list of
/// shapes and chapters: how a consumer picks the rows of one shape or chapter.
#[macro_export]
macro_rules! when {
    (OpInit, OpInit, $($t:tt)*) => { $($t)* };
    (DataOut, DataOut, $($t:tt)*) => { $($t)* };
    (OutOnly, OutOnly, $($t:tt)*) => { $($t)* };
    (DataIn, DataIn, $($t:tt)*) => { $($t)* };
    (SessionOnly, SessionOnly, $($t:tt)*) => { $($t)* };
    (control, control, $($t:tt)*) => { $($t)* };
    (general, general, $($t:tt)*) => { $($t)* };
    (slot_token, slot_token, $($t:tt)*) => { $($t)* };
    (session, session, $($t:tt)*) => { $($t)* };
    (object, object, $($t:tt)*) => { $($t)* };
    (crypto, crypto, $($t:tt)*) => { $($t)* };
    (keymgmt, keymgmt, $($t:tt)*) => { $($t)* };
    ($a:ident, $b:ident, $($t:tt)*) => {};
}

/// Where a call lives: the spec chapter, and the file name in every crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chapter {
    /// Hello, Goodbye and Batch: the protocol's own calls.
    Control,
    General,
    SlotToken,
    Session,
    Object,
    Crypto,
    Keymgmt,
}

macro_rules! chapter_of {
    (control) => {
        Chapter::Control
    };
    (general) => {
        Chapter::General
    };
    (slot_token) => {
        Chapter::SlotToken
    };
    (session) => {
        Chapter::Session
    };
    (object) => {
        Chapter::Object
    };
    (crypto) => {
        Chapter::Crypto
    };
    (keymgmt) => {
        Chapter::Keymgmt
    };
}

macro_rules! c_name_of {
    (none) => {
        "-"
    };
    ($c:ident) => {
        stringify!($c)
    };
}

macro_rules! define_requests {
    (() $([$id:literal $v:ident $h:ident $c:ident $ch:ident $p:ident])*) => {
        /// One request per call of the table, carrying its payload.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Request {
            $( $v($p), )*
        }

        /// A call's number on the wire.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u16)]
        pub enum CallId {
            $( $v = $id, )*
        }

        impl CallId {
            /// Every call, in table order.
            pub const ALL: &'static [CallId] = &[$(CallId::$v,)*];

            pub fn from_u16(id: u16) -> Option<CallId> {
                match id {
                    $( $id => Some(CallId::$v), )*
                    _ => None,
                }
            }

            /// The PKCS#11 function (`"-"` for the protocol's own calls).
            pub fn c_name(self) -> &'static str {
                match self {
                    $( CallId::$v => c_name_of!($c), )*
                }
            }

            pub fn chapter(self) -> Chapter {
                match self {
                    $( CallId::$v => chapter_of!($ch), )*
                }
            }
        }

        impl Request {
            pub fn call(&self) -> CallId {
                match self {
                    $( Request::$v(_) => CallId::$v, )*
                }
            }

            /// The session the request works in, if its call takes one.
            pub fn session(&self) -> Option<crate::Handle> {
                match self {
                    $( Request::$v(p) => InSession::session(p), )*
                }
            }
        }

        impl Serialize for Request {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut t = s.serialize_tuple(2)?;
                t.serialize_element(&(self.call() as u16))?;
                match self {
                    $( Request::$v(p) => t.serialize_element(p)?, )*
                }
                t.end()
            }
        }

        impl<'de> Deserialize<'de> for Request {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Request, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = Request;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str("a call id and its payload")
                    }
                    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Request, A::Error> {
                        let id: u16 = seq
                            .next_element()?
                            .ok_or_else(|| A::Error::invalid_length(0, &self))?;
                        let missing = || A::Error::invalid_length(1, &V);
                        Ok(match CallId::from_u16(id) {
                            $( Some(CallId::$v) => Request::$v(seq.next_element()?.ok_or_else(missing)?), )*
                            None => return Err(A::Error::custom(format!("unknown call id {id}"))),
                        })
                    }
                }
                d.deserialize_tuple(2, V)
            }
        }
    };
}

use std::fmt;

use serde::de::{Error as _, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::crypto::*;
use crate::general::*;
use crate::keymgmt::*;
use crate::object::*;
use crate::session::*;
use crate::slot_token::*;
use crate::{Batch, Goodbye, Hello};

/// The session a payload names, if it names one: every payload says, so
/// a new call cannot forget to.
pub trait InSession {
    fn session(&self) -> Option<crate::Handle>;
}

macro_rules! in_session {
    (with: $($with:ty),* ; without: $($without:ty),* $(,)?) => {
        $( impl InSession for $with {
            fn session(&self) -> Option<crate::Handle> {
                Some(self.session)
            }
        } )*
        $( impl InSession for $without {
            fn session(&self) -> Option<crate::Handle> {
                None
            }
        } )*
    };
}

in_session!(
    with: CopyObject, CreateObject, DataIn, DataOut, DeriveKey, DestroyObject, DigestInit,
        DigestKey, FindObjects, FindObjectsInit, GenerateKey, GenerateKeyPair, GenerateRandom,
        GetAttributeValue, GetObjectSize, GetOperationState, GetSessionInfo, InitPin, Login,
        OpInit, OutOnly, SessionOnly, SetAttributeValue, SetOperationState, SetPin, UnwrapKey,
        Verify, WrapKey;
    without: Batch, CloseAllSessions, GetInfo, GetMechanismInfo, GetMechanismList, GetSlotInfo,
        GetSlotList, GetTokenInfo, Goodbye, Hello, InitToken, OpenSession, WaitForSlotEvent,
);

calls!(define_requests);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, encode, Body, DataOut, MechParam, Mechanism, OpInit, Response};

    // Golden bytes: a call's encoding is its id (u16, little-endian) and
    // then its payload. These must never change; a new call is a new id.
    #[test]
    fn golden_request_bytes() {
        let cases: Vec<(Request, &str)> = vec![
            (Request::GetInfo(GetInfo), "0a00"),
            (
                Request::GetSlotList(GetSlotList {
                    token_present: true,
                }),
                "140001",
            ),
            (
                Request::CloseSession(SessionOnly { session: 7 }),
                "29000700000000000000",
            ),
            (
                Request::Sign(DataOut {
                    session: 1,
                    data: Some(vec![0xab]),
                    out: None,
                }),
                "5e000100000000000000010100000000000000ab00",
            ),
            (
                Request::SignInit(OpInit {
                    session: 1,
                    mechanism: Mechanism {
                        mechanism: 0x1041,
                        param: MechParam::None,
                    },
                    key: 2,
                }),
                "5d0001000000000000004110000000000000000000000200000000000000",
            ),
            (Request::Goodbye(crate::Goodbye), "0200"),
        ];
        golden(cases);
    }

    /// Each value encodes to exactly its bytes and decodes back to itself.
    fn golden<T>(cases: Vec<(T, &str)>)
    where
        T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        for (value, hex) in cases {
            let bytes = encode(&value).unwrap();
            assert_eq!(to_hex(&bytes), hex, "{value:?}");
            assert_eq!(decode::<T>(&bytes).unwrap(), value);
        }
    }

    #[test]
    fn golden_response_bytes() {
        let cases: Vec<(Response, &str)> = vec![
            (Response::rv(0x71), "710000000000000000000000"),
            (
                Response::ok(Body::Handle(5)),
                "0000000000000000090000000500000000000000",
            ),
            (
                Response::ok(Body::Output {
                    len: 2,
                    data: Some(vec![1, 2]),
                }),
                "00000000000000000e00000002000000000000000102000000000000000102",
            ),
        ];
        golden(cases);
    }

    #[test]
    fn unknown_call_ids_are_refused() {
        let mut bytes = encode(&Request::GetInfo(GetInfo)).unwrap();
        bytes[0] = 0xff;
        bytes[1] = 0xff;
        let e = decode::<Request>(&bytes).unwrap_err();
        assert!(e.to_string().contains("unknown call id 65535"), "{e}");
    }

    #[test]
    fn every_call_has_a_chapter_and_a_name() {
        assert_eq!(
            CallId::ALL.len(),
            68,
            "65 C functions that travel, Hello, Goodbye and Batch"
        );
        for c in CallId::ALL {
            assert_eq!(CallId::from_u16(*c as u16), Some(*c));
            if c.chapter() != Chapter::Control {
                assert!(c.c_name().starts_with("C_"), "{c:?}");
            }
        }
        assert_eq!(CallId::WrapKey.c_name(), "C_WrapKey");
        assert_eq!(CallId::WrapKey.chapter(), Chapter::Keymgmt);
    }

    fn to_hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
