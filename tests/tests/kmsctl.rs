//! kmsctl against a real kmsd, with the configs dev mode writes: each
//! subcommand's happy path (JSON output parsed) and refused paths with
//! their exit status (4 refused by role, 5 rejected, 3 unreachable).

use std::process::Command;

use kmsp11_tests::{kmsctl_bin, libkmsp11, run, Kmsd, PIN};

/// kmsctl with dev config `cfg` (`kmsctl-admin.toml`, ...): (exit status, stdout + stderr).
fn kmsctl(kmsd: &Kmsd, cfg: &str, args: &[&str]) -> (i32, String) {
    kmsd.kmsctl(cfg, args)
}

const ADMIN: &str = "kmsctl-admin.toml";
const AUDITOR: &str = "kmsctl-auditor.toml";

fn json_of(kmsd: &Kmsd, args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.extend(["--output", "json"]);
    let (code, out) = kmsctl(kmsd, ADMIN, &a);
    assert_eq!(code, 0, "kmsctl {args:?}: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn keypair(kmsd: &Kmsd, label: &str) {
    let (ok, out) = run(Command::new("pkcs11-tool")
        .arg("--module")
        .arg(libkmsp11())
        .args([
            "--token-label",
            "kms-a",
            "-l",
            "-p",
            PIN,
            "--keypairgen",
            "--key-type",
            "EC:prime256v1",
            "--label",
            label,
        ])
        .env("KMSP11_CONFIG", kmsd.client_config()));
    assert!(ok, "{out}");
}

fn private_key_id(kmsd: &Kmsd, label: &str) -> String {
    let keys = json_of(kmsd, &["keys", "list"]);
    keys.as_array()
        .unwrap()
        .iter()
        .find(|k| k["label"] == label && k["class"] == "private-key")
        .unwrap_or_else(|| panic!("no {label}: {keys}"))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

// status: version, tokens, readiness; the table form too.
#[test]
fn status() {
    let kmsd = Kmsd::start();
    let v = json_of(&kmsd, &["status"]);
    assert_eq!(v["tokens"], serde_json::json!(["kms-a", "kms-b"]));
    assert_eq!(v["ready"], true);
    let (code, out) = kmsctl(&kmsd, ADMIN, &["status"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("version"), "{out}");
}

// keys: list, show, tag, disable/enable, schedule-destroy/cancel-destroy,
// expire, revoke and the revocation list.
#[test]
fn keys_lifecycle() {
    let kmsd = Kmsd::start_unguarded();
    keypair(&kmsd, "ctl");
    let id = private_key_id(&kmsd, "ctl");
    assert_eq!(json_of(&kmsd, &["keys", "show", &id])["label"], "ctl");
    // A label two keys share (the pair) names neither.
    let (code, out) = kmsctl(&kmsd, ADMIN, &["keys", "show", "ctl"]);
    assert!(code == 5 && out.contains("name one by id"), "{out}");
    assert_eq!(
        json_of(&kmsd, &["keys", "tag", &id, "prod", "ci"])["tags"],
        serde_json::json!(["prod", "ci"])
    );
    assert_eq!(
        json_of(&kmsd, &["keys", "disable", &id])["state"],
        "disabled"
    );
    assert_eq!(json_of(&kmsd, &["keys", "enable", &id])["state"], "active");
    assert_eq!(
        json_of(&kmsd, &["keys", "schedule-destroy", &id])["state"],
        "pending-destroy"
    );
    assert_eq!(
        json_of(&kmsd, &["keys", "cancel-destroy", &id])["state"],
        "active"
    );
    let exp = json_of(
        &kmsd,
        &["keys", "expire", &id, "--at", "2030-01-01T00:00:00Z"],
    );
    assert_eq!(exp["expires"], "2030-01-01T00:00:00Z");
    json_of(&kmsd, &["keys", "revoke", &id, "--reason", "rotated out"]);
    let krl = json_of(&kmsd, &["keys", "revoked"]);
    assert_eq!(krl[0]["key"], id.as_str());
    assert_eq!(krl[0]["who"], "dev-admin");
    let (code, out) = kmsctl(&kmsd, ADMIN, &["keys", "list"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("KEY"), "{out}");
}

// A state change that does not apply is rejected (exit 5), with kmsd's
// reason on one line.
#[test]
fn keys_wrong_state_rejected() {
    let kmsd = Kmsd::start();
    keypair(&kmsd, "twice");
    let id = private_key_id(&kmsd, "twice");
    let (code, out) = kmsctl(&kmsd, ADMIN, &["keys", "enable", &id]);
    assert_eq!(code, 5, "{out}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.starts_with("kmsctl: ") && out.contains("is active"),
        "{out}"
    );
}

// The auditor reads but every change is refused (exit 4).
#[test]
fn auditor_refused_changes() {
    let kmsd = Kmsd::start();
    keypair(&kmsd, "look");
    let id = private_key_id(&kmsd, "look");
    let (code, out) = kmsctl(&kmsd, AUDITOR, &["keys", "list", "-o", "json"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = kmsctl(&kmsd, AUDITOR, &["keys", "disable", &id]);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("refused") && out.contains("admin"), "{out}");
    let (code, out) = kmsctl(&kmsd, AUDITOR, &["policy", "reload"]);
    assert_eq!(code, 4, "{out}");
}

// audit: tail and verify.
#[test]
fn audit_tail_and_verify() {
    let kmsd = Kmsd::start();
    keypair(&kmsd, "a");
    let tail = json_of(&kmsd, &["audit", "tail", "-n", "3"]);
    assert_eq!(tail.as_array().unwrap().len(), 3);
    let v = json_of(&kmsd, &["audit", "verify"]);
    assert_eq!(v["valid"], true, "{v}");
    assert!(v["records"].as_u64().unwrap() > 3);
    let seq = tail[0]["seq"].as_u64().unwrap().to_string();
    assert_eq!(
        json_of(&kmsd, &["audit", "show", &seq])["seq"],
        tail[0]["seq"]
    );
    // The export verifies offline with kmsd's own tool.
    let export = kmsd.dir.join("export.jsonl");
    let (code, out) = kmsctl(
        &kmsd,
        ADMIN,
        &["audit", "export", "--file", export.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}");
    let (ok, out) = run(Command::new(kmsp11_tests::kmsd_bin())
        .args(["audit", "verify", "--signing-key"])
        .arg(kmsd.dir.join("audit-signing.key"))
        .arg(&export));
    assert!(ok, "{out}");
}

// policy: show, validate (a bad file names its position, exit 5), reload.
#[test]
fn policy_show_validate_reload() {
    let kmsd = Kmsd::start();
    let (code, text) = kmsctl(&kmsd, ADMIN, &["policy", "show"]);
    assert_eq!(code, 0);
    assert!(text.contains("admins-everything"), "{text}");
    let good = kmsd.dir.join("policy.cedar");
    assert_eq!(
        json_of(&kmsd, &["policy", "validate", good.to_str().unwrap()])["valid"],
        true
    );
    let bad = kmsd.dir.join("bad.cedar");
    std::fs::write(
        &bad,
        "permit (principal, action, resource);\nforbid (principal, acton, resource);\n",
    )
    .unwrap();
    let (code, out) = kmsctl(&kmsd, ADMIN, &["policy", "validate", bad.to_str().unwrap()]);
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("bad.cedar:2:"), "{out}");
    assert_eq!(json_of(&kmsd, &["policy", "reload"])["reloaded"], true);
}

// identities: list, add, disable, enable.
#[test]
fn identities_add_disable_enable() {
    let kmsd = Kmsd::start();
    let v = json_of(&kmsd, &["identities", "list"]);
    assert!(v["enabled"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["name"] == "dev-user"));
    json_of(
        &kmsd,
        &[
            "identities",
            "add",
            "batch",
            "--role",
            "user",
            "--token",
            "kms-a",
        ],
    );
    json_of(&kmsd, &["identities", "disable", "batch"]);
    let v = json_of(&kmsd, &["identities", "list"]);
    assert_eq!(v["disabled"], serde_json::json!(["batch"]));
    json_of(&kmsd, &["identities", "enable", "batch"]);
    let (code, out) = kmsctl(
        &kmsd,
        ADMIN,
        &["identities", "add", "batch", "--token", "kms-a"],
    );
    assert_eq!(code, 5, "{out}");
}

// quotas show; completions.
#[test]
fn quotas_show_and_completions() {
    let kmsd = Kmsd::start();
    let v = json_of(&kmsd, &["quotas", "show"]);
    assert_eq!(v["daily_limit_per_key"], 10000);
    let (code, out) = kmsctl(&kmsd, ADMIN, &["completions", "bash"]);
    assert_eq!(code, 0);
    assert!(out.contains("kmsctl"), "{out}");
}

// kmsd not there: exit 3 with one line; no configuration: exit 2.
#[test]
fn unreachable_and_unconfigured() {
    let mut kmsd = Kmsd::start();
    kmsd.stop();
    let (code, out) = kmsctl(&kmsd, ADMIN, &["status"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.starts_with("kmsctl: kmsd unreachable"), "{out}");
    let out = Command::new(kmsctl_bin())
        .arg("status")
        .env_remove("KMSCTL_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
