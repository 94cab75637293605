//! Transparent mode (every backend slot 1:1, SO functions forwarded when
//! configured) and context rejoin after kmsd closed an idle connection.
#![allow(clippy::undocumented_unsafe_blocks)]

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use kmsp11_tests::{Kmsd, PIN, SO_PIN};

const CONFIG: &str = r#"
[listen]
address = "127.0.0.1:0"
address_file = "address"
idle_timeout_secs = 1
context_grace_secs = 4

[tls]
cert = "server.pem"
key = "server.key"
client_ca = "ca.pem"

[backend]
module = "{module}"
mode = "transparent"
allow_so_functions = true
env = { SOFTHSM2_CONF = "{dir}/softhsm/softhsm2.conf" }

[[token]]
backend_label = "dev-a"
pin_file = "softhsm/backend-pin"

[[identity]]
name = "dev-client"
tokens = ["*"]
pin_hash = "{hash}"
"#;

#[test]
fn transparent_mode_and_rejoin() {
    let hash = {
        let mut c = std::process::Command::new(kmsp11_tests::kmsd_bin());
        c.arg("--hash-pin")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        let mut ch = c.spawn().unwrap();
        use std::io::Write;
        ch.stdin.take().unwrap().write_all(PIN.as_bytes()).unwrap();
        String::from_utf8(ch.wait_with_output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string()
    };
    let kmsd = Kmsd::start_with_config(&CONFIG.replace("{hash}", &hash));
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("client.toml");
    std::fs::write(
        &cfg,
        format!(
            "endpoints = [\"{}\"]\nserver_name = \"localhost\"\nca = \"{d}/ca.pem\"\ncert = \"{d}/client.pem\"\nkey = \"{d}/client.key\"\n",
            kmsd.addr,
            d = kmsd.dir.display()
        ),
    )
    .unwrap();
    std::env::set_var("KMSP11_CONFIG", &cfg);
    // What SoftHSM shows directly: its slot ids and labels.
    std::env::set_var("SOFTHSM2_CONF", kmsd.softhsm_conf());
    let direct = Pkcs11::new(kmsp11_tests::softhsm_module()).unwrap();
    direct
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let direct_slots: Vec<(u64, String)> = direct
        .get_all_slots()
        .unwrap()
        .into_iter()
        .map(|s| {
            (
                s.id(),
                direct
                    .get_token_info(s)
                    .map(|t| t.label().to_string())
                    .unwrap_or_default(),
            )
        })
        .collect();
    direct.finalize().unwrap();

    let p = Pkcs11::new(kmsp11_tests::libkmsp11()).unwrap();
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slots: Vec<(u64, String)> = p
        .get_all_slots()
        .unwrap()
        .into_iter()
        .map(|s| {
            (
                s.id(),
                p.get_token_info(s)
                    .map(|t| t.label().to_string())
                    .unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        slots, direct_slots,
        "transparent mode shows the backend's slots as they are"
    );

    // The anchored token: user login checked by kmsd.
    let a = p
        .get_all_slots()
        .unwrap()
        .into_iter()
        .find(|s| {
            p.get_token_info(*s)
                .map(|t| t.label() == "dev-a")
                .unwrap_or(false)
        })
        .unwrap();
    let s = p.open_rw_session(a).unwrap();
    s.login(UserType::User, Some(&AuthPin::new(PIN.into())))
        .unwrap();
    let o = s
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(false),
            Attribute::Value(vec![1, 2, 3]),
        ])
        .unwrap();

    // kmsd closes the idle connection after 1 s; the library reconnects and
    // rejoins its context: same session, same object handle, still logged in.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(
        s.get_attributes(o, &[cryptoki::object::AttributeType::Value])
            .unwrap(),
        vec![Attribute::Value(vec![1, 2, 3])]
    );
    assert!(s
        .find_objects(&[Attribute::Class(ObjectClass::DATA)])
        .unwrap()
        .contains(&o));
    drop(s);

    // An application that exits without C_Finalize (libp11 and Java never
    // call it): after the grace period kmsd closes its sessions.
    let raw = kmsp11_tests::raw::Raw::open(&kmsp11_tests::libkmsp11());
    let child = unsafe {
        let pid = libc::fork();
        assert!(pid >= 0);
        if pid == 0 {
            let f = raw.f;
            let mut ok = f.C_Initialize.unwrap()(std::ptr::null_mut()) == 0;
            for _ in 0..3 {
                let mut h = 0;
                ok &= f.C_OpenSession.unwrap()(a.id() as _, 4, std::ptr::null_mut(), None, &mut h)
                    == 0;
            }
            libc::_exit(if ok { 0 } else { 1 });
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        assert_eq!(libc::WEXITSTATUS(status), 0);
        pid
    };
    let expected = format!("pid={child} sessions=3");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !kmsd
        .log()
        .lines()
        .any(|l| l.contains("context expired") && strip_ansi(l).contains(&expected))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "sessions of a vanished client were never closed:\n{}",
            kmsd.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }

    // SO functions are forwarded: initialise the free slot, set its user PIN, use it.
    let free = p
        .get_all_slots()
        .unwrap()
        .into_iter()
        .find(|s| !p.get_token_info(*s).unwrap().token_initialized())
        .unwrap();
    p.init_token(free, &AuthPin::new(SO_PIN.into()), "adm-token")
        .unwrap();
    let s = p.open_rw_session(free).unwrap();
    s.login(UserType::So, Some(&AuthPin::new(SO_PIN.into())))
        .unwrap();
    s.init_pin(&AuthPin::new("111111".into())).unwrap();
    s.logout().unwrap();
    s.login(UserType::User, Some(&AuthPin::new("111111".into())))
        .unwrap();
    s.set_pin(
        &AuthPin::new("111111".into()),
        &AuthPin::new("222222".into()),
    )
    .unwrap();
    assert_eq!(s.digest(&Mechanism::Sha256, b"abc").unwrap().len(), 32);
    drop(s);
    p.finalize().unwrap();
}

/// kmsd's log lines carry terminal colour codes around field names.
fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\u{1b}' {
            for d in it.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
