//! The admin API as curl meets it: HTTPS with the dev client certificates,
//! JSON answers, role checks (admin changes, auditor reads, user nothing
//! but `/health`), every change and refused change in the audit log,
//! `/ready` and `/metrics`.

use std::process::Command;
use std::time::Duration;

use kmsp11_tests::{have, libkmsp11, run, Kmsd, PIN};

/// curl on the admin API as dev identity `who`: (HTTP status, body).
fn api(kmsd: &Kmsd, who: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    kmsd.admin_api(who, method, path, body, &[])
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// pkcs11-tool as the dev admin on kms-a.
fn tool(kmsd: &Kmsd, args: &str) -> (bool, String) {
    run(Command::new("pkcs11-tool")
        .arg("--module")
        .arg(libkmsp11())
        .args(["--token-label", "kms-a", "-l", "-p", PIN])
        .args(args.split_whitespace())
        .env("KMSP11_CONFIG", kmsd.client_config()))
}

fn start() -> Kmsd {
    assert!(have("curl"), "curl is required: apt-get install -y curl");
    Kmsd::start()
}

fn key_id(kmsd: &Kmsd, label: &str, class: &str) -> String {
    let (code, body) = api(kmsd, "client", "GET", "/v1/keys", None);
    assert_eq!(code, 200, "{body}");
    json(&body)
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["label"] == label && k["class"] == class)
        .unwrap_or_else(|| panic!("no {class} {label}: {body}"))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn audit_lines(kmsd: &Kmsd) -> Vec<serde_json::Value> {
    std::fs::read_to_string(kmsd.dir.join("audit.log"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

// `/health` answers every identity; `/ready` says the backend, the audit
// log and the store are usable.
#[test]
fn health_and_ready() {
    let kmsd = start();
    let (code, body) = api(&kmsd, "dev-user", "GET", "/health", None);
    assert_eq!(
        (code, json(&body)["status"].as_str()),
        (200, Some("alive")),
        "{body}"
    );
    let (code, body) = api(&kmsd, "dev-auditor", "GET", "/ready", None);
    assert_eq!(code, 200, "{body}");
    let v = json(&body);
    assert_eq!(
        (
            v["backend"].as_bool(),
            v["audit"].as_bool(),
            v["store"].as_bool()
        ),
        (Some(true), Some(true), Some(true))
    );
}

// A user reads and changes nothing: 403 with a JSON error; a refused
// change is an audit record.
#[test]
fn user_role_refused() {
    let kmsd = start();
    let (code, body) = api(&kmsd, "dev-user", "GET", "/v1/keys", None);
    assert_eq!(code, 403, "{body}");
    assert_eq!(json(&body)["error"], "forbidden");
    let (code, _) = api(&kmsd, "dev-user", "POST", "/v1/policy/reload", None);
    assert_eq!(code, 403);
    let denied = audit_lines(&kmsd)
        .into_iter()
        .find(|r| r["op"] == "policy.reload")
        .expect("a record of the refused reload");
    assert_eq!(
        (denied["identity"].as_str(), denied["decision"].as_str()),
        (Some("dev-user"), Some("deny"))
    );
}

// The auditor reads the inventory, the audit log and the metrics, and
// cannot change a key.
#[test]
fn auditor_reads_but_cannot_change() {
    let kmsd = start();
    let (ok, out) = tool(
        &kmsd,
        "--keypairgen --key-type EC:prime256v1 --label audited",
    );
    assert!(ok, "{out}");
    let id = key_id(&kmsd, "audited", "private-key");
    let (code, body) = api(&kmsd, "dev-auditor", "GET", &format!("/v1/keys/{id}"), None);
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["state"], "active");
    let (code, body) = api(&kmsd, "dev-auditor", "GET", "/v1/audit?tail=5", None);
    assert_eq!(
        (code, json(&body).as_array().map(|a| a.len())),
        (200, Some(5)),
        "{body}"
    );
    let (code, body) = api(
        &kmsd,
        "dev-auditor",
        "POST",
        &format!("/v1/keys/{id}/disable"),
        None,
    );
    assert_eq!(code, 403, "{body}");
}

// An admin disables a key through the API: PKCS#11 clients are refused at
// once; the change is an audit record naming the admin; enabling restores it.
#[test]
fn admin_disables_a_key() {
    let kmsd = start();
    let (ok, out) = tool(
        &kmsd,
        "--keypairgen --key-type EC:prime256v1 --label paused",
    );
    assert!(ok, "{out}");
    std::fs::write(kmsd.dir.join("in.bin"), [1u8; 32]).unwrap();
    let id = key_id(&kmsd, "paused", "private-key");
    let (code, body) = api(
        &kmsd,
        "client",
        "POST",
        &format!("/v1/keys/{id}/disable"),
        None,
    );
    assert_eq!(
        (code, json(&body)["state"].as_str()),
        (200, Some("disabled")),
        "{body}"
    );
    let input = kmsd.dir.join("in.bin");
    let sign = format!(
        "--sign --mechanism ECDSA --label paused --input-file {}",
        input.display()
    );
    let (ok, out) = tool(&kmsd, &sign);
    assert!(
        !ok && out.contains("CKR_KEY_FUNCTION_NOT_PERMITTED"),
        "{out}"
    );
    let rec = audit_lines(&kmsd)
        .into_iter()
        .find(|r| r["op"] == "keys.disable")
        .expect("a record of the change");
    assert_eq!(
        (rec["identity"].as_str(), rec["key"].as_str()),
        (Some("dev-client"), Some(id.as_str()))
    );
    let (code, _) = api(
        &kmsd,
        "client",
        "POST",
        &format!("/v1/keys/{id}/enable"),
        None,
    );
    assert_eq!(code, 200);
    let (ok, out) = tool(&kmsd, &sign);
    assert!(ok, "{out}");
    let (code, body) = api(
        &kmsd,
        "client",
        "POST",
        &format!("/v1/keys/{id}/enable"),
        None,
    );
    assert_eq!(
        (code, json(&body)["error"].as_str()),
        (409, Some("state")),
        "{body}"
    );
}

// A policy file with an error is refused by the reload call with its
// position (422), and the policy in force stays.
#[test]
fn policy_reload_refuses_a_bad_file() {
    let kmsd = start();
    let p = kmsd.dir.join("policy.cedar");
    let good = std::fs::read_to_string(&p).unwrap();
    std::fs::write(
        &p,
        format!("{good}\npermit (principal, acton, resource);\n"),
    )
    .unwrap();
    let (code, body) = api(&kmsd, "client", "POST", "/v1/policy/reload", None);
    assert_eq!(code, 422, "{body}");
    let v = json(&body);
    assert_eq!(v["error"], "invalid_policy");
    assert!(
        v["message"].as_str().unwrap().contains("policy.cedar:"),
        "{body}"
    );
    std::fs::write(&p, good).unwrap();
    let (code, body) = api(&kmsd, "client", "POST", "/v1/policy/reload", None);
    assert_eq!(code, 200, "{body}");
}

// `/metrics` counts the PKCS#11 calls made, by call and result, and the
// refusals by reason.
#[test]
fn metrics_show_the_calls_made() {
    let kmsd = start();
    let (ok, out) = tool(&kmsd, "--keygen --key-type AES:32 --label m");
    assert!(ok, "{out}");
    let (ok, _) = run(Command::new("pkcs11-tool")
        .arg("--module")
        .arg(libkmsp11())
        .args([
            "--token-label",
            "kms-a",
            "-l",
            "-p",
            PIN,
            "--keygen",
            "--key-type",
            "AES:32",
            "--label",
            "no",
        ])
        .env("KMSP11_CONFIG", kmsd.dir.join("kmsp11-user.toml")));
    assert!(!ok);
    let (code, body) = api(&kmsd, "dev-auditor", "GET", "/metrics", None);
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("kmsd_calls_total{op=\"C_GenerateKey\",rv=\"CKR_OK\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("kmsd_refusals_total{reason=\"policy\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("kmsd_call_duration_seconds_bucket{op=\"C_GenerateKey\""),
        "{body}"
    );
}

// A certificate from the CA that names no identity gets no answer.
#[test]
fn unknown_identity_refused() {
    let kmsd = start();
    let (code, _) = api(&kmsd, "stranger", "GET", "/health", None);
    assert_eq!(code, 0);
    kmsd.wait_for_log(&["admin connection refused"], Duration::from_secs(5));
}
