//! kmsd under stress from outside: restarts, wrong certificates and
//! malformed traffic. Other clients must never notice. The tests that load
//! libkmsp11 (a process-wide singleton) take turns.
#![allow(clippy::undocumented_unsafe_blocks)]

use std::io::Write;
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::Duration;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use kmsp11_proto::frame::{FrameHeader, MAGIC};
use kmsp11_tests::raw::{self, rv_name, Raw};
use kmsp11_tests::wire::Wire;
use kmsp11_tests::Kmsd;

static LIBRARY: Mutex<()> = Mutex::new(());

/// A client that keeps working while others misbehave.
fn serves(kmsd: &Kmsd) {
    let mut w = Wire::connect(kmsd);
    w.hello(None);
    let r = w.call(kmsp11_proto::Request::GetSlotList(
        kmsp11_proto::GetSlotList {
            token_present: true,
        },
    ));
    assert_eq!(r.rv, raw::CKR_OK, "{}", rv_name(r.rv));
}

#[test]
fn plain_tcp_garbage_is_closed() {
    let kmsd = Kmsd::start();
    let mut t = TcpStream::connect(&kmsd.addr).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    t.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    // At most a TLS alert comes back, never a kmsp11 frame, then the close.
    let mut all = Vec::new();
    let _ = std::io::Read::read_to_end(&mut t, &mut all);
    assert!(
        all.len() < 64 && !all.windows(4).any(|w| w == MAGIC),
        "{all:?}"
    );
    serves(&kmsd);
}

// After a valid handshake: garbage, a header beyond the limit, a truncated
// frame, a payload that does not decode, a request before Hello. Each
// closes that connection only.
#[test]
fn malformed_frames_close_only_that_connection() {
    let kmsd = Kmsd::start();
    let mut w = Wire::connect(&kmsd);
    w.send_raw(&[0xff; 64]);
    assert!(w.closed_without_answer(), "garbage");

    let mut w = Wire::connect(&kmsd);
    let mut h = FrameHeader::new(0).unwrap().to_bytes();
    h[8..12].copy_from_slice(&(kmsp11_proto::MAX_PAYLOAD + 1).to_be_bytes());
    w.send_raw(&h);
    assert!(w.closed_without_answer(), "oversized header");

    let mut w = Wire::connect(&kmsd);
    w.send_raw(&FrameHeader::new(100).unwrap().to_bytes());
    w.send_raw(&[0u8; 10]);
    w.s.conn.send_close_notify();
    let _ = w.s.flush();
    assert!(w.closed_without_answer(), "truncated frame");

    let mut w = Wire::connect(&kmsd);
    let mut f = MAGIC.to_vec();
    f.extend_from_slice(&kmsp11_proto::PROTOCOL_VERSION.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0, 0, 4, 0xde, 0xad, 0xbe, 0xef]);
    w.send_raw(&f);
    assert!(w.closed_without_answer(), "undecodable payload");

    let mut w = Wire::connect(&kmsd);
    assert!(
        w.call_with(
            1,
            false,
            kmsp11_proto::Request::GetInfo(kmsp11_proto::GetInfo)
        )
        .is_none(),
        "a request before Hello"
    );
    serves(&kmsd);
}

// After a restart old sessions answer CKR_SESSION_HANDLE_INVALID; new ones
// work without C_Initialize again.
#[test]
fn a_restart_ends_old_sessions_and_new_ones_work() {
    let _one = LIBRARY.lock().unwrap_or_else(|e| e.into_inner());
    let mut kmsd = Kmsd::start();
    std::env::set_var("KMSP11_CONFIG", kmsd.client_config());
    let p = Pkcs11::new(kmsp11_tests::libkmsp11()).unwrap();
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = p.get_slots_with_token().unwrap()[0];
    let s = p.open_ro_session(slot).unwrap();
    assert_eq!(s.digest(&Mechanism::Sha256, b"x").unwrap().len(), 32);
    kmsd.restart();
    let old = s.digest(&Mechanism::Sha256, b"x");
    assert!(
        matches!(old, Err(Error::Pkcs11(RvError::SessionHandleInvalid, _))),
        "{old:?}"
    );
    std::mem::forget(s); // its C_CloseSession would fail the same way
    let s2 = p.open_ro_session(slot).unwrap();
    assert_eq!(s2.digest(&Mechanism::Sha256, b"y").unwrap().len(), 32);
    drop(s2);
    p.finalize().unwrap();
}

/// C_GetSlotList through the library presenting the certificate `name` of
/// the dev folder `dir` (`name.pem`, `name.key`).
fn slot_list_as(kmsd: &Kmsd, dir: &std::path::Path, name: &str) -> raw::CK_RV {
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    let _one = LIBRARY.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let cfg = kmsd.client_config_as(tmp.path(), Some((&cert, &key)));
    std::env::set_var("KMSP11_CONFIG", &cfg);
    let raw = Raw::open(&kmsp11_tests::libkmsp11());
    unsafe {
        assert_eq!(
            raw.f.C_Initialize.unwrap()(std::ptr::null_mut()),
            raw::CKR_OK
        );
        let mut n = 0;
        let rv = raw.f.C_GetSlotList.unwrap()(0, std::ptr::null_mut(), &mut n);
        assert_eq!(raw.f.C_Finalize.unwrap()(std::ptr::null_mut()), raw::CKR_OK);
        rv
    }
}

// A valid certificate that names no identity: the library reports the
// refused connection as CKR_DEVICE_REMOVED, and kmsd logs it.
#[test]
fn a_certificate_naming_no_identity_is_refused() {
    let kmsd = Kmsd::start();
    let rv = slot_list_as(&kmsd, &kmsd.dir, "stranger");
    assert_eq!(rv, raw::CKR_DEVICE_REMOVED, "{}", rv_name(rv));
    kmsd.wait_for_log(
        &["names no configured [[identity]]"],
        Duration::from_secs(5),
    );
}

#[test]
fn a_certificate_from_another_ca_is_refused() {
    let kmsd = Kmsd::start();
    let other = Kmsd::start();
    let rv = slot_list_as(&kmsd, &other.dir, "client");
    assert_eq!(rv, raw::CKR_DEVICE_REMOVED, "{}", rv_name(rv));
    serves(&kmsd);
}
