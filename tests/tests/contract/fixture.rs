//! The shared fixture: SoftHSM direct (a fresh store, token `dev-a`) and the
//! proxy (kmsd in dev mode, virtual token `kms-a`), each initialised and
//! logged in once per test run, with the keys most cases use made once.
//! Cases run one at a time: login state is the application's, and some
//! cases log out and in again.

use std::path::Path;
use std::sync::{Mutex, OnceLock};

use cryptoki::context::Pkcs11;
use cryptoki::error::Error;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use kmsp11_tests::raw::Raw;
use kmsp11_tests::{slot_by_label, Kmsd};

pub use kmsp11_tests::{ED25519, P256};

/// One module as a case sees it.
pub struct Side {
    pub name: &'static str,
    pub p: Pkcs11,
    pub raw: Raw,
    pub slot: Slot,
    keys: Mutex<Keys>,
    /// Keeps the application logged in and the session keys alive.
    _anchor: Session,
}

#[derive(Debug, Clone, Copy)]
pub struct Keys {
    pub rsa_pub: ObjectHandle,
    pub rsa_priv: ObjectHandle,
    pub ec_pub: ObjectHandle,
    pub ec_priv: ObjectHandle,
    pub ec2_pub: ObjectHandle,
    pub ec2_priv: ObjectHandle,
    pub ed_pub: ObjectHandle,
    pub ed_priv: ObjectHandle,
    pub aes: ObjectHandle,
    pub aes_small: ObjectHandle,
}

struct Fixture {
    direct: Side,
    proxy: Side,
    one_at_a_time: Mutex<()>,
    _kmsd: Kmsd,
    _tmp: tempfile::TempDir,
}

// SAFETY: the fixture's sessions (cryptoki's `Session` is not `Sync`) are
// only used by the case holding `one_at_a_time`.
unsafe impl Sync for Fixture {}
// SAFETY: as above; a `Session` may move between threads.
unsafe impl Send for Fixture {}

/// What a case observes: CK_RVs, lengths, outcomes. `spec` holds
/// observations where the proxy follows the spec to the letter although
/// SoftHSM is laxer; they are not compared.
#[derive(Default)]
pub struct Transcript {
    pub seen: Vec<String>,
    pub spec: Vec<String>,
}

impl Transcript {
    pub fn rec(&mut self, what: &str, v: impl std::fmt::Debug) {
        self.seen.push(format!("{what}: {v:?}"));
    }
}

/// A cryptoki result's CK_RV by name, for the transcript.
pub fn rv<T>(r: &Result<T, Error>) -> String {
    match r {
        Ok(_) => "CKR_OK".into(),
        Err(Error::Pkcs11(e, _)) => format!("{e:?}"),
        Err(e) => format!("{e}"),
    }
}

/// A raw CK_RV by its name, for the transcript.
pub fn ck(rv: u64) -> String {
    kmsp11_tests::raw::rv_name(rv)
}

/// Runs a case against SoftHSM direct and through the proxy, each in a new
/// read-write session, and checks that the two transcripts are equal.
/// Returns the proxy's transcript (for its `spec` observations).
pub fn contract(case: &str, f: impl Fn(&mut Transcript, &Side, &Session)) -> Transcript {
    let fx = fixture();
    let _one = fx.one_at_a_time.lock().unwrap_or_else(|e| e.into_inner());
    let run = |side: &Side| {
        let mut t = Transcript::default();
        let s = side.p.open_rw_session(side.slot).unwrap();
        f(&mut t, side, &s);
        assert!(
            !t.seen.is_empty(),
            "{case}: nothing observed on {}",
            side.name
        );
        t
    };
    let direct = run(&fx.direct);
    let proxy = run(&fx.proxy);
    if let Some(dir) = std::env::var_os("KMSP11_TRANSCRIPTS") {
        let dir = Path::new(&dir);
        std::fs::write(
            dir.join(format!("{case}.direct.txt")),
            direct.seen.join("\n"),
        )
        .unwrap();
        std::fs::write(dir.join(format!("{case}.proxy.txt")), proxy.seen.join("\n")).unwrap();
    }
    for (i, (d, p)) in direct.seen.iter().zip(&proxy.seen).enumerate() {
        assert_eq!(
            d, p,
            "{case}: SoftHSM direct and the proxy differ at observation {i}"
        );
    }
    assert_eq!(
        direct.seen.len(),
        proxy.seen.len(),
        "{case}: transcripts of different lengths"
    );
    proxy
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let conf = kmsp11_tests::softhsm_store(&tmp.path().join("direct"), &["dev-a"]);
        std::env::set_var("SOFTHSM2_CONF", &conf);
        let direct = side("SoftHSM direct", &kmsp11_tests::softhsm_module(), "dev-a");
        let kmsd = Kmsd::start();
        std::env::set_var("KMSP11_CONFIG", kmsd.client_config());
        let proxy = side("proxy", &kmsp11_tests::libkmsp11(), "kms-a");
        Fixture {
            direct,
            proxy,
            one_at_a_time: Mutex::new(()),
            _kmsd: kmsd,
            _tmp: tmp,
        }
    })
}

fn side(name: &'static str, module: &Path, label: &str) -> Side {
    let p = kmsp11_tests::initialized(module);
    let raw = Raw::open(module);
    let slot = slot_by_label(&p, label);
    let anchor = kmsp11_tests::user_session(&p, slot);
    let keys = keys(&anchor);
    Side {
        name,
        p,
        raw,
        slot,
        keys: Mutex::new(keys),
        _anchor: anchor,
    }
}

impl Side {
    /// The fixture's keys (handles as this module gives them now).
    pub fn keys(&self) -> Keys {
        *self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Restores the fixture's keys after a case logged out and in again.
    /// A logout invalidates the application's handles to private objects
    /// and destroys its private session objects (PKCS#11 3.0 §5.6): the
    /// token keys are found again by label, the session keys made anew.
    pub fn restore_keys(&self) {
        let s = &self._anchor;
        let find = |label: &str, class: ObjectClass| {
            let found = s
                .find_objects(&[
                    Attribute::Label(label.as_bytes().to_vec()),
                    Attribute::Class(class),
                ])
                .unwrap();
            assert_eq!(found.len(), 1, "{}: fixture key {label}", self.name);
            found[0]
        };
        use ObjectClass as C;
        let (ec2_pub, ec2_priv, aes_small) = session_keys(s);
        *self.keys.lock().unwrap_or_else(|e| e.into_inner()) = Keys {
            rsa_pub: find("rsa", C::PUBLIC_KEY),
            rsa_priv: find("rsa", C::PRIVATE_KEY),
            ec_pub: find("ec", C::PUBLIC_KEY),
            ec_priv: find("ec", C::PRIVATE_KEY),
            ec2_pub,
            ec2_priv,
            ed_pub: find("ed", C::PUBLIC_KEY),
            ed_priv: find("ed", C::PRIVATE_KEY),
            aes: find("aes", C::SECRET_KEY),
            aes_small,
        };
    }
}

/// The keys most cases use: token RSA, EC and Ed25519 pairs and an AES-256
/// key, a session EC pair and a session AES-128 key.
fn keys(s: &Session) -> Keys {
    let pair = |m: Mechanism, pu: Vec<Attribute>, pr: Vec<Attribute>| {
        s.generate_key_pair(&m, &pu, &pr).unwrap()
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
    );
    let (ec_pub, ec_priv) = pair(
        Mechanism::EccKeyPairGen,
        vec![
            Attribute::Token(true),
            Attribute::EcParams(P256.to_vec()),
            Attribute::Verify(true),
            Attribute::Id(vec![2]),
            Attribute::Label(b"ec".to_vec()),
        ],
        vec![
            Attribute::Token(true),
            Attribute::Sign(true),
            Attribute::Derive(true),
            Attribute::Sensitive(true),
            Attribute::Id(vec![2]),
            Attribute::Label(b"ec".to_vec()),
        ],
    );
    let (ed_pub, ed_priv) = pair(
        Mechanism::EccEdwardsKeyPairGen,
        vec![
            Attribute::Token(true),
            Attribute::EcParams(ED25519.to_vec()),
            Attribute::Verify(true),
            Attribute::Label(b"ed".to_vec()),
        ],
        vec![
            Attribute::Token(true),
            Attribute::Sign(true),
            Attribute::Label(b"ed".to_vec()),
        ],
    );
    let aes = s
        .generate_key(
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
        )
        .unwrap();
    let (ec2_pub, ec2_priv, aes_small) = session_keys(s);
    Keys {
        rsa_pub,
        rsa_priv,
        ec_pub,
        ec_priv,
        ec2_pub,
        ec2_priv,
        ed_pub,
        ed_priv,
        aes,
        aes_small,
    }
}

/// The session keys (private session objects): a P-256 pair and an
/// extractable AES-128 key.
fn session_keys(s: &Session) -> (ObjectHandle, ObjectHandle, ObjectHandle) {
    let pair = |m: Mechanism, pu: Vec<Attribute>, pr: Vec<Attribute>| {
        s.generate_key_pair(&m, &pu, &pr).unwrap()
    };
    let (ec2_pub, ec2_priv) = pair(
        Mechanism::EccKeyPairGen,
        vec![
            Attribute::EcParams(P256.to_vec()),
            Attribute::Verify(true),
            Attribute::Label(b"ec2".to_vec()),
        ],
        vec![
            Attribute::Sign(true),
            Attribute::Derive(true),
            Attribute::Label(b"ec2".to_vec()),
        ],
    );
    let aes_small = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(false),
                Attribute::ValueLen(16.into()),
                Attribute::Encrypt(true),
                Attribute::Extractable(true),
                Attribute::Sensitive(false),
                Attribute::Label(b"aes-small".to_vec()),
            ],
        )
        .unwrap();
    (ec2_pub, ec2_priv, aes_small)
}
