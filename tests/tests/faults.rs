//! Faults: kmsd restarts under a busy application, contexts ended by one
//! connection while others use them, requests sent twice after a lost
//! connection, and more threads than connections. The tests that load the
//! library take turns (`library_turn`: it is a process-wide singleton).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::time::Duration;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use kmsp11_proto::{AttrValue, Attribute, Body, Request};
use kmsp11_tests::raw::*;
use kmsp11_tests::wire::Wire;
use kmsp11_tests::Kmsd;

// Four threads reconnecting after a kmsd restart once split over three
// contexts, and ~4 % of calls failed with CKR_SESSION_HANDLE_INVALID for
// the rest of the run: one library instance is one context.
/// The library is one per process: its tests here take turns.
fn library_turn() -> MutexGuard<'static, ()> {
    static ONE: Mutex<()> = Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

/// The library over `kmsd`, with `extra` lines in its config file.
fn library_with(kmsd: &Kmsd, extra: &str) -> Arc<Pkcs11> {
    let cfg = kmsd.dir.join("client-pool.toml");
    let text = std::fs::read_to_string(kmsd.client_config()).unwrap();
    std::fs::write(&cfg, format!("{text}\n{extra}\n")).unwrap();
    std::env::set_var("KMSP11_CONFIG", &cfg);
    let p = Arc::new(Pkcs11::new(kmsp11_tests::libkmsp11()).unwrap());
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    p
}

/// `threads` threads started together, each opening its own session and
/// digesting `calls` times; the CK_RV of every failed call.
fn busy_threads(p: &Arc<Pkcs11>, threads: usize, calls: usize) -> Vec<String> {
    let slot = p.get_slots_with_token().unwrap()[0];
    let start = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (p, start) = (p.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let mut failed = Vec::new();
                match p.open_ro_session(slot) {
                    Ok(s) => {
                        for _ in 0..calls {
                            if let Err(e) = s.digest(&Mechanism::Sha256, b"x") {
                                failed.push(e.to_string());
                            }
                        }
                    }
                    Err(e) => failed.push(format!("C_OpenSession: {e}")),
                }
                failed
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}

/// The connections kmsd accepted (its "client connected" lines).
fn connections(kmsd: &Kmsd) -> usize {
    kmsd.log()
        .lines()
        .filter(|l| l.contains("client connected"))
        .count()
}

// 48 threads and max_connections = 4: every call succeeds, over at most
// four connections (threads wait for a free one instead of opening more).
#[test]
fn more_threads_than_connections_share_the_pool() {
    let _t = library_turn();
    let kmsd = Kmsd::start();
    let p = library_with(&kmsd, "max_connections = 4");
    let failed = busy_threads(&p, 48, 10);
    assert!(failed.is_empty(), "failed calls: {failed:?}");
    let n = connections(&kmsd);
    assert!(
        (1..=4).contains(&n),
        "{n} connections for max_connections = 4"
    );
    Arc::try_unwrap(p).ok().unwrap().finalize().unwrap();
}

// kmsd closes connections beyond its limit of handshakes in progress from
// one address; 32 threads connecting at once (limit 2) all get through,
// the library trying again after a pause. Before, most of them failed
// with CKR_DEVICE_REMOVED ("TLS handshake: Connection reset by peer").
#[test]
fn a_burst_of_connections_past_kmsd_handshake_limit_gets_through() {
    let _t = library_turn();
    let kmsd = Kmsd::start_edited(|t, _| {
        kmsp11_tests::set_in(&t, "limits", "max_pending_handshakes_per_address = 2")
    });
    let p = library_with(&kmsd, "max_connections = 32\nmax_idle_connections = 32");
    let failed = busy_threads(&p, 32, 3);
    assert!(failed.is_empty(), "failed calls: {failed:?}");
    Arc::try_unwrap(p).ok().unwrap().finalize().unwrap();
}

#[test]
fn restart_under_threads_opens_one_context() {
    let _t = library_turn();
    let mut kmsd = Kmsd::start();
    std::env::set_var("KMSP11_CONFIG", kmsd.client_config());
    let p = Arc::new(Pkcs11::new(kmsp11_tests::libkmsp11()).unwrap());
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = p.get_slots_with_token().unwrap()[0];
    let restarted = Arc::new(AtomicBool::new(false));
    let settled = Arc::new(AtomicBool::new(false));
    let late_errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (p, restarted, settled, late_errors, stop) = (
                p.clone(),
                restarted.clone(),
                settled.clone(),
                late_errors.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                let mut s = p.open_ro_session(slot).ok();
                while !stop.load(Ordering::SeqCst) {
                    let r = match &s {
                        Some(sess) => sess.digest(&Mechanism::Sha256, b"x").map(|_| ()),
                        None => Err(Error::Pkcs11(
                            RvError::SessionHandleInvalid,
                            cryptoki::context::Function::Digest,
                        )),
                    };
                    if let Err(e) = r {
                        if settled.load(Ordering::SeqCst) {
                            late_errors.fetch_add(1, Ordering::SeqCst);
                            eprintln!("after the restart settled: {e}");
                        }
                        if restarted.load(Ordering::SeqCst) {
                            if let Some(old) = s.take() {
                                std::mem::forget(old); // its C_CloseSession would fail the same way
                            }
                            s = p.open_ro_session(slot).ok();
                        }
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    kmsd.restart();
    restarted.store(true, Ordering::SeqCst);
    // Every thread has a new session within a few seconds.
    std::thread::sleep(Duration::from_secs(2));
    settled.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        late_errors.load(Ordering::SeqCst),
        0,
        "calls failed after the restart settled"
    );
    let fresh = kmsd
        .log()
        .lines()
        .filter(|l| l.contains("client connected") && l.contains("rejoined=false"))
        .count();
    assert_eq!(
        fresh,
        2,
        "one context before and one after the restart:\n{}",
        kmsd.log()
    );
}

// Work done on a context after another of its connections sent Goodbye was
// never reclaimed: the context is ended for every connection.
#[test]
fn goodbye_ends_the_context_for_every_connection() {
    let kmsd = Kmsd::start();
    let mut a = Wire::connect(&kmsd);
    let token = a.hello(None).context;
    let mut b = Wire::connect(&kmsd);
    assert!(b.hello(Some(token)).rejoined);
    let s = match b
        .call(Request::OpenSession(kmsp11_proto::OpenSession {
            slot: 0,
            flags: CKF_SERIAL_SESSION,
        }))
        .body
    {
        Body::Handle(h) => h,
        r => panic!("{r:?}"),
    };
    assert_eq!(a.call(Request::Goodbye(kmsp11_proto::Goodbye)).rv, CKR_OK);
    assert!(
        b.call_with(
            50,
            false,
            Request::GetSessionInfo(kmsp11_proto::GetSessionInfo { session: s })
        )
        .is_none(),
        "a connection of an ended context was still served"
    );
    kmsd.wait_for_log(&["context was ended by C_Finalize"], Duration::from_secs(5));
}

fn handle_of(r: kmsp11_proto::Response) -> u64 {
    match r.body {
        Body::Handle(h) => h,
        b => panic!("expected a handle, got {} {b:?}", rv_name(r.rv)),
    }
}

// The library's reconnect-and-resend could run a call twice: a resent
// request (same id, resend flag) is answered from the kept answer.
#[test]
fn a_resent_request_runs_once() {
    let kmsd = Kmsd::start();
    let mut a = Wire::connect(&kmsd);
    let token = a.hello(None).context;
    let open = || {
        Request::OpenSession(kmsp11_proto::OpenSession {
            slot: 0,
            flags: CKF_SERIAL_SESSION | CKF_RW_SESSION,
        })
    };
    let s = handle_of(a.call_with(5, false, open()).unwrap());
    let mut b = Wire::connect(&kmsd);
    b.hello(Some(token));
    assert_eq!(
        handle_of(b.call_with(5, true, open()).unwrap()),
        s,
        "the resend opened another session"
    );
    let create = || {
        Request::CreateObject(kmsp11_proto::CreateObject {
            session: s,
            template: Some(vec![
                Attribute {
                    kind: CKA_CLASS,
                    value: AttrValue::Ulong(CKO_DATA),
                },
                Attribute {
                    kind: CKA_PRIVATE,
                    value: AttrValue::Bytes(vec![0]),
                },
                Attribute {
                    kind: CKA_LABEL,
                    value: AttrValue::Bytes(b"once".to_vec()),
                },
            ]),
        })
    };
    let o = handle_of(b.call_with(6, false, create()).unwrap());
    assert_eq!(handle_of(a.call_with(6, true, create()).unwrap()), o);
    let find = Request::FindObjectsInit(kmsp11_proto::FindObjectsInit {
        session: s,
        template: Some(vec![Attribute {
            kind: CKA_LABEL,
            value: AttrValue::Bytes(b"once".to_vec()),
        }]),
    });
    assert_eq!(a.call_with(7, false, find).unwrap().rv, CKR_OK);
    match a
        .call_with(
            8,
            false,
            Request::FindObjects(kmsp11_proto::FindObjects {
                session: s,
                max: 10,
            }),
        )
        .unwrap()
        .body
    {
        Body::Handles(h) => assert_eq!(h, vec![o], "the object was created twice"),
        b => panic!("{b:?}"),
    }
    // A resend whose first copy never arrived runs.
    let s2 = handle_of(b.call_with(100, true, open()).unwrap());
    assert_ne!(s2, s);
}
