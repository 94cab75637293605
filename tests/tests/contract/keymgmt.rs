//! Key management (§5.18): generation of every key type clients use,
//! wrap/unwrap, ECDH.

use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};

use crate::fixture::{contract, rv, ED25519, P256};

#[test]
fn key_generation() {
    contract("key_generation", |t, _, s| {
        let pair =
            |m: Mechanism, pu: &[Attribute], pr: &[Attribute]| rv(&s.generate_key_pair(&m, pu, pr));
        t.rec(
            "rsa keygen",
            pair(
                Mechanism::RsaPkcsKeyPairGen,
                &[
                    Attribute::ModulusBits(2048.into()),
                    Attribute::PublicExponent(vec![1, 0, 1]),
                ],
                &[Attribute::Sign(true), Attribute::Sensitive(true)],
            ),
        );
        t.rec(
            "ec keygen",
            pair(
                Mechanism::EccKeyPairGen,
                &[Attribute::Token(true), Attribute::EcParams(P256.to_vec())],
                &[Attribute::Token(true), Attribute::Sign(true)],
            ),
        );
        // Java's habit: an empty private template.
        t.rec(
            "ec session keygen, empty private template",
            pair(
                Mechanism::EccKeyPairGen,
                &[Attribute::EcParams(P256.to_vec())],
                &[],
            ),
        );
        t.rec(
            "ed25519 keygen",
            pair(
                Mechanism::EccEdwardsKeyPairGen,
                &[Attribute::EcParams(ED25519.to_vec())],
                &[Attribute::Sign(true)],
            ),
        );
        let aes = s.generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::ValueLen(32.into()),
                Attribute::Encrypt(true),
            ],
        );
        t.rec("aes keygen", rv(&aes));
        t.rec(
            "aes keygen without a length",
            rv(&s.generate_key(&Mechanism::AesKeyGen, &[Attribute::Token(false)])),
        );
    });
}

#[test]
fn wrap_and_unwrap() {
    contract("wrap_and_unwrap", |t, side, s| {
        let k = &side.keys();
        let w = s.wrap_key(&Mechanism::AesKeyWrap, k.aes, k.aes_small);
        t.rec(
            "AES-KEY-WRAP",
            rv(&w).clone() + &format!(" len {}", w.as_ref().map(|x| x.len()).unwrap_or(0)),
        );
        let u = s.unwrap_key(
            &Mechanism::AesKeyWrap,
            k.aes,
            &w.unwrap(),
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(false),
                Attribute::Encrypt(true),
                Attribute::Sensitive(false),
                Attribute::Extractable(true),
            ],
        );
        t.rec("unwrap", rv(&u));
        let a = s
            .encrypt(&Mechanism::AesEcb, k.aes_small, &[1u8; 16])
            .unwrap();
        let b = s
            .encrypt(&Mechanism::AesEcb, u.unwrap(), &[1u8; 16])
            .unwrap();
        t.rec("unwrapped key equals original", a == b);
        t.rec(
            "AES-KEY-WRAP-PAD",
            rv(&s.wrap_key(&Mechanism::AesKeyWrapPad, k.aes, k.aes_small)),
        );
        t.rec(
            "RSA-PKCS wrap",
            rv(&s.wrap_key(&Mechanism::RsaPkcs, k.rsa_pub, k.aes_small)),
        );
        // Wrapping a sensitive, non-extractable key is refused by the backend.
        t.rec(
            "wrap sensitive private key",
            rv(&s.wrap_key(&Mechanism::AesKeyWrapPad, k.aes, k.rsa_priv)),
        );
    });
}

// ECDH both ways gives the same secret; a point off the curve is refused.
#[test]
fn ecdh_derive() {
    contract("ecdh_derive", |t, side, s| {
        let k = &side.keys();
        let point = |h: ObjectHandle| match s
            .get_attributes(h, &[AttributeType::EcPoint])
            .unwrap()
            .remove(0)
        {
            // Strip the DER OCTET STRING header: raw 04||X||Y.
            Attribute::EcPoint(p) => p[2..].to_vec(),
            a => panic!("{a:?}"),
        };
        let tmpl = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::ValueLen(32.into()),
            Attribute::Token(false),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
        ];
        let (p1, p2) = (point(k.ec_pub), point(k.ec2_pub));
        let ecdh = |p: &[u8], key| {
            s.derive_key(
                &Mechanism::Ecdh1Derive(Ecdh1DeriveParams::new(EcKdf::null(), p)),
                key,
                &tmpl,
            )
        };
        let (a, b) = (ecdh(&p2, k.ec_priv), ecdh(&p1, k.ec2_priv));
        t.rec("ECDH derive", (rv(&a), rv(&b)));
        let value = |h| {
            format!(
                "{:?}",
                s.get_attributes(h, &[AttributeType::Value]).unwrap()
            )
        };
        t.rec(
            "ECDH both sides agree",
            value(a.unwrap()) == value(b.unwrap()),
        );
        t.rec("ECDH bad point", rv(&ecdh(&[4u8; 65], k.ec_priv)));
    });
}
