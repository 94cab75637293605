//! The audit log as a user meets it: every call is a record, `kmsd audit verify` passes on the log kmsd wrote and names the
//! record after an edit, and kmsd refuses operations while the log cannot
//! be written, then recovers by itself.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kmsp11_proto::Request;
use kmsp11_tests::raw::rv_name;
use kmsp11_tests::wire::Wire;
use kmsp11_tests::{kmsd_bin, run, Kmsd};

/// `kmsd audit verify` on `files` with the dev signing key: (success, output).
fn verify(kmsd: &Kmsd, files: &[&Path]) -> (bool, String) {
    run(Command::new(kmsd_bin())
        .args(["audit", "verify", "--signing-key"])
        .arg(kmsd.dir.join("audit-signing.key"))
        .args(files))
}

/// A few calls on the wire: a session and a digest.
fn some_calls(kmsd: &Kmsd) {
    let mut w = Wire::connect(kmsd);
    w.hello(None);
    let s = w.open_session(0, 0);
    let r = w.call(Request::DigestInit(kmsp11_proto::DigestInit {
        session: s,
        mechanism: kmsp11_proto::Mechanism {
            mechanism: pkcs11_sys::CKM_SHA256,
            param: kmsp11_proto::MechParam::None,
        },
    }));
    assert_eq!(r.rv, 0, "C_DigestInit: {}", rv_name(r.rv));
}

fn records(kmsd: &Kmsd) -> Vec<serde_json::Value> {
    std::fs::read_to_string(kmsd.dir.join("audit.log"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

// Each call is one record naming the identity, the call and its CK_RV by
// name, and the log kmsd wrote verifies with its key.
#[test]
fn every_call_is_a_record_and_the_chain_verifies() {
    let kmsd = Kmsd::start();
    some_calls(&kmsd);
    let calls: Vec<_> = records(&kmsd)
        .into_iter()
        .filter(|r| r["op"].is_string())
        .collect();
    let ops: Vec<&str> = calls.iter().map(|r| r["op"].as_str().unwrap()).collect();
    assert!(ops.ends_with(&["C_OpenSession", "C_DigestInit"]), "{ops:?}");
    let last = calls.last().unwrap();
    assert_eq!(last["identity"], "dev-client");
    assert_eq!(last["rv"], "CKR_OK");
    assert!(last["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    let (ok, out) = verify(&kmsd, &[&kmsd.dir.join("audit.log")]);
    assert!(ok && out.contains("OK: records 1 to"), "{out}");
}

// A one-byte edit of a record makes verification fail naming that record.
#[test]
fn a_one_byte_edit_is_named() {
    let kmsd = Kmsd::start();
    some_calls(&kmsd);
    some_calls(&kmsd);
    let path = kmsd.dir.join("audit.log");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 4, "{text}");
    let edited = lines[1].replacen("dev-client", "dev-clienT", 1);
    assert_ne!(edited, lines[1]);
    let mut out = lines.clone();
    out[1] = &edited;
    let copy = kmsd.dir.join("edited.log");
    std::fs::write(&copy, out.join("\n") + "\n").unwrap();
    let (ok, msg) = verify(&kmsd, &[&copy]);
    assert!(!ok, "{msg}");
    assert!(msg.contains("line 2: record 2"), "{msg}");
}

// With the log's folder gone every call is CKR_DEVICE_ERROR (and kmsd says
// why); once it is back, calls work again without a restart.
#[test]
fn an_unwritable_log_refuses_operations_then_recovers() {
    let kmsd = Kmsd::start_edited(|cfg, _| {
        cfg.replace("path = \"audit.log\"", "path = \"audit/audit.log\"")
    });
    let folder = kmsd.dir.join("audit");
    let mut w = Wire::connect(&kmsd);
    w.hello(None);
    let list = Request::GetSlotList(kmsp11_proto::GetSlotList {
        token_present: true,
    });
    assert_eq!(w.call(list.clone()).rv, 0);
    std::fs::remove_dir_all(&folder).unwrap();
    let rv = w.call(list.clone()).rv;
    assert_eq!(rv, pkcs11_sys::CKR_DEVICE_ERROR, "{}", rv_name(rv));
    kmsd.wait_for_log(&["audit log cannot be written"], Duration::from_secs(5));
    std::fs::create_dir_all(&folder).unwrap();
    let rv = w.call(list).rv;
    assert_eq!(rv, 0, "after recovery: {}", rv_name(rv));
}

// kmsd killed (SIGKILL) in the middle of a loop of key generations: every
// generation the client saw answered is in the log, and the chain holds.
#[test]
fn kill_9_loses_no_acknowledged_record() {
    let mut kmsd = Kmsd::start();
    let mut w = Wire::connect(&kmsd);
    w.hello(None);
    let s = w.open_session(0, pkcs11_sys::CKF_RW_SESSION);
    assert_eq!(w.login(s, kmsp11_tests::PIN), 0);
    let generate = || {
        Request::GenerateKey(kmsp11_proto::GenerateKey {
            session: s,
            mechanism: kmsp11_proto::Mechanism {
                mechanism: pkcs11_sys::CKM_AES_KEY_GEN,
                param: kmsp11_proto::MechParam::None,
            },
            template: Some(vec![kmsp11_proto::Attribute {
                kind: pkcs11_sys::CKA_VALUE_LEN,
                value: kmsp11_proto::AttrValue::Ulong(16),
            }]),
        })
    };
    let pid = kmsd.pid() as i32;
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: kill(2) on the test's own kmsd child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    let mut acknowledged = vec![];
    for id in 1000..1_000_000u64 {
        match w.call_with(id, false, generate()) {
            Some(r) if r.rv == 0 => acknowledged.push(id),
            Some(r) => panic!("C_GenerateKey: {}", rv_name(r.rv)),
            None => break,
        }
    }
    killer.join().unwrap();
    kmsd.stop();
    assert!(
        acknowledged.len() > 5,
        "too few generations before the kill"
    );
    let logged: std::collections::HashSet<u64> = records(&kmsd)
        .iter()
        .filter(|r| r["op"] == "C_GenerateKey" && r["rv"] == "CKR_OK")
        .filter_map(|r| r["request"].as_u64())
        .collect();
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|id| !logged.contains(id))
        .collect();
    assert!(lost.is_empty(), "acknowledged but not in the log: {lost:?}");
    let (ok, out) = verify(&kmsd, &[&kmsd.dir.join("audit.log")]);
    assert!(ok, "{out}");
}

// A data call is recorded with the key and mechanism its *Init armed: a
// length query, then the real C_Encrypt; the next call on the session
// (its operation ended) names no key.
#[test]
fn data_calls_are_recorded_with_the_key_and_mechanism_of_their_init() {
    use kmsp11_proto::{AttrValue, Attribute, DataOut, MechParam, Mechanism, OpInit};
    let kmsd = Kmsd::start();
    let mut w = Wire::connect(&kmsd);
    w.hello(None);
    let s = w.open_session(0, pkcs11_sys::CKF_RW_SESSION);
    assert_eq!(w.login(s, kmsp11_tests::PIN), 0);
    let key = kmsp11_tests::wire::handle(w.call(Request::GenerateKey(kmsp11_proto::GenerateKey {
        session: s,
        mechanism: Mechanism {
            mechanism: pkcs11_sys::CKM_AES_KEY_GEN,
            param: MechParam::None,
        },
        template: Some(vec![
            Attribute {
                kind: pkcs11_sys::CKA_VALUE_LEN,
                value: AttrValue::Ulong(16),
            },
            Attribute {
                kind: pkcs11_sys::CKA_ENCRYPT,
                value: AttrValue::Bytes(vec![1]),
            },
        ]),
    })));
    let init = Request::EncryptInit(OpInit {
        session: s,
        mechanism: Mechanism {
            mechanism: pkcs11_sys::CKM_AES_ECB,
            param: MechParam::None,
        },
        key,
    });
    assert_eq!(w.call(init).rv, 0);
    let encrypt = |out| {
        Request::Encrypt(DataOut {
            session: s,
            data: Some(vec![0; 16]),
            out,
        })
    };
    assert_eq!(w.call(encrypt(None)).rv, 0, "length query");
    assert_eq!(w.call(encrypt(Some(16))).rv, 0);
    let after = w.call(encrypt(Some(16))).rv;
    assert_eq!(
        after,
        pkcs11_sys::CKR_OPERATION_NOT_INITIALIZED,
        "{}",
        rv_name(after)
    );
    let encrypts: Vec<_> = records(&kmsd)
        .into_iter()
        .filter(|r| r["op"] == "C_Encrypt")
        .collect();
    assert_eq!(encrypts.len(), 3);
    for r in &encrypts[..2] {
        assert_eq!(r["handle"], key, "{r}");
        assert_eq!(r["mechanism"], "CKM_AES_ECB", "{r}");
    }
    assert!(encrypts[2]["handle"].is_null(), "{}", encrypts[2]);
}

// A request refused because the log could not be written is kept like any
// other answer: its resend is answered at once from what was kept, not
// left waiting for a run that never finishes.
#[test]
fn a_request_refused_for_the_log_is_answered_again_on_resend() {
    let kmsd = Kmsd::start_edited(|cfg, _| {
        cfg.replace("path = \"audit.log\"", "path = \"audit/audit.log\"")
            + "\n[limits]\nqueue_timeout_secs = 60\n"
    });
    let mut w = Wire::connect(&kmsd);
    w.hello(None);
    let list = || {
        Request::GetSlotList(kmsp11_proto::GetSlotList {
            token_present: true,
        })
    };
    std::fs::remove_dir_all(kmsd.dir.join("audit")).unwrap();
    let first = w.call_with(77, false, list()).expect("an answer");
    assert_eq!(
        first.rv,
        pkcs11_sys::CKR_DEVICE_ERROR,
        "{}",
        rv_name(first.rv)
    );
    let started = std::time::Instant::now();
    let again = w.call_with(77, true, list()).expect("an answer");
    assert_eq!(
        again.rv,
        pkcs11_sys::CKR_DEVICE_ERROR,
        "{}",
        rv_name(again.rv)
    );
    // Far below limits.queue_timeout_secs: a run left "under way" would
    // hold the resend for the full 60 s.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the resend waited for a run that never finished"
    );
}
