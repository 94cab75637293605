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

/// kmsctl as the first dev admin: (exit status, stdout + stderr).
fn kmsctl(kmsd: &Kmsd, args: &[&str]) -> (i32, String) {
    kmsd.kmsctl("kmsctl-admin.toml", args)
}

// `kmsctl identities issue-cert`: the key is made by kmsctl (mode 0600),
// kmsd's dev CA signs a certificate naming the identity, and it connects
// as that identity. An unknown identity gets none.
#[test]
fn certificate_issued_for_an_identity() {
    let kmsd = Kmsd::start();
    let add = [
        "identities",
        "add",
        "ci-bot",
        "--role",
        "user",
        "--token",
        "kms-a",
    ];
    let (code, out) = kmsctl(&kmsd, &add);
    assert_eq!(code, 0, "{out}");
    let dir = kmsd.dir.join("issued");
    let dir_s = dir.display().to_string();
    let (code, out) = kmsctl(
        &kmsd,
        &[
            "identities",
            "issue-cert",
            "ci-bot",
            "--out",
            &dir_s,
            "--days",
            "30",
        ],
    );
    assert_eq!(code, 0, "{out}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("ci-bot.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        std::fs::read_to_string(dir.join("ca.pem")).unwrap(),
        std::fs::read_to_string(kmsd.dir.join("ca.pem")).unwrap()
    );
    let mut w = Wire::try_connect_as(&kmsd, &dir.join("ci-bot.pem"), &dir.join("ci-bot.key"))
        .expect("connects with the issued certificate");
    assert!(w.try_hello(None).is_some(), "refused: {}", kmsd.log());
    kmsd.wait_for_log(
        &["client connected", "identity=ci-bot"],
        Duration::from_secs(5),
    );
    let (code, out) = kmsctl(
        &kmsd,
        &["identities", "issue-cert", "nobody", "--out", &dir_s],
    );
    assert_eq!(code, 5, "{out}");
    let records = std::fs::read_to_string(kmsd.dir.join("audit.log")).unwrap();
    assert!(
        records.contains("\"op\":\"identities.issue-cert\""),
        "not audited"
    );
}

// `kmsctl identities add --pin-cert`: a certificate issued elsewhere (here
// with another name) is the identity by its key; another key carrying the
// identity's name is not.
#[test]
fn identity_pinned_to_a_certificate_key() {
    let kmsd = Kmsd::start();
    let (ext, ext_key) = kmsp11_tests::issue_cert(&kmsd.dir, "ext", "external-name", &[], 9001);
    let pin = ext.display().to_string();
    let add = [
        "identities",
        "add",
        "pinned",
        "--pin-cert",
        &pin,
        "--role",
        "user",
        "--token",
        "kms-a",
    ];
    let (code, out) = kmsctl(&kmsd, &add);
    assert_eq!(code, 0, "{out}");
    let mut w = Wire::try_connect_as(&kmsd, &ext, &ext_key).expect("connects");
    assert!(
        w.try_hello(None).is_some(),
        "the pinned key refused: {}",
        kmsd.log()
    );
    kmsd.wait_for_log(
        &["client connected", "identity=pinned"],
        Duration::from_secs(5),
    );
    let (imp, imp_key) =
        kmsp11_tests::issue_cert(&kmsd.dir, "impostor", "pinned", &["pinned"], 9002);
    let refused = Wire::try_connect_as(&kmsd, &imp, &imp_key)
        .ok()
        .and_then(|mut w| w.try_hello(None));
    assert!(refused.is_none(), "another key named pinned was accepted");
    let (code, out) = kmsctl(&kmsd, &["identities", "list", "-o", "json"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"spki_sha256\":\""), "{out}");
}

// What the certificate endpoints decode is refused with 400 when it is not
// what they expect, and nothing is added or issued.
#[test]
fn bad_certificate_inputs_refused() {
    let kmsd = Kmsd::start();
    let bad_pin = r#"{"name": "p1", "tokens": ["kms-a"], "spki_sha256": "xyz"}"#;
    let garbage_cert = r#"{"name": "p2", "tokens": ["kms-a"], "certificate": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}"#;
    for body in [bad_pin, garbage_cert] {
        let (code, out) = kmsd.admin_api("dev-admin", "POST", "/v1/identities", Some(body), &[]);
        assert_eq!(code, 400, "{body}: {out}");
    }
    let ca = std::fs::read_to_string(kmsd.dir.join("ca.pem")).unwrap();
    let csr_is_a_cert = serde_json::json!({"csr": ca}).to_string();
    let garbage_csr = r#"{"csr": "not a request"}"#;
    let bad_days = serde_json::json!({"csr": "x", "days": 100000}).to_string();
    for body in [csr_is_a_cert.as_str(), garbage_csr, bad_days.as_str()] {
        let (code, out) = kmsd.admin_api(
            "dev-admin",
            "POST",
            "/v1/identities/dev-user/certificate",
            Some(body),
            &[],
        );
        assert_eq!(code, 400, "{out}");
    }
    let (_, list) = kmsd.admin_api("dev-auditor", "GET", "/v1/identities", None, &[]);
    assert!(
        !list.contains("\"p1\"") && !list.contains("\"p2\""),
        "{list}"
    );
}
