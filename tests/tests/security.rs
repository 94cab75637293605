//! kmsd against an attacker with a valid certificate who does not use
//! libkmsp11: every attack of the security review, replayed. Each test
//! checks the documented answer and that kmsd keeps serving others.
#![allow(clippy::undocumented_unsafe_blocks)]

use std::time::Duration;

use kmsp11_proto::mechanism::MAX_BAD_LENGTH;
use kmsp11_proto::{
    AttrQuery, AttrValue, Attribute, Body, MechParam, Mechanism, OpInit, Request, Response,
};
use kmsp11_tests::raw::*;
use kmsp11_tests::wire::{handle, Wire};
use kmsp11_tests::{Kmsd, PIN};

/// A logged-in read-write session on kms-a, on a fresh context.
fn logged_in(kmsd: &Kmsd) -> (Wire, u64) {
    let mut w = Wire::connect(kmsd);
    w.hello(None);
    let s = w.open_session(0, CKF_RW_SESSION);
    let rv = w.login(s, PIN);
    assert_eq!(rv, CKR_OK, "login: {}", rv_name(rv));
    (w, s)
}

fn attr(kind: u64, value: AttrValue) -> Attribute {
    Attribute { kind, value }
}

fn yes(kind: u64) -> Attribute {
    attr(kind, AttrValue::Bytes(vec![1]))
}

/// A session AES-256 key that may encrypt and derive.
fn aes_key(w: &mut Wire, s: u64) -> u64 {
    handle(w.call(Request::GenerateKey(kmsp11_proto::GenerateKey {
        session: s,
        mechanism: Mechanism {
            mechanism: CKM_AES_KEY_GEN,
            param: MechParam::None,
        },
        template: Some(vec![
            attr(CKA_VALUE_LEN, AttrValue::Ulong(32)),
            yes(CKA_ENCRYPT),
            yes(CKA_DERIVE),
        ]),
    })))
}

/// kmsd still answers a well-behaved client.
fn still_serving(kmsd: &Kmsd) {
    let mut w = Wire::connect(kmsd);
    w.hello(None);
    let r = w.call(Request::GetSlotList(kmsp11_proto::GetSlotList {
        token_present: true,
    }));
    assert_eq!(r.rv, CKR_OK, "kmsd stopped serving; log:\n{}", kmsd.log());
}

/// kmsd's peak resident memory, in MiB.
fn peak_mib(kmsd: &Kmsd) -> u64 {
    kmsd.status_kib("VmHWM") / 1024
}

// Expect CKR_MECHANISM_PARAM_INVALID for a parameter not in the form its
// mechanism takes: 48 raw bytes whose pIv is 0x10 once killed kmsd.
#[test]
fn gcm_parameter_with_a_raw_pointer_is_refused() {
    let kmsd = Kmsd::start();
    let (mut w, s) = logged_in(&kmsd);
    let key = aes_key(&mut w, s);
    let mut raw = vec![0u8; 48];
    raw[0] = 0x10;
    raw[8] = 12;
    for param in [
        MechParam::Bytes(raw),
        MechParam::Ulong(0x10),
        MechParam::Key(key),
        MechParam::Undescribed(48),
        MechParam::BadLength(MAX_BAD_LENGTH + 1),
    ] {
        let r = w.call(Request::EncryptInit(OpInit {
            session: s,
            mechanism: Mechanism {
                mechanism: CKM_AES_GCM,
                param: param.clone(),
            },
            key,
        }));
        assert_eq!(
            r.rv,
            CKR_MECHANISM_PARAM_INVALID,
            "{param:?} gave {}",
            rv_name(r.rv)
        );
    }
    still_serving(&kmsd);
}

// Raw bytes whose pData is an address once made kmsd derive a key from its
// own memory.
#[test]
fn derive_parameter_with_a_raw_pointer_is_refused() {
    let kmsd = Kmsd::start();
    let (mut w, s) = logged_in(&kmsd);
    let key = aes_key(&mut w, s);
    let address = (&kmsd as *const Kmsd as u64).to_le_bytes();
    let mut raw = address.to_vec();
    raw.extend_from_slice(&16u64.to_le_bytes());
    let r = w.call(Request::DeriveKey(kmsp11_proto::DeriveKey {
        session: s,
        mechanism: Mechanism {
            mechanism: CKM_AES_ECB_ENCRYPT_DATA,
            param: MechParam::Bytes(raw),
        },
        base_key: key,
        template: Some(vec![
            attr(CKA_CLASS, AttrValue::Ulong(CKO_SECRET_KEY)),
            attr(CKA_KEY_TYPE, AttrValue::Ulong(CKK_AES)),
            attr(CKA_VALUE_LEN, AttrValue::Ulong(16)),
        ]),
    }));
    assert_eq!(r.rv, CKR_MECHANISM_PARAM_INVALID, "{}", rv_name(r.rv));
    still_serving(&kmsd);
}

// A parameter for a mechanism the backend does not have is answered as
// the backend answers the mechanism itself: CKR_MECHANISM_INVALID.
#[test]
fn undescribed_parameter_of_an_unknown_mechanism_is_mechanism_invalid() {
    let kmsd = Kmsd::start();
    let (mut w, s) = logged_in(&kmsd);
    let key = aes_key(&mut w, s);
    let r = w.call(Request::EncryptInit(OpInit {
        session: s,
        mechanism: Mechanism {
            mechanism: CKM_CHACHA20,
            param: MechParam::Undescribed(32),
        },
        key,
    }));
    assert_eq!(r.rv, CKR_MECHANISM_INVALID, "{}", rv_name(r.rv));
}

// A template value in the wrong form would hand the HSM a pointer (an
// attribute array where bytes belong) or raw bytes it would follow as
// pointers (bytes where an attribute array belongs).
#[test]
fn template_values_in_the_wrong_form_are_refused() {
    let kmsd = Kmsd::start();
    let (mut w, s) = logged_in(&kmsd);
    for bad in [
        attr(CKA_VALUE, AttrValue::Template(vec![yes(CKA_TOKEN)])),
        attr(CKA_WRAP_TEMPLATE, AttrValue::Bytes(vec![0x10; 24])),
        attr(CKA_LABEL, AttrValue::Ulongs(vec![1, 2])),
    ] {
        let r = w.call(Request::CreateObject(kmsp11_proto::CreateObject {
            session: s,
            template: Some(vec![
                attr(CKA_CLASS, AttrValue::Ulong(CKO_DATA)),
                bad.clone(),
            ]),
        }));
        assert_eq!(
            r.rv,
            CKR_ATTRIBUTE_VALUE_INVALID,
            "{bad:?} gave {}",
            rv_name(r.rv)
        );
    }
    still_serving(&kmsd);
}

// One 400 KB frame nesting CKA_WRAP_TEMPLATE 20,000 levels deep, sent
// before Hello, once overflowed kmsd's stack.
#[test]
fn deeply_nested_template_closes_only_that_connection() {
    let kmsd = Kmsd::start();
    let frame = kmsp11_proto::hostile::in_envelope(
        &kmsp11_proto::hostile::deeply_nested_create_object(20_000),
    );
    // Before Hello: larger than any Hello may be.
    let mut w = Wire::connect(&kmsd);
    w.send_payload(&frame);
    assert!(w.closed_without_answer());
    // After Hello: within the frame limit, refused by the decoder.
    let mut w = Wire::connect(&kmsd);
    w.hello(None);
    w.send_payload(&frame);
    assert!(w.closed_without_answer());
    kmsd.wait_for_log(&["nested deeper"], Duration::from_secs(10));
    still_serving(&kmsd);
}

// A 584-byte request on an invalid handle once peaked at 685 MB: buffers
// follow what the object holds, and nothing comes back from a failed call.
#[test]
fn attribute_query_on_an_invalid_handle_allocates_nothing() {
    let kmsd = Kmsd::start();
    let (mut w, s) = logged_in(&kmsd);
    let before = peak_mib(&kmsd);
    for _ in 0..4 {
        let r = ask_values(&mut w, s, 0x7fff_0001, 4096);
        assert_eq!(r.rv, CKR_OBJECT_HANDLE_INVALID, "{}", rv_name(r.rv));
        assert_eq!(
            r.body,
            Body::Attributes(vec![]),
            "no answers from a failed call"
        );
    }
    let grew = peak_mib(&kmsd) - before;
    assert!(grew < 64, "kmsd's peak memory grew by {grew} MiB");
    still_serving(&kmsd);
}

/// C_GetAttributeValue asking for CKA_VALUE `n` times, claiming a 16 MiB
/// buffer each time.
fn ask_values(w: &mut Wire, session: u64, object: u64, n: usize) -> Response {
    let claim = AttrQuery {
        kind: CKA_VALUE,
        buf: Some(16 << 20),
    };
    let template = vec![claim; n];
    w.call(Request::GetAttributeValue(
        kmsp11_proto::GetAttributeValue {
            session,
            object,
            template,
        },
    ))
}

// Claims on a real object are answered from its real lengths; an answer
// that cannot fit a frame is CKR_DEVICE_MEMORY, not an abort.
#[test]
fn attribute_query_amplification_is_bounded() {
    let kmsd = Kmsd::start();
    let (mut w, s) = logged_in(&kmsd);
    let object = handle(w.call(Request::CreateObject(kmsp11_proto::CreateObject {
        session: s,
        template: Some(vec![
            attr(CKA_CLASS, AttrValue::Ulong(CKO_DATA)),
            attr(CKA_VALUE, AttrValue::Bytes(vec![7; 8192])),
        ]),
    })));
    let before = peak_mib(&kmsd);
    // 64 × 8 KiB: answered in full.
    let r = ask_values(&mut w, s, object, 64);
    assert_eq!(r.rv, CKR_OK, "{}", rv_name(r.rv));
    let Body::Attributes(a) = r.body else {
        panic!("no attributes")
    };
    assert!(a.iter().all(|x| x.len == 8192));
    // 4096 × 8 KiB = 32 MiB: more than a frame.
    let r = ask_values(&mut w, s, object, 4096);
    assert_eq!(r.rv, CKR_DEVICE_MEMORY, "{}", rv_name(r.rv));
    let grew = peak_mib(&kmsd) - before;
    assert!(grew < 96, "kmsd's peak memory grew by {grew} MiB");
    still_serving(&kmsd);
}

// An output capacity far beyond the input is checked with a length query
// first: a 16 MiB claim for a 32-byte digest allocates 32 bytes.
#[test]
fn output_claims_follow_the_modules_answer() {
    let kmsd = Kmsd::start();
    let (mut w, s) = logged_in(&kmsd);
    let before = peak_mib(&kmsd);
    for _ in 0..20 {
        let r = w.call(Request::DigestInit(kmsp11_proto::DigestInit {
            session: s,
            mechanism: Mechanism {
                mechanism: CKM_SHA256,
                param: MechParam::None,
            },
        }));
        assert_eq!(r.rv, CKR_OK);
        let r = w.call(Request::Digest(kmsp11_proto::DataOut {
            session: s,
            data: Some(b"abc".to_vec()),
            out: Some(16 << 20),
        }));
        assert_eq!(r.rv, CKR_OK, "{}", rv_name(r.rv));
        assert!(matches!(r.body, Body::Output { len: 32, data: Some(ref d) } if d.len() == 32));
    }
    let grew = peak_mib(&kmsd) - before;
    assert!(grew < 64, "kmsd's peak memory grew by {grew} MiB");
}

fn token_flags(w: &mut Wire) -> u64 {
    match w
        .call(Request::GetTokenInfo(kmsp11_proto::GetTokenInfo {
            slot: 0,
        }))
        .body
    {
        Body::TokenInfo(t) => t.flags,
        b => panic!("{b:?}"),
    }
}

// 500 wrong PINs once left the right PIN working. Expect CKF_USER_PIN_COUNT_LOW
// after a wrong PIN, CKF_USER_PIN_FINAL_TRY before the last try, then
// CKR_PIN_LOCKED and CKF_USER_PIN_LOCKED, even for the right PIN.
#[test]
fn wrong_pins_lock_the_identity_out() {
    let kmsd = Kmsd::start_edited(|t, _| kmsp11_tests::set_in(&t, "login", "max_failures = 3"));
    let mut w = Wire::connect(&kmsd);
    w.hello(None);
    let s = w.open_session(0, 0);
    assert_eq!(token_flags(&mut w) & CKF_USER_PIN_COUNT_LOW, 0);
    assert_eq!(w.login(s, "000000"), CKR_PIN_INCORRECT);
    assert_ne!(token_flags(&mut w) & CKF_USER_PIN_COUNT_LOW, 0);
    assert_eq!(w.login(s, "000001"), CKR_PIN_INCORRECT);
    assert_ne!(token_flags(&mut w) & CKF_USER_PIN_FINAL_TRY, 0);
    assert_eq!(w.login(s, "000002"), CKR_PIN_INCORRECT);
    assert_ne!(token_flags(&mut w) & CKF_USER_PIN_LOCKED, 0);
    let rv = w.login(s, PIN);
    assert_eq!(rv, CKR_PIN_LOCKED, "{}", rv_name(rv));
    // Another context of the same identity is locked out too.
    let mut w2 = Wire::connect(&kmsd);
    w2.hello(None);
    let s2 = w2.open_session(0, 0);
    assert_eq!(w2.login(s2, PIN), CKR_PIN_LOCKED);
    kmsd.wait_for_log(&["locked out", "dev-client"], Duration::from_secs(5));
}

// 32 concurrent Argon2 checks once aborted kmsd under a 4 GiB cap: checks
// run two at a time in reused memory, so memory stays flat.
#[test]
fn concurrent_pin_checks_keep_memory_flat() {
    let kmsd = Kmsd::start_edited(|t, _| {
        kmsp11_tests::set_in(
            &t,
            "login",
            "max_failures = 100000\nmax_concurrent_checks = 2",
        )
    });
    let before = peak_mib(&kmsd);
    std::thread::scope(|sc| {
        for i in 0..16 {
            let kmsd = &kmsd;
            sc.spawn(move || {
                let mut w = Wire::connect(kmsd);
                w.hello(None);
                let s = w.open_session(0, 0);
                for j in 0..6 {
                    let rv = w.login(s, &format!("{i:03}{j:03}"));
                    assert_eq!(rv, CKR_PIN_INCORRECT, "{}", rv_name(rv));
                }
            });
        }
    });
    let grew = peak_mib(&kmsd) - before;
    // Two checks of 19 MiB each, plus their threads: far below 16 × 19 MiB.
    assert!(grew < 100, "kmsd's peak memory grew by {grew} MiB");
    still_serving(&kmsd);
}

/// The dev configuration with the `stranger` certificate as a second identity.
fn with_stranger(t: &str) -> String {
    format!("{t}\n[[identity]]\nname = \"stranger\"\ntokens = [\"kms-a\"]\n")
}

// 1,012 idle connections from one identity once locked every other
// client out: each identity has its own share.
#[test]
fn connections_per_identity_leave_room_for_others() {
    let kmsd = Kmsd::start_edited(|t, _| {
        kmsp11_tests::set_in(
            &with_stranger(&t),
            "limits",
            "max_connections = 32\nmax_connections_per_identity = 8",
        )
    });
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut w = Wire::connect(&kmsd);
        w.hello(None);
        held.push(w);
    }
    let mut ninth = Wire::connect(&kmsd);
    assert!(
        ninth.try_hello(None).is_none(),
        "a ninth connection was served"
    );
    kmsd.wait_for_log(
        &["max_connections_per_identity", "dev-client"],
        Duration::from_secs(5),
    );
    let mut other = Wire::connect_as(
        &kmsd,
        &kmsd.dir.join("stranger.pem"),
        &kmsd.dir.join("stranger.key"),
    );
    other.hello(None);
    drop(held);
    // Given back when the connections close.
    std::thread::sleep(Duration::from_millis(300));
    Wire::connect(&kmsd).hello(None);
}

// 1,100 stalled TCP connections without a certificate once held kmsd's
// descriptors: handshakes in progress are bounded, per source address too.
#[test]
fn stalled_handshakes_are_bounded() {
    let kmsd = Kmsd::start_edited(|t, _| {
        kmsp11_tests::set_in(
            &t,
            "limits",
            "max_pending_handshakes = 64\nmax_pending_handshakes_per_address = 8",
        )
    });
    let stalled: Vec<_> = (0..40)
        .map(|_| kmsp11_tests::wire::silent_tcp("127.0.0.2", &kmsd.addr).unwrap())
        .collect();
    // Those beyond the per-address share are closed at once.
    let closed = stalled
        .iter()
        .filter(|t| {
            use std::io::{ErrorKind, Read};
            t.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let mut r: &std::net::TcpStream = t;
            match r.read(&mut [0u8; 1]) {
                Ok(0) => true,
                Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
                Ok(_) => false,
            }
        })
        .count();
    assert!(
        closed >= 30,
        "only {closed} of 40 stalled connections were refused"
    );
    // A client from elsewhere is served meanwhile.
    still_serving(&kmsd);
    drop(stalled);
}

// One identity once opened 100,000 sessions and 100,000 objects.
// Expect CKR_SESSION_COUNT beyond the session limit and CKR_DEVICE_MEMORY
// beyond the object limit; both are given back.
#[test]
fn sessions_and_objects_per_identity_are_bounded() {
    let kmsd = Kmsd::start_edited(|t, _| {
        kmsp11_tests::set_in(
            &t,
            "limits",
            "max_sessions_per_identity = 4\nmax_objects_per_identity = 5",
        )
    });
    let mut w = Wire::connect(&kmsd);
    w.hello(None);
    let sessions: Vec<u64> = (0..4).map(|_| w.open_session(0, 0)).collect();
    let r = w.call(Request::OpenSession(kmsp11_proto::OpenSession {
        slot: 0,
        flags: CKF_SERIAL_SESSION,
    }));
    assert_eq!(r.rv, CKR_SESSION_COUNT, "{}", rv_name(r.rv));
    let data = |i: u8| {
        Some(vec![
            attr(CKA_CLASS, AttrValue::Ulong(CKO_DATA)),
            attr(CKA_VALUE, AttrValue::Bytes(vec![i])),
        ])
    };
    for i in 0..5 {
        handle(w.call(Request::CreateObject(kmsp11_proto::CreateObject {
            session: sessions[0],
            template: data(i),
        })));
    }
    let r = w.call(Request::CreateObject(kmsp11_proto::CreateObject {
        session: sessions[1],
        template: data(9),
    }));
    assert_eq!(r.rv, CKR_DEVICE_MEMORY, "{}", rv_name(r.rv));
    // Closing the session frees both its slot and its objects.
    assert_eq!(
        w.call(Request::CloseSession(kmsp11_proto::SessionOnly {
            session: sessions[0]
        }))
        .rv,
        CKR_OK
    );
    let s = w.open_session(0, 0);
    handle(w.call(Request::CreateObject(kmsp11_proto::CreateObject {
        session: s,
        template: data(1),
    })));
}

// The first frame after the handshake had no timeout.
#[test]
fn a_silent_client_is_closed_after_the_first_frame_timeout() {
    let kmsd = Kmsd::start_edited(|t, _| {
        kmsp11_tests::set_in(&t, "listen", "first_frame_timeout_secs = 1")
    });
    let mut w = Wire::connect(&kmsd);
    assert!(w.closed_without_answer());
    kmsd.wait_for_log(&["first frame: no Hello within"], Duration::from_secs(10));
}

// A frame that promises 16 MiB and sends ten bytes holds ten bytes, and
// is dropped after the request-read timeout, naming the phase.
#[test]
fn partial_frames_hold_no_large_buffer() {
    let kmsd = Kmsd::start_edited(|t, _| {
        kmsp11_tests::set_in(&t, "listen", "request_read_timeout_secs = 2")
    });
    let before = peak_mib(&kmsd);
    let mut conns = Vec::new();
    for _ in 0..40 {
        let mut w = Wire::connect(&kmsd);
        w.hello(None);
        let mut h = kmsp11_proto::FrameHeader::new(0).unwrap().to_bytes();
        h[8..12].copy_from_slice(&kmsp11_proto::MAX_PAYLOAD.to_be_bytes());
        w.send_raw(&h);
        w.send_raw(&[0u8; 10]);
        conns.push(w);
    }
    std::thread::sleep(Duration::from_millis(500));
    let grew = peak_mib(&kmsd) - before;
    assert!(grew < 64, "kmsd's peak memory grew by {grew} MiB");
    for w in &mut conns {
        assert!(w.closed_without_answer());
    }
    kmsd.wait_for_log(
        &["request read: frame not complete within"],
        Duration::from_secs(10),
    );
}

// A certificate with SAN dev-client and CN stranger once became whichever
// identity came first in the configuration: the SAN names it.
#[test]
fn the_san_names_the_identity_not_the_cn() {
    let kmsd = Kmsd::start_edited(|t, _| with_stranger(&t));
    let (c, k) = kmsp11_tests::issue_cert(&kmsd.dir, "mixed", "stranger", &["dev-client"], 7001);
    let mut w = Wire::connect_as(&kmsd, &c, &k);
    w.hello(None);
    kmsd.wait_for_log(
        &["client connected", "identity=dev-client"],
        Duration::from_secs(5),
    );
    assert!(!kmsd.log().contains("identity=stranger"), "{}", kmsd.log());
}

// A certificate that names two configured identities is refused.
#[test]
fn a_certificate_naming_two_identities_is_refused() {
    let kmsd = Kmsd::start_edited(|t, _| with_stranger(&t));
    let (c, k) =
        kmsp11_tests::issue_cert(&kmsd.dir, "both", "x", &["dev-client", "stranger"], 7002);
    let mut w = Wire::connect_as(&kmsd, &c, &k);
    assert!(w.try_hello(None).is_none());
    kmsd.wait_for_log(&["matches several", "stranger"], Duration::from_secs(5));
    still_serving(&kmsd);
}

// Expect a certificate revoked by a CRL reloaded on SIGHUP to be refused
// at the handshake, and its live connections closed at their next request.
#[test]
fn a_revoked_certificate_is_refused_after_reload() {
    let kmsd = Kmsd::start_edited(|t, dir| {
        kmsp11_tests::write_crl(dir, &[]);
        kmsp11_tests::set_in(&with_stranger(&t), "tls", "crl = [\"crl.pem\"]")
    });
    let (c, k) = kmsp11_tests::issue_cert(&kmsd.dir, "revokee", "stranger", &[], 4242);
    let mut live = Wire::connect_as(&kmsd, &c, &k);
    live.hello(None);
    assert_eq!(
        live.call(Request::GetSlotList(kmsp11_proto::GetSlotList {
            token_present: true
        }))
        .rv,
        CKR_OK
    );
    kmsp11_tests::write_crl(&kmsd.dir, &[4242]);
    kmsd.signal(libc::SIGHUP);
    kmsd.wait_for_log(&["SIGHUP", "reloaded", "revoked=1"], Duration::from_secs(5));
    let refused = Wire::try_connect_as(&kmsd, &c, &k)
        .ok()
        .and_then(|mut w| w.try_hello(None));
    assert!(refused.is_none(), "a revoked certificate was served");
    assert!(live
        .call_with(
            99,
            false,
            Request::GetSlotList(kmsp11_proto::GetSlotList {
                token_present: true
            })
        )
        .is_none());
    kmsd.wait_for_log(&["client certificate revoked"], Duration::from_secs(5));
    still_serving(&kmsd);
}

// kmsd once started with a 0666 server key and backend PIN file.
#[test]
fn secret_files_others_may_read_stop_the_start() {
    use std::os::unix::fs::PermissionsExt;
    let mut kmsd = Kmsd::start();
    kmsd.stop();
    for file in ["server.key", "softhsm/backend-pin"] {
        let p = kmsd.dir.join(file);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (ok, out) = kmsp11_tests::run(
            std::process::Command::new(kmsp11_tests::kmsd_bin())
                .arg("--check")
                .arg("--config")
                .arg(kmsd.dir.join("kmsd.toml")),
        );
        assert!(!ok, "kmsd accepted {file} at mode 0644");
        assert!(out.contains(file) && out.contains("0644"), "{out}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

// PINs are never logged, not even at trace level.
#[test]
fn pins_never_reach_the_log() {
    let kmsd = Kmsd::start_edited_env(|t, _| t, &[("KMSD_LOG", "trace")]);
    let mut w = Wire::connect(&kmsd);
    w.hello(None);
    let s = w.open_session(0, 0);
    assert_eq!(w.login(s, "97531"), CKR_PIN_INCORRECT);
    assert_eq!(w.login(s, PIN), CKR_OK);
    let log = kmsd.log();
    assert!(log.contains("PIN incorrect"), "trace log is on");
    for secret in ["97531", "57, 55, 53", PIN, "49, 50, 51"] {
        assert!(!log.contains(secret), "the log shows {secret:?}");
    }
}

fn sign_init(session: u64, key: u64) -> Request {
    Request::SignInit(OpInit {
        session,
        mechanism: Mechanism {
            mechanism: CKM_ECDSA,
            param: MechParam::None,
        },
        key,
    })
}

fn batch(calls: Vec<Request>) -> Request {
    Request::Batch(kmsp11_proto::Batch { calls })
}

// A batch inside a batch (each level could nest another) is refused by the
// decoder: that connection closes, kmsd goes on serving.
#[test]
fn a_batch_inside_a_batch_closes_only_that_connection() {
    let kmsd = Kmsd::start();
    let (mut w, s) = logged_in(&kmsd);
    let inner = batch(vec![sign_init(s, 0x7fff_0001)]);
    let outer = batch(vec![inner]);
    // Encoded by hand: the library never builds one.
    let payload = kmsp11_proto::encode(&kmsp11_proto::Envelope {
        id: 7,
        resend: false,
        request: outer,
    })
    .unwrap();
    w.send_payload(&payload);
    assert!(w.closed_without_answer());
    kmsd.wait_for_log(&["batch inside a batch"], Duration::from_secs(10));
    still_serving(&kmsd);
}

// Batches kmsd does not run: empty, or carrying a protocol call (a Goodbye
// inside would end the context behind the batch's back).
#[test]
fn empty_batches_and_protocol_calls_inside_are_refused() {
    let kmsd = Kmsd::start();
    let (mut w, s) = logged_in(&kmsd);
    let r = w.call(batch(vec![]));
    assert_eq!(r.rv, CKR_ARGUMENTS_BAD, "empty: {}", rv_name(r.rv));
    let r = w.call(batch(vec![
        Request::GetInfo(kmsp11_proto::GetInfo),
        Request::Goodbye(kmsp11_proto::Goodbye),
    ]));
    assert_eq!(r.rv, CKR_ARGUMENTS_BAD, "Goodbye inside: {}", rv_name(r.rv));
    assert_eq!(r.body, Body::Empty, "nothing of it ran");
    // The context lives on: the session still answers.
    let r = w.call(Request::GetSessionInfo(kmsp11_proto::GetSessionInfo {
        session: s,
    }));
    assert_eq!(
        r.rv,
        CKR_OK,
        "session after the refused batch: {}",
        rv_name(r.rv)
    );
}

// A batch stops at the first call that fails: a sign whose *Init failed
// never runs (it would otherwise run on whatever operation was active).
#[test]
fn a_batch_stops_at_the_first_failure() {
    let kmsd = Kmsd::start();
    let (mut w, s) = logged_in(&kmsd);
    let sign = Request::Sign(kmsp11_proto::DataOut {
        session: s,
        data: Some(vec![1; 32]),
        out: Some(64),
    });
    let r = w.call(batch(vec![sign_init(s, 0x7fff_0001), sign]));
    assert_eq!(r.rv, CKR_OK, "{}", rv_name(r.rv));
    let Body::Batch(answers) = r.body else {
        panic!("not a batch answer: {:?}", r.body);
    };
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(
        answers[0].rv,
        CKR_OBJECT_HANDLE_INVALID,
        "{}",
        rv_name(answers[0].rv)
    );
    still_serving(&kmsd);
}
