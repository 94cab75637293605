//! Dual control, as users meet it: pkcs11-tool signs or destroys, kmsctl
//! approves with the dev admins' configs. Guarded operations (dev mode:
//! destroy; by default also key generation, policy reload and identity
//! changes) and uses a policy annotates with `@approvals("2")` are refused
//! with `CKR_FUNCTION_REJECTED` (HTTP 403 through the admin API) until two
//! admins other than the requester approve; the grant serves the exact call
//! once, survives a restart, and requests expire.

use std::process::Command;

use kmsp11_tests::{kmsctl_bin, libkmsp11, run, Kmsd, PIN};

const POLICY: &str = r#"@id("admins") permit (principal in Kms::Role::"admin", action, resource);
@id("login") permit (principal, action == Kms::Action::"login", resource);
@id("users-see") permit (principal in Kms::Role::"user",
  action in [Kms::Action::"find", Kms::Action::"read-attribute"], resource);
@id("users-sign") permit (principal in Kms::Role::"user", action == Kms::Action::"sign", resource);
@id("release-needs-two") @approvals("2")
permit (principal, action == Kms::Action::"sign", resource is Kms::Key)
when { resource.label == "release" };
"#;

fn setup() -> Kmsd {
    prepare(Kmsd::start())
}

/// The test policy loaded and the two key pairs made on `kmsd`.
fn prepare(kmsd: Kmsd) -> Kmsd {
    std::fs::write(kmsd.dir.join("policy.cedar"), POLICY).unwrap();
    let (code, out) = kmsctl(&kmsd, "kmsctl-admin.toml", &["policy", "reload"]);
    assert_eq!(code, 0, "{out}");
    for (label, id) in [("release", "01"), ("other", "02")] {
        let (ok, out) = tool(
            &kmsd,
            "kmsp11.toml",
            &format!("--keypairgen --key-type EC:prime256v1 --label {label} --id {id}"),
        );
        assert!(ok, "{out}");
    }
    std::fs::write(kmsd.dir.join("digest.bin"), [7u8; 32]).unwrap();
    kmsd
}

fn tool(kmsd: &Kmsd, who: &str, args: &str) -> (bool, String) {
    run(Command::new("pkcs11-tool")
        .arg("--module")
        .arg(libkmsp11())
        .args(["--token-label", "kms-a", "-l", "-p", PIN])
        .args(args.split_whitespace())
        .env("KMSP11_CONFIG", kmsd.dir.join(who))
        .current_dir(&kmsd.dir))
}

/// `who` signs the digest with key `label` (pkcs11-tool picks the signing
/// key by its id) and `mechanism`: "ok", or the CK_RV pkcs11-tool reports
/// (it prints CKR_FUNCTION_REJECTED, 0x200, as an unknown error).
fn sign(kmsd: &Kmsd, who: &str, label: &str, mechanism: &str) -> String {
    let id = if label == "release" { "01" } else { "02" };
    let (ok, out) = tool(
        kmsd,
        who,
        &format!("--sign --mechanism {mechanism} --id {id} --input-file digest.bin --output-file sig.bin"),
    );
    if ok {
        return "ok".into();
    }
    if out.contains("(0x200)") {
        return "CKR_FUNCTION_REJECTED".into();
    }
    out
}

fn kmsctl(kmsd: &Kmsd, cfg: &str, args: &[&str]) -> (i32, String) {
    kmsd.kmsctl(cfg, args)
}

/// The pending requests, newest first.
fn pending(kmsd: &Kmsd) -> Vec<serde_json::Value> {
    let (code, out) = kmsctl(
        kmsd,
        "kmsctl-auditor.toml",
        &["approvals", "list", "-o", "json"],
    );
    assert_eq!(code, 0, "{out}");
    let all: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    all.into_iter()
        .filter(|a| a["state"] == "pending")
        .collect()
}

fn approve(kmsd: &Kmsd, cfg: &str, id: &str) -> (i32, String) {
    kmsctl(kmsd, cfg, &["approvals", "approve", id])
}

/// Each of `cfgs` approves request `id`, successfully.
fn approve_as(kmsd: &Kmsd, cfgs: &[&str], id: &str) {
    for cfg in cfgs {
        let (code, out) = approve(kmsd, cfg, id);
        assert_eq!(code, 0, "{cfg}: {out}");
    }
}

// request -> first approval -> still refused -> second approval -> one
// successful retry -> the next retry refused again.
#[test]
fn two_approvals_grant_one_signature() {
    let kmsd = setup();
    assert_eq!(
        sign(&kmsd, "kmsp11-user.toml", "other", "ECDSA"),
        "ok",
        "unguarded keys sign at once"
    );
    assert_eq!(
        sign(&kmsd, "kmsp11-user.toml", "release", "ECDSA"),
        "CKR_FUNCTION_REJECTED"
    );
    let p = pending(&kmsd);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(
        (p[0]["requester"].as_str(), p[0]["action"].as_str()),
        (Some("dev-user"), Some("sign"))
    );
    let id = p[0]["id"].as_str().unwrap().to_string();
    let (code, out) = approve(&kmsd, "kmsctl-admin.toml", &id);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        sign(&kmsd, "kmsp11-user.toml", "release", "ECDSA"),
        "CKR_FUNCTION_REJECTED"
    );
    assert_eq!(
        pending(&kmsd).len(),
        1,
        "the retry waits on the same request"
    );
    let (code, out) = approve(&kmsd, "kmsctl-admin2.toml", &id);
    assert_eq!(code, 0, "{out}");
    assert_eq!(sign(&kmsd, "kmsp11-user.toml", "release", "ECDSA"), "ok");
    assert_eq!(
        sign(&kmsd, "kmsp11-user.toml", "release", "ECDSA"),
        "CKR_FUNCTION_REJECTED"
    );
    let records = std::fs::read_to_string(kmsd.dir.join("audit.log")).unwrap();
    assert!(records.contains("\"reason\":\"pending-approval\""));
    assert!(records.contains(&format!("approval {id} used")));
    assert!(records.contains("\"op\":\"approvals.approve\""));
}

// Nobody approves their own request, and the auditor's role does not approve.
#[test]
fn self_approval_and_wrong_role_refused() {
    let kmsd = setup();
    assert_eq!(
        sign(&kmsd, "kmsp11-admin.toml", "release", "ECDSA"),
        "CKR_FUNCTION_REJECTED"
    );
    let id = pending(&kmsd)[0]["id"].as_str().unwrap().to_string();
    let (code, out) = approve(&kmsd, "kmsctl-admin.toml", &id);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("own request"), "{out}");
    let (code, out) = approve(&kmsd, "kmsctl-auditor.toml", &id);
    assert_eq!(code, 4, "{out}");
    assert_eq!(pending(&kmsd)[0]["approvers"], serde_json::json!([]));
}

// A grant is for the exact call: another mechanism is not granted; the
// approved one is, also after kmsd restarts.
#[test]
fn grant_bound_to_the_call_and_kept_across_restart() {
    let mut kmsd = setup();
    assert_eq!(
        sign(&kmsd, "kmsp11-user.toml", "release", "ECDSA"),
        "CKR_FUNCTION_REJECTED"
    );
    let id = pending(&kmsd)[0]["id"].as_str().unwrap().to_string();
    approve_as(&kmsd, &["kmsctl-admin.toml", "kmsctl-admin2.toml"], &id);
    kmsd.restart();
    assert_eq!(
        sign(&kmsd, "kmsp11-user.toml", "release", "ECDSA-SHA256"),
        "CKR_FUNCTION_REJECTED"
    );
    assert_eq!(sign(&kmsd, "kmsp11-user.toml", "release", "ECDSA"), "ok");
}

// A denied request stays refused; the next call asks anew.
#[test]
fn denied_request_stays_refused() {
    let kmsd = setup();
    assert_eq!(
        sign(&kmsd, "kmsp11-user.toml", "release", "ECDSA"),
        "CKR_FUNCTION_REJECTED"
    );
    let id = pending(&kmsd)[0]["id"].as_str().unwrap().to_string();
    let (code, out) = kmsctl(&kmsd, "kmsctl-admin.toml", &["approvals", "deny", &id]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = approve(&kmsd, "kmsctl-admin2.toml", &id);
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("denied"), "{out}");
    assert_eq!(
        sign(&kmsd, "kmsp11-user.toml", "release", "ECDSA"),
        "CKR_FUNCTION_REJECTED"
    );
    assert_ne!(pending(&kmsd)[0]["id"].as_str().unwrap(), id);
}

/// [`setup`] with `on_pending = "wait"` and a short wait.
fn setup_waiting() -> Kmsd {
    prepare(Kmsd::start_edited(|t, _| {
        kmsp11_tests::set_in(&t, "dual_control", "on_pending = \"wait\"\nwait_secs = 30")
    }))
}

/// Starts a signature as the user with the release key in the background.
fn held_sign(kmsd: &Kmsd) -> std::thread::JoinHandle<String> {
    let dir = kmsd.dir.clone();
    std::thread::spawn(move || {
        let (ok, out) = run(Command::new("pkcs11-tool")
            .arg("--module")
            .arg(libkmsp11())
            .args(["--token-label", "kms-a", "-l", "-p", PIN])
            .args(
                "--sign --mechanism ECDSA --id 01 --input-file digest.bin --output-file held.bin"
                    .split(' '),
            )
            .env("KMSP11_CONFIG", dir.join("kmsp11-user.toml"))
            .current_dir(&dir));
        if ok {
            "ok".into()
        } else if out.contains("(0x200)") {
            "CKR_FUNCTION_REJECTED".into()
        } else {
            out
        }
    })
}

/// Waits for the held call's request to appear.
fn request_of_held(kmsd: &Kmsd) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(p) = pending(kmsd).first() {
            return p["id"].as_str().unwrap().to_string();
        }
        assert!(std::time::Instant::now() < deadline, "no pending request");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

// Wait mode: the user's C_Sign is held and completes once two admins approve.
#[test]
fn wait_mode_completes_when_approved() {
    let kmsd = setup_waiting();
    let held = held_sign(&kmsd);
    let id = request_of_held(&kmsd);
    assert!(!held.is_finished(), "the call should be held");
    approve_as(&kmsd, &["kmsctl-admin.toml", "kmsctl-admin2.toml"], &id);
    assert_eq!(held.join().unwrap(), "ok");
    assert!(kmsd.dir.join("held.bin").exists());
}

// Wait mode: a denial ends the held call with CKR_FUNCTION_REJECTED.
#[test]
fn wait_mode_denied_is_rejected() {
    let kmsd = setup_waiting();
    let held = held_sign(&kmsd);
    let id = request_of_held(&kmsd);
    let (code, out) = kmsctl(&kmsd, "kmsctl-admin.toml", &["approvals", "deny", &id]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(held.join().unwrap(), "CKR_FUNCTION_REJECTED");
    let records = std::fs::read_to_string(kmsd.dir.join("audit.log")).unwrap();
    assert!(
        records.contains("\"reason\":\"approval-denied\""),
        "no denial record"
    );
}

/// pkcs11-tool's answer: "ok", "CKR_FUNCTION_REJECTED" or its output.
fn outcome((ok, out): (bool, String)) -> String {
    if ok {
        "ok".into()
    } else if out.contains("(0x200)") {
        "CKR_FUNCTION_REJECTED".into()
    } else {
        out
    }
}

// Dev mode's guarded operation: pkcs11-tool's destroy of a token key is
// refused until dev-admin and dev-admin2 approve with kmsctl; the retry
// then succeeds and the key is pending destroy.
#[test]
fn pkcs11_tool_destroy_needs_two_admins() {
    let kmsd = Kmsd::start();
    let keygen = "--keypairgen --key-type EC:prime256v1 --label doomed --id 07";
    assert_eq!(outcome(tool(&kmsd, "kmsp11.toml", keygen)), "ok");
    let delete = "--delete-object --type privkey --id 07";
    assert_eq!(
        outcome(tool(&kmsd, "kmsp11.toml", delete)),
        "CKR_FUNCTION_REJECTED"
    );
    let p = pending(&kmsd);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(
        (
            p[0]["requester"].as_str(),
            p[0]["action"].as_str(),
            p[0]["label"].as_str(),
            p[0]["required"].as_u64()
        ),
        (Some("dev-client"), Some("destroy"), Some("doomed"), Some(2)),
        "{p:?}"
    );
    let id = p[0]["id"].as_str().unwrap().to_string();
    assert_eq!(approve(&kmsd, "kmsctl-admin.toml", &id).0, 0);
    assert_eq!(
        outcome(tool(&kmsd, "kmsp11.toml", delete)),
        "CKR_FUNCTION_REJECTED",
        "one approval of two"
    );
    assert_eq!(approve(&kmsd, "kmsctl-admin2.toml", &id).0, 0);
    assert_eq!(outcome(tool(&kmsd, "kmsp11.toml", delete)), "ok");
    let (code, out) = kmsctl(
        &kmsd,
        "kmsctl-auditor.toml",
        &["keys", "list", "-o", "json"],
    );
    assert_eq!(code, 0, "{out}");
    let keys: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let k = keys
        .iter()
        .find(|k| k["label"] == "doomed" && k["class"] == "private-key")
        .expect("the key in the inventory");
    assert_eq!(k["state"], "pending-destroy", "{k}");
}

/// kmsd with the production defaults: every operation guarded, two approvals.
fn start_guarded() -> Kmsd {
    let kmsd = Kmsd::start_edited(|t, _| t.replacen("guarded = [\"destroy\"]\n", "", 1));
    // A kmsctl config for dev-client, the third admin.
    let text = std::fs::read_to_string(kmsd.dir.join("kmsctl-admin.toml"))
        .unwrap()
        .replace("dev-admin.", "client.");
    std::fs::write(kmsd.dir.join("kmsctl-client.toml"), text).unwrap();
    kmsd
}

// By default a token key's generation needs approval, and the approved
// retry makes the key.
#[test]
fn key_generation_guarded_by_default() {
    let kmsd = start_guarded();
    let keygen = "--keypairgen --key-type EC:prime256v1 --label fresh --id 08";
    assert_eq!(
        outcome(tool(&kmsd, "kmsp11.toml", keygen)),
        "CKR_FUNCTION_REJECTED"
    );
    let p = pending(&kmsd);
    assert_eq!(p[0]["action"], "generate", "{p:?}");
    assert!(
        p[0]["key"]
            .as_str()
            .unwrap()
            .starts_with("new EC private-key 256"),
        "{p:?}"
    );
    let id = p[0]["id"].as_str().unwrap().to_string();
    approve_as(&kmsd, &["kmsctl-admin.toml", "kmsctl-admin2.toml"], &id);
    assert_eq!(outcome(tool(&kmsd, "kmsp11.toml", keygen)), "ok");
}

// By default a policy reload through the admin API needs two approvals of
// that exact file; an edit after the approval needs its own.
#[test]
fn policy_reload_guarded_by_default() {
    let kmsd = start_guarded();
    std::fs::write(kmsd.dir.join("policy.cedar"), POLICY).unwrap();
    let (code, out) = kmsctl(&kmsd, "kmsctl-admin.toml", &["policy", "reload"]);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("needs 2 approvals"), "{out}");
    let p = pending(&kmsd);
    assert_eq!(p[0]["action"], "policy-reload", "{p:?}");
    let id = p[0]["id"].as_str().unwrap().to_string();
    approve_as(&kmsd, &["kmsctl-client.toml", "kmsctl-admin2.toml"], &id);
    // The approved text loads, once.
    let (code, out) = kmsctl(&kmsd, "kmsctl-admin.toml", &["policy", "reload"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = kmsctl(&kmsd, "kmsctl-admin.toml", &["policy", "reload"]);
    assert_eq!(code, 4, "a grant serves once: {out}");
    let records = std::fs::read_to_string(kmsd.dir.join("audit.log")).unwrap();
    assert!(
        records.contains(&format!("approval {id} used")),
        "no record of the grant's use"
    );
    assert!(
        records.contains(&format!("approval {id} pending (0 of 2)")),
        "no record of the request"
    );
}

// By default adding an identity through the admin API needs approval.
#[test]
fn identity_change_guarded_by_default() {
    let kmsd = start_guarded();
    let add = [
        "identities",
        "add",
        "ci-bot",
        "--role",
        "user",
        "--token",
        "kms-a",
    ];
    let (code, out) = kmsctl(&kmsd, "kmsctl-admin.toml", &add);
    assert_eq!(code, 4, "{out}");
    let id = pending(&kmsd)[0]["id"].as_str().unwrap().to_string();
    approve_as(&kmsd, &["kmsctl-client.toml", "kmsctl-admin2.toml"], &id);
    let (code, out) = kmsctl(&kmsd, "kmsctl-admin.toml", &add);
    assert_eq!(code, 0, "{out}");
    let (code, out) = kmsctl(
        &kmsd,
        "kmsctl-auditor.toml",
        &["identities", "list", "-o", "json"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ci-bot"), "{out}");
}

// A request nobody decides expires: it can no longer be approved, and the
// call asks anew.
#[test]
fn unanswered_request_expires() {
    let kmsd = prepare(Kmsd::start_edited(|t, _| {
        kmsp11_tests::set_in(&t, "dual_control", "request_ttl_secs = 2")
    }));
    assert_eq!(
        sign(&kmsd, "kmsp11-user.toml", "release", "ECDSA"),
        "CKR_FUNCTION_REJECTED"
    );
    let id = pending(&kmsd)[0]["id"].as_str().unwrap().to_string();
    std::thread::sleep(std::time::Duration::from_secs(3));
    let (code, out) = approve(&kmsd, "kmsctl-admin.toml", &id);
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("expired"), "{out}");
    assert!(
        pending(&kmsd).is_empty(),
        "the expired request is not pending"
    );
    assert_eq!(
        sign(&kmsd, "kmsp11-user.toml", "release", "ECDSA"),
        "CKR_FUNCTION_REJECTED"
    );
    assert_ne!(pending(&kmsd)[0]["id"].as_str().unwrap(), id);
    // kmsd records the expiry itself.
    let expired = format!("{id}: sign by dev-user expired undecided");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !std::fs::read_to_string(kmsd.dir.join("audit.log"))
        .unwrap()
        .contains(&expired)
    {
        assert!(std::time::Instant::now() < deadline, "no expiry record");
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

// `@approver_role` names who approves: admins are refused, the auditor's
// approval grants the call.
#[test]
fn policy_names_the_approver_role() {
    let kmsd = Kmsd::start();
    let policy = POLICY.replace(
        "@id(\"release-needs-two\") @approvals(\"2\")",
        "@id(\"release-needs-auditor\") @approvals(\"1\") @approver_role(\"auditor\")",
    );
    assert_ne!(policy, POLICY);
    std::fs::write(kmsd.dir.join("policy.cedar"), &policy).unwrap();
    let (code, out) = kmsctl(&kmsd, "kmsctl-admin.toml", &["policy", "reload"]);
    assert_eq!(code, 0, "{out}");
    let (ok, out) = tool(
        &kmsd,
        "kmsp11.toml",
        "--keypairgen --key-type EC:prime256v1 --label release --id 01",
    );
    assert!(ok, "{out}");
    std::fs::write(kmsd.dir.join("digest.bin"), [7u8; 32]).unwrap();
    assert_eq!(
        sign(&kmsd, "kmsp11-user.toml", "release", "ECDSA"),
        "CKR_FUNCTION_REJECTED"
    );
    let id = pending(&kmsd)[0]["id"].as_str().unwrap().to_string();
    let (code, out) = approve(&kmsd, "kmsctl-admin.toml", &id);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("needs the role auditor"), "{out}");
    let (code, out) = approve(&kmsd, "kmsctl-auditor.toml", &id);
    assert_eq!(code, 0, "{out}");
    assert_eq!(sign(&kmsd, "kmsp11-user.toml", "release", "ECDSA"), "ok");
}

// `kmsctl approvals watch` prints a request when it appears and again when
// it is approved; /metrics counts it as pending meanwhile.
#[test]
fn watch_shows_requests_as_they_change() {
    let kmsd = setup();
    let watcher = Command::new(kmsctl_bin())
        .args([
            "approvals",
            "watch",
            "--interval",
            "1",
            "--for",
            "8",
            "-o",
            "json",
        ])
        .env("KMSCTL_CONFIG", kmsd.dir.join("kmsctl-auditor.toml"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(
        sign(&kmsd, "kmsp11-user.toml", "release", "ECDSA"),
        "CKR_FUNCTION_REJECTED"
    );
    let id = pending(&kmsd)[0]["id"].as_str().unwrap().to_string();
    let (code, metrics) = kmsd.admin_api("dev-auditor", "GET", "/metrics", None, &[]);
    assert_eq!(code, 200);
    assert!(metrics.contains("kmsd_approvals_pending 1"), "{metrics}");
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(approve(&kmsd, "kmsctl-admin.toml", &id).0, 0);
    let out = watcher.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|a: &serde_json::Value| a["id"] == id.as_str())
        .collect();
    let approvers: Vec<usize> = lines
        .iter()
        .map(|a| a["approvers"].as_array().unwrap().len())
        .collect();
    assert_eq!(approvers, vec![0, 1], "{lines:?}");
}

// With `guarded = ["rotate"]` a rotation through the admin API waits for
// two approvals of that key's rotation, then runs once.
#[test]
fn rotation_guarded_when_configured() {
    let kmsd = Kmsd::start_edited(|t, _| {
        t.replacen("guarded = [\"destroy\"]", "guarded = [\"rotate\"]", 1)
    });
    let text = std::fs::read_to_string(kmsd.dir.join("kmsctl-admin.toml"))
        .unwrap()
        .replace("dev-admin.", "client.");
    std::fs::write(kmsd.dir.join("kmsctl-client.toml"), text).unwrap();
    let (ok, out) = tool(
        &kmsd,
        "kmsp11.toml",
        "--keypairgen --key-type EC:prime256v1 --label turn --id 07",
    );
    assert!(ok, "{out}");
    let (code, out) = kmsctl(&kmsd, "kmsctl-admin.toml", &["keys", "list", "-o", "json"]);
    assert_eq!(code, 0, "{out}");
    let keys: serde_json::Value = serde_json::from_str(&out).unwrap();
    let key = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["label"] == "turn" && k["class"] == "private-key")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let rotate = || kmsctl(&kmsd, "kmsctl-admin.toml", &["keys", "rotate", &key]);
    let (code, out) = rotate();
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("needs 2 approvals"), "{out}");
    let p = pending(&kmsd);
    assert_eq!(p[0]["action"], "rotate", "{p:?}");
    let id = p[0]["id"].as_str().unwrap().to_string();
    approve_as(&kmsd, &["kmsctl-client.toml", "kmsctl-admin2.toml"], &id);
    let (code, out) = rotate();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("turn@v1"), "{out}");
    // The grant served once; the old version is not current any more anyway.
    let (code, out) = rotate();
    assert_ne!(code, 0, "{out}");
}
