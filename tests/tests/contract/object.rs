//! Object management (§5.7): find with every batch size clients use,
//! attribute queries in all three styles, create/copy/set/destroy.

use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use kmsp11_tests::raw;

use crate::fixture::{ck, contract, rv};

// Clients loop until a batch comes back short: the count must not depend
// on the batch size (1: pkcs11-tool, 16: NSS, 100: Java).
#[test]
fn find_batches() {
    contract("find_batches", |t, _, s| {
        for i in 0..40u8 {
            s.create_object(&[
                Attribute::Class(ObjectClass::DATA),
                Attribute::Token(i % 2 == 0),
                Attribute::Label(format!("data-{i}").into_bytes()),
                Attribute::Value(vec![i; 8]),
            ])
            .unwrap();
        }
        for batch in [1usize, 16, 100] {
            let n = s
                .iter_objects_with_cache_size(
                    &[Attribute::Class(ObjectClass::DATA)],
                    std::num::NonZeroUsize::new(batch).unwrap(),
                )
                .map(|it| it.count());
            t.rec(&format!("find data objects, batch {batch}"), n);
        }
        let count = |tmpl: &[Attribute]| s.find_objects(tmpl).map(|v| v.len());
        t.rec(
            "find by label",
            count(&[Attribute::Label(b"data-7".to_vec())]),
        );
        t.rec(
            "find nothing",
            count(&[Attribute::Label(b"no such".to_vec())]),
        );
        t.rec(
            "find token keys",
            count(&[
                Attribute::Token(true),
                Attribute::Class(ObjectClass::PRIVATE_KEY),
            ]),
        );
    });
}

// Expect every attribute answered: CK_UNAVAILABLE_INFORMATION (-1) for the
// sensitive and the invalid ones, the others filled.
#[test]
fn attribute_size_queries() {
    contract("attribute_size_queries", |t, side, s| {
        let (raw, k, h) = (&side.raw, &side.keys(), s.handle());
        let q = [
            (raw::CKA_CLASS, None),
            (raw::CKA_KEY_TYPE, None),
            (raw::CKA_MODULUS, None),
            (raw::CKA_PRIVATE_EXPONENT, None),
            (0xCF53_4301, None),
            (raw::CKA_ID, None),
        ];
        let (rv1, a1) = raw.attributes(h, k.rsa_priv.handle(), &q);
        assert_ne!(rv1, raw::CKR_OK);
        assert_eq!(
            a1[3].0,
            raw::CK_UNAVAILABLE_INFORMATION,
            "sensitive attribute length must be -1"
        );
        assert_eq!(
            a1[4].0,
            raw::CK_UNAVAILABLE_INFORMATION,
            "invalid attribute length must be -1"
        );
        assert_eq!(a1[2].0, 256);
        t.rec(
            "multi size query",
            (ck(rv1), a1.iter().map(|x| x.0).collect::<Vec<_>>()),
        );
        // The same with buffers: the valid ones are filled.
        let q2: Vec<_> = a1
            .iter()
            .zip(q.iter())
            .map(|((len, _), (kind, _))| {
                let cap = if *len == raw::CK_UNAVAILABLE_INFORMATION {
                    8
                } else {
                    *len as usize
                };
                (*kind, Some(cap))
            })
            .collect();
        let (rv2, a2) = raw.attributes(h, k.rsa_priv.handle(), &q2);
        t.rec("multi fetch rv", ck(rv2));
        t.rec(
            "multi fetch class/keytype/id",
            (a2[0].1.clone(), a2[1].1.clone(), a2[5].1.clone()),
        );
        let (_, pubmod) = raw.attributes(h, k.rsa_pub.handle(), &[(raw::CKA_MODULUS, Some(256))]);
        assert_eq!(
            pubmod[0].1, a2[2].1,
            "public and private modulus must match"
        );
    });
}

// Expect CKR_BUFFER_TOO_SMALL with the needed length for a short buffer,
// the other attributes still filled.
#[test]
fn attribute_short_buffer() {
    contract("attribute_short_buffer", |t, side, s| {
        let (rv3, a3) = side.raw.attributes(
            s.handle(),
            side.keys().rsa_pub.handle(),
            &[(raw::CKA_MODULUS, Some(10)), (raw::CKA_CLASS, Some(8))],
        );
        t.rec("short buffer", (ck(rv3), a3[0].0, a3[1].1.clone()));
    });
}

// EC_POINT on the private key is invalid (libp11 then reads the public key).
#[test]
fn ec_attributes() {
    contract("ec_attributes", |t, side, s| {
        let (raw, k, h) = (&side.raw, &side.keys(), s.handle());
        let (rv4, a4) = raw.attributes(h, k.ec_priv.handle(), &[(raw::CKA_EC_POINT, None)]);
        t.rec("ec point on private key", (ck(rv4), a4[0].0));
        let (rv5, a5) = raw.attributes(
            h,
            k.ec_pub.handle(),
            &[(raw::CKA_EC_POINT, None), (raw::CKA_EC_PARAMS, Some(64))],
        );
        t.rec("ec public attributes", (ck(rv5), a5[0].0, a5[1].1.clone()));
        let ed = s.get_attributes(
            k.ed_priv,
            &[AttributeType::KeyType, AttributeType::EcParams],
        );
        t.rec("ed25519 attributes", ed.map(|v| format!("{v:?}")));
    });
}

#[test]
fn typed_attributes() {
    contract("typed_attributes", |t, side, s| {
        let attrs = s.get_attributes(
            side.keys().aes,
            &[
                AttributeType::ValueLen,
                AttributeType::KeyType,
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::Token,
            ],
        );
        t.rec("aes attributes", attrs.map(|v| format!("{v:?}")));
        // Expect CKR_OBJECT_HANDLE_INVALID for a handle that names nothing.
        let (rv6, _) = side
            .raw
            .attributes(s.handle(), 0x7fff_0001, &[(raw::CKA_CLASS, Some(8))]);
        t.rec("unknown handle", ck(rv6));
    });
}

#[test]
fn create_copy_set_destroy() {
    contract("create_copy_set_destroy", |t, _, s| {
        let o = s.create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(false),
            Attribute::Label(b"obj".to_vec()),
            Attribute::Application(b"kmsp11".to_vec()),
            Attribute::Value(b"hello".to_vec()),
        ]);
        t.rec("create", rv(&o));
        let c = s.copy_object(o.unwrap(), &[Attribute::Label(b"copy".to_vec())]);
        t.rec("copy", rv(&c));
        let c = c.unwrap();
        t.rec(
            "set label",
            rv(&s.update_attributes(c, &[Attribute::Label(b"renamed".to_vec())])),
        );
        t.rec(
            "read back",
            s.get_attributes(c, &[AttributeType::Label, AttributeType::Value])
                .map(|v| format!("{v:?}")),
        );
        t.rec(
            "set class (read-only)",
            rv(&s.update_attributes(c, &[Attribute::Class(ObjectClass::SECRET_KEY)])),
        );
        t.rec("destroy", rv(&s.destroy_object(c)));
        t.rec("destroy again", rv(&s.destroy_object(c)));
        t.rec(
            "destroyed is gone",
            rv(&s.get_attributes(c, &[AttributeType::Label])),
        );
    });
}

// A certificate object, as NSS and pkcs11-tool write them; an empty
// template is the backend's CKR_TEMPLATE_INCOMPLETE.
#[test]
fn certificate_and_empty_templates() {
    contract("certificate_and_empty_templates", |t, _, s| {
        let cert = s.create_object(&[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::CertificateType(cryptoki::object::CertificateType::X_509),
            Attribute::Token(true),
            Attribute::Label(b"cert".to_vec()),
            Attribute::Id(vec![1]),
            Attribute::Subject(vec![0x30, 0x00]),
            Attribute::Value(vec![0x30, 0x03, 0x02, 0x01, 0x01]),
        ]);
        t.rec("create certificate", rv(&cert));
        t.rec("create empty", rv(&s.create_object(&[])));
    });
}

// A search of more objects than the library fetches in its first exchange
// returns each match once over many C_FindObjects calls, then nothing;
// C_FindObjectsFinal ends it, after which C_FindObjects has no search.
#[test]
fn find_past_the_first_exchange() {
    contract("find_past_the_first_exchange", |t, side, s| {
        for i in 0..150u32 {
            s.create_object(&[
                Attribute::Class(ObjectClass::DATA),
                Attribute::Label(b"many".to_vec()),
                Attribute::Value(i.to_be_bytes().to_vec()),
            ])
            .unwrap();
        }
        let many = [Attribute::Label(b"many".to_vec())];
        for batch in [7usize, 64, 65, 200] {
            let found: Result<std::collections::HashSet<_>, _> = s
                .iter_objects_with_cache_size(&many, std::num::NonZeroUsize::new(batch).unwrap())
                .and_then(|it| it.map(|o| o.map(|o| o.handle())).collect());
            t.rec(
                &format!("distinct matches, batch {batch}"),
                found.map(|f| f.len()),
            );
        }
        let (raw, h) = (&side.raw, s.handle());
        let mut handles = [0 as raw::CK_OBJECT_HANDLE; 8];
        let mut n: raw::CK_ULONG = 0;
        let mut label = *b"many";
        let mut tmpl = [raw::attr_bytes(raw::CKA_LABEL, &mut label)];
        unsafe {
            let f = raw.f;
            t.rec(
                "init",
                ck(f.C_FindObjectsInit.unwrap()(h, tmpl.as_mut_ptr(), 1)),
            );
            let r = f.C_FindObjects.unwrap()(h, handles.as_mut_ptr(), 8, &mut n);
            t.rec("first eight", (ck(r), n));
            t.rec("final", ck(f.C_FindObjectsFinal.unwrap()(h)));
            let r = f.C_FindObjects.unwrap()(h, handles.as_mut_ptr(), 8, &mut n);
            t.rec("find after final", ck(r));
            t.rec(
                "init",
                ck(f.C_FindObjectsInit.unwrap()(h, tmpl.as_mut_ptr(), 1)),
            );
            t.rec("final without a find", ck(f.C_FindObjectsFinal.unwrap()(h)));
            t.rec("final again", ck(f.C_FindObjectsFinal.unwrap()(h)));
        }
    });
}
