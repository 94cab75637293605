//! libkmsp11's own rules: initialisation, interfaces, configuration
//! lookup, fork, concurrency. The library is a process-wide singleton: these
//! tests take turns (`Turn`), each starting from an uninitialised library
//! and leaving it so, over one kmsd.
#![allow(
    clippy::undocumented_unsafe_blocks,
    clippy::manual_c_str_literals,
    clippy::manual_dangling_ptr
)]

use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use cryptoki::context::Pkcs11;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use kmsp11_tests::raw::{self, rv_name, Raw};
use kmsp11_tests::Kmsd;

/// One test at a time, with kmsd running and the library uninitialised.
struct Turn {
    raw: Raw,
    kmsd: &'static Kmsd,
    _one: MutexGuard<'static, ()>,
}

fn turn() -> Turn {
    static ONE: Mutex<()> = Mutex::new(());
    static KMSD: OnceLock<Kmsd> = OnceLock::new();
    let one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let kmsd = KMSD.get_or_init(Kmsd::start);
    std::env::set_var("KMSP11_CONFIG", kmsd.client_config());
    let raw = Raw::open(&kmsp11_tests::libkmsp11());
    unsafe { raw.f.C_Finalize.unwrap()(ptr::null_mut()) };
    Turn {
        raw,
        kmsd,
        _one: one,
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        unsafe { self.raw.f.C_Finalize.unwrap()(ptr::null_mut()) };
    }
}

fn init_args(flags: raw::CK_FLAGS) -> raw::CK_C_INITIALIZE_ARGS {
    raw::CK_C_INITIALIZE_ARGS {
        flags,
        ..Default::default()
    }
}

fn initialize(t: &Turn, a: &mut raw::CK_C_INITIALIZE_ARGS) -> raw::CK_RV {
    unsafe { t.raw.f.C_Initialize.unwrap()((a as *mut raw::CK_C_INITIALIZE_ARGS).cast()) }
}

/// A turn with the library initialised the way most applications do it.
fn initialized_turn() -> Turn {
    let t = turn();
    let rv = initialize(&t, &mut init_args(raw::CKF_OS_LOCKING_OK));
    assert_eq!(rv, raw::CKR_OK, "C_Initialize: {}", rv_name(rv));
    t
}

fn slot_count(t: &Turn) -> (raw::CK_RV, raw::CK_ULONG) {
    let mut n: raw::CK_ULONG = 0;
    let rv = unsafe { t.raw.f.C_GetSlotList.unwrap()(0, ptr::null_mut(), &mut n) };
    (rv, n)
}

/// How many audit records kmsd wrote of `op` (every call is one).
fn records_of(kmsd: &Kmsd, op: &str) -> usize {
    let needle = format!("\"op\":\"{op}\"");
    std::fs::read_to_string(kmsd.dir.join("audit.log"))
        .unwrap()
        .lines()
        .filter(|l| l.contains(&needle))
        .count()
}

// Java and NSS ask for every mechanism's info at start: the library asks
// kmsd once per slot (the list) and per slot and mechanism (the info),
// however often the application asks, and answers the same.
#[test]
fn mechanism_list_and_info_asked_once() {
    let t = initialized_turn();
    let (list0, info0) = (
        records_of(t.kmsd, "C_GetMechanismList"),
        records_of(t.kmsd, "C_GetMechanismInfo"),
    );
    let f = t.raw.f;
    let mut answers = Vec::new();
    for _ in 0..3 {
        let mut n: raw::CK_ULONG = 0;
        let rv = unsafe { f.C_GetMechanismList.unwrap()(0, ptr::null_mut(), &mut n) };
        assert_eq!(rv, raw::CKR_OK, "C_GetMechanismList: {}", rv_name(rv));
        let mut list = vec![0 as raw::CK_MECHANISM_TYPE; n as usize];
        let rv = unsafe { f.C_GetMechanismList.unwrap()(0, list.as_mut_ptr(), &mut n) };
        assert_eq!(rv, raw::CKR_OK, "C_GetMechanismList: {}", rv_name(rv));
        assert!(list.contains(&raw::CKM_ECDSA));
        let mut info = raw::CK_MECHANISM_INFO::default();
        let rv = unsafe { f.C_GetMechanismInfo.unwrap()(0, raw::CKM_ECDSA, &mut info) };
        assert_eq!(rv, raw::CKR_OK, "C_GetMechanismInfo: {}", rv_name(rv));
        answers.push((list, info.ulMinKeySize, info.ulMaxKeySize, info.flags));
    }
    assert!(
        answers.windows(2).all(|w| w[0] == w[1]),
        "the same answers each time"
    );
    assert!(answers[0].3 & raw::CKF_SIGN != 0);
    // An unknown mechanism is kmsd's answer each time (not kept).
    for _ in 0..2 {
        let mut info = raw::CK_MECHANISM_INFO::default();
        let rv = unsafe { f.C_GetMechanismInfo.unwrap()(0, 0x7fff_fff0, &mut info) };
        assert_eq!(rv, raw::CKR_MECHANISM_INVALID, "{}", rv_name(rv));
    }
    assert_eq!(records_of(t.kmsd, "C_GetMechanismList") - list0, 1);
    assert_eq!(records_of(t.kmsd, "C_GetMechanismInfo") - info0, 1 + 2);
}

// Expect CKR_CRYPTOKI_NOT_INITIALIZED for any call before C_Initialize and
// after C_Finalize.
#[test]
fn calls_outside_initialize_and_finalize_are_refused() {
    let t = turn();
    let f = t.raw.f;
    assert_eq!(slot_count(&t).0, raw::CKR_CRYPTOKI_NOT_INITIALIZED);
    unsafe {
        assert_eq!(
            f.C_Finalize.unwrap()(ptr::null_mut()),
            raw::CKR_CRYPTOKI_NOT_INITIALIZED
        );
        assert_eq!(f.C_Initialize.unwrap()(ptr::null_mut()), raw::CKR_OK);
        assert_eq!(f.C_Finalize.unwrap()(1 as *mut _), raw::CKR_ARGUMENTS_BAD);
        assert_eq!(f.C_Finalize.unwrap()(ptr::null_mut()), raw::CKR_OK);
    }
    let (rv, _) = slot_count(&t);
    assert_eq!(rv, raw::CKR_CRYPTOKI_NOT_INITIALIZED, "{}", rv_name(rv));
}

// Expect CKR_ARGUMENTS_BAD for a non-NULL pReserved and for some but not
// all mutex callbacks, CKR_CANT_LOCK for callbacks without
// CKF_OS_LOCKING_OK, and CKR_CRYPTOKI_ALREADY_INITIALIZED the second time.
#[test]
fn initialize_arguments_are_checked() {
    unsafe extern "C" fn create(_: raw::CK_VOID_PTR_PTR) -> raw::CK_RV {
        0
    }
    unsafe extern "C" fn other(_: raw::CK_VOID_PTR) -> raw::CK_RV {
        0
    }
    let t = turn();
    let mut a = init_args(raw::CKF_OS_LOCKING_OK);
    a.pReserved = 1 as *mut _;
    assert_eq!(initialize(&t, &mut a), raw::CKR_ARGUMENTS_BAD);
    let mut a = init_args(0);
    a.CreateMutex = Some(create);
    assert_eq!(initialize(&t, &mut a), raw::CKR_ARGUMENTS_BAD);
    let mut a = init_args(0);
    a.CreateMutex = Some(create);
    a.DestroyMutex = Some(other);
    a.LockMutex = Some(other);
    a.UnlockMutex = Some(other);
    let rv = initialize(&t, &mut a);
    assert_eq!(rv, raw::CKR_CANT_LOCK, "{}", rv_name(rv));
    assert_eq!(
        initialize(&t, &mut init_args(raw::CKF_OS_LOCKING_OK)),
        raw::CKR_OK
    );
    let rv = initialize(&t, &mut init_args(raw::CKF_OS_LOCKING_OK));
    assert_eq!(rv, raw::CKR_CRYPTOKI_ALREADY_INITIALIZED, "{}", rv_name(rv));
}

// NSS and GnuTLS initialise with CKF_LIBRARY_CANT_CREATE_OS_THREADS: the
// library works without creating threads.
#[test]
fn works_without_creating_threads() {
    let t = turn();
    let mut a = init_args(raw::CKF_OS_LOCKING_OK | raw::CKF_LIBRARY_CANT_CREATE_OS_THREADS);
    assert_eq!(initialize(&t, &mut a), raw::CKR_OK);
    assert_eq!(slot_count(&t), (raw::CKR_OK, 2), "two virtual tokens");
}

// Bad pointers and lengths are CKR_ARGUMENTS_BAD, never a crash; unknown
// slots and sessions have their own codes.
#[test]
fn bad_pointers_are_arguments_bad() {
    let t = initialized_turn();
    let f = t.raw.f;
    unsafe {
        let mut ti = raw::CK_TOKEN_INFO::default();
        assert_eq!(
            f.C_GetTokenInfo.unwrap()(0x1234_5678, &mut ti),
            raw::CKR_SLOT_ID_INVALID
        );
        assert_eq!(
            f.C_GetTokenInfo.unwrap()(0, ptr::null_mut()),
            raw::CKR_ARGUMENTS_BAD
        );
        let mut s: raw::CK_SESSION_HANDLE = 0;
        let open = f.C_OpenSession.unwrap();
        assert_eq!(
            open(
                0,
                raw::CKF_SERIAL_SESSION,
                ptr::null_mut(),
                None,
                ptr::null_mut()
            ),
            raw::CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            open(0, raw::CKF_SERIAL_SESSION, ptr::null_mut(), None, &mut s),
            raw::CKR_OK
        );
        assert_eq!(
            f.C_Login.unwrap()(s, raw::CKU_USER, ptr::null_mut(), 6),
            raw::CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            f.C_FindObjectsInit.unwrap()(s, ptr::null_mut(), 3),
            raw::CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            f.C_DigestInit.unwrap()(s, ptr::null_mut()),
            raw::CKR_ARGUMENTS_BAD
        );
        let mut m = raw::mechanism(raw::CKM_SHA256);
        assert_eq!(f.C_DigestInit.unwrap()(s, &mut m), raw::CKR_OK);
        let abc = b"abc".as_ptr() as *mut u8;
        // Expect CKR_ARGUMENTS_BAD if pulDigestLen is NULL.
        assert_eq!(
            f.C_Digest.unwrap()(s, abc, 3, ptr::null_mut(), ptr::null_mut()),
            raw::CKR_ARGUMENTS_BAD
        );
        let (mut out, mut olen) = ([0u8; 32], 32 as raw::CK_ULONG);
        assert_eq!(
            f.C_Digest.unwrap()(s, abc, 3, out.as_mut_ptr(), &mut olen),
            raw::CKR_OK
        );
        // Expect CKR_SESSION_HANDLE_INVALID for a session that does not exist.
        assert_eq!(
            f.C_CloseSession.unwrap()(0xdead_beef),
            raw::CKR_SESSION_HANDLE_INVALID
        );
        assert_eq!(f.C_CloseSession.unwrap()(s), raw::CKR_OK);
    }
}

// C_WaitForSlotEvent answers as SoftHSM does (not supported) and never hangs.
#[test]
fn wait_for_slot_event_answers_as_the_backend() {
    let t = initialized_turn();
    let mut slot: raw::CK_SLOT_ID = 0;
    let rv = unsafe { t.raw.f.C_WaitForSlotEvent.unwrap()(0, &mut slot, ptr::null_mut()) };
    assert_eq!(rv, raw::CKR_FUNCTION_NOT_SUPPORTED, "{}", rv_name(rv));
}

// C_GetInterface offers "PKCS 11" 2.40 only: a fork-safe request, NSS's
// vendor interface and version 3.0 are CKR_ARGUMENTS_BAD (NSS falls back).
#[test]
fn interface_lookup() {
    let _t = turn();
    interfaces(&kmsp11_tests::libkmsp11());
}

// A missing or broken configuration fails C_Initialize with
// CKR_FUNCTION_FAILED (and one line naming the file).
// A pool of no connections could never answer: refused at C_Initialize
// (CKR_FUNCTION_FAILED, the file and the reason on stderr), not a hang at
// the first call.
#[test]
fn zero_max_connections_fails_initialize() {
    let t = turn();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("zero.toml");
    let text = std::fs::read_to_string(t.kmsd.client_config()).unwrap();
    std::fs::write(&cfg, format!("{text}\nmax_connections = 0\n")).unwrap();
    std::env::set_var("KMSP11_CONFIG", &cfg);
    let rv = unsafe { t.raw.f.C_Initialize.unwrap()(ptr::null_mut()) };
    assert_eq!(rv, raw::CKR_FUNCTION_FAILED, "{}", rv_name(rv));
}

#[test]
fn missing_or_broken_config_fails_initialize() {
    let t = turn();
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("broken.toml");
    std::fs::write(&bad, "endpoints = [\"127.0.0.1:1\"]\nca = 3\n").unwrap();
    for p in [tmp.path().join("missing.toml"), bad] {
        std::env::set_var("KMSP11_CONFIG", &p);
        let rv = unsafe { t.raw.f.C_Initialize.unwrap()(ptr::null_mut()) };
        assert_eq!(
            rv,
            raw::CKR_FUNCTION_FAILED,
            "{}: {}",
            p.display(),
            rv_name(rv)
        );
    }
}

// Without KMSP11_CONFIG the library reads ~/.config/kmsp11/config.toml.
#[test]
fn config_found_in_the_home_directory() {
    let t = turn();
    let good = std::env::var_os("KMSP11_CONFIG").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(home.join(".config/kmsp11")).unwrap();
    std::fs::copy(&good, home.join(".config/kmsp11/config.toml")).unwrap();
    std::env::remove_var("KMSP11_CONFIG");
    let old_home = std::env::var_os("HOME");
    std::env::set_var("HOME", &home);
    let rv = unsafe { t.raw.f.C_Initialize.unwrap()(ptr::null_mut()) };
    let slots = slot_count(&t);
    match old_home {
        Some(h) => std::env::set_var("HOME", h),
        None => std::env::remove_var("HOME"),
    }
    assert_eq!(
        rv,
        raw::CKR_OK,
        "config found in ~/.config/kmsp11: {}",
        rv_name(rv)
    );
    assert_eq!(slots, (raw::CKR_OK, 2));
}

// A forked child gets CKR_CRYPTOKI_NOT_INITIALIZED until it calls
// C_Initialize itself, and then works on its own connections.
#[test]
fn forked_child_must_reinitialise() {
    let t = initialized_turn();
    fork_child_must_reinitialise(&t.raw);
}

// 8 application threads, mixed operations, 10 seconds, no error.
#[test]
fn eight_threads_mixed_operations() {
    let _t = turn();
    let p = kmsp11_tests::initialized(&kmsp11_tests::libkmsp11());
    let slot = p.get_slots_with_token().unwrap()[0];
    let s = kmsp11_tests::user_session(&p, slot);
    let (_, ec) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::EcParams(kmsp11_tests::P256.to_vec()),
                Attribute::Token(true),
                Attribute::Verify(true),
            ],
            &[Attribute::Token(true), Attribute::Sign(true)],
        )
        .unwrap();
    concurrency(&p, slot, ec);
    drop(s);
    p.finalize().unwrap();
}

fn interfaces(lib: &std::path::Path) {
    unsafe {
        let l = libloading::Library::new(lib).unwrap();
        type GetIf = unsafe extern "C" fn(
            *mut u8,
            *mut raw::CK_VERSION,
            *mut raw::CK_INTERFACE_PTR,
            raw::CK_FLAGS,
        ) -> raw::CK_RV;
        type GetList =
            unsafe extern "C" fn(raw::CK_INTERFACE_PTR, *mut raw::CK_ULONG) -> raw::CK_RV;
        let get: libloading::Symbol<GetIf> = l.get(b"C_GetInterface\0").unwrap();
        let list: libloading::Symbol<GetList> = l.get(b"C_GetInterfaceList\0").unwrap();
        let mut i: raw::CK_INTERFACE_PTR = ptr::null_mut();
        assert_eq!(
            get(b"PKCS 11\0".as_ptr() as *mut u8, ptr::null_mut(), &mut i, 0),
            raw::CKR_OK
        );
        let fl = (*i).pFunctionList as *const raw::CK_FUNCTION_LIST;
        assert_eq!(((*fl).version.major, (*fl).version.minor), (2, 40));
        assert_eq!(
            get(ptr::null_mut(), ptr::null_mut(), &mut i, 0),
            raw::CKR_OK
        );
        // NSS asks for a fork-safe interface first and for its vendor interface: both not offered.
        assert_eq!(
            get(
                b"PKCS 11\0".as_ptr() as *mut u8,
                ptr::null_mut(),
                &mut i,
                raw::CKF_INTERFACE_FORK_SAFE
            ),
            raw::CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            get(
                b"Vendor NSS FIPS Interface\0".as_ptr() as *mut u8,
                ptr::null_mut(),
                &mut i,
                0
            ),
            raw::CKR_ARGUMENTS_BAD
        );
        let mut v3 = raw::CK_VERSION { major: 3, minor: 0 };
        assert_eq!(
            get(ptr::null_mut(), &mut v3, &mut i, 0),
            raw::CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            get(ptr::null_mut(), ptr::null_mut(), ptr::null_mut(), 0),
            raw::CKR_ARGUMENTS_BAD
        );
        let mut n: raw::CK_ULONG = 0;
        assert_eq!(list(ptr::null_mut(), &mut n), raw::CKR_OK);
        assert_eq!(n, 1);
    }
}

/// A forked child gets CKR_CRYPTOKI_NOT_INITIALIZED until it calls
/// C_Initialize itself, and then works on its own connections.
fn fork_child_must_reinitialise(raw: &Raw) {
    let f = raw.f;
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0);
        if pid == 0 {
            let mut n: raw::CK_ULONG = 0;
            let mut code = 0;
            if f.C_GetSlotList.unwrap()(0, ptr::null_mut(), &mut n)
                != raw::CKR_CRYPTOKI_NOT_INITIALIZED
            {
                code |= 1;
            }
            if f.C_Initialize.unwrap()(ptr::null_mut()) != raw::CKR_OK {
                code |= 2;
            }
            if f.C_GetSlotList.unwrap()(0, ptr::null_mut(), &mut n) != raw::CKR_OK || n != 2 {
                code |= 4;
            }
            let mut s: raw::CK_SESSION_HANDLE = 0;
            if f.C_OpenSession.unwrap()(0, raw::CKF_SERIAL_SESSION, ptr::null_mut(), None, &mut s)
                != raw::CKR_OK
            {
                code |= 8;
            }
            if f.C_Finalize.unwrap()(ptr::null_mut()) != raw::CKR_OK {
                code |= 16;
            }
            libc::_exit(code);
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        assert!(libc::WIFEXITED(status), "child did not exit normally");
        assert_eq!(libc::WEXITSTATUS(status), 0, "child failure bits");
        // The parent is unaffected.
        let mut n: raw::CK_ULONG = 0;
        assert_eq!(
            f.C_GetSlotList.unwrap()(0, ptr::null_mut(), &mut n),
            raw::CKR_OK
        );
    }
}

/// 8 application threads, mixed operations, 10 seconds, no error.
fn concurrency(p: &Pkcs11, slot: cryptoki::slot::Slot, ec: cryptoki::object::ObjectHandle) {
    let ops = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(10);
    std::thread::scope(|sc| {
        for i in 0..8u8 {
            let ops = ops.clone();
            sc.spawn(move || {
                let s = p.open_rw_session(slot).unwrap();
                let pubk: Vec<_> = s
                    .find_objects(&[Attribute::Class(ObjectClass::PUBLIC_KEY)])
                    .unwrap();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let data = [i; 32];
                    match n % 4 {
                        0 => {
                            let sig = s.sign(&Mechanism::Ecdsa, ec, &data).unwrap();
                            assert!(pubk
                                .iter()
                                .any(|k| s.verify(&Mechanism::Ecdsa, *k, &data, &sig).is_ok()));
                        }
                        1 => assert_eq!(s.digest(&Mechanism::Sha256, &data).unwrap().len(), 32),
                        2 => {
                            let mut r = [0u8; 16];
                            s.generate_random_slice(&mut r).unwrap();
                        }
                        _ => {
                            let o = s
                                .create_object(&[
                                    Attribute::Class(ObjectClass::DATA),
                                    Attribute::Value(vec![i; 4]),
                                ])
                                .unwrap();
                            s.destroy_object(o).unwrap();
                        }
                    }
                    n += 1;
                }
                ops.fetch_add(n, Ordering::Relaxed);
            });
        }
    });
    assert!(
        ops.load(Ordering::Relaxed) > 80,
        "too few operations completed: {}",
        ops.load(Ordering::Relaxed)
    );
}

/// Requests kmsd has answered on PKCS#11 connections (round trips), from
/// its metrics.
fn exchanges(kmsd: &Kmsd) -> u64 {
    let (code, body) = kmsd.admin_api("dev-admin", "GET", "/metrics", None, &[]);
    assert_eq!(code, 200, "GET /metrics: {body}");
    body.lines()
        .filter(|l| l.starts_with("kmsd_exchanges_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
        .sum()
}

// Signing with a key already used costs one round trip, whether the
// application sizes its buffer first (init, length query, sign: OpenSSL,
// cryptoki) or not (init, sign); every signature verifies.
#[test]
fn a_repeated_sign_is_one_round_trip_in_both_styles() {
    let t = turn();
    kmsp11_tests::through_library(&t.kmsd.client_config(), |_, s| {
        let (public, private) = s
            .generate_key_pair(
                &Mechanism::EccKeyPairGen,
                &[
                    Attribute::Token(false),
                    Attribute::EcParams(kmsp11_tests::P256.to_vec()),
                ],
                &[Attribute::Token(false), Attribute::Sign(true)],
            )
            .unwrap();
        let (h, k) = (s.handle(), private.handle());
        let data = [9u8; 32];
        let rv = t.raw.sign_init(h, raw::CKM_ECDSA, k);
        assert_eq!(rv, raw::CKR_OK, "first C_SignInit: {}", rv_name(rv));
        assert_eq!(t.raw.sign(h, &data, Some(64)).0, raw::CKR_OK);
        let before = exchanges(t.kmsd);
        let mut sigs = Vec::new();
        for query_first in [true, false, true, false] {
            let rv = t.raw.sign_init(h, raw::CKM_ECDSA, k);
            assert_eq!(rv, raw::CKR_OK, "C_SignInit: {}", rv_name(rv));
            if query_first {
                let (rv, n, _) = t.raw.sign(h, &data, None);
                assert_eq!((rv, n), (raw::CKR_OK, 64), "length query: {}", rv_name(rv));
            }
            let (rv, n, sig) = t.raw.sign(h, &data, Some(64));
            assert_eq!((rv, n), (raw::CKR_OK, 64), "C_Sign: {}", rv_name(rv));
            sigs.push(sig);
        }
        assert_eq!(
            exchanges(t.kmsd) - before,
            4,
            "one round trip per signature"
        );
        for sig in sigs {
            let r = s.verify(&Mechanism::Ecdsa, public, &data, &sig);
            assert!(r.is_ok(), "verify: {}", kmsp11_tests::ck(&r));
        }
    });
}

// A search with few matches (init, find, final) is one round trip, and
// finds what it should.
#[test]
fn a_small_search_is_one_round_trip() {
    let t = turn();
    kmsp11_tests::through_library(&t.kmsd.client_config(), |_, s| {
        let mut made = Vec::new();
        for i in 0..3u8 {
            let o = s
                .create_object(&[
                    Attribute::Class(ObjectClass::DATA),
                    Attribute::Label(b"few".to_vec()),
                    Attribute::Value(vec![i]),
                ])
                .unwrap();
            made.push(o.handle());
        }
        let before = exchanges(t.kmsd);
        let mut found: Vec<_> = s
            .find_objects(&[Attribute::Label(b"few".to_vec())])
            .unwrap()
            .into_iter()
            .map(|o| o.handle())
            .collect();
        assert_eq!(exchanges(t.kmsd) - before, 1, "one round trip");
        found.sort();
        made.sort();
        assert_eq!(found, made);
    });
}

// A request that cannot fit a frame (16 MiB) is CKR_ARGUMENTS_BAD before
// anything is sent; the connection and the operation are untouched.
#[test]
fn a_request_over_the_frame_limit_is_arguments_bad() {
    let t = turn();
    kmsp11_tests::through_library(&t.kmsd.client_config(), |_, s| {
        let h = s.handle();
        assert_eq!(t.raw.digest_init(h, raw::CKM_SHA256), raw::CKR_OK);
        let big = vec![1u8; kmsp11_proto::MAX_PAYLOAD as usize + 1];
        let rv =
            unsafe { t.raw.f.C_DigestUpdate.unwrap()(h, big.as_ptr() as *mut u8, big.len() as _) };
        assert_eq!(rv, raw::CKR_ARGUMENTS_BAD, "{}", rv_name(rv));
        let (rv, n, _) = t.raw.digest(h, b"still here", Some(32));
        assert_eq!((rv, n), (raw::CKR_OK, 32), "{}", rv_name(rv));
    });
}
