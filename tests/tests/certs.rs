//! Certificates and trust anchors as users meet them: `kmsctl certs
//! import|list|remove` on a real kmsd and SoftHSM token, and what stock
//! clients then see on the token (pkcs11-tool, the library).

use std::path::Path;
use std::process::Command;

use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use kmsp11_tests::{run, through_library, Kmsd};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SubjectPublicKeyInfo};

const ADMIN: &str = "kmsctl-admin.toml";

/// An EC P-256 key pair on kms-a (CKA_ID `id`), and its public key as a
/// certificate carries it (SubjectPublicKeyInfo, DER).
fn hsm_key(kmsd: &Kmsd, id: &str, label: &str) -> Vec<u8> {
    kmsd.ec_pair(id, label);
    let point = through_library(&kmsd.client_config(), |_, s| {
        let k = s
            .find_objects(&[
                Attribute::Label(label.into()),
                Attribute::Class(ObjectClass::PUBLIC_KEY),
            ])
            .unwrap()[0];
        match s
            .get_attributes(k, &[AttributeType::EcPoint])
            .unwrap()
            .remove(0)
        {
            // DER OCTET STRING around the 65-byte point.
            Attribute::EcPoint(p) => p[2..].to_vec(),
            a => panic!("{a:?}"),
        }
    });
    let mut spki = vec![
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    spki.extend(point);
    spki
}

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(cn: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    Ca {
        cert: p.self_signed(&key).unwrap(),
        key,
    }
}

/// A certificate for `cn` with public key `spki`, issued by `ca`.
fn leaf(ca: &Ca, cn: &str, spki: &[u8]) -> rcgen::Certificate {
    let mut p = CertificateParams::new(vec![format!("{cn}.example")]).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    let public = SubjectPublicKeyInfo::from_der(spki).unwrap();
    p.signed_by(&public, &ca.cert, &ca.key).unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

// A chain (leaf, then its CA) for a key on the token: the leaf takes the
// key's label and CKA_ID (pkcs11-tool reads it back by that id), the CA
// is an authority certificate; both are listed with their expiry.
#[test]
fn imported_chain_lands_beside_its_key() {
    let kmsd = Kmsd::start();
    let tmp = tempfile::tempdir().unwrap();
    let spki = hsm_key(&kmsd, "0c", "web");
    let ca = ca("Test CA");
    let leaf = leaf(&ca, "web", &spki);
    let chain = write(tmp.path(), "chain.pem", &(leaf.pem() + &ca.cert.pem()));
    let made = kmsd.kmsctl_json(ADMIN, &["certs", "import", &chain, "--for-key", "web"]);
    let made = made.as_array().unwrap();
    assert_eq!(made.len(), 2, "{made:?}");
    assert_eq!(made[0]["label"], "web");
    assert_eq!(made[0]["id"], "0c");
    assert_eq!(made[0]["category"], "user");
    assert_eq!(made[1]["label"], "Test CA");
    assert_eq!(made[1]["category"], "authority");
    let out = tmp.path().join("read.der");
    kmsd.pkcs11_tool(&[
        "--read-object",
        "--type",
        "cert",
        "--id",
        "0c",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&out).unwrap(), leaf.der().to_vec());
    let listed = kmsd.kmsctl_json(ADMIN, &["certs", "list"]);
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed
        .iter()
        .all(|c| c["days_left"].as_i64().unwrap() > 300));
    // Again: nothing made twice.
    let again = kmsd.kmsctl_json(ADMIN, &["certs", "import", &chain, "--for-key", "web"]);
    assert_eq!(again.as_array().unwrap().len(), 0, "{again}");
    let audit = std::fs::read_to_string(kmsd.dir.join("audit.log")).unwrap();
    assert!(audit.contains("\"op\":\"certs.import\""), "audited");
}

// Rotating a key with a certificate: the certificate certifies the old
// version's key, so it goes with it (label `web@v1`, CKA_ID `0d` + "@v1");
// the new version has none until one is issued for it.
#[test]
fn certificate_follows_the_version_it_certifies() {
    let kmsd = Kmsd::start();
    let tmp = tempfile::tempdir().unwrap();
    let spki = hsm_key(&kmsd, "0d", "web");
    let ca = ca("Test CA");
    let leaf = write(tmp.path(), "leaf.pem", &leaf(&ca, "web", &spki).pem());
    kmsd.kmsctl_json(ADMIN, &["certs", "import", &leaf, "--for-key", "web"]);
    let r = kmsd.kmsctl_json(ADMIN, &["keys", "rotate", "web"]);
    assert_eq!(r["version"], 2, "{r}");
    let listed = kmsd.kmsctl_json(ADMIN, &["certs", "list"]);
    let listed: Vec<(&str, &str)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["label"].as_str().unwrap(), c["id"].as_str().unwrap()))
        .collect();
    let id = format!("0d{}", hex::encode("@v1"));
    assert_eq!(listed, [("web@v1", id.as_str())]);
    through_library(&kmsd.client_config(), |_, s| {
        let certs = |label: &str| {
            s.find_objects(&[
                Attribute::Label(label.into()),
                Attribute::Class(ObjectClass::CERTIFICATE),
            ])
            .unwrap()
            .len()
        };
        assert_eq!((certs("web@v1"), certs("web")), (1, 0));
    });
}

// Refused before anything reaches the token, each with its reason: a
// leaf for another key, an expired certificate, certificates not in chain
// order, bytes that are no certificate.
#[test]
fn certificates_that_do_not_fit_are_refused() {
    let kmsd = Kmsd::start();
    let tmp = tempfile::tempdir().unwrap();
    hsm_key(&kmsd, "0d", "api");
    let ca = ca("Test CA");
    let other = KeyPair::generate().unwrap();
    let foreign = leaf(&ca, "api", &other.public_key_der());
    let file = write(tmp.path(), "foreign.pem", &foreign.pem());
    let (code, out) = kmsd.kmsctl(ADMIN, &["certs", "import", &file, "--for-key", "api"]);
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("does not carry the public key"), "{out}");

    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["old.example".to_string()]).unwrap();
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let expired = p.self_signed(&key).unwrap();
    let file = write(tmp.path(), "expired.pem", &expired.pem());
    let (code, out) = kmsd.kmsctl(ADMIN, &["certs", "import", &file]);
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("expired"), "{out}");

    let spki = KeyPair::generate().unwrap().public_key_der();
    let reversed = ca.cert.pem() + &leaf(&ca, "x", &spki).pem();
    let file = write(tmp.path(), "reversed.pem", &reversed);
    let (code, out) = kmsd.kmsctl(ADMIN, &["certs", "import", &file]);
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("not a chain"), "{out}");

    let file = write(
        tmp.path(),
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    let (code, out) = kmsd.kmsctl(ADMIN, &["certs", "import", &file]);
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("not an X.509 certificate"), "{out}");

    let listed = kmsd.kmsctl_json(ADMIN, &["certs", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 0, "{listed}");
}

// A trust anchor (a CA certificate alone) is listed as an authority,
// visible to clients, and removable by its SHA-256.
#[test]
fn trust_anchor_listed_and_removed() {
    let kmsd = Kmsd::start();
    let tmp = tempfile::tempdir().unwrap();
    let root = ca("Corporate Root");
    let file = write(tmp.path(), "root.pem", &root.cert.pem());
    let made = kmsd.kmsctl_json(ADMIN, &["certs", "import", &file]);
    let sha = made[0]["sha256"].as_str().unwrap().to_string();
    assert_eq!(made[0]["category"], "authority");
    assert_eq!(
        made[0]["trusted"], false,
        "SoftHSM lets only its SO set CKA_TRUSTED"
    );
    let out = kmsd.pkcs11_tool(&["--list-objects", "--type", "cert"]);
    assert!(out.contains("Corporate Root"), "{out}");
    // SoftHSM direct holds that one certificate and nothing half-made.
    let (ok, direct) = run(Command::new("pkcs11-tool")
        .arg("--module")
        .arg(kmsp11_tests::softhsm_module())
        .args(["--token-label", "dev-a", "--list-objects", "--type", "cert"])
        .env("SOFTHSM2_CONF", kmsd.softhsm_conf()));
    assert!(ok, "{direct}");
    assert_eq!(direct.matches("Certificate Object").count(), 1, "{direct}");
    let (code, out) = kmsd.kmsctl("kmsctl-auditor.toml", &["certs", "remove", &sha]);
    assert_eq!(code, 4, "an auditor cannot remove: {out}");
    let removed = kmsd.kmsctl_json(ADMIN, &["certs", "remove", &sha]);
    assert_eq!(removed["sha256"], sha.as_str());
    let listed = kmsd.kmsctl_json(ADMIN, &["certs", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 0, "{listed}");
    let out = kmsd.pkcs11_tool(&["--list-objects", "--type", "cert"]);
    assert!(!out.contains("Corporate Root"), "{out}");
}

// A certificate expiring within 30 days shows in `kmsctl status`, the
// metrics and the dashboard's overview.
#[test]
fn expiring_certificates_are_visible() {
    let kmsd = Kmsd::start();
    let tmp = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name
        .push(DnType::CommonName, "Short-lived CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(10);
    let file = write(tmp.path(), "short.pem", &p.self_signed(&key).unwrap().pem());
    kmsd.kmsctl_json(ADMIN, &["certs", "import", &file]);
    let status = kmsd.kmsctl_json(ADMIN, &["status"]);
    let soon = status["certificates_expiring"].as_array().unwrap();
    assert_eq!(soon.len(), 1, "{status}");
    assert!(soon[0]["subject"]
        .as_str()
        .unwrap()
        .contains("Short-lived CA"));
    assert!(soon[0]["days_left"].as_i64().unwrap() <= 10);
    let (code, metrics) = kmsd.admin_api("dev-admin", "GET", "/metrics", None, &[]);
    assert_eq!(code, 200);
    assert!(
        metrics.lines().any(|l| l == "kmsd_certificates_expiring 1"),
        "{metrics}"
    );
    let (code, page) = kmsd.admin_api("dev-admin", "GET", "/ui", None, &[]);
    assert_eq!(code, 200, "{page}");
    assert!(
        page.contains("Certificates expiring within 30 days") && page.contains("Short-lived CA"),
        "the dashboard's overview lists it: {page}"
    );
}

// `kmsctl keys csr` prints a request the HSM key signed: openssl checks its
// signature with the public key it carries, and its subject.
#[test]
fn csr_signed_by_the_hsm_key_verifies() {
    let kmsd = Kmsd::start();
    let tmp = tempfile::tempdir().unwrap();
    hsm_key(&kmsd, "0e", "req");
    let (code, pem) = kmsd.kmsctl(
        ADMIN,
        &[
            "keys",
            "csr",
            "req",
            "--subject",
            "CN=req.example,O=Example",
        ],
    );
    assert_eq!(code, 0, "{pem}");
    assert!(
        pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"),
        "{pem}"
    );
    let file = write(tmp.path(), "req.csr", &pem);
    let (ok, out) =
        run(Command::new("openssl").args(["req", "-in", &file, "-noout", "-verify", "-subject"]));
    assert!(ok, "{out}");
    assert!(out.contains("verify OK"), "{out}");
    assert!(
        out.contains("CN = req.example") || out.contains("CN=req.example"),
        "{out}"
    );
}

// `kmsctl keys self-sign` on an RSA key: the certificate lands beside the
// key (pkcs11-tool reads it by the key's id) and openssl accepts its
// self-signature.
#[test]
fn self_signed_certificate_lands_beside_its_key() {
    let kmsd = Kmsd::start();
    let tmp = tempfile::tempdir().unwrap();
    kmsd.pkcs11_tool(&[
        "--keypairgen",
        "--key-type",
        "rsa:2048",
        "--id",
        "0f",
        "--label",
        "tls",
    ]);
    let made = kmsd.kmsctl_json(
        ADMIN,
        &[
            "keys",
            "self-sign",
            "tls",
            "--subject",
            "CN=tls.example",
            "--days",
            "30",
        ],
    );
    assert_eq!(made[0]["label"], "tls", "{made}");
    assert_eq!(made[0]["id"], "0f", "{made}");
    assert!(made[0]["days_left"].as_i64().unwrap() >= 29, "{made}");
    let der = tmp.path().join("tls.der");
    kmsd.pkcs11_tool(&[
        "--read-object",
        "--type",
        "cert",
        "--id",
        "0f",
        "-o",
        der.to_str().unwrap(),
    ]);
    let pem = tmp.path().join("tls.pem");
    let (ok, out) = run(Command::new("openssl").args([
        "x509",
        "-inform",
        "DER",
        "-in",
        der.to_str().unwrap(),
        "-out",
        pem.to_str().unwrap(),
    ]));
    assert!(ok, "{out}");
    let pem = pem.to_str().unwrap();
    let (ok, out) = run(Command::new("openssl").args(["verify", "-CAfile", pem, pem]));
    assert!(ok && out.contains("OK"), "{out}");
}
