//! Identities added and disabled at run time (`kmsd identities`, through
//! the store): a new identity can connect without a restart; a disabled
//! one has its open contexts closed at once and new connections refused.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use kmsp11_proto::{GetSessionInfo, Request};
use kmsp11_tests::wire::Wire;
use kmsp11_tests::{hash_pin, kmsd_bin, run, Kmsd, PIN};

fn identities(kmsd: &Kmsd, args: &[&str]) -> String {
    let (ok, out) = run(Command::new(kmsd_bin())
        .arg("--config")
        .arg(kmsd.dir.join("kmsd.toml"))
        .arg("identities")
        .args(args));
    assert!(ok, "kmsd identities {args:?}: {out}");
    out
}

fn cert(kmsd: &Kmsd, name: &str) -> (PathBuf, PathBuf) {
    (
        kmsd.dir.join(format!("{name}.pem")),
        kmsd.dir.join(format!("{name}.key")),
    )
}

/// A Wire with an open context as `name`, or `None` if kmsd refuses it.
fn hello_as(kmsd: &Kmsd, name: &str) -> Option<Wire> {
    let (c, k) = cert(kmsd, name);
    let mut w = Wire::try_connect_as(kmsd, &c, &k).ok()?;
    w.try_hello(None)?;
    Some(w)
}

/// Waits (kmsd reads the store every few seconds) until `f` holds.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

// An identity added at run time connects, and logs in with its PIN.
#[test]
fn identity_added_at_run_time_connects() {
    let kmsd = Kmsd::start();
    assert!(hello_as(&kmsd, "stranger").is_none(), "not yet an identity");
    identities(
        &kmsd,
        &[
            "add",
            "stranger",
            "--role",
            "user",
            "--token",
            "kms-a",
            "--pin-hash",
            &hash_pin(PIN),
            "--by",
            "alice",
        ],
    );
    let mut w = None;
    eventually("the new identity is let in", || {
        w = hello_as(&kmsd, "stranger");
        w.is_some()
    });
    let mut w = w.unwrap();
    let s = w.open_session(0, pkcs11_sys::CKF_SERIAL_SESSION);
    assert_eq!(w.login(s, PIN), 0);
    let list: Vec<serde_json::Value> =
        serde_json::from_str(&identities(&kmsd, &["list", "--output", "json"])).unwrap();
    let stranger = list.iter().find(|i| i["name"] == "stranger").unwrap();
    assert_eq!(stranger["source"], "store");
    assert_eq!(stranger["added_by"], "alice");
}

// Disabling an identity closes its open context (its sessions are gone,
// its connection answers no more) and refuses it from then on.
#[test]
fn disabled_identity_context_is_closed() {
    let kmsd = Kmsd::start();
    let mut w = hello_as(&kmsd, "dev-user").expect("dev-user connects");
    let s = w.open_session(0, pkcs11_sys::CKF_SERIAL_SESSION);
    identities(&kmsd, &["disable", "dev-user"]);
    kmsd.wait_for_log(
        &["identity disabled or changed", "dev-user"],
        Duration::from_secs(20),
    );
    let r = w.call_with(
        1000,
        false,
        Request::GetSessionInfo(GetSessionInfo { session: s }),
    );
    assert!(r.is_none(), "the closed context still answered: {r:?}");
    assert!(
        hello_as(&kmsd, "dev-user").is_none(),
        "dev-user let in again"
    );
    identities(&kmsd, &["enable", "dev-user"]);
    eventually("dev-user is let in again", || {
        hello_as(&kmsd, "dev-user").is_some()
    });
}
