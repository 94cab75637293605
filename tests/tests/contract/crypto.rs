//! Encryption, decryption, digesting, signing, verification and random
//! numbers (§5.8-§5.15), with the buffer conventions clients rely on.

use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::ObjectHandle;
use kmsp11_tests::raw;

use crate::fixture::{ck, contract, rv};

const DATA: &[u8] = b"the quick brown fox";
const MSG: &[u8] = b"attack at dawn, bring snacks";

fn pss() -> PkcsPssParams {
    PkcsPssParams {
        hash_alg: MechanismType::SHA256,
        mgf: PkcsMgfType::MGF1_SHA256,
        s_len: 32.into(),
    }
}

// Every signature mechanism clients use: signed, verified, and a tampered
// signature refused.
#[test]
fn sign_verify() {
    contract("sign_verify", |t, side, s| {
        let k = &side.keys();
        let cases: Vec<(&str, Mechanism, ObjectHandle, ObjectHandle, Vec<u8>)> = vec![
            (
                "RSA-PKCS",
                Mechanism::RsaPkcs,
                k.rsa_priv,
                k.rsa_pub,
                DATA.to_vec(),
            ),
            (
                "SHA256-RSA-PKCS",
                Mechanism::Sha256RsaPkcs,
                k.rsa_priv,
                k.rsa_pub,
                DATA.to_vec(),
            ),
            (
                "SHA256-RSA-PKCS-PSS",
                Mechanism::Sha256RsaPkcsPss(pss()),
                k.rsa_priv,
                k.rsa_pub,
                DATA.to_vec(),
            ),
            (
                "RSA-PKCS-PSS",
                Mechanism::RsaPkcsPss(pss()),
                k.rsa_priv,
                k.rsa_pub,
                vec![9u8; 32],
            ),
            (
                "ECDSA",
                Mechanism::Ecdsa,
                k.ec_priv,
                k.ec_pub,
                vec![1u8; 32],
            ),
            (
                "ECDSA session key",
                Mechanism::Ecdsa,
                k.ec2_priv,
                k.ec2_pub,
                vec![2u8; 32],
            ),
            (
                "EdDSA",
                Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                k.ed_priv,
                k.ed_pub,
                DATA.to_vec(),
            ),
        ];
        for (name, m, sk, vk, d) in cases {
            let sig = s.sign(&m, sk, &d);
            t.rec(&format!("{name} sign"), rv(&sig));
            let sig = sig.unwrap();
            t.rec(&format!("{name} signature length"), sig.len());
            t.rec(&format!("{name} verify"), rv(&s.verify(&m, vk, &d, &sig)));
            let mut bad = sig.clone();
            bad[sig.len() / 2] ^= 1;
            t.rec(
                &format!("{name} verify tampered"),
                rv(&s.verify(&m, vk, &d, &bad)),
            );
        }
        // RSA PKCS#1 v1.5 is deterministic: a function of key and data.
        let a = s.sign(&Mechanism::RsaPkcs, k.rsa_priv, DATA).unwrap();
        assert_eq!(a, s.sign(&Mechanism::RsaPkcs, k.rsa_priv, DATA).unwrap());
    });
}

// 100 KB in 1 KiB chunks, as pkcs11-tool signs a large file.
#[test]
fn multipart_signing() {
    contract("multipart_signing", |t, side, s| {
        let k = &side.keys();
        let big: Vec<u8> = (0..100 * 1024).map(|i| (i % 251) as u8).collect();
        s.sign_init(&Mechanism::Sha256RsaPkcs, k.rsa_priv).unwrap();
        for c in big.chunks(1024) {
            s.sign_update(c).unwrap();
        }
        let sig = s.sign_final();
        t.rec("multi-part sign", rv(&sig));
        let sig = sig.unwrap();
        assert_eq!(
            sig,
            s.sign(&Mechanism::Sha256RsaPkcs, k.rsa_priv, &big).unwrap(),
            "multi-part equals single-part"
        );
        s.verify_init(&Mechanism::Sha256RsaPkcs, k.rsa_pub).unwrap();
        for c in big.chunks(4096) {
            s.verify_update(c).unwrap();
        }
        t.rec("multi-part verify", rv(&s.verify_final(&sig)));
    });
}

// Expect a NULL length query, then CKR_BUFFER_TOO_SMALL, then the real
// call, all on one operation; the operation ends after it.
#[test]
fn signature_length_query() {
    contract("signature_length_query", |t, side, s| {
        let (raw, k, h) = (&side.raw, &side.keys(), s.handle());
        let expected = s.sign(&Mechanism::RsaPkcs, k.rsa_priv, DATA).unwrap();
        t.rec(
            "raw sign init",
            ck(raw.sign_init(h, raw::CKM_RSA_PKCS, k.rsa_priv.handle())),
        );
        let q = raw.sign(h, DATA, None);
        t.rec("sign NULL query", (ck(q.0), q.1));
        let small = raw.sign(h, DATA, Some(16));
        t.rec("sign short buffer", (ck(small.0), small.1));
        let real = raw.sign(h, DATA, Some(q.1));
        t.rec(
            "sign after queries",
            (ck(real.0), real.1, real.2 == expected),
        );
        t.rec("sign with no operation", ck(raw.sign(h, DATA, Some(256)).0));
    });
}

// SoftHSM 2.6 has no CKM_ECDSA_SHA256: the proxy says what SoftHSM says.
#[test]
fn unsupported_mechanism() {
    contract("unsupported_mechanism", |t, side, s| {
        t.rec(
            "ECDSA-SHA256 init",
            rv(&s.sign_init(&Mechanism::EcdsaSha256, side.keys().ec_priv)),
        );
    });
}

#[test]
fn aes_cbc_pad() {
    contract("aes_cbc_pad", |t, side, s| {
        let (k, iv) = (&side.keys(), [7u8; 16]);
        let ct = s.encrypt(&Mechanism::AesCbcPad(iv), k.aes, MSG);
        t.rec(
            "AES-CBC-PAD encrypt",
            (rv(&ct), ct.as_ref().map(|c| c.len()).unwrap_or(0)),
        );
        let pt = s.decrypt(&Mechanism::AesCbcPad(iv), k.aes, &ct.unwrap());
        t.rec(
            "AES-CBC-PAD round trip",
            pt.map(|p| p == MSG).map_err(|e| e.to_string()),
        );
        // Multi-part, as Java does.
        s.encrypt_init(&Mechanism::AesCbcPad(iv), k.aes).unwrap();
        let mut c2 = s.encrypt_update(&MSG[..10]).unwrap();
        c2.extend(s.encrypt_update(&MSG[10..]).unwrap());
        c2.extend(s.encrypt_final().unwrap());
        t.rec(
            "multi-part CBC-PAD equals single-part",
            c2 == s.encrypt(&Mechanism::AesCbcPad(iv), k.aes, MSG).unwrap(),
        );
        t.rec(
            "CBC-PAD wrong length",
            rv(&s.decrypt(&Mechanism::AesCbcPad(iv), k.aes, &[5u8; 17])),
        );
    });
}

// CK_GCM_PARAMS with ulIvBits (48 bytes), then without (40 bytes) as Java
// 17 tries first (SoftHSM: CKR_ARGUMENTS_BAD, and Java falls back).
#[test]
fn aes_gcm_both_layouts() {
    contract("aes_gcm_both_layouts", |t, side, s| {
        let (raw, k, h) = (&side.raw, &side.keys(), s.handle());
        for with_bits in [true, false] {
            let mut iv12 = [3u8; 12];
            let mut aad = *b"header";
            let r = raw.gcm_encrypt_init(h, k.aes.handle(), &mut iv12, &mut aad, with_bits);
            t.rec(&format!("GCM init, ulIvBits layout {with_bits}"), ck(r));
            if r == raw::CKR_OK {
                let (r2, c) = raw.encrypt(h, MSG);
                t.rec("GCM encrypt", (ck(r2), c.len()));
                let mut ivd = [3u8; 12];
                let params =
                    cryptoki::mechanism::aead::GcmParams::new(&mut ivd, b"header", 128.into())
                        .unwrap();
                let p = s.decrypt(&Mechanism::AesGcm(params), k.aes, &c);
                t.rec(
                    "GCM decrypt",
                    p.map(|p| p == MSG).map_err(|e| e.to_string()),
                );
            }
        }
    });
}

// SoftHSM 2.6 supports only SHA-1 OAEP; SHA-256 is refused as it refuses it.
#[test]
fn rsa_oaep() {
    contract("rsa_oaep", |t, side, s| {
        let k = &side.keys();
        let oaep =
            |h, mgf| Mechanism::RsaPkcsOaep(PkcsOaepParams::new(h, mgf, PkcsOaepSource::empty()));
        let sha1 = oaep(MechanismType::SHA1, PkcsMgfType::MGF1_SHA1);
        let c = s.encrypt(&sha1, k.rsa_pub, MSG);
        t.rec("OAEP encrypt", rv(&c));
        let p = s.decrypt(&sha1, k.rsa_priv, &c.unwrap());
        t.rec(
            "OAEP round trip",
            p.map(|p| p == MSG).map_err(|e| e.to_string()),
        );
        let sha256 = oaep(MechanismType::SHA256, PkcsMgfType::MGF1_SHA256);
        t.rec("OAEP SHA-256", rv(&s.encrypt(&sha256, k.rsa_pub, MSG)));
    });
}

// Garbage ciphertext: whatever SoftHSM says, the proxy says.
#[test]
fn rsa_pkcs_decrypt() {
    contract("rsa_pkcs_decrypt", |t, side, s| {
        let k = &side.keys();
        let c = s.encrypt(&Mechanism::RsaPkcs, k.rsa_pub, MSG).unwrap();
        t.rec(
            "RSA-PKCS round trip",
            s.decrypt(&Mechanism::RsaPkcs, k.rsa_priv, &c)
                .map(|p| p == MSG)
                .map_err(|e| e.to_string()),
        );
        t.rec(
            "RSA-PKCS garbage",
            rv(&s.decrypt(&Mechanism::RsaPkcs, k.rsa_priv, &[5u8; 256])),
        );
    });
}

#[test]
fn digest() {
    contract("digest", |t, _, s| {
        let hex = |d: Vec<u8>| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        t.rec(
            "sha256(abc)",
            s.digest(&Mechanism::Sha256, b"abc")
                .map(hex)
                .map_err(|e| e.to_string()),
        );
        t.rec(
            "sha1(abc)",
            s.digest(&Mechanism::Sha1, b"abc")
                .map_err(|e| e.to_string()),
        );
        s.digest_init(&Mechanism::Sha512).unwrap();
        s.digest_update(b"a").unwrap();
        s.digest_update(b"bc").unwrap();
        t.rec(
            "sha512 multi-part",
            s.digest_final().map_err(|e| e.to_string()),
        );
        t.rec(
            "ECDSA as digest (not a digest mechanism)",
            rv(&s.digest(&Mechanism::Ecdsa, b"abc")),
        );
    });
}

// pkcs11-tool --test: too small, then NULL, then the real call, all on one
// operation; after it the operation is over.
#[test]
fn digest_buffer_semantics() {
    contract("digest_buffer_semantics", |t, side, s| {
        let (raw, h) = (&side.raw, s.handle());
        let expected = s.digest(&Mechanism::Sha256, b"abc").unwrap();
        t.rec("digest init", ck(raw.digest_init(h, raw::CKM_SHA256)));
        let small = raw.digest(h, b"abc", Some(4));
        t.rec("digest short buffer", (ck(small.0), small.1));
        let q = raw.digest(h, b"abc", None);
        t.rec("digest NULL query", (ck(q.0), q.1));
        let real = raw.digest(h, b"abc", Some(32));
        t.rec("digest real", (ck(real.0), real.2 == expected));
        t.rec(
            "digest after completion",
            ck(raw.digest(h, b"abc", Some(32)).0),
        );
    });
}

#[test]
fn random() {
    contract("random", |t, _, s| {
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        t.rec("random", rv(&s.generate_random_slice(&mut a)));
        s.generate_random_slice(&mut b).unwrap();
        assert_ne!(a, b);
        t.rec("seed", rv(&s.seed_random(b"entropy")));
    });
}

/// C_FindObjectsInit for every object, raw.
fn find_all_init(raw: &raw::Raw, h: raw::CK_SESSION_HANDLE) -> raw::CK_RV {
    unsafe { raw.f.C_FindObjectsInit.unwrap()(h, std::ptr::null_mut(), 0) }
}

// An operation is active for every other call from its *Init on, the
// second time the same *Init is made as the first (the library may send
// it with the next call): another *Init and a search answer
// CKR_OPERATION_ACTIVE, and the operation still signs.
#[test]
fn operation_active_after_a_repeated_init() {
    contract("operation_active_after_a_repeated_init", |t, side, s| {
        let (raw, k, h) = (&side.raw, &side.keys(), s.handle());
        let key = k.ec_priv.handle();
        let data = [7u8; 32];
        for round in 0..2 {
            t.rec(
                &format!("round {round}: sign init"),
                ck(raw.sign_init(h, raw::CKM_ECDSA, key)),
            );
            t.rec("digest init", ck(raw.digest_init(h, raw::CKM_SHA256)));
            t.rec("find init", ck(find_all_init(raw, h)));
            t.rec("sign init again", ck(raw.sign_init(h, raw::CKM_ECDSA, key)));
            let (r, n, sig) = raw.sign(h, &data, Some(64));
            t.rec("sign", (ck(r), n));
            t.rec(
                "verify",
                rv(&s.verify(&Mechanism::Ecdsa, k.ec_pub, &data, &sig)),
            );
            t.rec("sign with no operation", ck(raw.sign(h, &data, Some(64)).0));
        }
    });
}

// A length query, then the call with other data: the signature is over the
// data of the call that brought the buffer (the library may have signed
// the first data at the length query), and the operation ends there.
#[test]
fn length_query_then_other_data() {
    contract("length_query_then_other_data", |t, side, s| {
        let (raw, k, h) = (&side.raw, &side.keys(), s.handle());
        let (a, b) = ([1u8; 32], [2u8; 32]);
        for round in 0..2 {
            t.rec(
                &format!("round {round}: sign init"),
                ck(raw.sign_init(h, raw::CKM_ECDSA, k.ec_priv.handle())),
            );
            let q = raw.sign(h, &a, None);
            t.rec("length query", (ck(q.0), q.1));
            let (r, n, sig) = raw.sign(h, &b, Some(q.1));
            t.rec("sign other data", (ck(r), n));
            t.rec(
                "verifies over the other data",
                rv(&s.verify(&Mechanism::Ecdsa, k.ec_pub, &b, &sig)),
            );
            t.rec(
                "not over the first",
                rv(&s.verify(&Mechanism::Ecdsa, k.ec_pub, &a, &sig)),
            );
            t.rec("operation over", ck(raw.sign(h, &a, Some(64)).0));
        }
    });
}

// A length query, a short buffer, the real call: the same signature the
// second time an operation is started as the first, then no operation.
#[test]
fn repeated_length_query_and_short_buffer() {
    contract("repeated_length_query_and_short_buffer", |t, side, s| {
        let (raw, k, h) = (&side.raw, &side.keys(), s.handle());
        let expected = s.sign(&Mechanism::RsaPkcs, k.rsa_priv, DATA).unwrap();
        for round in 0..3 {
            t.rec(
                &format!("round {round}: sign init"),
                ck(raw.sign_init(h, raw::CKM_RSA_PKCS, k.rsa_priv.handle())),
            );
            let q = raw.sign(h, DATA, None);
            t.rec("length query", (ck(q.0), q.1));
            let q2 = raw.sign(h, DATA, None);
            t.rec("length query again", (ck(q2.0), q2.1));
            let small = raw.sign(h, DATA, Some(16));
            t.rec("short buffer", (ck(small.0), small.1));
            let real = raw.sign(h, DATA, Some(q.1));
            t.rec("sign", (ck(real.0), real.1, real.2 == expected));
            t.rec("operation over", ck(raw.sign(h, DATA, Some(256)).0));
        }
    });
}

// A decrypt length query of a ciphertext that does not decrypt is
// answered as SoftHSM answers it, and the operation goes on from there as
// SoftHSM's does, the second time as the first.
#[test]
fn decrypt_length_query_of_a_bad_ciphertext() {
    contract("decrypt_length_query_of_a_bad_ciphertext", |t, side, s| {
        let (raw, k, h) = (&side.raw, &side.keys(), s.handle());
        let bad = [0u8; 40];
        for round in 0..2 {
            let (mut iv, mut aad) = ([3u8; 12], *b"header");
            t.rec(
                &format!("round {round}: GCM decrypt init"),
                ck(raw.gcm_decrypt_init(h, k.aes.handle(), &mut iv, &mut aad)),
            );
            let q = raw.decrypt(h, &bad, None);
            t.rec("length query", (ck(q.0), q.1));
            let r = raw.decrypt(h, &bad, Some(q.1.max(1)));
            t.rec("decrypt", (ck(r.0), r.1));
            t.rec("then", ck(raw.decrypt(h, &bad, Some(64)).0));
        }
    });
}

// A held search and an operation: a search started is active for a sign
// *Init, and ended by C_FindObjectsFinal alone.
#[test]
fn search_active_for_an_init() {
    contract("search_active_for_an_init", |t, side, s| {
        let (raw, k, h) = (&side.raw, &side.keys(), s.handle());
        let key = k.ec_priv.handle();
        t.rec("sign init", ck(raw.sign_init(h, raw::CKM_ECDSA, key)));
        t.rec("sign", ck(raw.sign(h, &[1u8; 32], Some(64)).0));
        t.rec("find init", ck(find_all_init(raw, h)));
        t.rec("sign init", ck(raw.sign_init(h, raw::CKM_ECDSA, key)));
        t.rec(
            "find final",
            ck(unsafe { raw.f.C_FindObjectsFinal.unwrap()(h) }),
        );
        t.rec("sign init after", ck(raw.sign_init(h, raw::CKM_ECDSA, key)));
        t.rec("sign", ck(raw.sign(h, &[1u8; 32], Some(64)).0));
    });
}
