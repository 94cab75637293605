//! Key management (§5.18): generation of every key type clients use,
//! wrap/unwrap, ECDH and Diffie-Hellman.

use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use kmsp11_tests::raw;

use crate::fixture::{ck, contract, rv, ED25519, P256};

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

/// RFC 3526 group 14: the 2048-bit MODP prime (generator 2).
const MODP_2048: &str = "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3BE39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF";

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A session DH key pair on the 2048-bit MODP group: (CK_RV, public, private).
fn dh_pair(raw: &raw::Raw, h: raw::CK_SESSION_HANDLE) -> (raw::CK_RV, u64, u64) {
    let (mut prime, mut base) = (unhex(MODP_2048), vec![2u8]);
    let (mut no1, mut no2, mut yes) = (raw::CK_FALSE, raw::CK_FALSE, raw::CK_TRUE);
    let mut public = [
        raw::attr_bytes(raw::CKA_PRIME, &mut prime),
        raw::attr_bytes(raw::CKA_BASE, &mut base),
        raw::attr(raw::CKA_TOKEN, &mut no1),
    ];
    let mut private = [
        raw::attr(raw::CKA_TOKEN, &mut no2),
        raw::attr(raw::CKA_DERIVE, &mut yes),
    ];
    let (mut pu, mut pr) = (0, 0);
    let rv = unsafe {
        raw.f.C_GenerateKeyPair.unwrap()(
            h,
            &mut raw::mechanism(raw::CKM_DH_PKCS_KEY_PAIR_GEN),
            public.as_mut_ptr(),
            public.len() as _,
            private.as_mut_ptr(),
            private.len() as _,
            &mut pu,
            &mut pr,
        )
    };
    (rv, pu, pr)
}

/// CKM_DH_PKCS_DERIVE of a 32-byte extractable generic secret from
/// `private` and the other party's public value: (CK_RV, its value).
fn dh_derive_secret(
    raw: &raw::Raw,
    h: raw::CK_SESSION_HANDLE,
    private: u64,
    theirs: &[u8],
) -> (raw::CK_RV, Option<Vec<u8>>) {
    let mut p = theirs.to_vec();
    let mut m = raw::CK_MECHANISM {
        mechanism: raw::CKM_DH_PKCS_DERIVE,
        pParameter: p.as_mut_ptr().cast(),
        ulParameterLen: p.len() as _,
    };
    let (mut class, mut kind, mut len) = (
        raw::CKO_SECRET_KEY,
        raw::CKK_GENERIC_SECRET,
        32 as raw::CK_ULONG,
    );
    let (mut no1, mut no2, mut yes) = (raw::CK_FALSE, raw::CK_FALSE, raw::CK_TRUE);
    let mut t = [
        raw::attr(raw::CKA_CLASS, &mut class),
        raw::attr(raw::CKA_KEY_TYPE, &mut kind),
        raw::attr(raw::CKA_VALUE_LEN, &mut len),
        raw::attr(raw::CKA_TOKEN, &mut no1),
        raw::attr(raw::CKA_SENSITIVE, &mut no2),
        raw::attr(raw::CKA_EXTRACTABLE, &mut yes),
    ];
    let mut key = 0;
    let rv = unsafe {
        raw.f.C_DeriveKey.unwrap()(h, &mut m, private, t.as_mut_ptr(), t.len() as _, &mut key)
    };
    if rv != raw::CKR_OK {
        return (rv, None);
    }
    let (_, mut v) = raw.attributes(h, key, &[(raw::CKA_VALUE, Some(32))]);
    (rv, v.remove(0).1)
}

// Diffie-Hellman (PKCS #3) on the 2048-bit MODP group: each party derives
// from its private key and the other's public value, and both get the same
// secret; a public value that is no group element is answered as SoftHSM
// answers it.
#[test]
fn dh_derive() {
    contract("dh_derive", |t, side, s| {
        let (raw, h) = (&side.raw, s.handle());
        let (rv_a, pub_a, priv_a) = dh_pair(raw, h);
        let (rv_b, pub_b, priv_b) = dh_pair(raw, h);
        t.rec("DH key pairs", (ck(rv_a), ck(rv_b)));
        let value = |o| {
            let (rv, mut v) = raw.attributes(h, o, &[(raw::CKA_VALUE, Some(256))]);
            assert_eq!(rv, raw::CKR_OK, "public value: {}", ck(rv));
            v.remove(0).1.unwrap()
        };
        let (va, vb) = (value(pub_a), value(pub_b));
        t.rec("public values", (va.len(), vb.len()));
        let (ra, sa) = dh_derive_secret(raw, h, priv_a, &vb);
        let (rb, sb) = dh_derive_secret(raw, h, priv_b, &va);
        t.rec("DH derive", (ck(ra), ck(rb)));
        t.rec("both sides agree", sa.is_some() && sa == sb);
        t.rec("secret length", sa.map(|s| s.len()));
        t.rec(
            "public value 0",
            ck(dh_derive_secret(raw, h, priv_a, &[0u8; 256]).0),
        );
    });
}
