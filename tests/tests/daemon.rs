//! kmsd under stress from outside: restarts, wrong certificates and
//! malformed traffic. Other clients must never notice.
#![allow(
    clippy::undocumented_unsafe_blocks,
    clippy::manual_c_str_literals,
    clippy::manual_dangling_ptr
)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use kmsp11_tests::Kmsd;

fn init(p: &Pkcs11) {
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
}

#[test]
fn daemon_resilience() {
    let mut kmsd = Kmsd::start();
    std::env::set_var("KMSP11_CONFIG", kmsd.client_config());
    let p = Pkcs11::new(kmsp11_tests::libkmsp11()).unwrap();
    init(&p);
    let slot = p.get_slots_with_token().unwrap()[0];
    let s = p.open_ro_session(slot).unwrap();
    assert_eq!(s.digest(&Mechanism::Sha256, b"x").unwrap().len(), 32);

    malformed_traffic_leaves_others_serving(&kmsd);
    assert_eq!(
        s.digest(&Mechanism::Sha256, b"x").unwrap().len(),
        32,
        "the well-behaved client is unaffected"
    );

    // After a restart the old session is gone, new ones work without C_Initialize again.
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

    wrong_certificates_are_refused(&kmsd);
    assert!(
        kmsd.log().contains("names no configured [[identity]]"),
        "the refusal is logged"
    );
}

/// Raw TLS with the dev client certificate, then bad frames.
fn tls(kmsd: &Kmsd) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let d = &kmsd.dir;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(d.join("ca.pem")).unwrap())
        .unwrap();
    let certs = vec![CertificateDer::from_pem_file(d.join("client.pem")).unwrap()];
    let key = PrivateKeyDer::from_pem_file(d.join("client.key")).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(certs, key)
    .unwrap();
    let conn =
        rustls::ClientConnection::new(Arc::new(cfg), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let tcp = TcpStream::connect(&kmsd.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// Reads until the server closes; true if it closed (EOF, reset or TLS
/// alert) without ever sending a kmsp11 frame.
fn closed_without_answer(s: &mut impl Read) -> bool {
    let mut all = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
        if all.len() > 1 << 16 {
            return false;
        }
    }
    !all.windows(4).any(|w| w == kmsp11_proto::frame::MAGIC)
}

fn malformed_traffic_leaves_others_serving(kmsd: &Kmsd) {
    use kmsp11_proto::frame::{FrameHeader, MAGIC};
    // Not TLS at all.
    let mut t = TcpStream::connect(&kmsd.addr).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    t.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert!(closed_without_answer(&mut t));
    // Garbage after a valid handshake.
    let mut s = tls(kmsd);
    s.write_all(&[0xff; 64]).unwrap();
    assert!(closed_without_answer(&mut s));
    // A header announcing more than the limit.
    let mut s = tls(kmsd);
    let mut h = FrameHeader::new(0).unwrap().to_bytes();
    h[8..12].copy_from_slice(&(kmsp11_proto::MAX_PAYLOAD + 1).to_be_bytes());
    s.write_all(&h).unwrap();
    assert!(closed_without_answer(&mut s));
    // A truncated frame: header promises 100 bytes, 10 arrive, then the client goes quiet and leaves.
    let mut s = tls(kmsd);
    let h = FrameHeader::new(100).unwrap().to_bytes();
    s.write_all(&h).unwrap();
    s.write_all(&[0u8; 10]).unwrap();
    s.conn.send_close_notify();
    let _ = s.flush();
    assert!(closed_without_answer(&mut s));
    // A well-framed payload that does not decode.
    let mut s = tls(kmsd);
    let mut f = MAGIC.to_vec();
    f.extend_from_slice(&kmsp11_proto::PROTOCOL_VERSION.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0, 0, 4, 0xde, 0xad, 0xbe, 0xef]);
    s.write_all(&f).unwrap();
    assert!(closed_without_answer(&mut s));
    // A valid request that is not Hello first.
    let mut s = tls(kmsd);
    let payload =
        kmsp11_proto::encode(&kmsp11_proto::Request::GetInfo(kmsp11_proto::GetInfo)).unwrap();
    s.write_all(&kmsp11_proto::frame::frame(&payload).unwrap())
        .unwrap();
    assert!(closed_without_answer(&mut s));
}

fn wrong_certificates_are_refused(kmsd: &Kmsd) {
    let raw = kmsp11_tests::raw::Raw::open(&kmsp11_tests::libkmsp11());
    let tmp = tempfile::tempdir().unwrap();
    // A certificate from the right CA that names no configured identity,
    // then one from another CA altogether.
    let other = Kmsd::start();
    let cases = [
        (
            kmsd.dir.join("stranger.pem"),
            kmsd.dir.join("stranger.key"),
            kmsd.dir.join("ca.pem"),
        ),
        (
            other.dir.join("client.pem"),
            other.dir.join("client.key"),
            kmsd.dir.join("ca.pem"),
        ),
    ];
    for (i, (cert, key, ca)) in cases.iter().enumerate() {
        let cfg = tmp.path().join(format!("c{i}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "endpoints = [\"{}\"]\nserver_name = \"localhost\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
                kmsd.addr,
                ca.display(),
                cert.display(),
                key.display()
            ),
        )
        .unwrap();
        std::env::set_var("KMSP11_CONFIG", &cfg);
        unsafe {
            assert_eq!(
                raw.f.C_Initialize.unwrap()(std::ptr::null_mut()),
                kmsp11_tests::raw::CKR_OK
            );
            let mut n = 0;
            let rv = raw.f.C_GetSlotList.unwrap()(0, std::ptr::null_mut(), &mut n);
            assert_eq!(
                rv,
                kmsp11_tests::raw::CKR_DEVICE_REMOVED,
                "case {i}: refused connection is 'device removed'"
            );
            assert_eq!(
                raw.f.C_Finalize.unwrap()(std::ptr::null_mut()),
                kmsp11_tests::raw::CKR_OK
            );
        }
    }
}
