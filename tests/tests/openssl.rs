//! OpenSSL (the libp11 engine, by pkcs11: URI) as the dev setup's
//! restricted user: what the dev policy lets a user do works, what it
//! never permits is refused with the documented code, and both are in the
//! audit log.

use std::path::Path;
use std::process::Command;

use kmsp11_tests::{have, libkmsp11, run, Kmsd, PIN};

const ENGINE: &str = "/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so";

/// `openssl` with the pkcs11 engine over libkmsp11, as the identity of
/// library config `who`, in `work`.
fn openssl(kmsd: &Kmsd, work: &Path, who: &str, args: &str) -> (bool, String) {
    let cnf = work.join("openssl.cnf");
    std::fs::write(
        &cnf,
        format!(
            "openssl_conf = openssl_init\n[openssl_init]\nengines = engine_section\n[engine_section]\npkcs11 = pkcs11_section\n[pkcs11_section]\nengine_id = pkcs11\ndynamic_path = {ENGINE}\nMODULE_PATH = {}\ninit = 0\n",
            libkmsp11().display()
        ),
    )
    .unwrap();
    run(Command::new("openssl")
        .args(args.split_whitespace())
        .env("OPENSSL_CONF", &cnf)
        .env("KMSP11_CONFIG", kmsd.dir.join(who))
        .current_dir(work))
}

/// pkcs11-tool as the dev admin on kms-a.
fn admin_tool(kmsd: &Kmsd, args: &str) {
    let (ok, out) = run(Command::new("pkcs11-tool")
        .arg("--module")
        .arg(libkmsp11())
        .args(["--token-label", "kms-a", "-l", "-p", PIN])
        .args(args.split_whitespace())
        .env("KMSP11_CONFIG", kmsd.client_config()));
    assert!(ok, "pkcs11-tool {args}: {out}");
}

fn last_record(kmsd: &Kmsd, op: &str) -> serde_json::Value {
    std::fs::read_to_string(kmsd.dir.join("audit.log"))
        .unwrap()
        .lines()
        .rev()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["identity"] == "dev-user" && r["op"] == op)
        .unwrap_or_else(|| panic!("no {op} record by dev-user"))
}

// The user signs with ECDSA through OpenSSL; RSA PKCS#1 v1.5, which the dev
// policy never permits to users, is refused: CKR_MECHANISM_INVALID.
#[test]
fn openssl_user_ecdsa_allowed_rsa_pkcs1_refused() {
    assert!(
        have("openssl") && Path::new(ENGINE).exists(),
        "openssl and its pkcs11 engine are required: apt-get install -y openssl libengine-pkcs11-openssl"
    );
    let kmsd = Kmsd::start();
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    admin_tool(
        &kmsd,
        "--keypairgen --key-type EC:prime256v1 --id 02 --label ec --usage-sign",
    );
    admin_tool(
        &kmsd,
        "--keypairgen --key-type rsa:2048 --id 01 --label rsa --usage-sign",
    );
    std::fs::write(work.join("data.sha256"), [9u8; 32]).unwrap();
    let key =
        |label: &str| format!("pkcs11:token=kms-a;object={label};type=private;pin-value={PIN}");
    let (ok, out) = openssl(
        &kmsd,
        work,
        "kmsp11-user.toml",
        &format!(
            "pkeyutl -engine pkcs11 -keyform engine -inkey {} -sign -in data.sha256 -out ec.sig",
            key("ec")
        ),
    );
    assert!(ok, "ECDSA as dev-user: {out}");
    assert_eq!(last_record(&kmsd, "C_SignInit")["decision"], "allow");
    let (ok, out) = openssl(
        &kmsd,
        work,
        "kmsp11-user.toml",
        &format!(
            "pkeyutl -engine pkcs11 -keyform engine -inkey {} -sign -in data.sha256 -pkeyopt digest:sha256 -out rsa.sig",
            key("rsa")
        ),
    );
    assert!(!ok, "RSA PKCS#1 v1.5 as dev-user was not refused: {out}");
    let rec = last_record(&kmsd, "C_SignInit");
    assert_eq!(rec["decision"], "deny", "{rec}");
    assert_eq!(rec["rv"], "CKR_MECHANISM_INVALID", "{rec}");
    assert_eq!(rec["policy"], "no-rsa-pkcs1-for-users", "{rec}");
    let (ok, out) = openssl(
        &kmsd,
        work,
        "kmsp11.toml",
        &format!(
            "pkeyutl -engine pkcs11 -keyform engine -inkey {} -sign -in data.sha256 -pkeyopt digest:sha256 -out rsa.sig",
            key("rsa")
        ),
    );
    assert!(ok, "RSA PKCS#1 v1.5 as the admin: {out}");
}

// Rotate a signing key OpenSSL uses by its pkcs11: URI (`object=osigner`):
// the URI signs with the new version from then on; the signature made
// before verifies with the old version (`object=osigner@v1`), the one made
// after with the new one, and not the other way round.
#[test]
fn openssl_uri_signs_with_the_new_version_after_rotation() {
    let kmsd = Kmsd::start();
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    admin_tool(
        &kmsd,
        "--keypairgen --key-type EC:prime256v1 --id 0e --label osigner --usage-sign",
    );
    std::fs::write(work.join("data.sha256"), [5u8; 32]).unwrap();
    let sign = |out: &str| {
        let (ok, text) = openssl(
            &kmsd,
            work,
            "kmsp11-user.toml",
            &format!("pkeyutl -engine pkcs11 -keyform engine -inkey pkcs11:token=kms-a;object=osigner;type=private;pin-value={PIN} -sign -in data.sha256 -out {out}"),
        );
        assert!(ok, "sign {out}: {text}");
    };
    let verify = |label: &str, sig: &str| {
        let (ok, text) = openssl(
            &kmsd,
            work,
            "kmsp11-user.toml",
            &format!("pkeyutl -engine pkcs11 -keyform engine -pubin -inkey pkcs11:token=kms-a;object={label};type=public -verify -in data.sha256 -sigfile {sig}"),
        );
        ok && text.contains("Signature Verified Successfully")
    };
    sign("before.sig");
    let (code, out) = kmsd.kmsctl("kmsctl-admin.toml", &["keys", "rotate", "osigner"]);
    assert_eq!(code, 0, "{out}");
    sign("after.sig");
    assert!(
        verify("osigner@v1", "before.sig"),
        "the old signature, old version"
    );
    assert!(
        verify("osigner", "after.sig"),
        "the new signature, new version"
    );
    assert!(
        !verify("osigner", "before.sig"),
        "the old signature is not the new version's"
    );
}
