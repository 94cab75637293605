//! The contract suite: the same sequence of PKCS#11 calls against SoftHSM
//! directly and through libkmsp11 → kmsd → SoftHSM. Each run writes a
//! transcript of observations (CK_RVs, lengths, verification outcomes,
//! deterministic outputs); the two transcripts must be equal, and each run
//! also asserts what the spec requires on its own.
#![allow(
    clippy::undocumented_unsafe_blocks,
    clippy::manual_c_str_literals,
    clippy::manual_dangling_ptr
)]

use std::path::Path;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::Error;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use kmsp11_tests::raw::{self, Raw};
use kmsp11_tests::{slot_by_label, Kmsd, PIN};

const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

/// Observations compared between the two runs, and `spec`: observations
/// where the proxy follows the spec to the letter although SoftHSM is laxer.
#[derive(Default)]
struct Transcript(Vec<String>, Vec<String>);

impl Transcript {
    fn rec(&mut self, what: &str, v: impl std::fmt::Debug) {
        self.0.push(format!("{what}: {v:?}"));
    }
}

/// The CK_RV of a cryptoki result, for the transcript.
fn rv<T>(r: &Result<T, Error>) -> String {
    match r {
        Ok(_) => "CKR_OK".into(),
        Err(Error::Pkcs11(e, _)) => format!("{e:?}"),
        Err(e) => format!("{e}"),
    }
}

#[test]
fn softhsm_direct_and_proxy_give_the_same_answers() {
    // Direct: a fresh SoftHSM store with one token.
    let tmp = tempfile::tempdir().unwrap();
    let conf = kmsp11_tests::softhsm_store(&tmp.path().join("direct"), &["dev-a"]);
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let direct = run(&kmsp11_tests::softhsm_module(), "dev-a");

    // Proxy: kmsd in dev mode over its own fresh store, virtual token kms-a.
    let kmsd = Kmsd::start();
    std::env::set_var("KMSP11_CONFIG", kmsd.client_config());
    let proxy = run(&kmsp11_tests::libkmsp11(), "kms-a");

    if let Some(dir) = std::env::var_os("KMSP11_TRANSCRIPTS") {
        std::fs::write(Path::new(&dir).join("direct.txt"), direct.0.join("\n")).unwrap();
        std::fs::write(Path::new(&dir).join("proxy.txt"), proxy.0.join("\n")).unwrap();
    }
    assert!(
        direct.0.len() > 100,
        "direct transcript too short: {}",
        direct.0.len()
    );
    for (i, (d, p)) in direct.0.iter().zip(&proxy.0).enumerate() {
        assert_eq!(
            d,
            p,
            "transcripts differ at line {i}\n kmsd log:\n{}",
            kmsd.log()
        );
    }
    assert_eq!(direct.0.len(), proxy.0.len());
    assert_eq!(
        proxy.1,
        ["UserNotLoggedIn"],
        "proxy follows the spec where SoftHSM is lax"
    );
}

fn run(module: &Path, label: &str) -> Transcript {
    let mut t = Transcript::default();
    let p = Pkcs11::new(module).unwrap();
    // Expect CKR_CRYPTOKI_NOT_INITIALIZED for any call before C_Initialize.
    t.rec("slots before init", rv(&p.get_all_slots()));
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    // Expect CKR_CRYPTOKI_ALREADY_INITIALIZED for a second C_Initialize.
    t.rec(
        "second initialize",
        rv(&p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))),
    );
    let raw = Raw::open(module);
    let slot = slot_by_label(&p, label);

    slot_and_token(&mut t, &p, &raw, slot);
    let s = p.open_rw_session(slot).unwrap();
    login(&mut t, &p, &s, slot);
    let keys = keygen(&mut t, &s);
    find(&mut t, &s);
    attributes(&mut t, &s, &raw, &keys);
    objects(&mut t, &s);
    sign_verify(&mut t, &s, &raw, &keys);
    crypt(&mut t, &s, &raw, &keys);
    digest(&mut t, &s, &raw);
    wrap(&mut t, &s, &keys);
    derive(&mut t, &s, &keys);
    random(&mut t, &s);
    rarely_used(&mut t, &s, &raw, &keys);
    always_authenticate(&mut t, &s, &raw);
    // Handles are the application's: a key found in one session works in another.
    let s2 = p.open_ro_session(slot).unwrap();
    let sig = s2.sign(&Mechanism::Ecdsa, keys.ec_priv, &[7u8; 32]);
    t.rec("sign in a second session", rv(&sig));
    t.rec(
        "verify in first session",
        rv(&s.verify(&Mechanism::Ecdsa, keys.ec_pub, &[7u8; 32], &sig.unwrap())),
    );
    drop(s2);
    logout(&mut t, &s);
    drop(s);
    t.rec("finalize", "ok");
    p.finalize().unwrap();
    t
}

fn slot_and_token(t: &mut Transcript, p: &Pkcs11, raw: &Raw, slot: Slot) {
    let ti = p.get_token_info(slot).unwrap();
    t.rec("token initialized", ti.token_initialized());
    t.rec("login required", ti.login_required());
    t.rec("user pin initialized", ti.user_pin_initialized());
    t.rec("pin lengths", (ti.min_pin_length(), ti.max_pin_length()));
    assert_eq!(ti.serial_number().len(), 16);
    // Expect CKR_SLOT_ID_INVALID for a slot that does not exist.
    let bad = Slot::try_from(0x7fff_fff0u64).unwrap();
    t.rec("token info bad slot", rv(&p.get_token_info(bad)));
    // The mechanism list and every mechanism's info.
    let mut mechs = p.get_mechanism_list(slot).unwrap();
    mechs.sort_by_key(|m| u64::from(*m));
    t.rec("mechanism count", mechs.len());
    for m in &mechs {
        let i = p.get_mechanism_info(slot, *m).unwrap();
        t.rec(
            &format!("mechanism {m}"),
            (i.min_key_size(), i.max_key_size(), format!("{i:?}")),
        );
    }
    t.rec(
        "unknown mechanism info",
        rv(&p.get_mechanism_info(
            slot,
            MechanismType::new_vendor_defined(0x8000_1234).unwrap(),
        )),
    );
    // Slot-list semantics: NULL buffer gives the count, a short one CKR_BUFFER_TOO_SMALL.
    let mut n: raw::CK_ULONG = 0;
    let r1 = unsafe { raw.f.C_GetSlotList.unwrap()(1, std::ptr::null_mut(), &mut n) };
    assert_eq!(r1, raw::CKR_OK);
    assert!(n >= 1);
    let mut one = [0 as raw::CK_ULONG; 1];
    let mut zero: raw::CK_ULONG = 0;
    let r2 = unsafe { raw.f.C_GetSlotList.unwrap()(1, one.as_mut_ptr(), &mut zero) };
    t.rec("slot list short buffer", (r2, zero == n));
    // Expect CKR_ARGUMENTS_BAD if pulCount is NULL.
    let r3 = unsafe { raw.f.C_GetSlotList.unwrap()(1, std::ptr::null_mut(), std::ptr::null_mut()) };
    t.rec("slot list NULL count", r3);
}

fn login(t: &mut Transcript, p: &Pkcs11, s: &Session, slot: Slot) {
    // Private objects are invisible before login.
    t.rec(
        "private keys before login",
        s.find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
            .map(|v| v.len()),
    );
    t.rec(
        "session state before login",
        format!("{:?}", s.get_session_info().map(|i| i.session_state())),
    );
    t.rec(
        "wrong pin",
        rv(&s.login(UserType::User, Some(&AuthPin::new("000000".into())))),
    );
    t.rec(
        "login",
        rv(&s.login(UserType::User, Some(&AuthPin::new(PIN.into())))),
    );
    t.rec(
        "login again",
        rv(&s.login(UserType::User, Some(&AuthPin::new(PIN.into())))),
    );
    t.rec(
        "session state after login",
        format!("{:?}", s.get_session_info().map(|i| i.session_state())),
    );
    let ro = p.open_ro_session(slot).unwrap();
    t.rec(
        "ro session state",
        format!("{:?}", ro.get_session_info().map(|i| i.session_state())),
    );
}

fn logout(t: &mut Transcript, s: &Session) {
    t.rec("logout", rv(&s.logout()));
    // Expect CKR_USER_NOT_LOGGED_IN from C_Logout when not logged in (SoftHSM 2.6 answers CKR_OK).
    t.1.push(rv(&s.logout()));
    t.rec(
        "private keys after logout",
        s.find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
            .map(|v| v.len()),
    );
}

struct Keys {
    rsa_pub: ObjectHandle,
    rsa_priv: ObjectHandle,
    ec_pub: ObjectHandle,
    ec_priv: ObjectHandle,
    ec2_pub: ObjectHandle,
    ec2_priv: ObjectHandle,
    ed_pub: ObjectHandle,
    ed_priv: ObjectHandle,
    aes: ObjectHandle,
    aes_small: ObjectHandle,
}

fn keygen(t: &mut Transcript, s: &Session) -> Keys {
    let pair = |m: Mechanism,
                pub_t: Vec<Attribute>,
                priv_t: Vec<Attribute>,
                t: &mut Transcript,
                what: &str| {
        let r = s.generate_key_pair(&m, &pub_t, &priv_t);
        t.rec(what, rv(&r));
        r.unwrap()
    };
    let (rsa_pub, rsa_priv) = pair(
        Mechanism::RsaPkcsKeyPairGen,
        vec![
            Attribute::Token(true),
            Attribute::ModulusBits(2048.into()),
            Attribute::PublicExponent(vec![1, 0, 1]),
            Attribute::Verify(true),
            Attribute::Encrypt(true),
            Attribute::Wrap(true),
            Attribute::Label(b"rsa".to_vec()),
            Attribute::Id(vec![1]),
        ],
        vec![
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Sign(true),
            Attribute::Decrypt(true),
            Attribute::Unwrap(true),
            Attribute::Label(b"rsa".to_vec()),
            Attribute::Id(vec![1]),
        ],
        t,
        "rsa keygen",
    );
    let ec_t = |id: u8| {
        (
            vec![
                Attribute::Token(true),
                Attribute::EcParams(P256.to_vec()),
                Attribute::Verify(true),
                Attribute::Id(vec![id]),
            ],
            vec![
                Attribute::Token(true),
                Attribute::Sign(true),
                Attribute::Derive(true),
                Attribute::Sensitive(true),
                Attribute::Id(vec![id]),
            ],
        )
    };
    let (a, b) = ec_t(2);
    let (ec_pub, ec_priv) = pair(Mechanism::EccKeyPairGen, a, b, t, "ec keygen");
    // A session EC key pair (Java's habit): empty private template.
    pair(
        Mechanism::EccKeyPairGen,
        vec![Attribute::EcParams(P256.to_vec())],
        vec![],
        t,
        "ec session keygen, empty private template",
    );
    let (ec2_pub, ec2_priv) = pair(
        Mechanism::EccKeyPairGen,
        vec![Attribute::EcParams(P256.to_vec()), Attribute::Verify(true)],
        vec![Attribute::Sign(true), Attribute::Derive(true)],
        t,
        "ec session keygen",
    );
    let (ed_pub, ed_priv) = pair(
        Mechanism::EccEdwardsKeyPairGen,
        vec![
            Attribute::Token(true),
            Attribute::EcParams(ED25519.to_vec()),
            Attribute::Verify(true),
        ],
        vec![Attribute::Token(true), Attribute::Sign(true)],
        t,
        "ed25519 keygen",
    );
    let aes = s.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Token(true),
            Attribute::ValueLen(32.into()),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(true),
            Attribute::Unwrap(true),
            Attribute::Extractable(true),
            Attribute::Label(b"aes".to_vec()),
        ],
    );
    t.rec("aes keygen", rv(&aes));
    let aes_small = s.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Token(false),
            Attribute::ValueLen(16.into()),
            Attribute::Encrypt(true),
            Attribute::Extractable(true),
            Attribute::Sensitive(false),
        ],
    );
    t.rec("aes-128 session keygen", rv(&aes_small));
    Keys {
        rsa_pub,
        rsa_priv,
        ec_pub,
        ec_priv,
        ec2_pub,
        ec2_priv,
        ed_pub,
        ed_priv,
        aes: aes.unwrap(),
        aes_small: aes_small.unwrap(),
    }
}

fn find(t: &mut Transcript, s: &Session) {
    for i in 0..40u8 {
        s.create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(i % 2 == 0),
            Attribute::Label(format!("data-{i}").into_bytes()),
            Attribute::Value(vec![i; 8]),
        ])
        .unwrap();
    }
    // Clients loop until a batch comes back short: the count must not depend on the batch size.
    for batch in [1u64, 16, 100] {
        let n = s
            .iter_objects_with_cache_size(
                &[Attribute::Class(ObjectClass::DATA)],
                std::num::NonZeroUsize::new(batch as usize).unwrap(),
            )
            .map(|it| it.count());
        t.rec(&format!("find data objects, batch {batch}"), n);
    }
    t.rec(
        "find by label",
        s.find_objects(&[Attribute::Label(b"data-7".to_vec())])
            .map(|v| v.len()),
    );
    t.rec(
        "find nothing",
        s.find_objects(&[Attribute::Label(b"no such".to_vec())])
            .map(|v| v.len()),
    );
    t.rec(
        "find token keys",
        s.find_objects(&[
            Attribute::Token(true),
            Attribute::Class(ObjectClass::PRIVATE_KEY),
        ])
        .map(|v| v.len()),
    );
}

fn attributes(t: &mut Transcript, s: &Session, raw: &Raw, k: &Keys) {
    let h = s.handle();
    // Multi-attribute size query on a private key: CKA_VALUE is sensitive,
    // the vendor attribute invalid; the others still get their lengths.
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
        (rv1, a1.iter().map(|x| x.0).collect::<Vec<_>>()),
    );
    // The same with buffers: the valid ones are filled.
    let q2: Vec<_> = a1
        .iter()
        .zip(q.iter())
        .map(|((len, _), (k, _))| {
            (
                *k,
                Some(if *len == raw::CK_UNAVAILABLE_INFORMATION {
                    8
                } else {
                    *len as usize
                }),
            )
        })
        .collect();
    let (rv2, a2) = raw.attributes(h, k.rsa_priv.handle(), &q2);
    t.rec("multi fetch rv", rv2);
    t.rec(
        "multi fetch class/keytype/id",
        (a2[0].1.clone(), a2[1].1.clone(), a2[5].1.clone()),
    );
    assert_eq!(a2[2].1.as_ref().map(|m| m.len()), Some(256));
    let (_, pubmod) = raw.attributes(h, k.rsa_pub.handle(), &[(raw::CKA_MODULUS, Some(256))]);
    assert_eq!(
        pubmod[0].1, a2[2].1,
        "public and private modulus must match"
    );
    // A buffer too small: CKR_BUFFER_TOO_SMALL with the needed length.
    let (rv3, a3) = raw.attributes(
        h,
        k.rsa_pub.handle(),
        &[(raw::CKA_MODULUS, Some(10)), (raw::CKA_CLASS, Some(8))],
    );
    t.rec("short buffer", (rv3, a3[0].0, a3[1].1.clone()));
    // EC point on the private key is invalid (libp11 then reads the public key).
    let (rv4, a4) = raw.attributes(h, k.ec_priv.handle(), &[(raw::CKA_EC_POINT, None)]);
    t.rec("ec point on private key", (rv4, a4[0].0));
    let (rv5, a5) = raw.attributes(
        h,
        k.ec_pub.handle(),
        &[(raw::CKA_EC_POINT, None), (raw::CKA_EC_PARAMS, Some(64))],
    );
    t.rec("ec public attributes", (rv5, a5[0].0, a5[1].1.clone()));
    // Typed reads through cryptoki.
    let attrs = s.get_attributes(
        k.aes,
        &[
            AttributeType::ValueLen,
            AttributeType::KeyType,
            AttributeType::Sensitive,
            AttributeType::Extractable,
            AttributeType::Token,
        ],
    );
    t.rec("aes attributes", attrs.map(|v| format!("{v:?}")));
    let ed = s.get_attributes(
        k.ed_priv,
        &[AttributeType::KeyType, AttributeType::EcParams],
    );
    t.rec("ed25519 attributes", ed.map(|v| format!("{v:?}")));
    // Unknown object handle.
    let (rv6, _) = raw.attributes(h, 0x7fff_0001, &[(raw::CKA_CLASS, Some(8))]);
    t.rec("unknown handle", rv6);
    t.rec("key types", (KeyType::RSA, KeyType::EC));
}

fn objects(t: &mut Transcript, s: &Session) {
    let o = s.create_object(&[
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(false),
        Attribute::Label(b"obj".to_vec()),
        Attribute::Application(b"kmsp11".to_vec()),
        Attribute::Value(b"hello".to_vec()),
    ]);
    t.rec("create", rv(&o));
    let o = o.unwrap();
    let c = s.copy_object(o, &[Attribute::Label(b"copy".to_vec())]);
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
    // A certificate object, as NSS and pkcs11-tool write them.
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
    // Empty template: CKR_TEMPLATE_INCOMPLETE from the backend.
    t.rec("create empty", rv(&s.create_object(&[])));
}

fn sign_verify(t: &mut Transcript, s: &Session, raw: &Raw, k: &Keys) {
    let data = b"the quick brown fox".to_vec();
    let pss = PkcsPssParams {
        hash_alg: MechanismType::SHA256,
        mgf: PkcsMgfType::MGF1_SHA256,
        s_len: 32.into(),
    };
    let cases: Vec<(&str, Mechanism, ObjectHandle, ObjectHandle, Vec<u8>)> = vec![
        (
            "RSA-PKCS",
            Mechanism::RsaPkcs,
            k.rsa_priv,
            k.rsa_pub,
            data.clone(),
        ),
        (
            "SHA256-RSA-PKCS",
            Mechanism::Sha256RsaPkcs,
            k.rsa_priv,
            k.rsa_pub,
            data.clone(),
        ),
        (
            "SHA256-RSA-PKCS-PSS",
            Mechanism::Sha256RsaPkcsPss(pss),
            k.rsa_priv,
            k.rsa_pub,
            data.clone(),
        ),
        (
            "RSA-PKCS-PSS",
            Mechanism::RsaPkcsPss(pss),
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
            data.clone(),
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
    // RSA PKCS#1 v1.5 is deterministic: the signature is a function of key and data.
    let a = s.sign(&Mechanism::RsaPkcs, k.rsa_priv, &data).unwrap();
    let b = s.sign(&Mechanism::RsaPkcs, k.rsa_priv, &data).unwrap();
    assert_eq!(a, b);
    // Multi-part: 100 KB in 1 KiB chunks, as pkcs11-tool does.
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
    // Length query then too-small buffer then the real call, all on one operation.
    let h = s.handle();
    t.rec(
        "raw sign init",
        raw.sign_init(h, raw::CKM_RSA_PKCS, k.rsa_priv.handle()),
    );
    let q = raw.sign(h, &data, None);
    t.rec("sign NULL query", (q.0, q.1));
    let small = raw.sign(h, &data, Some(16));
    t.rec("sign short buffer", (small.0, small.1));
    let real = raw.sign(h, &data, Some(q.1));
    t.rec("sign after queries", (real.0, real.1, real.2 == a));
    t.rec("sign with no operation", raw.sign(h, &data, Some(256)).0);
    // Unsupported by SoftHSM: CKM_ECDSA_SHA256 must come back as SoftHSM says.
    t.rec(
        "ECDSA-SHA256 init",
        rv(&s.sign_init(&Mechanism::EcdsaSha256, k.ec_priv)),
    );
}

fn crypt(t: &mut Transcript, s: &Session, raw: &Raw, k: &Keys) {
    let msg = b"attack at dawn, bring snacks".to_vec();
    let iv = [7u8; 16];
    let ct = s.encrypt(&Mechanism::AesCbcPad(iv), k.aes, &msg);
    t.rec(
        "AES-CBC-PAD encrypt",
        rv(&ct).clone() + &format!(" len {}", ct.as_ref().map(|c| c.len()).unwrap_or(0)),
    );
    let pt = s.decrypt(&Mechanism::AesCbcPad(iv), k.aes, &ct.unwrap());
    t.rec(
        "AES-CBC-PAD round trip",
        pt.as_ref().map(|p| *p == msg).map_err(|e| e.to_string()),
    );
    // Multi-part CBC-PAD, as Java does.
    s.encrypt_init(&Mechanism::AesCbcPad(iv), k.aes).unwrap();
    let mut c2 = s.encrypt_update(&msg[..10]).unwrap();
    c2.extend(s.encrypt_update(&msg[10..]).unwrap());
    c2.extend(s.encrypt_final().unwrap());
    t.rec(
        "multi-part CBC-PAD equals single-part",
        c2 == s.encrypt(&Mechanism::AesCbcPad(iv), k.aes, &msg).unwrap(),
    );
    // GCM with ulIvBits (48 bytes), then without (40 bytes) as Java 17 tries first.
    let h = s.handle();
    for with_bits in [true, false] {
        let mut iv12 = [3u8; 12];
        let mut aad = *b"header";
        let r = raw.gcm_encrypt_init(h, k.aes.handle(), &mut iv12, &mut aad, with_bits);
        t.rec(&format!("GCM init, ulIvBits layout {with_bits}"), r);
        if r == raw::CKR_OK {
            let (r2, c) = raw.encrypt(h, &msg);
            t.rec("GCM encrypt", (r2, c.len()));
            let mut ivd = [3u8; 12];
            let p = s.decrypt(
                &Mechanism::AesGcm(
                    cryptoki::mechanism::aead::GcmParams::new(&mut ivd, b"header", 128.into())
                        .unwrap(),
                ),
                k.aes,
                &c,
            );
            t.rec(
                "GCM decrypt",
                p.map(|p| p == msg).map_err(|e| e.to_string()),
            );
        }
    }
    // RSA-OAEP with SHA-1 (SoftHSM 2.6 supports only SHA-1 OAEP) and with SHA-256 (refused).
    let oaep = PkcsOaepParams::new(
        MechanismType::SHA1,
        PkcsMgfType::MGF1_SHA1,
        PkcsOaepSource::empty(),
    );
    let c = s.encrypt(&Mechanism::RsaPkcsOaep(oaep), k.rsa_pub, &msg);
    t.rec("OAEP encrypt", rv(&c));
    let p = s.decrypt(&Mechanism::RsaPkcsOaep(oaep), k.rsa_priv, &c.unwrap());
    t.rec(
        "OAEP round trip",
        p.map(|p| p == msg).map_err(|e| e.to_string()),
    );
    let oaep256 = PkcsOaepParams::new(
        MechanismType::SHA256,
        PkcsMgfType::MGF1_SHA256,
        PkcsOaepSource::empty(),
    );
    t.rec(
        "OAEP SHA-256",
        rv(&s.encrypt(&Mechanism::RsaPkcsOaep(oaep256), k.rsa_pub, &msg)),
    );
    let c = s.encrypt(&Mechanism::RsaPkcs, k.rsa_pub, &msg).unwrap();
    t.rec(
        "RSA-PKCS round trip",
        s.decrypt(&Mechanism::RsaPkcs, k.rsa_priv, &c)
            .map(|p| p == msg)
            .map_err(|e| e.to_string()),
    );
    // Garbage ciphertext: whatever SoftHSM says, the proxy says.
    t.rec(
        "RSA-PKCS garbage",
        rv(&s.decrypt(&Mechanism::RsaPkcs, k.rsa_priv, &[5u8; 256])),
    );
    t.rec(
        "CBC-PAD wrong length",
        rv(&s.decrypt(&Mechanism::AesCbcPad(iv), k.aes, &[5u8; 17])),
    );
}

fn digest(t: &mut Transcript, s: &Session, raw: &Raw) {
    let d = s.digest(&Mechanism::Sha256, b"abc");
    t.rec(
        "sha256(abc)",
        d.as_ref()
            .map(|d| d.iter().map(|b| format!("{b:02x}")).collect::<String>())
            .map_err(|e| e.to_string()),
    );
    t.rec(
        "sha1(abc)",
        s.digest(&Mechanism::Sha1, b"abc")
            .map_err(|e| e.to_string()),
    );
    // pkcs11-tool --test: too small, then NULL, then real, on one operation.
    let h = s.handle();
    t.rec("digest init", raw.digest_init(h, raw::CKM_SHA256));
    let small = raw.digest(h, b"abc", Some(4));
    t.rec("digest short buffer", (small.0, small.1));
    let q = raw.digest(h, b"abc", None);
    t.rec("digest NULL query", (q.0, q.1));
    let real = raw.digest(h, b"abc", Some(32));
    t.rec("digest real", (real.0, real.2 == d.unwrap()));
    t.rec("digest after completion", raw.digest(h, b"abc", Some(32)).0);
    // Multi-part.
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
}

fn wrap(t: &mut Transcript, s: &Session, k: &Keys) {
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
    let u = u.unwrap();
    let a = s
        .encrypt(&Mechanism::AesEcb, k.aes_small, &[1u8; 16])
        .unwrap();
    let b = s.encrypt(&Mechanism::AesEcb, u, &[1u8; 16]).unwrap();
    t.rec("unwrapped key equals original", a == b);
    let pad = s.wrap_key(&Mechanism::AesKeyWrapPad, k.aes, k.aes_small);
    t.rec("AES-KEY-WRAP-PAD", rv(&pad));
    let r = s.wrap_key(&Mechanism::RsaPkcs, k.rsa_pub, k.aes_small);
    t.rec("RSA-PKCS wrap", rv(&r));
    // Wrapping a non-extractable key is refused by the backend.
    t.rec(
        "wrap sensitive private key",
        rv(&s.wrap_key(&Mechanism::AesKeyWrapPad, k.aes, k.rsa_priv)),
    );
}

fn derive(t: &mut Transcript, s: &Session, k: &Keys) {
    let point = |h: ObjectHandle| match s
        .get_attributes(h, &[AttributeType::EcPoint])
        .unwrap()
        .remove(0)
    {
        Attribute::EcPoint(p) => p[2..].to_vec(), // strip the DER OCTET STRING header: raw 04||X||Y
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
    let p2 = point(k.ec2_pub);
    let p1 = point(k.ec_pub);
    let a = s.derive_key(
        &Mechanism::Ecdh1Derive(Ecdh1DeriveParams::new(EcKdf::null(), &p2)),
        k.ec_priv,
        &tmpl,
    );
    let b = s.derive_key(
        &Mechanism::Ecdh1Derive(Ecdh1DeriveParams::new(EcKdf::null(), &p1)),
        k.ec2_priv,
        &tmpl,
    );
    t.rec("ECDH derive", (rv(&a), rv(&b)));
    let v = |h| {
        s.get_attributes(h, &[AttributeType::Value])
            .map(|v| format!("{v:?}"))
            .unwrap()
    };
    t.rec("ECDH both sides agree", v(a.unwrap()) == v(b.unwrap()));
    t.rec(
        "ECDH bad point",
        rv(&s.derive_key(
            &Mechanism::Ecdh1Derive(Ecdh1DeriveParams::new(EcKdf::null(), &[4u8; 65])),
            k.ec_priv,
            &tmpl,
        )),
    );
}

fn random(t: &mut Transcript, s: &Session) {
    let mut a = [0u8; 32];
    let mut b = [0u8; 32];
    t.rec("random", rv(&s.generate_random_slice(&mut a)));
    s.generate_random_slice(&mut b).unwrap();
    assert_ne!(a, b);
    t.rec("seed", rv(&s.seed_random(b"entropy")));
}

/// The functions no studied client calls: each must answer exactly what the
/// backend answers (SoftHSM's CKR_FUNCTION_NOT_SUPPORTED included).
/// A key with CKA_ALWAYS_AUTHENTICATE: each use needs a context-specific
/// login between C_SignInit and C_Sign (PKCS#11 3.0 §4.9, §5.6).
fn always_authenticate(t: &mut Transcript, s: &Session, raw: &Raw) {
    let (_, key) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[Attribute::EcParams(P256.to_vec()), Attribute::Verify(true)],
            &[Attribute::Sign(true), Attribute::AlwaysAuthenticate(true)],
        )
        .unwrap();
    let h = s.handle();
    let login = |pin: &str| unsafe {
        raw.f.C_Login.unwrap()(
            h,
            raw::CKU_CONTEXT_SPECIFIC,
            pin.as_ptr() as *mut u8,
            pin.len() as _,
        )
    };
    t.rec(
        "always-authenticate sign init",
        raw.sign_init(h, raw::CKM_ECDSA, key.handle()),
    );
    // Expect CKR_PIN_INCORRECT for a wrong PIN; the operation stays.
    t.rec("context-specific login, wrong pin", login("000000"));
    t.rec("context-specific login", login(PIN));
    let (rv, n, _) = raw.sign(h, &[1u8; 32], Some(64));
    t.rec("always-authenticate sign", (rv, n));
    // The next use needs its own login.
    t.rec(
        "sign init again",
        raw.sign_init(h, raw::CKM_ECDSA, key.handle()),
    );
    let (rv, _, _) = raw.sign(h, &[1u8; 32], Some(64));
    t.rec("sign without context-specific login", rv);
}

fn rarely_used(t: &mut Transcript, s: &Session, raw: &Raw, k: &Keys) {
    let f = raw.f;
    let h = s.handle();
    let mut buf = [0u8; 512];
    let mut n: raw::CK_ULONG = buf.len() as raw::CK_ULONG;
    let mut m = raw::CK_MECHANISM {
        mechanism: raw::CKM_RSA_PKCS,
        pParameter: std::ptr::null_mut(),
        ulParameterLen: 0,
    };
    let mut sha = raw::CK_MECHANISM {
        mechanism: raw::CKM_SHA256,
        pParameter: std::ptr::null_mut(),
        ulParameterLen: 0,
    };
    unsafe {
        t.rec("C_GetFunctionStatus", f.C_GetFunctionStatus.unwrap()(h));
        t.rec("C_CancelFunction", f.C_CancelFunction.unwrap()(h));
        t.rec(
            "C_GetOperationState",
            f.C_GetOperationState.unwrap()(h, std::ptr::null_mut(), &mut n),
        );
        t.rec(
            "C_SetOperationState",
            f.C_SetOperationState.unwrap()(h, buf.as_mut_ptr(), 16, 0, 0),
        );
        let mut size: raw::CK_ULONG = 0;
        t.rec(
            "C_GetObjectSize",
            f.C_GetObjectSize.unwrap()(h, k.rsa_pub.handle(), &mut size),
        );
        t.rec(
            "C_SignRecoverInit",
            f.C_SignRecoverInit.unwrap()(h, &mut m, k.rsa_priv.handle()),
        );
        n = buf.len() as raw::CK_ULONG;
        t.rec(
            "C_SignRecover",
            f.C_SignRecover.unwrap()(h, buf.as_mut_ptr(), 4, buf.as_mut_ptr(), &mut n),
        );
        t.rec(
            "C_VerifyRecoverInit",
            f.C_VerifyRecoverInit.unwrap()(h, &mut m, k.rsa_pub.handle()),
        );
        n = buf.len() as raw::CK_ULONG;
        t.rec(
            "C_VerifyRecover",
            f.C_VerifyRecover.unwrap()(h, buf.as_mut_ptr(), 256, buf.as_mut_ptr(), &mut n),
        );
        t.rec(
            "C_DigestInit for C_DigestKey",
            f.C_DigestInit.unwrap()(h, &mut sha),
        );
        t.rec(
            "C_DigestKey (extractable AES key)",
            f.C_DigestKey.unwrap()(h, k.aes_small.handle()),
        );
        n = 32;
        t.rec(
            "C_DigestFinal after C_DigestKey",
            f.C_DigestFinal.unwrap()(h, buf.as_mut_ptr(), &mut n),
        );
        for (name, call) in [
            ("C_DigestEncryptUpdate", f.C_DigestEncryptUpdate.unwrap()),
            ("C_DecryptDigestUpdate", f.C_DecryptDigestUpdate.unwrap()),
            ("C_SignEncryptUpdate", f.C_SignEncryptUpdate.unwrap()),
            ("C_DecryptVerifyUpdate", f.C_DecryptVerifyUpdate.unwrap()),
        ] {
            n = 16;
            t.rec(
                name,
                call(h, buf.as_mut_ptr(), 16, buf.as_mut_ptr().add(256), &mut n),
            );
        }
        let mut slot: raw::CK_SLOT_ID = 0;
        t.rec(
            "C_WaitForSlotEvent(CKF_DONT_BLOCK)",
            f.C_WaitForSlotEvent.unwrap()(raw::CKF_DONT_BLOCK, &mut slot, std::ptr::null_mut()),
        );
    }
}
